//! The engine's checkpoint and the idempotency ids of detections applied since it.

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
        self.applied
            .contains_key(id.key())
            .map_err(|source| StoreError::Sled {
                op: "read applied detections",
                source,
            })
    }

    fn record_detection(&self, id: &AppliedId) -> Result<(), StoreError> {
        self.applied
            .insert(id.key(), &id.value())
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
