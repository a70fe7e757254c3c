//! `/v1/silences`: list (by state), show, create (admins), and expire (admins).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::routes::{IdPath, parse_json, parse_number};
use super::{ApiError, ApiState, Peer};
use crate::clock::Timestamp;
use crate::incident::{NewSilence, Silence, SilenceCommand, SilenceState};

type S = State<Arc<ApiState>>;
type ApiResult<T> = Result<T, ApiError>;

/// A silence as the API shows it: the record and its state now.
fn silence_json(s: &Silence, now: Timestamp) -> Value {
    let mut v = json!(s);
    v["state"] = json!(s.state(now));
    v
}

/// `GET /v1/silences?state=active,pending`: newest first; all states by default.
pub(super) async fn list(
    State(st): S,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(params) = params?;
    let mut states: Vec<SilenceState> = Vec::new();
    for (k, v) in &params {
        match k.as_str() {
            "state" => {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    states.push(s.parse().map_err(|e: String| {
                        ApiError::bad_request(format!("invalid `state`: {e}"))
                    })?);
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}` (expected state)"
                )));
            }
        }
    }
    let now = st.clock.now();
    let mut silences = st.store.silences()?;
    silences.retain(|s| states.is_empty() || states.contains(&s.state(now)));
    silences.reverse();
    let list: Vec<Value> = silences.iter().map(|s| silence_json(s, now)).collect();
    Ok(Json(json!({ "silences": list })))
}

pub(super) async fn show(
    State(st): S,
    path: Result<Path<IdPath>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let id = parse_number(&path?.0.id, "a silence id")?;
    let now = st.clock.now();
    st.store
        .silences()?
        .iter()
        .find(|s| s.id == id)
        .map(|s| Json(silence_json(s, now)))
        .ok_or_else(|| ApiError::not_found(format!("silence {id} not found")))
}

pub(super) async fn create(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let silence: NewSilence = parse_json(&body?)?;
    let s = st
        .incidents
        .silence(SilenceCommand::Create {
            silence: Box::new(silence),
            actor: peer.user,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(silence_json(&s, st.clock.now()))))
}

/// `DELETE /v1/silences/{id}`: ends an active or pending silence now; it stays listed as
/// expired (with who ended it) until the retention forgets it.
pub(super) async fn expire(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<IdPath>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let id = parse_number(&path?.0.id, "a silence id")?;
    let s = st
        .incidents
        .silence(SilenceCommand::Expire {
            id,
            actor: peer.user,
        })
        .await?;
    Ok(Json(silence_json(&s, st.clock.now())))
}
