//! `kind = "gitlab"`: one issue per incident in `project` (an id or `group/name`), a note
//! per later notification, closed at the end.

use std::time::Duration;

use serde_json::json;

use super::ticket::{TicketApi, ticket};
use super::{Channel, ChannelConfig, Context, Delivered, DeliveryError, Problems, Templates};
use super::{done, need};

pub struct GitLab {
    issues: String,
    token: String,
    timeout: Duration,
}

impl GitLab {
    pub fn new(c: &ChannelConfig) -> Result<GitLab, Problems> {
        let mut p = Problems::new();
        let url = need(c, "url", &c.url, &mut p);
        let project = need(c, "project", &c.project, &mut p);
        let token = need(c, "token", &c.token, &mut p);
        let value = url
            .zip(project)
            .zip(token)
            .map(|((url, project), token)| GitLab {
                issues: format!(
                    "{}/api/v4/projects/{}/issues",
                    url.trim_end_matches('/'),
                    project.replace('/', "%2F")
                ),
                token: token.0,
                timeout: c.timeout,
            });
        done(value, p)
    }
}

#[async_trait::async_trait]
impl Channel for GitLab {
    async fn deliver(
        &self,
        ctx: &Context<'_>,
        t: &Templates,
        http: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        let issues = &self.issues;
        let body = ctx.body(t)?;
        ticket(
            ctx,
            http,
            TicketApi {
                service: "GitLab",
                auth: &|r| r.timeout(self.timeout).header("PRIVATE-TOKEN", &self.token),
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
}
