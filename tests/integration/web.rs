//! The web board: served on loopback only, reads open, changes need the token; and the real
//! page in headless Chromium (Debian's chromium, driven by playwright-core from npm):
//! it loads, a new incident appears live, acknowledging from the page works, a screenshot is
//! kept in target/tmp.

use std::time::Duration;

use serde_json::{Value, json};

use crate::util::*;

async fn start(token: Option<&str>) -> (TestDaemon, String) {
    let control = token
        .map(|t| format!("web_token = \"{t}\"\n"))
        .unwrap_or_default();
    start_with(&control, "", "").await
}

/// A daemon with the board on a free port: `control` adds to `[control]`, `config` follows.
async fn start_with(control: &str, config: &str, rules: &str) -> (TestDaemon, String) {
    let port = free_port();
    let extra = format!("[control]\nweb_listen = \"127.0.0.1:{port}\"\n{control}\n{config}");
    let d = TestDaemon::prepare(&extra, rules);
    d.wait_healthy().await;
    let url = format!("http://127.0.0.1:{port}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "board not listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (d, url)
}

#[tokio::test]
async fn the_board_serves_its_page_and_reads_and_changes_need_the_token() {
    let (d, url) = start(Some("s3cret-t0ken-abcdef")).await;
    let http = incidentd::http_client().unwrap();
    let page = http.get(&url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'self'")
    );
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("<script src=\"/board.js\">")
    );
    for asset in ["/board.js", "/board.css"] {
        assert_eq!(
            http.get(format!("{url}{asset}"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
    }
    let inc = d
        .post("/v1/incidents", json!({"title": "t", "severity": "sev2"}))
        .await
        .unwrap();
    let id = &inc["id"];
    // Reads are open.
    let list: Value = http
        .get(format!("{url}/v1/incidents"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["incidents"][0]["id"], *id);
    let stats: Value = http
        .get(format!("{url}/v1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["by_week"].as_object().unwrap().len(), 1);
    // Changes: no token, a wrong one, then the right one.
    for auth in [None, Some("Bearer nope")] {
        let mut req = http.post(format!("{url}/v1/incidents/{id}/ack"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 403);
    }
    let r = http
        .post(format!("{url}/v1/incidents/{id}/ack"))
        .header("authorization", "Bearer s3cret-t0ken-abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    assert_eq!(tl["timeline"][1]["actor"], "web");
    // Only what the board offers: no cancel, no admin paths.
    let r = http
        .post(format!("{url}/v1/incidents/{id}/cancel"))
        .header("authorization", "Bearer s3cret-t0ken-abcdef")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(
        http.post(format!("{url}/v1/reload"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    // A foreign Host (DNS rebinding) is refused; localhost is fine.
    let port = url.rsplit(':').next().unwrap();
    let r = http
        .get(format!("{url}/v1/incidents"))
        .header("host", format!("evil.example:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = http
        .get(format!("{url}/v1/incidents"))
        .header("host", format!("localhost:{port}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Without a token configured the board is read-only.
    let (d2, url2) = start(None).await;
    let inc2 = d2
        .post("/v1/incidents", json!({"title": "u"}))
        .await
        .unwrap();
    let r = http
        .post(format!("{url2}/v1/incidents/{}/ack", inc2["id"]))
        .header("authorization", "Bearer anything")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("read-only"));
}

#[test]
fn the_board_listens_on_loopback_only_with_a_real_token() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("incidentd.toml");
    std::fs::write(
        &main,
        "[control]\nweb_listen = \"0.0.0.0:8080\"\nweb_token = \"\"\n",
    )
    .unwrap();
    let out = check_config(&main);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a loopback address"), "{err}");
    assert!(err.contains("at least 16 characters"), "{err}");
}

const ADMIN: &str = "board-admin-token-9876543210";

/// An unsafe action bound to a rule: each bad deploy leaves a run waiting for an admin.
fn approvals(marker: &std::path::Path) -> (String, String) {
    let config = format!(
        r#"
[[action]]
id = "rollback"
kind = "exec"
command = ["touch", "{marker}-{{{{ incident.id }}}}"]
"#,
        marker = marker.display()
    );
    let rules = r#"
[[rule]]
id = "deploy"
kind = "match"
severity = "sev3"
where = { kind = "bad_deploy" }
incident_key = "deploy/{{ event.service }}"
actions = ["rollback"]
"#;
    (config, rules.to_owned())
}

async fn pending_runs(d: &TestDaemon, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let p = d.get("/v1/actions?state=pending").await["actions"]
            .as_array()
            .unwrap()
            .clone();
        if p.len() >= n {
            return p;
        }
        assert!(std::time::Instant::now() < deadline, "{p:?}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Approvals take the admin token: the responder's gets 403 naming it, a wrong one 403; the
/// admin's approves (the action runs, decided by `web-admin`) and denies.
#[tokio::test]
async fn approvals_on_the_board_need_the_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("rolled-back");
    let (config, rules) = approvals(&marker);
    let control = format!("web_token = \"s3cret-t0ken-abcdef\"\nweb_admin_token = \"{ADMIN}\"\n");
    let (d, url) = start_with(&control, &config, &rules).await;
    let ev = |svc: &str| json!({"kind": "bad_deploy", "service": svc}).to_string();
    d.send_and_settle(&[ev("api"), ev("web")]).await;
    let runs = pending_runs(&d, 2).await;
    let (first, second) = (runs[0]["id"].clone(), runs[1]["id"].clone());
    let http = incidentd::http_client().unwrap();
    let post = |path: String, token: &str| {
        http.post(format!("{url}{path}"))
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body("{}")
            .send()
    };
    let r = post(
        format!("/v1/actions/{first}/approve"),
        "s3cret-t0ken-abcdef",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("admin token"));
    let r = post(
        format!("/v1/actions/{first}/approve"),
        "not-the-token-at-all",
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        d.get("/v1/actions?state=pending").await["actions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let r = post(format!("/v1/actions/{first}/approve"), ADMIN)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let run: Value = r.json().await.unwrap();
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["decided_by"], "web-admin");
    let inc = run["incident_id"].as_u64().unwrap();
    assert!(exists(&std::path::PathBuf::from(format!(
        "{}-{inc}",
        marker.display()
    ))));
    let r = post(format!("/v1/actions/{second}/deny"), ADMIN)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["state"], "denied");
    // Deciding again: 409, as on the control API.
    let r = post(format!("/v1/actions/{second}/approve"), ADMIN)
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    // The admin's token does a responder's changes too; a stage move is the board's (on the
    // incident whose run was denied: the other moved to remediate by itself).
    let inc = runs[1]["incident_id"].as_u64().unwrap();
    let r = post(format!("/v1/incidents/{inc}/ack"), ADMIN)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = http
        .post(format!("{url}/v1/incidents/{inc}/stage"))
        .header("authorization", "Bearer s3cret-t0ken-abcdef")
        .json(&json!({"stage": "contain"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["stage"], "contain");
    let r = http
        .post(format!("{url}/v1/incidents/{inc}/stage"))
        .header("authorization", "Bearer s3cret-t0ken-abcdef")
        .json(&json!({"stage": "assess"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "back without a reason");
    let tl = d.get(&format!("/v1/incidents/{inc}/timeline")).await;
    let moved: Vec<&Value> = tl["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "stage_changed")
        .collect();
    assert_eq!(moved.len(), 1, "{tl}");
    assert_eq!(moved[0]["actor"], "web");
    // The status the component panel reads has the store.
    let st: Value = http
        .get(format!("{url}/v1/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        st["store"]["bytes_on_disk"].as_u64().unwrap() > 0,
        "{}",
        st["store"]
    );
    assert_eq!(st["store"]["errors"], 0);
}

#[test]
fn the_admin_token_differs_from_the_responders() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("incidentd.toml");
    std::fs::write(
        &main,
        "[control]\nweb_listen = \"127.0.0.1:8080\"\nweb_token = \"same-token-0123456789\"\nweb_admin_token = \"same-token-0123456789\"\n",
    )
    .unwrap();
    let out = check_config(&main);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("control.web_admin_token: must differ from `web_token`"),
        "{err}"
    );
}

#[tokio::test]
async fn the_board_in_a_real_browser_shows_new_incidents_live_and_acknowledges() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("rolled-back");
    let (config, rules) = approvals(&marker);
    let control =
        format!("web_token = \"board-token-0123456789\"\nweb_admin_token = \"{ADMIN}\"\n");
    let (d, url) = start_with(&control, &config, &rules).await;
    // Something for the chart and the counters before the page loads.
    d.post(
        "/v1/incidents",
        json!({"title": "older", "severity": "sev3"}),
    )
    .await
    .unwrap();
    // Two runs waiting for an admin.
    let ev = |svc: &str| json!({"kind": "bad_deploy", "service": svc}).to_string();
    d.send_and_settle(&[ev("api"), ev("web")]).await;
    let runs = pending_runs(&d, 2).await;
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("web-board.png");
    let _ = std::fs::remove_file(&shot);
    let web = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web");
    if !std::path::Path::new(web)
        .join("node_modules/playwright-core")
        .is_dir()
    {
        let npm = std::process::Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix", web])
            .output()
            .expect("npm (Debian's npm; .ci/run installs it)");
        assert!(npm.status.success(), "{npm:?}");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/web/board.mjs");
    let child = tokio::process::Command::new("node")
        .arg(script)
        .arg(&url)
        .arg("board-token-0123456789")
        .arg(&shot)
        .arg(d.run.join("control.sock"))
        .arg(ADMIN)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Its own process group: node and the Chromium it starts end together.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .expect("node (with `npm install --prefix tests/web`, as .ci/run does)");
    let pgid = child.id().map(|p| p as i32);
    let out = match tokio::time::timeout(Duration::from_secs(120), child.wait_with_output()).await {
        Ok(out) => out.unwrap(),
        Err(_) => {
            if let Some(pg) = pgid {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pg),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            panic!("the browser test did not finish within 120 s\n{}", d.log());
        }
    };
    assert!(
        out.status.success(),
        "{}\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    // What the page did, seen from the control API.
    let mut decided = Vec::new();
    for r in &runs[..2] {
        let now = d.get(&format!("/v1/actions/{}", r["id"])).await;
        assert_eq!(now["decided_by"], "web-admin", "{now}");
        decided.push(now["state"].as_str().unwrap().to_owned());
    }
    decided.sort();
    assert_eq!(decided, ["denied", "succeeded"]);
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG"),
        "a screenshot was kept at {}",
        shot.display()
    );
}

/// A connection whose request head does not come within `header_timeout` is closed, so idle
/// connections cannot pile up; this test's user runs the daemon, an admin, so none of its
/// connections is turned away however many (`boundary.rs` tries the caps as other users).
#[tokio::test]
async fn idle_connections_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (d, url) = start_with("max_connections = 3\nheader_timeout = \"1s\"\n", "", "").await;
    let addr = url.trim_start_matches("http://").to_owned();
    // Six connections that send half a request head: all held open, none answered 503.
    let mut idle = Vec::new();
    for _ in 0..6 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        idle.push(s);
    }
    // Well within the header timeout, none has been answered or closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for s in &idle {
        let mut buf = [0u8; 64];
        let r = s.try_read(&mut buf);
        assert!(
            matches!(&r, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "an admin's connection was answered or closed: {r:?}"
        );
    }
    // The idle ones are cut off within the header timeout (hyper answers 408 or closes).
    for s in &mut idle {
        let mut buf = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
            .await
            .expect("cut off")
            .ok();
        let head = String::from_utf8_lossy(&buf);
        assert!(!head.starts_with("HTTP/1.1 503"), "{head}");
    }
    // Then the board answers again.
    let http = incidentd::http_client().unwrap();
    let page = http.get(format!("{url}/board.css")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(!d.log().contains("connection refused"), "{}", d.log());
}
