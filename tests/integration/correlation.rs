//! Correlation: detections of other keys join an active incident when they share a
//! correlation or trace id, the service, or services linked by `depends_on`, within
//! `correlation_window`; the root cause is the most upstream service; unrelated detections
//! stay apart.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

const SERVICES: &str = r#"
[incidents]
correlation_window = "2s"
realert_backoff = []

[[service]]
name = "db"

[[service]]
name = "api"
depends_on = ["db"]

[[service]]
name = "web"
depends_on = ["api"]

[[service]]
name = "mail"
"#;

const RULES: &str = r#"
[[rule]]
id = "errors"
kind = "match"
severity = "sev3"
where = { kind = "error" }
incident_key = "errors/{{ event.service }}/{{ event.message }}"
summary = "{{ event.service }}: {{ event.message }}"

[[rule]]
id = "slow"
kind = "match"
severity = "sev2"
where = { kind = "latency" }
incident_key = "slow/{{ event.service }}"
"#;

fn error(service: &str, message: &str) -> String {
    json!({"kind": "error", "service": service, "message": message}).to_string()
}

fn traced(message: &str, trace: &str) -> String {
    json!({"kind": "error", "message": message, "trace_id": trace}).to_string()
}

async fn start() -> TestDaemon {
    let d = TestDaemon::prepare(SERVICES, RULES);
    d.wait_healthy().await;
    d
}

fn types(tl: &Value) -> Vec<&str> {
    tl["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn linked_services_join_one_incident_whose_root_cause_is_the_most_upstream() {
    let d = start().await;
    d.send_and_settle(&[error("api", "upstream timeout")]).await;
    let first = d.wait_for_key("errors/api/upstream timeout").await;
    assert_eq!(first["root_cause"], "api");
    assert!(
        first["root_cause_reason"]
            .as_str()
            .unwrap()
            .contains("earliest detection")
    );
    // db (api depends on it), then web (depends on api), then db again, then an unrelated
    // service.
    d.send_and_settle(&[
        error("db", "too many connections"),
        error("web", "502 from api"),
        error("db", "too many connections"),
        error("mail", "queue stuck"),
    ])
    .await;
    let incidents = d.real_incidents().await;
    assert_eq!(incidents.len(), 2, "{incidents:#?}");
    // (mail stays apart from the api/db/web incident: no dependency links them.)
    let id = &first["id"];
    let joined = d.get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(joined["detections"], 4);
    assert_eq!(joined["root_cause"], "db");
    let why = joined["root_cause_reason"].as_str().unwrap();
    assert!(
        why.contains("db is the most upstream") && why.contains("api depends on db"),
        "{why}"
    );
    assert_eq!(
        joined["correlated_keys"],
        json!(["errors/db/too many connections", "errors/web/502 from api"])
    );
    let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    assert_eq!(
        types(&tl),
        [
            "created",
            "detection",
            "correlated",
            "detection",
            "correlated",
            "detection",
            "detection"
        ]
    );
    assert_eq!(tl["timeline"][2]["data"]["reason"], "api depends on db");
    assert_eq!(tl["timeline"][2]["data"]["root_cause"], "db");
    assert_eq!(tl["timeline"][4]["data"]["reason"], "web depends on api");
    let (_, md) = d
        .client
        .raw(
            hyper::Method::GET,
            &format!("/v1/incidents/{id}/postmortem"),
            Vec::new(),
            "application/json",
        )
        .await
        .unwrap();
    let md = String::from_utf8_lossy(&md);
    assert!(
        md.contains("## Root cause\n\ndb (db is the most upstream service involved"),
        "{md}"
    );
    let mail = d.wait_for_key("errors/mail/queue stuck").await;
    assert_ne!(mail["id"], first["id"]);
    assert!(mail["correlated_keys"].is_null());

    // The same service: another rule's detection joins (and raises the severity); another
    // group of a rule already there stays apart (its group_by split them on purpose).
    d.send_and_settle(&[
        json!({"kind": "latency", "service": "mail", "message": "p99 4s"}).to_string(),
        error("mail", "disk full"),
    ])
    .await;
    let mail_now = d.get(&format!("/v1/incidents/{}", mail["id"])).await;
    assert_eq!(mail_now["correlated_keys"], json!(["slow/mail"]));
    assert_eq!(mail_now["severity"], "sev2");
    let tl = d
        .get(&format!("/v1/incidents/{}/timeline", mail["id"]))
        .await;
    assert_eq!(tl["timeline"][2]["data"]["reason"], "same service mail");
    let apart = d.wait_for_key("errors/mail/disk full").await;
    assert_ne!(apart["id"], mail["id"]);

    // The store stays consistent with keys indexed to another key's incident.
    let status = d.get("/v1/status").await;
    assert_eq!(status["incidents"]["correlated"], 3);
}

#[tokio::test]
async fn shared_trace_ids_join_and_the_window_keeps_later_detections_apart() {
    let mut d = start().await;
    d.send_and_settle(&[traced("checkout failed", "t-1")]).await;
    let first = d.wait_for_key("errors//checkout failed").await;
    d.send_and_settle(&[
        traced("payment declined", "t-1"),
        traced("login slow", "t-2"),
    ])
    .await;
    let joined = d.get(&format!("/v1/incidents/{}", first["id"])).await;
    assert_eq!(joined["detections"], 2);
    let tl = d
        .get(&format!("/v1/incidents/{}/timeline", first["id"]))
        .await;
    assert_eq!(tl["timeline"][2]["data"]["reason"], "shares trace id t-1");
    let other = d.wait_for_key("errors//login slow").await;
    assert_ne!(other["id"], first["id"], "another trace stays apart");

    // Same service, but after the window: a new incident.
    d.send_and_settle(&[error("api", "one")]).await;
    let one = d.wait_for_key("errors/api/one").await;
    tokio::time::sleep(Duration::from_millis(2_300)).await;
    d.send_and_settle(&[error("api", "two")]).await;
    let two = d.wait_for_key("errors/api/two").await;
    assert_ne!(one["id"], two["id"], "outside correlation_window");

    // Correlated keys are indexed durably and verify cleanly.
    assert!(d.stop().success());
    let out = std::process::Command::new(BIN)
        .args(["store", "verify", "--state-dir"])
        .arg(&d.state)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn bad_service_graphs_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("incidentd.toml");
    std::fs::write(
        &main,
        "[[service]]\nname = \"a\"\ndepends_on = [\"b\"]\n\n[[service]]\nname = \"b\"\ndepends_on = [\"a\", \"nope\"]\n\n[[service]]\nname = \"a\"\n\n[[service]]\nnam = \"x\"\n",
    )
    .unwrap();
    let out = check_config(&main);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let m = main.display();
    for want in [
        format!("{m}:5: service"),
        "depends on `nope`, which no [[service]] table defines".to_owned(),
        "defined twice (first at line 1)".to_owned(),
        "in a cycle: a → b → a".to_owned(),
        "unknown field `nam`".to_owned(),
    ] {
        assert!(err.contains(&want), "missing `{want}` in:\n{err}");
    }
}
