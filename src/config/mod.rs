//! Configuration: the TOML model of DESIGN §3.8, loading with `rules.d` merging, and
//! validation.
//!
//! Loading is "parse raw, validate purely": [`load`] reads the main file and every
//! `rules_dir/*.toml`, deserializes each table on its own so that one mistake does not hide
//! the next, and returns either a complete [`Config`] or every error found, each as
//! `file:line: key: message`. Nothing here binds or spawns; the daemon builds from the result,
//! and reload runs the very same path.

pub use crate::remediation::config as action;

mod file;
mod load;
mod notify_check;
pub use crate::engine::config as rule;
pub use crate::notification::config as notify;
pub use crate::plugin::config as plugin;
pub use crate::source::config as source;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::api::config::ControlConfig;
pub use crate::de::Pattern;
pub use crate::engine::config::EngineConfig;
pub use crate::incident::config::{IncidentsConfig, RateLimit, ServiceConfig};
pub use crate::telemetry::LogFormat;
pub use load::{ConfigError, ConfigErrors, load, load_rules, load_str};
pub use rule::{Condition, RuleCommon, RuleConfig, RuleKindConfig};
pub use source::{IngestConfig, LineFormat, Parsing, SourcesConfig};

use crate::de::duration;

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

/// `[daemon]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// This host's name in notifications (Alertmanager's `instance` label, PagerDuty's
    /// source and dedup key). Default: the local hostname.
    pub host: Option<String>,
    /// Where sled keeps its files. Default `$STATE_DIRECTORY` (systemd) or /var/lib/incidentd.
    pub state_dir: PathBuf,
    /// Where sockets live. Default `$RUNTIME_DIRECTORY` (systemd) or /run/incidentd.
    pub runtime_dir: PathBuf,
    pub log_format: LogFormat,
    /// How far back in event time any rule may look: a rule whose window (a spike's
    /// baseline included, a burn rate's longest window, `allowed_lateness`) is longer is a
    /// config error naming both.
    #[serde(deserialize_with = "duration")]
    pub retention: Duration,
    /// The most event times one rule holds (`max_groups × threshold`): an explicit
    /// `max_groups` above it is a config error; a rule without one gets the most groups
    /// that fit (at most 10,000).
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
    /// A checkpoint also as soon as this many detections came since the last one: each
    /// leaves an idempotency id in the store until a checkpoint covers it, and a backlog read
    /// at a million lines a second would otherwise leave every detection of
    /// `checkpoint_interval` there.
    pub checkpoint_detections: usize,
    /// A source erroring or a plugin restarting for this long becomes an incident about the
    /// daemon itself (`incidentd/…`), resolved once it has been quiet as long.
    #[serde(deserialize_with = "duration")]
    pub self_alert_after: Duration,
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
            host: None,
            state_dir: env_dir("STATE_DIRECTORY", "/var/lib/incidentd"),
            runtime_dir: env_dir("RUNTIME_DIRECTORY", "/run/incidentd"),
            log_format: LogFormat::Auto,
            retention: Duration::from_secs(3600),
            max_events_in_memory: 100_000,
            event_queue: 8192,
            detection_queue: 1024,
            shutdown_timeout: Duration::from_secs(20),
            checkpoint_interval: Duration::from_secs(10),
            checkpoint_detections: 20_000,
            self_alert_after: Duration::from_secs(300),
        }
    }
}
