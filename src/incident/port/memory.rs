//! The incident port in memory, for unit tests: the same answers as the sled store for what
//! the manager and its readers ask, nothing durable.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use super::*;

#[derive(Default)]
struct Inner {
    incidents: BTreeMap<u64, Incident>,
    log: BTreeMap<(u64, u64), TimelineEntry>,
    keys: HashMap<String, u64>,
    /// Change number → (incident id, seq).
    changes: BTreeMap<u64, (u64, u64)>,
    next_id: u64,
    last_change: u64,
    checkpoint: Option<Vec<u8>>,
    applied: BTreeMap<Vec<u8>, Vec<u8>>,
    silences: BTreeMap<u64, Silence>,
    next_silence: u64,
    flushes: u64,
}

/// Incidents, checkpoints and silences in memory.
#[derive(Default)]
pub struct MemoryIncidents(Mutex<Inner>);

impl MemoryIncidents {
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// How many times `flush` was called.
    pub fn flushes(&self) -> u64 {
        self.with(|s| s.flushes)
    }
}

impl Durable for MemoryIncidents {
    fn flush(&self) -> Result<(), StoreError> {
        self.with(|s| s.flushes += 1);
        Ok(())
    }
}

impl IncidentLog for MemoryIncidents {
    fn apply(&self, change: &Change) -> Result<(), StoreError> {
        self.with(|s| {
            let inc = &change.incident;
            for e in &change.entries {
                s.last_change += 1;
                let numbered = TimelineEntry {
                    change: s.last_change,
                    ..e.clone()
                };
                s.changes.insert(s.last_change, (e.incident_id, e.seq));
                s.log.insert((e.incident_id, e.seq), numbered);
            }
            for d in &change.detections {
                s.applied.insert(d.key(), d.value().to_vec());
            }
            for k in &change.index_keys {
                s.keys.insert(k.clone(), inc.id);
            }
            if change.previous_status.is_none() {
                s.keys.insert(inc.key.clone(), inc.id);
                s.next_id = s.next_id.max(inc.id + 1);
            }
            s.incidents.insert(inc.id, inc.clone());
        });
        Ok(())
    }

    fn incident(&self, id: u64) -> Result<Option<Incident>, StoreError> {
        Ok(self.with(|s| s.incidents.get(&id).cloned()))
    }

    fn timeline(&self, id: u64) -> Result<Vec<TimelineEntry>, StoreError> {
        Ok(self.with(|s| {
            s.log
                .range((id, 0)..=(id, u64::MAX))
                .map(|(_, e)| e.clone())
                .collect()
        }))
    }

    fn remove_incident(&self, id: u64) -> Result<(), StoreError> {
        self.with(|s| {
            s.incidents.remove(&id);
            s.log.retain(|(i, _), _| *i != id);
            s.keys.retain(|_, i| *i != id);
        });
        Ok(())
    }

    fn each_entry(&self, visit: &mut dyn FnMut(TimelineEntry) -> bool) -> Result<(), StoreError> {
        let entries: Vec<TimelineEntry> = self.with(|s| s.log.values().cloned().collect());
        for e in entries {
            if !visit(e) {
                break;
            }
        }
        Ok(())
    }

    fn latest_for_key(&self, key: &str) -> Result<Option<u64>, StoreError> {
        Ok(self.with(|s| s.keys.get(key).copied()))
    }

    fn list(&self, query: &ListQuery) -> Result<Page, StoreError> {
        let limit = query.limit.clamp(1, 1000);
        let text = query.text();
        let (incidents, log) = self.with(|s| (s.incidents.clone(), s.log.clone()));
        let noted = |i: &Incident, q: &str| {
            log.range((i.id, 0)..=(i.id, u64::MAX)).any(|(_, e)| {
                e.note
                    .as_ref()
                    .is_some_and(|n| n.to_lowercase().contains(q))
            })
        };
        let mut hits: Vec<Incident> = incidents
            .into_values()
            .filter(|i| query.matches_fields(i))
            .filter(|i| {
                text.as_deref()
                    .is_none_or(|q| text_in_incident(i, q) || noted(i, q))
            })
            .collect();
        let order = |i: &Incident| (severity_rank(i.severity), std::cmp::Reverse(i.id));
        match query.sort {
            Sort::Newest => hits.sort_by_key(|i| std::cmp::Reverse(i.id)),
            Sort::Oldest => hits.sort_by_key(|i| i.id),
            Sort::Severity => hits.sort_by_key(order),
        }
        if let Some(c) = query.cursor {
            hits.retain(|i| match query.sort {
                Sort::Newest => i.id < c.id,
                Sort::Oldest => i.id > c.id,
                Sort::Severity => order(i) > (c.rank.unwrap_or(0), std::cmp::Reverse(c.id)),
            });
        }
        let more = hits.len() > limit;
        hits.truncate(limit);
        let next_cursor = more
            .then(|| hits.last())
            .flatten()
            .map(|i| match query.sort {
                Sort::Severity => Cursor {
                    rank: Some(severity_rank(i.severity)),
                    id: i.id,
                },
                _ => Cursor::after(i.id),
            });
        Ok(Page {
            incidents: hits,
            next_cursor,
        })
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        Ok(self.with(|s| s.next_id.max(1)))
    }

    fn count_by_status(&self) -> Result<Vec<(Status, u64)>, StoreError> {
        Ok(self.with(|s| {
            Status::ALL
                .iter()
                .map(|st| {
                    let n = s.incidents.values().filter(|i| i.status == *st).count();
                    (*st, n as u64)
                })
                .collect()
        }))
    }

    fn changes_after(&self, after: u64, limit: usize) -> Result<Vec<TimelineEntry>, StoreError> {
        Ok(self.with(|s| {
            s.changes
                .range(after.saturating_add(1)..)
                .filter_map(|(_, k)| s.log.get(k).cloned())
                .take(limit)
                .collect()
        }))
    }

    fn last_change(&self) -> u64 {
        self.with(|s| s.last_change)
    }

    fn incident_at(&self, id: u64, seq: u64) -> Result<Option<Incident>, StoreError> {
        let mut entries = self.timeline(id)?;
        entries.retain(|e| e.seq <= seq);
        Ok(crate::incident::project::project(None, &entries).ok())
    }
}

impl Checkpoints for MemoryIncidents {
    fn save_checkpoint(&self, bytes: &[u8], coverage: &Coverage) -> Result<(), StoreError> {
        self.with(|s| {
            s.checkpoint = Some(bytes.to_vec());
            s.applied.retain(|k, v| !coverage.covers(k, v));
        });
        Ok(())
    }

    fn detection_applied(&self, id: &AppliedId) -> Result<bool, StoreError> {
        Ok(self.with(|s| s.applied.contains_key(&id.key())))
    }

    fn record_detection(&self, id: &AppliedId) -> Result<(), StoreError> {
        self.with(|s| s.applied.insert(id.key(), id.value().to_vec()));
        Ok(())
    }

    fn load_checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.with(|s| s.checkpoint.clone()))
    }
}

impl Silences for MemoryIncidents {
    fn silences(&self) -> Result<Vec<Silence>, StoreError> {
        Ok(self.with(|s| s.silences.values().cloned().collect()))
    }

    fn put_silence(&self, silence: &Silence) -> Result<(), StoreError> {
        self.with(|s| {
            s.next_silence = s.next_silence.max(silence.id + 1);
            s.silences.insert(silence.id, silence.clone());
        });
        Ok(())
    }

    fn remove_silence(&self, id: u64) -> Result<(), StoreError> {
        self.with(|s| s.silences.remove(&id));
        Ok(())
    }

    fn next_silence_id(&self) -> Result<u64, StoreError> {
        Ok(self.with(|s| s.next_silence.max(1)))
    }
}
