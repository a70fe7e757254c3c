//! Silences, by id.

use super::{SledStore, decode, encode};
use crate::incident::Silence;
use crate::incident::port::*;
use crate::port::StoreError;

impl Silences for SledStore {
    fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        self.silences
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|source| StoreError::Sled {
                    op: "read silences",
                    source,
                })?;
                decode("silences", &k, &v)
            })
            .collect()
    }

    fn put_silence(&self, silence: &Silence) -> Result<(), StoreError> {
        // The counter and the record need no transaction: a crash between them leaves the
        // record, and `next_silence_id` also looks past the highest stored id.
        if self.meta_u64("next_silence")?.unwrap_or(1) <= silence.id {
            self.meta
                .insert("next_silence", &(silence.id + 1).to_be_bytes())
                .map_err(|source| StoreError::Sled {
                    op: "store silence",
                    source,
                })?;
        }
        self.silences
            .insert(silence.id.to_be_bytes(), encode(silence))
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "store silence",
                source,
            })
    }

    fn next_silence_id(&self) -> Result<u64, StoreError> {
        let last = self
            .silences
            .last()
            .map_err(|source| StoreError::Sled {
                op: "read silences",
                source,
            })?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(1, |k| u64::from_be_bytes(k) + 1);
        Ok(self.meta_u64("next_silence")?.unwrap_or(1).max(last))
    }

    fn remove_silence(&self, id: u64) -> Result<(), StoreError> {
        self.silences
            .remove(id.to_be_bytes())
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "remove silence",
                source,
            })
    }
}
