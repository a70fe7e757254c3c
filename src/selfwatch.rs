//! The daemon's own failures as incidents, so that someone hears of them: a source erroring
//! and a plugin restarting for longer than `[daemon] self_alert_after`, a channel
//! dead-lettering notifications, an action's circuit breaker holding runs back, store writes
//! failing. Each is an incident under a key
//! `incidentd/…` (service `incidentd`, rule `incidentd`), routed like any other, and
//! resolved by `system` once the condition has been clear for `self_alert_after`.
//!
//! The watch reads the telemetry counters every few seconds; what is failing, since when,
//! and what is open is decided by the pure [`Watch::observe`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use crate::clock::{Clock, Timestamp};
use crate::detection::Detection;
use crate::incident::manager::Msg;
use crate::incident::{Command, IncidentHandle, Severity, Transition};
use crate::telemetry::Telemetry;

/// How often the counters are read.
const EVERY: Duration = Duration::from_secs(2);

/// Failures this recent still count as "failing now" (a source retrying every 30 s is
/// erroring all along, not on and off).
const GRACE: Duration = Duration::from_secs(60);

/// One thing that can fail, as read now.
#[derive(Clone, Debug, PartialEq)]
pub struct Signal {
    /// `incidentd/source/ID`, `incidentd/plugin/NAME`, `incidentd/channel/ID`, `incidentd/store`.
    pub key: String,
    pub title: String,
    pub severity: Severity,
    /// A counter that only grows while it fails (errors, restarts, dead letters).
    pub failures: u64,
    /// Open at the first failure instead of after `self_alert_after` of them.
    pub at_once: bool,
    /// A counter of what went right (deliveries), for things whose quiet proves nothing: a
    /// dead channel that is told nothing fails nothing. Then it resolves only after a
    /// success that followed the last failure (and a channel that is down for good stays
    /// open, instead of flapping on its own notifications).
    pub successes: Option<u64>,
    pub detail: Option<String>,
}

#[derive(Debug, Default)]
struct Track {
    seen: u64,
    ok_seen: u64,
    /// A success came after the last failure.
    recovered: bool,
    first: Option<Timestamp>,
    last: Option<Timestamp>,
    open: bool,
}

/// What to do about one key.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    Open(Signal),
    Resolve(String),
}

/// What is failing, since when, and what is open.
#[derive(Debug, Default)]
pub struct Watch {
    after: Duration,
    tracks: HashMap<String, Track>,
    /// Whether the first reading (the baseline) was taken.
    started: bool,
}

impl Watch {
    pub fn new(after: Duration) -> Watch {
        Watch {
            after,
            tracks: HashMap::new(),
            started: false,
        }
    }

    /// Reads the signals at `now` and says which keys to open and which to resolve. The
    /// first reading is the baseline (what the counters held when the watch began is not
    /// news); a signal that appears later (a breaker's first trip, a channel's first
    /// delivery) counts from zero.
    pub fn observe(&mut self, signals: Vec<Signal>, now: Timestamp) -> Vec<Step> {
        let mut out = Vec::new();
        let baseline = !self.started;
        self.started = true;
        for s in signals {
            if baseline {
                self.tracks.insert(
                    s.key.clone(),
                    Track {
                        seen: s.failures,
                        ok_seen: s.successes.unwrap_or(0),
                        ..Track::default()
                    },
                );
                continue;
            }
            let t = self.tracks.entry(s.key.clone()).or_default();
            if let Some(ok) = s.successes
                && ok > t.ok_seen
            {
                t.ok_seen = ok;
                t.recovered = true;
            }
            if s.failures > t.seen {
                t.seen = s.failures;
                t.recovered = false;
                if t.last.is_none_or(|l| now.since(l) > GRACE) {
                    t.first = Some(now);
                }
                t.last = Some(now);
            }
            let failing_since = t
                .first
                .filter(|_| t.last.is_some_and(|l| now.since(l) <= GRACE));
            match failing_since {
                Some(first) if !t.open && (s.at_once || now.since(first) >= self.after) => {
                    t.open = true;
                    out.push(Step::Open(s));
                }
                _ => {
                    let proven = s.successes.is_none() || t.recovered;
                    if t.open && proven && t.last.is_some_and(|l| now.since(l) >= self.after) {
                        t.open = false;
                        t.first = None;
                        out.push(Step::Resolve(s.key));
                    }
                }
            }
        }
        out
    }
}

/// The signals the telemetry gives now.
pub fn signals(t: &Telemetry) -> Vec<Signal> {
    let mut out = Vec::new();
    for s in t.sources.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        out.push(Signal {
            key: format!("incidentd/source/{}", s.id),
            title: format!("incidentd: source {} keeps failing", s.id),
            severity: Severity::Sev3,
            failures: s.errors.get(),
            at_once: false,
            successes: None,
            detail: s
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        });
    }
    for p in t.plugins.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        out.push(Signal {
            key: format!("incidentd/plugin/{}", p.name),
            title: format!("incidentd: plugin {} restarts in a loop", p.name),
            severity: Severity::Sev3,
            failures: p.restarts.get(),
            at_once: false,
            successes: None,
            detail: p
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        });
    }
    let channels: BTreeMap<String, crate::telemetry::PeerStats> =
        t.channels.lock().unwrap_or_else(|p| p.into_inner()).clone();
    for (id, c) in channels {
        out.push(Signal {
            key: format!("incidentd/channel/{id}"),
            title: format!("incidentd: notifications to {id} are given up"),
            severity: Severity::Sev2,
            failures: c.dead_lettered,
            at_once: true,
            successes: Some(c.delivered),
            detail: c.last_error.clone(),
        });
    }
    let trips = t
        .breaker_trips
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for (action, n) in trips {
        out.push(Signal {
            key: format!("incidentd/breaker/{action}"),
            title: format!("incidentd: the circuit breaker of action {action} is open"),
            severity: Severity::Sev3,
            failures: n,
            at_once: true,
            successes: None,
            detail: None,
        });
    }
    out.push(Signal {
        key: "incidentd/store".into(),
        title: "incidentd: store writes are failing".into(),
        severity: Severity::Sev1,
        failures: t.store_errors.get(),
        at_once: true,
        successes: None,
        detail: None,
    });
    out
}

/// Runs the watch until `cancel`: opens incidents through the manager's detection path and
/// resolves them by key.
pub async fn run(
    after: Duration,
    telemetry: Arc<Telemetry>,
    incidents: IncidentHandle,
    store: Arc<dyn crate::store::Store>,
    clock: Arc<dyn Clock>,
    host: Arc<str>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut watch = Watch::new(after);
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => break,
            _ = tick.tick() => {}
        }
        let now = clock.now();
        for step in watch.observe(signals(&telemetry), now) {
            match step {
                Step::Open(s) => {
                    tracing::warn!(key = %s.key, detail = s.detail.as_deref(), "incidentd's own failure raised as an incident");
                    let d = detection(&s, &host, now);
                    if incidents.sender().send(Msg::Detection(d)).await.is_err() {
                        return;
                    }
                }
                Step::Resolve(key) => {
                    let id = match store.latest_for_key(&key) {
                        Ok(Some(id)) => id,
                        Ok(None) => continue,
                        Err(e) => {
                            telemetry.store_error("self-watch could not look up an incident", &e);
                            continue;
                        }
                    };
                    let r = incidents
                        .command(Command::Transition {
                            id,
                            transition: Transition::Resolve,
                            note: Some(format!(
                                "resolved automatically: no failure for {}",
                                humantime::format_duration(after)
                            )),
                            actor: "system".into(),
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::debug!(key = %key, error = %e, "self-incident not resolved");
                    }
                }
            }
        }
    }
}

fn detection(s: &Signal, host: &str, now: Timestamp) -> Detection {
    let mut labels = BTreeMap::new();
    if let Some(d) = &s.detail {
        labels.insert("last_error".to_owned(), d.chars().take(300).collect());
    }
    Detection {
        rule: "incidentd".into(),
        severity: s.severity,
        key: s.key.clone(),
        summary: s.title.clone(),
        ts: now,
        first_ts: now,
        count: 1,
        group: BTreeMap::new(),
        labels,
        service: Some("incidentd".into()),
        host: Some(host.to_owned()),
        correlation_id: None,
        trace_id: None,
        runbook: None,
        message: s.detail.clone(),
        origin: None,
        arrived: None,
        detected: None,
        resolve_after_ms: None,
        evidence: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig(n: u64, at_once: bool) -> Signal {
        Signal {
            key: "incidentd/source/x".into(),
            title: "t".into(),
            severity: Severity::Sev3,
            failures: n,
            at_once,
            successes: None,
            detail: None,
        }
    }

    #[test]
    fn opens_after_the_delay_resolves_after_the_same_quiet() {
        let mut w = Watch::new(Duration::from_secs(10));
        let s = |t: i64| Timestamp(t * 1000);
        // Baseline: old failures are not news.
        assert!(w.observe(vec![sig(5, false)], s(0)).is_empty());
        assert!(w.observe(vec![sig(6, false)], s(2)).is_empty());
        assert!(w.observe(vec![sig(7, false)], s(8)).is_empty());
        assert!(matches!(
            w.observe(vec![sig(8, false)], s(12))[..],
            [Step::Open(_)]
        ));
        // Still failing: nothing more.
        assert!(w.observe(vec![sig(9, false)], s(14)).is_empty());
        // Quiet for less than 10 s: still open; then resolved.
        assert!(w.observe(vec![sig(9, false)], s(20)).is_empty());
        assert_eq!(
            w.observe(vec![sig(9, false)], s(24)),
            [Step::Resolve("incidentd/source/x".into())]
        );
        // At once: the first new failure opens.
        let mut w = Watch::new(Duration::from_secs(10));
        assert!(w.observe(vec![sig(0, true)], s(0)).is_empty());
        assert!(matches!(
            w.observe(vec![sig(1, true)], s(2))[..],
            [Step::Open(_)]
        ));

        // A channel: quiet is not enough, a delivery after the last failure is.
        let ch = |fail: u64, ok: u64| Signal {
            successes: Some(ok),
            ..sig(fail, true)
        };
        let mut w = Watch::new(Duration::from_secs(10));
        assert!(w.observe(vec![ch(0, 5)], s(0)).is_empty());
        assert!(matches!(
            w.observe(vec![ch(1, 5)], s(1))[..],
            [Step::Open(_)]
        ));
        assert!(
            w.observe(vec![ch(1, 5)], s(100)).is_empty(),
            "no delivery since"
        );
        assert_eq!(
            w.observe(vec![ch(1, 6)], s(101)).len(),
            1,
            "delivered again"
        );
    }
}
