//! Plugins, run for real: the shipped zscore (Python) and cert-expiry (shell) plugins end to
//! end, and small shell plugins that crash, stop reading, write garbage, never say hello,
//! speak another protocol, or echo events back.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::*;

const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/plugins");

/// Writes `plugins/NAME/plugin.toml` and `plugins/NAME/run.sh` under `root`.
fn plugin(root: &Path, name: &str, manifest_extra: &str, script: &str) {
    let dir = root.join("plugins").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("plugin.toml"),
        format!("name = \"{name}\"\ncommand = [\"sh\", \"run.sh\"]\n{manifest_extra}"),
    )
    .unwrap();
    std::fs::write(dir.join("run.sh"), script).unwrap();
}

/// Links a shipped plugin into `root/plugins`.
fn shipped(root: &Path, name: &str) {
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    std::os::unix::fs::symlink(
        Path::new(SHIPPED).join(name),
        root.join("plugins").join(name),
    )
    .unwrap();
}

async fn plugin_status(d: &TestDaemon, name: &str) -> Value {
    let st = d.get("/v1/status").await;
    st["plugins"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no plugin {name} in {st}"))
}

async fn wait_plugin(d: &TestDaemon, name: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = plugin_status(d, name).await;
        if ok(&p) {
            return p;
        }
        assert!(Instant::now() < deadline, "{p}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A detector that turns each event it gets into a detection keyed by the event's message.
const ECHO_DETECTOR: &str = r#"
printf '{"type":"hello","name":"%s","protocol":1}\n' "$INCIDENTD_PLUGIN"
while IFS= read -r line; do
  case "$line" in
    *'"type":"event"'*)
      msg=$(printf '%s' "$line" | sed 's/.*"message":"\([^"]*\)".*/\1/')
      printf '{"type":"detection","key":"%s","summary":"saw %s","severity":"sev2","labels":{"from":"echo"}}\n' "$msg" "$msg" ;;
    *'"type":"shutdown"'*) exit 0 ;;
  esac
done
"#;

#[tokio::test]
async fn the_shipped_zscore_detector_turns_an_outlier_into_an_incident() {
    let d = TestDaemon::prepare_with(
        "[[plugin]]\nname = \"zscore\"\nenv = { ZSCORE_MIN_SAMPLES = \"8\" }\n",
        "[[rule]]\nid = \"metric-anomaly\"\nkind = \"plugin\"\nplugin = \"zscore\"\nseverity = \"low\"\n",
        &[],
        |root| shipped(root, "zscore"),
    );
    d.wait_healthy().await;
    wait_plugin(&d, "zscore", |p| p["state"] == "running").await;
    let mut lines: Vec<String> = (0..12)
        .map(|i| {
            json!({"kind": "metric", "host": "db-1", "value": 50.0 + (i % 3) as f64,
                "labels": {"metric": "latency"}})
            .to_string()
        })
        .collect();
    lines.push(
        json!({"kind": "metric", "host": "db-1", "value": 900.0, "labels": {"metric": "latency"}})
            .to_string(),
    );
    d.send_and_settle(&lines).await;
    let inc = d.wait_for_key("metric-anomaly/db-1/latency").await;
    assert_eq!(inc["severity"], "sev4");
    assert_eq!(inc["rules"], json!(["metric-anomaly"]));
    assert_eq!(inc["labels"]["plugin"], "zscore");
    assert_eq!(inc["labels"]["value"], "900");
    assert!(
        inc["title"]
            .as_str()
            .unwrap()
            .contains("latency is anomalous on db-1"),
        "{inc}"
    );
    assert_eq!(inc["evidence"][0]["value"], 900.0);
    let p = plugin_status(&d, "zscore").await;
    assert_eq!(p["detections"], 1);
    assert_eq!(p["events_sent"], 13);
    assert_eq!(p["malformed"], 0);
}

#[tokio::test]
async fn the_shipped_cert_expiry_source_feeds_the_shipped_rule() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("soon.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "5", "-subj", "/CN=soon",
        ])
        .arg("-keyout")
        .arg(dir.path().join("key.pem"))
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "{out:?}");
    let rules = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/etc/rules.d/plugins.toml"
    ))
    .unwrap()
    // Only the certificate rule: the zscore plugin is not enabled here.
    .split("# The cert-expiry plugin's metrics")
    .nth(1)
    .map(|rest| format!("#{rest}"))
    .unwrap();
    let d = TestDaemon::prepare_with(
        &format!(
            // The rule's 3h window needs a retention as long (the shipped config has 8h).
            "retention = \"3h\"\n[[plugin]]\nname = \"cert-expiry\"\nargs = [\"{}\"]\n",
            cert.display()
        ),
        &rules,
        &[],
        |root| shipped(root, "cert-expiry"),
    );
    d.wait_healthy().await;
    let key = format!("tls-cert-expiring/{}", cert.display());
    let inc = d.wait_for_key(&key).await;
    assert_eq!(inc["severity"], "sev2");
    assert_eq!(
        inc["title"],
        format!(
            "TLS certificate {} expires in under 14 days",
            cert.display()
        )
    );
    let days = inc["evidence"][0]["value"].as_f64().unwrap();
    assert!((3.0..=5.0).contains(&days), "{days}");
    assert_eq!(inc["evidence"][0]["source"], "plugin:cert-expiry");
}

#[tokio::test]
async fn a_crashing_plugin_is_restarted_and_its_detections_resume() {
    // Handles two events per life, then crashes.
    let crashy = r#"
printf '{"type":"hello","name":"crashy","protocol":1}\n'
n=0
while IFS= read -r line; do
  case "$line" in
    *'"type":"event"'*)
      msg=$(printf '%s' "$line" | sed 's/.*"message":"\([^"]*\)".*/\1/')
      printf '{"type":"detection","key":"%s","summary":"saw %s"}\n' "$msg" "$msg"
      n=$((n+1)); [ "$n" -ge 2 ] && { echo "crashy: giving up after $n events" >&2; exit 3; } ;;
  esac
done
"#;
    let d = TestDaemon::prepare_with(
        "[[plugin]]\nname = \"crashy\"\n",
        "[[rule]]\nid = \"crashy\"\nkind = \"plugin\"\nplugin = \"crashy\"\n",
        &[],
        |root| {
            plugin(
                root,
                "crashy",
                "kind = \"detector\"\nsubscribe = { kind = \"probe\" }\nrestart_delay = \"100ms\"\n",
                crashy,
            )
        },
    );
    d.wait_healthy().await;
    wait_plugin(&d, "crashy", |p| p["state"] == "running").await;
    let ev = |m: &str| json!({"kind": "probe", "message": m}).to_string();
    d.send_and_settle(&[ev("one"), ev("two")]).await;
    let p = wait_plugin(&d, "crashy", |p| p["restarts"].as_u64().unwrap_or(0) >= 1).await;
    assert!(p["last_error"].as_str().unwrap().contains("exited"), "{p}");
    d.send_and_settle(&[ev("three"), ev("four")]).await;
    for k in ["one", "two", "three", "four"] {
        d.wait_for_key(&format!("crashy/{k}")).await;
    }
    let log = d.log();
    assert!(log.contains("plugin stopped; restarting it"));
    assert!(
        log.contains("crashy: giving up after 2 events"),
        "its last words reach the log"
    );
}

#[tokio::test]
async fn a_plugin_that_stops_reading_slows_nothing_and_loses_only_its_own_events() {
    let deaf = r#"
printf '{"type":"hello","name":"deaf","protocol":1}\n'
exec sleep 300
"#;
    let d = TestDaemon::prepare_with(
        "[[plugin]]\nname = \"deaf\"\n\n[[plugin]]\nname = \"echo\"\n",
        "[[rule]]\nid = \"echo\"\nkind = \"plugin\"\nplugin = \"echo\"\n",
        &[],
        |root| {
            plugin(
                root,
                "deaf",
                "kind = \"detector\"\nsubscribe = {}\nqueue = 2\n",
                deaf,
            );
            plugin(
                root,
                "echo",
                "kind = \"detector\"\nsubscribe = { kind = \"ping\" }\nqueue = 100000\n",
                ECHO_DETECTOR,
            );
        },
    );
    d.wait_healthy().await;
    wait_plugin(&d, "deaf", |p| p["state"] == "running").await;
    wait_plugin(&d, "echo", |p| p["state"] == "running").await;
    // Far more than the deaf plugin's queue and pipe hold.
    let body: String = (0..3000)
        .map(|i| json!({"kind": "bulk", "message": format!("b{i}")}).to_string() + "\n")
        .collect();
    let v = d.post_ndjson(body).await;
    assert_eq!(v["accepted"], 3000);
    d.send_and_settle(&[json!({"kind": "ping", "message": "last"}).to_string()])
        .await;
    d.wait_for_key("echo/last").await;
    let deaf = plugin_status(&d, "deaf").await;
    assert!(deaf["events_dropped"].as_u64().unwrap() > 0, "{deaf}");
    assert_eq!(deaf["state"], "running");
    let echo = plugin_status(&d, "echo").await;
    assert_eq!(echo["events_dropped"], 0, "{echo}");
    let status = d.get("/v1/status").await;
    assert!(status["engine"]["events"].as_u64().unwrap() >= 3001);
}

#[tokio::test]
async fn bad_output_no_hello_and_a_wrong_protocol_are_refused_with_reasons() {
    let noisy = r#"
printf '{"type":"hello","name":"noisy","protocol":1}\n'
echo 'this is not json'
echo '{"type":"detection","summary":"no key"}'
echo '{"type":"gossip"}'
echo '{"type":"log","level":"warn","message":"careful now"}'
head -c 2000000 /dev/zero | tr '\0' 'x'; echo
printf '\377\376 not text\n'
echo '{"type":"detection","key":"fine","summary":"a good one"}'
echo 'complaining on stderr' >&2
exec sleep 300
"#;
    let silent = "echo $$ > silent.pid\nexec sleep 300\n";
    let future = r#"
printf '{"type":"hello","name":"future","protocol":2}\n'
exec sleep 300
"#;
    let d = TestDaemon::prepare_with(
        "[[plugin]]\nname = \"noisy\"\n[[plugin]]\nname = \"silent\"\n[[plugin]]\nname = \"future\"\n",
        "[[rule]]\nid = \"noisy\"\nkind = \"plugin\"\nplugin = \"noisy\"\n",
        &[],
        |root| {
            plugin(
                root,
                "noisy",
                "kind = \"detector\"\nsubscribe = { kind = \"none\" }\n",
                noisy,
            );
            plugin(
                root,
                "silent",
                "kind = \"source\"\nhello_timeout = \"300ms\"\nrestart_delay = \"5s\"\n",
                silent,
            );
            plugin(
                root,
                "future",
                "kind = \"source\"\nrestart_delay = \"5s\"\n",
                future,
            );
        },
    );
    d.wait_healthy().await;
    d.wait_for_key("noisy/fine").await;
    let noisy = wait_plugin(&d, "noisy", |p| p["malformed"] == 5).await;
    assert_eq!(noisy["detections"], 1);
    assert_eq!(noisy["state"], "running");
    assert_eq!(noisy["restarts"], 0, "bad lines are refused, not fatal");
    let silent = wait_plugin(&d, "silent", |p| !p["last_error"].is_null()).await;
    assert_eq!(silent["last_error"], "no hello within 300ms; killed");
    let pid: i32 = std::fs::read_to_string(d.path("plugins/silent/silent.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let gone = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z")
    {
        assert!(Instant::now() < gone, "the silent plugin was not killed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let future = wait_plugin(&d, "future", |p| !p["last_error"].is_null()).await;
    assert_eq!(
        future["last_error"],
        "it speaks protocol 2; this incidentd speaks protocol 1"
    );
    let log = d.log();
    assert!(
        log.contains("careful now") && log.contains("complaining on stderr"),
        "{log}"
    );
    let metrics = d.metrics().await;
    assert!(
        metrics.contains("incidentd_plugin_messages_total{plugin=\"noisy\",type=\"malformed\"} 5"),
        "{metrics}"
    );
}

#[tokio::test]
async fn events_from_a_plugin_never_go_back_to_it_and_reload_adds_and_removes_plugins() {
    // Sends each event it gets back as a new event of the same kind: without the guard this
    // would loop forever.
    let mirror = r#"
printf '{"type":"hello","name":"mirror","protocol":1}\n'
sleep 300 &
echo $! > bg.pid
while IFS= read -r line; do
  case "$line" in
    *'"type":"event"'*) printf '{"type":"event","event":{"kind":"loop","message":"mirrored"}}\n' ;;
    *'"type":"shutdown"'*) exit 0 ;;
  esac
done
"#;
    let mut d = TestDaemon::prepare_with("[[plugin]]\nname = \"mirror\"\n", "", &[], |root| {
        plugin(
            root,
            "mirror",
            "kind = \"detector\"\nsubscribe = { kind = \"loop\" }\n",
            mirror,
        );
        plugin(
            root,
            "echo",
            "kind = \"detector\"\nsubscribe = { kind = \"ping\" }\n",
            ECHO_DETECTOR,
        );
    });
    d.wait_healthy().await;
    wait_plugin(&d, "mirror", |p| p["state"] == "running").await;
    d.send_and_settle(&[json!({"kind": "loop", "message": "start"}).to_string()])
        .await;
    wait_plugin(&d, "mirror", |p| p["events_emitted"] == 1).await;
    d.send_and_settle(&[json!({"kind": "loop", "message": "again"}).to_string()])
        .await;
    let m = wait_plugin(&d, "mirror", |p| p["events_emitted"] == 2).await;
    assert_eq!(m["events_sent"], 2, "its own events never came back: {m}");
    let bg: i32 = std::fs::read_to_string(d.path("plugins/mirror/bg.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(bg));

    // Reload: echo in, mirror out.
    std::fs::write(
        &d.config,
        "rules_dir = \"rules.d\"\nplugins_dir = \"plugins\"\n[daemon]\nshutdown_timeout = \"10s\"\n[[plugin]]\nname = \"echo\"\n",
    )
    .unwrap();
    std::fs::write(
        d.rules_dir.join("test.toml"),
        "[[rule]]\nid = \"echo\"\nkind = \"plugin\"\nplugin = \"echo\"\n",
    )
    .unwrap();
    let v = d.post("/v1/reload", json!({})).await.unwrap();
    assert!(
        v["message"].as_str().unwrap().starts_with("reloaded"),
        "{v}"
    );
    wait_plugin(&d, "echo", |p| p["state"] == "running").await;
    let st = d.get("/v1/status").await;
    assert_eq!(st["plugins"].as_array().unwrap().len(), 1, "{st}");
    let gone = Instant::now() + Duration::from_secs(10);
    while alive(bg) {
        assert!(
            Instant::now() < gone,
            "a removed plugin's child kept running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    d.send_and_settle(&[json!({"kind": "ping", "message": "after-reload"}).to_string()])
        .await;
    let inc = d.wait_for_key("echo/after-reload").await;
    assert_eq!(inc["severity"], "sev2", "the plugin's worse severity wins");
    // A clean stop ends the plugins too.
    assert!(d.stop().success());
    assert!(
        d.log().contains("plugin stopped plugin=echo"),
        "{}",
        d.log()
    );
}

#[test]
fn bad_manifests_and_bindings_are_refused_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    plugin(
        dir.path(),
        "wrongname",
        "name2 = 1\nkind = \"detector\"\n",
        "",
    );
    std::fs::write(
        dir.path().join("plugins/wrongname/plugin.toml"),
        "name = \"other\"\nkind = \"detector\"\ncommand = [\"sh\"]\n",
    )
    .unwrap();
    plugin(
        dir.path(),
        "typo",
        "kind = \"source\"\ncolour = \"red\"\n",
        "",
    );
    plugin(dir.path(), "src", "kind = \"source\"\n", "");
    let main = dir.path().join("incidentd.toml");
    std::fs::write(
        &main,
        r#"plugins_dir = "plugins"

[[plugin]]
name = "wrongname"

[[plugin]]
name = "typo"

[[plugin]]
name = "src"

[[plugin]]
name = "missing"

[[rule]]
id = "r"
kind = "plugin"
plugin = "src"

[[rule]]
id = "q"
kind = "plugin"
plugin = "nowhere"
"#,
    )
    .unwrap();
    let out = check_config(&main);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let p = dir.path().join("plugins");
    for want in [
        format!(
            "{}:1: name: the manifest says `other`, but it is in the folder of plugin `wrongname`",
            p.join("wrongname/plugin.toml").display()
        ),
        "a detector needs `subscribe`".to_owned(),
        format!("{}:4:", p.join("typo/plugin.toml").display()),
        "unknown field `colour`".to_owned(),
        "cannot read the manifest of plugin `missing`".to_owned(),
        format!(
            "{}:15: rule[r].plugin: plugin `src` is a source",
            main.display()
        ),
        "plugin `nowhere` is not enabled".to_owned(),
    ] {
        assert!(err.contains(&want), "missing `{want}` in:\n{err}");
    }
}
