//! `kind = "signal"`: a signal to the processes found by `process` (name), `pidfile` or
//! `cgroup`; or, with `mode = "zombies"`, to the parents of zombie processes (SIGCHLD by
//! default, `terminate_parent` to end the ones still holding zombies). Never incidentd
//! itself, never init.

use std::path::PathBuf;
use std::time::Duration;

use super::{Action, Plan, Problems};
use super::{Outcome, Target, render};
use crate::remediation::config::Operation;
use crate::remediation::config::SignalMode;

pub struct Signal {
    signal: Option<String>,
    process: Option<String>,
    pidfile: Option<PathBuf>,
    cgroup: Option<PathBuf>,
    mode: SignalMode,
    terminate_parent: bool,
}

/// A signal by name (`HUP`, `SIGHUP`, `hup`) or number.
pub fn parse_signal(s: &str) -> Option<nix::sys::signal::Signal> {
    use std::str::FromStr;
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok();
    }
    let up = s.to_uppercase();
    let name = if up.starts_with("SIG") {
        up
    } else {
        format!("SIG{up}")
    };
    nix::sys::signal::Signal::from_str(&name).ok()
}

impl Signal {
    pub fn new(op: &Operation) -> Result<Signal, Problems> {
        let mut out = Problems::new();

        if let Some(s) = &op.signal
            && parse_signal(s).is_none()
        {
            out.push((
                "signal",
                format!("`{s}` is not a signal name (e.g. HUP, TERM, USR1)"),
            ));
        }
        let targets = [
            op.process.is_some(),
            op.pidfile.is_some(),
            op.cgroup.is_some(),
        ]
        .iter()
        .filter(|t| **t)
        .count();
        match op.mode {
            SignalMode::Processes if targets != 1 => out.push((
                "process",
                "a signal action needs exactly one of `process`, `pidfile`, `cgroup` (or `mode = \"zombies\"`)".into(),
            )),
            SignalMode::Zombies if op.pidfile.is_some() || op.cgroup.is_some() => out.push((
                "mode",
                "`mode = \"zombies\"` finds its own targets (`process` may narrow them to parents of that name); drop `pidfile` and `cgroup`".into(),
            )),
            _ => {}
        }
        if op.terminate_parent && op.mode != SignalMode::Zombies {
            out.push(("terminate_parent", "only for `mode = \"zombies\"`".into()));
        }
        if !out.is_empty() {
            return Err(out);
        }
        Ok(Signal {
            signal: op.signal.clone(),
            process: op.process.clone(),
            pidfile: op.pidfile.clone(),
            cgroup: op.cgroup.clone(),
            mode: op.mode,
            terminate_parent: op.terminate_parent,
        })
    }
}

impl Action for Signal {
    fn plan(&self, ctx: &minijinja::Value) -> Result<Plan, String> {
        let default = if self.mode == SignalMode::Zombies {
            "CHLD"
        } else {
            "TERM"
        };
        let signal = self.signal.clone().unwrap_or_else(|| default.into());
        if parse_signal(&signal).is_none() {
            return Err(format!("`{signal}` is not a signal name"));
        }
        let targets = match self.mode {
            SignalMode::Zombies => {
                let name = self
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
                if let Some(name) = &self.process {
                    let name = render(name, ctx, "process")?;
                    processes()
                        .into_iter()
                        .filter(|p| p.name == name)
                        .map(|p| Target {
                            why: format!("named {name}"),
                            ..p
                        })
                        .collect()
                } else if let Some(file) = &self.pidfile {
                    let text = read_pidfile(file)?;
                    let pid: i32 =
                        text.trim().parse().ok().filter(|p| *p > 1).ok_or_else(|| {
                            format!(
                                "pidfile {} does not hold a process id above 1",
                                file.display()
                            )
                        })?;
                    if pid == std::process::id() as i32 {
                        return Err(format!("pidfile {} names incidentd itself", file.display()));
                    }
                    vec![Target {
                        pid,
                        name: comm(pid).unwrap_or_default(),
                        why: format!("pid in {}", file.display()),
                    }]
                } else if let Some(cg) = &self.cgroup {
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
            terminate_parent: self.terminate_parent,
        })
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

pub(super) async fn send_signals(
    signal: &str,
    targets: &[Target],
    terminate_parent: bool,
) -> Outcome {
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

/// A pidfile's first 64 bytes. Only a regular file is read: the path is opened without
/// reading (`O_PATH`), its type checked, and only then opened for reading through
/// `/proc/self/fd`, so a FIFO, a device (a watchdog arms when opened) or a tty that whoever
/// owns the pidfile's folder put in its place is never opened at all.
fn read_pidfile(file: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let cannot = |e: std::io::Error| format!("cannot read pidfile {}: {e}", file.display());
    let handle = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_PATH | nix::libc::O_CLOEXEC)
        .open(file)
        .map_err(cannot)?;
    if !handle.metadata().map_err(cannot)?.is_file() {
        return Err(format!("pidfile {} is not a regular file", file.display()));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOCTTY | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
        .open(format!("/proc/self/fd/{}", handle.as_raw_fd()))
        .map_err(cannot)?;
    let mut text = String::new();
    f.take(64).read_to_string(&mut text).map_err(cannot)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ctx, op};
    use super::*;

    #[test]
    fn a_pidfile_names_its_process_and_never_incidentd() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.pid");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // Until it has exec'd, the child still bears the test thread's name.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while comm(child.id() as i32).as_deref() != Some("sleep") {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        std::fs::write(&file, format!("{}\n", child.id())).unwrap();
        let s = Signal::new(&op(&format!(
            "kind = \"signal\"\nsignal = \"HUP\"\npidfile = \"{}\"",
            file.display()
        )))
        .unwrap();
        let Plan::Signal {
            signal, targets, ..
        } = s.plan(&ctx()).unwrap()
        else {
            panic!()
        };
        assert_eq!(signal, "HUP");
        assert_eq!(targets[0].pid, child.id() as i32);
        assert_eq!(targets[0].name, "sleep");
        std::fs::write(&file, format!("{}\n", std::process::id())).unwrap();
        assert!(s.plan(&ctx()).unwrap_err().contains("incidentd itself"));
        // What the folder's owner could put in the pidfile's place: refused, at once.
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink("/dev/zero", &file).unwrap();
        assert!(s.plan(&ctx()).unwrap_err().contains("not a regular file"));
        std::fs::remove_file(&file).unwrap();
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::S_IRWXU).unwrap();
        assert!(s.plan(&ctx()).unwrap_err().contains("not a regular file"));
        std::fs::remove_file(&file).unwrap();
        std::fs::write(&file, "9".repeat(10_000)).unwrap();
        assert!(
            s.plan(&ctx())
                .unwrap_err()
                .contains("does not hold a process id")
        );
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        assert!(Signal::new(&op("kind = \"signal\"\nsignal = \"NOPE\"\nprocess = \"x\"")).is_err());
        assert!(Signal::new(&op("kind = \"signal\"")).is_err(), "no target");
        assert_eq!(parse_signal("hup"), Some(nix::sys::signal::Signal::SIGHUP));
    }
}
