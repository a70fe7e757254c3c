//! The ingest socket: a Unix stream socket taking NDJSON events from many clients at once.
//!
//! Who may submit is checked per connection from its peer credentials (`[ingest] allow`,
//! admins and responders by default), separately from who may open the socket (its mode
//! and group). One task accepts and admits (at most `max_connections` of non-admins, at most
//! `max_connections_per_user` of one user, admins always; a connection idle for
//! `idle_timeout` is closed); one task
//! per connection reads lines, decodes them, and sends events to the engine with `send().await`
//! so a full pipeline slows writers down instead of dropping. The events one read brought go
//! as one batch (at most [`BATCH_EVENTS`], holding one permit per event of the budget shared
//! with the file sources), handed over as soon as the next line would wait for the peer: one
//! wake-up of the engine per read instead of per event, and no event waits for a later one.
//! A bad line is counted, logged (throttled) and skipped; the connection keeps going.

use std::sync::Arc;

use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lines::{Line, LineReader};
use crate::access::{ConnectionGate, Peer, Role, SharedRoles, role_of};
use crate::clock::Clock;
use crate::event::{DecodeError, Defaults, Event};
use crate::telemetry::Telemetry;

/// The most events one connection hands over at once.
pub const BATCH_EVENTS: usize = 256;

pub struct IngestSocket {
    pub listener: UnixListener,
    pub max_line_bytes: usize,
    /// `[engine] max_future_skew`: later event times are rejected as `future_ts`.
    pub max_future_skew: std::time::Duration,
    /// Non-admin connections at most, and per user.
    pub gate: ConnectionGate,
    /// Roles that may submit events (`[ingest] allow`).
    pub allow: Vec<Role>,
    /// The groups that make admins and responders, shared with the control API (reloaded).
    pub roles: SharedRoles,
    /// A connection silent this long is closed.
    pub idle_timeout: std::time::Duration,
    pub events: mpsc::Sender<crate::engine::Input>,
    /// Events in flight from every ingest connection and file source (`[daemon]
    /// event_queue`, at least [`BATCH_EVENTS`]).
    pub budget: Arc<tokio::sync::Semaphore>,
    pub telemetry: Arc<Telemetry>,
    pub clock: Arc<dyn Clock>,
    pub host: Arc<str>,
}

/// Answers a refused connection with `line`, then discards its input for at most half a
/// second.
async fn refuse(mut stream: UnixStream, line: String) {
    use tokio::io::AsyncReadExt;
    let second = std::time::Duration::from_millis(500);
    let _ = tokio::time::timeout(second, async {
        let _ = stream.write_all(line.as_bytes()).await;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

impl IngestSocket {
    /// Accepts until `cancel`; connection tasks run on `tracker` and stop with `cancel` too.
    /// Each connection's peer is checked first: a role not in `allow` is refused (counted as
    /// `forbidden`), and the gate keeps any one user from holding every connection.
    pub async fn run(self, cancel: CancellationToken, tracker: TaskTracker) {
        let shared = Arc::new(self);
        let refused = crate::telemetry::Throttle::new(std::time::Duration::from_secs(10));
        let accept_failed = crate::telemetry::Throttle::new(std::time::Duration::from_secs(10));
        let refusals = Arc::new(tokio::sync::Semaphore::new(
            crate::access::MAX_ANSWERED_REFUSALS,
        ));
        let mut lookups = crate::access::Lookups::new("ingest socket", shared.gate.per_user());
        // Refuses a connection: counted, logged, answered with one line saying why.
        let turn_away =
            |stream: UnixStream, (code, why): (&'static str, String), peer: (&str, Option<u32>)| {
                if code == "refused" {
                    shared.telemetry.ingest.refused.inc();
                }
                if let Some(suppressed) = refused.allow() {
                    tracing::warn!(user = %peer.0, uid = ?peer.1, code, reason = %why, suppressed,
                    "ingest connection refused");
                }
                // One line saying why; what the peer sends meanwhile is read and thrown away for
                // a moment, so it sees the answer instead of a broken pipe.
                let line = serde_json::json!({"error": {"code": code, "message": why}});
                if let Ok(slot) = refusals.clone().try_acquire_owned() {
                    tracker.spawn(async move {
                        refuse(stream, format!("{line}\n")).await;
                        drop(slot);
                    });
                }
            };
        loop {
            let (peer, stream) = tokio::select! {
                _ = cancel.cancelled() => break,
                Some(known) = lookups.next() => known,
                r = shared.listener.accept() => {
                    let stream = match r {
                        Ok((s, _)) => s,
                        Err(e) => {
                            // Out of descriptors, say: said at most once per 10 s.
                            if let Some(suppressed) = accept_failed.allow() {
                                tracing::warn!(error = %e, suppressed, "ingest socket accept failed");
                            }
                            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    shared.telemetry.ingest.connections.inc();
                    // Admins by uid are known at once; other users' names and groups are
                    // looked up off this loop.
                    let who = Peer::of(&stream);
                    let uid = who.uid();
                    match lookups.known(who, stream) {
                        crate::access::Known::Ready(peer, stream) => (peer, stream),
                        crate::access::Known::Started => continue,
                        crate::access::Known::Busy(stream, why) => {
                            turn_away(stream, ("refused", why.to_owned()), ("(being identified)", uid));
                            continue;
                        }
                    }
                }
            };
            let role = {
                let groups = shared.roles.read().unwrap_or_else(|p| p.into_inner());
                role_of(&peer, &groups)
            };
            let admitted = if shared.allow.contains(&role) {
                shared
                    .gate
                    .admit(&peer, role)
                    .map_err(|r| ("refused", r.to_string()))
            } else {
                shared.telemetry.ingest.forbidden.inc();
                Err((
                    "forbidden",
                    format!(
                        "{} is a {}; the ingest socket takes events from {} ([ingest] allow)",
                        peer.user,
                        role.as_str(),
                        shared
                            .allow
                            .iter()
                            .map(|r| r.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            };
            let admission = match admitted {
                Ok(a) => a,
                Err(refusal) => {
                    turn_away(stream, refusal, (&peer.user, peer.uid));
                    continue;
                }
            };
            let conn = shared.clone();
            let cancel = cancel.clone();
            tracker.spawn(async move {
                conn.serve(stream, cancel).await;
                drop(admission);
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
        let mut batch = Vec::with_capacity(BATCH_EVENTS);
        // When the batch's first line was read: the latencies count from there.
        let mut read_at = std::time::Instant::now();
        // The time events without their own are stamped with (and future times are judged
        // by): taken after each wait, for the peer or for the engine, so the lines of one
        // read and batch share one reading of the clock.
        let mut now = self.clock.now();
        loop {
            let buffered = reader.line_buffered();
            // What was decoded goes before waiting for the peer (so every event read is
            // handed over however the connection ends), or once the batch is full.
            if !batch.is_empty() && (batch.len() >= BATCH_EVENTS || !buffered) {
                if !self.hand_over(&mut batch, read_at).await {
                    return; // the engine is gone: shutting down
                }
                now = self.clock.now();
            }
            let line = if buffered {
                // Already read: no wait, so neither the idle timer nor shutdown is asked.
                reader.next_line().await
            } else {
                let line = tokio::select! {
                    _ = cancel.cancelled() => {
                        // Lines still buffered were read: their events go too.
                        if !batch.is_empty() {
                            self.hand_over(&mut batch, read_at).await;
                        }
                        return;
                    }
                    l = tokio::time::timeout(self.idle_timeout, reader.next_line()) => match l {
                        Ok(l) => l,
                        Err(_) => {
                            tracing::debug!("ingest connection idle; closed");
                            return;
                        }
                    },
                };
                now = self.clock.now();
                line
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
                    &Defaults::at("ingest", &self.host, now, self.max_future_skew),
                ),
            };
            counters.lines.inc();
            match decoded {
                Ok(ev) => {
                    if batch.is_empty() {
                        read_at = std::time::Instant::now();
                    }
                    batch.push(ev);
                }
                Err(e) => counters.reject(&e, n),
            }
        }
    }

    /// Sends the batch to the engine once the budget has room for it; false when the engine
    /// is gone.
    async fn hand_over(&self, batch: &mut Vec<Event>, read_at: std::time::Instant) -> bool {
        let n = batch.len();
        let Ok(permit) = self.budget.clone().acquire_many_owned(n as u32).await else {
            return false;
        };
        let input = crate::engine::Input::Events {
            events: std::mem::replace(batch, Vec::with_capacity(BATCH_EVENTS)),
            read_at,
            permit: Some(permit),
        };
        if self.events.send(input).await.is_err() {
            return false;
        }
        self.telemetry.ingest.accepted.add(n as u64);
        true
    }
}
