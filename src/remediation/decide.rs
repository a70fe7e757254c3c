//! Approvals, denials, dry runs and runs by hand.

use super::*;
use crate::incident::SilenceState;

impl Shared {
    pub(super) async fn propose(
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

    pub(super) async fn decide(
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

    pub(super) async fn dry_run(
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

    /// See [`RemediationHandle::available`](super::RemediationHandle::available).
    pub(super) async fn available(
        &self,
        c: &Config,
        incident_id: u64,
    ) -> Result<serde_json::Value, RemediationError> {
        let inc = self.incident(incident_id).await?;
        let now = self.clock.now();
        let bound: std::collections::BTreeSet<&str> = inc
            .rules
            .iter()
            .filter_map(|r| c.rule_actions.get(r))
            .flatten()
            .map(String::as_str)
            .collect();
        let silence = self
            .store
            .silences()?
            .into_iter()
            .find(|s| s.state(now) == SilenceState::Active && s.matchers.matches(&inc));
        let ctx = action::context(&inc);
        let mut ids: Vec<&String> = c.actions.keys().collect();
        ids.sort();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let a = &c.actions[id];
            let approval = if !a.common.safe {
                Some("unsafe action: an admin must approve it".to_owned())
            } else if c.policy.require_approval_for.contains(&inc.severity)
                && !a.common.auto_even_for_sev1
            {
                Some(format!(
                    "{} incidents need an admin's approval even for safe actions",
                    inc.severity
                ))
            } else {
                None
            };
            // As the trigger path decides: a silence holds everything; the breaker holds only
            // what would run by itself (an approved run is a person's decision).
            let held = silence
                .as_ref()
                .map(|s| format!("silenced by silence {} ({})", s.id, s.comment))
                .or_else(|| {
                    approval
                        .is_none()
                        .then(|| self.breaker_holds(a, &inc.key, now))
                        .flatten()
                });
            let policy = match (&held, &approval) {
                (Some(_), _) => "held",
                (None, Some(_)) => "approval",
                (None, None) => "automatic",
            };
            let (plan, cannot) = match action::plan(&a.op, &ctx) {
                Ok(p) => (json!(p.redacted()), None),
                Err(e) => (serde_json::Value::Null, Some(e.to_string())),
            };
            out.push(json!({
                "action": id,
                "kind": a.op.kind,
                "bound": bound.contains(id.as_str()),
                "safe": a.common.safe,
                "policy": policy,
                "approval": approval,
                "held": held,
                "plan": plan,
                "cannot_render": cannot,
            }));
        }
        Ok(json!({"incident_id": incident_id, "actions": out}))
    }

    pub(super) async fn by_hand(
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
}
