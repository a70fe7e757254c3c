//! Roles from peer credentials, with incidentctl run as a real other user (`setpriv`), not a
//! faked header: nobody may read; nobody in a responder group may acknowledge but not reload;
//! the timeline names the real user. Needs root (to switch users): ignored otherwise, and run by the test command as root.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

use crate::util::{CTL, TestDaemon};

fn as_user(ctl: &std::path::Path, socket: &std::path::Path, group: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid=nobody",
            &format!("--regid={group}"),
            "--clear-groups",
            "--",
        ])
        .arg(ctl)
        .args(args)
        .env("INCIDENTD_SOCKET", socket)
        .env("NO_COLOR", "1")
        .output()
        .expect("run setpriv")
}

#[tokio::test]
#[ignore = "needs root to act as other users (setpriv); the test command runs it as root"]
async fn roles_come_from_the_peers_real_credentials() {
    let d = TestDaemon::prepare(
        "[control]\nsocket_mode = \"0666\"\nresponder_groups = [\"users\"]\n",
        "",
    );
    d.wait_healthy().await;
    // Let nobody reach the socket and run a copy of the client.
    crate::util::open_to_others(&d);
    let ctl = d.path("incidentctl");
    std::fs::copy(CTL, &ctl).unwrap();
    std::fs::set_permissions(&ctl, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = d.run.join("control.sock");
    let created = d
        .post(
            "/v1/incidents",
            serde_json::json!({"title": "disk full", "severity": "sev2"}),
        )
        .await
        .expect("root creates by hand");
    let id = created["id"].to_string();

    // A reader: may list, may not acknowledge.
    let list = as_user(&ctl, &sock, "nogroup", &["list"]);
    assert!(list.status.success(), "{list:?}");
    assert!(String::from_utf8_lossy(&list.stdout).contains("disk full"));
    let ack = as_user(&ctl, &sock, "nogroup", &["ack", &id]);
    assert!(!ack.status.success(), "{ack:?}");
    let err = String::from_utf8_lossy(&ack.stderr);
    assert!(
        err.contains("needs the responder role") && err.contains("nobody is a reader"),
        "{err}"
    );

    // A responder (primary group `users`): may acknowledge, may not reload.
    let ack = as_user(&ctl, &sock, "users", &["ack", &id, "-m", "on it"]);
    assert!(ack.status.success(), "{ack:?}");
    let reload = as_user(&ctl, &sock, "users", &["reload"]);
    assert!(!reload.status.success(), "{reload:?}");
    assert!(String::from_utf8_lossy(&reload.stderr).contains("needs the admin role"));

    // Silences are for admins; anyone may list them.
    let add = as_user(
        &ctl,
        &sock,
        "users",
        &[
            "silence",
            "add",
            "--service",
            "api",
            "--duration",
            "1h",
            "-c",
            "deploy",
        ],
    );
    assert!(!add.status.success(), "{add:?}");
    assert!(String::from_utf8_lossy(&add.stderr).contains("needs the admin role"));
    let list = as_user(&ctl, &sock, "nogroup", &["silence", "list"]);
    assert!(list.status.success(), "{list:?}");

    // The timeline's actor is the real user, and the refusals were logged.
    let timeline = d.get(&format!("/v1/incidents/{id}/timeline")).await;
    let actors: Vec<&str> = timeline["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["actor"].as_str())
        .collect();
    assert_eq!(actors.last(), Some(&"nobody"), "{timeline}");
    assert!(d.log().contains("refused an API call"), "{}", d.log());
}

/// One user's idle connections cannot lock the others out: nobody fills every one of
/// `max_connections` (and is refused beyond it); root, an admin, still gets in at once.
#[tokio::test]
#[ignore = "needs root to act as other users (setpriv); the test command runs it as root"]
async fn one_user_cannot_take_every_connection() {
    let d = TestDaemon::prepare(
        "[control]\nsocket_mode = \"0666\"\nmax_connections = 4\n",
        "",
    );
    d.wait_healthy().await;
    crate::util::open_to_others(&d);
    let sock = d.run.join("control.sock");
    // nobody opens six idle connections and keeps them for a while.
    let script = "my @h; for (1..6) { push @h, IO::Socket::UNIX->new(Peer => $ARGV[0]) or die \"connect: $!\" } $| = 1; print \"held\\n\"; sleep 5";
    let mut hog = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--",
            "/usr/bin/perl",
            "-MIO::Socket::UNIX",
            "-e",
            script,
        ])
        .arg(&sock)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run setpriv python3");
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(hog.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "held");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let answered = tokio::time::timeout(
        std::time::Duration::from_secs(3),
        d.client.get::<serde_json::Value>("/v1/health"),
    )
    .await;
    let _ = hog.kill();
    let _ = hog.wait();
    assert!(
        matches!(answered, Ok(Ok(_))),
        "root was locked out: {answered:?}"
    );
    assert!(
        d.log()
            .contains("connection refused listener=\"control socket\""),
        "{}",
        d.log()
    );
}
