//! What every storage port shares: the error a port answers with, and durability.
//!
//! Ports are defined by the components that use them (`incident::port`,
//! `remediation::port`, `notification::port`) and implemented on sled in `store::sled`, which
//! sits above them; this leaf is what both sides name.

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
    #[error("state folder {path} is closed: it is being reopened after write failures")]
    Closed { path: String },
    #[error("corrupt record in tree {tree} at key {key}: {message}")]
    Record {
        tree: &'static str,
        key: String,
        message: String,
    },
}

impl StoreError {
    /// Whether the disk is full (ENOSPC, or a quota): the caller answers 507.
    pub fn no_space(&self) -> bool {
        let io = match self {
            StoreError::Sled {
                source: sled::Error::Io(e),
                ..
            }
            | StoreError::Open {
                source: sled::Error::Io(e),
                ..
            } => e,
            _ => return false,
        };
        io.kind() == std::io::ErrorKind::StorageFull
            || matches!(io.raw_os_error(), Some(c) if c == nix::libc::ENOSPC || c == nix::libc::EDQUOT)
    }
}

impl StoreError {
    /// Whether the failure is the store's, not the request's: the caller answers 503 (507 when
    /// the disk is full) and may try again; nothing the caller sent was wrong.
    pub fn unavailable(&self) -> bool {
        !matches!(self, StoreError::Record { .. } | StoreError::Schema { .. })
    }
}

/// What every port offers besides its own reads and writes.
pub trait Durable: Send + Sync + 'static {
    /// Makes every write so far durable. On sled this is the whole database, whoever wrote;
    /// each component still flushes its own writes before it acts on them or answers.
    fn flush(&self) -> Result<(), StoreError>;
    /// After a failed flush: makes the store able to write again if it can (reopening it
    /// from what is on disk). True when it did, so what the caller keeps in memory must be
    /// read again. Stores that need nothing of the kind do nothing.
    fn heal(&self) -> Result<bool, StoreError> {
        Ok(false)
    }
}
