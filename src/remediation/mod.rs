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
pub mod preflight;
pub mod template;
mod trigger;

mod aftercare;
mod decide;
mod follow;
mod run;

use follow::{Follower, Started};
pub use run::{ActionRun, RunState};

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

/// How a circuit breaker's refusal begins (counted per action for the self-watch).
const BREAKER: &str = "circuit breaker";

/// Finished runs are kept this long (`GET /v1/actions`), then forgotten.
const RUN_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

pub use action::parse_signal;

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
    /// Every configured action for an incident: policy and plan, nothing run.
    Available {
        incident_id: u64,
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

    /// The configured actions for an incident, each with its policy (automatic, approval
    /// needed, or held by the breaker, its cooldown or a silence) and its rendered plan or
    /// why it cannot render.
    pub async fn available(&self, incident_id: u64) -> Result<serde_json::Value, RemediationError> {
        self.ask(|reply| Request::Available { incident_id, reply })
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
    /// Some run waits for its incident to end to be reverted: the follower must read the
    /// log's ends even while no rule binds an action. Set when such a run is saved, cleared
    /// by a housekeeping pass that finds none.
    reverts_waiting: std::sync::atomic::AtomicBool,
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
        // Until the first housekeeping pass has looked.
        reverts_waiting: std::sync::atomic::AtomicBool::new(true),
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
    follower.store(&shared);
    tasks.close();
    // Runs in flight finish (their timeouts bound this); the daemon's shutdown deadline
    // bounds it too.
    tasks.wait().await;
    tracing::debug!("remediation stopped");
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
            Request::Available { incident_id, reply } => {
                let _ = reply.send(self.available(c, incident_id).await);
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
        if run.revert_on_resolve {
            self.reverts_waiting
                .store(true, std::sync::atomic::Ordering::Release);
        }
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
                    if let Err(e) = self.propose(c, &inc, action, reason, t.change).await {
                        // Not proposed: the entry is read again, and must find no pending one.
                        self.pending
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .remove(&(inc.id, id.clone()));
                        return Err(e);
                    }
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
            // Stored before it starts: the cursor moves past its entry only then. Not stored:
            // the breaker forgets the run it just counted, since the entry is read again.
            if let Err(e) = self.save(&run) {
                self.breaker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .forget_last(&(id.clone(), inc.key.clone()));
                return Err(e.into());
            }
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
        let held = self.breaker_holds(action, key, now);
        if held.as_deref().is_some_and(|h| h.starts_with(BREAKER)) {
            self.telemetry.breaker_tripped(&action.common.id);
        }
        if held.is_none() {
            let c = &action.common;
            let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
            b.record(
                &(c.id.clone(), key.to_owned()),
                now,
                c.per,
                c.max_runs as usize,
            );
        }
        held
    }

    /// Why the breaker or the cooldown would hold an automatic run now, if it would;
    /// records nothing.
    fn breaker_holds(&self, action: &ActionConfig, key: &str, now: Timestamp) -> Option<String> {
        let c = &action.common;
        let mut b = self.breaker.lock().unwrap_or_else(|p| p.into_inner());
        let key = (c.id.clone(), key.to_owned());
        let runs = b.count(&key, now, c.per);
        if runs >= c.max_runs as usize {
            return Some(format!(
                "{BREAKER}: {runs} automatic runs within {} for this incident key; held until the oldest ages out",
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
                if let Err(e) = self.save(&run) {
                    self.telemetry
                        .store_error("could not store an action run", &e);
                }
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
                if let Err(e) = self.save(&run) {
                    self.telemetry.store_error("could not store an action run's plan", &e);
                }
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
}
