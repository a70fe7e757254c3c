//! The board's changes, each allowed by its bearer token (see [`super::Web::actor`]):
//! `POST /v1/incidents/{id}/{ack,mitigate,resolve}` and `/v1/incidents/{id}/stage`
//! (responders), `POST /v1/actions/{id}/{approve,deny}` (admins).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Need, Web};
use crate::api::ApiError;
use crate::api::routes::{parse_id, parse_json, parse_number, parse_optional};
use crate::api::stages::StageBody;
use crate::incident::{Command, Incident, Stage, Transition};

#[derive(Deserialize)]
pub(super) struct TransitionPath {
    id: String,
    transition: String,
}

#[derive(Deserialize)]
pub(super) struct IdOnly {
    id: String,
}

#[derive(Deserialize, Default)]
struct NoteBody {
    #[serde(default)]
    note: Option<String>,
}

fn note(n: Option<String>) -> Option<String> {
    n.filter(|n| !n.trim().is_empty())
}

pub(super) async fn transition(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    path: Result<Path<TransitionPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Incident>, ApiError> {
    let actor = web.actor(&headers, Need::Responder)?;
    let Path(p) = path?;
    let id = parse_id(&p.id)?;
    let transition = match p.transition.as_str() {
        "ack" => Transition::Ack,
        "mitigate" => Transition::Mitigate,
        "resolve" => Transition::Resolve,
        other => {
            return Err(ApiError::not_found(format!(
                "the board does `ack`, `mitigate`, `resolve` and `stage`, not `{other}`"
            )));
        }
    };
    let b: NoteBody = parse_optional(&body?)?;
    let inc = web
        .api
        .incidents
        .command(Command::Transition {
            id,
            transition,
            note: note(b.note),
            actor: actor.into(),
        })
        .await?;
    Ok(Json(inc))
}

/// Moves the response stage, as `POST /v1/incidents/{id}/stage` of the control API does.
pub(super) async fn stage(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    path: Result<Path<IdOnly>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Incident>, ApiError> {
    let actor = web.actor(&headers, Need::Responder)?;
    let id = parse_id(&path?.0.id)?;
    let b: StageBody = parse_json(&body?)?;
    let stage: Stage = b.stage.parse().map_err(ApiError::bad_request)?;
    let inc = web
        .api
        .incidents
        .command(Command::Stage {
            id,
            stage,
            note: note(b.note),
            actor: actor.into(),
        })
        .await?;
    Ok(Json(inc))
}

#[derive(Deserialize)]
pub(super) struct DecisionPath {
    id: String,
    decision: String,
}

/// Approves (answered once the run is over) or denies a pending action run: admins only.
pub(super) async fn decide(
    State(web): State<Arc<Web>>,
    headers: HeaderMap,
    path: Result<Path<DecisionPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let actor = web.actor(&headers, Need::Admin)?;
    let Path(p) = path?;
    let id = parse_number(&p.id, "an action run id")?;
    let b: NoteBody = parse_optional(&body?)?;
    let remediation = &web.api.remediation;
    let run = match p.decision.as_str() {
        "approve" => remediation.approve(id, actor.into()).await?,
        "deny" => remediation.deny(id, actor.into(), note(b.note)).await?,
        other => {
            return Err(ApiError::not_found(format!(
                "no decision `{other}` (expected approve or deny)"
            )));
        }
    };
    Ok(Json(json!(run)))
}
