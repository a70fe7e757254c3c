//! Event → incident → status machine, dedup, notes, errors.

use serde_json::json;

use crate::util::*;

#[tokio::test]
async fn brute_force_becomes_an_incident_that_moves_through_its_lifecycle() {
    let d = TestDaemon::start(SSH_RULE).await;
    let lines: Vec<String> = (0..5).map(|_| failed_password("203.0.113.7")).collect();
    d.send_and_settle(&lines).await;
    let inc = d.wait_for_key("ssh/203.0.113.7").await;
    assert_eq!(inc["status"], "open");
    assert_eq!(inc["severity"], "sev2");
    assert_eq!(inc["labels"]["ip"], "203.0.113.7");
    let id = inc["id"].as_u64().unwrap();

    let acked = d
        .post(
            &format!("/v1/incidents/{id}/ack"),
            json!({"note": "looking"}),
        )
        .await
        .unwrap();
    assert_eq!(acked["status"], "acknowledged");
    assert!(acked["acknowledged_at"].is_string());
    let resolved = d
        .post(&format!("/v1/incidents/{id}/resolve"), json!({}))
        .await
        .unwrap();
    assert_eq!(resolved["status"], "resolved");
    let reopened = d
        .post(
            &format!("/v1/incidents/{id}/reopen"),
            json!({"note": "back"}),
        )
        .await
        .unwrap();
    assert_eq!(reopened["status"], "open");
    assert!(reopened["resolved_at"].is_null());
    let mitigated = d
        .post(&format!("/v1/incidents/{id}/mitigate"), json!({}))
        .await
        .unwrap();
    assert_eq!(mitigated["status"], "mitigated");
    let closed = d
        .post(&format!("/v1/incidents/{id}/close"), json!({}))
        .await
        .unwrap();
    assert_eq!(closed["status"], "closed");

    let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    let types: Vec<&str> = tl["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "created",
            "detection",
            "status_changed",
            "status_changed",
            // Resolved: the stage moves to recover by itself, and the post-mortem draft is
            // stored.
            "stage_changed",
            "postmortem",
            "reopened",
            "status_changed",
            "status_changed"
        ]
    );
    let ack = &tl["timeline"][2];
    assert_eq!(ack["note"], "looking");
    assert_eq!(ack["data"]["from"], "open");
    assert_eq!(ack["data"]["to"], "acknowledged");
    // The actor is the peer's user name, not something the request claims.
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .unwrap()
        .unwrap()
        .name;
    assert_eq!(ack["actor"], me.as_str());
    assert_eq!(tl["timeline"][0]["actor"], "system");
}

#[tokio::test]
async fn invalid_transitions_are_refused_with_409_and_a_reason() {
    let d = TestDaemon::start(SSH_RULE).await;
    let inc = d
        .post(
            "/v1/incidents",
            json!({"title": "disk on fire", "severity": "sev1"}),
        )
        .await
        .unwrap();
    let id = inc["id"].as_u64().unwrap();
    assert_eq!(inc["status"], "open");

    d.post(&format!("/v1/incidents/{id}/ack"), json!({}))
        .await
        .unwrap();
    let again = d
        .post(&format!("/v1/incidents/{id}/ack"), json!({}))
        .await
        .unwrap_err();
    assert_eq!(again.status(), Some(409));
    assert_eq!(
        again.to_string(),
        format!("incident {id} is already acknowledged")
    );

    let reopen = d
        .post(&format!("/v1/incidents/{id}/reopen"), json!({}))
        .await
        .unwrap_err();
    assert_eq!(reopen.status(), Some(409));
    assert!(
        reopen
            .to_string()
            .contains("only a resolved incident can be reopened"),
        "{reopen}"
    );

    d.post(&format!("/v1/incidents/{id}/resolve"), json!({}))
        .await
        .unwrap();
    let ack_resolved = d
        .post(&format!("/v1/incidents/{id}/ack"), json!({}))
        .await
        .unwrap_err();
    assert!(
        ack_resolved.to_string().contains("reopen it first"),
        "{ack_resolved}"
    );

    d.post(&format!("/v1/incidents/{id}/cancel"), json!({}))
        .await
        .unwrap();
    let after_cancel = d
        .post(&format!("/v1/incidents/{id}/close"), json!({}))
        .await
        .unwrap_err();
    assert_eq!(after_cancel.status(), Some(409));

    // Refused changes leave no trace (created, acknowledged, resolved with its stage move
    // and post-mortem draft, cancelled).
    let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    assert_eq!(tl["timeline"].as_array().unwrap().len(), 6, "{tl}");
}

#[tokio::test]
async fn errors_have_the_documented_shape_and_status() {
    use hyper::Method;
    let d = TestDaemon::start(SSH_RULE).await;
    let (status, v) = d.raw(Method::GET, "/v1/incidents/999", b"").await;
    assert_eq!(status, 404);
    assert_eq!(v["error"]["code"], "not_found");
    assert_eq!(v["error"]["message"], "incident 999 not found");
    let (status, v) = d.raw(Method::POST, "/v1/incidents", b"{not json").await;
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("invalid JSON body")
    );
    let cases: [(Method, &str, u16); 6] = [
        (Method::POST, "/v1/incidents/999/ack", 404),
        (Method::GET, "/v1/incidents/abc", 400),
        (Method::POST, "/v1/incidents/1/explode", 404),
        (Method::GET, "/v1/incidents?status=sleeping", 400),
        (Method::GET, "/v1/nothing", 404),
        (Method::DELETE, "/v1/health", 405),
    ];
    for (method, path, want) in cases {
        let (status, v) = d.raw(method.clone(), path, b"").await;
        assert_eq!(status, want, "{method} {path}: {v}");
        assert!(v["error"]["message"].is_string(), "{method} {path}: {v}");
    }
}

#[tokio::test]
async fn repeated_detections_attach_to_the_open_incident() {
    // Without re-alert backoff, so a new burst after closing makes a new incident at once
    // (the backoff has its own test).
    let d = TestDaemon::prepare("[incidents]\nrealert_backoff = []\n", SSH_RULE);
    d.wait_healthy().await;
    // 15 failures from one address fire three times; 5 from another fire once.
    let mut lines: Vec<String> = (0..15).map(|_| failed_password("198.51.100.1")).collect();
    lines.extend((0..5).map(|_| failed_password("198.51.100.2")));
    d.send_and_settle(&lines).await;
    let real = d.real_incidents().await;
    assert_eq!(real.len(), 2, "{real:?}");
    let one = real
        .iter()
        .find(|i| i["key"] == "ssh/198.51.100.1")
        .unwrap();
    assert_eq!(one["detections"], 3);
    let two = real
        .iter()
        .find(|i| i["key"] == "ssh/198.51.100.2")
        .unwrap();
    assert_eq!(two["detections"], 1);
    let tl = d
        .get(&format!("/v1/incidents/{}/timeline", one["id"]))
        .await;
    let detections = tl["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "detection")
        .count();
    assert_eq!(detections, 3);

    // After it is closed, a new burst makes a new incident with a new id.
    let id = one["id"].as_u64().unwrap();
    d.post(&format!("/v1/incidents/{id}/close"), json!({}))
        .await
        .unwrap();
    d.send_and_settle(
        &(0..5)
            .map(|_| failed_password("198.51.100.1"))
            .collect::<Vec<_>>(),
    )
    .await;
    let again = d.incidents("status=open").await;
    let fresh = again
        .iter()
        .find(|i| i["key"] == "ssh/198.51.100.1")
        .expect("new incident");
    assert!(fresh["id"].as_u64().unwrap() > id);
}

#[tokio::test]
async fn notes_and_filters() {
    let d = TestDaemon::start(SSH_RULE).await;
    let a = d
        .post(
            "/v1/incidents",
            json!({"title": "api slow", "severity": "sev2", "service": "api"}),
        )
        .await
        .unwrap();
    let b = d.post("/v1/incidents", json!({"title": "db down", "severity": "sev1", "service": "db", "labels": {"team": "data"}})).await.unwrap();
    let id = a["id"].as_u64().unwrap();
    d.post(
        &format!("/v1/incidents/{id}/notes"),
        json!({"note": "rolled back"}),
    )
    .await
    .unwrap();
    let empty = d
        .post(&format!("/v1/incidents/{id}/notes"), json!({"note": "  "}))
        .await
        .unwrap_err();
    assert_eq!(empty.status(), Some(400));
    let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    assert_eq!(tl["timeline"][1]["type"], "note");
    assert_eq!(tl["timeline"][1]["note"], "rolled back");

    assert_eq!(d.incidents("service=db").await.len(), 1);
    assert_eq!(d.incidents("severity=sev1,sev2").await.len(), 2);
    assert_eq!(d.incidents("label=team:data").await[0]["id"], b["id"]);
    assert_eq!(d.incidents("q=SLOW").await[0]["id"], a["id"]);
    // Newest first, with a cursor for the next page.
    let page: serde_json::Value = d.get("/v1/incidents?limit=1").await;
    assert_eq!(page["incidents"][0]["id"], b["id"]);
    assert_eq!(page["next_cursor"], b["id"].to_string());
    let next: serde_json::Value = d
        .get(&format!("/v1/incidents?limit=1&cursor={}", b["id"]))
        .await;
    assert_eq!(next["incidents"][0]["id"], a["id"]);
    assert!(next["next_cursor"].is_null());
    // `q` also finds text in the notes; sorting by age and by severity.
    assert_eq!(d.incidents("q=ROLLED%20back").await[0]["id"], a["id"]);
    assert!(d.incidents("q=nowhere").await.is_empty());
    assert_eq!(d.incidents("sort=oldest").await[0]["id"], a["id"]);
    let by_sev = d.incidents("sort=severity").await;
    let sevs: Vec<&str> = by_sev
        .iter()
        .map(|i| i["severity"].as_str().unwrap())
        .collect();
    let mut sorted = sevs.clone();
    sorted.sort();
    assert_eq!(sevs, sorted);
    let (status, err) = d
        .raw(hyper::Method::GET, "/v1/incidents?sort=loudest", b"")
        .await;
    assert_eq!(status, 400);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unknown sort")
    );
}

#[tokio::test]
async fn severity_order_pages_through_every_incident_once() {
    let d = TestDaemon::start("").await;
    let sevs = ["sev3", "sev1", "sev4", "sev2"];
    // 24 = 6 pages of 4: the last page ends exactly at the limit.
    for i in 0..24 {
        d.post(
            "/v1/incidents",
            json!({"title": format!("i{i}"), "severity": sevs[i % 4]}),
        )
        .await
        .unwrap();
    }
    let mut seen: Vec<(String, u64)> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/incidents?sort=severity&limit=4&cursor={c}"),
            None => "/v1/incidents?sort=severity&limit=4".to_owned(),
        };
        let page = d.get(&path).await;
        for i in page["incidents"].as_array().unwrap() {
            seen.push((
                i["severity"].as_str().unwrap().to_owned(),
                i["id"].as_u64().unwrap(),
            ));
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 24, "{seen:?}");
    let mut want = seen.clone();
    // Worst first, newest first within a severity.
    want.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    assert_eq!(seen, want);
    // incidentctl asks for the same order.
    let out = d.ctl(&["list", "--sort", "severity", "--limit", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().nth(1).unwrap().contains("sev1"), "{text}");
    // A cursor from one order is refused in another.
    let (status, _) = d
        .raw(
            hyper::Method::GET,
            "/v1/incidents?sort=severity&cursor=5",
            b"",
        )
        .await;
    assert_eq!(status, 400);
}

const BOOM: &str = r#"
[[rule]]
id = "boom"
kind = "match"
severity = "sev3"
where = { kind = "boom" }
"#;

#[tokio::test]
async fn a_detection_soon_after_resolving_reopens_and_reload_changes_the_window() {
    let d = TestDaemon::start(BOOM).await;
    let boom = || vec![r#"{"kind":"boom"}"#.to_string()];
    d.send_and_settle(&boom()).await;
    let first = d.wait_for_key("boom").await;
    let id = first["id"].as_u64().unwrap();
    d.post(&format!("/v1/incidents/{id}/resolve"), json!({}))
        .await
        .unwrap();

    // Within the default 30m reopen_window: the same incident comes back.
    d.send_and_settle(&boom()).await;
    let again = d.get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(again["status"], "open");
    assert_eq!(again["detections"], 2);
    let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    let reopened = tl["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["type"] == "reopened")
        .expect("reopened entry");
    assert_eq!(reopened["actor"], "system");

    // A reload shortens the window; after it, a detection creates a new incident.
    let mut text = std::fs::read_to_string(&d.config).unwrap();
    text.push_str("[incidents]\nreopen_window = \"1ms\"\nrealert_backoff = []\n");
    std::fs::write(&d.config, text).unwrap();
    d.post("/v1/reload", json!({})).await.unwrap();
    d.post(&format!("/v1/incidents/{id}/resolve"), json!({}))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    d.send_and_settle(&boom()).await;
    let real = d.real_incidents().await;
    assert_eq!(real.len(), 2, "{real:?}");
    assert_eq!(
        d.get(&format!("/v1/incidents/{id}")).await["status"],
        "resolved"
    );
}

#[tokio::test]
async fn sockets_get_the_configured_mode() {
    use std::os::unix::fs::PermissionsExt;
    let d = TestDaemon::prepare("[control]\nsocket_mode = \"0600\"\n", BOOM);
    d.wait_healthy().await;
    let mode = |p: std::path::PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(d.run.join("control.sock")), 0o600);
    assert_eq!(mode(d.ingest_path()), 0o660);
}

/// Resolved incidents close by themselves after `auto_close_after` (actor `system`); others
/// are left alone.
#[tokio::test]
async fn resolved_incidents_close_after_auto_close_after() {
    let d = TestDaemon::prepare(
        "[incidents]\nauto_close_after = \"1s\"\nreopen_window = \"1s\"\n",
        "",
    );
    d.wait_healthy().await;
    let mut ids = Vec::new();
    for title in ["resolved one", "acknowledged one"] {
        let v = d
            .post(
                "/v1/incidents",
                serde_json::json!({"title": title, "severity": "sev4"}),
            )
            .await
            .unwrap();
        ids.push(v["id"].to_string());
    }
    d.post(
        &format!("/v1/incidents/{}/resolve", ids[0]),
        serde_json::json!({}),
    )
    .await
    .unwrap();
    d.post(
        &format!("/v1/incidents/{}/ack", ids[1]),
        serde_json::json!({}),
    )
    .await
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let inc = d.get(&format!("/v1/incidents/{}", ids[0])).await;
        if inc["status"] == "closed" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{inc}\n{}", d.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let timeline = d.get(&format!("/v1/incidents/{}/timeline", ids[0])).await;
    let last = timeline["timeline"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(last["actor"], "system", "{last}");
    assert!(
        last["note"]
            .as_str()
            .unwrap()
            .starts_with("closed automatically"),
        "{last}"
    );
    let other = d.get(&format!("/v1/incidents/{}", ids[1])).await;
    assert_eq!(other["status"], "acknowledged");
}

/// Each incident keeps a bounded sample of the events behind its detections — the first and
/// the latest — and keeps it through a restart.
#[tokio::test]
async fn incidents_keep_first_and_latest_evidence_through_restarts() {
    let mut d = TestDaemon::prepare("[incidents]\nevidence_samples = 2\n", SSH_RULE);
    d.wait_healthy().await;
    for port in [1, 2, 3] {
        let lines: Vec<String> = (0..5)
            .map(|_| {
                format!(
                    r#"{{"kind":"log","message":"Failed password for root from 203.0.113.4 port {port} ssh2"}}"#
                )
            })
            .collect();
        d.send_and_settle(&lines).await;
    }
    let inc = d.wait_for_key("ssh/203.0.113.4").await;
    assert_eq!(inc["detections"], 3, "{inc}");
    let ports = |inc: &serde_json::Value| -> Vec<String> {
        inc["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e["message"]
                    .as_str()
                    .unwrap()
                    .split("port ")
                    .nth(1)
                    .unwrap()
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(ports(&inc), ["1 ssh2", "3 ssh2"], "{inc}");
    assert!(d.stop().success());
    d.restart().await;
    let id = inc["id"].to_string();
    let again = d.get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(ports(&again), ["1 ssh2", "3 ssh2"]);
    let md = d.ctl(&["postmortem", &id]);
    assert!(String::from_utf8_lossy(&md.stdout).contains("Evidence (the first and the latest"));
}

/// The documented default: at most 3 new incidents per key per hour, and no re-alert
/// backoff unless configured; the fourth is held back and counted.
#[tokio::test]
async fn by_default_a_key_opens_at_most_three_incidents_an_hour() {
    let d = TestDaemon::prepare("[incidents]\nreopen_window = \"1ms\"\n", BOOM);
    d.wait_healthy().await;
    let boom = || vec![r#"{"kind":"boom"}"#.to_string()];
    for round in 1..=4 {
        d.send_and_settle(&boom()).await;
        for i in d.real_incidents().await {
            if i["status"] == "open" {
                d.post(&format!("/v1/incidents/{}/resolve", i["id"]), json!({}))
                    .await
                    .unwrap();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(
            d.real_incidents().await.len(),
            round.min(3),
            "round {round}"
        );
    }
    let st = d.get("/v1/status").await;
    assert_eq!(st["incidents"]["rate_limited"], 1, "{st}");
    assert!(d.log().contains("max=3 per=3600s"), "{}", d.log());
}

/// Re-alert backoff: a key that keeps firing gets a new incident only after the next step
/// since the previous one (here 2 s, then 1 h); what is held back is counted.
#[tokio::test]
async fn a_key_that_keeps_firing_backs_off() {
    let d = TestDaemon::prepare(
        "[incidents]\nreopen_window = \"1ms\"\nrealert_backoff = [\"2s\", \"1h\"]\n",
        BOOM,
    );
    d.wait_healthy().await;
    let boom = || vec![r#"{"kind":"boom"}"#.to_string()];
    let resolve_all = || async {
        for i in d.real_incidents().await {
            if i["status"] == "open" {
                d.post(&format!("/v1/incidents/{}/resolve", i["id"]), json!({}))
                    .await
                    .unwrap();
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    d.send_and_settle(&boom()).await;
    resolve_all().await;
    // Too soon: held back.
    d.send_and_settle(&boom()).await;
    assert_eq!(d.real_incidents().await.len(), 1);
    let st = d.get("/v1/status").await;
    assert_eq!(st["incidents"]["rate_limited"], 1, "{st}");
    // After the first step: a new incident.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    d.send_and_settle(&boom()).await;
    assert_eq!(d.real_incidents().await.len(), 2);
    resolve_all().await;
    // The next step is an hour.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    d.send_and_settle(&boom()).await;
    assert_eq!(d.real_incidents().await.len(), 2);
    assert!(d.log().contains("re-alert backoff"), "{}", d.log());
}

/// `resolve_after` on a rule: its incident resolves by itself (actor `system`) once no
/// detection attached for that long; a rule without it leaves its incident open.
#[tokio::test]
async fn incidents_of_rules_with_resolve_after_resolve_by_themselves() {
    let rules = format!(
        "{BOOM}resolve_after = \"1s\"\n\n[[rule]]\nid = \"bang\"\nkind = \"match\"\nwhere = {{ kind = \"bang\" }}\n"
    );
    let d = TestDaemon::start(&rules).await;
    d.send_and_settle(&[
        r#"{"kind":"boom"}"#.to_string(),
        r#"{"kind":"bang"}"#.to_string(),
    ])
    .await;
    let boom = d.wait_for_key("boom").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let inc = d.get(&format!("/v1/incidents/{}", boom["id"])).await;
        if inc["status"] == "resolved" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{inc}\n{}", d.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let tl = d
        .get(&format!("/v1/incidents/{}/timeline", boom["id"]))
        .await;
    let last = tl["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["type"] == "status_changed")
        .unwrap()
        .clone();
    assert_eq!(last["actor"], "system", "{last}");
    assert!(
        last["note"]
            .as_str()
            .unwrap()
            .starts_with("resolved automatically: no detection for 1s"),
        "{last}"
    );
    let bang = d.wait_for_key("bang").await;
    assert_eq!(
        d.get(&format!("/v1/incidents/{}", bang["id"])).await["status"],
        "open"
    );
}

/// Closed incidents older than `retain_closed` are compacted away (snapshot, timeline and
/// index entries); open ones stay, and ids are not reused.
#[tokio::test]
async fn closed_incidents_are_compacted_after_retain_closed() {
    let d = TestDaemon::prepare("[incidents]\nretain_closed = \"1s\"\n", "");
    d.wait_healthy().await;
    let mut ids = Vec::new();
    for title in ["to close", "to keep"] {
        let v = d
            .post("/v1/incidents", json!({"title": title, "severity": "sev4"}))
            .await
            .unwrap();
        ids.push(v["id"].as_u64().unwrap());
    }
    d.post(&format!("/v1/incidents/{}/close", ids[0]), json!({}))
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let (status, _) = d
            .raw(
                hyper::Method::GET,
                &format!("/v1/incidents/{}", ids[0]),
                b"",
            )
            .await;
        if status == 404 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", d.log());
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (status, _) = d
        .raw(
            hyper::Method::GET,
            &format!("/v1/incidents/{}/timeline", ids[0]),
            b"",
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        d.get(&format!("/v1/incidents/{}", ids[1])).await["status"],
        "open"
    );
    let next = d
        .post(
            "/v1/incidents",
            json!({"title": "later", "severity": "sev4"}),
        )
        .await
        .unwrap();
    assert!(
        next["id"].as_u64().unwrap() > ids[1],
        "ids are not reused: {next}"
    );
    assert!(
        d.log().contains("compacted old closed incidents"),
        "{}",
        d.log()
    );
}
