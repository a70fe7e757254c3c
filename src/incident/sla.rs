//! Service-level agreements on response (`[[sla]]`): how soon an incident of a severity must
//! be acknowledged and resolved. A breach is an `sla_breached` entry (once per kind), which
//! the notifier routes like any other news (so it can escalate), and a counter; `show` gives
//! the time left and `/v1/stats` the share of incidents within their SLA.

use std::time::Duration;

use serde::Deserialize;

use super::{Incident, Severity, Status};
use crate::clock::Timestamp;
use crate::de::opt_duration;

/// `[[sla]]`: for these severities, acknowledged within `ack_within`, resolved within
/// `resolve_within` (either may be left out).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaConfig {
    #[serde(deserialize_with = "one_or_many")]
    pub severity: Vec<Severity>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub ack_within: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub resolve_within: Option<Duration>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Severity>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Severity),
        Many(Vec<Severity>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

/// The runbook's SLAs, used when no `[[sla]]` table is written: sev1 acknowledged within 5
/// minutes and resolved within 30, sev2 within 15 minutes and 4 hours.
pub fn defaults() -> Vec<SlaConfig> {
    let m = |n: u64| Some(Duration::from_secs(n * 60));
    vec![
        SlaConfig {
            severity: vec![Severity::Sev1],
            ack_within: m(5),
            resolve_within: m(30),
        },
        SlaConfig {
            severity: vec![Severity::Sev2],
            ack_within: m(15),
            resolve_within: m(240),
        },
    ]
}

/// The SLA of a severity: (ack_within, resolve_within), from the first table naming it.
pub fn of(slas: &[SlaConfig], severity: Severity) -> (Option<Duration>, Option<Duration>) {
    slas.iter()
        .find(|s| s.severity.contains(&severity))
        .map_or((None, None), |s| (s.ack_within, s.resolve_within))
}

/// What `i` has newly breached at `now`: `"ack"` (still open, unacknowledged, past
/// `ack_within`) and `"resolve"` (still active past `resolve_within`), each once.
pub fn due(i: &Incident, slas: &[SlaConfig], now: Timestamp) -> Vec<(&'static str, Duration)> {
    if !i.status.is_active() {
        return Vec::new();
    }
    let (ack, resolve) = of(slas, i.severity);
    let past = |d: Duration| now.since(i.created_at) >= d;
    let mut out = Vec::new();
    if let Some(d) = ack
        && i.status == Status::Open
        && i.acknowledged_at.is_none()
        && past(d)
        && !i.sla_breached.iter().any(|k| k == "ack")
    {
        out.push(("ack", d));
    }
    if let Some(d) = resolve
        && past(d)
        && !i.sla_breached.iter().any(|k| k == "resolve")
    {
        out.push(("resolve", d));
    }
    out
}

/// Whether `i` met its SLA of `kind` ("ack" or "resolve"), if it has one and the outcome
/// is known (acknowledged or resolved, or breached).
pub fn met(i: &Incident, slas: &[SlaConfig], kind: &str) -> Option<bool> {
    let (ack, resolve) = of(slas, i.severity);
    let (within, done) = match kind {
        "ack" => (ack?, i.acknowledged_at.or(i.mitigated_at).or(i.resolved_at)),
        _ => (resolve?, i.resolved_at),
    };
    if i.sla_breached.iter().any(|k| k == kind) {
        return Some(false);
    }
    let done = done?;
    Some(done.since(i.created_at) < within)
}

/// Where `i` stands against its SLA at `now`, for people: per kind, `within`, `due_at`,
/// and `left_seconds` while it runs, or `met`/`breached` once known. Null without an SLA.
pub fn status(i: &Incident, slas: &[SlaConfig], now: Timestamp) -> serde_json::Value {
    let (ack, resolve) = of(slas, i.severity);
    let mut out = serde_json::Map::new();
    for (kind, within) in [("ack", ack), ("resolve", resolve)] {
        let Some(within) = within else { continue };
        let due_at = i.created_at.saturating_add(within);
        let v = match met(i, slas, kind) {
            Some(true) => {
                serde_json::json!({"within": humantime::format_duration(within).to_string(), "due_at": due_at, "state": "met"})
            }
            Some(false) => {
                serde_json::json!({"within": humantime::format_duration(within).to_string(), "due_at": due_at, "state": "breached"})
            }
            None if !i.status.is_active() => continue,
            None => {
                serde_json::json!({"within": humantime::format_duration(within).to_string(), "due_at": due_at, "state": "running",
                "left_seconds": (due_at.millis() - now.millis()).max(0) / 1000})
            }
        };
        out.insert(kind.to_owned(), v);
    }
    if out.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaches_come_once_each_and_stop_with_the_response() {
        let slas = defaults();
        let mut i = Incident::new(1, "k".into(), "t".into(), Severity::Sev1, Timestamp(0));
        let min = |n: i64| Timestamp(n * 60_000);
        assert!(due(&i, &slas, min(4)).is_empty());
        assert_eq!(due(&i, &slas, min(5)).len(), 1);
        i.sla_breached.push("ack".into());
        assert!(due(&i, &slas, min(10)).is_empty());
        assert_eq!(due(&i, &slas, min(30))[0].0, "resolve");
        assert_eq!(met(&i, &slas, "ack"), Some(false));
        // sev3 has no SLA by default.
        let j = Incident::new(2, "k".into(), "t".into(), Severity::Sev3, Timestamp(0));
        assert!(due(&j, &slas, min(1000)).is_empty());
        assert_eq!(met(&j, &slas, "ack"), None);
        // Acknowledged in time.
        let mut k = Incident::new(3, "k".into(), "t".into(), Severity::Sev2, Timestamp(0));
        k.acknowledged_at = Some(min(3));
        k.status = Status::Acknowledged;
        assert!(due(&k, &slas, min(20)).is_empty());
        assert_eq!(met(&k, &slas, "ack"), Some(true));
        assert_eq!(met(&k, &slas, "resolve"), None);
    }
}
