//! `GET /v1/stream`: Server-Sent Events of every durable incident change.
//!
//! Each timeline entry the store writes gets a store-wide change number; the stream sends
//! entries in that order with the number as the event id, reading them back from the store.
//! Live delivery and resumption are one path: the incident manager publishes the highest
//! durable number after each flush, and each stream reads the store from its last id up to
//! it. A client that reconnects with `Last-Event-ID` (or `?after=N`) gets everything after
//! that id still in the log, then the live changes, with no gap and no repeat; a slow client
//! only falls behind, it never makes anyone else wait or lose anything. The first event,
//! `ready`, carries the number the stream starts after.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;

use super::{ApiError, ApiState};
use crate::incident::TimelineEntry;

/// Entries read from the store at a time.
const READ_BATCH: usize = 256;

struct Cursor {
    st: Arc<ApiState>,
    changes: tokio::sync::watch::Receiver<u64>,
    /// The last change number sent.
    sent: u64,
    buffer: VecDeque<TimelineEntry>,
    /// The `ready` event is still to be sent.
    greet: bool,
    /// The asked position was ahead of the log: the stream starts from its beginning.
    reset: bool,
    /// Only these event types, when the client asked (`?types=a,b`).
    types: Option<Vec<String>>,
}

pub async fn handler(
    State(st): State<Arc<ApiState>>,
    headers: HeaderMap,
    params: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let Query(params) = params?;
    let mut after: Option<u64> = None;
    let mut types = None;
    for (k, v) in &params {
        match k.as_str() {
            "after" => {
                after = Some(v.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid `after`: `{v}` is not a change number"))
                })?)
            }
            "types" => {
                let list: Vec<String> = v.split(',').map(str::to_owned).collect();
                const KNOWN: [&str; 5] = [
                    "incident_created",
                    "incident_updated",
                    "detection",
                    "action",
                    "notification",
                ];
                if let Some(bad) = list.iter().find(|t| !KNOWN.contains(&t.as_str())) {
                    return Err(ApiError::bad_request(format!(
                        "invalid `types`: unknown event type `{bad}` (expected {})",
                        KNOWN.join(", ")
                    )));
                }
                types = Some(list);
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{other}` (expected after, types)"
                )));
            }
        }
    }
    if let Some(raw) = headers.get("last-event-id") {
        let raw = raw.to_str().unwrap_or("").trim();
        after = Some(raw.parse().map_err(|_| {
            ApiError::bad_request(format!(
                "invalid Last-Event-ID `{raw}`: expected a change number"
            ))
        })?);
    }
    let changes = st.incidents.changes();
    let durable = *changes.borrow();
    // Without a position the stream starts at the present. A position ahead of the log
    // means the store was replaced (moved aside as corrupt): start over from its beginning,
    // and say so in `ready`.
    let reset = after.is_some_and(|a| a > durable);
    let sent = match after {
        Some(a) if a <= durable => a,
        Some(_) => 0,
        None => durable,
    };
    let cursor = Cursor {
        st,
        changes,
        sent,
        buffer: VecDeque::new(),
        greet: true,
        reset,
        types,
    };
    let stream = futures_util::stream::unfold(cursor, |mut c| async move {
        let ev = c.next().await?;
        Some((Ok(ev), c))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

impl Cursor {
    /// The next event, or `None` when the daemon shuts down or the store fails.
    async fn next(&mut self) -> Option<SseEvent> {
        if std::mem::take(&mut self.greet) {
            // Where the stream starts, so a client that saw no change yet can still resume
            // from here after a reconnect.
            return Some(
                SseEvent::default()
                    .id(self.sent.to_string())
                    .event("ready")
                    .data(json!({"change": self.sent, "reset": self.reset}).to_string()),
            );
        }
        loop {
            while let Some(e) = self.buffer.pop_front() {
                self.sent = e.change;
                let kind = e.kind.stream_event();
                if self
                    .types
                    .as_ref()
                    .is_some_and(|t| !t.iter().any(|t| t == kind))
                {
                    continue;
                }
                return Some(self.render(e, kind).await);
            }
            let durable = *self.changes.borrow_and_update();
            if durable > self.sent {
                let store = self.st.store.clone();
                let after = self.sent;
                let read =
                    tokio::task::spawn_blocking(move || store.changes_after(after, READ_BATCH))
                        .await;
                match read {
                    Ok(Ok(entries)) => {
                        // Only what was flushed: a newer change may be stored but not durable.
                        let durable_entries: VecDeque<_> = entries
                            .into_iter()
                            .filter(|e| e.change <= durable)
                            .collect();
                        if durable_entries.is_empty() {
                            // Numbers up to `durable` with no entry left (compacted away).
                            self.sent = durable;
                        }
                        self.buffer = durable_entries;
                        continue;
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, "event stream could not read the store; ending it");
                        return None;
                    }
                    Err(_) => return None,
                }
            }
            tokio::select! {
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
                () = self.st.shutdown.cancelled() => return None,
            }
        }
    }

    /// The event: the entry and the incident as it is now (without its evidence sample).
    async fn render(&self, e: TimelineEntry, kind: &'static str) -> SseEvent {
        let store = self.st.store.clone();
        let id = e.incident_id;
        let incident = tokio::task::spawn_blocking(move || store.incident(id))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .map(|mut i| {
                i.evidence.clear();
                if let Some(f) = &mut i.folded {
                    f.evidence.clear();
                }
                i
            });
        let data = json!({"change": e.change, "type": kind, "incident": incident, "entry": e});
        SseEvent::default()
            .id(e.change.to_string())
            .event(kind)
            .data(data.to_string())
    }
}
