//! What the channels are and how they fare (`GET /v1/channels`), and a test message through
//! a channel's real delivery path (`POST /v1/channels/{id}/test`): the same payload
//! builder, HTTP client, SMTP transport or command as a real notification, about a test
//! incident that exists nowhere else.

use serde::Serialize;
use serde_json::{Value, json};

use super::channel::{self, Channel, Context, Templates};
use super::config::{ChannelConfig, ChannelKind, shown_peer};
use super::{NotifyConfig, NotifyEvent};
use crate::clock::Timestamp;
use crate::incident::{Incident, Severity, Status};
use crate::telemetry::{PeerStats, Telemetry};

/// One channel as listed: where it sends (secrets left out) and its delivery figures.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelInfo {
    pub id: String,
    pub kind: &'static str,
    pub target: String,
    #[serde(flatten)]
    pub stats: PeerStats,
}

/// Where a channel sends, for people: URLs without user, password, query string or path
/// (webhook paths are often the secret: Slack's, Discord's, Teams', Zapier's), but for an
/// Alertmanager's; tokens and routing keys never.
pub fn target_of(c: &ChannelConfig) -> String {
    let url = |u: &str, keep_path: bool| -> String {
        match reqwest::Url::parse(u) {
            Ok(mut p) => {
                p.set_query(None);
                p.set_fragment(None);
                let hidden = !keep_path && p.path() != "/";
                if hidden {
                    p.set_path("/");
                }
                let shown = shown_peer(p.as_str()).trim_end_matches('/').to_owned();
                if hidden {
                    format!("{shown}/…")
                } else {
                    shown
                }
            }
            Err(_) => "(not a URL)".into(),
        }
    };
    match c.kind {
        ChannelKind::Log => "the daemon's log".into(),
        ChannelKind::Exec => c.command.first().cloned().unwrap_or_default(),
        ChannelKind::Email => format!(
            "{} via {}:{}",
            c.to.join(", "),
            c.smtp_host.as_deref().unwrap_or("?"),
            c.smtp_port.unwrap_or(25)
        ),
        ChannelKind::Slack => c.url.as_deref().map(|u| url(u, false)).unwrap_or_default(),
        ChannelKind::Alertmanager => c
            .peers()
            .iter()
            .map(|u| url(u, true))
            .collect::<Vec<_>>()
            .join(", "),
        ChannelKind::Github => match &c.repo {
            Some(r) => format!("github {r}"),
            None => String::new(),
        },
        ChannelKind::Gitlab | ChannelKind::Jira => {
            let base = c.url.as_deref().map(|u| url(u, false)).unwrap_or_default();
            match &c.project {
                Some(p) => format!("{base} project {p}"),
                None => base,
            }
        }
        ChannelKind::Webhook | ChannelKind::Pagerduty => {
            let default = (c.kind == ChannelKind::Pagerduty)
                .then_some("https://events.pagerduty.com/v2/enqueue");
            c.url
                .as_deref()
                .or(default)
                .map(|u| url(u, false))
                .unwrap_or_default()
        }
    }
}

/// Every configured channel with its figures so far (peers of one channel summed).
pub fn list(config: &NotifyConfig, telemetry: &Telemetry) -> Vec<ChannelInfo> {
    let stats = telemetry
        .channels
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    config
        .channels
        .iter()
        .map(|c| ChannelInfo {
            id: c.id.clone(),
            kind: c.kind.as_str(),
            target: target_of(c),
            stats: stats.get(&c.id).cloned().unwrap_or_default(),
        })
        .collect()
}

/// What a test message came to: per peer (one entry for a channel without peers).
#[derive(Clone, Debug, Serialize)]
pub struct TestReport {
    pub channel: String,
    pub kind: &'static str,
    pub target: String,
    /// Whether every peer accepted it.
    pub ok: bool,
    pub results: Vec<Value>,
}

/// The incident a test message is about.
fn test_incident(host: &str, now: Timestamp) -> Incident {
    let mut i = Incident::new(
        0,
        "incidentd/test".into(),
        format!("Test notification from incidentd on {host}"),
        Severity::Sev4,
        now,
    );
    i.status = Status::Open;
    i.host = Some(host.to_owned());
    i.labels.insert("test".into(), "true".into());
    i.rules = vec!["test".into()];
    i
}

/// Sends one test message through `c` (each peer of an Alertmanager cluster) and reports
/// what each service answered. Where the message opens something (a PagerDuty incident, an
/// Alertmanager alert, an issue) a resolution follows at once, so nobody is left paged; its
/// outcome is `closed` in the result.
pub async fn test(
    c: &ChannelConfig,
    templates_dir: &std::path::Path,
    http: &reqwest::Client,
    host: &str,
    now: Timestamp,
) -> TestReport {
    let target = target_of(c);
    let kind: std::sync::Arc<dyn Channel> = match channel::build(c) {
        Ok(k) => k,
        Err(problems) => {
            let text: Vec<String> = problems.iter().map(|(k, m)| format!("{k}: {m}")).collect();
            return TestReport {
                channel: c.id.clone(),
                kind: c.kind.as_str(),
                target,
                ok: false,
                results: vec![json!({"ok": false, "error": text.join("; ")})],
            };
        }
    };
    let templates = Templates::load(templates_dir);
    let incident = test_incident(host, now);
    let peers = c.peers();
    let targets: Vec<Option<&str>> = if peers.is_empty() {
        vec![None]
    } else {
        peers.iter().map(|p| Some(p.as_str())).collect()
    };
    // What a test opens somewhere (a page, an alert, an issue) it closes again.
    let closes = matches!(
        c.kind,
        ChannelKind::Pagerduty
            | ChannelKind::Alertmanager
            | ChannelKind::Github
            | ChannelKind::Gitlab
            | ChannelKind::Jira
    );
    let failed = |e: &super::channel::DeliveryError| {
        let mut v = json!({"ok": false, "error": e.to_string(), "permanent": e.permanent()});
        if let Value::Object(answer) = e.data() {
            v["answer"] = Value::Object(answer);
        }
        v
    };
    let mut results = Vec::new();
    for peer in targets {
        let mut incident = incident.clone();
        let opened = {
            let ctx = Context {
                incident: &incident,
                event: NotifyEvent::Opened,
                entry: None,
                channel: c,
                host,
                step: None,
                peer,
            };
            kind.deliver(&ctx, &templates, http).await
        };
        let mut r = match opened {
            Ok(done) => {
                let mut v = json!({"ok": true});
                if closes {
                    if let Some((key, value, _)) = done.ticket {
                        incident.external_refs.insert(key, value);
                    }
                    incident.status = Status::Resolved;
                    incident.resolved_at = Some(now);
                    let end = Context {
                        incident: &incident,
                        event: NotifyEvent::Resolved,
                        entry: None,
                        channel: c,
                        host,
                        step: None,
                        peer,
                    };
                    v["closed"] = match kind.deliver(&end, &templates, http).await {
                        Ok(_) => json!(true),
                        Err(e) => failed(&e),
                    };
                }
                v
            }
            Err(e) => failed(&e),
        };
        if let Some(p) = peer {
            r["peer"] = json!(shown_peer(p));
        }
        results.push(r);
    }
    TestReport {
        channel: c.id.clone(),
        kind: c.kind.as_str(),
        target,
        ok: results.iter().all(|r| r["ok"] == true),
        results,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(text: &str) -> ChannelConfig {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn targets_leave_secrets_out() {
        let slack = channel(
            "id = \"s\"\nkind = \"slack\"\nurl = \"https://hooks.slack.com/services/T0/B0/SECRET\"",
        );
        assert_eq!(target_of(&slack), "https://hooks.slack.com/…");
        let hook = channel(
            "id = \"h\"\nkind = \"webhook\"\nurl = \"https://user:pw@example.com/hook?token=SECRET\"",
        );
        let t = target_of(&hook);
        assert!(!t.contains("SECRET") && !t.contains("pw"), "{t}");
        assert_eq!(t, "https://redacted@example.com/…");
        let pd = channel("id = \"p\"\nkind = \"pagerduty\"\nrouting_key = \"R0UT1NG\"");
        assert_eq!(target_of(&pd), "https://events.pagerduty.com/…");
        let am = channel(
            "id = \"a\"\nkind = \"alertmanager\"\nurls = [\"http://a:9093\", \"http://b:9093\"]",
        );
        assert_eq!(target_of(&am), "http://a:9093, http://b:9093");
    }
}
