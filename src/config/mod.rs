//! Configuration: the TOML model of DESIGN §3.8, loading with `rules.d` merging, and
//! validation.
//!
//! Loading is "parse raw, validate purely": [`load`] reads the main file and every
//! `rules_dir/*.toml`, deserializes each table on its own so that one mistake does not hide
//! the next, and returns either a complete [`Config`] or every error found, each as
//! `file:line: key: message`. Nothing here binds or spawns; the daemon builds from the result,
//! and reload runs the very same path.

pub mod action;
mod de;
mod load;
pub mod notify;
pub mod plugin;
pub mod rule;
pub mod source;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use de::Pattern;
pub use load::{ConfigError, ConfigErrors, load, load_rules, load_str};
pub use rule::{Condition, RuleCommon, RuleConfig, RuleKindConfig};
pub use source::{LineFormat, Parsing, SourcesConfig};

use de::{duration, octal_mode};

/// The whole, validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The main config file.
    pub path: PathBuf,
    pub rules_dir: PathBuf,
    pub plugins_dir: PathBuf,
    pub daemon: DaemonConfig,
    /// `[engine]`.
    pub engine: EngineConfig,
    pub control: ControlConfig,
    pub ingest: IngestConfig,
    pub incidents: IncidentsConfig,
    pub sources: SourcesConfig,
    /// `[[service]]` tables: the dependency graph for correlation and root cause.
    pub services: Vec<ServiceConfig>,
    /// `[[action]]` tables.
    pub actions: Vec<action::ActionConfig>,
    /// `[remediation]`.
    pub remediation: action::RemediationConfig,
    /// `[[plugin]]` tables with their manifests.
    pub plugins: Vec<plugin::PluginConfig>,
    /// `[[channel]]`, `[[route]]`, `[[escalation]]`, `[notifications]`.
    pub notify: notify::NotifyConfig,
    /// Rules from the main file, then from `rules_dir/*.toml` in file name order.
    pub rules: Vec<RuleConfig>,
}

impl Config {
    /// The control socket's path (relative names live in `runtime_dir`).
    pub fn control_socket(&self) -> PathBuf {
        self.daemon.runtime_dir.join(&self.control.socket)
    }

    pub fn ingest_socket(&self) -> PathBuf {
        self.daemon.runtime_dir.join(&self.ingest.socket)
    }

    /// Overrides from the command line (`--state-dir`, `--runtime-dir`), resolved against
    /// the current directory as a shell user expects.
    pub fn override_dirs(&mut self, state_dir: Option<&Path>, runtime_dir: Option<&Path>) {
        let cwd = std::env::current_dir().unwrap_or_default();
        if let Some(p) = state_dir {
            self.daemon.state_dir = cwd.join(p);
        }
        if let Some(p) = runtime_dir {
            self.daemon.runtime_dir = cwd.join(p);
        }
    }
}

/// `[[service]]`: a service and the services it depends on (its upstreams).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    pub name: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
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

/// `[daemon]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Where sled keeps its files. Default `$STATE_DIRECTORY` (systemd) or /var/lib/incidentd.
    pub state_dir: PathBuf,
    /// Where sockets live. Default `$RUNTIME_DIRECTORY` (systemd) or /run/incidentd.
    pub runtime_dir: PathBuf,
    pub log_format: LogFormat,
    /// How long events stay available for evidence.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    pub max_events_in_memory: usize,
    /// Capacity of the source → engine channel.
    pub event_queue: usize,
    /// Capacity of the engine → incident manager channel.
    pub detection_queue: usize,
    /// How long shutdown may take before the daemon names what is stuck and exits.
    #[serde(deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    /// How often the engine's window state is saved (also at shutdown).
    #[serde(deserialize_with = "duration")]
    pub checkpoint_interval: Duration,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        let env_dir = |var: &str, fallback: &str| {
            std::env::var_os(var)
                // systemd may list several folders separated by ':'; the first is ours.
                .and_then(|v| {
                    v.to_str()
                        .and_then(|s| s.split(':').next())
                        .map(PathBuf::from)
                })
                .unwrap_or_else(|| PathBuf::from(fallback))
        };
        DaemonConfig {
            state_dir: env_dir("STATE_DIRECTORY", "/var/lib/incidentd"),
            runtime_dir: env_dir("RUNTIME_DIRECTORY", "/run/incidentd"),
            log_format: LogFormat::Auto,
            retention: Duration::from_secs(3600),
            max_events_in_memory: 100_000,
            event_queue: 8192,
            detection_queue: 1024,
            shutdown_timeout: Duration::from_secs(20),
            checkpoint_interval: Duration::from_secs(10),
        }
    }
}

/// `[control]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Control socket; a relative name lives in `runtime_dir`.
    pub socket: PathBuf,
    /// Octal mode of the control socket.
    #[serde(deserialize_with = "octal_mode")]
    pub socket_mode: u32,
    /// Groups whose members are admins (root always is).
    pub admin_groups: Vec<String>,
    /// Groups whose members may change status, notes, tags and assignment.
    pub responder_groups: Vec<String>,
    /// Optional TCP listener for `/metrics` only.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Optional loopback TCP listener for the web board (off by default).
    pub web_listen: Option<std::net::SocketAddr>,
    /// The token the board's buttons (acknowledge, mitigate, resolve) must send; without
    /// one the board only reads. Peer credentials do not cross TCP.
    pub web_token: Option<notify::Secret>,
    /// Concurrent API connections of non-admins at most (admins are never turned away).
    pub max_connections: usize,
    /// Concurrent connections (streams included) of one user other than an admin.
    pub max_connections_per_user: usize,
    /// A request's headers must arrive within this long, or the connection is closed.
    #[serde(deserialize_with = "de::positive_duration")]
    pub header_timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take before it is answered 503.
    #[serde(deserialize_with = "de::positive_duration")]
    pub request_timeout: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: PathBuf::from("control.sock"),
            socket_mode: 0o660,
            admin_groups: Vec::new(),
            responder_groups: Vec::new(),
            metrics_listen: None,
            web_listen: None,
            web_token: None,
            max_connections: 64,
            max_connections_per_user: 8,
            header_timeout: Duration::from_secs(10),
            max_body_bytes: 8 << 20,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// `[engine]`: how the engine's clock may move (see [`crate::watermark`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// Events stamped further ahead of wall time than this are rejected (`future_ts`) on
    /// every input, so no event can move the clock into the future.
    #[serde(deserialize_with = "duration")]
    pub max_future_skew: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_future_skew: crate::watermark::DEFAULT_MAX_FUTURE_SKEW,
        }
    }
}

/// `[ingest]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// NDJSON ingest socket; a relative name lives in `runtime_dir`.
    pub socket: PathBuf,
    #[serde(deserialize_with = "octal_mode")]
    pub socket_mode: u32,
    /// The socket's group (a name); the daemon's own group when unset. Who can open the
    /// socket is decided by its mode and group; who may submit events by `allow`.
    pub socket_group: Option<String>,
    /// Roles whose connections may submit events (peer credentials, as on the control
    /// API); others are refused and counted as `forbidden`.
    pub allow: Vec<crate::access::Role>,
    /// Longer lines are rejected (counted as `oversize`) and skipped.
    pub max_line_bytes: usize,
    /// Concurrent ingest connections at most (admins' connections are not counted).
    pub max_connections: usize,
    /// Concurrent connections of one user other than an admin.
    pub max_connections_per_user: usize,
    /// A connection that sends nothing for this long is closed.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            socket: PathBuf::from("ingest.sock"),
            socket_mode: 0o660,
            socket_group: None,
            allow: vec![crate::access::Role::Admin, crate::access::Role::Responder],
            max_line_bytes: 65536,
            max_connections: 256,
            max_connections_per_user: 16,
            idle_timeout: Duration::from_secs(300),
        }
    }
}

/// `rate_limit = { max = 3, per = "1h" }`
#[derive(Clone, Copy, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub max: u32,
    #[serde(deserialize_with = "duration")]
    pub per: Duration,
}

/// `[incidents]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentsConfig {
    pub rate_limit: RateLimit,
    /// A detection for a key whose incident was resolved this recently reopens it.
    #[serde(deserialize_with = "duration")]
    pub reopen_window: Duration,
    #[serde(deserialize_with = "duration")]
    pub correlation_window: Duration,
    #[serde(deserialize_with = "duration")]
    pub auto_close_after: Duration,
    #[serde(deserialize_with = "duration")]
    pub retain_closed: Duration,
    /// Events kept per incident as evidence: the first half and the latest.
    pub evidence_samples: usize,
    /// Re-alert backoff: the least time between successive new incidents of one key (the
    /// last step repeats); empty turns it off.
    #[serde(deserialize_with = "de::durations")]
    pub realert_backoff: Vec<Duration>,
    /// The `[[service]]` tables (top level in the file), handed to the incident manager with
    /// these settings.
    #[serde(skip)]
    pub services: Vec<ServiceConfig>,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        IncidentsConfig {
            rate_limit: RateLimit {
                max: 3,
                per: Duration::from_secs(3600),
            },
            reopen_window: Duration::from_secs(30 * 60),
            correlation_window: Duration::from_secs(5 * 60),
            auto_close_after: Duration::from_secs(24 * 3600),
            retain_closed: Duration::from_secs(90 * 24 * 3600),
            evidence_samples: 10,
            services: Vec::new(),
            realert_backoff: vec![
                Duration::from_secs(3600),
                Duration::from_secs(4 * 3600),
                Duration::from_secs(12 * 3600),
            ],
        }
    }
}
