//! The control socket's server. One task accepts; each connection's peer is identified from
//! its credentials before a byte is read (its user name and groups looked up off the accept
//! loop, see [`crate::access::Lookups`]), and admitted by a [`ConnectionGate`]: at most
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

use crate::access::{Admission, ConnectionGate, Known, Peer, SharedRoles, role_of};

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
    let doors = Doors::new(&limits, roles);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let failed = crate::telemetry::Throttle::new(Duration::from_secs(10));
    let mut lookups =
        crate::access::Lookups::new("control socket", limits.max_connections_per_user);
    loop {
        let (peer, stream) = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(known) = lookups.next() => known,
            r = listener.accept() => {
                let Some(stream) = connection(r.map(|(s, _)| s), "control socket", &failed).await
                else {
                    continue;
                };
                let who = Peer::of(&stream);
                let Some(known) = doors.identify(&lookups, who, stream, "control socket") else {
                    continue;
                };
                known
            }
        };
        let Some((admission, stream)) = doors.admit(&peer, stream, "control socket") else {
            continue;
        };
        let app = app.clone().layer(axum::Extension(ConnectInfo(peer)));
        let held = (limits.header_timeout, admission);
        serve_connection(&graceful, stream, app, held, "control socket");
    }
    // Connections still being identified are closed with their listener.
    drop((listener, lookups));
    graceful.shutdown().await;
}

/// Admission at a listener: the gate, the roles that make admins, and the answers of refused
/// connections (logged at most once per 10 s, answered a bounded number at a time).
struct Doors {
    gate: ConnectionGate,
    roles: SharedRoles,
    refused: crate::telemetry::Throttle,
    answering: std::sync::Arc<tokio::sync::Semaphore>,
}

impl Doors {
    fn new(limits: &Limits, roles: SharedRoles) -> Doors {
        Doors {
            gate: ConnectionGate::new(limits.max_connections, limits.max_connections_per_user),
            roles,
            refused: crate::telemetry::Throttle::new(Duration::from_secs(10)),
            answering: std::sync::Arc::new(tokio::sync::Semaphore::new(
                crate::access::MAX_ANSWERED_REFUSALS,
            )),
        }
    }

    /// `stream` with its place under the caps, or `None` when `peer` is refused: then the
    /// stream is answered 503 with the reason (or closed, when too many are being answered).
    fn admit<S>(&self, peer: &Peer, stream: S, what: &'static str) -> Option<(Admission, S)>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let role = {
            let groups = self.roles.read().unwrap_or_else(|p| p.into_inner());
            role_of(peer, &groups)
        };
        match self.gate.admit(peer, role) {
            Ok(a) => Some((a, stream)),
            Err(why) => {
                self.turn_away(stream, (&peer.user, peer.uid), why.to_string(), what);
                None
            }
        }
    }

    /// Refuses `stream` of `user` for `why`: logged, and answered 503 with the reason.
    fn turn_away<S>(&self, stream: S, user: (&str, Option<u32>), why: String, what: &'static str)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        if let Some(suppressed) = self.refused.allow() {
            tracing::warn!(listener = what, user = %user.0, uid = ?user.1,
                reason = %why, suppressed, "connection refused");
        }
        if let Ok(slot) = self.answering.clone().try_acquire_owned() {
            tokio::spawn(async move {
                refuse(stream, why).await;
                drop(slot);
            });
        }
    }

    /// The connection and its peer when `who` is known now; `None` when its user is being
    /// looked up (it comes back from `lookups`) or it was refused because too many are.
    fn identify<S>(
        &self,
        lookups: &crate::access::Lookups<S>,
        who: crate::access::Identity,
        stream: S,
        what: &'static str,
    ) -> Option<(Peer, S)>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let uid = who.uid();
        match lookups.known(who, stream) {
            Known::Ready(peer, stream) => Some((peer, stream)),
            Known::Started => None,
            Known::Busy(stream, why) => {
                self.turn_away(stream, ("(being identified)", uid), why.to_owned(), what);
                None
            }
        }
    }
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

/// Serves `app` on a TCP `listener` (the web board, `/metrics`) until `cancel`. Each
/// connection is admitted as on the control socket (at most `max_connections` of non-admins,
/// at most `max_connections_per_user` of one user, admins always), its user being the owner
/// of the client's end as the kernel tells ([`Peer::tcp_owner`]); connections whose owner the
/// kernel does not tell (clients on other hosts) count as one anonymous user. The user
/// database is asked off the accept loop, so a slow directory never holds up root or the
/// daemon's own user. Each request's head must arrive within `limits.header_timeout`. `what`
/// names the listener in the log.
pub async fn serve_tcp(
    listener: TcpListener,
    (limits, roles): (&Limits, SharedRoles),
    app: axum::Router,
    cancel: CancellationToken,
    what: &'static str,
) {
    if let Err(e) = tokio::task::spawn_blocking(crate::access::tcp_owner::check)
        .await
        .unwrap_or_else(|e| Err(crate::access::tcp_owner::OwnerError::Answer(e.to_string())))
    {
        tracing::error!(listener = what, error = %e,
            "cannot tell which local user opens a connection; every connection counts as one anonymous user's");
    }
    let doors = Doors::new(limits, roles);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let failed = crate::telemetry::Throttle::new(Duration::from_secs(10));
    let unknown = crate::telemetry::Throttle::new(Duration::from_secs(60));
    let mut lookups = crate::access::Lookups::new(what, limits.max_connections_per_user);
    loop {
        let (peer, stream) = tokio::select! {
            _ = cancel.cancelled() => break,
            Some(known) = lookups.next() => known,
            r = listener.accept() => {
                let Some(stream) = connection(r.map(|(s, _)| s), what, &failed).await else {
                    continue;
                };
                let who = match Peer::tcp_owner(&stream) {
                    Ok(uid) => Peer::identity(uid, None, None),
                    Err(e) => {
                        let remote = matches!(e, crate::access::tcp_owner::OwnerError::Remote { .. });
                        if !remote && let Some(suppressed) = unknown.allow() {
                            tracing::warn!(listener = what, error = %e, suppressed,
                                "the user behind a connection is not known; it counts as one anonymous user");
                        }
                        crate::access::Identity::Known(Peer::unknown())
                    }
                };
                let Some(known) = doors.identify(&lookups, who, stream, what) else {
                    continue;
                };
                known
            }
        };
        let Some((admission, stream)) = doors.admit(&peer, stream, what) else {
            continue;
        };
        serve_connection(
            &graceful,
            stream,
            app.clone(),
            (limits.header_timeout, admission),
            what,
        );
    }
    // Connections still being identified are closed with their listener.
    drop((listener, lookups));
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
