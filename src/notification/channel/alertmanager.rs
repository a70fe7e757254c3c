//! `kind = "alertmanager"`: the incident as one alert on Alertmanager's v2 API
//! (`POST {peer}/api/v2/alerts`), its labels made valid label names, `endsAt` once it ends.
//! A channel names one peer (`url`) or every peer of an HA cluster (`urls`): like
//! Prometheus, incidentd sends every alert to every peer, and the cluster's gossiped
//! notification log makes one notification of it. The notifier gives each peer its own job,
//! so each is retried on its own. A firing alert is sent again every `resend_interval`.
//!
//! The label set is what Alertmanager identifies an alert by, so it stays the same for the
//! incident's life: `alertname` and `rule` (its first rule), `incident_id`, `incident_key`,
//! `instance` (the host it is about: its `instance` label, else this host), `reporter` (this
//! host), `service`, `severity` and the incident's labels. When the
//! severity gets worse, the alert under the old severity is ended in the same request.

use std::time::Duration;

use serde_json::{Value, json};

use super::{Channel, ChannelConfig, Context, Delivered, DeliveryError, Problems, Templates};
use super::{done, send};
use crate::notification::NotifyEvent;

pub struct Alertmanager {
    /// Each peer's address, without a trailing slash.
    peers: Vec<String>,
    timeout: Duration,
    /// The incident's link (`generatorURL` and the `link` annotation), a template.
    link: Option<String>,
}

impl Alertmanager {
    pub fn new(c: &ChannelConfig) -> Result<Alertmanager, Problems> {
        let mut p = Problems::new();
        let peers = c.peers();
        if peers.is_empty() {
            p.push((
                "url",
                "an alertmanager channel needs `url` or `urls`".into(),
            ));
        }
        if let Some(link) = &c.link
            && let Err(e) = minijinja::Environment::new().template_from_str(link)
        {
            p.push(("link", format!("the template does not compile: {e}")));
        }
        done(
            Some(Alertmanager {
                peers,
                timeout: c.timeout,
                link: c.link.clone(),
            }),
            p,
        )
    }

    fn alerts_url(peer: &str) -> String {
        format!("{}/api/v2/alerts", peer.trim_end_matches('/'))
    }

    /// The alerts of this notification: the incident's, and, when its severity just got
    /// worse, the one under the old severity, ended.
    fn payload(&self, ctx: &Context<'_>, t: &Templates) -> Result<Value, DeliveryError> {
        let inc = ctx.incident;
        let mut labels = serde_json::Map::new();
        for (k, v) in &inc.labels {
            labels.insert(label_name(k), json!(v));
        }
        let rule = inc
            .rules
            .first()
            .cloned()
            .unwrap_or_else(|| "incidentd".into());
        labels.insert("alertname".into(), json!(rule));
        labels.insert("rule".into(), json!(rule));
        labels.insert("incident_id".into(), json!(inc.id.to_string()));
        labels.insert("incident_key".into(), json!(inc.key));
        labels.insert("severity".into(), json!(inc.severity.as_str()));
        // `instance` is the host the incident is about: this host, unless the incident
        // names another (a probe of another host); `reporter` is always this host, so two
        // hosts' incidents about a third never share a label set.
        labels.entry("instance").or_insert_with(|| json!(ctx.host));
        labels.insert("reporter".into(), json!(ctx.host));
        if let Some(s) = &inc.service {
            labels.insert("service".into(), json!(s));
        }
        let mut annotations = json!({"summary": inc.title, "description": ctx.body(t)?});
        if let Some(r) = &inc.runbook {
            annotations["runbook"] = json!(r);
        }
        let link = match &self.link {
            Some(l) => Some(ctx.render_inline(t, l)?),
            None => None,
        };
        let mut alert = json!({
            "labels": labels,
            "annotations": annotations,
            "startsAt": inc.created_at,
        });
        if let Some(l) = link {
            // Alertmanager refuses the whole request over a generatorURL that is no URL.
            if l.starts_with("http://") || l.starts_with("https://") {
                alert["generatorURL"] = json!(l);
            }
            alert["annotations"]["link"] = json!(l);
        }
        let now = crate::clock::Clock::now(&crate::clock::SystemClock);
        if ctx.event.ends() || !inc.status.is_active() {
            let end = inc
                .resolved_at
                .or(inc.closed_at)
                .or(inc.cancelled_at)
                .unwrap_or(now);
            alert["endsAt"] = json!(end);
        }
        let mut alerts = vec![alert.clone()];
        let before = (ctx.event == NotifyEvent::Escalated)
            .then(|| ctx.entry.and_then(|e| e.data.get("from")))
            .flatten()
            .and_then(|v| v.as_str());
        if let Some(old) = before
            && old != inc.severity.as_str()
        {
            let mut ended = alert;
            ended["labels"]["severity"] = json!(old);
            ended["endsAt"] = json!(now);
            alerts.push(ended);
        }
        Ok(Value::Array(alerts))
    }
}

/// Alertmanager label names: `[a-zA-Z_][a-zA-Z0-9_]*`.
fn label_name(k: &str) -> String {
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

#[async_trait::async_trait]
impl Channel for Alertmanager {
    /// To the job's peer; a job without one (queued before the channel had peers) goes to
    /// every peer and fails if any fails.
    async fn deliver(
        &self,
        ctx: &Context<'_>,
        t: &Templates,
        http: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        let body = self.payload(ctx, t)?;
        let targets: Vec<&str> = match ctx.peer {
            Some(p) => vec![p],
            None => self.peers.iter().map(String::as_str).collect(),
        };
        let sends = targets.iter().map(|p| {
            send(
                http.post(Self::alerts_url(p))
                    .timeout(self.timeout)
                    .json(&body),
            )
        });
        for r in futures_util::future::join_all(sends).await {
            r?;
        }
        Ok(Delivered::default())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::notification::NotifyEvent;

    #[test]
    fn labels_are_valid_names_and_an_end_has_ends_at() {
        let c = channel("id = \"a\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9/\"\n");
        let am = Alertmanager::new(&c).unwrap();
        assert_eq!(am.peers, ["http://127.0.0.1:9"]);
        assert_eq!(
            Alertmanager::alerts_url(&am.peers[0]),
            "http://127.0.0.1:9/api/v2/alerts"
        );
        let mut inc = incident();
        inc.labels.insert("9 bad-name".into(), "v".into());
        inc.rules = vec!["disk-full".into(), "later-rule".into()];
        let t = templates();
        let firing = am.payload(&ctx(&inc, &c, NotifyEvent::Opened), &t).unwrap();
        let l = &firing[0]["labels"];
        assert_eq!(l["_9_bad_name"], "v");
        assert_eq!(l["incident_id"], "7");
        assert_eq!(l["incident_key"], "k");
        assert_eq!(l["instance"], "h");
        assert_eq!(l["reporter"], "h");
        assert_eq!(l["service"], "db");
        assert_eq!(l["severity"], "sev2");
        assert_eq!(l["rule"], "disk-full");
        assert_eq!(l["alertname"], "disk-full");
        assert_eq!(firing[0]["annotations"]["runbook"], "https://runbooks/disk");
        assert!(firing[0].get("endsAt").is_none());
        assert!(firing[0].get("generatorURL").is_none());
        let ended = am
            .payload(&ctx(&inc, &c, NotifyEvent::Resolved), &t)
            .unwrap();
        assert!(ended[0]["endsAt"].is_string());
        assert_eq!(ended[0]["labels"], firing[0]["labels"], "the same alert");
        // A probe of another host: the alert is about that host, reported by this one.
        inc.labels.insert("instance".into(), "web-9".into());
        let other = am.payload(&ctx(&inc, &c, NotifyEvent::Opened), &t).unwrap();
        assert_eq!(other[0]["labels"]["instance"], "web-9");
        assert_eq!(other[0]["labels"]["reporter"], "h");
    }

    #[test]
    fn every_peer_once_and_a_link_from_its_template() {
        let c = channel(
            r#"id = "am"
kind = "alertmanager"
url = "http://a:9093/"
urls = ["http://a:9093", "http://b:9093"]
link = "https://incidents.example.com/{{ incident.id }}?key={{ incident.key | urlencode }}"
"#,
        );
        let am = Alertmanager::new(&c).unwrap();
        assert_eq!(am.peers, ["http://a:9093", "http://b:9093"]);
        let inc = incident();
        let a = am
            .payload(&ctx(&inc, &c, NotifyEvent::Opened), &templates())
            .unwrap();
        assert_eq!(
            a[0]["generatorURL"],
            "https://incidents.example.com/7?key=k"
        );
        assert_eq!(a[0]["annotations"]["link"], a[0]["generatorURL"]);
    }

    #[test]
    fn a_worse_severity_ends_the_alert_under_the_old_one() {
        let c = channel("id = \"a\"\nkind = \"alertmanager\"\nurl = \"http://x\"\n");
        let am = Alertmanager::new(&c).unwrap();
        let mut inc = incident();
        inc.severity = crate::severity::Severity::Sev1;
        let entry: crate::incident::TimelineEntry = serde_json::from_value(json!({
            "incident_id": 7, "seq": 3, "ts": "2026-11-23T10:05:00Z", "type": "severity_changed",
            "actor": "system", "data": {"from": "sev2", "to": "sev1"}
        }))
        .unwrap();
        let mut cx = ctx(&inc, &c, NotifyEvent::Escalated);
        cx.entry = Some(&entry);
        let alerts = am.payload(&cx, &templates()).unwrap();
        assert_eq!(alerts.as_array().unwrap().len(), 2);
        assert_eq!(alerts[0]["labels"]["severity"], "sev1");
        assert!(alerts[0].get("endsAt").is_none());
        assert_eq!(alerts[1]["labels"]["severity"], "sev2");
        assert!(alerts[1]["endsAt"].is_string());
        assert_eq!(alerts[1]["labels"]["incident_id"], "7");
    }

    #[test]
    fn settings_that_do_not_fit_are_named() {
        let Err(p) = Alertmanager::new(&channel(
            "id = \"a\"\nkind = \"alertmanager\"\nlink = \"{{ unclosed\"\n",
        )) else {
            panic!("built without a peer")
        };
        let keys: Vec<_> = p.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["url", "link"], "{p:?}");
        let hook =
            channel("id = \"w\"\nkind = \"webhook\"\nurl = \"http://x\"\nurls = [\"http://y\"]\n");
        assert!(hook.peers().is_empty());
        assert!(
            hook.problems()
                .iter()
                .any(|(k, m)| *k == "urls" && m.contains("only an alertmanager channel")),
            "{:?}",
            hook.problems()
        );
        let bad = channel("id = \"a\"\nkind = \"alertmanager\"\nurls = [\"a:9093\"]\n");
        assert!(bad.problems().iter().any(|(k, _)| *k == "urls"));
    }
}
