//! The syslog datagram socket (fed by util-linux `logger`) and exec sources (real commands
//! that exit and are restarted).

use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::TestDaemon;

const PROGRAM_RULE: &str = r#"
[[rule]]
id = "by-program"
kind = "match"
where = { kind = "log" }
incident_key = "{{ event.source }}/{{ event.fields.program }}/{{ event.level }}/{{ event.message }}"
"#;

#[tokio::test]
async fn logger_writes_rfc3164_and_rfc5424_into_the_syslog_socket() {
    let d = TestDaemon::prepare(
        "[[source.syslog]]\nid = \"sys\"\nsocket = \"syslog.sock\"\n",
        PROGRAM_RULE,
    );
    d.wait_healthy().await;
    let sock = d.run.join("syslog.sock");
    for args in [
        vec!["--rfc3164", "-p", "auth.err", "-t", "sshd", "login failed"],
        vec!["--rfc5424", "-p", "user.warning", "-t", "app", "disk slow"],
    ] {
        let out = Command::new("logger")
            .arg("-u")
            .arg(&sock)
            .args(&args)
            .output()
            .expect("run logger");
        assert!(out.status.success(), "logger {args:?}: {out:?}");
    }
    d.wait_for_key("sys/sshd/error/login failed").await;
    d.wait_for_key("sys/app/warning/disk slow").await;
    let st = d.input("sys").await;
    assert_eq!(st["kind"], "syslog");
    assert_eq!(st["events"], 2, "{st}");
    assert_eq!(st["unparsed"], 0, "{st}");
}

#[tokio::test]
async fn an_exec_source_is_restarted_when_its_command_exits() {
    let dir = tempfile::tempdir().unwrap();
    let counter = dir.path().join("runs");
    // Each run prints one JSON record with its run number, complains on stderr, and exits.
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; \
         printf '{{\"MESSAGE\":\"run %s\",\"PRIORITY\":\"3\",\"_SYSTEMD_UNIT\":\"demo.service\",\"SYSLOG_IDENTIFIER\":\"demo\"}}\\n' $n; \
         echo 'something on stderr' >&2; exit 3",
        c = counter.display()
    );
    let config = format!(
        "[[source.exec]]\nid = \"journal\"\ncommand = [\"sh\", \"-c\", {script:?}]\nformat = \"journald\"\nrestart_delay = \"50ms\"\nmax_restart_delay = \"200ms\"\n"
    );
    let d = TestDaemon::prepare(&config, PROGRAM_RULE);
    d.wait_healthy().await;
    for n in 1..=3 {
        let key = format!("journal/demo/error/run {n}");
        d.wait_for_key(&key).await;
    }
    let st = d
        .wait_input("journal", |st| st["restarts"].as_u64().unwrap() >= 2)
        .await;
    assert!(
        st["last_error"].as_str().unwrap_or("").contains("exited"),
        "{st}"
    );
    assert!(d.log().contains("something on stderr"), "{}", d.log());
}

#[tokio::test]
async fn a_command_that_cannot_start_is_reported_and_retried() {
    let d = TestDaemon::prepare(
        "[[source.exec]]\nid = \"nope\"\ncommand = [\"/nonexistent/program\"]\nformat = \"raw\"\nrestart_delay = \"50ms\"\n",
        PROGRAM_RULE,
    );
    d.wait_healthy().await;
    let st = d
        .wait_input("nope", |st| st["restarts"].as_u64().unwrap() >= 1)
        .await;
    let e = st["last_error"].as_str().unwrap_or("");
    assert!(e.contains("cannot start `/nonexistent/program`"), "{st}");
}

fn processes_with_cmdline(needle: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| {
                    String::from_utf8_lossy(&c)
                        .replace('\0', " ")
                        .contains(needle)
                })
                .unwrap_or(false)
        })
        .collect()
}

#[tokio::test]
async fn an_exec_command_does_not_outlive_a_killed_daemon() {
    // A duration unique to this test process, to find the command among all processes.
    let secs = format!("600.{}", std::process::id());
    let config = format!(
        "[[source.exec]]\nid = \"long\"\ncommand = [\"sleep\", \"{secs}\"]\nformat = \"raw\"\n"
    );
    let mut d = TestDaemon::prepare(&config, PROGRAM_RULE);
    d.wait_healthy().await;
    let needle = format!("sleep {secs}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while processes_with_cmdline(&needle).is_empty() {
        assert!(
            Instant::now() < deadline,
            "command never started\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.kill9();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = processes_with_cmdline(&needle);
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "command outlived the daemon: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A loopback HTTP server: `/ok` answers 200, anything else 503.
fn http_server() -> (std::net::SocketAddr, std::thread::JoinHandle<()>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let handle = std::thread::spawn(move || {
        // Serves a few requests, then ends with the test.
        for stream in listener.incoming().take(16) {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 2048];
            let n = s.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let status = if req.starts_with("GET /ok ") {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = write!(
                s,
                "HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nhi"
            );
        }
    });
    (addr, handle)
}

#[tokio::test]
async fn probes_report_this_host_and_say_when_a_check_fails() {
    let (addr, _server) = http_server();
    // A port with nothing behind it: bind, note, close.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let config = format!(
        r#"[[source.probe]]
id = "host"
interval = "200ms"
timeout = "2s"
checks = ["memory", "disk", "load", "processes", "zombies", "http", "tcp", "units"]
mounts = ["/"]
processes = ["incidentd", "no-such-process-xyz"]
units = ["no-such-unit-xyz.service"]
http = [{{ url = "http://{addr}/ok", service = "web" }}, {{ url = "http://{addr}/down", service = "api" }}]
tcp = ["{addr}", "{closed}"]
"#
    );
    let rules = r#"
[[rule]]
id = "probe-events"
kind = "match"
where = { source = "host" }
incident_key = "{{ event.kind }}/{{ event.labels.metric or event.labels.check }}/{{ event.service or event.labels.target or event.labels.mount or '-' }}"
"#;
    let d = TestDaemon::prepare(&config, rules);
    d.wait_healthy().await;
    for key in [
        "metric/memory_available_percent/-".to_owned(),
        "metric/disk_free_percent//".to_owned(),
        "metric/load1/-".to_owned(),
        "metric/process_count/-".to_owned(),
        "heartbeat/processes/incidentd".to_owned(),
        "probe_error/processes/no-such-process-xyz".to_owned(),
        "metric/zombie_processes/-".to_owned(),
        "metric/latency_ms/-".to_owned(),
        "heartbeat/http/web".to_owned(),
        format!("probe_error/http/http://{addr}/down"),
        format!("heartbeat/tcp/{addr}"),
        format!("probe_error/tcp/{closed}"),
    ] {
        d.wait_for_key(&key).await;
    }
    // Without a running systemd the unit check fails and says so; with one, the unknown
    // unit is reported inactive.
    let keys: Vec<String> = d
        .real_incidents()
        .await
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        keys.iter()
            .any(|k| k == "probe_error/units/no-such-unit-xyz.service"
                || k == "unit/-/no-such-unit-xyz.service"),
        "{keys:?}"
    );
    let st = d.input("host").await;
    assert_eq!(st["kind"], "probe");
    assert!(st["errors"].as_u64().unwrap() >= 3, "{st}");
}

#[tokio::test]
async fn metrics_show_every_source_on_the_socket_and_the_tcp_listener() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(&log, "one\ntwo\n{broken\n").unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let config = format!(
        "[control]\nmetrics_listen = \"127.0.0.1:{port}\"\n[[source.file]]\nid = \"app\"\npath = \"{}\"\nformat = \"json\"\nread_from = \"beginning\"\n",
        log.display()
    );
    let d = TestDaemon::prepare(&config, PROGRAM_RULE);
    d.wait_healthy().await;
    // The source counts a line when it reads it, and the event when it is handed on: both
    // are waited for (read once, the second could still be 0).
    let want = [
        "incidentd_source_lines_total{source=\"app\",kind=\"file\"} 3",
        "incidentd_events_received_total{source=\"app\",kind=\"file\"} 3",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (status, body) = d
            .client
            .raw(hyper::Method::GET, "/metrics", Vec::new(), "text/plain")
            .await
            .unwrap();
        assert_eq!(status.as_u16(), 200);
        let text = String::from_utf8(body.to_vec()).unwrap();
        if want.iter().all(|w| text.contains(w)) {
            break text;
        }
        assert!(Instant::now() < deadline, "no {want:?} in\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    for line in [
        "# TYPE incidentd_events_received_total counter",
        "incidentd_events_received_total{source=\"app\",kind=\"file\"} 3",
        "incidentd_source_problems_total{source=\"app\",reason=\"unparsed\"} 3",
        "incidentd_events_rejected_total{source=\"ingest\",reason=\"invalid_json\"} 0",
        "incidentd_source_files{source=\"app\"} 1",
        "incidentd_detections_total{rule=\"by-program\"}",
        "# TYPE incidentd_event_to_incident_seconds histogram",
        "incidentd_event_to_incident_seconds_bucket{le=\"+Inf\"}",
        "incidentd_event_to_detection_seconds_count",
    ] {
        assert!(text.contains(line), "no {line:?} in\n{text}");
    }
    // Every sample line is `name{labels} number`.
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        let value = l.rsplit_once(' ').map(|(_, v)| v).unwrap_or("");
        assert!(value.parse::<f64>().is_ok(), "bad sample line {l:?}");
    }
    // The TCP listener serves the same, and nothing else.
    let get = move |path: &str| {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    };
    let tcp = tokio::task::spawn_blocking(move || (get("/metrics"), get("/v1/incidents")))
        .await
        .unwrap();
    assert!(tcp.0.starts_with("HTTP/1.1 200"), "{}", tcp.0);
    assert!(tcp.0.contains("incidentd_source_lines_total"), "{}", tcp.0);
    assert!(tcp.1.starts_with("HTTP/1.1 404"), "{}", tcp.1);
}

/// The load generator's short run: a real daemon, both inputs, and the known answer checked
/// (the long runs and their figures are in docs/PERFORMANCE.md).
#[test]
fn the_load_generator_gets_the_known_answer_through_both_inputs() {
    for mode in ["socket", "file"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_incidentd-loadgen"))
            .args(["--events", "20000", "--mode", mode, "--json", "--daemon"])
            .arg(crate::util::BIN)
            .output()
            .expect("run incidentd-loadgen");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{mode}: {text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(report["correct"], true, "{report}");
        assert_eq!(
            report["expected_incidents"], report["incidents"],
            "{report}"
        );
        assert!(
            report["latency_seconds"]["event_to_incident"]["count"]
                .as_u64()
                .unwrap()
                > 0
        );
    }
}
