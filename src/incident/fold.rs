//! Folding detections: a bounded timeline for an incident under a flood.
//!
//! Under a dense attack one incident gathers detections by the hundred thousand. Each was a
//! `detection` timeline entry of its own (its evidence event included), so the store grew
//! by the detection, without bound: a remote party failing SSH logins could fill the disk.
//! Now an incident's first `[incidents] timeline_detections` detections get an entry each;
//! later ones that join it (`Same`, see `intake.rs`) are folded: attached to the snapshot as
//! before (count, evidence, last detection), and gathered in the snapshot's [`Fold`]. A fold
//! is written as one `detection` entry standing for all of its detections once it holds as
//! many as the timeline already does (so the entries grow with the logarithm of the
//! detections) or its first detection is a minute old (at the next detection, or at the
//! manager's housekeeping when the flood stopped: readers of the change feed, the stream and
//! the board among them, see the incident move at least about once a minute, and the entries
//! then grow with the flood's minutes, not its detections), and before any other detection
//! entry of the incident.
//!
//! The log still replays exactly to the snapshot (`incidentd store verify`, `rebuild`):
//! - a folded entry carries `detections` (how many it stands for) and the evidence events of
//!   its detections that can still be in the snapshot: the first half and the latest of
//!   `evidence_max`, which are all that keeping evidence in order can leave of them (see
//!   [`keep_evidence`](super::intake::keep_evidence)), and the time of its last detection;
//! - only detections whose rule, service and ids the incident already has fold (another is
//!   written with its own entry, after the fold's), so a fold never changes those lists;
//!   detections of several rules fold together, each counted in `by_rule`, and only those
//!   with the same evidence size and `resolve_after`;
//! - the fold not yet written is in the snapshot, and the replay applies it last
//!   ([`apply_pending`]). What it changes (the count, evidence, `last_detection_at`,
//!   `first_event_at`, `resolve_after_ms`) nothing else changes, except a merge's count,
//!   which adds, and the `updated_at` other entries set, which it only moves forward (a wall
//!   clock stepped back between a folded detection and a later entry makes `store verify`
//!   report `updated_at`). A merge writes the fold of the incident merged into first, all
//!   the same, so the timeline reads in order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Incident;
use super::intake::{Attach, keep_evidence};
use crate::clock::Timestamp;
use crate::event::Event;

/// Detections of an incident gathered since its last folded entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fold {
    /// What they share; `evidence` unused (see `evidence`), `first_ts` the earliest.
    pub facts: Attach,
    /// How many.
    pub detections: u64,
    /// Their evidence events that can still be in the snapshot, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<Event>,
    /// When the first and the last one attached.
    #[serde(default)]
    pub since: Timestamp,
    pub at: Timestamp,
    /// The last one, as a detection entry shows it.
    pub last: Last,
}

/// A folded entry's view of its last detection (what a detection entry shows).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Last {
    pub summary: String,
    pub count: u64,
    pub event_ts: Timestamp,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub message: Option<String>,
}

/// The oldest a fold's first detection gets before the fold is written.
const AT_MOST: std::time::Duration = std::time::Duration::from_secs(60);

impl Fold {
    /// Whether a detection with these facts, joining `inc`, folds: into `fold` when there is
    /// one (the same evidence size and `resolve_after`), and only when attaching it adds
    /// nothing to the incident's rules, services and ids (each already there, absent, or its
    /// list full). So a fold never changes those lists: the replay finds the same lists
    /// wherever it applies the fold, and readers of the change feed (the correlation index
    /// among them) learn of every new rule, service or id from a detection entry at once.
    pub(super) fn joins(fold: Option<&Fold>, facts: &Attach, inc: &Incident) -> bool {
        let id_known = |id: &Option<String>| {
            id.as_ref().is_none_or(|id| {
                inc.correlation_ids.contains(id) || inc.correlation_ids.len() >= 100
            })
        };
        let service_known = facts
            .service
            .as_ref()
            .is_none_or(|s| inc.services.contains(s) || inc.services.len() >= 50);
        fold.is_none_or(|f| {
            f.facts.evidence_max == facts.evidence_max
                && f.facts.resolve_after_ms == facts.resolve_after_ms
        }) && inc.rules.contains(&facts.rule)
            && service_known
            && id_known(&facts.correlation_id)
            && id_known(&facts.trace_id)
    }

    /// Whether it is to be written now, in an incident of `detections` (the fold's
    /// included): it holds as many as the timeline, or its first is `AT_MOST` old.
    pub(super) fn due(&self, detections: u64, now: Timestamp) -> bool {
        self.detections.saturating_mul(2) >= detections || self.stale(now)
    }

    /// Whether its first detection is `AT_MOST` old (housekeeping writes it then, so the
    /// last detections of a flood that stopped reach the timeline).
    pub(super) fn stale(&self, now: Timestamp) -> bool {
        now.since(self.since) >= AT_MOST
    }

    /// A fold of one detection.
    pub(super) fn of(facts: &Attach, last: Last, at: Timestamp) -> Fold {
        let mut facts = facts.clone();
        let mut evidence = Vec::new();
        if let Some(ev) = facts.evidence.take() {
            keep_evidence(&mut evidence, ev, facts.evidence_max);
        }
        Fold {
            facts,
            detections: 1,
            evidence,
            since: at,
            at,
            last,
        }
    }

    /// Adds a detection that [joins](Fold::joins) it (only its evidence is copied).
    pub(super) fn add(&mut self, facts: &Attach, last: Last, at: Timestamp) {
        if let Some(ev) = &facts.evidence {
            keep_evidence(&mut self.evidence, ev.clone(), self.facts.evidence_max);
        }
        self.facts.first_ts = self.facts.first_ts.min(facts.first_ts);
        // Counted per rule once a second rule comes.
        let by_rule = &mut self.facts.by_rule;
        if facts.rule != self.facts.rule || !by_rule.is_empty() {
            if by_rule.is_empty() {
                by_rule.insert(self.facts.rule.clone(), self.detections);
            }
            *by_rule.entry(facts.rule.clone()).or_default() += 1;
        }
        self.detections += 1;
        self.at = at;
        self.last = last;
    }

    /// The facts of the entry it is written as: its detections attached at once.
    pub(super) fn attach(&self) -> Attach {
        Attach {
            detections: self.detections,
            evidence_list: self.evidence.clone(),
            at: Some(self.at),
            ..self.facts.clone()
        }
    }
}

/// How a `detection` entry's data (`d`) that stands for several detections says so before
/// its last detection's summary (nothing for an entry of one), for the post-mortem, the CLI
/// and anyone showing a timeline.
pub fn shown_count(d: &serde_json::Value) -> String {
    match d.get("detections").and_then(serde_json::Value::as_u64) {
        Some(n) if n > 1 => format!("{n} detections, the last: "),
        _ => String::new(),
    }
}

/// Applies the fold a snapshot holds and its log does not yet (what a replay of the log
/// does last): the snapshot's own fold, so that the replay equals it.
pub fn apply_pending(inc: &mut Incident, fold: &Fold) {
    let updated = inc.updated_at;
    super::intake::attach(inc, fold.attach(), fold.at);
    // Entries written after the fold's last detection (a note, a status) set a later time.
    inc.updated_at = updated.max(Some(fold.at));
    inc.folded = Some(fold.clone());
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ev(i: usize) -> Event {
        Event::decode(
            format!(r#"{{"kind":"k","message":"m{i}","ts":{i}}}"#).as_bytes(),
            &crate::event::Defaults::at("s", "h", Timestamp(0), std::time::Duration::MAX),
        )
        .expect("a valid event")
    }

    #[test]
    fn a_fold_is_due_at_half_the_detections_or_a_minute_after_its_first() {
        let facts: Attach = serde_json::from_value(serde_json::json!({
            "rule": "ssh", "first_event_ts": 0, "evidence_max": 4
        }))
        .expect("facts");
        let last = Last {
            summary: "s".into(),
            count: 5,
            event_ts: Timestamp(0),
            labels: BTreeMap::new(),
            message: None,
        };
        let mut f = Fold::of(&facts, last.clone(), Timestamp(1_000));
        for _ in 0..9 {
            f.add(&facts, last.clone(), Timestamp(2_000));
        }
        assert_eq!(
            (f.detections, f.since, f.at),
            (10, Timestamp(1_000), Timestamp(2_000))
        );
        assert!(!f.due(21, Timestamp(2_000)));
        assert!(f.due(20, Timestamp(2_000)));
        assert!(!f.due(1_000, Timestamp(60_999)));
        assert!(f.due(1_000, Timestamp(61_000)));
    }

    proptest! {
        /// Keeping a fold's evidence, then the snapshot keeping it, leaves the snapshot's
        /// evidence as keeping every event in turn does, whatever it held before.
        #[test]
        fn folded_evidence_keeps_what_every_event_would(
            max in 0usize..12,
            before in 0usize..15,
            events in 0usize..40,
        ) {
            let mut each = Vec::new();
            let mut folded_into = Vec::new();
            for i in 0..before {
                keep_evidence(&mut each, ev(i), max);
                keep_evidence(&mut folded_into, ev(i), max);
            }
            let mut fold = Vec::new();
            for i in before..before + events {
                keep_evidence(&mut each, ev(i), max);
                keep_evidence(&mut fold, ev(i), max);
            }
            for e in fold {
                keep_evidence(&mut folded_into, e, max);
            }
            prop_assert_eq!(each, folded_into);
        }
    }
}
