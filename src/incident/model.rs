//! The incident record (DESIGN §3.4) and its timeline entries.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::incident::EntryData;
pub use crate::severity::Severity;

/// Where an incident is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Open,
    Acknowledged,
    Mitigated,
    Resolved,
    Closed,
    Cancelled,
}

impl Status {
    pub const ALL: [Status; 6] = [
        Status::Open,
        Status::Acknowledged,
        Status::Mitigated,
        Status::Resolved,
        Status::Closed,
        Status::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Acknowledged => "acknowledged",
            Status::Mitigated => "mitigated",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
            Status::Cancelled => "cancelled",
        }
    }

    /// The statuses that still need attention.
    pub const ACTIVE: [Status; 3] = [Status::Open, Status::Acknowledged, Status::Mitigated];

    /// Still needs attention: new detections for its key attach to it.
    pub fn is_active(self) -> bool {
        matches!(
            self,
            Status::Open | Status::Acknowledged | Status::Mitigated
        )
    }

    /// One byte for index keys.
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl FromStr for Status {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Status::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!("unknown status `{s}` (expected open, acknowledged, mitigated, resolved, closed, cancelled)")
            })
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One incident, as stored (the snapshot) and as the API returns it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub id: u64,
    pub key: String,
    pub title: String,
    pub severity: Severity,
    pub status: Status,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub assignee: Option<String>,
    /// Ids of the rules whose detections are attached.
    #[serde(default)]
    pub rules: Vec<String>,
    /// How many detections are attached.
    pub detections: u64,
    pub first_event_at: Timestamp,
    pub created_at: Timestamp,
    #[serde(default)]
    pub updated_at: Option<Timestamp>,
    #[serde(default)]
    pub acknowledged_at: Option<Timestamp>,
    #[serde(default)]
    pub mitigated_at: Option<Timestamp>,
    #[serde(default)]
    pub resolved_at: Option<Timestamp>,
    #[serde(default)]
    pub closed_at: Option<Timestamp>,
    #[serde(default)]
    pub cancelled_at: Option<Timestamp>,
    /// The most upstream service involved, else what the earliest detection hit.
    #[serde(default)]
    pub root_cause: Option<String>,
    /// Why `root_cause` was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_cause_reason: Option<String>,
    /// Services of the attached detections.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<String>,
    /// Keys of other detections that joined this incident by correlation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub correlated_keys: Vec<String>,
    #[serde(default)]
    pub correlation_ids: Vec<String>,
    #[serde(default)]
    pub external_refs: BTreeMap<String, String>,
    #[serde(default)]
    pub runbook: Option<String>,
    /// Number of timeline entries; the next entry's sequence number.
    #[serde(default)]
    pub timeline_len: u64,
    /// A bounded sample of the events behind its detections: the first ones and the latest
    /// ones, at most `[incidents] evidence_samples` in all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub evidence: Vec<crate::event::Event>,
    /// Silences that have covered it (each recorded once in the timeline).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub silenced_by: Vec<u64>,
    /// When the last detection attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_detection_at: Option<Timestamp>,
    /// Resolved by `system` once no detection attached for this long (the rules'
    /// `resolve_after`, the longest when several rules feed it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolve_after_ms: Option<u64>,
    /// SLAs it breached: `ack`, `resolve` (each recorded once, as `sla_breached`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sla_breached: Vec<String>,
    /// The incident this one was merged into (it is closed, and its keys now lead there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merged_into: Option<u64>,
    /// The response stage (`stage`, `stage_since`, `stage_spent_ms`).
    #[serde(flatten, default)]
    pub stage: super::stage::StageState,
    /// Detections attached past `[incidents] timeline_detections` and not yet written as a
    /// timeline entry (see `fold.rs`): already counted above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folded: Option<super::fold::Fold>,
}

impl Incident {
    /// A new open incident with nothing attached yet: the one constructor, for detections,
    /// external alerts and hand-made incidents alike.
    pub fn new(
        id: u64,
        key: String,
        title: String,
        severity: Severity,
        now: Timestamp,
    ) -> Incident {
        Incident {
            id,
            key,
            title,
            severity,
            status: Status::Open,
            service: None,
            host: None,
            labels: BTreeMap::new(),
            tags: Vec::new(),
            assignee: None,
            rules: Vec::new(),
            detections: 0,
            first_event_at: now,
            created_at: now,
            updated_at: None,
            acknowledged_at: None,
            mitigated_at: None,
            resolved_at: None,
            closed_at: None,
            cancelled_at: None,
            root_cause: None,
            root_cause_reason: None,
            services: Vec::new(),
            correlated_keys: Vec::new(),
            correlation_ids: Vec::new(),
            external_refs: BTreeMap::new(),
            runbook: None,
            timeline_len: 0,
            evidence: Vec::new(),
            silenced_by: Vec::new(),
            last_detection_at: None,
            resolve_after_ms: None,
            sla_breached: Vec::new(),
            merged_into: None,
            stage: Default::default(),
            folded: None,
        }
    }
}

/// What a timeline entry records (DESIGN §3.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    Created,
    Detection,
    StatusChanged,
    SeverityChanged,
    Note,
    Tag,
    Assigned,
    Correlated,
    ActionProposed,
    ActionApproved,
    ActionDenied,
    ActionExecuted,
    /// An automatic run held back: circuit breaker, cooldown, or a silence.
    ActionHeld,
    /// The verification after `verify_after`: effective or not.
    ActionVerified,
    Notification,
    TicketLinked,
    Reopened,
    /// A silence matched the incident: its notifications and automatic actions are held
    /// back while the silence lasts.
    Silenced,
    /// An `[[inhibit]]` rule holds the incident's notifications while another incident
    /// (`data.source`) is active.
    Inhibited,
    /// What an inhibition held is let go: no source holds the incident any more.
    Released,
    /// The response stage moved (`data.from`, `data.to`, `data.reason`).
    StageChanged,
    /// The post-mortem's text (`data.text`): the draft written when the incident is
    /// resolved (actor `system`), or a person's version.
    Postmortem,
    /// Edited by hand: `data.title` = `{from, to}`.
    Updated,
    /// On the incident merged into: `data.from`, `keys`, `detections`, `rules`, `services`;
    /// on the merged one: `data.into`.
    Merged,
    /// A key taken out into a new incident: `data.key`, `data.into`.
    Split,
    /// Not acknowledged or not resolved within its SLA: `data.kind` (`ack`, `resolve`),
    /// `data.within`.
    SlaBreached,
}

/// One entry of an incident's append-only timeline.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub incident_id: u64,
    pub seq: u64,
    pub ts: Timestamp,
    #[serde(rename = "type")]
    pub kind: EntryKind,
    /// Who did it: a peer's user name, or `system` for the daemon itself.
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "EntryData::is_null")]
    pub data: EntryData,
    /// The store-wide change number, given when the entry is stored: entries of all
    /// incidents in the order they were written (the event id of `GET /v1/stream`).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub change: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl EntryKind {
    /// Every kind, in the order of their stored codes (1 and up): a new kind goes at the
    /// end, so codes already on disk keep their meaning.
    pub const ALL: [EntryKind; 26] = [
        EntryKind::Created,
        EntryKind::Detection,
        EntryKind::StatusChanged,
        EntryKind::SeverityChanged,
        EntryKind::Note,
        EntryKind::Tag,
        EntryKind::Assigned,
        EntryKind::Correlated,
        EntryKind::ActionProposed,
        EntryKind::ActionApproved,
        EntryKind::ActionDenied,
        EntryKind::ActionExecuted,
        EntryKind::ActionHeld,
        EntryKind::ActionVerified,
        EntryKind::Notification,
        EntryKind::TicketLinked,
        EntryKind::Reopened,
        EntryKind::Silenced,
        EntryKind::Inhibited,
        EntryKind::Released,
        EntryKind::StageChanged,
        EntryKind::Postmortem,
        EntryKind::Updated,
        EntryKind::Merged,
        EntryKind::Split,
        EntryKind::SlaBreached,
    ];

    /// The kind's one-byte code in stored indexes: its place in [`EntryKind::ALL`], from 1.
    pub fn code(self) -> u8 {
        match self {
            EntryKind::Created => 1,
            EntryKind::Detection => 2,
            EntryKind::StatusChanged => 3,
            EntryKind::SeverityChanged => 4,
            EntryKind::Note => 5,
            EntryKind::Tag => 6,
            EntryKind::Assigned => 7,
            EntryKind::Correlated => 8,
            EntryKind::ActionProposed => 9,
            EntryKind::ActionApproved => 10,
            EntryKind::ActionDenied => 11,
            EntryKind::ActionExecuted => 12,
            EntryKind::ActionHeld => 13,
            EntryKind::ActionVerified => 14,
            EntryKind::Notification => 15,
            EntryKind::TicketLinked => 16,
            EntryKind::Reopened => 17,
            EntryKind::Silenced => 18,
            EntryKind::Inhibited => 19,
            EntryKind::Released => 20,
            EntryKind::StageChanged => 21,
            EntryKind::Postmortem => 22,
            EntryKind::Updated => 23,
            EntryKind::Merged => 24,
            EntryKind::Split => 25,
            EntryKind::SlaBreached => 26,
        }
    }

    /// The kind of a stored code, when it is one.
    pub fn from_code(code: u8) -> Option<EntryKind> {
        EntryKind::ALL
            .get(usize::from(code).checked_sub(1)?)
            .copied()
    }

    /// The `GET /v1/stream` event type this entry is delivered as.
    pub fn stream_event(self) -> &'static str {
        match self {
            EntryKind::Created => "incident_created",
            EntryKind::Detection => "detection",
            EntryKind::ActionProposed
            | EntryKind::ActionApproved
            | EntryKind::ActionDenied
            | EntryKind::ActionExecuted
            | EntryKind::ActionHeld
            | EntryKind::ActionVerified => "action",
            EntryKind::Notification => "notification",
            _ => "incident_updated",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::EntryKind;

    #[test]
    fn every_kind_has_its_own_code_and_reads_back() {
        for (i, k) in EntryKind::ALL.iter().enumerate() {
            assert_eq!(usize::from(k.code()), i + 1, "{k:?}");
            assert_eq!(EntryKind::from_code(k.code()), Some(*k));
        }
        assert_eq!(EntryKind::from_code(0), None);
        assert_eq!(EntryKind::from_code(EntryKind::ALL.len() as u8 + 1), None);
    }
}
