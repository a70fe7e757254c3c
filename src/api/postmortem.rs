//! `GET /v1/incidents/{id}/postmortem`: the stored post-mortem (the draft written when the
//! incident was resolved, or a person's version), else a draft written now; `PUT` replaces
//! the stored text (responders; the body is the Markdown), recorded in the timeline.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use serde_json::json;

use super::routes::{IdPath, parse_id};
use super::{ApiError, ApiState, Peer};
use crate::incident::Command;

const MARKDOWN: &str = "text/markdown; charset=utf-8";

pub(super) async fn get(
    State(st): State<Arc<ApiState>>,
    path: Result<Path<IdPath>, PathRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&path?.0.id)?;
    let inc = st
        .store
        .incident(id)?
        .ok_or_else(|| ApiError::not_found(format!("incident {id} not found")))?;
    let timeline = st.store.timeline(id)?;
    let text = crate::incident::postmortem::stored(&inc, &timeline)
        .unwrap_or_else(|| crate::incident::postmortem::render(&inc, &timeline, st.clock.now()));
    Ok(([(CONTENT_TYPE, MARKDOWN)], text))
}

pub(super) async fn put(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<IdPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let id = parse_id(&path?.0.id)?;
    let body = body?;
    let text = std::str::from_utf8(&body)
        .map_err(|e| ApiError::bad_request(format!("the post-mortem is not UTF-8: {e}")))?
        .to_owned();
    let inc = st
        .incidents
        .command(Command::Postmortem {
            id,
            text,
            actor: peer.user,
        })
        .await?;
    Ok(axum::Json(json!({"incident_id": inc.id, "stored": true})))
}
