//! Config validation, --check-config, and reload.

use std::process::Command;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::util::*;

const BROKEN: &str = r#"
[[rule]]
id = "broken"
kind = "threshold"
threshold = 0
window = "often"
regex = "(unclosed"
"#;

#[test]
fn check_config_reports_every_error_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules.d")).unwrap();
    let main = dir.path().join("incidentd.toml");
    std::fs::write(
        &main,
        "[daemon]\nlog_format = \"loud\"\n[ingest]\nmax_line_bytes = \"big\"\n",
    )
    .unwrap();
    let rules = dir.path().join("rules.d/bad.toml");
    std::fs::write(&rules, BROKEN).unwrap();
    let out = check_config(&main);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let m = main.display();
    let r = rules.display();
    for want in [
        format!("{m}:2: daemon.log_format: unknown variant `loud`"),
        format!("{m}:4: ingest.max_line_bytes: invalid type: string \"big\""),
        format!(
            "{r}:5: rule[broken].threshold: invalid value: integer `0`, expected a nonzero u32"
        ),
        format!("{r}:6: rule[broken].window: `often` is not a duration"),
        format!("{r}:7: rule[broken].regex: invalid regex `(unclosed`"),
    ] {
        assert!(err.contains(&want), "missing {want:?} in\n{err}");
    }
    assert!(err.contains("5 error(s)"), "{err}");

    // The same file fixed passes, and so does the shipped config.
    std::fs::write(&main, "").unwrap();
    std::fs::remove_file(&rules).unwrap();
    let ok = check_config(&main);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/incidentd.toml");
    let ok = check_config(shipped.as_ref());
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

#[test]
fn a_bad_config_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("incidentd.toml");
    std::fs::write(
        &main,
        "[[rule]]\nid = \"x\"\nkind = \"match\"\nwhere = { colour = \"red\" }\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&main)
        .arg("--state-dir")
        .arg(dir.path().join("s"))
        .arg("--runtime-dir")
        .arg(dir.path().join("r"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}:4: rule[x].where: unknown event key `colour`",
            main.display()
        )),
        "{err}"
    );
    assert!(!dir.path().join("r/control.sock").exists());
}

#[tokio::test]
async fn sighup_with_a_broken_rule_keeps_the_old_rules_working() {
    let d = TestDaemon::start(SSH_RULE).await;
    let good = d.rules_dir.join("test.toml");
    std::fs::write(d.rules_dir.join("zz-broken.toml"), BROKEN).unwrap();
    d.signal(Signal::SIGHUP);

    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        let st = d.get("/v1/status").await;
        if st["reload"]["last_error"].is_string() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "reload error never shown\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let err = status["reload"]["last_error"].as_str().unwrap();
    assert!(
        err.contains("zz-broken.toml:5: rule[broken].threshold"),
        "{err}"
    );
    assert!(d.log().contains("reload refused"), "{}", d.log());

    // The old rules still fire.
    d.send_and_settle(
        &(0..5)
            .map(|_| failed_password("192.0.2.200"))
            .collect::<Vec<_>>(),
    )
    .await;
    d.wait_for_key("ssh/192.0.2.200").await;

    // The reload API answers the same errors.
    let e = d
        .post("/v1/reload", serde_json::json!({}))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(422));
    assert!(
        e.to_string()
            .contains("zz-broken.toml:7: rule[broken].regex"),
        "{e}"
    );

    // Fixed: the new rule set takes over, and the unchanged ssh rule keeps its window.
    std::fs::remove_file(d.rules_dir.join("zz-broken.toml")).unwrap();
    d.send_and_settle(
        &(0..3)
            .map(|_| failed_password("192.0.2.201"))
            .collect::<Vec<_>>(),
    )
    .await;
    std::fs::write(
        d.rules_dir.join("extra.toml"),
        "[[rule]]\nid = \"errors\"\nkind = \"match\"\nwhere = { level = \"critical\" }\n",
    )
    .unwrap();
    let v = d.post("/v1/reload", serde_json::json!({})).await.unwrap();
    assert_eq!(v["reloaded"], true);
    let rules = d.get("/v1/rules").await;
    let ids: Vec<&str> = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["errors", "marker", "ssh"],
        "rules.d files merge in name order"
    );
    assert!(d.get("/v1/status").await["reload"]["last_error"].is_null());
    d.send_and_settle(&[r#"{"kind":"x","level":"critical"}"#.to_string()])
        .await;
    d.wait_for_key("errors").await;
    d.send_and_settle(
        &(0..2)
            .map(|_| failed_password("192.0.2.201"))
            .collect::<Vec<_>>(),
    )
    .await;
    d.wait_for_key("ssh/192.0.2.201").await;
    assert!(good.exists());
}

/// `[daemon] retention` bounds how far back any rule looks, and `max_events_in_memory` what
/// one rule holds: too long or too many is an error naming both; a rule without
/// `max_groups` gets what fits, and the daemon then evicts beyond it.
#[tokio::test]
async fn retention_and_events_in_memory_bound_every_rule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules.d")).unwrap();
    let main = dir.path().join("incidentd.toml");
    let rules = dir.path().join("rules.d/long.toml");
    std::fs::write(
        &rules,
        r#"[[rule]]
id = "daily"
kind = "threshold"
threshold = 3
window = "2h"

[[rule]]
id = "baseline"
kind = "spike"
window = "15m"
baseline = 4
factor = 2.0

[[rule]]
id = "late"
kind = "match"
allowed_lateness = "3h"

[[rule]]
id = "wide"
kind = "threshold"
threshold = 20
window = "1m"
max_groups = 10000
"#,
    )
    .unwrap();
    std::fs::write(&main, "rules_dir = \"rules.d\"\n").unwrap();
    let out = check_config(&main);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let r = rules.display();
    for want in [
        format!(
            "{r}:1: rule[daily].window: looks back 2h (window 2h), longer than [daemon] retention 1h"
        ),
        format!(
            "{r}:7: rule[baseline].window: looks back 1h 15m (window 15m × (baseline 4 + 1)), longer than [daemon] retention 1h"
        ),
        format!("{r}:14: rule[late].allowed_lateness: 3h is longer than [daemon] retention 1h"),
        format!(
            "{r}:19: rule[wide].max_groups: 10000 groups × 20 events each is more than [daemon] max_events_in_memory 100000"
        ),
    ] {
        assert!(err.contains(&want), "missing {want:?} in\n{err}");
    }
    // Raising both makes the same rules valid.
    std::fs::write(
        &main,
        "rules_dir = \"rules.d\"\n[daemon]\nretention = \"3h\"\nmax_events_in_memory = 200000\n",
    )
    .unwrap();
    let out = check_config(&main);
    assert!(out.status.success(), "{out:?}");

    // A rule without max_groups gets what fits: 50 events / threshold 5 = 10 groups; 40
    // addresses evict 30.
    let d = TestDaemon::prepare("max_events_in_memory = 50\n", SSH_RULE);
    d.wait_healthy().await;
    let lines: Vec<String> = (0..40)
        .map(|i| failed_password(&format!("198.51.100.{i}")))
        .collect();
    d.send_and_settle(&lines).await;
    let rules = d.get("/v1/rules").await;
    let marker = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "threshold")
        .unwrap()
        .clone();
    assert_eq!(marker["max_groups"], 10, "{marker}");
    assert!(marker["groups"].as_u64().unwrap() <= 10, "{marker}");
    assert!(marker["evicted"].as_u64().unwrap() >= 30, "{marker}");
}
