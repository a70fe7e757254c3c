//! The watermark (README "Time"): a backlog of any age, tailed live, fires exactly what
//! `incidentctl rules test` fires on the same bytes, also through SIGKILLs; quiet input
//! still pages by wall time; no event can move the clock into the future; late events are
//! counted per rule and per input.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{CTL, Rng, SSH_RULE, TestDaemon, append, syslog_stamp};

/// An auth.log written about four months ago: one line a second, about a third of them
/// failed passwords from 55 addresses, five attacking at a time (so windows matter: an
/// address makes about four attempts a minute, around the threshold), the rest noise.
/// Returns the lines and when the first was written (line `i` is `i` seconds later).
fn months_old_auth_log(rng: &mut Rng, n: usize) -> (Vec<String>, time::OffsetDateTime) {
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(120);
    let mut out = Vec::with_capacity(n);
    let mut active: Vec<u64> = (0..5).collect();
    for i in 0..n {
        if i % 200 == 0 {
            active = (0..5).map(|_| rng.below(55)).collect();
        }
        let at = start + time::Duration::seconds(i as i64);
        let stamp = syslog_stamp(at);
        let r = rng.below(100);
        out.push(if r < 33 {
            let ip = active[rng.below(5) as usize];
            let user = if rng.below(3) == 0 {
                format!("invalid user u{}", rng.below(40))
            } else {
                "root".to_owned()
            };
            format!(
                "{stamp} sshd[{}]: Failed password for {user} from 203.0.113.{} port {} ssh2",
                1000 + i % 500,
                ip + 1,
                1024 + rng.below(60000)
            )
        } else if r < 50 {
            format!(
                "{stamp} sshd[{}]: Accepted publickey for deploy from 10.0.0.{} port 50000 ssh2",
                1000 + i % 500,
                rng.below(250)
            )
        } else {
            format!(
                "{stamp} CRON[{}]: pam_unix(cron:session): session opened for user root by (uid=0)",
                2000 + i % 900
            )
        });
    }
    (out, start)
}

/// What `incidentctl rules test` fires on `log`: key → sorted (event time, count).
fn replayed(log: &Path, rules: &Path, year: i32) -> BTreeMap<String, Vec<(String, u64)>> {
    replayed_with(log, rules, year, &[])
}

/// [`replayed`] with more arguments.
fn replayed_with(
    log: &Path,
    rules: &Path,
    year: i32,
    args: &[&str],
) -> BTreeMap<String, Vec<(String, u64)>> {
    let out = std::process::Command::new(CTL)
        .args(["rules", "test"])
        .arg(log)
        .arg("--rules")
        .arg(rules)
        .args([
            "--format",
            "syslog",
            "--year",
            &year.to_string(),
            "-o",
            "json",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut by_key: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for d in report["detections"].as_array().unwrap() {
        by_key
            .entry(d["key"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                d["ts"].as_str().unwrap().to_owned(),
                d["count"].as_u64().unwrap(),
            ));
    }
    for v in by_key.values_mut() {
        v.sort();
    }
    by_key
}

/// What the daemon's incidents hold: key → sorted (event time, count) of every detection
/// entry in their timelines.
async fn detected(d: &TestDaemon) -> BTreeMap<String, Vec<(String, u64)>> {
    let mut by_key: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for i in d.real_incidents().await {
        let timeline = d.get(&format!("/v1/incidents/{}/timeline", i["id"])).await;
        let entries = timeline["timeline"]
            .as_array()
            .or_else(|| timeline.as_array())
            .cloned()
            .unwrap_or_default();
        let list = by_key
            .entry(i["key"].as_str().unwrap().to_owned())
            .or_default();
        for e in entries.iter().filter(|e| e["type"] == "detection") {
            list.push((
                e["data"]["event_ts"].as_str().unwrap().to_owned(),
                e["data"]["count"].as_u64().unwrap(),
            ));
        }
    }
    for v in by_key.values_mut() {
        v.sort();
    }
    by_key
}

fn total(m: &BTreeMap<String, Vec<(String, u64)>>) -> usize {
    m.values().map(Vec::len).sum()
}

/// Tails a months-old log from its start and, with `kills`, SIGKILLs the daemon at random
/// moments while it reads the backlog; then compares every detection with `rules test` on
/// the same file.
///
/// Lines written while the daemon is down continue the log, but only while it was still
/// reading the backlog when it was killed (its clock over 5,000 lines behind the file's
/// last line, so it cannot have caught up in between): lines stamped months ago that arrive after the daemon caught up and moved
/// its clock to wall time are late by definition, which `rules test` cannot know.
async fn backlog_equals_replay(kills: usize) {
    let mut rng = Rng::seeded("backlog");
    let seed = rng.0;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let (lines, start) = months_old_auth_log(&mut rng, 36_000);
    let year = start.year();
    let mut at = 30_000;
    append(&log, &(lines[..at].join("\n") + "\n"));
    let config = format!(
        "checkpoint_interval = \"100ms\"\n[[source.file]]\nid = \"auth\"\npath = \"{}\"\nformat = \"syslog\"\nread_from = \"beginning\"\npoll_interval = \"200ms\"\n",
        log.display()
    );
    let mut d = TestDaemon::prepare(&config, SSH_RULE);
    d.wait_healthy().await;
    let mut written_while_down = 0;
    for _ in 0..kills {
        // Somewhere in the backlog as it is read.
        tokio::time::sleep(Duration::from_millis(rng.below(250))).await;
        let clock = d.get("/v1/status").await["watermark"]["clock"].clone();
        let last = start + time::Duration::seconds(at as i64 - 1 - 5_000);
        let behind = clock.as_str().is_some_and(|c| {
            time::OffsetDateTime::parse(c, &time::format_description::well_known::Rfc3339)
                .is_ok_and(|c| c < last)
        });
        d.kill9();
        if behind && at < lines.len() {
            let n = (1 + rng.below(1500) as usize).min(lines.len() - at);
            append(&log, &(lines[at..at + n].join("\n") + "\n"));
            at += n;
            written_while_down += n;
        }
        d.restart().await;
    }
    eprintln!("{kills} kills, {written_while_down} lines written while the daemon was down");
    let expected = replayed(&log, &d.rules_dir.join("test.toml"), year);
    assert!(
        total(&expected) > 300,
        "the log should fire often: {expected:?}"
    );
    // Caught up: nothing left to read and as many detections as the replay's.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let lag = d.input("auth").await["lag_bytes"].as_u64().unwrap();
        let n = d
            .real_incidents()
            .await
            .iter()
            .map(|i| i["detections"].as_u64().unwrap() as usize)
            .sum::<usize>();
        if (lag == 0 && n >= total(&expected)) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A duplicate still in flight would show by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = detected(&d).await;
    if got != expected {
        let mut diff = Vec::new();
        for k in expected.keys().chain(got.keys()) {
            if expected.get(k) != got.get(k) && !diff.iter().any(|(x, _, _)| x == k) {
                diff.push((k.clone(), expected.get(k).cloned(), got.get(k).cloned()));
            }
        }
        panic!(
            "seed {seed}, {kills} kills: the daemon's detections differ from rules test's on {} keys ({} vs {} detections):\n{diff:#?}\n{}",
            diff.len(),
            total(&expected),
            total(&got),
            d.log()
        );
    }
    let st = d.get("/v1/status").await;
    assert_eq!(st["inputs"][0]["future_ts"], 0, "{st}");
    if kills == 0 {
        // A backlog read at full speed: detections of one incident share store writes.
        assert!(
            st["incidents"]["coalesced"].as_u64().unwrap() > 0,
            "{}",
            st["incidents"]
        );
    }
    eprintln!(
        "{at} lines from {start}, {kills} kills: {} detections over {} keys, the same in the daemon and in rules test",
        total(&got),
        got.len()
    );
}

/// Lines over `max_line_bytes` are cut alike by the daemon's tail and by `rules test
/// --max-line-bytes`: the cut text is what rules match (an address the cut runs into, one it
/// takes away, a pattern only the cut text matches), and only cut lines carry
/// `fields.truncated`. Long lines of 300 bytes to 3 MB, among short ones.
#[tokio::test]
async fn long_lines_are_cut_alike_by_the_tail_and_by_rules_test() {
    const MAX: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let start = time::OffsetDateTime::now_utc() - time::Duration::days(2);
    let lens = [MAX - 1, MAX + 2, 5_000, 70_000, 3_000_000];
    let mut text = String::new();
    let mut cut = 0;
    // First, a line of exactly MAX bytes ending in `\r\n` whose `\r` is the last byte of
    // the tail's first 64 KiB read: not over the limit, wherever the read ends.
    let stamp = syslog_stamp(start);
    let filler = |n: usize| {
        let mut l = format!("{stamp} CRON[7]: ");
        l.extend(std::iter::repeat_n('y', n - l.len() - 1));
        l + "\n"
    };
    while text.len() + 150 + 60 < 65_535 - MAX {
        text.push_str(&filler(150));
    }
    text.push_str(&filler(65_535 - MAX - text.len()));
    let mut exact = format!("{stamp} sshd[1000]: Failed password for root from 203.0.113.9");
    while exact.len() < MAX {
        exact.push('9');
    }
    text.push_str(&exact);
    assert_eq!(text.len(), 65_535);
    text.push_str("\r\n");
    for i in 0..60 {
        let stamp = syslog_stamp(start + time::Duration::seconds(i));
        let len = lens[i as usize % lens.len()];
        let head = format!("{stamp} sshd[1000]: ");
        let mut line = match i % 3 {
            // The address runs on past the limit.
            0 => format!("{head}Failed password for root from 203.0.113.7"),
            // The address comes after the limit.
            1 => format!("{head}Failed password for u{i}"),
            // Matched only once cut (the `!` goes).
            _ => format!("{head}Lost connection from 198.51.100.5"),
        };
        let fill = ['9', 'u', 'x'][i as usize % 3];
        let tail = ["", " from 203.0.113.8 port 22", "!"][i as usize % 3];
        while line.len() + tail.len() < len {
            line.push(fill);
        }
        line.push_str(tail);
        cut += usize::from(line.len() > MAX);
        text.push_str(&line);
        text.push('\n');
        text.push_str(&format!("{stamp} CRON[7]: (root) CMD (true)\n"));
    }
    std::fs::write(&log, &text).unwrap();
    let rules = format!(
        "{SSH_RULE}\n[[rule]]\nid = \"cut\"\nkind = \"match\"\n\
         where = {{ kind = \"log\", \"fields.truncated\" = true }}\nregex = '^(?:Failed|Lost) '\n\
         [[rule]]\nid = \"lost\"\nkind = \"match\"\nregex = 'Lost connection from \\S+x$'\n"
    );
    let config = format!(
        "[[source.file]]\nid = \"auth\"\npath = \"{}\"\nformat = \"syslog\"\nread_from = \"beginning\"\nmax_line_bytes = {MAX}\n",
        log.display()
    );
    let d = TestDaemon::prepare(&config, &rules);
    d.wait_healthy().await;
    let expected = replayed_with(
        &log,
        &d.rules_dir.join("test.toml"),
        start.year(),
        &["--max-line-bytes", &MAX.to_string()],
    );
    let want = total(&expected);
    let deadline = Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = detected(&d).await;
        if total(&got) >= want || Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(got, expected, "{}", d.log());
    // What the cut decides, as the test counts it.
    assert_eq!(expected["cut"].len(), cut, "{expected:?}");
    let lost = lens.iter().filter(|l| **l > MAX).count() * 60 / lens.len() / 3;
    assert_eq!(expected["lost"].len(), lost, "{expected:?}");
    let ip = format!(
        "ssh/203.0.113.7{}",
        "9".repeat(
            MAX - "Dec 31 00:00:00 web-1 sshd[1000]: Failed password for root from 203.0.113.7"
                .len()
        )
    );
    assert!(expected.contains_key(&ip), "{:?}", expected.keys());
    let input = d.input("auth").await;
    assert_eq!(input["oversize"], cut as u64, "{input}");
}

#[tokio::test]
async fn a_months_old_backlog_fires_exactly_what_rules_test_fires() {
    backlog_equals_replay(0).await;
}

#[tokio::test]
async fn a_months_old_backlog_fires_exactly_what_rules_test_fires_through_ten_sigkills() {
    backlog_equals_replay(10).await;
}

const HEARTBEAT_RULE: &str = r#"
[[rule]]
id = "heartbeat"
kind = "absence"
severity = "sev1"
timeout = "3s"
where = { kind = "heartbeat" }
group_by = ["service"]
"#;

/// A service that stops sending heartbeats fires its absence rule by wall time when nothing
/// else arrives: with every input caught up, wall time moves the clock.
#[tokio::test]
async fn quiet_input_still_pages_by_wall_time() {
    let d = TestDaemon::start(HEARTBEAT_RULE).await;
    let beat =
        |ms: i64| json!({"kind": "heartbeat", "service": "api", "ts": ms}).to_string() + "\n";
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    d.send_raw(beat(now).as_bytes());
    let started = Instant::now();
    let inc = d.wait_for_key("heartbeat/api").await;
    assert_eq!(inc["severity"], "sev1");
    // Not before the timeout: the clock is wall time, not something an event pushed ahead.
    assert!(started.elapsed() >= Duration::from_secs(2), "{inc}");
    let st = d.get("/v1/status").await;
    assert!(
        st["watermark"]["wall_advances"].as_u64().unwrap() > 0,
        "{st}"
    );
    assert_eq!(st["watermark"]["inputs_behind"], 0, "{st}");
}

/// One event stamped in the year 9999 is refused with `future_ts` on every input: the
/// ingest socket, `POST /v1/events`, a file, a syslog datagram, a command and a plugin; no
/// absence rule fires for healthy services, and the engine's clock stays near wall time.
#[tokio::test]
async fn future_times_are_refused_on_every_input_and_never_move_the_clock() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    std::fs::write(
        &log,
        "9999-12-31T23:59:59Z far future line\n2020-01-01T00:00:00Z an old line\n",
    )
    .unwrap();
    let config = format!(
        r#"[[source.file]]
id = "app"
path = "{}"
format = "raw"
read_from = "beginning"
poll_interval = "200ms"
# No rule reads this file's lines, which would be skipped unparsed: every one is parsed here.
skip_unmatched = false
[[source.exec]]
id = "cmd"
command = ["/bin/sh", "-c", "echo '{{\"kind\":\"x\",\"ts\":\"9999-12-31T23:59:59Z\"}}'; sleep 60"]
format = "json"
[[source.syslog]]
id = "sys"
socket = "syslog.sock"
[[plugin]]
name = "future"
"#,
        log.display()
    );
    let d = TestDaemon::prepare_with(
        &config,
        &HEARTBEAT_RULE.replace("\"3s\"", "\"20s\""),
        &[],
        |root| {
            let p = root.join("plugins/future");
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(
                p.join("plugin.toml"),
                "name = \"future\"\nkind = \"source\"\ncommand = [\"sh\", \"future.sh\"]\n",
            )
            .unwrap();
            std::fs::write(
                p.join("future.sh"),
                r#"echo '{"type":"hello","name":"future","protocol":1}'
echo '{"type":"event","event":{"kind":"heartbeat","service":"db","ts":"9999-12-31T23:59:59Z"}}'
exec sleep 60
"#,
            )
            .unwrap();
        },
    );
    d.wait_healthy().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let future = r#"{"kind":"heartbeat","service":"db","ts":"9999-12-31T23:59:59Z"}"#;
    d.send_raw(
        format!(
            "{}\n{future}\n",
            json!({"kind":"heartbeat","service":"api","ts": now})
        )
        .as_bytes(),
    );
    let answer = d.post_ndjson(format!("{future}\n")).await;
    assert_eq!(answer["accepted"], 0, "{answer}");
    let why = answer["rejected"][0]["error"].as_str().unwrap();
    assert!(why.contains("skew"), "{answer}");
    let syslog = std::os::unix::net::UnixDatagram::unbound().unwrap();
    syslog
        .send_to(
            b"<34>1 9999-12-31T23:59:59Z web-1 sshd 42 - - far future datagram",
            d.run.join("syslog.sock"),
        )
        .unwrap();
    // A healthy service beats throughout.
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
        d.send_raw(
            (json!({"kind":"heartbeat","service":"api","ts": now}).to_string() + "\n").as_bytes(),
        );
    }
    let st = d
        .wait_input("app", |s| s["future_ts"] == 1 && s["events"] == 1)
        .await;
    assert_eq!(st["future_ts"], 1, "{st}");
    d.wait_input("cmd", |s| s["future_ts"] == 1).await;
    d.wait_input("sys", |s| s["future_ts"] == 1).await;
    let st = d.get("/v1/status").await;
    let ingest = st["sources"].as_array().unwrap();
    assert_eq!(ingest[0]["rejected"]["future_ts"], 1, "{st}");
    assert_eq!(ingest[1]["rejected"]["future_ts"], 1, "{st}");
    let plugin = &st["plugins"][0];
    assert_eq!(plugin["events_emitted"], 0, "{st}");
    assert!(
        plugin["last_error"].as_str().unwrap_or("").contains("skew"),
        "{st}"
    );
    // The clock is near wall time, not in 9999.
    let clock = st["watermark"]["clock"].as_str().unwrap();
    assert!(clock.starts_with("20"), "{st}");
    // The healthy service never went quiet, and no "db" group was ever made.
    assert!(
        d.real_incidents().await.is_empty(),
        "{:?}",
        d.real_incidents().await
    );
    assert!(d.log().contains("future_ts"), "{}", d.log());
}

/// A checkpointed clock ahead of wall time (saved under a generous skew) is pulled back at
/// start, said in the log and in `/v1/status`, and fires nothing.
#[tokio::test]
async fn a_checkpointed_clock_in_the_future_is_pulled_back_at_start() {
    let mut d = TestDaemon::prepare(
        "checkpoint_interval = \"100ms\"\n[engine]\nmax_future_skew = \"99years\"\n",
        HEARTBEAT_RULE,
    );
    d.wait_healthy().await;
    // Sixty years ahead: accepted under this skew.
    let ahead = time::OffsetDateTime::now_utc().unix_timestamp() * 1000 + 60 * 365 * 86_400_000;
    d.send_and_settle(&[json!({"kind":"heartbeat","service":"db","ts": ahead}).to_string()])
        .await;
    let st = d.get("/v1/status").await;
    assert!(
        st["watermark"]["clock"]
            .as_str()
            .unwrap()
            .starts_with("208"),
        "{st}"
    );
    d.stop();
    // Back to the default skew of five minutes.
    let text = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, text.replace("max_future_skew = \"99years\"", "")).unwrap();
    d.restart().await;
    let st = d.get("/v1/status").await;
    let why = st["watermark"]["pulled_back"].as_str().unwrap_or_default();
    assert!(why.contains("208"), "{st}");
    assert!(
        st["watermark"]["clock"].as_str().unwrap().starts_with("20"),
        "{st}"
    );
    assert!(
        !st["watermark"]["clock"]
            .as_str()
            .unwrap()
            .starts_with("208"),
        "{st}"
    );
    assert!(d.log().contains("pulled back"), "{}", d.log());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(d.real_incidents().await.is_empty());
}

const LATE_RULE: &str = r#"
[[rule]]
id = "errors"
kind = "threshold"
threshold = 2
window = "10s"
allowed_lateness = "30s"
where = { kind = "error" }
group_by = ["service"]
"#;

/// `allowed_lateness` is measured against the watermark: an event further behind it than
/// that is dropped, counted for the rule (`/v1/rules`) and for its input (`/v1/status`).
#[tokio::test]
async fn late_events_are_counted_per_rule_and_per_input() {
    let d = TestDaemon::start(LATE_RULE).await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    let ev = |ms: i64| json!({"kind":"error","service":"api","ts": ms}).to_string();
    d.send_and_settle(&[ev(now), ev(now - 120_000), ev(now - 5_000)])
        .await;
    let rules: Value = d.get("/v1/rules").await;
    let rule = rules
        .as_array()
        .or_else(|| rules["rules"].as_array())
        .unwrap()
        .iter()
        .find(|r| r["id"] == "errors")
        .cloned()
        .unwrap();
    assert_eq!(rule["late"], 1, "{rules}");
    // The one within the lateness counted: two errors fired.
    d.wait_for_key("errors/api").await;
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let st = d.get("/v1/status").await;
        if st["watermark"]["late_by_input"]["ingest"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "{st}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A timer detection keeps its id across a crash: an absence that fired by wall time after
/// the last checkpoint fires again from the restored state after SIGKILL, and is recognised
/// as applied (same rule, group and due time), so the incident keeps one detection.
#[tokio::test]
async fn a_timer_detection_keeps_its_id_across_sigkill() {
    let mut d = TestDaemon::prepare(
        "checkpoint_interval = \"3s\"\n",
        &HEARTBEAT_RULE.replace("\"3s\"", "\"4s\""),
    );
    d.wait_healthy().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp() * 1000;
    d.send_raw(
        (json!({"kind":"heartbeat","service":"api","ts": now}).to_string() + "\n").as_bytes(),
    );
    let inc = d.wait_for_key("heartbeat/api").await;
    // Readers may see the incident before the manager's flush; the stream sends only what
    // is durable. The kill must come after that (else the detection is rightly lost).
    let mut s = d.client.stream("/v1/stream?after=0", None).await.unwrap();
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("the opening is streamed once durable")
            .unwrap()
            .expect("the stream stays open");
        if m.event == "incident_created" {
            break;
        }
    }
    drop(s);
    // Fired by wall time after the checkpoint that holds the heartbeat, before the next one.
    d.kill9();
    d.restart().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let st = d.get("/v1/status").await;
        if st["engine"]["detections_replayed"].as_u64().unwrap() >= 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restored timer did not fire again (checkpoint after the fire?)\n{st}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = d.real_incidents().await;
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0]["id"], inc["id"]);
    assert_eq!(after[0]["detections"], 1, "{after:?}");
}
