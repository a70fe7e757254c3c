//! Remediation: actions that incidents run, by themselves when safe, after an admin's
//! approval otherwise, with dry-runs, circuit breakers, reverts and verification.
//!
//! The incident manager sends a [`Trigger`] after each durable change that may start
//! actions (an incident opened or reopened, a detection attached, an incident resolved). The
//! remediation task decides per the policy, records every step as a timeline entry through
//! the manager, and keeps each run (pending approvals included) in the store, so approvals
//! and pending reverts survive restarts. Runs happen on their own tasks under a global
//! concurrency limit: a slow action never stalls the pipeline or another action.

pub mod action;
pub mod config;
pub mod port;
pub mod template;
mod trigger;

pub use trigger::{Trigger, TriggerKind, Triggers};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, Timestamp};
use crate::incident::feed::ChangeFeed;
use crate::incident::{Command, EntryKind, Incident, IncidentHandle, SilenceState};
use crate::remediation::config::{ActionConfig, RemediationConfig, Trigger as On};
use crate::telemetry::Telemetry;
use action::{Outcome, Plan};
use port::{RemediationStore as Store, StoreError};

/// Finished runs are kept this long (`GET /v1/actions`), then forgotten.
const RUN_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

pub use action::parse_signal;

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waits for an admin's approval.
    Pending,
    Denied,
    /// Nobody decided within the approval timeout.
    Expired,
    Running,
    Succeeded,
    Failed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Denied => "denied",
            RunState::Expired => "expired",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            RunState::Pending,
            RunState::Denied,
            RunState::Expired,
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| {
            format!("unknown state `{s}` (expected pending, denied, expired, running, succeeded, failed)")
        })
    }
}

/// One run of an action for an incident, from proposal to result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRun {
    pub id: u64,
    pub incident_id: u64,
    pub action: String,
    pub state: RunState,
    /// Why it runs or waits: "safe action", "unsafe action", "sev1 incidents need approval",
    /// "by hand".
    pub reason: String,
    pub requested_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// When its revert is due (after `revert_after`); cleared once it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_at: Option<Timestamp>,
    /// The revert waits for the incident to resolve.
    #[serde(default)]
    pub revert_on_resolve: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<Outcome>,
    /// When its revert began (kept until it is done: a crash in between is reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_started: Option<Timestamp>,
    /// The change-log entry that started it (0 for runs by hand): read again after a
    /// crash, that entry starts nothing twice.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub change: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ActionRun {
    /// A run as it starts: nothing decided, planned, finished or reverted yet.
    fn new(
        id: u64,
        incident_id: u64,
        action: &str,
        state: RunState,
        reason: String,
        now: Timestamp,
    ) -> ActionRun {
        ActionRun {
            id,
            incident_id,
            action: action.to_owned(),
            state,
            reason,
            requested_at: now,
            expires_at: None,
            decided_by: None,
            decided_at: None,
            plan: None,
            outcome: None,
            finished_at: None,
            revert_at: None,
            revert_on_resolve: false,
            reverted: None,
            revert_started: None,
            change: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RemediationError {
    #[error("action run {id} not found")]
    RunNotFound { id: u64 },
    #[error("no action `{action}` is configured")]
    ActionNotFound { action: String },
    #[error("incident {id} not found")]
    IncidentNotFound { id: u64 },
    #[error("action run {id} is {state}, not pending")]
    NotPending { id: u64, state: &'static str },
    #[error("{0}")]
    Template(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the remediation task has stopped")]
    Unavailable,
}

type Reply<T> = oneshot::Sender<Result<T, RemediationError>>;

/// What travels on the remediation channel.
pub enum Request {
    Approve {
        id: u64,
        actor: String,
        reply: Reply<ActionRun>,
    },
    Deny {
        id: u64,
        actor: String,
        note: Option<String>,
        reply: Reply<ActionRun>,
    },
    DryRun {
        incident_id: u64,
        action: String,
        reply: Reply<serde_json::Value>,
    },
    Run {
        incident_id: u64,
        action: String,
        actor: String,
        reply: Reply<ActionRun>,
    },
    Configure(
        Vec<ActionConfig>,
        RemediationConfig,
        HashMap<String, Vec<String>>,
    ),
}

/// The channel front of the remediation task.
#[derive(Clone)]
pub struct RemediationHandle {
    tx: mpsc::Sender<Request>,
}

impl RemediationHandle {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, RemediationError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| RemediationError::Unavailable)?;
        rx.await.map_err(|_| RemediationError::Unavailable)?
    }

    pub async fn approve(&self, id: u64, actor: String) -> Result<ActionRun, RemediationError> {
        self.ask(|reply| Request::Approve { id, actor, reply })
            .await
    }

    pub async fn deny(
        &self,
        id: u64,
        actor: String,
        note: Option<String>,
    ) -> Result<ActionRun, RemediationError> {
        self.ask(|reply| Request::Deny {
            id,
            actor,
            note,
            reply,
        })
        .await
    }

    pub async fn dry_run(
        &self,
        incident_id: u64,
        action: String,
    ) -> Result<serde_json::Value, RemediationError> {
        self.ask(|reply| Request::DryRun {
            incident_id,
            action,
            reply,
        })
        .await
    }

    pub async fn run(
        &self,
        incident_id: u64,
        action: String,
        actor: String,
    ) -> Result<ActionRun, RemediationError> {
        self.ask(|reply| Request::Run {
            incident_id,
            action,
            actor,
            reply,
        })
        .await
    }

    pub async fn configure(
        &self,
        actions: Vec<ActionConfig>,
        policy: RemediationConfig,
        rule_actions: HashMap<String, Vec<String>>,
    ) -> bool {
        self.tx
            .send(Request::Configure(actions, policy, rule_actions))
            .await
            .is_ok()
    }
}

/// The channel of API requests, made before the task.
pub fn channel() -> (RemediationHandle, mpsc::Receiver<Request>) {
    let (tx, rx) = mpsc::channel(64);
    (RemediationHandle { tx }, rx)
}

struct Shared {
    store: Arc<dyn Store>,
    incidents: IncidentHandle,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    http: reqwest::Client,
    limit: Arc<Semaphore>,
    /// Per (action, incident key): the action's `per`, and the times of recent runs.
    breaker: Mutex<crate::rate_window::RateWindow<(String, String)>>,
    /// (incident, action) pairs with a pending approval: one proposal at a time.
    pending: Mutex<std::collections::HashSet<(u64, String)>>,
    /// A run was saved since the last scan of the stored runs.
    dirty: std::sync::atomic::AtomicBool,
    /// When the last scan found the next expiry or revert due, and when it ran.
    scan: Mutex<(Option<Timestamp>, Option<Timestamp>)>,
    /// Runs, reverts and verifications in flight (waited for at shutdown).
    tasks: tokio_util::task::TaskTracker,
    cancel: CancellationToken,
    next_id: Mutex<u64>,
    /// Taken while a pending run is decided (approve, deny, expire): one decision per run.
    decisions: tokio::sync::Mutex<()>,
    /// A housekeeping pass is under way (the tick skips while one runs).
    housekeeping: std::sync::atomic::AtomicBool,
}

struct Config {
    actions: HashMap<String, ActionConfig>,
    policy: RemediationConfig,
    /// Rule id → its action ids.
    rule_actions: HashMap<String, Vec<String>>,
}

/// The rule → actions map of a rule set.
pub fn rule_actions(rules: &[crate::engine::config::RuleConfig]) -> HashMap<String, Vec<String>> {
    rules
        .iter()
        .filter(|r| !r.common.actions.is_empty())
        .map(|r| (r.common.id.clone(), r.common.actions.clone()))
        .collect()
}

/// Runs the remediation task until `cancel`.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    mut rx: mpsc::Receiver<Request>,
    mut feed: ChangeFeed,
    actions: Vec<ActionConfig>,
    policy: RemediationConfig,
    rule_actions: HashMap<String, Vec<String>>,
    store: Arc<dyn Store>,
    incidents: IncidentHandle,
    clock: Arc<dyn Clock>,
    telemetry: Arc<Telemetry>,
    cancel: CancellationToken,
) {
    let next_id = match store.next_action_run_id() {
        Ok(n) => n,
        Err(e) => {
            tracing::error!(error = %e, "cannot read action runs; remediation is off");
            return;
        }
    };
    let http = match crate::http_client() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client; remediation is off");
            return;
        }
    };
    let shared = Arc::new(Shared {
        limit: Arc::new(Semaphore::new(policy.max_concurrent.max(1))),
        store,
        incidents,
        clock,
        telemetry,
        http,
        breaker: Mutex::new(crate::rate_window::RateWindow::default()),
        next_id: Mutex::new(next_id),
        decisions: tokio::sync::Mutex::new(()),
        housekeeping: std::sync::atomic::AtomicBool::new(false),
        pending: Mutex::new(Default::default()),
        dirty: std::sync::atomic::AtomicBool::new(true),
        scan: Mutex::new((None, None)),
        tasks: tokio_util::task::TaskTracker::new(),
        cancel: cancel.clone(),
    });
    let mut config = Arc::new(Config {
        actions: actions
            .into_iter()
            .map(|a| (a.common.id.clone(), a))
            .collect(),
        policy,
        rule_actions,
    });
    let cut_off = shared.interrupted().await;
    let mut follower = match Follower::start(&shared, &feed, &cut_off) {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(error = %e, "cannot read remediation's place in the change log; remediation is off");
            return;
        }
    };
    let mut feed_open = true;
    let tasks = shared.tasks.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {
                use std::sync::atomic::Ordering;
                // Catches up after a failed read or a trigger that could not be stored.
                follower.follow(&shared, &config, &feed).await;
                if shared
                    .housekeeping
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    let (s, c) = (shared.clone(), config.clone());
                    tasks.spawn(async move {
                        s.housekeep(&c).await;
                        s.housekeeping.store(false, Ordering::Release);
                    });
                }
            }
            open = feed.changed(), if feed_open => {
                feed_open = open;
                follower.follow(&shared, &config, &feed).await;
            }
            req = rx.recv() => {
                let Some(req) = req else { break };
                match req {
                    Request::Configure(actions, policy, rule_actions) => {
                        config = Arc::new(Config {
                            actions: actions.into_iter().map(|a| (a.common.id.clone(), a)).collect(),
                            policy,
                            rule_actions,
                        });
                    }
                    other => {
                        let (s, c) = (shared.clone(), config.clone());
                        tasks.spawn(async move { s.handle(&c, other).await });
                    }
                }
            }
        }
    }
    tasks.close();
    // Runs in flight finish (their timeouts bound this); the daemon's shutdown deadline
    // bounds it too.
    tasks.wait().await;
    tracing::debug!("remediation stopped");
}

/// Remediation's place in the change log, how it reads triggers off it, and the runs
/// started for entries after its saved place (which a crash makes it read again).
struct Follower {
    cursor: u64,
    triggers: Triggers,
    started: Started,
}

/// (incident, action, change) of runs started for change-log entries after the cursor.
type Started = std::collections::HashSet<(u64, String, u64)>;

impl Follower {
    /// `cut_off`: runs a crash interrupted. Their entries start them again (reported in
    /// the timeline as interrupted, the one case where an entry runs an action twice).
    fn start(
        shared: &Shared,
        feed: &ChangeFeed,
        cut_off: &std::collections::HashSet<u64>,
    ) -> Result<Follower, StoreError> {
        // A store that never followed the log starts where the log stood when the daemon
        // started: old incidents start nothing.
        let cursor = match shared.store.action_cursor()? {
            Some(c) => c,
            None => {
                let c = feed.start();
                shared.store.set_action_cursor(c)?;
                shared.store.flush()?;
                c
            }
        };
        let started = shared
            .store
            .action_runs()?
            .into_iter()
            .filter(|r| r.change > cursor && !cut_off.contains(&r.id))
            .map(|r| (r.incident_id, r.action, r.change))
            .collect();
        let mut triggers = Triggers::default();
        // The entry at the cursor may have opened an incident whose detection comes next.
        if let Some(e) = shared.store.entry_by_change(cursor)? {
            let _ = triggers.of(&e);
        }
        Ok(Follower {
            cursor,
            triggers,
            started,
        })
    }

    /// Acts on every durable entry after the cursor, saving the cursor after each batch. A
    /// failure leaves the cursor where it was; the next tick tries again.
    async fn follow(&mut self, shared: &Arc<Shared>, c: &Config, feed: &ChangeFeed) {
        loop {
            let batch = match feed.read(self.cursor, 256).await {
                Ok(b) => b,
                Err(e) => {
                    shared
                        .telemetry
                        .warn_remediation(&format!("cannot read the change log: {e}"));
                    return;
                }
            };
            if batch.upto <= self.cursor {
                return;
            }
            for e in &batch.entries {
                let Some(t) = self.triggers.of(e) else {
                    continue;
                };
                if let Err(err) = shared.on_trigger(c, &t, &mut self.started).await {
                    shared.telemetry.store_errors.inc();
                    tracing::error!(incident = t.incident_id, change = t.change, error = %err, "action trigger failed; tried again later");
                    return;
                }
            }
            // Every run these entries started was saved (and flushed) before it began.
            let saved = shared
                .store
                .set_action_cursor(batch.upto)
                .and_then(|()| shared.store.flush());
            if let Err(e) = saved {
                shared.telemetry.store_errors.inc();
                tracing::error!(error = %e, "cannot save remediation's place in the change log");
                return;
            }
            self.cursor = batch.upto;
            let cursor = self.cursor;
            self.started.retain(|(_, _, change)| *change > cursor);
        }
    }
}

impl Shared {
    async fn handle(self: &Arc<Self>, c: &Config, req: Request) {
        match req {
            Request::Approve { id, actor, reply } => {
                let _ = reply.send(self.decide(c, id, &actor, true, None).await);
            }
            Request::Deny {
                id,
                actor,
                note,
                reply,
            } => {
                let _ = reply.send(self.decide(c, id, &actor, false, note).await);
            }
            Request::DryRun {
                incident_id,
                action,
                reply,
            } => {
                let _ = reply.send(self.dry_run(c, incident_id, &action).await);
            }
            Request::Run {
                incident_id,
                action,
                actor,
                reply,
            } => {
                let _ = reply.send(self.by_hand(c, incident_id, &action, &actor).await);
            }
            Request::Configure(..) => {}
        }
    }

    fn allocate(&self) -> u64 {
        let mut n = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
        let id = *n;
        *n += 1;
        id
    }

    fn save(&self, run: &ActionRun) -> Result<(), StoreError> {
        self.store.put_action_run(run)?;
        self.dirty.store(true, std::sync::atomic::Ordering::Release);
        self.store.flush()
    }

    async fn incident(&self, id: u64) -> Result<Incident, RemediationError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.incident(id))
            .await
            .map_err(|_| RemediationError::Unavailable)??
            .ok_or(RemediationError::IncidentNotFound { id })
    }

    /// Appends a timeline entry through the manager (the only writer of incidents).
    async fn record(
        &self,
        incident_id: u64,
        kind: EntryKind,
        actor: &str,
        note: Option<String>,
        data: serde_json::Value,
    ) {
        let r = self
            .incidents
            .command(Command::Record {
                id: incident_id,
                kind,
                actor: actor.to_owned(),
                note,
                data,
            })
            .await;
        if let Err(e) = r {
            tracing::error!(incident = incident_id, error = %e, "could not record an action step in the timeline");
        }
    }

    async fn on_trigger(
        self: &Arc<Self>,
        c: &Config,
        t: &Trigger,
        started: &mut Started,
    ) -> Result<(), RemediationError> {
        if t.kind == TriggerKind::Resolved {
            return self.reverts_on_resolve(c, t.incident_id).await;
        }
        let Some(rule) = &t.rule else { return Ok(()) };
        let Some(ids) = c.rule_actions.get(rule) else {
            return Ok(());
        };
        let inc = self.incident(t.incident_id).await?;
        let now = self.clock.now();
        for id in ids {
            let Some(action) = c.actions.get(id) else {
                continue;
            };
            let due = match action.common.on {
                On::Open => t.kind == TriggerKind::Opened,
                On::Detection => true,
            };
            if !due || started.contains(&(inc.id, id.clone(), t.change)) {
                continue;
            }
            // Silenced incidents run no automatic actions.
            let silences = self.store.silences()?;
            if let Some(s) = silences
                .iter()
                .find(|s| s.state(now) == SilenceState::Active && s.matchers.matches(&inc))
            {
                self.hold(
                    &inc,
                    id,
                    format!("silenced by silence {} ({})", s.id, s.comment),
                )
                .await;
                continue;
            }
            // A template that fails refuses the run at once (recorded as a failed run with
            // the reason); there is nothing to approve, and nothing runs.
            if let Err(e) = action::plan(&action.op, &action::context(&inc)) {
                started.insert((inc.id, id.clone(), t.change));
                self.refuse(&inc, id, e, t.change).await;
                continue;
            }
            let approval = if !action.common.safe {
                Some("unsafe action: an admin must approve it".to_owned())
            } else if c.policy.require_approval_for.contains(&inc.severity)
                && !action.common.auto_even_for_sev1
            {
                Some(format!(
                    "{} incidents need an admin's approval even for safe actions",
                    inc.severity
                ))
            } else {
                None
            };
            if let Some(reason) = approval {
                let fresh = self
                    .pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert((inc.id, id.clone()));
                // One pending approval per action and incident: later detections do not pile
                // up more.
                if fresh {
                    self.propose(c, &inc, action, reason, t.change).await?;
                    started.insert((inc.id, id.clone(), t.change));
                }
                continue;
            }
            if let Some(why) = self.breaker_refuses(action, &inc.key, now) {
                self.hold(&inc, id, why).await;
                continue;
            }
            let mut run = ActionRun::new(
                self.allocate(),
                inc.id,
                id,
                RunState::Running,
                "safe action, run automatically".into(),
                now,
            );
            run.change = t.change;
            // Stored before it starts: the cursor moves past its entry only then.
            self.save(&run)?;
            started.insert((inc.id, id.clone(), t.change));
            let s = self.clone();
            let action = action.clone();
            let policy = c.policy.clone();
            self.tasks.spawn(async move {
                s.execute(run, &action, &policy, "system", None).await;
            });
        }
        Ok(())
    }

    /// The circuit breaker's and cooldown's refusal, if any; else counts this run.
    fn breaker_refuses(&self, action: &ActionConfig, key: &str, now: Timestamp) -> Option<String> {
        let c = &action.common;
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        let key = (c.id.clone(), key.to_owned());
        let runs = b.count(&key, now, c.per);
        if runs >= c.max_runs as usize {
            return Some(format!(
                "circuit breaker: {runs} automatic runs within {} for this incident key; held until the oldest ages out",
                humantime::format_duration(c.per)
            ));
        }
        if let Some(last) = b.last(&key).filter(|_| runs > 0)
            && now.since(last) < c.cooldown
        {
            return Some(format!(
                "cooldown: the last run was {} ago, the cooldown is {}",
                humantime::format_duration(Duration::from_secs(now.since(last).as_secs())),
                humantime::format_duration(c.cooldown)
            ));
        }
        b.record(&key, now, c.per, c.max_runs as usize);
        None
    }

    /// A run refused before it started (a template failed): stored as failed, with why.
    async fn refuse(&self, inc: &Incident, action: &str, error: String, change: u64) {
        let now = self.clock.now();
        let outcome = Outcome::failed(format!("refused: {error}"));
        let mut run = ActionRun::new(
            self.allocate(),
            inc.id,
            action,
            RunState::Failed,
            "refused before it ran".into(),
            now,
        );
        run.outcome = Some(outcome.clone());
        run.finished_at = Some(now);
        run.change = change;
        if let Err(e) = self.save(&run) {
            tracing::error!(run = run.id, error = %e, "could not store a refused run");
        }
        self.telemetry.action_runs_failed.inc();
        tracing::warn!(incident = inc.id, action, error = %error, "action refused");
        self.record(
            inc.id,
            EntryKind::ActionExecuted,
            "system",
            Some(format!("{action} refused (run {}): {error}", run.id)),
            json!({"run": run.id, "action": action, "result": outcome}),
        )
        .await;
    }

    async fn hold(&self, inc: &Incident, action: &str, reason: String) {
        self.hold_run(inc.id, action, reason).await;
    }

    async fn hold_run(&self, incident_id: u64, action: &str, reason: String) {
        tracing::warn!(incident = incident_id, action, reason = %reason, "action held");
        self.telemetry.action_held.inc();
        self.record(
            incident_id,
            EntryKind::ActionHeld,
            "system",
            Some(format!("{action} held: {reason}")),
            json!({"action": action, "reason": reason}),
        )
        .await;
    }

    async fn propose(
        &self,
        c: &Config,
        inc: &Incident,
        action: &ActionConfig,
        reason: String,
        change: u64,
    ) -> Result<(), RemediationError> {
        let now = self.clock.now();
        let timeout = action
            .common
            .approval_timeout
            .unwrap_or(c.policy.approval_timeout);
        let plan = action::plan(&action.op, &action::context(inc))
            .ok()
            .map(|p| p.redacted());
        let mut run = ActionRun::new(
            self.allocate(),
            inc.id,
            &action.common.id,
            RunState::Pending,
            reason.clone(),
            now,
        );
        run.expires_at = Some(now.saturating_add(timeout));
        run.plan = plan;
        run.change = change;
        self.save(&run)?;
        tracing::info!(incident = inc.id, action = %run.action, run = run.id, "action waits for approval");
        self.record(
            inc.id,
            EntryKind::ActionProposed,
            "system",
            Some(format!(
                "{} waits for approval (run {}): {reason}",
                run.action, run.id
            )),
            json!({"run": run.id, "action": run.action, "reason": reason,
                "expires_at": run.expires_at, "plan": run.plan}),
        )
        .await;
        Ok(())
    }

    async fn decide(
        self: &Arc<Self>,
        c: &Config,
        id: u64,
        actor: &str,
        approve: bool,
        note: Option<String>,
    ) -> Result<ActionRun, RemediationError> {
        let decision = self.decisions.lock().await;
        let mut run = self
            .store
            .action_run(id)?
            .ok_or(RemediationError::RunNotFound { id })?;
        if run.state != RunState::Pending {
            return Err(RemediationError::NotPending {
                id,
                state: run.state.as_str(),
            });
        }
        let now = self.clock.now();
        if run.expires_at.is_some_and(|e| now >= e) {
            drop(decision);
            self.expire(run).await;
            return Err(RemediationError::NotPending {
                id,
                state: RunState::Expired.as_str(),
            });
        }
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(run.incident_id, run.action.clone()));
        run.decided_by = Some(actor.to_owned());
        run.decided_at = Some(now);
        if !approve {
            run.state = RunState::Denied;
            self.save(&run)?;
            drop(decision);
            self.record(
                run.incident_id,
                EntryKind::ActionDenied,
                actor,
                note.clone()
                    .or_else(|| Some(format!("{} denied (run {})", run.action, run.id))),
                json!({"run": run.id, "action": run.action}),
            )
            .await;
            return Ok(run);
        }
        let action = c.actions.get(&run.action).cloned().ok_or_else(|| {
            RemediationError::ActionNotFound {
                action: run.action.clone(),
            }
        })?;
        run.state = RunState::Running;
        self.save(&run)?;
        drop(decision);
        self.record(
            run.incident_id,
            EntryKind::ActionApproved,
            actor,
            Some(format!("{} approved (run {})", run.action, run.id)),
            json!({"run": run.id, "action": run.action}),
        )
        .await;
        // Approved runs count toward the breaker, but a human's decision is not held by it.
        if let Ok(inc) = self.incident(run.incident_id).await {
            let _ = self.breaker_refuses(&action, &inc.key, now);
        }
        let approved = run.plan.clone();
        Ok(self.execute(run, &action, &c.policy, actor, approved).await)
    }

    async fn dry_run(
        &self,
        c: &Config,
        incident_id: u64,
        action: &str,
    ) -> Result<serde_json::Value, RemediationError> {
        let a = c
            .actions
            .get(action)
            .ok_or_else(|| RemediationError::ActionNotFound {
                action: action.to_owned(),
            })?;
        let inc = self.incident(incident_id).await?;
        let plan = action::plan(&a.op, &action::context(&inc))
            .map_err(RemediationError::Template)?
            .redacted();
        let revert = a
            .common
            .revert
            .as_ref()
            .map(|r| action::plan(r, &action::context(&inc)).map(|p| p.redacted()))
            .transpose()
            .map_err(RemediationError::Template)?;
        Ok(json!({
            "incident_id": incident_id,
            "action": action,
            "kind": a.op.kind,
            "safe": a.common.safe,
            "timeout_seconds": a.common.timeout.as_secs_f64(),
            "plan": plan,
            "revert": revert,
            "revert_after_seconds": a.common.revert_after.map(|d| d.as_secs_f64()),
        }))
    }

    async fn by_hand(
        self: &Arc<Self>,
        c: &Config,
        incident_id: u64,
        action: &str,
        actor: &str,
    ) -> Result<ActionRun, RemediationError> {
        let a = c
            .actions
            .get(action)
            .cloned()
            .ok_or_else(|| RemediationError::ActionNotFound {
                action: action.to_owned(),
            })?;
        let inc = self.incident(incident_id).await?;
        // A bad template refuses the run before anything is recorded.
        action::plan(&a.op, &action::context(&inc)).map_err(RemediationError::Template)?;
        let now = self.clock.now();
        let mut run = ActionRun::new(
            self.allocate(),
            incident_id,
            action,
            RunState::Running,
            format!("run by hand by {actor}"),
            now,
        );
        run.decided_by = Some(actor.to_owned());
        run.decided_at = Some(now);
        let _ = self.breaker_refuses(&a, &inc.key, now);
        Ok(self.execute(run, &a, &c.policy, actor, None).await)
    }

    /// Plans and runs, under the concurrency limit; records the result and schedules the
    /// revert and the verification.
    async fn execute(
        self: &Arc<Self>,
        mut run: ActionRun,
        action: &ActionConfig,
        policy: &RemediationConfig,
        actor: &str,
        approved: Option<Plan>,
    ) -> ActionRun {
        let inc = match self.incident(run.incident_id).await {
            Ok(i) => i,
            Err(e) => {
                run.state = RunState::Failed;
                run.outcome = Some(Outcome::failed(e.to_string()));
                let _ = self.save(&run);
                return run;
            }
        };
        let outcome = match action::plan(&action.op, &action::context(&inc)) {
            Err(e) => Outcome::failed(format!("refused: {e}")),
            // What an admin approved is what runs: a plan that changed since (other
            // processes match now, say) is refused, to be proposed or run by hand again.
            Ok(plan) if approved.as_ref().is_some_and(|a| *a != plan.redacted()) => Outcome {
                error: Some(
                    "refused: the plan changed since it was approved (see the proposal and a dry run now); run it by hand if it is still right".into(),
                ),
                ..Outcome::default()
            },
            Ok(plan) => {
                run.plan = Some(plan.redacted());
                let _ = self.save(&run);
                let _permit = self.limit.clone().acquire_owned().await;
                tracing::info!(incident = inc.id, action = %run.action, run = run.id, "action running");
                action::execute(
                    &plan,
                    action.common.timeout,
                    policy.max_output_bytes,
                    &self.http,
                )
                .await
            }
        };
        let now = self.clock.now();
        run.state = if outcome.ok {
            RunState::Succeeded
        } else {
            RunState::Failed
        };
        run.finished_at = Some(now);
        if outcome.ok && action.common.revert.is_some() {
            match action.common.revert_after {
                Some(d) => run.revert_at = Some(now.saturating_add(d)),
                None => run.revert_on_resolve = true,
            }
        }
        run.outcome = Some(outcome.clone());
        if let Err(e) = self.save(&run) {
            tracing::error!(run = run.id, error = %e, "could not store an action result");
        }
        if outcome.ok {
            self.telemetry.action_runs_ok.inc();
        } else {
            self.telemetry.action_runs_failed.inc();
        }
        tracing::info!(incident = inc.id, action = %run.action, run = run.id, ok = outcome.ok,
            error = outcome.error.as_deref().unwrap_or(""), "action finished");
        let note = match &outcome.error {
            None => format!("{} succeeded (run {})", run.action, run.id),
            Some(e) => format!("{} failed (run {}): {e}", run.action, run.id),
        };
        self.record(
            run.incident_id,
            EntryKind::ActionExecuted,
            actor,
            Some(note),
            json!({"run": run.id, "action": run.action, "plan": run.plan, "result": outcome}),
        )
        .await;
        if outcome.ok
            && let Some(after) = action.common.verify_after
        {
            let s = self.clone();
            let (run_id, name, incident_id) = (run.id, run.action.clone(), run.incident_id);
            self.tasks.spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep(after) => {
                        s.verify(incident_id, run_id, &name, now, after).await;
                    }
                    // Not verified when the daemon stops first.
                    () = s.cancel.cancelled() => {}
                }
            });
        }
        // Resolved while it ran: the revert that waits for resolving is due now.
        if run.revert_on_resolve
            && let Ok(i) = self.incident(run.incident_id).await
            && !i.status.is_active()
        {
            let (s, action, policy, id) = (self.clone(), action.clone(), policy.clone(), run.id);
            self.tasks
                .spawn(async move { s.revert(&action, &policy, id).await });
        }
        run
    }

    /// After `verify_after`: a detection since the run means it did not help.
    async fn verify(
        &self,
        incident_id: u64,
        run: u64,
        action: &str,
        ran: Timestamp,
        after: Duration,
    ) {
        let Ok(inc) = self.incident(incident_id).await else {
            return;
        };
        let effective = !inc.status.is_active() || inc.last_detection_at.is_none_or(|t| t <= ran);
        let note = if effective {
            format!(
                "{action} (run {run}) worked: no detection within {} after it",
                humantime::format_duration(after)
            )
        } else {
            format!("{action} (run {run}) was ineffective: detections continued after it")
        };
        self.record(
            incident_id,
            EntryKind::ActionVerified,
            "system",
            Some(note.clone()),
            json!({"run": run, "action": action, "effective": effective}),
        )
        .await;
        if !effective {
            self.telemetry.action_ineffective.inc();
            // Escalate: one severity step up (sev1 stays sev1).
            let raised = match inc.severity {
                crate::incident::Severity::Sev4 => Some(crate::incident::Severity::Sev3),
                crate::incident::Severity::Sev3 => Some(crate::incident::Severity::Sev2),
                crate::incident::Severity::Sev2 => Some(crate::incident::Severity::Sev1),
                crate::incident::Severity::Sev1 => None,
            };
            if let Some(to) = raised {
                let r = self
                    .incidents
                    .command(Command::Severity {
                        id: incident_id,
                        severity: to,
                        note: Some(note),
                        actor: "system".into(),
                    })
                    .await;
                if let Err(e) = r {
                    tracing::error!(incident = incident_id, error = %e, "could not escalate after an ineffective action");
                }
            }
        }
    }

    /// Runs the revert of run `id` once: marked started (and stored) before it runs, so
    /// neither a second caller nor a restart runs it again; a crash in between is reported.
    async fn revert(&self, action: &ActionConfig, policy: &RemediationConfig, id: u64) {
        let mut run = {
            let _decision = self.decisions.lock().await;
            let Ok(Some(mut run)) = self.store.action_run(id) else {
                return;
            };
            if run.revert_at.is_none() && !run.revert_on_resolve {
                return; // done, or being done
            }
            run.revert_at = None;
            run.revert_on_resolve = false;
            run.revert_started = Some(self.clock.now());
            if let Err(e) = self.save(&run) {
                tracing::error!(run = run.id, error = %e, "could not store a revert; not running it");
                return;
            }
            run
        };
        let Some(op) = &action.common.revert else {
            return;
        };
        let outcome = match self.incident(run.incident_id).await {
            Ok(inc) => match action::plan(op, &action::context(&inc)) {
                Ok(plan) => {
                    let _permit = self.limit.clone().acquire_owned().await;
                    action::execute(
                        &plan,
                        action.common.timeout,
                        policy.max_output_bytes,
                        &self.http,
                    )
                    .await
                }
                Err(e) => Outcome::failed(format!("refused: {e}")),
            },
            Err(e) => Outcome::failed(e.to_string()),
        };
        run.reverted = Some(outcome.clone());
        run.revert_started = None;
        if let Err(e) = self.save(&run) {
            tracing::error!(run = run.id, error = %e, "could not store a revert result");
        }
        let note = match &outcome.error {
            None => format!("{} reverted (run {})", run.action, run.id),
            Some(e) => format!("revert of {} failed (run {}): {e}", run.action, run.id),
        };
        tracing::info!(run = run.id, action = %run.action, ok = outcome.ok, "action reverted");
        self.record(
            run.incident_id,
            EntryKind::ActionExecuted,
            "system",
            Some(note),
            json!({"run": run.id, "action": run.action, "revert": true, "result": outcome}),
        )
        .await;
    }

    /// A revert whose action is no longer configured: cleared, and said so.
    async fn drop_revert(&self, mut run: ActionRun) {
        run.revert_at = None;
        run.revert_on_resolve = false;
        if self.save(&run).is_ok() {
            self.hold_run(
                run.incident_id,
                &run.action,
                format!(
                    "revert of run {} skipped: action `{}` is no longer configured",
                    run.id, run.action
                ),
            )
            .await;
        }
    }

    async fn reverts_on_resolve(
        self: &Arc<Self>,
        c: &Config,
        incident_id: u64,
    ) -> Result<(), RemediationError> {
        let due: Vec<ActionRun> = self
            .store
            .action_runs()?
            .into_iter()
            .filter(|r| r.incident_id == incident_id && r.revert_on_resolve)
            .collect();
        for run in due {
            self.start_revert(c, run);
        }
        Ok(())
    }

    /// Starts a due revert on its own task (a slow one holds up nothing else).
    fn start_revert(self: &Arc<Self>, c: &Config, run: ActionRun) {
        let s = self.clone();
        match c.actions.get(&run.action) {
            Some(a) if a.common.revert.is_some() => {
                let (a, policy, id) = (a.clone(), c.policy.clone(), run.id);
                self.tasks
                    .spawn(async move { s.revert(&a, &policy, id).await });
            }
            _ => {
                self.tasks.spawn(async move { s.drop_revert(run).await });
            }
        }
    }

    /// Ends a pending run unanswered.
    async fn expire(&self, run: ActionRun) {
        let mut run = {
            let _decision = self.decisions.lock().await;
            // Decided meanwhile?
            match self.store.action_run(run.id) {
                Ok(Some(r)) if r.state == RunState::Pending => r,
                _ => return,
            }
        };
        run.state = RunState::Expired;
        run.decided_at = Some(self.clock.now());
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(run.incident_id, run.action.clone()));
        if self.save(&run).is_ok() {
            self.record(
                run.incident_id,
                EntryKind::ActionDenied,
                "system",
                Some(format!(
                    "{} expired (run {}): nobody approved it in time",
                    run.action, run.id
                )),
                json!({"run": run.id, "action": run.action, "expired": true}),
            )
            .await;
        }
    }

    /// Runs that were running when incidentd stopped: their result is unknown. Say so.
    async fn interrupted(&self) -> std::collections::HashSet<u64> {
        let mut cut_off = std::collections::HashSet::new();
        let Ok(runs) = self.store.action_runs() else {
            return cut_off;
        };
        for mut run in runs {
            let revert = run.revert_started.is_some() && run.reverted.is_none();
            let error = if revert {
                run.revert_started = None;
                run.reverted = Some(Outcome::failed(
                    "revert interrupted: incidentd stopped while it ran; its effect is unknown, check by hand",
                ));
                &run.reverted
            } else if run.state == RunState::Running {
                cut_off.insert(run.id);
                run.state = RunState::Failed;
                run.finished_at = Some(self.clock.now());
                run.outcome = Some(Outcome::failed(
                    "interrupted: incidentd stopped while it ran; its effect is unknown",
                ));
                &run.outcome
            } else {
                continue;
            };
            let data =
                json!({"run": run.id, "action": run.action, "revert": revert, "result": error});
            let note = format!(
                "{} (run {}): {}",
                run.action,
                run.id,
                error
                    .as_ref()
                    .and_then(|o| o.error.as_deref())
                    .unwrap_or("")
            );
            if self.save(&run).is_ok() {
                self.record(
                    run.incident_id,
                    EntryKind::ActionExecuted,
                    "system",
                    Some(note),
                    data,
                )
                .await;
            }
        }
        cut_off
    }

    /// Each second, when something may be due (a run was saved, an expiry or a revert time
    /// came, or 30 s passed): expire pending approvals, start due reverts (also of runs whose
    /// incident is no longer active: a lost trigger or a crash cannot strand a revert), and
    /// forget old runs.
    async fn housekeep(self: &Arc<Self>, c: &Config) {
        use std::sync::atomic::Ordering;
        let now = self.clock.now();
        {
            let (next_due, last) = *self.scan.lock().unwrap_or_else(|p| p.into_inner());
            let quiet = !self.dirty.load(Ordering::Acquire)
                && next_due.is_none_or(|d| now < d)
                && last.is_some_and(|l| now.since(l) < Duration::from_secs(30));
            if quiet {
                return;
            }
        }
        self.dirty.store(false, Ordering::Release);
        let runs = match self.store.action_runs() {
            Ok(r) => r,
            Err(e) => {
                self.telemetry
                    .warn_remediation(&format!("cannot read action runs: {e}"));
                return;
            }
        };
        let mut next_due: Option<Timestamp> = None;
        let mut pending = std::collections::HashSet::new();
        let mut waiting_for_resolve: Vec<ActionRun> = Vec::new();
        for run in runs {
            if run.state == RunState::Pending {
                match run.expires_at {
                    Some(e) if now >= e => {
                        let s = self.clone();
                        self.tasks.spawn(async move { s.expire(run).await });
                    }
                    e => {
                        if let Some(e) = e {
                            next_due = Some(next_due.map_or(e, |d| d.min(e)));
                        }
                        pending.insert((run.incident_id, run.action.clone()));
                    }
                }
            } else if let Some(t) = run.revert_at {
                if now >= t {
                    self.start_revert(c, run);
                } else {
                    next_due = Some(next_due.map_or(t, |d| d.min(t)));
                }
            } else if run.revert_on_resolve {
                waiting_for_resolve.push(run);
            } else if run
                .finished_at
                .is_some_and(|f| now.since(f) >= RUN_RETENTION)
                || matches!(run.state, RunState::Denied | RunState::Expired)
                    && run
                        .decided_at
                        .is_some_and(|d| now.since(d) >= RUN_RETENTION)
            {
                let _ = self.store.remove_action_run(run.id);
            }
        }
        for run in waiting_for_resolve {
            if let Ok(i) = self.incident(run.incident_id).await
                && !i.status.is_active()
            {
                self.start_revert(c, run);
            }
        }
        self.telemetry.action_pending.set(pending.len() as u64);
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = pending;
        *self.scan.lock().unwrap_or_else(|p| p.into_inner()) = (next_due, Some(now));
    }
}
