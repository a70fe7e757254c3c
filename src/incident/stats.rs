//! Numbers over incidents (`GET /v1/stats`): counts by status and severity, the share
//! cancelled as false positives, and time to detect, acknowledge and resolve — mean, p50 and
//! p90 — overall, by severity and by service.
//!
//! - time to detect: from the first event behind an incident to its creation (incidents a
//!   rule detected);
//! - time to acknowledge: from creation to the first acknowledgement;
//! - time to resolve: from creation to resolution (or to closing, when closed unresolved).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{Incident, Status};

/// Mean and percentiles of a set of durations, in seconds.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Summary {
    pub count: usize,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p90: Option<f64>,
}

impl Summary {
    pub fn of(mut secs: Vec<f64>) -> Summary {
        if secs.is_empty() {
            return Summary::default();
        }
        secs.sort_by(f64::total_cmp);
        let n = secs.len();
        // Nearest rank: the smallest value with at least q of the values at or below it.
        let rank = |q: f64| secs[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
        Summary {
            count: n,
            mean: Some(secs.iter().sum::<f64>() / n as f64),
            p50: Some(rank(0.5)),
            p90: Some(rank(0.9)),
        }
    }
}

/// Time to detect, acknowledge and resolve.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Times {
    pub mttd: Summary,
    pub mtta: Summary,
    pub mttr: Summary,
}

#[derive(Default)]
struct Samples {
    detect: Vec<f64>,
    ack: Vec<f64>,
    resolve: Vec<f64>,
}

impl Samples {
    fn add(&mut self, i: &Incident) {
        let secs = |from: crate::clock::Timestamp, to: crate::clock::Timestamp| {
            (to.millis() - from.millis()).max(0) as f64 / 1000.0
        };
        // Detection time only means something for incidents a rule detected (not ones made
        // by hand or raised by an external alert, created the moment they were known).
        if i.rules.iter().any(|r| r != "alert") {
            self.detect.push(secs(i.first_event_at, i.created_at));
        }
        if let Some(a) = i.acknowledged_at {
            self.ack.push(secs(i.created_at, a));
        }
        // Closed without a resolution first counts as resolved when closed.
        if let Some(r) = i.resolved_at.or(i.closed_at) {
            self.resolve.push(secs(i.created_at, r));
        }
    }

    fn times(self) -> Times {
        Times {
            mttd: Summary::of(self.detect),
            mtta: Summary::of(self.ack),
            mttr: Summary::of(self.resolve),
        }
    }
}

/// Everything `GET /v1/stats` answers about incidents.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub incidents: usize,
    pub by_status: BTreeMap<String, usize>,
    pub by_severity: BTreeMap<String, usize>,
    /// Cancelled (false positives) over all incidents.
    pub cancelled_share: Option<f64>,
    pub times: Times,
    pub times_by_severity: BTreeMap<String, Times>,
    pub times_by_service: BTreeMap<String, Times>,
    /// Incidents each rule contributed detections to.
    pub incidents_by_rule: BTreeMap<String, usize>,
    /// Per week (by the Monday it starts on, `YYYY-MM-DD`, UTC) of creation: how many
    /// incidents, and their times.
    pub by_week: BTreeMap<String, Week>,
    /// Seconds spent in each response stage, over the incidents that were in it (an active
    /// incident's current stage counts up to its last change).
    pub time_in_stage: BTreeMap<String, Summary>,
}

/// One week of `by_week`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Week {
    pub incidents: usize,
    pub times: Times,
}

/// SLA outcomes of a set of incidents (those whose outcome is known: acknowledged or
/// resolved, or breached).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct SlaCompliance {
    pub ack_met: usize,
    pub ack_breached: usize,
    pub resolve_met: usize,
    pub resolve_breached: usize,
    /// Met over known outcomes.
    pub ack_share: Option<f64>,
    pub resolve_share: Option<f64>,
}

impl SlaCompliance {
    fn add(&mut self, i: &Incident, slas: &[super::sla::SlaConfig]) {
        match super::sla::met(i, slas, "ack") {
            Some(true) => self.ack_met += 1,
            Some(false) => self.ack_breached += 1,
            None => {}
        }
        match super::sla::met(i, slas, "resolve") {
            Some(true) => self.resolve_met += 1,
            Some(false) => self.resolve_breached += 1,
            None => {}
        }
        let share = |m: usize, b: usize| (m + b > 0).then(|| m as f64 / (m + b) as f64);
        self.ack_share = share(self.ack_met, self.ack_breached);
        self.resolve_share = share(self.resolve_met, self.resolve_breached);
    }
}

/// SLA compliance per severity and per week (of creation).
pub fn sla_compliance<'a>(
    incidents: impl IntoIterator<Item = &'a Incident>,
    slas: &[super::sla::SlaConfig],
) -> (
    BTreeMap<String, SlaCompliance>,
    BTreeMap<String, SlaCompliance>,
) {
    let (mut by_sev, mut by_week): (
        BTreeMap<String, SlaCompliance>,
        BTreeMap<String, SlaCompliance>,
    ) = Default::default();
    for i in incidents {
        if super::sla::of(slas, i.severity) == (None, None) {
            continue;
        }
        by_sev
            .entry(i.severity.as_str().to_owned())
            .or_default()
            .add(i, slas);
        by_week
            .entry(week_of(i.created_at))
            .or_default()
            .add(i, slas);
    }
    (by_sev, by_week)
}

/// The Monday (UTC) of the week holding `t`, as `YYYY-MM-DD`.
fn week_of(t: crate::clock::Timestamp) -> String {
    let day = t.millis().div_euclid(86_400_000);
    // 1970-01-01 was a Thursday: three days after a Monday.
    let monday = day - (day + 3).rem_euclid(7);
    time::OffsetDateTime::from_unix_timestamp(monday * 86_400)
        .map(|d| d.date().to_string())
        .unwrap_or_default()
}

impl Stats {
    pub fn of<'a>(incidents: impl IntoIterator<Item = &'a Incident>) -> Stats {
        let mut n = 0;
        let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_severity: BTreeMap<String, usize> = BTreeMap::new();
        let mut by_rule: BTreeMap<String, usize> = BTreeMap::new();
        let mut all = Samples::default();
        let mut sev: BTreeMap<String, Samples> = BTreeMap::new();
        let mut svc: BTreeMap<String, Samples> = BTreeMap::new();
        let mut cancelled = 0;
        let mut weeks: BTreeMap<String, (usize, Samples)> = BTreeMap::new();
        let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for i in incidents {
            n += 1;
            let end = i
                .closed_at
                .or(i.cancelled_at)
                .or(i.resolved_at)
                .or(i.updated_at)
                .unwrap_or(i.created_at);
            for (stage, ms) in i.stage.durations(i.created_at, end) {
                stages
                    .entry(stage.as_str().to_owned())
                    .or_default()
                    .push(ms as f64 / 1000.0);
            }
            let w = weeks.entry(week_of(i.created_at)).or_default();
            w.0 += 1;
            w.1.add(i);
            *by_status.entry(i.status.as_str().to_owned()).or_default() += 1;
            *by_severity
                .entry(i.severity.as_str().to_owned())
                .or_default() += 1;
            if i.status == Status::Cancelled {
                cancelled += 1;
            }
            for r in &i.rules {
                *by_rule.entry(r.clone()).or_default() += 1;
            }
            all.add(i);
            sev.entry(i.severity.as_str().to_owned())
                .or_default()
                .add(i);
            if let Some(s) = &i.service {
                svc.entry(s.clone()).or_default().add(i);
            }
        }
        Stats {
            incidents: n,
            by_status,
            by_severity,
            cancelled_share: (n > 0).then(|| cancelled as f64 / n as f64),
            times: all.times(),
            times_by_severity: sev.into_iter().map(|(k, s)| (k, s.times())).collect(),
            times_by_service: svc.into_iter().map(|(k, s)| (k, s.times())).collect(),
            incidents_by_rule: by_rule,
            by_week: weeks
                .into_iter()
                .map(|(k, (n, s))| {
                    (
                        k,
                        Week {
                            incidents: n,
                            times: s.times(),
                        },
                    )
                })
                .collect(),
            time_in_stage: stages
                .into_iter()
                .map(|(k, v)| (k, Summary::of(v)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn weeks_start_on_monday() {
        use crate::clock::Timestamp;
        // 2026-11-23 is a Monday; 2026-11-29 the Sunday after.
        let t = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        assert_eq!(super::week_of(t("2026-11-23T00:00:00Z")), "2026-11-23");
        assert_eq!(super::week_of(t("2026-11-29T23:59:59Z")), "2026-11-23");
        assert_eq!(super::week_of(t("2026-11-30T00:00:00Z")), "2026-11-30");
        assert_eq!(super::week_of(t("1970-01-01T00:00:00Z")), "1969-12-29");
    }

    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of(vec![10.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0]);
        assert_eq!(s.count, 10);
        assert_eq!(s.mean, Some(5.5));
        assert_eq!(s.p50, Some(5.0));
        assert_eq!(s.p90, Some(9.0));
        assert_eq!(Summary::of(vec![]), Summary::default());
        assert_eq!(Summary::of(vec![3.0]).p90, Some(3.0));
    }
}
