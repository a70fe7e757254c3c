//! `incidentd-loadgen`: drives a real incidentd with a realistic event mix and a known answer,
//! through the ingest socket or a tailed file, at a chosen rate or flat out, and reports
//! accepted events/s, latency from an event's arrival to its incident (measured inside the
//! daemon, read from `/v1/status`), the daemon's CPU time and peak RSS, and whether the
//! incidents match the answer.
//!
//! It starts its own daemon (the `incidentd` beside this binary, or `--daemon`) in a temporary
//! folder with one rule: 5 failed SSH passwords from one address within a minute. The mix:
//! web access logs, logins, metrics, background failures from addresses that fail at most
//! four times, and every `--burst-every` events a brute-force burst of exactly five failures
//! from a fresh address, spread over the next events. Each burst must become exactly one
//! incident with one detection.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use incidentd::cli::client::Client;
use serde_json::{Value, json};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    /// NDJSON over the ingest socket.
    Socket,
    /// NDJSON lines appended to a file the daemon tails (`[[source.file]]`, format json).
    File,
}

#[derive(Parser, Debug)]
#[command(
    name = "incidentd-loadgen",
    version,
    about = "Drive a real incidentd with a known answer and report throughput, latency, CPU and memory."
)]
struct Args {
    /// How events reach the daemon.
    #[arg(long, value_enum, default_value = "socket")]
    mode: Mode,
    /// Events to send.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Events per second; 0 sends flat out.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// One brute-force burst starts every this many events.
    #[arg(long, default_value_t = 200)]
    burst_every: u64,
    /// The incidentd binary (default: the one beside this program).
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// Deterministic pseudo-random numbers (xorshift64*), so runs repeat.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The event stream and its answer.
struct Mix {
    rng: Rng,
    /// Pending burst failures: (event index to emit at, address).
    pending: std::collections::BTreeMap<u64, String>,
    bursts: u64,
    background: std::collections::HashMap<u32, u8>,
    burst_every: u64,
}

impl Mix {
    fn line(&mut self, i: u64, out: &mut Vec<u8>) {
        if i.is_multiple_of(self.burst_every) {
            // A fresh address fails five times over the next few dozen events.
            self.bursts += 1;
            let ip = format!(
                "203.{}.{}.{}",
                self.bursts >> 16 & 255,
                self.bursts >> 8 & 255,
                self.bursts & 255
            );
            let mut at = i;
            for _ in 0..5 {
                while self.pending.contains_key(&at) {
                    at += 1;
                }
                self.pending.insert(at, ip.clone());
                at += 1 + self.rng.below(10);
            }
        }
        if let Some(ip) = self.pending.remove(&i) {
            let _ = writeln!(
                out,
                r#"{{"kind":"log","service":"sshd","message":"Failed password for root from {ip} port 22 ssh2"}}"#
            );
            return;
        }
        let r = self.rng.below(100);
        let _ = match r {
            0..=59 => writeln!(
                out,
                r#"{{"kind":"log","service":"web","message":"GET /api/items/{} 200 {}ms"}}"#,
                self.rng.below(10_000),
                self.rng.below(300)
            ),
            60..=74 => writeln!(
                out,
                r#"{{"kind":"metric","service":"web","value":{},"labels":{{"metric":"latency_ms"}}}}"#,
                self.rng.below(900)
            ),
            75..=89 => writeln!(
                out,
                r#"{{"kind":"log","service":"sshd","message":"Accepted publickey for deploy from 10.0.{}.{} port 50000 ssh2"}}"#,
                self.rng.below(4),
                self.rng.below(250)
            ),
            _ => {
                // A background failure from an address that fails at most four times.
                let a = self.rng.below(1 << 20) as u32;
                let n = self.background.entry(a).or_insert(0);
                if *n < 4 {
                    *n += 1;
                    writeln!(
                        out,
                        r#"{{"kind":"log","service":"sshd","message":"Failed password for admin from 198.{}.{}.{} port 22 ssh2"}}"#,
                        a >> 16,
                        a >> 8 & 255,
                        a & 255
                    )
                } else {
                    writeln!(
                        out,
                        r#"{{"kind":"log","level":"error","service":"web","message":"upstream timeout"}}"#
                    )
                }
            }
        };
    }
}

const RULE: &str = r#"
[[rule]]
id = "ssh"
kind = "threshold"
threshold = 5
window = "1m"
where = { kind = "log" }
regex = 'Failed password for \S+ from (?P<ip>[0-9.]+)'
group_by = ["ip"]
"#;

/// A fresh folder of our own, removed when dropped (also on errors).
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Scratch, String> {
        let template = std::env::temp_dir().join("incidentd-loadgen.XXXXXX");
        nix::unistd::mkdtemp(&template)
            .map(Scratch)
            .map_err(|e| format!("cannot make a temporary folder: {e}"))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Daemon {
    child: Child,
    dir: PathBuf,
    /// Dropped after the daemon stopped (fields drop in order).
    _scratch: Scratch,
}

impl Daemon {
    /// The end of the daemon's log, for an error message.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("daemon.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(bin: &Path, mode: Mode) -> Result<(Daemon, PathBuf), String> {
    let scratch = Scratch::new()?;
    let dir = scratch.0.clone();
    std::fs::create_dir_all(dir.join("rules")).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = dir.join("events.ndjson");
    let source = match mode {
        Mode::Socket => String::new(),
        Mode::File => format!(
            "[[source.file]]\nid = \"loadgen\"\npath = \"{}\"\nformat = \"json\"\nread_from = \"beginning\"\n",
            log.display()
        ),
    };
    std::fs::write(
        dir.join("incidentd.toml"),
        format!("rules_dir = \"rules\"\n[daemon]\nlog_format = \"text\"\n{source}"),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(dir.join("rules/ssh.toml"), RULE).map_err(|e| e.to_string())?;
    if mode == Mode::File {
        std::fs::File::create(&log).map_err(|e| e.to_string())?;
    }
    let stderr = std::fs::File::create(dir.join("daemon.log")).map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .arg("--config")
        .arg(dir.join("incidentd.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--runtime-dir")
        .arg(dir.join("run"))
        .env("RUST_LOG", "warn")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    Ok((
        Daemon {
            child,
            dir,
            _scratch: scratch,
        },
        log,
    ))
}

/// utime + stime in seconds, and peak RSS in bytes, of a process.
fn cpu_and_peak_rss(pid: u32) -> (f64, u64) {
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let cpu = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            // Fields 14 and 15 of stat (utime, stime) are 12 and 13 after "pid (comm)".
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / ticks)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024;
    (cpu, rss)
}

async fn wait_for<F: Fn(&Value) -> bool>(
    client: &Client,
    limit: Duration,
    ok: F,
) -> Result<Value, String> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(v) = client.get::<Value>("/v1/status").await
            && ok(&v)
        {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("the daemon did not get there within {limit:?}"));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Every `ssh/…` incident with its detection count, page by page (pages of 64, so even the
/// test's short run reads more than one).
async fn ssh_incidents(client: &Client) -> Result<Vec<(String, u64)>, String> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/incidents?limit=64&cursor={c}"),
            None => "/v1/incidents?limit=64".to_owned(),
        };
        let page: Value = client.get(&path).await.map_err(|e| e.to_string())?;
        for i in page["incidents"].as_array().into_iter().flatten() {
            let key = i["key"].as_str().unwrap_or("");
            if key.starts_with("ssh/") {
                out.push((key.to_owned(), i["detections"].as_u64().unwrap_or(0)));
            }
        }
        // Cursors are opaque strings of digits and dots: safe in a query as they are.
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return Ok(out),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    // Ctrl-C ends the run through the same path as an error, so the daemon is stopped and
    // the temporary folder removed.
    let result = tokio::select! {
        r = run(args) => r,
        _ = tokio::signal::ctrl_c() => Err("interrupted".to_owned()),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("incidentd-loadgen: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let bin = match args.daemon {
        Some(p) => p,
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("incidentd"),
    };
    let (daemon, log) = start_daemon(&bin, args.mode)?;
    let client = Client::new(daemon.dir.join("run/control.sock"));
    let st = wait_for(&client, Duration::from_secs(20), |v| v["pid"].is_u64())
        .await
        .map_err(|e| format!("{e}; its log ends:\n{}", daemon.log_tail()))?;
    let pid = st["pid"].as_u64().unwrap_or(0) as u32;
    let (cpu0, _) = cpu_and_peak_rss(pid);

    let mut mix = Mix {
        rng: Rng(0x9e37_79b9_7f4a_7c15),
        pending: Default::default(),
        bursts: 0,
        background: Default::default(),
        burst_every: args.burst_every.max(20),
    };
    let mut sink: Box<dyn Write> = match args.mode {
        Mode::Socket => Box::new(
            std::os::unix::net::UnixStream::connect(daemon.dir.join("run/ingest.sock"))
                .map_err(|e| format!("cannot connect to the ingest socket: {e}"))?,
        ),
        Mode::File => Box::new(
            std::fs::OpenOptions::new()
                .append(true)
                .open(&log)
                .map_err(|e| e.to_string())?,
        ),
    };
    let started = Instant::now();
    // Paced runs write small chunks (a hundredth of a second's worth), so a burst is not
    // spread over long pauses and latency is not measured on lumps.
    let chunk = if args.rate > 0 {
        (args.rate / 100).clamp(1, 1000)
    } else {
        1000
    };
    let mut buf = Vec::with_capacity(256 * chunk as usize);
    let mut sent = 0u64;
    // Writing blocks while the daemon pushes back; that is the point of flat out.
    while sent < args.events {
        let n = chunk.min(args.events - sent);
        buf.clear();
        for i in sent..sent + n {
            mix.line(i, &mut buf);
        }
        sink.write_all(&buf)
            .map_err(|e| format!("write failed: {e}"))?;
        sent += n;
        if args.rate > 0 {
            let due = started + Duration::from_secs_f64(sent as f64 / args.rate as f64);
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                tokio::task::spawn_blocking(move || std::thread::sleep(wait))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    sink.flush().map_err(|e| e.to_string())?;
    let written = started.elapsed();
    drop(sink);
    // Bursts whose failures would fall past the end were cut short: they are not expected.
    let cut_short: std::collections::BTreeSet<&String> = mix.pending.values().collect();
    let expected = mix.bursts - cut_short.len() as u64;

    let events = args.events;
    let st = wait_for(&client, Duration::from_secs(120), |v| {
        v["engine"]["events"].as_u64().unwrap_or(0) >= events
    })
    .await?;
    let processed = started.elapsed();
    // Detections still on their way to the store: wait on the status counters (cheap), then
    // read the incidents once (listing thousands of incidents over and over would load the
    // daemon that is being measured).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = client
            .get::<Value>("/v1/status")
            .await
            .unwrap_or(Value::Null);
        let counted = ["created", "correlated"]
            .iter()
            .map(|k| st["incidents"][*k].as_u64().unwrap_or(0))
            .sum::<u64>();
        if counted >= expected || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let incidents = ssh_incidents(&client).await?;
    let st = client.get::<Value>("/v1/status").await.unwrap_or(st);
    let (cpu1, peak_rss) = cpu_and_peak_rss(pid);
    let twice = incidents.iter().filter(|(_, n)| *n != 1).count();
    let correct = incidents.len() as u64 == expected && twice == 0;
    let lat = &st["latency_seconds"];
    let report = json!({
        "mode": format!("{:?}", args.mode).to_lowercase(),
        "events": events,
        "rate_asked": args.rate,
        "write_seconds": written.as_secs_f64(),
        "seconds": processed.as_secs_f64(),
        "events_per_second": events as f64 / processed.as_secs_f64(),
        "cpu_seconds": cpu1 - cpu0,
        "cpu_percent": (cpu1 - cpu0) / processed.as_secs_f64() * 100.0,
        "peak_rss_bytes": peak_rss,
        "latency_seconds": lat,
        "expected_incidents": expected,
        "incidents": incidents.len(),
        "incidents_with_more_than_one_detection": twice,
        "correct": correct,
    });
    if args.json {
        println!("{report:#}");
    } else {
        let ms = |v: &Value| {
            v.as_f64()
                .map(|s| format!("{:.2} ms", s * 1000.0))
                .unwrap_or_else(|| "-".into())
        };
        println!(
            "{} events via {} in {:.3} s: {:.0} events/s accepted and processed{}",
            events,
            report["mode"].as_str().unwrap_or(""),
            processed.as_secs_f64(),
            report["events_per_second"].as_f64().unwrap_or(0.0),
            if args.rate > 0 {
                format!(" (asked {} events/s)", args.rate)
            } else {
                " (flat out)".into()
            }
        );
        for (name, key) in [
            ("event → detection", "event_to_detection"),
            ("detection → incident", "detection_to_incident"),
            ("event → incident", "event_to_incident"),
        ] {
            println!(
                "latency {name:22} p50 {:>10}  p99 {:>10}  ({} samples)",
                ms(&lat[key]["p50"]),
                ms(&lat[key]["p99"]),
                lat[key]["count"]
            );
        }
        println!(
            "daemon CPU {:.2} s ({:.0}% of one core), peak RSS {:.1} MB",
            cpu1 - cpu0,
            report["cpu_percent"].as_f64().unwrap_or(0.0),
            peak_rss as f64 / 1048576.0
        );
        println!(
            "incidents {} of {} expected, {} detected more than once: {}",
            incidents.len(),
            expected,
            twice,
            if correct { "correct" } else { "WRONG" }
        );
    }
    drop(daemon);
    Ok(correct)
}
