//! Grouped notifications (a route's `group_by`, `group_wait`, `group_interval`) against real
//! HTTP receivers: twenty incidents of one service make one webhook document and one Slack
//! message, PagerDuty keeps one event per incident, later changes of the group come as one
//! message, and a group queued before a SIGKILL is sent once after the restart.

use std::time::Duration;

use serde_json::{Value, json};

use crate::receiver::*;
use crate::util::*;

fn groups(r: &Receiver) -> Vec<Value> {
    r.on("POST", "/hook")
        .into_iter()
        .map(|g| g.body)
        .filter(|b| b["event"] == "group")
        .collect()
}

fn config(url: &str, wait: &str) -> String {
    format!(
        r#"
[notifications]
retry_initial = "100ms"

[[channel]]
id = "hook"
kind = "webhook"
url = "{url}/hook"

[[channel]]
id = "chat"
kind = "slack"
url = "{url}/slack"

[[channel]]
id = "pd"
kind = "pagerduty"
url = "{url}/v2/enqueue"
routing_key = "R0UT1NG"

[[route]]
channels = ["hook", "chat", "pd"]
group_by = ["service"]
group_wait = "{wait}"
group_interval = "2s"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_incidents_of_one_service_make_one_message() {
    let (r, url) = receiver(0).await;
    let d = TestDaemon::prepare(&config(&url, "1s"), "");
    d.wait_healthy().await;

    let mut batch = Vec::new();
    for i in 0..20 {
        batch.push(json!({"key": format!("db-{i}"), "summary": format!("db problem {i}"), "service": "db", "severity": "sev2"}));
    }
    batch.push(json!({"key": "web-0", "summary": "web problem 0", "service": "web"}));
    batch.push(json!({"key": "web-1", "summary": "web problem 1", "service": "web"}));
    let answer = d.post("/v1/alerts", Value::Array(batch)).await.unwrap();
    assert_eq!(
        answer["alerts"].as_array().map(Vec::len),
        Some(22),
        "{answer}"
    );

    r.wait("POST", "/hook", 2).await;
    r.wait("POST", "/slack", 2).await;
    r.wait("POST", "/v2/enqueue", 22).await;
    // Whatever else was on its way has had time to arrive.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let g = groups(&r);
    assert_eq!(g.len(), 2, "{g:#?}");
    let db = g.iter().find(|b| b["group"]["service"] == "db").unwrap();
    assert_eq!(db["count"], 20);
    let incidents = db["incidents"].as_array().unwrap();
    assert_eq!(incidents.len(), 20);
    assert!(incidents.iter().all(|i| i["event"] == "opened"));
    let mut keys: Vec<&str> = incidents
        .iter()
        .map(|i| i["incident"]["key"].as_str().unwrap())
        .collect();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), 20);
    let web = g.iter().find(|b| b["group"]["service"] == "web").unwrap();
    assert_eq!(web["count"], 2);
    // Slack: one message per group, a line per incident.
    let slack = r.on("POST", "/slack");
    assert_eq!(slack.len(), 2);
    let text = slack
        .iter()
        .map(|s| s.body["text"].as_str().unwrap().to_owned())
        .find(|t| t.contains("service=db"))
        .unwrap();
    assert!(text.starts_with("*20 incidents (service=db)*"), "{text}");
    assert_eq!(text.matches("\n• ").count(), 20, "{text}");
    // PagerDuty keeps one event per incident.
    assert_eq!(r.on("POST", "/v2/enqueue").len(), 22);

    // The timeline says it went in a group.
    let one = d.wait_for_key("alert/db-3").await;
    let tl = d
        .get(&format!("/v1/incidents/{}/timeline", one["id"]))
        .await;
    assert!(
        tl["timeline"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["note"].as_str().unwrap_or("")
                == "opened sent to hook in one message with 19 other incidents of its group"),
        "{tl:#?}"
    );

    // Three resolutions of the group: one more message with the three. They come in one
    // request: three requests could straddle a `group_interval` tick on a loaded machine,
    // and two messages would then be right.
    let resolved: Vec<Value> = (0..3)
        .map(|i| json!({"key": format!("db-{i}"), "summary": "x", "status": "resolved"}))
        .collect();
    d.post("/v1/alerts", Value::Array(resolved)).await.unwrap();
    r.wait("POST", "/hook", 3).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let g = groups(&r);
    assert_eq!(g.len(), 3, "{g:#?}");
    let later = &g[2];
    assert_eq!(later["group"]["service"], "db");
    assert_eq!(later["count"], 3, "{later}");
    assert!(
        later["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["event"] == "resolved")
    );
    let hook = channel_in(&d.get("/v1/channels").await, "hook");
    assert_eq!(hook["delivered"], 3, "{hook}");
    assert_eq!(hook["queued"], 0, "{hook}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_waiting_at_a_kill_is_sent_once_after_the_restart() {
    let (r, url) = receiver(0).await;
    let mut d = TestDaemon::prepare(&config(&url, "3s"), "");
    d.wait_healthy().await;
    let batch: Vec<Value> = (0..5)
        .map(|i| json!({"key": format!("api-{i}"), "summary": "api", "service": "api"}))
        .collect();
    d.post("/v1/alerts", Value::Array(batch)).await.unwrap();
    // Queued (durable) and waiting for group_wait: killed before it is sent.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let c = d.get("/v1/channels").await;
        let queued = c["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "hook")
            .map(|c| c["queued"].as_u64().unwrap_or(0))
            .unwrap_or(0);
        if queued == 5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{c}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(groups(&r).is_empty());
    d.kill9();
    d.restart().await;
    r.wait("POST", "/hook", 1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let g = groups(&r);
    assert_eq!(g.len(), 1, "{g:#?}");
    assert_eq!(g[0]["count"], 5);
}
