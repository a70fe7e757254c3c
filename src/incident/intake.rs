//! Detection intake: deduplication by key, reopening, correlation, the per-key rate limit
//! and re-alert backoff, evidence; external alerts go the same way.

use super::manager::*;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::port::Change;
use super::{EntryData, EntryKind, Incident, Status, TimelineEntry};
use crate::clock::Timestamp;
use crate::engine::Detection;

impl Manager {
    /// One timeline entry on an existing incident whose status did not change.
    pub(super) fn apply_one(&self, inc: &Incident, e: TimelineEntry) -> Result<(), IncidentError> {
        self.write(&Change {
            incident: inc.clone(),
            previous_status: Some(inc.status),
            entries: vec![e],
            detections: Vec::new(),
            index_keys: Vec::new(),
        })?;
        Ok(())
    }

    pub(super) fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Attaches a detection to the open incident of its key, reopens a recently resolved
    /// one, or creates a new incident (rate-limited per key).
    /// Returns what the detection did.
    pub(super) fn on_detection(&mut self, d: &Detection) -> Result<Outcome, IncidentError> {
        let applied_id = d.idempotency_id().map(|mut id| {
            id.applied_at = self.now;
            id
        });
        if let Some(id) = &applied_id
            && (self.coalesced.applied(id) || self.store.detection_applied(id)?)
        {
            // Replayed after a crash: its effect is already stored.
            self.telemetry.detections_replayed.inc();
            tracing::debug!(rule = %d.rule, key = %d.key, id = ?applied_id, "detection already applied; skipped");
            return Ok(Outcome::Replayed);
        }
        let now = self.now;
        let latest = match self.coalesced.incident_of_key(&d.key) {
            Some(id) => Some(id),
            None => {
                let id = self.store.latest_for_key(&d.key)?;
                if let Some(id) = id {
                    self.coalesced.note_key(&d.key, id);
                }
                id
            }
        };
        if let Some(id) = latest {
            if let Some(inc) = self.coalesced.lend(id) {
                // Joined earlier in this batch, so active: joined again without a copy.
                return self.join(inc, d, now, applied_id, Join::Same);
            }
            let inc = self.load(id)?;
            let recently_resolved = inc.status == Status::Resolved
                && inc
                    .resolved_at
                    .is_some_and(|r| now.since(r) <= self.config.reopen_window);
            if recently_resolved {
                return self.join(inc, d, now, applied_id, Join::Reopen);
            }
            if inc.status.is_active() {
                return self.join(inc, d, now, applied_id, Join::Same);
            }
        }
        // Correlation and creation read the store: what this batch gathered goes first.
        self.settle();
        if let Some((inc, reason)) = self.find_correlated(d, now)? {
            return self.join(inc, d, now, applied_id, Join::Correlated(reason));
        }
        if !self.allow_creation(&d.key, now) {
            self.telemetry.incidents_rate_limited.inc();
            if let Some(id) = &applied_id {
                self.store.record_detection(id)?;
            }
            tracing::warn!(key = %d.key, rule = %d.rule, max = self.config.rate_limit.max,
                per = ?self.config.rate_limit.per, "new incident suppressed by the per-key rate limit or re-alert backoff");
            return Ok(Outcome::RateLimited);
        }
        let id = self.allocate_id();
        let mut inc = Incident {
            service: d.service.clone(),
            host: d.host.clone(),
            labels: d.labels.clone(),
            runbook: d.runbook.clone(),
            first_event_at: d.first_ts,
            ..Incident::new(id, d.key.clone(), d.summary.clone(), d.severity, now)
        };
        inc.root_cause = Some(d.service.clone().unwrap_or_else(|| d.rule.clone()));
        inc.root_cause_reason = Some(format!(
            "earliest detection: rule {}{} (event at {})",
            d.rule,
            d.service
                .as_ref()
                .map(|s| format!(" on service {s}"))
                .unwrap_or_default(),
            d.first_ts
        ));
        // The created entry carries the incident as it starts; each later entry says what
        // changed, so the log alone rebuilds the snapshot (`incidentd store rebuild`).
        let created = self.entry(
            &mut inc.clone(),
            EntryKind::Created,
            SYSTEM_ACTOR,
            None,
            serde_json::json!({"rule": d.rule, "incident": inc}),
        );
        inc.timeline_len += 1;
        let facts = Attach::of(d, self.config.evidence_samples);
        let data = self.detection_data(inc.id, d, &facts);
        attach(&mut inc, facts, now);
        let detection = self.entry(&mut inc, EntryKind::Detection, SYSTEM_ACTOR, None, data);
        let mut entries = vec![created, detection];
        if let Some(e) = self.assign_on_call(&mut inc) {
            entries.push(e);
        }
        self.note_silences(&mut inc, &mut entries, now);
        self.write(&Change {
            incident: inc,
            previous_status: None,
            entries,
            detections: applied_id.into_iter().collect(),
            index_keys: Vec::new(),
        })?;
        self.telemetry.incidents_created.inc();
        tracing::info!(incident = id, key = %d.key, rule = %d.rule, severity = %d.severity, "incident created");
        Ok(Outcome::Created(id))
    }

    /// Attaches a detection to an incident: the one of its key (`Same`), reopening it
    /// (`Reopen`), or another key's by correlation.
    pub(super) fn join(
        &mut self,
        mut inc: Incident,
        d: &Detection,
        now: Timestamp,
        applied_id: Option<crate::detection::AppliedId>,
        how: Join,
    ) -> Result<Outcome, IncidentError> {
        let id = inc.id;
        let from = inc.status;
        let mut entries = Vec::new();
        let mut index_keys = Vec::new();
        let facts = Attach::of(d, self.config.evidence_samples);
        // Past `timeline_detections`, a detection joining its own key's incident is folded
        // (see `fold.rs`); any other detection entry comes after the fold's.
        let cap = self.config.timeline_detections;
        let folds = matches!(how, Join::Same)
            && cap > 0
            && inc.detections >= cap
            && super::fold::Fold::joins(inc.folded.as_ref(), &facts, &inc);
        if !folds {
            entries.extend(self.fold_entry(&mut inc));
        }
        // Encoded before its evidence moves into the incident (no second copy of it).
        let data = (!folds).then(|| self.detection_data(id, d, &facts));
        if folds {
            let last = super::fold::Last {
                summary: d.summary.clone(),
                count: d.count,
                event_ts: d.ts,
                labels: d.labels.clone(),
                message: d.message.clone(),
            };
            match &mut inc.folded {
                Some(fold) => fold.add(&facts, last, now),
                None => inc.folded = Some(super::fold::Fold::of(&facts, last, now)),
            }
        }
        attach(&mut inc, facts, now);
        match &how {
            Join::Reopen => {
                set_status(&mut inc, Status::Open, now);
                entries.push(self.entry(
                    &mut inc,
                    EntryKind::Reopened,
                    SYSTEM_ACTOR,
                    None,
                    serde_json::json!({"from": from, "to": Status::Open, "rule": d.rule}),
                ));
                self.telemetry.incidents_reopened.inc();
                tracing::info!(incident = id, key = %d.key, rule = %d.rule, "incident reopened by a new detection");
            }
            Join::Same => self.telemetry.incidents_deduplicated.inc(),
            Join::Correlated(reason) => {
                if !inc.correlated_keys.contains(&d.key) && inc.correlated_keys.len() < 100 {
                    inc.correlated_keys.push(d.key.clone());
                    index_keys.push(d.key.clone());
                }
                if let Some((root, why)) = self.graph.root_of(&inc.services) {
                    inc.root_cause = Some(root);
                    inc.root_cause_reason = Some(why);
                }
                let data = serde_json::json!({
                    "key": d.key,
                    "rule": d.rule,
                    "service": d.service,
                    "reason": reason,
                    "root_cause": inc.root_cause,
                    "root_cause_reason": inc.root_cause_reason,
                });
                let note = Some(format!("{} joined: {reason}", d.key));
                entries.push(self.entry(&mut inc, EntryKind::Correlated, SYSTEM_ACTOR, note, data));
                self.telemetry.incidents_correlated.inc();
                tracing::info!(incident = id, key = %d.key, rule = %d.rule, reason = %reason, "detection correlated into an incident of another key");
            }
        }
        if d.severity < inc.severity {
            let old = inc.severity;
            inc.severity = d.severity;
            entries.push(self.entry(
                &mut inc,
                EntryKind::SeverityChanged,
                SYSTEM_ACTOR,
                None,
                serde_json::json!({"from": old, "to": d.severity, "rule": d.rule}),
            ));
        }
        match data {
            Some(data) => {
                entries.push(self.entry(&mut inc, EntryKind::Detection, SYSTEM_ACTOR, None, data))
            }
            // Written once it holds as many detections as the timeline does, or is a
            // minute old (readers of the change feed see the incident move at least so often).
            None => {
                if inc
                    .folded
                    .as_ref()
                    .is_some_and(|f| f.due(inc.detections, now))
                {
                    entries.extend(self.fold_entry(&mut inc));
                }
            }
        }
        self.note_silences(&mut inc, &mut entries, now);
        let change = Change {
            incident: inc,
            previous_status: Some(from),
            entries,
            detections: applied_id.into_iter().collect(),
            index_keys,
        };
        if matches!(how, Join::Same)
            && change
                .entries
                .iter()
                .all(|e| e.kind == EntryKind::Detection)
        {
            // Only counts, evidence and detection entries: written with the batch.
            self.coalesced.add(change);
        } else if self.coalesced.is_lent(change.incident.id) {
            // Its earlier detections of this batch go with it, in one write.
            self.coalesced.add(change);
            self.settle();
        } else {
            self.settle();
            self.write(&change)?;
        }
        Ok(match how {
            Join::Reopen => Outcome::Reopened(id),
            Join::Same => Outcome::Deduplicated(id),
            Join::Correlated(_) => Outcome::Correlated(id),
        })
    }

    /// An active incident of another key this detection belongs with, and why: it shares a
    /// correlation or trace id, the same service (for a rule not yet in the incident), or
    /// services linked by `depends_on`, and
    /// had a detection within `correlation_window`. External alerts and hand-made incidents
    /// take no part. The strongest reason wins, then the newest incident.
    pub(super) fn find_correlated(
        &mut self,
        d: &Detection,
        now: Timestamp,
    ) -> Result<Option<(Incident, String)>, IncidentError> {
        let window = self.config.correlation_window;
        let ids: Vec<(&str, &String)> = [
            ("correlation id", &d.correlation_id),
            ("trace id", &d.trace_id),
        ]
        .into_iter()
        .filter_map(|(what, v)| v.as_ref().map(|v| (what, v)))
        .collect();
        if d.rule == "alert" || window.is_zero() || (ids.is_empty() && d.service.is_none()) {
            return Ok(None);
        }
        self.active.refresh(self.store.as_ref())?;
        let active = &self.active;
        // Whether incident `id` can take a detection now: it has rules (not an external
        // alert's), and a detection within the window.
        let open_to = |id: u64| {
            active
                .get(id)
                .is_some_and(|i| !i.rules.is_empty() && !i.alert && now.since(i.recent) <= window)
        };
        // The strongest reason wins; among incidents with the same reason, the newest.
        // 1. A shared correlation or trace id (the reason names the first one it shares).
        let shared = ids
            .iter()
            .filter_map(|(_, v)| active.with_id(v).find(|id| open_to(*id)))
            .max();
        if let Some(id) = shared {
            let why = ids
                .iter()
                .find(|(_, v)| {
                    active
                        .get(id)
                        .is_some_and(|i| i.correlation_ids.contains(v))
                })
                .map(|(what, v)| format!("shares {what} {v}"))
                .unwrap_or_default();
            return Ok(Some((self.load(id)?, why)));
        }
        let Some(s) = d.service.as_ref() else {
            return Ok(None);
        };
        // 2. The same service, for a rule not already in the incident: another group of a
        // rule already there stays apart, its group_by split them on purpose (one incident
        // per address, say).
        let same = active
            .service_has_other_rule(s, &d.rule)
            .then(|| {
                active.with_service(s).find(|id| {
                    open_to(*id) && active.get(*id).is_some_and(|i| !i.rules.contains(&d.rule))
                })
            })
            .flatten();
        if let Some(id) = same {
            return Ok(Some((self.load(id)?, format!("same service {s}"))));
        }
        // 3. Services linked through `depends_on`.
        if self.graph.is_empty() {
            return Ok(None);
        }
        let linked: Vec<&String> = active
            .services()
            .filter(|o| *o != s && self.graph.link(s, o).is_some())
            .collect();
        let newest = linked
            .iter()
            .filter_map(|o| active.with_service(o).find(|id| open_to(*id)))
            .max();
        let Some(id) = newest else {
            return Ok(None);
        };
        let why = active
            .get(id)
            .and_then(|i| i.services.iter().find_map(|o| self.graph.link(s, o)))
            .unwrap_or_default();
        Ok(Some((self.load(id)?, why)))
    }

    /// An external alert: a detection of the pseudo-rule `alert`, through the same dedup,
    /// reopen, severity and rate-limit path as the rules' detections.
    /// A resolved alert: resolves the active incident of its key, once; later ones find
    /// nothing to do.
    fn resolve_alert(&mut self, key: &str, actor: &str) -> Result<Outcome, IncidentError> {
        let key = format!("alert/{key}");
        let Some(id) = self.store.latest_for_key(&key)? else {
            return Ok(Outcome::NothingToResolve);
        };
        let inc = self.load(id)?;
        // Only an incident alerts made (a hand-made or rule incident could share the key).
        if !inc.status.is_active() || inc.rules.iter().any(|r| r != "alert") {
            return Ok(Outcome::NothingToResolve);
        }
        self.on_command(super::manager::Command::Transition {
            id,
            transition: super::Transition::Resolve,
            note: Some("resolved by an alert that ended".into()),
            actor: actor.to_owned(),
        })?;
        tracing::info!(key = %key, actor = %actor, incident = id, "external alert resolved its incident");
        Ok(Outcome::Resolved(id))
    }

    pub(super) fn on_alert(
        &mut self,
        a: ExternalAlert,
        actor: &str,
    ) -> Result<Outcome, IncidentError> {
        let now = self.now;
        let ended = a.status == super::manager::AlertStatus::Resolved
            || a.ends_at.is_some_and(|e| e <= now);
        if a.key.trim().is_empty() {
            return Err(IncidentError::Invalid("an alert needs a `key`".into()));
        }
        if ended {
            return self.resolve_alert(&a.key, actor);
        }
        if a.summary.trim().is_empty() {
            return Err(IncidentError::Invalid(
                "a firing alert needs a `summary`".into(),
            ));
        }
        let mut labels = a.labels;
        labels.insert("alerted_by".into(), actor.to_owned());
        let d = Detection {
            rule: "alert".into(),
            severity: a.severity,
            // Alerts have keys of their own: a responder raising one can never attach to,
            // reopen or raise the severity of a rule's or a hand-made incident.
            key: format!("alert/{}", a.key),
            summary: a.summary.clone(),
            ts: now,
            first_ts: now,
            count: 1,
            group: BTreeMap::new(),
            labels,
            service: a.service,
            host: a.host,
            correlation_id: None,
            trace_id: None,
            runbook: a.runbook,
            message: Some(a.summary),
            origin: None,
            arrived: None,
            detected: None,
            evidence: None,
            resolve_after_ms: None,
        };
        let outcome = self.on_detection(&d)?;
        tracing::info!(key = %d.key, actor = %actor, outcome = ?outcome, "external alert");
        Ok(outcome)
    }

    /// The data of the `detection` entry of incident `id`: the detection and the facts
    /// attaching it changed (`facts`, as [`Attach::of`] gave them).
    pub(super) fn detection_data(
        &self,
        id: u64,
        d: &Detection,
        facts: &Attach,
    ) -> crate::incident::EntryData {
        // Encoded once, straight from the detection: no value tree to build, encode again
        // for the store and drop (see `EntryData`).
        let data = DetectionData {
            id: d.idempotency_text(),
            summary: &d.summary,
            count: d.count,
            event_ts: d.ts,
            labels: &d.labels,
            message: d.message.as_deref(),
            facts,
        };
        EntryData::encoded(&data).unwrap_or_else(|e| {
            tracing::error!(incident = id, rule = %d.rule, error = %e, "a detection entry could not be encoded; its data is left empty");
            EntryData::default()
        })
    }

    /// The entry of the fold `inc` holds, if any: its detections, written as one.
    pub(super) fn fold_entry(&self, inc: &mut Incident) -> Option<crate::incident::TimelineEntry> {
        let fold = inc.folded.take()?;
        // As the replay of the entry sets it (its detections' own time is in `facts.at`).
        inc.updated_at = Some(self.now);
        let facts = fold.attach();
        let data = DetectionData {
            id: None,
            summary: &fold.last.summary,
            count: fold.last.count,
            event_ts: fold.last.event_ts,
            labels: &fold.last.labels,
            message: fold.last.message.as_deref(),
            facts: &facts,
        };
        let data = EntryData::encoded(&data).unwrap_or_else(|e| {
            tracing::error!(incident = inc.id, error = %e, "a folded detection entry could not be encoded; its data is left empty");
            EntryData::default()
        });
        Some(self.entry(inc, EntryKind::Detection, SYSTEM_ACTOR, None, data))
    }

    pub(super) fn allow_creation(&mut self, key: &str, now: Timestamp) -> bool {
        // Re-alert backoff: the n-th new incident of a streak waits the (n-1)-th step after
        // the previous one; a key quiet for twice the last step starts over.
        let steps = self.config.realert_backoff.clone();
        let Some(streak) = realert(&steps, self.backoff.get(key).copied(), now) else {
            return false;
        };
        if !self.within_rate_limit(key, now) {
            return false;
        }
        if let Some(last) = steps.last() {
            self.backoff.insert(key.to_owned(), (streak + 1, now));
            if self.backoff.len() > 10_000 {
                let keep = *last * 2;
                self.backoff.retain(|_, (_, at)| now.since(*at) < keep);
            }
        }
        true
    }

    pub(super) fn within_rate_limit(&mut self, key: &str, now: Timestamp) -> bool {
        let limit = self.config.rate_limit;
        self.created_per_key
            .admit(&key.to_owned(), now, limit.max as usize, limit.per)
            .is_ok()
    }
}

/// The re-alert backoff's decision for one key, given its streak so far (how many new
/// incidents, the last one when): the streak a new incident now continues, or `None` to
/// hold it back. The n-th new incident of a streak waits the (n-1)-th step after the
/// previous one (the last step repeats); a key quiet for twice the last step starts over.
pub(super) fn realert(
    steps: &[std::time::Duration],
    streak: Option<(usize, Timestamp)>,
    now: Timestamp,
) -> Option<usize> {
    match (steps.last(), streak) {
        (Some(last), Some((n, at))) if now.since(at) < *last * 2 => {
            (now.since(at) >= steps[n.saturating_sub(1).min(steps.len() - 1)]).then_some(n)
        }
        _ => Some(0),
    }
}

/// Keeps the first half of `max` evidence events and the latest ones after them.
pub(super) fn keep_evidence(
    evidence: &mut Vec<crate::event::Event>,
    ev: crate::event::Event,
    max: usize,
) {
    if max == 0 {
        return;
    }
    // The first half stays; the oldest of the latest part goes (with one slot, the first).
    let first = (max / 2).max(1).min(max);
    while evidence.len() >= max {
        if first >= max {
            return;
        }
        evidence.remove(first);
    }
    evidence.push(ev);
}

/// A detection entry's data: the detection and the facts attaching it changed.
#[derive(Serialize)]
struct DetectionData<'a> {
    id: Option<String>,
    summary: &'a str,
    count: u64,
    event_ts: Timestamp,
    labels: &'a BTreeMap<String, String>,
    message: Option<&'a str>,
    #[serde(flatten)]
    facts: &'a Attach,
}

/// What attaching a detection changes in its incident. Stored in the `detection` timeline
/// entry (with the entry's other fields), so the log replays to the snapshot.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Attach {
    pub rule: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(rename = "first_event_ts")]
    pub first_ts: Timestamp,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub trace_id: Option<String>,
    #[serde(default)]
    pub evidence: Option<crate::event::Event>,
    /// `[incidents] evidence_samples` when it was attached.
    #[serde(default)]
    pub evidence_max: usize,
    #[serde(default)]
    pub resolve_after_ms: Option<u64>,
    /// How many detections the entry stands for: more than one for a fold (`fold.rs`).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub detections: u64,
    /// A fold's evidence events, in order (after `evidence`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence_list: Vec<crate::event::Event>,
    /// A fold's: when its last detection attached (the entry's own time otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<Timestamp>,
    /// A fold's of the detections of several rules: how many each (every rule but `rule`
    /// was the incident's before the fold, so attaching them changes nothing).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_rule: BTreeMap<String, u64>,
}

fn one() -> u64 {
    1
}

fn is_one(n: &u64) -> bool {
    *n == 1
}

impl Attach {
    fn of(d: &Detection, evidence_max: usize) -> Attach {
        Attach {
            rule: d.rule.clone(),
            service: d.service.clone(),
            first_ts: d.first_ts,
            correlation_id: d.correlation_id.clone(),
            trace_id: d.trace_id.clone(),
            evidence: d.evidence.as_deref().cloned(),
            evidence_max,
            resolve_after_ms: d.resolve_after_ms,
            detections: 1,
            evidence_list: Vec::new(),
            at: None,
            by_rule: BTreeMap::new(),
        }
    }
}

pub(super) fn attach(inc: &mut Incident, d: Attach, now: Timestamp) {
    for ev in d.evidence.into_iter().chain(d.evidence_list) {
        keep_evidence(&mut inc.evidence, ev, d.evidence_max);
    }
    inc.last_detection_at = Some(d.at.unwrap_or(now));
    if let Some(ms) = d.resolve_after_ms {
        inc.resolve_after_ms = Some(inc.resolve_after_ms.map_or(ms, |m| m.max(ms)));
    }
    inc.detections += d.detections;
    inc.updated_at = Some(now);
    if !inc.rules.contains(&d.rule) {
        inc.rules.push(d.rule.clone());
    }
    if let Some(s) = &d.service
        && !inc.services.contains(s)
        && inc.services.len() < 50
    {
        inc.services.push(s.clone());
    }
    if d.first_ts < inc.first_event_at {
        inc.first_event_at = d.first_ts;
    }
    for id in [&d.correlation_id, &d.trace_id].into_iter().flatten() {
        if !inc.correlation_ids.contains(id) && inc.correlation_ids.len() < 100 {
            inc.correlation_ids.push(id.clone());
        }
    }
}

pub(super) fn set_status(inc: &mut Incident, to: Status, now: Timestamp) {
    inc.status = to;
    inc.updated_at = Some(now);
    match to {
        Status::Open => {
            inc.resolved_at = None;
            inc.closed_at = None;
        }
        // The first acknowledgement counts (time to acknowledge), not a later one.
        Status::Acknowledged => {
            inc.acknowledged_at.get_or_insert(now);
        }
        Status::Mitigated => inc.mitigated_at = Some(now),
        Status::Resolved => inc.resolved_at = Some(now),
        Status::Closed => inc.closed_at = Some(now),
        Status::Cancelled => inc.cancelled_at = Some(now),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const H: i64 = 3600 * 1000;

    #[test]
    fn the_realert_backoff_waits_longer_each_time_and_forgets_a_quiet_key() {
        let steps = [Duration::from_secs(3600), Duration::from_secs(4 * 3600)];
        assert_eq!(realert(&steps, None, Timestamp(0)), Some(0));
        // The second of a streak waits an hour after the first.
        assert_eq!(
            realert(&steps, Some((1, Timestamp(0))), Timestamp(H / 2)),
            None
        );
        assert_eq!(
            realert(&steps, Some((1, Timestamp(0))), Timestamp(H)),
            Some(1)
        );
        // The third waits four hours, and so does every later one.
        assert_eq!(
            realert(&steps, Some((2, Timestamp(0))), Timestamp(3 * H)),
            None
        );
        assert_eq!(
            realert(&steps, Some((5, Timestamp(0))), Timestamp(4 * H)),
            Some(5)
        );
        // Quiet for twice the last step: a new streak.
        assert_eq!(
            realert(&steps, Some((5, Timestamp(0))), Timestamp(8 * H)),
            Some(0)
        );
        // No steps: never held.
        assert_eq!(realert(&[], Some((9, Timestamp(0))), Timestamp(0)), Some(0));
    }

    #[test]
    fn evidence_keeps_the_first_half_and_the_latest() {
        let mut inc = Incident::new(
            1,
            "k".into(),
            "t".into(),
            crate::severity::Severity::Sev3,
            Timestamp(0),
        );
        for i in 0..10 {
            let ev = crate::event::Event::decode(
                format!(r#"{{"kind":"k","message":"m{i}","ts":{i}}}"#).as_bytes(),
                &crate::event::Defaults::at("s", "h", Timestamp(0), Duration::MAX),
            )
            .unwrap();
            keep_evidence(&mut inc.evidence, ev, 4);
        }
        let kept: Vec<_> = inc
            .evidence
            .iter()
            .filter_map(|e| e.message.clone())
            .collect();
        assert_eq!(kept, ["m0", "m1", "m8", "m9"]);
    }
}
