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
    EntryKind, Incident, NewSilence, Severity, Silence, Status, TimelineEntry, Transition,
};
use crate::clock::{Clock, Timestamp};
use crate::engine::Detection;
use crate::incident::config::IncidentsConfig;
use crate::telemetry::Telemetry;

/// The user name recorded for the daemon's own changes.
pub const SYSTEM_ACTOR: &str = "system";

/// Most messages applied under one flush (detections of one incident within it are written
/// together: see `coalesce`).
const MAX_BATCH: usize = 2048;

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
    /// Change the title (responders).
    Retitle {
        id: u64,
        title: String,
        actor: String,
    },
    /// Move incident `id` into `into`: its detections and keys follow, it is closed with a
    /// pointer (responders).
    Merge { id: u64, into: u64, actor: String },
    /// Take a key correlated into `id` out into a new incident (responders).
    Split { id: u64, key: String, actor: String },
    /// Replace the stored post-mortem (responders).
    Postmortem {
        id: u64,
        text: String,
        actor: String,
    },
    /// Move the response stage (responders); back only with a note.
    Stage {
        id: u64,
        stage: super::Stage,
        note: Option<String>,
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
    /// A resolved alert ended the active incident of its key.
    Resolved(u64),
    /// A resolved alert found no active incident of its key (already resolved, or never
    /// raised): nothing to do, as often as it is sent.
    NothingToResolve,
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
            | Outcome::Correlated(id)
            | Outcome::Resolved(id) => Some(id),
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
    /// What is wrong (needed unless the alert resolves).
    #[serde(default)]
    pub summary: String,
    /// `firing` (the default) or `resolved`: a resolved alert resolves the active incident
    /// of its key, as Alertmanager's clients send them.
    #[serde(default)]
    pub status: AlertStatus,
    /// An end in the past resolves too.
    #[serde(default)]
    pub ends_at: Option<crate::clock::Timestamp>,
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

/// Whether an external alert fires or has ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    #[default]
    Firing,
    Resolved,
}

/// A change to the silences (admins).
#[derive(Debug)]
pub enum SilenceCommand {
    Create {
        silence: Box<NewSilence>,
        actor: String,
    },
    /// Ends an active or pending silence now.
    Expire { id: u64, actor: String },
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
        coalesced: Default::default(),
        recent: Default::default(),
    };
    tracker.spawn_blocking(move || manager.run(rx));
    Ok(IncidentHandle { tx, changes })
}

pub(super) struct Manager {
    pub(super) store: Arc<dyn Store>,
    /// Publishes the highest durable change number after each flush.
    pub(super) changes: tokio::sync::watch::Sender<u64>,
    /// The `[[service]]` dependency graph.
    pub(super) graph: super::correlate::Graph,
    /// The time of the message being handled.
    pub(super) now: Timestamp,
    /// Every stored silence (active, pending, and expired within the retention).
    pub(super) silences: Vec<Silence>,
    pub(super) next_silence: u64,
    /// Active silences already recorded on the incidents they cover (since this start).
    pub(super) swept: std::collections::HashSet<u64>,
    pub(super) config: IncidentsConfig,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) telemetry: Arc<Telemetry>,
    pub(super) next_id: u64,
    /// Recent creation times per key, for the creation rate limit.
    pub(super) created_per_key: crate::rate_window::RateWindow<String>,
    /// Per key: new incidents in the current streak and when the last one was created.
    pub(super) backoff: HashMap<String, (usize, Timestamp)>,
    /// The active incidents as correlation sees them.
    pub(super) active: super::correlate::ActiveIndex,
    /// Detections of this batch joining their own key's active incident, not yet written.
    pub(super) coalesced: super::coalesce::Coalesced,
    /// Incidents as this manager last wrote them, not read back from the store.
    pub(super) recent: std::cell::RefCell<super::recent::Recent>,
}

pub(super) type Reply = oneshot::Sender<Result<Incident, IncidentError>>;

/// A reply waiting for the batch's flush, with what it will say.
pub(super) type Pending<T> = (
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
pub(super) enum Join {
    Same,
    Reopen,
    Correlated(String),
}

impl Manager {
    /// After a failed flush: lets the store reopen itself from disk (sled keeps failing
    /// otherwise, even once there is room again), then reads back what this manager keeps in
    /// memory, since the batches that failed are not on disk. The next batch tries again if
    /// this did not work.
    pub(super) fn heal(&mut self) -> bool {
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
                // The store is back at its last flush; what was written since is not.
                self.recent.get_mut().clear();
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

    pub(super) fn run(&mut self, mut rx: mpsc::Receiver<Msg>) {
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
                if !matches!(m, Msg::Detection(_)) {
                    // Everything else reads the store as if each detection was written alone.
                    self.settle();
                }
                match m {
                    Msg::Detection(d) => {
                        match self.on_detection(&d) {
                            // Latency counts detections that changed an incident.
                            Ok(o) if o.changed() => {
                                timings.push((d.arrived, d.detected));
                            }
                            Ok(_) => {}
                            Err(e) => self.telemetry.store_error(
                                &format!("could not record detection {} of rule {}", d.key, d.rule),
                                &e,
                            ),
                        }
                        // Applied again, in order, if the store heals before the next flush.
                        unflushed.keep_detection(d);
                    }
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
                        if let Err(e) = self.write_stale_folds() {
                            self.telemetry
                                .store_error("writing folded detections failed", &e);
                        }
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
                        if let Err(e) = self.check_slas() {
                            self.telemetry.store_error("checking SLAs failed", &e);
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
                        unflushed.keep_checkpoint(bytes, coverage);
                    }
                }
                if n < MAX_BATCH {
                    msg = again.pop_front().or_else(|| rx.try_recv().ok());
                }
            }
            self.settle();
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

    pub(super) fn load(&self, id: u64) -> Result<Incident, IncidentError> {
        if let Some(inc) = self.coalesced.incident(id) {
            return Ok(inc.clone());
        }
        if let Some(inc) = self.recent.borrow_mut().take(id) {
            return Ok(inc);
        }
        self.store
            .incident(id)?
            .ok_or(IncidentError::NotFound { id })
    }

    /// Writes the detections gathered in this batch (one change per incident). A change that
    /// cannot be written is counted and logged as each detection's would have been.
    pub(super) fn settle(&mut self) {
        // Every write of the store comes after a settle: what it said of keys may change.
        self.coalesced.forget_keys();
        if self.coalesced.is_empty() {
            return;
        }
        let changes = self.coalesced.take();
        let gathered: usize = changes.iter().map(|c| c.detections.len().max(1)).sum();
        if let Err(e) = self.store.apply_many(&changes) {
            self.telemetry.store_error(
                &format!(
                    "could not record {gathered} detection(s) of {} incident(s)",
                    changes.len()
                ),
                &e,
            );
        } else {
            self.telemetry
                .detections_coalesced
                .add(gathered.saturating_sub(changes.len()) as u64);
            let recent = self.recent.get_mut();
            for change in changes {
                recent.keep(change.incident);
            }
        }
    }

    /// Writes one change to the store. Every write but a batch's goes through here, so the
    /// incident it changes is no longer taken from [`Manager::recent`].
    pub(super) fn write(&self, change: &Change) -> Result<(), StoreError> {
        // Every write outside the batch comes after a settle, which forgets what the store
        // said of keys: a write here could change it.
        debug_assert!(
            !self.coalesced.holds_keys(),
            "an incident write while the batch keeps the store's answers for keys"
        );
        self.recent.borrow_mut().forget(change.incident.id);
        self.store.apply(change)
    }

    pub(super) fn entry(
        &self,
        inc: &mut Incident,
        kind: EntryKind,
        actor: &str,
        note: Option<String>,
        data: impl Into<crate::incident::EntryData>,
    ) -> TimelineEntry {
        let data = data.into();
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
}

/// The manager over the in-memory port: decisions checked without a disk.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::port::memory::MemoryIncidents;
    use crate::incident::port::{IncidentLog, ListQuery};

    fn detection(key: &str, ts: i64) -> Detection {
        serde_json::from_value(serde_json::json!({
            "rule": "ssh", "severity": "sev3", "key": key, "summary": format!("brute force {key}"),
            "ts": ts, "first_ts": ts, "count": 5, "group": {"ip": key}, "labels": {"ip": key},
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn detections_dedup_by_key_and_the_rate_limit_holds_new_incidents() {
        let store = Arc::new(MemoryIncidents::default());
        let tracker = tokio_util::task::TaskTracker::new();
        let config = IncidentsConfig {
            realert_backoff: Vec::new(),
            reopen_window: std::time::Duration::ZERO,
            rate_limit: crate::incident::config::RateLimit {
                max: 2,
                per: std::time::Duration::from_secs(3600),
            },
            ..IncidentsConfig::default()
        };
        let telemetry = Arc::new(Telemetry::default());
        let handle = spawn(
            store.clone(),
            config,
            Arc::new(crate::clock::SystemClock),
            telemetry.clone(),
            64,
            &tracker,
        )
        .unwrap();
        let tx = handle.sender();
        let now = crate::clock::SystemClock.now().millis();
        for (i, key) in ["a", "a", "b"].iter().enumerate() {
            tx.send(Msg::Detection(detection(key, now + i as i64)))
                .await
                .unwrap();
        }
        assert!(handle.ping().await);
        let all = ListQuery {
            limit: 100,
            ..ListQuery::default()
        };
        let page = store.list(&all).unwrap();
        let mut seen: Vec<(String, u64)> = page
            .incidents
            .iter()
            .map(|i| (i.key.clone(), i.detections))
            .collect();
        seen.sort();
        assert_eq!(seen, [("a".to_owned(), 2), ("b".to_owned(), 1)]);
        assert!(store.flushes() >= 1, "answered before a flush");
        // Cancel both and raise "a" twice more: one new incident, the next held by the limit
        // (two per hour, one used).
        for inc in &page.incidents {
            handle
                .command(Command::Transition {
                    id: inc.id,
                    transition: Transition::Cancel,
                    note: None,
                    actor: "t".into(),
                })
                .await
                .unwrap();
        }
        for i in 0..2 {
            tx.send(Msg::Detection(detection("a", now + 10 + i)))
                .await
                .unwrap();
            assert!(handle.ping().await);
            handle
                .command(Command::Transition {
                    id: store.latest_for_key("a").unwrap().unwrap(),
                    transition: Transition::Cancel,
                    note: None,
                    actor: "t".into(),
                })
                .await
                .ok();
        }
        assert!(handle.ping().await);
        let a: Vec<_> = store
            .list(&all)
            .unwrap()
            .incidents
            .into_iter()
            .filter(|i| i.key == "a")
            .collect();
        assert_eq!(a.len(), 2, "the second new incident of `a` was held back");
        assert_eq!(telemetry.incidents_rate_limited.get(), 1);
        drop(tx);
        drop(handle);
        tracker.close();
        tracker.wait().await;
    }

    /// A manager with the default configuration on `store`, and the tracker of its task.
    fn start(store: Arc<MemoryIncidents>) -> (IncidentHandle, tokio_util::task::TaskTracker) {
        let tracker = tokio_util::task::TaskTracker::new();
        let handle = spawn(
            store,
            IncidentsConfig::default(),
            Arc::new(crate::clock::SystemClock),
            Arc::new(Telemetry::default()),
            64,
            &tracker,
        )
        .unwrap();
        (handle, tracker)
    }

    /// An incident written by a batch is kept as a value and not read back; a write outside
    /// the batches (here a silence's sweep, which finds its incidents by a scan) must make
    /// the next detection read the store, or that detection would write over the sweep's
    /// timeline entry and drop the silence from the incident.
    #[tokio::test]
    async fn a_detection_after_a_silence_sweep_builds_on_the_sweep() {
        let store = Arc::new(MemoryIncidents::default());
        let (handle, tracker) = start(store.clone());
        let tx = handle.sender();
        let now = crate::clock::SystemClock.now().millis();
        // Created, then joined by a batch (which keeps it).
        for i in 0..2 {
            tx.send(Msg::Detection(detection("a", now + i)))
                .await
                .unwrap();
            assert!(handle.ping().await);
        }
        let silence: crate::incident::NewSilence = serde_json::from_value(serde_json::json!({
            "matchers": {"rule": "ssh"}, "duration": "1h", "comment": "maintenance",
        }))
        .unwrap();
        let silence = handle
            .silence(SilenceCommand::Create {
                silence: Box::new(silence),
                actor: "t".into(),
            })
            .await
            .unwrap();
        tx.send(Msg::Detection(detection("a", now + 2)))
            .await
            .unwrap();
        assert!(handle.ping().await);
        let id = store.latest_for_key("a").unwrap().unwrap();
        let inc = store.incident(id).unwrap().unwrap();
        assert_eq!(inc.detections, 3);
        assert_eq!(inc.silenced_by, [silence.id]);
        let kinds: Vec<EntryKind> = store.timeline(id).unwrap().iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EntryKind::Created,
                EntryKind::Detection,
                EntryKind::Detection,
                EntryKind::Silenced,
                EntryKind::Detection
            ]
        );
        assert_eq!(inc.timeline_len, 5);
        drop(tx);
        drop(handle);
        tracker.close();
        tracker.wait().await;
    }

    /// A batch keeps what the store said of a key only until it writes: three detections
    /// in one batch, for a key whose incident is closed, open one new incident (the first)
    /// that the other two join.
    #[tokio::test]
    async fn a_batch_forgets_what_the_store_said_of_a_key_when_it_writes() {
        let store = Arc::new(MemoryIncidents::default());
        let now = crate::clock::SystemClock.now().millis();
        let mut old = Incident::new(
            1,
            "a".into(),
            "old".into(),
            crate::severity::Severity::Sev3,
            crate::clock::Timestamp(now - 86_400_000),
        );
        old.status = Status::Closed;
        store
            .apply(&Change {
                incident: old,
                previous_status: None,
                entries: Vec::new(),
                detections: Vec::new(),
                index_keys: Vec::new(),
            })
            .unwrap();
        let (handle, tracker) = start(store.clone());
        let tx = handle.sender();
        // Queued before the manager runs (this test's runtime has one thread): one batch.
        for i in 0..3 {
            tx.send(Msg::Detection(detection("a", now + i)))
                .await
                .unwrap();
        }
        assert!(handle.ping().await);
        let id = store.latest_for_key("a").unwrap().unwrap();
        assert_ne!(id, 1);
        assert_eq!(store.incident(id).unwrap().unwrap().detections, 3);
        assert_eq!(store.incident(1).unwrap().unwrap().status, Status::Closed);
        drop(tx);
        drop(handle);
        tracker.close();
        tracker.wait().await;
    }
}
