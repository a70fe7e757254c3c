//! The daemon's contract with systemd and its operators: sd_notify, draining, log formats.

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::*;

/// Reads sd_notify datagrams until `want` has been seen or the time is up.
fn read_until(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 4096];
    while !seen.iter().any(|m| m.lines().any(|l| l == want)) {
        assert!(Instant::now() < deadline, "never got {want}; got {seen:?}");
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    }
}

#[tokio::test]
async fn speaks_sd_notify_ready_reloading_watchdog_and_stopping() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut d = TestDaemon::prepare_env(
        "",
        SSH_RULE,
        &[
            ("NOTIFY_SOCKET", path.display().to_string()),
            ("WATCHDOG_USEC", "400000".into()),
        ],
    );
    let mut seen = Vec::new();
    read_until(&sock, &mut seen, "READY=1");
    assert!(
        seen.iter().any(|m| m.contains("STATUS=running; 2 rules")),
        "{seen:?}"
    );
    read_until(&sock, &mut seen, "WATCHDOG=1");

    // A broken reload says so in STATUS and stays ready.
    std::fs::write(d.rules_dir.join("bad.toml"), "[[rule]]\nid = 1\n").unwrap();
    seen.clear();
    d.signal(Signal::SIGHUP);
    read_until(&sock, &mut seen, "RELOADING=1");
    read_until(&sock, &mut seen, "READY=1");
    let status = seen.iter().find(|m| m.contains("STATUS=")).unwrap();
    assert!(
        status.contains("reload failed") && status.contains("bad.toml:2"),
        "{status}"
    );
    assert!(
        seen.iter().any(|m| m.contains("MONOTONIC_USEC=")),
        "{seen:?}"
    );

    d.wait_healthy().await;
    seen.clear();
    d.signal(Signal::SIGTERM);
    read_until(&sock, &mut seen, "STOPPING=1");
    assert!(d.wait_exit(Duration::from_secs(15)).success());
}

#[tokio::test]
async fn sigterm_drains_accepted_events_before_exiting() {
    let mut d = TestDaemon::start(SSH_RULE).await;
    // POST answers once the events are queued; stop at once and they must still be processed.
    let body: String = (0..5)
        .map(|_| failed_password("192.0.2.77") + "\n")
        .collect();
    let v = d.post_ndjson(body).await;
    assert_eq!(v["accepted"], 5);
    assert!(d.stop().success());
    d.restart().await;
    d.wait_for_key("ssh/192.0.2.77").await;
}

#[tokio::test]
async fn json_logs_on_request() {
    let mut d = TestDaemon::prepare("log_format = \"json\"\n", SSH_RULE);
    d.wait_healthy().await;
    assert!(d.stop().success());
    let log = d.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 2, "{log}");
    for l in lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["message"].is_string(), "{l}");
    }
    assert!(log.contains("\"message\":\"incidentd started\""), "{log}");
}
