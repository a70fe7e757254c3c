//! The sled implementation of [`Store`].

use std::path::{Path, PathBuf};

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

use super::{
    AppliedId, Change, Coverage, Cursor, ListQuery, Page, SCHEMA_VERSION, Sort, Store, StoreError,
    severity_rank, text_in_incident,
};
use crate::incident::{Incident, Silence, Status, TimelineEntry};

/// Records are one version byte followed by JSON, so the format can change later.
const RECORD_V1: u8 = 1;

pub struct SledStore {
    db: sled::Db,
    incidents: sled::Tree,
    log: sled::Tree,
    idx_key: sled::Tree,
    idx_status: sled::Tree,
    meta: sled::Tree,
    checkpoints: sled::Tree,
    applied: sled::Tree,
    /// Change number → log key of the timeline entry it numbers.
    changes: sled::Tree,
    silences: sled::Tree,
    /// Snapshots of incidents from before schema 2, standing for their early entries.
    baselines: sled::Tree,
    /// Action runs: pending approvals, results, pending reverts.
    actions: sled::Tree,
    /// The notification outbox: job id → job.
    outbox: sled::Tree,
    /// (incident id ‖ channel id) of channels told of an incident's opening.
    notified: sled::Tree,
    /// The number the next stored timeline entry gets (the manager is the only writer).
    next_change: std::sync::atomic::AtomicU64,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. A corrupt store is moved aside to
    /// `<dir>.corrupt.<unix-seconds>` and a clean one started, so a daemon under `Restart=` never
    /// crash-loops; the moved path is returned so the daemon can raise an incident about it.
    pub fn open(dir: &Path) -> Result<(SledStore, Option<PathBuf>), StoreError> {
        match Self::open_once(dir) {
            Ok(s) => Ok((s, None)),
            Err(StoreError::Open {
                source: sled::Error::Corruption { .. },
                ..
            }) => {
                let secs = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let aside = PathBuf::from(format!("{}.corrupt.{secs}", dir.display()));
                std::fs::rename(dir, &aside).map_err(|e| StoreError::Open {
                    path: dir.display().to_string(),
                    source: sled::Error::Io(e),
                })?;
                tracing::error!(state_dir = %dir.display(), moved_to = %aside.display(),
                    "state store was corrupt; moved it aside and started a clean one");
                Ok((Self::open_once(dir)?, Some(aside)))
            }
            Err(e) => Err(e),
        }
    }

    pub(crate) fn open_once(dir: &Path) -> Result<SledStore, StoreError> {
        let path = dir.display().to_string();
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(32 << 20)
            .open()
            .map_err(|source| match &source {
                sled::Error::Io(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.to_string().contains("lock") =>
                {
                    StoreError::Locked { path: path.clone() }
                }
                _ => StoreError::Open {
                    path: path.clone(),
                    source,
                },
            })?;
        let tree = |name: &str| {
            db.open_tree(name).map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })
        };
        let store = SledStore {
            incidents: tree("incidents")?,
            log: tree("incident_log")?,
            idx_key: tree("idx_key")?,
            idx_status: tree("idx_status")?,
            meta: tree("meta")?,
            checkpoints: tree("checkpoints")?,
            applied: tree("applied")?,
            changes: tree("changes")?,
            silences: tree("silences")?,
            baselines: tree("baselines")?,
            actions: tree("actions")?,
            outbox: tree("outbox")?,
            notified: tree("notified")?,
            next_change: std::sync::atomic::AtomicU64::new(1),
            db,
        };
        let last_change = store
            .changes
            .last()
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(0, u64::from_be_bytes);
        let next_change = store
            .meta_u64("next_change")?
            .unwrap_or(1)
            .max(last_change + 1);
        store
            .next_change
            .store(next_change, std::sync::atomic::Ordering::Relaxed);
        match store.meta_u64("schema_version")? {
            None => {
                store
                    .meta
                    .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
                    .map_err(|source| StoreError::Sled { op: "init", source })?;
                store.flush()?;
            }
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::Schema {
                    path,
                    found: v,
                    supported: SCHEMA_VERSION,
                });
            }
            Some(1) => store.migrate_v1_to_v2()?,
            Some(_) => {}
        }
        Ok(store)
    }

    fn meta_u64(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let v = self.meta.get(key).map_err(|source| StoreError::Sled {
            op: "read meta",
            source,
        })?;
        Ok(v.and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
            .map(u64::from_be_bytes))
    }
}

impl SledStore {
    /// Schema 1 → 2: number the entries that have no change number in time order, and keep
    /// each incident's snapshot as its baseline. Safe to run again after a crash halfway: it
    /// only numbers what is still unnumbered and rewrites the same baselines, and the version
    /// is written last.
    fn migrate_v1_to_v2(&self) -> Result<(), StoreError> {
        let err = |source| StoreError::Sled {
            op: "migrate schema 1 to 2",
            source,
        };
        let mut unnumbered: Vec<(crate::clock::Timestamp, u64, u64, sled::IVec, TimelineEntry)> =
            Vec::new();
        for kv in self.log.iter() {
            let (k, v) = kv.map_err(err)?;
            let e: TimelineEntry = decode("incident_log", &k, &v)?;
            if e.change == 0 {
                unnumbered.push((e.ts, e.incident_id, e.seq, k, e));
            }
        }
        unnumbered.sort_by_key(|a| (a.0, a.1, a.2));
        let mut next = self.next_change.load(std::sync::atomic::Ordering::Relaxed);
        for (_, _, _, k, mut e) in unnumbered {
            e.change = next;
            self.log.insert(&k, encode(&e)).map_err(err)?;
            self.changes.insert(next.to_be_bytes(), &k).map_err(err)?;
            next += 1;
        }
        self.next_change
            .store(next, std::sync::atomic::Ordering::Relaxed);
        self.meta
            .insert("next_change", &next.to_be_bytes())
            .map_err(err)?;
        let mut n = 0;
        for kv in self.incidents.iter() {
            let (k, v) = kv.map_err(err)?;
            let inc: Incident = decode("incidents", &k, &v)?;
            let covers = inc.timeline_len;
            self.baselines
                .insert(
                    &k,
                    encode(&crate::incident::project::Baseline {
                        incident: inc,
                        covers,
                    }),
                )
                .map_err(err)?;
            n += 1;
        }
        self.flush()?;
        self.meta
            .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
            .map_err(err)?;
        self.flush()?;
        tracing::info!(incidents = n, "migrated the state store from schema 1 to 2");
        Ok(())
    }

    fn baseline(&self, id: u64) -> Result<Option<crate::incident::project::Baseline>, StoreError> {
        let key = id.to_be_bytes();
        match self.baselines.get(key).map_err(|source| StoreError::Sled {
            op: "read baseline",
            source,
        })? {
            Some(v) => decode("baselines", &key, &v).map(Some),
            None => Ok(None),
        }
    }

    /// Rebuilds every snapshot from its log (and baseline), and the status, key and change
    /// indexes and the counters from the snapshots. An incident whose log cannot be replayed
    /// keeps its snapshot, and is reported.
    pub fn rebuild(&self) -> Result<Rebuild, StoreError> {
        let err = |source| StoreError::Sled {
            op: "rebuild",
            source,
        };
        let mut report = Rebuild::default();
        // Group the log by incident.
        let mut ids: Vec<u64> = Vec::new();
        let mut last: Option<u64> = None;
        for k in self.log.iter().keys() {
            let k = k.map_err(err)?;
            if let Some(id) = be_u64(&k)
                && last != Some(id)
            {
                ids.push(id);
                last = Some(id);
            }
        }
        self.changes.clear().map_err(err)?;
        let mut max_change = 0;
        for id in &ids {
            let entries = self.timeline(*id)?;
            for e in &entries {
                if e.change > 0 {
                    self.changes
                        .insert(e.change.to_be_bytes(), &log_key(e.incident_id, e.seq))
                        .map_err(err)?;
                    max_change = max_change.max(e.change);
                }
            }
            match crate::incident::project::project(self.baseline(*id)?.as_ref(), &entries) {
                Ok(inc) => {
                    let before = self.incident(*id).ok().flatten();
                    if before.as_ref() != Some(&inc) {
                        report.rewritten.push(*id);
                    }
                    self.incidents
                        .insert(id.to_be_bytes(), encode(&inc))
                        .map_err(err)?;
                }
                Err(e) => report.problems.push(e),
            }
            report.incidents += 1;
            report.entries += entries.len() as u64;
        }
        for kv in self.incidents.iter() {
            let (k, _) = kv.map_err(err)?;
            if let Ok(b) = <[u8; 8]>::try_from(k.as_ref())
                && !ids.contains(&u64::from_be_bytes(b))
            {
                report.problems.push(format!(
                    "incident {} has a snapshot but no log entries; kept as it is",
                    u64::from_be_bytes(b)
                ));
            }
        }
        // Indexes from the snapshots.
        self.idx_status.clear().map_err(err)?;
        self.idx_key.clear().map_err(err)?;
        let mut max_id = 0;
        for kv in self.incidents.iter() {
            let (k, v) = kv.map_err(err)?;
            let inc: Incident = match decode("incidents", &k, &v) {
                Ok(i) => i,
                Err(e) => {
                    report.problems.push(e.to_string());
                    continue;
                }
            };
            max_id = max_id.max(inc.id);
            self.idx_status
                .insert(status_key(inc.status, inc.id), &[])
                .map_err(err)?;
            // Ascending ids: the newest incident of a key is written last.
            for key in std::iter::once(&inc.key).chain(&inc.correlated_keys) {
                self.idx_key
                    .insert(key.as_bytes(), &inc.id.to_be_bytes())
                    .map_err(err)?;
            }
        }
        let next_id = self.meta_u64("next_id")?.unwrap_or(1).max(max_id + 1);
        self.meta
            .insert("next_id", &next_id.to_be_bytes())
            .map_err(err)?;
        let next_change = self
            .meta_u64("next_change")?
            .unwrap_or(1)
            .max(max_change + 1);
        self.meta
            .insert("next_change", &next_change.to_be_bytes())
            .map_err(err)?;
        self.flush()?;
        Ok(report)
    }
}

/// What `incidentd store rebuild` did.
#[derive(Debug, Default)]
pub struct Rebuild {
    pub incidents: u64,
    pub entries: u64,
    /// Incidents whose snapshot changed.
    pub rewritten: Vec<u64>,
    /// Incidents that could not be rebuilt, in words.
    pub problems: Vec<String>,
}

/// What `incidentd store verify` found.
#[derive(Debug, Default)]
pub struct Verification {
    pub incidents: u64,
    pub entries: u64,
    /// Each inconsistency, in words.
    pub problems: Vec<String>,
}

impl SledStore {
    /// Checks that snapshots, the incident log and the indexes agree: every snapshot decodes
    /// under its own id; its timeline in the log is complete (sequences 0..timeline_len, the
    /// last entry's status change matching); the status index holds exactly one entry per
    /// incident, for its status; the key index points at incidents with that key and at the
    /// newest of them; the id counter is past every id; no log entry lacks its incident.
    pub fn verify(&self) -> Result<Verification, StoreError> {
        let err = |op| move |source| StoreError::Sled { op, source };
        let mut v = Verification::default();
        let mut newest_by_key: std::collections::HashMap<String, u64> = Default::default();
        let mut statuses: std::collections::HashMap<u64, Status> = Default::default();
        let mut max_id = 0;
        for kv in self.incidents.iter() {
            let (k, bytes) = kv.map_err(err("read snapshots"))?;
            v.incidents += 1;
            let Ok(id_bytes) = <[u8; 8]>::try_from(k.as_ref()) else {
                v.problems
                    .push(format!("snapshot key {} is not an id", hex(&k)));
                continue;
            };
            let id = u64::from_be_bytes(id_bytes);
            let inc: Incident = match decode("incidents", &k, &bytes) {
                Ok(i) => i,
                Err(e) => {
                    v.problems.push(e.to_string());
                    continue;
                }
            };
            if inc.id != id {
                v.problems.push(format!(
                    "snapshot under id {id} says it is incident {}",
                    inc.id
                ));
            }
            max_id = max_id.max(id);
            statuses.insert(id, inc.status);
            for key in std::iter::once(&inc.key).chain(&inc.correlated_keys) {
                let e = newest_by_key.entry(key.clone()).or_insert(id);
                *e = (*e).max(id);
            }
            let mut seqs = 0u64;
            for kv in self.log.scan_prefix(id.to_be_bytes()) {
                let (lk, lv) = kv.map_err(err("read incident log"))?;
                let entry: TimelineEntry = match decode("incident_log", &lk, &lv) {
                    Ok(e) => e,
                    Err(e) => {
                        v.problems.push(e.to_string());
                        continue;
                    }
                };
                if entry.seq != seqs {
                    v.problems.push(format!(
                        "incident {id}: timeline entry {} where {seqs} was expected",
                        entry.seq
                    ));
                }
                seqs = entry.seq + 1;
                v.entries += 1;
            }
            if seqs != inc.timeline_len {
                v.problems.push(format!(
                    "incident {id}: the snapshot counts {} timeline entries, the log holds {seqs}",
                    inc.timeline_len
                ));
            } else {
                // The snapshot must be what its log replays to.
                let entries = self.timeline(id)?;
                match crate::incident::project::project(self.baseline(id)?.as_ref(), &entries) {
                    Ok(replayed) if replayed != inc => v.problems.push(format!(
                        "incident {id}: the snapshot differs from what its log replays to in: {}",
                        crate::incident::project::differences(&replayed, &inc).join(", ")
                    )),
                    Ok(_) => {}
                    Err(e) => v
                        .problems
                        .push(format!("incident {id}: cannot replay its log: {e}")),
                }
            }
        }
        // Status index: exactly the snapshots' statuses.
        let mut indexed: std::collections::HashMap<u64, u32> = Default::default();
        for kv in self.idx_status.iter() {
            let (k, _) = kv.map_err(err("read status index"))?;
            let (Some(code), Some(id)) = (
                k.first().copied(),
                k.get(1..9).and_then(|b| <[u8; 8]>::try_from(b).ok()),
            ) else {
                v.problems
                    .push(format!("status index key {} is malformed", hex(&k)));
                continue;
            };
            let id = u64::from_be_bytes(id);
            *indexed.entry(id).or_default() += 1;
            match statuses.get(&id) {
                None => v.problems.push(format!(
                    "status index lists incident {id}, which does not exist"
                )),
                Some(s) if s.code() != code => v.problems.push(format!(
                    "status index lists incident {id} under another status than its {s}"
                )),
                Some(_) => {}
            }
        }
        for id in statuses.keys() {
            match indexed.get(id) {
                None => v
                    .problems
                    .push(format!("incident {id} is missing from the status index")),
                Some(n) if *n > 1 => v
                    .problems
                    .push(format!("incident {id} is in the status index {n} times")),
                Some(_) => {}
            }
        }
        // Key index: the newest incident of each key.
        for kv in self.idx_key.iter() {
            let (k, val) = kv.map_err(err("read key index"))?;
            let key = String::from_utf8_lossy(&k).into_owned();
            let Some(id) = <[u8; 8]>::try_from(val.as_ref())
                .ok()
                .map(u64::from_be_bytes)
            else {
                v.problems
                    .push(format!("key index entry `{key}` is malformed"));
                continue;
            };
            match newest_by_key.remove(&key) {
                None => v.problems.push(format!(
                    "key index points `{key}` at incident {id}, but no incident has that key"
                )),
                Some(newest) if newest != id => v.problems.push(format!(
                    "key index points `{key}` at incident {id}, the newest is {newest}"
                )),
                Some(_) => {}
            }
        }
        for (key, id) in newest_by_key {
            v.problems.push(format!(
                "key `{key}` (incident {id}) is missing from the key index"
            ));
        }
        // Log entries without a snapshot.
        let mut last: Option<u64> = None;
        for k in self.log.iter().keys() {
            let k = k.map_err(err("read incident log"))?;
            let Some(id) = be_u64(&k) else {
                continue;
            };
            if last != Some(id) {
                last = Some(id);
                if !statuses.contains_key(&id) {
                    v.problems.push(format!(
                        "the log holds entries of incident {id}, which has no snapshot"
                    ));
                }
            }
        }
        if let Some(next) = self.meta_u64("next_id")?
            && v.incidents > 0
            && next <= max_id
        {
            v.problems.push(format!(
                "the id counter ({next}) is not past the highest id ({max_id})"
            ));
        }
        Ok(v)
    }
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![RECORD_V1];
    // Serializing our own plain structs to JSON cannot fail (string keys, no custom errors).
    serde_json::to_writer(&mut out, v).expect("records serialize to JSON");
    out
}

/// The big-endian number a key starts with (an incident id, a change number).
fn be_u64(key: &[u8]) -> Option<u64> {
    key.get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
}

fn decode<T: serde::de::DeserializeOwned>(
    tree: &'static str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    let err = |message: String| StoreError::Record {
        tree,
        key: hex(key),
        message,
    };
    match bytes.split_first() {
        Some((&RECORD_V1, body)) => serde_json::from_slice(body).map_err(|e| err(e.to_string())),
        Some((v, _)) => Err(err(format!("unknown record version {v}"))),
        None => Err(err("empty record".into())),
    }
}

fn hex(key: &[u8]) -> String {
    key.iter().map(|b| format!("{b:02x}")).collect()
}

fn log_key(id: u64, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&id.to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn status_key(status: Status, id: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = status.code();
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

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
            let Ok(e) = decode::<TimelineEntry>("incident_log", &k, &v) else {
                continue;
            };
            if e.note.is_some_and(|n| n.to_lowercase().contains(q)) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

impl Store for SledStore {
    fn apply(&self, change: &Change) -> Result<(), StoreError> {
        let inc = &change.incident;
        let id = inc.id.to_be_bytes();
        let snapshot = encode(inc);
        // Numbers are taken before the transaction; one that fails leaves a gap, which
        // readers of the change sequence accept (it only has to grow).
        let first = self.next_change.fetch_add(
            change.entries.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
        let entries: Vec<([u8; 16], [u8; 8], Vec<u8>)> = change
            .entries
            .iter()
            .zip(first..)
            .map(|(e, n)| {
                let numbered = TimelineEntry {
                    change: n,
                    ..e.clone()
                };
                (
                    log_key(e.incident_id, e.seq),
                    n.to_be_bytes(),
                    encode(&numbered),
                )
            })
            .collect();
        let next_change = first + change.entries.len() as u64;
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
                    incidents.insert(&id, snapshot.as_slice())?;
                    if let Some(d) = &change.detection {
                        applied.insert(d.key(), &d.value())?;
                    }
                    for (k, n, v) in &entries {
                        log.insert(k, v.as_slice())?;
                        changes.insert(n, k)?;
                    }
                    for k in &change.index_keys {
                        idx_key.insert(k.as_bytes(), &id)?;
                    }
                    // Kept in meta too: compaction may delete the highest numbers, which must
                    // never be given again (a client may have seen them).
                    meta.insert("next_change", &next_change.to_be_bytes())?;
                    match change.previous_status {
                        None => {
                            idx_key.insert(inc.key.as_bytes(), &id)?;
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
                        Some(_) => {}
                    }
                    idx_status.insert(&status_key(inc.status, inc.id), &[])?;
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

    fn flush(&self) -> Result<(), StoreError> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "flush",
                source,
            })
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
        self.log
            .scan_prefix(id.to_be_bytes())
            .map(|kv| {
                let (k, v) = kv.map_err(|source| StoreError::Sled {
                    op: "read timeline",
                    source,
                })?;
                decode("incident_log", &k, &v)
            })
            .collect()
    }

    fn remove_incident(&self, id: u64) -> Result<(), StoreError> {
        let err = |source| StoreError::Sled {
            op: "remove incident",
            source,
        };
        let Some(inc) = self.incident(id)? else {
            return Ok(());
        };
        let mut log_keys: Vec<(sled::IVec, u64)> = Vec::new();
        for kv in self.log.scan_prefix(id.to_be_bytes()) {
            let (k, v) = kv.map_err(err)?;
            // An undecodable entry still goes; its change number (if any) stays behind and
            // readers skip numbers whose entry is gone.
            let n = decode::<TimelineEntry>("incident_log", &k, &v).map_or(0, |e| e.change);
            log_keys.push((k, n));
        }
        let result: Result<(), TransactionError<()>> = (
            &self.incidents,
            &self.log,
            &self.idx_key,
            &self.idx_status,
            &self.changes,
        )
            .transaction(|(incidents, log, idx_key, idx_status, changes)| {
                incidents.remove(&id.to_be_bytes())?;
                for (k, n) in &log_keys {
                    log.remove(k)?;
                    if *n > 0 {
                        changes.remove(&n.to_be_bytes())?;
                    }
                }
                idx_status.remove(&status_key(inc.status, id))?;
                // The key index keeps pointing at a newer incident of the key, if any.
                if idx_key.get(inc.key.as_bytes())?.as_deref() == Some(&id.to_be_bytes()[..]) {
                    idx_key.remove(inc.key.as_bytes())?;
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
            if !visit(decode("incident_log", &k, &v)?) {
                break;
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

    fn save_checkpoint(&self, bytes: &[u8], coverage: &Coverage) -> Result<(), StoreError> {
        let err = |source| StoreError::Sled {
            op: "save checkpoint",
            source,
        };
        let mut record = Vec::with_capacity(bytes.len() + 1);
        record.push(RECORD_V1);
        record.extend_from_slice(bytes);
        // The manager is the only writer, so what is read here is all there is to remove.
        let mut covered: Vec<sled::IVec> = Vec::new();
        for kv in self.applied.iter() {
            let (k, v) = kv.map_err(err)?;
            if coverage.covers(&k, &v) {
                covered.push(k);
            }
        }
        let result: Result<(), TransactionError<()>> = (&self.checkpoints, &self.applied)
            .transaction(|(checkpoints, applied)| {
                checkpoints.insert("engine", record.as_slice())?;
                for k in &covered {
                    applied.remove(k)?;
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

    fn detection_applied(&self, id: &AppliedId) -> Result<bool, StoreError> {
        self.applied
            .contains_key(id.key())
            .map_err(|source| StoreError::Sled {
                op: "read applied detections",
                source,
            })
    }

    fn record_detection(&self, id: &AppliedId) -> Result<(), StoreError> {
        self.applied
            .insert(id.key(), &id.value())
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "record detection",
                source,
            })
    }

    fn changed_after(&self, after: u64, limit: usize) -> Result<Vec<(u64, u64)>, StoreError> {
        let err = |source| StoreError::Sled {
            op: "read changes",
            source,
        };
        let mut out = Vec::new();
        for kv in self
            .changes
            .range(after.saturating_add(1).to_be_bytes()..)
            .take(limit)
        {
            let (change, log_key) = kv.map_err(err)?;
            // Both keys start with a big-endian number: the change's, the incident's id.
            if let (Some(c), Some(id)) = (be_u64(&change), be_u64(&log_key)) {
                out.push((c, id));
            }
        }
        Ok(out)
    }

    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<TimelineEntry>, StoreError> {
        let err = |source| StoreError::Sled {
            op: "read changes",
            source,
        };
        let mut out = Vec::new();
        for kv in self.changes.range(after.saturating_add(1).to_be_bytes()..) {
            let (_, log_key) = kv.map_err(err)?;
            // The entry may have gone with a compacted incident in between.
            if let Some(v) = self.log.get(&log_key).map_err(err)? {
                out.push(decode("incident_log", &log_key, &v)?);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        self.silences
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|source| StoreError::Sled {
                    op: "read silences",
                    source,
                })?;
                decode("silences", &k, &v)
            })
            .collect()
    }

    fn put_silence(&self, silence: &Silence) -> Result<(), StoreError> {
        // The counter and the record need no transaction: a crash between them leaves the
        // record, and `next_silence_id` also looks past the highest stored id.
        if self.meta_u64("next_silence")?.unwrap_or(1) <= silence.id {
            self.meta
                .insert("next_silence", &(silence.id + 1).to_be_bytes())
                .map_err(|source| StoreError::Sled {
                    op: "store silence",
                    source,
                })?;
        }
        self.silences
            .insert(silence.id.to_be_bytes(), encode(silence))
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "store silence",
                source,
            })
    }

    fn next_silence_id(&self) -> Result<u64, StoreError> {
        let last = self
            .silences
            .last()
            .map_err(|source| StoreError::Sled {
                op: "read silences",
                source,
            })?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(1, |k| u64::from_be_bytes(k) + 1);
        Ok(self.meta_u64("next_silence")?.unwrap_or(1).max(last))
    }

    fn remove_silence(&self, id: u64) -> Result<(), StoreError> {
        self.silences
            .remove(id.to_be_bytes())
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "remove silence",
                source,
            })
    }

    fn enqueue_jobs(
        &self,
        jobs: &[crate::notification::Job],
        remove: &[u64],
        cursor: u64,
    ) -> Result<(), StoreError> {
        let encoded: Vec<([u8; 8], Vec<u8>)> = jobs
            .iter()
            .map(|j| (j.id.to_be_bytes(), encode(j)))
            .collect();
        let next = jobs.iter().map(|j| j.id + 1).max();
        let result: Result<(), TransactionError<()>> =
            (&self.outbox, &self.meta).transaction(|(outbox, meta)| {
                for id in remove {
                    outbox.remove(&id.to_be_bytes())?;
                }
                for (k, v) in &encoded {
                    outbox.insert(k, v.as_slice())?;
                }
                meta.insert("notify_cursor", &cursor.to_be_bytes())?;
                if let Some(n) = next {
                    let have = meta
                        .get("next_job")?
                        .and_then(|v| <[u8; 8]>::try_from(v.as_ref()).ok())
                        .map_or(1, u64::from_be_bytes);
                    if n > have {
                        meta.insert("next_job", &n.to_be_bytes())?;
                    }
                }
                Ok::<(), ConflictableTransactionError<()>>(())
            });
        result.map_err(|e| StoreError::Sled {
            op: "enqueue notifications",
            source: match e {
                TransactionError::Storage(s) => s,
                TransactionError::Abort(()) => {
                    sled::Error::Unsupported("transaction aborted".into())
                }
            },
        })
    }

    fn job(&self, id: u64) -> Result<Option<crate::notification::Job>, StoreError> {
        let key = id.to_be_bytes();
        match self.outbox.get(key).map_err(|source| StoreError::Sled {
            op: "read the outbox",
            source,
        })? {
            Some(v) => decode("outbox", &key, &v).map(Some),
            None => Ok(None),
        }
    }

    fn incident_at(&self, id: u64, seq: u64) -> Result<Option<Incident>, StoreError> {
        let mut entries = self.timeline(id)?;
        entries.retain(|e| e.seq <= seq);
        Ok(crate::incident::project::project(self.baseline(id)?.as_ref(), &entries).ok())
    }

    fn mark_notified(&self, incident: u64, channel: &str) -> Result<(), StoreError> {
        let mut k = incident.to_be_bytes().to_vec();
        k.extend_from_slice(channel.as_bytes());
        self.notified
            .insert(k, &[])
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "remember a notified channel",
                source,
            })
    }

    fn notified_channels(&self, incident: u64) -> Result<Vec<String>, StoreError> {
        self.notified
            .scan_prefix(incident.to_be_bytes())
            .keys()
            .map(|k| {
                k.map(|k| String::from_utf8_lossy(&k[8..]).into_owned())
                    .map_err(|source| StoreError::Sled {
                        op: "read notified channels",
                        source,
                    })
            })
            .collect()
    }

    fn put_job(&self, job: &crate::notification::Job) -> Result<(), StoreError> {
        self.outbox
            .insert(job.id.to_be_bytes(), encode(job))
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "store notification job",
                source,
            })
    }

    fn remove_job(&self, id: u64) -> Result<(), StoreError> {
        self.outbox
            .remove(id.to_be_bytes())
            .map(|_| ())
            .map_err(|source| StoreError::Sled {
                op: "remove notification job",
                source,
            })
    }

    fn jobs(&self) -> Result<Vec<crate::notification::Job>, StoreError> {
        self.outbox
            .iter()
            .map(|kv| {
                let (k, v) = kv.map_err(|source| StoreError::Sled {
                    op: "read the outbox",
                    source,
                })?;
                decode("outbox", &k, &v)
            })
            .collect()
    }

    fn notify_cursor(&self) -> Result<Option<u64>, StoreError> {
        self.meta_u64("notify_cursor")
    }

    fn next_job_id(&self) -> Result<u64, StoreError> {
        let last = self
            .outbox
            .last()
            .map_err(|source| StoreError::Sled {
                op: "read the outbox",
                source,
            })?
            .and_then(|(k, _)| <[u8; 8]>::try_from(k.as_ref()).ok())
            .map_or(1, |k| u64::from_be_bytes(k) + 1);
        Ok(self.meta_u64("next_job")?.unwrap_or(1).max(last))
    }

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

    fn last_change(&self) -> u64 {
        self.next_change
            .load(std::sync::atomic::Ordering::Relaxed)
            .saturating_sub(1)
    }

    fn load_checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let v = self
            .checkpoints
            .get("engine")
            .map_err(|source| StoreError::Sled {
                op: "load checkpoint",
                source,
            })?;
        Ok(v.and_then(|v| v.strip_prefix(&[RECORD_V1]).map(<[u8]>::to_vec)))
    }

    fn count_by_status(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        Status::ALL
            .into_iter()
            .map(|s| Ok((s, self.idx_status.scan_prefix([s.code()]).count() as u64)))
            .collect()
    }
}
