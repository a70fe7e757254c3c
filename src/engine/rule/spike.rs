//! `kind = "spike"`: the count (or the average `value`) of a group's events in a `window`
//! compared with the mean of its previous `baseline` windows: at least `factor` times higher
//! (`direction = "up"`) or at most `1/factor` of it (`"down"`).
//!
//! Windows are tumbling, aligned to multiples of `window` on event time. `up` is checked on
//! each event against the current (partial) window; `down` is checked when a window closes
//! (a timer, so a replay fires like live, and a group that goes silent is seen to drop).
//! A group is judged only once it has `baseline` windows of history. A state kind: fires once,
//! then again only after a window in which the condition did not hold. `min_count`: `up` needs
//! that many events in the window, `down` a baseline of at least that many events per window.
//! With `measure = "avg"`, a window without values is not judged (no data is not a drop).
//! Per group the state is at most `baseline + 1` windows.

use std::time::Duration;

use super::Fire;
use super::groups::GroupMap;
use super::ring::{Keyed, Ring};
use crate::clock::{Timestamp, duration_millis};
use crate::engine::config::{SpikeDirection, SpikeMeasure};

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize)]
struct Win {
    index: i64,
    count: u64,
    sum: f64,
}

impl Keyed for Win {
    fn key(&self) -> i64 {
        self.index
    }
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Group {
    values: Vec<(String, String)>,
    /// Non-empty windows, oldest first; at most `baseline + 1`.
    wins: Ring<Win>,
    first_index: i64,
    /// `down`: the last window index already judged.
    judged: i64,
    firing: bool,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SpikeDetector {
    window_ms: i64,
    baseline: i64,
    factor: f64,
    direction: SpikeDirection,
    measure: SpikeMeasure,
    min_count: u64,
    groups: GroupMap<Group>,
    pub late: u64,
}

impl SpikeDetector {
    pub fn new(
        window: Duration,
        baseline: u32,
        factor: f64,
        direction: SpikeDirection,
        measure: SpikeMeasure,
        min_count: u64,
        max_groups: usize,
    ) -> Self {
        SpikeDetector {
            window_ms: duration_millis(window).max(1),
            baseline: i64::from(baseline.max(1)),
            factor,
            direction,
            measure,
            min_count,
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

    pub fn has_timers(&self) -> bool {
        self.direction == SpikeDirection::Down
    }

    pub fn on_event(
        &mut self,
        key: &str,
        values: &dyn Fn() -> Vec<(String, String)>,
        ts: Timestamp,
        value: Option<f64>,
    ) -> Option<Fire> {
        if self.measure == SpikeMeasure::Avg && value.is_none_or(|v| !v.is_finite()) {
            return None;
        }
        let idx = ts.millis().div_euclid(self.window_ms);
        let (baseline, window_ms) = (self.baseline, self.window_ms);
        let g = self.groups.touch(key, || Group {
            values: values(),
            wins: Ring::default(),
            first_index: idx,
            judged: idx - 1,
            firing: false,
        });
        let newest = g.wins.newest_or(idx);
        if idx < newest - baseline || (self.direction == SpikeDirection::Down && idx <= g.judged) {
            self.late += 1;
            return None;
        }
        let w = g.wins.entry(idx, || Win {
            index: idx,
            count: 0,
            sum: 0.0,
        });
        w.count += 1;
        w.sum += value.unwrap_or(0.0);
        g.wins.expire(newest - baseline - 1, drop);
        if self.direction == SpikeDirection::Up && idx == newest && idx - g.first_index >= baseline
        {
            let (current, mean) = measure(g, idx, baseline, self.measure);
            let count = g.wins.back().map_or(0, |w| w.count);
            let holds = count >= self.min_count && current >= self.factor * mean && current > 0.0;
            if holds && !g.firing {
                g.firing = true;
                return Some(Fire {
                    count,
                    first_ts: Timestamp(idx * window_ms),
                });
            }
            if !holds {
                g.firing = false;
            }
        }
        None
    }

    /// `down`: judges every window that has closed by `now`.
    pub fn due(&mut self, now: Timestamp, out: &mut Vec<(Vec<(String, String)>, Fire)>) {
        if self.direction != SpikeDirection::Down {
            return;
        }
        let now_idx = now.millis().div_euclid(self.window_ms);
        for g in self.groups.states_mut() {
            let newest = g.wins.back().map_or(g.judged, |w| w.index);
            // After `baseline` empty windows the mean is zero and nothing more can fire.
            let last = (now_idx - 1).min(newest + self.baseline);
            while g.judged < last {
                g.judged += 1;
                let k = g.judged;
                if k - g.first_index < self.baseline {
                    continue;
                }
                let events_in = |i: i64| g.wins.get(i).map_or(0, |w| w.count);
                if self.measure == SpikeMeasure::Avg && events_in(k) == 0 {
                    // No values is no data, not a drop in their average.
                    continue;
                }
                let (closed, mean) = measure(g, k, self.baseline, self.measure);
                let mean_events = (k - self.baseline..k).map(events_in).sum::<u64>() as f64
                    / self.baseline as f64;
                let holds = mean_events >= self.min_count as f64
                    && mean > 0.0
                    && closed <= mean / self.factor;
                if holds && !g.firing {
                    g.firing = true;
                    let count = g.wins.get(k).map_or(0, |w| w.count);
                    out.push((
                        g.values.clone(),
                        Fire {
                            count,
                            first_ts: Timestamp((k + 1) * self.window_ms),
                        },
                    ));
                } else if !holds {
                    g.firing = false;
                }
            }
        }
    }

    /// Lets go of groups whose windows have all left the baseline.
    pub fn on_tick(&mut self, now: Timestamp) {
        let now_idx = now.millis().div_euclid(self.window_ms);
        let keep_from = now_idx - self.baseline - 1;
        let down = self.direction == SpikeDirection::Down;
        self.groups.retain(|g| {
            let newest = g.wins.back().map_or(i64::MIN, |w| w.index);
            newest >= keep_from || (down && g.judged < newest + self.baseline)
        });
    }
}

/// The measure of window `k` and the mean of the `baseline` windows before it (empty windows
/// count as zero events; for averages, only windows with events count).
fn measure(g: &Group, k: i64, baseline: i64, m: SpikeMeasure) -> (f64, f64) {
    let win = |i: i64| g.wins.get(i);
    match m {
        SpikeMeasure::Count => {
            let current = win(k).map_or(0.0, |w| w.count as f64);
            let total: u64 = (k - baseline..k).filter_map(win).map(|w| w.count).sum();
            (current, total as f64 / baseline as f64)
        }
        SpikeMeasure::Avg => {
            let current = win(k).map_or(0.0, |w| w.sum / w.count as f64);
            let avgs: Vec<f64> = (k - baseline..k)
                .filter_map(win)
                .map(|w| w.sum / w.count as f64)
                .collect();
            let mean = if avgs.is_empty() {
                0.0
            } else {
                avgs.iter().sum::<f64>() / avgs.len() as f64
            };
            (current, mean)
        }
    }
}

use super::{GroupValues, Marks};

impl super::Kind for SpikeDetector {
    fn on_event(
        &mut self,
        key: &str,
        group: &GroupValues<'_>,
        ts: Timestamp,
        marks: Marks,
    ) -> Option<Fire> {
        if !marks.matched {
            return None;
        }
        SpikeDetector::on_event(self, key, group, ts, marks.value)
    }
    fn has_timers(&self) -> bool {
        SpikeDetector::has_timers(self)
    }
    fn due(&mut self, now: Timestamp, out: &mut Vec<(Vec<(String, String)>, Fire)>) {
        SpikeDetector::due(self, now, out)
    }
    fn on_tick(&mut self, now: Timestamp) {
        SpikeDetector::on_tick(self, now)
    }
    fn dropped(&self) -> (u64, u64) {
        (self.late, self.evicted())
    }
    fn groups(&self) -> usize {
        SpikeDetector::groups(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals() -> Vec<(String, String)> {
        vec![("service".into(), "api".into())]
    }

    fn up() -> SpikeDetector {
        // One-minute windows, baseline of 3, 3× up, at least 5 events.
        SpikeDetector::new(
            Duration::from_secs(60),
            3,
            3.0,
            SpikeDirection::Up,
            SpikeMeasure::Count,
            5,
            100,
        )
    }

    fn feed(d: &mut SpikeDetector, minute: i64, n: i64) -> Vec<i64> {
        let mut fired = Vec::new();
        for i in 0..n {
            let t = minute * 60_000 + i * (60_000 / n.max(1));
            if d.on_event("api", &vals, Timestamp(t), None).is_some() {
                fired.push(t);
            }
        }
        fired
    }

    #[test]
    fn up_fires_when_the_current_window_reaches_factor_times_the_baseline() {
        let mut d = up();
        for m in 0..3 {
            assert!(feed(&mut d, m, 4).is_empty(), "building history");
        }
        // Baseline mean 4: the 12th event of minute 3 reaches 3×.
        let fired = feed(&mut d, 3, 20);
        assert_eq!(fired, vec![3 * 60_000 + 11 * 3_000]);
        // Next minute back to normal clears it; the one after spikes again.
        assert!(feed(&mut d, 4, 4).is_empty());
        assert_eq!(feed(&mut d, 5, 40).len(), 1);
    }

    #[test]
    fn up_needs_history_and_min_count() {
        let mut d = up();
        assert!(feed(&mut d, 0, 50).is_empty(), "no baseline yet");
        let mut quiet = up();
        for m in 0..3 {
            feed(&mut quiet, m, 1);
        }
        assert!(
            feed(&mut quiet, 3, 4).is_empty(),
            "4× the baseline but under min_count"
        );
    }

    #[test]
    fn down_fires_when_a_window_closes_low_including_silence() {
        let mut d = SpikeDetector::new(
            Duration::from_secs(60),
            3,
            4.0,
            SpikeDirection::Down,
            SpikeMeasure::Count,
            5,
            100,
        );
        for m in 0..4 {
            feed(&mut d, m, 20);
        }
        feed(&mut d, 4, 4); // 4 ≤ 20/4: a drop, judged when minute 4 closes
        let mut out = Vec::new();
        d.due(Timestamp(4 * 60_000 + 59_999), &mut out);
        assert!(out.is_empty(), "minute 4 has not closed");
        d.due(Timestamp(5 * 60_000), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].1.first_ts, Timestamp(5 * 60_000));
        // Silence keeps it low: no second fire until it recovers.
        d.due(Timestamp(20 * 60_000), &mut out);
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn avg_measure_compares_mean_values() {
        let mut d = SpikeDetector::new(
            Duration::from_secs(60),
            2,
            2.0,
            SpikeDirection::Up,
            SpikeMeasure::Avg,
            1,
            100,
        );
        for m in 0..2 {
            assert!(
                d.on_event("api", &vals, Timestamp(m * 60_000), Some(100.0))
                    .is_none()
            );
        }
        assert!(
            d.on_event("api", &vals, Timestamp(120_000), Some(150.0))
                .is_none()
        );
        assert!(
            d.on_event("api", &vals, Timestamp(121_000), Some(350.0))
                .is_some(),
            "avg 250 ≥ 2 × 100"
        );
        assert!(
            d.on_event("api", &vals, Timestamp(122_000), None).is_none(),
            "no value: ignored"
        );
    }
}
