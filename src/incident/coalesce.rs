//! Group commit of detections. When a log is dense, most detections join the active incident
//! of their own key and change nothing but its counts, its evidence and its timeline. Within
//! one batch of the manager, such changes of one incident are gathered into one: the last
//! snapshot, every timeline entry in order, every detection's idempotency id. The batch ends
//! with one store write per incident instead of one per detection, before the batch's flush,
//! so nothing is answered, published or acknowledged to the engine before it is durable —
//! the crash invariant is the batch's, as before.
//!
//! Anything else the manager does first writes what was gathered (see
//! `Manager::settle`), so every other path reads the store as if each detection had been
//! written on its own.
//!
//! Until then the store's incidents and key index change only through this batch, so the
//! incident the store named for a detection's key stays the one for that key: it is kept
//! here, and the batch's next detections of that key do not look it up again.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::Incident;
use super::port::Change;
use crate::detection::AppliedId;

#[derive(Default)]
pub(super) struct Coalesced {
    /// Per incident id, the merged change.
    changes: BTreeMap<u64, Change>,
    /// The keys of the idempotency ids gathered.
    applied: HashSet<Vec<u8>>,
    /// The incident whose snapshot is lent out (see [`Coalesced::lend`]).
    lent: Option<u64>,
    /// Incident keys the store was asked about since the last write, and its answers.
    keys: HashMap<String, u64>,
}

impl Coalesced {
    /// The incident as the gathered changes leave it.
    pub(super) fn incident(&self, id: u64) -> Option<&Incident> {
        self.changes.get(&id).map(|c| &c.incident)
    }

    /// Whether a detection with this id was gathered already.
    pub(super) fn applied(&self, id: &AppliedId) -> bool {
        !self.applied.is_empty() && self.applied.contains(&id.key())
    }

    /// The gathered incident itself, to be joined again and given back with
    /// [`Coalesced::add`] (no copy of its evidence and timeline counts). One at a time; until
    /// it is back, its change holds a placeholder and must not be written.
    pub(super) fn lend(&mut self, id: u64) -> Option<Incident> {
        if self.lent.is_some() {
            return None;
        }
        let change = self.changes.get_mut(&id)?;
        self.lent = Some(id);
        let placeholder = Incident::new(
            id,
            String::new(),
            String::new(),
            change.incident.severity,
            change.incident.created_at,
        );
        Some(std::mem::replace(&mut change.incident, placeholder))
    }

    /// Whether incident `id` is lent out.
    pub(super) fn is_lent(&self, id: u64) -> bool {
        self.lent == Some(id)
    }

    /// Adds a change to be written with the others of its incident (giving back a lent
    /// snapshot: the change's is the newer one).
    pub(super) fn add(&mut self, change: Change) {
        if self.lent == Some(change.incident.id) {
            self.lent = None;
        }
        for d in &change.detections {
            self.applied.insert(d.key());
        }
        match self.changes.get_mut(&change.incident.id) {
            Some(had) => {
                had.incident = change.incident;
                had.entries.extend(change.entries);
                had.detections.extend(change.detections);
                for k in change.index_keys {
                    if !had.index_keys.contains(&k) {
                        had.index_keys.push(k);
                    }
                }
            }
            None => {
                self.changes.insert(change.incident.id, change);
            }
        }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The incident the store named for `key` since the last write.
    pub(super) fn incident_of_key(&self, key: &str) -> Option<u64> {
        self.keys.get(key).copied()
    }

    /// Keeps the store's answer for `key`, until the next write (see
    /// [`Coalesced::forget_keys`]).
    pub(super) fn note_key(&mut self, key: &str, id: u64) {
        self.keys.insert(key.to_owned(), id);
    }

    /// Whether answers are kept (none may be at a write outside the batch).
    pub(super) fn holds_keys(&self) -> bool {
        !self.keys.is_empty()
    }

    /// Forgets the kept answers: the store is about to be written.
    pub(super) fn forget_keys(&mut self) {
        self.keys.clear();
    }

    /// The merged changes, one per incident, to write now. A change whose snapshot is
    /// still lent is left out (it would write the placeholder); the manager never settles
    /// with one lent (see `join`), so that is only a guard.
    pub(super) fn take(&mut self) -> Vec<Change> {
        self.applied.clear();
        self.keys.clear();
        let mut changes = std::mem::take(&mut self.changes);
        if let Some(id) = self.lent.take() {
            changes.remove(&id);
            tracing::error!(
                incident = id,
                "a gathered change was still lent at a write; left out"
            );
        }
        changes.into_values().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::detection::Origin;
    use crate::incident::{EntryKind, Severity, Status, TimelineEntry};

    fn change(id: u64, seq: u64, detections: u64) -> Change {
        let mut inc = Incident::new(
            id,
            format!("k{id}"),
            "t".into(),
            Severity::Sev3,
            Timestamp(0),
        );
        inc.detections = detections;
        Change {
            incident: inc,
            previous_status: Some(Status::Open),
            entries: vec![TimelineEntry {
                incident_id: id,
                seq,
                ts: Timestamp(seq as i64),
                kind: EntryKind::Detection,
                actor: "system".into(),
                note: None,
                data: Default::default(),
                change: 0,
            }],
            detections: vec![AppliedId {
                origin: Origin::Timer {
                    at: Timestamp(seq as i64),
                },
                rule: "r".into(),
                group: id.to_string(),
                ts: Timestamp(seq as i64),
                applied_at: Timestamp(0),
            }],
            index_keys: Vec::new(),
        }
    }

    #[test]
    fn changes_of_one_incident_become_one_with_every_entry_in_order() {
        let mut c = Coalesced::default();
        c.add(change(7, 3, 2));
        c.add(change(2, 10, 1));
        c.add(change(7, 4, 3));
        assert_eq!(c.incident(7).map(|i| i.detections), Some(3));
        let first = change(7, 3, 2).detections.remove(0);
        assert!(c.applied(&first));
        let out = c.take();
        assert!(c.is_empty() && !c.applied(&first));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].incident.id, 2);
        let seven = &out[1];
        assert_eq!(seven.incident.detections, 3, "the last snapshot");
        assert_eq!(
            seven.entries.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3, 4]
        );
        assert_eq!(seven.detections.len(), 2);
        assert_eq!(seven.previous_status, Some(Status::Open));
    }

    #[test]
    fn a_lent_snapshot_comes_back_with_the_next_change() {
        let mut c = Coalesced::default();
        c.add(change(7, 3, 2));
        let inc = c.lend(7).expect("gathered");
        assert_eq!(inc.detections, 2);
        assert!(c.is_lent(7) && c.lend(7).is_none(), "one at a time");
        c.add(change(7, 4, 3));
        assert!(!c.is_lent(7));
        let out = c.take();
        assert_eq!(out[0].incident.detections, 3);
        assert_eq!(out[0].entries.len(), 2);
        // A snapshot never given back is not written.
        c.add(change(8, 1, 1));
        c.lend(8);
        assert!(c.take().is_empty());
    }
}
