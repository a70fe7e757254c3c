//! The web board: a page and its script, embedded in the binary, served with the read API on
//! an optional loopback TCP listener (`[control] web_listen`). Reads need nothing. Peer
//! credentials do not cross TCP, so changes need a bearer token: `[control] web_token` for a
//! responder's (acknowledge, mitigate, resolve, move the stage; actor `web`), and
//! `[control] web_admin_token` for an admin's (approve or deny a pending action as well; actor
//! `web-admin`). The handlers of changes are in `web/changes.rs`.

mod changes;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use tokio_util::sync::CancellationToken;

use super::{ApiError, ApiState, routes};

const PAGE: &str = include_str!("web/board.html");
const SCRIPT: &str = include_str!("web/board.js");
const STYLE: &str = include_str!("web/board.css");

/// The board's two tokens (an empty one is no token).
#[derive(Clone, Default)]
pub struct WebTokens {
    /// A responder's changes.
    pub responder: Option<String>,
    /// An admin's changes (a responder's as well).
    pub admin: Option<String>,
}

struct Web {
    api: Arc<ApiState>,
    tokens: WebTokens,
}

/// What a change asks of its token.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Need {
    Responder,
    Admin,
}

impl Web {
    /// The actor a change is recorded with, if the request's bearer token allows it.
    fn actor(&self, headers: &HeaderMap, need: Need) -> Result<&'static str, ApiError> {
        if self.tokens.responder.is_none() && self.tokens.admin.is_none() {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this board is read-only: set [control] web_token to allow changes",
            ));
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let is = |t: &Option<String>| {
            t.as_ref()
                .is_some_and(|t| same(given.as_bytes(), t.as_bytes()))
        };
        // Both compared, whichever matches, so the time says nothing of which one did.
        let (admin, responder) = (is(&self.tokens.admin), is(&self.tokens.responder));
        match (admin, responder, need) {
            (true, _, _) => Ok("web-admin"),
            (false, true, Need::Responder) => Ok("web"),
            (false, true, Need::Admin) => {
                tracing::warn!(
                    "web board change refused: an admin's change with a responder's token"
                );
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "approving or denying an action needs the board's admin token ([control] web_admin_token)",
                ))
            }
            (false, false, _) => {
                tracing::warn!("web board change refused: missing or wrong token");
                Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    "a change needs the board's token (Authorization: Bearer …)",
                ))
            }
        }
    }
}

/// Serves the board on `addr` until `cancel`, admitting connections by their user under
/// `limits` (see [`super::serve_tcp`]).
pub async fn serve(
    (addr, limits): (SocketAddr, super::Limits),
    api: Arc<ApiState>,
    tokens: WebTokens,
    cancel: CancellationToken,
) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(address = %addr, error = %e, "cannot listen for the web board");
            return;
        }
    };
    let tokens = WebTokens {
        responder: tokens.responder.filter(|t| !t.is_empty()),
        admin: tokens.admin.filter(|t| !t.is_empty()),
    };
    tracing::info!(address = %addr, writable = tokens.responder.is_some(), approvals = tokens.admin.is_some(), "serving the web board");
    let roles = api.roles.clone();
    let web = Arc::new(Web {
        api: api.clone(),
        tokens,
    });
    let reads = axum::Router::new()
        .route("/v1/status", get(routes::status))
        .route("/v1/incidents", get(routes::list_incidents))
        .route("/v1/incidents/{id}", get(routes::show_incident))
        .route("/v1/incidents/{id}/timeline", get(routes::timeline))
        .route("/v1/incidents/{id}/postmortem", get(super::postmortem::get))
        .route("/v1/stats", get(routes::stats))
        .route("/v1/stream", get(super::stream::handler))
        .route("/v1/actions", get(super::actions::list))
        .route("/v1/oncall", get(super::oncall::get));
    // Reads get the control API's time limit.
    let reads = routes::with_timeout(reads, api.request_timeout).with_state(api);
    let app = axum::Router::new()
        .route(
            "/",
            get(|| async { page(PAGE, "text/html; charset=utf-8") }),
        )
        .route(
            "/board.js",
            get(|| async { page(SCRIPT, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/board.css",
            get(|| async { page(STYLE, "text/css; charset=utf-8") }),
        )
        .route("/v1/incidents/{id}/stage", post(changes::stage))
        .route("/v1/incidents/{id}/{transition}", post(changes::transition))
        .route("/v1/actions/{id}/{decision}", post(changes::decide))
        .with_state(web)
        .merge(reads)
        .fallback(|| async { ApiError::not_found("no such page") })
        .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
        .layer(axum::middleware::from_fn(local_host_only));
    super::serve_tcp(listener, (&limits, roles), app, cancel, "web board").await;
}

/// Refuses requests whose `Host` is not a loopback name or address: a page elsewhere that
/// points its own domain name at 127.0.0.1 (DNS rebinding) cannot read the board.
async fn local_host_only(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    // Strip the port (and the brackets of an IPv6 literal).
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.chars().all(|c| c.is_ascii_digit()) => n,
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let local = name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if !local {
        tracing::warn!(host = %host, "web board request with a foreign Host refused");
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "the board answers only to localhost, 127.0.0.1 or [::1]",
        )
        .into_response();
    }
    next.run(req).await
}

fn page(body: &'static str, kind: &'static str) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, kind),
            // Everything is same-origin; nothing is loaded from elsewhere.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; img-src 'self' data:",
            ),
        ],
        body,
    )
}

/// Equal in time whatever the input (no early exit on the first differing byte).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
