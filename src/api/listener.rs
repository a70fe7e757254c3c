//! The control socket's server. One task accepts; each connection's peer is identified from
//! its credentials before a byte is read, and admitted by a [`ConnectionGate`]: at most
//! `max_connections` connections of non-admins, at most `max_connections_per_user` of any one
//! user (streams included), and admins — root, the daemon's own user, `admin_groups` — always,
//! so no user can lock out another or root. A refused connection is answered 503 with the
//! reason. Admitted connections are served by hyper's HTTP/1 with `header_timeout` for each
//! request's head, so a client trickling its headers is cut off.

use std::time::Duration;

use axum::extract::ConnectInfo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio_util::sync::CancellationToken;

use crate::access::{ConnectionGate, Peer, SharedRoles, role_of};

/// The control server's connection limits.
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_user: usize,
    pub header_timeout: Duration,
}

/// Serves `app` on `listener` until `cancel`, then lets requests in flight finish.
pub async fn serve(
    listener: UnixListener,
    limits: Limits,
    roles: SharedRoles,
    app: axum::Router,
    cancel: CancellationToken,
) {
    let gate = ConnectionGate::new(limits.max_connections, limits.max_connections_per_user);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let refused = crate::telemetry::Throttle::new(Duration::from_secs(10));
    let refusals = std::sync::Arc::new(tokio::sync::Semaphore::new(
        crate::access::MAX_ANSWERED_REFUSALS,
    ));
    let failed = crate::telemetry::Throttle::new(Duration::from_secs(10));
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r.map(|(s, _)| s),
        };
        let Some(stream) = connection(accepted, "control socket", &failed).await else {
            continue;
        };
        let peer = Peer::of(&stream);
        let role = {
            let groups = roles.read().unwrap_or_else(|p| p.into_inner());
            role_of(&peer, &groups)
        };
        let admission = match gate.admit(&peer, role) {
            Ok(a) => a,
            Err(why) => {
                if let Some(suppressed) = refused.allow() {
                    tracing::warn!(user = %peer.user, uid = ?peer.uid, reason = %why, suppressed,
                        "control connection refused");
                }
                if let Ok(slot) = refusals.clone().try_acquire_owned() {
                    tokio::spawn(async move {
                        refuse(stream, why.to_string()).await;
                        drop(slot);
                    });
                }
                continue;
            }
        };
        let app = app.clone().layer(axum::Extension(ConnectInfo(peer)));
        let held = (limits.header_timeout, admission);
        serve_connection(&graceful, stream, app, held, "control socket");
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a refused connection 503 with `why`, then discards what it sends for at most half
/// a second, so the client reads the answer instead of a broken pipe.
async fn refuse<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut stream: S,
    why: String,
) {
    let body =
        serde_json::json!({"error": {"code": "too_many_connections", "message": why}}).to_string();
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_millis(500), async {
        let _ = stream.write_all(answer.as_bytes()).await;
        let _ = stream.shutdown().await;
        let mut sink = [0u8; 4096];
        while matches!(stream.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}

/// Serves `app` on a loopback TCP `listener` (the web board, `/metrics`) until `cancel`: peers
/// are not known there, so at most `limits.max_connections` connections are served at once
/// (one more is answered 503 `too_many_connections`) and each request's head must arrive within
/// `limits.header_timeout`. `what` names the listener in the log.
pub async fn serve_tcp(
    listener: TcpListener,
    limits: &Limits,
    app: axum::Router,
    cancel: CancellationToken,
    what: &'static str,
) {
    let open = std::sync::Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let refusals = std::sync::Arc::new(tokio::sync::Semaphore::new(
        crate::access::MAX_ANSWERED_REFUSALS,
    ));
    let failed = crate::telemetry::Throttle::new(Duration::from_secs(10));
    let refused = crate::telemetry::Throttle::new(Duration::from_secs(10));
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r.map(|(s, _)| s),
        };
        let Some(stream) = connection(accepted, what, &failed).await else {
            continue;
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            if let Some(suppressed) = refused.allow() {
                tracing::warn!(
                    listener = what,
                    max_connections = limits.max_connections,
                    suppressed,
                    "connection refused: too many open"
                );
            }
            // Answered as the control socket answers, a bounded number at a time.
            if let Ok(answering) = refusals.clone().try_acquire_owned() {
                let why = format!(
                    "{} connections are open (max_connections)",
                    limits.max_connections
                );
                tokio::spawn(async move {
                    refuse(stream, why).await;
                    drop(answering);
                });
            }
            continue;
        };
        let held = (limits.header_timeout, slot);
        serve_connection(&graceful, stream, app.clone(), held, what);
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Serves one admitted connection with hyper's HTTP/1, each request head due within the
/// timeout given with `held`, and watched by `graceful`; `held`'s place under the limits is
/// let go when the connection ends. `what` names the listener in the log.
fn serve_connection<I, H>(
    graceful: &hyper_util::server::graceful::GracefulShutdown,
    io: I,
    app: axum::Router,
    (header_timeout, held): (Duration, H),
    what: &'static str,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    H: Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    let conn = graceful.watch(conn);
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(listener = what, error = %e, "connection ended with an error");
        }
        drop(held);
    });
}

/// The connection an accept gave, or `None` after a failed accept (out of descriptors, say):
/// said at most once per 10 s (`failed`), then a pause, so a lasting failure neither spins
/// nor floods the log. `what` names the listener.
async fn connection<S>(
    accepted: std::io::Result<S>,
    what: &'static str,
    failed: &crate::telemetry::Throttle,
) -> Option<S> {
    match accepted {
        Ok(s) => Some(s),
        Err(e) => {
            if let Some(suppressed) = failed.allow() {
                tracing::warn!(listener = what, error = %e, suppressed, "accept failed");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}
