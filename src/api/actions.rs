//! `/v1/actions` (runs, approvals), `/v1/incidents/{id}/actions` (what could run) and
//! `/v1/incidents/{id}/actions/{action}/{dry-run,run}`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::routes::{IdPath, parse_json, parse_number};
use super::{ApiError, ApiState, Peer};
use crate::remediation::{RemediationError, RunState};

type S = State<Arc<ApiState>>;
type ApiResult<T> = Result<T, ApiError>;

impl From<RemediationError> for ApiError {
    fn from(e: RemediationError) -> Self {
        let message = e.to_string();
        match e {
            RemediationError::RunNotFound { .. }
            | RemediationError::ActionNotFound { .. }
            | RemediationError::IncidentNotFound { .. } => ApiError::not_found(message),
            RemediationError::NotPending { .. } => {
                ApiError::new(StatusCode::CONFLICT, "not_pending", message)
            }
            RemediationError::Template(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "template_failed", message)
            }
            RemediationError::Store(e) => ApiError::from(e),
            RemediationError::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
        }
    }
}

/// `GET /v1/actions?state=pending&incident=ID`: runs, newest first.
pub(super) async fn list(
    State(st): S,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(params) = params?;
    let mut states: Vec<RunState> = Vec::new();
    let mut incident = None;
    for (k, v) in &params {
        match k.as_str() {
            "state" => {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    states.push(s.parse().map_err(|e: String| {
                        ApiError::bad_request(format!("invalid `state`: {e}"))
                    })?);
                }
            }
            "incident" => incident = Some(parse_number(v, "an incident id")?),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}` (expected state, incident)"
                )));
            }
        }
    }
    let mut runs = st.store.action_runs()?;
    runs.retain(|r| {
        (states.is_empty() || states.contains(&r.state))
            && incident.is_none_or(|i| r.incident_id == i)
    });
    runs.reverse();
    Ok(Json(
        json!({ "actions": runs, "preflight": st.telemetry.preflight_json() }),
    ))
}

pub(super) async fn show(
    State(st): S,
    path: Result<Path<IdPath>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let id = parse_number(&path?.0.id, "an action run id")?;
    st.store
        .action_run(id)?
        .map(|r| Json(json!(r)))
        .ok_or_else(|| ApiError::not_found(format!("action run {id} not found")))
}

#[derive(Deserialize)]
pub(super) struct DecisionPath {
    id: String,
    decision: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    #[serde(default)]
    note: Option<String>,
}

/// `POST /v1/actions/{id}/{approve,deny}` (admins). Approving answers once the run is over.
pub(super) async fn decide(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<DecisionPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Value>> {
    let Path(p) = path?;
    let id = parse_number(&p.id, "an action run id")?;
    let body = body?;
    let note: NoteBody = if body.is_empty() {
        NoteBody::default()
    } else {
        parse_json(&body)?
    };
    let run = match p.decision.as_str() {
        "approve" => st.remediation.approve(id, peer.user).await?,
        "deny" => st.remediation.deny(id, peer.user, note.note).await?,
        other => {
            return Err(ApiError::not_found(format!(
                "no decision `{other}` (expected approve or deny)"
            )));
        }
    };
    Ok(Json(json!(run)))
}

/// `GET /v1/incidents/{id}/actions`: every configured action with its policy and plan for
/// this incident; nothing runs.
pub(super) async fn available(
    State(st): S,
    path: Result<Path<IdOnly>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(p) = path?;
    let id = parse_number(&p.id, "an incident id")?;
    Ok(Json(st.remediation.available(id).await?))
}

#[derive(Deserialize)]
pub(super) struct IdOnly {
    id: String,
}

#[derive(Deserialize)]
pub(super) struct RunPath {
    id: String,
    action: String,
    what: String,
}

/// `POST /v1/incidents/{id}/actions/{action}/dry-run` (what would run, no side effect) and
/// `/run` (admins; answered once the run is over).
pub(super) async fn incident_action(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<RunPath>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let Path(p) = path?;
    let id = parse_number(&p.id, "an incident id")?;
    match p.what.as_str() {
        "dry-run" => Ok(Json(st.remediation.dry_run(id, p.action).await?)),
        "run" => Ok(Json(json!(
            st.remediation.run(id, p.action, peer.user).await?
        ))),
        other => Err(ApiError::not_found(format!(
            "no `{other}` for actions (expected dry-run or run)"
        ))),
    }
}
