//! The syslog datagram socket (fed by util-linux `logger`) and exec sources (real commands
//! that exit and are restarted).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::util::TestDaemon;

async fn input(d: &TestDaemon, id: &str) -> Value {
    let st = d.get("/v1/status").await;
    st["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("no input {id} in {st}"))
}

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
    let st = input(&d, "sys").await;
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
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = input(&d, "journal").await;
        if st["restarts"].as_u64().unwrap() >= 2 {
            assert!(
                st["last_error"].as_str().unwrap_or("").contains("exited"),
                "{st}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(d.log().contains("something on stderr"), "{}", d.log());
}

#[tokio::test]
async fn a_command_that_cannot_start_is_reported_and_retried() {
    let d = TestDaemon::prepare(
        "[[source.exec]]\nid = \"nope\"\ncommand = [\"/nonexistent/program\"]\nformat = \"raw\"\nrestart_delay = \"50ms\"\n",
        PROGRAM_RULE,
    );
    d.wait_healthy().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = input(&d, "nope").await;
        if st["restarts"].as_u64().unwrap() >= 1 {
            let e = st["last_error"].as_str().unwrap_or("");
            assert!(e.contains("cannot start `/nonexistent/program`"), "{st}");
            break;
        }
        assert!(Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
