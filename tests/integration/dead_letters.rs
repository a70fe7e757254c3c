//! Dead letters: a refusal given up at once, a 429 tried again, and a channel down for long
//! whose outbox stays within its `max_queued`. Real HTTP servers on 127.0.0.1.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::receiver::*;
use crate::util::*;

/// A refusal (400) is dead-lettered at once, its status and an excerpt of the answer in the
/// timeline; "too many requests" (429) is tried again until it passes.
#[tokio::test]
async fn a_refusal_is_given_up_at_once_and_a_429_is_retried() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
    let (h1, h2) = (hits.clone(), hits.clone());
    let app = axum::Router::new()
        .route(
            "/refuses",
            axum::routing::post(move || {
                let h = h1.clone();
                async move {
                    h.0.fetch_add(1, Ordering::SeqCst);
                    (StatusCode::BAD_REQUEST, "invalid_payload: no_text")
                }
            }),
        )
        .route(
            "/busy",
            axum::routing::post(move || {
                let h = h2.clone();
                async move {
                    if h.1.fetch_add(1, Ordering::SeqCst) < 2 {
                        (StatusCode::TOO_MANY_REQUESTS, "slow down")
                    } else {
                        (StatusCode::OK, "ok")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = format!(
        r#"
[notifications]
retry_initial = "200ms"
retry_max = "200ms"

[[channel]]
id = "refuses"
kind = "slack"
url = "{url}/refuses"

[[channel]]
id = "busy"
kind = "webhook"
url = "{url}/busy"

[[route]]
channels = ["refuses", "busy"]
"#
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    let inc = d
        .post("/v1/incidents", json!({"title": "t", "severity": "sev3"}))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let tl = loop {
        let tl = timeline(&d, &inc["id"]).await;
        let done = |ch: &str| {
            tl.iter()
                .any(|e| e["type"] == "notification" && e["data"]["channel"] == ch)
        };
        if done("refuses") && done("busy") {
            break tl;
        }
        assert!(Instant::now() < deadline, "{tl:#?}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let of = |ch: &str| {
        tl.iter()
            .find(|e| e["type"] == "notification" && e["data"]["channel"] == ch)
            .unwrap()
            .clone()
    };
    let refused = of("refuses");
    assert_eq!(refused["data"]["status"], "dead_lettered", "{refused}");
    assert_eq!(refused["data"]["reason"], "refused");
    assert_eq!(refused["data"]["attempts"], 1);
    assert_eq!(refused["data"]["answer"]["status"], 400);
    assert_eq!(
        refused["data"]["answer"]["excerpt"],
        "invalid_payload: no_text"
    );
    let busy = of("busy");
    assert_eq!(busy["data"]["status"], "delivered", "{busy}");
    assert_eq!(busy["data"]["attempts"], 3);
    // Given up means not tried again.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(hits.0.load(Ordering::SeqCst), 1);
}

/// A channel that stays down while incidents keep coming holds at most its `max_queued`
/// notifications: the oldest are dead-lettered (timeline, metrics), the newest are delivered
/// once it is back, and nothing dead-lettered is sent after all. (A job being sent at the
/// moment a drop is chosen is passed over, and the three oldest are sent at once: so they are
/// each tried once, and wait three seconds to be tried again, before the last two come. The
/// route takes only service `web`: the daemon's own incident about the channel giving up,
/// service `incidentd`, would add a sixth.)
#[tokio::test]
async fn a_full_outbox_dead_letters_its_oldest_and_delivers_the_rest() {
    let (r, url) = receiver(usize::MAX).await;
    let config = format!(
        r#"
[notifications]
retry_initial = "3s"
retry_max = "3s"

[[channel]]
id = "hook"
kind = "webhook"
url = "{url}/hook"
max_queued = 3

[[route]]
match = {{ service = "web" }}
channels = ["hook"]
"#
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    let mut ids = Vec::new();
    for i in 0..5 {
        if i == 3 {
            // The three tried once, their failures taken in: none is being sent now.
            d.wait_status(|st| st["notifications"]["failed_attempts"].as_u64() >= Some(3))
                .await;
        }
        let inc = d
            .post(
                "/v1/incidents",
                json!({"title": format!("t{i}"), "severity": "sev3", "service": "web"}),
            )
            .await
            .unwrap();
        ids.push(inc["id"].clone());
    }
    let full = |tl: &[Value]| {
        tl.iter().any(|e| {
            e["type"] == "notification"
                && e["data"]["status"] == "dead_lettered"
                && e["data"]["reason"] == "outbox full"
        })
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    let dropped = loop {
        let st = d.get("/v1/status").await;
        let mut dropped = Vec::new();
        for id in &ids {
            dropped.push(full(&timeline(&d, id).await));
        }
        if dropped.iter().filter(|d| **d).count() == 2
            && dropped[3..] == [false, false]
            && st["notifications"]["queued"] == 3
            && st["notifications"]["dead_lettered"] == 2
        {
            break dropped;
        }
        assert!(Instant::now() < deadline, "{dropped:?} {st}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Counted for the channel too.
    let hook = channel_in(&d.get("/v1/channels").await, "hook");
    assert_eq!(hook["dead_lettered"], 2, "{hook}");
    // Back: the three newest are delivered, and only they.
    r.0.lock().unwrap().fail_first = 0;
    let got = r.wait("POST", "/hook", 3).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let mut told: Vec<Value> = r
        .on("POST", "/hook")
        .iter()
        .map(|g| g.body["incident"]["id"].clone())
        .collect();
    told.sort_by_key(|v| v.as_u64());
    let kept: Vec<Value> = ids
        .iter()
        .zip(&dropped)
        .filter(|(_, d)| !**d)
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(told, kept, "{got:#?}");
    assert!(d.log().contains("outbox full"), "{}", d.log());
}
