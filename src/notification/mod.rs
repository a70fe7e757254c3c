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

mod cap;
pub mod channel;
pub mod config;
mod deliver;
pub mod group;
pub mod inhibit;
pub mod oncall;
pub mod port;
pub mod probe;
mod queue;
pub mod reach;
mod routing;
mod send_group;

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
    /// Not acknowledged or not resolved within its SLA.
    SlaBreached,
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
            NotifyEvent::SlaBreached => "sla_breached",
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
    /// The peer this job is for, when the channel has several (Alertmanager's `urls`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
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
    /// The incident whose `[[inhibit]]` rule holds this job, while one does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<u64>,
    /// The route group it is sent with (`group_by`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<group::GroupTag>,
}

/// The channel front of the notifier (reload, the channel list, test messages).
#[derive(Clone)]
pub struct NotifyHandle {
    tx: mpsc::Sender<NotifyConfig>,
    requests: mpsc::Sender<Request>,
}

/// What the API asks of the notifier.
enum Request {
    Channels(tokio::sync::oneshot::Sender<Vec<probe::ChannelInfo>>),
    Test(
        String,
        tokio::sync::oneshot::Sender<Result<probe::TestReport, NotifyError>>,
    ),
}

/// Why the notifier could not answer.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("no channel `{id}` (the channels are: {known})")]
    UnknownChannel { id: String, known: String },
    #[error("the notifier is not running")]
    Unavailable,
}

impl NotifyHandle {
    pub async fn configure(&self, config: NotifyConfig) -> bool {
        self.tx.send(config).await.is_ok()
    }

    /// Every channel, its target (secrets left out) and its delivery figures.
    pub async fn channels(&self) -> Result<Vec<probe::ChannelInfo>, NotifyError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.requests
            .send(Request::Channels(tx))
            .await
            .map_err(|_| NotifyError::Unavailable)?;
        rx.await.map_err(|_| NotifyError::Unavailable)
    }

    /// A test message through channel `id`'s real delivery path.
    pub async fn test(&self, id: &str) -> Result<probe::TestReport, NotifyError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.requests
            .send(Request::Test(id.to_owned(), tx))
            .await
            .map_err(|_| NotifyError::Unavailable)?;
        rx.await.map_err(|_| NotifyError::Unavailable)?
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
    /// The outbox, mirrored in memory.
    queue: Arc<queue::Queue>,
    /// Jobs handed to a worker and not yet finished, with their lane (incident, channel,
    /// peer): kept here, since routing may remove a job from the outbox while it is sent.
    in_flight: Mutex<HashMap<u64, Lane>>,
    /// How often "outbox full" is logged (see `cap.rs`).
    outbox_full: crate::telemetry::Throttle,
    /// Per channel: recent delivery times, for its rate limit.
    sent: Mutex<crate::rate_window::RateWindow<String>>,
    /// The `[[inhibit]]` rules in force (replaced on reload).
    inhibitor: Mutex<Arc<inhibit::Inhibitor>>,
    /// What the timelines of held incidents last said.
    noted: Mutex<inhibit::Noted>,
    /// When each notification group last got a message.
    last_sent: Mutex<group::LastSent>,
}

struct Worker {
    tx: mpsc::Sender<Work>,
}

/// What a worker is handed: one job, or the due jobs of one group (one message).
enum Work {
    One(Box<Job>),
    Group(Vec<Job>),
}

/// Deliveries one worker (a channel, or one peer of it) has under way at once.
const DELIVERIES_IN_FLIGHT: usize = 8;

/// One incident's deliveries to one channel (and peer): one at a time, in order.
type Lane = (u64, String, Option<String>);

/// Who delivers a job: its channel and, for a channel with several peers, the peer.
type WorkerKey = (String, Option<String>);

/// What routing a batch of changes makes.
#[derive(Default)]
struct Plan {
    /// The outbox as it was read (to find moot reminders).
    queued: Vec<Job>,
    jobs: Vec<Job>,
    remove: Vec<u64>,
    notes: Vec<(u64, String, serde_json::Value)>,
    /// Jobs dead-lettered because their lane was full (see `cap.rs`).
    dropped: Vec<Job>,
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
    let (requests, requests_rx) = mpsc::channel(16);
    let http = crate::http_client().map_err(|e| StoreError::Record {
        tree: "outbox",
        key: String::new(),
        message: format!("cannot build the HTTP client: {e}"),
    })?;
    let shared = Arc::new(Shared {
        next_id: Mutex::new(store.next_job_id()?),
        queue: Arc::new(queue::Queue::load(store.jobs()?)),
        feed: ChangeFeed::new(store.clone(), incidents.changes()),
        store,
        incidents,
        clock,
        telemetry,
        http,
        host,
        in_flight: Mutex::new(HashMap::new()),
        outbox_full: crate::telemetry::Throttle::new(Duration::from_secs(10)),
        sent: Mutex::new(crate::rate_window::RateWindow::default()),
        inhibitor: Mutex::new(Arc::new(inhibit::Inhibitor::new(&config))),
        noted: Mutex::new(inhibit::Noted::default()),
        last_sent: Mutex::new(group::LastSent::default()),
    });
    let t = tracker.clone();
    tracker.spawn(run(shared, config, rx, requests_rx, t, cancel));
    Ok(NotifyHandle { tx, requests })
}

async fn run(
    shared: Arc<Shared>,
    mut config: NotifyConfig,
    mut reconfigure: mpsc::Receiver<NotifyConfig>,
    mut requests: mpsc::Receiver<Request>,
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
    shared.spread_to_peers(&config, cursor);
    let mut workers = start_workers(&shared, &config, &tracker, &cancel);
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            c = reconfigure.recv() => match c {
                Some(c) => {
                    config = c;
                    *shared.inhibitor.lock().unwrap_or_else(|p| p.into_inner()) =
                        Arc::new(inhibit::Inhibitor::new(&config));
                    shared.spread_to_peers(&config, cursor);
                    workers = start_workers(&shared, &config, &tracker, &cancel);
                }
                None => break,
            },
            Some(r) = requests.recv() => shared.answer(r, &config, &tracker),
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

/// One worker per channel, and per peer of a channel with several (replacing the old ones
/// on reload; those finish their job).
fn start_workers(
    shared: &Arc<Shared>,
    config: &NotifyConfig,
    tracker: &tokio_util::task::TaskTracker,
    cancel: &CancellationToken,
) -> HashMap<WorkerKey, Worker> {
    let mut out = HashMap::new();
    let lanes = config.channels.iter().flat_map(|c| {
        let peers = c.peers();
        let targets: Vec<Option<String>> = if peers.is_empty() {
            vec![None]
        } else {
            peers.into_iter().map(Some).collect()
        };
        targets.into_iter().map(move |t| (c, t))
    });
    for (c, peer) in lanes {
        // Checked when the config loaded: a channel that does not build was refused then.
        let kind = match channel::build(c) {
            Ok(k) => k,
            Err(problems) => {
                tracing::error!(channel = %c.id, ?problems, "channel settings do not fit its kind; it is off");
                continue;
            }
        };
        let (tx, mut rx) = mpsc::channel::<Work>(256);
        let (s, channel, cancel) = (shared.clone(), c.clone(), cancel.clone());
        let settings = config.settings.clone();
        let jobs = tracker.clone();
        tracker.spawn(async move {
            let templates = Arc::new(channel::Templates::load(&settings.templates_dir));
            let (channel, settings) = (Arc::new(channel), Arc::new(settings));
            // Deliveries of different incidents overlap (dispatch keeps one per incident in
            // flight), so one slow answer or one fsync does not hold back the rest.
            let slots = Arc::new(tokio::sync::Semaphore::new(DELIVERIES_IN_FLIGHT));
            loop {
                let job = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    j = rx.recv() => match j { Some(j) => j, None => break },
                };
                let slot = tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
                };
                let (s, channel, settings) = (s.clone(), channel.clone(), settings.clone());
                let (kind, templates, cancel) = (kind.clone(), templates.clone(), cancel.clone());
                jobs.spawn(async move {
                    let ids: Vec<u64> = match &job {
                        Work::One(j) => vec![j.id],
                        Work::Group(js) => js.iter().map(|j| j.id).collect(),
                    };
                    // A delivery cut short by shutdown stays queued: sent after the restart.
                    tokio::select! {
                        biased;
                        () = cancel.cancelled() => {}
                        () = async {
                            match job {
                                Work::One(j) => s.work(&channel, kind.as_ref(), &settings, &templates, *j).await,
                                Work::Group(js) => s.work_group(&channel, kind.as_ref(), &settings, &templates, js).await,
                            }
                        } => {}
                    }
                    let mut f = s.in_flight.lock().unwrap_or_else(|p| p.into_inner());
                    for id in ids {
                        f.remove(&id);
                    }
                    drop(f);
                    drop(slot);
                });
            }
        });
        out.insert((c.id.clone(), peer), Worker { tx });
    }
    out
}

impl Shared {
    fn allocate(&self) -> u64 {
        let mut n = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        let id = *n;
        *n += 1;
        id
    }

    /// Hands due jobs to their channel's worker: per incident and channel, one at a time
    /// and in order (a retried trigger goes before the acknowledgement that followed it).
    async fn dispatch(&self, workers: &HashMap<WorkerKey, Worker>) {
        let jobs = self.queue.all();
        self.telemetry.notifications_queued.set(jobs.len() as u64);
        let now = self.clock.now();
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let mut blocked: HashSet<Lane> = HashSet::new();
        let mut per_peer: HashMap<(String, String), u64> = HashMap::new();
        // One delivery at a time per incident and channel (or peer): a worker delivers
        // several at once, but never two of one incident, so they reach it in order (even
        // when the one under way was removed from the outbox meanwhile).
        let mut running: HashSet<Lane> = in_flight.values().cloned().collect();
        for job in &jobs {
            if let Some(p) = &job.peer {
                *per_peer
                    .entry((job.channel.clone(), config::shown_peer(p)))
                    .or_default() += 1;
            }
        }
        self.telemetry.set_peers_queued(per_peer);
        let mut per_channel: HashMap<String, u64> = HashMap::new();
        for job in &jobs {
            *per_channel.entry(job.channel.clone()).or_default() += 1;
        }
        self.telemetry.set_channels_queued(per_channel);
        // The jobs of one group go to the worker together, as one message, once one of them
        // is due. A grouped job waits for the earlier changes of its incident on its channel
        // like any other (a later job of the same group rides along), and holds back the
        // later ones that are not in its group.
        let mut groups: HashMap<(String, String), (bool, Vec<Job>)> = HashMap::new();
        let mut grouped_lanes: HashMap<Lane, String> = HashMap::new();
        for job in jobs {
            let lane = (job.incident_id, job.channel.clone(), job.peer.clone());
            if let Some(g) = &job.group {
                let same_group = grouped_lanes.get(&lane).is_some_and(|k| *k == g.key);
                let waits = blocked.contains(&lane)
                    || running.contains(&lane)
                    || (grouped_lanes.contains_key(&lane) && !same_group);
                if waits {
                    blocked.insert(lane);
                    continue;
                }
                grouped_lanes.insert(lane, g.key.clone());
                if !in_flight.contains_key(&job.id) {
                    let entry = groups
                        .entry((job.channel.clone(), g.key.clone()))
                        .or_default();
                    // Held jobs are due to look at their source again, others to be sent.
                    entry.0 |= job.next_at <= now;
                    entry.1.push(job);
                }
                continue;
            }
            if grouped_lanes.contains_key(&lane) {
                blocked.insert(lane);
                continue;
            }
            let timed = matches!(
                job.event,
                NotifyEvent::EscalationStep | NotifyEvent::Repeat | NotifyEvent::Resend
            );
            // Per peer: a dead peer holds back only its own deliveries.
            let lane = (job.incident_id, job.channel.clone(), job.peer.clone());
            // A change waits for the earlier changes of its incident on its channel.
            if !timed && blocked.contains(&lane) {
                continue;
            }
            let busy = in_flight.contains_key(&job.id);
            if !timed {
                blocked.insert(lane.clone());
            }
            if busy || job.next_at > now || running.contains(&lane) {
                continue;
            }
            // A job queued before its channel had peers goes to the first peer's worker and
            // is sent to every peer.
            let worker = workers
                .get(&(job.channel.clone(), job.peer.clone()))
                .or_else(|| {
                    job.peer
                        .is_none()
                        .then(|| {
                            workers
                                .iter()
                                .find(|((c, _), _)| c == &job.channel)
                                .map(|(_, w)| w)
                        })
                        .flatten()
                });
            match worker {
                Some(w) => {
                    let id = job.id;
                    if w.tx.try_send(Work::One(Box::new(job))).is_ok() {
                        in_flight.insert(id, lane.clone());
                        running.insert(lane);
                    }
                }
                None => {
                    // The channel (or this peer of it) was removed by a reload.
                    tracing::warn!(job = job.id, channel = %job.channel, peer = job.peer.as_deref().map(config::shown_peer), "notification for a channel or peer that no longer exists; dropped");
                    if let Err(e) = self.queue.remove(self.store.as_ref(), job.id) {
                        self.telemetry.store_error(
                            "could not drop a job of a removed channel from the outbox",
                            &e,
                        );
                    }
                }
            }
        }
        for ((channel, _), (due, group)) in groups {
            if !due {
                continue;
            }
            let Some(w) = workers.get(&(channel.clone(), None)) else {
                if workers.keys().any(|(c, _)| *c == channel) {
                    // A reload gave the channel peers: its jobs go one by one, to each peer.
                    for mut job in group {
                        job.group = None;
                        if let Err(e) = self.queue.update(self.store.as_ref(), &job) {
                            self.telemetry
                                .store_error("could not ungroup a queued notification", &e);
                        }
                    }
                    continue;
                }
                // The channel was removed by a reload.
                for job in group {
                    tracing::warn!(job = job.id, channel = %job.channel, "grouped notification for a channel that no longer exists; dropped");
                    if let Err(e) = self.queue.remove(self.store.as_ref(), job.id) {
                        self.telemetry.store_error(
                            "could not drop a job of a removed channel from the outbox",
                            &e,
                        );
                    }
                }
                continue;
            };
            let lanes: Vec<(u64, Lane)> = group
                .iter()
                .map(|j| (j.id, (j.incident_id, j.channel.clone(), j.peer.clone())))
                .collect();
            if w.tx.try_send(Work::Group(group)).is_ok() {
                for (id, lane) in lanes {
                    in_flight.insert(id, lane.clone());
                    running.insert(lane);
                }
            }
        }
    }

    /// Answers the API: the channel list at once, a test message from a task of its own.
    fn answer(&self, r: Request, config: &NotifyConfig, tracker: &tokio_util::task::TaskTracker) {
        match r {
            Request::Channels(reply) => {
                let _ = reply.send(probe::list(config, &self.telemetry));
            }
            Request::Test(id, reply) => {
                let Some(c) = config.channels.iter().find(|c| c.id == id).cloned() else {
                    let known: Vec<&str> = config.channels.iter().map(|c| c.id.as_str()).collect();
                    let _ = reply.send(Err(NotifyError::UnknownChannel {
                        id,
                        known: if known.is_empty() {
                            "none".into()
                        } else {
                            known.join(", ")
                        },
                    }));
                    return;
                };
                let dir = config.settings.templates_dir.clone();
                let (http, host, now) = (self.http.clone(), self.host.clone(), self.clock.now());
                tracker.spawn(async move {
                    let report = probe::test(&c, &dir, &http, &host, now).await;
                    tracing::info!(channel = %c.id, ok = report.ok, "test message sent");
                    // The asker may have gone; the message was sent all the same.
                    let _ = reply.send(Ok(report));
                });
            }
        }
    }

    async fn record(&self, incident_id: u64, note: String, data: serde_json::Value) {
        self.record_as(EntryKind::Notification, incident_id, note, data)
            .await
    }

    async fn record_as(
        &self,
        kind: EntryKind,
        incident_id: u64,
        note: String,
        data: serde_json::Value,
    ) {
        let r = self
            .incidents
            .command(Command::Record {
                id: incident_id,
                kind,
                actor: "system".into(),
                note: Some(note),
                data,
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(incident = incident_id, error = %e, "could not record a notification");
        }
    }
}
