//! Remediation at its boundaries: values from a log line or a label that try to leave their
//! field in an action's command, a safe action for every opened incident across a SIGKILL of
//! the daemon, and the listing of what can be done for an incident without running anything.
//! (Split from `actions.rs`, whose helpers it uses.)

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::actions::{down, of_type, wait_timeline};
use crate::util::*;

/// Templates by context, end to end: a captured `../victim` cannot make `rm -rf` leave its
/// folder, a `--version` label cannot become an option, an incident without a service cannot
/// restart `None.service`; each run is refused with the reason, and a dry run says the same.
#[tokio::test]
async fn hostile_values_cannot_leave_their_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("cache/item")).unwrap();
    std::fs::write(dir.path().join("victim"), "keep me").unwrap();
    let config = format!(
        r#"[[action]]
id = "clear"
kind = "exec"
command = ["/bin/rm", "-rf", "{cache}/{{{{ labels.v }}}}"]
safe = true
[[action]]
id = "touch"
kind = "exec"
command = ["/usr/bin/touch", "{{{{ labels.v }}}}"]
cwd = "{dir}"
safe = true
[[action]]
id = "restart"
kind = "systemd"
unit = "{{{{ incident.service }}}}.service"
safe = true
"#,
        cache = dir.path().join("cache").display(),
        dir = dir.path().display()
    );
    let d = TestDaemon::prepare(
        &config,
        r#"
[[rule]]
id = "hostile"
kind = "match"
severity = "sev3"
regex = 'v=(?P<v>\S+)'
incident_key = "hostile/{{ labels.v }}"
actions = ["clear", "touch", "restart"]
"#,
    );
    d.wait_healthy().await;
    let ev = |v: &str| json!({"kind": "log", "message": format!("v={v}")}).to_string();
    d.send_and_settle(&[ev("../victim"), ev("--version")]).await;
    let climb = d.wait_for_key("hostile/../victim").await;
    let tl = wait_timeline(&d, &climb["id"], |e| {
        of_type(e, "action_executed").len() == 3
    })
    .await;
    let result = |tl: &[Value], action: &str| -> String {
        of_type(tl, "action_executed")
            .into_iter()
            .find(|e| e["data"]["action"] == action)
            .map(|e| {
                e["data"]["result"]["error"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned()
            })
            .unwrap_or_default()
    };
    assert!(
        result(&tl, "clear").contains("may not stand in a path"),
        "{tl:#?}"
    );
    assert!(
        result(&tl, "restart").contains("incident.service is not set"),
        "{tl:#?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("victim")).unwrap(),
        "keep me"
    );
    let option = d.wait_for_key("hostile/--version").await;
    let tl = wait_timeline(&d, &option["id"], |e| {
        of_type(e, "action_executed").len() == 3
    })
    .await;
    assert!(
        result(&tl, "touch").contains("would be read as an option"),
        "{tl:#?}"
    );
    assert!(!dir.path().join("--version").exists());
    // A dry run shows the same refusal.
    let dry = d
        .post(
            &format!("/v1/incidents/{}/actions/clear/dry-run", climb["id"]),
            json!({}),
        )
        .await;
    let text = format!("{dry:?}");
    assert!(text.contains("may not stand in a path"), "{text}");
    assert!(dir.path().join("cache/item").exists());
}

/// Remediation follows the durable change log: 40 incidents opened in one burst, the daemon
/// killed (SIGKILL) right after they are durable and before most of their actions ran;
/// after a restart every incident gets its safe action. With one run at a time, at most one
/// run is cut off mid-way: it is reported as interrupted in the timeline and runs again.
#[tokio::test]
async fn every_opened_incident_gets_its_safe_action_across_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran.txt");
    let config = format!(
        r#"
[remediation]
max_concurrent = 1

[[action]]
id = "note-it"
kind = "exec"
safe = true
on = "open"
max_runs = 100
shell = true
env = {{ ID = "{{{{ incident.id }}}}" }}
command = ["echo start $ID >> {ran}; sleep 0.05; echo end $ID >> {ran}"]
"#,
        ran = ran.display()
    );
    let rules = r#"
[[rule]]
id = "down"
kind = "match"
severity = "sev3"
where = { kind = "svc_down" }
incident_key = "down/{{ event.service }}"
actions = ["note-it"]
"#;
    let mut d = TestDaemon::prepare(&config, rules);
    d.wait_healthy().await;
    let burst: Vec<String> = (0..40).map(|i| down(&format!("s{i}"))).collect();
    d.send_raw(format!("{}\n", burst.join("\n")).as_bytes());
    // Killed as soon as all 40 are durable (listed), about 50 ms after the burst.
    let deadline = Instant::now() + Duration::from_secs(15);
    while d.real_incidents().await.len() < 40 {
        assert!(Instant::now() < deadline, "{}", d.log());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Listed is not yet flushed: a change answered after its flush (the manager flushes in
    // order) makes everything before it durable.
    let first = d.real_incidents().await[0]["id"].clone();
    d.post(
        &format!("/v1/incidents/{first}/notes"),
        json!({"note": "sync"}),
    )
    .await
    .unwrap();
    d.kill9();
    let lines = |what: &str| -> Vec<u64> {
        std::fs::read_to_string(&ran)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.strip_prefix(what)?.trim().parse().ok())
            .collect()
    };
    let ended_before = lines("end ").len();
    assert!(
        ended_before < 40,
        "every action had run before the kill; the test proves nothing"
    );
    d.restart().await;
    let ids: Vec<u64> = d
        .real_incidents()
        .await
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 40);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ids.iter().all(|id| lines("end ").contains(id)) {
        assert!(
            Instant::now() < deadline,
            "ended: {:?}\n{}",
            lines("end "),
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let starts = lines("start ");
    let twice: Vec<u64> = ids
        .iter()
        .copied()
        .filter(|id| starts.iter().filter(|s| *s == id).count() > 1)
        .collect();
    assert!(twice.len() <= 1, "ran twice: {twice:?} of {starts:?}");
    for id in &ids {
        assert!(
            starts.iter().filter(|s| *s == id).count() <= 2,
            "{id}: {starts:?}"
        );
    }
    if let Some(id) = twice.first() {
        let tl = wait_timeline(&d, &json!(id), |e| {
            e.iter().any(|x| {
                x["note"]
                    .as_str()
                    .is_some_and(|n| n.contains("interrupted"))
            })
        })
        .await;
        assert!(of_type(&tl, "action_executed").len() >= 2, "{tl:#?}");
    }
    eprintln!(
        "actions ended before the kill: {ended_before}/40; run twice: {}",
        twice.len()
    );
}

/// `GET /v1/incidents/{id}/actions` and `incidentctl actions available`: every configured
/// action with whether the incident's rule binds it, its policy (automatic, approval, held
/// by a silence) and its plan or why it cannot render; nothing runs.
#[tokio::test]
async fn what_can_be_done_for_an_incident_is_listed_without_running_anything() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let config = format!(
        r#"
[remediation]
require_approval_for = ["sev1"]

[[action]]
id = "restart"
kind = "exec"
safe = true
command = ["touch", "{marker}"]

[[action]]
id = "page-dba"
kind = "exec"
command = ["touch", "{marker}"]

[[action]]
id = "per-service"
kind = "exec"
safe = true
command = ["touch", "{marker}-{{{{ incident.service }}}}"]
"#,
        marker = marker.display()
    );
    let rules = r#"
[[rule]]
id = "crash"
kind = "match"
severity = "sev2"
where = { kind = "crash" }
actions = ["page-dba"]
"#;
    let d = TestDaemon::prepare(&config, rules);
    d.wait_healthy().await;
    d.send_and_settle(&[r#"{"kind":"crash"}"#.to_string()])
        .await;
    let inc = &d.real_incidents().await[0];
    let id = inc["id"].to_string();
    let v = d.get(&format!("/v1/incidents/{id}/actions")).await;
    let by: std::collections::BTreeMap<String, Value> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["action"].as_str().unwrap().to_owned(), a.clone()))
        .collect();
    assert_eq!(by.len(), 3, "{v:#}");
    assert_eq!(by["page-dba"]["bound"], true);
    assert_eq!(by["page-dba"]["policy"], "approval");
    assert_eq!(by["restart"]["bound"], false);
    assert_eq!(by["restart"]["policy"], "automatic");
    assert_eq!(by["restart"]["plan"]["argv"][0], "touch", "{v:#}");
    assert!(by["per-service"]["plan"].is_null());
    assert!(
        by["per-service"]["cannot_render"]
            .as_str()
            .unwrap()
            .contains("incident.service"),
        "{v:#}"
    );
    // A silence holds what would run by itself.
    d.post(
        "/v1/silences",
        json!({"matchers": {"rule": "crash"}, "duration": "1h", "comment": "maintenance"}),
    )
    .await
    .unwrap();
    let out = d.ctl(&["actions", "available", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("restart (exec) held: silenced by silence"),
        "{text}"
    );
    assert!(text.contains("cannot run for this incident"), "{text}");
    assert!(!marker.exists(), "nothing ran");
    let missing = d.ctl(&["actions", "available", "999"]);
    assert_eq!(missing.status.code(), Some(1));
}
