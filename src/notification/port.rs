//! The notifier's storage port: the durable outbox of jobs, the channels told of each
//! incident, and the notifier's place in the change log. The notifier is their only writer.
//! Implemented on sled by `store::sled`, and in memory by `MemoryOutbox` for unit tests.

pub use crate::port::{Durable, StoreError};

use super::Job;

/// The outbox.
pub trait Outbox: Durable {
    /// Adds notification jobs, removes others (timed jobs an acknowledgement or an end made
    /// moot), and moves the notifier's place in the change log, in one transaction (durable
    /// with the next flush).
    fn enqueue_jobs(&self, jobs: &[Job], remove: &[u64], cursor: u64) -> Result<(), StoreError>;
    /// One job, if it is still queued.
    fn job(&self, id: u64) -> Result<Option<Job>, StoreError>;
    /// Remembers that a channel was told of an incident (its follow-ups go there too).
    fn mark_notified(&self, incident: u64, channel: &str) -> Result<(), StoreError>;
    /// The channels that have been sent an incident's opening.
    fn notified_channels(&self, incident: u64) -> Result<Vec<String>, StoreError>;
    fn put_job(&self, job: &Job) -> Result<(), StoreError>;
    fn remove_job(&self, id: u64) -> Result<(), StoreError>;
    /// Every queued notification job, by id.
    fn jobs(&self) -> Result<Vec<Job>, StoreError>;
    /// The last change the notifier has routed, if it ever ran.
    fn notify_cursor(&self) -> Result<Option<u64>, StoreError>;
    /// The id the next job gets.
    fn next_job_id(&self) -> Result<u64, StoreError>;
}

/// The outbox in memory, for unit tests.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryOutbox(std::sync::Mutex<MemoryState>);

#[cfg(test)]
#[derive(Default)]
pub struct MemoryState {
    jobs: std::collections::BTreeMap<u64, Job>,
    next: u64,
    cursor: Option<u64>,
    notified: std::collections::BTreeSet<(u64, String)>,
}

#[cfg(test)]
impl MemoryOutbox {
    fn with<T>(&self, f: impl FnOnce(&mut MemoryState) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
impl Durable for MemoryOutbox {
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
impl Outbox for MemoryOutbox {
    fn enqueue_jobs(&self, jobs: &[Job], remove: &[u64], cursor: u64) -> Result<(), StoreError> {
        self.with(|s| {
            for id in remove {
                s.jobs.remove(id);
            }
            for j in jobs {
                s.next = s.next.max(j.id + 1);
                s.jobs.insert(j.id, j.clone());
            }
            s.cursor = Some(cursor);
        });
        Ok(())
    }
    fn job(&self, id: u64) -> Result<Option<Job>, StoreError> {
        Ok(self.with(|s| s.jobs.get(&id).cloned()))
    }
    fn mark_notified(&self, incident: u64, channel: &str) -> Result<(), StoreError> {
        self.with(|s| s.notified.insert((incident, channel.to_owned())));
        Ok(())
    }
    fn notified_channels(&self, incident: u64) -> Result<Vec<String>, StoreError> {
        Ok(self.with(|s| {
            s.notified
                .iter()
                .filter(|(i, _)| *i == incident)
                .map(|(_, c)| c.clone())
                .collect()
        }))
    }
    fn put_job(&self, job: &Job) -> Result<(), StoreError> {
        self.with(|s| {
            s.next = s.next.max(job.id + 1);
            s.jobs.insert(job.id, job.clone());
        });
        Ok(())
    }
    fn remove_job(&self, id: u64) -> Result<(), StoreError> {
        self.with(|s| s.jobs.remove(&id));
        Ok(())
    }
    fn jobs(&self) -> Result<Vec<Job>, StoreError> {
        Ok(self.with(|s| s.jobs.values().cloned().collect()))
    }
    fn notify_cursor(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.with(|s| s.cursor))
    }
    fn next_job_id(&self) -> Result<u64, StoreError> {
        Ok(self.with(|s| s.next.max(1)))
    }
}

/// What the notifier reads and writes: its outbox, and (read only) the incident log and
/// silences.
pub trait NotificationStore:
    Outbox + crate::incident::port::IncidentLog + crate::incident::port::Silences
{
}

impl<T: Outbox + crate::incident::port::IncidentLog + crate::incident::port::Silences + ?Sized>
    NotificationStore for T
{
}
