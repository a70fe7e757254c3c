//! The engine's unit tests: rules built from TOML, events through `on_event`, timers,
//! checkpoints, the prefilter and lateness.

use super::*;
use crate::event::Defaults;

pub(super) fn rules(text: &str) -> Vec<RuleConfig> {
    config::test_rules(text)
}

pub(super) fn ev(json: &str) -> Event {
    let d = Defaults::at("t", "h", Timestamp(0), Duration::MAX);
    Event::decode(json.as_bytes(), &d).unwrap()
}

const SSH: &str = r#"
[[rule]]
id = "ssh"
kind = "threshold"
severity = "high"
threshold = 3
window = "1m"
where = { kind = "log" }
regex = 'Failed password for (?:invalid user )?\S+ from (?P<ip>[0-9.]+)'
group_by = ["ip"]
summary = "SSH brute force from {{ labels.ip }} ({{ count }} failures)"
"#;

#[test]
fn regex_groups_become_labels_and_keys() {
    let mut e = Engine::new(&rules(SSH));
    let mut out = Vec::new();
    for i in 0..3 {
        let line = format!(
            r#"{{"kind":"log","ts":{},"message":"Failed password for root from 203.0.113.7 port 22 ssh2"}}"#,
            i * 1000
        );
        e.on_event(&ev(&line), &mut out);
    }
    e.on_event(
        &ev(r#"{"kind":"log","message":"Accepted password for bob from 10.0.0.1"}"#),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    let d = &out[0];
    assert_eq!(d.key, "ssh/203.0.113.7");
    assert_eq!(d.labels["ip"], "203.0.113.7");
    assert_eq!(d.summary, "SSH brute force from 203.0.113.7 (3 failures)");
    assert_eq!(d.severity, Severity::Sev2);
    assert_eq!(d.count, 3);
    assert_eq!(d.idempotency_id(), None, "socket events are never replayed");
    let info = &e.rules()[0];
    assert_eq!((info.matched, info.fired), (3, 1));
}

#[test]
fn templates_get_the_event_only_when_they_read_it() {
    let text = format!(
        "{SSH}\n[[rule]]\nid = \"svc\"\nkind = \"match\"\nregex = 'down'\n\
         summary = \"{{{{ event.service }}}} said {{{{ event.message }}}}\"\n\
         incident_key = \"down/{{{{ event.fields.unit | default('none') }}}}\"\n\
         \n[[rule]]\nid = \"inc\"\nkind = \"match\"\nregex = 'gone'\n\
         summary = '{{% include \"svc#summary\" %}}'\n"
    );
    let mut e = Engine::new(&rules(&text));
    assert!(!e.rules[0].templates_read_event);
    assert!(e.rules[1].templates_read_event);
    // It reads the event through another template.
    assert!(e.rules[2].templates_read_event);
    let mut out = Vec::new();
    e.on_event(
        &ev(r#"{"kind":"log","service":"db","message":"db is gone"}"#),
        &mut out,
    );
    assert_eq!(out[0].summary, "db said db is gone");
    out.clear();
    e.on_event(
        &ev(r#"{"kind":"log","service":"api","message":"api is down","fields":{"unit":"api.service"}}"#),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].summary, "api said api is down");
    assert_eq!(out[0].key, "down/api.service");
}

#[test]
fn where_conditions_all_hold() {
    let mut e = Engine::new(&rules(
        r#"
[[rule]]
id = "slow"
kind = "match"
where = { service = "api", value = { gt = 1000 }, "labels.region" = { in = ["eu", "us"] }, level = { regex = "^(error|critical)$" } }
"#,
    ));
    let mut out = Vec::new();
    e.on_event(
        &ev(
            r#"{"kind":"x","service":"api","value":1500,"labels":{"region":"eu"},"level":"error"}"#,
        ),
        &mut out,
    );
    e.on_event(
        &ev(r#"{"kind":"x","service":"api","value":900,"labels":{"region":"eu"},"level":"error"}"#),
        &mut out,
    );
    e.on_event(
        &ev(
            r#"{"kind":"x","service":"api","value":1500,"labels":{"region":"ap"},"level":"error"}"#,
        ),
        &mut out,
    );
    e.on_event(
        &ev(r#"{"kind":"x","service":"db","value":1500,"labels":{"region":"eu"},"level":"error"}"#),
        &mut out,
    );
    e.on_event(
        &ev(r#"{"kind":"x","service":"api","value":1500,"labels":{"region":"us"},"level":"info"}"#),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].key, "slow");
}

#[test]
fn reload_keeps_state_of_unchanged_rules_only() {
    let r = rules(SSH);
    let mut e = Engine::new(&r);
    let mut out = Vec::new();
    let fail = |t: i64| {
        ev(&format!(
            r#"{{"kind":"log","ts":{t},"message":"Failed password for x from 1.2.3.4 port 1"}}"#
        ))
    };
    e.on_event(&fail(0), &mut out);
    e.on_event(&fail(1), &mut out);
    e.replace_rules(&r);
    e.on_event(&fail(2), &mut out);
    assert_eq!(out.len(), 1, "unchanged rule kept its two events");
    e.on_event(&fail(3), &mut out);
    e.on_event(&fail(4), &mut out);
    let changed = rules(&SSH.replace("threshold = 3", "threshold = 4"));
    e.replace_rules(&changed);
    e.on_event(&fail(5), &mut out);
    assert_eq!(out.len(), 1, "a changed rule starts fresh");
}

#[cfg(test)]
mod absence_tests {
    use super::*;
    use super::{ev, rules};

    #[test]
    fn heartbeats_that_stop_fire_on_event_time_as_other_events_arrive() {
        let rules = rules(
            r#"
[[rule]]
id = "down"
kind = "absence"
severity = "critical"
where = { kind = "heartbeat" }
group_by = ["service"]
timeout = "30s"
expected = ["db"]
"#,
        );
        let mut e = Engine::new(&rules);
        let mut out = Vec::new();
        e.on_event(
            &ev(r#"{"kind":"heartbeat","service":"api","ts":0}"#),
            &mut out,
        );
        e.on_event(
            &ev(r#"{"kind":"heartbeat","service":"api","ts":20000}"#),
            &mut out,
        );
        assert!(out.is_empty());
        // Another source moves event time on: api went quiet at 20 s, db never spoke (known at 0).
        e.on_event(&ev(r#"{"kind":"other","ts":49999}"#), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].key.as_str(), out[0].ts),
            ("down/db", Timestamp(30_000))
        );
        assert_eq!(out[0].service.as_deref(), Some("db"));
        assert_eq!(out[0].summary, "rule down fired (db): no event for 30s");
        e.on_event(&ev(r#"{"kind":"other","ts":50000}"#), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[1].key.as_str(), out[1].ts),
            ("down/api", Timestamp(50_000))
        );
        // Once per silence; the wall-clock tick fires nothing new.
        e.on_tick(Timestamp(1_000_000), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(e.rules()[0].fired, 2);
    }

    /// Time moving on asks only the rules with timers; one listed after many regex rules (a
    /// shared set, an index) fires as it does alone, and a disabled one never does.
    #[test]
    fn timers_fire_among_many_regex_rules_and_not_when_disabled() {
        let mut text = String::new();
        for i in 0..20 {
            text.push_str(&format!(
                "[[rule]]\nid = \"app-{i}\"\nkind = \"threshold\"\nthreshold = 2\n\
                 window = \"1m\"\nregex = 'app{i} failed'\n\n"
            ));
        }
        for (id, enabled) in [("down", true), ("off", false)] {
            text.push_str(&format!(
                "[[rule]]\nid = \"{id}\"\nkind = \"absence\"\nenabled = {enabled}\n\
                 where = {{ kind = \"heartbeat\" }}\ngroup_by = [\"service\"]\n\
                 timeout = \"30s\"\nexpected = [\"db\"]\n\n"
            ));
        }
        let mut e = Engine::new(&rules(&text));
        let mut out = Vec::new();
        for (ts, msg) in [(0, "app3 failed"), (10_000, "app3 failed"), (40_000, "ok")] {
            let line = format!(r#"{{"kind":"log","ts":{ts},"message":"{msg}"}}"#);
            e.on_event(&ev(&line), &mut out);
        }
        let keys: Vec<_> = out.iter().map(|d| (d.key.as_str(), d.ts)).collect();
        assert_eq!(
            keys,
            [("app-3", Timestamp(10_000)), ("down/db", Timestamp(30_000))]
        );
    }
}

#[cfg(test)]
mod rate_tests {
    use super::*;
    use super::{ev, rules};

    #[test]
    fn error_ratio_per_service_counts_totals_from_total_where() {
        let rules = rules(
            r#"
[[rule]]
id = "errors"
kind = "rate"
where = { kind = "request", "fields.status" = { ge = 500 } }
total_where = { kind = "request" }
group_by = ["service"]
ratio = 0.2
window = "1m"
min_events = 10
"#,
        );
        let mut e = Engine::new(&rules);
        let req = |svc: &str, status: u16, t: i64| {
            ev(&format!(
                r#"{{"kind":"request","service":"{svc}","ts":{t},"fields":{{"status":{status}}}}}"#
            ))
        };
        let mut out = Vec::new();
        // api: 2 errors in 10 is exactly 0.2, not above it.
        for i in 0..10 {
            e.on_event(
                &req("api", if i < 2 { 503 } else { 200 }, i * 100),
                &mut out,
            );
        }
        assert!(out.is_empty());
        e.on_event(&req("api", 500, 1_100), &mut out);
        assert_eq!(out.len(), 1, "3 of 11 > 0.2");
        assert_eq!(out[0].key, "errors/api");
        assert_eq!(out[0].count, 3);
        // db has plenty of errors but fewer than min_events requests.
        for i in 0..9 {
            e.on_event(&req("db", 500, i * 100), &mut out);
        }
        assert_eq!(out.len(), 1);
        let info = &e.rules()[0];
        assert_eq!((info.matched, info.fired), (12, 1));
    }
}

#[cfg(test)]
mod checkpoint_tests {
    use super::*;
    use super::{ev, rules};

    const ALL_KINDS: &str = r#"
[[rule]]
id = "m"
kind = "match"
where = { level = "critical" }

[[rule]]
id = "t"
kind = "threshold"
regex = 'fail from (?P<ip>\S+)'
group_by = ["ip"]
threshold = 4
window = "1m"

[[rule]]
id = "a"
kind = "absence"
where = { kind = "heartbeat" }
group_by = ["service"]
timeout = "45s"

[[rule]]
id = "r"
kind = "rate"
where = { kind = "request", "fields.status" = { ge = 500 } }
total_where = { kind = "request" }
group_by = ["service"]
ratio = 0.3
window = "1m"
min_events = 5

[[rule]]
id = "s"
kind = "sequence"
group_by = ["service"]
first = { kind = "deploy" }
then = { level = "error" }
within = "2m"

[[rule]]
id = "n"
kind = "sequence"
mode = "not_followed_by"
group_by = ["host"]
first = { kind = "job", message = "start" }
then = { kind = "job", message = "end" }
within = "30s"

[[rule]]
id = "p"
kind = "metric"
where = { kind = "metric" }
group_by = ["service"]
aggregate = "p95"
window = "1m"
op = ">"
value_threshold = 500.0
for = "20s"

[[rule]]
id = "k"
kind = "spike"
where = { kind = "request" }
group_by = ["service"]
window = "10s"
baseline = 3
factor = 1.5
min_count = 3

[[rule]]
id = "q"
kind = "spike"
direction = "down"
where = { kind = "heartbeat" }
group_by = ["service"]
window = "20s"
baseline = 2
factor = 2.0
min_count = 1

[[rule]]
id = "b"
kind = "burn_rate"
where = { kind = "request", "fields.status" = { ge = 500 } }
total_where = { kind = "request" }
group_by = ["service"]
objective = 0.7
windows = [["2m", "20s", 1.2], ["5m", "1m", 1.1]]
"#;

    /// A deterministic stream that makes every rule fire more than once.
    fn stream() -> Vec<Event> {
        let mut out = Vec::new();
        let mut x: u64 = 42;
        let mut next = || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            x >> 33
        };
        for i in 0..3000i64 {
            let t = i * 500;
            let r = next() % 100;
            let svc = ["api", "db", "web"][(next() % 3) as usize];
            let line = match r {
                0..=14 => format!(
                    r#"{{"kind":"log","ts":{t},"message":"fail from 10.0.0.{}"}}"#,
                    next() % 4
                ),
                15..=19 if (t / 60_000) % 3 != 0 => {
                    format!(r#"{{"kind":"heartbeat","ts":{t},"service":"{svc}"}}"#)
                }
                20..=49 => format!(
                    r#"{{"kind":"request","ts":{t},"service":"{svc}","fields":{{"status":{}}}}}"#,
                    if next() % 10 < 4 { 503 } else { 200 }
                ),
                50..=52 => format!(r#"{{"kind":"deploy","ts":{t},"service":"{svc}"}}"#),
                53..=57 => {
                    format!(r#"{{"kind":"log","level":"error","ts":{t},"service":"{svc}"}}"#)
                }
                58..=60 => format!(
                    r#"{{"kind":"job","ts":{t},"host":"h{}","message":"start"}}"#,
                    next() % 3
                ),
                61..=63 => format!(
                    r#"{{"kind":"job","ts":{t},"host":"h{}","message":"end"}}"#,
                    next() % 3
                ),
                64..=90 => format!(
                    r#"{{"kind":"metric","ts":{t},"service":"{svc}","value":{}}}"#,
                    next() % 700
                ),
                91 => format!(r#"{{"kind":"x","level":"critical","ts":{t}}}"#),
                _ => format!(r#"{{"kind":"noise","ts":{t}}}"#),
            };
            out.push(ev(&line));
        }
        out
    }

    fn summary(ds: &[Detection]) -> Vec<(String, String, i64, u64)> {
        ds.iter()
            .map(|d| (d.rule.clone(), d.key.clone(), d.ts.millis(), d.count))
            .collect()
    }

    #[test]
    fn a_restored_engine_continues_exactly_like_an_uninterrupted_one() {
        let configs = rules(ALL_KINDS);
        let events = stream();
        let mut whole = Engine::new(&configs);
        let mut expected = Vec::new();
        for e in &events {
            whole.on_event(e, &mut expected);
        }
        let fired: std::collections::BTreeSet<&str> =
            expected.iter().map(|d| d.rule.as_str()).collect();
        assert_eq!(
            fired.len(),
            10,
            "every rule fires in this stream: {fired:?}"
        );

        for split in [1, 137, 1000, 1999, 2998] {
            let mut first = Engine::new(&configs);
            let mut got = Vec::new();
            for e in &events[..split] {
                first.on_event(e, &mut got);
            }
            let bytes = first.checkpoint();
            drop(first);
            let mut second = Engine::new(&configs);
            assert_eq!(second.restore(&bytes).unwrap(), configs.len());
            for e in &events[split..] {
                second.on_event(e, &mut got);
            }
            assert_eq!(summary(&got), summary(&expected), "split at {split}");
            let counts = |e: &Engine| {
                e.rules()
                    .iter()
                    .map(|r| (r.matched, r.fired))
                    .collect::<Vec<_>>()
            };
            assert_eq!(counts(&second), counts(&whole), "split at {split}");
        }
    }

    #[test]
    fn changed_rules_start_fresh_and_garbage_is_refused() {
        let configs = rules(ALL_KINDS);
        let mut e = Engine::new(&configs);
        let mut out = Vec::new();
        for ev in stream().iter().take(500) {
            e.on_event(ev, &mut out);
        }
        let bytes = e.checkpoint();
        let changed = rules(&ALL_KINDS.replace("threshold = 4", "threshold = 5"));
        let mut fresh = Engine::new(&changed);
        assert_eq!(fresh.restore(&bytes).unwrap(), configs.len() - 1);
        assert_eq!(
            fresh.rules().iter().find(|r| r.id == "t").unwrap().matched,
            0
        );
        assert!(Engine::new(&configs).restore(b"{not json").is_err());
    }
}

#[cfg(test)]
mod prefilter_tests {
    use super::*;
    use super::{ev, rules};

    const THREE: &str = r#"
[[rule]]
id = "ssh"
kind = "match"
regex = 'Failed password for (?P<user>\S+)'

[[rule]]
id = "oom"
kind = "match"
regex = 'Out of memory: Killed process (?P<pid>\d+)'

[[rule]]
id = "any-root"
kind = "match"
regex = '\broot\b'
where = { host = "web-1" }
"#;

    fn fired(e: &mut Engine, lines: &[&str]) -> Vec<(String, BTreeMap<String, String>)> {
        let mut out = Vec::new();
        for l in lines {
            e.on_event(
                &ev(&format!(
                    r#"{{"kind":"log","host":"web-1","message":"{l}"}}"#
                )),
                &mut out,
            );
        }
        out.into_iter().map(|d| (d.rule, d.labels)).collect()
    }

    #[test]
    fn the_set_gates_each_rule_and_captures_stay_exact() {
        let mut e = Engine::new(&rules(THREE));
        assert!(e.prefilter.is_some());
        let got = fired(
            &mut e,
            &[
                "Failed password for root",
                "Out of memory: Killed process 4242",
                "nothing here",
                "Failed password for bob",
            ],
        );
        let names: Vec<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(names, ["ssh", "any-root", "oom", "ssh"]);
        assert_eq!(got[0].1["user"], "root");
        assert_eq!(got[2].1["pid"], "4242");
        assert_eq!(got[3].1["user"], "bob");

        // Reloaded down to one regex rule: no set, same answers.
        let one = rules(THREE)
            .into_iter()
            .filter(|r| r.id() == "oom")
            .collect::<Vec<_>>();
        e.replace_rules(&one);
        assert!(e.prefilter.is_none());
        let got = fired(
            &mut e,
            &[
                "Out of memory: Killed process 7",
                "Failed password for root",
            ],
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1["pid"], "7");
    }
}

#[cfg(test)]
mod lateness_tests {
    use super::*;
    use super::{ev, rules};

    #[test]
    fn events_later_than_allowed_lateness_are_counted_and_dropped() {
        let mut e = Engine::new(&rules(
            r#"
[[rule]]
id = "t"
kind = "threshold"
threshold = 3
window = "1m"
allowed_lateness = "5s"
"#,
        ));
        let mut out = Vec::new();
        e.on_event(&ev(r#"{"kind":"x","ts":60000}"#), &mut out);
        e.on_event(&ev(r#"{"kind":"x","ts":50000}"#), &mut out); // 10 s behind: dropped
        e.on_event(&ev(r#"{"kind":"x","ts":57000}"#), &mut out); // 3 s behind: counts
        assert!(out.is_empty());
        e.on_event(&ev(r#"{"kind":"x","ts":61000}"#), &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].first_ts, Timestamp(57_000));
        let info = &e.rules()[0];
        assert_eq!((info.matched, info.late), (3, 1));
    }
}

#[test]
fn exclusions_networks_and_conditions_on_captured_labels() {
    // fail2ban's ignoreip: the address the regex captures, tested against networks after
    // the regex matched; the other operators on event keys.
    let text = r#"
[[rule]]
id = "m"
kind = "match"
regex = ['^Failed \S+ for (?P<user>\S+) from (?P<ip>\S+)', '^Invalid user (?P<user>\S+) from (?P<ip>\S+)']
where = { kind = "log", "labels.ip" = { not_cidr = ["10.0.0.0/8", "2001:db8::/32", "192.0.2.7", "::ffff:198.18.0.0/111"] }, "labels.user" = { not_in = ["deploy"] }, service = { ne = "test" }, "fields.program" = { exists = true }, message = { not_regex = 'port 2222' }, host = { not = { contains = "canary" } } }
"#;
    let mut e = Engine::new(&rules(text));
    let fire = |e: &mut Engine, message: &str, extra: &str| {
        let mut out = Vec::new();
        let line = format!(
            r#"{{"kind":"log","host":"web-1","message":"{message}","fields":{{"program":"sshd"}}{extra}}}"#
        );
        e.on_event(&ev(&line), &mut out);
        out.len()
    };
    assert_eq!(
        fire(
            &mut e,
            "Failed password for root from 203.0.113.7 port 22",
            ""
        ),
        1
    );
    assert_eq!(fire(&mut e, "Invalid user x from 203.0.113.8", ""), 1);
    for inside in [
        "10.1.2.3",
        "2001:db8:5::1",
        "192.0.2.7",
        "::ffff:10.9.9.9",
        "198.19.1.1",
    ] {
        assert_eq!(
            fire(
                &mut e,
                &format!("Failed password for root from {inside} port 22"),
                ""
            ),
            0,
            "{inside}"
        );
    }
    assert_eq!(
        fire(
            &mut e,
            "Failed password for root from 192.0.2.8 port 22",
            ""
        ),
        1
    );
    assert_eq!(
        fire(
            &mut e,
            "Failed password for root from attacker.example port 22",
            ""
        ),
        1
    );
    assert_eq!(
        fire(
            &mut e,
            "Failed password for deploy from 203.0.113.9 port 22",
            ""
        ),
        0
    );
    assert_eq!(
        fire(
            &mut e,
            "Failed password for root from 203.0.113.9 port 2222",
            ""
        ),
        0
    );
    assert_eq!(
        fire(
            &mut e,
            "Failed password for root from 203.0.113.9 port 22",
            r#","service":"test""#
        ),
        0
    );
    assert_eq!(
        fire(
            &mut e,
            "Failed password for root from 203.0.113.9 port 22",
            r#","service":"prod""#
        ),
        1
    );
    assert_eq!(
        fire(
            &mut e,
            "Failed password for root from 203.0.113.9 port 22",
            r#","host":"canary-2""#
        ),
        0,
        "the last host key wins in JSON decoding"
    );
    let mut out = Vec::new();
    e.on_event(
        &ev(r#"{"kind":"log","message":"Failed password for root from 203.0.113.9 port 22"}"#),
        &mut out,
    );
    assert!(out.is_empty(), "no program field: exists = true fails");

    // Bad networks and operators are refused when the rules load.
    for (bad, says) in [
        (
            r#"{ cidr = "10.0.0.0/33" }"#,
            "prefix length must be 0 to 32",
        ),
        (
            r#"{ not_cidr = ["300.1.1.1"] }"#,
            "is not an IP address or network",
        ),
        (r#"{ exists = "yes" }"#, "invalid type"),
        (
            r#"{ unlike = "x" }"#,
            "unknown condition `unlike`; use one of ne, regex",
        ),
    ] {
        let text = format!("[[rule]]\nid = \"b\"\nkind = \"match\"\nwhere = {{ host = {bad} }}\n");
        let err = toml::from_str::<toml::Table>(&text)
            .map_err(|e| e.to_string())
            .and_then(|t| {
                t["rule"].as_array().unwrap()[0]
                    .get("where")
                    .cloned()
                    .unwrap()
                    .try_into::<BTreeMap<String, config::Condition>>()
                    .map_err(|e| e.to_string())
            })
            .unwrap_err();
        assert!(err.contains(says), "{bad}: {err}");
    }
}
