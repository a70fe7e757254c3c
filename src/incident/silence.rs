//! Silences: matchers over incidents and a time span. While a silence is active and matches
//! an incident, the incident is still recorded, but its notifications and automatic actions
//! are held back, and its timeline records the silence once.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::matcher::{IncidentWhere, labels_hold};
use super::{Incident, Severity};
use crate::clock::Timestamp;
use crate::condition::Condition;

/// Expired silences are kept this long for `silence list --state expired`, then forgotten.
pub const EXPIRED_RETENTION: Duration = Duration::from_secs(5 * 24 * 3600);

/// What a silence matches; every given matcher must hold, and at least one is needed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matchers {
    /// Any of these severities.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub severity: Vec<Severity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// A rule whose detections are attached to the incident (`alert` for external alerts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    /// Conditions on labels by name: a value, or an operator table (`{ regex = "^db" }`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, Condition>,
    /// Conditions on any incident field (see [`super::matcher`]).
    #[serde(
        default,
        rename = "where",
        skip_serializing_if = "IncidentWhere::is_empty"
    )]
    pub where_: IncidentWhere,
}

impl Matchers {
    pub fn is_empty(&self) -> bool {
        self.severity.is_empty()
            && self.service.is_none()
            && self.host.is_none()
            && self.rule.is_none()
            && self.labels.is_empty()
            && self.where_.is_empty()
    }

    pub fn matches(&self, i: &Incident) -> bool {
        (self.severity.is_empty() || self.severity.contains(&i.severity))
            && self
                .service
                .as_ref()
                .is_none_or(|s| i.service.as_ref() == Some(s))
            && self
                .host
                .as_ref()
                .is_none_or(|h| i.host.as_ref() == Some(h))
            && self.rule.as_ref().is_none_or(|r| i.rules.contains(r))
            && labels_hold(&self.labels, i)
            && self.where_.holds(i)
    }
}

/// Where a silence is in its span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl std::str::FromStr for SilenceState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(SilenceState::Pending),
            "active" => Ok(SilenceState::Active),
            "expired" => Ok(SilenceState::Expired),
            other => Err(format!(
                "unknown silence state `{other}` (expected pending, active, expired)"
            )),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Silence {
    pub id: u64,
    pub matchers: Matchers,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub comment: String,
    /// The user name of the peer that created it.
    pub created_by: String,
    pub created_at: Timestamp,
    /// Who ended it early, if someone did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_by: Option<String>,
}

impl Silence {
    pub fn state(&self, now: Timestamp) -> SilenceState {
        if now >= self.ends_at {
            SilenceState::Expired
        } else if now < self.starts_at {
            SilenceState::Pending
        } else {
            SilenceState::Active
        }
    }

    /// Whether it holds back `incident`'s notifications and actions at `now`.
    pub fn silences(&self, incident: &Incident, now: Timestamp) -> bool {
        self.state(now) == SilenceState::Active && self.matchers.matches(incident)
    }
}

/// A silence as asked for (`POST /v1/silences`): `ends_at` or `duration`, not both.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    pub matchers: Matchers,
    #[serde(default)]
    pub starts_at: Option<Timestamp>,
    #[serde(default)]
    pub ends_at: Option<Timestamp>,
    /// A span from the start, like "2h" or "30m".
    #[serde(default)]
    pub duration: Option<String>,
    pub comment: String,
}

impl NewSilence {
    /// Checks the request and makes the silence.
    pub fn into_silence(self, id: u64, actor: &str, now: Timestamp) -> Result<Silence, String> {
        if self.matchers.is_empty() {
            return Err(
                "a silence needs at least one matcher (severity, service, host, rule, labels or where)"
                    .into(),
            );
        }
        self.matchers.where_.check()?;
        if self.comment.trim().is_empty() {
            return Err("a silence needs a comment saying why".into());
        }
        let starts_at = self.starts_at.unwrap_or(now).max(now);
        let ends_at = match (self.ends_at, &self.duration) {
            (Some(_), Some(_)) => return Err("give `ends_at` or `duration`, not both".into()),
            (Some(end), None) => end,
            (None, Some(d)) => {
                let d = humantime::parse_duration(d)
                    .map_err(|e| format!("duration `{d}`: {e} (e.g. \"2h\", \"30m\")"))?;
                starts_at.saturating_add(d)
            }
            (None, None) => return Err("a silence needs `ends_at` or `duration`".into()),
        };
        if ends_at <= starts_at {
            return Err(format!(
                "the silence would end ({ends_at}) before it starts ({starts_at})"
            ));
        }
        Ok(Silence {
            id,
            matchers: self.matchers,
            starts_at,
            ends_at,
            comment: self.comment.trim().to_owned(),
            created_by: actor.to_owned(),
            created_at: now,
            expired_by: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(matchers: Matchers, duration: &str) -> NewSilence {
        NewSilence {
            matchers,
            starts_at: None,
            ends_at: None,
            duration: Some(duration.into()),
            comment: "maintenance".into(),
        }
    }

    #[test]
    fn a_silence_needs_a_matcher_a_reason_and_a_span() {
        let now = Timestamp::from_millis(1_000_000);
        let m = Matchers {
            service: Some("api".into()),
            ..Default::default()
        };
        assert!(
            new(Matchers::default(), "1h")
                .into_silence(1, "ops", now)
                .unwrap_err()
                .contains("matcher")
        );
        let mut no_comment = new(m.clone(), "1h");
        no_comment.comment = " ".into();
        assert!(no_comment.into_silence(1, "ops", now).is_err());
        assert!(new(m.clone(), "soon").into_silence(1, "ops", now).is_err());
        let mut backwards = new(m.clone(), "1h");
        backwards.duration = None;
        backwards.ends_at = Some(Timestamp::from_millis(10));
        assert!(
            backwards
                .into_silence(1, "ops", now)
                .unwrap_err()
                .contains("before it starts")
        );
        let s = new(m, "1h").into_silence(7, "ops", now).unwrap();
        assert_eq!(s.ends_at.millis() - s.starts_at.millis(), 3_600_000);
        assert_eq!(s.state(now), SilenceState::Active);
        assert_eq!(
            s.state(Timestamp::from_millis(now.millis() + 3_600_000)),
            SilenceState::Expired
        );
        assert_eq!(
            s.state(Timestamp::from_millis(now.millis() - 1)),
            SilenceState::Pending
        );
    }
}
