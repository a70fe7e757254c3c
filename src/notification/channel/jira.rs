//! `kind = "jira"`: one issue per incident in `project` (Jira Cloud REST v3, the body in
//! Atlassian Document Format, priority from the severity), a comment per later
//! notification, and the `close_transition` at the end when one is set.

use std::time::Duration;

use serde_json::{Value, json};

use super::ticket::{TicketApi, ticket, tracker};
use super::{Channel, ChannelConfig, Context, Delivered, DeliveryError, Problems, Templates};
use crate::incident::Severity;

pub struct Jira {
    base: String,
    project: String,
    token: String,
    username: Option<String>,
    issue_type: String,
    close_transition: Option<String>,
    timeout: Duration,
}

impl Jira {
    pub fn new(c: &ChannelConfig) -> Result<Jira, Problems> {
        let (base, project, token) = tracker(c)?;
        Ok(Jira {
            base,
            project,
            token,
            username: c.username.clone(),
            issue_type: c.issue_type.clone().unwrap_or_else(|| "Task".into()),
            close_transition: c.close_transition.clone(),
            timeout: c.timeout,
        })
    }

    fn issue(&self, ctx: &Context<'_>, t: &Templates) -> Result<Value, DeliveryError> {
        let priority = match ctx.incident.severity {
            Severity::Sev1 => "Highest",
            Severity::Sev2 => "High",
            Severity::Sev3 => "Medium",
            Severity::Sev4 => "Low",
        };
        Ok(json!({"fields": {
            "project": {"key": self.project},
            "summary": ctx.text(t)?.chars().take(250).collect::<String>(),
            "issuetype": {"name": self.issue_type},
            "priority": {"name": priority},
            "labels": ["incidentd", ctx.incident.severity.as_str()],
            "description": adf(&ctx.body(t)?),
        }}))
    }
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

#[async_trait::async_trait]
impl Channel for Jira {
    async fn deliver(
        &self,
        ctx: &Context<'_>,
        t: &Templates,
        http: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        let base = &self.base;
        let body = adf(&ctx.body(t)?);
        let mut made = ticket(
            ctx,
            http,
            TicketApi {
                service: "Jira",
                auth: &|r| {
                    let r = r.timeout(self.timeout);
                    match &self.username {
                        Some(u) => r.basic_auth(u, Some(&self.token)),
                        None => r.bearer_auth(&self.token),
                    }
                },
                create: (format!("{base}/rest/api/3/issue"), self.issue(ctx, t)?),
                made: |v| Some((v["key"].as_str()?.to_owned(), None)),
                comment: &|key| {
                    (
                        format!("{base}/rest/api/3/issue/{key}/comment"),
                        json!({ "body": body }),
                    )
                },
                close: &|key| {
                    self.close_transition.as_ref().map(|tr| {
                        (
                            reqwest::Method::POST,
                            format!("{base}/rest/api/3/issue/{key}/transitions"),
                            json!({"transition": {"id": tr}}),
                        )
                    })
                },
            },
        )
        .await?;
        // Jira's answer has no browsable URL; it is the base and the key.
        if let Some((_, key, url)) = &mut made.ticket {
            *url = Some(format!("{base}/browse/{key}"));
        }
        Ok(made)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::notification::NotifyEvent;

    #[test]
    fn adf_paragraphs_and_breaks() {
        let d = adf("a\nb\n\nc");
        assert_eq!(d["content"].as_array().unwrap().len(), 2);
        assert_eq!(d["content"][0]["content"][1]["type"], "hardBreak");
    }

    #[test]
    fn an_issue_with_priority_from_the_severity() {
        let c = channel(
            "id = \"j\"\nkind = \"jira\"\nurl = \"http://127.0.0.1:9\"\nproject = \"OPS\"\ntoken = \"t\"\n",
        );
        let j = Jira::new(&c).unwrap();
        let inc = incident();
        let v = j
            .issue(&ctx(&inc, &c, NotifyEvent::Opened), &templates())
            .unwrap();
        assert_eq!(v["fields"]["priority"]["name"], "High");
        assert_eq!(v["fields"]["issuetype"]["name"], "Task");
        assert_eq!(v["fields"]["description"]["type"], "doc");
    }
}
