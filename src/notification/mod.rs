//! Notifications: routing incident changes to channels through a persisted outbox.
//!
//! The notifier follows the store's change log (the same numbers `GET /v1/stream` uses),
//! from a position it keeps in the store. For each change worth telling (an incident opened,
//! reopened, acknowledged, mitigated, resolved, closed, cancelled, or made more severe) it
//! runs the routes and writes one job per (change, channel) into the outbox — jobs and the new
//! position in one transaction, so a crash neither loses nor doubles a notification. Timed
//! jobs (escalation steps, repeats, Alertmanager resends) sit in the outbox with their due
//! time. A dispatcher hands due jobs to one worker per channel: a slow or dead channel only
//! delays itself. A failed delivery is retried with exponential backoff and jitter until
//! the channel's `max_age`, then dead-lettered into the timeline and metrics.

pub mod channel;
pub mod config;
pub mod port;
pub mod reach;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Timestamp};
use crate::incident::feed::ChangeFeed;
use crate::incident::{Command, EntryKind, Incident, IncidentHandle, SilenceState, Status};
use crate::notification::config::{ChannelConfig, NotifyConfig, RouteConfig};
use crate::telemetry::Telemetry;
use port::{NotificationStore as Store, StoreError};

/// What a notification tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotifyEvent {
    Opened,
    Reopened,
    Acknowledged,
    Mitigated,
    Resolved,
    Closed,
    Cancelled,
    /// The severity got worse.
    Escalated,
    /// An escalation step fired (the incident is still not acknowledged).
    EscalationStep,
    /// `repeat_interval`: still open.
    Repeat,
    /// Alertmanager: the firing alert sent again so it does not expire.
    Resend,
}

impl NotifyEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            NotifyEvent::Opened => "opened",
            NotifyEvent::Reopened => "reopened",
            NotifyEvent::Acknowledged => "acknowledged",
            NotifyEvent::Mitigated => "mitigated",
            NotifyEvent::Resolved => "resolved",
            NotifyEvent::Closed => "closed",
            NotifyEvent::Cancelled => "cancelled",
            NotifyEvent::Escalated => "escalated",
            NotifyEvent::EscalationStep => "escalation_step",
            NotifyEvent::Repeat => "repeat",
            NotifyEvent::Resend => "resend",
        }
    }

    /// The incident is over (tickets close, pages resolve).
    pub fn ends(self) -> bool {
        matches!(
            self,
            NotifyEvent::Resolved | NotifyEvent::Closed | NotifyEvent::Cancelled
        )
    }

    pub fn opens(self) -> bool {
        matches!(self, NotifyEvent::Opened | NotifyEvent::Reopened)
    }
}

/// One delivery to do: a change (or a timed reminder) for one channel.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: u64,
    pub incident_id: u64,
    pub channel: String,
    pub event: NotifyEvent,
    /// The change that caused it (0 for timed jobs).
    #[serde(default)]
    pub change: u64,
    /// The escalation and step, for escalation jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escalation: Option<(String, usize)>,
    /// For repeats and resends: how often.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub every_ms: Option<u64>,
    pub created_at: Timestamp,
    pub next_at: Timestamp,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The channel front of the notifier (reload).
#[derive(Clone)]
pub struct NotifyHandle {
    tx: mpsc::Sender<NotifyConfig>,
}

impl NotifyHandle {
    pub async fn configure(&self, config: NotifyConfig) -> bool {
        self.tx.send(config).await.is_ok()
    }
}

struct Shared {
    store: Arc<dyn Store>,
    /// The durable change log, followed from the notifier's saved place.
    feed: ChangeFeed,
    incidents: IncidentHandle,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    http: reqwest::Client,
    host: Arc<str>,
    next_id: Mutex<u64>,
    /// Jobs handed to a worker and not yet finished.
    in_flight: Mutex<HashSet<u64>>,
    /// Per channel: recent delivery times, for its rate limit.
    sent: Mutex<crate::rate_window::RateWindow<String>>,
}

struct Worker {
    tx: mpsc::Sender<Job>,
}

/// What routing a batch of changes makes.
#[derive(Default)]
struct Plan {
    /// The outbox as it was read (to find moot reminders).
    queued: Vec<Job>,
    jobs: Vec<Job>,
    remove: Vec<u64>,
    notes: Vec<(u64, String, serde_json::Value)>,
}

/// Starts the notifier; it stops at `cancel`.
#[allow(clippy::too_many_arguments)]
pub fn spawn(
    config: NotifyConfig,
    store: Arc<dyn Store>,
    incidents: IncidentHandle,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    host: Arc<str>,
    tracker: &tokio_util::task::TaskTracker,
    cancel: CancellationToken,
) -> Result<NotifyHandle, StoreError> {
    let (tx, rx) = mpsc::channel(4);
    let http = crate::http_client().map_err(|e| StoreError::Record {
        tree: "outbox",
        key: String::new(),
        message: format!("cannot build the HTTP client: {e}"),
    })?;
    let shared = Arc::new(Shared {
        next_id: Mutex::new(store.next_job_id()?),
        feed: ChangeFeed::new(store.clone(), incidents.changes()),
        store,
        incidents,
        clock,
        telemetry,
        http,
        host,
        in_flight: Mutex::new(HashSet::new()),
        sent: Mutex::new(crate::rate_window::RateWindow::default()),
    });
    let t = tracker.clone();
    tracker.spawn(run(shared, config, rx, t, cancel));
    Ok(NotifyHandle { tx })
}

async fn run(
    shared: Arc<Shared>,
    mut config: NotifyConfig,
    mut reconfigure: mpsc::Receiver<NotifyConfig>,
    tracker: tokio_util::task::TaskTracker,
    cancel: CancellationToken,
) {
    let mut feed = shared.feed.clone();
    // A store that never ran the notifier starts at the present: no flood of old news.
    let mut cursor = match shared.store.notify_cursor() {
        Ok(Some(c)) => c,
        Ok(None) => feed.start(),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the notifier's position; notifications are off");
            return;
        }
    };
    let mut workers = start_workers(&shared, &config, &tracker, &cancel);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            c = reconfigure.recv() => match c {
                Some(c) => {
                    config = c;
                    workers = start_workers(&shared, &config, &tracker, &cancel);
                }
                None => break,
            },
            open = feed.changed() => {
                if !open {
                    break;
                }
                cursor = shared.route_changes(&config, cursor).await;
                shared.dispatch(&workers).await;
            }
            _ = tick.tick() => {
                cursor = shared.route_changes(&config, cursor).await;
                shared.dispatch(&workers).await;
            }
        }
    }
    tracing::debug!("notifier stopped");
}

/// One worker per channel (replacing the old ones on reload; those finish their job).
fn start_workers(
    shared: &Arc<Shared>,
    config: &NotifyConfig,
    tracker: &tokio_util::task::TaskTracker,
    cancel: &CancellationToken,
) -> HashMap<String, Worker> {
    let mut out = HashMap::new();
    for c in &config.channels {
        // Checked when the config loaded: a channel that does not build was refused then.
        let kind = match channel::build(c) {
            Ok(k) => k,
            Err(problems) => {
                tracing::error!(channel = %c.id, ?problems, "channel settings do not fit its kind; it is off");
                continue;
            }
        };
        let (tx, mut rx) = mpsc::channel::<Job>(256);
        let (s, channel, cancel) = (shared.clone(), c.clone(), cancel.clone());
        let settings = config.settings.clone();
        tracker.spawn(async move {
            let templates = channel::Templates::load(&settings.templates_dir);
            loop {
                let job = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    j = rx.recv() => match j { Some(j) => j, None => break },
                };
                let id = job.id;
                // A delivery cut short by shutdown stays queued: sent after the restart.
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = s.work(&channel, kind.as_ref(), &settings, &templates, job) => {}
                }
                s.in_flight
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&id);
            }
        });
        out.insert(c.id.clone(), Worker { tx });
    }
    out
}

fn matches_route(r: &RouteConfig, inc: &Incident) -> bool {
    let m = &r.matchers;
    (m.severity.is_empty() || m.severity.contains(&inc.severity))
        && (m.status.is_empty() || m.status.contains(&inc.status))
        && (m.service.is_empty() || inc.service.as_ref().is_some_and(|s| m.service.contains(s)))
        && (m.host.is_empty() || inc.host.as_ref().is_some_and(|h| m.host.contains(h)))
        && (m.rule.is_empty() || inc.rules.iter().any(|r| m.rule.contains(r)))
        && m.labels.iter().all(|(k, v)| inc.labels.get(k) == Some(v))
}

impl Shared {
    fn allocate(&self) -> u64 {
        let mut n = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        let id = *n;
        *n += 1;
        id
    }

    /// What a timeline entry tells, if anything.
    fn event_of(e: &crate::incident::TimelineEntry) -> Option<NotifyEvent> {
        let to = || e.data.get("to").and_then(|v| v.as_str());
        match e.kind {
            EntryKind::Created => Some(NotifyEvent::Opened),
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
    async fn route_changes(self: &Arc<Self>, config: &NotifyConfig, mut cursor: u64) -> u64 {
        loop {
            let batch = match self.feed.read(cursor, 256).await {
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
            let store = self.store.clone();
            let queued = match tokio::task::spawn_blocking(move || store.jobs()).await {
                Ok(Ok(q)) => q,
                Ok(Err(e)) => {
                    self.telemetry
                        .warn_remediation(&format!("notifier cannot read its outbox: {e}"));
                    return cursor;
                }
                Err(_) => return cursor,
            };
            let (entries, last) = (batch.entries, batch.upto);
            if entries.is_empty() {
                // Numbers without entries (compacted): nothing to tell. The position need
                // not be durable now: routing nothing again after a crash makes nothing.
                if let Err(e) = self.store.enqueue_jobs(&[], &[], last) {
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
            let plan = match planned {
                Ok(Ok(p)) => p,
                // Try the whole batch again later rather than skip it.
                Ok(Err(err)) => {
                    self.telemetry
                        .warn_remediation(&format!("notifier cannot read an incident: {err}"));
                    return cursor;
                }
                Err(_) => return cursor,
            };
            let store = self.store.clone();
            let (jobs, remove) = (plan.jobs, plan.remove);
            let saved = tokio::task::spawn_blocking(move || {
                store.enqueue_jobs(&jobs, &remove, last)?;
                // Without jobs the position need not be durable now: routing those changes
                // again after a crash makes nothing.
                if !jobs.is_empty() || !remove.is_empty() {
                    store.flush()?;
                }
                Ok::<_, StoreError>(())
            })
            .await;
            match saved {
                Ok(Ok(())) => {}
                // Not durable: these changes are routed again on the next round (once the
                // store has healed, it no longer holds what this write applied). Telling twice
                // is allowed (at least once, with idempotency keys); never telling is not.
                Ok(Err(err)) => {
                    self.telemetry
                        .store_error("notification outbox write failed", &err);
                    return cursor;
                }
                Err(_) => return cursor,
            }
            cursor = last;
            for (incident, note, data) in plan.notes {
                self.record(incident, note, data).await;
            }
        }
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
        Ok(plan)
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
        let mut channels: Vec<String> = Vec::new();
        let mut routes = Vec::new();
        for r in &config.routes {
            if !matches_route(r, inc) {
                continue;
            }
            routes.push(r);
            for c in &r.channels {
                if !channels.contains(c) {
                    channels.push(c.clone());
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
                .filter_map(|r| r.escalation.as_ref())
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
                for c in &step.channels {
                    let j = self.job(
                        inc.id,
                        c,
                        NotifyEvent::EscalationStep,
                        change,
                        now.saturating_add(step.after),
                        Some((e.id.clone(), i)),
                        None,
                    );
                    plan.jobs.push(j);
                }
            }
        }
        if event.opens() {
            for r in &routes {
                if let Some(every) = r.repeat_interval {
                    for c in &r.channels {
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
            plan.jobs
                .push(self.job(inc.id, &c, event, change, now, None, None));
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn job(
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
            event,
            change,
            escalation,
            every_ms: every.map(|d| d.as_millis() as u64),
            created_at: self.clock.now(),
            next_at,
            attempts: 0,
            last_error: None,
        }
    }

    /// An active silence covering the incident: (id, comment).
    fn silence_of(&self, inc: &Incident, now: Timestamp) -> Option<(u64, String)> {
        self.store.silences().ok().and_then(|all| {
            all.into_iter()
                .find(|s| s.state(now) == SilenceState::Active && s.matchers.matches(inc))
                .map(|s| (s.id, s.comment))
        })
    }

    /// Hands due jobs to their channel's worker: per incident and channel, one at a time
    /// and in order (a retried trigger goes before the acknowledgement that followed it).
    async fn dispatch(&self, workers: &HashMap<String, Worker>) {
        let store = self.store.clone();
        let Ok(Ok(mut jobs)) = tokio::task::spawn_blocking(move || store.jobs()).await else {
            return;
        };
        self.telemetry.notifications_queued.set(jobs.len() as u64);
        jobs.sort_by_key(|j| j.id);
        let now = self.clock.now();
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let mut blocked: HashSet<(u64, String)> = HashSet::new();
        for job in jobs {
            let timed = matches!(
                job.event,
                NotifyEvent::EscalationStep | NotifyEvent::Repeat | NotifyEvent::Resend
            );
            let lane = (job.incident_id, job.channel.clone());
            // A change waits for the earlier changes of its incident on its channel.
            if !timed && blocked.contains(&lane) {
                continue;
            }
            let busy = in_flight.contains(&job.id);
            if !timed {
                blocked.insert(lane);
            }
            if busy || job.next_at > now {
                continue;
            }
            match workers.get(&job.channel) {
                Some(w) => {
                    let id = job.id;
                    if w.tx.try_send(job).is_ok() {
                        in_flight.insert(id);
                    }
                }
                None => {
                    // The channel was removed by a reload.
                    tracing::warn!(job = job.id, channel = %job.channel, "notification for a channel that no longer exists; dropped");
                    if let Err(e) = self.store.remove_job(job.id) {
                        self.telemetry.store_error(
                            "could not drop a job of a removed channel from the outbox",
                            &e,
                        );
                    }
                }
            }
        }
    }

    async fn record(&self, incident_id: u64, note: String, data: serde_json::Value) {
        let r = self
            .incidents
            .command(Command::Record {
                id: incident_id,
                kind: EntryKind::Notification,
                actor: "system".into(),
                note: Some(note),
                data,
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(incident = incident_id, error = %e, "could not record a notification");
        }
    }

    /// Delivers one job: done, retried later, or dead-lettered.
    async fn work(
        &self,
        channel: &ChannelConfig,
        kind: &dyn channel::Channel,
        settings: &crate::notification::config::NotificationsConfig,
        templates: &channel::Templates,
        job: Job,
    ) {
        let now = self.clock.now();
        // The outbox has the truth: a job removed or rescheduled since it was handed out
        // is not sent again.
        let mut job = match self.store.job(job.id) {
            Ok(Some(j)) if j.next_at <= now => j,
            _ => return,
        };
        let inc = match self.store.incident(job.incident_id) {
            Ok(Some(i)) => i,
            Ok(None) => {
                if let Err(e) = self.store.remove_job(job.id) {
                    self.telemetry.store_error(
                        "could not drop a job of a gone incident from the outbox",
                        &e,
                    );
                }
                return;
            }
            // A read error is not a reason to drop the job: it is tried again.
            Err(_) => return,
        };
        // Timed jobs check that they still apply.
        let still = match job.event {
            NotifyEvent::EscalationStep | NotifyEvent::Repeat => inc.status == Status::Open,
            NotifyEvent::Resend => inc.status.is_active(),
            _ => true,
        };
        if !still {
            if let Some((esc, step)) = &job.escalation {
                tracing::info!(incident = inc.id, escalation = %esc, step, "escalation step not needed: the incident was acknowledged or ended");
            }
            self.persist(move |st| st.remove_job(job.id)).await;
            return;
        }
        if matches!(job.event, NotifyEvent::EscalationStep | NotifyEvent::Repeat)
            && self.silence_of(&inc, now).is_some()
        {
            // A reminder or an escalation step during a silence: skipped (a repeat comes back
            // after its interval). Resends go on: the alert must not expire meanwhile.
            self.reschedule_or_drop(&mut job, now).await;
            return;
        }
        if let Some(wait) = self.rate_limited(channel, now) {
            job.next_at = now.saturating_add(wait);
            if let Err(e) = self.store.put_job(&job) {
                self.telemetry
                    .store_error("could not reschedule a rate-limited notification", &e);
            }
            return;
        }
        job.attempts += 1;
        let entry = if job.change > 0 {
            self.store.entry_by_change(job.change).ok().flatten()
        } else {
            None
        };
        let ctx = channel::Context {
            incident: &inc,
            event: job.event,
            entry: entry.as_ref(),
            channel,
            host: &self.host,
            step: job.escalation.as_ref().map(|(_, s)| *s),
        };
        let result = kind.deliver(&ctx, templates, &self.http).await;
        match result {
            Ok(outcome) => {
                self.telemetry.notifications_delivered.inc();
                tracing::info!(incident = inc.id, channel = %channel.id, event = job.event.as_str(), attempts = job.attempts, "notification delivered");
                if let Some((key, value, url)) = outcome.ticket {
                    let r = self
                        .incidents
                        .command(Command::LinkTicket {
                            id: inc.id,
                            key,
                            value,
                            url,
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::error!(incident = inc.id, error = %e, "could not record the ticket");
                    }
                }
                let mut data = json!({"channel": channel.id, "kind": channel.kind.as_str(),
                    "event": job.event.as_str(), "status": "delivered", "attempts": job.attempts});
                if let Some((esc, step)) = &job.escalation {
                    data["escalation"] = json!(esc);
                    data["step"] = json!(step);
                }
                // Resends keep an alert alive; they are not news for the timeline.
                if job.event != NotifyEvent::Resend {
                    let note = match &job.escalation {
                        Some((esc, step)) => {
                            format!("escalation {esc} step {} sent to {}", step + 1, channel.id)
                        }
                        None => format!("{} sent to {}", job.event.as_str(), channel.id),
                    };
                    self.record(inc.id, note, data).await;
                }
                // Its follow-ups (acknowledged, resolved…) will come here too.
                if !job.event.ends()
                    && let Err(e) = self.store.mark_notified(inc.id, &channel.id)
                {
                    self.telemetry.store_error(
                        "could not record that a channel was told of an incident",
                        &e,
                    );
                }
                // A firing Alertmanager alert is sent again until the incident ends.
                if channel.kind == crate::notification::config::ChannelKind::Alertmanager
                    && job.event != NotifyEvent::Resend
                    && inc.status.is_active()
                {
                    self.ensure_resend(channel, &inc, now);
                }
                self.reschedule_or_drop(&mut job, now).await;
            }
            Err(e) => {
                let age = now.since(job.created_at);
                // A refusal (4xx but 408 and 429) or a message that cannot be built is given
                // up at once: retrying changes nothing. Anything else until `max_age`.
                if e.permanent() || age >= channel.max_age {
                    let why = if e.permanent() {
                        "refused"
                    } else {
                        "still failing after max_age"
                    };
                    self.telemetry.notifications_dead.inc();
                    tracing::error!(incident = inc.id, channel = %channel.id, attempts = job.attempts, error = %e, why, "notification dead-lettered");
                    self.persist(move |st| st.remove_job(job.id)).await;
                    let mut data = json!({"channel": channel.id, "event": job.event.as_str(),
                        "status": "dead_lettered", "reason": why, "attempts": job.attempts,
                        "error": e.to_string()});
                    if let serde_json::Value::Object(answer) = e.data() {
                        data["answer"] = serde_json::Value::Object(answer);
                    }
                    self.record(
                        inc.id,
                        format!(
                            "{} to {} given up after {} attempt{} ({why}): {e}",
                            job.event.as_str(),
                            channel.id,
                            job.attempts,
                            if job.attempts == 1 { "" } else { "s" }
                        ),
                        data,
                    )
                    .await;
                    return;
                }
                self.telemetry.notifications_failed.inc();
                let delay = backoff(settings, job.attempts, job.id);
                tracing::warn!(incident = inc.id, channel = %channel.id, attempts = job.attempts, retry_in = ?delay, error = %e, "notification failed; will retry");
                job.last_error = Some(e.to_string());
                job.next_at = now.saturating_add(delay);
                self.persist(move |st| st.put_job(&job)).await;
            }
        }
    }

    /// A repeating job goes again after its interval; any other is done.
    async fn reschedule_or_drop(&self, job: &mut Job, now: Timestamp) {
        match job.every_ms {
            Some(ms) => {
                job.next_at = now.saturating_add(Duration::from_millis(ms));
                job.attempts = 0;
                job.created_at = now;
                job.last_error = None;
                let j = job.clone();
                self.persist(move |st| st.put_job(&j)).await;
            }
            None => {
                let id = job.id;
                self.persist(move |st| st.remove_job(id)).await;
            }
        }
    }

    /// Writes to the store and flushes, off the async threads.
    async fn persist(&self, f: impl FnOnce(&dyn Store) -> Result<(), StoreError> + Send + 'static) {
        let store = self.store.clone();
        let r = tokio::task::spawn_blocking(move || {
            f(store.as_ref())?;
            store.flush()
        })
        .await;
        if let Ok(Err(e)) = r {
            self.telemetry
                .store_error("notification outbox write failed", &e);
        }
    }

    /// One resend job per incident and Alertmanager channel while the incident is active.
    fn ensure_resend(&self, channel: &ChannelConfig, inc: &Incident, now: Timestamp) {
        let exists = self.store.jobs().is_ok_and(|jobs| {
            jobs.iter().any(|j| {
                j.incident_id == inc.id && j.channel == channel.id && j.event == NotifyEvent::Resend
            })
        });
        if !exists {
            let every = channel.resend_interval.unwrap_or(Duration::from_secs(60));
            let j = self.job(
                inc.id,
                &channel.id,
                NotifyEvent::Resend,
                0,
                now.saturating_add(every),
                None,
                Some(every),
            );
            if let Err(e) = self.store.put_job(&j) {
                self.telemetry
                    .store_error("could not queue an Alertmanager resend", &e);
            }
        }
    }

    /// How long to wait when the channel's rate limit is reached (else counts this one).
    fn rate_limited(&self, c: &ChannelConfig, now: Timestamp) -> Option<Duration> {
        let r = c.rate_limit?;
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.admit(&c.id, now, r.max as usize, r.per)
            .err()
            .map(|wait| wait.max(Duration::from_millis(100)))
    }
}

/// Exponential backoff with jitter: `initial × 2^(attempts−1)`, capped, ±25%.
fn backoff(
    s: &crate::notification::config::NotificationsConfig,
    attempts: u32,
    seed: u64,
) -> Duration {
    let base = s
        .retry_initial
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(s.retry_max);
    // Cheap jitter from the job id and the attempt: spreads retries of many jobs apart.
    let h = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add((attempts as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9));
    let frac = (h >> 11) as f64 / (1u64 << 53) as f64; // 0..1
    base.mul_f64(0.75 + frac * 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let s = crate::notification::config::NotificationsConfig {
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(60),
            ..Default::default()
        };
        let d1 = backoff(&s, 1, 7);
        let d3 = backoff(&s, 3, 7);
        assert!(d1 >= Duration::from_millis(750) && d1 <= Duration::from_millis(1250));
        assert!(d3 >= Duration::from_secs(3) && d3 <= Duration::from_secs(5));
        assert!(backoff(&s, 30, 7) <= Duration::from_secs(75));
        assert_ne!(backoff(&s, 2, 1), backoff(&s, 2, 2), "jobs spread apart");
    }
}
