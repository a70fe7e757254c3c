//! Each channel kind's exact payload, and its delivery.

use std::path::Path;

use serde_json::{Value, json};

use super::NotifyEvent;
use crate::incident::{Incident, TimelineEntry};
use crate::notification::config::{ChannelConfig, ChannelKind};

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

    fn render(&self, name: &str, ctx: &minijinja::Value) -> Result<String, String> {
        let t = self
            .env
            .get_template(name)
            .map_err(|e| format!("template {name}: {e}"))?;
        t.render(ctx).map_err(|e| format!("template {name}: {e}"))
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

    fn text(&self, t: &Templates) -> Result<String, String> {
        t.render("default-text", &self.template_ctx())
    }

    /// The body: the channel's template if it has one (and it loaded), else the default.
    fn body(&self, t: &Templates) -> Result<String, String> {
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

fn pd_severity(s: crate::incident::Severity) -> &'static str {
    match s {
        crate::incident::Severity::Sev1 => "critical",
        crate::incident::Severity::Sev2 => "error",
        crate::incident::Severity::Sev3 => "warning",
        crate::incident::Severity::Sev4 => "info",
    }
}

/// Sends one notification.
pub async fn deliver(
    ctx: &Context<'_>,
    t: &Templates,
    http: &reqwest::Client,
) -> Result<Delivered, String> {
    let c = ctx.channel;
    let secret = |s: &Option<crate::notification::config::Secret>| s.as_ref().map(|s| s.0.clone());
    match c.kind {
        ChannelKind::Log => {
            tracing::info!(target: "incidentd::notification", channel = %c.id, incident = ctx.incident.id,
                event = ctx.event.as_str(), severity = %ctx.incident.severity, status = %ctx.incident.status,
                title = %ctx.incident.title, "notification");
            Ok(Delivered::default())
        }
        ChannelKind::Webhook => {
            let mut req = http.post(url(c)?).timeout(c.timeout);
            for (k, v) in &c.headers {
                req = req.header(k, &v.0);
            }
            let req = match &c.template {
                Some(_) => req
                    .header("content-type", "application/json")
                    .body(ctx.body(t)?),
                None => req.json(&ctx.document()),
            };
            send(req).await.map(|_| Delivered::default())
        }
        ChannelKind::Slack => {
            let text = match &c.template {
                Some(_) => ctx.body(t)?,
                None => ctx.text(t)?,
            };
            send(
                http.post(url(c)?)
                    .timeout(c.timeout)
                    .json(&json!({ "text": text })),
            )
            .await
            .map(|_| Delivered::default())
        }
        ChannelKind::Pagerduty => {
            let url = c
                .url
                .clone()
                .unwrap_or_else(|| "https://events.pagerduty.com/v2/enqueue".into());
            let action = if ctx.event.ends() {
                "resolve"
            } else if ctx.event == NotifyEvent::Acknowledged {
                "acknowledge"
            } else {
                "trigger"
            };
            let mut body = json!({
                "routing_key": secret(&c.routing_key).unwrap_or_default(),
                "event_action": action,
                "dedup_key": ctx.dedup_key(),
            });
            if action == "trigger" {
                body["payload"] = json!({
                    "summary": ctx.text(t)?,
                    "source": ctx.incident.host.clone().unwrap_or_else(|| ctx.host.to_owned()),
                    "severity": pd_severity(ctx.incident.severity),
                    "timestamp": ctx.incident.created_at,
                    "component": ctx.incident.service,
                    "class": ctx.incident.rules.first(),
                    "custom_details": {
                        "incident_id": ctx.incident.id,
                        "key": ctx.incident.key,
                        "status": ctx.incident.status,
                        "labels": ctx.incident.labels,
                        "event": ctx.event.as_str(),
                    },
                });
            }
            send(http.post(url).timeout(c.timeout).json(&body))
                .await
                .map(|_| Delivered::default())
        }
        ChannelKind::Alertmanager => {
            let inc = ctx.incident;
            let mut labels = serde_json::Map::new();
            for (k, v) in &inc.labels {
                labels.insert(sanitize_label(k), json!(v));
            }
            labels.insert(
                "alertname".into(),
                json!(
                    inc.rules
                        .first()
                        .cloned()
                        .unwrap_or_else(|| "incidentd".into())
                ),
            );
            labels.insert("incident_id".into(), json!(inc.id.to_string()));
            labels.insert("incident_key".into(), json!(inc.key));
            labels.insert("severity".into(), json!(inc.severity.as_str()));
            labels.insert("instance".into(), json!(ctx.host));
            if let Some(s) = &inc.service {
                labels.insert("service".into(), json!(s));
            }
            let mut alert = json!({
                "labels": labels,
                "annotations": {"summary": inc.title, "description": ctx.body(t)?},
                "startsAt": inc.created_at,
            });
            if ctx.event.ends() || !inc.status.is_active() {
                let end = inc
                    .resolved_at
                    .or(inc.closed_at)
                    .or(inc.cancelled_at)
                    .unwrap_or_else(|| crate::clock::Clock::now(&crate::clock::SystemClock));
                alert["endsAt"] = json!(end);
            }
            let base = url(c)?;
            send(
                http.post(format!("{}/api/v2/alerts", base.trim_end_matches('/')))
                    .timeout(c.timeout)
                    .json(&json!([alert])),
            )
            .await
            .map(|_| Delivered::default())
        }
        ChannelKind::Email => email(ctx, t).await.map(|()| Delivered::default()),
        ChannelKind::Exec => exec(ctx).await.map(|()| Delivered::default()),
        ChannelKind::Github => github(ctx, t, http).await,
        ChannelKind::Gitlab => gitlab(ctx, t, http).await,
        ChannelKind::Jira => jira(ctx, t, http).await,
    }
}

fn url(c: &ChannelConfig) -> Result<String, String> {
    c.url
        .clone()
        .ok_or_else(|| format!("channel {} has no url", c.id))
}

/// Alertmanager label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn sanitize_label(k: &str) -> String {
    let mut s: String = k
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if s.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Sends a request; anything but 2xx is an error with the status and the start of the body.
async fn send(req: reqwest::RequestBuilder) -> Result<Value, String> {
    let resp = req
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!(
            "answered {status}: {}",
            text.chars().take(300).collect::<String>()
        ));
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn email(ctx: &Context<'_>, t: &Templates) -> Result<(), String> {
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    let c = ctx.channel;
    let from = c.from.as_deref().unwrap_or_default();
    let mut msg = Message::builder()
        .from(from.parse().map_err(|e| format!("from `{from}`: {e}"))?)
        .subject(ctx.text(t)?);
    for to in &c.to {
        msg = msg.to(to.parse().map_err(|e| format!("to `{to}`: {e}"))?);
    }
    let msg = msg
        .body(ctx.body(t)?)
        .map_err(|e| format!("cannot build the email: {e}"))?;
    let host = c.smtp_host.as_deref().unwrap_or("localhost");
    let mut builder = if c.starttls.unwrap_or(true) {
        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
            .map_err(|e| format!("smtp {host}: {e}"))?
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
    };
    if let Some(p) = c.smtp_port {
        builder = builder.port(p);
    }
    if let (Some(u), Some(p)) = (&c.username, &c.password) {
        builder = builder.credentials(lettre::transport::smtp::authentication::Credentials::new(
            u.clone(),
            p.0.clone(),
        ));
    }
    let mailer = builder.timeout(Some(c.timeout)).build();
    mailer
        .send(msg)
        .await
        .map(|_| ())
        .map_err(|e| format!("smtp {host}: {e}"))
}

async fn exec(ctx: &Context<'_>) -> Result<(), String> {
    use tokio::io::AsyncWriteExt;
    let c = ctx.channel;
    let Some((prog, args)) = c.command.split_first() else {
        return Err("no command".into());
    };
    let mut child = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {prog}: {e}"))?;
    let doc = ctx.document().to_string();
    let run = async {
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(doc.as_bytes())
                .await
                .map_err(|e| format!("writing to {prog}: {e}"))?;
        }
        child
            .wait_with_output()
            .await
            .map_err(|e| format!("waiting for {prog}: {e}"))
    };
    let out = tokio::time::timeout(c.timeout, run)
        .await
        .map_err(|_| format!("{prog} did not finish within {:?}", c.timeout))??;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{prog} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
                .chars()
                .take(300)
                .collect::<String>()
        ))
    }
}

/// A ticket's id and link, read from the service's answer to its creation.
type Made = Option<(String, Option<String>)>;
/// A request: method, URL, JSON body.
type Call = (reqwest::Method, String, Value);

/// How one ticket service is spoken to: where an issue is made and how its id is read from
/// the answer, where a comment goes, how an issue is closed.
struct TicketApi<'a> {
    service: &'static str,
    auth: &'a (dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync),
    create: (String, Value),
    /// (id, URL) from the answer to `create`.
    made: fn(&Value) -> Made,
    comment: &'a (dyn Fn(&str) -> (String, Value) + Sync),
    close: &'a (dyn Fn(&str) -> Option<Call> + Sync),
}

/// One ticket per incident and channel: made at the opening, commented on later, closed at
/// the end. The ticket already made is found in the incident's `external_refs`.
async fn ticket(
    ctx: &Context<'_>,
    http: &reqwest::Client,
    api: TicketApi<'_>,
) -> Result<Delivered, String> {
    let c = ctx.channel;
    match ctx.incident.external_refs.get(&c.id) {
        // Ended before any ticket was made: nothing to close.
        None if ctx.event.ends() => Ok(Delivered::default()),
        None => {
            let (url, body) = api.create;
            let v = send((api.auth)(http.post(url)).json(&body)).await?;
            let (id, link) = (api.made)(&v)
                .ok_or_else(|| format!("{} answered without an issue id: {v}", api.service))?;
            Ok(Delivered {
                ticket: Some((c.id.clone(), id, link)),
            })
        }
        Some(id) => {
            let (url, body) = (api.comment)(id);
            send((api.auth)(http.post(url)).json(&body)).await?;
            if ctx.event.ends()
                && let Some((method, url, body)) = (api.close)(id)
            {
                send((api.auth)(http.request(method, url)).json(&body)).await?;
            }
            Ok(Delivered::default())
        }
    }
}

async fn github(
    ctx: &Context<'_>,
    t: &Templates,
    http: &reqwest::Client,
) -> Result<Delivered, String> {
    let c = ctx.channel;
    let base = c
        .url
        .clone()
        .unwrap_or_else(|| "https://api.github.com".into());
    let base = base.trim_end_matches('/');
    let repo = c.repo.as_deref().unwrap_or_default();
    let token = c.token.as_ref().map(|s| s.0.clone()).unwrap_or_default();
    let body = ctx.body(t)?;
    ticket(
        ctx,
        http,
        TicketApi {
            service: "GitHub",
            auth: &|r| {
                r.timeout(c.timeout)
                    .bearer_auth(&token)
                    .header("accept", "application/vnd.github+json")
                    .header("x-github-api-version", "2022-11-28")
            },
            create: (
                format!("{base}/repos/{repo}/issues"),
                json!({"title": ctx.text(t)?, "body": body,
                    "labels": ["incidentd", ctx.incident.severity.as_str()]}),
            ),
            made: |v| {
                Some((
                    v["number"].as_u64()?.to_string(),
                    v["html_url"].as_str().map(str::to_owned),
                ))
            },
            comment: &|n| {
                (
                    format!("{base}/repos/{repo}/issues/{n}/comments"),
                    json!({ "body": body }),
                )
            },
            close: &|n| {
                Some((
                    reqwest::Method::PATCH,
                    format!("{base}/repos/{repo}/issues/{n}"),
                    json!({"state": "closed", "state_reason": "completed"}),
                ))
            },
        },
    )
    .await
}

async fn gitlab(
    ctx: &Context<'_>,
    t: &Templates,
    http: &reqwest::Client,
) -> Result<Delivered, String> {
    let c = ctx.channel;
    let base = url(c)?;
    let base = base.trim_end_matches('/');
    let project: String = c.project.as_deref().unwrap_or_default().replace('/', "%2F");
    let token = c.token.as_ref().map(|s| s.0.clone()).unwrap_or_default();
    let issues = format!("{base}/api/v4/projects/{project}/issues");
    let body = ctx.body(t)?;
    ticket(
        ctx,
        http,
        TicketApi {
            service: "GitLab",
            auth: &|r| r.timeout(c.timeout).header("PRIVATE-TOKEN", &token),
            create: (
                issues.clone(),
                json!({"title": ctx.text(t)?, "description": body,
                    "labels": format!("incidentd,{}", ctx.incident.severity.as_str())}),
            ),
            made: |v| {
                Some((
                    v["iid"].as_u64()?.to_string(),
                    v["web_url"].as_str().map(str::to_owned),
                ))
            },
            comment: &|iid| (format!("{issues}/{iid}/notes"), json!({ "body": body })),
            close: &|iid| {
                Some((
                    reqwest::Method::PUT,
                    format!("{issues}/{iid}"),
                    json!({"state_event": "close"}),
                ))
            },
        },
    )
    .await
}

/// Text as an Atlassian Document Format document: one paragraph per block of lines.
fn adf(text: &str) -> Value {
    let paragraphs: Vec<Value> = text
        .split("\n\n")
        .filter(|p| !p.trim().is_empty())
        .map(|p| {
            let mut content = Vec::new();
            for (i, line) in p.lines().enumerate() {
                if i > 0 {
                    content.push(json!({"type": "hardBreak"}));
                }
                if !line.is_empty() {
                    content.push(json!({"type": "text", "text": line}));
                }
            }
            json!({"type": "paragraph", "content": content})
        })
        .collect();
    json!({"type": "doc", "version": 1, "content": paragraphs})
}

async fn jira(
    ctx: &Context<'_>,
    t: &Templates,
    http: &reqwest::Client,
) -> Result<Delivered, String> {
    let c = ctx.channel;
    let base = url(c)?;
    let base = base.trim_end_matches('/');
    let token = c.token.as_ref().map(|s| s.0.clone()).unwrap_or_default();
    let priority = match ctx.incident.severity {
        crate::incident::Severity::Sev1 => "Highest",
        crate::incident::Severity::Sev2 => "High",
        crate::incident::Severity::Sev3 => "Medium",
        crate::incident::Severity::Sev4 => "Low",
    };
    let body = adf(&ctx.body(t)?);
    let browse = format!("{base}/browse/");
    ticket(
        ctx,
        http,
        TicketApi {
            service: "Jira",
            auth: &|r| {
                let r = r.timeout(c.timeout);
                match &c.username {
                    Some(u) => r.basic_auth(u, Some(&token)),
                    None => r.bearer_auth(&token),
                }
            },
            create: (
                format!("{base}/rest/api/3/issue"),
                json!({"fields": {
                    "project": {"key": c.project},
                    "summary": ctx.text(t)?.chars().take(250).collect::<String>(),
                    "issuetype": {"name": c.issue_type.clone().unwrap_or_else(|| "Task".into())},
                    "priority": {"name": priority},
                    "labels": ["incidentd", ctx.incident.severity.as_str()],
                    "description": body,
                }}),
            ),
            made: |v| Some((v["key"].as_str()?.to_owned(), None)),
            comment: &|key| {
                (
                    format!("{base}/rest/api/3/issue/{key}/comment"),
                    json!({ "body": body }),
                )
            },
            close: &|key| {
                c.close_transition.as_ref().map(|tr| {
                    (
                        reqwest::Method::POST,
                        format!("{base}/rest/api/3/issue/{key}/transitions"),
                        json!({"transition": {"id": tr}}),
                    )
                })
            },
        },
    )
    .await
    .map(|mut d| {
        // Jira's answer has no browsable URL; it is the base and the key.
        if let Some((_, key, url)) = &mut d.ticket {
            *url = Some(format!("{browse}{key}"));
        }
        d
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn incident() -> Incident {
        serde_json::from_value(json!({
            "id": 7, "key": "k", "title": "disk \"full\"", "severity": "sev2", "status": "open",
            "service": "db", "labels": {"mount": "/var"}, "detections": 1,
            "first_event_at": "2026-11-23T10:00:00Z", "created_at": "2026-11-23T10:00:00Z",
            "runbook": "https://runbooks/disk"
        }))
        .unwrap()
    }

    #[test]
    fn the_shipped_templates_render() {
        let t = Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/templates"));
        let inc = incident();
        let channel: ChannelConfig = toml::from_str(
            "id = \"c\"\nkind = \"webhook\"\nurl = \"http://x\"\ntemplate = \"webhook-compact.json\"\n",
        )
        .unwrap();
        let ctx = Context {
            incident: &inc,
            event: NotifyEvent::Opened,
            entry: None,
            channel: &channel,
            host: "h",
            step: None,
        };
        let body: Value = serde_json::from_str(&ctx.body(&t).unwrap()).unwrap();
        assert_eq!(body["title"], "disk \"full\"");
        assert_eq!(body["labels"]["mount"], "/var");
        let mut slack = channel.clone();
        slack.template = Some("slack-detailed.txt".into());
        let ctx = Context {
            channel: &slack,
            ..ctx
        };
        let text = ctx.body(&t).unwrap();
        assert!(
            text.contains("*[sev2] opened* — #7 disk \"full\""),
            "{text}"
        );
        assert!(text.contains("• mount: /var") && text.contains("Runbook: https://runbooks/disk"));
        assert_eq!(
            ctx.text(&t).unwrap(),
            "[sev2] opened: #7 disk \"full\" (db)"
        );
    }

    #[test]
    fn adf_paragraphs_and_breaks() {
        let d = adf("a\nb\n\nc");
        assert_eq!(d["content"].as_array().unwrap().len(), 2);
        assert_eq!(d["content"][0]["content"][1]["type"], "hardBreak");
    }
}
