//! What in the change log starts actions. Remediation follows the durable change log (see
//! [`crate::incident::feed`]) and turns its entries into triggers here, purely: a detection
//! that opened or reopened an incident, a detection that attached to one, and an incident
//! that stopped being active (its reverts that wait for that are due).

use crate::incident::{EntryKind, Status, TimelineEntry};

/// A durable incident change that may start actions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trigger {
    pub incident_id: u64,
    /// The rule of the detection, when a detection caused it.
    pub rule: Option<String>,
    pub kind: TriggerKind,
    /// The change number of the entry behind it: runs started for it carry it, so reading
    /// the entry again after a crash starts nothing twice.
    pub change: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerKind {
    /// Created or reopened by a detection.
    Opened,
    /// A detection attached to an open incident.
    Detection,
    /// The incident was resolved, closed or cancelled (reverts that wait for it run).
    Resolved,
}

/// Reads triggers off the change log, entry by entry, in change order. It remembers the
/// last entry it saw, because an incident opened by a detection is a `created` (or
/// `reopened`) entry followed by that detection's entry.
#[derive(Debug, Default, Clone)]
pub struct Triggers {
    /// The incident a detection just opened or reopened: its detection entry comes next,
    /// after any other entries of the same change (a severity raise, a silence).
    opened: Option<u64>,
}

impl Triggers {
    pub fn of(&mut self, e: &TimelineEntry) -> Option<Trigger> {
        let rule = || {
            e.data
                .get("rule")
                .and_then(|r| r.as_str())
                .map(str::to_owned)
        };
        let status = |k: &str| {
            e.data
                .get(k)
                .and_then(|s| serde_json::from_value::<Status>(s.clone()).ok())
        };
        let trigger = |kind, rule| Trigger {
            incident_id: e.incident_id,
            rule,
            kind,
            change: e.change,
        };
        // Entries of one change are consecutive: another incident's entry ends the opening.
        if self.opened.is_some_and(|id| id != e.incident_id) {
            self.opened = None;
        }
        match e.kind {
            EntryKind::Created | EntryKind::Reopened if rule().is_some() => {
                self.opened = Some(e.incident_id);
                None
            }
            EntryKind::Detection => {
                let kind = if self.opened.take() == Some(e.incident_id) {
                    TriggerKind::Opened
                } else {
                    TriggerKind::Detection
                };
                Some(trigger(kind, rule()))
            }
            EntryKind::StatusChanged | EntryKind::Reopened => {
                match (status("from"), status("to")) {
                    (Some(from), Some(to)) if from.is_active() && !to.is_active() => {
                        Some(trigger(TriggerKind::Resolved, None))
                    }
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use serde_json::json;

    fn entry(
        id: u64,
        seq: u64,
        change: u64,
        kind: EntryKind,
        data: serde_json::Value,
    ) -> TimelineEntry {
        TimelineEntry {
            incident_id: id,
            seq,
            ts: Timestamp(0),
            kind,
            actor: "system".into(),
            note: None,
            data: data.into(),
            change,
        }
    }

    fn kinds(entries: &[TimelineEntry]) -> Vec<(u64, Option<String>, TriggerKind, u64)> {
        let mut t = Triggers::default();
        entries
            .iter()
            .filter_map(|e| t.of(e))
            .map(|t| (t.incident_id, t.rule, t.kind, t.change))
            .collect()
    }

    #[test]
    fn opening_detections_attaching_detections_and_ends_are_triggers() {
        let ssh = || Some("ssh".to_owned());
        let entries = [
            // Opened by a detection: created, then the detection.
            entry(
                1,
                0,
                1,
                EntryKind::Created,
                json!({"rule": "ssh", "incident": {}}),
            ),
            entry(1, 1, 2, EntryKind::Detection, json!({"rule": "ssh"})),
            // Made by hand: nothing to do.
            entry(2, 0, 3, EntryKind::Created, json!({"by": "hand"})),
            entry(1, 2, 4, EntryKind::Detection, json!({"rule": "ssh"})),
            entry(1, 3, 5, EntryKind::Note, json!(null)),
            entry(
                1,
                4,
                6,
                EntryKind::StatusChanged,
                json!({"from": "open", "to": "acknowledged"}),
            ),
            entry(
                1,
                5,
                7,
                EntryKind::StatusChanged,
                json!({"from": "acknowledged", "to": "resolved"}),
            ),
            // Reopened by a detection.
            entry(
                1,
                6,
                8,
                EntryKind::Reopened,
                json!({"from": "resolved", "to": "open", "rule": "ssh"}),
            ),
            entry(1, 7, 9, EntryKind::Detection, json!({"rule": "ssh"})),
            // Reopened by hand, then cancelled.
            entry(
                1,
                8,
                10,
                EntryKind::Reopened,
                json!({"from": "resolved", "to": "open"}),
            ),
            entry(
                1,
                9,
                11,
                EntryKind::StatusChanged,
                json!({"from": "open", "to": "cancelled"}),
            ),
            entry(
                1,
                10,
                12,
                EntryKind::StatusChanged,
                json!({"from": "cancelled", "to": "closed"}),
            ),
        ];
        assert_eq!(
            kinds(&entries),
            vec![
                (1, ssh(), TriggerKind::Opened, 2),
                (1, ssh(), TriggerKind::Detection, 4),
                (1, None, TriggerKind::Resolved, 7),
                (1, ssh(), TriggerKind::Opened, 9),
                (1, None, TriggerKind::Resolved, 11),
            ]
        );
    }

    #[test]
    fn a_reopening_that_raises_the_severity_is_still_an_opening() {
        let entries = [
            entry(
                1,
                6,
                8,
                EntryKind::Reopened,
                json!({"from": "resolved", "to": "open", "rule": "ssh"}),
            ),
            entry(
                1,
                7,
                9,
                EntryKind::SeverityChanged,
                json!({"from": "sev3", "to": "sev1"}),
            ),
            entry(1, 8, 10, EntryKind::Silenced, json!({"silence": 2})),
            entry(1, 9, 11, EntryKind::Detection, json!({"rule": "ssh"})),
            entry(1, 10, 12, EntryKind::Detection, json!({"rule": "ssh"})),
        ];
        assert_eq!(
            kinds(&entries),
            vec![
                (1, Some("ssh".into()), TriggerKind::Opened, 11),
                (1, Some("ssh".into()), TriggerKind::Detection, 12),
            ]
        );
    }

    #[test]
    fn a_detection_after_another_incidents_opening_is_not_an_opening() {
        let entries = [
            entry(1, 0, 1, EntryKind::Created, json!({"rule": "a"})),
            entry(2, 3, 2, EntryKind::Detection, json!({"rule": "b"})),
        ];
        assert_eq!(
            kinds(&entries),
            vec![(2, Some("b".into()), TriggerKind::Detection, 2)]
        );
    }
}
