//! incidentd — turn a host's events and logs into incidents, and act on them.
//!
//! # Layout
//!
//! The modules mirror the data flow. Every arrow is a bounded tokio channel; a full channel
//! applies backpressure to stream sources, and anything dropped is counted by reason.
//!
//! ```text
//!  source ──Input──▶ engine ──Detection──▶ incident ──Change──▶ remediation (actions, approvals)
//!  socket, files,    rules over windows,   manager: dedup,       └──▶ notify (routes, outbox,
//!  journald, syslog, event time under      lifecycle, store           escalation)
//!  exec, probes,     one watermark              ▲
//!  plugins           (+ plugin detectors)       │
//!                      api (HTTP over a Unix socket) ◀──▶ incidentctl (cli), curl, scripts
//! ```
//!
//! - [`config`]: the TOML model, loading with `rules.d` merging, and validation that reports
//!   every error as `file:line: key: message`.
//! - [`event`]: the event schema and NDJSON decoding with reject reasons.
//! - [`source`]: inputs that produce events: the ingest socket, file tails, the journal,
//!   syslog datagrams, commands, host probes, and the line parsers.
//! - [`engine`]: one task owning all rule state; each rule kind is a plain synchronous detector;
//!   `incidentctl rules test` replays files through the same code.
//! - [`plugin`]: detector and source plugins over NDJSON, supervised.
//! - [`incident`]: the incident model, the status machine, and the manager — the single writer
//!   of the store, which answers a change only after it is durable.
//! - [`store`]: the `Store` trait and its sled implementation.
//! - [`remediation`]: actions, their policy (approvals, breakers), runs, and templates
//!   rendered by context.
//! - [`notify`]: notification routes, the durable outbox and the channels.
//! - [`api`]: the control API (hyper on a `UnixListener`, peers admitted and given roles by
//!   their credentials).
//! - [`cli`]: `incidentctl`: its HTTP client and subcommands.
//! - [`daemon`]: wiring, signals, sd_notify, reload and shutdown.
//! - [`telemetry`]: counters shown in `/v1/status`, rate-limited warnings, log setup.
//!
//! Leaf modules, used by the layers above and using none of them:
//! - [`clock`]: the one place that reads wall time.
//! - [`watermark`]: how event time and wall time move the engine's clock (wall time moves it
//!   only while every input is caught up; no event may move it more than `[engine]
//!   max_future_skew` ahead of wall time).
//! - [`access`]: who a local peer is (SO_PEERCRED), its role, and the connection gate.
//! - [`escape`]: control characters of untrusted text shown as visible escapes (CLI, logs).

pub mod access;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cursor;
pub mod daemon;
pub mod de;
pub mod detection;
pub mod engine;
pub mod escape;
pub mod event;
pub mod incident;
pub mod notification;
pub mod plugin;
pub mod port;
pub mod rate_window;
pub mod remediation;
pub mod replay;
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
