//! `GET /v1/channels` (every channel, its target without secrets, its delivery figures) and
//! `POST /v1/channels/{id}/test` (a test message through the real delivery path: 200 when
//! the service accepted it, 502 with its answer when not).

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, ApiState};
use crate::notification::NotifyError;

type S = State<Arc<ApiState>>;

impl From<NotifyError> for ApiError {
    fn from(e: NotifyError) -> Self {
        let message = e.to_string();
        match e {
            NotifyError::UnknownChannel { .. } => ApiError::not_found(message),
            NotifyError::Unavailable => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
            }
        }
    }
}

pub(super) async fn list(State(st): S) -> Result<Json<Value>, ApiError> {
    let channels = st.notify.channels().await?;
    Ok(Json(json!({ "channels": channels })))
}

pub(super) async fn test(
    State(st): S,
    id: Result<Path<String>, PathRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Path(id) = id.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let report = st.notify.test(&id).await?;
    let status = if report.ok {
        StatusCode::OK
    } else {
        StatusCode::BAD_GATEWAY
    };
    Ok((
        status,
        Json(serde_json::to_value(&report).unwrap_or(Value::Null)),
    ))
}
