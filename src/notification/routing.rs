//! Routing: which changes are news, which routes and channels they take, and the jobs
//! (with escalation steps and repeats) that go into the outbox.

use super::*;

fn matches_route(r: &RouteConfig, inc: &Incident) -> bool {
    r.matchers.matches(inc)
}

impl Shared {
    /// The kinds of entries that can tell something ([`Shared::event_of`]): the change feed
    /// passes over the rest (detections, most of a dense log's changes) unread.
    fn may_tell(kind: EntryKind) -> bool {
        matches!(
            kind,
            EntryKind::Created
                | EntryKind::SlaBreached
                | EntryKind::Reopened
                | EntryKind::StatusChanged
                | EntryKind::SeverityChanged
        )
    }

    /// What a timeline entry tells, if anything.
    fn event_of(e: &crate::incident::TimelineEntry) -> Option<NotifyEvent> {
        let to = || e.data.get("to").and_then(|v| v.as_str());
        match e.kind {
            EntryKind::Created => Some(NotifyEvent::Opened),
            EntryKind::SlaBreached => Some(NotifyEvent::SlaBreached),
            EntryKind::Reopened => Some(NotifyEvent::Reopened),
            EntryKind::StatusChanged => match to()? {
                "acknowledged" => Some(NotifyEvent::Acknowledged),
                "mitigated" => Some(NotifyEvent::Mitigated),
                "resolved" => Some(NotifyEvent::Resolved),
                "closed" => Some(NotifyEvent::Closed),
                "cancelled" => Some(NotifyEvent::Cancelled),
                _ => None,
            },
            EntryKind::SeverityChanged => {
                let from: crate::incident::Severity =
                    serde_json::from_value(e.data.get("from")?.clone()).ok()?;
                let to: crate::incident::Severity =
                    serde_json::from_value(e.data.get("to")?.clone()).ok()?;
                (to < from).then_some(NotifyEvent::Escalated)
            }
            _ => None,
        }
    }

    /// Routes the durable changes after `cursor` (read through the change feed); returns the
    /// new position.
    pub(super) async fn route_changes(
        self: &Arc<Self>,
        config: &NotifyConfig,
        mut cursor: u64,
    ) -> u64 {
        loop {
            let batch = match self.feed.read_of(cursor, 256, Self::may_tell).await {
                Ok(b) => b,
                Err(e) => {
                    self.telemetry
                        .warn_remediation(&format!("notifier cannot read changes: {e}"));
                    return cursor;
                }
            };
            if batch.upto <= cursor {
                return cursor;
            }
            let queued = self.queue.all();
            let (entries, last) = (batch.entries, batch.upto);
            if entries.is_empty() {
                // Numbers without entries (compacted): nothing to tell. The position need
                // not be durable now: routing nothing again after a crash makes nothing.
                if let Err(e) = self.queue.enqueue(self.store.as_ref(), &[], &[], last) {
                    self.telemetry
                        .store_error("saving the notifier's place failed", &e);
                    return cursor;
                }
                cursor = last;
                continue;
            }
            // Planning reads the store (timelines replayed): off the async threads.
            let (me, cfg) = (self.clone(), config.clone());
            let planned =
                tokio::task::spawn_blocking(move || me.plan_batch(&cfg, &entries, queued)).await;
            let mut plan = match planned {
                Ok(Ok(p)) => p,
                // Try the whole batch again later rather than skip it.
                Ok(Err(err)) => {
                    self.telemetry
                        .warn_remediation(&format!("notifier cannot read an incident: {err}"));
                    return cursor;
                }
                Err(_) => return cursor,
            };
            let me = self.clone();
            let (jobs, remove) = (
                std::mem::take(&mut plan.jobs),
                std::mem::take(&mut plan.remove),
            );
            let saved = tokio::task::spawn_blocking(move || {
                let removed = me.queue.enqueue(me.store.as_ref(), &jobs, &remove, last)?;
                // Without jobs the position need not be durable now: routing those changes
                // again after a crash makes nothing.
                if !jobs.is_empty() || !remove.is_empty() {
                    me.store.flush()?;
                }
                Ok::<_, StoreError>(removed)
            })
            .await;
            let removed = match saved {
                Ok(Ok(removed)) => removed,
                // Not durable: these changes are routed again on the next round (once the
                // store has healed, it no longer holds what this write applied). Telling twice
                // is allowed (at least once, with idempotency keys); never telling is not.
                Ok(Err(err)) => {
                    self.telemetry
                        .store_error("notification outbox write failed", &err);
                    return cursor;
                }
                Err(_) => return cursor,
            };
            cursor = last;
            for (incident, note, data) in self.unsent(config, &plan, &removed) {
                self.record(incident, note, data).await;
            }
            for (incident, note, data) in plan.notes {
                self.record(incident, note, data).await;
            }
        }
    }

    /// The jobs being sent now.
    fn sending(&self) -> HashSet<u64> {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// The plan of a batch of changes: each telling one routed on the incident as it was at
    /// that change (a later downgrade must not hide an earlier reopening), else as it is now.
    fn plan_batch(
        &self,
        config: &NotifyConfig,
        entries: &[crate::incident::TimelineEntry],
        queued: Vec<Job>,
    ) -> Result<Plan, StoreError> {
        let mut plan = Plan {
            queued,
            ..Plan::default()
        };
        for e in entries {
            let Some(event) = Self::event_of(e) else {
                continue;
            };
            // Without routes only channels already told hear more, and only reminders
            // already queued can become moot: an incident with neither needs no planning
            // (which replays its timeline).
            if config.routes.is_empty()
                && !plan
                    .queued
                    .iter()
                    .chain(plan.jobs.iter())
                    .any(|j| j.incident_id == e.incident_id)
                && self
                    .store
                    .notified_channels(e.incident_id)
                    .unwrap_or_default()
                    .is_empty()
            {
                continue;
            }
            let inc = match self.store.incident_at(e.incident_id, e.seq)? {
                Some(i) => i,
                // Compacted since (or not replayable): as it is now, if still there.
                None => match self.store.incident(e.incident_id)? {
                    Some(i) => i,
                    None => continue,
                },
            };
            let mut told = self.store.notified_channels(inc.id).unwrap_or_default();
            // A channel with the incident's opening still queued (or planned in this batch)
            // will have been told by the time what follows reaches it, since one incident's
            // jobs for a channel go out in order: it hears what follows too, even if the
            // incident leaves its route first (downgraded and resolved before the opening
            // was delivered). Reminders and escalation steps not yet due tell nobody yet.
            for j in plan.queued.iter().chain(plan.jobs.iter()) {
                if j.incident_id == inc.id
                    && j.event.opens()
                    && !plan.remove.contains(&j.id)
                    && !told.contains(&j.channel)
                {
                    told.push(j.channel.clone());
                }
            }
            self.plan(config, &inc, event, e.change, &told, &mut plan);
        }
        plan.jobs = self.one_per_peer(config, std::mem::take(&mut plan.jobs));
        super::cap::bound(config, &mut plan, &self.sending());
        Ok(plan)
    }

    /// Jobs queued for a channel before it had peers (by an older version, or before a
    /// reload gave it `urls`) become one job per peer, in each peer's lane: a peerless job
    /// would sit in a lane of its own, where what follows for the incident does not wait
    /// for it.
    pub(super) fn spread_to_peers(&self, config: &NotifyConfig, cursor: u64) {
        let old: Vec<Job> = self
            .queue
            .all()
            .into_iter()
            .filter(|j| {
                j.peer.is_none()
                    && config
                        .channels
                        .iter()
                        .any(|c| c.id == j.channel && !c.peers().is_empty())
            })
            .collect();
        if old.is_empty() {
            return;
        }
        let remove: Vec<u64> = old.iter().map(|j| j.id).collect();
        let add = self.one_per_peer(config, old);
        if let Err(e) = self
            .queue
            .enqueue(self.store.as_ref(), &add, &remove, cursor)
        {
            self.telemetry
                .store_error("could not give queued notifications their peers", &e);
        }
    }

    /// A job for a channel with several peers (Alertmanager's `urls`) becomes one job per
    /// peer: each is delivered, retried and dead-lettered on its own, so a dead peer delays
    /// nothing for the others.
    fn one_per_peer(&self, config: &NotifyConfig, jobs: Vec<Job>) -> Vec<Job> {
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            let peers = config
                .channels
                .iter()
                .find(|c| c.id == j.channel)
                .map(|c| c.peers())
                .unwrap_or_default();
            if peers.is_empty() || j.peer.is_some() {
                out.push(j);
                continue;
            }
            for (i, peer) in peers.into_iter().enumerate() {
                let mut k = j.clone();
                if i > 0 {
                    k.id = self.allocate();
                }
                k.peer = Some(peer);
                out.push(k);
            }
        }
        out
    }

    /// The jobs the routes make of one event, the jobs it makes moot, and the timeline notes
    /// of suppressed ones.
    fn plan(
        &self,
        config: &NotifyConfig,
        inc: &Incident,
        event: NotifyEvent,
        change: u64,
        told: &[String],
        plan: &mut Plan,
    ) {
        let now = self.clock.now();
        // Reminders of this incident that an acknowledgement, an end or a new opening make
        // moot (a reopening schedules its own).
        let moot = |j: &Job| match j.event {
            NotifyEvent::EscalationStep | NotifyEvent::Repeat => {
                event.opens() || event.ends() || event == NotifyEvent::Acknowledged
            }
            NotifyEvent::Resend => event.ends(),
            _ => false,
        };
        for j in plan.queued.iter().chain(plan.jobs.iter()) {
            if j.incident_id == inc.id && moot(j) && !plan.remove.contains(&j.id) {
                plan.remove.push(j.id);
            }
        }
        plan.jobs.retain(|j| !(j.incident_id == inc.id && moot(j)));
        // Opened and ended while inhibited: a channel that never heard of the opening (its
        // opening is still held, not being sent, and the channel was not told before) does not
        // hear of the end either; channels told earlier do.
        let mut unheard: HashSet<String> = HashSet::new();
        if event.ends() {
            let in_flight = self.sending();
            let notified = self.store.notified_channels(inc.id).unwrap_or_default();
            let mut source = None;
            for j in plan.queued.iter() {
                if j.incident_id == inc.id
                    && j.event.opens()
                    && j.held_by.is_some()
                    && !plan.remove.contains(&j.id)
                    && !in_flight.contains(&j.id)
                    && !notified.contains(&j.channel)
                {
                    unheard.insert(j.channel.clone());
                    source = source.or(j.held_by);
                }
            }
            if !unheard.is_empty() {
                let drop: Vec<u64> = plan
                    .queued
                    .iter()
                    .filter(|j| {
                        j.incident_id == inc.id
                            && j.held_by.is_some()
                            && unheard.contains(&j.channel)
                            && !in_flight.contains(&j.id)
                    })
                    .map(|j| j.id)
                    .collect();
                plan.remove.extend(drop);
                let mut names: Vec<&str> = unheard.iter().map(String::as_str).collect();
                names.sort_unstable();
                plan.notes.push((
                    inc.id,
                    format!(
                        "{} not sent to {}: it opened and ended while inhibited, so they were never told",
                        event.as_str(),
                        names.join(", ")
                    ),
                    json!({"event": event.as_str(), "status": "inhibited", "source": source,
                        "channels": names}),
                ));
            }
        }
        let mut channels: Vec<String> = Vec::new();
        let mut routes = Vec::new();
        // Channels that get this incident in a group: the first matching route naming
        // them decides (with its number, for the group's key).
        let mut grouped: HashMap<String, (usize, &RouteConfig)> = HashMap::new();
        // On-call targets call someone for news that calls for someone; what follows goes
        // to whoever was told (below), not to whoever is on call by then.
        let calls =
            event.opens() || matches!(event, NotifyEvent::Escalated | NotifyEvent::SlaBreached);
        for (index, r) in config.routes.iter().enumerate() {
            if !matches_route(r, inc) {
                continue;
            }
            let targets = self.reach_all(config, inc, &r.channels, now, calls, event, plan);
            routes.push((r, targets.clone()));
            for c in &targets {
                if !channels.contains(c) {
                    channels.push(c.clone());
                    let groups = config
                        .channels
                        .iter()
                        .any(|x| &x.id == c && x.kind.groups());
                    if !r.group_by.is_empty() && groups {
                        grouped.insert(c.clone(), (index, r));
                    }
                }
            }
            if !r.continue_ {
                break;
            }
        }
        // What follows an opening goes to every channel told of it, even if the incident no
        // longer matches their route (downgraded, say): pages resolve, tickets close.
        if !event.opens() {
            for c in told {
                if !channels.contains(c) && config.channels.iter().any(|x| &x.id == c) {
                    channels.push(c.clone());
                }
            }
        }
        let escalations: Vec<&crate::notification::config::EscalationConfig> = if event.opens() {
            routes
                .iter()
                .filter_map(|(r, _)| r.escalation.as_ref())
                .filter_map(|id| config.escalations.iter().find(|x| &x.id == id))
                .collect()
        } else {
            Vec::new()
        };
        if channels.is_empty() && escalations.is_empty() {
            return;
        }
        if let Some(s) = self.silence_of(inc, now) {
            self.telemetry.notifications_suppressed.inc();
            plan.notes.push((
                inc.id,
                format!(
                    "{} not sent: silenced by silence {} ({})",
                    event.as_str(),
                    s.0,
                    s.1
                ),
                json!({"event": event.as_str(), "status": "suppressed", "silence": s.0}),
            ));
            return;
        }
        for e in escalations {
            for (i, step) in e.steps.iter().enumerate() {
                // The turn of whoever is on call when the step fires.
                let due = now.saturating_add(step.after);
                for c in self.reach_all(config, inc, &step.channels, due, true, event, plan) {
                    let j = self.job(
                        inc.id,
                        &c,
                        NotifyEvent::EscalationStep,
                        change,
                        due,
                        Some((e.id.clone(), i)),
                        None,
                    );
                    plan.jobs.push(j);
                }
            }
        }
        if event.opens() {
            for (r, targets) in &routes {
                if let Some(every) = r.repeat_interval {
                    for c in targets {
                        let j = self.job(
                            inc.id,
                            c,
                            NotifyEvent::Repeat,
                            0,
                            now.saturating_add(every),
                            None,
                            Some(every),
                        );
                        plan.jobs.push(j);
                    }
                }
            }
        }
        for c in channels {
            if unheard.contains(&c) {
                continue;
            }
            let mut j = self.job(inc.id, &c, event, change, now, None, None);
            if let Some((index, r)) = grouped.get(&c) {
                let tag = group::tag(*index, r, &c, inc);
                let pending = plan
                    .queued
                    .iter()
                    .chain(plan.jobs.iter())
                    .filter(|x| {
                        // A held job waits for its source, not for the group's time.
                        x.group.as_ref().is_some_and(|g| g.key == tag.key)
                            && x.held_by.is_none()
                            && !plan.remove.contains(&x.id)
                    })
                    .map(|x| x.next_at);
                let last = self
                    .last_sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get(&tag.key);
                j.next_at = group::due_at(&tag, pending, last, r.group_wait(), now);
                j.group = Some(tag);
            }
            plan.jobs.push(j);
        }
    }

    /// The channels `targets` stand for (see [`super::oncall`]). On-call targets count only
    /// when `calls`; a target that reaches nobody says why in the timeline.
    #[allow(clippy::too_many_arguments)]
    fn reach_all(
        &self,
        config: &NotifyConfig,
        inc: &Incident,
        targets: &[String],
        at: Timestamp,
        calls: bool,
        event: NotifyEvent,
        plan: &mut Plan,
    ) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in targets {
            let oncall = matches!(super::oncall::parse(t), Ok(Some(_)));
            if oncall && !calls {
                continue;
            }
            match super::oncall::reach(t, inc, config, at) {
                Ok(list) => {
                    for c in list {
                        if !out.contains(&c) {
                            out.push(c);
                        }
                    }
                }
                Err(why) => plan.notes.push((
                    inc.id,
                    format!("{} reached nobody: {why}", event.as_str()),
                    json!({"event": event.as_str(), "status": "unreached", "target": t}),
                )),
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn job(
        &self,
        incident_id: u64,
        channel: &str,
        event: NotifyEvent,
        change: u64,
        next_at: Timestamp,
        escalation: Option<(String, usize)>,
        every: Option<Duration>,
    ) -> Job {
        Job {
            id: self.allocate(),
            incident_id,
            channel: channel.to_owned(),
            peer: None,
            event,
            change,
            escalation,
            every_ms: every.map(|d| d.as_millis() as u64),
            created_at: self.clock.now(),
            next_at,
            attempts: 0,
            last_error: None,
            held_by: None,
            group: None,
        }
    }

    /// An active silence covering the incident: (id, comment).
    pub(super) fn silence_of(&self, inc: &Incident, now: Timestamp) -> Option<(u64, String)> {
        self.store.silences().ok().and_then(|all| {
            all.into_iter()
                .find(|s| s.state(now) == SilenceState::Active && s.matchers.matches(inc))
                .map(|s| (s.id, s.comment))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::TimelineEntry;

    /// The feed passes over kinds `may_tell` refuses: none of them may ever tell anything.
    #[test]
    fn only_the_kinds_passed_over_are_the_ones_that_never_tell() {
        let values = [
            "open",
            "acknowledged",
            "mitigated",
            "resolved",
            "closed",
            "cancelled",
            "critical",
            "high",
            "low",
        ];
        for kind in EntryKind::ALL {
            for from in values {
                for to in values {
                    let e = TimelineEntry {
                        incident_id: 1,
                        seq: 1,
                        ts: crate::clock::Timestamp(0),
                        kind,
                        actor: "system".into(),
                        note: None,
                        data: serde_json::json!({"from": from, "to": to, "kind": "ack"}).into(),
                        change: 1,
                    };
                    if Shared::event_of(&e).is_some() {
                        assert!(Shared::may_tell(kind), "{kind:?} tells but is passed over");
                    }
                }
            }
        }
    }
}
