//! `kind = "webhook"`: a POST of the version-1 JSON document (or the channel's template)
//! to `url`, with optional `headers`.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{
    Channel, ChannelConfig, Context, Delivered, DeliveryError, GroupContext, Problems, Templates,
};
use super::{done, need, send};

pub struct Webhook {
    url: String,
    headers: BTreeMap<String, String>,
    templated: bool,
    timeout: Duration,
}

impl Webhook {
    pub fn new(c: &ChannelConfig) -> Result<Webhook, Problems> {
        let mut p = Problems::new();
        let url = need(c, "url", &c.url, &mut p);
        done(
            url.map(|url| Webhook {
                url,
                headers: c
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect(),
                templated: c.template.is_some(),
                timeout: c.timeout,
            }),
            p,
        )
    }

    /// The body and its content type.
    fn payload(&self, ctx: &Context<'_>, t: &Templates) -> Result<String, DeliveryError> {
        Ok(if self.templated {
            ctx.body(t)?
        } else {
            ctx.document().to_string()
        })
    }
}

#[async_trait::async_trait]
impl Channel for Webhook {
    async fn deliver(
        &self,
        ctx: &Context<'_>,
        t: &Templates,
        http: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        self.post(http, self.payload(ctx, t)?).await
    }

    /// The group's JSON document (the channel's template is for single incidents).
    async fn deliver_group(
        &self,
        g: &GroupContext<'_>,
        _: &Templates,
        http: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        self.post(http, g.document().to_string()).await
    }
}

impl Webhook {
    async fn post(&self, http: &reqwest::Client, body: String) -> Result<Delivered, DeliveryError> {
        let mut req = http.post(&self.url).timeout(self.timeout).body(body);
        // The user's Content-Type wins; one header, never two.
        if !self
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("content-type"))
        {
            req = req.header("content-type", "application/json");
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        send(req).await.map(|_| Delivered::default())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::notification::NotifyEvent;

    #[test]
    fn the_document_without_a_template() {
        let c = channel("id = \"w\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:9/x\"\n");
        let w = Webhook::new(&c).unwrap();
        let inc = incident();
        let doc: serde_json::Value = serde_json::from_str(
            &w.payload(&ctx(&inc, &c, NotifyEvent::Opened), &templates())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(doc["version"], 1);
        assert_eq!(doc["event"], "opened");
        assert_eq!(doc["incident"]["id"], 7);
    }
}
