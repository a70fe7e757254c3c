//! SLAs against the real daemon and a real HTTP receiver: an incident not acknowledged or not
//! resolved in time gets one `sla_breached` entry per kind, routed to the channels like any
//! news; `show` gives the time left, `/v1/stats` the compliance, `/v1/status` the count; bad
//! `[[sla]]` tables are refused at file:line.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::receiver::*;
use crate::util::*;

async fn breaches(d: &TestDaemon, id: &Value) -> Vec<String> {
    d.get(&format!("/v1/incidents/{id}/timeline")).await["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "sla_breached")
        .map(|e| e["data"]["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaches_are_recorded_once_routed_and_counted() {
    let (r, url) = receiver(0).await;
    let config = format!(
        r#"
[[sla]]
severity = "sev2"
ack_within = "1s"
resolve_within = "3s"

[[sla]]
severity = ["sev3", "sev4"]
ack_within = "1h"

[[channel]]
id = "hook"
kind = "webhook"
url = "{url}/hook"

[[route]]
channels = ["hook"]
"#
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    let alert = |key: &str, sev: &str| {
        let body = json!({"key": key, "summary": key, "severity": sev});
        let d = &d;
        async move { d.post("/v1/alerts", body).await.unwrap()["incident_id"].clone() }
    };
    let late = alert("late", "sev2").await;
    let prompt = alert("prompt", "sev2").await;
    let slow = alert("slow", "sev3").await;
    assert!(d.ctl(&["ack", &prompt.to_string()]).status.success());
    assert!(d.ctl(&["resolve", &prompt.to_string()]).status.success());

    // The late one breaches its acknowledgement SLA, then its resolution SLA, once each.
    let deadline = Instant::now() + Duration::from_secs(15);
    while breaches(&d, &late).await.len() < 2 {
        assert!(Instant::now() < deadline, "{:?}", breaches(&d, &late).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(breaches(&d, &late).await, ["ack", "resolve"]);
    assert!(breaches(&d, &prompt).await.is_empty());
    assert!(breaches(&d, &slow).await.is_empty());

    // Routed like any news: the channel hears of both breaches.
    let deadline = Instant::now() + Duration::from_secs(15);
    let sla: Vec<Value> = loop {
        let sla: Vec<Value> = r
            .on("POST", "/hook")
            .into_iter()
            .map(|g| g.body)
            .filter(|b| b["event"] == "sla_breached")
            .collect();
        if sla.len() >= 2 {
            break sla;
        }
        assert!(Instant::now() < deadline, "{:#?}", r.got());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(sla.len(), 2);
    assert!(sla.iter().all(|b| b["incident"]["id"] == late));

    // Time left, compliance and the count.
    let show = String::from_utf8_lossy(&d.ctl(&["show", &slow.to_string()]).stdout).into_owned();
    assert!(show.contains("ack within 1h: 59m"), "{show}");
    let v = d.get(&format!("/v1/incidents/{late}")).await;
    assert_eq!(v["sla"]["ack"]["state"], "breached", "{v}");
    let stats = d.get("/v1/stats").await;
    let sev2 = &stats["sla_compliance"]["by_severity"]["sev2"];
    assert_eq!(sev2["ack_met"], 1, "{stats}");
    assert_eq!(sev2["ack_breached"], 1, "{stats}");
    assert_eq!(sev2["resolve_met"], 1, "{stats}");
    assert_eq!(sev2["resolve_breached"], 1, "{stats}");
    assert_eq!(sev2["ack_share"], 0.5);
    let status = d.get("/v1/status").await;
    assert_eq!(status["incidents"]["sla_breaches"], 2, "{status}");
    assert!(
        d.metrics()
            .await
            .contains("incidentd_incident_changes_total{change=\"sla_breached\"} 2")
    );
}

#[test]
fn bad_sla_tables_are_refused_at_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("incidentd.toml");
    std::fs::write(
        &file,
        "[[sla]]\nseverity = \"sev1\"\n\n[[sla]]\nseverity = \"sev9\"\nack_within = \"5m\"\n\n[[sla]]\nseverity = []\nack_within = \"5m\"\n",
    )
    .unwrap();
    let out = check_config(&file);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    for want in [
        "incidentd.toml:1: sla[0]: needs `ack_within`, `resolve_within` or both",
        "incidentd.toml:5",
        "incidentd.toml:8: sla[",
    ] {
        assert!(err.contains(want), "missing {want:?} in\n{err}");
    }
}
