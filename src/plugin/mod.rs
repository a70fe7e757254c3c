//! Plugins: programs in any language speaking NDJSON protocol 1 (plugins/README.md).
//!
//! Each enabled plugin runs under its own host task, which starts it in its folder, waits for
//! its hello, writes it the events its `subscribe` chooses (detectors) and a tick now and
//! then, reads its detections, events and log lines, and restarts it with backoff when it
//! exits. The engine offers events to detectors with `try_send` on each plugin's bounded
//! queue: a plugin that is slow or stops reading loses events (counted, for it alone) and
//! never slows the pipeline. On reload the supervisor starts new and changed plugins and
//! stops removed and changed ones; at shutdown each gets `shutdown` and a grace period.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::plugin::{PROTOCOL, PluginConfig, PluginKind};
use crate::engine::{Filter, Input, PluginDetection};
use crate::event::{Defaults, Event};
use crate::telemetry::{PluginStats, Telemetry};

/// The longest line a plugin may write; longer ones are refused (and counted).
const MAX_LINE: usize = 1 << 20;

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

impl Feeds {
    /// Offers the input's events to every detector that subscribes to them (never blocks;
    /// never sends a plugin's own events back to it).
    pub fn offer(&self, input: &Input) {
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
}

impl Supervisor {
    pub fn new(
        feeds: Feeds,
        events: mpsc::Sender<Input>,
        telemetry: Arc<Telemetry>,
        host: Arc<str>,
        tracker: TaskTracker,
        cancel: CancellationToken,
    ) -> Supervisor {
        Supervisor {
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
        // stderr goes to the log, a line at a time, with the plugin's name.
        let log_name = name.clone();
        let stderr_task = tokio::spawn(async move {
            let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(8192));
            while let Some(line) = lines.next().await {
                if let Ok(line) = line {
                    tracing::info!(plugin = %log_name, "{line}");
                }
            }
        });
        let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE));

        // The hello, first, in time.
        let hello = tokio::select! {
            l = tokio::time::timeout(m.hello_timeout, lines.next()) => l,
            () = self.cancel.cancelled() => {
                self.stop(child, None, pgid).await;
                return End::Stopped;
            }
        };
        let problem = match hello {
            Err(_) => Some(format!(
                "no hello within {}; killed",
                humantime::format_duration(m.hello_timeout)
            )),
            Ok(None) => Some("exited before its hello".into()),
            Ok(Some(Err(e))) => Some(format!("unreadable hello: {e}")),
            Ok(Some(Ok(line))) => check_hello(&line, &name).err(),
        };
        if let Some(p) = problem {
            self.kill(&mut child, pgid).await;
            stderr_task.abort();
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
                line = lines.next() => match line {
                    None => break End::Failed(match child.try_wait() {
                        Ok(Some(st)) => format!("exited ({st})"),
                        _ => "closed its output".into(),
                    }),
                    Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                        self.malformed(&format!("a line longer than {MAX_LINE} bytes"));
                    }
                    Some(Err(LinesCodecError::Io(e))) => break End::Failed(format!("read failed: {e}")),
                    Some(Ok(line)) => self.on_line(&line, &defaults_host).await,
                },
            }
        };
        writer_cancel.cancel();
        let _ = writer.await;
        if let Some(q) = back_rx.recv().await {
            *rx = q;
        }
        match end {
            End::Stopped => {
                self.stop(child, Some(m.shutdown_grace), pgid).await;
                stderr_task.abort();
                End::Stopped
            }
            failed => {
                self.kill(&mut child, pgid).await;
                stderr_task.abort();
                failed
            }
        }
    }

    /// After `shutdown` was written: waits the grace period, then kills.
    async fn stop(
        &self,
        mut child: tokio::process::Child,
        grace: Option<Duration>,
        pgid: Option<i32>,
    ) {
        if let Some(g) = grace
            && tokio::time::timeout(g, child.wait()).await.is_ok()
        {
            return;
        }
        self.kill(&mut child, pgid).await;
    }

    async fn kill(&self, child: &mut tokio::process::Child, pgid: Option<i32>) {
        if let Some(pg) = pgid {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pg),
                nix::sys::signal::Signal::SIGKILL,
            );
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
                match serde_json::from_value::<PluginDetection>(v) {
                    Ok(d) => {
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
                let defaults = Defaults {
                    source: &source,
                    host,
                    now: crate::clock::Clock::now(&crate::clock::SystemClock),
                };
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
