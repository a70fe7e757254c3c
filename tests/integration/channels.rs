//! `incidentctl channels list` and `channels test` against real HTTP servers on 127.0.0.1:
//! targets without secrets, figures that follow real deliveries, a test message through the
//! real delivery path that exits 0 only when the service accepted it.

use serde_json::{Value, json};

use crate::receiver::*;
use crate::util::*;

fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

// Several threads: the receivers must answer while the test waits on incidentctl.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channels_are_listed_without_secrets_and_tested_through_the_real_path() {
    let (r, url) = receiver(0).await;
    // A service that answers 503 to everything.
    let (_down, down_url) = receiver(usize::MAX).await;
    let closed = format!("http://127.0.0.1:{}", free_port());
    let config = format!(
        r#"
[notifications]
retry_initial = "100ms"

[[channel]]
id = "hook"
kind = "webhook"
url = "{url}/hook?token=SECRET1"

[[channel]]
id = "chat"
kind = "slack"
url = "{url}/services/T0/B0/SECRET2"

[[channel]]
id = "busy"
kind = "webhook"
url = "{down_url}/hook"

[[channel]]
id = "am"
kind = "alertmanager"
urls = ["{url}", "{closed}"]

[[route]]
channels = ["hook"]
"#
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;

    d.post("/v1/alerts", json!({"key": "one", "summary": "one"}))
        .await
        .unwrap();
    r.wait("POST", "/hook", 1).await;
    // The figures follow the delivery (recorded just after the answer).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let list = loop {
        let v = d.get("/v1/channels").await;
        let hook = channel_in(&v, "hook");
        if hook["delivered"] == 1 {
            break v;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let text = list.to_string();
    assert!(
        !text.contains("SECRET1") && !text.contains("SECRET2"),
        "{text}"
    );
    let by_id = |id: &str| channel_in(&list, id);
    assert_eq!(by_id("hook")["kind"], "webhook");
    assert_eq!(by_id("hook")["target"], format!("{url}/…"));
    assert_eq!(by_id("chat")["target"], format!("{url}/…"));
    assert_eq!(by_id("am")["target"], format!("{url}, {closed}"));
    assert_eq!(by_id("busy")["delivered"], 0);

    let table = d.ctl(&["channels", "list"]);
    assert!(table.status.success(), "{table:?}");
    let t = out(&table);
    for want in ["ID", "DELIVERED", "DEAD", "hook", "webhook", "alertmanager"] {
        assert!(t.contains(want), "{want} in\n{t}");
    }
    assert!(!t.contains("SECRET"), "{t}");

    // A test message that the service accepts: exit 0, and it really arrived.
    let ok = d.ctl(&["channels", "test", "hook"]);
    assert!(ok.status.success(), "{ok:?}\n{}", d.log());
    assert!(out(&ok).contains("hook: accepted"), "{}", out(&ok));
    let got = r.wait("POST", "/hook", 2).await;
    let test = got.last().unwrap();
    assert_eq!(test.body["incident"]["key"], "incidentd/test");
    assert_eq!(test.body["incident"]["labels"]["test"], "true");
    // Not an incident: nothing new in the list.
    assert_eq!(d.incidents("").await.len(), 1);

    // A service that answers 503: exit 1, with its answer.
    let busy = d.ctl(&["channels", "test", "busy"]);
    assert_eq!(busy.status.code(), Some(1), "{busy:?}");
    let b = out(&busy);
    assert!(
        b.contains("busy: failed") && b.contains("503") && b.contains("down for maintenance"),
        "{b}"
    );
    // JSON says the same per peer: one of the two Alertmanagers is not there.
    let am = d.ctl(&["-o", "json", "channels", "test", "am"]);
    assert_eq!(am.status.code(), Some(1), "{am:?}");
    let v: Value = serde_json::from_slice(&am.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["results"][0]["ok"], true, "{v}");
    // What the test opened there it closed again (an Alertmanager alert is resolved).
    assert_eq!(v["results"][0]["closed"], true, "{v}");
    assert_eq!(v["results"][1]["ok"], false, "{v}");
    assert_eq!(v["results"][1]["peer"], closed);
    assert!(
        r.on("POST", "/api/v2/alerts")
            .iter()
            .any(|g| g.body[0]["labels"]["incident_key"] == "incidentd/test"),
        "the reachable peer got the test alert"
    );

    // An unknown channel: 404 naming the ones there are.
    let nope = d.ctl(&["channels", "test", "nope"]);
    assert!(!nope.status.success());
    let e = String::from_utf8_lossy(&nope.stderr).into_owned();
    assert!(
        e.contains("no channel `nope`") && e.contains("hook, chat, busy, am"),
        "{e}"
    );
    let (status, _) = d
        .raw(hyper::Method::POST, "/v1/channels/a%2Fb/test", b"{}")
        .await;
    assert_eq!(status, 404);
}
