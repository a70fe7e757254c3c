//! Silences: create, list by state, expire; while one matches, the incident is still
//! recorded and its timeline says it is silenced; silences survive a crash.

use serde_json::{Value, json};

use crate::util::*;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn timeline_types(d: &TestDaemon, id: &Value) -> Vec<String> {
    let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    tl["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_matching_silence_is_recorded_on_the_incident_and_others_are_untouched() {
    let mut d = TestDaemon::start("").await;
    // An incident open before the silence: covered from the moment it is created.
    let earlier = d
        .post(
            "/v1/alerts",
            json!({"key": "api-5xx", "summary": "api 5xx", "service": "api"}),
        )
        .await
        .unwrap();

    let add = d.ctl(&[
        "silence",
        "add",
        "--service",
        "api",
        "--severity",
        "sev3,sev4",
        "--duration",
        "2h",
        "-c",
        "deploy of api 2.3",
    ]);
    assert!(add.status.success(), "{add:?}");
    let out = stdout(&add);
    assert!(
        out.contains("active") && out.contains("service=api"),
        "{out}"
    );
    assert!(
        out.contains("severity=sev3,sev4") && out.contains("deploy of api 2.3"),
        "{out}"
    );
    let list: Value =
        serde_json::from_slice(&d.ctl(&["-o", "json", "silence", "list"]).stdout).unwrap();
    let silence = list["silences"][0].clone();
    assert_eq!(silence["state"], "active");
    assert_eq!(silence["created_by"], whoami());
    let sid = silence["id"].clone();

    let types = timeline_types(&d, &earlier["incident_id"]).await;
    assert_eq!(types.last().unwrap(), "silenced", "{types:?}");

    // New incidents: the matching one is recorded, and silenced once (not per detection).
    let hit = d
        .post(
            "/v1/alerts",
            json!({"key": "api-slow", "summary": "api slow", "service": "api"}),
        )
        .await
        .unwrap();
    assert_eq!(
        hit["created"], true,
        "silenced incidents are still recorded"
    );
    d.post(
        "/v1/alerts",
        json!({"key": "api-slow", "summary": "api slow", "service": "api"}),
    )
    .await
    .unwrap();
    let inc = d
        .get(&format!("/v1/incidents/{}", hit["incident_id"]))
        .await;
    assert_eq!(inc["silenced_by"], json!([sid]));
    let types = timeline_types(&d, &hit["incident_id"]).await;
    assert_eq!(types, ["created", "detection", "silenced", "detection"]);
    let tl = d
        .get(&format!("/v1/incidents/{}/timeline", hit["incident_id"]))
        .await;
    let entry = &tl["timeline"][2];
    assert_eq!(entry["data"]["silence"], sid);
    assert_eq!(
        entry["data"]["suppressed"],
        json!(["notifications", "actions"])
    );
    assert!(
        entry["note"]
            .as_str()
            .unwrap()
            .contains("deploy of api 2.3")
    );

    // Another service, or a worse severity, is not covered.
    for body in [
        json!({"key": "web-down", "summary": "web down", "service": "web"}),
        json!({"key": "api-down", "summary": "api down", "service": "api", "severity": "sev1"}),
    ] {
        let other = d.post("/v1/alerts", body).await.unwrap();
        let types = timeline_types(&d, &other["incident_id"]).await;
        assert!(!types.contains(&"silenced".to_owned()), "{types:?}");
    }

    // A pending silence covers nothing yet.
    let start = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    let start = start
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let pending = d.ctl(&[
        "-o",
        "json",
        "silence",
        "add",
        "--service",
        "db",
        "--start",
        &start,
        "--duration",
        "1h",
        "-c",
        "tonight's maintenance",
    ]);
    assert!(pending.status.success(), "{pending:?}");
    let pending: Value = serde_json::from_slice(&pending.stdout).unwrap();
    assert_eq!(pending["state"], "pending");
    let db = d
        .post(
            "/v1/alerts",
            json!({"key": "db", "summary": "db slow", "service": "db"}),
        )
        .await
        .unwrap();
    assert!(
        !timeline_types(&d, &db["incident_id"])
            .await
            .contains(&"silenced".to_owned())
    );

    // Silences survive a crash.
    d.kill9();
    d.restart().await;
    let active = d.ctl(&["-o", "json", "silence", "list", "--state", "active"]);
    let active: Value = serde_json::from_slice(&active.stdout).unwrap();
    assert_eq!(active["silences"].as_array().unwrap().len(), 1);
    assert_eq!(active["silences"][0]["id"], sid);

    // Ending it: listed as expired, with who ended it; new matches are no longer silenced.
    let rm = d.ctl(&["silence", "rm", &sid.to_string()]);
    assert!(rm.status.success(), "{rm:?}");
    assert!(stdout(&rm).contains(&format!("silence {sid} expired")));
    let expired = d.get("/v1/silences?state=expired").await;
    assert_eq!(expired["silences"][0]["id"], sid);
    assert_eq!(expired["silences"][0]["expired_by"], whoami());
    let after = d
        .post(
            "/v1/alerts",
            json!({"key": "api-again", "summary": "api again", "service": "api"}),
        )
        .await
        .unwrap();
    assert!(
        !timeline_types(&d, &after["incident_id"])
            .await
            .contains(&"silenced".to_owned())
    );
    let again = d.ctl(&["silence", "rm", &sid.to_string()]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("already expired"), "{again:?}");
}

#[tokio::test]
async fn bad_silences_are_refused_with_a_reason() {
    let d = TestDaemon::start("").await;
    for (body, want) in [
        (
            json!({"matchers": {}, "duration": "1h", "comment": "x"}),
            "at least one matcher",
        ),
        (
            json!({"matchers": {"service": "api"}, "duration": "1h", "comment": " "}),
            "comment",
        ),
        (
            json!({"matchers": {"service": "api"}, "comment": "x"}),
            "`ends_at` or `duration`",
        ),
        (
            json!({"matchers": {"service": "api"}, "duration": "soon", "comment": "x"}),
            "duration `soon`",
        ),
        (
            json!({"matchers": {"service": "api"}, "duration": "1h", "ends_at": "2030-01-01T00:00:00Z", "comment": "x"}),
            "not both",
        ),
        (
            json!({"matchers": {"service": "api"}, "ends_at": "2001-01-01T00:00:00Z", "comment": "x"}),
            "before it starts",
        ),
        (
            json!({"matchers": {"sevirity": ["sev1"]}, "duration": "1h", "comment": "x"}),
            "unknown field",
        ),
    ] {
        let (status, err) = d
            .raw(
                hyper::Method::POST,
                "/v1/silences",
                body.to_string().as_bytes(),
            )
            .await;
        assert_eq!(status, 400, "{body} → {err}");
        let msg = err["error"]["message"].as_str().unwrap();
        assert!(msg.contains(want), "{body}: {msg}");
    }
    let (status, err) = d.raw(hyper::Method::DELETE, "/v1/silences/99", b"").await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["message"], "silence 99 not found");
    let (status, _) = d
        .raw(hyper::Method::GET, "/v1/silences?state=gone", b"")
        .await;
    assert_eq!(status, 400);
    let usage = d.ctl(&["silence", "add", "--service", "api", "-c", "x"]);
    assert_eq!(usage.status.code(), Some(2), "no span is a usage error");
    assert!(
        d.get("/v1/silences").await["silences"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

fn whoami() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default()
}
