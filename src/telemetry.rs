//! Operational counters, rate-limited warnings, and log setup.
//!
//! Every failure that can repeat is counted here and shown in `/v1/status`; its log line goes
//! through a [`Throttle`] so a flood of bad input yields one line per interval with the number
//! suppressed, never a thousand lines a second.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::event::DecodeError;

/// A monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Serialize for Counter {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.get())
    }
}

/// Lets one log line through per interval and counts the ones it held back.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Throttle {
    pub fn new(interval: Duration) -> Self {
        Throttle {
            interval,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(suppressed)` when this occurrence should be logged, with how many were held back
    /// since the last logged one.
    pub fn allow(&self) -> Option<u64> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match st.0 {
            Some(last) if now.duration_since(last) < self.interval => {
                st.1 += 1;
                None
            }
            _ => {
                let suppressed = st.1;
                *st = (Some(now), 0);
                Some(suppressed)
            }
        }
    }
}

/// Counters of one input (a socket, the events endpoint).
#[derive(Debug, Serialize)]
pub struct SourceCounters {
    pub id: &'static str,
    pub connections: Counter,
    /// Connections refused because the peer's role may not submit events.
    pub forbidden: Counter,
    /// Connections refused by the connection caps (per user, or all taken).
    pub refused: Counter,
    pub lines: Counter,
    pub accepted: Counter,
    /// Rejected lines by reason ([`DecodeError::REASONS`]).
    #[serde(serialize_with = "ser_reasons")]
    pub rejected: [Counter; DecodeError::REASONS.len()],
    #[serde(skip)]
    throttle: Throttle,
}

fn ser_reasons<S: serde::Serializer>(
    r: &[Counter; DecodeError::REASONS.len()],
    s: S,
) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut m = s.serialize_map(Some(r.len()))?;
    for (name, c) in DecodeError::REASONS.iter().zip(r) {
        m.serialize_entry(name, &c.get())?;
    }
    m.end()
}

impl SourceCounters {
    pub fn new(id: &'static str) -> Self {
        SourceCounters {
            id,
            connections: Counter::default(),
            forbidden: Counter::default(),
            refused: Counter::default(),
            lines: Counter::default(),
            accepted: Counter::default(),
            rejected: Default::default(),
            throttle: Throttle::new(Duration::from_secs(10)),
        }
    }

    /// Counts a rejected line and logs it, throttled.
    pub fn reject(&self, err: &DecodeError, line: u64) {
        self.rejected[err.reason_index()].inc();
        if let Some(suppressed) = self.throttle.allow() {
            tracing::warn!(source = self.id, line, reason = err.reason(), error = %err, suppressed,
                "rejected input line");
        }
    }

    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(Counter::get).sum()
    }
}

/// A latency histogram with fixed buckets (seconds), as Prometheus exposes them; quantiles
/// are estimated from the buckets.
#[derive(Debug)]
pub struct Histogram {
    /// Counts per bucket (not cumulative); the last one is +Inf.
    buckets: [AtomicU64; Histogram::BOUNDS.len() + 1],
    sum_micros: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Upper bounds in seconds.
    pub const BOUNDS: [f64; 16] = [
        0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
        5.0, 10.0,
    ];

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = Self::BOUNDS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(Self::BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// Cumulative counts per upper bound, `+Inf` last (`f64::INFINITY`).
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut total = 0;
        Self::BOUNDS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(&self.buckets)
            .map(|(b, c)| {
                total += c.load(Ordering::Relaxed);
                (b, total)
            })
            .collect()
    }

    /// The `q` quantile (0..1) in seconds, interpolated within its bucket; `None` when
    /// nothing was observed.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        quantile_of(&self.cumulative(), q)
    }
}

/// The `q` quantile of cumulative bucket counts (as [`Histogram::cumulative`] and a
/// Prometheus histogram give them), interpolated linearly within the bucket.
pub fn quantile_of(cumulative: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = cumulative.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut prev = (0.0, 0u64);
    for &(bound, count) in cumulative {
        if count as f64 >= rank {
            if !bound.is_finite() {
                return Some(prev.0);
            }
            let in_bucket = (count - prev.1) as f64;
            let frac = if in_bucket > 0.0 {
                (rank - prev.1 as f64) / in_bucket
            } else {
                1.0
            };
            return Some(prev.0 + (bound - prev.0) * frac);
        }
        prev = (bound, count);
    }
    Some(prev.0)
}

/// A value that goes up and down (files followed, bytes behind).
#[derive(Debug, Default)]
pub struct Gauge(AtomicU64);

impl Gauge {
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

impl Serialize for Gauge {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.get())
    }
}

/// Counters of one configured source (`[[source.*]]`).
#[derive(Debug, Serialize)]
pub struct SourceStats {
    pub id: String,
    /// file, syslog, exec or probe.
    pub kind: &'static str,
    /// Lines (or datagrams, or probe results) read.
    pub lines: Counter,
    /// Events handed to the engine.
    pub events: Counter,
    /// Lines no rule could match, counted and not parsed (file sources whose line filter is
    /// on: see `source::line_filter`).
    pub skipped: Counter,
    /// Lines the format could not read, passed on as raw `log` events.
    pub unparsed: Counter,
    /// Lines cut at `max_line_bytes`.
    pub oversize: Counter,
    /// Lines with invalid UTF-8, decoded lossily.
    pub invalid_utf8: Counter,
    /// Lines rejected because their time lies more than `[engine] max_future_skew` ahead of
    /// wall time.
    pub future_ts: Counter,
    /// Events dropped because the pipeline was full and the source cannot wait.
    pub dropped: Counter,
    /// Files followed now (file sources).
    pub files: Gauge,
    /// Bytes written to followed files and not read yet (file sources).
    pub lag_bytes: Gauge,
    /// Followed files that left their path (renamed away or deleted).
    pub rotations: Counter,
    /// Followed files that got shorter or were rewritten (copytruncate).
    pub truncations: Counter,
    /// Command restarts (exec sources).
    pub restarts: Counter,
    /// Failures (unreadable files, failed probes, commands that would not start).
    pub errors: Counter,
    #[serde(serialize_with = "ser_mutex")]
    pub last_error: Mutex<Option<String>>,
    #[serde(skip)]
    throttle: Throttle,
}

fn ser_mutex<S: serde::Serializer>(m: &Mutex<Option<String>>, s: S) -> Result<S::Ok, S::Error> {
    m.lock().unwrap_or_else(|p| p.into_inner()).serialize(s)
}

impl SourceStats {
    pub fn new(id: &str, kind: &'static str) -> Self {
        SourceStats {
            id: id.to_owned(),
            kind,
            lines: Counter::default(),
            events: Counter::default(),
            skipped: Counter::default(),
            unparsed: Counter::default(),
            oversize: Counter::default(),
            invalid_utf8: Counter::default(),
            future_ts: Counter::default(),
            dropped: Counter::default(),
            files: Gauge::default(),
            lag_bytes: Gauge::default(),
            rotations: Counter::default(),
            truncations: Counter::default(),
            restarts: Counter::default(),
            errors: Counter::default(),
            last_error: Mutex::new(None),
            throttle: Throttle::new(Duration::from_secs(10)),
        }
    }

    /// Counts a failure, remembers it for `/v1/status`, and logs it (throttled).
    pub fn error(&self, what: &str, error: &dyn std::fmt::Display) {
        self.errors.inc();
        let text = format!("{what}: {error}");
        if let Some(suppressed) = self.throttle.allow() {
            tracing::warn!(source = %self.id, kind = self.kind, error = %text, suppressed, "source problem");
        }
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(text);
    }

    /// Counts a line refused for a time too far ahead of wall time, and logs it (throttled).
    pub fn future_ts(&self, ts: crate::clock::Timestamp) {
        self.future_ts.inc();
        self.warn_line(
            "future_ts",
            &format!("line stamped {ts} is more than [engine] max_future_skew ahead of wall time; refused"),
        );
    }

    /// Logs a notable line-level problem (oversize, bad UTF-8, unparsed), throttled.
    pub fn warn_line(&self, reason: &'static str, detail: &str) {
        if let Some(suppressed) = self.throttle.allow() {
            tracing::warn!(source = %self.id, kind = self.kind, reason, detail, suppressed, "source line problem");
        }
    }
}

/// Everything the daemon counts.
#[derive(Debug, Serialize)]
pub struct Telemetry {
    #[serde(skip)]
    pub started: Instant,
    pub ingest: SourceCounters,
    pub api_events: SourceCounters,
    pub engine_events: Counter,
    pub detections: Counter,
    pub detections_dropped: Counter,
    /// Detections skipped because they were already applied before a crash.
    pub detections_replayed: Counter,
    pub incidents_created: Counter,
    /// SLAs breached (`sla_breached` entries).
    pub sla_breaches: Counter,
    pub incidents_deduplicated: Counter,
    /// Store writes the group commit saved: detections written with others of their
    /// incident in one change, beyond the first of each.
    pub detections_coalesced: Counter,
    /// Detections joined to another key's incident by correlation.
    pub incidents_correlated: Counter,
    pub incidents_reopened: Counter,
    pub incidents_rate_limited: Counter,
    pub store_errors: Counter,
    /// Why the store cannot make changes durable now (`/v1/health` says `degraded`).
    #[serde(skip)]
    store_failing: Mutex<Option<String>>,
    #[serde(skip)]
    store_throttle: Throttle,
    /// Action runs by result, and runs the policy held back.
    pub action_runs_ok: Counter,
    pub action_runs_failed: Counter,
    pub action_held: Counter,
    /// Runs whose verification found the incident still firing.
    pub action_ineffective: Counter,
    /// Runs waiting for approval (as of the last look, at most a second old).
    pub action_pending: Gauge,
    /// Notification deliveries by result, and jobs waiting in the outbox.
    pub notifications_delivered: Counter,
    pub notifications_failed: Counter,
    pub notifications_dead: Counter,
    pub notifications_suppressed: Counter,
    pub notifications_queued: Gauge,
    /// Deliveries per (channel, peer) of channels with several peers (Alertmanager `urls`).
    pub peers: Mutex<std::collections::BTreeMap<(String, String), PeerStats>>,
    /// Automatic runs each action's circuit breaker held back (the self-watch opens an
    /// incident when it trips).
    pub breaker_trips: Mutex<std::collections::BTreeMap<String, u64>>,
    /// Deliveries per channel (its peers summed), for `GET /v1/channels`.
    pub channels: Mutex<std::collections::BTreeMap<String, PeerStats>>,
    #[serde(skip)]
    remediation_throttle: Throttle,
    /// Engine checkpoints made durable.
    pub checkpoints: Counter,
    /// The engine's clock and what moved it (`/v1/status` `watermark`).
    pub watermark: WatermarkStats,
    /// From an event's arrival at its source to the detection it caused.
    #[serde(skip)]
    pub event_to_detection: Histogram,
    /// From a detection to its incident change being durable.
    #[serde(skip)]
    pub detection_to_incident: Histogram,
    /// From an event's arrival to the incident change it caused being durable.
    #[serde(skip)]
    pub event_to_incident: Histogram,
    /// Result of the last reload, shown in `/v1/status`.
    #[serde(skip)]
    pub reload: Mutex<ReloadStatus>,
    /// The configured sources, registered as they start.
    #[serde(skip)]
    pub sources: Mutex<Vec<std::sync::Arc<SourceStats>>>,
    /// The enabled plugins, replaced on reload.
    #[serde(skip)]
    pub plugins: Mutex<Vec<std::sync::Arc<PluginStats>>>,
    /// The privilege preflight's warnings, as (action, problem), replaced at start and reload.
    #[serde(skip)]
    pub preflight: Mutex<Vec<(String, String)>>,
    /// Channels whose host the unit's address policy blocks, as (channel, problem).
    #[serde(skip)]
    pub unreachable: Mutex<Vec<(String, String)>>,
}

/// Inputs named in `watermark.late_by_input` at most.
pub const MAX_LATE_INPUTS: usize = 64;

/// The engine's clock as `/v1/status` shows it (see [`crate::watermark`]).
#[derive(Debug, Serialize)]
pub struct WatermarkStats {
    /// The engine's clock (milliseconds since the epoch; `null` before any time is known).
    #[serde(serialize_with = "ser_clock")]
    pub clock: std::sync::atomic::AtomicI64,
    /// Inputs that have data not handed to the engine yet, as of the last tick.
    pub inputs_behind: Gauge,
    /// Ticks that moved the clock to wall time (every input caught up).
    pub wall_advances: Counter,
    /// Ticks that left the clock on event time because some input was behind.
    pub held: Counter,
    /// Set when a checkpointed clock lay ahead of wall time and was pulled back at start.
    #[serde(serialize_with = "ser_locked")]
    pub pulled_back: Mutex<Option<String>>,
    /// Events dropped as late (behind the watermark by more than a rule allows), per input.
    #[serde(serialize_with = "ser_locked")]
    pub late_by_input: Mutex<std::collections::BTreeMap<String, u64>>,
}

fn ser_clock<S: serde::Serializer>(
    c: &std::sync::atomic::AtomicI64,
    s: S,
) -> Result<S::Ok, S::Error> {
    match c.load(Ordering::Relaxed) {
        i64::MIN => s.serialize_none(),
        ms => crate::clock::Timestamp(ms).serialize(s),
    }
}

impl Default for WatermarkStats {
    fn default() -> Self {
        WatermarkStats {
            clock: std::sync::atomic::AtomicI64::new(i64::MIN),
            inputs_behind: Gauge::default(),
            wall_advances: Counter::default(),
            held: Counter::default(),
            pulled_back: Mutex::new(None),
            late_by_input: Mutex::new(Default::default()),
        }
    }
}

impl WatermarkStats {
    pub fn set_clock(&self, t: crate::clock::Timestamp) {
        self.clock.store(t.millis(), Ordering::Relaxed);
    }

    /// Adds late events per input. An event's `source` can come from a client, so the map
    /// holds at most [`MAX_LATE_INPUTS`] names; the rest are counted under `(other)`.
    pub fn add_late(&self, late: impl IntoIterator<Item = (String, u64)>) {
        let mut m = self.late_by_input.lock().unwrap_or_else(|p| p.into_inner());
        for (input, n) in late {
            let key = if m.contains_key(&input) || m.len() < MAX_LATE_INPUTS {
                input
            } else {
                "(other)".to_owned()
            };
            *m.entry(key).or_default() += n;
        }
    }
}

/// Health and counters of one plugin (`/v1/status` `plugins`, `/metrics`).
#[derive(Debug, Serialize)]
pub struct PluginStats {
    pub name: String,
    pub kind: &'static str,
    /// starting, running, backoff, stopped.
    #[serde(serialize_with = "ser_locked")]
    pub state: Mutex<&'static str>,
    pub restarts: Counter,
    /// Events written to it, and events dropped because its queue was full.
    pub events_sent: Counter,
    pub events_dropped: Counter,
    pub detections: Counter,
    /// Events it sent into the pipeline.
    pub events_emitted: Counter,
    /// Lines it wrote that were refused.
    pub malformed: Counter,
    #[serde(serialize_with = "ser_locked")]
    pub last_error: Mutex<Option<String>>,
    #[serde(skip)]
    pub throttle: Throttle,
}

fn ser_locked<T: Serialize, S: serde::Serializer>(v: &Mutex<T>, s: S) -> Result<S::Ok, S::Error> {
    v.lock().unwrap_or_else(|p| p.into_inner()).serialize(s)
}

impl PluginStats {
    pub fn new(name: &str, kind: &'static str) -> PluginStats {
        PluginStats {
            name: name.to_owned(),
            kind,
            state: Mutex::new("starting"),
            restarts: Counter::default(),
            events_sent: Counter::default(),
            events_dropped: Counter::default(),
            detections: Counter::default(),
            events_emitted: Counter::default(),
            malformed: Counter::default(),
            last_error: Mutex::new(None),
            throttle: Throttle::new(Duration::from_secs(10)),
        }
    }

    pub fn set_state(&self, s: &'static str) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    pub fn set_error(&self, e: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_owned());
    }
}

impl Telemetry {
    /// Logs a remediation warning, at most once per 10 s with the count held back.
    pub fn warn_remediation(&self, message: &str) {
        if let Some(suppressed) = self.remediation_throttle.allow() {
            tracing::warn!(suppressed, "{message}");
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct ReloadStatus {
    pub generation: u64,
    pub last_ok_at: Option<crate::clock::Timestamp>,
    pub last_error: Option<String>,
    pub last_error_at: Option<crate::clock::Timestamp>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            started: Instant::now(),
            ingest: SourceCounters::new("ingest"),
            api_events: SourceCounters::new("api"),
            engine_events: Counter::default(),
            detections: Counter::default(),
            detections_dropped: Counter::default(),
            detections_replayed: Counter::default(),
            incidents_created: Counter::default(),
            sla_breaches: Counter::default(),
            incidents_deduplicated: Counter::default(),
            detections_coalesced: Counter::default(),
            incidents_correlated: Counter::default(),
            incidents_reopened: Counter::default(),
            incidents_rate_limited: Counter::default(),
            store_errors: Counter::default(),
            store_failing: Mutex::new(None),
            store_throttle: Throttle::new(Duration::from_secs(10)),
            action_runs_ok: Counter::default(),
            action_runs_failed: Counter::default(),
            action_held: Counter::default(),
            action_ineffective: Counter::default(),
            action_pending: Gauge::default(),
            notifications_delivered: Counter::default(),
            notifications_failed: Counter::default(),
            notifications_dead: Counter::default(),
            notifications_suppressed: Counter::default(),
            notifications_queued: Gauge::default(),
            peers: Mutex::new(Default::default()),
            channels: Mutex::new(Default::default()),
            breaker_trips: Mutex::new(Default::default()),
            remediation_throttle: Throttle::new(Duration::from_secs(10)),
            checkpoints: Counter::default(),
            watermark: WatermarkStats::default(),
            event_to_detection: Histogram::default(),
            detection_to_incident: Histogram::default(),
            event_to_incident: Histogram::default(),
            reload: Mutex::new(ReloadStatus::default()),
            sources: Mutex::new(Vec::new()),
            plugins: Mutex::new(Vec::new()),
            preflight: Mutex::new(Vec::new()),
            unreachable: Mutex::new(Vec::new()),
        }
    }
}

impl Telemetry {
    /// Records the outcome of a flush: a failure is remembered for `/v1/health`, counted and
    /// logged (throttled: a full disk fails every batch); a success clears it.
    pub fn store_health<E: std::fmt::Display>(&self, flushed: &Result<(), E>) {
        let mut failing = self.store_failing.lock().unwrap_or_else(|p| p.into_inner());
        match flushed {
            Ok(()) => {
                if failing.take().is_some() {
                    tracing::info!("the store makes changes durable again");
                }
            }
            Err(e) => {
                self.store_errors.inc();
                let text = format!("store writes are failing: {e}");
                if let Some(suppressed) = self.store_throttle.allow() {
                    tracing::error!(error = %e, suppressed, "store flush failed; answering the batch with errors");
                }
                *failing = Some(text);
            }
        }
    }

    /// Counts a failed store operation and logs it, throttled with the flush failures (a full
    /// disk fails every write).
    pub fn store_error(&self, what: &str, e: &dyn std::fmt::Display) {
        self.store_errors.inc();
        if let Some(suppressed) = self.store_throttle.allow() {
            tracing::error!(error = %e, suppressed, "{what}");
        }
    }

    /// Why the store cannot make changes durable now, if it cannot.
    pub fn store_failing(&self) -> Option<String> {
        self.store_failing
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Registers a configured source's counters and returns them.
    pub fn source(&self, id: &str, kind: &'static str) -> std::sync::Arc<SourceStats> {
        let stats = std::sync::Arc::new(SourceStats::new(id, kind));
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(stats.clone());
        stats
    }

    pub fn source_stats(&self) -> Vec<std::sync::Arc<SourceStats>> {
        self.sources
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_reload(&self, f: impl FnOnce(&mut ReloadStatus)) {
        f(&mut self.reload.lock().unwrap_or_else(|p| p.into_inner()));
    }
}

/// Sets up the global tracing subscriber. `RUST_LOG` overrides the default `info` filter.
pub fn init_logging(format: LogFormat) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = match format {
        // systemd sets JOURNAL_STREAM when stderr goes to the journal.
        LogFormat::Auto if std::env::var_os("JOURNAL_STREAM").is_some() => LogFormat::Journald,
        LogFormat::Auto => LogFormat::Text,
        f => f,
    };
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    let ansi = format == LogFormat::Text && std::io::stderr().is_terminal();
    let _ = match format {
        // JSON escapes control characters itself.
        LogFormat::Json => builder
            .with_writer(std::io::stderr)
            .json()
            .flatten_event(true)
            .try_init(),
        // The journal stamps each line itself.
        LogFormat::Journald => builder
            .with_writer(EscapingStderr { ansi: false })
            .without_time()
            .with_ansi(false)
            .try_init(),
        _ => builder
            .with_writer(EscapingStderr { ansi })
            .with_ansi(ansi)
            .try_init(),
    };
}

/// Text and journald logs: every event is one line, whatever its fields hold. The formatter
/// writes each event with one `write` of the whole line; control characters in it (a newline
/// in an alert's summary, an escape sequence in a user name from auth.log) are escaped, all
/// but the line's own end and, on a terminal, the formatter's colours.
#[derive(Clone, Copy)]
struct EscapingStderr {
    ansi: bool,
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for EscapingStderr {
    type Writer = EscapingStderr;
    fn make_writer(&'a self) -> Self::Writer {
        *self
    }
}

impl std::io::Write for EscapingStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (&*text, ""),
        };
        let line = crate::escape::escape_controls(body, false, self.ansi, &[]);
        let mut err = std::io::stderr().lock();
        err.write_all(line.as_bytes())?;
        err.write_all(end.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_and_estimates_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.quantile(0.5), None);
        for _ in 0..90 {
            h.observe(Duration::from_micros(700)); // bucket (0.5 ms, 1 ms]
        }
        for _ in 0..10 {
            h.observe(Duration::from_millis(40)); // bucket (25 ms, 50 ms]
        }
        assert_eq!(h.count(), 100);
        let c = h.cumulative();
        assert_eq!(c.last(), Some(&(f64::INFINITY, 100)));
        let p50 = h.quantile(0.5).unwrap();
        assert!((0.0005..=0.001).contains(&p50), "{p50}");
        let p99 = h.quantile(0.99).unwrap();
        assert!((0.025..=0.05).contains(&p99), "{p99}");
        assert!((h.sum_seconds() - (0.063 + 0.4)).abs() < 1e-6);
        h.observe(Duration::from_secs(60));
        assert_eq!(h.quantile(1.0), Some(10.0), "+Inf reports the last bound");
    }
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// journald when started by systemd with its journal on stderr, else text.
    #[default]
    Auto,
    Text,
    Json,
    Journald,
}

impl Telemetry {
    /// The preflight's warnings as JSON: `[{"action", "problem"}]`.
    pub fn preflight_json(&self) -> serde_json::Value {
        pairs_json(&self.preflight, "action")
    }

    /// The unreachable channels as JSON: `[{"channel", "problem"}]`.
    pub fn unreachable_json(&self) -> serde_json::Value {
        pairs_json(&self.unreachable, "channel")
    }
}

fn pairs_json(list: &Mutex<Vec<(String, String)>>, what: &str) -> serde_json::Value {
    let w = list.lock().unwrap_or_else(|p| p.into_inner());
    serde_json::Value::Array(
        w.iter()
            .map(|(a, p)| serde_json::json!({what: a, "problem": p}))
            .collect(),
    )
}

/// One peer of a channel with several (an Alertmanager of an HA cluster), or one channel.
#[derive(Clone, Debug, Default, Serialize)]
pub struct PeerStats {
    pub delivered: u64,
    /// Attempts that failed and will be retried.
    pub failed_attempts: u64,
    pub dead_lettered: u64,
    /// Its jobs in the outbox (timed resends included).
    pub queued: u64,
    /// The last failure, cleared by the next delivery.
    pub last_error: Option<String>,
    pub last_delivered_at: Option<crate::clock::Timestamp>,
}

impl Telemetry {
    /// Updates one peer's figures (`peer` as shown: without a password).
    pub fn peer(&self, channel: &str, peer: &str, f: impl FnOnce(&mut PeerStats)) {
        let mut m = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry((channel.to_owned(), peer.to_owned())).or_default());
    }

    /// An automatic run of `action` held back by its circuit breaker.
    pub fn breaker_tripped(&self, action: &str) {
        let mut m = self.breaker_trips.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry(action.to_owned()).or_default() += 1;
    }

    /// Updates one channel's figures.
    pub fn channel(&self, channel: &str, f: impl FnOnce(&mut PeerStats)) {
        let mut m = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        f(m.entry(channel.to_owned()).or_default());
    }

    /// Sets every channel's queue length (a channel with nothing queued gets 0).
    pub fn set_channels_queued(&self, counts: std::collections::HashMap<String, u64>) {
        let mut m = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in m.iter_mut() {
            v.queued = counts.get(k).copied().unwrap_or(0);
        }
        for (k, n) in counts {
            m.entry(k).or_default().queued = n;
        }
    }

    /// Sets every peer's queue length (a peer with nothing queued gets 0).
    pub fn set_peers_queued(&self, counts: std::collections::HashMap<(String, String), u64>) {
        let mut m = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        for (k, v) in m.iter_mut() {
            v.queued = counts.get(k).copied().unwrap_or(0);
        }
        for (k, n) in counts {
            m.entry(k).or_default().queued = n;
        }
    }
}
