//! Where an input had read to, as saved in the engine's checkpoint: a tail's place in a file,
//! a journald source's cursor.
//!
//! A file is known by device and inode plus a fingerprint of its first bytes, never by path
//! alone: after rotation the same path names another file, and an inode number can be reused
//! by a new file. A stored cursor is trusted only when all three still match and the file is
//! at least as long as the stored offset.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Bytes of a file's start hashed into its fingerprint.
pub const FINGERPRINT_BYTES: u64 = 256;

/// Device and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// A hash of the first `len` bytes of a file (`len` grows with the file up to
/// [`FINGERPRINT_BYTES`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Fingerprint {
    pub len: u64,
    pub hash: u64,
}

impl Fingerprint {
    /// Reads the fingerprint of `file`'s first `min(size, FINGERPRINT_BYTES)` bytes.
    pub fn read(file: &File, size: u64) -> std::io::Result<Fingerprint> {
        Self::read_len(file, size.min(FINGERPRINT_BYTES))
    }

    /// The fingerprint of a file that starts with `head` (at most [`FINGERPRINT_BYTES`] of it
    /// count).
    pub fn of_bytes(head: &[u8]) -> Fingerprint {
        let head = &head[..head.len().min(FINGERPRINT_BYTES as usize)];
        Fingerprint {
            len: head.len() as u64,
            hash: fnv1a(head),
        }
    }

    /// Reads the hash of exactly the first `len` bytes; fails when the file is shorter.
    pub fn read_len(file: &File, len: u64) -> std::io::Result<Fingerprint> {
        let mut buf = vec![0u8; len as usize];
        file.read_exact_at(&mut buf, 0)?;
        Ok(Fingerprint {
            len,
            hash: fnv1a(&buf),
        })
    }

    /// Whether `file` still starts with the bytes this fingerprint was taken from.
    pub fn matches(&self, file: &File) -> bool {
        // Every file starts with the empty prefix.
        self.len == 0 || Self::read_len(file, self.len).is_ok_and(|f| f == *self)
    }
}

/// FNV-1a, 64 bit: stable across builds and platforms (std's hasher is not).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// How far one source has read one file: every byte before `offset` has been turned into
/// events that the engine applied.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TailCursor {
    pub source: String,
    /// Where the file was last seen (it may have been renamed since).
    pub path: PathBuf,
    pub id: FileId,
    pub fingerprint: Fingerprint,
    pub offset: u64,
}

impl TailCursor {
    /// The key a cursor is stored under in the engine.
    pub fn key(&self) -> (String, FileId) {
        (self.source.clone(), self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn fingerprints_follow_content_not_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.log");
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(b"first line\n").unwrap();
        let r = std::fs::File::open(&p).unwrap();
        let fp = Fingerprint::read(&r, 11).unwrap();
        assert_eq!(fp.len, 11);
        f.write_all(&[b'x'; 400]).unwrap();
        assert!(fp.matches(&r), "growth keeps the prefix");
        assert_eq!(Fingerprint::read(&r, 411).unwrap().len, FINGERPRINT_BYTES);
        std::fs::write(&p, b"other line\n").unwrap();
        assert!(!fp.matches(&std::fs::File::open(&p).unwrap()));
        std::fs::write(&p, b"short").unwrap();
        assert!(!fp.matches(&std::fs::File::open(&p).unwrap()));
    }
}

/// A journal entry's place: its sequence-number id (the first 64 bits) and number, which
/// give detections from it an idempotency id as a file line's offset does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalPos {
    pub seq_id: u64,
    pub seqnum: u64,
}

/// Where a journald source had read to: the cursor of the last entry applied, and per
/// sequence-number id the next number (what a checkpoint covers).
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize)]
pub struct JournalCursor {
    pub cursor: String,
    /// (sequence-number id, next number), most recently used last; a few at most.
    pub next: Vec<(u64, u64)>,
}

/// The `ino` of journal entries' origins ([`crate::detection::Origin::Line`] with `dev` = sequence-number id
/// and `offset` = sequence number): no file has it.
pub const JOURNAL_INO: u64 = u64::MAX;
