//! Editing incidents against the real daemon: a new title (`updated`), a merge whose keys
//! then lead to the incident merged into, a split whose key then leads to the new incident,
//! every refusal with its reason, and all of it kept through a SIGKILL and `store rebuild`.

use serde_json::{Value, json};

use crate::util::*;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn types(d: &TestDaemon, id: &Value) -> Vec<String> {
    d.get(&format!("/v1/incidents/{id}/timeline")).await["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

async fn alert(d: &TestDaemon, key: &str) -> Value {
    d.post(
        "/v1/alerts",
        json!({"key": key, "summary": format!("{key} firing"), "service": "db"}),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn titles_merges_and_splits_move_keys_and_survive_a_rebuild() {
    let mut d = TestDaemon::start("").await;
    let a = alert(&d, "db-slow").await["incident_id"].clone();
    let b = alert(&d, "db-down").await["incident_id"].clone();
    alert(&d, "db-down").await; // a second detection for b
    let (a_s, b_s) = (a.to_string(), b.to_string());

    // A new title.
    let o = d.ctl(&["edit", &a_s, "--title", "db latency and outage"]);
    assert!(o.status.success(), "{o:?}");
    assert!(out(&o).contains("db latency and outage"), "{}", out(&o));
    assert!(types(&d, &a).await.contains(&"updated".to_owned()));
    let o = d.ctl(&["edit", &a_s, "--title", "  "]);
    assert!(err(&o).contains("1 to 500 characters"), "{o:?}");

    // Merge b into a: its detections and key follow, b is closed with a pointer.
    let o = d.ctl(&["merge", &b_s, &a_s]);
    assert!(o.status.success(), "{o:?}");
    let ia = d.get(&format!("/v1/incidents/{a}")).await;
    assert_eq!(ia["detections"], 3, "{ia}");
    assert!(
        ia["correlated_keys"]
            .as_array()
            .unwrap()
            .contains(&json!("alert/db-down")),
        "{ia}"
    );
    let ib = d.get(&format!("/v1/incidents/{b}")).await;
    assert_eq!(ib["status"], "closed");
    assert_eq!(ib["merged_into"], a);
    assert!(types(&d, &b).await.contains(&"merged".to_owned()));
    // Its key now leads to a.
    let again = alert(&d, "db-down").await;
    assert_eq!(again["incident_id"], a, "{again}");
    assert_eq!(again["deduplicated"], true, "{again}");

    // Refusals, each with its reason.
    for (args, says) in [
        (vec!["merge", &a_s, &a_s], "cannot be merged into itself"),
        (vec!["merge", &b_s, &a_s], "already merged into"),
        (vec!["merge", &a_s, &b_s], "merge into an open"),
        (
            vec!["split", &a_s, "alert/db-slow"],
            "own key; split takes out",
        ),
        (
            vec!["split", &a_s, "nope"],
            "its correlated keys: alert/db-down",
        ),
        (vec!["merge", &a_s, "999"], "not found"),
    ] {
        let o = d.ctl(&args);
        assert!(!o.status.success(), "{args:?}");
        assert!(err(&o).contains(says), "{args:?}: {}", err(&o));
    }

    // Split the key out again: a new incident, and the key now leads there.
    let o = d.ctl(&["-o", "json", "split", &a_s, "alert/db-down"]);
    assert!(o.status.success(), "{o:?}");
    let c: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(c["key"], "alert/db-down");
    assert_eq!(c["status"], "open");
    let ia = d.get(&format!("/v1/incidents/{a}")).await;
    assert!(ia.get("correlated_keys").is_none(), "{ia}");
    assert_eq!(alert(&d, "db-down").await["incident_id"], c["id"]);
    assert!(types(&d, &a).await.contains(&"split".to_owned()));

    // A SIGKILL and a rebuild from the log keep titles, keys and pointers.
    d.kill9();
    // verify first: what was written live must be what the log replays to.
    for action in ["verify", "rebuild", "verify"] {
        store_ok(&d.state, action);
    }
    d.restart().await;
    let ia = d.get(&format!("/v1/incidents/{a}")).await;
    assert_eq!(ia["title"], "db latency and outage");
    assert_eq!(ia["detections"], 4, "{ia}");
    assert_eq!(d.get(&format!("/v1/incidents/{b}")).await["merged_into"], a);
    assert_eq!(alert(&d, "db-down").await["incident_id"], c["id"]);
    assert_eq!(alert(&d, "db-slow").await["incident_id"], a);
}
