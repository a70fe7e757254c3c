//! Turning an action into a plan (templates rendered, targets found) and carrying it out.
//!
//! A [`Plan`] is exactly what would happen: the argv, the signal and the processes it goes
//! to, or the HTTP request. A dry run shows it; a run executes it. Templates see the
//! incident (`incident.*`, `labels.*`) and its latest evidence event (`event.*`); an unknown
//! name is an error, never an empty string.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;

use super::template::{self, Field};
use crate::incident::Incident;
use crate::remediation::config::{ActionKind, Body, Operation, SignalMode};

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

/// The plan for `op` on an incident, with every template rendered and signal targets found.
pub fn plan(op: &Operation, ctx: &minijinja::Value) -> Result<Plan, String> {
    match op.kind {
        Some(ActionKind::Exec) => {
            let last = op.command.len().saturating_sub(1);
            let mut argv = op
                .command
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    let field = if op.shell && i == last {
                        Field::Shell
                    } else {
                        template::arg_field(a, op.allow_options)
                    };
                    template::render(a, ctx, &format!("command[{i}]"), field)
                })
                .collect::<Result<Vec<_>, _>>()?;
            if op.shell {
                let script = argv.pop().unwrap_or_default();
                argv = vec!["/bin/sh".into(), "-c".into(), script];
            }
            let env = op
                .env
                .iter()
                .map(|(k, v)| Ok((k.clone(), render(v, ctx, &format!("env.{k}"))?)))
                .collect::<Result<_, String>>()?;
            Ok(Plan::Exec {
                argv,
                env,
                cwd: op.cwd.clone(),
                user: op.user.clone(),
            })
        }
        Some(ActionKind::Systemd) => {
            let unit =
                template::render(op.unit.as_deref().unwrap_or(""), ctx, "unit", Field::Unit)?;
            if unit.is_empty() || unit.starts_with('-') {
                return Err(format!("`{unit}` is not a unit name"));
            }
            Ok(Plan::Exec {
                argv: vec![
                    "systemctl".into(),
                    op.operation.clone().unwrap_or_else(|| "restart".into()),
                    unit,
                ],
                env: BTreeMap::new(),
                cwd: None,
                user: None,
            })
        }
        Some(ActionKind::Signal) => {
            let default = if op.mode == SignalMode::Zombies {
                "CHLD"
            } else {
                "TERM"
            };
            let signal = op.signal.clone().unwrap_or_else(|| default.into());
            if super::parse_signal(&signal).is_none() {
                return Err(format!("`{signal}` is not a signal name"));
            }
            let targets = match op.mode {
                SignalMode::Zombies => {
                    let name = op
                        .process
                        .as_deref()
                        .map(|n| render(n, ctx, "process"))
                        .transpose()?;
                    zombie_parents()?
                        .into_iter()
                        .filter(|t| name.as_ref().is_none_or(|n| &t.name == n))
                        .collect()
                }
                SignalMode::Processes => {
                    if let Some(name) = &op.process {
                        let name = render(name, ctx, "process")?;
                        processes()
                            .into_iter()
                            .filter(|p| p.name == name)
                            .map(|p| Target {
                                why: format!("named {name}"),
                                ..p
                            })
                            .collect()
                    } else if let Some(file) = &op.pidfile {
                        let text = std::fs::read_to_string(file)
                            .map_err(|e| format!("cannot read pidfile {}: {e}", file.display()))?;
                        let pid: i32 =
                            text.trim().parse().ok().filter(|p| *p > 1).ok_or_else(|| {
                                format!(
                                    "pidfile {} does not hold a process id above 1",
                                    file.display()
                                )
                            })?;
                        if pid == std::process::id() as i32 {
                            return Err(format!(
                                "pidfile {} names incidentd itself",
                                file.display()
                            ));
                        }
                        vec![Target {
                            pid,
                            name: comm(pid).unwrap_or_default(),
                            why: format!("pid in {}", file.display()),
                        }]
                    } else if let Some(cg) = &op.cgroup {
                        let procs = cg.join("cgroup.procs");
                        let text = std::fs::read_to_string(&procs)
                            .map_err(|e| format!("cannot read {}: {e}", procs.display()))?;
                        text.lines()
                            .filter_map(|l| l.trim().parse::<i32>().ok())
                            .filter(|p| *p > 1 && *p != std::process::id() as i32)
                            .map(|pid| Target {
                                pid,
                                name: comm(pid).unwrap_or_default(),
                                why: format!("in cgroup {}", cg.display()),
                            })
                            .collect()
                    } else {
                        Vec::new()
                    }
                }
            };
            Ok(Plan::Signal {
                signal,
                targets,
                terminate_parent: op.terminate_parent,
            })
        }
        Some(ActionKind::Http) => {
            let url = template::render_url(op.url.as_deref().unwrap_or(""), ctx)?;
            // A templated URL must still be an http(s) URL of the configured host: event data
            // can fill in a path or a query, never send the request elsewhere.
            let parsed = reqwest::Url::parse(&url).map_err(|e| format!("url `{url}`: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("url `{url}` is not http or https"));
            }
            let configured = op.url.as_deref().unwrap_or("");
            if let Some(prefix) = configured.split("{{").next()
                && prefix.matches('/').count() < 3
                && configured.contains("{{")
            {
                return Err(format!(
                    "url `{configured}`: templates may fill the path or query, not the scheme or host"
                ));
            }
            let body = match &op.body {
                None => None,
                Some(Body::Template(t)) => Some(template::render(t, ctx, "body", Field::Json)?),
                Some(Body::Table(t)) => Some(template::render_table(t, ctx)?),
            };
            let headers = op
                .headers
                .iter()
                .map(|(k, v)| Ok((k.clone(), render(v, ctx, &format!("headers.{k}"))?)))
                .collect::<Result<_, String>>()?;
            Ok(Plan::Http {
                method: op
                    .method
                    .clone()
                    .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.into())
                    .to_uppercase(),
                url,
                headers,
                body,
                expect_status: op.expect_status.clone(),
            })
        }
        None => Err("the action has no kind".into()),
    }
}

/// A process's name (`/proc/PID/comm`).
fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim_end().to_owned())
}

/// (pid, name) of every process, with its state and parent.
fn proc_stats() -> Vec<(i32, String, char, i32)> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid …; comm may hold spaces and parentheses.
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            let name = stat.get(open + 1..close)?.to_owned();
            let mut rest = stat.get(close + 2..)?.split(' ');
            let state = rest.next()?.chars().next()?;
            let ppid = rest.next()?.parse().ok()?;
            Some((pid, name, state, ppid))
        })
        .collect()
}

fn processes() -> Vec<Target> {
    proc_stats()
        .into_iter()
        .filter(|(pid, ..)| *pid != std::process::id() as i32)
        .map(|(pid, name, ..)| Target {
            pid,
            name,
            why: String::new(),
        })
        .collect()
}

/// The parents of zombie processes, once each.
fn zombie_parents() -> Result<Vec<Target>, String> {
    let all = proc_stats();
    let mut out: Vec<Target> = Vec::new();
    let me = std::process::id() as i32;
    for (pid, name, state, ppid) in &all {
        // Never init (it reaps by itself) and never incidentd (it reaps its own).
        if *state != 'Z' || *ppid <= 1 || *ppid == me {
            continue;
        }
        let why = format!("parent of zombie {pid} ({name})");
        match out.iter_mut().find(|t| t.pid == *ppid) {
            Some(t) => {
                t.why.push_str(", ");
                t.why.push_str(&why);
            }
            None => out.push(Target {
                pid: *ppid,
                name: all
                    .iter()
                    .find(|p| p.0 == *ppid)
                    .map(|p| p.1.clone())
                    .unwrap_or_default(),
                why,
            }),
        }
    }
    Ok(out)
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
            exec(
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
        } => send_signals(signal, targets, *terminate_parent).await,
        Plan::Http {
            method,
            url,
            headers,
            body,
            expect_status,
        } => {
            http_request(
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

async fn exec(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: Option<&PathBuf>,
    user: Option<&str>,
    timeout: Duration,
    max_output: usize,
) -> Outcome {
    let fail = Outcome::failed;
    let Some((program, args)) = argv.split_first() else {
        return fail("empty command".into());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .envs(env)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own process group: a timeout kills the command and everything it started.
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = cwd {
        cmd.current_dir(dir);
    }
    if let Some(name) = user {
        match nix::unistd::User::from_name(name) {
            Ok(Some(u)) => {
                if !nix::unistd::geteuid().is_root() && u.uid != nix::unistd::geteuid() {
                    return fail(format!(
                        "cannot run as user {name}: incidentd is not running as root"
                    ));
                }
                cmd.uid(u.uid.as_raw()).gid(u.gid.as_raw());
            }
            _ => return fail(format!("no user named {name}")),
        }
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot start {program}: {e}")),
    };
    let pgid = child.id().map(|p| p as i32);
    let (so, se) = (child.stdout.take(), child.stderr.take());
    let (out_buf, err_buf) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let out_reader = tokio::spawn(read_capped(so, max_output, out_buf.clone()));
    let err_reader = tokio::spawn(read_capped(se, max_output, err_buf.clone()));
    let run = async {
        let status = child.wait().await;
        // Something the command left running in the background may hold its pipes open:
        // take what came within a moment of the exit, not wait for that to end.
        let grace = Duration::from_millis(500);
        // The reader goes on draining (never closing the pipe under the background
        // process, which would get SIGPIPE); only what came so far is kept.
        let take = |h: tokio::task::JoinHandle<()>, buf: Arc<Mutex<Vec<u8>>>| async move {
            let done = tokio::time::timeout(grace, h).await.is_ok();
            let mut b = std::mem::take(&mut *buf.lock().unwrap_or_else(|p| p.into_inner()));
            if !done {
                b.extend_from_slice(b"\n(output cut: a background process kept the pipe open)");
            }
            b
        };
        let (o, e) = tokio::join!(take(out_reader, out_buf), take(err_reader, err_buf));
        (o, e, status)
    };
    match tokio::time::timeout(timeout, run).await {
        Ok((o, e, status)) => {
            let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
            match status {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt;
                    Outcome {
                        ok: st.success(),
                        exit_code: st.code(),
                        killed_by: st.signal(),
                        stdout: text(o),
                        stderr: text(e),
                        error: (!st.success()).then(|| match st.code() {
                            Some(c) => format!("{program} exited with status {c}"),
                            None => format!(
                                "{program} was killed by signal {}",
                                st.signal().unwrap_or(0)
                            ),
                        }),
                        ..Outcome::default()
                    }
                }
                Err(err) => fail(format!("waiting for {program} failed: {err}")),
            }
        }
        Err(_) => {
            if let Some(pg) = pgid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pg),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            Outcome {
                killed_by: Some(nix::sys::signal::Signal::SIGKILL as i32),
                error: Some(format!(
                    "{program} did not finish within {}; its process group was killed",
                    humantime::format_duration(timeout)
                )),
                ..Outcome::default()
            }
        }
    }
}

/// Keeps the first `max` bytes of a stream in `keep`, reading on to its end so the writer
/// never blocks.
async fn read_capped<R: tokio::io::AsyncRead + Unpin>(
    r: Option<R>,
    max: usize,
    keep: Arc<Mutex<Vec<u8>>>,
) {
    let Some(mut r) = r else {
        return;
    };
    let mut buf = [0u8; 4096];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let mut k = keep.lock().unwrap_or_else(|p| p.into_inner());
        let room = max.saturating_sub(k.len());
        k.extend_from_slice(&buf[..n.min(room)]);
    }
}

async fn send_signals(signal: &str, targets: &[Target], terminate_parent: bool) -> Outcome {
    let Some(sig) = super::parse_signal(signal) else {
        return Outcome::failed(format!("`{signal}` is not a signal name"));
    };
    let mut lines = Vec::new();
    let mut failed = Vec::new();
    for t in targets {
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(t.pid), sig) {
            Ok(()) => lines.push(format!("sent {sig} to {} ({}): {}", t.pid, t.name, t.why)),
            Err(e) => failed.push(format!("{} ({}): {e}", t.pid, t.name)),
        }
    }
    if terminate_parent && !targets.is_empty() {
        // Give the parents a moment to reap, then end those still holding zombies.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let still = zombie_parents().unwrap_or_default();
        for t in targets
            .iter()
            .filter(|t| still.iter().any(|s| s.pid == t.pid))
        {
            match nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(t.pid),
                nix::sys::signal::Signal::SIGTERM,
            ) {
                Ok(()) => lines.push(format!(
                    "{} ({}) still held zombies: sent SIGTERM",
                    t.pid, t.name
                )),
                Err(e) => failed.push(format!("SIGTERM to {}: {e}", t.pid)),
            }
        }
    }
    if targets.is_empty() {
        lines.push("no process matched; nothing to signal".into());
    }
    Outcome {
        ok: failed.is_empty(),
        stdout: lines.join("\n"),
        stderr: failed.join("\n"),
        error: (!failed.is_empty()).then(|| format!("{} signal(s) failed", failed.len())),
        ..Outcome::default()
    }
}

#[allow(clippy::too_many_arguments)]
async fn http_request(
    client: &reqwest::Client,
    method: &str,
    url: &str,
    headers: &BTreeMap<String, String>,
    body: Option<&str>,
    expect_status: &[u16],
    timeout: Duration,
) -> Outcome {
    let fail = Outcome::failed;
    let Ok(m) = reqwest::Method::from_bytes(method.as_bytes()) else {
        return fail(format!("`{method}` is not an HTTP method"));
    };
    let mut req = client.request(m, url).timeout(timeout);
    for (k, v) in headers {
        req = req.header(k, v);
    }
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            let ok = if expect_status.is_empty() {
                (200..300).contains(&status)
            } else {
                expect_status.contains(&status)
            };
            Outcome {
                ok,
                http_status: Some(status),
                stdout: text.chars().take(4096).collect(),
                error: (!ok).then(|| format!("{method} {url} answered {status}")),
                ..Outcome::default()
            }
        }
        Err(e) => fail(format!("{method} {url} failed: {e}")),
    }
}
