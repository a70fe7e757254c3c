//! `[[source.journald]]` against a real journal folder, written without a running journald
//! by `systemd-journal-remote` from journal export format and read by the daemon through
//! `journalctl --directory`: unit, identifier and priority filters; entries written while
//! the daemon was down are read after a restart, none twice, through SIGKILLs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{Rng, TestDaemon};

const JOURNAL_REMOTE: &str = "/lib/systemd/systemd-journal-remote";

/// One journal entry to write.
struct Entry<'a> {
    unit: &'a str,
    identifier: &'a str,
    priority: u8,
    message: String,
}

/// Appends `entries` to `dir/test.journal` (one writer at a time, in order), stamped now.
fn write_journal(dir: &Path, entries: &[Entry<'_>]) {
    assert!(
        Path::new(JOURNAL_REMOTE).exists(),
        "{JOURNAL_REMOTE} is missing: apt-get install systemd-journal-remote"
    );
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let mut export = String::new();
    for (i, e) in entries.iter().enumerate() {
        let t = now_us + i as u64;
        export.push_str(&format!(
            "__REALTIME_TIMESTAMP={t}\n__MONOTONIC_TIMESTAMP={}\n_BOOT_ID=0123456789abcdef0123456789abcdef\n_HOSTNAME=web-1\n_SYSTEMD_UNIT={}\nSYSLOG_IDENTIFIER={}\nPRIORITY={}\nMESSAGE={}\n\n",
            t - 1_700_000_000_000_000,
            e.unit,
            e.identifier,
            e.priority,
            e.message
        ));
    }
    let mut child = Command::new(JOURNAL_REMOTE)
        .arg(format!("--output={}", dir.join("test.journal").display()))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sshd(seq: u32, priority: u8) -> Entry<'static> {
    Entry {
        unit: "sshd.service",
        identifier: "sshd",
        priority,
        message: format!("Failed password for root seq={seq}"),
    }
}

fn noise(seq: u32) -> Entry<'static> {
    Entry {
        unit: "nginx.service",
        identifier: "nginx",
        priority: 3,
        message: format!("upstream timed out seq={seq}"),
    }
}

fn cron(seq: u32, priority: u8) -> Entry<'static> {
    Entry {
        unit: "cron.service",
        identifier: "CRON",
        priority,
        message: format!("job failed seq={seq}"),
    }
}

const RULE: &str = r#"
[[rule]]
id = "entry"
kind = "match"
where = { kind = "log" }
regex = 'seq=(?P<seq>\d+)'
incident_key = "{{ labels.src }}/{{ labels.seq }}"
"#;

/// Every incident key with its detection count.
async fn seen(d: &TestDaemon) -> BTreeMap<String, u64> {
    d.real_incidents()
        .await
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap().to_owned(),
                i["detections"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waits until exactly `expected` keys are there, each detected once.
async fn expect_exactly(d: &TestDaemon, expected: &[String], seed: u64) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = seen(d).await;
        if got.len() >= expected.len() || Instant::now() > deadline {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let got = seen(d).await;
            let keys: Vec<&String> = got.keys().collect();
            let mut want: Vec<&String> = expected.iter().collect();
            want.sort();
            assert_eq!(keys, want, "seed {seed}\n{}", d.log());
            let twice: Vec<_> = got.iter().filter(|(_, n)| **n != 1).collect();
            assert!(
                twice.is_empty(),
                "seed {seed}: read twice {twice:?}\n{}",
                d.log()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn journald_filters_and_resumes_through_sigkills_without_loss_or_repeat() {
    let mut rng = Rng::seeded("journald");
    let seed = rng.0;
    let journal = tempfile::tempdir().unwrap();
    // Before the daemon first looks: sshd at warning and at info, noise, cron.
    let mut before: Vec<Entry> = (1..=10).map(|n| sshd(n, 4)).collect();
    before.push(sshd(1000, 6));
    before.push(noise(1));
    before.push(cron(1, 3));
    before.push(cron(1001, 6));
    write_journal(journal.path(), &before);
    let dir = journal.path().display();
    let config = format!(
        r#"checkpoint_interval = "100ms"
[[source.journald]]
id = "ssh"
directory = "{dir}"
units = ["sshd"]
priority = "warning"
read_from = "beginning"
poll_interval = "200ms"
labels = {{ src = "ssh" }}
[[source.journald]]
id = "cron"
directory = "{dir}"
identifiers = ["CRON"]
priority = "0..3"
read_from = "beginning"
poll_interval = "200ms"
labels = {{ src = "cron" }}
"#
    );
    let mut d = TestDaemon::prepare(&config, RULE);
    d.wait_healthy().await;
    let mut expected: Vec<String> = (1..=10).map(|n| format!("ssh/{n}")).collect();
    expected.push("cron/1".into());
    expect_exactly(&d, &expected, seed).await;
    let st = d.input("ssh").await;
    assert_eq!(st["kind"], "journald", "{st}");

    // Entries written while it is up, while it is down, and SIGKILLs in between.
    let mut next = 11;
    for round in 0..6 {
        let n = 1 + rng.below(30) as u32;
        let batch: Vec<Entry> = (next..next + n)
            .map(|s| sshd(s, if s % 7 == 0 { 6 } else { 3 }))
            .chain([noise(next)])
            .collect();
        expected.extend(
            (next..next + n)
                .filter(|s| s % 7 != 0)
                .map(|s| format!("ssh/{s}")),
        );
        next += n;
        if round % 2 == 0 {
            d.kill9();
            write_journal(journal.path(), &batch);
            d.restart().await;
        } else {
            write_journal(journal.path(), &batch);
            tokio::time::sleep(Duration::from_millis(rng.below(300))).await;
            d.kill9();
            d.restart().await;
        }
    }
    expect_exactly(&d, &expected, seed).await;

    // A graceful restart reads nothing again.
    d.stop();
    d.restart().await;
    write_journal(journal.path(), &[sshd(next, 2)]);
    expected.push(format!("ssh/{next}"));
    expect_exactly(&d, &expected, seed).await;
}

/// With `read_from = "end"` (the default) and no checkpoint, only entries written after the
/// daemon started are read; a journal folder that cannot be read is an error in
/// `/v1/status`, not a crash.
#[tokio::test]
async fn journald_reads_from_the_end_by_default_and_reports_a_missing_folder() {
    let journal = tempfile::tempdir().unwrap();
    write_journal(journal.path(), &[sshd(1, 3), sshd(2, 3)]);
    let config = format!(
        r#"[[source.journald]]
id = "ssh"
directory = "{}"
units = ["sshd.service"]
poll_interval = "200ms"
labels = {{ src = "ssh" }}
[[source.journald]]
id = "gone"
directory = "{}/missing"
poll_interval = "200ms"
"#,
        journal.path().display(),
        journal.path().display()
    );
    let d = TestDaemon::prepare(&config, RULE);
    d.wait_healthy().await;
    // Every input has finished a first run: the journal's end is found.
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.get("/v1/status").await["watermark"]["inputs_behind"] != 0 {
        assert!(Instant::now() < deadline, "{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    write_journal(journal.path(), &[sshd(3, 3)]);
    expect_exactly(&d, &["ssh/3".to_owned()], 0).await;
    let st = d
        .wait_input("gone", |s| s["last_error"].as_str().is_some())
        .await;
    assert!(
        st["last_error"].as_str().unwrap().contains("journalctl"),
        "{st}"
    );
    assert_eq!(d.get("/v1/health").await["status"], "ok");
}
