//! Stored post-mortems against the real daemon: the draft is written when the incident is
//! resolved, `incidentctl postmortem --edit` replaces it through a real editor run, a
//! person's version survives a later resolution, a SIGKILL and `store rebuild`, and bad
//! bodies are refused.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use serde_json::{Value, json};

use crate::util::*;

fn editor(dir: &std::path::Path, name: &str, script: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

fn ctl_with_editor(
    d: &TestDaemon,
    editor: &std::path::Path,
    args: &[&str],
) -> std::process::Output {
    Command::new(CTL)
        .args(args)
        .env("INCIDENTD_SOCKET", d.run.join("control.sock"))
        .env("NO_COLOR", "1")
        .env_remove("VISUAL")
        .env("EDITOR", editor)
        .output()
        .unwrap()
}

async fn text(d: &TestDaemon, id: &Value) -> String {
    let (status, _) = d
        .raw(
            hyper::Method::GET,
            &format!("/v1/incidents/{id}/postmortem"),
            b"",
        )
        .await;
    assert_eq!(status, 200);
    String::from_utf8_lossy(&d.ctl(&["postmortem", &id.to_string()]).stdout).into_owned()
}

async fn postmortem_entries(d: &TestDaemon, id: &Value) -> Vec<Value> {
    d.get(&format!("/v1/incidents/{id}/timeline")).await["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "postmortem")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_post_mortem_is_stored_at_resolve_edited_and_kept() {
    let mut d = TestDaemon::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let id = d
        .post(
            "/v1/alerts",
            json!({"key": "disk", "summary": "disk full on db-1"}),
        )
        .await
        .unwrap()["incident_id"]
        .clone();
    assert!(
        postmortem_entries(&d, &id).await.is_empty(),
        "no draft before the end"
    );
    assert!(d.ctl(&["resolve", &id.to_string()]).status.success());
    let stored = postmortem_entries(&d, &id).await;
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["actor"], "system");
    let draft = text(&d, &id).await;
    assert!(draft.starts_with(&format!("# Post-mortem: incident {id} — disk full on db-1")));
    assert!(
        draft.contains("## Stages") && draft.contains("_To be written._"),
        "{draft}"
    );
    assert_eq!(draft, stored[0]["data"]["text"].as_str().unwrap());

    // Edited in an editor (a real program run on the file): stored, recorded as its user.
    let fill = editor(
        dir.path(),
        "fill.sh",
        r#"sed -i 's/_To be written._/Logs filled \/var; rotation was off./' "$1""#,
    );
    let out = ctl_with_editor(&d, &fill, &["postmortem", &id.to_string(), "--edit"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("stored"));
    let edited = text(&d, &id).await;
    assert!(
        edited.contains("Logs filled /var; rotation was off."),
        "{edited}"
    );
    assert!(!edited.contains("_To be written._"));
    let entries = postmortem_entries(&d, &id).await;
    assert_eq!(entries.len(), 2);
    assert_ne!(entries[1]["actor"], "system");

    // An editor that changes nothing stores nothing; one that fails stores nothing.
    let same = editor(dir.path(), "same.sh", "true");
    let out = ctl_with_editor(&d, &same, &["postmortem", &id.to_string(), "--edit"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unchanged"),
        "{out:?}"
    );
    let broken = editor(dir.path(), "broken.sh", "echo x >> \"$1\"; exit 3");
    let out = ctl_with_editor(&d, &broken, &["postmortem", &id.to_string(), "--edit"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing stored"),
        "{out:?}"
    );
    assert_eq!(postmortem_entries(&d, &id).await.len(), 2);

    // Reopened and resolved again: the person's version stays.
    assert!(d.ctl(&["reopen", &id.to_string()]).status.success());
    assert!(d.ctl(&["resolve", &id.to_string()]).status.success());
    assert_eq!(text(&d, &id).await, edited);

    // A SIGKILL and a rebuild from the log keep it.
    d.kill9();
    // What was written live must be what the log replays to.
    store_ok(&d.state, "verify");
    store_ok(&d.state, "rebuild");
    d.restart().await;
    assert_eq!(text(&d, &id).await, edited);

    // Bad bodies and unknown incidents.
    for (body, status, says) in [
        (&b"   "[..], 400, "needs some text"),
        (&b"\xff\xfe"[..], 400, "not UTF-8"),
    ] {
        let (got, v) = d
            .raw(
                hyper::Method::PUT,
                &format!("/v1/incidents/{id}/postmortem"),
                body,
            )
            .await;
        assert_eq!(got, status, "{v}");
        assert!(v.to_string().contains(says), "{v}");
    }
    let (got, _) = d
        .raw(hyper::Method::PUT, "/v1/incidents/999/postmortem", b"# x")
        .await;
    assert_eq!(got, 404);
}
