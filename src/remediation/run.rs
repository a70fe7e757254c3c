//! The record of one action run: its state, plan, outcome and revert, as stored and shown.

use super::*;

/// Where a run is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waits for an admin's approval.
    Pending,
    Denied,
    /// Nobody decided within the approval timeout.
    Expired,
    Running,
    Succeeded,
    Failed,
}

impl RunState {
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Pending => "pending",
            RunState::Denied => "denied",
            RunState::Expired => "expired",
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
        }
    }
}

impl std::str::FromStr for RunState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            RunState::Pending,
            RunState::Denied,
            RunState::Expired,
            RunState::Running,
            RunState::Succeeded,
            RunState::Failed,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
        .ok_or_else(|| {
            format!("unknown state `{s}` (expected pending, denied, expired, running, succeeded, failed)")
        })
    }
}

/// One run of an action for an incident, from proposal to result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActionRun {
    pub id: u64,
    pub incident_id: u64,
    pub action: String,
    pub state: RunState,
    /// Why it runs or waits: "safe action", "unsafe action", "sev1 incidents need approval",
    /// "by hand".
    pub reason: String,
    pub requested_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<Plan>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// When its revert is due (after `revert_after`); cleared once it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_at: Option<Timestamp>,
    /// The revert waits for the incident to resolve.
    #[serde(default)]
    pub revert_on_resolve: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverted: Option<Outcome>,
    /// When its revert began (kept until it is done: a crash in between is reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revert_started: Option<Timestamp>,
    /// The change-log entry that started it (0 for runs by hand): read again after a
    /// crash, that entry starts nothing twice.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub change: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl ActionRun {
    /// A run as it starts: nothing decided, planned, finished or reverted yet.
    pub(super) fn new(
        id: u64,
        incident_id: u64,
        action: &str,
        state: RunState,
        reason: String,
        now: Timestamp,
    ) -> ActionRun {
        ActionRun {
            id,
            incident_id,
            action: action.to_owned(),
            state,
            reason,
            requested_at: now,
            expires_at: None,
            decided_by: None,
            decided_at: None,
            plan: None,
            outcome: None,
            finished_at: None,
            revert_at: None,
            revert_on_resolve: false,
            reverted: None,
            revert_started: None,
            change: 0,
        }
    }
}
