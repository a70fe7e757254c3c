//! `kind = "gitlab"`: one issue per incident in `project` (an id or `group/name`), a note
//! per later notification, closed at the end.

use std::time::Duration;

use serde_json::json;

use super::ticket::{TicketApi, ticket, tracker};
use super::{Channel, ChannelConfig, Context, Delivered, DeliveryError, Problems, Templates};

pub struct GitLab {
    issues: String,
    token: String,
    timeout: Duration,
}

impl GitLab {
    pub fn new(c: &ChannelConfig) -> Result<GitLab, Problems> {
        let (base, project, token) = tracker(c)?;
        Ok(GitLab {
            issues: format!(
                "{base}/api/v4/projects/{}/issues",
                project.replace('/', "%2F")
            ),
            token,
            timeout: c.timeout,
        })
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

#[cfg(test)]
mod tests {
    use super::super::tests::channel;
    use super::*;

    #[test]
    fn the_project_path_is_encoded_and_missing_settings_are_named() {
        let g = GitLab::new(&channel(
            "id = \"g\"\nkind = \"gitlab\"\nurl = \"http://127.0.0.1:9/\"\nproject = \"ops/infra\"\ntoken = \"t\"\n",
        ))
        .unwrap();
        assert_eq!(
            g.issues,
            "http://127.0.0.1:9/api/v4/projects/ops%2Finfra/issues"
        );
        let Err(p) = GitLab::new(&channel("id = \"g\"\nkind = \"gitlab\"\n")) else {
            panic!("built without settings")
        };
        assert_eq!(
            p.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            ["url", "project", "token"]
        );
    }
}
