//! The engine's checkpoint and the idempotency ids of detections applied since it.
//!
//! How line ids are kept (in runs, with a high water per file) is in `applied.rs`.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{RECORD_V1, SledStore};
use crate::detection::{AppliedId, Coverage};
use crate::incident::port::*;
use crate::port::StoreError;

impl Checkpoints for SledStore {
    fn save_checkpoint(&self, bytes: &[u8], coverage: &Coverage) -> Result<(), StoreError> {
        let err = |source| StoreError::Sled {
            op: "save checkpoint",
            source,
        };
        let mut record = Vec::with_capacity(bytes.len() + 1);
        record.push(RECORD_V1);
        record.extend_from_slice(bytes);
        // The manager is the only writer, so what is read here is all there is to remove.
        let mut covered: Vec<sled::IVec> = Vec::new();
        for kv in self.applied.iter() {
            let (k, v) = kv.map_err(err)?;
            let covered_now = match super::applied::as_line_id(&k, &v) {
                Some((id, wall)) => coverage.covers(&id, &wall),
                None => coverage.covers(&k, &v),
            };
            if covered_now {
                covered.push(k);
            }
        }
        let result: Result<(), TransactionError<()>> = (&self.checkpoints, &self.applied)
            .transaction(|(checkpoints, applied)| {
                checkpoints.insert("engine", record.as_slice())?;
                for k in &covered {
                    applied.remove(k)?;
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        result.map_err(|e| match e {
            TransactionError::Storage(source) => err(source),
            TransactionError::Abort(()) => {
                err(sled::Error::Unsupported("transaction aborted".into()))
            }
        })
    }

    fn detection_applied(&self, id: &AppliedId) -> Result<bool, StoreError> {
        super::applied::holds(&self.applied, &self.high_water, id).map_err(|source| {
            StoreError::Sled {
                op: "read applied detections",
                source,
            }
        })
    }

    fn record_detection(&self, id: &AppliedId) -> Result<(), StoreError> {
        let (runs, singles) = self.high_water.writes(std::iter::once(id));
        let mut batch = sled::Batch::default();
        for (k, v) in runs {
            batch.insert(k, v);
        }
        for (k, v) in singles {
            batch.insert(k, &v);
        }
        self.applied
            .apply_batch(batch)
            .map_err(|source| StoreError::Sled {
                op: "record detection",
                source,
            })
    }

    fn load_checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let v = self
            .checkpoints
            .get("engine")
            .map_err(|source| StoreError::Sled {
                op: "load checkpoint",
                source,
            })?;
        Ok(v.and_then(|v| v.strip_prefix(&[RECORD_V1]).map(<[u8]>::to_vec)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::detection::Origin;

    fn line(source: &str, ino: u64, offset: u64) -> AppliedId {
        AppliedId {
            origin: Origin::Line {
                source: source.into(),
                dev: 1,
                ino,
                offset,
            },
            rule: "r".into(),
            group: "g".into(),
            ts: Timestamp(1),
            applied_at: Timestamp(1),
        }
    }

    #[test]
    fn the_high_water_answers_only_past_the_highest_offset_and_reopens_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = SledStore::open(dir.path()).unwrap();
        store.record_detection(&line("auth", 7, 100)).unwrap();
        for (id, applied) in [
            (line("auth", 7, 100), true),
            (line("auth", 7, 50), false),
            (line("auth", 7, 101), false),
            (line("auth", 8, 100), false),
            (line("auth2", 7, 100), false),
        ] {
            assert_eq!(store.detection_applied(&id).unwrap(), applied, "{id:?}");
        }
        assert!(store.high_water.may_hold(&line("auth", 7, 50).key()));
        assert!(!store.high_water.may_hold(&line("auth", 7, 101).key()));
        assert!(!store.high_water.may_hold(&line("auth", 8, 1).key()));
        let timer = AppliedId {
            origin: Origin::Timer { at: Timestamp(5) },
            ..line("auth", 7, 0)
        };
        assert!(store.high_water.may_hold(&timer.key()));
        store.flush().unwrap();
        drop(store);
        let (store, _) = SledStore::reopen(dir.path()).unwrap();
        assert!(store.detection_applied(&line("auth", 7, 100)).unwrap());
        assert!(store.high_water.may_hold(&line("auth", 7, 99).key()));
        assert!(!store.high_water.may_hold(&line("auth", 7, 101).key()));
    }

    #[test]
    fn a_checkpoint_prunes_a_run_once_it_covers_its_highest_offset() {
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = SledStore::open(dir.path()).unwrap();
        for ids in [
            vec![line("auth", 7, 10), line("auth", 7, 20)],
            vec![line("auth", 7, 30)],
        ] {
            let (runs, _) = store.high_water.writes(ids.iter());
            for (k, v) in runs {
                store.applied.insert(k, v).unwrap();
            }
        }
        let coverage = |cursor: u64, reset: bool| Coverage {
            cursors: vec![("auth".into(), 1, 7, cursor)],
            reset: if reset {
                vec![("auth".into(), 1, 7)]
            } else {
                vec![]
            },
            done: vec![],
            now: Timestamp(0),
            wall: Timestamp(0),
        };
        store.save_checkpoint(b"one", &coverage(25, false)).unwrap();
        let applied = |o| store.detection_applied(&line("auth", 7, o)).unwrap();
        assert!(
            !applied(10) && !applied(20),
            "the run below the cursor went"
        );
        assert!(applied(30));
        store.save_checkpoint(b"two", &coverage(30, false)).unwrap();
        assert!(applied(30), "30 is not below the cursor");
        store.save_checkpoint(b"three", &coverage(0, true)).unwrap();
        assert!(!applied(30), "a truncated file's ids all go");
        assert_eq!(store.applied.len(), 0);
    }
}
