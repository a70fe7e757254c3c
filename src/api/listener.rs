//! The control socket's listener with a cap on concurrent connections: a connection holds a
//! permit for as long as it is open, and accepting waits for a free one, so a flood of
//! clients queues in the kernel's backlog instead of exhausting the daemon. One user other
//! than root and the daemon's own may hold at most half of the permits (its further
//! connections are closed at once), so idle connections of one user cannot lock out the
//! others.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub struct CappedListener {
    inner: UnixListener,
    permits: Arc<Semaphore>,
    per_user: Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>,
    per_user_max: usize,
    refused: crate::telemetry::Throttle,
}

impl CappedListener {
    pub fn new(inner: UnixListener, max_connections: usize) -> Self {
        CappedListener {
            inner,
            permits: Arc::new(Semaphore::new(max_connections.max(1))),
            per_user: Default::default(),
            per_user_max: (max_connections / 2).max(1),
            refused: crate::telemetry::Throttle::new(std::time::Duration::from_secs(10)),
        }
    }
}

/// An accepted connection and its permit, given back when the connection is dropped.
pub struct CappedStream {
    pub stream: UnixStream,
    _permit: OwnedSemaphorePermit,
    _user: Option<UserSlot>,
}

/// One of a user's connections, counted while it is open.
struct UserSlot {
    uid: u32,
    counts: Arc<std::sync::Mutex<std::collections::HashMap<u32, usize>>>,
}

impl Drop for UserSlot {
    fn drop(&mut self) {
        let mut m = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.uid);
            }
        }
    }
}

impl axum::serve::Listener for CappedListener {
    type Io = CappedStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // The semaphore is never closed, so acquiring only waits.
        let permit = loop {
            if let Ok(p) = self.permits.clone().acquire_owned().await {
                break p;
            }
        };
        let me = nix::unistd::geteuid().as_raw();
        loop {
            match self.inner.accept().await {
                Ok((stream, addr)) => {
                    let uid = stream.peer_cred().map(|c| c.uid()).ok();
                    let slot = match uid {
                        Some(u) if u != 0 && u != me => {
                            let mut m = self.per_user.lock().unwrap_or_else(|p| p.into_inner());
                            let n = m.entry(u).or_insert(0);
                            if *n >= self.per_user_max {
                                drop(m);
                                if let Some(suppressed) = self.refused.allow() {
                                    tracing::warn!(
                                        uid = u,
                                        max = self.per_user_max,
                                        suppressed,
                                        "control connection refused: this user holds its share of connections"
                                    );
                                }
                                // Closed at once; the permit serves the next client.
                                drop(stream);
                                continue;
                            }
                            *n += 1;
                            Some(UserSlot {
                                uid: u,
                                counts: self.per_user.clone(),
                            })
                        }
                        _ => None,
                    };
                    return (
                        CappedStream {
                            stream,
                            _permit: permit,
                            _user: slot,
                        },
                        addr,
                    );
                }
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

impl AsyncRead for CappedStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for CappedStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}
