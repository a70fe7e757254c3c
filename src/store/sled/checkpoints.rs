//! The engine's checkpoint and the idempotency ids of detections applied since it.
//!
//! Every detection asks whether it was applied already (a replay after a crash). A line's id
//! can only be in the tree if its offset is at most the highest offset of its file's ids
//! there: [`HighWater`] keeps that per file, so a detection from a line past it (every one,
//! except in the replay window after a restart) is answered without reading the tree.

use std::collections::HashMap;

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
            if coverage.covers(&k, &v) {
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
        let key = id.key();
        if !self.high_water.may_hold(&key) {
            return Ok(false);
        }
        self.applied
            .contains_key(key)
            .map_err(|source| StoreError::Sled {
                op: "read applied detections",
                source,
            })
    }

    fn record_detection(&self, id: &AppliedId) -> Result<(), StoreError> {
        let key = id.key();
        self.high_water.raise(&key);
        self.applied
            .insert(key, &id.value())
            .map(|_| ())
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

/// Per file (the line id's key up to its offset), the highest offset of any id the `applied`
/// tree may hold: raised before every write of an id, never lowered (removals leave it an
/// upper bound).
#[derive(Debug, Default)]
pub(super) struct HighWater(std::sync::Mutex<HashMap<Vec<u8>, u64>>);

/// A line id's key as its file part and its offset; `None` for timer ids.
fn file_and_offset(key: &[u8]) -> Option<(&[u8], u64)> {
    let rest = key.strip_prefix(b"f")?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let end = 1 + nul + 1 + 16;
    let offset = key.get(end..end + 8)?;
    Some((&key[..end], u64::from_be_bytes(offset.try_into().ok()?)))
}

impl HighWater {
    /// From the ids in the tree.
    pub(super) fn of(applied: &sled::Tree) -> Result<HighWater, sled::Error> {
        let hw = HighWater::default();
        for k in applied.scan_prefix(b"f").keys() {
            hw.raise(&k?);
        }
        Ok(hw)
    }

    /// Notes an id about to be written.
    pub(super) fn raise(&self, key: &[u8]) {
        if let Some((file, offset)) = file_and_offset(key) {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            match map.get_mut(file) {
                Some(high) => *high = (*high).max(offset),
                None => {
                    map.insert(file.to_vec(), offset);
                }
            }
        }
    }

    /// False when the tree cannot hold this id (a line past its file's highest offset).
    pub(super) fn may_hold(&self, key: &[u8]) -> bool {
        match file_and_offset(key) {
            Some((file, offset)) => self
                .0
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(file)
                .is_some_and(|high| offset <= *high),
            None => true,
        }
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
        let (store, _) = SledStore::open(dir.path()).unwrap();
        assert!(store.detection_applied(&line("auth", 7, 100)).unwrap());
        assert!(store.high_water.may_hold(&line("auth", 7, 99).key()));
        assert!(!store.high_water.may_hold(&line("auth", 7, 101).key()));
    }
}
