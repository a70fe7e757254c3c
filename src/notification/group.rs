//! Grouping (a route's `group_by`, `group_wait`, `group_interval`), as Alertmanager does:
//! a channel that can list several incidents gets one message per group. Each
//! notification of a grouped route is a job with a [`GroupTag`]; the jobs of one group are
//! due together (a new group after `group_wait`, later changes at most every
//! `group_interval` after the last message), handed to the worker together, and sent as
//! one message listing each incident with its newest change.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Job;
use super::config::RouteConfig;
use crate::clock::Timestamp;
use crate::incident::Incident;
use crate::incident::matcher::field_value;

/// Which group a job belongs to (kept in the outbox with it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupTag {
    /// The route, channel and values: jobs with the same key go out together.
    pub key: String,
    /// The `group_by` fields and their values (`-` when the incident has none).
    pub labels: BTreeMap<String, String>,
    pub interval_ms: u64,
}

/// The group of `inc` under route `r` (number `index`) for `channel`.
pub fn tag(index: usize, r: &RouteConfig, channel: &str, inc: &Incident) -> GroupTag {
    let labels: BTreeMap<String, String> = r
        .group_by
        .iter()
        .map(|f| (f.clone(), field_value(inc, f).unwrap_or("-").to_owned()))
        .collect();
    let values: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    GroupTag {
        key: format!("route{index}/{channel}/{}", values.join(",")),
        labels,
        interval_ms: r.group_interval().as_millis() as u64,
    }
}

/// When a new job of group `g` is due: with the group's pending jobs if they are still
/// waiting; else `group_interval` after the group's last message (now when that has
/// passed); a group never sent waits `wait`.
pub fn due_at(
    g: &GroupTag,
    pending: impl Iterator<Item = Timestamp>,
    last_sent: Option<Timestamp>,
    wait: Duration,
    now: Timestamp,
) -> Timestamp {
    let interval = Duration::from_millis(g.interval_ms);
    let mut in_flight = false;
    for at in pending {
        if at > now {
            return at;
        }
        // Due or being sent: this one follows it by the interval.
        in_flight = true;
    }
    if in_flight {
        return now.saturating_add(interval);
    }
    match last_sent {
        Some(t) => t.saturating_add(interval).max(now),
        None => now.saturating_add(wait),
    }
}

/// When each group last got a message (in memory: after a restart a group may be told
/// sooner than its interval, never later).
#[derive(Debug, Default)]
pub struct LastSent(HashMap<String, Timestamp>);

impl LastSent {
    pub fn get(&self, key: &str) -> Option<Timestamp> {
        self.0.get(key).copied()
    }

    /// Records a message; groups quiet for a day are forgotten, so the map holds the
    /// groups of the last day only.
    pub fn sent(&mut self, key: &str, now: Timestamp) {
        self.0.insert(key.to_owned(), now);
        if self.0.len() > 1024 {
            let day = Duration::from_secs(24 * 3600);
            self.0.retain(|_, t| now.since(*t) < day);
        }
    }
}

/// The jobs of one group to send as one message: for each incident, its newest job (the
/// change the message reports), in the order the incidents were first queued.
pub fn newest_per_incident(jobs: &[Job]) -> Vec<&Job> {
    let mut order: Vec<u64> = Vec::new();
    let mut newest: HashMap<u64, &Job> = HashMap::new();
    for j in jobs {
        match newest.get(&j.incident_id) {
            Some(n) if n.id > j.id => {}
            _ => {
                if !newest.contains_key(&j.incident_id) {
                    order.push(j.incident_id);
                }
                newest.insert(j.incident_id, j);
            }
        }
    }
    order
        .iter()
        .filter_map(|i| newest.get(i).copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g() -> GroupTag {
        GroupTag {
            key: "k".into(),
            labels: BTreeMap::new(),
            interval_ms: 60_000,
        }
    }

    #[test]
    fn a_new_group_waits_later_changes_follow_the_interval() {
        let now = Timestamp(1_000_000);
        let wait = Duration::from_secs(30);
        // New group: group_wait.
        assert_eq!(
            due_at(&g(), std::iter::empty(), None, wait, now),
            Timestamp(1_030_000)
        );
        // Joins a group still waiting.
        assert_eq!(
            due_at(&g(), [Timestamp(1_020_000)].into_iter(), None, wait, now),
            Timestamp(1_020_000)
        );
        // A group being sent: after the interval.
        assert_eq!(
            due_at(&g(), [Timestamp(990_000)].into_iter(), None, wait, now),
            Timestamp(1_060_000)
        );
        // Sent 10 s ago: 50 s more; sent long ago: now.
        assert_eq!(
            due_at(
                &g(),
                std::iter::empty(),
                Some(Timestamp(990_000)),
                wait,
                now
            ),
            Timestamp(1_050_000)
        );
        assert_eq!(
            due_at(&g(), std::iter::empty(), Some(Timestamp(0)), wait, now),
            now
        );
    }
}
