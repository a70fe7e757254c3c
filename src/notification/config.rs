//! `[[channel]]`, `[[route]]`, `[[escalation]]` and `[notifications]`: where incident changes
//! are sent, when, and how.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::condition::Condition;
use crate::de::{opt_duration, positive_duration};
use crate::incident::matcher::{IncidentWhere, labels_hold};
use crate::incident::{Severity, Status};

pub use crate::de::Secret;

/// What a channel delivers to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    Log,
    Webhook,
    Slack,
    Pagerduty,
    Email,
    Github,
    Gitlab,
    Jira,
    Alertmanager,
    Exec,
}

impl ChannelKind {
    /// Whether one message can list several incidents (a route's `group_by`).
    pub fn groups(self) -> bool {
        matches!(
            self,
            ChannelKind::Webhook | ChannelKind::Slack | ChannelKind::Email | ChannelKind::Log
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Log => "log",
            ChannelKind::Webhook => "webhook",
            ChannelKind::Slack => "slack",
            ChannelKind::Pagerduty => "pagerduty",
            ChannelKind::Email => "email",
            ChannelKind::Github => "github",
            ChannelKind::Gitlab => "gitlab",
            ChannelKind::Jira => "jira",
            ChannelKind::Alertmanager => "alertmanager",
            ChannelKind::Exec => "exec",
        }
    }
}

/// `rate_limit = { max = 30, per = "1m" }`.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelRate {
    pub max: u32,
    #[serde(deserialize_with = "positive_duration")]
    pub per: Duration,
}

/// `[[channel]]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelConfig {
    pub id: String,
    pub kind: ChannelKind,
    /// Every HTTP channel's address (PagerDuty and GitHub have defaults).
    #[serde(default)]
    pub url: Option<String>,
    /// Alertmanager: every peer of an HA cluster (with `url`, if given, the first); each
    /// gets every alert and is retried on its own.
    #[serde(default)]
    pub urls: Vec<String>,
    /// Alertmanager: a template for a link to the incident (`generatorURL` and the `link`
    /// annotation), e.g. `https://incidents.example.com/{{ incident.id }}`.
    #[serde(default)]
    pub link: Option<String>,
    #[serde(default)]
    pub routing_key: Option<Secret>,
    #[serde(default)]
    pub token: Option<Secret>,
    /// Jira: the account the token belongs to (basic authentication); email: SMTP user.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// GitHub: `owner/name`.
    #[serde(default)]
    pub repo: Option<String>,
    /// GitLab: the project's id or `group/name`; Jira: the project key.
    #[serde(default)]
    pub project: Option<String>,
    /// Jira: the issue type of new issues (default "Task") and the transition that closes one.
    #[serde(default)]
    pub issue_type: Option<String>,
    #[serde(default)]
    pub close_transition: Option<String>,
    #[serde(default)]
    pub smtp_host: Option<String>,
    #[serde(default)]
    pub smtp_port: Option<u16>,
    #[serde(default)]
    pub from: Option<String>,
    #[serde(default)]
    pub to: Vec<String>,
    /// Email: STARTTLS (default true); false sends in plain text (a local relay).
    #[serde(default)]
    pub starttls: Option<bool>,
    /// Exec: the command, which gets the notification as JSON on stdin.
    #[serde(default)]
    pub command: Vec<String>,
    /// Webhook: extra headers.
    #[serde(default)]
    pub headers: BTreeMap<String, Secret>,
    /// A template file in `[notifications] templates_dir` for the message text (email body,
    /// Slack text, ticket body, webhook body).
    #[serde(default)]
    pub template: Option<String>,
    #[serde(default)]
    pub rate_limit: Option<ChannelRate>,
    #[serde(default = "default_timeout", deserialize_with = "positive_duration")]
    pub timeout: Duration,
    /// A delivery still failing this long after it was queued is dead-lettered.
    #[serde(default = "default_max_age", deserialize_with = "positive_duration")]
    pub max_age: Duration,
    /// Alertmanager: how often a firing alert is sent again (it expires without).
    #[serde(default, deserialize_with = "opt_duration")]
    pub resend_interval: Option<Duration>,
    /// The most notifications the outbox holds for one lane of this channel (one peer of
    /// it): beyond, the oldest are dead-lettered, so a channel that is down for long keeps
    /// memory and disk bounded.
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
}

fn default_max_queued() -> usize {
    10_000
}

fn default_timeout() -> Duration {
    Duration::from_secs(10)
}

fn default_max_age() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// What a route matches; every given matcher must hold.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteMatch {
    #[serde(default, deserialize_with = "one_or_many")]
    pub severity: Vec<Severity>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub status: Vec<Status>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub service: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub host: Vec<String>,
    #[serde(default, deserialize_with = "one_or_many")]
    pub rule: Vec<String>,
    /// Conditions on labels by name: a value, or an operator table (`{ regex = "^db" }`).
    #[serde(default)]
    pub labels: BTreeMap<String, Condition>,
    /// Conditions on any incident field (`crate::incident::matcher`), e.g.
    /// `where = { "labels.team" = { not_in = ["test"] } }`.
    #[serde(default, rename = "where")]
    pub where_: IncidentWhere,
}

impl RouteMatch {
    pub fn matches(&self, inc: &crate::incident::Incident) -> bool {
        (self.severity.is_empty() || self.severity.contains(&inc.severity))
            && (self.status.is_empty() || self.status.contains(&inc.status))
            && (self.service.is_empty()
                || inc
                    .service
                    .as_ref()
                    .is_some_and(|s| self.service.contains(s)))
            && (self.host.is_empty() || inc.host.as_ref().is_some_and(|h| self.host.contains(h)))
            && (self.rule.is_empty() || inc.rules.iter().any(|r| self.rule.contains(r)))
            && labels_hold(&self.labels, inc)
            && self.where_.holds(inc)
    }
}

fn one_or_many<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany<T> {
        One(T),
        Many(Vec<T>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(t) => vec![t],
        OneOrMany::Many(v) => v,
    })
}

/// `[[route]]`, tried in order.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    #[serde(default, rename = "match")]
    pub matchers: RouteMatch,
    #[serde(default)]
    pub channels: Vec<String>,
    /// Sent again while the incident stays open (not acknowledged).
    #[serde(default, deserialize_with = "opt_duration")]
    pub repeat_interval: Option<Duration>,
    /// Go on to the next routes after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// An `[[escalation]]` started when the incident opens.
    #[serde(default)]
    pub escalation: Option<String>,
    /// Group notifications as Alertmanager does: incidents with the same values of these
    /// fields (`service`, `host`, `severity`, `labels.NAME` or a bare label name) reach
    /// each channel of the route that can list several (webhook, Slack, email, log) as one
    /// message; PagerDuty, Alertmanager, exec and ticket channels keep one per incident.
    #[serde(default)]
    pub group_by: Vec<String>,
    /// How long a new group waits for more incidents before its first message (30s).
    #[serde(default, deserialize_with = "opt_duration")]
    pub group_wait: Option<Duration>,
    /// The shortest time between two messages of one group (5m).
    #[serde(default, deserialize_with = "opt_duration")]
    pub group_interval: Option<Duration>,
}

impl RouteConfig {
    /// `group_wait`, or Alertmanager's default.
    pub fn group_wait(&self) -> Duration {
        self.group_wait.unwrap_or(Duration::from_secs(30))
    }

    /// `group_interval`, or Alertmanager's default.
    pub fn group_interval(&self) -> Duration {
        self.group_interval.unwrap_or(Duration::from_secs(300))
    }
}

/// One step of an escalation.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationStep {
    #[serde(deserialize_with = "crate::de::duration")]
    pub after: Duration,
    pub channels: Vec<String>,
}

/// `[[escalation]]`: steps that fire while the incident is not acknowledged.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    pub id: String,
    pub steps: Vec<EscalationStep>,
}

/// `[[inhibit]]`: while an active incident matches `source`, the notifications of an
/// incident matching `target` are held (its timeline says `inhibited`, with the source's
/// id), and released when no source holds it any more. As Alertmanager's inhibit rules:
/// `equal` names fields (`host`, `service`, `labels.NAME` or a bare label name) whose
/// values must be the same on both; `downstream = true` further asks that the target's
/// service depend on the source's through `[[service]] depends_on`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InhibitConfig {
    pub source: IncidentWhere,
    pub target: IncidentWhere,
    #[serde(default)]
    pub equal: Vec<String>,
    #[serde(default)]
    pub downstream: bool,
}

/// `[notifications]`.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotificationsConfig {
    /// User templates (relative to the config file).
    pub templates_dir: PathBuf,
    /// Retries: first delay, doubled (with jitter) up to the maximum.
    #[serde(deserialize_with = "positive_duration")]
    pub retry_initial: Duration,
    #[serde(deserialize_with = "positive_duration")]
    pub retry_max: Duration,
}

impl Default for NotificationsConfig {
    fn default() -> Self {
        NotificationsConfig {
            templates_dir: PathBuf::from("templates"),
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// Everything about notifications, as the notifier gets it (also on reload).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NotifyConfig {
    pub channels: Vec<ChannelConfig>,
    pub routes: Vec<RouteConfig>,
    pub escalations: Vec<EscalationConfig>,
    pub inhibits: Vec<InhibitConfig>,
    /// `[[service]]` tables, for `downstream` inhibition.
    pub services: Vec<crate::incident::config::ServiceConfig>,
    /// `[[team]]` tables, for `oncall:` targets.
    pub teams: Vec<crate::incident::oncall::TeamConfig>,
    pub settings: NotificationsConfig,
}

/// A peer's address as logs, metrics and the timeline show it: without its user or
/// password (either may be a token).
pub fn shown_peer(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if u.password().is_some() || !u.username().is_empty() => {
            // Both fail only for URLs that cannot have them (checked above).
            let _ = u.set_password(None);
            let _ = u.set_username("redacted");
            u.to_string().trim_end_matches('/').to_owned()
        }
        _ => url.to_owned(),
    }
}

impl ChannelConfig {
    /// The peers a channel sends every notification to, each retried on its own: an
    /// Alertmanager channel's `url` and `urls` (without repeats); none for other kinds.
    pub fn peers(&self) -> Vec<String> {
        if self.kind != ChannelKind::Alertmanager {
            return Vec::new();
        }
        let mut out: Vec<String> = Vec::new();
        for u in self.url.iter().chain(self.urls.iter()) {
            let u = u.trim_end_matches('/').to_owned();
            if !out.contains(&u) {
                out.push(u);
            }
        }
        out
    }

    /// What is missing or does not fit the channel's kind, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        // Each kind checks its own settings (notification/channel/<kind>.rs).
        let mut out = super::channel::build(self).err().unwrap_or_default();
        for (key, u) in self
            .url
            .iter()
            .map(|u| ("url", u))
            .chain(self.urls.iter().map(|u| ("urls", u)))
        {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                out.push((key, format!("`{u}` is not an http:// or https:// URL")));
            }
        }
        if self.kind != ChannelKind::Alertmanager {
            for (key, set) in [
                ("urls", !self.urls.is_empty()),
                ("link", self.link.is_some()),
            ] {
                if set {
                    out.push((key, format!("only an alertmanager channel takes `{key}`")));
                }
            }
        }
        if let Some(r) = &self.rate_limit
            && r.max == 0
        {
            out.push(("rate_limit", "`max` must be at least 1".into()));
        }
        if self.max_queued == 0 {
            out.push(("max_queued", "must be at least 1".into()));
        }
        out
    }
}
