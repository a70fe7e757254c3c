//! Remediation with real processes: a service revived by a restart action, a timeout that
//! kills a process group and its children, approvals and denials over the API, dry runs with
//! no side effect, the circuit breaker holding the 4th run, reverts, verification, signals,
//! HTTP, and silences holding automatic runs.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

pub(crate) fn down(service: &str) -> String {
    json!({"kind": "svc_down", "service": service, "message": format!("{service} is down")})
        .to_string()
}

/// Waits (15 s at most) until the incident's timeline satisfies `ok`; returns it.
pub(crate) async fn wait_timeline(
    d: &TestDaemon,
    id: &Value,
    ok: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let tl = d.get(&format!("/v1/incidents/{id}/timeline")).await;
        let entries = tl["timeline"].as_array().cloned().unwrap_or_default();
        if ok(&entries) {
            return entries;
        }
        assert!(Instant::now() < deadline, "{entries:#?}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(crate) fn of_type<'a>(entries: &'a [Value], t: &str) -> Vec<&'a Value> {
    entries.iter().filter(|e| e["type"] == t).collect()
}

fn read_pid(p: &Path) -> i32 {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .trim()
        .parse()
        .unwrap_or(0)
}

/// Kills the pid in a pidfile when the test ends, however it ends.
struct KillPidfile(std::path::PathBuf);

impl Drop for KillPidfile {
    fn drop(&mut self) {
        let pid = read_pid(&self.0);
        // Only a process of ours that is still there (a pid may be reused once it is gone).
        let ours = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| matches!(c.trim(), "sleep" | "sh" | "bash" | "dash"));
        if pid > 1 && alive(pid) && ours {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[tokio::test]
async fn a_safe_restart_revives_the_service_and_the_breaker_holds_the_fourth_run() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("svc.pid");
    let _reap = KillPidfile(pidfile.clone());
    let svc = dir.path().join("svc.sh");
    std::fs::write(
        &svc,
        format!("echo $$ > {}\nexec sleep 300\n", pidfile.display()),
    )
    .unwrap();
    let config = format!(
        r#"
[[action]]
id = "restart-demo"
kind = "exec"
safe = true
on = "detection"
max_runs = 3
per = "1h"
shell = true
env = {{ SERVICE = "{{{{ incident.service }}}}" }}
command = ["kill $(cat {pid}) 2>/dev/null; setsid sh {svc} </dev/null >/dev/null 2>&1 & echo restarted $SERVICE"]
"#,
        pid = pidfile.display(),
        svc = svc.display()
    );
    let rules = r#"
[[rule]]
id = "down"
kind = "match"
severity = "sev3"
where = { kind = "svc_down" }
incident_key = "down/{{ event.service }}"
actions = ["restart-demo"]
"#;
    let d = TestDaemon::prepare(&config, rules);
    d.wait_healthy().await;
    d.send_and_settle(&[down("demo")]).await;
    let inc = d.wait_for_key("down/demo").await;
    let id = inc["id"].clone();
    let tl = wait_timeline(&d, &id, |e| !of_type(e, "action_executed").is_empty()).await;
    let run = of_type(&tl, "action_executed")[0];
    assert_eq!(run["data"]["result"]["ok"], true, "{run}");
    assert_eq!(run["data"]["result"]["exit_code"], 0);
    assert_eq!(run["data"]["result"]["stdout"], "restarted demo\n");
    assert_eq!(run["data"]["plan"]["argv"][0], "/bin/sh");
    assert_eq!(run["actor"], "system");
    // The service is back.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !(read_pid(&pidfile) > 0 && alive(read_pid(&pidfile))) {
        assert!(Instant::now() < deadline, "the service did not come back");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first = read_pid(&pidfile);

    // Three more detections: two more runs, then the breaker holds the fourth.
    d.send_and_settle(&[down("demo"), down("demo"), down("demo")])
        .await;
    let tl = wait_timeline(&d, &id, |e| {
        of_type(e, "action_executed").len() == 3 && of_type(e, "action_held").len() == 1
    })
    .await;
    let held = of_type(&tl, "action_held")[0];
    assert!(
        held["data"]["reason"]
            .as_str()
            .unwrap()
            .contains("circuit breaker: 3 automatic runs within 1h"),
        "{held}"
    );
    // The last restart's service writes its pid a moment after the action returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut now = read_pid(&pidfile);
    while !(alive(now) && now != first) {
        assert!(
            Instant::now() < deadline,
            "restarted again: {first} → {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        now = read_pid(&pidfile);
    }
    assert!(
        alive(now) && now != first,
        "restarted again: {first} → {now}"
    );
    let status = d.get("/v1/status").await;
    assert_eq!(status["actions"]["succeeded"], 3);
    assert_eq!(status["actions"]["held"], 1);
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("incidentd_action_runs_total{result=\"succeeded\"} 3"),
        "{metrics}"
    );
    let runs = d.get(&format!("/v1/actions?incident={id}")).await;
    assert_eq!(runs["actions"].as_array().unwrap().len(), 3);
    assert!(
        runs["actions"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "succeeded")
    );
    // The open breaker is an incident about the daemon itself, for someone to look at.
    let breaker = d.wait_for_key("incidentd/breaker/restart-demo").await;
    assert_eq!(breaker["service"], "incidentd");
    assert!(
        breaker["title"]
            .as_str()
            .unwrap()
            .contains("circuit breaker of action restart-demo is open"),
        "{breaker}"
    );
}

#[tokio::test]
async fn a_timeout_kills_the_process_group_and_its_children() {
    let dir = tempfile::tempdir().unwrap();
    let child = dir.path().join("child.pid");
    let parent = dir.path().join("parent.pid");
    let bg = dir.path().join("bg.pid");
    let _reap = (
        KillPidfile(child.clone()),
        KillPidfile(parent.clone()),
        KillPidfile(bg.clone()),
    );
    let config = format!(
        r#"
[[action]]
id = "hang"
kind = "exec"
safe = true
timeout = "1s"
shell = true
command = ["echo $$ > {parent}; sleep 60 & echo $! > {child}; echo started; wait"]

[[action]]
id = "leaves-a-daemon"
kind = "exec"
safe = true
timeout = "20s"
shell = true
command = ["sleep 60 & echo $! > {bg}; echo done"]
"#,
        parent = parent.display(),
        child = child.display(),
        bg = bg.display()
    );
    let rules = r#"
[[rule]]
id = "down"
kind = "match"
severity = "sev4"
where = { kind = "svc_down" }
incident_key = "down/{{ event.service }}"
actions = ["hang", "leaves-a-daemon"]
"#;
    let d = TestDaemon::prepare(&config, rules);
    d.wait_healthy().await;
    d.send_and_settle(&[down("slow")]).await;
    let inc = d.wait_for_key("down/slow").await;
    let tl = wait_timeline(&d, &inc["id"], |e| of_type(e, "action_executed").len() == 2).await;
    let executed = of_type(&tl, "action_executed");
    let by = |name: &str| {
        &executed
            .iter()
            .find(|e| e["data"]["action"] == name)
            .unwrap()["data"]["result"]
    };
    // A background process holding the pipe open does not hold up the run.
    let bg_result = by("leaves-a-daemon");
    assert_eq!(bg_result["ok"], true, "{bg_result}");
    assert!(
        bg_result["duration_ms"].as_u64().unwrap() < 10_000,
        "{bg_result}"
    );
    let out = bg_result["stdout"].as_str().unwrap();
    assert!(
        out.starts_with("done\n") && out.contains("output cut"),
        "{out}"
    );
    let result = by("hang");
    assert_eq!(result["ok"], false);
    assert!(
        result["error"]
            .as_str()
            .unwrap()
            .contains("did not finish within 1s; its process group was killed"),
        "{result}"
    );
    assert_eq!(result["killed_by"], 9);
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(read_pid(&parent)) || alive(read_pid(&child)) {
        assert!(
            Instant::now() < deadline,
            "the shell or its child survived the timeout"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(read_pid(&child) > 0, "the child had started");
    let failed = d.get("/v1/actions?state=failed").await;
    assert_eq!(failed["actions"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn unsafe_actions_wait_for_approval_and_dry_runs_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("rolled-back");
    let config = format!(
        r#"
[remediation]
require_approval_for = ["sev1"]

[[action]]
id = "rollback"
kind = "exec"
command = ["touch", "{marker}-{{{{ incident.id }}}}"]

[[action]]
id = "quick"
kind = "exec"
safe = true
approval_timeout = "1s"
command = ["true"]

[[action]]
id = "fast-lane"
kind = "exec"
safe = true
auto_even_for_sev1 = true
command = ["true"]

[[action]]
id = "broken"
kind = "exec"
safe = true
command = ["echo", "{{{{ incident.nonexistent }}}}"]
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

[[rule]]
id = "outage"
kind = "match"
severity = "sev1"
where = { kind = "outage" }
incident_key = "outage/{{ event.service }}"
actions = ["quick", "fast-lane", "broken"]
"#;
    let d = TestDaemon::prepare(&config, rules);
    d.wait_healthy().await;
    let ev = |kind: &str, svc: &str| json!({"kind": kind, "service": svc}).to_string();
    d.send_and_settle(&[ev("bad_deploy", "api"), ev("bad_deploy", "web")])
        .await;
    let api = d.wait_for_key("deploy/api").await;
    let web = d.wait_for_key("deploy/web").await;
    wait_timeline(&d, &web["id"], |e| {
        !of_type(e, "action_proposed").is_empty()
    })
    .await;
    let tl = wait_timeline(&d, &api["id"], |e| {
        !of_type(e, "action_proposed").is_empty()
    })
    .await;
    assert!(
        of_type(&tl, "action_proposed")[0]["note"]
            .as_str()
            .unwrap()
            .contains("unsafe action: an admin must approve it")
    );
    let pending = d.get("/v1/actions?state=pending").await;
    let pending = pending["actions"].as_array().unwrap().clone();
    assert_eq!(pending.len(), 2);
    let run_of = |inc: &Value| {
        pending
            .iter()
            .find(|r| r["incident_id"] == inc["id"])
            .unwrap()["id"]
            .to_string()
    };
    // The table shows them; the dry run shows the exact argv and does nothing.
    let list = d.ctl(&["actions", "list", "--state", "pending"]);
    assert!(
        String::from_utf8_lossy(&list.stdout).contains("rollback"),
        "{list:?}"
    );
    let dry = d.ctl(&["actions", "dry-run", &api["id"].to_string(), "rollback"]);
    let text = String::from_utf8_lossy(&dry.stdout);
    assert!(
        text.contains(&format!("run: touch {}-{}", marker.display(), api["id"])),
        "{text}"
    );
    let target = format!("{}-{}", marker.display(), api["id"]);
    assert!(!Path::new(&target).exists(), "a dry run has no side effect");

    // Approve one (the answer is the result), deny the other.
    let ok = d.ctl(&["actions", "approve", &run_of(&api)]);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).contains("succeeded"));
    assert!(Path::new(&target).exists());
    let no = d.ctl(&[
        "actions",
        "deny",
        &run_of(&web),
        "-m",
        "not during the sale",
    ]);
    assert!(no.status.success(), "{no:?}");
    assert!(!Path::new(&format!("{}-{}", marker.display(), web["id"])).exists());
    let again = d.ctl(&["actions", "approve", &run_of(&web)]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("is denied, not pending"));
    let tl = wait_timeline(&d, &api["id"], |e| {
        !of_type(e, "action_executed").is_empty()
    })
    .await;
    let kinds: Vec<&str> = tl.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "created",
            "detection",
            "action_proposed",
            "action_approved",
            "action_executed",
            // A run that succeeded moves the stage to remediate by itself.
            "stage_changed"
        ]
    );
    assert_eq!(tl[3]["actor"], tl[4]["actor"]);
    assert_ne!(tl[3]["actor"], "system", "the approver is recorded");
    let tl = wait_timeline(&d, &web["id"], |e| !of_type(e, "action_denied").is_empty()).await;
    assert_eq!(
        of_type(&tl, "action_denied")[0]["note"],
        "not during the sale"
    );

    // sev1: even a safe action waits (and expires unanswered), unless it opts out; a template
    // naming a missing field refuses the run with the reason.
    d.send_and_settle(&[ev("outage", "db")]).await;
    let outage = d.wait_for_key("outage/db").await;
    let tl = wait_timeline(&d, &outage["id"], |e| {
        of_type(e, "action_denied").len() == 1 && of_type(e, "action_executed").len() == 2
    })
    .await;
    assert!(
        of_type(&tl, "action_proposed")[0]["note"]
            .as_str()
            .unwrap()
            .contains("sev1 incidents need an admin's approval even for safe actions")
    );
    assert_eq!(of_type(&tl, "action_denied")[0]["data"]["expired"], true);
    let executed = of_type(&tl, "action_executed");
    let fast = executed
        .iter()
        .find(|e| e["data"]["action"] == "fast-lane")
        .unwrap();
    assert_eq!(fast["data"]["result"]["ok"], true);
    let broken = executed
        .iter()
        .find(|e| e["data"]["action"] == "broken")
        .unwrap();
    assert!(
        broken["data"]["result"]["error"]
            .as_str()
            .unwrap()
            .contains("refused: incident.nonexistent is not set (needed by command[1])"),
        "{broken}"
    );
    // Unknown ids are clear errors.
    let (status, err) = d
        .raw(hyper::Method::POST, "/v1/actions/999/approve", b"")
        .await;
    assert_eq!(status, 404, "{err}");
    let (status, err) = d
        .raw(
            hyper::Method::POST,
            "/v1/incidents/1/actions/nope/dry-run",
            b"",
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(err["error"]["message"], "no action `nope` is configured");
}

#[tokio::test]
async fn reverts_signals_http_verification_and_silences() {
    use axum::routing::post;
    let dir = tempfile::tempdir().unwrap();
    // A loopback HTTP receiver for the http action.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let app = axum::Router::new().route(
        "/scale",
        post(move |body: String| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                "scaled"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    // A process to signal, found through its pidfile.
    let mut sleeper = Reaped(
        std::process::Command::new("sleep")
            .arg("300")
            .spawn()
            .unwrap(),
    );
    let sleeper_pid = dir.path().join("sleeper.pid");
    std::fs::write(&sleeper_pid, sleeper.0.id().to_string()).unwrap();
    let banned = dir.path().join("banned");
    let config = format!(
        r#"
[[action]]
id = "ban"
kind = "exec"
safe = true
command = ["touch", "{banned}-{{{{ labels.ip }}}}"]
revert = {{ kind = "exec", command = ["rm", "{banned}-{{{{ labels.ip }}}}"] }}
revert_after = "1s"

[[action]]
id = "ban-until-resolved"
kind = "exec"
safe = true
command = ["touch", "{banned}-r"]
revert = {{ kind = "exec", command = ["rm", "{banned}-r"] }}

[[action]]
id = "scale-up"
kind = "http"
safe = true
url = "http://{addr}/scale"
body = '{{"service": {{{{ incident.service }}}}, "incident": {{{{ incident.id }}}}}}'
headers = {{ "content-type" = "application/json" }}
verify_after = "1s"

[[action]]
id = "stop-sleeper"
kind = "signal"
safe = true
signal = "TERM"
pidfile = "{pid}"
"#,
        banned = banned.display(),
        pid = sleeper_pid.display(),
    );
    let rules = r#"
[[rule]]
id = "scan"
kind = "match"
severity = "sev3"
where = { kind = "scan" }
incident_key = "scan/{{ event.fields.ip }}"
labels = { ip = "{{ event.fields.ip }}" }
actions = ["ban", "ban-until-resolved"]

[[rule]]
id = "slow"
kind = "match"
severity = "sev3"
where = { kind = "slow" }
incident_key = "slow/{{ event.service }}"
actions = ["scale-up", "stop-sleeper"]
"#;
    let d = TestDaemon::prepare(&config, rules);
    d.wait_healthy().await;
    let scan = json!({"kind": "scan", "fields": {"ip": "203.0.113.5"}}).to_string();
    d.send_and_settle(&[scan]).await;
    let inc = d.wait_for_key("scan/203.0.113.5").await;
    let ip_file = format!("{}-203.0.113.5", banned.display());
    let r_file = format!("{}-r", banned.display());
    let tl = wait_timeline(&d, &inc["id"], |e| of_type(e, "action_executed").len() == 2).await;
    assert!(Path::new(&r_file).exists());
    // The timed revert runs by itself; the other waits for the incident to resolve.
    let tl2 = wait_timeline(&d, &inc["id"], |e| of_type(e, "action_executed").len() == 3).await;
    assert!(!Path::new(&ip_file).exists(), "unbanned after revert_after");
    assert_eq!(of_type(&tl2, "action_executed")[2]["data"]["revert"], true);
    assert!(Path::new(&r_file).exists());
    drop(tl);
    d.post(&format!("/v1/incidents/{}/resolve", inc["id"]), json!({}))
        .await
        .unwrap();
    wait_timeline(&d, &inc["id"], |e| of_type(e, "action_executed").len() == 4).await;
    assert!(!Path::new(&r_file).exists(), "reverted on resolve");

    // HTTP with a templated body, a signal through a pidfile, and verification: detections
    // keep coming after the run, so it was ineffective and the severity goes up.
    let slow = json!({"kind": "slow", "service": "api"}).to_string();
    d.send_and_settle(std::slice::from_ref(&slow)).await;
    let inc = d.wait_for_key("slow/api").await;
    let body = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body, json!({"service": "api", "incident": inc["id"]}));
    let status = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Some(st) = sleeper.0.try_wait().unwrap() {
                return st;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the signal action stopped the process");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(15));
    tokio::time::sleep(Duration::from_millis(200)).await;
    d.send_and_settle(&[slow]).await;
    let tl = wait_timeline(&d, &inc["id"], |e| {
        !of_type(e, "action_verified").is_empty() && !of_type(e, "severity_changed").is_empty()
    })
    .await;
    let verified = of_type(&tl, "action_verified")[0];
    assert_eq!(verified["data"]["effective"], false, "{verified}");
    let raised = d.get(&format!("/v1/incidents/{}", inc["id"])).await;
    assert_eq!(raised["severity"], "sev2", "escalated one step");

    // A silenced incident runs no automatic action, and says why.
    d.post(
        "/v1/silences",
        json!({"matchers": {"rule": "slow"}, "duration": "1h", "comment": "load test"}),
    )
    .await
    .unwrap();
    d.send_and_settle(&[json!({"kind": "slow", "service": "web"}).to_string()])
        .await;
    let web = d.wait_for_key("slow/web").await;
    let tl = wait_timeline(&d, &web["id"], |e| of_type(e, "action_held").len() == 2).await;
    assert!(
        of_type(&tl, "action_held")[0]["data"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("silenced by silence")
    );
    assert!(of_type(&tl, "action_executed").is_empty());
}

#[test]
fn bad_actions_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("incidentd.toml");
    std::fs::write(
        &main,
        r#"
[[action]]
id = "a"
kind = "systemd"
command = ["x"]

[[action]]
id = "b"
kind = "exec"
colour = "red"

[[action]]
id = "c"
kind = "signal"
signal = "LOUD"

[[action]]
id = "d"
kind = "exec"
shell = true
command = ["echo {{ event.message }}"]

[[rule]]
id = "r"
kind = "match"
where = { kind = "x" }
actions = ["missing"]
"#,
    )
    .unwrap();
    let out = check_config(&main);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let m = main.display();
    for want in [
        format!("{m}:5: action"),
        "`command` does not apply to a Systemd action".to_owned(),
        "a systemd action needs `unit`".to_owned(),
        "unknown field `colour`".to_owned(),
        "`LOUD` is not a signal name".to_owned(),
        "exactly one of `process`, `pidfile`, `cgroup`".to_owned(),
        "with `shell = true` the command may not hold templates".to_owned(),
        format!("{m}:23: rule[r].actions: no [[action]] has the id `missing`"),
    ] {
        assert!(err.contains(&want), "missing `{want}` in:\n{err}");
    }
}

/// A real zombie: its parent (which reaps only when told to with a second SIGCHLD) is found
/// by the `zombies` mode, shown by the dry run, and signalled by the run.
#[tokio::test]
async fn the_zombie_mode_finds_and_signals_the_parent_of_a_real_zombie() {
    let dir = tempfile::tempdir().unwrap();
    let (zpid_file, reaped) = (dir.path().join("zombie.pid"), dir.path().join("reaped"));
    // A name of its own (prctl PR_SET_NAME), so that the action below, scoped to it, leaves
    // the zombies of anything else on the machine alone (other copies of this test too).
    let name = format!("zpar{}", std::process::id() % 100_000);
    let script = r#"
import ctypes, os, signal, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[3].encode(), 0, 0, 0)
signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGCHLD])
pid = os.fork()
if pid == 0:
    os._exit(0)
signal.sigwait([signal.SIGCHLD])          # the child's exit: it stays a zombie
open(sys.argv[1], "w").write(str(pid))
signal.sigwait([signal.SIGCHLD])          # the action's signal
os.waitpid(pid, 0)
open(sys.argv[2], "w").write("reaped")
time.sleep(300)
"#;
    let parent = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&zpid_file)
        .arg(&reaped)
        .arg(&name)
        .spawn()
        .expect("python3");
    let parent = Reaped(parent);
    let deadline = Instant::now() + Duration::from_secs(10);
    while read_pid(&zpid_file) == 0 {
        assert!(Instant::now() < deadline, "no zombie");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let zombie = read_pid(&zpid_file);
    let config = format!(
        r#"
[[action]]
id = "reap-zombies"
kind = "signal"
safe = true
mode = "zombies"
process = "{name}"

[[action]]
id = "restart-unit"
kind = "systemd"
unit = "{{{{ incident.service }}}}.service"
"#
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    let inc = d
        .post(
            "/v1/incidents",
            json!({"title": "zombies piling up", "service": "api"}),
        )
        .await
        .unwrap();
    let id = inc["id"].to_string();
    let dry = d.ctl(&["-o", "json", "actions", "dry-run", &id, "reap-zombies"]);
    let dry: Value = serde_json::from_slice(&dry.stdout).unwrap();
    let targets = dry["plan"]["targets"].as_array().unwrap();
    let me = targets
        .iter()
        .find(|t| t["pid"] == parent.0.id())
        .unwrap_or_else(|| panic!("parent not among {targets:?}"));
    assert!(
        me["why"]
            .as_str()
            .unwrap()
            .contains(&format!("parent of zombie {zombie}")),
        "{me}"
    );
    assert_eq!(dry["plan"]["signal"], "CHLD");
    assert!(!reaped.exists(), "a dry run sends nothing");
    let unit = d.ctl(&["actions", "dry-run", &id, "restart-unit"]);
    assert!(
        String::from_utf8_lossy(&unit.stdout).contains("run: systemctl restart api.service"),
        "{unit:?}"
    );
    let run = d.ctl(&["-o", "json", "actions", "run", &id, "reap-zombies"]);
    let run: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert!(
        run["outcome"]["stdout"]
            .as_str()
            .unwrap()
            .contains(&format!("sent SIGCHLD to {}", parent.0.id())),
        "{run}"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !reaped.exists() {
        assert!(Instant::now() < deadline, "the parent was not told to reap");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!alive(zombie));
}
