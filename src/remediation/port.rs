//! Remediation's storage port: action runs (pending approvals, results, pending reverts).
//! Remediation is their only writer. Implemented on sled by `store::sled`, and in memory by
//! `MemoryRuns` for unit tests.

pub use crate::port::{Durable, StoreError};

use super::ActionRun;

/// Action runs, by id.
pub trait ActionRuns: Durable {
    /// Stores an action run (new or changed; not yet durable).
    fn put_action_run(&self, run: &ActionRun) -> Result<(), StoreError>;
    fn action_run(&self, id: u64) -> Result<Option<ActionRun>, StoreError>;
    /// Every stored action run, by id.
    fn action_runs(&self) -> Result<Vec<ActionRun>, StoreError>;
    fn remove_action_run(&self, id: u64) -> Result<(), StoreError>;
    /// The id the next action run gets.
    fn next_action_run_id(&self) -> Result<u64, StoreError>;
    /// Remediation's place in the change log, if it ever followed it.
    fn action_cursor(&self) -> Result<Option<u64>, StoreError>;
    /// Saves remediation's place (durable with the next flush).
    fn set_action_cursor(&self, change: u64) -> Result<(), StoreError>;
}

/// Action runs in memory, for unit tests.
#[cfg(test)]
#[derive(Default)]
pub struct MemoryRuns(
    std::sync::Mutex<(std::collections::BTreeMap<u64, ActionRun>, u64)>,
    std::sync::Mutex<Option<u64>>,
);

#[cfg(test)]
impl MemoryRuns {
    fn with<T>(
        &self,
        f: impl FnOnce(&mut (std::collections::BTreeMap<u64, ActionRun>, u64)) -> T,
    ) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

#[cfg(test)]
impl Durable for MemoryRuns {
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
impl ActionRuns for MemoryRuns {
    fn put_action_run(&self, run: &ActionRun) -> Result<(), StoreError> {
        self.with(|(runs, next)| {
            *next = (*next).max(run.id + 1);
            runs.insert(run.id, run.clone());
        });
        Ok(())
    }
    fn action_run(&self, id: u64) -> Result<Option<ActionRun>, StoreError> {
        Ok(self.with(|(runs, _)| runs.get(&id).cloned()))
    }
    fn action_runs(&self) -> Result<Vec<ActionRun>, StoreError> {
        Ok(self.with(|(runs, _)| runs.values().cloned().collect()))
    }
    fn remove_action_run(&self, id: u64) -> Result<(), StoreError> {
        self.with(|(runs, _)| runs.remove(&id));
        Ok(())
    }
    fn next_action_run_id(&self) -> Result<u64, StoreError> {
        Ok(self.with(|(_, next)| (*next).max(1)))
    }
    fn action_cursor(&self) -> Result<Option<u64>, StoreError> {
        Ok(*self.1.lock().unwrap_or_else(|p| p.into_inner()))
    }
    fn set_action_cursor(&self, change: u64) -> Result<(), StoreError> {
        *self.1.lock().unwrap_or_else(|p| p.into_inner()) = Some(change);
        Ok(())
    }
}

/// What remediation reads and writes: its action runs, and (read only) incidents and
/// silences.
pub trait RemediationStore:
    ActionRuns + crate::incident::port::IncidentLog + crate::incident::port::Silences
{
}

impl<T: ActionRuns + crate::incident::port::IncidentLog + crate::incident::port::Silences + ?Sized>
    RemediationStore for T
{
}
