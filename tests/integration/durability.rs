//! Restarts, SIGKILL, stale and live sockets.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::{Value, json};

use crate::util::*;

#[tokio::test]
async fn sigterm_exits_cleanly_and_a_restart_keeps_everything() {
    let mut d = TestDaemon::start(SSH_RULE).await;
    d.send_and_settle(
        &(0..5)
            .map(|_| failed_password("203.0.113.9"))
            .collect::<Vec<_>>(),
    )
    .await;
    let inc = d.wait_for_key("ssh/203.0.113.9").await;
    let id = inc["id"].as_u64().unwrap();
    d.post(&format!("/v1/incidents/{id}/ack"), json!({"note": "mine"}))
        .await
        .unwrap();
    d.post(
        &format!("/v1/incidents/{id}/notes"),
        json!({"note": "blocked at the edge"}),
    )
    .await
    .unwrap();
    let manual = d
        .post("/v1/incidents", json!({"title": "by hand"}))
        .await
        .unwrap();
    let before: Vec<serde_json::Value> = d.incidents("").await;
    let timeline_before = d.get(&format!("/v1/incidents/{id}/timeline")).await;

    let started = Instant::now();
    let status = d.stop();
    assert!(status.success(), "exit status {status:?}\n{}", d.log());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stop took {:?}",
        started.elapsed()
    );
    assert!(
        !exists(&d.run.join("control.sock")) && !exists(&d.ingest_path()),
        "sockets removed"
    );
    assert!(d.log().contains("incidentd stopped cleanly"));

    d.restart().await;
    assert_eq!(stored(d.incidents("").await), stored(before));
    assert_eq!(
        d.get(&format!("/v1/incidents/{id}/timeline")).await,
        timeline_before
    );
    // Ids never repeat after a restart.
    let next = d
        .post("/v1/incidents", json!({"title": "after restart"}))
        .await
        .unwrap();
    assert!(next["id"].as_u64().unwrap() > manual["id"].as_u64().unwrap());
}

#[tokio::test]
async fn sigkill_right_after_an_answered_change_keeps_it() {
    let mut d = TestDaemon::start(SSH_RULE).await;
    let inc = d
        .post(
            "/v1/incidents",
            json!({"title": "db down", "severity": "sev1"}),
        )
        .await
        .unwrap();
    let id = inc["id"].as_u64().unwrap();
    let acked = d
        .post(&format!("/v1/incidents/{id}/ack"), json!({"note": "on it"}))
        .await
        .unwrap();
    assert_eq!(acked["status"], "acknowledged");
    d.kill9();
    // The sockets are left behind, stale; the next start replaces them.
    assert!(exists(&d.run.join("control.sock")));
    d.restart().await;
    let mut after = d.get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(after["status"], "acknowledged");
    // `sla` is computed for the reader (time left), not stored.
    assert!(after.as_object_mut().unwrap().remove("sla").is_some());
    assert_eq!(after, acked);
    let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    assert_eq!(tl["timeline"][1]["note"], "on it");
    assert!(d.log().contains("removing stale socket"));
}

#[tokio::test]
async fn sigkill_during_a_stream_of_changes_loses_no_answered_change() {
    let mut d = TestDaemon::start(SSH_RULE).await;
    let mut answered = Vec::new();
    for i in 0..30 {
        let inc = d
            .post("/v1/incidents", json!({"title": format!("load {i}")}))
            .await
            .unwrap();
        answered.push(inc);
    }
    d.kill9();
    d.restart().await;
    for inc in answered {
        let after = d.get(&format!("/v1/incidents/{}", inc["id"])).await;
        assert_eq!(after, inc);
    }
}

#[tokio::test]
async fn a_second_daemon_on_the_same_sockets_refuses_to_start() {
    let d = TestDaemon::start(SSH_RULE).await;
    let out = d.command().output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another incidentd is already listening on"),
        "{err}"
    );
    // The first one is unharmed.
    assert_eq!(d.get("/v1/health").await["status"], "ok");
}

#[tokio::test]
async fn sigint_stops_too_and_sighup_does_not() {
    let mut d = TestDaemon::start(SSH_RULE).await;
    d.signal(Signal::SIGHUP);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(d.get("/v1/health").await["status"], "ok");
    d.signal(Signal::SIGINT);
    assert!(d.wait_exit(Duration::from_secs(15)).success());
}

#[tokio::test]
async fn rule_windows_survive_a_graceful_restart() {
    let mut d = TestDaemon::start(SSH_RULE).await;
    // Three of five failures before the restart, two after: one incident.
    d.send_and_settle(
        &(0..3)
            .map(|_| failed_password("198.51.100.33"))
            .collect::<Vec<_>>(),
    )
    .await;
    assert!(d.stop().success());
    d.restart().await;
    assert!(
        d.log()
            .contains("restored rule window state from the last checkpoint rules=2"),
        "{}",
        d.log()
    );
    d.send_and_settle(
        &(0..2)
            .map(|_| failed_password("198.51.100.33"))
            .collect::<Vec<_>>(),
    )
    .await;
    let inc = d.wait_for_key("ssh/198.51.100.33").await;
    assert_eq!(inc["detections"], 1);
    let rules = d.get("/v1/rules").await;
    let ssh = rules["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "ssh")
        .unwrap()
        .clone();
    assert_eq!(
        (ssh["matched"].as_u64(), ssh["fired"].as_u64()),
        (Some(5), Some(1)),
        "{ssh}"
    );
}

#[tokio::test]
async fn periodic_checkpoints_survive_sigkill() {
    let mut d = TestDaemon::prepare("checkpoint_interval = \"100ms\"\n", SSH_RULE);
    d.wait_healthy().await;
    d.send_and_settle(
        &(0..4)
            .map(|_| failed_password("198.51.100.44"))
            .collect::<Vec<_>>(),
    )
    .await;
    // Wait for two more checkpoints (so one was taken after the four events), then kill
    // without a chance to save.
    let saved = |v: serde_json::Value| v["engine"]["checkpoints"].as_u64().unwrap();
    let before = saved(d.get("/v1/status").await);
    let deadline = Instant::now() + Duration::from_secs(20);
    while saved(d.get("/v1/status").await) < before + 2 {
        assert!(Instant::now() < deadline, "no checkpoints saved");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.kill9();
    d.restart().await;
    d.send_and_settle(&[failed_password("198.51.100.44")]).await;
    d.wait_for_key("ssh/198.51.100.44").await;
}

/// With an hour between timed checkpoints, the engine still checkpoints once
/// `checkpoint_detections` detections came since the last one: the idempotency ids kept
/// until a checkpoint covers them stay bounded while a backlog is read fast.
#[tokio::test]
async fn a_checkpoint_comes_after_checkpoint_detections_detections() {
    let d = TestDaemon::prepare(
        "checkpoint_interval = \"1h\"\ncheckpoint_detections = 3\n",
        SSH_RULE,
    );
    d.wait_healthy().await;
    let saved = |v: &serde_json::Value| v["engine"]["checkpoints"].as_u64().unwrap_or(0);
    // The interval's first tick comes at once: wait for it to be saved.
    let before = saved(&d.wait_status(|st| saved(st) > 0).await);
    // Five failures make one detection: 20 make four, one more than the three that call
    // for a checkpoint.
    d.send_and_settle(
        &(0..20)
            .map(|_| failed_password("198.51.100.45"))
            .collect::<Vec<_>>(),
    )
    .await;
    let status = d.wait_status(|st| saved(st) > before).await;
    assert!(
        status["engine"]["detections"].as_u64() >= Some(3),
        "{status}"
    );
}

/// SIGKILL at 20 random moments while a client raises a known set of external alerts and
/// acknowledges each incident, retrying every request until it is answered; after the last
/// restart each expected incident exists exactly once and every answered change is there.
#[tokio::test]
async fn sigkill_torture_with_external_alerts_and_acks() {
    use incidentd::cli::client::{Client, ClientError};
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    let mut x = seed;
    let mut rand = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    let mut d = TestDaemon::start("").await;
    let client = Client::new(d.run.join("control.sock"));
    // The client raises alerts until told to stop (after the last kill), at least 60.
    const KEYS: usize = 60;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop_worker = stop.clone();

    // Retries until answered; an answer of any kind ends the retries.
    async fn until_answered<T: serde::de::DeserializeOwned>(
        client: &Client,
        path: &str,
        body: serde_json::Value,
    ) -> Result<T, ClientError> {
        loop {
            match client.post::<T>(path, &body).await {
                Err(ClientError::Connect { .. } | ClientError::Http(_)) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                other => return other,
            }
        }
    }
    let worker = tokio::spawn(async move {
        let mut acked = Vec::new();
        for k in 0.. {
            if k >= KEYS && stop_worker.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            let key = format!("cron/job-{k}");
            let v: serde_json::Value = until_answered(
                &client,
                "/v1/alerts",
                json!({"key": key, "summary": format!("job {k} failed")}),
            )
            .await
            .expect("alert answered");
            let id = v["incident_id"].as_u64().expect("an incident");
            match until_answered::<serde_json::Value>(
                &client,
                &format!("/v1/incidents/{id}/ack"),
                json!({}),
            )
            .await
            {
                Ok(_) => {}
                // The first attempt was applied before a kill; its retry finds it done.
                Err(ClientError::Api {
                    status: 409,
                    message,
                    ..
                }) => {
                    assert!(message.contains("already acknowledged"), "{message}")
                }
                Err(e) => panic!("ack {id}: {e}"),
            }
            acked.push((key, id));
            // Paced, so the kills land among the requests.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        acked
    });
    let mut kills = 0;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(20 + rand(150))).await;
        if worker.is_finished() {
            break;
        }
        d.kill9();
        kills += 1;
        d.restart().await;
    }
    assert_eq!(
        kills, 20,
        "seed {seed}: the client finished before all kills"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("the client finished")
        .expect("client ran");
    let all = d.incidents("").await;
    let mut keys: Vec<&str> = all.iter().map(|i| i["key"].as_str().unwrap()).collect();
    keys.sort();
    let mut expected: Vec<String> = (0..acked.len())
        .map(|k| format!("alert/cron/job-{k}"))
        .collect();
    expected.sort();
    assert_eq!(
        keys,
        expected,
        "seed {seed}: each incident exactly once\n{}",
        d.log()
    );
    for (key, id) in acked {
        let inc = all
            .iter()
            .find(|i| i["key"] == format!("alert/{key}").as_str())
            .unwrap();
        assert_eq!(inc["id"], id, "seed {seed}: {inc}");
        assert_eq!(inc["status"], "acknowledged", "seed {seed}: {inc}");
    }
}

/// `incidentd store verify` finds a healthy store healthy, refuses a store in use, and names
/// each inconsistency after damage.
#[tokio::test]
async fn store_verify_checks_snapshots_log_and_indexes() {
    let mut d = TestDaemon::start("").await;
    for title in ["a", "b", "c"] {
        let v = d
            .post("/v1/incidents", json!({"title": title, "severity": "sev4"}))
            .await
            .unwrap();
        d.post(&format!("/v1/incidents/{}/ack", v["id"]), json!({}))
            .await
            .unwrap();
    }
    let verify = |state: &std::path::Path| {
        std::process::Command::new(BIN)
            .args(["store", "verify", "--state-dir"])
            .arg(state)
            .output()
            .unwrap()
    };
    let busy = verify(&d.state);
    assert_eq!(busy.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&busy.stderr).contains("in use"),
        "{busy:?}"
    );
    assert!(d.stop().success());

    let ok = verify(&d.state);
    let out = String::from_utf8_lossy(&ok.stdout).into_owned();
    assert!(ok.status.success(), "{out}");
    assert!(
        out.contains("OK (3 incidents, 6 timeline entries)"),
        "{out}"
    );

    // Damage: drop incident 2's status index entry and incident 3's last timeline entry.
    {
        let db = sled::open(&d.state).unwrap();
        let idx = db.open_tree("idx_status").unwrap();
        let key = idx
            .iter()
            .keys()
            .map(|k| k.unwrap())
            .find(|k| k[1..9] == 2u64.to_be_bytes())
            .unwrap();
        idx.remove(key).unwrap();
        let log = db.open_tree("incident_log").unwrap();
        let mut last = 3u64.to_be_bytes().to_vec();
        last.extend_from_slice(&1u64.to_be_bytes());
        assert!(log.remove(last).unwrap().is_some());
        db.flush().unwrap();
    }
    let bad = verify(&d.state);
    let out = String::from_utf8_lossy(&bad.stdout).into_owned();
    assert_eq!(bad.status.code(), Some(1), "{out}");
    assert!(
        out.contains("incident 2 is missing from the status index"),
        "{out}"
    );
    assert!(
        out.contains("incident 3: the snapshot counts 2 timeline entries, the log holds 1"),
        "{out}"
    );
    assert!(out.contains("2 problem(s)"), "{out}");
}

fn store_cmd(state: &std::path::Path, action: &str) -> (bool, String) {
    let out = std::process::Command::new(BIN)
        .args(["store", action, "--state-dir"])
        .arg(state)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Incidents through every kind of change, for the store tests.
async fn eventful(d: &TestDaemon) -> Vec<Value> {
    let lines: Vec<String> = (0..6).map(|_| failed_password("198.51.100.9")).collect();
    d.send_and_settle(&lines).await;
    let ssh = d.wait_for_key("ssh/198.51.100.9").await;
    let id = ssh["id"].clone();
    d.post(
        "/v1/silences",
        json!({"matchers": {"rule": "ssh"}, "duration": "1h", "comment": "pentest"}),
    )
    .await
    .unwrap();
    for (path, body) in [
        ("ack", json!({"note": "mine"})),
        ("notes", json!({"note": "blocked at the edge"})),
        ("tags", json!({"add": ["edge", "ssh"]})),
        ("assign", json!({"assignee": "alice"})),
        ("severity", json!({"severity": "sev1"})),
        ("resolve", json!({})),
        ("reopen", json!({"note": "again"})),
    ] {
        d.post(&format!("/v1/incidents/{id}/{path}"), body)
            .await
            .unwrap();
    }
    d.post(
        "/v1/alerts",
        json!({"key": "backup", "summary": "backup failed", "service": "db"}),
    )
    .await
    .unwrap();
    d.post(
        "/v1/incidents",
        json!({"title": "by hand", "labels": {"team": "ops"}}),
    )
    .await
    .unwrap();
    d.incidents("").await
}

/// Past `timeline_detections`, detections joining an incident are folded into entries that
/// stand for many (a flood cannot grow the store by the detection), and the log still
/// replays exactly to the snapshot: `store verify` passes with a fold pending, with a note
/// and an acknowledgement among the folded detections, and with evidence kept throughout.
#[tokio::test]
async fn a_flood_of_detections_folds_and_the_log_still_replays_exactly() {
    let mut d = TestDaemon::prepare(
        "[incidents]\ntimeline_detections = 3\nevidence_samples = 4\n",
        SSH_RULE,
    );
    d.wait_healthy().await;
    // Each failure with a user of its own, so that evidence kept wrongly shows; the later
    // ones name a service.
    let fail = |from: usize, n: usize, service: &str| {
        (from..from + n)
            .map(|i| {
                format!(
                    r#"{{"kind":"log",{service}"message":"Failed password for u{i} from 198.51.100.77 port 22 ssh2"}}"#
                )
            })
            .collect::<Vec<_>>()
    };
    // Five failures make one detection: 24 detections (3 entries of their own, then folds
    // of 3, 6 and 12, none pending), a note and an ack, then 16 more with a service: the
    // first brings the incident that service, so it gets an entry of its own (a fold never
    // changes the incident's lists), and the other 15 fold.
    d.send_and_settle(&fail(0, 120, "")).await;
    let inc = d.wait_for_key("ssh/198.51.100.77").await;
    let id = inc["id"].clone();
    d.post(
        &format!("/v1/incidents/{id}/notes"),
        json!({"note": "mid-flood"}),
    )
    .await
    .unwrap();
    d.post(&format!("/v1/incidents/{id}/ack"), json!({}))
        .await
        .unwrap();
    d.send_and_settle(&fail(120, 80, r#""service":"sshd","#))
        .await;
    // Another incident merged into it (a service and a detection more): the fold is
    // written first.
    let other = d
        .alert(json!({"key": "backup", "summary": "backup failed", "service": "db"}))
        .await;
    d.post(&format!("/v1/incidents/{other}/merge"), json!({"into": id}))
        .await
        .unwrap();
    // Five more, left pending.
    d.send_and_settle(&fail(200, 25, r#""service":"sshd","#))
        .await;
    let inc = d.get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(
        inc["detections"], 46,
        "45 and the merged incident's one: {inc}"
    );
    assert_eq!(inc["services"], json!(["sshd", "db"]), "{inc}");
    assert_eq!(inc["evidence"].as_array().map(Vec::len), Some(4), "{inc}");
    let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    let entries = tl["timeline"].as_array().cloned().unwrap_or_default();
    let detections: Vec<&Value> = entries
        .iter()
        .filter(|e| e["type"] == "detection")
        .collect();
    let logged: u64 = detections
        .iter()
        .map(|e| e["data"]["detections"].as_u64().unwrap_or(1))
        .sum();
    let pending = inc["folded"]["detections"].as_u64().unwrap_or(0);
    // Three of their own, then folds of 3, 6 and 12 (each as many as the log held), one of
    // its own (a new service), a fold of 15 written before the merge; the last five pending.
    assert_eq!(detections.len(), 8, "{entries:#?}");
    assert_eq!((logged, pending), (40, 5), "{inc}");
    let pm = String::from_utf8_lossy(&d.ctl(&["postmortem", &id.to_string()]).stdout).into_owned();
    assert!(pm.contains("`ssh`: 12 detections, the last: "), "{pm}");
    assert!(pm.contains("`ssh`: 15 detections, the last: "), "{pm}");
    let shown = String::from_utf8_lossy(&d.ctl(&["timeline", &id.to_string()]).stdout).into_owned();
    assert!(shown.contains("12 detections, the last: "), "{shown}");
    assert!(
        pm.contains("`ssh`: 5 detections not yet in the timeline, the last: "),
        "{pm}"
    );
    assert!(d.stop().success());
    let (ok, out) = store_cmd(&d.state, "verify");
    assert!(
        ok,
        "the log and the pending fold replay to the snapshot: {out}"
    );
    let (ok, out) = store_cmd(&d.state, "rebuild");
    assert!(ok && out.contains("0 snapshot(s) changed"), "{out}");
}

/// Two rules feeding one incident (a shared `incident_key`) in turn still fold together,
/// each counted in `by_rule`, and the log replays exactly.
#[tokio::test]
async fn detections_of_two_rules_in_turn_fold_together() {
    let rules: String = ["a", "b"]
        .map(|id| {
            format!(
                r#"
[[rule]]
id = "{id}"
kind = "threshold"
severity = "low"
threshold = 1
window = "1m"
where = {{ kind = "log", message = {{ regex = "^{id} " }} }}
group_by = ["host"]
incident_key = "shared/{{{{ group.host }}}}"
"#
            )
        })
        .concat();
    let mut d = TestDaemon::prepare("[incidents]\ntimeline_detections = 3\n", &rules);
    d.wait_healthy().await;
    let lines: Vec<String> = (0..40)
        .map(|i| {
            let rule = if i % 2 == 0 { "a" } else { "b" };
            format!(r#"{{"kind":"log","host":"h1","message":"{rule} {i}"}}"#)
        })
        .collect();
    d.send_and_settle(&lines).await;
    let inc = d.wait_for_key("shared/h1").await;
    assert_eq!(inc["detections"], 40, "{inc}");
    let id = inc["id"].clone();
    let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    let entries = tl["timeline"].as_array().cloned().unwrap_or_default();
    let mut per_rule = std::collections::BTreeMap::<String, u64>::new();
    let mut count = |d: &Value, n: u64| match d["by_rule"].as_object() {
        Some(m) => m
            .iter()
            .for_each(|(r, k)| *per_rule.entry(r.clone()).or_default() += k.as_u64().unwrap_or(0)),
        None => {
            *per_rule
                .entry(d["rule"].as_str().unwrap_or("?").into())
                .or_default() += n
        }
    };
    let detections: Vec<&Value> = entries
        .iter()
        .filter(|e| e["type"] == "detection")
        .collect();
    for e in &detections {
        count(&e["data"], e["data"]["detections"].as_u64().unwrap_or(1));
    }
    if let Some(f) = inc["folded"].as_object() {
        count(&f["facts"], f["detections"].as_u64().unwrap_or(0));
    }
    assert!(detections.len() <= 8, "{entries:#?}");
    assert_eq!(per_rule.get("a"), Some(&20), "{per_rule:?}");
    assert_eq!(per_rule.get("b"), Some(&20), "{per_rule:?}");
    assert!(d.stop().success());
    let (ok, out) = store_cmd(&d.state, "verify");
    assert!(ok, "{out}");
}

/// `incidentd store rebuild` brings damaged snapshots and indexes back from the log, and
/// `store verify` checks each snapshot against what its log replays to.
#[tokio::test]
async fn store_rebuild_restores_snapshots_and_indexes_from_the_log() {
    let mut d = TestDaemon::start(SSH_RULE).await;
    let before = eventful(&d).await;
    assert!(d.stop().success());
    let (ok, out) = store_cmd(&d.state, "verify");
    assert!(ok, "a healthy store replays exactly: {out}");

    // Damage: a snapshot rewritten by hand, and the key, status and change indexes emptied.
    {
        let db = sled::open(&d.state).unwrap();
        let incidents = db.open_tree("incidents").unwrap();
        let key = 1u64.to_be_bytes();
        let raw = incidents.get(key).unwrap().unwrap();
        let mut inc: Value = serde_json::from_slice(&plain_record(&raw)[1..]).unwrap();
        inc["title"] = json!("tampered");
        inc["status"] = json!("closed");
        let mut rec = vec![1u8];
        rec.extend(serde_json::to_vec(&inc).unwrap());
        incidents.insert(key, rec).unwrap();
        for t in ["idx_key", "idx_status", "changes"] {
            db.open_tree(t).unwrap().clear().unwrap();
        }
        db.flush().unwrap();
    }
    let (ok, out) = store_cmd(&d.state, "verify");
    assert!(!ok);
    assert!(
        out.contains(
            "incident 1: the snapshot differs from what its log replays to in: status, title"
        ),
        "{out}"
    );
    assert!(out.contains("missing from the status index"), "{out}");

    let (ok, out) = store_cmd(&d.state, "rebuild");
    assert!(ok, "{out}");
    assert!(out.contains("1 snapshot(s) changed"), "{out}");
    let (ok, out) = store_cmd(&d.state, "verify");
    assert!(ok, "{out}");

    d.restart().await;
    assert_eq!(
        stored(d.incidents("").await),
        stored(before),
        "rebuilt snapshots equal the originals"
    );
    // The key index works again: the same alert joins its incident.
    let again = d
        .post(
            "/v1/alerts",
            json!({"key": "backup", "summary": "backup failed", "service": "db"}),
        )
        .await
        .unwrap();
    assert_eq!(again["deduplicated"], true, "{again}");
    // And the change index: the stream replays every entry.
    let mut s = d.client.stream("/v1/stream?after=0", None).await.unwrap();
    let mut n = 0;
    while let Ok(Ok(Some(m))) =
        tokio::time::timeout(std::time::Duration::from_millis(500), s.next()).await
    {
        if m.event != "ready" {
            n += 1;
        }
    }
    let total: u64 = d
        .incidents("")
        .await
        .iter()
        .map(|i| i["timeline_len"].as_u64().unwrap())
        .sum();
    assert_eq!(n, total);
}

/// A schema 1 store (no change numbers, `created` entries without the starting incident) is
/// migrated at open: verify passes against baselines, the stream numbers the old entries in
/// time order, and new changes continue after them.
#[tokio::test]
async fn a_schema_1_store_is_migrated_at_open() {
    let mut d = TestDaemon::start(SSH_RULE).await;
    let before = eventful(&d).await;
    assert!(d.stop().success());
    // Turn it into what version 1 wrote.
    {
        let db = sled::open(&d.state).unwrap();
        let log = db.open_tree("incident_log").unwrap();
        let compressed = log
            .iter()
            .filter(|kv| kv.as_ref().unwrap().1[0] == 3)
            .count();
        assert!(compressed > 0, "schema 4 stores long records compressed");
        for kv in log.iter() {
            let (_, v) = kv.unwrap();
            // Version 1 wrote one key per entry: a pack (record version 2) goes apart.
            let body: Value = serde_json::from_slice(&plain_record(&v)[1..]).unwrap();
            let entries = match body {
                Value::Array(a) => a,
                one => vec![one],
            };
            for mut e in entries {
                e.as_object_mut().unwrap().remove("change");
                if let Some(data) = e["data"].as_object_mut() {
                    data.remove("incident");
                }
                let mut key = e["incident_id"].as_u64().unwrap().to_be_bytes().to_vec();
                key.extend(e["seq"].as_u64().unwrap().to_be_bytes());
                let mut rec = vec![1u8];
                rec.extend(serde_json::to_vec(&e).unwrap());
                log.insert(key, rec).unwrap();
            }
        }
        db.open_tree("changes").unwrap().clear().unwrap();
        let meta = db.open_tree("meta").unwrap();
        meta.remove("next_change").unwrap();
        meta.insert("schema_version", &1u64.to_be_bytes()).unwrap();
        db.flush().unwrap();
    }
    d.restart().await;
    assert!(
        d.log()
            .contains("migrated the state store from schema 1 to 2")
    );
    assert_eq!(stored(d.incidents("").await), stored(before));
    let mut s = d.client.stream("/v1/stream?after=0", None).await.unwrap();
    let mut last_ts = String::new();
    let mut numbered = 0;
    while let Ok(Ok(Some(m))) =
        tokio::time::timeout(std::time::Duration::from_millis(500), s.next()).await
    {
        if m.event == "ready" {
            continue;
        }
        let v: Value = serde_json::from_str(&m.data).unwrap();
        let ts = v["entry"]["ts"].as_str().unwrap().to_owned();
        assert!(ts >= last_ts, "old entries are numbered in time order");
        last_ts = ts;
        numbered += 1;
    }
    assert!(numbered > 10, "{numbered}");
    let new = d
        .post("/v1/incidents", json!({"title": "after"}))
        .await
        .unwrap();
    let tl = d
        .get(&format!("/v1/incidents/{}/timeline", new["id"]))
        .await;
    assert_eq!(tl["timeline"][0]["change"], numbered + 1);
    assert!(d.stop().success());
    let (ok, out) = store_cmd(&d.state, "verify");
    assert!(ok, "{out}");
}

/// A stored record as written before schema 4: a compressed one (version 3: its length,
/// little-endian, and one LZ4 block) unpacked.
fn plain_record(raw: &[u8]) -> Vec<u8> {
    match raw.split_first() {
        Some((3, rest)) => {
            let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            lz4_flex::block::decompress(&rest[4..], len).unwrap()
        }
        _ => raw.to_vec(),
    }
}

/// Incidents as stored: an SLA's `left_seconds` is counted from the clock when it is read,
/// so two reads around a restart may fall in different seconds.
fn stored(mut list: Vec<serde_json::Value>) -> Vec<serde_json::Value> {
    for inc in &mut list {
        if let Some(sla) = inc.get_mut("sla").and_then(|s| s.as_object_mut()) {
            for clock in sla.values_mut() {
                if let Some(c) = clock.as_object_mut() {
                    c.remove("left_seconds");
                }
            }
        }
    }
    list
}
