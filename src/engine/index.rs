//! Which rules an event can concern. Two things rule most rules out before any of them is
//! asked:
//!
//! - a condition index: a rule whose `where` requires `fields.program` or `kind` to be one
//!   of a few values (see [`Rule::required`]) is looked up by the event's value, so a
//!   hundred rules each for its own program cost one lookup, not a hundred conditions;
//! - the shared regex set (or its literals): a regex rule runs only when its pattern may
//!   match the message, and then only if the event also has the value its `where` requires.
//!   Rules with the same pattern share it (the set holds each pattern once), and the rules
//!   of one pattern are looked up by value too: a hundred filters worded alike for a hundred
//!   programs cost one pattern and one lookup.
//!
//! The rules left (and the ones neither can rule out: counting `total_where`, counting
//! lateness) are run in rule order. Each still tests its own `where`: the index only skips
//! rules that could not have acted.

use std::borrow::Cow;

use super::rule::{IndexedKey, RegexGate, Rule};
use crate::event::Event;

/// Rules by a value, sorted by value.
type ByValue = Vec<(String, Vec<usize>)>;

/// Rules, each either asked for every event or looked up by the value its `where` requires.
#[derive(Clone, Default)]
struct Lookup {
    /// Asked for every event (that reaches this lookup).
    always: Vec<usize>,
    /// By the value their `where` requires (sorted by value, for a binary search: a few
    /// values, cheaper than hashing), per key.
    keyed: Vec<(IndexedKey, ByValue)>,
}

impl Lookup {
    /// Adds rule `i` (rules are added in ascending order).
    fn add(&mut self, i: usize, required: Option<(IndexedKey, &[String])>) {
        let Some((key, values)) = required else {
            self.always.push(i);
            return;
        };
        let at = match self.keyed.iter().position(|(k, _)| *k == key) {
            Some(at) => at,
            None => {
                self.keyed.push((key, Vec::new()));
                self.keyed.len() - 1
            }
        };
        let by_value = &mut self.keyed[at].1;
        for v in values {
            let at = match by_value.binary_search_by(|(w, _)| w.as_str().cmp(v)) {
                Ok(at) => at,
                Err(at) => {
                    by_value.insert(at, (v.clone(), Vec::new()));
                    at
                }
            };
            let list = &mut by_value[at].1;
            // `in` may list a value twice: the rule is run once.
            if list.last() != Some(&i) {
                list.push(i);
            }
        }
    }

    /// Appends the rules for an event whose keys have the values `value` gives (each list
    /// appended is ascending); returns how many lists were appended.
    fn push<'e>(
        &self,
        value: &mut impl FnMut(IndexedKey) -> Option<Cow<'e, str>>,
        out: &mut Vec<usize>,
    ) -> usize {
        let mut parts = 0;
        if !self.always.is_empty() {
            out.extend_from_slice(&self.always);
            parts += 1;
        }
        for (key, by_value) in &self.keyed {
            if let Some(v) = value(*key)
                && let Ok(at) = by_value.binary_search_by(|(w, _)| w.as_str().cmp(&v))
            {
                out.extend_from_slice(&by_value[at].1);
                parts += 1;
            }
        }
        parts
    }
}

#[derive(Clone, Default)]
pub(super) struct RuleIndex {
    /// Rules without a regex gate: asked for every event, or by their required value.
    ungated: Lookup,
    /// Rules with timers (absence, `not_followed_by`, spike down), the only ones asked what
    /// fell due when time moves on.
    timed: Vec<usize>,
    /// Per set pattern, the rules it gates (asked when it may match).
    by_pattern: Vec<Lookup>,
    /// Reused for every event.
    buf: Vec<usize>,
}

impl RuleIndex {
    pub(super) fn new(rules: &[Rule]) -> RuleIndex {
        let mut index = RuleIndex::default();
        for (i, r) in rules.iter().enumerate() {
            if r.has_timers() {
                index.timed.push(i);
            }
            // A rule alone is asked for every event: its own `where` is the whole test.
            let required = r.required().filter(|_| rules.len() > 1);
            match r.gated_by() {
                Some(p) => {
                    if index.by_pattern.len() <= p {
                        index.by_pattern.resize(p + 1, Lookup::default());
                    }
                    index.by_pattern[p].add(i, required);
                }
                None => index.ungated.add(i, required),
            }
        }
        index
    }

    /// Whether the index rules anything out by itself, without a regex set.
    pub(super) fn keyed(&self) -> bool {
        !self.ungated.keyed.is_empty()
    }

    /// The rules to run for `ev`, ascending. Give the list back with
    /// [`RuleIndex::give_back`].
    pub(super) fn candidates(&mut self, gate: &mut RegexGate<'_>, ev: &Event) -> Vec<usize> {
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        // Each event's value of a key is read once, when first needed.
        let mut values: [Option<Option<Cow<'_, str>>>; 2] = [None, None];
        let mut value = |key: IndexedKey| -> Option<Cow<'_, str>> {
            values[key as usize]
                .get_or_insert_with(|| key.of(ev))
                .clone()
        };
        // Every list appended is ascending; the result needs sorting only when two are.
        let mut parts = self.ungated.push(&mut value, &mut out);
        if let Some(m) = ev.message.as_deref() {
            for p in gate.matched(m) {
                if let Some(rules) = self.by_pattern.get(p) {
                    parts += rules.push(&mut value, &mut out);
                }
            }
        }
        if parts > 1 {
            out.sort_unstable();
        }
        out
    }

    /// The rules that may have timers due, ascending.
    pub(super) fn timed(&self) -> &[usize] {
        &self.timed
    }

    pub(super) fn give_back(&mut self, list: Vec<usize>) {
        self.buf = list;
    }
}
