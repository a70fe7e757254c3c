//! Time-driven lifecycle: resolving quiet incidents, closing resolved ones, compacting old
//! closed ones.

use super::manager::*;

use super::{Incident, Status, Transition};

impl Manager {
    pub(super) fn auto_resolve(&mut self) -> Result<(), IncidentError> {
        let now = self.now;
        let query = super::port::ListQuery {
            status: vec![Status::Open, Status::Acknowledged, Status::Mitigated],
            ..Default::default()
        };
        let mut due = Vec::new();
        self.store.scan(&query, &mut |i| {
            if let (Some(ms), Some(last)) = (i.resolve_after_ms, i.last_detection_at)
                && now.millis() - last.millis() >= ms as i64
            {
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
        let old = self.ids_where(Status::Closed, |i| {
            i.closed_at.is_some_and(|c| now.since(c) >= keep)
        })?;
        for id in &old {
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
            i.resolved_at.is_some_and(|r| now.since(r) >= after)
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
