//! Engine throughput with 1, 10 and 100 rules: `cargo bench --bench engine`.
//!
//! Events are decoded once up front; the measurement is `Engine::on_event` alone, on a mix of
//! auth.log and application lines (15% failed passwords, 10% application errors). Rule 1 is the
//! shipped SSH threshold rule; the others are threshold rules with their own regex, so with 10
//! and 100 rules the RegexSet prefilter does the work of finding which regexes can match.

use std::hint::black_box;
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

fn events(n: usize) -> Vec<Event> {
    let d = Defaults::at("bench", "web-1", Timestamp(0), std::time::Duration::MAX);
    let mut x: u64 = 7;
    (0..n)
        .map(|i| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
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
        group.bench_function(format!("{n} rules"), |b| {
            let mut engine = Engine::new(&configs);
            let mut out = Vec::new();
            b.iter(|| {
                for e in &evs {
                    engine.on_event(black_box(e), &mut out);
                }
                out.clear();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
