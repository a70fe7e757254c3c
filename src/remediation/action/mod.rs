//! Actions: one file per kind (`exec`, `systemd`, `signal`, `http`), each with its typed
//! settings (checked when the config loads), its plan and its execution, behind the
//! [`Action`] trait; [`build`] is the one place that maps a `kind` to its file.
//!
//! Turning an action into a plan (templates rendered, targets found) and carrying it out.
//!
//! A [`Plan`] is exactly what would happen: the argv, the signal and the processes it goes
//! to, or the HTTP request. A dry run shows it; a run executes it. Templates see the
//! incident (`incident.*`, `labels.*`) and its latest evidence event (`event.*`); an unknown
//! name is an error, never an empty string.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::template::Field;
use crate::incident::Incident;
use crate::remediation::config::{ActionKind, Operation};

mod exec;
mod http;
mod signal;
mod systemd;

pub use signal::parse_signal;

use super::template;

/// What a run will do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Plan {
    Exec {
        argv: Vec<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<PathBuf>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
    },
    Signal {
        signal: String,
        targets: Vec<Target>,
        /// Zombie mode: parents still holding zombies after the signal get SIGTERM.
        #[serde(default)]
        terminate_parent: bool,
    },
    Http {
        method: String,
        url: String,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        headers: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<String>,
        expect_status: Vec<u16>,
    },
}

impl Plan {
    /// The plan as shown to people (timeline, API, dry run): values of headers and
    /// environment variables whose names suggest a secret are replaced.
    pub fn redacted(&self) -> Plan {
        fn secret(name: &str) -> bool {
            let n = name.to_ascii_lowercase();
            [
                "authorization",
                "cookie",
                "token",
                "secret",
                "password",
                "passwd",
                "key",
                "credential",
            ]
            .iter()
            .any(|s| n.contains(s))
        }
        let hide = |m: &BTreeMap<String, String>| -> BTreeMap<String, String> {
            m.iter()
                .map(|(k, v)| {
                    let v = if secret(k) {
                        "(redacted)".to_owned()
                    } else {
                        v.clone()
                    };
                    (k.clone(), v)
                })
                .collect()
        };
        match self {
            Plan::Exec {
                argv,
                env,
                cwd,
                user,
            } => Plan::Exec {
                argv: argv.clone(),
                env: hide(env),
                cwd: cwd.clone(),
                user: user.clone(),
            },
            Plan::Http {
                method,
                url,
                headers,
                body,
                expect_status,
            } => Plan::Http {
                method: method.clone(),
                url: url.clone(),
                headers: hide(headers),
                body: body.clone(),
                expect_status: expect_status.clone(),
            },
            other => other.clone(),
        }
    }
}

/// A process a signal goes to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Target {
    pub pid: i32,
    pub name: String,
    /// Why it was chosen ("named nginx", "parent of zombie 4242 (worker)").
    pub why: String,
}

/// How a run went.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// The signal that ended the command, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub killed_by: Option<i32>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stdout: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub stderr: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
    pub duration_ms: u64,
    /// What went wrong, in words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    /// A run that did not happen or broke, with why.
    pub fn failed(error: impl Into<String>) -> Outcome {
        Outcome {
            error: Some(error.into()),
            ..Default::default()
        }
    }
}

/// The template context of an incident.
pub fn context(incident: &Incident) -> minijinja::Value {
    let mut inc = incident.clone();
    let event = inc.evidence.last().cloned();
    inc.evidence.clear();
    minijinja::context! {
        incident => minijinja::Value::from(minijinja::value::Serde(&inc)),
        labels => minijinja::Value::from(minijinja::value::Serde(&inc.labels)),
        event => minijinja::Value::from(minijinja::value::Serde(&event)),
    }
}

/// A value written as it is (environment, headers, process names); missing ones refuse.
fn render(text: &str, ctx: &minijinja::Value, what: &str) -> Result<String, String> {
    super::template::render(text, ctx, what, Field::Plain)
}

/// An action's settings that do not fit its kind, as (key, message).
pub type Problems = Vec<(&'static str, String)>;

/// One action kind, its settings checked.
pub trait Action: Send + Sync {
    /// The plan for an incident, with every template rendered and signal targets found.
    fn plan(&self, ctx: &minijinja::Value) -> Result<Plan, String>;
}

/// The action of an operation (an `[[action]]` or its `revert`), or what is wrong with it.
pub fn build(op: &Operation) -> Result<Box<dyn Action>, Problems> {
    Ok(match op.kind {
        Some(ActionKind::Exec) => Box::new(exec::Exec::new(op)?),
        Some(ActionKind::Systemd) => Box::new(systemd::Systemd::new(op)?),
        Some(ActionKind::Signal) => Box::new(signal::Signal::new(op)?),
        Some(ActionKind::Http) => Box::new(http::Http::new(op)?),
        None => {
            return Err(vec![(
                "kind",
                "missing `kind` (exec, systemd, signal or http)".into(),
            )]);
        }
    })
}

/// The plan for `op` on an incident.
pub fn plan(op: &Operation, ctx: &minijinja::Value) -> Result<Plan, String> {
    let action = build(op).map_err(|p| {
        p.into_iter()
            .map(|(k, m)| format!("{k}: {m}"))
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    action.plan(ctx)
}

/// Carries out `plan`, within `timeout`.
pub async fn execute(
    plan: &Plan,
    timeout: Duration,
    max_output: usize,
    http: &reqwest::Client,
) -> Outcome {
    let started = std::time::Instant::now();
    let mut out = match plan {
        Plan::Exec {
            argv,
            env,
            cwd,
            user,
        } => {
            exec::exec(
                argv,
                env,
                cwd.as_ref(),
                user.as_deref(),
                timeout,
                max_output,
            )
            .await
        }
        Plan::Signal {
            signal,
            targets,
            terminate_parent,
        } => signal::send_signals(signal, targets, *terminate_parent).await,
        Plan::Http {
            method,
            url,
            headers,
            body,
            expect_status,
        } => {
            http::http_request(
                http,
                method,
                url,
                headers,
                body.as_deref(),
                expect_status,
                timeout,
            )
            .await
        }
    };
    out.duration_ms = started.elapsed().as_millis() as u64;
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn op(toml_text: &str) -> Operation {
        toml::from_str(toml_text).unwrap()
    }

    pub(crate) fn ctx() -> minijinja::Value {
        let inc: Incident = serde_json::from_value(serde_json::json!({
            "id": 7, "key": "k", "title": "t", "severity": "sev3", "status": "open",
            "service": "nginx", "labels": {"ip": "203.0.113.9", "path": "-rf /"}, "detections": 1,
            "first_event_at": "2026-11-23T10:00:00Z", "created_at": "2026-11-23T10:00:00Z"
        }))
        .unwrap();
        context(&inc)
    }

    #[test]
    fn a_missing_kind_is_named() {
        let Err(p) = build(&op("command = [\"true\"]")) else {
            panic!("built without a kind")
        };
        assert_eq!(p[0].0, "kind");
    }
}
