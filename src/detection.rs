//! Detections and where they came from: the vocabulary the engine emits and the incident
//! manager, the store and replay read. A detection's origin (a file line by position, a
//! journal entry by sequence number, or a timer) gives it an idempotency id, so a replay after
//! a crash does not apply it twice; a checkpoint's [`Coverage`] says which ids a replay can no
//! longer produce.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::event::Event;
use crate::severity::Severity;

/// A rule fired: what the incident manager turns into (or attaches to) an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub rule: String,
    pub severity: Severity,
    /// Incident key: detections with the same key share an incident.
    pub key: String,
    pub summary: String,
    /// Event time of the event that made the rule fire.
    pub ts: Timestamp,
    /// Event time of the earliest event counted.
    pub first_ts: Timestamp,
    pub count: u64,
    /// group_by name → value.
    pub group: BTreeMap<String, String>,
    /// Rule labels, regex captures and the event's labels.
    pub labels: BTreeMap<String, String>,
    pub service: Option<String>,
    pub host: Option<String>,
    pub correlation_id: Option<String>,
    pub trace_id: Option<String>,
    pub runbook: Option<String>,
    /// The message of the event that made the rule fire.
    pub message: Option<String>,
    /// What made the rule fire, stable across a replay: a timer, or a file line by its
    /// position. `None` for events that are never replayed (the ingest socket, the API).
    #[serde(default)]
    pub origin: Option<Origin>,
    /// When the event behind it reached its source, and when the rule fired (latency
    /// metrics; not part of the detection's meaning).
    #[serde(skip)]
    pub arrived: Option<std::time::Instant>,
    #[serde(skip)]
    pub detected: Option<std::time::Instant>,
    /// The rule's `resolve_after`, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_after_ms: Option<u64>,
    /// The event that made the rule fire (none for timers), kept as evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Box<Event>>,
}

impl Detection {
    /// Identity of a detection that a replay after a crash could produce again: (rule,
    /// group, event time) plus its origin. `None` for detections from events that are never
    /// replayed.
    pub fn idempotency_id(&self) -> Option<AppliedId> {
        let group: Vec<&str> = self.group.values().map(String::as_str).collect();
        Some(AppliedId {
            origin: self.origin.clone()?,
            rule: self.rule.clone(),
            group: group.join("/"),
            ts: self.ts,
            applied_at: Timestamp(0),
        })
    }

    /// The idempotency id as text, for the timeline.
    pub fn idempotency_text(&self) -> Option<String> {
        let id = self.idempotency_id()?;
        Some(match &id.origin {
            Origin::Timer { .. } => format!("{}|{}|timer|{}", id.rule, id.group, id.ts.millis()),
            Origin::Line {
                source,
                dev,
                ino,
                offset,
            } => format!("{}|{}|{source}:{dev}:{ino}:{offset}", id.rule, id.group),
        })
    }
}

/// Where a detection came from, stable across a replay after a crash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Origin {
    /// A line of a file source, by the offset where it starts.
    Line {
        source: String,
        dev: u64,
        ino: u64,
        offset: u64,
    },
    /// A timer (absence, `for`, sequence timeout) that fell due when the engine's clock
    /// reached `at`.
    Timer { at: Timestamp },
}

/// A detection's identity for idempotency: its origin, rule, group and event time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedId {
    pub origin: Origin,
    pub rule: String,
    pub group: String,
    pub ts: Timestamp,
    /// Wall time it was applied (kept with file-line ids to age them out).
    pub applied_at: Timestamp,
}

impl AppliedId {
    /// The key in the `applied` tree; file lines sort by (source, file, offset) so the ones a
    /// checkpoint covers are easy to find.
    pub fn key(&self) -> Vec<u8> {
        let mut k = Vec::with_capacity(64);
        match &self.origin {
            Origin::Line {
                source,
                dev,
                ino,
                offset,
            } => {
                k.push(b'f');
                k.extend_from_slice(source.as_bytes());
                k.push(0);
                k.extend_from_slice(&dev.to_be_bytes());
                k.extend_from_slice(&ino.to_be_bytes());
                k.extend_from_slice(&offset.to_be_bytes());
            }
            Origin::Timer { .. } => {
                k.push(b't');
                k.extend_from_slice(&self.ts.millis().to_be_bytes());
            }
        }
        k.extend_from_slice(self.rule.as_bytes());
        k.push(0);
        k.extend_from_slice(self.group.as_bytes());
        k
    }

    /// The value stored with the key: for timers the engine time they fired at, for lines
    /// the wall time they were applied.
    pub fn value(&self) -> [u8; 8] {
        match &self.origin {
            Origin::Timer { at } => at.millis().to_be_bytes(),
            Origin::Line { .. } => self.applied_at.millis().to_be_bytes(),
        }
    }
}

/// What a checkpoint's engine state has applied: detections it covers can be forgotten.
#[derive(Debug, Clone, Default)]
pub struct Coverage {
    /// Per followed file (source, dev, ino): every line before this offset is applied.
    pub cursors: Vec<(String, u64, u64, u64)>,
    /// Files that were truncated since the last checkpoint: their old line positions are
    /// gone and will be reused.
    pub reset: Vec<(String, u64, u64)>,
    /// Files the tails finished with (drained after rotation or deletion) since the last
    /// checkpoint: they will not be read again.
    pub done: Vec<(String, u64, u64)>,
    /// The engine's clock: timers that fired at or before it are in the state.
    pub now: Timestamp,
    /// Wall time of the checkpoint.
    pub wall: Timestamp,
}

/// Line ids of files that are neither followed nor finished (gone while incidentd was
/// stopped) are kept this long, then forgotten.
const ORPHAN_LINE_ID_MS: i64 = 24 * 3600 * 1000;

impl Coverage {
    /// Whether the detection recorded under `key` (with `value`) can no longer be
    /// produced by a replay from this checkpoint.
    pub fn covers(&self, key: &[u8], value: &[u8]) -> bool {
        match key.split_first() {
            Some((b't', _)) => <[u8; 8]>::try_from(value)
                .map(|v| i64::from_be_bytes(v) <= self.now.millis())
                .unwrap_or(true),
            Some((b'f', rest)) => {
                let Some(nul) = rest.iter().position(|b| *b == 0) else {
                    return true;
                };
                let source = &rest[..nul];
                let Some(nums) = rest.get(nul + 1..nul + 25) else {
                    return true;
                };
                let num = |i: usize| {
                    u64::from_be_bytes(
                        <[u8; 8]>::try_from(&nums[i * 8..i * 8 + 8]).unwrap_or([0; 8]),
                    )
                };
                let (dev, ino, offset) = (num(0), num(1), num(2));
                let same = |s: &str, d: u64, i: u64| s.as_bytes() == source && d == dev && i == ino;
                if self
                    .reset
                    .iter()
                    .chain(&self.done)
                    .any(|(s, d, i)| same(s, *d, *i))
                {
                    return true;
                }
                match self.cursors.iter().find(|(s, d, i, _)| same(s, *d, *i)) {
                    Some((_, _, _, at)) => offset < *at,
                    // No cursor yet (the tail has not reported the file since the state was
                    // taken): a replay reads it from its start. Keep the id for a day.
                    None => <[u8; 8]>::try_from(value)
                        .map(|v| self.wall.millis() - i64::from_be_bytes(v) > ORPHAN_LINE_ID_MS)
                        .unwrap_or(true),
                }
            }
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(offset: u64) -> AppliedId {
        AppliedId {
            origin: Origin::Line {
                source: "auth".into(),
                dev: 1,
                ino: 2,
                offset,
            },
            rule: "ssh".into(),
            group: "10.0.0.1".into(),
            ts: Timestamp(5),
            applied_at: Timestamp(900),
        }
    }

    #[test]
    fn coverage_forgets_only_what_a_replay_cannot_produce() {
        let cov = Coverage {
            cursors: vec![("auth".into(), 1, 2, 100)],
            reset: vec![],
            done: vec![],
            now: Timestamp(1_000),
            wall: Timestamp(1_000),
        };
        let covers = |id: &AppliedId| cov.covers(&id.key(), &id.value());
        assert!(covers(&line(99)), "before the cursor: applied in the state");
        assert!(
            !covers(&line(100)),
            "at the cursor: a replay reads it again"
        );
        let mut other_file = line(5);
        if let Origin::Line { ino, .. } = &mut other_file.origin {
            *ino = 3;
        }
        assert!(
            !covers(&other_file),
            "a file without a cursor is read from its start by a replay"
        );
        let done = Coverage {
            done: vec![("auth".into(), 1, 3)],
            ..cov.clone()
        };
        assert!(done.covers(&other_file.key(), &other_file.value()));
        let day_later = Coverage {
            wall: Timestamp(1_000 + 25 * 3600 * 1000),
            ..cov.clone()
        };
        assert!(day_later.covers(&other_file.key(), &other_file.value()));
        let timer = |at| AppliedId {
            origin: Origin::Timer { at: Timestamp(at) },
            rule: "quiet".into(),
            group: String::new(),
            ts: Timestamp(10),
            applied_at: Timestamp(0),
        };
        assert!(covers(&timer(1_000)));
        assert!(!covers(&timer(1_001)), "fired after the state was taken");
        let reset = Coverage {
            reset: vec![("auth".into(), 1, 2)],
            ..cov.clone()
        };
        assert!(reset.covers(&line(500).key(), &line(500).value()));
    }
}
