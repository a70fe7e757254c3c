//! Which rules an event can concern. With many regex rules, most of them cannot match a
//! given message; the shared regex set says which can in one pass, so the engine runs only
//! those rules and the ones the set cannot rule out (no regex, counting `total_where`,
//! counting lateness), in rule order, instead of asking every rule.

use super::rule::{RegexGate, Rule};

#[derive(Default)]
pub(super) struct RuleIndex {
    /// Rules run for every event.
    always: Vec<usize>,
    /// Rules with timers (absence, `not_followed_by`, spike down), the only ones asked what
    /// fell due when time moves on.
    timed: Vec<usize>,
    /// Per set pattern, the rule it gates.
    by_pattern: Vec<Option<usize>>,
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
            match r.gated_by() {
                Some(p) => {
                    if index.by_pattern.len() <= p {
                        index.by_pattern.resize(p + 1, None);
                    }
                    index.by_pattern[p] = Some(i);
                }
                None => index.always.push(i),
            }
        }
        index
    }

    /// The rules to run for an event with `message`, ascending. Give the list back with
    /// [`RuleIndex::give_back`].
    pub(super) fn candidates(
        &mut self,
        gate: &mut RegexGate<'_>,
        message: Option<&str>,
    ) -> Vec<usize> {
        let mut out = std::mem::take(&mut self.buf);
        out.clear();
        out.extend_from_slice(&self.always);
        if let Some(m) = message {
            let gated = out.len();
            out.extend(
                gate.matched(m)
                    .filter_map(|p| self.by_pattern.get(p).copied().flatten()),
            );
            if out.len() > gated && gated > 0 {
                out.sort_unstable();
            }
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
