//! incidentctl against a running daemon: tables, JSON, exit codes, messages.

use crate::util::*;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `send` of a file larger than one request: sent in parts of whole lines, with every event
/// accepted, the rejections numbered as lines of the file (across parts and files), a line
/// longer than a part refused without being held, and a JSON array still sent whole.
#[tokio::test]
async fn send_splits_a_large_input_and_numbers_lines_across_the_parts() {
    let d = TestDaemon::start(SSH_RULE).await;
    let events = d.path("many.ndjson");
    let mut text = String::new();
    let mut bad = Vec::new();
    for i in 1..=40_000u64 {
        if i % 9_999 == 0 {
            text.push_str("{not json\n");
            bad.push(i);
        } else if i == 30_001 {
            // Would make its part one JSON array if sent.
            text.push_str("  [\"x\"]\n");
            bad.push(i);
        } else if i == 20_000 {
            text.push_str(&format!(
                "{{\"kind\":\"log\",\"message\":\"{}\"}}\n",
                "x".repeat(2 << 20)
            ));
            bad.push(i);
        } else {
            text.push_str(&format!(
                "{{\"kind\":\"log\",\"message\":\"event {i} padding padding padding\"}}\n"
            ));
        }
    }
    std::fs::write(&events, &text).unwrap();
    assert!(text.len() > 4 << 20);
    let second = d.path("more.ndjson");
    std::fs::write(&second, "{\"kind\":\"log\"}\n{bad\n").unwrap();
    bad.push(40_002);
    let out = d.ctl(&[
        "send",
        events.to_str().unwrap(),
        second.to_str().unwrap(),
        "-o",
        "json",
    ]);
    assert!(!out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["accepted"], 40_002 - bad.len() as u64, "{v}");
    assert_eq!(v["rejected_total"], bad.len() as u64, "{v}");
    let lines: Vec<u64> = v["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, bad, "{v}");
    assert!(stderr(&out).contains(&format!("{} line(s) rejected", bad.len())));
    let array = d.path("array.json");
    std::fs::write(
        &array,
        r#"[{"kind":"log","message":"a"},{"message":"no kind"}]"#,
    )
    .unwrap();
    let out = d.ctl(&["send", array.to_str().unwrap()]);
    assert_eq!(stdout(&out).trim(), "accepted 1");
    assert!(stderr(&out).contains("line 2: "), "{}", stderr(&out));
}

#[tokio::test]
async fn the_whole_path_through_incidentctl() {
    let d = TestDaemon::start(SSH_RULE).await;
    let events = d.path("events.ndjson");
    let lines: Vec<String> = (0..5).map(|_| failed_password("203.0.113.7")).collect();
    std::fs::write(&events, lines.join("\n")).unwrap();
    let sent = d.ctl(&["send", events.to_str().unwrap()]);
    assert!(sent.status.success(), "{}", stderr(&sent));
    assert_eq!(stdout(&sent).trim(), "accepted 5");
    let inc = d.wait_for_key("ssh/203.0.113.7").await;
    let id = inc["id"].to_string();

    let list = d.ctl(&["list"]);
    assert!(list.status.success());
    let text = stdout(&list);
    assert!(text.starts_with("ID  SEV   STATUS"), "{text}");
    assert!(text.contains("sev2  open"), "{text}");

    let json = d.ctl(&["list", "-o", "json", "--status", "open"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["incidents"][0]["key"], "ssh/203.0.113.7");

    let ack = d.ctl(&["ack", &id, "-m", "looking"]);
    assert!(ack.status.success(), "{}", stderr(&ack));
    assert_eq!(
        stdout(&ack).trim(),
        format!("incident {id} is now acknowledged")
    );
    let again = d.ctl(&["ack", &id]);
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        stderr(&again).trim(),
        format!("incidentctl: incident {id} is already acknowledged")
    );

    for verb in ["mitigate", "resolve", "reopen", "cancel"] {
        let o = d.ctl(&[verb, &id]);
        assert!(o.status.success(), "{verb}: {}", stderr(&o));
    }
    let show = d.ctl(&["show", &id]);
    assert!(
        stdout(&show).contains("status        cancelled"),
        "{}",
        stdout(&show)
    );
    let tl = d.ctl(&["timeline", &id]);
    let tl_text = stdout(&tl);
    assert!(
        tl_text.contains("open → acknowledged: looking"),
        "{tl_text}"
    );
    // Header and rule, created and detection, five changes, and what resolving did: the
    // stage moved and the post-mortem draft stored.
    assert_eq!(tl_text.lines().count(), 1 + 2 + 5 + 2);
    assert!(
        tl_text.contains("stage assess → recover: resolved"),
        "{tl_text}"
    );

    let note = d.ctl(&["note", &id, "false", "alarm"]);
    assert!(note.status.success());
    let tl_json = d.ctl(&["timeline", &id, "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&tl_json.stdout).unwrap();
    assert_eq!(
        v["timeline"].as_array().unwrap().last().unwrap()["note"],
        "false alarm"
    );

    let rules = d.ctl(&["rules", "list"]);
    assert!(
        stdout(&rules).contains("ssh     threshold  sev2"),
        "{}",
        stdout(&rules)
    );
    let status = d.ctl(&["status"]);
    assert!(
        stdout(&status).contains("source ingest"),
        "{}",
        stdout(&status)
    );

    let missing = d.ctl(&["show", "4242"]);
    assert_eq!(missing.status.code(), Some(1));
    assert_eq!(
        stderr(&missing).trim(),
        "incidentctl: incident 4242 not found"
    );
}

#[test]
fn usage_errors_exit_2_and_an_absent_daemon_is_explained() {
    let usage = std::process::Command::new(CTL)
        .args(["ack"])
        .output()
        .unwrap();
    assert_eq!(usage.status.code(), Some(2));
    let absent = std::process::Command::new(CTL)
        .args(["--socket", "/nonexistent/incidentd.sock", "list"])
        .output()
        .unwrap();
    assert_eq!(absent.status.code(), Some(1));
    let err = stderr(&absent);
    assert!(
        err.contains("cannot reach incidentd at /nonexistent/incidentd.sock"),
        "{err}"
    );
    assert!(err.contains("is the daemon running?"), "{err}");
}

#[test]
fn rules_check_runs_without_a_daemon() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/etc/incidentd.toml");
    let ok = std::process::Command::new(CTL)
        .args(["rules", "check", shipped])
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(stdout(&ok).contains("OK (19 rules)"));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("x.toml");
    std::fs::write(
        &bad,
        "[[rule]]\nid = \"a\"\nkind = \"threshold\"\nthreshold = 3\n",
    )
    .unwrap();
    let o = std::process::Command::new(CTL)
        .args(["rules", "check", bad.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("missing field `window`"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test]
async fn severity_tags_and_assignment() {
    let d = TestDaemon::start("").await;
    let made = d
        .post(
            "/v1/incidents",
            serde_json::json!({"title": "queue backlog", "severity": "sev3"}),
        )
        .await
        .unwrap();
    let id = made["id"].to_string();

    let sev = d.ctl(&["severity", &id, "high", "-m", "customers affected"]);
    assert!(sev.status.success(), "{}", stderr(&sev));
    assert_eq!(stdout(&sev).trim(), format!("incident {id} is now sev2"));
    let again = d.ctl(&["severity", &id, "sev2"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("already sev2"),
        "{}",
        stderr(&again)
    );

    let tag = d.ctl(&["tag", &id, "db", "urgent"]);
    assert!(tag.status.success(), "{}", stderr(&tag));
    let untag = d.ctl(&["tag", &id, "--remove", "urgent", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&untag.stdout).unwrap();
    assert_eq!(v["tags"], serde_json::json!(["db"]));
    let bad = d.ctl(&["tag", &id, "two words"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(stderr(&bad).contains("without spaces"), "{}", stderr(&bad));

    let assign = d.ctl(&["assign", &id, "alice"]);
    assert_eq!(
        stdout(&assign).trim(),
        format!("incident {id} is assigned to alice")
    );
    let clear = d.ctl(&["assign", &id, "--clear"]);
    assert_eq!(
        stdout(&clear).trim(),
        format!("incident {id} is unassigned")
    );
    let missing = d.ctl(&["assign", "999", "bob"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("incident 999 not found"),
        "{}",
        stderr(&missing)
    );

    let timeline = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    let kinds: Vec<&str> = timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "severity_changed",
            "tag",
            "tag",
            "assigned",
            "assigned"
        ],
        "{timeline}"
    );
    assert_eq!(timeline["timeline"][1]["note"], "customers affected");
}

#[test]
fn completions_and_the_manual_page_come_from_the_same_definition() {
    let run = |args: &[&str]| {
        std::process::Command::new(CTL)
            .args(args)
            .output()
            .expect("run incidentctl")
    };
    let bash = run(&["completions", "bash"]);
    assert!(bash.status.success());
    let text = stdout(&bash);
    assert!(
        text.contains("_incidentctl()") && text.contains("severity"),
        "{text}"
    );
    let fish = run(&["completions", "fish"]);
    assert!(stdout(&fish).contains("complete -c incidentctl"));
    let man = run(&["man"]);
    let page = stdout(&man);
    assert!(
        page.contains(".TH incidentctl 1") && page.contains("completions"),
        "{page}"
    );
    let bad = run(&["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
}

/// `POST /v1/alerts` and `incidentctl alert`: created, deduplicated, then (after a resolve,
/// outside the reopen window) refused by the per-key rate limit; every answer after the
/// change is durable.
#[tokio::test]
async fn external_alerts_create_deduplicate_and_are_rate_limited() {
    let d = TestDaemon::prepare(
        "[incidents]\nrate_limit = { max = 1, per = \"1h\" }\nreopen_window = \"0s\"\n",
        "",
    );
    d.wait_healthy().await;
    let first = d.ctl(&[
        "alert",
        "backup/db1",
        "nightly",
        "backup",
        "failed",
        "--severity",
        "high",
        "--label",
        "job=pgdump",
    ]);
    // A sev2 ("high") alert: exit 1, the verdict a CI job fails on.
    assert_eq!(first.status.code(), Some(1), "{}", stderr(&first));
    let out = stdout(&first);
    assert!(out.starts_with("backup/db1: created incident "), "{out}");
    let id = out.trim().rsplit(' ').next().unwrap().to_owned();

    let (status, again) = d
        .raw(
            hyper::Method::POST,
            "/v1/alerts",
            br#"{"key":"backup/db1","summary":"still failing"}"#,
        )
        .await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["deduplicated"], true);
    assert_eq!(again["incident_id"].to_string(), id);
    let inc = d.get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(
        (inc["severity"].as_str(), inc["detections"].as_u64()),
        (Some("sev2"), Some(2))
    );
    assert_eq!(inc["labels"]["job"], "pgdump");
    assert_eq!(
        inc["key"], "alert/backup/db1",
        "alerts have keys of their own"
    );

    assert!(d.ctl(&["resolve", &id]).status.success());
    let limited = d.ctl(&["alert", "backup/db1", "failed", "again"]);
    assert!(limited.status.success(), "{}", stderr(&limited));
    assert!(
        stdout(&limited).starts_with("backup/db1: rate limited"),
        "{}",
        stdout(&limited)
    );

    let (status, bad) = d
        .raw(hyper::Method::POST, "/v1/alerts", br#"{"key":"k"}"#)
        .await;
    assert_eq!(status, 400, "{bad}");
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .contains("summary"),
        "{bad}"
    );
}

/// The gate bridge: `incidentctl alert` exits 0 for sev3 or milder, 1 for sev1/sev2, 2 for
/// sev3 with --fail-on-warning; `--file` sends a batch answered alert by alert (a bad line
/// refuses the file before anything is sent); a resolved alert (or one whose `ends_at` has
/// passed) resolves its key's incident, idempotently; `POST /v1/alerts` takes an array.
#[tokio::test]
async fn the_gate_bridge_exit_codes_batches_and_resolved_alerts() {
    let d = TestDaemon::start("").await;
    let code = |args: &[&str]| {
        let o = d.ctl(args);
        (o.status.code(), stdout(&o), stderr(&o))
    };
    let (c, out, _) = code(&["alert", "lint/web", "3", "warnings", "--severity", "sev3"]);
    assert_eq!(c, Some(0), "{out}");
    let (c, _, _) = code(&["alert", "lint/web", "3", "warnings", "--fail-on-warning"]);
    assert_eq!(c, Some(2));
    let (c, _, _) = code(&[
        "alert",
        "lint/api",
        "style",
        "--severity",
        "low",
        "--fail-on-warning",
    ]);
    assert_eq!(c, Some(0), "sev4 passes even with --fail-on-warning");
    let (c, out, _) = code(&[
        "alert",
        "vuln/openssl",
        "CVE",
        "found",
        "--severity",
        "critical",
    ]);
    assert_eq!(c, Some(1), "{out}");
    let id = out.trim().rsplit(' ').next().unwrap().to_owned();

    // Resolving, twice: the second finds nothing to do.
    let (c, out, _) = code(&["alert", "vuln/openssl", "--resolve"]);
    assert_eq!(c, Some(0), "{out}");
    assert_eq!(out.trim(), format!("vuln/openssl: resolved incident {id}"));
    assert_eq!(
        d.get(&format!("/v1/incidents/{id}")).await["status"],
        "resolved"
    );
    let (c, out, _) = code(&["alert", "vuln/openssl", "--resolve"]);
    assert_eq!(
        (c, out.trim()),
        (Some(0), "vuln/openssl: no active incident to resolve")
    );

    // A batch from a file: answered one by one; the worst severity decides.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("alerts.ndjson");
    std::fs::write(
        &file,
        concat!(
            r#"{"key":"scan/a","summary":"minor","severity":"sev4"}"#,
            "\n",
            "\n",
            r#"{"key":"scan/b","summary":"bad","severity":"sev2","labels":{"tool":"trivy"}}"#,
            "\n",
            r#"{"key":"lint/web","status":"resolved"}"#,
            "\n",
        ),
    )
    .unwrap();
    let (c, out, err) = code(&["alert", "--file", file.to_str().unwrap()]);
    assert_eq!(c, Some(1), "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("scan/a: created incident"), "{out}");
    assert!(lines[1].starts_with("scan/b: created incident"), "{out}");
    assert!(lines[2].starts_with("lint/web: resolved incident"), "{out}");
    // A bad line: refused with its line number, nothing sent.
    let before = d.incidents("").await.len();
    std::fs::write(&file, "{\"key\":\"x/1\",\"summary\":\"s\"}\nnot json\n").unwrap();
    let (c, _, err) = code(&["alert", "--file", file.to_str().unwrap()]);
    assert_eq!(c, Some(3), "a failure is 3, apart from the verdicts");
    assert!(err.contains("alerts.ndjson:2: not JSON"), "{err}");
    assert_eq!(d.incidents("").await.len(), before, "nothing was sent");
    let unreachable = std::process::Command::new(CTL)
        .args([
            "--socket",
            "/nonexistent/x.sock",
            "alert",
            "k",
            "s",
            "--severity",
            "sev1",
        ])
        .output()
        .unwrap();
    assert_eq!(unreachable.status.code(), Some(3));
    // -o json of one alert: its answer as it was before batches.
    let one = d.ctl(&["-o", "json", "alert", "json/one", "s"]);
    let v: serde_json::Value = serde_json::from_slice(&one.stdout).unwrap();
    assert_eq!(v["created"], true, "{v}");

    // The API: an array, a bad alert among good ones, and an end in the past.
    let (status, v) = d
        .raw(
            hyper::Method::POST,
            "/v1/alerts",
            br#"[{"key":"api/1","summary":"one"},{"key":"api/2","summary":"two","severity":"sev9"},{"key":"scan/b","ends_at":"2026-01-01T00:00:00Z"}]"#,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let a = v["alerts"].as_array().unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(a[0]["created"], true, "{v}");
    assert!(
        a[1]["error"].as_str().unwrap().contains("invalid alert"),
        "{v}"
    );
    assert_eq!(a[2]["resolved"], true, "{v}");
    let scan_b = a[2]["incident_id"].to_string();
    assert_eq!(
        d.get(&format!("/v1/incidents/{scan_b}")).await["status"],
        "resolved"
    );
}

#[tokio::test]
async fn related_incidents_share_a_key_or_a_service() {
    let d = TestDaemon::start("").await;
    let mut ids = Vec::new();
    for (key, service) in [("k1", "api"), ("k1", "web"), ("k9", "api"), ("k7", "db")] {
        let v = d
            .post(
                "/v1/incidents",
                serde_json::json!({"title": format!("{key} on {service}"), "severity": "sev3", "key": key, "service": service}),
            )
            .await
            .unwrap();
        ids.push(v["id"].as_u64().unwrap());
    }
    let v = d.get(&format!("/v1/incidents/{}/related", ids[0])).await;
    let got: Vec<(u64, Vec<String>)> = v["related"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["incident"]["id"].as_u64().unwrap(),
                serde_json::from_value(r["why"].clone()).unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (ids[2], vec!["service".to_owned()]),
            (ids[1], vec!["key".to_owned()])
        ],
        "{v}"
    );
    let text = d.ctl(&["related", &ids[0].to_string()]);
    assert!(
        stdout(&text).contains(&format!("{}: shares key", ids[1])),
        "{}",
        stdout(&text)
    );
    let none = d.ctl(&["related", &ids[3].to_string()]);
    assert!(
        stdout(&none).starts_with("no incident shares"),
        "{}",
        stdout(&none)
    );
    let missing = d.ctl(&["related", "999"]);
    assert_eq!(missing.status.code(), Some(1));
}

#[tokio::test]
async fn stats_count_and_time_the_lifecycle() {
    let d = TestDaemon::start(SSH_RULE).await;
    let mut ids = Vec::new();
    for (sev, service) in [("sev2", "api"), ("sev3", "db"), ("sev2", "api")] {
        let v = d
            .post(
                "/v1/incidents",
                serde_json::json!({"title": "t", "severity": sev, "service": service}),
            )
            .await
            .unwrap();
        ids.push(v["id"].to_string());
    }
    for args in [
        vec!["ack", &ids[0]],
        vec!["resolve", &ids[0]],
        vec!["cancel", &ids[1]],
        vec!["ack", &ids[2]],
    ] {
        assert!(d.ctl(&args).status.success(), "{args:?}");
    }
    d.send_and_settle(
        &(0..5)
            .map(|_| failed_password("203.0.113.5"))
            .collect::<Vec<_>>(),
    )
    .await;
    let v = d.get("/v1/stats").await;
    // Three by hand, the SSH one, and the settle marker.
    assert_eq!(v["incidents"], 5, "{v}");
    assert_eq!(v["by_status"]["cancelled"], 1);
    assert_eq!(v["by_status"]["resolved"], 1);
    assert_eq!(v["by_status"]["acknowledged"], 1);
    assert_eq!(v["cancelled_share"], 0.2);
    assert_eq!(v["times"]["mtta"]["count"], 2);
    assert_eq!(v["times"]["mttr"]["count"], 1);
    assert_eq!(v["times_by_service"]["api"]["mtta"]["count"], 2);
    assert!(v["times"]["mttd"]["p90"].as_f64().unwrap() >= 0.0);
    assert_eq!(v["incidents_by_rule"]["ssh"], 1);
    let ssh = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "ssh")
        .unwrap();
    assert_eq!(ssh["fired"], 1);
    let text = d.ctl(&["stats"]);
    let out = stdout(&text);
    assert!(out.contains("cancelled   20.0% (false positives)"), "{out}");
    assert!(out.contains("time to acknowledge"), "{out}");
    let (status, bad) = d
        .raw(hyper::Method::GET, "/v1/stats?since=soonish", b"")
        .await;
    assert_eq!(status, 400, "{bad}");
}

#[tokio::test]
async fn a_postmortem_draft_in_markdown() {
    let d = TestDaemon::start(SSH_RULE).await;
    d.send_and_settle(
        &(0..5)
            .map(|_| failed_password("203.0.113.8"))
            .collect::<Vec<_>>(),
    )
    .await;
    let inc = d.wait_for_key("ssh/203.0.113.8").await;
    let id = inc["id"].to_string();
    assert!(
        d.ctl(&["ack", &id, "-m", "blocking | the address"])
            .status
            .success()
    );
    assert!(d.ctl(&["resolve", &id]).status.success());
    let out = d.ctl(&["postmortem", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    let md = stdout(&out);
    for want in [
        &format!("# Post-mortem: incident {id} — "),
        "## Summary",
        "## Impact",
        "- Duration: ",
        "## Timeline",
        "| time | what | who | details |",
        "blocking \\| the address",
        "## Detections and evidence",
        "`ssh`",
        "last event: `Failed password for root from 203.0.113.8 port 22 ssh2`",
        "## Root cause",
        "## Actions and their results",
        "## Notifications",
        "- Time to acknowledge: ",
        "- Time to resolve: ",
        "## Lessons learned",
        "## Follow-ups",
    ] {
        assert!(md.contains(want), "no {want:?} in\n{md}");
    }
    let missing = d.ctl(&["postmortem", "999"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        stderr(&missing).contains("incident 999 not found"),
        "{}",
        stderr(&missing)
    );
}

#[tokio::test]
async fn export_writes_the_incident_log_as_ndjson() {
    let d = TestDaemon::start("").await;
    for title in ["one", "two"] {
        let v = d
            .post(
                "/v1/incidents",
                serde_json::json!({"title": title, "severity": "sev4"}),
            )
            .await
            .unwrap();
        assert!(d.ctl(&["ack", &v["id"].to_string()]).status.success());
    }
    let out = d.ctl(&["export"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let entries: Vec<serde_json::Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let order: Vec<(u64, u64, &str)> = entries
        .iter()
        .map(|e| {
            (
                e["incident_id"].as_u64().unwrap(),
                e["seq"].as_u64().unwrap(),
                e["type"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        order,
        [
            (1, 0, "created"),
            (1, 1, "status_changed"),
            (2, 0, "created"),
            (2, 1, "status_changed")
        ]
    );
    let file = d.path("log.ndjson");
    let to = d.ctl(&["export", "--to", file.to_str().unwrap()]);
    assert!(
        stderr(&to).contains("wrote 4 timeline entries"),
        "{}",
        stderr(&to)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), stdout(&out));
}

/// Severity is coloured on a terminal (a real pseudo-terminal from util-linux `script`),
/// and not with NO_COLOR set or through a pipe.
#[tokio::test]
async fn severity_in_colour_on_a_terminal_only() {
    assert!(
        std::process::Command::new("script")
            .arg("--version")
            .output()
            .is_ok(),
        "util-linux `script` is missing: apt-get install bsdutils"
    );
    let d = TestDaemon::start("").await;
    d.post(
        "/v1/incidents",
        serde_json::json!({"title": "hot", "severity": "sev1"}),
    )
    .await
    .unwrap();
    let on_tty = |no_color: bool| {
        let mut c = std::process::Command::new("script");
        c.args(["-qec", &format!("{CTL} list"), "/dev/null"])
            .env("INCIDENTD_SOCKET", d.run.join("control.sock"))
            .env_remove("NO_COLOR");
        if no_color {
            c.env("NO_COLOR", "1");
        }
        String::from_utf8_lossy(&c.output().unwrap().stdout).into_owned()
    };
    assert!(
        on_tty(false).contains("\x1b[1;31msev1\x1b[0m"),
        "{:?}",
        on_tty(false)
    );
    assert!(!on_tty(true).contains('\x1b'), "{:?}", on_tty(true));
    let piped = d.ctl(&["list"]);
    assert!(!stdout(&piped).contains('\x1b'));
}

/// Cursor pagination while incidents are being created: no incident twice, and none of those
/// that existed when paging began is missed (new ones, with higher ids, start the next scan).
#[tokio::test]
async fn pagination_has_no_duplicates_or_gaps_under_concurrent_inserts() {
    let d = TestDaemon::start("").await;
    for i in 0..40 {
        d.post(
            "/v1/incidents",
            serde_json::json!({"title": format!("t{i}"), "severity": "sev4"}),
        )
        .await
        .unwrap();
    }
    let client = incidentd::cli::client::Client::new(d.run.join("control.sock"));
    let writer = tokio::spawn(async move {
        for i in 0..40 {
            let _: serde_json::Value = client
                .post(
                    "/v1/incidents",
                    &serde_json::json!({"title": format!("new{i}"), "severity": "sev4"}),
                )
                .await
                .unwrap();
        }
    });
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut first_max = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/incidents?limit=7&cursor={c}"),
            None => "/v1/incidents?limit=7".to_owned(),
        };
        let page = d.get(&path).await;
        for i in page["incidents"].as_array().unwrap() {
            seen.push(i["id"].as_u64().unwrap());
        }
        first_max.get_or_insert(seen[0]);
        tokio::task::yield_now().await;
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    writer.await.unwrap();
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), seen.len(), "an incident came twice: {seen:?}");
    let top = first_max.unwrap();
    assert_eq!(
        sorted,
        (1..=top).collect::<Vec<_>>(),
        "a gap below {top}: {seen:?}"
    );
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seen:?}"
    );
}
