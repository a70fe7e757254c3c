//! The ingest socket and POST /v1/events: thresholds, junk, concurrency.

use std::io::Write;
use std::os::unix::net::UnixStream;

use crate::util::*;

#[tokio::test]
async fn threshold_fires_at_the_limit_and_not_below() {
    let d = TestDaemon::start(SSH_RULE).await;
    d.send_and_settle(
        &(0..4)
            .map(|_| failed_password("192.0.2.4"))
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(d.real_incidents().await.is_empty(), "4 of 5 must not fire");
    d.send_and_settle(&[failed_password("192.0.2.4")]).await;
    let real = d.real_incidents().await;
    assert_eq!(real.len(), 1);
    assert_eq!(real[0]["key"], "ssh/192.0.2.4");
}

#[tokio::test]
async fn threshold_window_is_event_time() {
    let d = TestDaemon::start(SSH_RULE).await;
    // Five failures 30 s apart: a one-minute window (t-60s, t] never holds more than two.
    let spread: Vec<String> = (0..5)
        .map(|i| {
            format!(
                r#"{{"kind":"log","ts":"2026-11-23T10:{:02}:{:02}Z","message":"Failed password for root from 192.0.2.9 port 22 ssh2"}}"#,
                i * 30 / 60,
                i * 30 % 60
            )
        })
        .collect();
    d.send_and_settle(&spread).await;
    assert!(d.real_incidents().await.is_empty());
    // Five within ten seconds of event time do.
    let burst: Vec<String> = (0..5)
        .map(|i| format!(r#"{{"kind":"log","ts":"2026-11-23T11:00:0{i}Z","message":"Failed password for root from 192.0.2.9 port 22 ssh2"}}"#))
        .collect();
    d.send_and_settle(&burst).await;
    let real = d.real_incidents().await;
    assert_eq!(real.len(), 1);
    assert_eq!(real[0]["first_event_at"], "2026-11-23T11:00:00.000Z");
}

#[tokio::test]
async fn junk_is_counted_by_reason_and_good_lines_still_fire() {
    let d = TestDaemon::start(SSH_RULE).await;
    let mut body: Vec<u8> = Vec::new();
    let good = failed_password("203.0.113.50");
    let oversize = format!(r#"{{"kind":"log","message":"{}"}}"#, "x".repeat(70_000));
    let junk: [&[u8]; 6] = [
        b"{not json at all",
        b"\xff\xfe\xfd invalid utf-8",
        oversize.as_bytes(),
        br#"{"message":"no kind here"}"#,
        br#"{"kind":"log","level":"shouting"}"#,
        br#"["an","array"]"#,
    ];
    for j in junk {
        body.extend_from_slice(good.as_bytes());
        body.push(b'\n');
        body.extend_from_slice(j);
        body.push(b'\n');
    }
    body.extend_from_slice(b"\n\r\n"); // blank lines are not errors
    // Write in small pieces so lines are split across reads.
    let mut s = UnixStream::connect(d.ingest_path()).unwrap();
    for chunk in body.chunks(777) {
        s.write_all(chunk).unwrap();
    }
    s.write_all(b"{\"kind\":\"marker\",\"message\":\"done\"}\n")
        .unwrap();
    drop(s);
    d.wait_for_key("marker/done").await;

    let real = d.real_incidents().await;
    assert_eq!(real.len(), 1, "six good lines after junk: one incident");
    assert_eq!(real[0]["detections"], 1);
    let st = d.get("/v1/status").await;
    let ingest = &st["sources"][0];
    assert_eq!(ingest["id"], "ingest");
    assert_eq!(ingest["accepted"], 7);
    assert_eq!(
        ingest["lines"],
        7 + 6,
        "blank lines are neither accepted nor rejected"
    );
    let r = &ingest["rejected"];
    for reason in [
        "invalid_json",
        "invalid_utf8",
        "oversize",
        "missing_kind",
        "invalid_field",
        "not_an_object",
    ] {
        assert_eq!(r[reason], 1, "{reason}: {r}");
    }
    // Rejections are logged, but throttled: not one line each.
    let logged = d.log().matches("rejected input line").count();
    assert!((1..6).contains(&logged), "{logged} warning lines");
}

#[tokio::test]
async fn many_clients_at_once() {
    let d = TestDaemon::start(SSH_RULE).await;
    let path = d.ingest_path();
    let threads: Vec<_> = (0..20)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut s = UnixStream::connect(path).unwrap();
                for _ in 0..5 {
                    s.write_all(
                        format!("{}\n", failed_password(&format!("10.0.0.{t}"))).as_bytes(),
                    )
                    .unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while d.real_incidents().await.len() < 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            d.real_incidents().await.len()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(d.real_incidents().await.len(), 20);
    assert_eq!(d.get("/v1/status").await["sources"][0]["accepted"], 100);
}

#[tokio::test]
async fn post_events_reports_each_rejected_line() {
    let d = TestDaemon::start(SSH_RULE).await;
    let body = format!(
        "{}\n{{bad\n{}\n\n{{\"kind\":\"log\",\"ts\":\"noon\"}}\n{}\n{}\n{}\n",
        failed_password("198.51.100.77"),
        failed_password("198.51.100.77"),
        failed_password("198.51.100.77"),
        failed_password("198.51.100.77"),
        failed_password("198.51.100.77"),
    );
    let v = d.post_ndjson(body).await;
    assert_eq!(v["accepted"], 5);
    let rejected = v["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2);
    assert_eq!(rejected[0]["line"], 2);
    assert_eq!(rejected[0]["reason"], "invalid_json");
    assert_eq!(rejected[1]["line"], 5);
    assert!(
        rejected[1]["error"].as_str().unwrap().contains("`ts`"),
        "{}",
        rejected[1]
    );
    d.wait_for_key("ssh/198.51.100.77").await;

    // A JSON array works too, with indexes as line numbers.
    let arr = serde_json::json!([{"kind": "marker", "message": "arr"}, {"message": "no kind"}]);
    let v: serde_json::Value = d
        .client
        .call(
            hyper::Method::POST,
            "/v1/events",
            Some(arr.to_string().into_bytes()),
            "application/json",
        )
        .await
        .unwrap();
    assert_eq!(v["accepted"], 1);
    assert_eq!(v["rejected"][0]["line"], 2);
    assert_eq!(v["rejected"][0]["reason"], "missing_kind");

    // The elements are decoded one at a time, but an array that is not well formed is
    // refused whole: a trailing comma, bytes that are not UTF-8 in its last element, or an
    // element that only decoding refuses (a number out of range).
    let good = br#"[{"kind": "marker", "message": "first"}, "#.to_vec();
    for tail in [
        &br#"{"kind": "marker", "message": "x"},]"#[..],
        b"\"\xff\"]",
        b"1e400, {}]",
    ] {
        let mut body = good.clone();
        body.extend_from_slice(tail);
        let v: serde_json::Value = d
            .client
            .call(
                hyper::Method::POST,
                "/v1/events",
                Some(body),
                "application/json",
            )
            .await
            .unwrap();
        assert_eq!(v["accepted"], 0, "{v}");
        assert_eq!(v["rejected"][0]["line"], 1, "{v}");
    }
}

/// A body of 100,000 bad lines: every one is counted, the first hundred are listed, and the
/// good lines among them all go in; `incidentctl send` says how many were rejected.
#[tokio::test]
async fn post_events_lists_the_first_rejections_and_counts_them_all() {
    let d = TestDaemon::start(SSH_RULE).await;
    let mut body = String::new();
    for i in 0..100_000 {
        body.push_str("0\n");
        if i % 10_000 == 0 {
            body.push_str(&failed_password("198.51.100.78"));
            body.push('\n');
        }
    }
    let v = d.post_ndjson(body.clone()).await;
    assert_eq!(v["accepted"], 10);
    assert_eq!(v["rejected_total"], 100_000);
    let listed = v["rejected"].as_array().unwrap();
    assert_eq!(listed.len(), 100);
    // Line 2 is an event; the numbers are the body's own.
    assert_eq!(listed[0]["line"], 1);
    assert_eq!(listed[1]["line"], 3);
    assert_eq!(listed[99]["line"], 101);
    assert_eq!(listed[0]["reason"], "not_an_object", "{}", listed[0]);
    d.wait_for_key("ssh/198.51.100.78").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("events.ndjson");
    std::fs::write(&file, &body).unwrap();
    let out = d.ctl(&["send", file.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("… and 99900 more rejected line(s)"), "{err}");
    assert!(err.contains("100000 line(s) rejected"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("accepted 10"));
}

#[tokio::test]
async fn absence_fires_live_on_wall_time() {
    let d = TestDaemon::start(
        "[[rule]]\nid = \"down\"\nkind = \"absence\"\nwhere = { kind = \"heartbeat\" }\ngroup_by = [\"service\"]\ntimeout = \"1s\"\n",
    )
    .await;
    d.send_and_settle(&[r#"{"kind":"heartbeat","service":"api"}"#.to_string()])
        .await;
    let inc = d.wait_for_key("down/api").await;
    assert_eq!(inc["service"], "api");
    assert_eq!(inc["title"], "rule down fired (api): no event for 1s");
    // A heartbeat re-arms it, silence fires again and attaches to the open incident.
    d.send_and_settle(&[r#"{"kind":"heartbeat","service":"api"}"#.to_string()])
        .await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let i = d.get(&format!("/v1/incidents/{}", inc["id"])).await;
        if i["detections"] == 2 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{i}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Events go to the engine in batches of what one read brought, but none waits for a later
/// line: on a connection that stays open, the lines sent so far are applied while a partial
/// line is still unfinished, and a batch larger than one hand-over arrives whole, in order.
#[tokio::test]
async fn an_open_connection_hands_over_what_it_read_without_waiting() {
    let d = TestDaemon::start(SSH_RULE).await;
    let events = || async {
        d.get("/v1/status").await["engine"]["events"]
            .as_u64()
            .unwrap()
    };
    let wait_events = |n: u64| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let got = events().await;
            if got == n {
                return;
            }
            assert!(got < n, "{got} events, expected {n}");
            assert!(
                std::time::Instant::now() < deadline,
                "{got} events, expected {n}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    let mut s = UnixStream::connect(d.ingest_path()).unwrap();
    // Four failures and half of a fifth line: the four are applied, nothing fires.
    let mut text: String = (0..4)
        .map(|_| failed_password("192.0.2.77") + "\n")
        .collect();
    let fifth = failed_password("192.0.2.77");
    let (head, tail) = fifth.split_at(fifth.len() / 2);
    text.push_str(head);
    s.write_all(text.as_bytes()).unwrap();
    wait_events(4).await;
    assert!(d.real_incidents().await.is_empty());
    // The rest of the fifth line, then 1,000 more lines (several batches) on the same
    // connection, still open: the fifth fires, and every event is applied.
    s.write_all(format!("{tail}\n").as_bytes()).unwrap();
    let more: String = (0..1000)
        .map(|i| failed_password(&format!("198.51.100.{}", i % 200)) + "\n")
        .collect();
    s.write_all(more.as_bytes()).unwrap();
    wait_events(1005).await;
    d.wait_for_key("ssh/192.0.2.77").await;
    let st = d.get("/v1/status").await;
    assert_eq!(st["sources"][0]["id"], "ingest", "{st}");
    assert_eq!(st["sources"][0]["accepted"].as_u64(), Some(1005), "{st}");
    drop(s);
}

/// An event without a `ts` is stamped with the time its line was read. On one connection left
/// open, lines sent after a pause get the later time, and lines read together share one.
#[tokio::test]
async fn events_without_a_time_get_the_time_they_were_read() {
    let d = TestDaemon::start(SSH_RULE).await;
    let at = |i: &serde_json::Value| {
        let text = i["first_event_at"].as_str().unwrap_or_default();
        incidentd::clock::Timestamp::parse_rfc3339(text)
            .unwrap_or_else(|e| panic!("{e}: {i}"))
            .millis()
    };
    let wall = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    let mut s = UnixStream::connect(d.ingest_path()).unwrap();
    let before = wall();
    s.write_all(b"{\"kind\":\"marker\",\"message\":\"first\"}\n")
        .unwrap();
    let first = at(&d.wait_for_key("marker/first").await);
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let resumed = wall();
    s.write_all(
        b"{\"kind\":\"marker\",\"message\":\"second\"}\n{\"kind\":\"marker\",\"message\":\"third\"}\n",
    )
    .unwrap();
    let third = at(&d.wait_for_key("marker/third").await);
    let second = at(&d.wait_for_key("marker/second").await);
    let after = wall();
    // Timestamps are whole milliseconds; the clocks are the same wall clock.
    assert!(
        (before..=after).contains(&first),
        "{before} {first} {after}"
    );
    assert!(
        second >= resumed && second <= after,
        "the line after the pause is stamped when read: {resumed} {second} {after}"
    );
    assert!(second - first >= 1500, "{first} {second}");
    assert!((second..second + 1000).contains(&third), "{second} {third}");
    drop(s);
}
