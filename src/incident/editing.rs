//! Editing incidents by hand: a new title (`updated`), merging a wrongly split incident into
//! another (`merged` on both: its detections, rules and keys follow, and it is closed with a
//! pointer), and splitting a wrongly correlated key out into a new incident (`split`).
//!
//! A merge writes two changes, the incident merged into first and then the merged one, in
//! one batch of the manager (one flush): the store keeps a prefix of its writes, so a crash
//! can leave the first without the second (the keys already lead to the incident merged
//! into), never the second without the first.

use super::manager::*;

use super::intake::set_status;
use super::port::Change;
use super::{EntryKind, Incident, Status};

/// Most keys an incident keeps among its correlated ones.
const MAX_KEYS: usize = 100;

/// What the incident merged into takes from the merged one (also replayed from `merged`).
pub(super) fn absorb(
    i: &mut Incident,
    keys: Vec<String>,
    detections: u64,
    rules: Vec<String>,
    services: Vec<String>,
) {
    for k in keys {
        if k != i.key && !i.correlated_keys.contains(&k) && i.correlated_keys.len() < MAX_KEYS {
            i.correlated_keys.push(k);
        }
    }
    i.detections += detections;
    for r in rules {
        if !i.rules.contains(&r) {
            i.rules.push(r);
        }
    }
    for s in services {
        if !i.services.contains(&s) {
            i.services.push(s);
        }
    }
}

impl Manager {
    pub(super) fn on_edit(&mut self, cmd: Command) -> Result<Incident, IncidentError> {
        match cmd {
            Command::Retitle { id, title, actor } => {
                let title = title.trim().to_owned();
                if title.is_empty() || title.chars().count() > 500 {
                    return Err(IncidentError::Invalid(
                        "a title is 1 to 500 characters".into(),
                    ));
                }
                let mut inc = self.load(id)?;
                if inc.title == title {
                    return Err(IncidentError::Invalid(format!(
                        "incident {id} already has that title"
                    )));
                }
                let from = std::mem::replace(&mut inc.title, title.clone());
                inc.updated_at = Some(self.now);
                let e = self.entry(
                    &mut inc,
                    EntryKind::Updated,
                    &actor,
                    Some(format!("title changed from \"{from}\"")),
                    serde_json::json!({"title": {"from": from, "to": title}}),
                );
                self.apply_one(&inc, e)?;
                tracing::info!(incident = id, actor = %actor, "title changed");
                Ok(inc)
            }
            Command::Merge { id, into, actor } => self.merge(id, into, &actor),
            Command::Split { id, key, actor } => self.split(id, &key, &actor),
            _ => Err(IncidentError::Invalid("not an edit".into())),
        }
    }

    fn merge(&mut self, id: u64, into: u64, actor: &str) -> Result<Incident, IncidentError> {
        if id == into {
            return Err(IncidentError::Invalid(
                "an incident cannot be merged into itself".into(),
            ));
        }
        let mut from = self.load(id)?;
        let mut to = self.load(into)?;
        if let Some(t) = from.merged_into {
            return Err(IncidentError::Invalid(format!(
                "incident {id} was already merged into incident {t}"
            )));
        }
        if matches!(from.status, Status::Closed | Status::Cancelled) {
            return Err(IncidentError::Invalid(format!(
                "incident {id} is {}: only an incident not yet closed can be merged",
                from.status
            )));
        }
        if !to.status.is_active() {
            return Err(IncidentError::Invalid(format!(
                "incident {into} is {}: merge into an open, acknowledged or mitigated incident",
                to.status
            )));
        }
        let now = self.now;
        // The keys that lead to the merged incident now (not those a newer incident took
        // since), as many as the incident merged into has room for: exactly these move.
        let room = MAX_KEYS.saturating_sub(to.correlated_keys.len());
        let mut keys: Vec<String> = Vec::new();
        for k in std::iter::once(&from.key).chain(from.correlated_keys.iter()) {
            if keys.len() >= room {
                break;
            }
            if *k != to.key
                && !to.correlated_keys.contains(k)
                && !keys.contains(k)
                && self.store.latest_for_key(k)? == Some(id)
            {
                keys.push(k.clone());
            }
        }
        let services: Vec<String> = if from.services.is_empty() {
            from.service.iter().cloned().collect()
        } else {
            from.services.clone()
        };
        // Its folded detections come before what the merge adds (see `fold.rs`).
        let mut entries: Vec<_> = self.fold_entry(&mut to).into_iter().collect();
        absorb(
            &mut to,
            keys.clone(),
            from.detections,
            from.rules.clone(),
            services.clone(),
        );
        to.updated_at = Some(now);
        if from.severity < to.severity {
            // The worse severity wins, as when a detection attaches (and is news).
            let was = std::mem::replace(&mut to.severity, from.severity);
            let e = self.entry(
                &mut to,
                EntryKind::SeverityChanged,
                actor,
                Some(format!("raised by the merge of incident {id}")),
                serde_json::json!({"from": was, "to": from.severity}),
            );
            entries.push(e);
        }
        let severity = to.severity;
        let e = self.entry(
            &mut to,
            EntryKind::Merged,
            actor,
            Some(format!(
                "incident {id} ({}) merged into this one",
                from.title
            )),
            serde_json::json!({"from": id, "keys": keys, "detections": from.detections,
                "rules": from.rules, "services": services, "severity": severity}),
        );
        entries.push(e);
        self.write(&Change {
            incident: to.clone(),
            previous_status: Some(to.status),
            entries,
            detections: Vec::new(),
            // Its keys now lead here: later detections of them attach to this incident.
            index_keys: keys,
        })?;
        let previous = from.status;
        let moved = self.entry(
            &mut from,
            EntryKind::Merged,
            actor,
            Some(format!("merged into incident {into} ({})", to.title)),
            serde_json::json!({ "into": into }),
        );
        from.merged_into = Some(into);
        set_status(&mut from, Status::Closed, now);
        let closed = self.entry(
            &mut from,
            EntryKind::StatusChanged,
            actor,
            Some(format!("closed: merged into incident {into}")),
            serde_json::json!({"from": previous, "to": Status::Closed, "merged_into": into}),
        );
        self.write(&Change {
            incident: from,
            previous_status: Some(previous),
            entries: vec![moved, closed],
            detections: Vec::new(),
            index_keys: Vec::new(),
        })?;
        tracing::info!(incident = id, into, actor = %actor, "incident merged");
        Ok(to)
    }

    fn split(&mut self, id: u64, key: &str, actor: &str) -> Result<Incident, IncidentError> {
        let mut from = self.load(id)?;
        if !from.status.is_active() {
            return Err(IncidentError::Invalid(format!(
                "incident {id} is {}: split keys out of an open, acknowledged or mitigated incident",
                from.status
            )));
        }
        if key == from.key {
            return Err(IncidentError::Invalid(format!(
                "`{key}` is incident {id}'s own key; split takes out a key that joined it by correlation"
            )));
        }
        if !from.correlated_keys.iter().any(|k| k == key) {
            let known = if from.correlated_keys.is_empty() {
                "none".to_owned()
            } else {
                from.correlated_keys.join(", ")
            };
            return Err(IncidentError::Invalid(format!(
                "`{key}` did not join incident {id} (its correlated keys: {known})"
            )));
        }
        let now = self.now;
        let new_id = self.allocate_id();
        let mut inc = Incident {
            service: from.service.clone(),
            host: from.host.clone(),
            labels: from.labels.clone(),
            runbook: from.runbook.clone(),
            rules: from.rules.clone(),
            ..Incident::new(
                new_id,
                key.to_owned(),
                format!("{key} (split from incident {id})"),
                from.severity,
                now,
            )
        };
        let created = self.entry(
            &mut inc.clone(),
            EntryKind::Created,
            actor,
            Some(format!("split from incident {id}")),
            serde_json::json!({"by": "split", "from": id, "incident": inc}),
        );
        inc.timeline_len += 1;
        self.write(&Change {
            incident: inc.clone(),
            previous_status: None,
            entries: vec![created],
            detections: Vec::new(),
            index_keys: Vec::new(),
        })?;
        from.correlated_keys.retain(|k| k != key);
        from.updated_at = Some(now);
        let e = self.entry(
            &mut from,
            EntryKind::Split,
            actor,
            Some(format!("`{key}` taken out into incident {new_id}")),
            serde_json::json!({"key": key, "into": new_id}),
        );
        self.apply_one(&from, e)?;
        self.telemetry.incidents_created.inc();
        tracing::info!(incident = id, key, into = new_id, actor = %actor, "key split out");
        Ok(inc)
    }
}
