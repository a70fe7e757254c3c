//! `kind = "sequence"`: a `first` event, then a `then` event, in the same group within
//! `within`.
//!
//! - `mode = "followed_by"` fires when a `then` arrives while firsts are pending; it completes
//!   every pending first of its group at once (one detection, `count` = firsts completed).
//! - `mode = "not_followed_by"` fires once per first that no `then` followed within `within`,
//!   at event time `first + within` (a timer, exact in replay like absence).
//!
//! Per group at most `MAX_PENDING` firsts wait (the oldest are dropped beyond it, counted);
//! groups are capped by `max_groups`.

use std::collections::VecDeque;
use std::time::Duration;

use super::Fire;
use super::groups::GroupMap;
use crate::clock::{Timestamp, duration_millis};
use crate::engine::config::SequenceMode;

/// The most firsts one group keeps waiting.
pub const MAX_PENDING: usize = 1024;

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Group {
    values: Vec<(String, String)>,
    /// Times of firsts not yet followed, oldest first.
    pending: VecDeque<i64>,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SequenceDetector {
    within_ms: i64,
    mode: SequenceMode,
    groups: GroupMap<Group>,
    next_due: i64,
    /// Firsts dropped because too many were pending in one group.
    pub dropped: u64,
}

impl SequenceDetector {
    pub fn new(within: Duration, mode: SequenceMode, max_groups: usize) -> Self {
        SequenceDetector {
            within_ms: duration_millis(within).max(1),
            mode,
            groups: GroupMap::new(max_groups),
            next_due: i64::MAX,
            dropped: 0,
        }
    }

    pub fn evicted(&self) -> u64 {
        self.groups.evicted
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    pub fn has_timers(&self) -> bool {
        self.mode == SequenceMode::NotFollowedBy
    }

    /// One event of a group that is a `first`, a `then`, or both (a `then` is applied first).
    pub fn on_event(
        &mut self,
        key: &str,
        values: &dyn Fn() -> Vec<(String, String)>,
        ts: Timestamp,
        first: bool,
        then: bool,
    ) -> Option<Fire> {
        let t = ts.millis();
        let within = self.within_ms;
        let g = self.groups.touch(key, || Group {
            values: values(),
            pending: VecDeque::new(),
        });
        let mut fire = None;
        if then {
            // Firsts older than `within` can no longer be followed; for not_followed_by the
            // timer reports them (`due` runs before every event that moves time on).
            if self.mode == SequenceMode::FollowedBy {
                while g.pending.front().is_some_and(|f| *f < t - within) {
                    g.pending.pop_front();
                }
            }
            let followed = g
                .pending
                .iter()
                .filter(|f| **f >= t - within && **f <= t)
                .count();
            if followed > 0 {
                let oldest = g
                    .pending
                    .iter()
                    .copied()
                    .filter(|f| *f >= t - within)
                    .min()
                    .unwrap_or(t);
                g.pending.retain(|f| *f < t - within || *f > t);
                if self.mode == SequenceMode::FollowedBy {
                    fire = Some(Fire {
                        count: followed as u64,
                        first_ts: Timestamp(oldest),
                    });
                }
            }
        }
        if first {
            if g.pending.len() >= MAX_PENDING {
                g.pending.pop_front();
                self.dropped += 1;
            }
            let at = g.pending.partition_point(|f| *f <= t);
            g.pending.insert(at, t);
            if self.mode == SequenceMode::NotFollowedBy {
                self.next_due = self.next_due.min(t + within);
            }
        }
        fire
    }

    /// not_followed_by: firsts whose `within` has passed at `now`, one fire each.
    pub fn due(&mut self, now: Timestamp, out: &mut Vec<(Vec<(String, String)>, Fire)>) {
        if self.mode != SequenceMode::NotFollowedBy || now.millis() < self.next_due {
            return;
        }
        let now = now.millis();
        let within = self.within_ms;
        let mut next = i64::MAX;
        for g in self.groups.states_mut() {
            while let Some(f) = g.pending.front().copied() {
                if f + within > now {
                    next = next.min(f + within);
                    break;
                }
                g.pending.pop_front();
                out.push((
                    g.values.clone(),
                    Fire {
                        count: 1,
                        first_ts: Timestamp(f + within),
                    },
                ));
            }
        }
        self.next_due = next;
    }

    /// followed_by: lets go of groups with nothing pending that can still be followed.
    pub fn on_tick(&mut self, now: Timestamp) {
        if self.mode == SequenceMode::FollowedBy {
            let edge = now.millis() - self.within_ms;
            self.groups.retain(|g| {
                g.pending.retain(|f| *f >= edge);
                !g.pending.is_empty()
            });
        } else {
            self.groups.retain(|g| !g.pending.is_empty());
        }
    }
}

use super::{GroupValues, Marks};

impl super::Kind for SequenceDetector {
    fn on_event(
        &mut self,
        key: &str,
        group: &GroupValues<'_>,
        ts: Timestamp,
        marks: Marks,
    ) -> Option<Fire> {
        SequenceDetector::on_event(self, key, group, ts, marks.first, marks.then)
    }
    fn has_timers(&self) -> bool {
        SequenceDetector::has_timers(self)
    }
    fn due(&mut self, now: Timestamp, out: &mut Vec<(Vec<(String, String)>, Fire)>) {
        SequenceDetector::due(self, now, out)
    }
    fn on_tick(&mut self, now: Timestamp) {
        SequenceDetector::on_tick(self, now)
    }
    fn dropped(&self) -> (u64, u64) {
        (self.dropped, self.evicted())
    }
    fn groups(&self) -> usize {
        SequenceDetector::groups(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals() -> Vec<(String, String)> {
        vec![("id".into(), "x".into())]
    }

    #[test]
    fn followed_by_fires_when_then_comes_within_the_window() {
        let mut d = SequenceDetector::new(Duration::from_secs(10), SequenceMode::FollowedBy, 100);
        assert!(d.on_event("x", &vals, Timestamp(0), true, false).is_none());
        assert!(
            d.on_event("x", &vals, Timestamp(2_000), true, false)
                .is_none()
        );
        let f = d
            .on_event("x", &vals, Timestamp(10_000), false, true)
            .expect("both firsts within 10 s");
        assert_eq!((f.count, f.first_ts), (2, Timestamp(0)));
        assert!(
            d.on_event("x", &vals, Timestamp(11_000), false, true)
                .is_none(),
            "nothing pending"
        );
        // Exactly `within` later still counts; one millisecond more does not.
        d.on_event("x", &vals, Timestamp(20_000), true, false);
        assert!(
            d.on_event("x", &vals, Timestamp(30_001), false, true)
                .is_none()
        );
        d.on_event("x", &vals, Timestamp(40_000), true, false);
        assert!(
            d.on_event("x", &vals, Timestamp(50_000), false, true)
                .is_some()
        );
    }

    #[test]
    fn not_followed_by_fires_per_unfollowed_first_at_its_deadline() {
        let mut d =
            SequenceDetector::new(Duration::from_secs(10), SequenceMode::NotFollowedBy, 100);
        d.on_event("x", &vals, Timestamp(0), true, false);
        d.on_event("x", &vals, Timestamp(1_000), true, false);
        d.on_event("y", &vals, Timestamp(1_000), true, false);
        // y is followed in time; x's two firsts are not.
        assert!(
            d.on_event("y", &vals, Timestamp(5_000), false, true)
                .is_none()
        );
        let mut out = Vec::new();
        d.due(Timestamp(9_999), &mut out);
        assert!(out.is_empty());
        d.due(Timestamp(11_000), &mut out);
        let times: Vec<i64> = out.iter().map(|(_, f)| f.first_ts.millis()).collect();
        assert_eq!(times, [10_000, 11_000]);
        out.clear();
        d.due(Timestamp(100_000), &mut out);
        assert!(out.is_empty(), "once per first");
    }

    #[test]
    fn pending_firsts_are_bounded() {
        let mut d = SequenceDetector::new(Duration::from_secs(3600), SequenceMode::FollowedBy, 10);
        for t in 0..5_000 {
            d.on_event("x", &vals, Timestamp(t), true, false);
        }
        assert_eq!(d.dropped, 5_000 - MAX_PENDING as u64);
        let f = d
            .on_event("x", &vals, Timestamp(5_000), false, true)
            .unwrap();
        assert_eq!(f.count, MAX_PENDING as u64);
    }
}
