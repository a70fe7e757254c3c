//! The `changes` tree: change numbers to timeline entries, as runs. One write of the
//! manager (a batch of detections, a command) numbers its entries with consecutive change
//! numbers and stores them as one run under the first number, instead of one key per entry:
//! with a dense log most changes are detections, and a key each was a third of the store's
//! writes. Each item of a run carries its entry's kind, so a follower that wants only some
//! kinds (the notifier skips detections) passes over the others without reading them.
//!
//! A run's value is the version byte [`RUN_V1`] and then, per entry, its change number less
//! the run's first (u32, big-endian), its `incident_log` key (16 bytes) and its kind's code.
//! A value of exactly 16 bytes is a run of one entry without a kind code, as stores written
//! before runs hold them; they are read as they are and never rewritten.

use super::{SledStore, be_u64};
use crate::incident::{EntryKind, TimelineEntry};
use crate::port::StoreError;

/// The version byte of a run's value.
const RUN_V1: u8 = 1;
/// Bytes per entry of a run.
const ITEM: usize = 4 + 16 + 1;

/// A run rewritten without some entries: its key, and its new value (`None`: it goes).
pub(super) type Rewrite = ([u8; 8], Option<Vec<u8>>);

/// The last `incident_log` record a reader of the feed decoded: its key and its entries.
pub(super) type PackCache = Option<(sled::IVec, Vec<TimelineEntry>)>;

/// One entry of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Item {
    pub change: u64,
    pub log_key: [u8; 16],
    /// `None` in runs of the old form, or for a code this version does not know.
    pub kind: Option<EntryKind>,
}

/// The value of a run of `items` (increasing numbers, at most `u32::MAX` above `first`), to
/// be stored under `first` (at most the first item's number: a rewritten run keeps its key).
pub(super) fn encode_run(first: u64, items: &[Item]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + items.len() * ITEM);
    v.push(RUN_V1);
    for i in items {
        let delta = u32::try_from(i.change - first).unwrap_or(u32::MAX);
        v.extend_from_slice(&delta.to_be_bytes());
        v.extend_from_slice(&i.log_key);
        v.push(i.kind.map_or(0, EntryKind::code));
    }
    v
}

/// The items of the run stored under `first`; an undecodable value is an error naming it.
pub(super) fn decode_run(first: u64, value: &[u8]) -> Result<Vec<Item>, StoreError> {
    let bad = |message: &str| StoreError::Record {
        tree: "changes",
        key: super::hex(&first.to_be_bytes()),
        message: message.into(),
    };
    if let Ok(log_key) = <[u8; 16]>::try_from(value) {
        return Ok(vec![Item {
            change: first,
            log_key,
            kind: None,
        }]);
    }
    let Some((&RUN_V1, body)) = value.split_first() else {
        return Err(bad("unknown run version"));
    };
    if body.len() % ITEM != 0 {
        return Err(bad("a run's length is not a whole number of entries"));
    }
    Ok(body
        .chunks_exact(ITEM)
        .map(|c| {
            let mut delta = [0u8; 4];
            delta.copy_from_slice(&c[..4]);
            let mut log_key = [0u8; 16];
            log_key.copy_from_slice(&c[4..20]);
            Item {
                change: first + u64::from(u32::from_be_bytes(delta)),
                log_key,
                kind: EntryKind::from_code(c[20]),
            }
        })
        .collect())
}

impl SledStore {
    /// Calls `visit` with every item numbered above `after`, in order, until it returns false.
    pub(super) fn each_change(
        &self,
        after: u64,
        visit: &mut dyn FnMut(Item) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let err = |source| StoreError::Sled {
            op: "read changes",
            source,
        };
        let start = after.saturating_add(1);
        // The run that holds `start` may begin below it.
        let from = match self.changes.range(..=start.to_be_bytes()).next_back() {
            Some(kv) => kv.map_err(err)?.0,
            None => sled::IVec::from(&start.to_be_bytes()),
        };
        for kv in self.changes.range(from..) {
            let (k, v) = kv.map_err(err)?;
            let Some(first) = be_u64(&k) else { continue };
            for item in decode_run(first, &v)? {
                if item.change > after && !visit(item)? {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// The highest change number in the tree (0 when it is empty).
    pub(super) fn last_numbered(&self) -> Result<u64, StoreError> {
        let last = self.changes.last().map_err(|source| StoreError::Sled {
            op: "read changes",
            source,
        })?;
        Ok(match last {
            Some((k, v)) => match be_u64(&k) {
                Some(first) => decode_run(first, &v)?.last().map_or(first, |i| i.change),
                None => 0,
            },
            None => 0,
        })
    }

    /// The entry an item names; `None` when it went with a compacted incident. An entry
    /// in a pack (see `RECORD_PACK`) is found under the nearest key below its own, of the
    /// same incident; `cache` keeps the last pack read, so reading a pack's entries one by
    /// one decodes it once.
    pub(super) fn entry_of(
        &self,
        item: &Item,
        cache: &mut PackCache,
    ) -> Result<Option<TimelineEntry>, StoreError> {
        let err = |source| StoreError::Sled {
            op: "read changes",
            source,
        };
        let seq = be_u64(&item.log_key[8..]).unwrap_or(0);
        let pick = |entries: &[TimelineEntry]| entries.iter().find(|e| e.seq == seq).cloned();
        if let Some((key, entries)) = cache.as_ref()
            && key[..8] == item.log_key[..8]
            && let Some(e) = pick(entries)
        {
            return Ok(Some(e));
        }
        let found = match self.log.get(item.log_key).map_err(err)? {
            Some(v) => Some((sled::IVec::from(&item.log_key), v)),
            None => match self.log.range(..item.log_key).next_back() {
                Some(kv) => {
                    let (k, v) = kv.map_err(err)?;
                    (k[..8] == item.log_key[..8]).then_some((k, v))
                }
                None => None,
            },
        };
        let Some((k, v)) = found else {
            return Ok(None);
        };
        let entries = super::decode_entries(&k, &v)?;
        let e = pick(&entries);
        *cache = Some((k, entries));
        Ok(e)
    }

    /// The runs that hold any of `numbers` (ascending), each rewritten without them
    /// (`None`: the run is left empty and goes), for the transaction that removes their
    /// entries.
    pub(super) fn runs_without(&self, numbers: &[u64]) -> Result<Vec<Rewrite>, StoreError> {
        let err = |source| StoreError::Sled {
            op: "read changes",
            source,
        };
        let mut out: Vec<Rewrite> = Vec::new();
        let mut done = std::collections::HashSet::new();
        for n in numbers {
            let Some(kv) = self.changes.range(..=n.to_be_bytes()).next_back() else {
                continue;
            };
            let (k, v) = kv.map_err(err)?;
            let Some(first) = be_u64(&k) else { continue };
            if !done.insert(first) {
                continue;
            }
            let items = decode_run(first, &v)?;
            let kept: Vec<Item> = items
                .iter()
                .filter(|i| numbers.binary_search(&i.change).is_err())
                .copied()
                .collect();
            if kept.len() == items.len() {
                continue;
            }
            out.push((
                first.to_be_bytes(),
                (!kept.is_empty()).then(|| encode_run(first, &kept)),
            ));
        }
        Ok(out)
    }

    /// [`IncidentLog::changes_of`](crate::incident::port::IncidentLog::changes_of) on runs:
    /// items of unwanted kinds are passed over without reading their entries.
    pub(super) fn read_changes_of(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
        wanted: fn(EntryKind) -> bool,
    ) -> Result<(Vec<TimelineEntry>, u64), StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok((out, after));
        }
        let mut last = upto;
        let mut cache = None;
        self.each_change(after, &mut |item| {
            if item.change > upto {
                return Ok(false);
            }
            if item.kind.is_some_and(|k| !wanted(k)) {
                return Ok(true);
            }
            if let Some(e) = self.entry_of(&item, &mut cache)?
                && wanted(e.kind)
            {
                out.push(e);
                if out.len() >= limit {
                    last = item.change;
                    return Ok(false);
                }
            }
            Ok(true)
        })?;
        Ok((out, last))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_read_back_and_old_single_keys_still_read() {
        let items: Vec<Item> = [(7, 1, EntryKind::Created), (8, 1, EntryKind::Detection)]
            .into_iter()
            .chain([(10, 2, EntryKind::SlaBreached)])
            .map(|(change, id, kind)| Item {
                change,
                log_key: super::super::log_key(id, change),
                kind: Some(kind),
            })
            .collect();
        let v = encode_run(7, &items);
        assert_eq!(v.len(), 1 + 3 * ITEM);
        assert_eq!(decode_run(7, &v).unwrap(), items);
        let old = super::super::log_key(3, 4);
        assert_eq!(
            decode_run(12, &old).unwrap(),
            vec![Item {
                change: 12,
                log_key: old,
                kind: None
            }]
        );
        assert!(decode_run(1, &[RUN_V1, 0, 0]).is_err());
        assert!(decode_run(1, &[9; 22]).is_err());
    }

    /// The entries of one change are one `incident_log` key (a pack); every reader still
    /// sees each entry, also from inside the pack.
    #[test]
    fn one_change_is_one_log_key_and_reads_entry_by_entry() {
        use crate::incident::port::{Change, IncidentLog};
        use crate::incident::{Incident, Severity};
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = SledStore::open(dir.path()).unwrap();
        let inc = Incident::new(
            9,
            "k".into(),
            "t".into(),
            Severity::Sev3,
            Default::default(),
        );
        let entry = |seq: u64, kind| TimelineEntry {
            incident_id: 9,
            seq,
            ts: Default::default(),
            kind,
            actor: "system".into(),
            note: Some(format!("n{seq}")),
            data: serde_json::json!({"seq": seq}).into(),
            change: 0,
        };
        let kinds = [
            EntryKind::Created,
            EntryKind::Detection,
            EntryKind::Detection,
        ];
        store
            .apply(&Change {
                incident: inc,
                previous_status: None,
                entries: (0..3).map(|i| entry(i, kinds[i as usize])).collect(),
                detections: vec![],
                index_keys: vec![],
            })
            .unwrap();
        assert_eq!(store.log.len(), 1, "one pack");
        let tl = store.timeline(9).unwrap();
        assert_eq!(
            tl.iter().map(|e| (e.seq, e.change)).collect::<Vec<_>>(),
            [(0, 1), (1, 2), (2, 3)]
        );
        for after in 0..3 {
            let got = store.changes_after(after, 1).unwrap();
            assert_eq!(got.len(), 1);
            assert_eq!(
                (got[0].seq, got[0].note.as_deref()),
                (after, Some(&*format!("n{after}")))
            );
        }
        let (only, upto) = store
            .changes_of(0, 3, 10, |k| k == EntryKind::Detection)
            .unwrap();
        assert_eq!(
            (only.iter().map(|e| e.seq).collect::<Vec<_>>(), upto),
            (vec![1, 2], 3)
        );
        store.remove_incident(9).unwrap();
        assert_eq!((store.log.len(), store.changes.len()), (0, 0));
    }
}
