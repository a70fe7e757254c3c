//! Persistence: the [`Store`] trait the incident manager writes through, and its sled
//! implementation ([`SledStore`]).
//!
//! Trees (DESIGN §4): `incident_log` (append-only timeline, key = id ‖ seq), `incidents`
//! (snapshots, key = id), `idx_key` (incident key → newest id), `idx_status` (status ‖ id),
//! `applied` (idempotency ids of detections applied since the last engine checkpoint),
//! `checkpoints` (engine window state and file cursors) and `meta` (schema version, next id). One incident change is one transaction over all of
//! them; [`Store::flush`] makes everything applied so far durable, and the manager calls it
//! before answering anyone.

mod sled_store;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::incident::{Incident, Severity, Status, TimelineEntry};

pub use sled_store::SledStore;

/// The on-disk schema this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state folder {path} is in use by another process (is another incidentd running?)")]
    Locked { path: String },
    #[error("state folder {path}: {source}")]
    Open { path: String, source: sled::Error },
    #[error(
        "state folder {path} has schema version {found}; this incidentd understands up to {supported}"
    )]
    Schema {
        path: String,
        found: u64,
        supported: u64,
    },
    #[error("store {op} failed: {source}")]
    Sled {
        op: &'static str,
        source: sled::Error,
    },
    #[error("corrupt record in tree {tree} at key {key}: {message}")]
    Record {
        tree: &'static str,
        key: String,
        message: String,
    },
}

/// One incident change, applied atomically: the new snapshot and the timeline entries that
/// led to it.
#[derive(Debug, Clone)]
pub struct Change {
    pub incident: Incident,
    /// The status before this change; `None` when the change creates the incident.
    pub previous_status: Option<Status>,
    pub entries: Vec<TimelineEntry>,
    /// The idempotency id of the detection behind this change, recorded with it so a replay
    /// after a crash does not apply the detection twice.
    pub detection: Option<String>,
}

/// Filters for listing incidents; every set field must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListQuery {
    pub status: Vec<Status>,
    pub severity: Vec<Severity>,
    pub service: Option<String>,
    /// `k:v` pairs that must all be labels of the incident.
    pub labels: Vec<(String, String)>,
    /// Case-insensitive text in title or key.
    pub q: Option<String>,
    /// Created at or after.
    pub since: Option<Timestamp>,
    pub limit: usize,
    /// Only incidents with a smaller id (newest first paging).
    pub cursor: Option<u64>,
}

impl ListQuery {
    pub fn matches(&self, i: &Incident) -> bool {
        (self.status.is_empty() || self.status.contains(&i.status))
            && (self.severity.is_empty() || self.severity.contains(&i.severity))
            && self
                .service
                .as_ref()
                .is_none_or(|s| i.service.as_ref() == Some(s))
            && self.labels.iter().all(|(k, v)| i.labels.get(k) == Some(v))
            && self.q.as_ref().is_none_or(|q| {
                let q = q.to_lowercase();
                i.title.to_lowercase().contains(&q) || i.key.to_lowercase().contains(&q)
            })
            && self.since.is_none_or(|s| i.created_at >= s)
    }
}

/// A page of incidents, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    pub incidents: Vec<Incident>,
    pub next_cursor: Option<u64>,
}

/// What the incident manager needs from storage. Reads may come from any thread.
pub trait Store: Send + Sync + 'static {
    /// Applies one change atomically (not yet durable).
    fn apply(&self, change: &Change) -> Result<(), StoreError>;
    /// Makes every applied change durable.
    fn flush(&self) -> Result<(), StoreError>;
    fn incident(&self, id: u64) -> Result<Option<Incident>, StoreError>;
    fn timeline(&self, id: u64) -> Result<Vec<TimelineEntry>, StoreError>;
    /// The newest incident created for `key`.
    fn latest_for_key(&self, key: &str) -> Result<Option<u64>, StoreError>;
    fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;
    /// The id the next incident will get (ids never repeat).
    fn next_id(&self) -> Result<u64, StoreError>;
    /// Incidents per status.
    fn count_by_status(&self) -> Result<Vec<(Status, u64)>, StoreError>;
    /// Replaces the engine's checkpoint (not yet durable; the next flush makes it so) and
    /// forgets the detections recorded before it: the checkpoint covers them, so a replay
    /// after a crash cannot produce them again.
    fn save_checkpoint(&self, bytes: &[u8]) -> Result<(), StoreError>;
    /// Whether a detection with this idempotency id was applied since the last checkpoint.
    fn detection_applied(&self, id: &str) -> Result<bool, StoreError>;
    /// Records a detection that changed no incident (suppressed by the rate limit).
    fn record_detection(&self, id: &str) -> Result<(), StoreError>;
    /// The last engine checkpoint saved, if any.
    fn load_checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError>;
}
