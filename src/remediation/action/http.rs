//! `kind = "http"`: one request; templates may fill the URL's path and query (never its
//! scheme or host), headers, and the body (a JSON template or a table). `expect_status` lists
//! the answers that count as success (2xx when empty).

use std::collections::BTreeMap;
use std::time::Duration;

use super::template::{self, Field};
use super::{Action, Plan, Problems};
use super::{Outcome, render};
use crate::remediation::config::Body;
use crate::remediation::config::Operation;

pub struct Http {
    method: Option<String>,
    url: String,
    body: Option<Body>,
    headers: BTreeMap<String, String>,
    expect_status: Vec<u16>,
}

impl Http {
    pub fn new(op: &Operation) -> Result<Http, Problems> {
        let mut out = Problems::new();

        match &op.url {
            None => out.push(("url", "an http action needs `url`".into())),
            Some(u)
                if !(u.starts_with("http://") || u.starts_with("https://") || u.contains("{{")) =>
            {
                out.push(("url", format!("`{u}` is not an http:// or https:// URL")))
            }
            _ => {}
        }
        if let Some(m) = &op.method
            && reqwest::Method::from_bytes(m.to_uppercase().as_bytes()).is_err()
        {
            out.push(("method", format!("`{m}` is not an HTTP method")));
        }
        if let Some(s) = op.expect_status.iter().find(|s| !(100..=599).contains(*s)) {
            out.push(("expect_status", format!("{s} is not an HTTP status")));
        }
        if !out.is_empty() {
            return Err(out);
        }
        Ok(Http {
            method: op.method.clone(),
            url: op.url.clone().unwrap_or_default(),
            body: op.body.clone(),
            headers: op.headers.clone(),
            expect_status: op.expect_status.clone(),
        })
    }
}

impl Action for Http {
    fn plan(&self, ctx: &minijinja::Value) -> Result<Plan, String> {
        let url = template::render_url(&self.url, ctx)?;
        // A templated URL must still be an http(s) URL of the configured host: event data
        // can fill in a path or a query, never send the request elsewhere.
        let parsed = reqwest::Url::parse(&url).map_err(|e| format!("url `{url}`: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("url `{url}` is not http or https"));
        }
        let configured = self.url.as_str();
        if let Some(prefix) = configured.split("{{").next()
            && prefix.matches('/').count() < 3
            && configured.contains("{{")
        {
            return Err(format!(
                "url `{configured}`: templates may fill the path or query, not the scheme or host"
            ));
        }
        let body = match &self.body {
            None => None,
            Some(Body::Template(t)) => Some(template::render(t, ctx, "body", Field::Json)?),
            Some(Body::Table(t)) => Some(template::render_table(t, ctx)?),
        };
        let headers = self
            .headers
            .iter()
            .map(|(k, v)| Ok((k.clone(), render(v, ctx, &format!("headers.{k}"))?)))
            .collect::<Result<_, String>>()?;
        Ok(Plan::Http {
            method: self
                .method
                .clone()
                .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into())
                .to_uppercase(),
            url,
            headers,
            body,
            expect_status: self.expect_status.clone(),
        })
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn http_request(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&str>,
    expect_status: &[u16],
    timeout: Duration,
) -> Outcome {
    let fail = Outcome::failed;
    let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return fail(format!("`{method}` is not an HTTP method"));
    };
    let mut req = client.request(m, url).timeout(timeout);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            // 4096 characters are kept: no more than four bytes each are read.
            let text =
                String::from_utf8_lossy(&crate::capped::body(resp, 4 * 4096).await).into_owned();
            let ok = if expect_status.is_empty() {
                (200..300).contains(&status)
            } else {
                expect_status.contains(&status)
            };
            Outcome {
                ok,
                http_status: Some(status),
                stdout: text.chars().take(4096).collect(),
                error: (!ok).then(|| format!("{method} {url} answered {status}")),
                ..Outcome::default()
            }
        }
        Err(e) => fail(format!("{method} {url} failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ctx, op};
    use super::*;

    #[test]
    fn templates_fill_the_path_and_the_body_never_the_host() {
        let h = Http::new(&op(r#"kind = "http"
url = "http://127.0.0.1:9/ban/{{ labels.ip }}"
body = '{"ip": {{ labels.ip }}}'"#))
        .unwrap();
        let Plan::Http {
            method, url, body, ..
        } = h.plan(&ctx()).unwrap()
        else {
            panic!()
        };
        assert_eq!(method, "POST");
        assert_eq!(url, "http://127.0.0.1:9/ban/203.0.113.9");
        assert_eq!(body.as_deref(), Some(r#"{"ip": "203.0.113.9"}"#));
        let to_elsewhere = Http::new(&op(r#"kind = "http"
url = "http://{{ labels.ip }}/x""#))
        .unwrap();
        assert!(
            to_elsewhere
                .plan(&ctx())
                .unwrap_err()
                .contains("not the scheme or host")
        );
        assert!(Http::new(&op("kind = \"http\"\nurl = \"ftp://x\"")).is_err());
    }
}
