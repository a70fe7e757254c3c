//! The shipped SSH rules against tests/fixtures/ssh/corpus.tsv: every failure form OpenSSH
//! has logged (each line annotated with the address and user it must give), read as auth.log
//! lines and as journal records, through the real `incidentctl rules test`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One corpus line: what it must give (rule, ip, user) or None, and the auth.log line.
struct Line {
    expect: Option<(String, BTreeMap<String, String>)>,
    syslog: String,
}

fn corpus() -> Vec<Line> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/ssh/corpus.tsv"))
        .expect("corpus");
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (ann, line) = l.split_once('\t').expect("annotation<TAB>line");
            let expect = (ann != "-").then(|| {
                let (kind, rest) = ann.split_once(' ').unwrap_or((ann, ""));
                let rule = match kind {
                    "auth" => "ssh-brute-force",
                    "scan" => "ssh-scan",
                    other => panic!("unknown annotation {other}"),
                };
                // `ip=… user=…`: the user runs to the end of the annotation (it may hold spaces).
                let mut labels = BTreeMap::new();
                let (ip, user) = match rest.split_once(" user=") {
                    Some((ip, user)) => (ip, Some(user)),
                    None => (rest, None),
                };
                labels.insert("ip".into(), ip.trim_start_matches("ip=").to_owned());
                if let Some(u) = user {
                    labels.insert("user".into(), u.to_owned());
                }
                (rule.to_owned(), labels)
            });
            Line {
                expect,
                syslog: line.to_owned(),
            }
        })
        .collect()
}

/// The shipped SSH rules with `kind = "match"`: every matching line is a detection.
fn match_rules(dir: &Path) -> PathBuf {
    let text = std::fs::read_to_string(Path::new(ROOT).join("etc/rules.d/ssh.toml")).unwrap();
    let mut doc: toml::Table = toml::from_str(&text).unwrap();
    for rule in doc["rule"].as_array_mut().unwrap() {
        let t = rule.as_table_mut().unwrap();
        t.insert("kind".into(), "match".into());
        for k in ["threshold", "window", "actions"] {
            t.remove(k);
        }
    }
    let path = dir.join("ssh-match.toml");
    std::fs::write(&path, toml::to_string(&doc).unwrap()).unwrap();
    path
}

fn rules_test(input: &Path, rules: &Path, format: &str) -> Value {
    crate::util::rules_test(input, rules, format, &["--year", "2026"])
}

/// Each line's detections, by its timestamp (every corpus line has its own second).
fn check(lines: &[Line], report: &Value, how: &str) {
    let mut by_ts: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for d in report["detections"].as_array().unwrap() {
        by_ts
            .entry(d["ts"].as_str().unwrap().to_owned())
            .or_default()
            .push(d);
    }
    let mut wrong = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let ts = format!("2026-12-01T10:{:02}:{:02}.000Z", i / 60, i % 60);
        let got: Vec<(String, Value)> = by_ts
            .get(&ts)
            .map(|v| {
                v.iter()
                    .map(|d| {
                        // The address and the user; the rule's own labels are not the line's.
                        let mut l = d["labels"].clone();
                        if let Some(m) = l.as_object_mut() {
                            m.retain(|k, _| k == "ip" || k == "user");
                        }
                        (d["rule"].as_str().unwrap().to_owned(), l)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let want: Vec<(String, Value)> = l
            .expect
            .iter()
            .map(|(rule, labels)| (rule.clone(), json!(labels)))
            .collect();
        if got != want {
            wrong.push(format!("{}\n    want {want:?}\n    got  {got:?}", l.syslog));
        }
    }
    assert!(
        wrong.is_empty(),
        "{how}: {} of {} lines wrong:\n{}",
        wrong.len(),
        lines.len(),
        wrong.join("\n")
    );
}

#[test]
fn every_failure_form_gives_its_address_and_user_and_nothing_else_matches() {
    let lines = corpus();
    assert!(lines.len() >= 60, "the corpus lost lines");
    let dir = tempfile::tempdir().unwrap();
    let rules = match_rules(dir.path());

    // As auth.log lines.
    let log = dir.path().join("auth.log");
    let text: String = lines.iter().map(|l| format!("{}\n", l.syslog)).collect();
    std::fs::write(&log, text).unwrap();
    check(&lines, &rules_test(&log, &rules, "syslog"), "auth.log");

    // As journal records: the message alone, the program in SYSLOG_IDENTIFIER (what the
    // journald source makes of `journalctl -o json`).
    let nd = dir.path().join("journal.ndjson");
    let mut out = String::new();
    for (i, l) in lines.iter().enumerate() {
        let after_host = l.syslog.splitn(5, ' ').nth(4).unwrap().trim_start();
        let after_host = after_host
            .split_once(' ')
            .map(|x| x.1)
            .unwrap_or(after_host);
        let (tag, message) = after_host.split_once(": ").unwrap();
        let program = tag.split('[').next().unwrap();
        out.push_str(
            &json!({
                "ts": format!("2026-12-01T10:{:02}:{:02}Z", i / 60, i % 60),
                "kind": "log", "message": message, "host": "web-1",
                "fields": {"program": program, "comm": program}
            })
            .to_string(),
        );
        out.push('\n');
    }
    std::fs::write(&nd, out).unwrap();
    check(
        &lines,
        &rules_test(&nd, &rules, "ndjson"),
        "journal records",
    );
}

#[test]
fn each_form_alone_reaches_the_shipped_thresholds() {
    let lines = corpus();
    let dir = tempfile::tempdir().unwrap();
    // Each failure line five times (scans ten), a second apart, each form in its own minute.
    let mut text = String::new();
    let mut want = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let Some((rule, labels)) = &l.expect else {
            continue;
        };
        let times = if rule == "ssh-scan" { 10 } else { 5 };
        let rest = l.syslog.splitn(4, ' ').nth(3).unwrap();
        let rest = rest.trim_start().split_once(' ').unwrap().1;
        for k in 0..times {
            text.push_str(&format!(
                "Dec  2 {:02}:{:02}:{:02} {rest}\n",
                i / 60,
                i % 60,
                k
            ));
        }
        want.push(json!({"rule": rule, "key": format!("{rule}/{}", labels["ip"])}));
    }
    let log = dir.path().join("auth.log");
    std::fs::write(&log, text).unwrap();
    let report = rules_test(&log, &Path::new(ROOT).join("etc/rules.d"), "syslog");
    let got: Vec<Value> = report["detections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| json!({"rule": d["rule"], "key": d["key"]}))
        .collect();
    assert_eq!(got, want);
}
