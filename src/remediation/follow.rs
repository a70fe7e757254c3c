//! Remediation as a follower of the durable change log.

use super::*;

/// Remediation's place in the change log, how it reads triggers off it, and the runs
/// started for entries after its saved place (which a crash makes it read again).
pub(super) struct Follower {
    cursor: u64,
    /// The place last written to the store, and when.
    stored: (u64, std::time::Instant),
    triggers: Triggers,
    started: Started,
}

/// The place is written at most this often (and at shutdown): each write is a sled write
/// beside the manager's, and a place lost in a crash only makes entries be read again.
const STORE_PLACE_EVERY: Duration = Duration::from_secs(5);

/// (incident, action, change) of runs started for change-log entries after the cursor.
pub(super) type Started = std::collections::HashSet<(u64, String, u64)>;

impl Follower {
    /// `cut_off`: runs a crash interrupted (reported in the timeline as interrupted). When
    /// their entries lie after the stored place they start them again, the one case where an
    /// entry runs an action twice.
    pub(super) fn start(
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
        let runs = shared.store.action_runs()?;
        // Approvals still pending: entries read again must not propose them twice.
        shared
            .pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(
                runs.iter()
                    .filter(|r| r.state == RunState::Pending)
                    .map(|r| (r.incident_id, r.action.clone())),
            );
        let started = runs
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
            stored: (cursor, std::time::Instant::now()),
            triggers,
            started,
        })
    }

    /// Acts on every durable entry after the cursor, saving the cursor after each batch. A
    /// failure leaves the cursor where it was; the next tick tries again.
    pub(super) async fn follow(&mut self, shared: &Arc<Shared>, c: &Config, feed: &ChangeFeed) {
        // No rule binds an action and no run waits for an end to be reverted: no entry can
        // start anything, so the entries need not be read.
        if c.rule_actions.is_empty()
            && !shared
                .reverts_waiting
                .load(std::sync::atomic::Ordering::Acquire)
        {
            let durable = feed.durable();
            if durable > self.cursor && self.save(shared, durable) {
                self.triggers = Triggers::default();
            }
            return;
        }
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
            // Read again from the start of the batch after a failure: so is the opening state.
            let rewind = self.triggers.clone();
            for e in &batch.entries {
                let Some(t) = self.triggers.of(e) else {
                    continue;
                };
                match shared.on_trigger(c, &t, &mut self.started).await {
                    Ok(()) => {}
                    // Gone (compacted) or unreadable for good: nothing to run, and retrying
                    // would stop every later action.
                    Err(RemediationError::IncidentNotFound { .. }) => {}
                    Err(RemediationError::Store(e)) if !e.unavailable() => {
                        shared.telemetry.store_error(
                            "an action trigger's incident cannot be read; skipped",
                            &e,
                        );
                    }
                    Err(err) => {
                        shared.telemetry.store_errors.inc();
                        tracing::error!(incident = t.incident_id, change = t.change, error = %err, "action trigger failed; tried again later");
                        self.triggers = rewind;
                        return;
                    }
                }
            }
            if !self.save(shared, batch.upto) {
                return;
            }
        }
    }

    /// Moves the place to `upto`. Not flushed here: every run the entries started was
    /// saved (and flushed) before it began, and a place lost in a crash only makes the
    /// entries read again, where the runs' change numbers start nothing twice.
    fn save(&mut self, shared: &Shared, upto: u64) -> bool {
        self.cursor = upto;
        self.started.retain(|(_, _, change)| *change > upto);
        if self.stored.1.elapsed() >= STORE_PLACE_EVERY {
            self.store(shared);
        }
        true
    }

    /// Writes the place if it moved since the last write (also at shutdown).
    pub(super) fn store(&mut self, shared: &Shared) {
        if self.stored.0 == self.cursor {
            return;
        }
        match shared.store.set_action_cursor(self.cursor) {
            Ok(()) => self.stored = (self.cursor, std::time::Instant::now()),
            Err(e) => shared
                .telemetry
                .store_error("cannot save remediation's place in the change log", &e),
        }
    }
}
