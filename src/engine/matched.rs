//! [`Engine::on_event`] in two halves, for an offline replay on more than one core: copies
//! of the engine ([`Engine::matcher`]) find on other threads which rules each event reaches
//! and what their regexes captured ([`Engine::match_event`], which keeps no state), and the
//! engine applies those answers in order ([`Engine::on_matched`]), exactly as `on_event`
//! would have.

use std::ops::Range;

use super::{Detection, Engine, reach, visit};
use crate::event::Event;

/// What [`Engine::match_event`] found for a run of events.
#[derive(Debug, Default)]
pub struct Matched {
    /// Per event, where its entries end.
    ends: Vec<usize>,
    /// For each rule an event reaches, in order: the rule, whether the event matched its
    /// `where` and regex, and its groups' spans.
    entries: Vec<(usize, bool, Range<usize>)>,
    spans: Vec<Option<(usize, usize)>>,
}

impl Matched {
    /// Forgets every event, keeping the room.
    pub fn clear(&mut self) {
        self.ends.clear();
        self.entries.clear();
        self.spans.clear();
    }

    /// Lets go of the room beyond what `events` events with a few rules each need.
    pub fn shrink_to(&mut self, events: usize) {
        self.ends.shrink_to(events);
        self.entries.shrink_to(events * 4);
        self.spans.shrink_to(events * 16);
    }

    /// How many events it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn entries_of(&self, i: usize) -> &[(usize, bool, Range<usize>)] {
        let start = i.checked_sub(1).map_or(0, |p| self.ends[p]);
        &self.entries[start..self.ends[i]]
    }
}

impl Engine {
    /// Another engine of the same rules, for [`Engine::match_event`] on another thread: the
    /// rules' compiled regexes, their gate, index and templates are copied, not built again
    /// (for a hundred rules, building takes tens of milliseconds and megabytes per engine).
    /// Each copy has its own match buffers. The rules' window state is copied as it is,
    /// which `match_event` never reads; clocks, cursors and counters start empty.
    pub fn matcher(&self) -> Engine {
        let mut copy = Engine::of_compiled(
            self.rules.clone(),
            self.prefilter.clone(),
            self.index.clone(),
            self.templates.clone(),
        );
        copy.prefiltered = self.prefiltered;
        copy.lean = self.lean;
        copy
    }

    /// The half of [`Engine::on_event`] that keeps no state: which rules the event reaches
    /// and whether it matches each one's `where` and regex, appended to `into` as the
    /// event after those it holds. The engine's clock and windows are not touched.
    pub fn match_event(&mut self, ev: &Event, into: &mut Matched) {
        let Engine {
            rules,
            prefilter,
            index,
            prefiltered,
            gate_spare,
            ..
        } = self;
        reach(
            (prefilter, index, gate_spare),
            *prefiltered,
            rules,
            ev,
            |k, rule, gate| {
                let matched = !rule.ruled_out(ev, gate) && rule.matches(ev, gate);
                let start = into.spans.len();
                if matched {
                    rule.spans_into(&mut into.spans);
                }
                into.entries.push((k, matched, start..into.spans.len()));
            },
        );
        into.ends.push(into.entries.len());
    }

    /// [`Engine::on_event`] for event `i` of `matched`, which an engine of the same
    /// rules ([`Engine::matcher`]) found for `ev`.
    pub fn on_matched(
        &mut self,
        ev: &Event,
        matched: &Matched,
        i: usize,
        out: &mut Vec<Detection>,
    ) {
        self.advance(ev, out);
        let now = self.now;
        let mut late = false;
        for (k, hit, spans) in matched.entries_of(i) {
            let (templates, lean) = (&self.templates, self.lean);
            late |= visit(
                &mut self.rules[*k],
                (templates, lean),
                (ev, now),
                out,
                |r| r.on_matched(ev, now, *hit, &matched.spans[spans.clone()]),
            );
        }
        self.note_late(ev, late);
    }
}
