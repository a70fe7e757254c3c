//! `TestDaemon`: the real `incidentd` binary in a temporary folder, reaped on drop.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use incidentd::cli::client::{Client, ClientError};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_incidentd");
pub const CTL: &str = env!("CARGO_BIN_EXE_incidentctl");

/// A match rule used as a barrier: once its incident exists, every event sent before it on
/// the same connection has been through the engine and the incident manager.
pub const MARKER_RULE: &str = r#"
[[rule]]
id = "marker"
kind = "match"
where = { kind = "marker" }
incident_key = "marker/{{ event.message }}"
"#;

pub const SSH_RULE: &str = r#"
[[rule]]
id = "ssh"
kind = "threshold"
severity = "high"
threshold = 5
window = "1m"
where = { kind = "log" }
regex = 'Failed password for (?:invalid user )?\S+ from (?P<ip>[0-9.]+)'
group_by = ["ip"]
"#;

pub fn failed_password(ip: &str) -> String {
    format!(r#"{{"kind":"log","message":"Failed password for root from {ip} port 22 ssh2"}}"#)
}

pub struct TestDaemon {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub rules_dir: PathBuf,
    pub state: PathBuf,
    pub run: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    pub client: Client,
    markers: std::cell::Cell<u32>,
    env: Vec<(String, String)>,
}

impl TestDaemon {
    /// Writes a config with `rules` in rules.d/test.toml (plus the marker rule) and starts
    /// the daemon.
    pub async fn start(rules: &str) -> TestDaemon {
        let d = Self::prepare("", rules);
        d.wait_healthy().await;
        d
    }

    /// Writes the files and spawns the daemon without waiting for it.
    pub fn prepare(extra_config: &str, rules: &str) -> TestDaemon {
        Self::prepare_env(extra_config, rules, &[])
    }

    /// Like [`prepare`](Self::prepare), with extra environment for the daemon.
    pub fn prepare_env(extra_config: &str, rules: &str, env: &[(&str, String)]) -> TestDaemon {
        Self::prepare_with(extra_config, rules, env, |_| {})
    }

    /// Like [`prepare_env`](Self::prepare_env), calling `setup` with the daemon's folder
    /// before it starts (plugins go in its `plugins/`).
    pub fn prepare_with(
        extra_config: &str,
        rules: &str,
        env: &[(&str, String)],
        setup: impl FnOnce(&Path),
    ) -> TestDaemon {
        let dir = tempfile::Builder::new()
            .prefix("incd")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().to_owned();
        let config = root.join("incidentd.toml");
        std::fs::write(
            &config,
            format!(
                "rules_dir = \"rules.d\"\nplugins_dir = \"plugins\"\n[daemon]\nshutdown_timeout = \"10s\"\n{extra_config}"
            ),
        )
        .unwrap();
        setup(&root);
        let rules_dir = root.join("rules.d");
        std::fs::create_dir(&rules_dir).unwrap();
        std::fs::write(rules_dir.join("marker.toml"), MARKER_RULE).unwrap();
        std::fs::write(rules_dir.join("test.toml"), rules).unwrap();
        let run = root.join("run");
        let mut d = TestDaemon {
            client: Client::new(run.join("control.sock")),
            state: root.join("state"),
            run,
            log: root.join("daemon.log"),
            rules_dir,
            config,
            dir,
            child: None,
            markers: std::cell::Cell::new(0),
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        d.spawn();
        d
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(&self.config)
            .arg("--state-dir")
            .arg(&self.state)
            .arg("--runtime-dir")
            .arg(&self.run)
            .env("RUST_LOG", "info")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("STATE_DIRECTORY")
            .env_remove("RUNTIME_DIRECTORY")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null());
        c
    }

    pub fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = self
            .command()
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn incidentd");
        self.child = Some(child);
    }

    pub async fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(v) = self.client.get::<Value>("/v1/health").await
                && v["status"] == "ok"
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "daemon did not become healthy\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.as_ref().expect("running").id() as i32)
    }

    pub fn signal(&self, sig: Signal) {
        kill(self.pid(), sig).expect("signal daemon");
    }

    /// SIGTERM and wait for the exit (20 s at most).
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(20))
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        self.signal(Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(10));
    }

    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("daemon did not exit within {limit:?}\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub async fn restart(&mut self) {
        self.spawn();
        self.wait_healthy().await;
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn ingest_path(&self) -> PathBuf {
        self.run.join("ingest.sock")
    }

    /// Writes raw bytes to the ingest socket on one connection.
    pub fn send_raw(&self, bytes: &[u8]) {
        let mut s = UnixStream::connect(self.ingest_path()).expect("connect ingest socket");
        s.write_all(bytes).expect("write ingest socket");
    }

    /// Sends lines and a marker on one connection, then waits until the marker's incident
    /// exists: everything sent before it has been processed.
    pub async fn send_and_settle(&self, lines: &[String]) {
        let n = self.markers.get() + 1;
        self.markers.set(n);
        let mut body = lines.join("\n");
        body.push_str(&format!("\n{{\"kind\":\"marker\",\"message\":\"m{n}\"}}\n"));
        self.send_raw(body.as_bytes());
        self.wait_for_key(&format!("marker/m{n}")).await;
    }

    pub async fn incidents(&self, query: &str) -> Vec<Value> {
        let v: Value = self
            .client
            .get(&format!("/v1/incidents?limit=1000&{query}"))
            .await
            .expect("list");
        v["incidents"].as_array().cloned().unwrap_or_default()
    }

    /// Incidents other than the markers.
    pub async fn real_incidents(&self) -> Vec<Value> {
        self.incidents("")
            .await
            .into_iter()
            .filter(|i| !i["key"].as_str().unwrap_or("").starts_with("marker/"))
            .collect()
    }

    pub async fn wait_for_key(&self, key: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = self
                .incidents("")
                .await
                .into_iter()
                .find(|i| i["key"] == key)
            {
                return i;
            }
            assert!(
                Instant::now() < deadline,
                "no incident with key {key}\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `GET /metrics` as text.
    pub async fn metrics(&self) -> String {
        let (_, body) = self
            .client
            .raw(hyper::Method::GET, "/metrics", Vec::new(), "text/plain")
            .await
            .expect("metrics");
        String::from_utf8_lossy(&body).into_owned()
    }

    pub async fn get(&self, path: &str) -> Value {
        self.client
            .get(path)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}\n{}", self.log()))
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, ClientError> {
        self.client.post(path, &body).await
    }

    /// POSTs an NDJSON body to /v1/events and returns the answer.
    /// `POST /v1/alerts` with `body`, which must be accepted; the incident's id.
    pub async fn alert(&self, body: Value) -> Value {
        self.post("/v1/alerts", body).await.unwrap()["incident_id"].clone()
    }

    pub async fn post_ndjson(&self, body: String) -> Value {
        self.client
            .call(
                hyper::Method::POST,
                "/v1/events",
                Some(body.into_bytes()),
                "application/x-ndjson",
            )
            .await
            .unwrap_or_else(|e| panic!("POST /v1/events: {e}\n{}", self.log()))
    }

    /// Any request; returns the status and the body as JSON (Null when it is not JSON).
    pub async fn raw(&self, method: hyper::Method, path: &str, body: &[u8]) -> (u16, Value) {
        let (status, bytes) = self
            .client
            .raw(method, path, body.to_vec(), "application/json")
            .await
            .expect("request");
        (
            status.as_u16(),
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    pub fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(CTL)
            .args(args)
            .env("INCIDENTD_SOCKET", self.run.join("control.sock"))
            .env("NO_COLOR", "1")
            .output()
            .expect("run incidentctl")
    }

    /// A configured source's counters from `/v1/status` (`inputs[]`).
    pub async fn input(&self, id: &str) -> Value {
        let st = self.get("/v1/status").await;
        st["inputs"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["id"] == id).cloned())
            .unwrap_or_else(|| panic!("no input {id} in {st}"))
    }

    /// Waits (30 s at most: a loaded 2-core machine running the suite in parallel once took
    /// longer than 10 s) until a source's counters satisfy `ok`, and returns them.
    pub async fn wait_input(&self, id: &str, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = self.input(id).await;
            if ok(&st) {
                return st;
            }
            assert!(Instant::now() < deadline, "{st}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (30 s at most) until `/v1/status` satisfies `ok`, and returns it.
    pub async fn wait_status(&self, ok: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let st = self.get("/v1/status").await;
            if ok(&st) {
                return st;
            }
            assert!(Instant::now() < deadline, "{st}\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- config {} ---\n{}\n--- rules ---\n{}\n--- command ---\n{:?}\n--- daemon log ---\n{}",
                self.config.display(),
                std::fs::read_to_string(&self.config).unwrap_or_default(),
                std::fs::read_to_string(self.rules_dir.join("test.toml")).unwrap_or_default(),
                self.command(),
                self.log()
            );
        }
    }
}

/// Runs `incidentd --check-config FILE`.
/// Writes `text` as a config file and checks that `--check-config` refuses it with every
/// message of `wants`.
pub fn assert_refused(text: &str, wants: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("incidentd.toml");
    std::fs::write(&file, text).unwrap();
    let out = check_config(&file);
    assert!(!out.status.success(), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    for want in wants {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
}

pub fn check_config(file: &Path) -> std::process::Output {
    Command::new(BIN)
        .arg("--check-config")
        .arg(file)
        .output()
        .expect("run incidentd")
}

pub fn exists(p: &Path) -> bool {
    p.symlink_metadata().is_ok()
}

/// A child process killed (and reaped) when the test ends, however it ends.
pub struct Reaped(pub Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP port free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The process is there and not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s
                .rsplit_once(')')
                .map(|(_, r)| r.trim_start())
                .unwrap_or("");
            !state.starts_with('Z') && !state.starts_with('X')
        })
        .unwrap_or(false)
}

/// A small xorshift generator: the seed is printed so a failing run can be repeated.
pub struct Rng(pub u64);

impl Rng {
    /// A seed from the clock (odd, so never zero).
    pub fn seeded(what: &str) -> Rng {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("{what} seed {seed}");
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Appends `text` to the file at `path` (made if missing).
pub fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// An RFC 3164 syslog stamp with its host (`Aug  6 02:42:08 web-1`), as auth.log writes it.
pub fn syslog_stamp(at: time::OffsetDateTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{} {:>2} {:02}:{:02}:{:02} web-1",
        MONTHS[at.month() as usize - 1],
        at.day(),
        at.hour(),
        at.minute(),
        at.second()
    )
}

/// Lets other users reach the daemon's sockets (the test's temporary folders are private).
pub fn open_to_others(d: &TestDaemon) {
    use std::os::unix::fs::PermissionsExt;
    for p in [d.dir.path(), d.run.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// `incidentctl rules test INPUT --rules RULES ARGS…`, run to its end.
pub fn rules_test_run(input: &Path, rules: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(CTL)
        .args(["rules", "test"])
        .arg(input)
        .arg("--rules")
        .arg(rules)
        .args(args)
        .output()
        .unwrap()
}

/// `incidentctl rules test INPUT --rules RULES --format FORMAT -o json [EXTRA…]`, which must
/// succeed; its report.
pub fn rules_test(input: &Path, rules: &Path, format: &str, extra: &[&str]) -> Value {
    let args: Vec<&str> = ["--format", format, "-o", "json"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let out = rules_test_run(input, rules, &args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `incidentd store ACTION --state-dir STATE` (verify, rebuild) on a stopped daemon's state;
/// panics with its output unless it succeeds.
pub fn store_ok(state: &Path, action: &str) {
    let out = Command::new(BIN)
        .args(["store", action, "--state-dir"])
        .arg(state)
        .output()
        .expect("run incidentd store");
    assert!(out.status.success(), "store {action}: {out:?}");
}
