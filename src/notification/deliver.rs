//! Delivery: one job through its channel — delivered, retried with backoff, or
//! dead-lettered — and what follows (the timeline, resends, repeats).

use super::*;

/// How often a held job looks again at what holds it.
const HOLD_RECHECK: Duration = Duration::from_secs(1);

impl Shared {
    /// Delivers one job: done, retried later, or dead-lettered.
    pub(super) async fn work(
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
        let mut job = match self.queue.get(job.id) {
            Some(j) if j.next_at <= now => j,
            _ => return,
        };
        let inc = match self.store.incident(job.incident_id) {
            Ok(Some(i)) => i,
            Ok(None) => {
                if let Err(e) = self.queue.remove(self.store.as_ref(), job.id) {
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
            self.forget(job.id).await;
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
        if !self.inhibition(&mut job, &inc, now).await {
            return;
        }
        if let Some(wait) = self.rate_limited(channel, job.peer.as_deref(), now) {
            job.next_at = now.saturating_add(wait);
            if let Err(e) = self.queue.update(self.store.as_ref(), &job) {
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
            peer: job.peer.as_deref(),
        };
        let result = kind.deliver(&ctx, templates, &self.http).await;
        let peer = job.peer.as_deref().map(config::shown_peer);
        // " (peer …)" in what the timeline and the log say of a channel with several peers.
        let to_peer = peer
            .as_deref()
            .map(|p| format!(" (peer {p})"))
            .unwrap_or_default();
        // The channel's figures, and its peer's when it has several.
        let count = |s: &mut crate::telemetry::PeerStats| match &result {
            Ok(_) => {
                s.delivered += 1;
                s.last_error = None;
                s.last_delivered_at = Some(now);
            }
            Err(e) => {
                s.last_error = Some(e.to_string());
                if e.permanent() || now.since(job.created_at) >= channel.max_age {
                    s.dead_lettered += 1;
                } else {
                    s.failed_attempts += 1;
                }
            }
        };
        self.telemetry.channel(&channel.id, count);
        if let Some(p) = &peer {
            self.telemetry.peer(&channel.id, p, count);
        }
        match result {
            Ok(outcome) => {
                self.telemetry.notifications_delivered.inc();
                tracing::info!(incident = inc.id, channel = %channel.id, peer = peer.as_deref(), event = job.event.as_str(), attempts = job.attempts, "notification delivered");
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
                if let Some(p) = &peer {
                    data["peer"] = json!(p);
                }
                if let Some((esc, step)) = &job.escalation {
                    data["escalation"] = json!(esc);
                    data["step"] = json!(step);
                }
                // Resends keep an alert alive; they are not news for the timeline.
                if job.event != NotifyEvent::Resend {
                    let note = match &job.escalation {
                        Some((esc, step)) => {
                            format!(
                                "escalation {esc} step {} sent to {}{to_peer}",
                                step + 1,
                                channel.id
                            )
                        }
                        None => format!("{} sent to {}{to_peer}", job.event.as_str(), channel.id),
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
                    self.ensure_resend(channel, job.peer.as_deref(), &inc, now);
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
                    tracing::error!(incident = inc.id, channel = %channel.id, peer = peer.as_deref(), attempts = job.attempts, error = %e, why, "notification dead-lettered");
                    self.forget(job.id).await;
                    let mut data = json!({"channel": channel.id, "event": job.event.as_str(),
                        "status": "dead_lettered", "reason": why, "attempts": job.attempts,
                        "error": e.to_string()});
                    if let Some(p) = &peer {
                        data["peer"] = json!(p);
                    }
                    if let serde_json::Value::Object(answer) = e.data() {
                        data["answer"] = serde_json::Value::Object(answer);
                    }
                    self.record(
                        inc.id,
                        format!(
                            "{} to {}{to_peer} given up after {} attempt{} ({why}): {e}",
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
                tracing::warn!(incident = inc.id, channel = %channel.id, peer = peer.as_deref(), attempts = job.attempts, retry_in = ?delay, error = %e, "notification failed; will retry");
                job.last_error = Some(e.to_string());
                job.next_at = now.saturating_add(delay);
                self.save(job).await;
            }
        }
    }

    /// A repeating job goes again after its interval; any other is done.
    /// Whether the job may go now: an `[[inhibit]]` source holding its incident keeps it
    /// in the outbox (looked at again every [`HOLD_RECHECK`]); the timeline says when it is
    /// held and when it is let go.
    pub(super) async fn inhibition(&self, job: &mut Job, inc: &Incident, now: Timestamp) -> bool {
        let inhibitor = self
            .inhibitor
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if inhibitor.is_empty() && job.held_by.is_none() {
            return true;
        }
        let source = match inhibitor.source_of(inc, self.store.as_ref()) {
            Ok(s) => s,
            Err(e) => {
                // Not knowing is no reason to send what may be inhibited: look again soon.
                self.telemetry
                    .store_error("could not read the incidents that may inhibit another", &e);
                job.next_at = now.saturating_add(HOLD_RECHECK);
                self.reschedule(job);
                return false;
            }
        };
        match source {
            Some(src) => {
                let news = self
                    .noted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .held(inc.id, src.id);
                let changed = job.held_by != Some(src.id);
                job.held_by = Some(src.id);
                job.next_at = now.saturating_add(HOLD_RECHECK);
                if changed {
                    // Who holds it survives a restart (durable now).
                    let j = job.clone();
                    self.outbox(move |q, st| q.update(st, &j).map(|_| ())).await;
                } else {
                    self.reschedule(job);
                }
                if news {
                    self.telemetry.notifications_suppressed.inc();
                    tracing::info!(
                        incident = inc.id,
                        source = src.id,
                        "notifications inhibited"
                    );
                    self.record_as(
                        EntryKind::Inhibited,
                        inc.id,
                        format!(
                            "notifications held: inhibited by incident {} ({}) while it is active",
                            src.id, src.title
                        ),
                        json!({"source": src.id, "source_key": src.key}),
                    )
                    .await;
                }
                false
            }
            None => {
                if let Some(was) = job.held_by.take() {
                    let news = self
                        .noted
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .released(inc.id);
                    if news {
                        tracing::info!(
                            incident = inc.id,
                            source = was,
                            "inhibition ended; held notifications released"
                        );
                        self.record_as(
                            EntryKind::Released,
                            inc.id,
                            format!("held notifications released: incident {was} no longer inhibits this one"),
                            json!({"source": was}),
                        )
                        .await;
                    }
                }
                true
            }
        }
    }

    /// A new time for a job, without a flush of its own (losing it to a crash only makes
    /// the job due sooner).
    fn reschedule(&self, job: &Job) {
        if let Err(e) = self.queue.update(self.store.as_ref(), job) {
            self.telemetry
                .store_error("could not reschedule a held notification", &e);
        }
    }

    async fn reschedule_or_drop(&self, job: &mut Job, now: Timestamp) {
        match job.every_ms {
            Some(ms) => {
                job.next_at = now.saturating_add(Duration::from_millis(ms));
                job.attempts = 0;
                job.created_at = now;
                job.last_error = None;
                self.save(job.clone()).await;
            }
            None => self.forget(job.id).await,
        }
    }

    /// Writes a job back if it is still queued (routing may have made it moot meanwhile).
    pub(super) async fn save(&self, job: Job) {
        self.outbox(move |q, st| q.update(st, &job).map(|_| ()))
            .await;
    }

    /// Takes a job out of the outbox.
    async fn forget(&self, id: u64) {
        self.outbox(move |q, st| q.remove(st, id)).await;
    }

    /// An outbox write (store and mirror together) and a flush, off the async threads.
    pub(super) async fn outbox(
        &self,
        f: impl FnOnce(&queue::Queue, &dyn Store) -> Result<(), StoreError> + Send + 'static,
    ) {
        let (q, store) = (self.queue.clone(), self.store.clone());
        let r = tokio::task::spawn_blocking(move || {
            f(&q, store.as_ref())?;
            store.flush()
        })
        .await;
        if let Ok(Err(e)) = r {
            self.telemetry
                .store_error("notification outbox write failed", &e);
        }
    }

    /// One resend job per incident, Alertmanager channel and peer while the incident is
    /// active.
    fn ensure_resend(
        &self,
        channel: &ChannelConfig,
        peer: Option<&str>,
        inc: &Incident,
        now: Timestamp,
    ) {
        let exists = self.queue.any(|j| {
            j.incident_id == inc.id
                && j.channel == channel.id
                && j.peer.as_deref() == peer
                && j.event == NotifyEvent::Resend
        });
        if !exists {
            let every = channel.resend_interval.unwrap_or(Duration::from_secs(60));
            let mut j = self.job(
                inc.id,
                &channel.id,
                NotifyEvent::Resend,
                0,
                now.saturating_add(every),
                None,
                Some(every),
            );
            j.peer = peer.map(str::to_owned);
            if let Err(e) = self.queue.add(self.store.as_ref(), &j) {
                self.telemetry
                    .store_error("could not queue an Alertmanager resend", &e);
            }
        }
    }

    /// How long to wait when the channel's rate limit is reached (else counts this one).
    /// Each peer of a channel is a receiver of its own, with its own limit.
    pub(super) fn rate_limited(
        &self,
        c: &ChannelConfig,
        peer: Option<&str>,
        now: Timestamp,
    ) -> Option<Duration> {
        let r = c.rate_limit?;
        let key = match peer {
            Some(p) => format!("{}\u{0}{p}", c.id),
            None => c.id.clone(),
        };
        let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
        sent.admit(&key, now, r.max as usize, r.per)
            .err()
            .map(|wait| wait.max(Duration::from_millis(100)))
    }
}

/// Exponential backoff with jitter: `initial × 2^(attempts−1)`, capped, ±25%.
pub(super) fn backoff(
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
