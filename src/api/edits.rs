//! Editing incidents (responders): `PATCH /v1/incidents/{id}` `{"title": …}`, `POST
//! /v1/incidents/{id}/merge` `{"into": OTHER}` (answers the incident merged into), `POST
//! /v1/incidents/{id}/split` `{"key": …}` (answers the new incident).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, Path, State};
use serde::Deserialize;

use super::routes::{IdPath, incident_change};
use super::{ApiError, ApiState, Peer};
use crate::incident::{Command, Incident};

type S = State<Arc<ApiState>>;
type Answer = Result<Json<Incident>, ApiError>;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EditBody {
    title: String,
}

pub(super) async fn edit(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<IdPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    incident_change(&st, peer, path, body, |id, b: EditBody, actor| {
        Ok(Command::Retitle {
            id,
            title: b.title,
            actor,
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MergeBody {
    into: u64,
}

pub(super) async fn merge(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<IdPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    incident_change(&st, peer, path, body, |id, b: MergeBody, actor| {
        Ok(Command::Merge {
            id,
            into: b.into,
            actor,
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitBody {
    key: String,
}

pub(super) async fn split(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<IdPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Answer {
    incident_change(&st, peer, path, body, |id, b: SplitBody, actor| {
        Ok(Command::Split {
            id,
            key: b.key,
            actor,
        })
    })
    .await
}
