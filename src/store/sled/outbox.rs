//! The notification outbox (the notifier's port): jobs, channels told of each incident, and
//! the notifier's place in the change log.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{SledStore, decode, encode};
use crate::notification::port::Outbox;
use crate::port::StoreError;

impl Outbox for SledStore {
    fn enqueue_jobs(
        &self,
        jobs: &[crate::notification::Job],
        remove: &[u64],
        cursor: u64,
    ) -> Result<(), StoreError> {
        let encoded: Vec<([u8; 8], Vec<u8>)> = jobs
            .iter()
            .map(|j| (j.id.to_be_bytes(), encode(j)))
            .collect();
        let next = jobs.iter().map(|j| j.id + 1).max();
        let result: Result<(), TransactionError<()>> =
            (&self.outbox, &self.meta).transaction(|(outbox, meta)| {
                for id in remove {
                    outbox.remove(&id.to_be_bytes())?;
                }
                for (k, v) in &encoded {
                    outbox.insert(k, v.as_slice())?;
                }
                meta.insert("notify_cursor", &cursor.to_be_bytes())?;
                if let Some(n) = next {
                    let have = meta
                        .get("next_job")?
                        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                        .map_or(1, u64::from_be_bytes);
                    if n > have {
                        meta.insert("next_job", &n.to_be_bytes())?;
                    }
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        result.map_err(|e| StoreError::Sled {
            op: "enqueue notifications",
            source: match e {
                TransactionError::Storage(s) => s,
                TransactionError::Abort(()) => {
                    sled::Error::Unsupported("transaction aborted".into())
                }
            },
        })
    }

    fn job(&self, id: u64) -> Result<Option<crate::notification::Job>, StoreError> {
        let key = id.to_be_bytes();
        match self.outbox.get(key).map_err(|source| StoreError::Sled {
            op: "read the outbox",
            source,
        })? {
            Some(v) => decode("outbox", &key, &v).map(Some),
            None => Ok(None),
        }
    }

    fn mark_notified(&self, incident: u64, channel: &str) -> Result<(), StoreError> {
        let mut k = incident.to_be_bytes().to_vec();
        k.extend_from_slice(channel.as_bytes());
        self.notified
            .insert(k, &[])
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "remember a notified channel",
                source,
            })
    }

    fn notified_channels(&self, incident: u64) -> Result<Vec<String>, StoreError> {
        self.notified
            .scan_prefix(incident.to_be_bytes())
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k[8..]).into_owned())
                    .map_err(|source| StoreError::Sled {
                        op: "read notified channels",
                        source,
                    })
            })
            .collect()
    }

    fn put_job(&self, job: &crate::notification::Job) -> Result<(), StoreError> {
        self.outbox
            .insert(job.id.to_be_bytes(), encode(job))
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "store notification job",
                source,
            })
    }

    fn remove_job(&self, id: u64) -> Result<(), StoreError> {
        self.outbox
            .remove(id.to_be_bytes())
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "remove notification job",
                source,
            })
    }

    fn jobs(&self) -> Result<Vec<crate::notification::Job>, StoreError> {
        self.outbox
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|source| StoreError::Sled {
                    op: "read the outbox",
                    source,
                })?;
                decode("outbox", &k, &v)
            })
            .collect()
    }

    fn notify_cursor(&self) -> Result<Option<u64>, StoreError> {
        self.meta_u64("notify_cursor")
    }

    fn next_job_id(&self) -> Result<u64, StoreError> {
        let last = self
            .outbox
            .last()
            .map_err(|source| StoreError::Sled {
                op: "read the outbox",
                source,
            })?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(1, |k| u64::from_be_bytes(k) + 1);
        Ok(self.meta_u64("next_job")?.unwrap_or(1).max(last))
    }
}
