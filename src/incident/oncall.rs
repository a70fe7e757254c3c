//! Owners and on-call: `[[team]]` tables with `members`, a `rotation = { start, every }`
//! (the primary is the member whose turn it is, the secondary the next one) and `overrides`
//! (a member standing in as primary between `start` and `end`); `[[service]] owner`. A new
//! incident on an owned service is assigned to the owning team's primary.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::de::positive_duration;

/// `rotation = { start = "2026-11-30T09:00:00Z", every = "1w" }`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rotation {
    pub start: Timestamp,
    #[serde(deserialize_with = "positive_duration")]
    pub every: Duration,
}

/// One swap: `member` is primary from `start` to `end`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    pub start: Timestamp,
    pub end: Timestamp,
    pub member: String,
}

/// `[[team]]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamConfig {
    pub name: String,
    pub members: Vec<String>,
    pub rotation: Rotation,
    #[serde(default)]
    pub overrides: Vec<Override>,
    /// How each member is reached: member → `[[channel]]` ids. Routes and escalation steps
    /// that name `oncall:primary` or `oncall:secondary` send to these.
    #[serde(default)]
    pub contacts: BTreeMap<String, Vec<String>>,
}

/// Who is on call for a team at a time, and until when that holds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OnCall {
    pub team: String,
    pub primary: String,
    pub secondary: Option<String>,
    pub until: Timestamp,
    /// The override in force, if one is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub override_for: Option<String>,
}

impl TeamConfig {
    /// What is wrong with the table, if anything.
    pub fn problem(&self) -> Option<String> {
        if self.members.is_empty() {
            return Some(format!("team `{}` has no members", self.name));
        }
        if let Some(m) = self.contacts.keys().find(|m| !self.members.contains(m)) {
            return Some(format!(
                "contacts name `{m}`, who is not a member of team `{}`",
                self.name
            ));
        }
        for o in &self.overrides {
            if o.end <= o.start {
                return Some(format!(
                    "an override of team `{}` ends before it starts",
                    self.name
                ));
            }
            if !self.members.contains(&o.member) {
                return Some(format!(
                    "override member `{}` is not a member of team `{}`",
                    o.member, self.name
                ));
            }
        }
        None
    }

    /// Who is on call at `t` (before the rotation starts, its first turn).
    pub fn at(&self, t: Timestamp) -> Option<OnCall> {
        let n = self.members.len() as i64;
        if n == 0 {
            return None;
        }
        let every = (self.rotation.every.as_millis() as i64).max(1);
        let turn = (t.millis() - self.rotation.start.millis()).max(0) / every;
        let mut until = Timestamp(self.rotation.start.millis() + (turn + 1) * every);
        let mut primary = self.members[(turn % n) as usize].clone();
        let secondary = (n > 1).then(|| self.members[((turn + 1) % n) as usize].clone());
        let mut override_for = None;
        if let Some(o) = self.overrides.iter().find(|o| o.start <= t && t < o.end) {
            override_for = Some(primary.clone());
            primary = o.member.clone();
            until = until.min(o.end);
        } else if let Some(next) = self
            .overrides
            .iter()
            .filter(|o| o.start > t)
            .map(|o| o.start)
            .min()
        {
            until = until.min(next);
        }
        Some(OnCall {
            team: self.name.clone(),
            primary,
            secondary,
            until,
            override_for,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_rotate_and_overrides_stand_in() {
        let team: TeamConfig = toml::from_str(
            r#"
name = "db"
members = ["ana", "bo", "cy"]
rotation = { start = "2026-11-30T09:00:00Z", every = "1w" }
overrides = [{ start = "2026-12-08T00:00:00Z", end = "2026-12-09T00:00:00Z", member = "cy" }]
"#,
        )
        .unwrap();
        assert_eq!(team.problem(), None);
        let t = |s: &str| Timestamp::parse_rfc3339(s).unwrap();
        let a = team.at(t("2026-12-04T12:00:00Z")).unwrap();
        assert_eq!(
            (a.primary.as_str(), a.secondary.as_deref()),
            ("ana", Some("bo"))
        );
        assert_eq!(a.until, t("2026-12-07T09:00:00Z"));
        let b = team.at(t("2026-12-07T10:00:00Z")).unwrap();
        assert_eq!(b.primary, "bo");
        assert_eq!(
            b.until,
            t("2026-12-08T00:00:00Z"),
            "until the override begins"
        );
        let o = team.at(t("2026-12-08T12:00:00Z")).unwrap();
        assert_eq!(o.primary, "cy");
        assert_eq!(o.override_for.as_deref(), Some("bo"));
        assert_eq!(o.until, t("2026-12-09T00:00:00Z"));
        // Three weeks on, the turn comes round.
        assert_eq!(team.at(t("2026-12-21T10:00:00Z")).unwrap().primary, "ana");
    }
}
