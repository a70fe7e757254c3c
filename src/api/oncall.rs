//! `GET /v1/oncall[?at=TIME][&team=NAME]`: who is on call for each team (primary, secondary)
//! and until when.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState};
use crate::clock::Timestamp;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct OnCallQuery {
    #[serde(default)]
    at: Option<String>,
    #[serde(default)]
    team: Option<String>,
}

pub(super) async fn get(
    State(st): State<Arc<ApiState>>,
    query: Result<Query<OnCallQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = query?;
    let at = match &q.at {
        Some(t) => Timestamp::parse_rfc3339(t)
            .map_err(|_| ApiError::bad_request(format!("`at`: `{t}` is not an RFC 3339 time")))?,
        None => st.clock.now(),
    };
    let teams = st.teams.read().unwrap_or_else(|p| p.into_inner()).clone();
    if let Some(name) = &q.team
        && !teams.iter().any(|t| &t.name == name)
    {
        let known: Vec<&str> = teams.iter().map(|t| t.name.as_str()).collect();
        return Err(ApiError::not_found(format!(
            "no team `{name}` (the teams are: {})",
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    let oncall: Vec<_> = teams
        .iter()
        .filter(|t| q.team.as_ref().is_none_or(|n| &t.name == n))
        .filter_map(|t| t.at(at))
        .collect();
    Ok(Json(json!({"at": at, "oncall": oncall})))
}
