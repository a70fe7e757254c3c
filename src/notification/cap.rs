//! The outbox's bound: at most a channel's `max_queued` notifications wait in one of its
//! lanes (the channel, or one peer of it). A channel that stays down while incidents keep
//! changing would otherwise hold every change until `max_age`, in the store and in the
//! notifier's mirror of it, so memory would follow the input instead of the configuration.
//! Beyond the bound the oldest stop waiting: they are dead-lettered as `max_age` does (the
//! reason `outbox full`), in their incidents' timelines and in the metrics.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::config::{NotifyConfig, shown_peer};
use super::{Job, Plan};

/// A job that waits to be sent: a change (opening, acknowledgement, end…), held or not.
/// Reminders (repeats, Alertmanager resends) and escalation steps are one per open incident
/// and lane, come back by themselves, and are neither counted nor dropped.
fn waits(j: &Job) -> bool {
    j.every_ms.is_none() && j.escalation.is_none()
}

/// Picks the jobs to drop so that no lane keeps more than its channel's `max_queued` waiting
/// jobs: the oldest first (jobs already queued, then the planned ones, by id), never one
/// being sent (`in_flight`), and with an opening every other job of its incident in that
/// lane, so a channel does not hear of an end whose opening it never got. Queued victims go
/// to `plan.remove`, planned ones leave `plan.jobs`; all are in `plan.dropped`, to be noted
/// once the write has removed them.
pub(super) fn bound(config: &NotifyConfig, plan: &mut Plan, in_flight: &HashSet<u64>) {
    let removed: HashSet<u64> = plan.remove.iter().copied().collect();
    let mut lanes: HashMap<(&str, Option<&str>), Vec<&Job>> = HashMap::new();
    for j in plan
        .queued
        .iter()
        .filter(|j| !removed.contains(&j.id))
        .chain(plan.jobs.iter())
        .filter(|j| waits(j))
    {
        lanes
            .entry((j.channel.as_str(), j.peer.as_deref()))
            .or_default()
            .push(j);
    }
    let mut victims: Vec<Job> = Vec::new();
    for ((channel, _), mut jobs) in lanes {
        let max = limit(config, channel);
        if jobs.len() <= max {
            continue;
        }
        jobs.sort_unstable_by_key(|j| j.id);
        let mut gone: HashSet<u64> = HashSet::new();
        for j in &jobs {
            if jobs.len() - gone.len() <= max {
                break;
            }
            if in_flight.contains(&j.id) || gone.contains(&j.id) {
                continue;
            }
            gone.insert(j.id);
            if j.event.opens() {
                gone.extend(
                    jobs.iter()
                        .filter(|o| o.incident_id == j.incident_id && !in_flight.contains(&o.id))
                        .map(|o| o.id),
                );
            }
        }
        victims.extend(
            jobs.iter()
                .filter(|j| gone.contains(&j.id))
                .map(|j| (*j).clone()),
        );
    }
    if victims.is_empty() {
        return;
    }
    victims.sort_unstable_by_key(|j| j.id);
    let queued: HashSet<u64> = plan.queued.iter().map(|j| j.id).collect();
    let gone: HashSet<u64> = victims.iter().map(|j| j.id).collect();
    plan.jobs.retain(|j| !gone.contains(&j.id));
    plan.remove.extend(
        victims
            .iter()
            .filter(|v| queued.contains(&v.id))
            .map(|v| v.id),
    );
    plan.dropped = victims;
}

fn limit(config: &NotifyConfig, channel: &str) -> usize {
    config
        .channels
        .iter()
        .find(|c| c.id == channel)
        .map_or(usize::MAX, |c| c.max_queued)
}

impl super::Shared {
    /// The jobs `bound` dropped from `plan` that are gone now (`removed`: what the write
    /// found still queued; a job delivered meanwhile was not dead-lettered): counted per
    /// channel and peer, logged (at most once per 10 s), and returned as timeline notes.
    pub(super) fn unsent(
        &self,
        config: &NotifyConfig,
        plan: &Plan,
        removed: &[u64],
    ) -> Vec<(u64, String, serde_json::Value)> {
        let queued: HashSet<u64> = plan.queued.iter().map(|j| j.id).collect();
        let removed: HashSet<u64> = removed.iter().copied().collect();
        let gone: Vec<&Job> = plan
            .dropped
            .iter()
            .filter(|j| !queued.contains(&j.id) || removed.contains(&j.id))
            .collect();
        if gone.is_empty() {
            return Vec::new();
        }
        self.telemetry.notifications_dead.add(gone.len() as u64);
        for j in &gone {
            let count = |s: &mut crate::telemetry::PeerStats| s.dead_lettered += 1;
            self.telemetry.channel(&j.channel, count);
            if let Some(p) = &j.peer {
                self.telemetry.peer(&j.channel, &shown_peer(p), count);
            }
        }
        if let Some(suppressed) = self.outbox_full.allow() {
            tracing::warn!(
                dead_lettered = gone.len(),
                suppressed,
                "outbox full: notifications dead-lettered unsent (the channel's max_queued)"
            );
        }
        gone.into_iter().map(|j| note(config, j)).collect()
    }
}

/// What an incident's timeline says of a job `bound` dropped.
fn note(config: &NotifyConfig, v: &Job) -> (u64, String, serde_json::Value) {
    let max = limit(config, &v.channel);
    let peer = v.peer.as_deref().map(shown_peer);
    let mut data = json!({"channel": v.channel, "event": v.event.as_str(),
        "status": "dead_lettered", "reason": "outbox full", "attempts": v.attempts,
        "max_queued": max});
    if let Some(p) = &peer {
        data["peer"] = json!(p);
    }
    let to_peer = peer.map(|p| format!(" ({p})")).unwrap_or_default();
    (
        v.incident_id,
        format!(
            "{} to {}{to_peer} given up unsent: the outbox holds {max} for it (max_queued)",
            v.event.as_str(),
            v.channel
        ),
        data,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Timestamp;
    use crate::notification::NotifyEvent;

    fn job(id: u64, channel: &str, peer: Option<&str>) -> Job {
        Job {
            id,
            incident_id: id * 10,
            channel: channel.into(),
            peer: peer.map(str::to_owned),
            event: NotifyEvent::Opened,
            change: 0,
            escalation: None,
            every_ms: None,
            created_at: Timestamp(0),
            next_at: Timestamp(0),
            attempts: 1,
            last_error: None,
            held_by: None,
            group: None,
        }
    }

    fn config() -> NotifyConfig {
        let channel = |text: &str| toml::from_str(text).expect("a channel");
        NotifyConfig {
            channels: vec![
                channel("id = \"small\"\nkind = \"log\"\nmax_queued = 2"),
                channel(
                    "id = \"am\"\nkind = \"alertmanager\"\nmax_queued = 1\n\
                     urls = [\"http://127.0.0.1:1\", \"http://127.0.0.1:2\"]",
                ),
                channel("id = \"big\"\nkind = \"log\""),
            ],
            ..NotifyConfig::default()
        }
    }

    fn ids(jobs: &[Job]) -> Vec<u64> {
        jobs.iter().map(|j| j.id).collect()
    }

    /// Each lane keeps its newest `max_queued`: queued jobs go before planned ones, a job
    /// already being removed does not count, and each peer is a lane of its own.
    #[test]
    fn the_oldest_of_each_full_lane_are_dropped() {
        let mut plan = Plan {
            queued: vec![
                job(1, "small", None),
                job(2, "small", None),
                job(3, "small", None),
                job(4, "am", Some("http://127.0.0.1:1")),
                job(5, "big", None),
            ],
            jobs: vec![
                job(7, "small", None),
                job(8, "am", Some("http://127.0.0.1:1")),
                job(9, "am", Some("http://127.0.0.1:2")),
                job(10, "big", None),
            ],
            remove: vec![2],
            ..Plan::default()
        };
        bound(&config(), &mut plan, &HashSet::new());
        // small: 1, 3 and 7 (2 is removed anyway) → 1 goes; am's first peer: 4 goes.
        plan.remove.sort_unstable();
        assert_eq!(plan.remove, [1, 2, 4]);
        assert_eq!(ids(&plan.jobs), [7, 8, 9, 10]);
        assert_eq!(ids(&plan.dropped), [1, 4]);

        // Planned jobs over the bound are dropped before they are written.
        let mut plan = Plan {
            jobs: vec![
                job(1, "small", None),
                job(2, "small", None),
                job(3, "small", None),
            ],
            ..Plan::default()
        };
        bound(&config(), &mut plan, &HashSet::new());
        assert!(plan.remove.is_empty());
        assert_eq!(ids(&plan.jobs), [2, 3]);
        assert_eq!(ids(&plan.dropped), [1]);
    }

    /// A job being sent stays (the next oldest goes), reminders and escalation steps neither
    /// count nor go, and an opening takes its incident's other jobs in the lane with it.
    #[test]
    fn jobs_in_flight_reminders_and_follow_ups() {
        let reminder = Job {
            every_ms: Some(60_000),
            event: NotifyEvent::Resend,
            ..job(1, "small", None)
        };
        let step = Job {
            escalation: Some(("e".into(), 1)),
            event: NotifyEvent::EscalationStep,
            ..job(2, "small", None)
        };
        let mut plan = Plan {
            queued: vec![reminder, step, job(3, "small", None), job(4, "small", None)],
            jobs: vec![job(5, "small", None)],
            ..Plan::default()
        };
        bound(&config(), &mut plan, &HashSet::from([3]));
        assert_eq!(plan.remove, [4]);
        assert_eq!(ids(&plan.dropped), [4]);

        // Incident 10's opening (1) and end (2): both go, though one would have been enough.
        let end = Job {
            event: NotifyEvent::Resolved,
            incident_id: 10,
            ..job(2, "small", None)
        };
        let mut plan = Plan {
            queued: vec![job(1, "small", None), end],
            jobs: vec![job(3, "small", None), job(4, "small", None)],
            ..Plan::default()
        };
        bound(&config(), &mut plan, &HashSet::new());
        assert_eq!(plan.remove, [1, 2]);
        assert_eq!(ids(&plan.jobs), [3, 4]);
    }

    /// The timeline's note names the peer without its credentials.
    #[test]
    fn the_note_hides_a_peers_credentials() {
        let j = job(1, "am", Some("http://user:s3cret@127.0.0.1:1/"));
        let (incident, text, data) = note(&config(), &j);
        assert_eq!(incident, 10);
        assert!(
            !text.contains("s3cret") && !data.to_string().contains("s3cret"),
            "{text} {data}"
        );
        assert_eq!(data["reason"], "outbox full");
        assert_eq!(data["max_queued"], 1);
    }
}
