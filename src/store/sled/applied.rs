//! The `applied` tree: the idempotency ids of detections applied since the engine's last
//! checkpoint, asked by every detection (was it applied before a crash?) and pruned by each
//! checkpoint.
//!
//! Timer ids are one key each (`t…`, see `AppliedId::key`). Line ids are written in runs: the
//! ids of one file in one write of the manager go under one key, instead of a key each (with
//! a dense log, a key per detection was one of the two writes each detection cost, and each
//! came back as a removal at the next checkpoint). Keys written one per id by earlier
//! versions (`f…`) are still read and pruned.
//!
//! A run's key is `r`, the file (source, NUL, dev, ino, as in a line id's key), the run's
//! lowest offset and a sequence number (two runs may start at the same offset); its value is
//! the version byte [`RUN_V1`], the run's highest offset, the wall time it was applied, and per
//! id its offset, the length of the rest of its key (rule, NUL, group) and that rest.
//!
//! [`HighWater`] keeps, per file, the highest offset of any line id in the tree: a detection
//! from a line past it (every one, except in the replay window after a restart) is answered
//! without reading the tree. Below it, the file's runs are scanned in offset order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::detection::AppliedId;

/// The version byte of a run's value.
const RUN_V1: u8 = 1;
/// A run's value before its ids: version, highest offset, wall time.
const HEADER: usize = 1 + 8 + 8;

/// A line id's key as its file part (`f`, source, NUL, dev, ino), its offset and the rest
/// (rule, NUL, group); `None` for other keys.
fn line_parts(key: &[u8]) -> Option<(&[u8], u64, &[u8])> {
    let rest = key.strip_prefix(b"f")?;
    let nul = rest.iter().position(|b| *b == 0)?;
    let end = 1 + nul + 1 + 16;
    let offset = u64::from_be_bytes(key.get(end..end + 8)?.try_into().ok()?);
    Some((&key[..end], offset, &key[end + 8..]))
}

fn be(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// A run key's file part, in the `f` form of line ids, and its lowest offset.
fn run_parts(key: &[u8]) -> Option<(Vec<u8>, u64)> {
    let body = key.strip_prefix(b"r")?;
    let file_len = body.len().checked_sub(16)?;
    let mut file = Vec::with_capacity(file_len + 1);
    file.push(b'f');
    file.extend_from_slice(&body[..file_len]);
    Some((file, be(&body[file_len..file_len + 8])))
}

/// A run's highest offset and wall time (as the 8 bytes a one-key line id stores).
fn run_header(value: &[u8]) -> Option<(u64, [u8; 8])> {
    if value.first() != Some(&RUN_V1) || value.len() < HEADER {
        return None;
    }
    Some((be(&value[1..9]), value[9..17].try_into().ok()?))
}

/// Whether the run `value` holds the id of (`offset`, `rest`).
fn run_holds(value: &[u8], offset: u64, rest: &[u8]) -> bool {
    let mut at = HEADER;
    while let Some(head) = value.get(at..at + 12) {
        let len = u32::from_be_bytes([head[8], head[9], head[10], head[11]]) as usize;
        let Some(item) = value.get(at + 12..at + 12 + len) else {
            return false;
        };
        if be(&head[..8]) == offset && item == rest {
            return true;
        }
        at += 12 + len;
    }
    false
}

/// What to write for a set of ids: runs (key, value) and one-key ids (key, value).
pub(super) type Writes = (Vec<(Vec<u8>, Vec<u8>)>, Vec<(Vec<u8>, [u8; 8])>);

/// A file's ids gathered for one run: its `f` key part, (offset, rule NUL group) per id, and
/// the wall time they were applied.
type FileIds = (Vec<u8>, Vec<(u64, Vec<u8>)>, [u8; 8]);

/// Per file, the highest offset of the line ids in the tree; and the next run's number.
#[derive(Debug, Default)]
pub(super) struct HighWater {
    files: std::sync::Mutex<HashMap<Vec<u8>, u64>>,
    next_run: AtomicU64,
}

impl HighWater {
    /// From the ids in the tree.
    pub(super) fn of(applied: &sled::Tree) -> Result<HighWater, sled::Error> {
        let hw = HighWater::default();
        for k in applied.scan_prefix(b"f").keys() {
            hw.raise(&k?);
        }
        let mut next = 0;
        for kv in applied.scan_prefix(b"r") {
            let (k, v) = kv?;
            if let (Some((file, _)), Some((max, _))) = (run_parts(&k), run_header(&v)) {
                hw.raise_file(&file, max);
            }
            next = next.max(be(&k[k.len().saturating_sub(8)..]) + 1);
        }
        hw.next_run.store(next, Ordering::Relaxed);
        Ok(hw)
    }

    fn raise_file(&self, file: &[u8], offset: u64) {
        let mut map = self.files.lock().unwrap_or_else(|p| p.into_inner());
        match map.get_mut(file) {
            Some(high) => *high = (*high).max(offset),
            None => {
                map.insert(file.to_vec(), offset);
            }
        }
    }

    /// Notes a line id about to be written (other ids are ignored).
    pub(super) fn raise(&self, key: &[u8]) {
        if let Some((file, offset, _)) = line_parts(key) {
            self.raise_file(file, offset);
        }
    }

    /// False when the tree cannot hold this id (a line past its file's highest offset).
    pub(super) fn may_hold(&self, key: &[u8]) -> bool {
        match line_parts(key) {
            Some((file, offset, _)) => self
                .files
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(file)
                .is_some_and(|high| offset <= *high),
            None => true,
        }
    }

    /// The writes for `ids`: the line ids of each file as one run (the high water raised
    /// first: it only has to stay an upper bound), the others a key each.
    pub(super) fn writes<'a>(&self, ids: impl Iterator<Item = &'a AppliedId>) -> Writes {
        let mut singles = Vec::new();
        let mut files: Vec<FileIds> = Vec::new();
        for id in ids {
            let key = id.key();
            let Some((file, offset, rest)) = line_parts(&key) else {
                singles.push((key, id.value()));
                continue;
            };
            self.raise_file(file, offset);
            match files.iter_mut().find(|(f, _, _)| f.as_slice() == file) {
                Some((_, items, _)) => items.push((offset, rest.to_vec())),
                None => files.push((file.to_vec(), vec![(offset, rest.to_vec())], id.value())),
            }
        }
        let runs = files
            .into_iter()
            .map(|(file, items, wall)| {
                let low = items.iter().map(|i| i.0).min().unwrap_or(0);
                let high = items.iter().map(|i| i.0).max().unwrap_or(0);
                let mut key = Vec::with_capacity(file.len() + 16);
                key.push(b'r');
                key.extend_from_slice(&file[1..]);
                key.extend_from_slice(&low.to_be_bytes());
                key.extend_from_slice(&self.next_run.fetch_add(1, Ordering::Relaxed).to_be_bytes());
                let mut value = Vec::with_capacity(HEADER + items.len() * 40);
                value.push(RUN_V1);
                value.extend_from_slice(&high.to_be_bytes());
                value.extend_from_slice(&wall);
                for (offset, rest) in &items {
                    value.extend_from_slice(&offset.to_be_bytes());
                    value.extend_from_slice(&(rest.len() as u32).to_be_bytes());
                    value.extend_from_slice(rest);
                }
                (key, value)
            })
            .collect();
        (runs, singles)
    }
}

/// Whether the tree holds `id` (in a run or as a key of its own).
pub(super) fn holds(applied: &sled::Tree, hw: &HighWater, id: &AppliedId) -> sled::Result<bool> {
    let key = id.key();
    if !hw.may_hold(&key) {
        return Ok(false);
    }
    if applied.contains_key(&key)? {
        return Ok(true);
    }
    let Some((file, offset, rest)) = line_parts(&key) else {
        return Ok(false);
    };
    let mut prefix = Vec::with_capacity(file.len());
    prefix.push(b'r');
    prefix.extend_from_slice(&file[1..]);
    // Runs sort by their lowest offset: the ones starting past `offset` cannot hold it.
    for kv in applied.scan_prefix(&prefix) {
        let (k, v) = kv?;
        let Some((_, low)) = run_parts(&k) else {
            continue;
        };
        if low > offset {
            break;
        }
        if run_header(&v).is_some_and(|(high, _)| offset <= high) && run_holds(&v, offset, rest) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// For a checkpoint's coverage: a run as the one-key line id of its highest offset (and its
/// wall time). A checkpoint that covers that id covers every id of the run: it covers a
/// file's ids below its cursor, or all of them. `None` for keys that are not runs.
pub(super) fn as_line_id(key: &[u8], value: &[u8]) -> Option<(Vec<u8>, [u8; 8])> {
    let (mut file, _) = run_parts(key)?;
    let (high, wall) = run_header(value)?;
    file.extend_from_slice(&high.to_be_bytes());
    Some((file, wall))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::detection::Origin;

    fn line(ino: u64, offset: u64, group: &str) -> AppliedId {
        AppliedId {
            origin: Origin::Line {
                source: "auth".into(),
                dev: 1,
                ino,
                offset,
            },
            rule: "r".into(),
            group: group.into(),
            ts: Timestamp(1),
            applied_at: Timestamp(42),
        }
    }

    #[test]
    fn a_run_holds_exactly_its_ids_and_stands_for_its_highest_offset() {
        let dir = tempfile::tempdir().unwrap();
        let db = sled::open(dir.path()).unwrap();
        let tree = db.open_tree("applied").unwrap();
        let hw = HighWater::of(&tree).unwrap();
        let ids = [line(7, 100, "a"), line(7, 90, "b"), line(8, 5, "a")];
        let timer = AppliedId {
            origin: Origin::Timer { at: Timestamp(5) },
            ..line(7, 0, "t")
        };
        let (runs, singles) = hw.writes(ids.iter().chain([&timer]));
        assert_eq!((runs.len(), singles.len()), (2, 1), "a run per file");
        for (k, v) in &runs {
            tree.insert(k, v.as_slice()).unwrap();
        }
        for (k, v) in &singles {
            tree.insert(k, v).unwrap();
        }
        for id in &ids {
            assert!(holds(&tree, &hw, id).unwrap(), "{id:?}");
        }
        assert!(holds(&tree, &hw, &timer).unwrap());
        for id in [
            line(7, 100, "b"),
            line(7, 95, "a"),
            line(7, 101, "a"),
            line(8, 6, "a"),
            line(9, 5, "a"),
        ] {
            assert!(!holds(&tree, &hw, &id).unwrap(), "{id:?}");
        }
        let (k, v) = &runs[0];
        let (as_id, wall) = as_line_id(k, v).unwrap();
        assert_eq!(as_id, line(7, 100, "").key()[..as_id.len()].to_vec());
        assert_eq!(i64::from_be_bytes(wall), 42);
        // A second store on the same tree knows the high water and numbers runs on.
        let again = HighWater::of(&tree).unwrap();
        assert!(again.may_hold(&line(7, 100, "z").key()));
        assert!(!again.may_hold(&line(7, 101, "z").key()));
        assert_eq!(again.next_run.load(Ordering::Relaxed), 2);
        // Two runs of one file starting at the same offset stay apart.
        let (more, _) = again.writes([line(7, 90, "c")].iter());
        tree.insert(&more[0].0, more[0].1.as_slice()).unwrap();
        assert!(holds(&tree, &again, &line(7, 90, "b")).unwrap());
        assert!(holds(&tree, &again, &line(7, 90, "c")).unwrap());
    }
}
