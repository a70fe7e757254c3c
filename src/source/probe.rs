//! `[[source.probe]]`: host checks on an interval, emitted as events the shipped rules read.
//!
//! | check | events |
//! | --- | --- |
//! | memory | `metric` `memory_available_percent` |
//! | disk | `metric` `disk_free_percent` per mount (label `mount`) |
//! | load | `metric` `load1`, `load5`, `load15`, `load1_per_cpu` |
//! | units | `unit` (label `state`, level error unless active); `heartbeat` while active |
//! | processes | `metric` `process_count` (label `process`); `heartbeat` while running |
//! | zombies | `metric` `zombie_processes` |
//! | http | `metric` `latency_ms` and `http_status`; `heartbeat` while up |
//! | tcp | `metric` `tcp_connect_ms`; `heartbeat` while up |
//!
//! Metrics carry `labels.metric` and `value`; heartbeats carry `service` (the unit, process,
//! or target), so the `absence` rule `service-down` notices what stopped. A check that cannot
//! run or finds its target down emits a `probe_error` event at level error saying why —
//! never silence.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::engine::Input;
use crate::event::{Event, Level};
use crate::source::config::{ProbeCheck, ProbeSourceConfig};
use crate::telemetry::SourceStats;

pub struct Probe {
    pub config: ProbeSourceConfig,
    pub events: mpsc::Sender<Input>,
    pub stats: Arc<SourceStats>,
    pub clock: Arc<dyn Clock>,
    pub host: Arc<str>,
    pub http: reqwest::Client,
}

/// Builds the events of one probe round.
struct Round<'a> {
    probe: &'a Probe,
    out: Vec<Event>,
}

impl Round<'_> {
    fn event(&self, kind: &str, level: Level, message: String) -> Event {
        let p = self.probe;
        let mut labels = p.config.labels.clone();
        labels.insert("probe".into(), p.config.id.clone());
        Event {
            ts: p.clock.now(),
            kind: kind.to_owned(),
            source: p.config.id.clone(),
            level,
            service: None,
            host: p.host.to_string(),
            message: Some(message),
            value: None,
            correlation_id: None,
            trace_id: None,
            labels,
            fields: serde_json::Map::new(),
        }
    }

    fn metric(&mut self, name: &str, value: f64, extra: &[(&str, &str)]) {
        let text = extra
            .iter()
            .map(|(k, v)| format!(" {k}={v}"))
            .collect::<String>();
        let mut e = self.event("metric", Level::Info, format!("{name}={value:.2}{text}"));
        e.value = Some(value);
        e.labels.insert("metric".into(), name.to_owned());
        for (k, v) in extra {
            e.labels.insert((*k).to_owned(), (*v).to_owned());
        }
        self.out.push(e);
    }

    fn heartbeat(&mut self, service: &str, check: ProbeCheck) {
        let mut e = self.event("heartbeat", Level::Info, format!("{service} is up"));
        e.service = Some(service.to_owned());
        e.labels.insert("check".into(), check.as_str().to_owned());
        self.out.push(e);
    }

    fn failed(&mut self, check: ProbeCheck, target: &str, why: String) {
        self.probe
            .stats
            .error(&format!("{} check of {target}", check.as_str()), &why);
        let mut e = self.event(
            "probe_error",
            Level::Error,
            format!("{} check of {target} failed: {why}", check.as_str()),
        );
        e.labels.insert("check".into(), check.as_str().to_owned());
        e.labels.insert("target".into(), target.to_owned());
        self.out.push(e);
    }
}

impl Probe {
    pub async fn run(self, cancel: CancellationToken) {
        let mut tick = tokio::time::interval(self.config.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(source = %self.config.id, checks = ?self.config.checks, interval = ?self.config.interval, "probe started");
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            let events = tokio::select! {
                _ = cancel.cancelled() => break,
                e = self.round() => e,
            };
            for ev in events {
                self.stats.lines.inc();
                if self
                    .events
                    .send(Input::Event(ev, Instant::now()))
                    .await
                    .is_err()
                {
                    return;
                }
                self.stats.events.inc();
            }
        }
        tracing::debug!(source = %self.config.id, "probe stopped");
    }

    /// Runs every check once.
    pub async fn round(&self) -> Vec<Event> {
        let mut r = Round {
            probe: self,
            out: Vec::new(),
        };
        for check in &self.config.checks {
            match check {
                ProbeCheck::Memory => match memory_available_percent(Path::new("/proc/meminfo")) {
                    Ok(p) => r.metric("memory_available_percent", p, &[]),
                    Err(e) => r.failed(*check, "/proc/meminfo", e),
                },
                ProbeCheck::Disk => {
                    let mounts = if self.config.mounts.is_empty() {
                        local_mounts()
                    } else {
                        self.config.mounts.clone()
                    };
                    for m in mounts {
                        let shown = m.display().to_string();
                        // statvfs can hang on a dead network mount: off the async threads,
                        // under the probe's timeout.
                        let res = tokio::time::timeout(
                            self.config.timeout,
                            tokio::task::spawn_blocking(move || disk_free_percent(&m)),
                        )
                        .await;
                        match res {
                            Ok(Ok(Ok(p))) => r.metric("disk_free_percent", p, &[("mount", &shown)]),
                            Ok(Ok(Err(e))) => r.failed(*check, &shown, e),
                            Ok(Err(e)) => r.failed(*check, &shown, e.to_string()),
                            Err(_) => r.failed(
                                *check,
                                &shown,
                                format!("statvfs did not answer within {:?}", self.config.timeout),
                            ),
                        }
                    }
                }
                ProbeCheck::Load => match std::fs::read_to_string("/proc/loadavg") {
                    Ok(text) => {
                        let v: Vec<f64> = text
                            .split_whitespace()
                            .take(3)
                            .filter_map(|x| x.parse().ok())
                            .collect();
                        if let [l1, l5, l15] = v[..] {
                            r.metric("load1", l1, &[]);
                            r.metric("load5", l5, &[]);
                            r.metric("load15", l15, &[]);
                            let cpus = std::thread::available_parallelism()
                                .map(|n| n.get())
                                .unwrap_or(1);
                            r.metric("load1_per_cpu", l1 / cpus as f64, &[]);
                        } else {
                            r.failed(*check, "/proc/loadavg", format!("unexpected text {text:?}"));
                        }
                    }
                    Err(e) => r.failed(*check, "/proc/loadavg", e.to_string()),
                },
                ProbeCheck::Units => {
                    for unit in &self.config.units {
                        match unit_state(unit, self.config.timeout).await {
                            Ok(state) => {
                                let active = state == "active";
                                let mut e = r.event(
                                    "unit",
                                    if active { Level::Info } else { Level::Error },
                                    format!("{unit} is {state}"),
                                );
                                e.service = Some(unit.clone());
                                e.labels.insert("state".into(), state.clone());
                                r.out.push(e);
                                if active {
                                    r.heartbeat(unit, *check);
                                }
                            }
                            Err(e) => r.failed(*check, unit, e),
                        }
                    }
                }
                ProbeCheck::Processes => match process_table() {
                    Ok(procs) => {
                        for name in &self.config.processes {
                            let n = procs.iter().filter(|p| p.comm == *name).count();
                            r.metric("process_count", n as f64, &[("process", name)]);
                            if n > 0 {
                                r.heartbeat(name, *check);
                            } else {
                                r.failed(*check, name, "no such process is running".into());
                            }
                        }
                    }
                    Err(e) => r.failed(*check, "/proc", e),
                },
                ProbeCheck::Zombies => match process_table() {
                    Ok(procs) => {
                        let n = procs.iter().filter(|p| p.state == 'Z').count();
                        r.metric("zombie_processes", n as f64, &[]);
                    }
                    Err(e) => r.failed(*check, "/proc", e),
                },
                ProbeCheck::Http => {
                    for t in &self.config.http {
                        let service = t.service.clone().unwrap_or_else(|| t.url.clone());
                        let started = Instant::now();
                        match self
                            .http
                            .get(&t.url)
                            .timeout(self.config.timeout)
                            .send()
                            .await
                        {
                            Ok(resp) => {
                                let ms = started.elapsed().as_secs_f64() * 1000.0;
                                let status = resp.status().as_u16();
                                let extra =
                                    [("service", service.as_str()), ("url", t.url.as_str())];
                                r.metric("latency_ms", ms, &extra);
                                r.metric("http_status", f64::from(status), &extra);
                                let up = if t.expect_status.is_empty() {
                                    (200..400).contains(&status)
                                } else {
                                    t.expect_status.contains(&status)
                                };
                                if up {
                                    r.heartbeat(&service, *check);
                                } else {
                                    r.failed(*check, &t.url, format!("status {status}"));
                                }
                            }
                            Err(e) => r.failed(*check, &t.url, error_chain(&e)),
                        }
                    }
                }
                ProbeCheck::Tcp => {
                    for addr in &self.config.tcp {
                        let started = Instant::now();
                        match tokio::time::timeout(
                            self.config.timeout,
                            tokio::net::TcpStream::connect(addr.as_str()),
                        )
                        .await
                        {
                            Ok(Ok(_)) => {
                                let ms = started.elapsed().as_secs_f64() * 1000.0;
                                r.metric("tcp_connect_ms", ms, &[("target", addr)]);
                                r.heartbeat(addr, *check);
                            }
                            Ok(Err(e)) => r.failed(*check, addr, e.to_string()),
                            Err(_) => r.failed(
                                *check,
                                addr,
                                format!("no connection within {:?}", self.config.timeout),
                            ),
                        }
                    }
                }
            }
        }
        r.out
    }
}

/// An error with its causes, as reqwest nests the useful part.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// MemAvailable / MemTotal from /proc/meminfo, in percent.
pub fn memory_available_percent(path: &Path) -> Result<f64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let field = |name: &str| {
        text.lines().find_map(|l| {
            l.strip_prefix(name)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse::<f64>()
                .ok()
        })
    };
    match (field("MemAvailable:"), field("MemTotal:")) {
        (Some(a), Some(t)) if t > 0.0 => Ok(a / t * 100.0),
        _ => Err("MemAvailable or MemTotal missing".into()),
    }
}

/// Free space available to unprivileged users, in percent of the file system's size.
pub fn disk_free_percent(mount: &Path) -> Result<f64, String> {
    let st = nix::sys::statvfs::statvfs(mount).map_err(|e| e.to_string())?;
    let total = st.blocks() as f64 * st.fragment_size() as f64;
    if total <= 0.0 {
        return Err("file system reports no size".into());
    }
    Ok(st.blocks_available() as f64 * st.fragment_size() as f64 / total * 100.0)
}

/// Mount points of local, real file systems (from /proc/self/mounts): no virtual and no
/// network file systems.
pub fn local_mounts() -> Vec<PathBuf> {
    const VIRTUAL: &[&str] = &[
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "tmpfs",
        "cgroup",
        "cgroup2",
        "pstore",
        "bpf",
        "tracefs",
        "debugfs",
        "securityfs",
        "configfs",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "autofs",
        "binfmt_misc",
        "nsfs",
        "overlay",
        "squashfs",
        "ramfs",
        "rpc_pipefs",
        "nfsd",
        "efivarfs",
        "fuse.gvfsd-fuse",
        "fuse.portal",
        // Network file systems: not this host's disks, and slow or hanging when the server is.
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "fuse.sshfs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "afs",
        "lustre",
    ];
    let text = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut seen = std::collections::BTreeSet::new();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_dev, mount, fstype) = (f.next()?, f.next()?, f.next()?);
            (!VIRTUAL.contains(&fstype)).then(|| unescape_mount(mount))
        })
        .filter(|m| seen.insert(m.clone()))
        .map(PathBuf::from)
        .collect()
}

/// /proc/mounts writes spaces and a few others as octal escapes (`\040`).
fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(digits) = b.get(i + 1..i + 4)
            && digits.iter().all(|d| (b'0'..=b'7').contains(d))
            && let Ok(n) = u8::from_str_radix(std::str::from_utf8(digits).unwrap_or("x"), 8)
        {
            out.push(n);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `systemctl show -p ActiveState --value UNIT`.
async fn unit_state(unit: &str, timeout: Duration) -> Result<String, String> {
    let out = tokio::time::timeout(
        timeout,
        tokio::process::Command::new("systemctl")
            .args(["show", "-p", "ActiveState", "--value", "--", unit])
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| format!("systemctl did not answer within {timeout:?}"))?
    .map_err(|e| format!("cannot run systemctl: {e}"))?;
    let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || state.is_empty() {
        let err = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        return Err(if err.is_empty() {
            format!("systemctl exited with {}", out.status)
        } else {
            err
        });
    }
    Ok(state)
}

struct Proc {
    comm: String,
    state: char,
}

/// Name and state of every process, from /proc/PID/stat.
fn process_table() -> Result<Vec<Proc>, String> {
    let dir = std::fs::read_dir("/proc").map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        // Processes exit while we look: skip what vanished.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "PID (comm) S ..."; comm may itself hold parentheses, so take the last ')'.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let state = stat[close + 1..].trim_start().chars().next().unwrap_or('?');
        out.push(Proc { comm, state });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_mount_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("meminfo");
        std::fs::write(
            &p,
            "MemTotal:       16000000 kB\nMemFree:         100 kB\nMemAvailable:    4000000 kB\n",
        )
        .unwrap();
        assert_eq!(memory_available_percent(&p).unwrap(), 25.0);
        std::fs::write(&p, "MemTotal: 1 kB\n").unwrap();
        assert!(memory_available_percent(&p).is_err());
        assert_eq!(unescape_mount("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape_mount("/mnt/\\é1"), "/mnt/\\é1");
        assert_eq!(unescape_mount("/mnt/end\\04"), "/mnt/end\\04");
        assert!(disk_free_percent(Path::new("/")).unwrap() <= 100.0);
        assert!(disk_free_percent(Path::new("/no/such/mount")).is_err());
    }
}
