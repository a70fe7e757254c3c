//! Plugins: programs in any language speaking NDJSON protocol 1 (plugins/README.md).
//!
//! Each enabled plugin runs under its own host task, which starts it in its folder, waits for
//! its hello, writes it the events its `subscribe` chooses (detectors) and a tick now and
//! then, reads its detections, events and log lines, and restarts it with backoff when it
//! exits. The engine offers events to detectors with `try_send` on each plugin's bounded
//! queue: a plugin that is slow or stops reading loses events (counted, for it alone) and
//! never slows the pipeline. On reload the supervisor starts new and changed plugins and
//! stops removed and changed ones; at shutdown each gets `shutdown` and a grace period.

pub mod config;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engine::{Filter, Input, PluginDetection};
use crate::event::{Defaults, Event};
use crate::plugin::config::{PROTOCOL, PluginConfig, PluginKind};
use crate::telemetry::{PluginStats, Telemetry};

/// The longest line a plugin may write; longer ones are refused (and counted).
const MAX_LINE: usize = 1 << 20;

/// One line of a plugin's output.
enum Line {
    Text(String),
    /// Longer than the limit (skipped through its newline) or not UTF-8.
    Bad(&'static str),
}

/// Reads the next line into `buf` (without its newline), never holding more than `max`
/// bytes; `None` at the end of the output.
async fn next_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Option<Line>> {
    buf.clear();
    let mut too_long = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                None
            } else {
                Some(finish(buf, too_long))
            });
        }
        let (take, done) = match memchr::memchr(b'\n', avail) {
            Some(i) => (i, Some(i + 1)),
            None => (avail.len(), None),
        };
        if !too_long {
            if buf.len() + take > max {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&avail[..take]);
            }
        }
        let used = done.unwrap_or(take);
        r.consume(used);
        if done.is_some() {
            return Ok(Some(finish(buf, too_long)));
        }
    }
}

fn finish(buf: &[u8], too_long: bool) -> Line {
    if too_long {
        return Line::Bad("a line longer than the limit");
    }
    match std::str::from_utf8(buf) {
        Ok(s) => Line::Text(s.trim_end_matches('\r').to_owned()),
        Err(_) => Line::Bad("a line that is not UTF-8"),
    }
}

/// A detector's subscription, as the engine task sees it.
pub struct Feed {
    name: String,
    filter: Filter,
    tx: mpsc::Sender<Event>,
    stats: Arc<PluginStats>,
}

/// The detectors' subscriptions, replaced on reload.
#[derive(Clone, Default)]
pub struct Feeds(Arc<RwLock<Vec<Feed>>>);

impl crate::engine::Tap for Feeds {
    /// Offers the input's events to every detector that subscribes to them (never blocks;
    /// never sends a plugin's own events back to it).
    fn offer(&self, input: &Input) {
        let feeds = self.0.read().unwrap_or_else(|p| p.into_inner());
        if feeds.is_empty() {
            return;
        }
        let one = |ev: &Event| {
            for f in feeds.iter() {
                if ev.source.strip_prefix("plugin:") == Some(f.name.as_str())
                    || !f.filter.matches(ev)
                {
                    continue;
                }
                match f.tx.try_send(ev.clone()) {
                    Ok(()) => f.stats.events_sent.inc(),
                    Err(_) => f.stats.events_dropped.inc(),
                }
            }
        };
        match input {
            Input::Event(ev, _) => one(ev),
            Input::Events { events, .. } => events.iter().for_each(one),
            Input::Tail { lines, .. } => lines.iter().for_each(|(_, ev)| one(ev)),
            _ => {}
        }
    }
}

struct Running {
    config: PluginConfig,
    cancel: CancellationToken,
}

/// Starts, stops and restarts the plugins as the configuration says.
pub struct Supervisor {
    running: HashMap<String, Running>,
    feeds: Feeds,
    events: mpsc::Sender<Input>,
    telemetry: Arc<Telemetry>,
    host: Arc<str>,
    tracker: TaskTracker,
    cancel: CancellationToken,
    max_grace: Duration,
    /// `[engine] max_future_skew`: events and detections stamped later are refused.
    pub max_future_skew: Duration,
}

impl Supervisor {
    pub fn new(
        feeds: Feeds,
        events: mpsc::Sender<Input>,
        telemetry: Arc<Telemetry>,
        host: Arc<str>,
        tracker: TaskTracker,
        cancel: CancellationToken,
        max_grace: Duration,
    ) -> Supervisor {
        Supervisor {
            max_grace,
            max_future_skew: crate::watermark::DEFAULT_MAX_FUTURE_SKEW,
            running: HashMap::new(),
            feeds,
            events,
            telemetry,
            host,
            tracker,
            cancel,
        }
    }

    /// Makes the running plugins match `configs`: unchanged ones keep running.
    pub fn apply(&mut self, configs: &[PluginConfig]) {
        self.running.retain(|name, r| {
            let keep = configs.iter().any(|c| c.name() == name && *c == r.config);
            if !keep {
                tracing::info!(plugin = %name, "stopping plugin (removed or changed)");
                r.cancel.cancel();
            }
            keep
        });
        let mut feeds = Vec::new();
        let mut stats_list = Vec::new();
        for c in configs {
            let existing = self
                .telemetry
                .plugins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .find(|s| s.name == c.name())
                .cloned();
            let stats = match (&existing, self.running.contains_key(c.name())) {
                (Some(s), true) => s.clone(),
                _ => Arc::new(PluginStats::new(c.name(), kind_name(c.manifest.kind))),
            };
            stats_list.push(stats.clone());
            if self.running.contains_key(c.name()) {
                // Unchanged and running: keep its feed.
                let old = self.feeds.0.read().unwrap_or_else(|p| p.into_inner());
                if let Some(f) = old.iter().find(|f| f.name == c.name()) {
                    feeds.push(Feed {
                        name: f.name.clone(),
                        filter: f.filter.clone(),
                        tx: f.tx.clone(),
                        stats: f.stats.clone(),
                    });
                }
                continue;
            }
            let (tx, rx) = mpsc::channel(c.queue());
            if c.manifest.kind == PluginKind::Detector {
                // Checked when the config was loaded; a detector without one receives nothing.
                let Some(Ok(filter)) = c.manifest.subscribe.as_ref().map(Filter::new) else {
                    tracing::error!(plugin = %c.name(), "detector without a valid `subscribe`; not started");
                    continue;
                };
                feeds.push(Feed {
                    name: c.name().to_owned(),
                    filter,
                    tx,
                    stats: stats.clone(),
                });
            }
            let cancel = self.cancel.child_token();
            let host = Host {
                max_grace: self.max_grace,
                max_future_skew: self.max_future_skew,
                config: c.clone(),
                events: self.events.clone(),
                stats,
                host: self.host.clone(),
                cancel: cancel.clone(),
            };
            tracing::info!(plugin = %c.name(), kind = kind_name(c.manifest.kind), "starting plugin");
            self.tracker.spawn(host.run(rx));
            self.running.insert(
                c.name().to_owned(),
                Running {
                    config: c.clone(),
                    cancel,
                },
            );
        }
        *self.feeds.0.write().unwrap_or_else(|p| p.into_inner()) = feeds;
        *self
            .telemetry
            .plugins
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = stats_list;
    }
}

fn kind_name(k: PluginKind) -> &'static str {
    match k {
        PluginKind::Detector => "detector",
        PluginKind::Source => "source",
    }
}

struct Host {
    config: PluginConfig,
    /// The longest a stopping plugin gets (under the daemon's shutdown deadline).
    max_grace: Duration,
    max_future_skew: Duration,
    events: mpsc::Sender<Input>,
    stats: Arc<PluginStats>,
    host: Arc<str>,
    cancel: CancellationToken,
}

/// How one run of a plugin ended.
enum End {
    /// Asked to stop.
    Stopped,
    /// It exited or failed: restart after a delay.
    Failed(String),
}

impl Host {
    async fn run(self, mut rx: mpsc::Receiver<Event>) {
        let m = &self.config.manifest;
        let mut delay = m.restart_delay;
        loop {
            let started = Instant::now();
            match self.run_once(&mut rx).await {
                End::Stopped => break,
                End::Failed(why) => {
                    self.stats.set_error(&why);
                    tracing::warn!(plugin = %self.config.name(), error = %why, retry_in = ?delay, "plugin stopped; restarting it");
                }
            }
            // A plugin that ran a good while before failing starts its backoff over.
            if started.elapsed() > m.max_restart_delay.max(Duration::from_secs(30)) {
                delay = m.restart_delay;
            }
            self.stats.set_state("backoff");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.cancel.cancelled() => break,
            }
            self.stats.restarts.inc();
            delay = (delay * 2).min(m.max_restart_delay);
        }
        self.stats.set_state("stopped");
        tracing::info!(plugin = %self.config.name(), "plugin stopped");
    }

    async fn run_once(&self, rx: &mut mpsc::Receiver<Event>) -> End {
        let name = self.config.name().to_owned();
        let m = &self.config.manifest;
        self.stats.set_state("starting");
        let program = {
            let local = self.config.dir.join(&m.command[0]);
            if m.command[0].contains('/') && local.exists() {
                local.into_os_string()
            } else {
                m.command[0].clone().into()
            }
        };
        let mut cmd = tokio::process::Command::new(&program);
        cmd.args(&m.command[1..])
            .args(&self.config.table.args)
            .envs(&m.env)
            .envs(&self.config.table.env)
            .env("INCIDENTD_PLUGIN", &name)
            .current_dir(&self.config.dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: set_pdeathsig only makes a syscall; nothing here allocates or locks.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return End::Failed(format!(
                    "cannot start `{}` in {}: {e}",
                    m.command.join(" "),
                    self.config.dir.display()
                ));
            }
        };
        let pgid = child.id().map(|p| p as i32);
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return End::Failed("no pipes to the plugin".into());
        };
        // stderr goes to the log, a line at a time, with the plugin's name; long or
        // non-UTF-8 lines are cut or mended, never a reason to stop reading.
        let log_name = name.clone();
        let mut stderr_task = tokio::spawn(async move {
            let mut r = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                match next_line(&mut r, &mut buf, 8192).await {
                    Ok(Some(Line::Text(line))) => tracing::info!(plugin = %log_name, "{line}"),
                    Ok(Some(Line::Bad(_))) => {
                        let text = String::from_utf8_lossy(&buf);
                        tracing::info!(plugin = %log_name, "{text} (cut or mended)");
                    }
                    Ok(None) | Err(_) => break,
                }
            }
        });
        let mut lines = BufReader::new(stdout);
        let mut buf = Vec::new();
        // The hello, first, in time.
        let hello = tokio::select! {
            l = tokio::time::timeout(m.hello_timeout, next_line(&mut lines, &mut buf, MAX_LINE)) => l,
            () = self.cancel.cancelled() => {
                self.kill(&mut child, pgid).await;
                drain_stderr(&mut stderr_task).await;
                return End::Stopped;
            }
        };
        let problem = match hello {
            Err(_) => Some(format!(
                "no hello within {}; killed",
                humantime::format_duration(m.hello_timeout)
            )),
            Ok(Ok(None)) => Some("exited before its hello".into()),
            Ok(Err(e)) => Some(format!("unreadable hello: {e}")),
            Ok(Ok(Some(Line::Bad(why)))) => Some(format!("unreadable hello: {why}")),
            Ok(Ok(Some(Line::Text(line)))) => check_hello(&line, &name).err(),
        };
        if let Some(p) = problem {
            self.kill(&mut child, pgid).await;
            drain_stderr(&mut stderr_task).await;
            return End::Failed(p);
        }
        self.stats.set_state("running");
        tracing::info!(plugin = %name, pid = ?child.id(), "plugin said hello");

        // The writer: events and ticks; a plugin that does not read blocks only this task.
        let writer_cancel = CancellationToken::new();
        let (back_tx, mut back_rx) = mpsc::channel::<mpsc::Receiver<Event>>(1);
        let mut queue = std::mem::replace(rx, mpsc::channel(1).1);
        let tick = m.tick_interval;
        let wc = writer_cancel.clone();
        let writer = tokio::spawn(async move {
            let mut stdin = stdin;
            let mut ticker = tokio::time::interval(tick);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // A source has no subscription: its queue is closed from the start.
            let mut open = true;
            let result: std::io::Result<()> = async {
                loop {
                    let line = tokio::select! {
                        () = wc.cancelled() => break,
                        ev = queue.recv(), if open => match ev {
                            Some(ev) => json!({"type": "event", "event": ev}),
                            None => {
                                open = false;
                                continue;
                            }
                        },
                        _ = ticker.tick() => {
                            let now = crate::clock::Clock::now(&crate::clock::SystemClock);
                            json!({"type": "tick", "now": now})
                        }
                    };
                    let mut bytes = line.to_string().into_bytes();
                    bytes.push(b'\n');
                    tokio::select! {
                        () = wc.cancelled() => break,
                        r = stdin.write_all(&bytes) => r?,
                    }
                }
                // Stopping: say so (briefly; it may not be reading).
                let _ = tokio::time::timeout(
                    Duration::from_secs(1),
                    stdin.write_all(b"{\"type\":\"shutdown\"}\n"),
                )
                .await;
                Ok(())
            }
            .await;
            // The queue goes back to the host for the next run.
            let _ = back_tx.send(queue).await;
            drop(stdin);
            result
        });

        let defaults_host = self.host.clone();
        let end = loop {
            tokio::select! {
                () = self.cancel.cancelled() => break End::Stopped,
                line = next_line(&mut lines, &mut buf, MAX_LINE) => match line {
                    Ok(None) => {
                        // Give it a moment to be reaped, so the reason is its exit status.
                        let status = tokio::time::timeout(Duration::from_secs(1), child.wait()).await;
                        break End::Failed(match status {
                            Ok(Ok(st)) => format!("exited ({st})"),
                            _ => "closed its output".into(),
                        });
                    }
                    Ok(Some(Line::Bad(why))) => self.malformed(why),
                    Ok(Some(Line::Text(line))) => self.on_line(&line, &defaults_host).await,
                    Err(e) => break End::Failed(format!("read failed: {e}")),
                },
            }
        };
        writer_cancel.cancel();
        let _ = writer.await;
        if let Some(q) = back_rx.recv().await {
            *rx = q;
        }
        let end = match end {
            End::Stopped => {
                // It was told to shut down: what it still writes within its grace is
                // handled, then it (and anything it started) is ended.
                let grace = m.shutdown_grace.min(self.max_grace);
                let _ = tokio::time::timeout(grace, async {
                    while let Ok(Some(line)) = next_line(&mut lines, &mut buf, MAX_LINE).await {
                        match line {
                            Line::Text(l) => self.on_line(&l, &defaults_host).await,
                            Line::Bad(why) => self.malformed(why),
                        }
                    }
                    let _ = child.wait().await;
                })
                .await;
                End::Stopped
            }
            failed => failed,
        };
        self.kill(&mut child, pgid).await;
        drain_stderr(&mut stderr_task).await;
        end
    }

    /// Ends the plugin and everything in its process group (children it started too):
    /// SIGTERM, a moment, then SIGKILL; reaps it.
    async fn kill(&self, child: &mut tokio::process::Child, pgid: Option<i32>) {
        use nix::sys::signal::{Signal, killpg};
        if let Some(pg) = pgid {
            let pg = nix::unistd::Pid::from_raw(pg);
            if killpg(pg, Signal::SIGTERM).is_ok() {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let _ = killpg(pg, Signal::SIGKILL);
            }
        }
        let _ = child.kill().await;
    }

    fn malformed(&self, why: &str) {
        self.stats.malformed.inc();
        self.stats.set_error(why);
        if let Some(suppressed) = self.stats.throttle.allow() {
            tracing::warn!(plugin = %self.config.name(), suppressed, "malformed plugin output: {why}");
        }
    }

    async fn on_line(&self, line: &str, host: &Arc<str>) {
        let name = self.config.name();
        let v: Value = match serde_json::from_str(line) {
            Ok(v) => v,
            Err(e) => return self.malformed(&format!("not JSON ({e})")),
        };
        match v["type"].as_str() {
            Some("detection") => {
                if self.config.manifest.kind != PluginKind::Detector {
                    return self.malformed("a source plugin sent a detection");
                }
                let mut v = v;
                let evidence = v.as_object_mut().and_then(|o| o.remove("evidence"));
                match serde_json::from_value::<PluginDetection>(v) {
                    Ok(mut d) => {
                        if let Err(why) = check_detection(&d) {
                            return self.malformed(&why);
                        }
                        let wall = crate::clock::Clock::now(&crate::clock::SystemClock);
                        if let Some(ts) = d.ts
                            && crate::watermark::too_far_ahead(ts, wall, self.max_future_skew)
                        {
                            return self.malformed(&format!(
                                "future_ts: detection time {ts} is more than the allowed skew ahead of wall time"
                            ));
                        }
                        if let Some(ev) = evidence.filter(|e| !e.is_null()) {
                            let source = format!("plugin:{name}");
                            let defaults = Defaults::at(&source, host, wall, self.max_future_skew);
                            match Event::decode(ev.to_string().as_bytes(), &defaults) {
                                Ok(e) => d.evidence = Some(e),
                                Err(e) => return self.malformed(&format!("bad evidence: {e}")),
                            }
                        }
                        self.stats.detections.inc();
                        let input = Input::Plugin {
                            plugin: name.to_owned(),
                            detection: d,
                        };
                        // Backpressure falls on this plugin only.
                        let _ = self.events.send(input).await;
                    }
                    Err(e) => self.malformed(&format!("bad detection: {e}")),
                }
            }
            Some("event") => {
                let raw = v["event"].to_string();
                let source = format!("plugin:{name}");
                let defaults = Defaults::at(
                    &source,
                    host,
                    crate::clock::Clock::now(&crate::clock::SystemClock),
                    self.max_future_skew,
                );
                match Event::decode(raw.as_bytes(), &defaults) {
                    Ok(mut ev) => {
                        // Marked as the plugin's, so it never goes back to it.
                        ev.source = source;
                        self.stats.events_emitted.inc();
                        let _ = self
                            .events
                            .send(Input::Event(ev, std::time::Instant::now()))
                            .await;
                    }
                    Err(e) => self.malformed(&format!("bad event: {e}")),
                }
            }
            Some("log") => {
                let msg = v["message"].as_str().unwrap_or("");
                match v["level"].as_str().unwrap_or("info") {
                    "error" => tracing::error!(plugin = %name, "{msg}"),
                    "warn" | "warning" => tracing::warn!(plugin = %name, "{msg}"),
                    "debug" => tracing::debug!(plugin = %name, "{msg}"),
                    _ => tracing::info!(plugin = %name, "{msg}"),
                }
            }
            Some("hello") => self.malformed("a second hello"),
            Some(other) => self.malformed(&format!("unknown message type `{other}`")),
            None => self.malformed("a line without `type`"),
        }
    }
}

/// Lets the stderr reader finish what the plugin wrote last (a traceback, say), briefly.
async fn drain_stderr(task: &mut tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(Duration::from_millis(500), &mut *task)
        .await
        .is_err()
    {
        task.abort();
    }
}

/// Bounds on what a detection may carry (a plugin is not trusted to be sane).
fn check_detection(d: &PluginDetection) -> Result<(), String> {
    if d.key.is_empty() || d.key.len() > 512 {
        return Err("a detection's key must be 1 to 512 bytes".into());
    }
    if d.summary.len() > 4096 {
        return Err("a detection's summary is over 4096 bytes".into());
    }
    if d.labels.len() > 64
        || d.labels
            .iter()
            .any(|(k, v)| k.len() > 128 || v.len() > 1024)
    {
        return Err("a detection carries over 64 labels, or a label too long".into());
    }
    // The years 1970 to 9999, as milliseconds.
    if let Some(ts) = d.ts
        && !(0..=253_402_300_799_999).contains(&ts.millis())
    {
        return Err(format!(
            "a detection's ts ({}) is out of range",
            ts.millis()
        ));
    }
    Ok(())
}

/// Checks the first line: `{"type":"hello","name":NAME,"protocol":1}`.
fn check_hello(line: &str, name: &str) -> Result<(), String> {
    let v: Value = serde_json::from_str(line)
        .map_err(|e| format!("its first line is not JSON ({e}); expected a hello"))?;
    if v["type"] != "hello" {
        return Err(format!(
            "its first line is not a hello: {}",
            line.chars().take(200).collect::<String>()
        ));
    }
    match v["protocol"].as_u64() {
        Some(p) if p == PROTOCOL as u64 => {}
        Some(p) => {
            return Err(format!(
                "it speaks protocol {p}; this incidentd speaks protocol {PROTOCOL}"
            ));
        }
        None => return Err("its hello has no `protocol` number".into()),
    }
    if v["name"].as_str() != Some(name) {
        return Err(format!(
            "its hello names `{}`, but it was started as `{name}`",
            v["name"].as_str().unwrap_or("")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos_are_checked() {
        assert!(check_hello(r#"{"type":"hello","name":"z","protocol":1}"#, "z").is_ok());
        assert!(
            check_hello(r#"{"type":"hello","name":"z","protocol":2}"#, "z")
                .unwrap_err()
                .contains("speaks protocol 2; this incidentd speaks protocol 1")
        );
        assert!(check_hello(r#"{"type":"detection"}"#, "z").is_err());
        assert!(check_hello("hello", "z").is_err());
        assert!(
            check_hello(r#"{"type":"hello","name":"y","protocol":1}"#, "z")
                .unwrap_err()
                .contains("names `y`")
        );
    }
}
