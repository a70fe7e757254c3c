//! Time-driven lifecycle: resolving quiet incidents, closing resolved ones, compacting old
//! closed ones.

use super::manager::*;

use super::{Incident, Status, Transition};
use crate::clock::Timestamp;

impl Manager {
    /// Writes the folds (see `fold.rs`) whose first detection is a minute old: the last
    /// detections of a flood that stopped reach the timeline and the change feed.
    pub(super) fn write_stale_folds(&mut self) -> Result<(), IncidentError> {
        let now = self.now;
        let query = super::port::ListQuery {
            status: vec![
                Status::Open,
                Status::Acknowledged,
                Status::Mitigated,
                Status::Resolved,
            ],
            ..Default::default()
        };
        let mut due = Vec::new();
        self.store.scan(&query, &mut |i| {
            if i.folded.as_ref().is_some_and(|f| f.stale(now)) {
                due.push(i.id);
            }
            true
        })?;
        for id in due {
            let mut inc = self.load(id)?;
            let entries: Vec<_> = self.fold_entry(&mut inc).into_iter().collect();
            if entries.is_empty() {
                continue;
            }
            self.write(&super::port::Change::entries_of(inc, entries))?;
        }
        Ok(())
    }

    pub(super) fn auto_resolve(&mut self) -> Result<(), IncidentError> {
        let now = self.now;
        let query = super::port::ListQuery {
            status: vec![Status::Open, Status::Acknowledged, Status::Mitigated],
            ..Default::default()
        };
        let mut due = Vec::new();
        self.store.scan(&query, &mut |i| {
            if let Some(ms) = quiet_for(&i, now) {
                due.push((i.id, ms));
            }
            true
        })?;
        for (id, ms) in due {
            let note = format!(
                "resolved automatically: no detection for {}",
                humantime::format_duration(std::time::Duration::from_millis(ms))
            );
            self.on_command(Command::Transition {
                id,
                transition: Transition::Resolve,
                note: Some(note),
                actor: SYSTEM_ACTOR.into(),
            })?;
        }
        Ok(())
    }

    /// Records each SLA an active incident has newly breached (`sla_breached`, once per
    /// kind), which the notifier routes like any other news.
    pub(super) fn check_slas(&mut self) -> Result<(), IncidentError> {
        let now = self.now;
        let query = super::port::ListQuery {
            status: vec![Status::Open, Status::Acknowledged, Status::Mitigated],
            ..Default::default()
        };
        let mut due = Vec::new();
        let slas = &self.config.slas;
        self.store.scan(&query, &mut |i| {
            let d = super::sla::due(&i, slas, now);
            if !d.is_empty() {
                due.push((i.id, d));
            }
            true
        })?;
        for (id, breaches) in due {
            let mut inc = self.load(id)?;
            let mut entries = Vec::new();
            for (kind, within) in breaches {
                inc.sla_breached.push(kind.to_owned());
                let what = if kind == "ack" {
                    "acknowledged"
                } else {
                    "resolved"
                };
                let within_text = humantime::format_duration(within).to_string();
                let note = format!(
                    "SLA breached: not {what} within {within_text} ({})",
                    inc.severity
                );
                let e = self.entry(
                    &mut inc,
                    super::EntryKind::SlaBreached,
                    SYSTEM_ACTOR,
                    Some(note),
                    serde_json::json!({"kind": kind, "within": within_text,
                        "within_ms": within.as_millis() as u64}),
                );
                entries.push(e);
                self.telemetry.sla_breaches.inc();
                tracing::warn!(incident = id, kind, within = %within_text, "SLA breached");
            }
            self.write(&super::port::Change::entries_of(inc, entries))?;
        }
        Ok(())
    }

    /// The ids of the incidents in `status` for which `due` holds.
    pub(super) fn ids_where(
        &self,
        status: Status,
        due: impl Fn(&Incident) -> bool,
    ) -> Result<Vec<u64>, IncidentError> {
        let query = super::port::ListQuery {
            status: vec![status],
            ..Default::default()
        };
        let mut ids = Vec::new();
        self.store.scan(&query, &mut |i| {
            if due(&i) {
                ids.push(i.id);
            }
            true
        })?;
        Ok(ids)
    }

    /// Deletes closed incidents whose closing is older than `retain_closed`.
    pub(super) fn compact(&mut self) -> Result<(), IncidentError> {
        let now = self.now;
        let keep = self.config.retain_closed;
        let old = self.ids_where(Status::Closed, |i| ended_before(i.closed_at, now, keep))?;
        for id in &old {
            self.recent.get_mut().forget(*id);
            self.store.remove_incident(*id)?;
        }
        if !old.is_empty() {
            tracing::info!(removed = old.len(), retain_closed = ?keep, "compacted old closed incidents");
        }
        Ok(())
    }

    /// Closes incidents resolved at least `auto_close_after` ago (actor `system`).
    pub(super) fn auto_close(&mut self) -> Result<(), IncidentError> {
        let now = self.now;
        let after = self.config.auto_close_after;
        let due = self.ids_where(Status::Resolved, |i| {
            ended_before(i.resolved_at, now, after)
        })?;
        for id in due {
            let note = format!(
                "closed automatically: resolved for {}",
                humantime::format_duration(after)
            );
            self.on_command(Command::Transition {
                id,
                transition: Transition::Close,
                note: Some(note),
                actor: SYSTEM_ACTOR.into(),
            })?;
        }
        Ok(())
    }
}

/// An active incident's `resolve_after` (ms) when no detection has attached for that long:
/// it resolves by itself.
pub(super) fn quiet_for(i: &Incident, now: Timestamp) -> Option<u64> {
    let (ms, last) = (i.resolve_after_ms?, i.last_detection_at?);
    (i.status.is_active() && now.millis() - last.millis() >= ms as i64).then_some(ms)
}

/// Whether a status reached at `at` is at least `age` old at `now` (auto-close after
/// resolving, compaction after closing).
pub(super) fn ended_before(
    at: Option<Timestamp>,
    now: Timestamp,
    age: std::time::Duration,
) -> bool {
    at.is_some_and(|t| now.since(t) >= age)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::incident::Severity;
    use crate::incident::port::IncidentLog;
    use crate::incident::port::memory::MemoryIncidents;

    struct Hand(AtomicI64);

    impl crate::clock::Clock for Hand {
        fn now(&self) -> Timestamp {
            Timestamp(self.0.load(Ordering::SeqCst))
        }
    }

    /// A fold left pending when a flood stops is written by the housekeeping a minute after
    /// its first detection, and the log then replays to the snapshot without it.
    #[tokio::test]
    async fn housekeeping_writes_a_fold_a_minute_old() {
        let store = Arc::new(MemoryIncidents::default());
        let clock = Arc::new(Hand(AtomicI64::new(1_800_000_000_000)));
        let tracker = tokio_util::task::TaskTracker::new();
        let config = super::super::config::IncidentsConfig {
            timeline_detections: 1,
            ..Default::default()
        };
        let handle = spawn(
            store.clone(),
            config,
            clock.clone(),
            Arc::new(crate::telemetry::Telemetry::default()),
            64,
            &tracker,
        )
        .expect("manager");
        let tx = handle.sender();
        // One entry of its own, a fold of one written at once (as many as the log), and a
        // fold of one left pending.
        for i in 0..3 {
            let d: crate::engine::Detection = serde_json::from_value(serde_json::json!({
                "rule": "ssh", "severity": "sev3", "key": "k", "summary": "s",
                "ts": 1_800_000_000_000i64 + i, "first_ts": 1_800_000_000_000i64 + i,
                "count": 5, "group": {"ip": "k"}, "labels": {"ip": "k"},
            }))
            .expect("detection");
            tx.send(Msg::Detection(d)).await.expect("sent");
        }
        assert!(handle.ping().await);
        let id = store.latest_for_key("k").unwrap().expect("an incident");
        let pending = |store: &MemoryIncidents| store.incident(id).unwrap().unwrap().folded;
        assert!(pending(&store).is_some());
        clock.0.fetch_add(59_999, Ordering::SeqCst);
        assert!(handle.housekeep().await && handle.ping().await);
        assert!(pending(&store).is_some(), "not yet a minute old");
        clock.0.fetch_add(1, Ordering::SeqCst);
        assert!(handle.housekeep().await && handle.ping().await);
        assert!(pending(&store).is_none());
        let inc = store.incident(id).unwrap().unwrap();
        assert_eq!(inc.detections, 3);
        let timeline = store.timeline(id).unwrap();
        assert_eq!(timeline.len(), 4, "created and three detection entries");
        let replayed = crate::incident::project::project(None, &timeline).expect("replays");
        assert_eq!(replayed, inc);
        drop(tx);
        drop(handle);
        tracker.close();
        tracker.wait().await;
    }

    #[test]
    fn quiet_incidents_resolve_and_old_ends_close_and_compact() {
        let mut i = Incident::new(1, "k".into(), "t".into(), Severity::Sev3, Timestamp(0));
        assert_eq!(quiet_for(&i, Timestamp(10_000)), None, "no resolve_after");
        i.resolve_after_ms = Some(5_000);
        i.last_detection_at = Some(Timestamp(1_000));
        assert_eq!(quiet_for(&i, Timestamp(5_999)), None);
        assert_eq!(quiet_for(&i, Timestamp(6_000)), Some(5_000));
        i.status = Status::Resolved;
        assert_eq!(quiet_for(&i, Timestamp(60_000)), None, "already ended");
        let day = Duration::from_secs(86_400);
        assert!(!ended_before(None, Timestamp(i64::MAX), day));
        assert!(!ended_before(
            Some(Timestamp(0)),
            Timestamp(86_399_999),
            day
        ));
        assert!(ended_before(Some(Timestamp(0)), Timestamp(86_400_000), day));
    }
}
