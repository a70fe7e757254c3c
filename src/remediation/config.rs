//! `[remediation]` and `[[action]]` tables: what an incident may run, and the policy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::de::{duration, opt_duration, positive_duration};
use crate::severity::Severity;

/// `[remediation]`: the policy over all actions.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RemediationConfig {
    /// Even a safe action waits for a human on incidents of these severities (unless it says
    /// `auto_even_for_sev1 = true`).
    pub require_approval_for: Vec<Severity>,
    /// Pending approvals expire after this (an action may set its own).
    #[serde(deserialize_with = "positive_duration")]
    pub approval_timeout: Duration,
    /// Actions running at once, over all incidents.
    pub max_concurrent: usize,
    /// Bytes of stdout and of stderr kept in the timeline per run.
    pub max_output_bytes: usize,
}

impl Default for RemediationConfig {
    fn default() -> Self {
        RemediationConfig {
            require_approval_for: vec![Severity::Sev1, Severity::Sev2],
            approval_timeout: Duration::from_secs(3600),
            max_concurrent: 4,
            max_output_bytes: 8192,
        }
    }
}

/// What an action does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ActionKind {
    /// Run a command (argv, no shell unless `shell = true`).
    Exec,
    /// `systemctl OPERATION UNIT`.
    Systemd,
    /// Send a signal to processes found by name, pidfile or cgroup, or to the parents of
    /// zombie processes.
    Signal,
    /// An HTTP request.
    Http,
}

/// When an automatic action runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Trigger {
    /// When its incident opens (created or reopened).
    #[default]
    Open,
    /// On each detection attached to its incident.
    Detection,
}

/// `mode` of a signal action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SignalMode {
    /// Signal the processes found by `process`, `pidfile` or `cgroup`.
    #[default]
    Processes,
    /// Find zombie processes and signal their parents (SIGCHLD by default).
    Zombies,
}

/// An HTTP action's body.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Body {
    /// A JSON template: each `{{ value }}` is written as JSON (a string quoted and escaped).
    Template(String),
    /// A table sent as a JSON document; its strings are templates.
    Table(serde_json::Map<String, serde_json::Value>),
}

/// The kind-specific part of an action (also the whole of a `revert`).
#[derive(Clone, Debug, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Operation {
    pub kind: Option<ActionKind>,
    // exec
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub shell: bool,
    /// Lets a value alone in an argument begin with '-' (it is then read as an option).
    #[serde(default)]
    pub allow_options: bool,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<String>,
    // systemd
    #[serde(default)]
    pub unit: Option<String>,
    #[serde(default)]
    pub operation: Option<String>,
    // signal
    #[serde(default)]
    pub signal: Option<String>,
    #[serde(default)]
    pub process: Option<String>,
    #[serde(default)]
    pub pidfile: Option<PathBuf>,
    #[serde(default)]
    pub cgroup: Option<PathBuf>,
    #[serde(default)]
    pub mode: SignalMode,
    #[serde(default)]
    pub terminate_parent: bool,
    // http
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub url: Option<String>,
    /// A JSON template whose values are written as JSON, or a table sent as a JSON document.
    #[serde(default)]
    pub body: Option<Body>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub expect_status: Vec<u16>,
}

/// The keys every `[[action]]` has; the rest of the table is its [`Operation`].
pub const COMMON_KEYS: [&str; 13] = [
    "id",
    "description",
    "safe",
    "on",
    "timeout",
    "max_runs",
    "per",
    "cooldown",
    "auto_even_for_sev1",
    "approval_timeout",
    "verify_after",
    "revert",
    "revert_after",
];

/// `[[action]]`: the policy keys, and the operation.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ActionCommon {
    pub id: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Runs by itself; otherwise every run waits for an admin's approval.
    #[serde(default)]
    pub safe: bool,
    #[serde(default)]
    pub on: Trigger,
    #[serde(default = "default_timeout", deserialize_with = "positive_duration")]
    pub timeout: Duration,
    /// Circuit breaker: automatic runs per incident key within `per`.
    #[serde(default = "default_max_runs")]
    pub max_runs: u32,
    #[serde(default = "default_per", deserialize_with = "positive_duration")]
    pub per: Duration,
    /// Least time between two automatic runs for one incident key.
    #[serde(default, deserialize_with = "duration")]
    pub cooldown: Duration,
    #[serde(default)]
    pub auto_even_for_sev1: bool,
    #[serde(default, deserialize_with = "opt_duration")]
    pub approval_timeout: Option<Duration>,
    /// After a successful run, if the incident still gets detections this long after, the
    /// action is marked ineffective and the incident's severity raised.
    #[serde(default, deserialize_with = "opt_duration")]
    pub verify_after: Option<Duration>,
    /// Undoes the action: after `revert_after`, or when the incident resolves.
    #[serde(default)]
    pub revert: Option<Operation>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub revert_after: Option<Duration>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ActionConfig {
    pub common: ActionCommon,
    pub op: Operation,
    /// `file:line` of its table.
    pub origin: String,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_runs() -> u32 {
    3
}

fn default_per() -> Duration {
    Duration::from_secs(3600)
}

impl Operation {
    /// What is wrong with this operation, each as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let Some(kind) = self.kind else {
            out.push((
                "kind",
                "missing `kind` (exec, systemd, signal or http)".into(),
            ));
            return out;
        };
        let mut not_for = |key: &'static str, set: bool| {
            if set {
                out.push((key, format!("`{key}` does not apply to a {kind:?} action")));
            }
        };
        let exec = kind == ActionKind::Exec;
        not_for("command", !exec && !self.command.is_empty());
        not_for("shell", !exec && self.shell);
        not_for("env", !exec && !self.env.is_empty());
        not_for("cwd", !exec && self.cwd.is_some());
        not_for("user", !exec && self.user.is_some());
        let systemd = kind == ActionKind::Systemd;
        not_for("unit", !systemd && self.unit.is_some());
        not_for("operation", !systemd && self.operation.is_some());
        let signal = kind == ActionKind::Signal;
        not_for("signal", !signal && self.signal.is_some());
        not_for("process", !signal && self.process.is_some());
        not_for("pidfile", !signal && self.pidfile.is_some());
        not_for("cgroup", !signal && self.cgroup.is_some());
        not_for("mode", !signal && self.mode != SignalMode::Processes);
        not_for("terminate_parent", !signal && self.terminate_parent);
        let http = kind == ActionKind::Http;
        not_for("method", !http && self.method.is_some());
        not_for("url", !http && self.url.is_some());
        not_for("body", !http && self.body.is_some());
        not_for("headers", !http && !self.headers.is_empty());
        not_for("expect_status", !http && !self.expect_status.is_empty());
        // Each kind checks its own settings (remediation/action/<kind>.rs).
        out.extend(super::action::build(self).err().unwrap_or_default());
        out
    }
}
