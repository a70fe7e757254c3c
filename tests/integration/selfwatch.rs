//! The daemon's own failures as incidents, against the real daemon: a source whose command
//! cannot start, for longer than `self_alert_after`, and a channel whose notifications are
//! given up, each become one incident under `incidentd/…`, routed to a working channel; a dead
//! channel's incident stays open (no flapping on its own notifications).

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::receiver::*;
use crate::util::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_source_and_a_dead_channel_become_incidents_about_the_daemon() {
    let (r, url) = receiver(0).await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let config = format!(
        r#"self_alert_after = "1s"

[[source.exec]]
id = "broken"
command = ["/nonexistent/incidentd-test-command"]
format = "raw"
restart_delay = "200ms"
max_restart_delay = "200ms"

[notifications]
retry_initial = "100ms"
retry_max = "200ms"

[[channel]]
id = "hook"
kind = "webhook"
url = "{url}/hook"

[[channel]]
id = "dead"
kind = "webhook"
url = "{closed}/hook"
max_age = "1s"

[[route]]
channels = ["hook", "dead"]
"#
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    // Something to tell the dead channel.
    d.post(
        "/v1/alerts",
        serde_json::json!({"key": "x", "summary": "something"}),
    )
    .await
    .unwrap();

    let deadline = Instant::now() + Duration::from_secs(30);
    let (source, channel) = loop {
        let all = d.incidents("").await;
        let find = |k: &str| all.iter().find(|i| i["key"] == k).cloned();
        if let (Some(s), Some(c)) = (
            find("incidentd/source/broken"),
            find("incidentd/channel/dead"),
        ) {
            break (s, c);
        }
        assert!(Instant::now() < deadline, "{all:#?}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(source["service"], "incidentd");
    assert_eq!(source["rules"][0], "incidentd");
    assert!(
        source["title"]
            .as_str()
            .unwrap()
            .contains("source broken keeps failing")
    );
    assert_eq!(channel["severity"], "sev2");
    // Routed like any incident: the working channel hears of both.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let keys: Vec<Value> = r
            .on("POST", "/hook")
            .iter()
            .map(|g| g.body["incident"]["key"].clone())
            .collect();
        if keys.contains(&"incidentd/source/broken".into())
            && keys.contains(&"incidentd/channel/dead".into())
        {
            break;
        }
        assert!(Instant::now() < deadline, "{keys:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The dead channel stays dead: its incident stays open, once (no flapping), and the
    // failing source's too.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let all = d.incidents("").await;
    for key in ["incidentd/channel/dead", "incidentd/source/broken"] {
        let mine: Vec<&Value> = all.iter().filter(|i| i["key"] == key).collect();
        assert_eq!(mine.len(), 1, "{key}: {mine:#?}");
        assert_eq!(mine[0]["status"], "open", "{key}: {:#?}", mine[0]);
        let tl = d
            .get(&format!("/v1/incidents/{}/timeline", mine[0]["id"]))
            .await;
        assert!(
            !tl["timeline"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["type"] == "reopened"),
            "{tl}"
        );
    }
}
