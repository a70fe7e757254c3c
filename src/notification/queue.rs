//! The outbox as the notifier holds it in memory: a mirror of the stored jobs, loaded at
//! start and changed beside every write the notifier makes (it is the outbox's only
//! writer). Dispatch, routing and delivery read it instead of reading and decoding every
//! stored job again on each change, which made each change cost as much as the whole
//! outbox (thousands of Alertmanager resends on a busy host).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::Job;

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

    pub(super) fn put(&self, job: &Job) {
        self.lock().insert(job.id, job.clone());
    }

    pub(super) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// What one routing write did: jobs added, jobs made moot removed.
    pub(super) fn apply(&self, add: &[Job], remove: &[u64]) {
        let mut m = self.lock();
        for id in remove {
            m.remove(id);
        }
        for j in add {
            m.insert(j.id, j.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;

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
        }
    }

    #[test]
    fn mirrors_the_writes_in_id_order() {
        let q = Queue::load(vec![job(5), job(2)]);
        q.apply(&[job(9), job(3)], &[5]);
        q.put(&Job {
            attempts: 2,
            ..job(2)
        });
        q.remove(3);
        let ids: Vec<u64> = q.all().iter().map(|j| j.id).collect();
        assert_eq!(ids, [2, 9]);
        assert_eq!(q.get(2).map(|j| j.attempts), Some(2));
        assert!(q.any(|j| j.id == 9) && !q.any(|j| j.id == 5));
    }
}
