//! Replaying an incident's timeline into its snapshot: what `incidentd store verify` checks
//! the stored snapshots against, and what `incidentd store rebuild` writes.
//!
//! The `created` entry carries the incident as it started; every later entry says what
//! changed, with the time the manager used for the change, so the replay is exact. Incidents
//! older than schema 2 start from a baseline: their snapshot as it was at the migration.

use serde_json::Value;

use super::intake::{Attach, attach, set_status};
use super::{EntryKind, Incident, Severity, Status, TimelineEntry};

/// A snapshot taken at the schema 2 migration, standing for the entries before `covers`.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Baseline {
    pub incident: Incident,
    /// Entries with a smaller sequence number are already in `incident`.
    pub covers: u64,
}

/// The snapshot `entries` (one incident's, in order) lead to, from `baseline` if given.
pub fn project(baseline: Option<&Baseline>, entries: &[TimelineEntry]) -> Result<Incident, String> {
    let mut inc = baseline.map(|b| b.incident.clone());
    let from = baseline.map_or(0, |b| b.covers);
    for e in entries.iter().filter(|e| e.seq >= from) {
        let field = |name: &str| -> Result<&Value, String> {
            e.data.get(name).ok_or_else(|| {
                format!(
                    "incident {}: {:?} entry {} lacks `{name}`",
                    e.incident_id, e.kind, e.seq
                )
            })
        };
        if e.kind == EntryKind::Created {
            let start: Incident = parse(e, field("incident")?, "incident")?;
            inc = Some(start);
        }
        let Some(i) = inc.as_mut() else {
            return Err(format!(
                "incident {}: entry {} comes before its `created` entry (or the created entry predates schema 2 and there is no baseline)",
                e.incident_id, e.seq
            ));
        };
        match e.kind {
            EntryKind::Created => {}
            EntryKind::Detection => {
                let facts: Attach = parse(e, &e.data, "detection")?;
                attach(i, facts, e.ts);
            }
            EntryKind::StatusChanged | EntryKind::Reopened => {
                let to: Status = parse(e, field("to")?, "to")?;
                set_status(i, to, e.ts);
            }
            EntryKind::SeverityChanged => {
                let to: Severity = parse(e, field("to")?, "to")?;
                i.severity = to;
                i.updated_at = Some(e.ts);
            }
            EntryKind::Note => i.updated_at = Some(e.ts),
            EntryKind::Tag => {
                i.tags = parse(e, field("tags")?, "tags")?;
                i.updated_at = Some(e.ts);
            }
            EntryKind::Assigned => {
                i.assignee = parse(e, field("to")?, "to")?;
                i.updated_at = Some(e.ts);
            }
            EntryKind::Correlated => {
                let key: String = parse(e, field("key")?, "key")?;
                if !i.correlated_keys.contains(&key) && i.correlated_keys.len() < 100 {
                    i.correlated_keys.push(key);
                }
                i.root_cause = parse(e, field("root_cause")?, "root_cause")?;
                i.root_cause_reason = parse(e, field("root_cause_reason")?, "root_cause_reason")?;
            }
            EntryKind::Updated => {
                if let Some(t) = e.data.get("title").and_then(|t| t.get("to")) {
                    i.title = parse(e, t, "title.to")?;
                }
                i.updated_at = Some(e.ts);
            }
            EntryKind::Merged => {
                if let Some(into) = e.data.get("into") {
                    i.merged_into = Some(parse(e, into, "into")?);
                } else {
                    let keys: Vec<String> = parse(e, field("keys")?, "keys")?;
                    let n: u64 = parse(e, field("detections")?, "detections")?;
                    let rules: Vec<String> = parse(e, field("rules")?, "rules")?;
                    let services: Vec<String> = parse(e, field("services")?, "services")?;
                    super::editing::absorb(i, keys, n, rules, services);
                    if let Some(sev) = e.data.get("severity") {
                        i.severity = parse(e, sev, "severity")?;
                    }
                }
                i.updated_at = Some(e.ts);
            }
            EntryKind::SlaBreached => {
                let kind: String = parse(e, field("kind")?, "kind")?;
                if !i.sla_breached.contains(&kind) {
                    i.sla_breached.push(kind);
                }
            }
            EntryKind::Split => {
                let key: String = parse(e, field("key")?, "key")?;
                i.correlated_keys.retain(|k| *k != key);
                i.updated_at = Some(e.ts);
            }
            EntryKind::StageChanged => {
                let to: super::Stage = parse(e, field("to")?, "to")?;
                let created = i.created_at;
                i.stage.enter(to, e.ts, created);
                i.updated_at = Some(e.ts);
            }
            EntryKind::Silenced => {
                let id: u64 = parse(e, field("silence")?, "silence")?;
                if !i.silenced_by.contains(&id) {
                    i.silenced_by.push(id);
                }
            }
            EntryKind::ActionProposed
            | EntryKind::ActionApproved
            | EntryKind::ActionDenied
            | EntryKind::ActionExecuted
            | EntryKind::ActionHeld
            | EntryKind::ActionVerified
            | EntryKind::Notification
            | EntryKind::Inhibited
            | EntryKind::Released => {}
            EntryKind::Postmortem => i.updated_at = Some(e.ts),
            EntryKind::TicketLinked => {
                let key: String = parse(e, field("key")?, "key")?;
                let value: String = parse(e, field("ref")?, "ref")?;
                i.external_refs.insert(key, value);
            }
        }
        i.timeline_len = e.seq + 1;
    }
    inc.ok_or_else(|| "no `created` entry and no baseline".to_owned())
}

fn parse<T: serde::de::DeserializeOwned>(
    e: &TimelineEntry,
    v: &Value,
    what: &str,
) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|err| {
        format!(
            "incident {}: entry {}: bad `{what}`: {err}",
            e.incident_id, e.seq
        )
    })
}

/// The top-level fields where two snapshots differ.
pub fn differences(a: &Incident, b: &Incident) -> Vec<String> {
    let (Ok(Value::Object(a)), Ok(Value::Object(b))) =
        (serde_json::to_value(a), serde_json::to_value(b))
    else {
        return vec!["(cannot compare)".into()];
    };
    let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}
