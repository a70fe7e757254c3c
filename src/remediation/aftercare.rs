//! After a run: verification, reverts (timed and on resolve), expiry of pending approvals,
//! runs a crash interrupted, and the housekeeping pass that finds what is due.

use super::*;

impl Shared {
    /// After `verify_after`: a detection since the run means it did not help.
    pub(super) async fn verify(
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
    pub(super) async fn revert(&self, action: &ActionConfig, policy: &RemediationConfig, id: u64) {
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
    pub(super) async fn drop_revert(&self, mut run: ActionRun) {
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

    pub(super) async fn reverts_on_resolve(
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
    pub(super) fn start_revert(self: &Arc<Self>, c: &Config, run: ActionRun) {
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
    pub(super) async fn expire(&self, run: ActionRun) {
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
    pub(super) async fn interrupted(&self) -> std::collections::HashSet<u64> {
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
    pub(super) async fn housekeep(self: &Arc<Self>, c: &Config) {
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
            } else if (run
                .finished_at
                .is_some_and(|f| now.since(f) >= RUN_RETENTION)
                || matches!(run.state, RunState::Denied | RunState::Expired)
                    && run
                        .decided_at
                        .is_some_and(|d| now.since(d) >= RUN_RETENTION))
                && let Err(e) = self.store.remove_action_run(run.id)
            {
                self.telemetry
                    .store_error("could not forget an old action run", &e);
            }
        }
        self.reverts_waiting
            .store(!waiting_for_resolve.is_empty(), Ordering::Release);
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
