//! `[[source.exec]]`: a long-running command whose stdout lines are events, e.g.
//! `journalctl -f -o json` with `format = "journald"`.
//!
//! No shell is involved. The command's stderr is logged (throttled); when the command exits
//! it is restarted after `restart_delay`, doubled after each quick exit up to
//! `max_restart_delay`, and reset once a run lasted longer than that. Its stdout is read with
//! backpressure: a full pipeline makes the command wait on its pipe.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::lines::{Line, LineReader};
use crate::clock::Clock;
use crate::engine::Input;
use crate::source::config::ExecSourceConfig;
use crate::source::parse::{Parser, text_of};
use crate::telemetry::SourceStats;

pub struct ExecSource {
    pub config: ExecSourceConfig,
    pub parser: Parser,
    pub events: mpsc::Sender<Input>,
    pub stats: Arc<SourceStats>,
    pub clock: Arc<dyn Clock>,
}

enum Ended {
    Cancelled,
    EngineGone,
    Exited,
}

impl ExecSource {
    pub async fn run(self, cancel: CancellationToken) {
        let mut delay = self.config.restart_delay;
        let mut first = true;
        loop {
            if !first {
                self.stats.restarts.inc();
                tracing::info!(source = %self.config.id, delay = ?delay, "restarting command");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
            first = false;
            let started = Instant::now();
            match self.run_once(&cancel).await {
                Ended::Cancelled | Ended::EngineGone => return,
                Ended::Exited => {}
            }
            delay = if started.elapsed() > self.config.max_restart_delay {
                self.config.restart_delay
            } else {
                (delay * 2).min(self.config.max_restart_delay)
            };
        }
    }

    async fn run_once(&self, cancel: &CancellationToken) -> Ended {
        let argv = &self.config.command;
        let mut cmd = Command::new(&argv[0]);
        // If incidentd dies (even by SIGKILL) the command gets SIGTERM instead of living on
        // as an orphan that a restarted daemon would start a second copy of.
        // SAFETY: the closure runs in the child between fork and exec and only makes one
        // async-signal-safe system call.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = match cmd
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
        {
            Ok(c) => c,
            Err(e) => {
                self.stats
                    .error(&format!("cannot start `{}`", argv.join(" ")), &e);
                return Ended::Exited;
            }
        };
        tracing::info!(source = %self.config.id, command = %argv.join(" "), pid = child.id(), "command started");
        let (Some(stdout), Some(stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Ended::Exited;
        };
        let id = self.config.id.clone();
        let max = self.config.max_line_bytes;
        let stderr_task = tokio::spawn(async move {
            // Read to the end whatever it is (lines of any length, invalid UTF-8), so the
            // command never blocks or dies on a full or closed stderr pipe.
            let mut lines = LineReader::new(BufReader::new(stderr), max);
            let throttle = crate::telemetry::Throttle::new(Duration::from_secs(1));
            while let Ok(Some(l)) = lines.next_line().await {
                let text = match l {
                    Line::Complete(b) => text_of(b).0.into_owned(),
                    Line::Oversize => format!("(a line longer than {max} bytes)"),
                };
                if let Some(suppressed) = throttle.allow() {
                    tracing::warn!(source = %id, stderr = %text, suppressed, "command wrote to stderr");
                }
            }
        });
        let mut reader = LineReader::new(
            BufReader::with_capacity(64 * 1024, stdout),
            self.config.max_line_bytes,
        );
        let ended = loop {
            let line = tokio::select! {
                _ = cancel.cancelled() => break Ended::Cancelled,
                l = reader.next_line() => l,
            };
            match line {
                Ok(Some(Line::Complete(b))) => {
                    self.stats.lines.inc();
                    if b.trim_ascii().is_empty() {
                        continue;
                    }
                    let (text, lossy) = text_of(b);
                    if lossy {
                        self.stats.invalid_utf8.inc();
                        self.stats
                            .warn_line("invalid_utf8", "line has invalid UTF-8; decoded lossily");
                    }
                    let parsed = self.parser.parse(&text, self.clock.now());
                    if parsed.unparsed {
                        self.stats.unparsed.inc();
                        self.stats.warn_line(
                            "unparsed",
                            "line not in the source's format; passed on raw",
                        );
                    }
                    if parsed.future {
                        self.stats.future_ts(parsed.event.ts);
                        continue;
                    }
                    if self
                        .events
                        .send(Input::Event(parsed.event, std::time::Instant::now()))
                        .await
                        .is_err()
                    {
                        break Ended::EngineGone;
                    }
                    self.stats.events.inc();
                }
                Ok(Some(Line::Oversize)) => {
                    self.stats.lines.inc();
                    self.stats.oversize.inc();
                    self.stats.warn_line(
                        "oversize",
                        &format!(
                            "line longer than {} bytes skipped",
                            self.config.max_line_bytes
                        ),
                    );
                }
                Ok(None) => break Ended::Exited,
                Err(e) => {
                    self.stats.error("reading the command's output failed", &e);
                    break Ended::Exited;
                }
            }
        };
        if !matches!(ended, Ended::Exited) {
            let _ = child.start_kill();
        }
        match child.wait().await {
            Ok(status) if matches!(ended, Ended::Exited) => {
                self.stats
                    .error(&format!("command `{}` exited", argv.join(" ")), &status);
            }
            Ok(_) => {}
            Err(e) => self.stats.error("waiting for the command failed", &e),
        }
        stderr_task.abort();
        ended
    }
}
