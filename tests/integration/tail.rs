//! File tails against real files: appends, partial lines, rotation by rename and by
//! copytruncate, deletion, symlinks, globs, restarts and SIGKILL.
//!
//! Each line carries `seq=N`; a match rule makes one incident per N, so "every line exactly
//! once" is checked end to end: each expected key exists, and each incident has one
//! detection (a line read twice would be a second detection: raw lines carry no time of
//! their own, so the two reads would not share an idempotency id).

use std::collections::BTreeSet;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::util::{Rng, TestDaemon, append, syslog_stamp};

const LINE_RULE: &str = r#"
[[rule]]
id = "line"
kind = "match"
where = { kind = "log" }
regex = 'seq=(?P<seq>\d+)'
incident_key = "line/{{ labels.seq }}"
"#;

fn file_source(path: &str, extra: &str) -> String {
    format!(
        "[daemon]\n[[source.file]]\nid = \"app\"\npath = \"{path}\"\nformat = \"raw\"\nmax_line_bytes = 1024\npoll_interval = \"200ms\"\n{extra}\n"
    )
}

/// Starts a daemon whose config has `sources` appended (the `[daemon]` header of `prepare`
/// is already open, so sources come after it).
async fn start_with(sources: &str, rules: &str) -> TestDaemon {
    let d = TestDaemon::prepare(sources.trim_start_matches("[daemon]\n"), rules);
    d.wait_healthy().await;
    d
}

fn lines(seqs: impl IntoIterator<Item = u32>) -> String {
    seqs.into_iter()
        .map(|n| format!("event seq={n}\n"))
        .collect()
}

/// The `seq` of every line incident with its detection count.
async fn seen(d: &TestDaemon) -> Vec<(u32, u64)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/incidents?limit=500&cursor={c}"),
            None => "/v1/incidents?limit=500".to_owned(),
        };
        let page = d.get(&path).await;
        for i in page["incidents"].as_array().unwrap() {
            if let Some(n) = i["key"].as_str().and_then(|k| k.strip_prefix("line/")) {
                out.push((n.parse().unwrap(), i["detections"].as_u64().unwrap()));
            }
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    out.sort();
    out
}

/// Waits until exactly `expected` lines have incidents, then checks each was read once.
async fn expect_exactly(d: &TestDaemon, expected: &BTreeSet<u32>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = seen(d).await;
        let keys: BTreeSet<u32> = got.iter().map(|(n, _)| *n).collect();
        if keys.is_superset(expected) || Instant::now() > deadline {
            let missing: Vec<_> = expected.difference(&keys).collect();
            let extra: Vec<_> = keys.difference(expected).collect();
            let twice: Vec<_> = got.iter().filter(|(_, c)| *c != 1).collect();
            assert!(
                missing.is_empty() && extra.is_empty() && twice.is_empty(),
                "missing {missing:?}, unexpected {extra:?}, read more than once {twice:?}\n{}",
                d.log()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the source has read `n` lines.
async fn wait_lines_read(d: &TestDaemon, id: &str, n: u64) {
    d.wait_input(id, |st| st["lines"].as_u64().unwrap() >= n)
        .await;
}

#[tokio::test]
async fn a_tail_follows_appends_rotations_truncation_and_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    // There before the daemon: read_from = "end" skips it.
    append(&log, &lines([1]));
    let d = start_with(&file_source(log.to_str().unwrap(), ""), LINE_RULE).await;
    let mut expected = BTreeSet::new();
    // Appends count only once the tail has found the file (and positioned at its end).
    d.wait_input("app", |st| st["files"] == 1).await;

    append(&log, &lines([2, 3]));
    expected.extend([2, 3]);
    expect_exactly(&d, &expected).await;

    // A partial last line waits for its newline.
    append(&log, "event seq=4");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        !seen(&d).await.iter().any(|(n, _)| *n == 4),
        "partial line read early"
    );
    append(&log, "\n");
    expected.insert(4);
    expect_exactly(&d, &expected).await;

    // Rotation by rename; the writer still appends to the old file for a moment.
    let mut old = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    old.write_all(lines([5]).as_bytes()).unwrap();
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    old.write_all(lines([6]).as_bytes()).unwrap();
    drop(old);
    append(&log, &lines([7]));
    expected.extend([5, 6, 7]);
    expect_exactly(&d, &expected).await;

    // Copytruncate.
    std::fs::copy(&log, dir.path().join("app.log.2")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, &lines([8]));
    expected.insert(8);
    expect_exactly(&d, &expected).await;

    // Deleted right after a write: the open file is drained; a new one is read from its start.
    append(&log, &lines([9]));
    std::fs::remove_file(&log).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    append(&log, &lines([10]));
    expected.extend([9, 10]);
    expect_exactly(&d, &expected).await;

    // Invalid UTF-8 is decoded lossily; an over-long line is cut; both still arrive.
    append(&log, "event seq=11 \u{0}");
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        f.write_all(b"\xff\xfe\n").unwrap();
        f.write_all(format!("event seq=12 {}\n", "x".repeat(5000)).as_bytes())
            .unwrap();
    }
    append(&log, &lines([13]));
    expected.extend([11, 12, 13]);
    expect_exactly(&d, &expected).await;

    let st = d.input("app").await;
    assert_eq!(st["kind"], "file");
    assert_eq!(st["invalid_utf8"], 1, "{st}");
    assert_eq!(st["oversize"], 1, "{st}");
    assert!(st["rotations"].as_u64().unwrap() >= 1, "{st}");
    assert!(st["truncations"].as_u64().unwrap() >= 1, "{st}");
    assert_eq!(st["errors"], 0, "{st}");
}

/// A glob over a folder anyone can fill follows at most `max_files` paths (the first in the
/// glob's order), says so, and reads none of the others.
#[tokio::test]
async fn a_glob_follows_at_most_max_files() {
    let dir = tempfile::tempdir().unwrap();
    for (i, name) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        append(
            &dir.path().join(format!("{name}.log")),
            &lines([i as u32 + 1]),
        );
    }
    let pattern = format!("{}/*.log", dir.path().display());
    let d = start_with(
        &file_source(&pattern, "read_from = \"beginning\"\nmax_files = 3"),
        LINE_RULE,
    )
    .await;
    let mut expected: BTreeSet<u32> = [1, 2, 3].into();
    expect_exactly(&d, &expected).await;
    // Lines appended to a followed file count; those of the others never do.
    append(&dir.path().join("e.log"), &lines([7]));
    append(&dir.path().join("a.log"), &lines([6]));
    expected.insert(6);
    expect_exactly(&d, &expected).await;
    // A file that sorts first does not push a followed one out (which would be read again
    // from its start when it came back): the three go on, the new one waits.
    append(&dir.path().join("0.log"), &lines([8]));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    append(&dir.path().join("c.log"), &lines([9]));
    expected.insert(9);
    expect_exactly(&d, &expected).await;
    let input = d.input("app").await;
    assert_eq!(input["files"], 3, "{input}");
    assert_eq!(input["rotations"], 0, "{input}");
    assert!(
        input["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("max_files = 3"),
        "{input}"
    );
}

#[tokio::test]
async fn globs_pick_up_new_files_and_follow_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    // The folder does not exist yet either.
    let pattern = format!("{}/*.log", logs.display());
    let d = start_with(
        &file_source(&pattern, "read_from = \"beginning\""),
        LINE_RULE,
    )
    .await;
    std::fs::create_dir_all(&logs).unwrap();
    append(&logs.join("a.log"), &lines([1, 2]));
    append(&logs.join("ignored.txt"), &lines([99]));
    append(&data.join("real.txt"), &lines([3]));
    std::os::unix::fs::symlink(data.join("real.txt"), logs.join("current.log")).unwrap();
    let mut expected: BTreeSet<u32> = [1, 2, 3].into();
    expect_exactly(&d, &expected).await;
    // Writes to the symlink's target are seen, and so is a file created later.
    append(&data.join("real.txt"), &lines([4]));
    append(&logs.join("b.log"), &lines([5]));
    expected.extend([4, 5]);
    expect_exactly(&d, &expected).await;
    assert_eq!(d.input("app").await["files"], 3);
}

#[tokio::test]
async fn a_restart_resumes_where_it_stopped_even_across_a_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, &lines([1, 2]));
    let mut d = start_with(
        &file_source(log.to_str().unwrap(), "read_from = \"beginning\""),
        LINE_RULE,
    )
    .await;
    let mut expected: BTreeSet<u32> = [1, 2].into();
    expect_exactly(&d, &expected).await;
    assert!(d.stop().success());

    // While it is down: more lines, then a rotation with unread lines in the old file, then
    // a new file.
    append(&log, &lines([3, 4]));
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, &lines([5]));
    d.restart().await;
    expected.extend([3, 4, 5]);
    expect_exactly(&d, &expected).await;

    // A checkpointed offset beyond the end (the file was truncated while down) is not trusted.
    assert!(d.stop().success());
    std::fs::write(&log, lines([6])).unwrap();
    d.restart().await;
    expected.insert(6);
    expect_exactly(&d, &expected).await;
}

/// 100 rotations, alternating rename+create and copytruncate, while lines are appended.
/// Copytruncate loses whatever is written between the copy and the truncation in any tool
/// (logrotate documents it), so before each one the writer waits until the tail has read
/// what was written; rename rotations have no such window and get no such help.
#[tokio::test]
async fn rotation_torture_reads_every_line_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, "");
    let d = start_with(
        &file_source(log.to_str().unwrap(), "read_from = \"beginning\""),
        LINE_RULE,
    )
    .await;
    // The file is followed before the first rotation (a file rotated before the tail ever
    // opened it is out of its reach, in any tool).
    d.wait_input("app", |st| st["files"] == 1).await;
    let mut seq = 0u32;
    let mut written = 0u64;
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    for r in 0..100 {
        for _ in 0..5 {
            seq += 1;
            file.write_all(lines([seq]).as_bytes()).unwrap();
            written += 1;
        }
        if r % 2 == 0 {
            let rotated = dir.path().join(format!("app.log.{r}"));
            std::fs::rename(&log, &rotated).unwrap();
            // The writer has not reopened yet: one more line lands in the rotated file.
            seq += 1;
            file.write_all(lines([seq]).as_bytes()).unwrap();
            written += 1;
            file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
        } else {
            wait_lines_read(&d, "app", written).await;
            std::fs::copy(&log, dir.path().join(format!("app.log.{r}"))).unwrap();
            file.set_len(0).unwrap();
        }
    }
    seq += 1;
    file.write_all(lines([seq]).as_bytes()).unwrap();
    let expected: BTreeSet<u32> = (1..=seq).collect();
    expect_exactly(&d, &expected).await;
    let st = d.input("app").await;
    assert!(st["rotations"].as_u64().unwrap() >= 25, "{st}");
    assert!(st["truncations"].as_u64().unwrap() >= 40, "{st}");
}

const SSH_SYSLOG_RULE: &str = r#"
[[rule]]
id = "ssh"
kind = "threshold"
threshold = 5
window = "1m"
regex = 'Failed password for \S+ from (?P<ip>[0-9.]+)'
group_by = ["ip"]
"#;

/// `bursts` brute-force bursts of five failures each, three interleaved at a time, with
/// noise between; event times come from the syslog stamps, a second apart from about now
/// (a live tail treats lines far older than its rules' windows as late).
fn brute_force_log(bursts: u32) -> Vec<String> {
    let start = time::OffsetDateTime::now_utc() - time::Duration::seconds(20);
    let stamp = |t: u32| syslog_stamp(start + time::Duration::seconds(i64::from(t)));
    let mut out = Vec::new();
    let mut t = 0u32;
    for group in (0..bursts).collect::<Vec<_>>().chunks(3) {
        for attempt in 0..5 {
            for b in group {
                out.push(format!(
                    "{} sshd[{}]: Failed password for root from 10.9.{}.{} port 22 ssh2",
                    stamp(t),
                    1000 + b,
                    b / 250,
                    b % 250 + 1
                ));
            }
            out.push(format!(
                "{} sshd[77]: Accepted publickey for deploy from 10.0.0.{attempt}",
                stamp(t)
            ));
            t += 1;
        }
    }
    out
}

/// SIGKILL at 20 random moments while the log is appended (some lines land while the
/// daemon is down); after the last restart each burst is exactly one incident with one
/// detection: window state and file offsets were restored together, and detections applied
/// before a kill were not applied again.
#[tokio::test]
async fn sigkill_torture_keeps_every_incident_exactly_once() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("sigkill torture seed {seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, "");
    let config = format!(
        "checkpoint_interval = \"100ms\"\n[[source.file]]\nid = \"auth\"\npath = \"{}\"\nformat = \"syslog\"\nread_from = \"beginning\"\npoll_interval = \"200ms\"\n",
        log.display()
    );
    let mut d = TestDaemon::prepare(&config, SSH_SYSLOG_RULE);
    d.wait_healthy().await;
    let bursts = 45;
    let lines = brute_force_log(bursts);
    let mut kills: Vec<usize> = (0..20)
        .map(|_| rng.below(lines.len() as u64) as usize)
        .collect();
    kills.sort();
    let mut next = 0;
    let mut at = 0;
    while at < lines.len() {
        let n = (1 + rng.below(12) as usize).min(lines.len() - at);
        append(&log, &(lines[at..at + n].join("\n") + "\n"));
        at += n;
        tokio::time::sleep(Duration::from_millis(rng.below(60))).await;
        while next < kills.len() && kills[next] < at {
            next += 1;
            d.kill9();
            if rng.below(3) == 0 {
                // Lines written while the daemon is down.
                let n = (1 + rng.below(8) as usize).min(lines.len() - at);
                append(&log, &(lines[at..at + n].join("\n") + "\n"));
                at += n;
            }
            d.restart().await;
            tokio::time::sleep(Duration::from_millis(rng.below(250))).await;
        }
    }
    // Caught up: every burst has its incident and nothing is left to read.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = d.real_incidents().await.len();
        let lag = d.input("auth").await["lag_bytes"].as_u64().unwrap();
        if (n as u32 >= bursts && lag == 0) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One more poll period, so a duplicate still in flight would show.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let incidents = d.real_incidents().await;
    let mut keys: Vec<String> = incidents
        .iter()
        .map(|i| i["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    let mut expected: Vec<String> = (0..bursts)
        .map(|b| format!("ssh/10.9.{}.{}", b / 250, b % 250 + 1))
        .collect();
    expected.sort();
    assert_eq!(keys, expected, "seed {seed}\n{}", d.log());
    for i in &incidents {
        if i["detections"] != 1 {
            let timeline = d.get(&format!("/v1/incidents/{}/timeline", i["id"])).await;
            panic!(
                "seed {seed}: detected more than once: {i}\n{timeline:#}\n{}",
                d.log()
            );
        }
    }
}

/// A graceful restart keeps the rule windows fed by a file: three failures before it and two
/// after make one incident; the lines before the restart are not read again.
#[tokio::test]
async fn a_graceful_restart_keeps_the_windows_of_file_lines() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("auth.log");
    append(&log, "");
    let config = format!(
        "[[source.file]]\nid = \"auth\"\npath = \"{}\"\nformat = \"syslog\"\nread_from = \"beginning\"\npoll_interval = \"200ms\"\n",
        log.display()
    );
    let mut d = TestDaemon::prepare(&config, SSH_SYSLOG_RULE);
    d.wait_healthy().await;
    let lines = brute_force_log(1);
    let failures: Vec<&String> = lines.iter().filter(|l| l.contains("Failed")).collect();
    append(
        &log,
        &(failures[..3]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()),
    );
    wait_lines_read(&d, "auth", 3).await;
    assert!(d.stop().success());
    d.restart().await;
    append(
        &log,
        &(failures[3..]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()),
    );
    wait_lines_read(&d, "auth", 2).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let found = d.real_incidents().await;
        if let Some(i) = found.first() {
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(i["detections"], 1, "{i}");
            assert_eq!(i["key"], "ssh/10.9.0.1");
            break;
        }
        assert!(Instant::now() < deadline, "no incident\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // After the restart the source read only the two new lines.
    assert_eq!(d.input("auth").await["lines"], 2);
}

/// A file that was quiet all along keeps its place across a restart: its old lines, skipped
/// by `read_from = "end"` at the first start, are not read at the second.
#[tokio::test]
async fn a_quiet_file_keeps_its_place_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    append(&log, &lines([1, 2, 3]));
    let mut d = start_with(&file_source(log.to_str().unwrap(), ""), LINE_RULE).await;
    d.wait_input("app", |st| st["files"] == 1).await;
    assert!(d.stop().success());
    d.restart().await;
    d.wait_input("app", |st| st["files"] == 1).await;
    append(&log, &lines([4]));
    expect_exactly(&d, &[4].into()).await;
    assert_eq!(d.input("app").await["lines"], 1);
}

/// Only regular files are tailed: a path that is a symlink into /proc, a FIFO, or a
/// directory is refused with `last_error` and never read (a /proc file would read as
/// truncated on every poll); once the path is a regular file again it is followed.
#[tokio::test]
async fn only_regular_files_are_tailed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    std::os::unix::fs::symlink("/proc/self/status", &path).unwrap();
    let d = start_with(&file_source(path.to_str().unwrap(), ""), LINE_RULE).await;
    let st = d
        .wait_input("app", |s| {
            s["last_error"].as_str().unwrap_or("").contains("/proc")
        })
        .await;
    let first_errors = st["errors"].as_u64().unwrap();
    // Several polls later: nothing read, no truncation loop, said once.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let st = d.input("app").await;
    assert_eq!(st["lines"], 0, "{st}");
    assert_eq!(st["truncations"], 0, "{st}");
    assert_eq!(st["errors"].as_u64().unwrap(), first_errors, "{st}");

    std::fs::remove_file(&path).unwrap();
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    d.wait_input("app", |s| {
        s["last_error"].as_str().unwrap_or("").contains("FIFO")
    })
    .await;
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    d.wait_input("app", |s| {
        s["last_error"].as_str().unwrap_or("").contains("directory")
    })
    .await;
    // Still answering: nothing blocked on the FIFO.
    assert_eq!(d.get("/v1/health").await["status"], "ok");

    std::fs::remove_dir(&path).unwrap();
    append(&path, &lines(1..=3));
    expect_exactly(&d, &(1..=3).collect()).await;
    assert_eq!(d.input("app").await["lines"], 3);
}
