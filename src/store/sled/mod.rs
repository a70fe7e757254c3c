//! Every storage port on one sled database: each port's implementation in its own file
//! (`incidents`, `checkpoints`, `silences`, `runs`, `outbox`), schema migration, verify and
//! rebuild in `repair`.
//!
//! Who writes which tree: the incident manager writes `incidents`, `incident_log`,
//! `idx_key`, `idx_status`, `changes`, `applied`, `checkpoints`, `silences`, `baselines` and
//! the `next_id`/`next_change`/`next_silence` counters in `meta`; remediation writes `actions`
//! and `next_action_run`; the notifier writes `outbox`, `notified`, `notify_cursor` and
//! `next_job`. Everyone reads `incidents` and `incident_log`.

use std::path::{Path, PathBuf};

mod applied;
mod checkpoints;
mod feed;
mod incidents;
mod outbox;
mod record;
mod repair;
mod runs;
mod silences;

pub use repair::{Rebuild, Verification};

use record::{RECORD_V1, decode, decode_entries, encode, encode_entries, hex};

use super::SCHEMA_VERSION;
use crate::incident::Status;
use crate::port::{Durable, StoreError};

pub struct SledStore {
    db: sled::Db,
    incidents: sled::Tree,
    log: sled::Tree,
    idx_key: sled::Tree,
    idx_status: sled::Tree,
    meta: sled::Tree,
    checkpoints: sled::Tree,
    applied: sled::Tree,
    /// Change number → log key of the timeline entry it numbers.
    changes: sled::Tree,
    silences: sled::Tree,
    /// Snapshots of incidents from before schema 2, standing for their early entries.
    baselines: sled::Tree,
    /// Action runs: pending approvals, results, pending reverts.
    actions: sled::Tree,
    /// The notification outbox: job id → job.
    outbox: sled::Tree,
    /// (incident id ‖ channel id) of channels told of an incident's opening.
    notified: sled::Tree,
    /// The number the next stored timeline entry gets (the manager is the only writer).
    next_change: std::sync::atomic::AtomicU64,
    /// Per file, the highest line offset of the ids in `applied`.
    high_water: applied::HighWater,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. A corrupt store is moved aside to
    /// `<dir>.corrupt.<unix-seconds>` and a clean one started, so a daemon under `Restart=` never
    /// crash-loops; the moved path is returned so the daemon can raise an incident about it.
    /// [`SledStore::open`] for a test that opens a store it has just dropped: sled lets go
    /// of its file lock from a background thread after a drop, so a `Locked` answer is
    /// tried again for up to two seconds.
    #[cfg(test)]
    pub(crate) fn reopen(dir: &Path) -> Result<(SledStore, Option<PathBuf>), StoreError> {
        for _ in 0..100 {
            match Self::open(dir) {
                Err(StoreError::Locked { .. }) => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
        Self::open(dir)
    }

    pub fn open(dir: &Path) -> Result<(SledStore, Option<PathBuf>), StoreError> {
        match Self::open_once(dir) {
            Ok(s) => Ok((s, None)),
            Err(StoreError::Open {
                source: sled::Error::Corruption { .. },
                ..
            }) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let aside = PathBuf::from(format!("{}.corrupt.{secs}", dir.display()));
                std::fs::rename(dir, &aside).map_err(|e| StoreError::Open {
                    path: dir.display().to_string(),
                    source: sled::Error::Io(e),
                })?;
                tracing::error!(state_dir = %dir.display(), moved_to = %aside.display(),
                    "state store was corrupt; moved it aside and started a clean one");
                Ok((Self::open_once(dir)?, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn open_once(dir: &Path) -> Result<SledStore, StoreError> {
        let path = dir.display().to_string();
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(8 << 20)
            .open()
            .map_err(|source| match &source {
                sled::Error::Io(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("lock") =>
                {
                    StoreError::Locked { path: path.clone() }
                }
                _ => StoreError::Open {
                    path: path.clone(),
                    source,
                },
            })?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })
        };
        let applied = tree("applied")?;
        let high_water = applied::HighWater::of(&applied).map_err(|source| StoreError::Open {
            path: path.clone(),
            source,
        })?;
        let store = SledStore {
            applied,
            high_water,
            incidents: tree("incidents")?,
            log: tree("incident_log")?,
            idx_key: tree("idx_key")?,
            idx_status: tree("idx_status")?,
            meta: tree("meta")?,
            checkpoints: tree("checkpoints")?,
            changes: tree("changes")?,
            silences: tree("silences")?,
            baselines: tree("baselines")?,
            actions: tree("actions")?,
            outbox: tree("outbox")?,
            notified: tree("notified")?,
            next_change: std::sync::atomic::AtomicU64::new(1),
            db,
        };
        let last_change = store.last_numbered()?;
        let next_change = store
            .meta_u64("next_change")?
            .unwrap_or(1)
            .max(last_change + 1);
        store
            .next_change
            .store(next_change, std::sync::atomic::Ordering::Relaxed);
        match store.meta_u64("schema_version")? {
            None => {
                store
                    .meta
                    .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(|source| StoreError::Sled { op: "init", source })?;
                store.flush()?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::Schema {
                    path,
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(1) => store.migrate_v1_to_v2()?,
            Some(v @ (2..=4)) => store.mark_schema(v)?,
            Some(_) => {}
        }
        Ok(store)
    }

    fn meta_u64(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let v = self.meta.get(key).map_err(|source| StoreError::Sled {
            op: "read meta",
            source,
        })?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }
}

impl Durable for SledStore {
    fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "flush",
                source,
            })
    }

    fn heal(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
}

/// The big-endian number a key starts with (an incident id, a change number).
pub(super) fn be_u64(key: &[u8]) -> Option<u64> {
    key.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

pub(super) fn log_key(id: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

pub(super) fn status_key(status: Status, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = status.code();
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}
