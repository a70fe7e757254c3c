//! The file tail's line filter against a real daemon: lines no rule could match are counted
//! (`skipped`) and not parsed, and the incidents are exactly those of a tail that parses
//! every line; hostile lines (invalid UTF-8, CRLF, over the limit, a `<PRI>` prefix, the
//! rule's words out of order) never cost a detection; a reload changes what is skipped.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::util::{TestDaemon, append, syslog_stamp};

/// One incident per matching line, keyed by the tail's id and the line's number.
const FAILED_RULE: &str = r#"
[[rule]]
id = "failed"
kind = "match"
where = { kind = "log" }
regex = '^Failed password for u(?P<n>\d+) from \S+'
incident_key = "failed/{{ event.source }}/{{ labels.n }}"
"#;

fn file_source(id: &str, path: &std::path::Path, extra: &str) -> String {
    format!(
        "[[source.file]]\nid = \"{id}\"\npath = \"{}\"\nformat = \"syslog\"\nread_from = \"beginning\"\nmax_line_bytes = 1024\npoll_interval = \"200ms\"\n{extra}\n",
        path.display()
    )
}

/// The `n` of every incident of rule `failed` from source `source`.
async fn failed_from(d: &TestDaemon, source: &str) -> BTreeSet<u32> {
    let prefix = format!("failed/{source}/");
    d.incidents("")
        .await
        .iter()
        .filter_map(|i| i["key"].as_str()?.strip_prefix(&prefix)?.parse().ok())
        .collect()
}

async fn wait_failed(d: &TestDaemon, source: &str, want: &BTreeSet<u32>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = failed_from(d, source).await;
        if got == *want {
            return;
        }
        assert!(
            Instant::now() < deadline && got.is_subset(want),
            "{source}: got {got:?}, want {want:?}\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A log where most lines are noise, with every kind of line that must still count, and
/// the numbers of the lines that must give an incident.
fn hostile_log() -> (Vec<u8>, BTreeSet<u32>) {
    let stamp = syslog_stamp(time::OffsetDateTime::now_utc());
    let mut log = Vec::new();
    let mut want = BTreeSet::new();
    for n in 0..600u32 {
        let line = match n % 10 {
            0 => {
                want.insert(n);
                format!(
                    "{stamp} sshd[1]: Failed password for u{n} from 10.0.0.{} port 22 ssh2\n",
                    n % 250
                )
            }
            // The rule's words, but not its pattern.
            1 => format!("{stamp} sshd[1]: Failed password for  from nowhere u{n}\n"),
            2 => format!("{stamp} sshd[1]: password for u{n} Failed from 10.0.0.1\n"),
            // CRLF: the carriage return is not part of the message.
            3 => {
                want.insert(n);
                format!("{stamp} sshd[1]: Failed password for u{n} from 10.0.0.3\r\n")
            }
            // A syslog priority in front.
            4 => {
                want.insert(n);
                format!("<38>{stamp} sshd[1]: Failed password for u{n} from 10.0.0.4\n")
            }
            5 => "\n".to_owned(),
            _ => format!("{stamp} CRON[2]: pam_unix(cron:session): session opened for user u{n}\n"),
        };
        log.extend_from_slice(line.as_bytes());
    }
    // Invalid UTF-8 after the address: decoded lossily, still the rule's line.
    want.insert(1001);
    log.extend_from_slice(
        format!("{stamp} sshd[1]: Failed password for u1001 from 10.9.9.9").as_bytes(),
    );
    log.extend_from_slice(b"\xff\n");
    // Over the limit (1,024 bytes): cut, and its start still matches.
    want.insert(1002);
    log.extend_from_slice(
        format!(
            "{stamp} sshd[1]: Failed password for u1002 from 10.9.9.8 {}\n",
            "x".repeat(3000)
        )
        .as_bytes(),
    );
    (log, want)
}

#[tokio::test]
async fn a_tail_parses_only_lines_a_rule_could_match_and_finds_the_same_incidents() {
    let dir = tempfile::tempdir().unwrap();
    let (fast, every) = (dir.path().join("fast.log"), dir.path().join("every.log"));
    let (log, mut want) = hostile_log();
    std::fs::write(&fast, &log).unwrap();
    std::fs::write(&every, &log).unwrap();
    let sources = format!(
        "{}{}",
        file_source("fast", &fast, ""),
        file_source("every", &every, "skip_unmatched = false")
    );
    let d = TestDaemon::prepare(&sources, FAILED_RULE);
    d.wait_healthy().await;
    wait_failed(&d, "fast", &want).await;
    wait_failed(&d, "every", &want).await;

    // A partial line waits for its newline, then counts; appended noise is skipped.
    let stamp = syslog_stamp(time::OffsetDateTime::now_utc());
    for p in [&fast, &every] {
        append(
            p,
            &format!("{stamp} sshd[1]: Failed password for u2000 from 10.1.1.1"),
        );
        append(p, &format!(" port 1\n{stamp} CRON[2]: noise\n"));
    }
    want.insert(2000);
    wait_failed(&d, "fast", &want).await;
    wait_failed(&d, "every", &want).await;

    let total = 600 + 2 + 2;
    let fast_st = d.wait_input("fast", |s| s["lines"] == total).await;
    let every_st = d.wait_input("every", |s| s["lines"] == total).await;
    assert_eq!(every_st["skipped"], 0, "{every_st}");
    let skipped = fast_st["skipped"].as_u64().unwrap();
    let events = fast_st["events"].as_u64().unwrap();
    // The 60 blank lines are skipped too; the noise (360 lines and the appended one) is, but
    // for the first line of each read, which is always parsed.
    assert!(skipped >= 60 + 361 - 5, "{fast_st}");
    assert_eq!(skipped + events, total, "{fast_st}");
    assert_eq!(every_st["events"], total - 60, "{every_st}");
    for st in [&fast_st, &every_st] {
        assert_eq!(st["oversize"], 1, "{st}");
        assert_eq!(st["invalid_utf8"], 1, "{st}");
    }
    let metrics = d.metrics().await;
    assert!(
        metrics.contains(&format!(
            "incidentd_source_skipped_lines_total{{source=\"fast\"}} {skipped}"
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_reload_changes_which_lines_are_skipped_and_a_rule_on_every_line_stops_it() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    let stamp = syslog_stamp(time::OffsetDateTime::now_utc());
    let accepted = |from: u32, to: u32| -> String {
        (from..to)
            .map(|n| format!("{stamp} sshd[1]: Accepted password for u{n} from 10.0.0.1\n"))
            .collect()
    };
    std::fs::write(&log, accepted(0, 50)).unwrap();
    let d = TestDaemon::prepare(&file_source("auth", &log, ""), FAILED_RULE);
    d.wait_healthy().await;
    let st = d.wait_input("auth", |s| s["lines"] == 50).await;
    // Only the first line of the read was parsed.
    assert_eq!(st["skipped"], 49, "{st}");

    // A rule for the accepted logins: the lines written from now on count.
    std::fs::write(
        d.rules_dir.join("accepted.toml"),
        r#"
[[rule]]
id = "accepted"
kind = "match"
regex = '^Accepted password for u(?P<n>\d+) '
incident_key = "accepted/{{ labels.n }}"
"#,
    )
    .unwrap();
    let v = d.post("/v1/reload", serde_json::json!({})).await.unwrap();
    assert_eq!(v["reloaded"], true);
    append(&log, &accepted(50, 60));
    d.wait_input("auth", |s| s["lines"] == 60).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let keys: BTreeSet<String> = d
            .incidents("limit=500")
            .await
            .iter()
            .filter_map(|i| i["key"].as_str().map(str::to_owned))
            .filter(|k| k.starts_with("accepted/"))
            .collect();
        let want: BTreeSet<String> = (50..60).map(|n| format!("accepted/{n}")).collect();
        if want.is_subset(&keys) {
            break;
        }
        assert!(Instant::now() < deadline, "{keys:?}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(d.input("auth").await["skipped"], 49);

    // A rule that counts every log line (no regex): nothing may be skipped any more.
    std::fs::write(
        d.rules_dir.join("all.toml"),
        "[[rule]]\nid = \"all\"\nkind = \"match\"\nwhere = { kind = \"log\", message = { contains = \"zzz\" } }\n",
    )
    .unwrap();
    d.post("/v1/reload", serde_json::json!({})).await.unwrap();
    append(
        &log,
        &format!("{stamp} CRON[2]: noise\n{stamp} CRON[2]: noise zzz\n"),
    );
    let st = d.wait_input("auth", |s| s["lines"] == 62).await;
    assert_eq!(st["skipped"], 49, "{st}");
    d.wait_for_key("all").await;
}

/// A detector plugin that takes the events its `subscribe` chooses and does nothing with them.
const QUIET_DETECTOR: &str = r#"
printf '{"type":"hello","name":"%s","protocol":1}\n' "$INCIDENTD_PLUGIN"
while IFS= read -r line; do
  case "$line" in
    *'"type":"shutdown"'*) exit 0 ;;
  esac
done
"#;

#[tokio::test]
async fn a_detector_plugin_gets_every_event_it_subscribes_to_and_no_other_source_stops_skipping() {
    let dir = tempfile::tempdir().unwrap();
    let (auth, app) = (dir.path().join("auth.log"), dir.path().join("app.log"));
    let stamp = syslog_stamp(time::OffsetDateTime::now_utc());
    let noise: String = (0..40)
        .map(|n| format!("{stamp} CRON[2]: session opened for u{n}\n"))
        .collect();
    std::fs::write(&auth, &noise).unwrap();
    std::fs::write(&app, &noise).unwrap();
    let config = format!(
        "{}{}[[plugin]]\nname = \"logs\"\n",
        file_source("auth", &auth, ""),
        // Events of kind `app`: neither the plugin nor the rule sees them.
        file_source("app", &app, "kind = \"app\"")
    );
    let d = TestDaemon::prepare_with(&config, FAILED_RULE, &[], |root| {
        let p = root.join("plugins/logs");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("plugin.toml"),
            "name = \"logs\"\nkind = \"detector\"\ncommand = [\"sh\", \"run.sh\"]\nsubscribe = { kind = \"log\" }\n",
        )
        .unwrap();
        std::fs::write(p.join("run.sh"), QUIET_DETECTOR).unwrap();
    });
    d.wait_healthy().await;
    let st = d.wait_input("auth", |s| s["lines"] == 40).await;
    assert_eq!(
        (&st["skipped"], &st["events"]),
        (&0.into(), &40.into()),
        "{st}"
    );
    let st = d.wait_input("app", |s| s["lines"] == 40).await;
    assert_eq!(
        (&st["skipped"], &st["events"]),
        (&39.into(), &1.into()),
        "{st}"
    );
    // The plugin was offered every line of auth.log (once it was running), none of app.log.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = d.get("/v1/status").await;
        let plugin = &st["plugins"][0];
        let sent = plugin["events_sent"].as_u64().unwrap_or(0)
            + plugin["events_dropped"].as_u64().unwrap_or(0);
        if sent == 40 {
            break;
        }
        assert!(Instant::now() < deadline && sent < 40, "{st}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
