//! The web board: a page and its script, embedded in the binary, served with the read API on
//! an optional loopback TCP listener (`[control] web_listen`). Reads need nothing; the board's
//! buttons (acknowledge, mitigate, resolve) need `[control] web_token` as a bearer token —
//! peer credentials do not cross TCP — and are recorded with the actor `web`.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use super::{ApiError, ApiState, routes};
use crate::incident::{Command, Incident, Transition};

const PAGE: &str = include_str!("web/board.html");
const SCRIPT: &str = include_str!("web/board.js");
const STYLE: &str = include_str!("web/board.css");

struct Web {
    api: Arc<ApiState>,
    token: Option<String>,
}

/// Serves the board on `addr` until `cancel`.
pub async fn serve(
    addr: SocketAddr,
    api: Arc<ApiState>,
    token: Option<String>,
    cancel: CancellationToken,
) {
    let listener = match tokio::net::TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(address = %addr, error = %e, "cannot listen for the web board");
            return;
        }
    };
    tracing::info!(address = %addr, writable = token.is_some(), "serving the web board");
    let web = Arc::new(Web {
        api: api.clone(),
        token: token.filter(|t| !t.is_empty()),
    });
    let reads = axum::Router::new()
        .route("/v1/status", get(routes::status))
        .route("/v1/incidents", get(routes::list_incidents))
        .route("/v1/incidents/{id}", get(routes::show_incident))
        .route("/v1/incidents/{id}/timeline", get(routes::timeline))
        .route("/v1/incidents/{id}/postmortem", get(super::postmortem::get))
        .route("/v1/stats", get(routes::stats))
        .route("/v1/stream", get(super::stream::handler))
        .route("/v1/actions", get(super::actions::list));
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
        .route("/v1/incidents/{id}/{transition}", post(transition))
        .with_state(web)
        .merge(reads)
        .fallback(|| async { ApiError::not_found("no such page") })
        .layer(axum::extract::DefaultBodyLimit::max(64 << 10))
        .layer(axum::middleware::from_fn(local_host_only));
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(cancel.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "web board listener failed");
    }
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

#[derive(Deserialize)]
struct TransitionPath {
    id: String,
    transition: String,
}

#[derive(Deserialize, Default)]
struct NoteBody {
    #[serde(default)]
    note: Option<String>,
}

/// Equal in time whatever the input (no early exit on the first differing byte).
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn transition(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    path: Result<Path<TransitionPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Incident>, ApiError> {
    let Some(token) = &web.token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this board is read-only: set [control] web_token to allow changes",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(given.as_bytes(), token.as_bytes()) {
        tracing::warn!("web board change refused: missing or wrong token");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "a change needs the board's token (Authorization: Bearer …)",
        ));
    }
    let Path(p) = path?;
    let id = routes::parse_id(&p.id)?;
    let transition = match p.transition.as_str() {
        "ack" => Transition::Ack,
        "mitigate" => Transition::Mitigate,
        "resolve" => Transition::Resolve,
        other => {
            return Err(ApiError::not_found(format!(
                "the board does `ack`, `mitigate` and `resolve`, not `{other}`"
            )));
        }
    };
    let body = body?;
    let note: NoteBody = if body.is_empty() {
        NoteBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?
    };
    let inc = web
        .api
        .incidents
        .command(Command::Transition {
            id,
            transition,
            note: note.note.filter(|n| !n.is_empty()),
            actor: "web".into(),
        })
        .await?;
    Ok(Json(inc))
}
