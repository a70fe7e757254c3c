//! The durable change log as a feed. Whatever reacts to incident changes (notifications,
//! remediation) follows the log from a position it saves itself: it reads the entries after
//! its position, up to the last change the manager has flushed, acts on them, and then saves
//! the new position. Nothing reacts to an in-memory message, so a crash between the manager's
//! flush and a follower's action loses nothing: the follower reads those entries again.
//!
//! Crash invariant: a follower saves its position only after what it did for the entries
//! before it is durable, so an entry is acted on at least once; followers make acting twice
//! harmless (the notifier's outbox, remediation's runs keyed by change number).

use std::sync::Arc;

use tokio::sync::watch;

use super::port::{IncidentLog, StoreError};
use super::{EntryKind, TimelineEntry};

/// Entries after a position, and the position to save once they are acted on.
#[derive(Debug, Default)]
pub struct Batch {
    pub entries: Vec<TimelineEntry>,
    /// Where to read on from: the last entry's change number when the read stopped at its
    /// limit, else the durable number (entries passed over, and numbers of compacted
    /// incidents, count as read).
    pub upto: u64,
}

/// A follower's view of the change log.
#[derive(Clone)]
pub struct ChangeFeed {
    log: Arc<dyn IncidentLog>,
    durable: watch::Receiver<u64>,
    start: u64,
}

impl ChangeFeed {
    /// `durable` is the manager's watch of its last flushed change number.
    /// Made before anything can change (at the daemon's start), so [`ChangeFeed::start`]
    /// is where the log stood then.
    pub fn new(log: Arc<dyn IncidentLog>, durable: watch::Receiver<u64>) -> ChangeFeed {
        let start = *durable.borrow();
        ChangeFeed {
            log,
            durable,
            start,
        }
    }

    /// The last durable change when the feed was made: where a follower that never ran
    /// starts (no flood of old news, no actions for old incidents).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The last change number the manager has flushed.
    pub fn durable(&self) -> u64 {
        *self.durable.borrow()
    }

    /// Waits for the manager's next flush; false once the manager is gone.
    pub async fn changed(&mut self) -> bool {
        self.durable.changed().await.is_ok()
    }

    /// Up to `limit` durable entries after `after`, read on a blocking thread. Empty (with
    /// `upto == after`) when nothing new is durable.
    pub async fn read(&self, after: u64, limit: usize) -> Result<Batch, StoreError> {
        self.read_of(after, limit, |_| true).await
    }

    /// Like [`ChangeFeed::read`], only entries whose kind `wanted` takes (the store passes
    /// over the others without reading them); `upto` still counts every entry read past.
    pub async fn read_of(
        &self,
        after: u64,
        limit: usize,
        wanted: fn(EntryKind) -> bool,
    ) -> Result<Batch, StoreError> {
        let durable = self.durable();
        if after >= durable {
            return Ok(Batch {
                entries: Vec::new(),
                upto: after,
            });
        }
        let log = self.log.clone();
        let (entries, upto) =
            tokio::task::spawn_blocking(move || log.changes_of(after, durable, limit, wanted))
                .await
                .map_err(|_| StoreError::Closed {
                    path: "(the change feed's reader was cancelled)".into(),
                })??;
        Ok(Batch { entries, upto })
    }
}
