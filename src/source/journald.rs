//! `[[source.journald]]`: the systemd journal, or a journal folder, read with `journalctl`.
//!
//! Each poll runs `journalctl -o json` from the last entry handed on (`--cursor`, its first
//! line dropped when it is that very entry: inclusive seeking also works where systemd 252's
//! `--after-cursor` skips an entry under a filter) to the journal's current end, and exits.
//! Reading to the end of a run is being caught up, which the watermark needs to know
//! (wall time moves the engine's clock only while every input is caught up), and a run that
//! ends can never hide entries the way `journalctl -f` does (it shows one boot and, without
//! `-n all`, skips to the last ten lines).
//!
//! Entries go to the engine in batches with the cursor of their last entry
//! ([`Input::Journal`]); the engine records it once they are applied, so the checkpoint
//! holds it together with the windows they fed. After a restart reading resumes at the
//! checkpointed cursor: entries written while incidentd was down are read, none twice
//! (detections from entries applied before a crash carry the entry's sequence number as
//! their idempotency id).

use std::process::Stdio;
use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::engine::{Input, JournalPos};
use crate::event::Event;
use crate::source::config::{JournaldSourceConfig, ReadFrom};
use crate::source::lines::{Line, LineReader};
use crate::source::parse::{Parser, text_of};
use crate::telemetry::SourceStats;

/// Entries per batch sent to the engine.
const BATCH: usize = 256;
/// Longer journal records (as JSON) are skipped and counted as oversize.
const MAX_RECORD_BYTES: usize = 1 << 20;

/// One `[[source.journald]]` at run time.
pub struct JournaldSource {
    pub config: JournaldSourceConfig,
    pub parser: Parser,
    pub events: mpsc::Sender<Input>,
    pub stats: Arc<SourceStats>,
    pub clock: Arc<dyn Clock>,
    /// The cursor of the last entry applied, from the checkpoint.
    pub cursor: Option<String>,
    /// This source's part of the watermark: behind while a run has entries left to read.
    pub progress: crate::watermark::InputProgress,
    /// The cursor an over-long record was last skipped after (it is not counted twice).
    pub oversize_after: Option<String>,
}

/// Why a run stopped early.
enum Stop {
    Cancelled,
    EngineGone,
}

impl JournaldSource {
    /// Polls until `cancel`.
    pub async fn run(mut self, cancel: CancellationToken) {
        tracing::info!(source = %self.config.id, directory = ?self.config.directory,
            cursor = self.cursor.is_some(), "reading the journal");
        if self.cursor.is_none() && self.config.read_from == ReadFrom::End {
            // Only entries after the current last one. The end is handed on at once, so the
            // checkpoint holds it even if no entry follows before a restart (which must then
            // read what came while incidentd was down, not seek to the end again). Until the
            // end is known nothing is read: reading from the start is not what was asked.
            loop {
                match self.last_cursor().await {
                    Ok(Some(c)) => {
                        let mut end = Some(c);
                        if !self.hand_on(&mut Vec::new(), &mut end).await {
                            return;
                        }
                        break;
                    }
                    // An empty journal: everything that comes is new.
                    Ok(None) => break,
                    Err(e) => {
                        self.stats
                            .error("journalctl cannot find the journal's end", &e);
                        // Nothing it can read: it does not hold the clock meanwhile.
                        self.progress.set_behind(false);
                    }
                }
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(self.config.poll_interval) => {}
                }
            }
        }
        loop {
            self.progress.set_behind(true);
            match self.read_once(&cancel).await {
                Ok(()) => {}
                Err(Stop::Cancelled) | Err(Stop::EngineGone) => break,
            }
            // Read to the end (or failed, which a retry may mend): not holding the clock.
            self.progress.set_behind(false);
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tokio::time::sleep(self.config.poll_interval) => {}
            }
        }
        tracing::debug!(source = %self.config.id, "journald source stopped");
    }

    /// `journalctl` with this source's folder and filters.
    fn command(&self) -> Command {
        let c = &self.config;
        let mut cmd = Command::new(&c.journalctl);
        cmd.args(["-o", "json", "--no-pager", "-q"]);
        if let Some(d) = &c.directory {
            cmd.arg("--directory").arg(d);
        }
        for u in &c.units {
            cmd.arg(format!("--unit={u}"));
        }
        for t in &c.identifiers {
            cmd.arg(format!("--identifier={t}"));
        }
        if let Some(p) = &c.priority {
            cmd.arg(format!("--priority={p}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// The cursor of the journal's last entry (under the filters); `None` when it is empty.
    async fn last_cursor(&self) -> std::io::Result<Option<String>> {
        let out = self.command().args(["-n", "1"]).output().await?;
        if !out.status.success() {
            return Err(std::io::Error::other(stderr_excerpt(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .last()
            .and_then(cursor_of)
            .map(str::to_owned))
    }

    /// One run of `journalctl` from the cursor to the journal's end.
    async fn read_once(&mut self, cancel: &CancellationToken) -> Result<(), Stop> {
        let mut cmd = self.command();
        if let Some(c) = &self.cursor {
            cmd.arg(format!("--cursor={c}"));
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                self.stats.error(
                    &format!("cannot start {}", self.config.journalctl.display()),
                    &e,
                );
                return Ok(());
            }
        };
        let (Some(stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
            return Ok(());
        };
        let stderr_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = (&mut stderr).take(64 * 1024).read_to_end(&mut buf).await;
            // Drain the rest so journalctl never blocks on a full pipe.
            let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
            buf
        });
        let mut reader = LineReader::new(
            BufReader::with_capacity(64 * 1024, stdout),
            MAX_RECORD_BYTES,
        );
        let mut batch: Vec<(JournalPos, Event)> = Vec::new();
        let mut last_cursor: Option<String> = None;
        let mut first = true;
        loop {
            let line = tokio::select! {
                _ = cancel.cancelled() => return Err(Stop::Cancelled),
                l = reader.next_line() => l,
            };
            let record = match line {
                Ok(Some(Line::Complete(b))) => b,
                Ok(Some(Line::Oversize)) => {
                    // Its cursor is unknown, so while it is the journal's last record every
                    // poll reads it again: counted once per place it stands.
                    let after = last_cursor.clone().or_else(|| self.cursor.clone());
                    if self.oversize_after != after {
                        self.stats.lines.inc();
                        self.stats.oversize.inc();
                        self.stats.warn_line(
                            "oversize",
                            &format!("journal record longer than {MAX_RECORD_BYTES} bytes skipped"),
                        );
                        self.oversize_after = after;
                    }
                    continue;
                }
                Ok(None) => break,
                Err(e) => {
                    self.stats.error("cannot read journalctl's output", &e);
                    break;
                }
            };
            let (text, lossy) = text_of(record);
            let Some(cursor) = cursor_of(&text) else {
                continue;
            };
            // `--cursor` is inclusive: the entry it names was handed on already.
            if std::mem::replace(&mut first, false) && self.cursor.as_deref() == Some(cursor) {
                continue;
            }
            self.stats.lines.inc();
            if lossy {
                self.stats.invalid_utf8.inc();
            }
            let cursor = cursor.to_owned();
            let pos = position_of(&cursor);
            last_cursor = Some(cursor);
            let parsed = self.parser.parse(&text, self.clock.now());
            if parsed.future {
                self.stats.future_ts(parsed.event.ts);
            } else if let Some(pos) = pos {
                self.stats.events.inc();
                batch.push((pos, parsed.event));
            }
            if batch.len() >= BATCH && !self.hand_on(&mut batch, &mut last_cursor).await {
                return Err(Stop::EngineGone);
            }
        }
        if !self.hand_on(&mut batch, &mut last_cursor).await {
            return Err(Stop::EngineGone);
        }
        let status = child.wait().await;
        let err = stderr_task.await.unwrap_or_default();
        match status {
            Ok(s) if s.success() => {}
            Ok(s) => self.stats.error(
                "journalctl failed",
                &format!("{s}: {}", stderr_excerpt(&err)),
            ),
            Err(e) => self.stats.error("journalctl failed", &e),
        }
        Ok(())
    }

    /// Sends the batch with the cursor of its last entry; the source's own cursor moves on
    /// (entries refused for their time move it too). False when the engine is gone.
    async fn hand_on(
        &mut self,
        batch: &mut Vec<(JournalPos, Event)>,
        last_cursor: &mut Option<String>,
    ) -> bool {
        let Some(cursor) = last_cursor.take() else {
            return true;
        };
        let input = Input::Journal {
            source: self.config.id.clone(),
            entries: std::mem::take(batch),
            cursor: cursor.clone(),
            read_at: Instant::now(),
        };
        if self.events.send(input).await.is_err() {
            return false;
        }
        self.cursor = Some(cursor);
        true
    }
}

/// The `__CURSOR` of a `journalctl -o json` record, found without parsing the whole record
/// (cursors hold no quotes or escapes).
fn cursor_of(record: &str) -> Option<&str> {
    let start = record.find("\"__CURSOR\":\"")? + "\"__CURSOR\":\"".len();
    let len = record[start..].find('"')?;
    Some(&record[start..start + len])
}

/// The sequence-number id (its first 64 bits) and number a cursor names
/// (`s=<id>;i=<hex number>;b=…`).
fn position_of(cursor: &str) -> Option<JournalPos> {
    let mut seq_id = None;
    let mut seqnum = None;
    for part in cursor.split(';') {
        if let Some(s) = part.strip_prefix("s=") {
            seq_id = u64::from_str_radix(s.get(..16)?, 16).ok();
        } else if let Some(i) = part.strip_prefix("i=") {
            seqnum = u64::from_str_radix(i, 16).ok();
        }
    }
    Some(JournalPos {
        seq_id: seq_id?,
        seqnum: seqnum?,
    })
}

/// The start of what a program wrote to stderr, on one line.
fn stderr_excerpt(b: &[u8]) -> String {
    let text = String::from_utf8_lossy(b);
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    one.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_give_their_position() {
        let c = "s=bfedcb6507a44a4097749cb854e245a7;i=1f;b=0123456789abcdef0123456789abcdef;m=f4240;t=6585747c9aba1;x=aab016f5a3c74811";
        let rec = format!(r#"{{"_PID":"4000","__CURSOR":"{c}","MESSAGE":"hi"}}"#);
        assert_eq!(cursor_of(&rec), Some(c));
        assert_eq!(
            position_of(c),
            Some(JournalPos {
                seq_id: 0xbfedcb6507a44a40,
                seqnum: 0x1f
            })
        );
        assert_eq!(cursor_of(r#"{"MESSAGE":"no cursor"}"#), None);
        assert_eq!(position_of("s=zz;i=1"), None);
        assert_eq!(position_of("i=1"), None);
    }
}
