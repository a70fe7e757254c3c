//! `kind = "alertmanager"`: the incident as one alert on Alertmanager's v2 API
//! (`POST {url}/api/v2/alerts`), its labels made valid label names, `endsAt` once it ends.
//! A firing alert is sent again every `resend_interval` (the notifier schedules that).

use std::time::Duration;

use serde_json::{Value, json};

use super::{ChannelConfig, Context, DeliveryError, JsonPost, Problems, Templates};
use super::{done, need};

pub struct Alertmanager {
    alerts_url: String,
    timeout: Duration,
}

impl Alertmanager {
    pub fn new(c: &ChannelConfig) -> Result<Alertmanager, Problems> {
        let mut p = Problems::new();
        let url = need(c, "url", &c.url, &mut p);
        done(
            url.map(|u| Alertmanager {
                alerts_url: format!("{}/api/v2/alerts", u.trim_end_matches('/')),
                timeout: c.timeout,
            }),
            p,
        )
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

impl JsonPost for Alertmanager {
    fn url(&self) -> &str {
        &self.alerts_url
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn payload(&self, ctx: &Context<'_>, t: &Templates) -> Result<Value, DeliveryError> {
        let inc = ctx.incident;
        let mut labels = serde_json::Map::new();
        for (k, v) in &inc.labels {
            labels.insert(label_name(k), json!(v));
        }
        let alertname = inc
            .rules
            .first()
            .cloned()
            .unwrap_or_else(|| "incidentd".into());
        labels.insert("alertname".into(), json!(alertname));
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
        Ok(json!([alert]))
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
        assert_eq!(am.alerts_url, "http://127.0.0.1:9/api/v2/alerts");
        let mut inc = incident();
        inc.labels.insert("9 bad-name".into(), "v".into());
        let t = templates();
        let firing = am.payload(&ctx(&inc, &c, NotifyEvent::Opened), &t).unwrap();
        assert_eq!(firing[0]["labels"]["_9_bad_name"], "v");
        assert_eq!(firing[0]["labels"]["incident_id"], "7");
        assert!(firing[0].get("endsAt").is_none());
        let ended = am
            .payload(&ctx(&inc, &c, NotifyEvent::Resolved), &t)
            .unwrap();
        assert!(ended[0]["endsAt"].is_string());
    }
}
