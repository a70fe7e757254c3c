//! `incidentctl rules import-fail2ban` on Debian's stock /etc/fail2ban (the package the test
//! command installs): the sshd jail imported and loaded by the daemon's config check, every
//! filter in filter.d reported as imported or refused with a reason, and the imported rule
//! matching the same lines of the SSH corpus as `fail2ban-regex` with the same addresses.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::util::{BIN, CTL};

const F2B: &str = "/etc/fail2ban";
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn stock() {
    assert!(
        Path::new(F2B).join("jail.conf").is_file() && Path::new("/usr/bin/fail2ban-regex").exists(),
        "Debian's fail2ban is missing: apt-get install fail2ban (scripts/test installs it)"
    );
}

/// `incidentctl rules import-fail2ban /etc/fail2ban --jail sshd --out DIR/f2b.toml`.
fn import_sshd(dir: &Path) -> (std::process::Output, std::path::PathBuf) {
    let out = dir.join("f2b.toml");
    let run = Command::new(CTL)
        .args(["rules", "import-fail2ban", F2B, "--jail", "sshd", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    (run, out)
}

#[test]
fn the_stock_sshd_jail_imports_and_loads_and_every_filter_is_accounted_for() {
    stock();
    let dir = tempfile::tempdir().unwrap();
    let (run, out) = import_sshd(dir.path());
    let report = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{report}");
    assert!(
        report.contains("jail sshd (filter sshd[mode=normal]): imported as rule f2b-sshd"),
        "{report}"
    );
    // What could not be taken over as written is said, not dropped.
    assert!(report.contains("<F-NOFAIL>"), "{report}");
    let fragment = std::fs::read_to_string(&out).unwrap();
    assert!(fragment.contains("id = \"f2b-ban-sshd\""), "{fragment}");
    assert!(fragment.contains("revert_after = \"600s\""), "{fragment}");
    // The fragment appended to a main config passes the daemon's own check.
    std::fs::create_dir(dir.path().join("rules.d")).unwrap();
    let cfg = dir.path().join("incidentd.toml");
    std::fs::write(&cfg, format!("rules_dir = \"rules.d\"\n{fragment}")).unwrap();
    let check = Command::new(BIN)
        .arg("--check-config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // --check: every filter in filter.d, imported or refused with its reason.
    let run = Command::new(CTL)
        .args(["rules", "import-fail2ban", F2B, "--check", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let v: Value = serde_json::from_slice(&run.stdout).unwrap();
    let filters = v["filters"].as_array().unwrap();
    let on_disk = std::fs::read_dir(Path::new(F2B).join("filter.d"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".conf"))
        .count();
    assert_eq!(filters.len(), on_disk);
    let imported = filters.iter().filter(|f| f["imported"] == true).count();
    for f in filters.iter().filter(|f| f["imported"] == false) {
        assert!(f["reason"].as_str().is_some_and(|r| !r.is_empty()), "{f}");
    }
    for f in filters.iter().filter(|f| f["imported"] == true) {
        for r in f["refused"].as_array().unwrap() {
            assert!(r["reason"].as_str().is_some_and(|r| !r.is_empty()), "{f}");
        }
    }
    assert!(
        imported * 2 > on_disk,
        "most stock filters import: {imported} of {on_disk}\n{v:#}"
    );
    assert!(
        v["jails"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["jail"] == "sshd")
    );
}

#[test]
fn the_imported_sshd_rule_matches_what_fail2ban_regex_matches() {
    stock();
    let dir = tempfile::tempdir().unwrap();
    let (run, out) = import_sshd(dir.path());
    assert!(run.status.success());
    // The imported rule as a match rule: every line it counts is a detection.
    let text = std::fs::read_to_string(&out).unwrap();
    let doc: toml::Table = toml::from_str(&text).unwrap();
    let mut rule = doc["rule"].as_array().unwrap()[0]
        .as_table()
        .unwrap()
        .clone();
    rule.insert("kind".into(), "match".into());
    for k in ["threshold", "window", "actions"] {
        rule.remove(k);
    }
    let mut rules = toml::Table::new();
    rules.insert(
        "rule".into(),
        toml::Value::Array(vec![toml::Value::Table(rule)]),
    );
    let rules_file = dir.path().join("f2b-match.toml");
    std::fs::write(&rules_file, toml::to_string(&rules).unwrap()).unwrap();

    // The corpus's lines, but for those naming a host: fail2ban looks names up (usedns) and
    // drops those that do not resolve, which here none does.
    let corpus =
        std::fs::read_to_string(Path::new(ROOT).join("tests/fixtures/ssh/corpus.tsv")).unwrap();
    let lines: Vec<&str> = corpus
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .filter(|(ann, _)| {
            ann.split(' ')
                .find_map(|w| w.strip_prefix("ip="))
                .is_none_or(|ip| ip.parse::<std::net::IpAddr>().is_ok())
        })
        .map(|(_, line)| line)
        .collect();
    // Each line its own second, so both tools' answers map back to lines.
    let log = dir.path().join("auth.log");
    let mut body = String::new();
    for (i, l) in lines.iter().enumerate() {
        let rest = l.splitn(4, ' ').nth(3).unwrap().trim_start();
        let rest = rest.split_once(' ').unwrap().1;
        body.push_str(&format!("Dec  1 10:{:02}:{:02} {rest}\n", i / 60, i % 60));
    }
    std::fs::write(&log, body).unwrap();

    let ours = Command::new(CTL)
        .args(["rules", "test"])
        .arg(&log)
        .arg("--rules")
        .arg(&rules_file)
        .args(["--format", "syslog", "--year", "2026", "-o", "json"])
        .output()
        .unwrap();
    assert!(
        ours.status.success(),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    let report: Value = serde_json::from_slice(&ours.stdout).unwrap();
    let mut got: BTreeMap<usize, String> = BTreeMap::new();
    for d in report["detections"].as_array().unwrap() {
        let t = &d["ts"].as_str().unwrap()[14..19];
        let (m, s) = t.split_once(':').unwrap();
        let i = m.parse::<usize>().unwrap() * 60 + s.parse::<usize>().unwrap();
        got.insert(i, d["labels"]["ip"].as_str().unwrap_or("").to_owned());
    }

    let theirs = Command::new("fail2ban-regex")
        .args(["-o", "row"])
        .arg(&log)
        .arg(Path::new(F2B).join("filter.d/sshd.conf"))
        .output()
        .unwrap();
    assert!(
        theirs.status.success(),
        "{}",
        String::from_utf8_lossy(&theirs.stderr)
    );
    let base = 10 * 3600;
    let mut want: BTreeMap<usize, String> = BTreeMap::new();
    // Rows look like `['192.0.2.20',	1796119212.0,	{…}],`: the address, then the time.
    for row in String::from_utf8_lossy(&theirs.stdout).lines() {
        let row = row.trim();
        let Some(rest) = row.strip_prefix("['") else {
            continue;
        };
        let (ip, rest) = rest.split_once('\'').unwrap();
        let ts: f64 = rest
            .trim_start_matches([',', '\t', ' '])
            .split([',', '\t'])
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let sec = (ts as i64).rem_euclid(86400) as usize;
        want.insert(sec - base, ip.to_owned());
    }
    assert!(
        want.len() >= 20,
        "fail2ban-regex matched too little: {want:?}"
    );
    assert_eq!(got, want, "lines: {lines:#?}");
}
