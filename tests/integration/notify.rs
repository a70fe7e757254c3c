//! Notifications against real servers on 127.0.0.1: a recording HTTP receiver standing in for
//! each service's API (asserting the exact payloads), a real SMTP server (aiosmtpd), the real
//! Alertmanager; retries while a receiver is down, delivery after a SIGKILL with a pending
//! outbox, escalation stopped by an acknowledgement, silences.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::receiver::*;
use crate::util::*;

#[tokio::test]
async fn every_http_channel_sends_its_services_exact_format_through_the_lifecycle() {
    let (r, url) = receiver(0).await;
    let config = format!(
        r#"
[notifications]
retry_initial = "100ms"

[[channel]]
id = "hook"
kind = "webhook"
url = "{url}/hook"
headers = {{ "x-token" = "s3cret" }}

[[channel]]
id = "chat"
kind = "slack"
url = "{url}/slack"

[[channel]]
id = "pager"
kind = "pagerduty"
url = "{url}/v2/enqueue"
routing_key = "R0UT1NG"

[[channel]]
id = "gh"
kind = "github"
url = "{url}"
repo = "ops/infra"
token = "ghp_x"

[[channel]]
id = "gl"
kind = "gitlab"
url = "{url}"
project = "ops/infra"
token = "glpat"

[[channel]]
id = "jira"
kind = "jira"
url = "{url}"
project = "OPS"
username = "bot@example.com"
token = "atl"
close_transition = "31"

[[channel]]
id = "audit"
kind = "log"

[[route]]
match = {{ severity = ["sev1", "sev2"] }}
channels = ["hook", "chat", "pager", "gh", "gl", "jira", "audit"]
"#
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    let inc = d
        .post(
            "/v1/incidents",
            json!({"title": "checkout failing", "severity": "sev2", "service": "api",
                "labels": {"team": "payments"}}),
        )
        .await
        .unwrap();
    let id = inc["id"].clone();

    let hook = &r.wait("POST", "/hook", 1).await[0];
    assert_eq!(header(hook, "x-token"), "s3cret");
    assert_eq!(hook.body["version"], 1);
    assert_eq!(hook.body["event"], "opened");
    assert_eq!(hook.body["incident"]["id"], id);
    assert_eq!(hook.body["incident"]["title"], "checkout failing");

    let slack = &r.wait("POST", "/slack", 1).await[0];
    assert_eq!(
        slack.body,
        json!({"text": format!("[sev2] opened: #{id} checkout failing (api)")})
    );

    let pd = &r.wait("POST", "/v2/enqueue", 1).await[0];
    assert_eq!(pd.body["routing_key"], "R0UT1NG");
    assert_eq!(pd.body["event_action"], "trigger");
    let dedup = pd.body["dedup_key"].as_str().unwrap().to_owned();
    assert!(dedup.ends_with(&format!("/{id}")), "{dedup}");
    assert_eq!(pd.body["payload"]["severity"], "error");
    assert_eq!(pd.body["payload"]["component"], "api");
    assert_eq!(
        pd.body["payload"]["summary"],
        format!("[sev2] opened: #{id} checkout failing (api)")
    );

    let gh = &r.wait("POST", "/repos/ops/infra/issues", 1).await[0];
    assert_eq!(header(gh, "authorization"), "Bearer ghp_x");
    assert_eq!(header(gh, "accept"), "application/vnd.github+json");
    assert_eq!(gh.body["labels"], json!(["incidentd", "sev2"]));
    assert!(gh.body["body"].as_str().unwrap().contains("- Service: api"));

    let gl = &r
        .wait("POST", "/api/v4/projects/ops%2Finfra/issues", 1)
        .await[0];
    assert_eq!(header(gl, "private-token"), "glpat");
    assert_eq!(gl.body["labels"], "incidentd,sev2");

    let jira = &r.wait("POST", "/rest/api/3/issue", 1).await[0];
    assert!(header(jira, "authorization").starts_with("Basic "));
    let f = &jira.body["fields"];
    assert_eq!(f["project"]["key"], "OPS");
    assert_eq!(f["priority"]["name"], "High");
    assert_eq!(f["issuetype"]["name"], "Task");
    assert_eq!(f["description"]["type"], "doc");
    assert_eq!(f["description"]["content"][0]["type"], "paragraph");

    // The tickets are remembered on the incident, so later changes comment on them.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = d.get(&format!("/v1/incidents/{id}")).await;
        if now["external_refs"]["jira"] == "OPS-42"
            && now["external_refs"]["gh"] == "17"
            && now["external_refs"]["gl"] == "5"
        {
            break;
        }
        assert!(Instant::now() < deadline, "{now}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    d.post(&format!("/v1/incidents/{id}/ack"), json!({"note": "on it"}))
        .await
        .unwrap();
    let ack = &r.wait("POST", "/v2/enqueue", 2).await[1];
    assert_eq!(
        ack.body,
        json!({"routing_key": "R0UT1NG", "event_action": "acknowledge", "dedup_key": dedup})
    );
    let comment = &r
        .wait("POST", "/repos/ops/infra/issues/17/comments", 1)
        .await[0];
    assert!(
        comment.body["body"].as_str().unwrap().contains(": on it"),
        "{comment:?}"
    );

    d.post(&format!("/v1/incidents/{id}/resolve"), json!({}))
        .await
        .unwrap();
    let resolve = &r.wait("POST", "/v2/enqueue", 3).await[2];
    assert_eq!(resolve.body["event_action"], "resolve");
    assert_eq!(resolve.body["dedup_key"], dedup);
    let close = &r.wait("PATCH", "/repos/ops/infra/issues/17", 1).await[0];
    assert_eq!(
        close.body,
        json!({"state": "closed", "state_reason": "completed"})
    );
    let gl_close = &r
        .wait("PUT", "/api/v4/projects/ops%2Finfra/issues/5", 1)
        .await[0];
    assert_eq!(gl_close.body, json!({"state_event": "close"}));
    r.wait("POST", "/api/v4/projects/ops%2Finfra/issues/5/notes", 2)
        .await;
    let tr = &r
        .wait("POST", "/rest/api/3/issue/OPS-42/transitions", 1)
        .await[0];
    assert_eq!(tr.body, json!({"transition": {"id": "31"}}));
    r.wait("POST", "/rest/api/3/issue/OPS-42/comment", 2).await;
    // One issue per incident, however many changes.
    assert_eq!(r.on("POST", "/repos/ops/infra/issues").len(), 1);

    // 3 events × 7 channels, each recorded once its delivery is answered.
    let deadline = Instant::now() + Duration::from_secs(20);
    let tl = loop {
        let tl = timeline(&d, &id).await;
        let sent = tl.iter().filter(|e| e["type"] == "notification").count();
        if sent >= 21 {
            break tl;
        }
        assert!(Instant::now() < deadline, "{sent} notifications recorded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        tl.iter()
            .any(|e| e["type"] == "ticket_linked" && e["data"]["ref"] == "OPS-42")
    );
    assert!(d.log().contains("notification") && d.log().contains("channel=audit"));
    // The store still replays exactly (ticket links included).
    let mut d = d;
    assert!(d.stop().success());
    let out = std::process::Command::new(BIN)
        .args(["store", "verify", "--state-dir"])
        .arg(&d.state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn a_receiver_that_is_down_for_a_while_gets_everything_and_a_kill_loses_nothing() {
    let (r, url) = receiver(3).await;
    let config = format!(
        r#"
[notifications]
retry_initial = "2s"
retry_max = "1s"

[[channel]]
id = "hook"
kind = "webhook"
url = "{url}/hook"

[[route]]
channels = ["hook"]
"#
    );
    let mut d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    let a = d
        .post("/v1/incidents", json!({"title": "a", "severity": "sev3"}))
        .await
        .unwrap();
    let got = r.wait("POST", "/hook", 1).await;
    assert_eq!(got[0].body["incident"]["id"], a["id"]);
    let st = d.get("/v1/status").await;
    assert!(
        st["notifications"]["failed_attempts"].as_u64().unwrap() >= 3,
        "{st}"
    );

    // Down again; a change is made; the daemon dies with the job still queued.
    r.0.lock().unwrap().fail_first = usize::MAX;
    let failed_before = d.get("/v1/status").await["notifications"]["failed_attempts"]
        .as_u64()
        .unwrap();
    d.post(&format!("/v1/incidents/{}/ack", a["id"]), json!({}))
        .await
        .unwrap();
    // Its first attempt failed: the job is in the outbox when the daemon dies.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get("/v1/status").await["notifications"]["failed_attempts"]
        .as_u64()
        .unwrap()
        == failed_before
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.kill9();
    {
        let mut inner = r.0.lock().unwrap();
        inner.fail_first = 0;
        inner.seen = 0;
    }
    d.restart().await;
    let got = r.wait("POST", "/hook", 2).await;
    assert_eq!(got[1].body["event"], "acknowledged");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(r.on("POST", "/hook").len(), 2, "nothing sent twice");
}

#[tokio::test]
async fn escalation_steps_fire_until_the_incident_is_acknowledged() {
    let (r, url) = receiver(0).await;
    let config = format!(
        r#"
[[channel]]
id = "first"
kind = "webhook"
url = "{url}/first"

[[channel]]
id = "second"
kind = "webhook"
url = "{url}/second"

[[channel]]
id = "third"
kind = "webhook"
url = "{url}/third"

[[escalation]]
id = "oncall"
steps = [{{ after = "0s", channels = ["first"] }}, {{ after = "1s", channels = ["second"] }}, {{ after = "8s", channels = ["third"] }}]

[[route]]
match = {{ severity = "sev1" }}
escalation = "oncall"
"#
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    let inc = d
        .post(
            "/v1/incidents",
            json!({"title": "db down", "severity": "sev1"}),
        )
        .await
        .unwrap();
    let id = inc["id"].clone();
    let first = &r.wait("POST", "/first", 1).await[0];
    assert_eq!(first.body["event"], "escalation_step");
    assert_eq!(first.body["escalation_step"], 0);
    r.wait("POST", "/second", 1).await;
    d.post(&format!("/v1/incidents/{id}/ack"), json!({}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(
        r.on("POST", "/third").is_empty(),
        "the ack stopped the escalation"
    );
    let tl = timeline(&d, &id).await;
    let notes: Vec<&str> = tl
        .iter()
        .filter(|e| e["type"] == "notification")
        .filter_map(|e| e["note"].as_str())
        .collect();
    let steps: Vec<&&str> = notes
        .iter()
        .filter(|n| n.starts_with("escalation"))
        .collect();
    assert_eq!(
        steps,
        [
            &"escalation oncall step 1 sent to first",
            &"escalation oncall step 2 sent to second"
        ]
    );
    // Those paged hear of the acknowledgement; the step never reached is not told.
    let mut acks: Vec<&&str> = notes
        .iter()
        .filter(|n| n.starts_with("acknowledged"))
        .collect();
    acks.sort();
    assert_eq!(
        acks,
        [
            &"acknowledged sent to first",
            &"acknowledged sent to second"
        ]
    );
}

#[tokio::test]
async fn silences_hold_notifications_back_and_the_timeline_says_so() {
    let (r, url) = receiver(0).await;
    let config = format!(
        "[[channel]]\nid = \"hook\"\nkind = \"webhook\"\nurl = \"{url}/hook\"\n\n[[route]]\nchannels = [\"hook\"]\n"
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    d.post(
        "/v1/silences",
        json!({"matchers": {"service": "batch"}, "duration": "1h", "comment": "migration"}),
    )
    .await
    .unwrap();
    let quiet = d
        .post(
            "/v1/incidents",
            json!({"title": "batch slow", "service": "batch"}),
        )
        .await
        .unwrap();
    let loud = d
        .post(
            "/v1/incidents",
            json!({"title": "api slow", "service": "api"}),
        )
        .await
        .unwrap();
    let got = r.wait("POST", "/hook", 1).await;
    assert_eq!(got[0].body["incident"]["id"], loud["id"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let tl = timeline(&d, &quiet["id"]).await;
        if let Some(e) = tl
            .iter()
            .find(|e| e["type"] == "notification" && e["data"]["status"] == "suppressed")
        {
            assert!(e["note"].as_str().unwrap().contains("migration"), "{e}");
            break;
        }
        assert!(Instant::now() < deadline, "{tl:#?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(r.on("POST", "/hook").len(), 1);
    assert_eq!(d.get("/v1/status").await["notifications"]["suppressed"], 1);
}

async fn wait_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn email_reaches_a_real_smtp_server_and_exec_gets_the_json() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = r#"
import os, sys, time
from aiosmtpd.controller import Controller
class Keep:
    async def handle_DATA(self, server, session, envelope):
        n = len([f for f in os.listdir(sys.argv[2]) if f.endswith(".eml")])
        part = os.path.join(sys.argv[2], f"{n}.part")
        with open(part, "wb") as f:
            f.write(envelope.content)
        # whole or not at all: the test reads the mail as soon as its name appears
        os.rename(part, os.path.join(sys.argv[2], f"{n}.eml"))
        return "250 OK"
c = Controller(Keep(), hostname="127.0.0.1", port=int(sys.argv[1]))
c.start()
time.sleep(600)
"#;
    let mailbox = dir.path().join("mail");
    std::fs::create_dir(&mailbox).unwrap();
    let _smtp = Reaped(
        std::process::Command::new("/usr/bin/python3")
            .arg("-c")
            .arg(server)
            .arg(port.to_string())
            .arg(&mailbox)
            .spawn()
            .expect("python3 with aiosmtpd (Debian's python3-aiosmtpd)"),
    );
    wait_port(port).await;
    let out = dir.path().join("exec.json");
    let config = format!(
        r#"
[[channel]]
id = "mail"
kind = "email"
smtp_host = "127.0.0.1"
smtp_port = {port}
starttls = false
from = "incidentd@example.com"
to = ["oncall@example.com", "lead@example.com"]

[[channel]]
id = "script"
kind = "exec"
command = ["sh", "-c", "cat > {out}"]

[[route]]
channels = ["mail", "script"]
"#,
        out = out.display()
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    let inc = d
        .post(
            "/v1/incidents",
            json!({"title": "queue backlog", "severity": "sev2", "runbook": "https://runbooks/q"}),
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mail = loop {
        if let Ok(text) = std::fs::read_to_string(mailbox.join("0.eml")) {
            break text;
        }
        assert!(Instant::now() < deadline, "no mail\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(mail.contains("From: incidentd@example.com"), "{mail}");
    assert!(
        mail.contains("To: oncall@example.com, lead@example.com"),
        "{mail}"
    );
    assert!(
        mail.contains(&format!(
            "Subject: [sev2] opened: #{} queue backlog",
            inc["id"]
        )),
        "{mail}"
    );
    assert!(mail.contains("- Runbook: https://runbooks/q"), "{mail}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let doc: Value = loop {
        if let Ok(text) = std::fs::read_to_string(&out)
            && let Ok(v) = serde_json::from_str(&text)
        {
            break v;
        }
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(doc["event"], "opened");
    assert_eq!(doc["incident"]["id"], inc["id"]);
}

#[tokio::test]
async fn the_real_alertmanager_receives_the_alert_and_its_resolution() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = dir.path().join("am.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: quiet\nreceivers:\n  - name: quiet\n",
    )
    .unwrap();
    let _am = Reaped(
        std::process::Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager (Debian's package)"),
    );
    wait_port(port).await;
    let config = format!(
        r#"
[[channel]]
id = "am"
kind = "alertmanager"
url = "http://127.0.0.1:{port}"

[[route]]
channels = ["am"]
"#
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    let inc = d
        .post(
            "/v1/incidents",
            json!({"title": "disk full", "severity": "sev2", "service": "db", "labels": {"mount": "/var"}}),
        )
        .await
        .unwrap();
    let id = inc["id"].to_string();
    let http = incidentd::http_client().unwrap();
    let alerts = |active: bool| {
        let http = http.clone();
        async move {
            http.get(format!(
                "http://127.0.0.1:{port}/api/v2/alerts?active={active}&silenced=true&inhibited=true&unprocessed=true"
            ))
            .send()
            .await
            .unwrap()
            .json::<Vec<Value>>()
            .await
            .unwrap()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        if let Some(a) = alerts(true)
            .await
            .into_iter()
            .find(|a| a["labels"]["incident_id"] == id.as_str())
        {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "no alert in Alertmanager\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alert["labels"]["severity"], "sev2");
    assert_eq!(alert["labels"]["service"], "db");
    assert_eq!(alert["labels"]["mount"], "/var");
    assert_eq!(alert["annotations"]["summary"], "disk full");
    assert_eq!(alert["status"]["state"], "active");

    d.post(&format!("/v1/incidents/{id}/resolve"), json!({}))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let still = alerts(true)
            .await
            .into_iter()
            .any(|a| a["labels"]["incident_id"] == id.as_str());
        if !still {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the alert stayed active\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn bad_channels_routes_and_escalations_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let main = dir.path().join("incidentd.toml");
    std::fs::write(
        &main,
        r#"[[channel]]
id = "hook"
kind = "webhook"

[[channel]]
id = "pd"
kind = "pagerduty"
routing_key = "${INCIDENTD_TEST_UNSET_VARIABLE}"

[[route]]
channels = ["nowhere"]

[[escalation]]
id = "e"
steps = [{ after = "5m", channels = ["ghost"] }]

[[channel]]
id = "tiny"
kind = "log"
max_queued = 0
"#,
    )
    .unwrap();
    let out = check_config(&main);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let m = main.display();
    for want in [
        format!("{m}:1: channel[hook].url: a webhook channel needs `url`"),
        "the environment variable INCIDENTD_TEST_UNSET_VARIABLE is not set".to_owned(),
        format!("{m}:10: route[0].channels: no [[channel]] has the id `nowhere`"),
        "escalation[e].steps[0]: no [[channel]] has the id `ghost`".to_owned(),
        format!("{m}:17: channel[tiny].max_queued: must be at least 1"),
    ] {
        assert!(err.contains(&want), "missing `{want}` in:\n{err}");
    }
}

#[tokio::test]
async fn user_templates_repeats_and_a_rate_limit() {
    let (r, url) = receiver(0).await;
    let config = format!(
        r#"
[notifications]
templates_dir = "templates"

[[channel]]
id = "custom"
kind = "webhook"
url = "{url}/custom"
template = "custom.json"

[[channel]]
id = "slow"
kind = "webhook"
url = "{url}/slow"
rate_limit = {{ max = 1, per = "2s" }}

[[route]]
match = {{ severity = "sev1" }}
channels = ["custom"]
repeat_interval = "1s"

[[route]]
match = {{ severity = "sev4" }}
channels = ["slow"]
"#
    );
    let template = r#"{"title": {{ incident.title|tojson }}, "event": "{{ event }}",
 "labels": [{% for k, v in incident.labels|items %}"{{ k }}={{ v }}"{% if not loop.last %}, {% endif %}{% endfor %}],
 "incident": {{ incident|tojson }}{% if incident.service %}, "service": "{{ incident.service }}"{% endif %}}"#;
    let d = TestDaemon::prepare_with(&config, "", &[], |root| {
        std::fs::create_dir(root.join("templates")).unwrap();
        std::fs::write(root.join("templates/custom.json"), template).unwrap();
    });
    d.wait_healthy().await;
    let inc = d
        .post(
            "/v1/incidents",
            json!({"title": "a \"quoted\" title", "severity": "sev1",
                "labels": {"a": "1", "b": "2"}}),
        )
        .await
        .unwrap();
    let got = r.wait("POST", "/custom", 3).await;
    let first = &got[0].body;
    assert_eq!(
        first["title"], "a \"quoted\" title",
        "the JSON filter escapes"
    );
    assert_eq!(
        first["labels"],
        json!(["a=1", "b=2"]),
        "loops over nested fields"
    );
    assert_eq!(first["incident"]["id"], inc["id"]);
    assert!(first.get("service").is_none(), "conditionals");
    assert_eq!(got[1].body["event"], "repeat");
    assert_eq!(got[2].body["event"], "repeat");
    // Acknowledged: no more repeats.
    d.post(&format!("/v1/incidents/{}/ack", inc["id"]), json!({}))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after_ack = r.on("POST", "/custom").len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let repeats_after = r
        .on("POST", "/custom")
        .iter()
        .skip(after_ack)
        .filter(|g| g.body["event"] == "repeat")
        .count();
    assert_eq!(repeats_after, 0, "repeats stop once acknowledged");

    // The rate limit delays the second delivery; nothing is dropped.
    let started = Instant::now();
    for t in ["one", "two"] {
        d.post("/v1/incidents", json!({"title": t, "severity": "sev4"}))
            .await
            .unwrap();
    }
    let got = r.wait("POST", "/slow", 2).await;
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "held by the limit"
    );
    let titles: Vec<&str> = got
        .iter()
        .filter_map(|g| g.body["incident"]["title"].as_str())
        .collect();
    assert_eq!(titles.len(), 2);
}

#[tokio::test]
async fn reopening_does_not_pile_up_reminders_and_follow_ups_reach_the_channels_told() {
    let (r, url) = receiver(0).await;
    let config = format!(
        r#"
[[channel]]
id = "hook"
kind = "webhook"
url = "{url}/hook"

[[route]]
match = {{ severity = "sev1" }}
channels = ["hook"]
repeat_interval = "1h"
"#
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    let inc = d
        .post(
            "/v1/incidents",
            json!({"title": "flapping", "severity": "sev1"}),
        )
        .await
        .unwrap();
    let id = inc["id"].clone();
    for step in ["resolve", "reopen", "resolve", "reopen"] {
        d.post(&format!("/v1/incidents/{id}/{step}"), json!({}))
            .await
            .unwrap();
    }
    // Downgraded out of the route: its end still reaches the channel that was told.
    d.post(
        &format!("/v1/incidents/{id}/severity"),
        json!({"severity": "sev4"}),
    )
    .await
    .unwrap();
    d.post(&format!("/v1/incidents/{id}/resolve"), json!({}))
        .await
        .unwrap();
    let got = r.wait("POST", "/hook", 6).await;
    let events = events(&got);
    assert_eq!(
        events,
        [
            "opened", "resolved", "reopened", "resolved", "reopened", "resolved"
        ],
        "in order, the last one after the downgrade"
    );
    // One repeat was scheduled per opening; every one was cancelled by the ends.
    let deadline = Instant::now() + Duration::from_secs(10);
    while d.get("/v1/status").await["notifications"]["queued"] != 0 {
        assert!(
            Instant::now() < deadline,
            "{}",
            d.get("/v1/status").await["notifications"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn an_end_planned_before_the_opening_was_delivered_still_reaches_its_channel() {
    // The opening's first delivery fails, so it is still queued when the incident leaves the
    // route (downgraded) and resolves: the channel that is about to be told must hear the end.
    let (r, url) = receiver(1).await;
    let config = format!(
        r#"
[notifications]
retry_initial = "2s"

[[channel]]
id = "hook"
kind = "webhook"
url = "{url}/hook"

[[route]]
match = {{ severity = "sev1" }}
channels = ["hook"]
"#
    );
    let d = TestDaemon::prepare(&config, "");
    d.wait_healthy().await;
    let inc = d
        .post(
            "/v1/incidents",
            json!({"title": "short-lived", "severity": "sev1"}),
        )
        .await
        .unwrap();
    let id = inc["id"].clone();
    // Wait for the failed attempt, so the opening is known to be undelivered.
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.0.lock().unwrap().seen == 0 {
        assert!(Instant::now() < deadline, "no delivery attempt");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for (path, body) in [
        (
            format!("/v1/incidents/{id}/severity"),
            json!({"severity": "sev4"}),
        ),
        (format!("/v1/incidents/{id}/resolve"), json!({})),
    ] {
        d.post(&path, body).await.unwrap();
    }
    let got = r.wait("POST", "/hook", 2).await;
    let events = events(&got);
    assert_eq!(events, ["opened", "resolved"]);
}
