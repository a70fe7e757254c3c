//! The outbox as the notifier holds it in memory: a mirror of the stored jobs, loaded at
//! start. Every outbox write goes through here, the store write and the mirror's under one
//! lock, so the two never disagree and a job removed (routing made it moot) is never
//! written back by the delivery that was under way. Dispatch, routing and delivery read the
//! mirror instead of reading and decoding every stored job again on each change, which made
//! each change cost as much as the whole outbox (thousands of Alertmanager resends on a
//! busy host). Flushing happens outside the lock.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Job;
use super::port::{Outbox as Store, StoreError};

#[derive(Default)]
pub(super) struct Queue(Mutex<BTreeMap<u64, Job>>);

impl Queue {
    pub(super) fn load(jobs: Vec<Job>) -> Queue {
        Queue(Mutex::new(jobs.into_iter().map(|j| (j.id, j)).collect()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Job>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every job, in id order.
    pub(super) fn all(&self) -> Vec<Job> {
        self.lock().values().cloned().collect()
    }

    pub(super) fn get(&self, id: u64) -> Option<Job> {
        self.lock().get(&id).cloned()
    }

    pub(super) fn any(&self, pred: impl Fn(&Job) -> bool) -> bool {
        self.lock().values().any(pred)
    }

    /// Routing's write: jobs added, moot ones removed, and the notifier's new place. Returns
    /// the ids of `remove` that were still queued (a job delivered meanwhile was not).
    pub(super) fn enqueue(
        &self,
        store: &dyn Store,
        add: &[Job],
        remove: &[u64],
        cursor: u64,
    ) -> Result<Vec<u64>, StoreError> {
        let mut m = self.lock();
        store.enqueue_jobs(add, remove, cursor)?;
        let removed = remove.iter().filter(|id| m.remove(id).is_some()).copied();
        let removed = removed.collect();
        for j in add {
            m.insert(j.id, j.clone());
        }
        Ok(removed)
    }

    /// Writes a job back (retry, reschedule) only if it is still queued; false when
    /// routing removed it meanwhile.
    pub(super) fn update(&self, store: &dyn Store, job: &Job) -> Result<bool, StoreError> {
        let mut m = self.lock();
        if !m.contains_key(&job.id) {
            return Ok(false);
        }
        store.put_job(job)?;
        m.insert(job.id, job.clone());
        Ok(true)
    }

    /// Adds a new job.
    pub(super) fn add(&self, store: &dyn Store, job: &Job) -> Result<(), StoreError> {
        let mut m = self.lock();
        store.put_job(job)?;
        m.insert(job.id, job.clone());
        Ok(())
    }

    pub(super) fn remove(&self, store: &dyn Store, id: u64) -> Result<(), StoreError> {
        let mut m = self.lock();
        store.remove_job(id)?;
        m.remove(&id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::notification::port::MemoryOutbox;

    fn job(id: u64) -> Job {
        Job {
            id,
            incident_id: 1,
            channel: "c".into(),
            peer: None,
            event: super::super::NotifyEvent::Opened,
            change: 0,
            escalation: None,
            every_ms: None,
            created_at: Timestamp(0),
            next_at: Timestamp(0),
            attempts: 0,
            last_error: None,
            held_by: None,
            group: None,
        }
    }

    #[test]
    fn mirrors_the_store_and_never_writes_back_a_removed_job() {
        let store = MemoryOutbox::default();
        let q = Queue::load(vec![]);
        q.enqueue(&store, &[job(5), job(2)], &[], 1).unwrap();
        // Only what was still queued is said to be removed.
        assert_eq!(
            q.enqueue(&store, &[job(9), job(3)], &[5, 4], 2).unwrap(),
            [5]
        );
        assert!(
            q.update(
                &store,
                &Job {
                    attempts: 2,
                    ..job(2)
                }
            )
            .unwrap()
        );
        q.remove(&store, 3).unwrap();
        // A delivery that finishes after routing removed its job does not bring it back.
        assert!(!q.update(&store, &job(3)).unwrap());
        let ids: Vec<u64> = q.all().iter().map(|j| j.id).collect();
        assert_eq!(ids, [2, 9]);
        let stored: Vec<u64> = store.jobs().unwrap().iter().map(|j| j.id).collect();
        assert_eq!(stored, ids);
        assert_eq!(q.get(2).map(|j| j.attempts), Some(2));
        assert!(q.any(|j| j.id == 9) && !q.any(|j| j.id == 5));
    }
}
