//! Action runs (remediation's port), by id.

use super::{SledStore, decode, encode};
use crate::port::StoreError;
use crate::remediation::port::ActionRuns;

impl ActionRuns for SledStore {
    fn put_action_run(&self, run: &crate::remediation::ActionRun) -> Result<(), StoreError> {
        if self.meta_u64("next_action_run")?.unwrap_or(1) <= run.id {
            self.meta
                .insert("next_action_run", &(run.id + 1).to_be_bytes())
                .map_err(|source| StoreError::Sled {
                    op: "store action run",
                    source,
                })?;
        }
        self.actions
            .insert(run.id.to_be_bytes(), encode(run))
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "store action run",
                source,
            })
    }

    fn action_run(&self, id: u64) -> Result<Option<crate::remediation::ActionRun>, StoreError> {
        let key = id.to_be_bytes();
        match self.actions.get(key).map_err(|source| StoreError::Sled {
            op: "read action run",
            source,
        })? {
            Some(v) => decode("actions", &key, &v).map(Some),
            None => Ok(None),
        }
    }

    fn action_runs(&self) -> Result<Vec<crate::remediation::ActionRun>, StoreError> {
        self.actions
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|source| StoreError::Sled {
                    op: "read action runs",
                    source,
                })?;
                decode("actions", &k, &v)
            })
            .collect()
    }

    fn remove_action_run(&self, id: u64) -> Result<(), StoreError> {
        self.actions
            .remove(id.to_be_bytes())
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "remove action run",
                source,
            })
    }

    fn next_action_run_id(&self) -> Result<u64, StoreError> {
        Ok(self
            .actions
            .last()
            .map_err(|source| StoreError::Sled {
                op: "read action runs",
                source,
            })?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(1, |k| u64::from_be_bytes(k) + 1)
            .max(self.meta_u64("next_action_run")?.unwrap_or(1)))
    }

    fn action_cursor(&self) -> Result<Option<u64>, StoreError> {
        self.meta_u64("remediation_cursor")
    }

    fn set_action_cursor(&self, change: u64) -> Result<(), StoreError> {
        self.meta
            .insert("remediation_cursor", &change.to_be_bytes())
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "save remediation's place",
                source,
            })
    }
}
