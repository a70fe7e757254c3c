//! The incident manager: the single writer of the store.
//!
//! Messages arrive on one bounded channel: detections from the engine and [`Command`]s from
//! API handlers (each with a oneshot for the answer). The loop takes a batch of whatever is
//! waiting, applies each message as one store transaction, flushes once, and only then sends
//! the answers: a client that got an answer has a durable change (group commit).
//! Crash invariant: if we die before the flush, nobody was told about the batch.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::port::{Change, IncidentStore as Store, StoreError};
use super::{
    EntryKind, Incident, NewSilence, Severity, Silence, SilenceState, Status, TimelineEntry,
    Transition,
};
use crate::clock::{Clock, Timestamp};
use crate::engine::Detection;
use crate::incident::config::IncidentsConfig;
use crate::telemetry::Telemetry;

/// The user name recorded for the daemon's own changes.
pub const SYSTEM_ACTOR: &str = "system";

/// Most messages applied under one flush.
const MAX_BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum IncidentError {
    #[error("incident {id} not found")]
    NotFound { id: u64 },
    #[error("incident {id} {message}")]
    InvalidTransition {
        id: u64,
        from: Status,
        transition: Transition,
        message: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("silence {id} not found")]
    SilenceNotFound { id: u64 },
    #[error("silence {id} has already expired")]
    SilenceExpired { id: u64 },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change was applied but could not be made durable: it did not happen.
    #[error("change not durable: {message}")]
    NotDurable { message: String, no_space: bool },
    #[error("the incident manager has stopped")]
    Unavailable,
}

/// An incident created by hand (`POST /v1/incidents`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewIncident {
    pub title: String,
    #[serde(default = "default_sev3")]
    pub severity: Severity,
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub runbook: Option<String>,
    #[serde(default)]
    pub note: Option<String>,
}

/// The severity of a hand-made incident or an external alert that names none.
fn default_sev3() -> Severity {
    Severity::Sev3
}

/// A change asked for by a person or program; the actor is the peer's user name.
#[derive(Debug)]
pub enum Command {
    Transition {
        id: u64,
        transition: Transition,
        note: Option<String>,
        actor: String,
    },
    Note {
        id: u64,
        note: String,
        actor: String,
    },
    Create {
        incident: NewIncident,
        actor: String,
    },
    /// Set the severity by hand (admins).
    Severity {
        id: u64,
        severity: Severity,
        note: Option<String>,
        actor: String,
    },
    /// Add and remove tags.
    Tags {
        id: u64,
        add: Vec<String>,
        remove: Vec<String>,
        actor: String,
    },
    /// Append a timeline entry that changes nothing else (action steps).
    Record {
        id: u64,
        kind: EntryKind,
        actor: String,
        note: Option<String>,
        data: serde_json::Value,
    },
    /// A ticket made for the incident (GitHub, GitLab, Jira): kept in `external_refs`.
    LinkTicket {
        id: u64,
        /// The channel that made it (the key in `external_refs`).
        key: String,
        value: String,
        url: Option<String>,
    },
    /// Assign to someone, or unassign (`None`).
    Assign {
        id: u64,
        assignee: Option<String>,
        actor: String,
    },
}

/// What a detection (or an external alert) did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Created(u64),
    /// Attached to the open incident of its key.
    Deduplicated(u64),
    /// Reopened the recently resolved incident of its key.
    Reopened(u64),
    /// No incident: the key's creation rate limit.
    RateLimited,
    /// Joined the active incident of another key (shared correlation or trace id, same
    /// service, or linked services).
    Correlated(u64),
    /// Already applied before a crash.
    Replayed,
}

impl Outcome {
    pub fn changed(self) -> bool {
        matches!(
            self,
            Outcome::Created(_)
                | Outcome::Deduplicated(_)
                | Outcome::Reopened(_)
                | Outcome::Correlated(_)
        )
    }

    pub fn incident(self) -> Option<u64> {
        match self {
            Outcome::Created(id)
            | Outcome::Deduplicated(id)
            | Outcome::Reopened(id)
            | Outcome::Correlated(id) => Some(id),
            _ => None,
        }
    }
}

/// An external detection (`POST /v1/alerts`): a CI job or a cron check raising an incident.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExternalAlert {
    /// Alerts with the same key share an incident.
    pub key: String,
    pub summary: String,
    #[serde(default = "default_sev3")]
    pub severity: Severity,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub runbook: Option<String>,
}

/// A change to the silences (admins).
#[derive(Debug)]
pub enum SilenceCommand {
    Create {
        silence: NewSilence,
        actor: String,
    },
    /// Ends an active or pending silence now.
    Expire {
        id: u64,
        actor: String,
    },
}

/// What travels on the manager's channel.
pub enum Msg {
    Silence(
        SilenceCommand,
        oneshot::Sender<Result<Silence, IncidentError>>,
    ),
    Detection(Detection),
    Command(Command, oneshot::Sender<Result<Incident, IncidentError>>),
    /// Answered once everything before it is applied and flushed (watchdog, tests).
    Ping(oneshot::Sender<()>),
    /// New `[incidents]` settings after a reload.
    Configure(IncidentsConfig),
    /// The engine's window state, saved with the batch's flush.
    Checkpoint(Vec<u8>, crate::detection::Coverage),
    /// Time-driven lifecycle: close incidents resolved longer than `auto_close_after`.
    Housekeeping,
    /// An external alert, answered after the flush.
    Alert(
        ExternalAlert,
        String,
        oneshot::Sender<Result<Outcome, IncidentError>>,
    ),
}

/// The engine's output reaches the manager on its own channel, in order.
#[async_trait::async_trait]
impl crate::engine::DetectionSink for mpsc::Sender<Msg> {
    async fn send(&self, out: crate::engine::Output) -> Result<(), crate::engine::SinkClosed> {
        let msg = match out {
            crate::engine::Output::Detection(d) => Msg::Detection(d),
            crate::engine::Output::Checkpoint { state, coverage } => {
                Msg::Checkpoint(state, coverage)
            }
        };
        mpsc::Sender::send(self, msg)
            .await
            .map_err(|_| crate::engine::SinkClosed)
    }
}

/// The channel front of the manager.
#[derive(Clone)]
pub struct IncidentHandle {
    tx: mpsc::Sender<Msg>,
    changes: tokio::sync::watch::Receiver<u64>,
}

impl IncidentHandle {
    /// The highest durable change number, updated after each flush (for the stream).
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.changes.clone()
    }

    pub fn sender(&self) -> mpsc::Sender<Msg> {
        self.tx.clone()
    }

    /// Sends a command and waits until it is durable.
    pub async fn command(&self, cmd: Command) -> Result<Incident, IncidentError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Command(cmd, tx))
            .await
            .map_err(|_| IncidentError::Unavailable)?;
        rx.await.map_err(|_| IncidentError::Unavailable)?
    }

    /// Raises an external alert; answered once its effect is durable.
    pub async fn alert(
        &self,
        alert: ExternalAlert,
        actor: String,
    ) -> Result<Outcome, IncidentError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Alert(alert, actor, tx))
            .await
            .map_err(|_| IncidentError::Unavailable)?;
        rx.await.map_err(|_| IncidentError::Unavailable)?
    }

    /// Creates or expires a silence; answered once durable.
    pub async fn silence(&self, cmd: SilenceCommand) -> Result<Silence, IncidentError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg::Silence(cmd, tx))
            .await
            .map_err(|_| IncidentError::Unavailable)?;
        rx.await.map_err(|_| IncidentError::Unavailable)?
    }

    /// Asks for the time-driven lifecycle to run (auto-close).
    pub async fn housekeep(&self) -> bool {
        self.tx.send(Msg::Housekeeping).await.is_ok()
    }

    /// Hands the manager new `[incidents]` settings; they apply from the next message on.
    pub async fn configure(&self, config: IncidentsConfig) -> bool {
        self.tx.send(Msg::Configure(config)).await.is_ok()
    }

    pub async fn ping(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        self.tx.send(Msg::Ping(tx)).await.is_ok() && rx.await.is_ok()
    }
}

/// Starts the manager on a blocking thread of `tracker`. It ends when every sender is gone,
/// after a final flush.
pub fn spawn(
    store: Arc<dyn Store>,
    config: IncidentsConfig,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    capacity: usize,
    tracker: &tokio_util::task::TaskTracker,
) -> Result<IncidentHandle, StoreError> {
    let (tx, rx) = mpsc::channel(capacity);
    let (changes_tx, changes) = tokio::sync::watch::channel(store.last_change());
    let mut manager = Manager {
        changes: changes_tx,
        graph: super::correlate::Graph::new(&config.services),
        now: clock.now(),
        silences: store.silences()?,
        next_silence: store.next_silence_id()?,
        swept: Default::default(),
        next_id: store.next_id()?,
        store,
        config,
        clock,
        telemetry,
        created_per_key: crate::rate_window::RateWindow::default(),
        backoff: HashMap::new(),
        active: Default::default(),
    };
    tracker.spawn_blocking(move || manager.run(rx));
    Ok(IncidentHandle { tx, changes })
}

struct Manager {
    store: Arc<dyn Store>,
    /// Publishes the highest durable change number after each flush.
    changes: tokio::sync::watch::Sender<u64>,
    /// The `[[service]]` dependency graph.
    graph: super::correlate::Graph,
    /// The time of the message being handled.
    now: Timestamp,
    /// Every stored silence (active, pending, and expired within the retention).
    silences: Vec<Silence>,
    next_silence: u64,
    /// Active silences already recorded on the incidents they cover (since this start).
    swept: std::collections::HashSet<u64>,
    config: IncidentsConfig,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    next_id: u64,
    /// Recent creation times per key, for the creation rate limit.
    created_per_key: crate::rate_window::RateWindow<String>,
    /// Per key: new incidents in the current streak and when the last one was created.
    backoff: HashMap<String, (usize, Timestamp)>,
    /// The active incidents as correlation sees them.
    active: super::correlate::ActiveIndex,
}

type Reply = oneshot::Sender<Result<Incident, IncidentError>>;

/// A reply waiting for the batch's flush, with what it will say.
type Pending<T> = (
    oneshot::Sender<Result<T, IncidentError>>,
    Result<T, IncidentError>,
);

/// Sends each reply once the batch's flush is known: a change that did not become durable
/// is reported as failed, never as done.
fn answer<T>(flushed: &Result<(), StoreError>, replies: &mut Vec<Pending<T>>) {
    for (reply, r) in replies.drain(..) {
        let r = match (flushed, r) {
            (Err(e), Ok(_)) => Err(IncidentError::NotDurable {
                message: e.to_string(),
                no_space: e.no_space(),
            }),
            (_, r) => r,
        };
        let _ = reply.send(r);
    }
}

/// How a detection joins an existing incident.
enum Join {
    Same,
    Reopen,
    Correlated(String),
}

impl Manager {
    /// After a failed flush: lets the store reopen itself from disk (sled keeps failing
    /// otherwise, even once there is room again), then reads back what this manager keeps in
    /// memory, since the batches that failed are not on disk. The next batch tries again if
    /// this did not work.
    fn heal(&mut self) -> bool {
        match self.store.heal() {
            Ok(false) => false,
            Ok(true) => {
                let reloaded = (|| -> Result<(), StoreError> {
                    self.silences = self.store.silences()?;
                    self.next_silence = self.store.next_silence_id()?;
                    self.next_id = self.store.next_id()?;
                    Ok(())
                })();
                self.active = Default::default();
                self.swept.clear();
                if let Err(e) = reloaded {
                    self.telemetry
                        .store_error("reading the store back after reopening it failed", &e);
                }
                true
            }
            Err(e) => {
                self.telemetry.store_error("reopening the store failed", &e);
                false
            }
        }
    }

    fn run(&mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut replies: Vec<(Reply, Result<Incident, IncidentError>)> = Vec::new();
        let mut pings: Vec<oneshot::Sender<()>> = Vec::new();
        type AlertReply = oneshot::Sender<Result<Outcome, IncidentError>>;
        let mut alert_replies: Vec<(AlertReply, Result<Outcome, IncidentError>)> = Vec::new();
        type SilenceReply = oneshot::Sender<Result<Silence, IncidentError>>;
        let mut silence_replies: Vec<(SilenceReply, Result<Silence, IncidentError>)> = Vec::new();
        // What the engine sent since the last successful flush (it never sends it again), to
        // apply again once a failed store has healed; and what to apply before new messages.
        let mut unflushed = super::unflushed::Unflushed::default();
        let mut again: std::collections::VecDeque<Msg> = Default::default();
        loop {
            let first = match again.pop_front() {
                Some(m) => m,
                None => match rx.blocking_recv() {
                    Some(m) => m,
                    None => break,
                },
            };
            let mut checkpointed = false;
            // (event arrival, detection) times of the detections in this batch.
            let mut timings: Vec<(Option<std::time::Instant>, Option<std::time::Instant>)> =
                Vec::new();
            let mut msg = Some(first);
            let mut n = 0;
            while let Some(m) = msg.take() {
                n += 1;
                // One time per message: its entries and the snapshot fields they imply carry
                // the same instant, so the log replays to the very same snapshot.
                self.now = self.clock.now();
                unflushed.keep(&m);
                match m {
                    Msg::Detection(d) => match self.on_detection(&d) {
                        // Latency counts detections that changed an incident.
                        Ok(o) if o.changed() => {
                            timings.push((d.arrived, d.detected));
                        }
                        Ok(_) => {}
                        Err(e) => self.telemetry.store_error(
                            &format!("could not record detection {} of rule {}", d.key, d.rule),
                            &e,
                        ),
                    },
                    Msg::Command(cmd, reply) => {
                        let r = self.on_command(cmd);
                        replies.push((reply, r));
                    }
                    Msg::Ping(p) => pings.push(p),
                    Msg::Silence(cmd, reply) => {
                        let r = self.on_silence(cmd);
                        silence_replies.push((reply, r));
                    }
                    Msg::Configure(c) => {
                        self.graph = super::correlate::Graph::new(&c.services);
                        self.config = c;
                    }
                    Msg::Housekeeping => {
                        if let Err(e) = self.auto_resolve() {
                            self.telemetry.store_error("automatic resolving failed", &e);
                        }
                        if let Err(e) = self.compact() {
                            self.telemetry
                                .store_error("compaction of old closed incidents failed", &e);
                        }
                        if let Err(e) = self.auto_close() {
                            self.telemetry.store_error("automatic closing failed", &e);
                        }
                        self.sweep_new_silences();
                        if let Err(e) = self.prune_silences() {
                            self.telemetry
                                .store_error("pruning expired silences failed", &e);
                        }
                    }
                    Msg::Alert(alert, actor, reply) => {
                        let r = self.on_alert(alert, &actor);
                        alert_replies.push((reply, r));
                    }
                    Msg::Checkpoint(bytes, coverage) => {
                        checkpointed = true;
                        if let Err(e) = self.store.save_checkpoint(&bytes, &coverage) {
                            self.telemetry
                                .store_error("could not save the engine checkpoint", &e);
                        }
                    }
                }
                if n < MAX_BATCH {
                    msg = again.pop_front().or_else(|| rx.try_recv().ok());
                }
            }
            // Nothing below is sent before the flush: an answer means durable.
            let flushed = self.store.flush();
            // Counted, remembered for /v1/health and logged (throttled) there.
            self.telemetry.store_health(&flushed);
            if flushed.is_ok() {
                unflushed.clear();
            } else if self.heal() {
                // The store is back as it was at its last flush: the engine's detections
                // and checkpoints since then go through again, before anything new.
                again.extend(unflushed.take());
            }
            if checkpointed && flushed.is_ok() {
                self.telemetry.checkpoints.inc();
            }
            if flushed.is_ok() {
                self.changes.send_if_modified(|last| {
                    let now = self.store.last_change();
                    std::mem::replace(last, now) != now
                });
                let now = std::time::Instant::now();
                for (arrived, detected) in timings.drain(..) {
                    if let Some(d) = detected {
                        self.telemetry
                            .detection_to_incident
                            .observe(now.duration_since(d));
                    }
                    if let Some(a) = arrived {
                        self.telemetry
                            .event_to_incident
                            .observe(now.duration_since(a));
                    }
                }
            }
            answer(&flushed, &mut replies);
            answer(&flushed, &mut alert_replies);
            answer(&flushed, &mut silence_replies);
            for p in pings.drain(..) {
                let _ = p.send(());
            }
        }
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "final store flush failed");
        }
        tracing::debug!("incident manager stopped");
    }

    fn load(&self, id: u64) -> Result<Incident, IncidentError> {
        self.store
            .incident(id)?
            .ok_or(IncidentError::NotFound { id })
    }

    fn entry(
        &self,
        inc: &mut Incident,
        kind: EntryKind,
        actor: &str,
        note: Option<String>,
        data: serde_json::Value,
    ) -> TimelineEntry {
        let e = TimelineEntry {
            incident_id: inc.id,
            seq: inc.timeline_len,
            ts: self.now,
            kind,
            actor: actor.to_owned(),
            note,
            data,
            change: 0,
        };
        inc.timeline_len += 1;
        e
    }

    fn on_command(&mut self, cmd: Command) -> Result<Incident, IncidentError> {
        match cmd {
            Command::Transition {
                id,
                transition,
                note,
                actor,
            } => {
                let mut inc = self.load(id)?;
                let from = inc.status;
                let to =
                    transition
                        .check(from)
                        .map_err(|message| IncidentError::InvalidTransition {
                            id,
                            from,
                            transition,
                            message,
                        })?;
                let now = self.now;
                set_status(&mut inc, to, now);
                let kind = if transition == Transition::Reopen {
                    EntryKind::Reopened
                } else {
                    EntryKind::StatusChanged
                };
                let e = self.entry(
                    &mut inc,
                    kind,
                    &actor,
                    note,
                    serde_json::json!({"from": from, "to": to}),
                );
                let mut entries = vec![e];
                self.note_silences(&mut inc, &mut entries, now);
                self.store.apply(&Change {
                    incident: inc.clone(),
                    previous_status: Some(from),
                    entries,
                    detection: None,
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
                let e = self.entry(&mut inc, kind, &actor, note, data);
                self.apply_one(&inc, e)?;
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
                self.store.apply(&Change {
                    incident: inc.clone(),
                    previous_status: Some(inc.status),
                    entries: vec![e],
                    detection: None,
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
                self.store.apply(&Change {
                    incident: inc.clone(),
                    previous_status: Some(inc.status),
                    entries,
                    detection: None,
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
                self.store.apply(&Change {
                    incident: inc.clone(),
                    previous_status: None,
                    entries,
                    detection: None,
                    index_keys: Vec::new(),
                })?;
                self.telemetry.incidents_created.inc();
                tracing::info!(incident = id, key = %inc.key, severity = %inc.severity, actor = %actor, "incident created by hand");
                Ok(inc)
            }
        }
    }

    fn on_silence(&mut self, cmd: SilenceCommand) -> Result<Silence, IncidentError> {
        let now = self.now;
        match cmd {
            SilenceCommand::Create { silence, actor } => {
                let silence = silence
                    .into_silence(self.next_silence, &actor, now)
                    .map_err(IncidentError::Invalid)?;
                self.store.put_silence(&silence)?;
                self.next_silence += 1;
                tracing::info!(silence = silence.id, actor = %actor, matchers = ?silence.matchers,
                    starts_at = %silence.starts_at, ends_at = %silence.ends_at, comment = %silence.comment,
                    "silence created");
                self.silences.push(silence.clone());
                if silence.state(now) == SilenceState::Active {
                    self.sweep_silence(&silence, now);
                }
                Ok(silence)
            }
            SilenceCommand::Expire { id, actor } => {
                let s = self
                    .silences
                    .iter_mut()
                    .find(|s| s.id == id)
                    .ok_or(IncidentError::SilenceNotFound { id })?;
                if s.state(now) == SilenceState::Expired {
                    return Err(IncidentError::SilenceExpired { id });
                }
                let mut changed = s.clone();
                changed.ends_at = now;
                changed.starts_at = changed.starts_at.min(now);
                changed.expired_by = Some(actor.clone());
                self.store.put_silence(&changed)?;
                *s = changed.clone();
                tracing::info!(silence = id, actor = %actor, "silence expired by hand");
                Ok(changed)
            }
        }
    }

    /// Records an active silence on the active incidents it covers. Best effort: the
    /// silence itself is already stored, and a failure here is logged and counted.
    fn sweep_silence(&mut self, silence: &Silence, now: Timestamp) {
        self.swept.insert(silence.id);
        let query = super::port::ListQuery {
            status: vec![Status::Open, Status::Acknowledged, Status::Mitigated],
            ..Default::default()
        };
        let mut covered = Vec::new();
        let scanned = self.store.scan(&query, &mut |i| {
            if silence.matchers.matches(&i) && !i.silenced_by.contains(&silence.id) {
                covered.push(i);
            }
            true
        });
        let mut result = scanned.map_err(IncidentError::from);
        for mut inc in covered {
            if result.is_err() {
                break;
            }
            let mut entries = Vec::new();
            self.note_silences(&mut inc, &mut entries, now);
            if !entries.is_empty() {
                result = self
                    .store
                    .apply(&Change {
                        incident: inc.clone(),
                        previous_status: Some(inc.status),
                        entries,
                        detection: None,
                        index_keys: Vec::new(),
                    })
                    .map_err(IncidentError::from);
            }
        }
        if let Err(e) = result {
            self.telemetry.store_errors.inc();
            tracing::error!(silence = silence.id, error = %e, "could not record the silence on the incidents it covers");
        }
    }

    /// Silences that became active since the last look (they were pending) are recorded on
    /// the incidents they cover.
    fn sweep_new_silences(&mut self) {
        let now = self.now;
        let due: Vec<Silence> = self
            .silences
            .iter()
            .filter(|s| s.state(now) == SilenceState::Active && !self.swept.contains(&s.id))
            .cloned()
            .collect();
        for s in due {
            self.sweep_silence(&s, now);
        }
    }

    /// Forgets silences expired longer than the retention.
    fn prune_silences(&mut self) -> Result<(), IncidentError> {
        let now = self.now;
        let keep = super::silence::EXPIRED_RETENTION;
        let old: Vec<u64> = self
            .silences
            .iter()
            .filter(|s| now >= s.ends_at && now.since(s.ends_at) >= keep)
            .map(|s| s.id)
            .collect();
        for id in &old {
            self.store.remove_silence(*id)?;
        }
        self.silences.retain(|s| !old.contains(&s.id));
        Ok(())
    }

    /// Records, once per silence, that an active silence covers `inc`: its notifications and
    /// automatic actions are held back while the silence lasts.
    fn note_silences(&self, inc: &mut Incident, entries: &mut Vec<TimelineEntry>, now: Timestamp) {
        if !inc.status.is_active() {
            return;
        }
        for s in &self.silences {
            if !s.silences(inc, now) || inc.silenced_by.contains(&s.id) {
                continue;
            }
            inc.silenced_by.push(s.id);
            let data = serde_json::json!({
                "silence": s.id,
                "comment": s.comment,
                "created_by": s.created_by,
                "ends_at": s.ends_at,
                "suppressed": ["notifications", "actions"],
            });
            let note = Some(format!(
                "silenced by silence {} until {} ({}): notifications and automatic actions held back",
                s.id, s.ends_at, s.comment
            ));
            entries.push(self.entry(inc, EntryKind::Silenced, SYSTEM_ACTOR, note, data));
            tracing::info!(
                incident = inc.id,
                silence = s.id,
                "incident covered by a silence"
            );
        }
    }

    /// One timeline entry on an existing incident whose status did not change.
    fn apply_one(&self, inc: &Incident, e: TimelineEntry) -> Result<(), IncidentError> {
        self.store.apply(&Change {
            incident: inc.clone(),
            previous_status: Some(inc.status),
            entries: vec![e],
            detection: None,
            index_keys: Vec::new(),
        })?;
        Ok(())
    }

    fn allocate_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Attaches a detection to the open incident of its key, reopens a recently resolved
    /// one, or creates a new incident (rate-limited per key).
    /// Returns what the detection did.
    fn on_detection(&mut self, d: &Detection) -> Result<Outcome, IncidentError> {
        let applied_id = d.idempotency_id().map(|mut id| {
            id.applied_at = self.now;
            id
        });
        if let Some(id) = &applied_id
            && self.store.detection_applied(id)?
        {
            // Replayed after a crash: its effect is already stored.
            self.telemetry.detections_replayed.inc();
            tracing::debug!(rule = %d.rule, key = %d.key, id = ?applied_id, "detection already applied; skipped");
            return Ok(Outcome::Replayed);
        }
        let now = self.now;
        if let Some(id) = self.store.latest_for_key(&d.key)? {
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
        attach(&mut inc, &facts, now);
        let detection = self.detection_entry(&mut inc, d);
        let mut entries = vec![created, detection];
        self.note_silences(&mut inc, &mut entries, now);
        self.store.apply(&Change {
            incident: inc,
            previous_status: None,
            entries,
            detection: applied_id,
            index_keys: Vec::new(),
        })?;
        self.telemetry.incidents_created.inc();
        tracing::info!(incident = id, key = %d.key, rule = %d.rule, severity = %d.severity, "incident created");
        Ok(Outcome::Created(id))
    }

    /// Attaches a detection to an incident: the one of its key (`Same`), reopening it
    /// (`Reopen`), or another key's by correlation.
    fn join(
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
        attach(&mut inc, &facts, now);
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
        entries.push(self.detection_entry(&mut inc, d));
        self.note_silences(&mut inc, &mut entries, now);
        self.store.apply(&Change {
            incident: inc,
            previous_status: Some(from),
            entries,
            detection: applied_id,
            index_keys,
        })?;
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
    fn find_correlated(
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

    fn auto_resolve(&mut self) -> Result<(), IncidentError> {
        let now = self.now;
        let query = super::port::ListQuery {
            status: vec![Status::Open, Status::Acknowledged, Status::Mitigated],
            ..Default::default()
        };
        let mut due = Vec::new();
        self.store.scan(&query, &mut |i| {
            if let (Some(ms), Some(last)) = (i.resolve_after_ms, i.last_detection_at)
                && now.millis() - last.millis() >= ms as i64
            {
                due.push((i.id, ms));
            }
            true
        })?;
        for (id, ms) in due {
            let note = format!(
                "resolved automatically: no detection for {}",
                humantime::format_duration(std::time::Duration::from_millis(ms))
            );
            self.on_command(Command::Transition {
                id,
                transition: Transition::Resolve,
                note: Some(note),
                actor: SYSTEM_ACTOR.into(),
            })?;
        }
        Ok(())
    }

    /// The ids of the incidents in `status` for which `due` holds.
    fn ids_where(
        &self,
        status: Status,
        due: impl Fn(&Incident) -> bool,
    ) -> Result<Vec<u64>, IncidentError> {
        let query = super::port::ListQuery {
            status: vec![status],
            ..Default::default()
        };
        let mut ids = Vec::new();
        self.store.scan(&query, &mut |i| {
            if due(&i) {
                ids.push(i.id);
            }
            true
        })?;
        Ok(ids)
    }

    /// Deletes closed incidents whose closing is older than `retain_closed`.
    fn compact(&mut self) -> Result<(), IncidentError> {
        let now = self.now;
        let keep = self.config.retain_closed;
        let old = self.ids_where(Status::Closed, |i| {
            i.closed_at.is_some_and(|c| now.since(c) >= keep)
        })?;
        for id in &old {
            self.store.remove_incident(*id)?;
        }
        if !old.is_empty() {
            tracing::info!(removed = old.len(), retain_closed = ?keep, "compacted old closed incidents");
        }
        Ok(())
    }

    /// Closes incidents resolved at least `auto_close_after` ago (actor `system`).
    fn auto_close(&mut self) -> Result<(), IncidentError> {
        let now = self.now;
        let after = self.config.auto_close_after;
        let due = self.ids_where(Status::Resolved, |i| {
            i.resolved_at.is_some_and(|r| now.since(r) >= after)
        })?;
        for id in due {
            let note = format!(
                "closed automatically: resolved for {}",
                humantime::format_duration(after)
            );
            self.on_command(Command::Transition {
                id,
                transition: Transition::Close,
                note: Some(note),
                actor: SYSTEM_ACTOR.into(),
            })?;
        }
        Ok(())
    }

    /// An external alert: a detection of the pseudo-rule `alert`, through the same dedup,
    /// reopen, severity and rate-limit path as the rules' detections.
    fn on_alert(&mut self, a: ExternalAlert, actor: &str) -> Result<Outcome, IncidentError> {
        if a.key.trim().is_empty() || a.summary.trim().is_empty() {
            return Err(IncidentError::Invalid(
                "an alert needs a `key` and a `summary`".into(),
            ));
        }
        let now = self.now;
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

    fn detection_entry(&self, inc: &mut Incident, d: &Detection) -> TimelineEntry {
        let mut data = serde_json::json!({
            "id": d.idempotency_text(),
            "summary": d.summary,
            "count": d.count,
            "event_ts": d.ts,
            "labels": d.labels,
            "message": d.message,
        });
        if let (Some(map), Ok(serde_json::Value::Object(facts))) = (
            data.as_object_mut(),
            serde_json::to_value(Attach::of(d, self.config.evidence_samples)),
        ) {
            map.extend(facts);
        }
        self.entry(inc, EntryKind::Detection, SYSTEM_ACTOR, None, data)
    }

    fn allow_creation(&mut self, key: &str, now: Timestamp) -> bool {
        // Re-alert backoff: the n-th new incident of a streak waits the (n-1)-th step after
        // the previous one; a key quiet for twice the last step starts over.
        let steps = self.config.realert_backoff.clone();
        let streak = match (steps.last(), self.backoff.get(key)) {
            (Some(last), Some(&(n, at))) if now.since(at) < *last * 2 => {
                if now.since(at) < steps[(n - 1).min(steps.len() - 1)] {
                    return false;
                }
                n
            }
            _ => 0,
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

    fn within_rate_limit(&mut self, key: &str, now: Timestamp) -> bool {
        let limit = self.config.rate_limit;
        self.created_per_key
            .admit(&key.to_owned(), now, limit.max as usize, limit.per)
            .is_ok()
    }
}

/// Keeps the first half of `max` evidence events and the latest ones after them.
fn keep_evidence(inc: &mut Incident, ev: &crate::event::Event, max: usize) {
    if max == 0 {
        return;
    }
    // The first half stays; the oldest of the latest part goes (with one slot, the first).
    let first = (max / 2).max(1).min(max);
    while inc.evidence.len() >= max {
        if first >= max {
            return;
        }
        inc.evidence.remove(first);
    }
    inc.evidence.push(ev.clone());
}

/// What attaching a detection changes in its incident. Stored in the `detection` timeline
/// entry (with the entry's other fields), so the log replays to the snapshot.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
        }
    }
}

pub(super) fn attach(inc: &mut Incident, d: &Attach, now: Timestamp) {
    if let Some(ev) = &d.evidence {
        keep_evidence(inc, ev, d.evidence_max);
    }
    inc.last_detection_at = Some(now);
    if let Some(ms) = d.resolve_after_ms {
        inc.resolve_after_ms = Some(inc.resolve_after_ms.map_or(ms, |m| m.max(ms)));
    }
    inc.detections += 1;
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
