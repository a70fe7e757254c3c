//! `kind = "rate"`: fires when, within the trailing `window`, the events matching the rule
//! divided by the events matching `total_where` exceed `ratio`, with at least `min_events`
//! total events.
//!
//! A state kind: it fires once when a group's condition becomes true and not again until it
//! has cleared. Per group the state is 60 time buckets of (matched, total) counts, so memory
//! does not grow with traffic; the window is therefore exact to 1/60 of its length (a bucket
//! leaves whole). At most `max_groups` groups are held, the least recently seen evicted first.

use std::time::Duration;

use super::Fire;
use super::groups::GroupMap;
use super::ring::{Keyed, Ring};
use crate::clock::{Timestamp, duration_millis};

const BUCKETS: i64 = 60;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Bucket {
    start: i64,
    matched: u64,
    total: u64,
}

impl Keyed for Bucket {
    fn key(&self) -> i64 {
        self.start
    }
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Group {
    buckets: Ring<Bucket>,
    matched: u64,
    total: u64,
    firing: bool,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct RateDetector {
    ratio: f64,
    min_events: u64,
    window_ms: i64,
    width_ms: i64,
    groups: GroupMap<Group>,
    pub late: u64,
}

impl RateDetector {
    pub fn new(ratio: f64, min_events: u64, window: Duration, max_groups: usize) -> Self {
        let window_ms = duration_millis(window).max(1);
        RateDetector {
            ratio,
            min_events: min_events.max(1),
            window_ms,
            width_ms: (window_ms / BUCKETS).max(1),
            groups: GroupMap::new(max_groups),
            late: 0,
        }
    }

    pub fn evicted(&self) -> u64 {
        self.groups.evicted
    }

    /// Counts one event of `group`: `matched` if it matched the rule, `total` if it matched
    /// `total_where`.
    pub fn on_event(
        &mut self,
        group: &str,
        ts: Timestamp,
        matched: bool,
        total: bool,
    ) -> Option<Fire> {
        let g = self.groups.touch(group, Group::default);
        let t = ts.millis();
        let start = t - t.rem_euclid(self.width_ms);
        let newest = g.buckets.newest_or(start);
        if start <= newest - self.window_ms {
            // The bucket this event belongs to has already left the window.
            self.late += 1;
            return None;
        }
        let (m, n) = (u64::from(matched), u64::from(total));
        let b = g.buckets.entry(start, || Bucket {
            start,
            matched: 0,
            total: 0,
        });
        b.matched += m;
        b.total += n;
        g.matched += m;
        g.total += n;
        // Buckets that ended before the window of the newest bucket leave whole.
        let (matched_sum, total_sum) = (&mut g.matched, &mut g.total);
        g.buckets.expire(newest - self.window_ms, |f| {
            *matched_sum -= f.matched;
            *total_sum -= f.total;
        });
        let holds = g.total >= self.min_events && (g.matched as f64) > self.ratio * g.total as f64;
        if holds && !g.firing {
            g.firing = true;
            let first = g.buckets.front().map_or(t, |b| b.start);
            return Some(Fire {
                count: g.matched,
                first_ts: Timestamp(first),
            });
        }
        if !holds {
            g.firing = false;
        }
        None
    }

    /// Drops groups with nothing left in their window at `now`.
    pub fn on_tick(&mut self, now: Timestamp) {
        let edge = now.millis() - self.window_ms;
        self.groups
            .retain(|g| g.buckets.back().is_some_and(|b| b.start > edge));
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

use super::{GroupValues, Marks};

impl super::Kind for RateDetector {
    fn on_event(
        &mut self,
        key: &str,
        _: &GroupValues<'_>,
        ts: Timestamp,
        marks: Marks,
    ) -> Option<Fire> {
        RateDetector::on_event(self, key, ts, marks.matched, marks.total)
    }
    fn on_tick(&mut self, now: Timestamp) {
        RateDetector::on_tick(self, now)
    }
    fn dropped(&self) -> (u64, u64) {
        (self.late, self.evicted())
    }
    fn groups(&self) -> usize {
        RateDetector::groups(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det() -> RateDetector {
        // More than half failing, over 60 s, with at least 4 requests.
        RateDetector::new(0.5, 4, Duration::from_secs(60), 100)
    }

    #[test]
    fn fires_once_when_the_ratio_is_exceeded_with_enough_events() {
        let mut d = det();
        assert!(
            d.on_event("api", Timestamp(0), true, true).is_none(),
            "1/1 but below min_events"
        );
        assert!(d.on_event("api", Timestamp(1_000), true, true).is_none());
        assert!(d.on_event("api", Timestamp(2_000), false, true).is_none());
        let f = d
            .on_event("api", Timestamp(3_000), true, true)
            .expect("3/4 > 0.5");
        assert_eq!(f.count, 3);
        assert!(
            d.on_event("api", Timestamp(4_000), true, true).is_none(),
            "still firing: once"
        );
    }

    #[test]
    fn exactly_at_the_ratio_does_not_fire_and_clearing_rearms() {
        let mut d = det();
        for (i, m) in [true, false, true, false].into_iter().enumerate() {
            assert!(
                d.on_event("a", Timestamp(i as i64 * 1000), m, true)
                    .is_none(),
                "2/4 is not > 0.5"
            );
        }
        assert!(
            d.on_event("a", Timestamp(5_000), true, true).is_some(),
            "3/5"
        );
        for i in 0..10 {
            d.on_event("a", Timestamp(6_000 + i), false, true);
        }
        // Cleared (3/15); crossing again fires again.
        for i in 0..20 {
            if let Some(f) = d.on_event("a", Timestamp(7_000 + i), true, true) {
                assert!(f.count > 7);
                return;
            }
        }
        panic!("did not fire again after clearing");
    }

    #[test]
    fn old_buckets_leave_the_window() {
        let mut d = det();
        for i in 0..4 {
            d.on_event("a", Timestamp(i * 100), true, true);
        }
        // Two minutes later the failures have left; 1 bad of 4 fresh is not > 0.5.
        assert!(d.on_event("a", Timestamp(120_000), false, true).is_none());
        assert!(d.on_event("a", Timestamp(120_001), false, true).is_none());
        assert!(d.on_event("a", Timestamp(120_002), false, true).is_none());
        assert!(d.on_event("a", Timestamp(120_003), true, true).is_none());
        assert!(d.on_event("a", Timestamp(0), true, true).is_none());
        assert_eq!(d.late, 1);
        d.on_tick(Timestamp(300_000));
        assert_eq!(d.groups(), 0);
    }
}
