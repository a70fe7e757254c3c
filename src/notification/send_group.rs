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
        let mut incidents: HashMap<u64, Incident> = HashMap::new();
        let mut batch: Vec<Job> = Vec::new();
        for job in jobs {
            // The outbox has the truth: a job removed or rescheduled since is left alone.
            let Some(mut job) = self.queue.get(job.id).filter(|j| j.next_at <= now) else {
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
