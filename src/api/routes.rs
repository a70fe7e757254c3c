//! Route table and handlers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiState, Peer};
use crate::clock::Timestamp;
use crate::event::Defaults;
use crate::incident::{Command, Incident, NewIncident, Transition};
use crate::store::ListQuery;

type S = State<Arc<ApiState>>;
type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: Arc<ApiState>) -> Router {
    let limit = state.max_body_bytes;
    let timeout = state.request_timeout;
    let router = Router::new()
        .route("/v1/health", get(health))
        .route("/v1/status", get(status))
        .route("/v1/events", post(post_events))
        .route("/v1/alerts", post(post_alert))
        .route("/v1/incidents", get(list_incidents).post(create_incident))
        .route(
            "/v1/incidents/{id}",
            get(show_incident).patch(super::edits::edit),
        )
        .route("/v1/incidents/{id}/merge", post(super::edits::merge))
        .route("/v1/incidents/{id}/split", post(super::edits::split))
        .route("/v1/incidents/{id}/timeline", get(timeline))
        .route("/v1/incidents/{id}/related", get(related))
        .route(
            "/v1/incidents/{id}/postmortem",
            get(super::postmortem::get).put(super::postmortem::put),
        )
        .route("/v1/incidents/{id}/notes", post(add_note))
        .route("/v1/incidents/{id}/severity", post(set_severity))
        .route("/v1/incidents/{id}/tags", post(set_tags))
        .route("/v1/incidents/{id}/assign", post(assign))
        .route("/v1/incidents/{id}/stage", post(super::stages::set_stage))
        .route("/v1/incidents/{id}/{transition}", post(transition))
        .route(
            "/v1/silences",
            get(super::silences::list).post(super::silences::create),
        )
        .route(
            "/v1/silences/{id}",
            get(super::silences::show).delete(super::silences::expire),
        )
        .route("/v1/actions", get(super::actions::list))
        .route("/v1/actions/{id}", get(super::actions::show))
        .route("/v1/actions/{id}/{decision}", post(super::actions::decide))
        .route("/v1/incidents/{id}/actions", get(super::actions::available))
        .route(
            "/v1/incidents/{id}/actions/{action}/{what}",
            post(super::actions::incident_action),
        )
        .route("/v1/oncall", get(super::oncall::get))
        .route("/v1/channels", get(super::channels::list))
        .route("/v1/channels/{id}/test", post(super::channels::test))
        .route("/v1/rules", get(rules))
        .route("/v1/stats", get(stats))
        .route("/v1/export", get(export))
        .route("/v1/stream", get(super::stream::handler))
        .route("/v1/reload", post(reload))
        .route("/metrics", get(super::metrics::handler))
        .fallback(|| async {
            ApiError::not_found("no such API path; see GET /v1/status and the README")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this path",
            )
        })
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::roles::authorize,
        ));
    with_timeout(router, timeout).with_state(state)
}

/// Answers 503 `timeout` for a read (GET) that takes longer than `timeout` (and logs it).
/// Changes are never cut off halfway: an event batch half sent or a change made but not
/// answered would invite a retry that applies it twice.
pub(super) fn with_timeout<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    timeout: std::time::Duration,
) -> Router<S> {
    router.layer(axum::middleware::from_fn_with_state(timeout, time_limit))
}

async fn time_limit(
    State(timeout): State<std::time::Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if req.method() != axum::http::Method::GET {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    match tokio::time::timeout(timeout, next.run(req)).await {
        Ok(resp) => resp,
        Err(_) => {
            tracing::warn!(path = %path, timeout = ?timeout, "request took too long; answered 503");
            axum::response::IntoResponse::into_response(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("the request did not complete within {timeout:?}"),
            ))
        }
    }
}

/// Alive; `degraded` with the reason while the store cannot make changes durable.
async fn health(State(st): S) -> Json<Value> {
    match st.telemetry.store_failing() {
        None => Json(json!({"status": "ok"})),
        Some(reason) => Json(json!({"status": "degraded", "reason": reason})),
    }
}

pub(super) async fn status(State(st): S) -> Json<Value> {
    let t = &st.telemetry;
    let counts: serde_json::Map<String, Value> = st
        .store
        .count_by_status()
        .unwrap_or_default()
        .into_iter()
        .map(|(s, n)| (s.as_str().to_owned(), json!(n)))
        .collect();
    let rules = st.engine.rules().await.map(|r| r.len());
    let inputs = t.source_stats();
    let inputs: Vec<&crate::telemetry::SourceStats> = inputs.iter().map(|s| &**s).collect();
    let queued = st.event_queue_capacity - st.events.capacity();
    let dir = st.state_dir.clone();
    let bytes = tokio::task::spawn_blocking(move || bytes_under(&dir, 4))
        .await
        .unwrap_or(0);
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": t.started.elapsed().as_secs(),
        "config": st.config_path,
        "state_dir": st.state_dir,
        "sockets": {"control": st.control_socket, "ingest": st.ingest_socket},
        "rules": rules,
        "queues": {"events": {"len": queued, "capacity": st.event_queue_capacity}},
        "sources": [t.ingest, t.api_events],
        "inputs": inputs,
        "latency_seconds": {
            "event_to_detection": latency(&t.event_to_detection),
            "detection_to_incident": latency(&t.detection_to_incident),
            "event_to_incident": latency(&t.event_to_incident),
        },
        "watermark": t.watermark,
        "engine": {"events": t.engine_events, "detections": t.detections, "detections_dropped": t.detections_dropped, "detections_replayed": t.detections_replayed, "checkpoints": t.checkpoints},
        "incidents": {
            "by_status": counts,
            "created": t.incidents_created,
            "sla_breaches": t.sla_breaches,
            "deduplicated": t.incidents_deduplicated,
            "coalesced": t.detections_coalesced,
            "correlated": t.incidents_correlated,
            "reopened": t.incidents_reopened,
            "rate_limited": t.incidents_rate_limited,
            "store_errors": t.store_errors,
        },
        "actions": {
            "succeeded": t.action_runs_ok,
            "failed": t.action_runs_failed,
            "held": t.action_held,
            "ineffective": t.action_ineffective,
            "pending": t.action_pending.get(),
            "preflight": t.preflight_json(),
        },
        "notifications": {
            "delivered": t.notifications_delivered,
            "failed_attempts": t.notifications_failed,
            "dead_lettered": t.notifications_dead,
            "suppressed": t.notifications_suppressed,
            "queued": t.notifications_queued,
            "peers": t.peers.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|((channel, peer), s)| {
                let mut v = json!(s);
                v["channel"] = json!(channel);
                v["peer"] = json!(peer);
                v
            }).collect::<Vec<_>>(),
            "preflight": t.unreachable_json(),
        },
        "plugins": t.plugins.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|p| json!(&**p)).collect::<Vec<_>>(),
        "reload": t.reload_status(),
        "store": {
            "dir": st.state_dir,
            "bytes_on_disk": bytes,
            "errors": t.store_errors,
            "failing": t.store_failing(),
        },
    }))
}

/// The size of the files under `dir`, `depth` levels down at most.
fn bytes_under(dir: &std::path::Path, depth: u32) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut total = 0;
    for e in entries.flatten() {
        match e.metadata() {
            Ok(m) if m.is_dir() && depth > 0 => total += bytes_under(&e.path(), depth - 1),
            Ok(m) if m.is_file() => total += m.len(),
            _ => {}
        }
    }
    total
}

/// Count, mean and estimated p50/p99 of a latency histogram.
fn latency(h: &crate::telemetry::Histogram) -> Value {
    let n = h.count();
    json!({
        "count": n,
        "mean": (n > 0).then(|| h.sum_seconds() / n as f64),
        "p50": h.quantile(0.5),
        "p99": h.quantile(0.99),
    })
}

/// Rejected lines listed in a `POST /v1/events` answer; `rejected_total` counts them all.
const MAX_REJECTED_LISTED: usize = 100;

async fn post_events(State(st): S, body: Result<Bytes, BytesRejection>) -> ApiResult<Json<Value>> {
    let body = body?;
    let counters = &st.telemetry.api_events;
    let defaults = Defaults::at("api", &st.host, st.clock.now(), st.max_future_skew);
    // Each event goes on as it is decoded, and only the first rejections are kept: what a
    // request holds does not grow with its number of lines.
    let mut rejected = Vec::new();
    let mut rejected_total = 0u64;
    let mut accepted = 0u64;
    for (line, decoded) in crate::source::body_events(&body, st.max_line_bytes, &defaults) {
        counters.lines.inc();
        let ev = match decoded {
            Ok(ev) => ev,
            Err(e) => {
                counters.reject(&e, line);
                rejected_total += 1;
                if rejected.len() < MAX_REJECTED_LISTED {
                    rejected
                        .push(json!({"line": line, "reason": e.reason(), "error": e.to_string()}));
                }
                continue;
            }
        };
        if st
            .events
            .send(crate::engine::Input::Event(ev, std::time::Instant::now()))
            .await
            .is_err()
        {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the daemon is shutting down",
            ));
        }
        accepted += 1;
        counters.accepted.inc();
    }
    Ok(Json(
        json!({"accepted": accepted, "rejected": rejected, "rejected_total": rejected_total}),
    ))
}

#[derive(Deserialize)]
pub(super) struct IdPath {
    pub(super) id: String,
}

/// A number from a path or a query: an incident, silence or action run id.
pub(super) fn parse_number(raw: &str, what: &str) -> ApiResult<u64> {
    raw.parse()
        .map_err(|_| ApiError::bad_request(format!("`{raw}` is not {what} (a positive number)")))
}

pub(super) fn parse_id(raw: &str) -> ApiResult<u64> {
    parse_number(raw, "an incident id")
}

fn parse_list(params: &[(String, String)]) -> ApiResult<ListQuery> {
    let mut q = ListQuery {
        limit: 50,
        ..ListQuery::default()
    };
    for (k, v) in params {
        let bad = |m: String| ApiError::bad_request(format!("invalid `{k}`: {m}"));
        match k.as_str() {
            "status" => {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    if s == "active" {
                        q.status.extend([
                            crate::incident::Status::Open,
                            crate::incident::Status::Acknowledged,
                            crate::incident::Status::Mitigated,
                        ]);
                    } else {
                        q.status.push(s.parse().map_err(bad)?);
                    }
                }
            }
            "severity" => {
                for s in v.split(',').filter(|s| !s.is_empty()) {
                    q.severity.push(s.parse().map_err(bad)?);
                }
            }
            "service" => q.service = Some(v.clone()),
            "label" => {
                let (lk, lv) = v
                    .split_once(':')
                    .ok_or_else(|| bad("expected label=key:value".into()))?;
                q.labels.push((lk.to_owned(), lv.to_owned()));
            }
            "q" => q.q = Some(v.clone()),
            "since" => {
                q.since = Some(parse_since(
                    v,
                    crate::clock::Clock::now(&crate::clock::SystemClock),
                )?)
            }
            "limit" => {
                q.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| bad("expected 1..1000".into()))?
            }
            "cursor" => q.cursor = Some(v.parse().map_err(bad)?),
            "sort" => q.sort = v.parse().map_err(bad)?,
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}`"
                )));
            }
        }
    }
    if let Some(c) = q.cursor
        && c.rank.is_some() != (q.sort == crate::store::Sort::Severity)
    {
        return Err(ApiError::bad_request(format!(
            "invalid `cursor`: `{c}` comes from a listing in another order; pass the same `sort`"
        )));
    }
    Ok(q)
}

pub(super) async fn list_incidents(
    State(st): S,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(params) = params?;
    let q = parse_list(&params)?;
    let store = st.store.clone();
    let page = tokio::task::spawn_blocking(move || store.list(&q))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))??;
    // Each incident with its SLA's time left, as `GET /v1/incidents/{id}` gives it.
    let slas = st.slas.read().unwrap_or_else(|p| p.into_inner()).clone();
    let now = st.clock.now();
    let sla: Vec<Value> = page
        .incidents
        .iter()
        .map(|i| crate::incident::sla::status(i, &slas, now))
        .collect();
    let mut v = json!(page);
    if let Some(list) = v["incidents"].as_array_mut() {
        for (item, sla) in list.iter_mut().zip(sla) {
            if !sla.is_null() {
                item["sla"] = sla;
            }
        }
    }
    Ok(Json(v))
}

async fn create_incident(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Incident>)> {
    let new: NewIncident = parse_json(&body?)?;
    let inc = st
        .incidents
        .command(Command::Create {
            incident: new,
            actor: peer.user,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(inc)))
}

pub(super) async fn show_incident(
    State(st): S,
    path: Result<Path<IdPath>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&path?.0.id)?;
    let inc = st
        .store
        .incident(id)?
        .ok_or_else(|| ApiError::not_found(format!("incident {id} not found")))?;
    let slas = st.slas.read().unwrap_or_else(|p| p.into_inner()).clone();
    let sla = crate::incident::sla::status(&inc, &slas, st.clock.now());
    let mut v = serde_json::to_value(&inc).unwrap_or(Value::Null);
    if !sla.is_null() {
        v["sla"] = sla;
    }
    Ok(Json(v))
}

/// The whole incident log as NDJSON, one timeline entry per line in log order, streamed
/// from the store as it is read.
async fn export(State(st): S) -> impl axum::response::IntoResponse {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(16);
    let store = st.store.clone();
    tokio::task::spawn_blocking(move || {
        let mut chunk = Vec::with_capacity(64 * 1024);
        let mut failed: Option<String> = None;
        let r = store.each_entry(&mut |e| {
            if let Err(err) = serde_json::to_writer(&mut chunk, &e) {
                failed = Some(format!(
                    "cannot write entry {}/{}: {err}",
                    e.incident_id, e.seq
                ));
                return false;
            }
            chunk.push(b'\n');
            if chunk.len() >= 64 * 1024 {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(64 * 1024));
                // The client went away: stop reading.
                return tx.blocking_send(Ok(full)).is_ok();
            }
            true
        });
        let r = r
            .map_err(|e| e.to_string())
            .and_then(|()| failed.map_or(Ok(()), Err));
        match r {
            Ok(()) => {
                if !chunk.is_empty() {
                    let _ = tx.blocking_send(Ok(chunk));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "export failed while reading the incident log");
                // Ends the body with an error, so the client sees a broken export, not a
                // short one.
                let _ = tx.blocking_send(Err(std::io::Error::other(e)));
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
}

/// A Markdown post-mortem draft.
/// Incidents that share the key, the service or a correlation/trace id with incident `id`,
/// newest first (at most 100), each with the reasons.
async fn related(
    State(st): S,
    path: Result<Path<IdPath>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&path?.0.id)?;
    let me = st
        .store
        .incident(id)?
        .ok_or_else(|| ApiError::not_found(format!("incident {id} not found")))?;
    // A scan of the store: off the async threads.
    let store = st.store.clone();
    let out = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        store.scan(&ListQuery::default(), &mut |mut other| {
            if other.id == id {
                return true;
            }
            let mut why = Vec::new();
            if other.key == me.key {
                why.push("key");
            }
            if me.service.is_some() && other.service == me.service {
                why.push("service");
            }
            if other
                .correlation_ids
                .iter()
                .any(|c| me.correlation_ids.contains(c))
            {
                why.push("correlation");
            }
            if !why.is_empty() {
                other.evidence = Vec::new();
                out.push(json!({"incident": other, "why": why}));
            }
            out.len() < 100
        })?;
        Ok::<_, crate::store::StoreError>(out)
    })
    .await
    .map_err(|e| ApiError::internal(format!("related task failed: {e}")))??;
    Ok(Json(json!({"incident_id": id, "related": out})))
}

pub(super) async fn timeline(
    State(st): S,
    path: Result<Path<IdPath>, PathRejection>,
) -> ApiResult<Json<Value>> {
    let id = parse_id(&path?.0.id)?;
    if st.store.incident(id)?.is_none() {
        return Err(ApiError::not_found(format!("incident {id} not found")));
    }
    Ok(Json(
        json!({"incident_id": id, "timeline": st.store.timeline(id)?}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    #[serde(default)]
    note: Option<String>,
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// An empty body is fine where every field is optional.
pub(super) fn parse_optional<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
) -> ApiResult<T> {
    if body.trim_ascii().is_empty() {
        Ok(T::default())
    } else {
        parse_json(body)
    }
}

#[derive(Deserialize)]
struct TransitionPath {
    id: String,
    transition: String,
}

async fn transition(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<TransitionPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Incident>> {
    let Path(p) = path?;
    let id = parse_id(&p.id)?;
    let transition: Transition = p.transition.parse().map_err(|_| {
        ApiError::not_found(format!(
            "unknown incident action `{}` (ack, mitigate, resolve, close, cancel, reopen, notes, timeline)",
            p.transition
        ))
    })?;
    let body: NoteBody = parse_optional(&body?)?;
    let inc = st
        .incidents
        .command(Command::Transition {
            id,
            transition,
            note: body.note.filter(|n| !n.is_empty()),
            actor: peer.user,
        })
        .await?;
    Ok(Json(inc))
}

/// `{id}` and a JSON body to a command run as the peer; answers the changed incident.
pub(super) async fn incident_change<B: serde::de::DeserializeOwned>(
    st: &ApiState,
    peer: Peer,
    path: Result<Path<IdPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
    make: impl FnOnce(u64, B, String) -> ApiResult<Command>,
) -> ApiResult<Json<Incident>> {
    let id = parse_id(&path?.0.id)?;
    let body: B = parse_json(&body?)?;
    Ok(Json(
        st.incidents.command(make(id, body, peer.user)?).await?,
    ))
}

async fn add_note(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<IdPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Incident>> {
    incident_change(&st, peer, path, body, |id, b: NoteBody, actor| {
        Ok(Command::Note {
            id,
            note: b
                .note
                .ok_or_else(|| ApiError::bad_request("missing `note`"))?,
            actor,
        })
    })
    .await
}

/// Most alerts one `POST /v1/alerts` may carry.
const MAX_ALERTS: usize = 1000;

/// `POST /v1/alerts`: one alert (answered 201 when it created an incident), or an array of
/// them answered one by one, in order (200, `{"alerts": [...]}` with each one's outcome or
/// error; a bad alert does not stop the others).
async fn post_alert(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    use crate::incident::manager::{ExternalAlert, Outcome};
    let answer = |o: Outcome| {
        json!({
            "incident_id": o.incident(),
            "created": matches!(o, Outcome::Created(_)),
            "deduplicated": matches!(o, Outcome::Deduplicated(_)),
            "reopened": matches!(o, Outcome::Reopened(_)),
            "rate_limited": matches!(o, Outcome::RateLimited),
            "resolved": matches!(o, Outcome::Resolved(_)),
            "nothing_to_resolve": matches!(o, Outcome::NothingToResolve),
        })
    };
    match parse_json::<Value>(&body?)? {
        Value::Array(items) => {
            if items.len() > MAX_ALERTS {
                return Err(ApiError::bad_request(format!(
                    "{} alerts in one request; at most {MAX_ALERTS}",
                    items.len()
                )));
            }
            // All handed to the incident manager at once, in order, so they share its group
            // commits; each answered once durable.
            let pending = items.into_iter().enumerate().map(|(i, item)| {
                let (incidents, user) = (st.incidents.clone(), peer.user.clone());
                async move {
                    match serde_json::from_value::<ExternalAlert>(item) {
                        Err(e) => json!({"index": i, "error": format!("invalid alert: {e}")}),
                        Ok(a) => match incidents.alert(a, user).await {
                            Ok(o) => {
                                let mut v = answer(o);
                                v["index"] = json!(i);
                                v
                            }
                            Err(e) => json!({"index": i, "error": e.to_string()}),
                        },
                    }
                }
            });
            let out = futures_util::future::join_all(pending).await;
            Ok((StatusCode::OK, Json(json!({"alerts": out}))))
        }
        one => {
            let alert: ExternalAlert = serde_json::from_value(one)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
            let outcome = st.incidents.alert(alert, peer.user).await?;
            let status = if matches!(outcome, Outcome::Created(_)) {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok((status, Json(answer(outcome))))
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SeverityBody {
    severity: crate::incident::Severity,
    #[serde(default)]
    note: Option<String>,
}

async fn set_severity(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<IdPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Incident>> {
    incident_change(&st, peer, path, body, |id, b: SeverityBody, actor| {
        Ok(Command::Severity {
            id,
            severity: b.severity,
            note: b.note.filter(|n| !n.is_empty()),
            actor,
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TagsBody {
    #[serde(default)]
    add: Vec<String>,
    #[serde(default)]
    remove: Vec<String>,
}

async fn set_tags(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<IdPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Incident>> {
    incident_change(&st, peer, path, body, |id, b: TagsBody, actor| {
        Ok(Command::Tags {
            id,
            add: b.add,
            remove: b.remove,
            actor,
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignBody {
    /// `null` unassigns.
    assignee: Option<String>,
}

async fn assign(
    State(st): S,
    ConnectInfo(peer): ConnectInfo<Peer>,
    path: Result<Path<IdPath>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> ApiResult<Json<Incident>> {
    incident_change(&st, peer, path, body, |id, b: AssignBody, actor| {
        Ok(Command::Assign {
            id,
            assignee: b.assignee,
            actor,
        })
    })
    .await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct StatsQuery {
    /// Only incidents created since: a duration ("7d") or an RFC 3339 time.
    #[serde(default)]
    since: Option<String>,
}

/// A duration back from `now` ("2h") or an RFC 3339 time.
fn parse_since(v: &str, now: Timestamp) -> ApiResult<Timestamp> {
    match humantime::parse_duration(v) {
        Ok(d) => Ok(Timestamp::from_millis(0).max(now.saturating_sub(d))),
        Err(_) => Timestamp::parse_rfc3339(v).map_err(|e| {
            ApiError::bad_request(format!(
                "since: `{v}` is neither a duration (\"2h\") nor an RFC 3339 time: {e}"
            ))
        }),
    }
}

/// Counts, false-positive share, time to detect/acknowledge/resolve, and the rules' fire
/// counts.
pub(super) async fn stats(
    State(st): S,
    query: Result<Query<StatsQuery>, QueryRejection>,
) -> ApiResult<Json<Value>> {
    let Query(q) = query?;
    let mut list = ListQuery::default();
    if let Some(s) = &q.since {
        list.since = Some(parse_since(s, st.clock.now())?);
    }
    // A scan of the store: off the async threads.
    let store = st.store.clone();
    let since = list.since;
    let slas = st.slas.read().unwrap_or_else(|p| p.into_inner()).clone();
    let (stats, sla) = tokio::task::spawn_blocking(move || {
        let mut incidents = Vec::new();
        store.scan(&list, &mut |mut i| {
            // Evidence is not needed for numbers; drop it early.
            i.evidence = Vec::new();
            incidents.push(i);
            true
        })?;
        Ok::<_, crate::store::StoreError>((
            crate::incident::stats::Stats::of(&incidents),
            crate::incident::stats::sla_compliance(&incidents, &slas),
        ))
    })
    .await
    .map_err(|e| ApiError::internal(format!("stats task failed: {e}")))??;
    let rules: Vec<Value> = st
        .engine
        .rules()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|r| json!({"id": r.id, "matched": r.matched, "fired": r.fired}))
        .collect();
    let mut v = serde_json::to_value(&stats).unwrap_or(Value::Null);
    v["rules"] = Value::Array(rules);
    v["since"] = json!(since);
    v["sla_compliance"] = json!({"by_severity": sla.0, "by_week": sla.1});
    Ok(Json(v))
}

async fn rules(State(st): S) -> ApiResult<Json<Value>> {
    let rules = st.engine.rules().await.ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the engine has stopped",
        )
    })?;
    Ok(Json(json!({"rules": rules})))
}

async fn reload(State(st): S, ConnectInfo(peer): ConnectInfo<Peer>) -> ApiResult<Json<Value>> {
    tracing::info!(actor = %peer.user, "reload requested over the API");
    let (tx, rx) = tokio::sync::oneshot::channel();
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the daemon is shutting down",
        )
    };
    st.reload.send(tx).await.map_err(|_| unavailable())?;
    match rx.await.map_err(|_| unavailable())? {
        Ok(summary) => Ok(Json(json!({"reloaded": true, "message": summary}))),
        Err(errors) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_config",
            errors,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_slow_request_is_answered_503_timeout() {
        let app: Router = with_timeout(
            Router::new()
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                        "late"
                    }),
                )
                .route("/fast", get(|| async { "ok" }))
                .route(
                    "/change",
                    post(|| async {
                        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                        "done"
                    }),
                ),
            std::time::Duration::from_millis(50),
        );
        let call = |path: &'static str| {
            let app = app.clone();
            async move {
                let req = axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap();
                app.oneshot(req).await.unwrap()
            }
        };
        let slow = call("/slow").await;
        assert_eq!(slow.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(slow.into_body(), 4096).await.unwrap();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["code"], "timeout", "{v}");
        assert_eq!(call("/fast").await.status(), StatusCode::OK);
        // A change is never cut off halfway.
        let req = axum::http::Request::post("/change")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(
            app.clone().oneshot(req).await.unwrap().status(),
            StatusCode::OK
        );
    }
}
