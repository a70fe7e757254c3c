//! `[[source.syslog]]`: a Unix datagram socket in RFC 3164 or RFC 5424 (`logger -u PATH`,
//! rsyslog's omuxsock, anything speaking /dev/log). One datagram is one message; the level
//! comes from the priority.
//!
//! A datagram sender cannot be slowed down, so when the engine's queue is full the event is
//! dropped and counted (`dropped`), never silently.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::net::UnixDatagram;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::engine::Input;
use crate::source::parse::{Parser, text_of};
use crate::telemetry::SourceStats;

/// Largest datagram read; longer ones are cut by the kernel (and counted as oversize).
const MAX_DATAGRAM: usize = 64 * 1024;

pub struct SyslogSocket {
    pub socket: UnixDatagram,
    pub path: PathBuf,
    pub parser: Parser,
    pub events: mpsc::Sender<Input>,
    pub stats: Arc<SourceStats>,
    pub clock: Arc<dyn Clock>,
}

/// Binds the datagram socket at `path` (replacing a stale one) with `mode`.
pub fn bind(path: &Path, mode: u32) -> std::io::Result<UnixDatagram> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(m) = std::fs::symlink_metadata(path) {
        if !m.file_type().is_socket() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        // The control socket's claim already refused a second daemon, so this one is stale.
        std::fs::remove_file(path)?;
    }
    let s = UnixDatagram::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok(s)
}

impl SyslogSocket {
    pub async fn run(self, cancel: CancellationToken) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        tracing::info!(source = %self.stats.id, socket = %self.path.display(), "syslog socket listening");
        loop {
            let n = tokio::select! {
                _ = cancel.cancelled() => break,
                r = self.socket.recv(&mut buf) => match r {
                    Ok(n) => n,
                    Err(e) => {
                        self.stats.error("receive failed", &e);
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            self.stats.lines.inc();
            let mut msg = &buf[..n.min(MAX_DATAGRAM)];
            if n > MAX_DATAGRAM {
                self.stats.oversize.inc();
                self.stats
                    .warn_line("oversize", "datagram longer than 64 KiB; cut");
            }
            // Senders may end a message with a newline or a NUL.
            while let Some(rest) = msg
                .strip_suffix(b"\n")
                .or_else(|| msg.strip_suffix(b"\0"))
                .or_else(|| msg.strip_suffix(b"\r"))
            {
                msg = rest;
            }
            if msg.trim_ascii().is_empty() {
                continue;
            }
            let (text, lossy) = text_of(msg);
            if lossy {
                self.stats.invalid_utf8.inc();
                self.stats.warn_line(
                    "invalid_utf8",
                    "datagram has invalid UTF-8; decoded lossily",
                );
            }
            let parsed = self.parser.parse(&text, self.clock.now());
            if parsed.unparsed {
                self.stats.unparsed.inc();
                self.stats
                    .warn_line("unparsed", "datagram is not syslog; passed on raw");
            }
            if parsed.future {
                self.stats.future_ts(parsed.event.ts);
                continue;
            }
            match self
                .events
                .try_send(Input::Event(parsed.event, std::time::Instant::now()))
            {
                Ok(()) => self.stats.events.inc(),
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.stats.dropped.inc();
                    self.stats
                        .warn_line("dropped", "event queue full; syslog datagram dropped");
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break,
            }
        }
        let _ = std::fs::remove_file(&self.path);
        tracing::debug!(source = %self.stats.id, "syslog socket stopped");
    }
}
