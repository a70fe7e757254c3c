//! `POST /v1/incidents/{id}/stage`: move the response stage (responders), `{"stage": "...",
//! "note": "..."}`; back only with a note; an unknown stage is refused with the list.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use serde::Deserialize;

use super::routes::{IdPath, incident_change};
use super::{ApiError, ApiState, Peer};
use crate::incident::{Command, Incident, Stage};

/// `{"stage": "...", "note": "..."}` (the board's stage move takes it too).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StageBody {
    pub(super) stage: String,
    #[serde(default)]
    pub(super) note: Option<String>,
}

pub(super) async fn set_stage(
    State(st): State<Arc<ApiState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<IdPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Incident>, ApiError> {
    incident_change(&st, peer, path, body, |id, b: StageBody, actor| {
        let stage: Stage = b.stage.parse().map_err(ApiError::bad_request)?;
        Ok(Command::Stage {
            id,
            stage,
            note: b.note.filter(|n| !n.trim().is_empty()),
            actor,
        })
    })
    .await
}
