//! Response stages against the real daemon: every incident starts at `assess`; people move it
//! forward (and back with a reason); a successful remediation run moves it to `remediate` and
//! resolving to `recover` by themselves, saying why; the stage replays from the timeline
//! (`store rebuild`, a SIGKILL), and `/v1/stats` and the post-mortem give the time in each.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

fn down(service: &str) -> String {
    json!({"kind": "svc_down", "service": service, "message": format!("{service} is down")})
        .to_string()
}

async fn wait_stage(d: &TestDaemon, id: &Value, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let inc = d.get(&format!("/v1/incidents/{id}")).await;
        if inc["stage"] == want {
            return inc;
        }
        assert!(Instant::now() < deadline, "stage never {want}: {inc}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn stage_entries(d: &TestDaemon, id: &Value) -> Vec<Value> {
    d.get(&format!("/v1/incidents/{id}/timeline")).await["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "stage_changed")
        .cloned()
        .collect()
}

#[tokio::test]
async fn stages_move_by_hand_and_by_themselves_and_survive_a_kill() {
    let config = r#"
[[action]]
id = "fix"
kind = "exec"
safe = true
on = "detection"
command = ["/bin/true"]
"#;
    let rules = r#"
[[rule]]
id = "down"
kind = "match"
severity = "sev3"
where = { kind = "svc_down" }
incident_key = "down/{{ event.service }}"
actions = ["fix"]
"#;
    let mut d = TestDaemon::prepare(config, rules);
    d.wait_healthy().await;

    // By hand: an alert starts at assess and moves forward freely.
    let alert = d
        .post("/v1/alerts", json!({"key": "disk", "summary": "disk full"}))
        .await
        .unwrap();
    let id = alert["incident_id"].clone();
    let inc = d.get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(inc["stage"], "assess");
    let out = d.ctl(&["stage", &id.to_string(), "investigate"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("now at stage investigate"));
    // Back only with a reason; an unknown stage names the five.
    let back = d.ctl(&["stage", &id.to_string(), "contain"]);
    assert!(!back.status.success());
    assert!(
        String::from_utf8_lossy(&back.stderr).contains("needs a reason"),
        "{back:?}"
    );
    let (status, v) = d
        .raw(
            hyper::Method::POST,
            &format!("/v1/incidents/{id}/stage"),
            br#"{"stage": "fix"}"#,
        )
        .await;
    assert_eq!(status, 400);
    assert!(
        v.to_string()
            .contains("assess, contain, investigate, remediate, recover"),
        "{v}"
    );
    let out = d.ctl(&[
        "stage",
        &id.to_string(),
        "contain",
        "-m",
        "spreading to a second disk",
    ]);
    assert!(out.status.success(), "{out:?}");
    let moves = stage_entries(&d, &id).await;
    assert_eq!(moves.len(), 2);
    assert_eq!(moves[1]["data"]["from"], "investigate");
    assert_eq!(moves[1]["data"]["to"], "contain");
    assert_eq!(moves[1]["note"], "spreading to a second disk");
    assert_eq!(moves[1]["actor"], whoami());

    // Resolving moves it to recover, and says why.
    let r = d.ctl(&["resolve", &id.to_string()]);
    assert!(r.status.success(), "{r:?}");
    wait_stage(&d, &id, "recover").await;
    let last = stage_entries(&d, &id).await.pop().unwrap();
    assert_eq!(last["actor"], "system");
    assert_eq!(last["data"]["reason"], "resolved");

    // A successful run moves a detection's incident to remediate by itself.
    d.send_and_settle(&[down("api")]).await;
    let api = d.wait_for_key("down/api").await;
    let inc = wait_stage(&d, &api["id"], "remediate").await;
    let moved = stage_entries(&d, &api["id"]).await.pop().unwrap();
    assert!(
        moved["data"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("action fix succeeded"),
        "{moved}"
    );
    assert_eq!(inc["stage"], "remediate");

    // The list shows the stage; a SIGKILL and a rebuild from the log keep it.
    let list = String::from_utf8_lossy(&d.ctl(&["list"]).stdout).into_owned();
    assert!(
        list.contains("STAGE") && list.contains("remediate"),
        "{list}"
    );
    d.kill9();
    // What was written live must be what the log replays to.
    store_ok(&d.state, "verify");
    store_ok(&d.state, "rebuild");
    d.restart().await;
    let after = d.get(&format!("/v1/incidents/{id}")).await;
    assert_eq!(after["stage"], "recover");
    assert_eq!(
        d.get(&format!("/v1/incidents/{}", api["id"])).await["stage"],
        "remediate"
    );

    // Time in each stage: in the stats and the post-mortem.
    let stats = d.get("/v1/stats").await;
    for s in ["assess", "investigate", "contain"] {
        assert!(
            stats["time_in_stage"][s]["count"].as_u64().unwrap() >= 1,
            "{s}: {}",
            stats["time_in_stage"]
        );
    }
    let pm = d.ctl(&["postmortem", &id.to_string()]);
    let text = String::from_utf8_lossy(&pm.stdout).into_owned();
    assert!(
        text.contains("## Stages")
            && text.contains("- Now at: recover")
            && text.contains("- investigate: "),
        "{text}"
    );
}

fn whoami() -> String {
    let out = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
