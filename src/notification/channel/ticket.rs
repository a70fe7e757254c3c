//! One ticket per incident and channel (GitHub, GitLab, Jira): made at the opening,
//! commented on later, closed at the end. The ticket already made is found in the incident's
//! `external_refs`; each service's file says how it is spoken to.

use serde_json::Value;

use super::{ChannelConfig, Context, Delivered, DeliveryError, Problems, done, need, send};

/// A ticket's id and link, read from the service's answer to its creation.
pub(super) type Made = Option<(String, Option<String>)>;
/// A request: method, URL, JSON body.
pub(super) type Call = (reqwest::Method, String, Value);

/// How one ticket service is spoken to: where an issue is made and how its id is read from
/// the answer, where a comment goes, how an issue is closed.
pub(super) struct TicketApi<'a> {
    pub service: &'static str,
    pub auth: &'a (dyn Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder + Sync),
    pub create: (String, Value),
    /// (id, URL) from the answer to `create`.
    pub made: fn(&Value) -> Made,
    pub comment: &'a (dyn Fn(&str) -> (String, Value) + Sync),
    pub close: &'a (dyn Fn(&str) -> Option<Call> + Sync),
}

/// One ticket per incident and channel: made at the opening, commented on later, closed at
/// the end. The ticket already made is found in the incident's `external_refs`.
pub(super) async fn ticket(
    ctx: &Context<'_>,
    http: &reqwest::Client,
    api: TicketApi<'_>,
) -> Result<Delivered, DeliveryError> {
    let c = ctx.channel;
    match ctx.incident.external_refs.get(&c.id) {
        // Ended before any ticket was made: nothing to close.
        None if ctx.event.ends() => Ok(Delivered::default()),
        None => {
            let (url, body) = api.create;
            let v = send((api.auth)(http.post(url)).json(&body)).await?;
            let (id, link) = (api.made)(&v).ok_or_else(|| {
                DeliveryError::Transient(format!(
                    "{} answered without an issue id: {v}",
                    api.service
                ))
            })?;
            Ok(Delivered {
                ticket: Some((c.id.clone(), id, link)),
            })
        }
        Some(id) => {
            let (url, body) = (api.comment)(id);
            send((api.auth)(http.post(url)).json(&body)).await?;
            if ctx.event.ends()
                && let Some((method, url, body)) = (api.close)(id)
            {
                send((api.auth)(http.request(method, url)).json(&body)).await?;
            }
            Ok(Delivered::default())
        }
    }
}

/// The settings a self-hosted tracker (GitLab, Jira) needs: its base URL without a trailing
/// `/`, the project and the token — or every one that is missing.
pub(super) fn tracker(c: &ChannelConfig) -> Result<(String, String, String), Problems> {
    let mut p = Problems::new();
    let url = need(c, "url", &c.url, &mut p);
    let project = need(c, "project", &c.project, &mut p);
    let token = need(c, "token", &c.token, &mut p);
    let value = url
        .zip(project)
        .zip(token)
        .map(|((url, project), token)| (url.trim_end_matches('/').to_owned(), project, token.0));
    done(value, p)
}
