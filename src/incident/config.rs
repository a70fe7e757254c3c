//! `[incidents]` and `[[service]]`: how detections become incidents, and the service graph
//! correlation walks.

use std::time::Duration;

use serde::Deserialize;

use crate::de::{self, duration};

/// `[[service]]`: a service and the services it depends on (its upstreams).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// The `[[team]]` that owns it: its new incidents go to the team's primary on call.
    #[serde(default)]
    pub owner: Option<String>,
}

/// `rate_limit = { max = 3, per = "1h" }`
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub max: u32,
    #[serde(deserialize_with = "duration")]
    pub per: Duration,
}

/// `[incidents]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentsConfig {
    pub rate_limit: RateLimit,
    /// A detection for a key whose incident was resolved this recently reopens it.
    #[serde(deserialize_with = "duration")]
    pub reopen_window: Duration,
    #[serde(deserialize_with = "duration")]
    pub correlation_window: Duration,
    #[serde(deserialize_with = "duration")]
    pub auto_close_after: Duration,
    #[serde(deserialize_with = "duration")]
    pub retain_closed: Duration,
    /// Events kept per incident as evidence: the first half and the latest.
    pub evidence_samples: usize,
    /// Detections of an incident written as a timeline entry each; later ones that join it
    /// are folded into entries that stand for many (`fold.rs`), so a flood of detections
    /// cannot grow the store without bound. 0: every detection gets its own entry.
    pub timeline_detections: u64,
    /// Re-alert backoff: the least time between successive new incidents of one key (the
    /// last step repeats). Opt-in: empty by default, so the documented default (the rate
    /// limit, 3 new incidents per key per hour) is what holds.
    #[serde(deserialize_with = "de::durations")]
    pub realert_backoff: Vec<Duration>,
    /// The `[[service]]` tables (top level in the file), handed to the incident manager with
    /// these settings.
    #[serde(skip)]
    pub services: Vec<ServiceConfig>,
    /// The `[[sla]]` tables (top level in the file); the runbook's when there are none.
    #[serde(skip)]
    pub slas: Vec<super::sla::SlaConfig>,
    /// The `[[team]]` tables (top level in the file).
    #[serde(skip)]
    pub teams: Vec<super::oncall::TeamConfig>,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            rate_limit: RateLimit {
                max: 3,
                per: Duration::from_secs(3600),
            },
            reopen_window: Duration::from_secs(30 * 60),
            correlation_window: Duration::from_secs(5 * 60),
            auto_close_after: Duration::from_secs(24 * 3600),
            retain_closed: Duration::from_secs(90 * 24 * 3600),
            evidence_samples: 10,
            timeline_detections: 100,
            services: Vec::new(),
            slas: super::sla::defaults(),
            teams: Vec::new(),
            realert_backoff: Vec::new(),
        }
    }
}
