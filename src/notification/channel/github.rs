//! `kind = "github"`: one issue per incident in `repo` (labels `incidentd` and the
//! severity), a comment per later notification, closed as completed at the end.

use std::time::Duration;

use serde_json::json;

use super::ticket::{TicketApi, ticket};
use super::{Channel, ChannelConfig, Context, Delivered, DeliveryError, Problems, Templates};
use super::{done, need};

pub struct GitHub {
    base: String,
    repo: String,
    token: String,
    timeout: Duration,
}

impl GitHub {
    pub fn new(c: &ChannelConfig) -> Result<GitHub, Problems> {
        let mut p = Problems::new();
        let repo = need(c, "repo", &c.repo, &mut p);
        let token = need(c, "token", &c.token, &mut p);
        let base = c
            .url
            .clone()
            .unwrap_or_else(|| "https://api.github.com".into());
        done(
            repo.zip(token).map(|(repo, token)| GitHub {
                base: base.trim_end_matches('/').to_owned(),
                repo,
                token: token.0,
                timeout: c.timeout,
            }),
            p,
        )
    }
}

#[async_trait::async_trait]
impl Channel for GitHub {
    async fn deliver(
        &self,
        ctx: &Context<'_>,
        t: &Templates,
        http: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        let (base, repo) = (&self.base, &self.repo);
        let body = ctx.body(t)?;
        ticket(
            ctx,
            http,
            TicketApi {
                service: "GitHub",
                auth: &|r| {
                    r.timeout(self.timeout)
                        .bearer_auth(&self.token)
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
}
