//! The local boundary, tried as hostile local users would (other users are real, through
//! `setpriv`): who may submit events on the ingest socket, connection caps that no user can
//! use to lock out another or root, and a private state folder.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::util::{TestDaemon, failed_password, open_to_others};

/// A Unix-socket client in Perl (in Debian's base system, and reachable by other users, as
/// the toolchain under /root is not): sends standard input, then prints what comes back.
const PERL_SEND: &str = r#"use IO::Socket::UNIX; $SIG{PIPE} = "IGNORE"; my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!\n"; print $s $_ while <STDIN>; shutdown($s, 1); print while <$s>;"#;

/// `perl -e SCRIPT` as `user` with primary group `group` and no other groups (arguments to
/// follow).
fn perl_as(user: &str, group: &str, script: &str) -> Command {
    let mut c = Command::new("setpriv");
    c.args([
        &format!("--reuid={user}"),
        &format!("--regid={group}"),
        "--clear-groups",
        "--",
        "perl",
        "-e",
        script,
    ]);
    c
}

/// Runs `perl -e SCRIPT ARGS` as `nobody` with primary group `group` and no other groups.
fn perl_as_nobody(group: &str, script: &str, args: &[&str], input: &str) -> Output {
    let mut child = perl_as("nobody", group, script)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run setpriv");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
#[ignore = "needs root to act as other users (setpriv); the test command runs it as root"]
async fn only_allowed_roles_may_submit_events_on_the_ingest_socket() {
    let d = TestDaemon::prepare(
        "[control]\nresponder_groups = [\"users\"]\n[ingest]\nsocket_mode = \"0666\"\n",
        crate::util::SSH_RULE,
    );
    d.wait_healthy().await;
    open_to_others(&d);
    let sock = d.ingest_path();
    let sock = sock.to_str().unwrap();
    let burst: String = (0..5)
        .map(|_| failed_password("203.0.113.7") + "\n")
        .collect();
    let future = r#"{"kind":"heartbeat","service":"x","ts":"9999-12-31T23:59:59Z"}"#;

    // A reader (the socket's mode lets it connect) may not inject.
    let out = perl_as_nobody("nogroup", PERL_SEND, &[sock], &format!("{burst}{future}\n"));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("forbidden") && said.contains("nobody is a reader"),
        "{out:?}"
    );
    let st = d.get("/v1/status").await;
    assert_eq!(st["sources"][0]["forbidden"], 1, "{st}");
    assert_eq!(st["sources"][0]["accepted"], 0, "{st}");
    assert!(d.log().contains("ingest connection refused"), "{}", d.log());

    // A responder may.
    let out = perl_as_nobody("users", PERL_SEND, &[sock], &burst);
    assert!(out.status.success(), "{out:?}");
    let inc = d.wait_for_key("ssh/203.0.113.7").await;
    assert_eq!(inc["detections"], 1);
    let st = d.get("/v1/status").await;
    assert_eq!(st["sources"][0]["accepted"], 5, "{st}");
}

/// A user holding many idle ingest connections gets at most its share; root's events still
/// go through at once, and idle connections are closed after `idle_timeout`.
#[tokio::test]
#[ignore = "needs root to act as other users (setpriv); the test command runs it as root"]
async fn no_user_can_hold_every_ingest_connection() {
    let d = TestDaemon::prepare(
        "[control]\nresponder_groups = [\"users\"]\n[ingest]\nsocket_mode = \"0666\"\nmax_connections = 8\nmax_connections_per_user = 3\nidle_timeout = \"3s\"\n",
        crate::util::SSH_RULE,
    );
    d.wait_healthy().await;
    open_to_others(&d);
    let sock = d.ingest_path();
    // nobody opens 20 connections and holds them.
    let hold = r#"use IO::Socket::UNIX; my @s; for (1..20) { my $c = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!\n"; push @s, $c; } sleep 30;"#;
    let mut holder = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=users",
            "--clear-groups",
            "--",
            "perl",
            "-e",
            hold,
        ])
        .arg(&sock)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get("/v1/status").await["sources"][0]["refused"] != 17 {
        assert!(Instant::now() < deadline, "{}", d.get("/v1/status").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Root is an admin: never turned away, and its events go through at once.
    let started = Instant::now();
    d.send_and_settle(&[failed_password("198.51.100.1")]).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    // The idle ones are closed after 3 s: nobody may connect again.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let out = perl_as_nobody(
        "users",
        PERL_SEND,
        &[sock.to_str().unwrap()],
        &(failed_password("198.51.100.2") + "\n"),
    );
    assert!(out.status.success(), "{out:?}");
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("error"),
        "{out:?}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

/// The state folder is 0700 and its files 0600 whatever the umask; a looser folder left by
/// an older run is tightened at start and said in the log; another user cannot read it.
#[tokio::test]
async fn the_state_folder_is_private() {
    let mut d = TestDaemon::prepare("", "");
    d.wait_healthy().await;
    d.post(
        "/v1/incidents",
        serde_json::json!({"title": "a secret note", "severity": "sev3"}),
    )
    .await
    .expect("create by hand");
    d.stop();
    let check = |d: &TestDaemon| {
        let mode = std::fs::metadata(&d.state).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "state folder mode {mode:o}");
        for entry in walk(&d.state) {
            let m = std::fs::metadata(&entry).unwrap();
            let mode = m.permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", entry.display());
        }
    };
    check(&d);
    // Loosened as an old version under umask 022 left it.
    std::fs::set_permissions(&d.state, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in walk(&d.state) {
        let mode = if entry.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&entry, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    d.restart().await;
    check(&d);
    assert!(d.log().contains("made it private"), "{}", d.log());
    if nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let out = Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
            .arg("grep")
            .arg("-ra")
            .arg("secret")
            .arg(&d.state)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
            "{out:?}"
        );
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p.clone());
            }
            out.push(p);
        }
    }
    out
}

/// On the control socket, one user holds at most `max_connections_per_user` connections and
/// is told why beyond that; root is an admin and always gets in.
#[tokio::test]
#[ignore = "needs root to act as other users (setpriv); the test command runs it as root"]
async fn no_user_can_lock_out_root_on_the_control_socket() {
    let d = TestDaemon::prepare(
        "[control]\nsocket_mode = \"0666\"\nmax_connections = 4\nmax_connections_per_user = 2\n",
        "",
    );
    d.wait_healthy().await;
    open_to_others(&d);
    let sock = d.run.join("control.sock");
    // nobody holds two idle connections; a third is answered 503 with the reason.
    let script = r#"use IO::Socket::UNIX; $SIG{PIPE} = "IGNORE"; my @h; for (1..2) { push @h, IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!\n"; } sleep 1; my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die; print $s "GET /v1/health HTTP/1.1\r\nhost: x\r\n\r\n"; print while <$s>; sleep 5;"#;
    let mut hog = Command::new("setpriv")
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--",
            "perl",
            "-e",
            script,
        ])
        .arg(&sock)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(hog.stdout.take().unwrap());
    let mut status = String::new();
    std::io::BufRead::read_line(&mut out, &mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    let mut rest = String::new();
    while std::io::BufRead::read_line(&mut out, &mut rest).unwrap_or(0) > 0
        && !rest.contains("error")
    {}
    assert!(rest.contains("already holds 2 connections"), "{rest}");
    // Root meanwhile: answered at once, many times over.
    for _ in 0..10 {
        let started = Instant::now();
        let health: serde_json::Value = d.get("/v1/health").await;
        assert_eq!(health["status"], "ok");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    let _ = hog.kill();
    let _ = hog.wait();
    assert!(
        d.log()
            .contains("connection refused listener=\"control socket\""),
        "{}",
        d.log()
    );
}

/// Request headers must arrive within `header_timeout`: a client trickling them a byte at a
/// time is cut off.
#[tokio::test]
async fn slow_headers_are_cut_off() {
    use std::io::{Read, Write};
    let d = TestDaemon::prepare("[control]\nheader_timeout = \"1s\"\n", "");
    d.wait_healthy().await;
    let mut s = std::os::unix::net::UnixStream::connect(d.run.join("control.sock")).unwrap();
    let started = Instant::now();
    let mut closed = false;
    for b in b"GET /v1/health HTTP/1.1\r\nhost: localhost\r\nx-slow: aaaaaaaaaaaaaaaaaaaaaaaa" {
        if s.write_all(&[*b]).is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    if !closed {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = Vec::new();
        let _ = s.read_to_end(&mut buf);
        closed = true;
    }
    assert!(closed);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not cut off: {:?}",
        started.elapsed()
    );
    // The daemon still answers others.
    assert_eq!(d.get("/v1/health").await["status"], "ok");
}

/// `incidentctl` gives up after `--timeout` with a message that says what happened, when a
/// socket accepts but never answers.
#[tokio::test]
async fn incidentctl_gives_up_after_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stuck.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let started = Instant::now();
    let out = Command::new(crate::util::CTL)
        .args(["--timeout", "1s", "status"])
        .env("INCIDENTD_SOCKET", &path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did not answer within 1s"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

/// Plugins stay home: a plugin name is a plain name, a command may not leave the plugin's
/// folder, and a folder, manifest or command file writable by others is refused at file:line.
#[test]
fn plugins_stay_in_their_folder_and_are_writable_by_their_owner_only() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let make = |name: &str, command: &str| {
        let p = plugins.join(name);
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("plugin.toml"),
            format!("name = \"{name}\"\nkind = \"source\"\ncommand = {command}\n"),
        )
        .unwrap();
        std::fs::write(p.join("run.sh"), "exit 0\n").unwrap();
        p
    };
    let check = |table: &str| {
        let cfg = dir.path().join("incidentd.toml");
        std::fs::write(&cfg, format!("plugins_dir = \"plugins\"\n{table}")).unwrap();
        let out = crate::util::check_config(&cfg);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A name that climbs out of plugins_dir.
    std::fs::create_dir_all(dir.path().join("evilplug")).unwrap();
    let (ok, err) = check("[[plugin]]\nname = \"../evilplug\"\n");
    assert!(
        !ok && err.contains("incidentd.toml:2") && err.contains("plain name"),
        "{err}"
    );
    // A command out of the folder.
    make("escape", r#"["sh", "../../evil.sh"]"#);
    let (ok, err) = check("[[plugin]]\nname = \"escape\"\n");
    assert!(
        !ok && err.contains("plugin.toml:3") && err.contains("leaves the plugin's folder"),
        "{err}"
    );
    // A world-writable manifest, and a world-writable script.
    let p = make("loose", r#"["sh", "run.sh"]"#);
    std::fs::set_permissions(
        p.join("plugin.toml"),
        std::fs::Permissions::from_mode(0o666),
    )
    .unwrap();
    let (ok, err) = check("[[plugin]]\nname = \"loose\"\n");
    assert!(!ok && err.contains("writable by group or others"), "{err}");
    std::fs::set_permissions(
        p.join("plugin.toml"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    std::fs::set_permissions(p.join("run.sh"), std::fs::Permissions::from_mode(0o757)).unwrap();
    let (ok, err) = check("[[plugin]]\nname = \"loose\"\n");
    assert!(!ok && err.contains("run.sh is writable"), "{err}");
    std::fs::set_permissions(p.join("run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let (ok, err) = check("[[plugin]]\nname = \"loose\"\n");
    assert!(ok, "{err}");
}

/// Untrusted text never reaches a terminal or the log raw: a user name with escape sequences
/// from auth.log shows escaped in `incidentctl list` and `show`, and a newline in a rejected
/// line's value cannot forge a line in the daemon's log.
#[tokio::test]
async fn control_characters_are_escaped_in_tables_and_logs() {
    let d = TestDaemon::start(
        r#"
[[rule]]
id = "login"
kind = "match"
regex = 'Failed password for (?P<user>\S+) from'
incident_key = "login/{{ labels.user }}"
summary = "failed login for {{ labels.user }}"
"#,
    )
    .await;
    let hostile = "\u{1b}]0;pwned\u{7}\u{1b}[2J";
    let line = serde_json::json!({"kind": "log", "message": format!("Failed password for {hostile} from 203.0.113.9 port 22 ssh2")});
    d.send_and_settle(&[line.to_string()]).await;
    for args in [&["list"][..], &["show", "1"]] {
        let out = d.ctl(args);
        assert!(out.status.success(), "{out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text:?}"
        );
        assert!(text.contains("\\e]0;pwned\\x07\\e[2J"), "{text}");
    }
    // A rejected value with a newline in it: one log line, the newline shown as \n.
    d.send_raw(b"{\"kind\":\"x\",\"level\":\"loud\\nFORGED ERROR incidentd: all good\"}\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.log().contains("rejected input line") {
        assert!(Instant::now() < deadline, "{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let log = d.log();
    assert!(log.contains("loud\\nFORGED"), "{log}");
    assert!(!log.lines().any(|l| l.starts_with("FORGED")), "{log}");
}

/// A tmpfs of a few MiB, unmounted on drop.
struct SmallDisk(std::path::PathBuf);

impl SmallDisk {
    fn mount(at: &std::path::Path, size: &str) -> SmallDisk {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .unwrap();
        assert!(out.status.success(), "mount: {out:?}");
        SmallDisk(at.to_owned())
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// On a full disk a change is answered 507 with a clear message, `/v1/health` says
/// `degraded` with the reason, and the failure is logged a few times rather than thousands;
/// once there is room again writes succeed without a restart, and every change that was
/// answered is there, also after a crash.
#[tokio::test]
#[ignore = "needs root to mount a small tmpfs; the test command runs it as root"]
async fn a_full_disk_is_answered_507_heals_and_loses_no_acknowledged_change() {
    let mut d = TestDaemon::prepare("", "");
    // The daemon's state folder on a 24 MiB disk.
    d.stop();
    let _disk = SmallDisk::mount(&d.state, "24m");
    d.restart().await;
    // Fill the disk.
    let filler = d.state.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![0u8; 1 << 16];
        while f.write_all(&chunk).is_ok() {}
    }
    let mut acknowledged = Vec::new();
    let mut refused = None;
    for i in 0..2000 {
        let body = serde_json::json!({"title": format!("incident {i} {}", "x".repeat(2000)), "severity": "sev3"});
        let (status, answer) = d
            .raw(
                hyper::Method::POST,
                "/v1/incidents",
                body.to_string().as_bytes(),
            )
            .await;
        if status == 200 || status == 201 {
            acknowledged.push(answer["id"].as_u64().unwrap());
        } else {
            refused = Some((status, answer));
            break;
        }
    }
    let (status, answer) = refused.expect("the disk never filled up");
    assert_eq!(status, 507, "{answer}");
    assert_eq!(answer["error"]["code"], "insufficient_storage", "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("disk"),
        "{answer}"
    );
    let health = d.get("/v1/health").await;
    assert_eq!(health["status"], "degraded", "{health}");
    assert!(
        health["reason"].as_str().unwrap().contains("store"),
        "{health}"
    );
    // More tries fail too, but the log does not flood.
    for _ in 0..50 {
        let _ = d
            .raw(
                hyper::Method::POST,
                "/v1/incidents",
                br#"{"title":"more","severity":"sev4"}"#,
            )
            .await;
    }
    let failures = d.log().matches("store flush failed").count();
    assert!(
        (1..=3).contains(&failures),
        "{failures} flush failures logged\n{}",
        d.log()
    );
    // Detections made while the disk is full are not lost: the engine never sends them
    // again, so the manager applies them once the store has healed.
    d.send_raw(
        b"{\"kind\":\"marker\",\"message\":\"during-full-1\"}\n{\"kind\":\"marker\",\"message\":\"during-full-2\"}\n",
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Room again: writes succeed without a restart (the store reopens itself).
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let healed = loop {
        let (status, answer) = d
            .raw(
                hyper::Method::POST,
                "/v1/incidents",
                br#"{"title":"after","severity":"sev4"}"#,
            )
            .await;
        if status == 200 || status == 201 {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "writes still fail: {status} {answer}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    acknowledged.push(healed["id"].as_u64().unwrap());
    assert_eq!(d.get("/v1/health").await["status"], "ok");
    for key in ["marker/during-full-1", "marker/during-full-2"] {
        let inc = d.wait_for_key(key).await;
        assert_eq!(inc["detections"], 1, "{inc}");
        acknowledged.push(inc["id"].as_u64().unwrap());
    }
    assert!(d.log().contains("store reopened"), "{}", d.log());
    // Every acknowledged change is there, now and after a crash.
    for round in 0..2 {
        for id in &acknowledged {
            let inc = d.get(&format!("/v1/incidents/{id}")).await;
            assert_eq!(
                inc["id"], *id,
                "round {round}: acknowledged incident {id} lost: {inc}"
            );
        }
        d.kill9();
        d.restart().await;
    }
}

/// Runs a Perl client as `user` (primary group `group`, no others) against the loopback TCP
/// address `addr`: it opens `idle` connections that send half a request head and hold them,
/// then one more that asks for `/board.css`; it prints that answer, then `END`, and holds on
/// until killed (within a minute at most, so a stuck client cannot hang the test).
fn board_client(user: &str, group: &str, addr: &str, idle: usize) -> std::process::Child {
    let script = r#"use IO::Socket::INET; $SIG{PIPE} = "IGNORE"; $| = 1; alarm 60;
my ($addr, $n) = @ARGV; my @h;
for (1..$n) { my $c = IO::Socket::INET->new(PeerAddr => $addr) or die "connect: $!\n"; print $c "GET / HTTP/1.1\r\n"; push @h, $c; }
select(undef, undef, undef, 0.5);
my $s = IO::Socket::INET->new(PeerAddr => $addr) or die "connect: $!\n";
print $s "GET /board.css HTTP/1.1\r\nhost: $addr\r\nconnection: close\r\n\r\n";
print while <$s>; print "\nEND\n"; sleep 60;"#;
    perl_as(user, group, script)
        .args([addr, &idle.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run setpriv")
}

/// What a `board_client` printed up to `END`.
fn board_answer(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let out = child.stdout.as_mut().unwrap();
    let mut text = String::new();
    for line in std::io::BufReader::new(out).lines() {
        let line = line.unwrap();
        if line == "END" {
            break;
        }
        text.push_str(&line);
        text.push('\n');
    }
    text
}

/// The web board's loopback TCP listener tells users apart by who owns the client's end of
/// each connection (the kernel's sock_diag): one user holds at most
/// `max_connections_per_user`, all non-admins at most `max_connections`, and root, an admin,
/// always gets in. Before, every connection counted alike, so one user could take them all.
#[tokio::test]
#[ignore = "needs root to act as other users (setpriv); the test command runs it as root"]
async fn no_user_can_take_every_place_on_the_board() {
    let port = crate::util::free_port();
    let addr = format!("127.0.0.1:{port}");
    let d = TestDaemon::prepare(
        &format!(
            "[control]\nweb_listen = \"{addr}\"\nmax_connections = 4\nmax_connections_per_user = 2\nheader_timeout = \"60s\"\n"
        ),
        "",
    );
    d.wait_healthy().await;
    // No connection kept for reuse: each of root's requests below is a new connection.
    let _ = incidentd::http_client(); // installs the TLS provider reqwest is built to need
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let css = format!("http://{addr}/board.css");
    let deadline = Instant::now() + Duration::from_secs(10);
    while http.get(&css).send().await.is_err() {
        assert!(Instant::now() < deadline, "board not listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // nobody holds two idle connections: a third is refused, and told why.
    let mut nobody = board_client("nobody", "nogroup", &addr, 2);
    let answer = board_answer(&mut nobody);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("already holds 2 connections"), "{answer}");
    // Another user still gets in while nobody holds its two.
    let mut daemon_user = board_client("daemon", "daemon", &addr, 1);
    let answer = board_answer(&mut daemon_user);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // bin's idle connection takes the last of the four places of non-admins (or is refused
    // if daemon's answered one has not closed yet): bin's request is refused, though bin
    // holds less than its share.
    let mut bin = board_client("bin", "bin", &addr, 1);
    let answer = board_answer(&mut bin);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.contains("all 4 connections for non-admin users are taken"),
        "{answer}"
    );
    // Root, an admin, is never turned away.
    for _ in 0..10 {
        let started = Instant::now();
        let page = http.get(&css).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert!(started.elapsed() < Duration::from_secs(2));
    }
    for c in [&mut nobody, &mut daemon_user, &mut bin] {
        let _ = c.kill();
        let _ = c.wait();
    }
    // The places are given back when the connections close: nobody gets in again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = board_client("nobody", "nogroup", &addr, 0);
        let answer = board_answer(&mut again);
        let _ = again.kill();
        let _ = again.wait();
        if answer.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = d.log();
    assert!(
        log.contains("connection refused") && log.contains("user=nobody"),
        "{log}"
    );
}
