//! The shipped unit passes `systemd-analyze verify` silently and rates "OK" (≤ 2.5) in
//! `systemd-analyze security`. Skipped, loudly, where systemd-analyze is not installed.

use std::process::Command;

fn analyze_available() -> bool {
    Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Runs `systemd-analyze ARGS UNIT` on a copy of the unit whose ExecStart points at the
/// binary just built (verify checks it exists). The test command installs systemd-analyze;
/// without it these tests fail with the command that installs it.
fn analyze(args: &[&str]) -> std::process::Output {
    assert!(
        analyze_available(),
        "systemd-analyze is missing: apt-get install systemd"
    );
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_copy(dir.path());
    Command::new("systemd-analyze")
        .args(args)
        .arg(&unit)
        .output()
        .unwrap()
}

fn unit_copy(dir: &std::path::Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/incidentd.service"
    ))
    .unwrap();
    let path = dir.join("incidentd.service");
    std::fs::write(&path, text.replace("/usr/bin/incidentd", crate::util::BIN)).unwrap();
    path
}

#[test]
fn unit_verifies_without_any_complaint() {
    let out = analyze(&["verify"]);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify exits 0 even on unknown keys: any output at all is a failure.
    assert!(
        out.status.success() && said.trim().is_empty(),
        "systemd-analyze verify said:\n{said}"
    );
}

#[test]
fn unit_exposure_is_ok() {
    let out = analyze(&["security", "--offline=true"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no rating in:\n{text}"));
    let score: f64 = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line}"));
    assert!(score <= 2.5, "exposure {score} > 2.5: {line}");
}
