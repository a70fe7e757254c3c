//! `kind = "slack"`: an incoming webhook's `{"text": …}`, the one-line text or the channel's
//! template.

use std::time::Duration;

use serde_json::{Value, json};

use super::{ChannelConfig, Context, DeliveryError, GroupContext, JsonPost, Problems, Templates};
use super::{done, need};

pub struct Slack {
    url: String,
    templated: bool,
    timeout: Duration,
}

impl Slack {
    pub fn new(c: &ChannelConfig) -> Result<Slack, Problems> {
        let mut p = Problems::new();
        let url = need(c, "url", &c.url, &mut p);
        done(
            url.map(|url| Slack {
                url,
                templated: c.template.is_some(),
                timeout: c.timeout,
            }),
            p,
        )
    }
}

impl JsonPost for Slack {
    fn url(&self) -> &str {
        &self.url
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn payload(&self, ctx: &Context<'_>, t: &Templates) -> Result<Value, DeliveryError> {
        let text = if self.templated {
            ctx.body(t)?
        } else {
            ctx.text(t)?
        };
        Ok(json!({ "text": text }))
    }

    fn group_payload(
        &self,
        g: &GroupContext<'_>,
        t: &Templates,
    ) -> Option<Result<Value, DeliveryError>> {
        Some(g.lines(t).map(|lines| {
            let list: Vec<String> = lines.iter().map(|l| format!("• {l}")).collect();
            json!({ "text": format!("*{}*\n{}", g.title(), list.join("\n")) })
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::notification::NotifyEvent;

    #[test]
    fn one_line_of_text() {
        let c = channel("id = \"s\"\nkind = \"slack\"\nurl = \"http://127.0.0.1:9/x\"\n");
        let inc = incident();
        let v = Slack::new(&c)
            .unwrap()
            .payload(&ctx(&inc, &c, NotifyEvent::Opened), &templates())
            .unwrap();
        assert_eq!(v, json!({"text": "[sev2] opened: #7 disk \"full\" (db)"}));
    }
}
