//! Engine throughput with 1, 10 and 100 rules: `cargo bench --bench engine`.
//!
//! Events are decoded once up front; the measurement is `Engine::on_event` alone, on a mix of
//! auth.log and application lines (15% failed passwords, 10% application errors). Rule 1 is the
//! shipped SSH threshold rule; the others are threshold rules with their own regex, so with 10
//! and 100 rules the RegexSet prefilter does the work of finding which regexes can match.
//!
//! `shipped pack + 83 fail2ban-style` is issue 24's 100 rules: the shipped rules (`etc/rules.d`,
//! the two plugin rules and the actions left out) and 83 rules like fail2ban's filters (an
//! address after a program's own failure text, each anchored), on a dense auth.log mix (30%
//! sshd failed passwords from 200 addresses, 5% IPv6; sshd's other failure and scan lines;
//! 10% lines of the fail2ban-style programs; sshd logins, cron, systemd and kernel lines).

use std::hint::black_box;

// The allocator incidentd and incidentctl ship with (src/bin/incidentd.rs), so the bench
// measures the engine as it runs there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use incidentd::clock::Timestamp;
use incidentd::engine::Engine;
use incidentd::event::{Defaults, Event};

fn rules(n: usize) -> String {
    let mut s = String::from(
        r#"
[[rule]]
id = "ssh"
kind = "threshold"
where = { kind = "log" }
regex = 'Failed password for (?:invalid user )?(?P<user>\S+) from (?P<ip>[0-9.]+)'
group_by = ["ip"]
threshold = 5
window = "1m"
"#,
    );
    for i in 1..n {
        s.push_str(&format!(
            r#"
[[rule]]
id = "app-{i}"
kind = "threshold"
where = {{ kind = "log" }}
regex = 'app{i}\[\d+\]: request failed with status (?P<code>5\d\d)'
group_by = ["code"]
threshold = 20
window = "1m"
"#
        ));
    }
    s
}

/// The shipped pack (without its plugin rules and actions) and 83 fail2ban-style rules.
fn shipped_and_fail2ban() -> String {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("etc/rules.d");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("etc/rules.d")
        .map(|e| e.expect("etc/rules.d entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml") && !p.ends_with("plugins.toml"))
        .collect();
    files.sort();
    // The retention the shipped config gives (some windows look back hours).
    let mut s = String::from("[daemon]\nretention = \"8h\"\n");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("a shipped rule file");
        for line in text.lines().filter(|l| !l.starts_with("actions =")) {
            s.push_str(line);
            s.push('\n');
        }
    }
    for i in 1..=83 {
        s.push_str(&format!(
            r#"
[[rule]]
id = "app{i}-auth"
kind = "threshold"
where = {{ kind = "log", "fields.program" = "app{i}" }}
regex = '^authentication failed for \S+ from (?P<ip>[0-9A-Fa-f.:]+)(?: port \d+)?$'
group_by = ["ip"]
threshold = 5
window = "1m"
"#
        ));
    }
    s
}

/// A dense auth.log's mix, as syslog lines decode: program in `fields.program`.
fn dense_events(n: usize) -> Vec<Event> {
    let d = Defaults::at("bench", "web-1", Timestamp(0), std::time::Duration::MAX);
    random(11)
        .take(n)
        .enumerate()
        .map(|(i, x)| {
            let r = (x >> 33) % 100;
            let a = (x >> 40) % 200;
            let ip = if a < 10 {
                format!("2001:db8::{a:x}")
            } else {
                format!("198.51.{}.{}", a % 7, a)
            };
            let port = 1024 + (x >> 20) % 60000;
            let users = ["root", "admin", "oracle", "test user", "ubuntu"];
            let user = users[((x >> 48) % 5) as usize];
            let (program, msg) = match r {
                0..=19 => ("sshd", format!("Failed password for {user} from {ip} port {port} ssh2")),
                20..=29 => (
                    "sshd",
                    format!("Failed password for invalid user {user} from {ip} port {port} ssh2"),
                ),
                30..=33 => ("sshd", format!("Invalid user {user} from {ip} port {port}")),
                34..=37 => (
                    "sshd",
                    format!("Connection closed by invalid user {user} {ip} port {port} [preauth]"),
                ),
                38..=39 => (
                    "sshd",
                    format!("Did not receive identification string from {ip} port {port}"),
                ),
                40..=49 => {
                    let app = 1 + (x >> 52) % 83;
                    return event(
                        &d,
                        i,
                        &format!("app{app}"),
                        &format!("authentication failed for {user} from {ip} port {port}"),
                    );
                }
                50..=69 => (
                    "sshd",
                    format!("Accepted publickey for deploy from 10.0.0.5 port {port} ssh2: ED25519 SHA256:abc"),
                ),
                70..=84 => ("CRON", "pam_unix(cron:session): session opened for user root(uid=0) by (uid=0)".to_owned()),
                85..=94 => ("systemd", "Started session-42.scope - Session 42 of User deploy.".to_owned()),
                _ => ("kernel", format!("[UFW BLOCK] IN=eth0 OUT= SRC={ip} DST=192.0.2.1 PROTO=TCP SPT={port} DPT=23")),
            };
            event(&d, i, program, &msg)
        })
        .collect()
}

fn event(d: &Defaults, i: usize, program: &str, msg: &str) -> Event {
    let line = serde_json::json!({
        "kind": "log", "ts": i as i64 * 20, "message": msg, "fields": {"program": program}
    })
    .to_string();
    Event::decode(line.as_bytes(), d).expect("bench events decode")
}

/// A reproducible stream of pseudo-random numbers (a linear congruential generator).
fn random(seed: u64) -> impl Iterator<Item = u64> {
    std::iter::successors(Some(seed), |x| {
        Some(
            x.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        )
    })
    .skip(1)
}

fn events(n: usize) -> Vec<Event> {
    let d = Defaults::at("bench", "web-1", Timestamp(0), std::time::Duration::MAX);
    random(7)
        .take(n)
        .enumerate()
        .map(|(i, x)| {
            let r = (x >> 33) % 100;
            let msg = match r {
                0..=14 => format!(
                    "sshd[1000]: Failed password for root from 203.0.113.{} port 22 ssh2",
                    (x >> 40) % 250
                ),
                15..=24 => format!(
                    "app{}[42]: request failed with status 50{}",
                    (x >> 40) % 120,
                    (x >> 50) % 4
                ),
                25..=49 => "sshd[999]: Accepted publickey for deploy from 10.0.0.5 port 50000 ssh2"
                    .to_owned(),
                _ => "CRON[2000]: pam_unix(cron:session): session opened for user root by (uid=0)"
                    .to_owned(),
            };
            let line =
                serde_json::json!({"kind": "log", "ts": i as i64 * 20, "message": msg}).to_string();
            Event::decode(line.as_bytes(), &d).expect("bench events decode")
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let evs = events(20_000);
    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(evs.len() as u64));
    for n in [1usize, 10, 100] {
        let configs = incidentd::config::load_str(Path::new("/bench/incidentd.toml"), &rules(n))
            .expect("bench rules load")
            .rules;
        run(&mut group, &format!("{n} rules"), &configs, &evs);
    }
    let evs = dense_events(20_000);
    let configs =
        incidentd::config::load_str(Path::new("/bench/incidentd.toml"), &shipped_and_fail2ban())
            .expect("shipped rules load")
            .rules;
    assert_eq!(configs.len(), 100);
    run(
        &mut group,
        "shipped pack + 83 fail2ban-style",
        &configs,
        &evs,
    );
    group.finish();
}

/// `Engine::on_event` over `evs`, measured. Each pass moves the events on by the span they
/// cover, so that every pass is news to the engine as the first was: replayed with the same
/// times, a threshold rule would drop most of them as late and fire far less often.
fn run(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    configs: &[incidentd::engine::config::RuleConfig],
    evs: &[Event],
) {
    let mut evs = evs.to_vec();
    let first = evs.first().map_or(0, |e| e.ts.millis());
    let span = evs.last().map_or(0, |e| e.ts.millis()) - first + 1;
    group.bench_function(name, |b| {
        let mut engine = Engine::new(configs);
        let mut out = Vec::new();
        b.iter(|| {
            for e in evs.iter_mut() {
                e.ts = Timestamp(e.ts.millis() + span);
            }
            for e in &evs {
                engine.on_event(black_box(e), &mut out);
            }
            out.clear();
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
