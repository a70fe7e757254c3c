//! Schema migration, `store verify` and `store rebuild`.

use super::{SledStore, be_u64, decode, encode, hex, log_key, status_key};
use crate::incident::port::*;
use crate::incident::{Incident, Status, TimelineEntry};
use crate::port::StoreError;
use crate::store::SCHEMA_VERSION;

impl SledStore {
    /// Schema 1 → 2: number the entries that have no change number in time order, and keep
    /// each incident's snapshot as its baseline. Safe to run again after a crash halfway: it
    /// only numbers what is still unnumbered and rewrites the same baselines, and the version
    /// is written last.
    pub(super) fn migrate_v1_to_v2(&self) -> Result<(), StoreError> {
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
            let run = super::feed::encode_run(
                next,
                &[super::feed::Item {
                    change: next,
                    log_key: log_key(e.incident_id, e.seq),
                    kind: Some(e.kind),
                }],
            );
            self.changes.insert(next.to_be_bytes(), run).map_err(err)?;
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
        // The records above are written as this build writes them (long ones compressed):
        // the store is marked with this build's schema at once, not 2, so that a build
        // reading 2 or 3 never opens it after a crash right here.
        self.meta
            .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
            .map_err(err)?;
        self.flush()?;
        tracing::info!(incidents = n, "migrated the state store from schema 1 to 2");
        Ok(())
    }

    /// Schema 2 or 3 → 4 (1 goes straight to 4 in `migrate_v1_to_v2`): nothing to rewrite (version 2 keys read as runs of one, records
    /// not compressed read as they are); the new version keeps builds that write an older
    /// one from misreading the runs and the compressed records written from now on.
    pub(super) fn mark_schema(&self, from: u64) -> Result<(), StoreError> {
        self.meta
            .insert("schema_version", &SCHEMA_VERSION.to_be_bytes())
            .map_err(|source| StoreError::Sled {
                op: "mark the schema version",
                source,
            })?;
        self.flush()?;
        tracing::info!(
            from,
            to = SCHEMA_VERSION,
            "state store schema marked (runs of change numbers and of line ids, compressed records, folded detections)"
        );
        Ok(())
    }

    pub(super) fn baseline(
        &self,
        id: u64,
    ) -> Result<Option<crate::incident::project::Baseline>, StoreError> {
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
                    let run = super::feed::encode_run(
                        e.change,
                        &[super::feed::Item {
                            change: e.change,
                            log_key: log_key(e.incident_id, e.seq),
                            kind: Some(e.kind),
                        }],
                    );
                    self.changes
                        .insert(e.change.to_be_bytes(), run)
                        .map_err(err)?;
                    max_change = max_change.max(e.change);
                }
            }
            match crate::incident::project::project(self.baseline(*id)?.as_ref(), &entries) {
                Ok(mut inc) => {
                    let before = self.incident(*id).ok().flatten();
                    // Detections folded and not yet in the log are only in the snapshot: kept
                    // when it can be read (lost with it otherwise).
                    if let Some(fold) = before.as_ref().and_then(|b| b.folded.as_ref()) {
                        crate::incident::fold::apply_pending(&mut inc, fold);
                    }
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
            // Ascending ids: the newest incident of a key is written last. A merged
            // incident's keys lead to the one it was merged into (which lists them).
            let keys = std::iter::once(&inc.key).chain(&inc.correlated_keys);
            for key in keys.filter(|_| inc.merged_into.is_none()) {
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
            let keys = std::iter::once(&inc.key).chain(&inc.correlated_keys);
            for key in keys.filter(|_| inc.merged_into.is_none()) {
                let e = newest_by_key.entry(key.clone()).or_insert(id);
                *e = (*e).max(id);
            }
            let mut seqs = 0u64;
            for kv in self.log.scan_prefix(id.to_be_bytes()) {
                let (lk, lv) = kv.map_err(err("read incident log"))?;
                let entries = match super::decode_entries(&lk, &lv) {
                    Ok(e) => e,
                    Err(e) => {
                        v.problems.push(e.to_string());
                        continue;
                    }
                };
                for entry in entries {
                    if entry.seq != seqs {
                        v.problems.push(format!(
                            "incident {id}: timeline entry {} where {seqs} was expected",
                            entry.seq
                        ));
                    }
                    seqs = entry.seq + 1;
                    v.entries += 1;
                }
            }
            if seqs != inc.timeline_len {
                v.problems.push(format!(
                    "incident {id}: the snapshot counts {} timeline entries, the log holds {seqs}",
                    inc.timeline_len
                ));
            } else {
                // The snapshot must be what its log replays to.
                let entries = self.timeline(id)?;
                let replayed =
                    crate::incident::project::project(self.baseline(id)?.as_ref(), &entries).map(
                        |mut replayed| {
                            // The fold the snapshot holds comes after its log.
                            if let Some(fold) = &inc.folded {
                                crate::incident::fold::apply_pending(&mut replayed, fold);
                            }
                            replayed
                        },
                    );
                match replayed {
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
