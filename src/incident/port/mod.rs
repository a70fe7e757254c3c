//! The incident manager's storage port: the incident log and its reads, the engine's
//! checkpoints with the idempotency ids they cover, and silences. The manager is the only
//! writer of all three; the API, remediation and notifications read the log (and follow its
//! change numbers, see [`super::feed`]). Implemented on sled by `store::sled`, and in memory by
//! `memory::MemoryIncidents` for unit tests.

#[cfg(test)]
pub mod memory;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::detection::{AppliedId, Coverage};
pub use crate::port::{Durable, StoreError};

use super::{EntryKind, Incident, Severity, Silence, Status, TimelineEntry};

/// One incident change, applied atomically: the new snapshot and the timeline entries that
/// led to it.
#[derive(Debug, Clone)]
pub struct Change {
    pub incident: Incident,
    /// The status before this change; `None` when the change creates the incident.
    pub previous_status: Option<Status>,
    pub entries: Vec<TimelineEntry>,
    /// The idempotency ids of the detections behind this change (several when detections
    /// of one incident were gathered in one batch), recorded with it so a replay after a
    /// crash does not apply a detection twice.
    pub detections: Vec<AppliedId>,
    /// Other incident keys to point at this incident (keys joined by correlation).
    pub index_keys: Vec<String>,
}

impl Change {
    /// A change that adds `entries` to `incident` and keeps its status.
    pub fn entries_of(incident: Incident, entries: Vec<TimelineEntry>) -> Change {
        Change {
            previous_status: Some(incident.status),
            incident,
            entries,
            detections: Vec::new(),
            index_keys: Vec::new(),
        }
    }
}

/// The order of a listing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    /// Newest first (by id).
    #[default]
    Newest,
    /// Oldest first (by id).
    Oldest,
    /// Worst severity first, newest first within a severity.
    Severity,
}

impl std::str::FromStr for Sort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "newest" => Ok(Sort::Newest),
            "oldest" | "age" => Ok(Sort::Oldest),
            "severity" => Ok(Sort::Severity),
            other => Err(format!(
                "unknown sort `{other}` (expected newest, oldest (or age), severity)"
            )),
        }
    }
}

/// Where the next page starts: just after this incident in the listing's order. Written
/// `ID` for the id orders and `SEV.ID` for severity order; clients pass it back as is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    /// The severity rank (1 = sev1) of the last incident shown, for severity order.
    pub rank: Option<u8>,
    pub id: u64,
}

impl Cursor {
    pub fn after(id: u64) -> Cursor {
        Cursor { rank: None, id }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rank {
            Some(r) => write!(f, "{r}.{}", self.id),
            None => write!(f, "{}", self.id),
        }
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a cursor from an earlier page");
        match s.split_once('.') {
            Some((r, id)) => Ok(Cursor {
                rank: Some(r.parse().map_err(|_| bad())?),
                id: id.parse().map_err(|_| bad())?,
            }),
            None => Ok(Cursor::after(s.parse().map_err(|_| bad())?)),
        }
    }
}

impl Serialize for Cursor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept a number too (cursors were numbers before severity order existed).
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.parse().map_err(serde::de::Error::custom),
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(Cursor::after)
                .ok_or_else(|| serde::de::Error::custom("a cursor id is a positive number")),
            other => Err(serde::de::Error::custom(format!(
                "a cursor is a string, not {other}"
            ))),
        }
    }
}

/// The severity's rank in a cursor: 1 for sev1.
pub fn severity_rank(s: Severity) -> u8 {
    match s {
        Severity::Sev1 => 1,
        Severity::Sev2 => 2,
        Severity::Sev3 => 3,
        Severity::Sev4 => 4,
    }
}

/// Filters for listing incidents; every set field must match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ListQuery {
    pub status: Vec<Status>,
    pub severity: Vec<Severity>,
    pub service: Option<String>,
    /// `k:v` pairs that must all be labels of the incident.
    pub labels: Vec<(String, String)>,
    /// Case-insensitive text in title, key or a note of the timeline.
    pub q: Option<String>,
    /// Created at or after.
    pub since: Option<Timestamp>,
    pub limit: usize,
    #[serde(default)]
    pub sort: Sort,
    /// Only incidents after this one in the listing's order.
    pub cursor: Option<Cursor>,
}

impl ListQuery {
    /// Every filter but the text (`q`), which may need the timeline's notes.
    pub fn matches_fields(&self, i: &Incident) -> bool {
        (self.status.is_empty() || self.status.contains(&i.status))
            && (self.severity.is_empty() || self.severity.contains(&i.severity))
            && self
                .service
                .as_ref()
                .is_none_or(|s| i.service.as_ref() == Some(s))
            && self.labels.iter().all(|(k, v)| i.labels.get(k) == Some(v))
            && self.since.is_none_or(|s| i.created_at >= s)
    }

    /// The lower-cased `q`, if any.
    pub fn text(&self) -> Option<String> {
        self.q
            .as_ref()
            .map(|q| q.to_lowercase())
            .filter(|q| !q.is_empty())
    }
}

/// Whether `q` (lower case) is in the incident's title or key.
pub fn text_in_incident(i: &Incident, q: &str) -> bool {
    i.title.to_lowercase().contains(q) || i.key.to_lowercase().contains(q)
}

/// A page of incidents in the listing's order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Page {
    pub incidents: Vec<Incident>,
    pub next_cursor: Option<Cursor>,
}

/// The incident log and its reads. Reads may come from any thread.
pub trait IncidentLog: Durable {
    /// Applies one change atomically (not yet durable).
    fn apply(&self, change: &Change) -> Result<(), StoreError>;
    /// Applies `changes` in order, atomically as a whole where the store can.
    fn apply_many(&self, changes: &[Change]) -> Result<(), StoreError> {
        changes.iter().try_for_each(|c| self.apply(c))
    }
    fn incident(&self, id: u64) -> Result<Option<Incident>, StoreError>;
    fn timeline(&self, id: u64) -> Result<Vec<TimelineEntry>, StoreError>;
    /// Deletes a closed incident with its timeline and index entries, in one transaction
    /// (compaction after `retain_closed`). Ids are not reused.
    fn remove_incident(&self, id: u64) -> Result<(), StoreError>;
    /// Visits every timeline entry of every incident in log order (incident id, then
    /// sequence) until `visit` returns false.
    fn each_entry(&self, visit: &mut dyn FnMut(TimelineEntry) -> bool) -> Result<(), StoreError>;
    /// The newest incident created for `key`.
    fn latest_for_key(&self, key: &str) -> Result<Option<u64>, StoreError>;
    fn list(&self, query: &ListQuery) -> Result<Page, StoreError>;
    /// Visits every incident `query` matches, newest first, page by page, until `visit`
    /// returns false (`query.limit` is the page size; 0 means 1000).
    fn scan(
        &self,
        query: &ListQuery,
        visit: &mut dyn FnMut(Incident) -> bool,
    ) -> Result<(), StoreError> {
        let mut q = query.clone();
        if q.limit == 0 {
            q.limit = 1000;
        }
        loop {
            let page = self.list(&q)?;
            for i in page.incidents {
                if !visit(i) {
                    return Ok(());
                }
            }
            match page.next_cursor {
                Some(c) => q.cursor = Some(c),
                None => return Ok(()),
            }
        }
    }
    /// The id the next incident will get (ids never repeat).
    fn next_id(&self) -> Result<u64, StoreError>;
    /// Incidents per status.
    fn count_by_status(&self) -> Result<Vec<(Status, u64)>, StoreError>;
    /// Up to `limit` timeline entries of any incident with a change number above `after`,
    /// in change order (entries of compacted incidents are gone).
    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<TimelineEntry>, StoreError>;
    /// Up to `limit` entries whose kind `wanted` takes, numbered above `after` and at most
    /// `upto`, in change order; and the number a reader goes on after (the last entry's when
    /// `limit` stopped the read, else `upto`). A store that knows the kinds of its changes
    /// passes over the others without reading them.
    fn changes_of(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
        wanted: fn(EntryKind) -> bool,
    ) -> Result<(Vec<TimelineEntry>, u64), StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok((out, after));
        }
        let mut at = after;
        loop {
            let read = self.changes_after(at, limit)?;
            if read.is_empty() {
                return Ok((out, upto));
            }
            for e in read {
                if e.change > upto {
                    return Ok((out, upto));
                }
                at = e.change;
                if wanted(e.kind) {
                    out.push(e);
                    if out.len() >= limit {
                        return Ok((out, at));
                    }
                }
            }
        }
    }
    /// Up to `limit` (change number, incident id) pairs above `after`, in change order:
    /// which incidents changed, without reading the entries themselves.
    fn changed_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, u64)>, StoreError> {
        Ok(self
            .changes_after(after, limit)?
            .into_iter()
            .map(|e| (e.change, e.incident_id))
            .collect())
    }
    /// The highest change number given so far (0 when none). Only what the manager has
    /// flushed since is durable; it publishes that number after each flush.
    fn last_change(&self) -> u64;
    /// The incident as it was right after its timeline entry `seq` (replayed from the log);
    /// `None` when the log cannot say.
    fn incident_at(&self, id: u64, seq: u64) -> Result<Option<Incident>, StoreError>;
    /// The timeline entry with this change number, if it is still stored.
    fn entry_by_change(&self, change: u64) -> Result<Option<TimelineEntry>, StoreError> {
        Ok(self
            .changes_after(change.saturating_sub(1), 1)?
            .into_iter()
            .find(|e| e.change == change))
    }
}

/// The engine's checkpoint, and the idempotency ids of detections applied since it.
pub trait Checkpoints: Durable {
    /// Replaces the engine's checkpoint (not yet durable; the next flush makes it so) and
    /// forgets the recorded detections it covers: a replay from it cannot produce them
    /// again.
    fn save_checkpoint(&self, bytes: &[u8], coverage: &Coverage) -> Result<(), StoreError>;
    /// Whether this detection was applied and is not yet covered by a checkpoint.
    fn detection_applied(&self, id: &AppliedId) -> Result<bool, StoreError>;
    /// Records a detection that changed no incident (suppressed by the rate limit).
    fn record_detection(&self, id: &AppliedId) -> Result<(), StoreError>;
    /// The last engine checkpoint saved, if any.
    fn load_checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Silences, by id.
pub trait Silences: Durable {
    /// Every stored silence, by id.
    fn silences(&self) -> Result<Vec<Silence>, StoreError>;
    /// Stores a silence (new or changed; not yet durable).
    fn put_silence(&self, silence: &Silence) -> Result<(), StoreError>;
    fn remove_silence(&self, id: u64) -> Result<(), StoreError>;
    /// The id the next silence gets (ids never repeat, even after expired ones are pruned).
    fn next_silence_id(&self) -> Result<u64, StoreError>;
}

/// Everything the incident manager writes.
pub trait IncidentStore: IncidentLog + Checkpoints + Silences {}

impl<T: IncidentLog + Checkpoints + Silences + ?Sized> IncidentStore for T {}
