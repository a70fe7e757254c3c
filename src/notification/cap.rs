//! The outbox's bound: at most a channel's `max_queued` notifications wait in one of its
//! lanes (the channel, or one peer of it). A channel that stays down while incidents keep
//! changing would otherwise hold every change until `max_age`, in the store and in the
//! notifier's mirror of it, so memory would follow the input instead of the configuration.
//! Beyond the bound the oldest stop waiting: they are dead-lettered as `max_age` does (the
//! reason `outbox full`), in their incidents' timelines and in the metrics.

use std::collections::{HashMap, HashSet};

use serde_json::json;

use super::config::NotifyConfig;
use super::{Job, Plan};

/// Takes out of `plan` the oldest jobs of every lane over its channel's `max_queued` (jobs
/// already queued first, then the planned ones, by id) and notes each for its incident's
/// timeline; returns how many were taken out.
pub(super) fn bound(config: &NotifyConfig, plan: &mut Plan) -> usize {
    let limit = |channel: &str| {
        config
            .channels
            .iter()
            .find(|c| c.id == channel)
            .map_or(usize::MAX, |c| c.max_queued)
    };
    let removed: HashSet<u64> = plan.remove.iter().copied().collect();
    let mut lanes: HashMap<(&str, Option<&str>), Vec<&Job>> = HashMap::new();
    for j in plan
        .queued
        .iter()
        .filter(|j| !removed.contains(&j.id))
        .chain(plan.jobs.iter())
    {
        lanes
            .entry((j.channel.as_str(), j.peer.as_deref()))
            .or_default()
            .push(j);
    }
    let mut victims: Vec<Job> = Vec::new();
    for ((channel, _), mut jobs) in lanes {
        let max = limit(channel);
        if jobs.len() > max {
            let over = jobs.len() - max;
            jobs.sort_unstable_by_key(|j| j.id);
            victims.extend(jobs[..over].iter().map(|j| (*j).clone()));
        }
    }
    if victims.is_empty() {
        return 0;
    }
    victims.sort_unstable_by_key(|j| j.id);
    let queued: HashSet<u64> = plan.queued.iter().map(|j| j.id).collect();
    let gone: HashSet<u64> = victims.iter().map(|j| j.id).collect();
    plan.jobs.retain(|j| !gone.contains(&j.id));
    for v in &victims {
        if queued.contains(&v.id) {
            plan.remove.push(v.id);
        }
        let peer = v
            .peer
            .as_deref()
            .map(|p| format!(" ({p})"))
            .unwrap_or_default();
        let max = limit(&v.channel);
        let mut data = json!({"channel": v.channel, "event": v.event.as_str(),
            "status": "dead_lettered", "reason": "outbox full", "attempts": v.attempts,
            "max_queued": max});
        if let Some(p) = &v.peer {
            data["peer"] = json!(p);
        }
        plan.notes.push((
            v.incident_id,
            format!(
                "{} to {}{peer} given up unsent: the outbox holds {max} for it (max_queued)",
                v.event.as_str(),
                v.channel
            ),
            data,
        ));
    }
    victims.len()
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

    /// Each lane keeps its newest `max_queued`: queued jobs go before planned ones, a job
    /// already being removed does not count, and each peer is a lane of its own.
    #[test]
    fn the_oldest_of_each_full_lane_are_dead_lettered() {
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
        assert_eq!(bound(&config(), &mut plan), 2);
        // small: 1, 3 and 7 (2 is removed anyway) → 1 goes; am's first peer: 4 goes.
        plan.remove.sort_unstable();
        assert_eq!(plan.remove, [1, 2, 4]);
        let left: Vec<u64> = plan.jobs.iter().map(|j| j.id).collect();
        assert_eq!(left, [7, 8, 9, 10]);
        let noted: Vec<(u64, &str)> = plan
            .notes
            .iter()
            .map(|(i, _, d)| (*i, d["reason"].as_str().unwrap_or("")))
            .collect();
        assert_eq!(noted, [(10, "outbox full"), (40, "outbox full")]);
        assert_eq!(plan.notes[1].2["peer"], "http://127.0.0.1:1");
        assert!(
            plan.notes[0].1.contains("given up unsent"),
            "{:?}",
            plan.notes
        );

        // Planned jobs over the bound are dropped before they are written.
        let mut plan = Plan {
            jobs: vec![
                job(1, "small", None),
                job(2, "small", None),
                job(3, "small", None),
            ],
            ..Plan::default()
        };
        assert_eq!(bound(&config(), &mut plan), 1);
        assert!(plan.remove.is_empty());
        let left: Vec<u64> = plan.jobs.iter().map(|j| j.id).collect();
        assert_eq!(left, [2, 3]);
    }
}
