//! `kind = "threshold"`: fires when a group has seen `threshold` matching events within the
//! trailing `window` of event time; that group's count then restarts.
//!
//! The window ending at time `t` is the half-open interval `(t - window, t]`: an event exactly
//! `window` older than the newest one has left it. Per group the state is at most `threshold`
//! timestamps, since reaching the threshold fires and clears them; at most `max_groups` groups
//! are kept, the least recently seen evicted first (a tenth at a time, so eviction costs O(1)
//! per new group amortized).

use std::collections::VecDeque;
use std::time::Duration;

use super::Fire;
use super::groups::GroupMap;
use crate::clock::{Timestamp, duration_millis};

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ThresholdDetector {
    threshold: usize,
    window_ms: i64,
    /// Per group: event times in the window, oldest first.
    groups: GroupMap<VecDeque<i64>>,
    /// Events older than their group's window when they arrived.
    pub late: u64,
}

impl ThresholdDetector {
    pub fn new(threshold: u32, window: Duration, max_groups: usize) -> Self {
        ThresholdDetector {
            threshold: threshold.max(1) as usize,
            window_ms: duration_millis(window).max(1),
            groups: GroupMap::new(max_groups),
            late: 0,
        }
    }

    pub fn evicted(&self) -> u64 {
        self.groups.evicted
    }

    pub fn on_event(&mut self, group: &str, ts: Timestamp) -> Option<Fire> {
        let t = ts.millis();
        let q = self.groups.touch(group, VecDeque::new);
        let newest = q.back().copied().unwrap_or(t).max(t);
        if t <= newest - self.window_ms {
            self.late += 1;
            return None;
        }
        // Keep the queue sorted; events mostly arrive in order, so this is usually a push.
        let at = q.partition_point(|x| *x <= t);
        q.insert(at, t);
        while q.front().is_some_and(|f| *f <= newest - self.window_ms) {
            q.pop_front();
        }
        if q.len() >= self.threshold {
            let first = q.front().copied().unwrap_or(t);
            let count = q.len() as u64;
            q.clear();
            return Some(Fire {
                count,
                first_ts: Timestamp(first),
            });
        }
        None
    }

    /// Drops groups whose newest event has left the window at `now`.
    pub fn on_tick(&mut self, now: Timestamp) {
        let edge = now.millis() - self.window_ms;
        self.groups.retain(|q| q.back().is_some_and(|b| *b > edge));
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(n: u32, secs: u64) -> ThresholdDetector {
        ThresholdDetector::new(n, Duration::from_secs(secs), 1000)
    }

    #[test]
    fn fires_exactly_at_the_threshold_and_restarts() {
        let mut d = det(3, 60);
        assert_eq!(d.on_event("a", Timestamp(0)), None);
        assert_eq!(d.on_event("a", Timestamp(1_000)), None);
        assert_eq!(
            d.on_event("a", Timestamp(2_000)),
            Some(Fire {
                count: 3,
                first_ts: Timestamp(0)
            })
        );
        // The count restarted.
        assert_eq!(d.on_event("a", Timestamp(3_000)), None);
        assert_eq!(d.on_event("a", Timestamp(4_000)), None);
        assert!(d.on_event("a", Timestamp(5_000)).is_some());
    }

    #[test]
    fn groups_are_independent() {
        let mut d = det(2, 60);
        assert_eq!(d.on_event("a", Timestamp(0)), None);
        assert_eq!(d.on_event("b", Timestamp(0)), None);
        assert!(d.on_event("a", Timestamp(1)).is_some());
        assert_eq!(d.groups(), 2);
    }

    #[test]
    fn the_window_edge_is_exclusive() {
        let mut d = det(2, 10);
        assert_eq!(d.on_event("a", Timestamp(0)), None);
        // Exactly one window later: the first event has left (window is (t-10s, t]).
        assert_eq!(d.on_event("a", Timestamp(10_000)), None);
        // One millisecond inside the window of the second event.
        assert!(d.on_event("a", Timestamp(19_999)).is_some());
    }

    #[test]
    fn out_of_order_within_the_window_counts_and_late_is_dropped() {
        let mut d = det(3, 10);
        assert_eq!(d.on_event("a", Timestamp(20_000)), None);
        assert_eq!(d.on_event("a", Timestamp(15_000)), None); // earlier, still inside
        assert_eq!(d.on_event("a", Timestamp(5_000)), None); // left the window already
        assert_eq!(d.late, 1);
        assert_eq!(
            d.on_event("a", Timestamp(21_000)),
            Some(Fire {
                count: 3,
                first_ts: Timestamp(15_000)
            })
        );
    }

    #[test]
    fn quiet_groups_are_let_go() {
        let mut d = det(5, 10);
        d.on_event("a", Timestamp(0));
        d.on_event("b", Timestamp(8_000));
        d.on_tick(Timestamp(12_000));
        assert_eq!(d.groups(), 1);
        d.on_tick(Timestamp(18_000));
        assert_eq!(d.groups(), 0);
    }
}
