//! `kind = "pagerduty"`: Events API v2. One alert per incident (`dedup_key` stable across a
//! fleet): trigger at the opening and later news, acknowledge, resolve at the end.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ChannelConfig, Context, DeliveryError, JsonPost, Problems, Templates};
use super::{done, need};
use crate::incident::Severity;
use crate::notification::NotifyEvent;

pub struct PagerDuty {
    url: String,
    routing_key: String,
    timeout: Duration,
}

impl PagerDuty {
    pub fn new(c: &ChannelConfig) -> Result<PagerDuty, Problems> {
        let mut p = Problems::new();
        let key = need(c, "routing_key", &c.routing_key, &mut p);
        done(
            key.map(|k| PagerDuty {
                url: c
                    .url
                    .clone()
                    .unwrap_or_else(|| "https://events.pagerduty.com/v2/enqueue".into()),
                routing_key: k.0,
                timeout: c.timeout,
            }),
            p,
        )
    }
}

fn severity(s: Severity) -> &'static str {
    match s {
        Severity::Sev1 => "critical",
        Severity::Sev2 => "error",
        Severity::Sev3 => "warning",
        Severity::Sev4 => "info",
    }
}

impl JsonPost for PagerDuty {
    fn url(&self) -> &str {
        &self.url
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn payload(&self, ctx: &Context<'_>, t: &Templates) -> Result<Value, DeliveryError> {
        let action = if ctx.event.ends() {
            "resolve"
        } else if ctx.event == NotifyEvent::Acknowledged {
            "acknowledge"
        } else {
            "trigger"
        };
        let mut body = json!({
            "routing_key": self.routing_key,
            "event_action": action,
            "dedup_key": ctx.dedup_key(),
        });
        if action == "trigger" {
            body["payload"] = json!({
                "summary": ctx.text(t)?,
                "source": ctx.incident.host.clone().unwrap_or_else(|| ctx.host.to_owned()),
                "severity": severity(ctx.incident.severity),
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
        Ok(body)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;

    #[test]
    fn trigger_acknowledge_resolve_on_one_dedup_key() {
        let c = channel("id = \"p\"\nkind = \"pagerduty\"\nrouting_key = \"R\"\n");
        let pd = PagerDuty::new(&c).unwrap();
        let inc = incident();
        let t = templates();
        let open = pd.payload(&ctx(&inc, &c, NotifyEvent::Opened), &t).unwrap();
        assert_eq!(open["event_action"], "trigger");
        assert_eq!(open["payload"]["severity"], "error");
        assert_eq!(open["dedup_key"], "incidentd/h/7");
        let ack = pd
            .payload(&ctx(&inc, &c, NotifyEvent::Acknowledged), &t)
            .unwrap();
        assert_eq!(ack["event_action"], "acknowledge");
        assert!(ack.get("payload").is_none());
        let end = pd
            .payload(&ctx(&inc, &c, NotifyEvent::Resolved), &t)
            .unwrap();
        assert_eq!(end["event_action"], "resolve");
        assert_eq!(end["dedup_key"], open["dedup_key"]);
    }
}
