//! The privilege preflight: `incidentd --check-config` and the running daemon name each
//! enabled action that this process cannot carry out, and what it lacks. As another user
//! (`setpriv`), with an empty capability set and then with the drop-in's capabilities.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::Value;

use crate::util::*;

const ACTIONS: &str = r#"
[[action]]
id = "ban"
kind = "exec"
command = ["ip", "route", "show"]
safe = true

[[action]]
id = "reap"
kind = "signal"
mode = "zombies"

[[action]]
id = "gone"
kind = "exec"
command = ["/nonexistent/tool", "--now"]
"#;

/// The daemon binary and a config with `ACTIONS`, in a folder any user can read.
fn staged() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("incidentd");
    std::fs::copy(BIN, &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("incidentd.toml");
    std::fs::write(&config, ACTIONS).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    (dir, bin, config)
}

fn warnings(out: &std::process::Output) -> Vec<String> {
    assert!(
        out.status.success(),
        "check-config failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("warning: "))
        .map(str::to_owned)
        .collect()
}

#[test]
fn a_missing_command_is_named_by_check_config() {
    let (_dir, bin, config) = staged();
    let out = Command::new(&bin)
        .arg("--check-config")
        .arg(&config)
        .output()
        .unwrap();
    let w = warnings(&out);
    assert!(
        w.iter()
            .any(|l| l.contains("action gone") && l.contains("`/nonexistent/tool` is not found")),
        "{w:#?}"
    );
}

#[test]
#[ignore = "needs root to act as another user with chosen capabilities (setpriv); the test command runs it as root"]
fn an_unprivileged_user_is_told_which_capability_each_action_needs() {
    let (_dir, bin, config) = staged();
    let as_nobody = |caps: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"]);
        if caps.is_empty() {
            cmd.args(["--inh-caps=-all", "--ambient-caps=-all"]);
        } else {
            let list = caps
                .iter()
                .map(|c| format!("+{c}"))
                .collect::<Vec<_>>()
                .join(",");
            cmd.arg(format!("--inh-caps={list}"))
                .arg(format!("--ambient-caps={list}"));
        }
        cmd.arg("--").arg(&bin).arg("--check-config").arg(&config);
        warnings(&cmd.output().expect("setpriv (util-linux)"))
    };
    let bare = as_nobody(&[]);
    assert!(
        bare.iter()
            .any(|l| l.starts_with("warning: action ban:") && l.contains("CAP_NET_ADMIN")),
        "{bare:#?}"
    );
    assert!(
        bare.iter()
            .any(|l| l.starts_with("warning: action reap:") && l.contains("CAP_KILL")),
        "{bare:#?}"
    );
    // The remediation drop-in's capabilities: only the missing command is left.
    let granted = as_nobody(&["net_admin", "kill"]);
    assert_eq!(granted.len(), 1, "{granted:#?}");
    assert!(granted[0].contains("action gone"), "{granted:#?}");
}

#[tokio::test]
async fn the_daemon_shows_the_warnings_in_status_and_actions_list() {
    let d = TestDaemon::prepare(ACTIONS, "");
    d.wait_healthy().await;
    let st = d.get("/v1/status").await;
    let pre = st["actions"]["preflight"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        pre.iter()
            .any(|w| w["action"] == "gone" && w["problem"].as_str().unwrap().contains("not found")),
        "{st}"
    );
    let out = d.ctl(&["actions", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning: action gone: the command `/nonexistent/tool` is not found"),
        "{text}"
    );
    let v: Value = d.get("/v1/actions").await;
    assert_eq!(v["preflight"], st["actions"]["preflight"]);
}
