//! Response stages (the runbook's five): assess → contain → investigate → remediate →
//! recover. Every incident starts at `assess`; people move it (forward, or back with a
//! reason) and certain moves happen by themselves (a successful remediation run → at least
//! `remediate`; resolved → `recover`). Each move is a `stage_changed` entry, so the stage and
//! the time spent in each one replay from the timeline.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    #[default]
    Assess,
    Contain,
    Investigate,
    Remediate,
    Recover,
}

impl Stage {
    pub const ALL: [Stage; 5] = [
        Stage::Assess,
        Stage::Contain,
        Stage::Investigate,
        Stage::Remediate,
        Stage::Recover,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Assess => "assess",
            Stage::Contain => "contain",
            Stage::Investigate => "investigate",
            Stage::Remediate => "remediate",
            Stage::Recover => "recover",
        }
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Stage::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                format!("unknown stage `{s}` (the stages are assess, contain, investigate, remediate, recover)")
            })
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where an incident is among the stages and how long it spent in each one it left.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StageState {
    #[serde(default)]
    pub stage: Stage,
    /// When it entered `stage` (none: at its creation).
    #[serde(
        default,
        rename = "stage_since",
        skip_serializing_if = "Option::is_none"
    )]
    pub since: Option<Timestamp>,
    /// Milliseconds spent in each stage it left (a stage entered twice adds up).
    #[serde(
        default,
        rename = "stage_spent_ms",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub spent_ms: BTreeMap<Stage, u64>,
}

impl StageState {
    /// Moves to `to` at `at` (`created`: when the incident began, for the first stage).
    pub fn enter(&mut self, to: Stage, at: Timestamp, created: Timestamp) {
        let from = self.since.unwrap_or(created);
        let spent = at.millis().saturating_sub(from.millis()).max(0) as u64;
        *self.spent_ms.entry(self.stage).or_default() += spent;
        self.stage = to;
        self.since = Some(at);
    }

    /// Time in each stage up to `now` (the current one counted until `now`).
    pub fn durations(&self, created: Timestamp, now: Timestamp) -> BTreeMap<Stage, u64> {
        let mut out = self.spent_ms.clone();
        let from = self.since.unwrap_or(created);
        *out.entry(self.stage).or_default() +=
            now.millis().saturating_sub(from.millis()).max(0) as u64;
        out
    }
}

/// Whether a person may move an incident from `from` to `to`: not to where it is, and back
/// only with a reason.
pub fn decide_move(from: Stage, to: Stage, note: Option<&str>) -> Result<(), String> {
    if from == to {
        return Err(format!("the incident is already at stage {to}"));
    }
    if to < from && note.is_none_or(|n| n.trim().is_empty()) {
        return Err(format!(
            "moving back from {from} to {to} needs a reason (a note)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_forward_freely_and_back_with_a_reason() {
        assert!(decide_move(Stage::Assess, Stage::Remediate, None).is_ok());
        assert!(decide_move(Stage::Assess, Stage::Assess, None).is_err());
        let e = decide_move(Stage::Remediate, Stage::Investigate, Some(" ")).unwrap_err();
        assert!(e.contains("needs a reason"), "{e}");
        assert!(
            decide_move(
                Stage::Remediate,
                Stage::Investigate,
                Some("fix did not hold")
            )
            .is_ok()
        );
        assert!("contain".parse::<Stage>().is_ok());
        let e = "fix".parse::<Stage>().unwrap_err();
        assert!(
            e.contains("assess, contain, investigate, remediate, recover"),
            "{e}"
        );
    }

    #[test]
    fn time_in_each_stage_adds_up() {
        let mut s = StageState::default();
        s.enter(Stage::Contain, Timestamp(10_000), Timestamp(0));
        s.enter(Stage::Assess, Timestamp(15_000), Timestamp(0));
        s.enter(Stage::Recover, Timestamp(16_000), Timestamp(0));
        let d = s.durations(Timestamp(0), Timestamp(20_000));
        assert_eq!(d[&Stage::Assess], 11_000);
        assert_eq!(d[&Stage::Contain], 5_000);
        assert_eq!(d[&Stage::Recover], 4_000);
    }
}
