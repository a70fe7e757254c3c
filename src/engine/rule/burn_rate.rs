//! `kind = "burn_rate"`: multiwindow, multi-burn-rate SLO alerting (as in the SRE workbook).
//!
//! With `objective` (e.g. 0.999) the error budget is `1 - objective`. For each
//! `[long, short, burn]` of `windows`, the rule's condition holds when the ratio of bad events
//! (matching the rule) to all events (matching `total_where`) exceeds `burn × budget` in both
//! the long and the short window: the long one shows the budget is really burning, the short
//! one that it still is. A state kind: fires once when any pair holds, again only after none
//! has. Per group the state is time buckets covering the longest window (at most 720), so the
//! windows are exact to one bucket.

use std::time::Duration;

use super::Fire;
use super::groups::GroupMap;
use super::ring::{Keyed, Ring};
use crate::clock::{Timestamp, duration_millis};

const MAX_BUCKETS: i64 = 720;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Bucket {
    start: i64,
    bad: u64,
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
    firing: bool,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct BurnRateDetector {
    budget: f64,
    /// (long ms, short ms, burn)
    pairs: Vec<(i64, i64, f64)>,
    longest_ms: i64,
    width_ms: i64,
    groups: GroupMap<Group>,
    pub late: u64,
}

impl BurnRateDetector {
    pub fn new(objective: f64, pairs: &[(Duration, Duration, f64)], max_groups: usize) -> Self {
        let pairs: Vec<(i64, i64, f64)> = pairs
            .iter()
            .map(|(l, s, b)| (duration_millis(*l).max(1), duration_millis(*s).max(1), *b))
            .collect();
        let longest_ms = pairs.iter().map(|p| p.0).max().unwrap_or(1);
        let shortest_ms = pairs.iter().map(|p| p.1).min().unwrap_or(1);
        let width_ms = (shortest_ms / 5).max(longest_ms / MAX_BUCKETS).max(1);
        BurnRateDetector {
            budget: 1.0 - objective,
            pairs,
            longest_ms,
            width_ms,
            groups: GroupMap::new(max_groups),
            late: 0,
        }
    }

    pub fn evicted(&self) -> u64 {
        self.groups.evicted
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }

    pub fn on_event(&mut self, key: &str, ts: Timestamp, bad: bool, total: bool) -> Option<Fire> {
        let (width, longest, budget) = (self.width_ms, self.longest_ms, self.budget);
        let g = self.groups.touch(key, Group::default);
        let t = ts.millis();
        let start = t - t.rem_euclid(width);
        let newest = g.buckets.newest_or(start);
        if start <= newest - longest {
            self.late += 1;
            return None;
        }
        let b = g.buckets.entry(start, || Bucket {
            start,
            bad: 0,
            total: 0,
        });
        b.bad += u64::from(bad);
        b.total += u64::from(total);
        g.buckets.expire(newest - longest, drop);
        // Sums over the buckets that started within `span` of the newest one.
        let sums = |span: i64| {
            g.buckets
                .iter()
                .rev()
                .take_while(|x| x.start > newest - span)
                .fold((0u64, 0u64), |(b, n), x| (b + x.bad, n + x.total))
        };
        let ratio = |(b, n): (u64, u64)| if n == 0 { 0.0 } else { b as f64 / n as f64 };
        let hit = self.pairs.iter().find(|(long, short, burn)| {
            ratio(sums(*long)) > burn * budget && ratio(sums(*short)) > burn * budget
        });
        match hit {
            Some((long, _, _)) if !g.firing => {
                g.firing = true;
                let (bad_in_long, _) = sums(*long);
                let first = g
                    .buckets
                    .iter()
                    .find(|x| x.start > newest - long)
                    .map_or(t, |x| x.start);
                Some(Fire {
                    count: bad_in_long,
                    first_ts: Timestamp(first),
                })
            }
            Some(_) => None,
            None => {
                g.firing = false;
                None
            }
        }
    }

    /// Drops groups with nothing left in their longest window at `now`.
    pub fn on_tick(&mut self, now: Timestamp) {
        let edge = now.millis() - self.longest_ms;
        self.groups
            .retain(|g| g.buckets.back().is_some_and(|b| b.start > edge));
    }
}

use super::{GroupValues, Marks};

impl super::Kind for BurnRateDetector {
    fn on_event(
        &mut self,
        key: &str,
        _: &GroupValues<'_>,
        ts: Timestamp,
        marks: Marks,
    ) -> Option<Fire> {
        BurnRateDetector::on_event(self, key, ts, marks.matched, marks.total)
    }
    fn on_tick(&mut self, now: Timestamp) {
        BurnRateDetector::on_tick(self, now)
    }
    fn dropped(&self) -> (u64, u64) {
        (self.late, self.evicted())
    }
    fn groups(&self) -> usize {
        BurnRateDetector::groups(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det() -> BurnRateDetector {
        // 99% objective (1% budget); fast pair 1h/5m at 14.4 (14.4% errors), slow 6h/30m at 6.
        let h = |n: u64| Duration::from_secs(n * 3600);
        let m = |n: u64| Duration::from_secs(n * 60);
        BurnRateDetector::new(0.99, &[(h(1), m(5), 14.4), (h(6), m(30), 6.0)], 100)
    }

    /// One request every 10 s from `from` to `to` seconds; every `every`-th is bad.
    fn traffic(
        d: &mut BurnRateDetector,
        from: i64,
        to: i64,
        every: i64,
        seq: &mut i64,
    ) -> Option<i64> {
        let mut fired = None;
        let mut t = from;
        while t < to {
            *seq += 1;
            let bad = *seq % every == 0;
            if d.on_event("api", Timestamp(t * 1000), bad, true).is_some() && fired.is_none() {
                fired = Some(t);
            }
            t += 10;
        }
        fired
    }

    #[test]
    fn a_steady_small_error_rate_never_fires_and_a_burn_does() {
        let mut d = det();
        let mut seq = 0;
        // 2% errors for two hours: 2× the budget, under both burn rates.
        assert_eq!(traffic(&mut d, 0, 7200, 50, &mut seq), None);
        // 20% errors: the 30-minute window passes 6% quickly, the 6-hour one after about half
        // an hour (0.02·120 + 0.2·t > 0.06·(120 + t) ⇒ t > 34.3 min).
        let at = traffic(&mut d, 7200, 7200 + 3600, 5, &mut seq).expect("burns");
        let minutes = (at - 7200) as f64 / 60.0;
        assert!((33.0..37.0).contains(&minutes), "fired after {minutes} min");
    }

    #[test]
    fn a_short_blip_does_not_fire_on_its_own() {
        let mut d = det();
        let mut seq = 0;
        traffic(&mut d, 0, 7200, 1000, &mut seq);
        // Five minutes of 50% errors: the short windows burn, the long ones barely move.
        assert_eq!(traffic(&mut d, 7200, 7500, 2, &mut seq), None);
        assert_eq!(traffic(&mut d, 7500, 9000, 1000, &mut seq), None);
    }
}
