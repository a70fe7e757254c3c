//! Commands from people and programs (transitions, notes, tags, assignment, severity,
//! hand-made incidents, recorded steps), decided and applied by the manager.

use super::intake::*;
use super::manager::*;

use super::port::Change;
use super::stage::decide_move;
use super::{EntryKind, Incident, Stage, Transition};

impl Manager {
    pub(super) fn on_command(&mut self, cmd: Command) -> Result<Incident, IncidentError> {
        match cmd {
            Command::Transition {
                id,
                transition,
                note,
                actor,
            } => {
                let now = self.now;
                let Decided {
                    incident: mut inc,
                    from,
                    to,
                    kind,
                    data,
                } = decide_transition(&self.load(id)?, transition, now)?;
                let e = self.entry(&mut inc, kind, &actor, note, data);
                let mut entries = vec![e];
                // Resolved: the response is in recovery, certainly.
                if to == super::Status::Resolved {
                    self.stage_at_least(&mut inc, &mut entries, Stage::Recover, "resolved");
                    if let Some(e) = self.postmortem_draft(&mut inc, &entries)? {
                        entries.push(e);
                    }
                }
                self.note_silences(&mut inc, &mut entries, now);
                self.write(&Change {
                    incident: inc.clone(),
                    previous_status: Some(from),
                    entries,
                    detections: Vec::new(),
                    index_keys: Vec::new(),
                })?;
                tracing::info!(incident = id, from = %from, to = %to, actor = %actor, "incident status changed");
                Ok(inc)
            }
            Command::Record {
                id,
                kind,
                actor,
                note,
                data,
            } => {
                let mut inc = self.load(id)?;
                // A remediation run that succeeded: the response is remediating, certainly.
                let remedied = (kind == EntryKind::ActionExecuted
                    && data["result"]["ok"] == true
                    && data["dry_run"] != true)
                    .then(|| {
                        format!(
                            "action {} succeeded (run {})",
                            data["action"].as_str().unwrap_or("?"),
                            data["run"]
                        )
                    });
                let e = self.entry(&mut inc, kind, &actor, note, data);
                let mut entries = vec![e];
                if let Some(reason) = remedied
                    && inc.status.is_active()
                {
                    self.stage_at_least(&mut inc, &mut entries, Stage::Remediate, &reason);
                }
                self.write(&Change::entries_of(inc.clone(), entries))?;
                Ok(inc)
            }
            cmd @ (Command::Retitle { .. } | Command::Merge { .. } | Command::Split { .. }) => {
                self.on_edit(cmd)
            }
            Command::Postmortem { id, text, actor } => {
                if text.trim().is_empty() {
                    return Err(IncidentError::Invalid(
                        "a post-mortem needs some text".into(),
                    ));
                }
                let mut inc = self.load(id)?;
                inc.updated_at = Some(self.now);
                let e = self.entry(
                    &mut inc,
                    EntryKind::Postmortem,
                    &actor,
                    Some(format!("post-mortem replaced ({} bytes)", text.len())),
                    serde_json::json!({ "text": text }),
                );
                self.apply_one(&inc, e)?;
                tracing::info!(incident = id, actor = %actor, "post-mortem replaced");
                Ok(inc)
            }
            Command::Stage {
                id,
                stage,
                note,
                actor,
            } => {
                let mut inc = self.load(id)?;
                if matches!(inc.status, super::Status::Closed | super::Status::Cancelled) {
                    return Err(IncidentError::Invalid(format!(
                        "incident {id} is {}: its stage no longer moves",
                        inc.status
                    )));
                }
                let from = inc.stage.stage;
                decide_move(from, stage, note.as_deref()).map_err(IncidentError::Invalid)?;
                let reason = note.clone().unwrap_or_default();
                let e = self.stage_entry(&mut inc, stage, &actor, note, &reason);
                self.apply_one(&inc, e)?;
                tracing::info!(incident = id, from = %from, to = %stage, actor = %actor, "stage changed");
                Ok(inc)
            }
            Command::LinkTicket {
                id,
                key,
                value,
                url,
            } => {
                let mut inc = self.load(id)?;
                inc.external_refs.insert(key.clone(), value.clone());
                let note = Some(match &url {
                    Some(u) => format!("ticket {value} opened through {key}: {u}"),
                    None => format!("ticket {value} opened through {key}"),
                });
                let data = serde_json::json!({"key": key, "ref": value, "url": url});
                let e = self.entry(&mut inc, EntryKind::TicketLinked, SYSTEM_ACTOR, note, data);
                self.apply_one(&inc, e)?;
                Ok(inc)
            }
            Command::Note { id, note, actor } => {
                if note.trim().is_empty() {
                    return Err(IncidentError::Invalid("a note needs some text".into()));
                }
                let mut inc = self.load(id)?;
                inc.updated_at = Some(self.now);
                let e = self.entry(
                    &mut inc,
                    EntryKind::Note,
                    &actor,
                    Some(note),
                    serde_json::Value::Null,
                );
                self.write(&Change {
                    incident: inc.clone(),
                    previous_status: Some(inc.status),
                    entries: vec![e],
                    detections: Vec::new(),
                    index_keys: Vec::new(),
                })?;
                Ok(inc)
            }
            Command::Severity {
                id,
                severity,
                note,
                actor,
            } => {
                let mut inc = self.load(id)?;
                if inc.severity == severity {
                    return Err(IncidentError::Invalid(format!(
                        "incident {id} is already {severity}"
                    )));
                }
                let from = inc.severity;
                inc.severity = severity;
                inc.updated_at = Some(self.now);
                let e = self.entry(
                    &mut inc,
                    EntryKind::SeverityChanged,
                    &actor,
                    note,
                    serde_json::json!({"from": from, "to": severity}),
                );
                let mut entries = vec![e];
                self.note_silences(&mut inc, &mut entries, self.now);
                self.write(&Change {
                    incident: inc.clone(),
                    previous_status: Some(inc.status),
                    entries,
                    detections: Vec::new(),
                    index_keys: Vec::new(),
                })?;
                tracing::info!(incident = id, from = %from, to = %severity, actor = %actor, "severity changed by hand");
                Ok(inc)
            }
            Command::Tags {
                id,
                add,
                remove,
                actor,
            } => {
                let clean = |v: Vec<String>| -> Result<Vec<String>, IncidentError> {
                    v.into_iter()
                        .map(|t| t.trim().to_owned())
                        .map(|t| {
                            if t.is_empty() || t.len() > 64 || t.chars().any(char::is_whitespace) {
                                Err(IncidentError::Invalid(format!(
                                    "tag `{t}`: tags are 1 to 64 characters without spaces"
                                )))
                            } else {
                                Ok(t)
                            }
                        })
                        .collect()
                };
                let (add, remove) = (clean(add)?, clean(remove)?);
                if add.is_empty() && remove.is_empty() {
                    return Err(IncidentError::Invalid("name a tag to add or remove".into()));
                }
                let mut inc = self.load(id)?;
                let before = inc.tags.clone();
                inc.tags.retain(|t| !remove.contains(t));
                for t in &add {
                    if !inc.tags.contains(t) {
                        if inc.tags.len() >= 50 {
                            return Err(IncidentError::Invalid(
                                "an incident keeps at most 50 tags".into(),
                            ));
                        }
                        inc.tags.push(t.clone());
                    }
                }
                if inc.tags == before {
                    return Ok(inc);
                }
                inc.updated_at = Some(self.now);
                let data = serde_json::json!({"added": add, "removed": remove, "tags": inc.tags});
                let e = self.entry(&mut inc, EntryKind::Tag, &actor, None, data);
                self.apply_one(&inc, e)?;
                Ok(inc)
            }
            Command::Assign {
                id,
                assignee,
                actor,
            } => {
                let assignee = assignee
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty());
                let mut inc = self.load(id)?;
                if inc.assignee == assignee {
                    return Ok(inc);
                }
                let from = inc.assignee.take();
                inc.assignee = assignee.clone();
                inc.updated_at = Some(self.now);
                let e = self.entry(
                    &mut inc,
                    EntryKind::Assigned,
                    &actor,
                    None,
                    serde_json::json!({"from": from, "to": assignee}),
                );
                self.apply_one(&inc, e)?;
                Ok(inc)
            }
            Command::Create { incident, actor } => {
                if incident.title.trim().is_empty() {
                    return Err(IncidentError::Invalid("an incident needs a title".into()));
                }
                let now = self.now;
                let id = self.allocate_id();
                let mut inc = Incident {
                    service: incident.service,
                    host: incident.host,
                    labels: incident.labels,
                    runbook: incident.runbook,
                    ..Incident::new(
                        id,
                        incident
                            .key
                            .clone()
                            .unwrap_or_else(|| format!("manual/{id}")),
                        incident.title,
                        incident.severity,
                        now,
                    )
                };
                let e = self.entry(
                    &mut inc.clone(),
                    EntryKind::Created,
                    &actor,
                    incident.note,
                    serde_json::json!({"by": "hand", "incident": inc}),
                );
                inc.timeline_len += 1;
                let mut entries = vec![e];
                self.note_silences(&mut inc, &mut entries, now);
                self.write(&Change {
                    incident: inc.clone(),
                    previous_status: None,
                    entries,
                    detections: Vec::new(),
                    index_keys: Vec::new(),
                })?;
                self.telemetry.incidents_created.inc();
                tracing::info!(incident = id, key = %inc.key, severity = %inc.severity, actor = %actor, "incident created by hand");
                Ok(inc)
            }
        }
    }
}

/// A transition decided: the incident after it and what its timeline entry records.
pub(super) struct Decided {
    pub incident: Incident,
    pub from: super::Status,
    pub to: super::Status,
    pub kind: EntryKind,
    pub data: serde_json::Value,
}

/// Decides `transition` on `inc` at `now`, touching nothing: the status it leads to with the
/// times it sets, or why it is refused.
pub(super) fn decide_transition(
    inc: &Incident,
    transition: Transition,
    now: crate::clock::Timestamp,
) -> Result<Decided, IncidentError> {
    let from = inc.status;
    let to = transition
        .check(from)
        .map_err(|message| IncidentError::InvalidTransition {
            id: inc.id,
            from,
            transition,
            message,
        })?;
    let mut incident = inc.clone();
    set_status(&mut incident, to, now);
    let kind = if transition == Transition::Reopen {
        EntryKind::Reopened
    } else {
        EntryKind::StatusChanged
    };
    Ok(Decided {
        incident,
        from,
        to,
        kind,
        data: serde_json::json!({"from": from, "to": to}),
    })
}

impl Manager {
    /// A `stage_changed` entry moving `inc` to `to` (and the stage itself).
    pub(super) fn stage_entry(
        &self,
        inc: &mut Incident,
        to: Stage,
        actor: &str,
        note: Option<String>,
        reason: &str,
    ) -> super::TimelineEntry {
        let from = inc.stage.stage;
        let created = inc.created_at;
        inc.stage.enter(to, self.now, created);
        inc.updated_at = Some(self.now);
        let note = note.or_else(|| Some(format!("stage {from} → {to}: {reason}")));
        self.entry(
            inc,
            EntryKind::StageChanged,
            actor,
            note,
            serde_json::json!({"from": from, "to": to, "reason": reason}),
        )
    }

    /// The post-mortem draft written when `inc` is resolved (with `pending`, the entries of
    /// this change): none when a person has written one (theirs is kept).
    pub(super) fn postmortem_draft(
        &self,
        inc: &mut Incident,
        pending: &[super::TimelineEntry],
    ) -> Result<Option<super::TimelineEntry>, IncidentError> {
        // Best effort: a timeline that cannot be read costs the draft, not the resolve.
        let mut timeline = match self.store.timeline(inc.id) {
            Ok(t) => t,
            Err(e) => {
                self.telemetry
                    .store_error("could not read the timeline for the post-mortem draft", &e);
                return Ok(None);
            }
        };
        let written_by_person = timeline
            .iter()
            .rev()
            .find(|e| e.kind == EntryKind::Postmortem)
            .is_some_and(|e| e.actor != SYSTEM_ACTOR);
        if written_by_person {
            return Ok(None);
        }
        timeline.extend(pending.iter().cloned());
        let text = super::postmortem::render(inc, &timeline, self.now);
        Ok(Some(self.entry(
            inc,
            EntryKind::Postmortem,
            SYSTEM_ACTOR,
            Some("post-mortem draft written".into()),
            serde_json::json!({ "text": text }),
        )))
    }

    /// A new incident on a service a `[[team]]` owns goes to the team's primary on call: an
    /// `assigned` entry saying why.
    pub(super) fn assign_on_call(&self, inc: &mut Incident) -> Option<super::TimelineEntry> {
        let service = inc.service.as_deref()?;
        let owner = self
            .config
            .services
            .iter()
            .find(|s| s.name == service)?
            .owner
            .as_deref()?;
        let team = self.config.teams.iter().find(|t| t.name == owner)?;
        let on = team.at(self.now)?;
        inc.assignee = Some(on.primary.clone());
        Some(self.entry(
            inc,
            EntryKind::Assigned,
            SYSTEM_ACTOR,
            Some(format!(
                "assigned to {}: on call for team {owner}, which owns {service}",
                on.primary
            )),
            serde_json::json!({"from": null, "to": on.primary, "team": owner,
                "reason": "on call"}),
        ))
    }

    /// Moves `inc` forward to `to` by itself (actor `system`) when it is behind it.
    pub(super) fn stage_at_least(
        &self,
        inc: &mut Incident,
        entries: &mut Vec<super::TimelineEntry>,
        to: Stage,
        reason: &str,
    ) {
        if inc.stage.stage < to {
            let e = self.stage_entry(inc, to, SYSTEM_ACTOR, None, reason);
            entries.push(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::incident::{Severity, Status};

    #[test]
    fn transitions_set_their_times_and_refuse_what_the_lifecycle_forbids() {
        let open = Incident::new(1, "k".into(), "t".into(), Severity::Sev3, Timestamp(0));
        let ack = decide_transition(&open, Transition::Ack, Timestamp(5)).unwrap();
        assert_eq!((ack.from, ack.to), (Status::Open, Status::Acknowledged));
        assert_eq!(ack.incident.acknowledged_at, Some(Timestamp(5)));
        assert_eq!(ack.data["to"], "acknowledged");
        let resolved = decide_transition(&ack.incident, Transition::Resolve, Timestamp(9)).unwrap();
        assert_eq!(resolved.incident.resolved_at, Some(Timestamp(9)));
        // Reopening clears the end and is its own entry; the first acknowledgement stays.
        let re = decide_transition(&resolved.incident, Transition::Reopen, Timestamp(12)).unwrap();
        assert_eq!(re.kind, EntryKind::Reopened);
        assert_eq!(re.incident.resolved_at, None);
        let again = decide_transition(&re.incident, Transition::Ack, Timestamp(20)).unwrap();
        assert_eq!(again.incident.acknowledged_at, Some(Timestamp(5)));
        // Open cannot be reopened; the refusal names the incident, the status and why.
        let Err(IncidentError::InvalidTransition { id, from, .. }) =
            decide_transition(&open, Transition::Reopen, Timestamp(1))
        else {
            panic!("reopened an open incident")
        };
        assert_eq!((id, from), (1, Status::Open));
        // Nothing was changed in the incident the decision read.
        assert_eq!(open.status, Status::Open);
    }
}
