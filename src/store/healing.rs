//! A store that heals after write failures. sled makes an I/O error during a flush sticky:
//! every later write fails with it, even once the disk has room again. [`HealingStore`]
//! wraps the sled store and, asked to [`heal`](Durable::heal) after a failed flush, closes it
//! and opens it again from disk — which holds exactly what was flushed, so nothing
//! acknowledged is lost and nothing unacknowledged appears. The incident manager then
//! reloads what it keeps in memory. Every other call is passed through.
//!
//! Crash invariant: a reopen changes nothing on disk; if we die during it, the next start
//! opens the same folder.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use super::{
    ActionRuns, AppliedId, Change, Checkpoints, Coverage, Durable, IncidentLog, ListQuery, Outbox,
    Page, Silences, SledStore, StoreError,
};
use crate::incident::{Incident, Silence, Status, TimelineEntry};

/// The least time between two reopen attempts.
const HEAL_EVERY: Duration = Duration::from_secs(1);

pub struct HealingStore {
    path: PathBuf,
    /// `None` while closed (a reopen that failed; tried again on the next heal).
    current: RwLock<Option<Arc<SledStore>>>,
    /// The last change number seen, for `last_change` while closed.
    last_change: AtomicU64,
    last_attempt: std::sync::Mutex<Option<Instant>>,
}

impl HealingStore {
    pub fn new(store: SledStore, path: PathBuf) -> HealingStore {
        let last = store.last_change();
        HealingStore {
            path,
            current: RwLock::new(Some(Arc::new(store))),
            last_change: AtomicU64::new(last),
            last_attempt: std::sync::Mutex::new(None),
        }
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&SledStore) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let store = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match store {
            Some(s) => f(&s),
            None => Err(StoreError::Closed {
                path: self.path.display().to_string(),
            }),
        }
    }
}

impl Durable for HealingStore {
    fn flush(&self) -> Result<(), StoreError> {
        self.with(|s| s.flush())
    }
    fn heal(&self) -> Result<bool, StoreError> {
        {
            let mut last = self.last_attempt.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|t| t.elapsed() < HEAL_EVERY) {
                return Ok(false);
            }
            *last = Some(Instant::now());
        }
        // Closed from here on: new calls answer `Closed` (503) instead of queueing behind us.
        let old = self
            .current
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(old) = old {
            // Readers on other threads finish their call; then the old handle is the last
            // one, and dropping it closes sled (and releases its lock on the folder). No lock
            // is held while waiting.
            let deadline = Instant::now() + Duration::from_secs(2);
            while Arc::strong_count(&old) > 1 && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            if Arc::strong_count(&old) > 1 {
                // A long reader still holds it: back as it was, tried again later.
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(old);
                return Ok(false);
            }
            drop(old);
        }
        // Never moved aside here (as a corrupt store is at start): that would start an empty
        // store mid-run. A store that does not open stays closed and is tried again.
        let store = SledStore::open_once(&self.path)?;
        self.last_change
            .store(store.last_change(), Ordering::SeqCst);
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(store));
        tracing::info!(path = %self.path.display(), "store reopened after write failures");
        Ok(true)
    }
}

impl IncidentLog for HealingStore {
    fn apply(&self, change: &Change) -> Result<(), StoreError> {
        self.with(|s| s.apply(change))
    }
    fn apply_many(&self, changes: &[Change]) -> Result<(), StoreError> {
        self.with(|s| s.apply_many(changes))
    }
    fn incident(&self, id: u64) -> Result<Option<Incident>, StoreError> {
        self.with(|s| s.incident(id))
    }
    fn timeline(&self, id: u64) -> Result<Vec<TimelineEntry>, StoreError> {
        self.with(|s| s.timeline(id))
    }
    fn remove_incident(&self, id: u64) -> Result<(), StoreError> {
        self.with(|s| s.remove_incident(id))
    }
    fn each_entry(&self, visit: &mut dyn FnMut(TimelineEntry) -> bool) -> Result<(), StoreError> {
        self.with(|s| s.each_entry(visit))
    }
    fn latest_for_key(&self, key: &str) -> Result<Option<u64>, StoreError> {
        self.with(|s| s.latest_for_key(key))
    }
    fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        self.with(|s| s.list(query))
    }
    fn next_id(&self) -> Result<u64, StoreError> {
        self.with(|s| s.next_id())
    }
    fn count_by_status(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        self.with(|s| s.count_by_status())
    }
    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<TimelineEntry>, StoreError> {
        self.with(|s| s.changes_after(after, limit))
    }
    fn changed_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, u64)>, StoreError> {
        self.with(|s| s.changed_after(after, limit))
    }
    fn changes_of(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
        wanted: fn(crate::incident::EntryKind) -> bool,
    ) -> Result<(Vec<TimelineEntry>, u64), StoreError> {
        self.with(|s| s.changes_of(after, upto, limit, wanted))
    }
    fn last_change(&self) -> u64 {
        match self.with(|s| Ok(s.last_change())) {
            Ok(n) => {
                self.last_change.store(n, Ordering::SeqCst);
                n
            }
            Err(_) => self.last_change.load(Ordering::SeqCst),
        }
    }
    fn incident_at(&self, id: u64, seq: u64) -> Result<Option<Incident>, StoreError> {
        self.with(|s| s.incident_at(id, seq))
    }
}

impl Checkpoints for HealingStore {
    fn save_checkpoint(&self, bytes: &[u8], coverage: &Coverage) -> Result<(), StoreError> {
        self.with(|s| s.save_checkpoint(bytes, coverage))
    }
    fn detection_applied(&self, id: &AppliedId) -> Result<bool, StoreError> {
        self.with(|s| s.detection_applied(id))
    }
    fn record_detection(&self, id: &AppliedId) -> Result<(), StoreError> {
        self.with(|s| s.record_detection(id))
    }
    fn load_checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.with(|s| s.load_checkpoint())
    }
}

impl Silences for HealingStore {
    fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        self.with(|s| s.silences())
    }
    fn put_silence(&self, silence: &Silence) -> Result<(), StoreError> {
        self.with(|s| s.put_silence(silence))
    }
    fn remove_silence(&self, id: u64) -> Result<(), StoreError> {
        self.with(|s| s.remove_silence(id))
    }
    fn next_silence_id(&self) -> Result<u64, StoreError> {
        self.with(|s| s.next_silence_id())
    }
}

impl ActionRuns for HealingStore {
    fn put_action_run(&self, run: &crate::remediation::ActionRun) -> Result<(), StoreError> {
        self.with(|s| s.put_action_run(run))
    }
    fn action_run(&self, id: u64) -> Result<Option<crate::remediation::ActionRun>, StoreError> {
        self.with(|s| s.action_run(id))
    }
    fn action_runs(&self) -> Result<Vec<crate::remediation::ActionRun>, StoreError> {
        self.with(|s| s.action_runs())
    }
    fn remove_action_run(&self, id: u64) -> Result<(), StoreError> {
        self.with(|s| s.remove_action_run(id))
    }
    fn next_action_run_id(&self) -> Result<u64, StoreError> {
        self.with(|s| s.next_action_run_id())
    }
    fn action_cursor(&self) -> Result<Option<u64>, StoreError> {
        self.with(|s| s.action_cursor())
    }
    fn set_action_cursor(&self, change: u64) -> Result<(), StoreError> {
        self.with(|s| s.set_action_cursor(change))
    }
}

impl Outbox for HealingStore {
    fn enqueue_jobs(
        &self,
        jobs: &[crate::notification::Job],
        remove: &[u64],
        cursor: u64,
    ) -> Result<(), StoreError> {
        self.with(|s| s.enqueue_jobs(jobs, remove, cursor))
    }
    fn job(&self, id: u64) -> Result<Option<crate::notification::Job>, StoreError> {
        self.with(|s| s.job(id))
    }
    fn mark_notified(&self, incident: u64, channel: &str) -> Result<(), StoreError> {
        self.with(|s| s.mark_notified(incident, channel))
    }
    fn notified_channels(&self, incident: u64) -> Result<Vec<String>, StoreError> {
        self.with(|s| s.notified_channels(incident))
    }
    fn put_job(&self, job: &crate::notification::Job) -> Result<(), StoreError> {
        self.with(|s| s.put_job(job))
    }
    fn remove_job(&self, id: u64) -> Result<(), StoreError> {
        self.with(|s| s.remove_job(id))
    }
    fn jobs(&self) -> Result<Vec<crate::notification::Job>, StoreError> {
        self.with(|s| s.jobs())
    }
    fn notify_cursor(&self) -> Result<Option<u64>, StoreError> {
        self.with(|s| s.notify_cursor())
    }
    fn next_job_id(&self) -> Result<u64, StoreError> {
        self.with(|s| s.next_job_id())
    }
}
