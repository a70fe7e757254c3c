//! The incident log on sled: snapshots, the append-only timeline, the key and status
//! indexes and the change numbers, written in one transaction per change.

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{
    SledStore, be_u64, decode, decode_entries, encode, encode_entries, log_key, status_key,
};
use crate::incident::port::*;
use crate::incident::{Incident, Status, TimelineEntry};
use crate::port::StoreError;

impl SledStore {
    /// Whether `inc` belongs in the listing: the field filters, and the text in its title,
    /// key or (only then read) the notes of its timeline.
    fn listed(
        &self,
        query: &ListQuery,
        text: Option<&str>,
        inc: &Incident,
    ) -> Result<bool, StoreError> {
        if !query.matches_fields(inc) {
            return Ok(false);
        }
        let Some(q) = text else {
            return Ok(true);
        };
        if text_in_incident(inc, q) {
            return Ok(true);
        }
        for kv in self.log.scan_prefix(inc.id.to_be_bytes()) {
            let (k, v) = kv.map_err(|source| StoreError::Sled {
                op: "search notes",
                source,
            })?;
            // One damaged entry must not fail every search (`store verify` reports it).
            let Ok(entries) = decode_entries(&k, &v) else {
                continue;
            };
            if entries
                .into_iter()
                .any(|e| e.note.is_some_and(|n| n.to_lowercase().contains(q)))
            {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl IncidentLog for SledStore {
    fn apply(&self, change: &Change) -> Result<(), StoreError> {
        self.apply_all(std::slice::from_ref(change))
    }

    fn apply_many(&self, changes: &[Change]) -> Result<(), StoreError> {
        self.apply_all(changes)
    }

    fn incident(&self, id: u64) -> Result<Option<Incident>, StoreError> {
        let key = id.to_be_bytes();
        match self.incidents.get(key).map_err(|source| StoreError::Sled {
            op: "read incident",
            source,
        })? {
            Some(v) => decode("incidents", &key, &v).map(Some),
            None => Ok(None),
        }
    }

    fn timeline(&self, id: u64) -> Result<Vec<TimelineEntry>, StoreError> {
        let mut out = Vec::new();
        for kv in self.log.scan_prefix(id.to_be_bytes()) {
            let (k, v) = kv.map_err(|source| StoreError::Sled {
                op: "read timeline",
                source,
            })?;
            out.extend(decode_entries(&k, &v)?);
        }
        Ok(out)
    }

    fn remove_incident(&self, id: u64) -> Result<(), StoreError> {
        let err = |source| StoreError::Sled {
            op: "remove incident",
            source,
        };
        let Some(inc) = self.incident(id)? else {
            return Ok(());
        };
        let mut log_keys: Vec<sled::IVec> = Vec::new();
        let mut numbers: Vec<u64> = Vec::new();
        for kv in self.log.scan_prefix(id.to_be_bytes()) {
            let (k, v) = kv.map_err(err)?;
            // An undecodable entry still goes; its change number (if any) stays behind and
            // readers skip numbers whose entry is gone.
            if let Ok(entries) = decode_entries(&k, &v) {
                numbers.extend(entries.iter().map(|e| e.change).filter(|n| *n > 0));
            }
            log_keys.push(k);
        }
        numbers.sort_unstable();
        // The manager is the only writer: the runs read here are the ones to rewrite.
        let runs = self.runs_without(&numbers)?;
        let result: Result<(), TransactionError<()>> = (
            &self.incidents,
            &self.log,
            &self.idx_key,
            &self.idx_status,
            &self.changes,
        )
            .transaction(|(incidents, log, idx_key, idx_status, changes)| {
                incidents.remove(&id.to_be_bytes())?;
                for k in &log_keys {
                    log.remove(k)?;
                }
                for (first, run) in &runs {
                    match run {
                        Some(v) => changes.insert(first, v.as_slice())?,
                        None => changes.remove(first)?,
                    };
                }
                idx_status.remove(&status_key(inc.status, id))?;
                // The key index keeps pointing at a newer incident of the key, if any; keys
                // that joined it (by correlation or a merge) and still lead here go too.
                for key in std::iter::once(&inc.key).chain(&inc.correlated_keys) {
                    if idx_key.get(key.as_bytes())?.as_deref() == Some(&id.to_be_bytes()[..]) {
                        idx_key.remove(key.as_bytes())?;
                    }
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        result.map_err(|e| match e {
            TransactionError::Storage(source) => err(source),
            TransactionError::Abort(()) => {
                err(sled::Error::Unsupported("transaction aborted".into()))
            }
        })
    }

    fn each_entry(&self, visit: &mut dyn FnMut(TimelineEntry) -> bool) -> Result<(), StoreError> {
        for kv in self.log.iter() {
            let (k, v) = kv.map_err(|source| StoreError::Sled {
                op: "read incident log",
                source,
            })?;
            for e in decode_entries(&k, &v)? {
                if !visit(e) {
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    fn latest_for_key(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let v = self
            .idx_key
            .get(key.as_bytes())
            .map_err(|source| StoreError::Sled {
                op: "read key index",
                source,
            })?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }

    fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let limit = query.limit.clamp(1, 1000);
        let err = |source| StoreError::Sled {
            op: "list incidents",
            source,
        };
        let text = query.text();
        let mut incidents = Vec::with_capacity(limit);
        let mut next_cursor = None;
        let cursor = query.cursor.map(|c| c.id);
        match query.sort {
            Sort::Newest | Sort::Oldest => {
                let iter: Box<dyn Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>> =
                    match query.sort {
                        Sort::Newest => Box::new(
                            self.incidents
                                .range(..cursor.unwrap_or(u64::MAX).to_be_bytes())
                                .rev(),
                        ),
                        _ => Box::new(
                            self.incidents
                                .range(cursor.map_or(0, |c| c.saturating_add(1)).to_be_bytes()..),
                        ),
                    };
                for kv in iter {
                    let (k, v) = kv.map_err(err)?;
                    let inc: Incident = decode("incidents", &k, &v)?;
                    if !self.listed(query, text.as_deref(), &inc)? {
                        continue;
                    }
                    if incidents.len() == limit {
                        next_cursor = incidents.last().map(|i: &Incident| Cursor::after(i.id));
                        break;
                    }
                    incidents.push(inc);
                }
            }
            Sort::Severity => {
                // No index orders by severity: rank every match, then read the page. Memory
                // is 16 bytes per matching incident, bounded by `retain_closed`.
                let mut ranked: Vec<(u8, std::cmp::Reverse<u64>)> = Vec::new();
                for kv in self.incidents.iter() {
                    let (k, v) = kv.map_err(err)?;
                    let inc: Incident = decode("incidents", &k, &v)?;
                    if self.listed(query, text.as_deref(), &inc)? {
                        ranked.push((severity_rank(inc.severity), std::cmp::Reverse(inc.id)));
                    }
                }
                ranked.sort_unstable();
                let from = match query.cursor {
                    Some(c) => {
                        let at = (c.rank.unwrap_or(0), std::cmp::Reverse(c.id));
                        ranked.partition_point(|r| *r <= at)
                    }
                    None => 0,
                };
                let page = &ranked[from.min(ranked.len())..];
                for (_, std::cmp::Reverse(id)) in page.iter().take(limit) {
                    // Gone since it was ranked (compacted): the page is one shorter.
                    if let Some(inc) = self.incident(*id)? {
                        incidents.push(inc);
                    }
                }
                if page.len() > limit {
                    let (rank, std::cmp::Reverse(id)) = page[limit - 1];
                    next_cursor = Some(Cursor {
                        rank: Some(rank),
                        id,
                    });
                }
            }
        }
        Ok(Page {
            incidents,
            next_cursor,
        })
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        let from_meta = self.meta_u64("next_id")?.unwrap_or(1);
        // Belt and braces: never below the newest stored id + 1.
        let last = self
            .incidents
            .last()
            .map_err(|source| StoreError::Sled {
                op: "read last id",
                source,
            })?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map(|k| u64::from_be_bytes(k) + 1)
            .unwrap_or(1);
        Ok(from_meta.max(last))
    }

    fn changed_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        self.each_change(after, &mut |item| {
            // The log key starts with the incident's id, big-endian.
            if let Some(id) = be_u64(&item.log_key) {
                out.push((item.change, id));
            }
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<TimelineEntry>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        let mut cache = None;
        self.each_change(after, &mut |item| {
            // The entry may have gone with a compacted incident in between.
            if let Some(e) = self.entry_of(&item, &mut cache)? {
                out.push(e);
            }
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    fn changes_of(
        &self,
        after: u64,
        upto: u64,
        limit: usize,
        wanted: fn(crate::incident::EntryKind) -> bool,
    ) -> Result<(Vec<TimelineEntry>, u64), StoreError> {
        self.read_changes_of(after, upto, limit, wanted)
    }

    fn incident_at(&self, id: u64, seq: u64) -> Result<Option<Incident>, StoreError> {
        let mut entries = self.timeline(id)?;
        entries.retain(|e| e.seq <= seq);
        Ok(crate::incident::project::project(self.baseline(id)?.as_ref(), &entries).ok())
    }

    fn last_change(&self) -> u64 {
        self.next_change
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(1)
    }

    fn count_by_status(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        Status::ALL
            .into_iter()
            .map(|s| Ok((s, self.idx_status.scan_prefix([s.code()]).count() as u64)))
            .collect()
    }
}

impl SledStore {
    /// Applies `changes` in order, in one transaction: all of them or none.
    fn apply_all(&self, changes: &[Change]) -> Result<(), StoreError> {
        let count: u64 = changes.iter().map(|c| c.entries.len() as u64).sum();
        // Numbers are taken before the transaction; one that fails leaves a gap, which
        // readers of the change sequence accept (it only has to grow).
        let first = self
            .next_change
            .fetch_add(count, std::sync::atomic::Ordering::Relaxed);
        let mut n = first;
        let mut prepared = Vec::with_capacity(changes.len());
        // Every entry of this write in one run of the change feed.
        let mut items = Vec::with_capacity(count as usize);
        for change in changes {
            let inc = &change.incident;
            let numbered: Vec<([u8; 16], Numbered<'_>)> = change
                .entries
                .iter()
                .map(|e| {
                    let key = log_key(e.incident_id, e.seq);
                    items.push(super::feed::Item {
                        change: n,
                        log_key: key,
                        kind: Some(e.kind),
                    });
                    n += 1;
                    (key, Numbered::of(e, n - 1))
                })
                .collect();
            // One incident's consecutive entries are one pack; anything else a key each.
            let packable = numbered
                .windows(2)
                .all(|w| w[0].1.incident_id == w[1].1.incident_id && w[0].1.seq + 1 == w[1].1.seq);
            let entries: Vec<([u8; 16], Vec<u8>)> = match numbered.first() {
                Some((key, _)) if packable => {
                    let all: Vec<&Numbered<'_>> = numbered.iter().map(|(_, e)| e).collect();
                    vec![(*key, encode_entries(&all))]
                }
                _ => numbered.iter().map(|(k, e)| (*k, encode(e))).collect(),
            };
            prepared.push((change, inc.id.to_be_bytes(), encode(inc), entries));
        }
        let run = (!items.is_empty()).then(|| super::feed::encode_run(first, &items));
        // The detections' ids: a run per file for line ids (see `applied.rs`).
        let (id_runs, id_keys) = self
            .high_water
            .writes(changes.iter().flat_map(|c| &c.detections));
        let next_change = first + count;
        // The closure may run more than once on conflict: it only writes, with no side effects.
        let result: Result<(), TransactionError<()>> = (
            &self.incidents,
            &self.log,
            &self.idx_key,
            &self.idx_status,
            &self.meta,
            &self.applied,
            &self.changes,
        )
            .transaction(
                |(incidents, log, idx_key, idx_status, meta, applied, changes)| {
                    for (k, v) in &id_runs {
                        applied.insert(k.as_slice(), v.as_slice())?;
                    }
                    for (k, v) in &id_keys {
                        applied.insert(k.as_slice(), v)?;
                    }
                    for (change, id, snapshot, entries) in &prepared {
                        let inc = &change.incident;
                        incidents.insert(id, snapshot.as_slice())?;
                        for (k, v) in entries {
                            log.insert(k, v.as_slice())?;
                        }
                        for k in &change.index_keys {
                            idx_key.insert(k.as_bytes(), id)?;
                        }
                        match change.previous_status {
                            None => {
                                idx_key.insert(inc.key.as_bytes(), id)?;
                                let next = meta
                                    .get("next_id")?
                                    .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                                    .map(u64::from_be_bytes)
                                    .unwrap_or(1);
                                if inc.id >= next {
                                    meta.insert("next_id", &(inc.id + 1).to_be_bytes())?;
                                }
                            }
                            Some(prev) if prev != inc.status => {
                                idx_status.remove(&status_key(prev, inc.id))?;
                            }
                            // The status is unchanged, so its index key is already there (each
                            // write that set it put it there; `repair` rebuilds the index):
                            // most writes under an attack are detections joining an open
                            // incident, and a transactional insert reads its key first.
                            Some(_) => continue,
                        }
                        idx_status.insert(&status_key(inc.status, inc.id), &[])?;
                    }
                    if let Some(run) = &run {
                        changes.insert(&first.to_be_bytes(), run.as_slice())?;
                    }
                    // Kept in meta too: compaction may delete the highest numbers, which must
                    // never be given again (a client may have seen them).
                    meta.insert("next_change", &next_change.to_be_bytes())?;
                    Ok::<(), ConflictableTransactionError<()>>(())
                },
            );
        if result.is_err() {
            // Nothing was written: give the numbers back (the manager is the only writer),
            // so no number is ever announced without its entry.
            self.next_change
                .store(first, std::sync::atomic::Ordering::Relaxed);
        }
        result.map_err(|e| match e {
            TransactionError::Storage(source) => StoreError::Sled {
                op: "apply change",
                source,
            },
            TransactionError::Abort(()) => StoreError::Sled {
                op: "apply change",
                source: sled::Error::Unsupported("transaction aborted".into()),
            },
        })
    }
}

/// A timeline entry with its change number, encoded as `TimelineEntry` is, without cloning
/// the entry.
#[derive(serde::Serialize)]
struct Numbered<'a> {
    incident_id: u64,
    seq: u64,
    ts: crate::clock::Timestamp,
    #[serde(rename = "type")]
    kind: crate::incident::EntryKind,
    actor: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<&'a str>,
    #[serde(skip_serializing_if = "is_null", serialize_with = "data_as_json")]
    data: &'a crate::incident::EntryData,
    change: u64,
}

impl<'a> Numbered<'a> {
    fn of(e: &'a TimelineEntry, change: u64) -> Self {
        Numbered {
            incident_id: e.incident_id,
            seq: e.seq,
            ts: e.ts,
            kind: e.kind,
            actor: &e.actor,
            note: e.note.as_deref(),
            data: &e.data,
            change,
        }
    }
}

/// A detection entry's data as the JSON text it was encoded to (see `EntryData`).
fn data_as_json<S: serde::Serializer>(
    d: &&crate::incident::EntryData,
    s: S,
) -> Result<S::Ok, S::Error> {
    d.serialize_json(s)
}

fn is_null(v: &&crate::incident::EntryData) -> bool {
    v.is_null()
}
