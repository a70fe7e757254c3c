//! File tails (`[[source.file]]`).

mod cursor;

pub use cursor::{FINGERPRINT_BYTES, FileId, Fingerprint, TailCursor};
