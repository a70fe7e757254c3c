//! Silences: made, changed and ended by command; recorded once on each incident they cover;
//! pruned when expired long enough.

use super::manager::*;

use super::port::Change;
use super::{EntryKind, Incident, Silence, SilenceState, Status, TimelineEntry};
use crate::clock::Timestamp;

impl Manager {
    pub(super) fn on_silence(&mut self, cmd: SilenceCommand) -> Result<Silence, IncidentError> {
        let now = self.now;
        match cmd {
            SilenceCommand::Create { silence, actor } => {
                let silence = silence
                    .into_silence(self.next_silence, &actor, now)
                    .map_err(IncidentError::Invalid)?;
                self.store.put_silence(&silence)?;
                self.next_silence += 1;
                tracing::info!(silence = silence.id, actor = %actor, matchers = ?silence.matchers,
                    starts_at = %silence.starts_at, ends_at = %silence.ends_at, comment = %silence.comment,
                    "silence created");
                self.silences.push(silence.clone());
                if silence.state(now) == SilenceState::Active {
                    self.sweep_silence(&silence, now);
                }
                Ok(silence)
            }
            SilenceCommand::Expire { id, actor } => {
                let s = self
                    .silences
                    .iter_mut()
                    .find(|s| s.id == id)
                    .ok_or(IncidentError::SilenceNotFound { id })?;
                if s.state(now) == SilenceState::Expired {
                    return Err(IncidentError::SilenceExpired { id });
                }
                let mut changed = s.clone();
                changed.ends_at = now;
                changed.starts_at = changed.starts_at.min(now);
                changed.expired_by = Some(actor.clone());
                self.store.put_silence(&changed)?;
                *s = changed.clone();
                tracing::info!(silence = id, actor = %actor, "silence expired by hand");
                Ok(changed)
            }
        }
    }

    /// Records an active silence on the active incidents it covers. Best effort: the
    /// silence itself is already stored, and a failure here is logged and counted.
    pub(super) fn sweep_silence(&mut self, silence: &Silence, now: Timestamp) {
        self.swept.insert(silence.id);
        let query = super::port::ListQuery {
            status: vec![Status::Open, Status::Acknowledged, Status::Mitigated],
            ..Default::default()
        };
        let mut covered = Vec::new();
        let scanned = self.store.scan(&query, &mut |i| {
            if silence.matchers.matches(&i) && !i.silenced_by.contains(&silence.id) {
                covered.push(i);
            }
            true
        });
        let mut result = scanned.map_err(IncidentError::from);
        for mut inc in covered {
            if result.is_err() {
                break;
            }
            let mut entries = Vec::new();
            self.note_silences(&mut inc, &mut entries, now);
            if !entries.is_empty() {
                result = self
                    .write(&Change {
                        incident: inc.clone(),
                        previous_status: Some(inc.status),
                        entries,
                        detections: Vec::new(),
                        index_keys: Vec::new(),
                    })
                    .map_err(IncidentError::from);
            }
        }
        if let Err(e) = result {
            self.telemetry.store_errors.inc();
            tracing::error!(silence = silence.id, error = %e, "could not record the silence on the incidents it covers");
        }
    }

    /// Silences that became active since the last look (they were pending) are recorded on
    /// the incidents they cover.
    pub(super) fn sweep_new_silences(&mut self) {
        let now = self.now;
        let due: Vec<Silence> = self
            .silences
            .iter()
            .filter(|s| s.state(now) == SilenceState::Active && !self.swept.contains(&s.id))
            .cloned()
            .collect();
        for s in due {
            self.sweep_silence(&s, now);
        }
    }

    /// Forgets silences expired longer than the retention.
    pub(super) fn prune_silences(&mut self) -> Result<(), IncidentError> {
        let now = self.now;
        let keep = super::silence::EXPIRED_RETENTION;
        let old: Vec<u64> = self
            .silences
            .iter()
            .filter(|s| now >= s.ends_at && now.since(s.ends_at) >= keep)
            .map(|s| s.id)
            .collect();
        for id in &old {
            self.store.remove_silence(*id)?;
        }
        self.silences.retain(|s| !old.contains(&s.id));
        Ok(())
    }

    /// Records, once per silence, that an active silence covers `inc`: its notifications and
    /// automatic actions are held back while the silence lasts.
    pub(super) fn note_silences(
        &self,
        inc: &mut Incident,
        entries: &mut Vec<TimelineEntry>,
        now: Timestamp,
    ) {
        if !inc.status.is_active() {
            return;
        }
        for s in &self.silences {
            if !s.silences(inc, now) || inc.silenced_by.contains(&s.id) {
                continue;
            }
            inc.silenced_by.push(s.id);
            let data = serde_json::json!({
                "silence": s.id,
                "comment": s.comment,
                "created_by": s.created_by,
                "ends_at": s.ends_at,
                "suppressed": ["notifications", "actions"],
            });
            let note = Some(format!(
                "silenced by silence {} until {} ({}): notifications and automatic actions held back",
                s.id, s.ends_at, s.comment
            ));
            entries.push(self.entry(inc, EntryKind::Silenced, SYSTEM_ACTOR, note, data));
            tracing::info!(
                incident = inc.id,
                silence = s.id,
                "incident covered by a silence"
            );
        }
    }
}
