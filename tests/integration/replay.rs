//! `incidentctl rules test`: every fixture under tests/fixtures replays to the detections
//! written beside it, through the real binary; and each input format works.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::util::{CTL, rules_test, rules_test_run};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn every_fixture_replays_to_its_expected_detections() {
    let mut checked = 0;
    for entry in std::fs::read_dir(Path::new(ROOT).join("tests/fixtures")).unwrap() {
        let path = entry.unwrap().path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".expect.json"))
        else {
            continue;
        };
        let expect: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let input = path.with_file_name(format!("{name}.log"));
        let year = expect["year"].to_string();
        let report = rules_test(
            &input,
            &Path::new(ROOT).join(expect["rules"].as_str().unwrap()),
            expect["format"].as_str().unwrap(),
            &["--year", &year],
        );
        let got: Vec<Value> = report["detections"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| serde_json::json!({"rule": d["rule"], "ts": d["ts"], "key": d["key"]}))
            .collect();
        assert_eq!(
            &got,
            expect["detections"].as_array().unwrap(),
            "fixture {name}"
        );
        assert_eq!(report["rejected"], 0, "fixture {name}");
        checked += 1;
    }
    assert!(checked >= 1, "no fixtures found");
}

#[test]
fn ndjson_and_raw_formats_and_standard_input() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.toml");
    std::fs::write(
        &rules,
        "[[rule]]\nid = \"boom\"\nkind = \"threshold\"\nthreshold = 2\nwindow = \"10s\"\nregex = 'boom (?P<n>\\d)'\ngroup_by = [\"n\"]\n",
    )
    .unwrap();
    let nd = dir.path().join("e.ndjson");
    std::fs::write(
        &nd,
        concat!(
            "{\"kind\":\"log\",\"ts\":\"2026-11-23T10:00:00Z\",\"message\":\"boom 1\"}\n",
            "not json\n",
            "{\"kind\":\"log\",\"ts\":\"2026-11-23T10:00:09Z\",\"message\":\"boom 1\"}\n",
            "{\"kind\":\"log\",\"ts\":\"2026-11-23T10:00:30Z\",\"message\":\"boom 2\"}\n",
            "{\"kind\":\"log\",\"ts\":\"2026-11-23T10:00:41Z\",\"message\":\"boom 2\"}\n",
        ),
    )
    .unwrap();
    let r = rules_test(&nd, &rules, "ndjson", &[]);
    assert_eq!(
        (
            r["lines"].as_u64(),
            r["events"].as_u64(),
            r["rejected"].as_u64()
        ),
        (Some(5), Some(4), Some(1))
    );
    assert_eq!(r["detections"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(r["detections"][0]["labels"]["n"], "1");
    assert_eq!(r["rules"][0]["matched"], 4);

    // Raw lines carry no time: they all count at the replay's start time.
    let mut child = Command::new(CTL)
        .args(["rules", "test", "-", "--rules"])
        .arg(&rules)
        .args(["--format", "raw", "-o", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"boom 3\nnothing\nboom 3\nboom 3\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["lines"], 4);
    assert_eq!(r["detections"].as_array().unwrap().len(), 1);
}

#[test]
fn expect_passes_on_the_right_answer_and_fails_with_a_diff_otherwise() {
    let fixtures = Path::new(ROOT).join("tests/fixtures");
    let run = |expect: &Path| {
        Command::new(CTL)
            .args(["rules", "test"])
            .arg(fixtures.join("sequence.log"))
            .arg("--rules")
            .arg(fixtures.join("sequence.rules.toml"))
            .arg("--expect")
            .arg(expect)
            .output()
            .unwrap()
    };
    let ok = run(&fixtures.join("sequence.expect.json"));
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("expectations met: 2 detection(s)"));

    let dir = tempfile::tempdir().unwrap();
    let wrong = dir.path().join("wrong.json");
    let text = std::fs::read_to_string(fixtures.join("sequence.expect.json")).unwrap();
    std::fs::write(
        &wrong,
        text.replace("backup-stuck/db-2", "backup-stuck/db-1"),
    )
    .unwrap();
    let bad = run(&wrong);
    assert_eq!(bad.status.code(), Some(1));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("missing:    2025-11-23T11:00:20.000Z backup-stuck backup-stuck/db-1"),
        "{err}"
    );
    assert!(
        err.contains("unexpected: 2025-11-23T11:00:20.000Z backup-stuck backup-stuck/db-2"),
        "{err}"
    );
}

/// With only the SSH rule loaded the line filter is on (lines no rule can match are not
/// parsed): the fixture still gives exactly its expected detections.
#[test]
fn the_line_filter_keeps_the_fixture_answer() {
    let fixtures = Path::new(ROOT).join("tests/fixtures");
    let expect: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("ssh-brute-force.expect.json")).unwrap(),
    )
    .unwrap();
    let report = rules_test(
        &fixtures.join("ssh-brute-force.log"),
        &Path::new(ROOT).join("etc/rules.d/ssh.toml"),
        "syslog",
        &["--year", "2026"],
    );
    assert!(report["skipped"].as_u64().unwrap() > 0, "{report}");
    let got: Vec<Value> = report["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| serde_json::json!({"rule": d["rule"], "ts": d["ts"], "key": d["key"]}))
        .collect();
    assert_eq!(&got, expect["detections"].as_array().unwrap());
}

/// A log of many 64 KiB chunks gives the same report on one thread and on three, from a
/// file and from standard input.
#[test]
fn threads_give_the_one_thread_answer() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/ssh-brute-force.log"))
            .unwrap();
    // The fixture's day after day, with a line that is not syslog now and then.
    let mut log = String::new();
    for day in ["Sep", "Oct"]
        .iter()
        .flat_map(|m| (1..=30).map(move |d| format!("{m} {d:2}")))
    {
        for (i, line) in fixture.lines().enumerate() {
            let line = line.replacen("Nov 23", &day, 1);
            log.push_str(&line);
            log.push('\n');
            if i % 50 == 7 {
                log.push_str("no stamp: Failed password for root from 10.1.1.1 port 22\n");
            }
        }
    }
    assert!(log.len() > 4 * 65536, "{}", log.len());
    let input = dir.path().join("auth.log");
    std::fs::write(&input, &log).unwrap();
    let rules = Path::new(ROOT).join("etc/rules.d/ssh.toml");
    let report = |threads: &str| {
        let mut r = rules_test(
            &input,
            &rules,
            "syslog",
            &["--year", "2026", "--threads", threads],
        );
        r.as_object_mut().unwrap().remove("seconds");
        r
    };
    let one = report("0");
    assert!(one["detections"].as_array().unwrap().len() > 60, "{one}");
    assert!(one["rejected"].as_u64().unwrap() > 0, "{one}");
    assert!(one["skipped"].as_u64().unwrap() > 0, "{one}");
    assert_eq!(report("3"), one);
    let out = Command::new(CTL)
        .args([
            "rules", "test", "-", "--format", "syslog", "--year", "2026", "-o", "json",
        ])
        .arg("--rules")
        .arg(&rules)
        .stdin(std::fs::File::open(&input).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut piped: Value = serde_json::from_slice(&out.stdout).unwrap();
    piped.as_object_mut().unwrap().remove("seconds");
    assert_eq!(piped, one);
}

#[test]
fn a_reader_that_stops_early_ends_the_output_quietly() {
    // Far more report than a pipe holds: 20,000 bursts of five failures, one per address.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let mut text = String::new();
    for i in 0..20_000u32 {
        for _ in 0..5 {
            text.push_str(&format!(
                "Nov 23 10:00:00 h sshd[1]: Failed password for root from 10.{}.{}.{} port 22 ssh2\n",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            ));
        }
    }
    std::fs::write(&log, text).unwrap();
    let mut child = Command::new(CTL)
        .args(["rules", "test"])
        .arg(&log)
        .arg("--rules")
        .arg(Path::new(ROOT).join("etc/rules.d/ssh.toml"))
        .args(["--format", "syslog", "--year", "2026", "-o", "json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read a little, then go away, like `| head -c 100`.
    let mut stdout = child.stdout.take().unwrap();
    let mut first = [0u8; 100];
    std::io::Read::read_exact(&mut stdout, &mut first).unwrap();
    drop(stdout);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A file none of whose lines can be read in the chosen format fails (exit 1, with the
/// reason), as `send` does, in both output forms; one readable line is enough to succeed.
#[test]
fn every_line_rejected_is_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    std::fs::write(
        &log,
        "Nov 23 10:00:00 h sshd[1]: Failed password for root from 10.0.0.1 port 22 ssh2\n",
    )
    .unwrap();
    let rules = Path::new(ROOT).join("etc/rules.d/ssh.toml");
    for args in [
        &["--format", "ndjson"][..],
        &["--format", "ndjson", "-o", "json"],
    ] {
        let out = rules_test_run(&log, &rules, args);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("every line was rejected"), "{err}");
    }
    let ok = rules_test_run(&log, &rules, &["--format", "syslog", "--year", "2026"]);
    assert!(ok.status.success(), "{ok:?}");
}

/// Detections are handed over as they fire, not held for the report: `-o json` lists every
/// one (written as it fires, the counts after them), the table shows the first 50 and says
/// how many more, and both count the same.
#[test]
fn json_lists_every_detection_and_the_table_the_first_fifty() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let mut text = String::new();
    for i in 0..60u32 {
        for s in 0..5u32 {
            text.push_str(&format!(
                "Nov 23 10:{:02}:{s:02} h sshd[1]: Failed password for root from 10.0.0.{i} port 22 ssh2\n",
                i % 60
            ));
        }
    }
    std::fs::write(&log, text).unwrap();
    let rules = Path::new(ROOT).join("etc/rules.d/ssh.toml");
    let report = rules_test(&log, &rules, "syslog", &["--year", "2026"]);
    let found = report["detections"].as_array().unwrap();
    assert_eq!(found.len(), 60, "{report}");
    let ips: Vec<&str> = found
        .iter()
        .map(|d| d["labels"]["ip"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..60).map(|i| format!("10.0.0.{i}")).collect();
    assert_eq!(ips, want);
    assert_eq!(
        (report["lines"].as_u64(), report["events"].as_u64()),
        (Some(300), Some(300))
    );
    assert_eq!(report["rules"][0]["fired"].as_u64(), Some(60), "{report}");

    let out = rules_test_run(&log, &rules, &["--format", "syslog", "--year", "2026"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("… and 10 more detections"), "{text}");
    assert!(
        text.contains("10.0.0.49") && !text.contains("10.0.0.50 "),
        "{text}"
    );
    assert!(
        text.contains("300 events, 0 not parsed (no rule could match), 0 rejected, 60 detections"),
        "{text}"
    );
}
