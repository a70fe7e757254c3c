//! The ingest socket: a Unix stream socket taking NDJSON events from many clients at once.
//!
//! One task accepts (a semaphore caps concurrent connections, taken before `accept`); one task
//! per connection reads lines, decodes them, and sends events to the engine with `send().await`
//! so a full pipeline slows writers down instead of dropping. A bad line is counted, logged
//! (throttled) and skipped; the connection keeps going.

use std::sync::Arc;

use tokio::io::BufReader;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lines::{Line, LineReader};
use crate::clock::Clock;
use crate::event::{DecodeError, Defaults, Event};
use crate::telemetry::Telemetry;

pub struct IngestSocket {
    pub listener: UnixListener,
    pub max_line_bytes: usize,
    /// `[engine] max_future_skew`: later event times are rejected as `future_ts`.
    pub max_future_skew: std::time::Duration,
    pub max_connections: usize,
    pub events: mpsc::Sender<crate::engine::Input>,
    pub telemetry: Arc<Telemetry>,
    pub clock: Arc<dyn Clock>,
    pub host: Arc<str>,
}

impl IngestSocket {
    /// Accepts until `cancel`; connection tasks run on `tracker` and stop with `cancel` too.
    pub async fn run(self, cancel: CancellationToken, tracker: TaskTracker) {
        let permits = Arc::new(Semaphore::new(self.max_connections.max(1)));
        let shared = Arc::new(self);
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => break,
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let stream = tokio::select! {
                _ = cancel.cancelled() => break,
                r = shared.listener.accept() => match r {
                    Ok((s, _)) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "ingest socket accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            shared.telemetry.ingest.connections.inc();
            let conn = shared.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                conn.serve(stream, cancel).await;
                drop(permit);
            });
        }
        tracing::debug!("ingest socket stopped accepting");
    }

    async fn serve(&self, stream: UnixStream, cancel: CancellationToken) {
        let counters = &self.telemetry.ingest;
        let mut reader = LineReader::new(
            BufReader::with_capacity(64 * 1024, stream),
            self.max_line_bytes,
        );
        let mut n = 0u64;
        loop {
            let line = tokio::select! {
                _ = cancel.cancelled() => return,
                l = reader.next_line() => l,
            };
            let line = match line {
                Ok(Some(l)) => l,
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!(error = %e, "ingest connection read failed");
                    return;
                }
            };
            // Line numbers count every line; the `lines` counter only those that are
            // accepted or rejected (blank lines are neither).
            n += 1;
            let decoded = match line {
                Line::Oversize => Err(DecodeError::Oversize {
                    max: self.max_line_bytes,
                }),
                Line::Complete(b) if b.trim_ascii().is_empty() => continue,
                Line::Complete(b) => Event::decode(
                    b,
                    &Defaults::at("ingest", &self.host, self.clock.now(), self.max_future_skew),
                ),
            };
            counters.lines.inc();
            match decoded {
                Ok(ev) => {
                    if self
                        .events
                        .send(crate::engine::Input::Event(ev, std::time::Instant::now()))
                        .await
                        .is_err()
                    {
                        return; // the engine is gone: shutting down
                    }
                    counters.accepted.inc();
                }
                Err(e) => counters.reject(&e, n),
            }
        }
    }
}
