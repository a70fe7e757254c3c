//! incidentd — turn a host's events and logs into incidents, and act on them.
//!
//! # Layout
//!
//! The modules mirror the data flow, and import each other in one direction only (from the
//! top of this list down; `tests/structure.rs` checks it). Every arrow is a bounded tokio
//! channel; a full channel applies backpressure to stream sources, and anything dropped is
//! counted by reason.
//!
//! ```text
//!  source ──Input──▶ engine ──DetectionSink──▶ incident ──durable change log (ChangeFeed)──┐
//!  socket, files,    rules over windows,       manager: dedup,            ├─▶ remediation │
//!  journald, syslog, event time under          lifecycle, the single      └─▶ notification│
//!  exec, probes,     one watermark             writer of the incident log                 │
//!  plugins (Tap)                                    ▲                                       │
//!                      api (HTTP over a Unix socket) ◀──▶ incidentctl (cli), curl, scripts
//! ```
//!
//! Tools and wiring:
//! - [`selfwatch`]: the daemon's own failures (sources, plugins, channels, the store) as
//!   incidents under `incidentd/…`.
//! - [`daemon`]: wiring (ports, sinks, feeds), signals, sd_notify, reload and shutdown.
//! - [`cli`]: `incidentctl`: its HTTP client and subcommands.
//! - [`api`]: the control API (hyper on a `UnixListener`, peers admitted and given roles by
//!   their credentials).
//! - [`replay`]: `incidentctl rules test`, files through the same engine.
//! - [`config`]: loading with `rules.d` merging and validation that reports every error as
//!   `file:line: key: message`; the top-level struct. Each component owns its section's types.
//!
//! Storage:
//! - [`store`]: every component's storage port implemented on sled, one file per port, and
//!   the healing wrapper.
//!
//! Components:
//! - [`notification`]: routes (grouping, inhibition), the durable outbox, one file per channel
//!   kind, the channel list and test messages.
//! - [`remediation`]: actions (one file per kind), their policy (approvals, breakers), runs,
//!   templates rendered by context; follows the change log.
//! - [`incident`]: the model, the status machine, the manager (the single writer of the
//!   incident log, answering a change only after it is durable), its storage port and the
//!   change feed its followers read.
//! - [`source`]: inputs that produce events: the ingest socket, file tails, the journal,
//!   syslog datagrams, commands, host probes, and the line parsers.
//! - [`plugin`]: detector and source plugins over NDJSON, supervised.
//! - [`engine`]: one task owning all rule state; each rule kind a synchronous detector in its
//!   own file behind one trait; it emits into a sink it defines.
//!
//! Leaf modules, used by the layers above and using none of them:
//! - [`event`]: the event schema and NDJSON decoding with reject reasons; `Recycle`, the
//!   bounded channel through which the engine hands applied events back to their file tail.
//! - [`detection`]: detections, their origins and idempotency ids, checkpoint coverage.
//! - [`cursor`]: where a file tail or a journald source had read to.
//! - [`severity`]: the severities, sev1 (worst) to sev4.
//! - [`port`]: what every storage port shares (`StoreError`, `Durable`).
//! - [`rate_window`]: the one keyed sliding-window rate limit.
//! - [`telemetry`]: counters shown in `/v1/status`, rate-limited warnings, log setup.
//! - [`clock`]: the one place that reads wall time.
//! - [`watermark`]: how event time and wall time move the engine's clock (wall time moves it
//!   only while every input is caught up; no event may move it more than `[engine]
//!   max_future_skew` ahead of wall time).
//! - [`access`]: who a local peer is (SO_PEERCRED; the owner of a loopback TCP connection's
//!   client end, by sock_diag), its role, and the connection gate.
//! - [`escape`]: control characters of untrusted text shown as visible escapes (CLI, logs).
//! - [`capped`]: an HTTP answer read up to a limit (notification channels, HTTP actions).
//! - [`de`]: serde helpers for config values, and the config error type.
//! - [`condition`]: `where` conditions (equality, regexes, lists, networks, comparisons, `not`).

pub mod access;
pub mod api;
pub mod capped;
pub mod cli;
pub mod clock;
pub mod condition;
pub mod config;
pub mod cursor;
pub mod daemon;
pub mod de;
pub mod detection;
pub mod engine;
pub mod escape;
pub mod event;
pub mod fail2ban;
pub mod incident;
pub mod notification;
pub mod plugin;
pub mod port;
pub mod rate_window;
pub mod remediation;
pub mod replay;
pub mod selfwatch;
pub mod severity;
pub mod source;
pub mod store;
pub mod telemetry;
pub mod watermark;

/// The one HTTP client of the daemon (probes; later notification channels): rustls on ring,
/// connect and request timeouts, and a User-Agent. Installs the ring crypto provider first,
/// which reqwest's `rustls-no-provider` build requires.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    // Already installed (by an earlier call) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .user_agent(concat!("incidentd/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(30))
        .build()
}
