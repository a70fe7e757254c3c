//! Persistence: every component's storage port implemented on sled ([`SledStore`], one file
//! per port under `sled/`), wrapped by [`HealingStore`], which reopens the database after a
//! failed flush.
//!
//! The ports are defined by their users: [`crate::incident::port`] (the incident log and its
//! reads, checkpoints, silences), [`crate::remediation::port`] (action runs) and
//! [`crate::notification::port`] (the outbox). This module sits above them and they do not
//! know it; the daemon hands each component its port.
//!
//! Trees (DESIGN §4): `incident_log` (append-only timeline, key = id ‖ seq), `incidents`
//! (snapshots, key = id), `idx_key` (incident key → newest id), `idx_status` (status ‖ id),
//! `applied` (idempotency ids of detections applied since the last engine checkpoint),
//! `checkpoints` (engine window state and file cursors), `changes` (store-wide change
//! number → log key, the order of `GET /v1/stream`), `silences`, `baselines` (snapshots of
//! incidents from before schema 2), `actions` (action runs), `outbox` (notification jobs),
//! `notified` (channels told of an incident), and `meta` (schema version, next ids, the
//! notifier's cursor). One incident change is one transaction over log, snapshot, indexes,
//! applied ids and change numbers; a flush makes everything applied so far durable, and each
//! writer flushes before it acts on or answers about what it wrote. Who writes which tree is
//! listed in `sled/mod.rs` and docs/ARCHITECTURE.md.

mod healing;
mod sled;

pub use crate::detection::{AppliedId, Coverage, Origin};
pub use crate::incident::port::{
    Change, Checkpoints, Cursor, IncidentLog, IncidentStore, ListQuery, Page, Silences, Sort,
    severity_rank, text_in_incident,
};
pub use crate::notification::port::{NotificationStore, Outbox};
pub use crate::port::{Durable, StoreError};
pub use crate::remediation::port::{ActionRuns, RemediationStore};

pub use healing::HealingStore;
pub use sled::{Rebuild, SledStore, Verification};

/// The on-disk schema this build reads and writes.
///
/// - 1: the first layout.
/// - 2: every timeline entry has a store-wide change number (`changes` tree); `created`
///   entries carry the starting incident and `detection` entries what they changed, so the
///   log rebuilds the snapshots. Opening a version 1 store migrates it in place: its entries
///   are numbered in time order and each incident's snapshot is kept as a baseline
///   (`baselines` tree) standing for its entries so far.
/// - 3: the `changes` tree holds runs of change numbers (one key per write, with each entry's
///   kind) and the `applied` tree runs of line ids (one key per file per write). A version 2
///   store is read as it is (its one-number keys are runs of one), so opening one only
///   records the new version; a build that writes 2 refuses the store from then on, instead
///   of misreading the runs.
/// - 4: records of 512 bytes or more may be stored compressed (LZ4, see
///   `sled/record.rs`). Older records are read as they are, so opening a version 2 or 3
///   store only records the new version; a build that reads 3 refuses the store from then
///   on, instead of taking compressed records for damaged ones.
/// - 5: a `detection` entry may stand for several detections (`"detections": n`) and a
///   snapshot may hold detections not yet in its log (`folded`, see `incident/fold.rs`).
///   Older entries and snapshots are read as they are, so opening a version 2 to 4 store only
///   records the new version; a build that reads 4 refuses the store from then on, instead of
///   counting a folded entry as one detection and dropping `folded` when it rewrites a
///   snapshot.
pub const SCHEMA_VERSION: u64 = 5;

/// Every port at once: what the daemon opens, and what the API and tools read.
/// Each component's port is a supertrait, so an `Arc<dyn Store>` becomes any of them.
pub trait Store: IncidentStore + RemediationStore + NotificationStore {}

impl<T: IncidentStore + ActionRuns + Outbox + ?Sized> Store for T {}

/// The in-memory incident port answers as the sled one does, so unit tests on it say
/// something about the daemon.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::detection::Origin;
    use crate::incident::port::memory::MemoryIncidents;
    use crate::incident::{EntryKind, Incident, Severity, Status, TimelineEntry};

    fn created(id: u64, sev: Severity, title: &str) -> Change {
        let inc = Incident {
            timeline_len: 1,
            ..Incident::new(
                id,
                format!("k{id}"),
                title.into(),
                sev,
                Timestamp(id as i64),
            )
        };
        let entry = TimelineEntry {
            incident_id: id,
            seq: 0,
            ts: Timestamp(id as i64),
            kind: EntryKind::Created,
            actor: "system".into(),
            note: (id == 2).then(|| "Disk FULL on db".to_owned()),
            data: serde_json::json!({"incident": inc}).into(),
            change: 0,
        };
        Change {
            incident: inc,
            previous_status: None,
            entries: vec![entry],
            detections: vec![AppliedId {
                origin: Origin::Timer {
                    at: Timestamp(id as i64),
                },
                rule: "r".into(),
                group: id.to_string(),
                ts: Timestamp(id as i64),
                applied_at: Timestamp(0),
            }],
            index_keys: vec![],
        }
    }

    /// Everything a reader can see, in one comparable value.
    fn observe(s: &dyn IncidentStore) -> Vec<String> {
        let mut out = Vec::new();
        for sort in [Sort::Newest, Sort::Oldest, Sort::Severity] {
            for q in [None, Some("disk".to_owned())] {
                let mut query = ListQuery {
                    limit: 1,
                    sort,
                    q,
                    ..ListQuery::default()
                };
                loop {
                    let page = s.list(&query).unwrap();
                    out.extend(page.incidents.iter().map(|i| format!("{sort:?}:{}", i.id)));
                    match page.next_cursor {
                        Some(c) => query.cursor = Some(c),
                        None => break,
                    }
                }
            }
        }
        for status in [Status::Open, Status::Acknowledged] {
            let query = ListQuery {
                status: vec![status],
                limit: 10,
                ..ListQuery::default()
            };
            let page = s.list(&query).unwrap();
            out.push(format!(
                "{status:?}: {:?}",
                page.incidents.iter().map(|i| i.id).collect::<Vec<_>>()
            ));
        }
        out.push(format!("{:?}", s.count_by_status().unwrap()));
        out.push(format!("next {}", s.next_id().unwrap()));
        out.push(format!("key {:?}", s.latest_for_key("k2").unwrap()));
        for e in s.changes_after(1, 10).unwrap() {
            out.push(format!("change {} {}:{}", e.change, e.incident_id, e.seq));
        }
        out.push(format!(
            "at {:?}",
            s.incident_at(3, 0).unwrap().map(|i| i.title)
        ));
        out
    }

    #[test]
    fn memory_and_sled_incident_ports_agree() {
        let dir = tempfile::tempdir().unwrap();
        let (sled, _) = SledStore::open(dir.path()).unwrap();
        let memory = MemoryIncidents::default();
        let stores: [&dyn IncidentStore; 2] = [&sled, &memory];
        for s in stores {
            s.apply(&created(1, Severity::Sev3, "api slow")).unwrap();
            s.apply(&created(2, Severity::Sev1, "db")).unwrap();
            s.apply(&created(3, Severity::Sev3, "disk usage")).unwrap();
            let mut acked = created(1, Severity::Sev3, "api slow");
            acked.previous_status = Some(Status::Open);
            acked.incident.status = Status::Acknowledged;
            acked.entries[0].seq = 1;
            acked.entries[0].kind = EntryKind::StatusChanged;
            acked.entries[0].data =
                serde_json::json!({"from": "open", "to": "acknowledged"}).into();
            acked.detections.clear();
            s.apply(&acked).unwrap();
            // A write that keeps the status (a detection joining incident 3) leaves it listed
            // under that status.
            let mut joined = created(3, Severity::Sev3, "disk usage");
            joined.previous_status = Some(Status::Open);
            joined.incident.detections = 2;
            joined.entries[0].seq = 1;
            joined.entries[0].kind = EntryKind::Detection;
            joined.detections[0].rule = "r2".into();
            s.apply(&joined).unwrap();
            s.flush().unwrap();
        }
        let (a, b) = (observe(&sled), observe(&memory));
        assert_eq!(a, b);
        assert!(a.contains(&"Severity:2".to_owned()), "{a:?}");
        assert!(a.contains(&"Open: [3, 2]".to_owned()), "{a:?}");
        assert!(a.contains(&"Acknowledged: [1]".to_owned()), "{a:?}");
        // Checkpoints forget what they cover, on both.
        let covered = created(1, Severity::Sev3, "x").detections.remove(0);
        for s in stores {
            assert!(s.detection_applied(&covered).unwrap());
            let cov = Coverage {
                cursors: vec![],
                reset: vec![],
                done: vec![],
                now: Timestamp(1),
                wall: Timestamp(1),
            };
            s.save_checkpoint(b"state", &cov).unwrap();
            assert!(!s.detection_applied(&covered).unwrap());
            assert_eq!(s.load_checkpoint().unwrap().as_deref(), Some(&b"state"[..]));
        }
    }

    /// A write of several incidents is one run of change numbers on sled: reading from inside
    /// a run, by kind, with limits, after an incident in it is removed, and after reopening
    /// must see what one number per entry would (the memory store keeps one per entry).
    #[test]
    fn runs_of_changes_read_like_one_number_per_entry() {
        let dir = tempfile::tempdir().unwrap();
        let (sled, _) = SledStore::open(dir.path()).unwrap();
        let memory = MemoryIncidents::default();
        let stores: [&dyn IncidentStore; 2] = [&sled, &memory];
        let batch = || {
            (1..=4)
                .map(|id| {
                    let mut c = created(id, Severity::Sev3, "t");
                    let mut det = c.entries[0].clone();
                    det.seq = 1;
                    det.kind = EntryKind::Detection;
                    c.entries.push(det);
                    c
                })
                .collect::<Vec<_>>()
        };
        let see = |s: &dyn IncidentStore| {
            let mut out = Vec::new();
            for after in 0..=9 {
                let all: Vec<_> = s
                    .changes_after(after, 3)
                    .unwrap()
                    .iter()
                    .map(|e| (e.change, e.incident_id, e.seq))
                    .collect();
                let of = s
                    .changes_of(after, 7, 2, |k| k == EntryKind::Created)
                    .unwrap();
                let of: (Vec<_>, u64) = (of.0.iter().map(|e| e.change).collect(), of.1);
                out.push(format!(
                    "{after}: {all:?} {:?} {of:?}",
                    s.changed_after(after, 2).unwrap()
                ));
            }
            out.push(format!(
                "none {:?} {:?}",
                s.changed_after(0, 0).unwrap(),
                s.changes_of(0, 8, 0, |_| true).unwrap()
            ));
            out.push(format!("last {}", s.last_change()));
            out
        };
        for s in stores {
            s.apply_many(&batch()).unwrap();
            s.flush().unwrap();
        }
        assert_eq!(see(&sled), see(&memory));
        assert_eq!(
            sled.changes_of(0, 8, 10, |k| k == EntryKind::Created)
                .unwrap()
                .0
                .iter()
                .map(|e| e.change)
                .collect::<Vec<_>>(),
            vec![1, 3, 5, 7]
        );
        for s in stores {
            s.remove_incident(2).unwrap();
            s.flush().unwrap();
        }
        assert_eq!(see(&sled), see(&memory));
        assert!(!see(&sled).iter().any(|l| l.contains("(3, 2, 0)")));
        drop(sled);
        let (sled, _) = SledStore::reopen(dir.path()).unwrap();
        assert_eq!(sled.last_change(), 8);
        assert_eq!(see(&sled), see(&memory));
        for id in [1, 3, 4] {
            sled.remove_incident(id).unwrap();
        }
        assert!(sled.changes_after(0, 10).unwrap().is_empty());
        assert_eq!(
            sled.changed_after(0, 10).unwrap(),
            vec![],
            "an emptied run goes"
        );
    }

    #[test]
    fn a_version_2_or_3_store_is_marked_4_and_a_newer_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let version = |v: Option<u64>| {
            let db = (0..100)
                .find_map(|_| {
                    let db = ::sled::open(dir.path()).ok();
                    if db.is_none() {
                        std::thread::sleep(std::time::Duration::from_millis(20));
                    }
                    db
                })
                .expect("sled lets go of its lock");
            let meta = db.open_tree("meta").unwrap();
            if let Some(v) = v {
                meta.insert("schema_version", &v.to_be_bytes()).unwrap();
                db.flush().unwrap();
            }
            let got = meta.get("schema_version").unwrap().unwrap();
            u64::from_be_bytes(got.as_ref().try_into().unwrap())
        };
        let open = || SledStore::reopen(dir.path());
        drop(open().unwrap());
        assert_eq!(version(None), SCHEMA_VERSION);
        for old in [2, 3, 4] {
            assert_eq!(version(Some(old)), old);
            drop(open().unwrap());
            assert_eq!(version(None), 5);
        }
        assert_eq!(version(Some(6)), 6);
        match open() {
            Err(StoreError::Schema { found: 6, .. }) => {}
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("a version 6 store was opened"),
        }
    }
}
