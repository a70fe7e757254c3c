//! `GET /v1/stream`: changes in order, resumption with Last-Event-ID, the end at shutdown.

use std::time::Duration;

use incidentd::cli::client::{EventStream, StreamMessage};
use serde_json::{Value, json};

use crate::util::*;

async fn next(s: &mut EventStream) -> StreamMessage {
    tokio::time::timeout(Duration::from_secs(10), s.next())
        .await
        .expect("a stream event within 10 s")
        .expect("stream read")
        .expect("the stream is still open")
}

/// Reads the `ready` event every stream starts with; returns the position it gives.
async fn ready(s: &mut EventStream) -> u64 {
    let m = next(s).await;
    assert_eq!(m.event, "ready", "{m:?}");
    let at: u64 = m.id.as_deref().unwrap().parse().unwrap();
    assert_eq!(data(&m)["change"], at);
    at
}

fn data(m: &StreamMessage) -> Value {
    serde_json::from_str(&m.data).expect("event data is JSON")
}

#[tokio::test]
async fn the_stream_delivers_changes_in_order_and_resumes_after_the_last_id() {
    let mut d = TestDaemon::start("").await;
    // A change from before the stream opens is not sent to a stream without a position.
    let before = d
        .post("/v1/incidents", json!({"title": "before"}))
        .await
        .unwrap();
    let mut s = d.client.stream("/v1/stream", None).await.unwrap();
    let start = ready(&mut s).await;
    let tl = d
        .get(&format!("/v1/incidents/{}/timeline", before["id"]))
        .await;
    assert_eq!(
        tl["timeline"][0]["change"], start,
        "a new stream starts at the present"
    );
    let inc = d
        .post(
            "/v1/incidents",
            json!({"title": "disk full on db-1", "severity": "sev2"}),
        )
        .await
        .unwrap();
    let id = inc["id"].as_u64().unwrap();
    d.post(&format!("/v1/incidents/{id}/ack"), json!({"note": "mine"}))
        .await
        .unwrap();
    d.post(
        &format!("/v1/incidents/{id}/notes"),
        json!({"note": "cleaning /var"}),
    )
    .await
    .unwrap();
    let alert = d
        .post(
            "/v1/alerts",
            json!({"key": "backup", "summary": "nightly backup failed", "severity": "sev3"}),
        )
        .await
        .unwrap();

    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(next(&mut s).await);
    }
    let kinds: Vec<&str> = got.iter().map(|m| m.event.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "incident_created",
            "incident_updated",
            "incident_updated",
            "incident_created",
            "detection"
        ]
    );
    let ids: Vec<u64> = got
        .iter()
        .map(|m| m.id.as_deref().unwrap().parse().unwrap())
        .collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids grow: {ids:?}");
    let first = data(&got[0]);
    assert_eq!(first["incident"]["id"], id);
    assert_eq!(first["entry"]["type"], "created");
    assert_eq!(first["change"], ids[0]);
    assert_eq!(data(&got[1])["entry"]["data"]["to"], "acknowledged");
    assert_eq!(data(&got[2])["entry"]["note"], "cleaning /var");
    assert_eq!(data(&got[3])["incident"]["id"], alert["incident_id"]);
    assert_ne!(first["incident"]["id"], before["id"]);
    // The timeline shows the same change numbers.
    let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    assert_eq!(tl["timeline"][0]["change"], ids[0]);

    // Disconnect; changes made meanwhile arrive on resumption, and nothing before the id.
    drop(s);
    d.post(&format!("/v1/incidents/{id}/resolve"), json!({}))
        .await
        .unwrap();
    let mut resumed = d.client.stream("/v1/stream", Some(ids[2])).await.unwrap();
    assert_eq!(ready(&mut resumed).await, ids[2]);
    let m = next(&mut resumed).await;
    assert_eq!(m.id.as_deref().unwrap().parse::<u64>().unwrap(), ids[3]);
    assert_eq!(m.event, "incident_created");
    next(&mut resumed).await; // its detection
    let m = next(&mut resumed).await;
    assert_eq!(m.event, "incident_updated");
    assert_eq!(data(&m)["entry"]["data"]["to"], "resolved");
    // Resolving moved the stage to recover, in a change of its own.
    let m = next(&mut resumed).await;
    assert_eq!(data(&m)["entry"]["type"], "stage_changed");
    assert_eq!(data(&m)["entry"]["data"]["to"], "recover");
    // And the post-mortem draft was stored.
    let m = next(&mut resumed).await;
    assert_eq!(data(&m)["entry"]["type"], "postmortem");
    // `?after=0` replays the whole log, the earlier incident first; `types` filters.
    let mut all = d
        .client
        .stream("/v1/stream?after=0&types=incident_created", None)
        .await
        .unwrap();
    assert_eq!(ready(&mut all).await, 0);
    for want in [&before["id"], &json!(id), &alert["incident_id"]] {
        let m = next(&mut all).await;
        assert_eq!(m.event, "incident_created");
        assert_eq!(&data(&m)["incident"]["id"], want);
    }

    // A position ahead of the log (a store replaced since) starts over from the beginning.
    let mut ahead = d
        .client
        .stream("/v1/stream", Some(1_000_000))
        .await
        .unwrap();
    let m = next(&mut ahead).await;
    assert_eq!(m.event, "ready");
    assert_eq!(data(&m)["reset"], true);
    assert_eq!(data(&m)["change"], 0);
    assert_eq!(
        data(&next(&mut ahead).await)["incident"]["id"],
        before["id"]
    );
    drop(ahead);

    // Bad positions are refused.
    let (status, body) = d.raw(hyper::Method::GET, "/v1/stream?after=x", b"").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        d.client
            .stream("/v1/stream?types=bogus", None)
            .await
            .is_err()
    );

    // Open streams end when the daemon stops, and do not hold up its shutdown.
    let started = std::time::Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let end = tokio::time::timeout(Duration::from_secs(10), resumed.next())
        .await
        .expect("stream ends at shutdown");
    assert!(matches!(end, Ok(None)), "{end:?}");
    let status = d.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "shutdown waited on the stream"
    );
}

#[tokio::test]
async fn change_numbers_survive_a_restart_and_resumption_spans_it() {
    let mut d = TestDaemon::start("").await;
    let a = d
        .post("/v1/incidents", json!({"title": "a"}))
        .await
        .unwrap();
    let tl = d.get(&format!("/v1/incidents/{}/timeline", a["id"])).await;
    let last = tl["timeline"][0]["change"].as_u64().unwrap();
    d.kill9();
    d.restart().await;
    let b = d
        .post("/v1/incidents", json!({"title": "b"}))
        .await
        .unwrap();
    let mut s = d.client.stream("/v1/stream", Some(last)).await.unwrap();
    ready(&mut s).await;
    let m = next(&mut s).await;
    assert!(m.id.as_deref().unwrap().parse::<u64>().unwrap() > last);
    assert_eq!(data(&m)["incident"]["id"], b["id"]);
}

/// Lines of a child's standard output, as they come.
fn line_reader(out: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &std::sync::mpsc::Receiver<String>) -> String {
    rx.recv_timeout(Duration::from_secs(15))
        .expect("a line from incidentctl watch within 15 s")
}

#[tokio::test]
async fn incidentctl_watch_prints_changes_and_follows_the_daemon_through_a_restart() {
    let mut d = TestDaemon::start("").await;
    let first = d
        .post(
            "/v1/incidents",
            json!({"title": "disk full on db-1", "severity": "sev2"}),
        )
        .await
        .unwrap();
    let watch = |args: &[&str]| {
        std::process::Command::new(CTL)
            .arg("watch")
            .args(args)
            .env("INCIDENTD_SOCKET", d.run.join("control.sock"))
            .env("NO_COLOR", "1")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map(Reaped)
            .expect("start incidentctl watch")
    };
    let mut lines_child = watch(&["--after", "0"]);
    let lines = line_reader(lines_child.0.stdout.take().unwrap());
    let mut json_child = watch(&["--after", "0", "-o", "json"]);
    let events = line_reader(json_child.0.stdout.take().unwrap());

    let l = next_line(&lines);
    assert!(
        l.contains(&format!("#{} incident_created", first["id"]))
            && l.contains("sev2")
            && l.contains("disk full on db-1"),
        "{l}"
    );
    let e: Value = serde_json::from_str(&next_line(&events)).unwrap();
    assert_eq!(e["type"], "incident_created");
    assert_eq!(e["incident"]["id"], first["id"]);

    // Live changes, then a daemon restart: watch reconnects and resumes after what it saw.
    d.post(
        &format!("/v1/incidents/{}/ack", first["id"]),
        json!({"note": "on it"}),
    )
    .await
    .unwrap();
    let l = next_line(&lines);
    assert!(l.contains("open → acknowledged: on it"), "{l}");
    next_line(&events);
    assert!(d.stop().success());
    d.restart().await;
    d.post(&format!("/v1/incidents/{}/resolve", first["id"]), json!({}))
        .await
        .unwrap();
    let l = next_line(&lines);
    assert!(l.contains("acknowledged → resolved"), "{l}");
    let e: Value = serde_json::from_str(&next_line(&events)).unwrap();
    assert_eq!(e["entry"]["data"]["to"], "resolved");

    // Ctrl-C ends it cleanly.
    for mut child in [lines_child, json_child] {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.0.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        )
        .unwrap();
        // Bounded: a Ctrl-C that is lost must fail the test, not hang it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(st) = child.0.try_wait().unwrap() {
                break st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "incidentctl watch did not end on SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "{status:?}");
    }
}
