//! `kind = "exec"`: a command as argv (no shell unless `shell = true`, and then no templates
//! in it: values come through `env`), with `env`, `cwd` and `user`. Its process group is
//! killed at the timeout; stdout and stderr are kept up to `max_output_bytes`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::template::{self, Field};
use super::{Action, Plan, Problems};
use super::{Outcome, render};
use crate::remediation::config::Operation;

pub struct Exec {
    command: Vec<String>,
    shell: bool,
    allow_options: bool,
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    user: Option<String>,
}

impl Exec {
    pub fn new(op: &Operation) -> Result<Exec, Problems> {
        let mut out = Problems::new();

        if op.command.is_empty() {
            out.push((
                "command",
                "an exec action needs `command = [\"argv0\", …]`".into(),
            ));
        }
        if op.shell
            && op
                .command
                .iter()
                .any(|c| c.contains("{{") || c.contains("{%"))
        {
            out.push((
                "command",
                "with `shell = true` the command may not hold templates (event data would become shell code); pass values through `env` and use \"$NAME\"".into(),
            ));
        }
        if op.shell && op.command.len() != 1 {
            out.push((
                "command",
                "with `shell = true`, `command` is one string for /bin/sh -c".into(),
            ));
        }
        if !out.is_empty() {
            return Err(out);
        }
        Ok(Exec {
            command: op.command.clone(),
            shell: op.shell,
            allow_options: op.allow_options,
            env: op.env.clone(),
            cwd: op.cwd.clone(),
            user: op.user.clone(),
        })
    }
}

impl Action for Exec {
    fn plan(&self, ctx: &minijinja::Value) -> Result<Plan, String> {
        let last = self.command.len().saturating_sub(1);
        let mut argv = self
            .command
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let field = if self.shell && i == last {
                    Field::Shell
                } else {
                    template::arg_field(a, self.allow_options)
                };
                template::render(a, ctx, &format!("command[{i}]"), field)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if self.shell {
            let script = argv.pop().unwrap_or_default();
            argv = vec!["/bin/sh".into(), "-c".into(), script];
        }
        let env = self
            .env
            .iter()
            .map(|(k, v)| Ok((k.clone(), render(v, ctx, &format!("env.{k}"))?)))
            .collect::<Result<_, String>>()?;
        Ok(Plan::Exec {
            argv,
            env,
            cwd: self.cwd.clone(),
            user: self.user.clone(),
        })
    }
}

pub(super) async fn exec(
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

#[cfg(test)]
mod tests {
    use super::super::tests::{ctx, op};
    use super::*;

    #[test]
    fn argv_from_templates_and_a_shell_script_without_them() {
        let e = Exec::new(&op(r#"kind = "exec"
command = ["/usr/sbin/nft", "add", "element", "inet", "f", "ban", "{ {{ labels.ip }} }"]"#))
        .unwrap();
        let Plan::Exec { argv, .. } = e.plan(&ctx()).unwrap() else {
            panic!()
        };
        assert_eq!(argv[6], "{ 203.0.113.9 }");
        // A value alone in an argument may not start with '-' (it would be an option).
        let e = Exec::new(&op(r#"kind = "exec"
command = ["rm", "{{ labels.path }}"]"#))
        .unwrap();
        assert!(e.plan(&ctx()).is_err());
        let Err(p) = Exec::new(&op(r#"kind = "exec"
shell = true
command = ["echo {{ labels.ip }}"]"#))
        else {
            panic!("a templated shell script was accepted")
        };
        assert_eq!(p[0].0, "command");
        let s = Exec::new(&op(r#"kind = "exec"
shell = true
env = { IP = "{{ labels.ip }}" }
command = ["echo \"$IP\""]"#))
        .unwrap();
        let Plan::Exec { argv, env, .. } = s.plan(&ctx()).unwrap() else {
            panic!()
        };
        assert_eq!(argv, ["/bin/sh", "-c", "echo \"$IP\""]);
        assert_eq!(env["IP"], "203.0.113.9");
    }
}
