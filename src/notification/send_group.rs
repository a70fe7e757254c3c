//! Delivery of one group's message (a route's `group_by`): the due jobs of a group, each
//! incident with its newest change, as one message; delivered, retried or dead-lettered
//! together, and each incident's timeline says it was sent in a group.

use super::channel::GroupContext;
use super::*;

impl Shared {
    /// Sends the due jobs of one group as one message.
    pub(super) async fn work_group(
        &self,
        channel: &ChannelConfig,
        kind: &dyn channel::Channel,
        settings: &crate::notification::config::NotificationsConfig,
        templates: &channel::Templates,
        jobs: Vec<Job>,
    ) {
        let now = self.clock.now();
        if !channel.kind.groups() {
            // A reload made the channel a kind that sends one message per incident.
            for j in jobs {
                let Some(mut j) = self.queue.get(j.id) else {
                    continue;
                };
                j.group = None;
                self.save(j).await;
            }
            return;
        }
        let jobs: Vec<Job> = jobs
            .into_iter()
            .filter_map(|j| self.queue.get(j.id))
            .collect();
        // Only held jobs are due (to look at their source again): a released one is made
        // due for the group, which goes at the next look; nothing is sent now.
        if !jobs.iter().any(|j| j.next_at <= now && j.held_by.is_none()) {
            for mut j in jobs.into_iter().filter(|j| j.next_at <= now) {
                match self.store.incident(j.incident_id) {
                    Ok(Some(inc)) => {
                        if self.inhibition(&mut j, &inc, now).await {
                            j.next_at = now;
                            self.save(j).await;
                        }
                    }
                    // The incident is gone: so is what was held for it.
                    Ok(None) => self.outbox(move |q, st| q.remove(st, j.id)).await,
                    Err(_) => {}
                }
            }
            return;
        }
        let mut incidents: HashMap<u64, Incident> = HashMap::new();
        let mut batch: Vec<Job> = Vec::new();
        for job in jobs {
            // The outbox has the truth: a job removed since is left alone. The group went
            // because one of its jobs was due: the others (a retry backing off, a change that
            // came later) go with it, so one incident's changes stay in order.
            let Some(mut job) = self.queue.get(job.id) else {
                continue;
            };
            let inc = match incidents.get(&job.incident_id) {
                Some(i) => i.clone(),
                None => match self.store.incident(job.incident_id) {
                    Ok(Some(i)) => {
                        incidents.insert(i.id, i.clone());
                        i
                    }
                    Ok(None) => {
                        self.outbox(move |q, st| q.remove(st, job.id)).await;
                        continue;
                    }
                    // A read error is not a reason to drop the job: it is tried again.
                    Err(_) => return,
                },
            };
            if !self.inhibition(&mut job, &inc, now).await {
                continue;
            }
            batch.push(job);
        }
        let Some(tag) = batch.first().and_then(|j| j.group.clone()) else {
            return;
        };
        if let Some(wait) = self.rate_limited(channel, None, now) {
            for j in &mut batch {
                j.next_at = now.saturating_add(wait);
            }
            self.save_all(batch).await;
            return;
        }
        let newest = group::newest_per_incident(&batch);
        let g = GroupContext {
            channel,
            host: &self.host,
            labels: &tag.labels,
            items: newest
                .iter()
                .filter_map(|j| incidents.get(&j.incident_id).map(|i| (j.event, i)))
                .collect(),
        };
        let count = g.items.len();
        let result = kind.deliver_group(&g, templates, &self.http).await;
        let oldest = batch.iter().map(|j| j.created_at).min().unwrap_or(now);
        let ids: Vec<u64> = batch.iter().map(|j| j.id).collect();
        self.telemetry.channel(&channel.id, |s| match &result {
            Ok(_) => {
                s.delivered += 1;
                s.last_error = None;
                s.last_delivered_at = Some(now);
            }
            Err(e) if e.permanent() || now.since(oldest) >= channel.max_age => {
                s.last_error = Some(e.to_string());
                s.dead_lettered += 1;
            }
            Err(e) => {
                s.last_error = Some(e.to_string());
                s.failed_attempts += 1;
            }
        });
        match result {
            Ok(_) => {
                self.telemetry.notifications_delivered.inc();
                tracing::info!(channel = %channel.id, group = %tag.key, incidents = count, "grouped notification delivered");
                self.last_sent
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .sent(&tag.key, now);
                self.outbox(move |q, st| ids.iter().try_for_each(|id| q.remove(st, *id)))
                    .await;
                for j in &newest {
                    let others = count.saturating_sub(1);
                    self.record(
                        j.incident_id,
                        format!(
                            "{} sent to {} in one message with {others} other incident{} of its group",
                            j.event.as_str(),
                            channel.id,
                            if others == 1 { "" } else { "s" }
                        ),
                        json!({"channel": channel.id, "kind": channel.kind.as_str(),
                            "event": j.event.as_str(), "status": "delivered",
                            "group": tag.labels, "count": count}),
                    )
                    .await;
                    if !j.event.ends()
                        && let Err(e) = self.store.mark_notified(j.incident_id, &channel.id)
                    {
                        self.telemetry.store_error(
                            "could not record that a channel was told of an incident",
                            &e,
                        );
                    }
                }
            }
            Err(e) if e.permanent() || now.since(oldest) >= channel.max_age => {
                self.telemetry.notifications_dead.inc();
                tracing::error!(channel = %channel.id, group = %tag.key, incidents = count, error = %e, "grouped notification dead-lettered");
                self.outbox(move |q, st| ids.iter().try_for_each(|id| q.remove(st, *id)))
                    .await;
                for j in &newest {
                    let mut data = json!({"channel": channel.id, "event": j.event.as_str(),
                        "status": "dead_lettered", "group": tag.labels, "error": e.to_string()});
                    if let serde_json::Value::Object(answer) = e.data() {
                        data["answer"] = serde_json::Value::Object(answer);
                    }
                    self.record(
                        j.incident_id,
                        format!(
                            "{} to {} (grouped) given up: {e}",
                            j.event.as_str(),
                            channel.id
                        ),
                        data,
                    )
                    .await;
                }
            }
            Err(e) => {
                self.telemetry.notifications_failed.inc();
                let attempts = batch.iter().map(|j| j.attempts).max().unwrap_or(0) + 1;
                let delay = super::deliver::backoff(settings, attempts, ids[0]);
                tracing::warn!(channel = %channel.id, group = %tag.key, attempts, retry_in = ?delay, error = %e, "grouped notification failed; will retry");
                for j in &mut batch {
                    j.attempts = attempts;
                    j.last_error = Some(e.to_string());
                    j.next_at = now.saturating_add(delay);
                }
                self.save_all(batch).await;
            }
        }
    }

    /// Writes back several jobs in one outbox write.
    async fn save_all(&self, jobs: Vec<Job>) {
        self.outbox(move |q, st| jobs.iter().try_for_each(|j| q.update(st, j).map(|_| ())))
            .await;
    }
}
