//! `kind = "absence"`: fires when a group that was seen before (or is listed in `expected`)
//! sends no matching event for `timeout` of engine time.
//!
//! It fires once per silence, at event time `last_seen + timeout` (so a replay gives the same
//! detections as live), and not again until the group has sent an event. Groups listed in
//! `expected` count as seen when the engine first learns the time. The state per group is its
//! last time and its values; at most `max_groups` groups are held, the least recently seen
//! evicted first (counted).

use std::time::Duration;

use super::Fire;
use super::groups::GroupMap;
use crate::clock::{Timestamp, duration_millis};

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Group {
    values: Vec<(String, String)>,
    last_seen: i64,
    fired: bool,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct AbsenceDetector {
    timeout_ms: i64,
    groups: GroupMap<Group>,
    /// Expected groups not yet seeded (they are, at the first time the engine learns).
    pending_expected: Vec<(String, Vec<(String, String)>)>,
    /// The earliest moment a group can become due; nothing to scan before it.
    next_due: i64,
}

impl AbsenceDetector {
    /// `expected` holds the group values of groups that must report even if never seen.
    pub fn new(
        timeout: Duration,
        max_groups: usize,
        expected: Vec<(String, Vec<(String, String)>)>,
    ) -> Self {
        AbsenceDetector {
            timeout_ms: duration_millis(timeout).max(1),
            groups: GroupMap::new(max_groups),
            pending_expected: expected,
            next_due: i64::MAX,
        }
    }

    pub fn evicted(&self) -> u64 {
        self.groups.evicted
    }

    /// `values` gives the group's values; it is called only for a group not seen before.
    pub fn on_event(
        &mut self,
        key: &str,
        values: &dyn Fn() -> Vec<(String, String)>,
        ts: Timestamp,
    ) {
        self.seed(ts);
        let t = ts.millis();
        let g = self.groups.touch(key, || Group {
            values: values(),
            last_seen: t,
            fired: false,
        });
        if t >= g.last_seen {
            g.last_seen = t;
            g.fired = false;
        }
        self.next_due = self.next_due.min(g.last_seen + self.timeout_ms);
    }

    /// Groups silent for `timeout` at `now`: (key, values, fire) for each, once per silence.
    pub fn due(&mut self, now: Timestamp, out: &mut Vec<(Vec<(String, String)>, Fire)>) {
        self.seed(now);
        let now = now.millis();
        if now < self.next_due {
            return;
        }
        let mut next = i64::MAX;
        for g in self.groups.states_mut() {
            if g.fired {
                continue;
            }
            let due = g.last_seen + self.timeout_ms;
            if now >= due {
                g.fired = true;
                out.push((
                    g.values.clone(),
                    Fire {
                        count: 0,
                        first_ts: Timestamp(due),
                    },
                ));
            } else {
                next = next.min(due);
            }
        }
        self.next_due = next;
    }

    fn seed(&mut self, now: Timestamp) {
        for (key, values) in self.pending_expected.drain(..) {
            self.groups.seed(
                key,
                Group {
                    values,
                    last_seen: now.millis(),
                    fired: false,
                },
            );
            self.next_due = self.next_due.min(now.millis() + self.timeout_ms);
        }
    }

    pub fn groups(&self) -> usize {
        self.groups.len()
    }
}

use super::{GroupValues, Marks};

impl super::Kind for AbsenceDetector {
    fn on_event(
        &mut self,
        key: &str,
        group: &GroupValues<'_>,
        ts: Timestamp,
        marks: Marks,
    ) -> Option<Fire> {
        if marks.matched {
            AbsenceDetector::on_event(self, key, group, ts);
        }
        None
    }
    fn has_timers(&self) -> bool {
        true
    }
    fn due(&mut self, now: Timestamp, out: &mut Vec<(Vec<(String, String)>, Fire)>) {
        AbsenceDetector::due(self, now, out)
    }
    fn dropped(&self) -> (u64, u64) {
        (0, self.evicted())
    }
    fn groups(&self) -> usize {
        AbsenceDetector::groups(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vals(host: &str) -> impl Fn() -> Vec<(String, String)> + '_ {
        move || vec![("host".into(), host.into())]
    }

    fn due(d: &mut AbsenceDetector, now: i64) -> Vec<(String, i64)> {
        let mut out = Vec::new();
        d.due(Timestamp(now), &mut out);
        out.into_iter()
            .map(|(v, f)| (v[0].1.clone(), f.first_ts.millis()))
            .collect()
    }

    #[test]
    fn fires_once_at_exactly_the_timeout_and_rearms_on_the_next_event() {
        let mut d = AbsenceDetector::new(Duration::from_secs(60), 100, Vec::new());
        d.on_event("a", &vals("a"), Timestamp(0));
        assert!(due(&mut d, 59_999).is_empty());
        assert_eq!(due(&mut d, 60_000), vec![("a".into(), 60_000)]);
        assert!(due(&mut d, 120_000).is_empty(), "once per silence");
        d.on_event("a", &vals("a"), Timestamp(130_000));
        assert_eq!(due(&mut d, 500_000), vec![("a".into(), 190_000)]);
    }

    #[test]
    fn a_group_that_keeps_reporting_never_fires() {
        let mut d = AbsenceDetector::new(Duration::from_secs(10), 100, Vec::new());
        for t in (0..100_000).step_by(9_000) {
            d.on_event("a", &vals("a"), Timestamp(t));
            assert!(due(&mut d, t).is_empty());
        }
    }

    #[test]
    fn expected_groups_count_from_the_first_time_known() {
        let mut d = AbsenceDetector::new(
            Duration::from_secs(10),
            100,
            vec![("b".into(), vals("b")())],
        );
        assert!(due(&mut d, 5_000).is_empty());
        assert_eq!(due(&mut d, 15_000), vec![("b".into(), 15_000)]);
    }

    #[test]
    fn late_events_do_not_move_last_seen_back() {
        let mut d = AbsenceDetector::new(Duration::from_secs(10), 100, Vec::new());
        d.on_event("a", &vals("a"), Timestamp(50_000));
        d.on_event("a", &vals("a"), Timestamp(20_000));
        assert_eq!(due(&mut d, 60_000), vec![("a".into(), 60_000)]);
    }

    #[test]
    fn groups_are_capped() {
        let mut d = AbsenceDetector::new(Duration::from_secs(10), 50, Vec::new());
        for i in 0..1000 {
            d.on_event(&format!("g{i}"), &vals("x"), Timestamp(i));
        }
        assert!(d.groups() <= 50);
        assert!(d.evicted() >= 950);
    }
}
