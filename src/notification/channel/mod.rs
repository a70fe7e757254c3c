//! Notification channels: one file per kind, each with its typed settings (checked when the
//! config loads), its payload and its delivery, behind the [`Channel`] trait. [`build`] is
//! the one place that maps a `kind` to its file.
//!
//! Deliveries fail in two ways ([`DeliveryError`]): transient (timeouts, connection errors,
//! 5xx, 408, 429), retried with backoff until the channel's `max_age`; and permanent (any
//! other 4xx, a message that cannot be built), dead-lettered at once.

mod alertmanager;
mod email;
mod exec;
mod github;
mod gitlab;
mod jira;
mod log;
mod pagerduty;
mod slack;
mod ticket;
mod webhook;

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};

use super::NotifyEvent;
use super::config::{ChannelConfig, ChannelKind};
use crate::incident::{Incident, TimelineEntry};

/// How a delivery failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth trying again: no answer, a timeout, 5xx, 408, 429, a program that failed.
    #[error("{0}")]
    Transient(String),
    /// The receiver refused it for good (4xx other than 408 and 429).
    #[error("answered {status}: {excerpt}")]
    Rejected { status: u16, excerpt: String },
    /// It cannot be sent as configured (a template that fails, an address that does not
    /// parse): trying again changes nothing.
    #[error("{0}")]
    Invalid(String),
}

impl DeliveryError {
    /// Dead-lettered at once rather than retried.
    pub fn permanent(&self) -> bool {
        !matches!(self, DeliveryError::Transient(_))
    }

    /// What the timeline and the job keep of it.
    pub fn data(&self) -> Value {
        match self {
            DeliveryError::Rejected { status, excerpt } => {
                json!({"status": status, "excerpt": excerpt})
            }
            _ => Value::Null,
        }
    }
}

/// A channel's settings that do not fit its kind, as (key, message).
pub type Problems = Vec<(&'static str, String)>;

/// One channel kind.
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    /// Sends one notification.
    async fn deliver(
        &self,
        ctx: &Context<'_>,
        t: &Templates,
        http: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError>;

    /// Sends one message listing a group's incidents (kinds whose
    /// [`ChannelKind::groups`] is true); the others send one message per incident.
    async fn deliver_group(
        &self,
        g: &GroupContext<'_>,
        _t: &Templates,
        _http: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        Err(DeliveryError::Invalid(format!(
            "a {} channel sends one message per incident",
            g.channel.kind.as_str()
        )))
    }
}

/// A channel that POSTs one JSON document per notification (Slack, PagerDuty,
/// Alertmanager): its file says where, and what; delivery is the same for all.
pub trait JsonPost: Send + Sync {
    fn url(&self) -> &str;
    fn timeout(&self) -> std::time::Duration;
    /// The document for this notification.
    fn payload(&self, ctx: &Context<'_>, t: &Templates) -> Result<Value, DeliveryError>;
    /// The document for a group's message, for kinds that list several incidents.
    fn group_payload(
        &self,
        _g: &GroupContext<'_>,
        _t: &Templates,
    ) -> Option<Result<Value, DeliveryError>> {
        None
    }
}

#[async_trait::async_trait]
impl<T: JsonPost> Channel for T {
    async fn deliver(
        &self,
        ctx: &Context<'_>,
        t: &Templates,
        http: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        let body = self.payload(ctx, t)?;
        send(http.post(self.url()).timeout(self.timeout()).json(&body))
            .await
            .map(|_| Delivered::default())
    }

    async fn deliver_group(
        &self,
        g: &GroupContext<'_>,
        t: &Templates,
        http: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        let body = self.group_payload(g, t).unwrap_or_else(|| {
            Err(DeliveryError::Invalid(format!(
                "a {} channel sends one message per incident",
                g.channel.kind.as_str()
            )))
        })?;
        send(http.post(self.url()).timeout(self.timeout()).json(&body))
            .await
            .map(|_| Delivered::default())
    }
}

/// One message about a route's group of incidents (`group_by`): each incident with the
/// change it reports, in the order they were queued.
pub struct GroupContext<'a> {
    pub channel: &'a ChannelConfig,
    pub host: &'a str,
    /// The `group_by` fields and their values.
    pub labels: &'a std::collections::BTreeMap<String, String>,
    pub items: Vec<(NotifyEvent, &'a Incident)>,
}

impl GroupContext<'_> {
    fn ctx<'b>(&'b self, event: NotifyEvent, incident: &'b Incident) -> Context<'b> {
        Context {
            incident,
            event,
            entry: None,
            channel: self.channel,
            host: self.host,
            step: None,
            peer: None,
        }
    }

    /// "3 incidents (service=db)": the subject or heading.
    fn title(&self) -> String {
        let n = self.items.len();
        let values: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        format!(
            "{n} incident{} ({})",
            if n == 1 { "" } else { "s" },
            values.join(", ")
        )
    }

    /// Each incident's one-line text (the channel's default text).
    fn lines(&self, t: &Templates) -> Result<Vec<String>, DeliveryError> {
        self.items
            .iter()
            .map(|(e, i)| self.ctx(*e, i).text(t))
            .collect()
    }

    /// The JSON document of a group (webhook, exec): version 1, `event` "group", the group's
    /// labels and every incident with its change.
    fn document(&self) -> Value {
        json!({
            "version": 1,
            "event": "group",
            "channel": self.channel.id,
            "group": self.labels,
            "count": self.items.len(),
            "incidents": self.items.iter().map(|(e, i)| json!({
                "event": e.as_str(),
                "incident": self.ctx(*e, i).incident_json(),
            })).collect::<Vec<_>>(),
        })
    }
}

/// The channel of a `[[channel]]` table, or what is wrong with its settings.
pub fn build(c: &ChannelConfig) -> Result<Arc<dyn Channel>, Problems> {
    Ok(match c.kind {
        ChannelKind::Log => Arc::new(log::Log),
        ChannelKind::Webhook => Arc::new(webhook::Webhook::new(c)?),
        ChannelKind::Slack => Arc::new(slack::Slack::new(c)?),
        ChannelKind::Pagerduty => Arc::new(pagerduty::PagerDuty::new(c)?),
        ChannelKind::Alertmanager => Arc::new(alertmanager::Alertmanager::new(c)?),
        ChannelKind::Email => Arc::new(email::Email::new(c)?),
        ChannelKind::Exec => Arc::new(exec::Exec::new(c)?),
        ChannelKind::Github => Arc::new(github::GitHub::new(c)?),
        ChannelKind::Gitlab => Arc::new(gitlab::GitLab::new(c)?),
        ChannelKind::Jira => Arc::new(jira::Jira::new(c)?),
    })
}

/// A required setting, or the problem that it is missing.
fn need<T: Clone>(
    c: &ChannelConfig,
    key: &'static str,
    v: &Option<T>,
    problems: &mut Problems,
) -> Option<T> {
    if v.is_none() {
        problems.push((key, format!("a {} channel needs `{key}`", c.kind.as_str())));
    }
    v.clone()
}

/// The settings, or every problem found.
fn done<T>(value: Option<T>, problems: Problems) -> Result<T, Problems> {
    match value {
        Some(v) if problems.is_empty() => Ok(v),
        _ => Err(problems),
    }
}

/// The most of an answer read: ticket trackers answer with the issue as JSON (a few KB),
/// and only the first 300 characters of a refusal are shown.
const MAX_ANSWER_BYTES: usize = 1 << 20;

/// Sends a request; a 2xx answer's JSON (null when it is not JSON) or how it failed.
async fn send(req: reqwest::RequestBuilder) -> Result<Value, DeliveryError> {
    let resp = req
        .send()
        .await
        // Without the URL: a Slack webhook's path or a token in a query string is a secret,
        // and this text reaches the log, the timeline and `GET /v1/channels`.
        .map_err(|e| DeliveryError::Transient(format!("request failed: {}", e.without_url())))?;
    let status = resp.status();
    let text =
        String::from_utf8_lossy(&crate::capped::body(resp, MAX_ANSWER_BYTES).await).into_owned();
    classify(status.as_u16(), &text)?;
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// 2xx is done; 4xx other than 408 and 429 is a refusal; anything else may pass later.
fn classify(status: u16, body: &str) -> Result<(), DeliveryError> {
    if (200..300).contains(&status) {
        return Ok(());
    }
    let excerpt: String = body.chars().take(300).collect();
    if (400..500).contains(&status) && status != 408 && status != 429 {
        Err(DeliveryError::Rejected { status, excerpt })
    } else {
        Err(DeliveryError::Transient(format!(
            "answered {status}: {excerpt}"
        )))
    }
}

/// One line: the subject of an email, a Slack message, an issue title.
const DEFAULT_TEXT: &str = "[{{ incident.severity }}] {{ event }}: #{{ incident.id }} {{ incident.title }}{% if incident.service %} ({{ incident.service }}){% endif %}";

/// A body: an email, an issue description, a comment.
const DEFAULT_BODY: &str = "{{ incident.title }}

- Incident: #{{ incident.id }} ({{ incident.key }})
- Event: {{ event }}{% if step is not none %} (escalation step {{ step + 1 }}){% endif %}
- Status: {{ incident.status }}
- Severity: {{ incident.severity }}
{% if incident.service %}- Service: {{ incident.service }}
{% endif %}{% if incident.host %}- Host: {{ incident.host }}
{% endif %}- Created: {{ incident.created_at }}
- Detections: {{ incident.detections }}
{% if incident.root_cause %}- Root cause: {{ incident.root_cause }}
{% endif %}{% if incident.runbook %}- Runbook: {{ incident.runbook }}
{% endif %}{% if entry and entry.note %}
{{ entry.actor }}: {{ entry.note }}
{% endif %}";

/// The user's templates (`[notifications] templates_dir`), read when the channel starts.
pub struct Templates {
    env: minijinja::Environment<'static>,
}

impl Templates {
    pub fn load(dir: &Path) -> Templates {
        let mut env = minijinja::Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Chainable);
        // Text out, whatever the file's name: JSON templates quote with `tojson` themselves.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        let _ = env.add_template_owned("default-text", DEFAULT_TEXT.to_owned());
        let _ = env.add_template_owned("default-body", DEFAULT_BODY.to_owned());
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                match std::fs::read_to_string(e.path()) {
                    Ok(text) => {
                        if let Err(err) = env.add_template_owned(name.clone(), text) {
                            tracing::error!(template = %name, error = %err, "notification template does not compile; the default is used");
                        }
                    }
                    Err(err) => {
                        tracing::error!(template = %name, error = %err, "cannot read a notification template")
                    }
                }
            }
        }
        Templates { env }
    }

    fn render(&self, name: &str, ctx: &minijinja::Value) -> Result<String, DeliveryError> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| DeliveryError::Invalid(format!("template {name}: {e}")))?;
        t.render(ctx)
            .map_err(|e| DeliveryError::Invalid(format!("template {name}: {e}")))
    }
}

/// What a delivery needs to know.
pub struct Context<'a> {
    pub incident: &'a Incident,
    pub event: NotifyEvent,
    pub entry: Option<&'a TimelineEntry>,
    pub channel: &'a ChannelConfig,
    pub host: &'a str,
    pub step: Option<usize>,
    /// The one peer to send to, for a channel with several (Alertmanager's `urls`).
    pub peer: Option<&'a str>,
}

/// What came of a delivery besides success.
#[derive(Default)]
pub struct Delivered {
    /// A ticket made: (key in external_refs, its id, its URL).
    pub ticket: Option<(String, String, Option<String>)>,
}

impl Context<'_> {
    fn incident_json(&self) -> Value {
        let mut i = self.incident.clone();
        i.evidence.clear();
        if let Some(f) = &mut i.folded {
            f.evidence.clear();
        }
        json!(i)
    }

    fn template_ctx(&self) -> minijinja::Value {
        minijinja::context! {
            incident => minijinja::Value::from(minijinja::value::Serde(self.incident_json())),
            event => self.event.as_str(),
            entry => minijinja::Value::from(minijinja::value::Serde(self.entry)),
            channel => self.channel.id.as_str(),
            step => self.step,
        }
    }

    /// A template given inline in the channel's settings (Alertmanager's `link`).
    fn render_inline(&self, t: &Templates, text: &str) -> Result<String, DeliveryError> {
        t.env
            .render_str(text, self.template_ctx())
            .map_err(|e| DeliveryError::Invalid(format!("template `{text}`: {e}")))
    }

    fn text(&self, t: &Templates) -> Result<String, DeliveryError> {
        t.render("default-text", &self.template_ctx())
    }

    /// The body: the channel's template if it has one (and it loaded), else the default.
    fn body(&self, t: &Templates) -> Result<String, DeliveryError> {
        let name = self
            .channel
            .template
            .as_deref()
            .filter(|n| t.env.get_template(n).is_ok())
            .unwrap_or("default-body");
        t.render(name, &self.template_ctx())
    }

    /// The JSON every generic receiver gets (webhook without template, exec).
    fn document(&self) -> Value {
        json!({
            "version": 1,
            "event": self.event.as_str(),
            "channel": self.channel.id,
            "incident": self.incident_json(),
            "entry": self.entry,
            "escalation_step": self.step,
        })
    }

    /// The key stable per incident across a fleet (PagerDuty dedup_key).
    fn dedup_key(&self) -> String {
        format!("incidentd/{}/{}", self.host, self.incident.id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn incident() -> Incident {
        serde_json::from_value(json!({
            "id": 7, "key": "k", "title": "disk \"full\"", "severity": "sev2", "status": "open",
            "service": "db", "labels": {"mount": "/var"}, "detections": 1,
            "first_event_at": "2026-11-23T10:00:00Z", "created_at": "2026-11-23T10:00:00Z",
            "runbook": "https://runbooks/disk"
        }))
        .unwrap()
    }

    pub(crate) fn channel(toml_text: &str) -> ChannelConfig {
        toml::from_str(toml_text).unwrap()
    }

    pub(crate) fn templates() -> Templates {
        Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/templates"))
    }

    pub(crate) fn ctx<'a>(
        inc: &'a Incident,
        channel: &'a ChannelConfig,
        event: NotifyEvent,
    ) -> Context<'a> {
        Context {
            incident: inc,
            event,
            entry: None,
            channel,
            host: "h",
            step: None,
            peer: None,
        }
    }

    #[test]
    fn refusals_are_permanent_and_the_rest_transient() {
        assert_eq!(classify(204, ""), Ok(()));
        let e = classify(400, "invalid_payload").unwrap_err();
        assert_eq!(
            e,
            DeliveryError::Rejected {
                status: 400,
                excerpt: "invalid_payload".into()
            }
        );
        assert!(e.permanent());
        for s in [408, 429, 500, 502, 503] {
            assert!(!classify(s, "x").unwrap_err().permanent(), "{s}");
        }
        assert!(
            classify(404, &"y".repeat(1000))
                .unwrap_err()
                .to_string()
                .len()
                < 330
        );
    }

    #[test]
    fn the_shipped_templates_render() {
        let t = templates();
        let inc = incident();
        let channel = channel(
            "id = \"c\"\nkind = \"webhook\"\nurl = \"http://x\"\ntemplate = \"webhook-compact.json\"\n",
        );
        let c = ctx(&inc, &channel, NotifyEvent::Opened);
        let body: Value = serde_json::from_str(&c.body(&t).unwrap()).unwrap();
        assert_eq!(body["title"], "disk \"full\"");
        assert_eq!(body["labels"]["mount"], "/var");
        let mut slack = channel.clone();
        slack.template = Some("slack-detailed.txt".into());
        let c = Context {
            channel: &slack,
            ..c
        };
        let text = c.body(&t).unwrap();
        assert!(
            text.contains("*[sev2] opened* — #7 disk \"full\""),
            "{text}"
        );
        assert!(text.contains("• mount: /var") && text.contains("Runbook: https://runbooks/disk"));
        assert_eq!(c.text(&t).unwrap(), "[sev2] opened: #7 disk \"full\" (db)");
    }

    #[test]
    fn a_missing_setting_names_its_key() {
        let Err(p) = build(&channel("id = \"g\"\nkind = \"github\"\n")) else {
            panic!("built without repo and token")
        };
        assert_eq!(
            p.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            ["repo", "token"]
        );
        assert_eq!(p[0].1, "a github channel needs `repo`");
    }
}
