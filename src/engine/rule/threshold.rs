//! `kind = "threshold"`: fires when a group has seen `threshold` matching events within the
//! trailing `window` of event time; that group's count then restarts.
//!
//! The window ending at time `t` is the half-open interval `(t - window, t]`: an event exactly
//! `window` older than the newest one has left it. Per group the state is at most `threshold`
//! timestamps, since reaching the threshold fires and clears them; at most `max_groups` groups
//! are kept, the least recently seen evicted first (a tenth at a time, so eviction costs O(1)
//! per new group amortized).
//!
//! The detector also lets go of groups the window has left on its own, by the newest event
//! time it has seen: whenever the number of groups has doubled since the last sweep, and
//! before `max_groups` would make eviction necessary, those whose newest event is a window or
//! more behind go (amortized O(1) per event). An event that late is past what the window
//! holds, the default lateness, so this changes no count the daemon's once-a-second tick
//! would not change too; it keeps the map as small as the live groups (a replay gives no
//! ticks) instead of letting it fill to `max_groups`.

use std::collections::VecDeque;
use std::time::Duration;

use super::Fire;
use super::groups::GroupMap;
use crate::clock::{Timestamp, duration_millis};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct ThresholdDetector {
    threshold: usize,
    window_ms: i64,
    /// Per group: event times in the window, oldest first.
    groups: GroupMap<VecDeque<i64>>,
    /// Events older than their group's window when they arrived.
    pub late: u64,
    /// The newest event time seen, in ms.
    #[serde(default)]
    newest: i64,
    /// The number of groups at which the next sweep runs.
    #[serde(default)]
    sweep_at: usize,
    /// `groups.evicted` when last looked at.
    #[serde(default)]
    evicted_seen: u64,
}

/// The fewest groups a sweep is worth running for.
const SWEEP_MIN: usize = 64;

impl ThresholdDetector {
    pub fn new(threshold: u32, window: Duration, max_groups: usize) -> Self {
        ThresholdDetector {
            threshold: threshold.max(1) as usize,
            window_ms: duration_millis(window).max(1),
            groups: GroupMap::new(max_groups),
            late: 0,
            newest: i64::MIN,
            sweep_at: SWEEP_MIN.min(max_groups.max(1)),
            evicted_seen: 0,
        }
    }

    pub fn evicted(&self) -> u64 {
        self.groups.evicted
    }

    pub fn on_event(&mut self, group: &str, ts: Timestamp) -> Option<Fire> {
        let t = ts.millis();
        self.newest = self.newest.max(t);
        if self.groups.evicted != self.evicted_seen {
            // Eviction made room: sweep again once the map is full.
            self.evicted_seen = self.groups.evicted;
            self.sweep_at = self.next_sweep();
        }
        if self.groups.len() >= self.sweep_at {
            self.sweep(self.newest);
            self.sweep_at = self.next_sweep();
        }
        // Room for the whole count up front (one allocation), within reason.
        let room = self.threshold.min(16);
        let q = self.groups.touch(group, || VecDeque::with_capacity(room));
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
        self.sweep(now.millis());
    }

    /// When the number of groups has doubled, or at `max_groups` (before eviction makes
    /// room), but never again at the current count: a map full of live groups leaves making
    /// room to eviction rather than sweeping at every event.
    fn next_sweep(&self) -> usize {
        let len = self.groups.len();
        (2 * len).max(SWEEP_MIN).min(self.groups.max()).max(len + 1)
    }

    fn sweep(&mut self, now: i64) {
        let edge = now.saturating_sub(self.window_ms);
        self.groups.retain(|q| q.back().is_some_and(|b| *b > edge));
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

use super::{GroupValues, Marks};

impl super::Kind for ThresholdDetector {
    fn on_event(
        &mut self,
        key: &str,
        _: &GroupValues<'_>,
        ts: Timestamp,
        marks: Marks,
    ) -> Option<Fire> {
        if !marks.matched {
            return None;
        }
        ThresholdDetector::on_event(self, key, ts)
    }
    fn on_tick(&mut self, now: Timestamp) {
        ThresholdDetector::on_tick(self, now)
    }
    fn dropped(&self) -> (u64, u64) {
        (self.late, self.evicted())
    }
    fn groups(&self) -> usize {
        ThresholdDetector::groups(self)
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

    #[test]
    fn groups_the_window_left_go_without_ticks_and_live_ones_stay() {
        let mut d = det(3, 10);
        // 100 groups inside one window: all live, none may go.
        for i in 0..100 {
            d.on_event(&format!("live{i}"), Timestamp(i));
        }
        assert_eq!(d.groups(), 100);
        d.on_event("live0", Timestamp(200));
        assert!(d.on_event("live0", Timestamp(300)).is_some());
        // Much later, a stream of one-off groups: the old ones are let go as it grows.
        for i in 0..1_000 {
            d.on_event(&format!("new{i}"), Timestamp(60_000 + i * 100));
        }
        assert!(d.groups() <= 2 * 101, "{}", d.groups());
        // A group's count still works across the sweeps.
        for k in 0..2 {
            assert_eq!(d.on_event("x", Timestamp(200_000 + k)), None);
        }
        assert!(d.on_event("x", Timestamp(200_002)).is_some());
    }

    #[test]
    fn groups_the_window_left_go_before_eviction_would() {
        let mut d = ThresholdDetector::new(3, Duration::from_secs(10), 100);
        for i in 0..90 {
            d.on_event(&format!("early{i}"), Timestamp(i));
        }
        // Later, one new address a second: about ten live at a time, the early ones stale.
        for i in 0..300 {
            d.on_event(&format!("late{i}"), Timestamp(60_000 + i * 1_000));
        }
        assert_eq!(d.evicted(), 0);
        assert!(d.groups() <= 100, "{}", d.groups());
        // A map full of live groups still makes room by eviction, without sweeping at every
        // event.
        let mut d = ThresholdDetector::new(3, Duration::from_secs(10), 100);
        for i in 0..1_000 {
            d.on_event(&format!("g{i}"), Timestamp(i));
        }
        assert!(d.evicted() >= 900, "{}", d.evicted());
    }
}
