//! `[[rule]]` tables as parsed (DESIGN §3.3): the keys every kind shares, the `where`
//! conditions, and one config struct per kind.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

pub use crate::condition::{Condition, Networks};
use crate::de::{Pattern, duration, opt_duration, positive_duration};
use crate::severity::Severity;

/// Keys shared by every rule kind. The loader splits a `[[rule]]` table into these and the
/// kind's own keys ([`RuleKindConfig`]), so both halves refuse unknown keys.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleCommon {
    /// Unique rule id; also the default incident key prefix.
    pub id: String,
    /// sev1..sev4 (aliases critical/high/medium/low).
    #[serde(default = "default_severity")]
    pub severity: Severity,
    /// Human description, shown by `rules list` and used as the default summary.
    #[serde(default)]
    pub description: Option<String>,
    /// A disabled rule is loaded and validated but never fires.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Conditions on event keys; all must hold.
    #[serde(default, rename = "where")]
    pub where_: BTreeMap<String, Condition>,
    /// Regex applied to `message`; named groups become labels.
    #[serde(default)]
    pub regex: Option<Pattern>,
    /// Label or key names whose values split the rule's state into groups.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Template for the detection summary (minijinja).
    #[serde(default)]
    pub summary: Option<String>,
    /// Template for the incident key; default: rule id plus group values.
    #[serde(default)]
    pub incident_key: Option<String>,
    /// Labels added to every detection of this rule.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Action ids to run (remediation).
    #[serde(default)]
    pub actions: Vec<String>,
    /// Link or text copied into the incident.
    #[serde(default)]
    pub runbook: Option<String>,
    /// Auto-resolve when the condition has not held for this long.
    #[serde(default, deserialize_with = "opt_duration")]
    pub resolve_after: Option<Duration>,
    /// Most groups a stateful rule keeps; beyond it the least recently seen are evicted
    /// (counted), so memory is bounded by configuration, not by input.
    /// Default: 10,000, or fewer so that `max_groups × threshold` fits `[daemon]
    /// max_events_in_memory` (filled in when the config is loaded).
    #[serde(default)]
    pub max_groups: Option<std::num::NonZeroUsize>,
    /// How far behind the newest event time an event may arrive and still count; older ones
    /// are counted as late and dropped. Default: whatever the kind's window still holds.
    #[serde(default, deserialize_with = "opt_duration")]
    pub allowed_lateness: Option<Duration>,
}

/// `max_groups` when neither the rule nor `[daemon] max_events_in_memory` says otherwise.
pub const DEFAULT_MAX_GROUPS: usize = 10_000;

impl RuleCommon {
    /// The most groups the rule keeps.
    pub fn max_groups(&self) -> usize {
        self.max_groups.map_or(DEFAULT_MAX_GROUPS, |n| n.get())
    }
}

/// The names of [`RuleCommon`]'s keys, plus `kind`; every other key belongs to the kind.
pub const COMMON_KEYS: [&str; 16] = [
    "id",
    "kind",
    "severity",
    "description",
    "enabled",
    "where",
    "regex",
    "group_by",
    "summary",
    "incident_key",
    "labels",
    "actions",
    "runbook",
    "resolve_after",
    "max_groups",
    "allowed_lateness",
];

fn default_severity() -> Severity {
    Severity::Sev3
}

fn yes() -> bool {
    true
}

/// The kind-specific half of a rule: one variant per kind, each holding its own config
/// struct (which refuses unknown keys). Each kind's engine file builds its detector from it.
#[derive(Clone, Debug, PartialEq)]
pub enum RuleKindConfig {
    Match(MatchConfig),
    Threshold(ThresholdConfig),
    Absence(AbsenceConfig),
    Rate(RateConfig),
    Sequence(SequenceConfig),
    Metric(MetricConfig),
    Spike(SpikeConfig),
    BurnRate(BurnRateConfig),
    Plugin(PluginRuleConfig),
}

/// `kind = "plugin"`: the detections of a detector plugin become this rule's detections
/// (its id, severity unless the plugin's is worse, labels, key template, actions).
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginRuleConfig {
    /// The `[[plugin]]` name.
    pub plugin: String,
}

/// `kind = "burn_rate"`: multiwindow, multi-burn-rate SLO alerting.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnRateConfig {
    /// The SLO, e.g. 0.999 (the error budget is 1 - objective).
    pub objective: f64,
    /// Conditions for all events (the rule's own `where` picks the bad ones).
    pub total_where: BTreeMap<String, Condition>,
    /// `[long, short, burn]` triples, e.g. `[["1h", "5m", 14.4], ["6h", "30m", 6.0]]`.
    pub windows: Vec<BurnWindow>,
}

/// One `[long, short, burn]` of a burn-rate rule.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BurnWindow(
    #[serde(deserialize_with = "positive_duration")] pub Duration,
    #[serde(deserialize_with = "positive_duration")] pub Duration,
    pub f64,
);

/// `kind = "spike"`: the current window against the mean of the previous `baseline` windows.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpikeConfig {
    #[serde(deserialize_with = "positive_duration")]
    pub window: Duration,
    /// How many previous windows make the baseline.
    pub baseline: std::num::NonZeroU32,
    /// How many times higher (up) or lower (down); greater than 1.
    pub factor: f64,
    #[serde(default)]
    pub direction: SpikeDirection,
    /// Compare event counts (default) or the average `value`.
    #[serde(default)]
    pub measure: SpikeMeasure,
    #[serde(default = "one")]
    pub min_count: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpikeDirection {
    #[default]
    Up,
    Down,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpikeMeasure {
    #[default]
    Count,
    Avg,
}

/// `kind = "metric"`: an aggregate of `value` over `window` compares to `value_threshold`,
/// continuously for `for`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    pub aggregate: Aggregate,
    #[serde(deserialize_with = "positive_duration")]
    pub window: Duration,
    pub op: CompareOp,
    pub value_threshold: f64,
    /// How long the comparison must hold before the rule fires (default 0).
    #[serde(rename = "for", default, deserialize_with = "crate::de::duration")]
    pub for_: Duration,
}

/// How a metric rule sums up the values in its window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Aggregate {
    Last,
    Avg,
    Min,
    Max,
    P95,
}

/// A comparison: `>`, `>=`, `<`, `<=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub enum CompareOp {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
}

impl CompareOp {
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            CompareOp::Gt => a > b,
            CompareOp::Ge => a >= b,
            CompareOp::Lt => a < b,
            CompareOp::Le => a <= b,
        }
    }
}

/// `kind = "sequence"`: a `first` event then a `then` event in one group within `within`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SequenceConfig {
    /// Conditions (a `where` table) for the first event.
    pub first: BTreeMap<String, Condition>,
    /// Conditions for the event that must (or must not) follow.
    pub then: BTreeMap<String, Condition>,
    #[serde(deserialize_with = "positive_duration")]
    pub within: Duration,
    #[serde(default)]
    pub mode: SequenceMode,
}

/// Whether a sequence rule fires on the `then` or on its absence.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SequenceMode {
    #[default]
    FollowedBy,
    NotFollowedBy,
}

/// `kind = "rate"`: fires when matching / `total_where` events in `window` exceed `ratio`,
/// with at least `min_events` total events.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Conditions for the events that form the denominator.
    pub total_where: BTreeMap<String, Condition>,
    /// Fires when matched / total is greater than this (0 to 1).
    pub ratio: f64,
    #[serde(deserialize_with = "positive_duration")]
    pub window: Duration,
    /// Fewest total events in the window before the ratio counts.
    #[serde(default = "one")]
    pub min_events: u64,
}

fn one() -> u64 {
    1
}

/// `kind = "absence"`: fires when a group seen before (or listed in `expected`) sends no
/// matching event for `timeout`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AbsenceConfig {
    #[serde(deserialize_with = "positive_duration")]
    pub timeout: Duration,
    /// Groups that must report even if never seen: their `group_by` values, joined with `/`
    /// when there are several.
    #[serde(default)]
    pub expected: Vec<String>,
}

/// `kind = "match"`: fires on every matching event; no keys of its own.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {}

/// `kind = "threshold"`: fires when a group sees `threshold` matching events within the
/// trailing `window`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdConfig {
    pub threshold: std::num::NonZeroU32,
    #[serde(deserialize_with = "positive_duration")]
    pub window: Duration,
}

impl RuleKindConfig {
    /// How far back in event time the rule's state reaches, described as configured
    /// (`window 10m`, `window 1h × (baseline 6 + 1)`); none for kinds that keep no
    /// history of events (match, absence, plugin).
    pub fn lookback(&self) -> Option<(Duration, String)> {
        let show = |d: Duration| humantime::format_duration(d).to_string();
        match self {
            RuleKindConfig::Threshold(ThresholdConfig { window, .. })
            | RuleKindConfig::Rate(RateConfig { window, .. })
            | RuleKindConfig::Metric(MetricConfig { window, .. }) => {
                Some((*window, format!("window {}", show(*window))))
            }
            RuleKindConfig::Sequence(c) => Some((c.within, format!("within {}", show(c.within)))),
            RuleKindConfig::Spike(c) => {
                let n = c.baseline.get();
                Some((
                    c.window.saturating_mul(n.saturating_add(1)),
                    format!("window {} × (baseline {n} + 1)", show(c.window)),
                ))
            }
            RuleKindConfig::BurnRate(c) => c
                .windows
                .iter()
                .map(|w| w.0.max(w.1))
                .max()
                .map(|d| (d, format!("burn-rate window {}", show(d)))),
            RuleKindConfig::Match(_) | RuleKindConfig::Absence(_) | RuleKindConfig::Plugin(_) => {
                None
            }
        }
    }

    /// The most event times one group holds: a threshold rule keeps up to `threshold`
    /// (reaching it fires and clears them), a sequence rule up to 1024 waiting firsts; the
    /// other kinds keep a bounded summary.
    pub fn events_per_group(&self) -> usize {
        match self {
            RuleKindConfig::Threshold(c) => c.threshold.get() as usize,
            RuleKindConfig::Sequence(_) => crate::engine::rule::MAX_PENDING,
            _ => 1,
        }
    }

    pub const KINDS: &'static str =
        "match, threshold, absence, rate, sequence, metric, spike, burn_rate, plugin";

    pub fn name(&self) -> &'static str {
        match self {
            RuleKindConfig::Match(_) => "match",
            RuleKindConfig::Threshold(_) => "threshold",
            RuleKindConfig::Absence(_) => "absence",
            RuleKindConfig::Rate(_) => "rate",
            RuleKindConfig::Sequence(_) => "sequence",
            RuleKindConfig::Metric(_) => "metric",
            RuleKindConfig::Spike(_) => "spike",
            RuleKindConfig::BurnRate(_) => "burn_rate",
            RuleKindConfig::Plugin(_) => "plugin",
        }
    }

    /// Deserializes the keys of kind `kind` (the `kind` key itself removed); `None` for a
    /// kind this version does not know.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        kind: &str,
        d: D,
    ) -> Option<Result<Self, D::Error>> {
        Some(match kind {
            "match" => MatchConfig::deserialize(d).map(RuleKindConfig::Match),
            "threshold" => ThresholdConfig::deserialize(d).map(RuleKindConfig::Threshold),
            "absence" => AbsenceConfig::deserialize(d).map(RuleKindConfig::Absence),
            "rate" => RateConfig::deserialize(d).map(RuleKindConfig::Rate),
            "sequence" => SequenceConfig::deserialize(d).map(RuleKindConfig::Sequence),
            "metric" => MetricConfig::deserialize(d).map(RuleKindConfig::Metric),
            "spike" => SpikeConfig::deserialize(d).map(RuleKindConfig::Spike),
            "burn_rate" => BurnRateConfig::deserialize(d).map(RuleKindConfig::BurnRate),
            "plugin" => PluginRuleConfig::deserialize(d).map(RuleKindConfig::Plugin),
            _ => return None,
        })
    }
}

/// A parsed `[[rule]]`, with where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleConfig {
    pub common: RuleCommon,
    pub kind: RuleKindConfig,
    /// `file:line` of the rule's table, for messages.
    pub origin: String,
}

impl RuleConfig {
    pub fn id(&self) -> &str {
        &self.common.id
    }

    /// True when `other` would behave identically (origin aside): reload keeps state then.
    pub fn same_definition(&self, other: &RuleConfig) -> bool {
        self.common == other.common && self.kind == other.kind
    }
}

/// `[engine]`: how the engine's clock may move (see [`crate::watermark`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Events stamped further ahead of wall time than this are rejected (`future_ts`) on
    /// every input, so no event can move the clock into the future.
    #[serde(deserialize_with = "duration")]
    pub max_future_skew: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_future_skew: crate::watermark::DEFAULT_MAX_FUTURE_SKEW,
        }
    }
}

/// `[[rule]]` tables of a TOML text, for the engine's unit tests: parsed and validated as
/// the loader does, panicking on the first problem (the loader's file:line errors are the
/// config module's business, above this one).
#[cfg(test)]
pub(crate) fn test_rules(text: &str) -> Vec<RuleConfig> {
    use serde::de::IntoDeserializer;
    let doc: toml::Table = toml::from_str(text).unwrap_or_else(|e| panic!("{e}"));
    let tables = match doc.get("rule") {
        Some(toml::Value::Array(a)) => a.clone(),
        _ => Vec::new(),
    };
    tables
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            let toml::Value::Table(t) = t else {
                panic!("rule {i} is not a table")
            };
            let (mut common, mut kind) = (toml::Table::new(), toml::Table::new());
            for (k, v) in t.iter() {
                if k == "kind" {
                    continue;
                } else if COMMON_KEYS.contains(&k.as_str()) {
                    common.insert(k.clone(), v.clone());
                } else {
                    kind.insert(k.clone(), v.clone());
                }
            }
            let name = t.get("kind").and_then(|k| k.as_str()).expect("kind");
            let rule = RuleConfig {
                common: RuleCommon::deserialize(toml::Value::Table(common).into_deserializer())
                    .unwrap_or_else(|e| panic!("rule {i}: {e}")),
                kind: RuleKindConfig::deserialize(
                    name,
                    toml::Value::Table(kind).into_deserializer(),
                )
                .expect("known kind")
                .unwrap_or_else(|e| panic!("rule {i}: {e}")),
                origin: format!("test:{i}"),
            };
            let problems = crate::engine::rule::validate(&rule);
            assert!(problems.is_empty(), "rule {i}: {problems:?}");
            rule
        })
        .collect()
}
