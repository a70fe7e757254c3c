//! `kind = "metric"`: an aggregate (`last`, `avg`, `min`, `max`, `p95`) of the events' `value`
//! over the trailing `window` compares (`op`) to `value_threshold`, and has done so
//! continuously for `for`.
//!
//! A state kind: it fires once when the condition has held for `for`, and again only after it
//! has cleared. The condition is evaluated on each event of the group that carries a `value`.
//! Per group the state is 60 time buckets (count, sum, min, max, last) plus, for `p95`, a sparse
//! histogram with logarithmic bins 2% wide, so memory does not grow with traffic; `p95` is
//! exact to about 1%, and the window to 1/60 of its length.

use std::collections::BTreeMap;
use std::time::Duration;

use super::Fire;
use super::groups::GroupMap;
use super::ring::{Keyed, Ring};
use crate::clock::{Timestamp, duration_millis};
use crate::engine::config::{Aggregate, CompareOp};

const BUCKETS: i64 = 60;
const GAMMA: f64 = 1.02;

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Bucket {
    start: i64,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    /// Histogram bins (p95 only).
    bins: BTreeMap<i32, u32>,
}

impl Keyed for Bucket {
    fn key(&self) -> i64 {
        self.start
    }
}

#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct Group {
    buckets: Ring<Bucket>,
    count: u64,
    sum: f64,
    /// Window-wide histogram (p95 only): the sum of the buckets' bins.
    bins: BTreeMap<i32, u32>,
    last: Option<(i64, f64)>,
    since: Option<i64>,
    firing: bool,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct MetricDetector {
    aggregate: Aggregate,
    op: CompareOp,
    threshold: f64,
    for_ms: i64,
    window_ms: i64,
    width_ms: i64,
    groups: GroupMap<Group>,
    pub late: u64,
}

/// The most bins a group's histogram holds (p95): 2% bins over a range of 25,000 to one.
/// Past that the lowest bins are merged (DDSketch's collapsing store), so values an input
/// makes up cannot grow a group's memory, and the upper quantiles stay exact to 2%.
const MAX_BINS: usize = 512;

/// The bin `v` counts in for `g`: its own; once the histogram is full, room is made by
/// merging its lowest bin into the next one up, in the window and in every bucket (each
/// bucket's bins stay among the group's), and a value below the lowest bin counts in it.
fn bin_in(g: &mut Group, v: f64) -> i32 {
    let k = bin(v);
    if g.bins.len() < MAX_BINS || g.bins.contains_key(&k) {
        return k;
    }
    let mut keys = g.bins.keys().copied();
    let (Some(lowest), Some(next)) = (keys.next(), keys.next()) else {
        return k;
    };
    if k < lowest {
        return lowest;
    }
    if let Some(n) = g.bins.remove(&lowest) {
        *g.bins.entry(next).or_insert(0) += n;
    }
    for b in g.buckets.iter_mut() {
        if let Some(n) = b.bins.remove(&lowest) {
            *b.bins.entry(next).or_insert(0) += n;
        }
    }
    k
}

/// The histogram bin of `v`: ordered like the values, 2% wide.
fn bin(v: f64) -> i32 {
    if v == 0.0 || !v.is_finite() {
        return 0;
    }
    let k = (v.abs().ln() / GAMMA.ln()).floor() as i32;
    if v > 0.0 {
        1_000_000 + k
    } else {
        -1_000_000 - k
    }
}

/// A value that stands for bin `b` (its geometric middle).
fn bin_value(b: i32) -> f64 {
    match b {
        0 => 0.0,
        b if b > 0 => GAMMA.powf(f64::from(b - 1_000_000) + 0.5),
        b => -GAMMA.powf(f64::from(-b - 1_000_000) + 0.5),
    }
}

impl MetricDetector {
    pub fn new(
        aggregate: Aggregate,
        op: CompareOp,
        threshold: f64,
        window: Duration,
        for_: Duration,
        max_groups: usize,
    ) -> Self {
        let window_ms = duration_millis(window).max(1);
        MetricDetector {
            aggregate,
            op,
            threshold,
            for_ms: duration_millis(for_),
            window_ms,
            width_ms: (window_ms / BUCKETS).max(1),
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

    pub fn on_event(&mut self, group: &str, ts: Timestamp, value: Option<f64>) -> Option<Fire> {
        let v = value.filter(|v| v.is_finite())?;
        let (window_ms, width_ms, p95) = (
            self.window_ms,
            self.width_ms,
            self.aggregate == Aggregate::P95,
        );
        let g = self.groups.touch(group, Group::default);
        let t = ts.millis();
        let start = t - t.rem_euclid(width_ms);
        let newest = g.buckets.newest_or(start);
        if start <= newest - window_ms {
            self.late += 1;
            return None;
        }
        // Buckets the window has left go first, so the bin is chosen among live ones.
        let (count, sum, bins) = (&mut g.count, &mut g.sum, &mut g.bins);
        g.buckets.expire(newest - window_ms, |f| {
            *count -= f.count;
            *sum -= f.sum;
            for (k, n) in f.bins {
                if let Some(c) = bins.get_mut(&k) {
                    *c -= n;
                    if *c == 0 {
                        bins.remove(&k);
                    }
                }
            }
        });
        let k = p95.then(|| bin_in(g, v));
        let b = g.buckets.entry(start, || Bucket {
            start,
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            bins: BTreeMap::new(),
        });
        b.count += 1;
        b.sum += v;
        b.min = b.min.min(v);
        b.max = b.max.max(v);
        if let Some(k) = k {
            *b.bins.entry(k).or_insert(0) += 1;
            *g.bins.entry(k).or_insert(0) += 1;
        }
        g.count += 1;
        g.sum += v;
        if g.last.is_none_or(|(lt, _)| t >= lt) {
            g.last = Some((t, v));
        }
        let agg = match self.aggregate {
            Aggregate::Last => g.last.map(|(_, v)| v),
            Aggregate::Avg => (g.count > 0).then(|| g.sum / g.count as f64),
            Aggregate::Min => g.buckets.iter().map(|b| b.min).reduce(f64::min),
            Aggregate::Max => g.buckets.iter().map(|b| b.max).reduce(f64::max),
            Aggregate::P95 => {
                let rank = ((g.count as f64) * 0.95).ceil() as u64;
                let mut seen = 0u64;
                g.bins.iter().find_map(|(k, n)| {
                    seen += u64::from(*n);
                    (seen >= rank).then(|| bin_value(*k))
                })
            }
        }?;
        let holds = self.op.holds(agg, self.threshold);
        if !holds {
            g.since = None;
            g.firing = false;
            return None;
        }
        let since = *g.since.get_or_insert(t);
        if !g.firing && t - since >= self.for_ms {
            g.firing = true;
            return Some(Fire {
                count: g.count,
                first_ts: Timestamp(since),
            });
        }
        None
    }

    /// Drops groups with nothing left in their window at `now`.
    pub fn on_tick(&mut self, now: Timestamp) {
        let edge = now.millis() - self.window_ms;
        self.groups
            .retain(|g| g.buckets.back().is_some_and(|b| b.start > edge));
    }
}

use super::{GroupValues, Marks};

impl super::Kind for MetricDetector {
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
        MetricDetector::on_event(self, key, ts, marks.value)
    }
    fn on_tick(&mut self, now: Timestamp) {
        MetricDetector::on_tick(self, now)
    }
    fn dropped(&self) -> (u64, u64) {
        (self.late, self.evicted())
    }
    fn groups(&self) -> usize {
        MetricDetector::groups(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(a: Aggregate, op: CompareOp, th: f64, for_secs: u64) -> MetricDetector {
        MetricDetector::new(
            a,
            op,
            th,
            Duration::from_secs(60),
            Duration::from_secs(for_secs),
            100,
        )
    }

    #[test]
    fn avg_over_the_window_held_for_a_while() {
        let mut d = det(Aggregate::Avg, CompareOp::Gt, 90.0, 20);
        assert!(
            d.on_event("m", Timestamp(0), Some(95.0)).is_none(),
            "holds, but not yet for 20 s"
        );
        assert!(d.on_event("m", Timestamp(10_000), Some(95.0)).is_none());
        let f = d
            .on_event("m", Timestamp(20_000), Some(91.0))
            .expect("held 20 s");
        assert_eq!((f.count, f.first_ts), (3, Timestamp(0)));
        assert!(
            d.on_event("m", Timestamp(25_000), Some(99.0)).is_none(),
            "once"
        );
        // Clears (avg drops to 90 or below), then holds again from scratch.
        assert!(d.on_event("m", Timestamp(26_000), Some(0.0)).is_none());
        assert!(d.on_event("m", Timestamp(100_000), Some(95.0)).is_none());
        assert!(d.on_event("m", Timestamp(120_000), Some(95.0)).is_some());
        assert!(
            d.on_event("m", Timestamp(120_000), None).is_none(),
            "events without a value do not count"
        );
    }

    #[test]
    fn min_max_last_and_the_window_edge() {
        let mut lo = det(Aggregate::Min, CompareOp::Lt, 10.0, 0);
        assert!(
            lo.on_event("disk", Timestamp(0), Some(5.0)).is_some(),
            "exactly below"
        );
        let mut hi = det(Aggregate::Max, CompareOp::Ge, 100.0, 0);
        assert!(
            hi.on_event("a", Timestamp(0), Some(100.0)).is_some(),
            "ge is inclusive"
        );
        let mut last = det(Aggregate::Last, CompareOp::Gt, 50.0, 0);
        assert!(last.on_event("a", Timestamp(0), Some(60.0)).is_some());
        assert!(last.on_event("a", Timestamp(1_000), Some(40.0)).is_none());
        // The 5.0 leaves min's window a minute later; 20 alone is not below 10.
        assert!(lo.on_event("disk", Timestamp(61_000), Some(20.0)).is_none());
    }

    #[test]
    fn p95_is_within_a_few_percent() {
        let mut d = det(Aggregate::P95, CompareOp::Gt, 940.0, 0);
        // 1..=1000 ms latencies: p95 = 950.
        let mut fired = None;
        for i in 1..=1000 {
            if let Some(f) = d.on_event("api", Timestamp(i), Some(i as f64)) {
                fired = Some(i);
                let _ = f;
            }
        }
        let at = fired.expect("p95 exceeds 940");
        assert!((960..=1000).contains(&at), "fired at {at}");
        let mut below = det(Aggregate::P95, CompareOp::Gt, 980.0, 0);
        assert!((1..=1000).all(|i| {
            below
                .on_event("api", Timestamp(i), Some(i as f64))
                .is_none()
        }));
    }

    #[test]
    fn bins_are_ordered_like_values() {
        let vs = [-1e6, -3.0, -0.5, 0.0, 1e-9, 0.5, 3.0, 1e6];
        let bins: Vec<i32> = vs.iter().map(|v| bin(*v)).collect();
        assert!(bins.windows(2).all(|w| w[0] < w[1]), "{bins:?}");
        for v in [0.37, 12.0, 950.0, -42.0] {
            let back = bin_value(bin(v));
            assert!(((back - v) / v).abs() < 0.02, "{v} -> {back}");
        }
    }

    /// Values made up to span every bin (1e-300 to 1e300, both signs) keep a group's
    /// histogram, and every bucket's, at [`MAX_BINS`], with the counts exact: the window's
    /// count is the histogram's sum, also after buckets expire.
    #[test]
    fn made_up_values_do_not_grow_the_histogram() {
        let mut d = det(Aggregate::P95, CompareOp::Gt, f64::MAX, 0);
        let mut v = 1e-300;
        for i in 0..20_000i64 {
            let sign = if i % 2 == 0 { 1.0 } else { -1.0 };
            d.on_event("g", Timestamp(i * 10), Some(sign * v));
            v *= 1.07;
            if v > 1e300 {
                v = 1e-300;
            }
        }
        let g = d.groups.touch("g", Group::default);
        assert_eq!(g.bins.len(), MAX_BINS);
        assert!(g.buckets.iter().all(|b| b.bins.len() <= MAX_BINS));
        assert!(
            g.buckets
                .iter()
                .all(|b| b.bins.keys().all(|k| g.bins.contains_key(k)))
        );
        let in_bins: u64 = g.bins.values().map(|n| u64::from(*n)).sum();
        assert_eq!(in_bins, g.count);
        assert_eq!(g.count, g.buckets.iter().map(|b| b.count).sum::<u64>());
        // An ordinary value still finds its own bin once expiry has made room.
        assert!(
            d.on_event("g", Timestamp(10_000_000), Some(950.0))
                .is_none()
        );
        let g = d.groups.touch("g", Group::default);
        assert_eq!(g.bins.keys().copied().collect::<Vec<_>>(), vec![bin(950.0)]);
    }

    /// Values a writer keeps alive below the real ones cannot hide them: 600 made-up small
    /// values, then 100 of 5000, in one window: the p95 is 5000's bin (merging the lowest
    /// bins keeps the upper ones; moving 5000 to the nearest bin held would not).
    #[test]
    fn made_up_small_values_do_not_hide_the_high_ones() {
        let mut d = det(Aggregate::P95, CompareOp::Gt, 4_000.0, 0);
        let mut small = 1e-200;
        for i in 0..600 {
            assert!(d.on_event("h", Timestamp(i), Some(small)).is_none());
            small *= 1.05;
        }
        let fired = (0..100).any(|i| d.on_event("h", Timestamp(600 + i), Some(5_000.0)).is_some());
        assert!(fired, "p95 over 4000");
        let g = d.groups.touch("h", Group::default);
        assert_eq!(g.bins.len(), MAX_BINS);
        let in_bins: u64 = g.bins.values().map(|n| u64::from(*n)).sum();
        assert_eq!(in_bins, g.count);
        assert!(g.count > 600, "fired once the high values were over 5%");
    }
}
