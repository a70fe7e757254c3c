//! Property tests (proptest, a bounded number of cases each, in the default test run): the
//! decoders and the template renderer hold their promises for any input, not only for the
//! inputs someone thought of — no panic on hostile bytes, every error names a line inside
//! the file, and values rendered into a field never leave it.

use std::collections::BTreeMap;
use std::path::Path;

use incidentd::clock::Timestamp;
use incidentd::config::{LineFormat, Parsing};
use incidentd::event::{Defaults, Event, Level};
use incidentd::remediation::template::{self, Field};
use incidentd::source::parse::{Parser, logfmt};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn defaults() -> Defaults<'static> {
    Defaults::at(
        "ingest",
        "h1",
        Timestamp(1_796_000_000_000),
        std::time::Duration::from_secs(300),
    )
}

/// Any text with control characters, quotes, braces and non-ASCII mixed in.
fn hostile_text() -> impl Strategy<Value = String> {
    proptest::collection::vec(
        prop_oneof![
            any::<char>(),
            Just('\n'),
            Just('"'),
            Just('\\'),
            Just('{'),
            Just('}'),
            Just('/'),
            Just('-'),
            Just('\u{1b}'),
            Just('\0'),
        ],
        0..40,
    )
    .prop_map(|v| v.into_iter().collect())
}

fn parser(format: LineFormat) -> Parser {
    Parser::new(
        Parsing {
            format,
            pattern: None,
            kind: "log".into(),
            service: None,
            labels: BTreeMap::new(),
        },
        "src",
        "h1",
    )
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes decode to an event or to a reason; never a panic, never an event from the
    /// future.
    #[test]
    fn event_decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let d = defaults();
        if let Ok(ev) = Event::decode(&bytes, &d) {
            prop_assert!(ev.ts <= d.latest);
            prop_assert!(!ev.kind.is_empty());
        }
    }

    /// A well-formed event survives encoding and decoding unchanged.
    #[test]
    fn events_round_trip(
        kind in "[a-z_]{1,12}",
        message in hostile_text(),
        service in proptest::option::of("[a-z0-9-]{1,10}"),
        ts in 0i64..1_796_000_000_000,
        label in hostile_text(),
        level in 0usize..6,
    ) {
        let levels = [Level::Debug, Level::Info, Level::Notice, Level::Warning, Level::Error, Level::Critical];
        let ev = Event {
            ts: Timestamp(ts),
            kind,
            source: "ingest".into(),
            level: levels[level],
            service,
            host: "h1".into(),
            message: Some(message),
            value: None,
            correlation_id: None,
            trace_id: None,
            labels: BTreeMap::from([("l".to_owned(), label)]),
            fields: Default::default(),
        };
        let line = serde_json::to_string(&ev).unwrap();
        let back = Event::decode(line.as_bytes(), &defaults()).unwrap();
        prop_assert_eq!(back, ev);
    }

    /// Every line format reads any line without a panic, and keeps a line it cannot read as
    /// the message of a raw event.
    #[test]
    fn line_parsers_never_panic(line in hostile_text(), f in 0usize..5) {
        let formats = [LineFormat::Raw, LineFormat::Json, LineFormat::Logfmt, LineFormat::Syslog, LineFormat::Journald];
        let p = parser(formats[f]);
        let parsed = p.parse(&line, Timestamp(1_796_000_000_000));
        if parsed.unparsed {
            prop_assert_eq!(parsed.event.message.as_deref(), Some(line.as_str()));
        }
    }

    /// logfmt: pairs written with quotes where needed read back as written.
    #[test]
    fn logfmt_round_trips(pairs in proptest::collection::btree_map("[a-z][a-z0-9_]{0,8}", "[ -~]{0,12}", 1..6)) {
        let line: Vec<String> = pairs
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"")))
            .collect();
        let line = line.join(" ");
        let got = logfmt::pairs(&line).unwrap_or_default();
        let got: BTreeMap<String, String> = got.into_iter().map(|(k, v)| (k.to_owned(), v.into_owned())).collect();
        prop_assert_eq!(got, pairs);
    }

    /// RFC 3164 lines with any text after the tag parse, keeping the text.
    #[test]
    fn syslog_keeps_any_message(text in "[ -~]{1,60}", day in 1u32..28, h in 0u32..24, pid in 1u32..99999) {
        let line = format!("Aug {day:>2} {h:02}:07:09 web-1 sshd[{pid}]: {text}");
        let parsed = parser(LineFormat::Syslog).parse(&line, Timestamp(1_796_000_000_000));
        prop_assert!(!parsed.unparsed, "{line}");
        prop_assert_eq!(parsed.event.message.as_deref(), Some(text.as_str()));
    }

    /// Any config text loads or fails with errors that name a line inside the file; never a
    /// panic.
    #[test]
    fn config_loading_never_panics(lines in proptest::collection::vec(prop_oneof![
        Just("[daemon]".to_owned()),
        Just("[[rule]]".to_owned()),
        Just("[[source.file]]".to_owned()),
        Just("[engine]".to_owned()),
        "[a-z_]{1,12} = \"[a-z0-9 ]{0,8}\"",
        "[a-z_]{1,12} = [0-9]{1,4}",
        "kind = \"(threshold|match|absence|rate)\"",
        "window = \"[0-9]{1,3}(s|m|h|x)\"",
        hostile_text(),
    ], 0..12)) {
        let text = lines.join("\n");
        let n = text.lines().count().max(1);
        if let Err(e) = incidentd::config::load_str(Path::new("/nonexistent/incidentd.toml"), &text) {
            for err in e.0 {
                if let Some(line) = err.line {
                    prop_assert!(line >= 1 && line <= n + 1, "line {} of {}: {}", line, n, err);
                }
            }
        }
    }

    /// A value rendered into a field never leaves it: a path component holds no '/', an
    /// argument alone is no option, a URL value is only unreserved characters and escapes,
    /// and a JSON value reads back as the same string.
    #[test]
    fn rendered_values_stay_in_their_field(v in hostile_text()) {
        let ctx = minijinja::context! { labels => minijinja::context! { v => v.clone() } };
        if let Ok(p) = template::render("/srv/{{ labels.v }}", &ctx, "x", Field::PathPart) {
            prop_assert!(!p["/srv/".len()..].contains('/'));
            prop_assert!(p != "/srv/.." && p != "/srv/.");
        }
        if let Ok(a) = template::render("{{ labels.v }}", &ctx, "x", Field::Arg { allow_options: false }) {
            prop_assert!(!a.starts_with('-'));
        }
        let u = template::render_url("http://h/x/{{ labels.v }}?q={{ labels.v }}", &ctx).unwrap();
        let tail = &u["http://h/x/".len()..];
        prop_assert!(tail.chars().all(|c| c.is_ascii_alphanumeric() || "-._~%?=".contains(c)), "{}", u);
        prop_assert_eq!(tail.matches('?').count(), 1);
        let j = template::render("{\"v\": {{ labels.v }}}", &ctx, "x", Field::Json).unwrap();
        let back: serde_json::Value = serde_json::from_str(&j).unwrap();
        prop_assert_eq!(back["v"].as_str(), Some(v.as_str()));
    }
}

const MIXED_RULES: &str = r#"
[[rule]]
id = "fail"
kind = "threshold"
where = { kind = "log" }
regex = 'Failed password for (?P<user>\S+) from (?P<ip>[0-9.]+)'
group_by = ["ip"]
threshold = 2
window = "1m"

[[rule]]
id = "app"
kind = "match"
where = { kind = "log", service = "api" }
regex = 'status (?P<code>5\d\d)'

[[rule]]
id = "no-literal"
kind = "match"
regex = '^\s*(?P<user>\S+) : (?:denied|\d+ incorrect)'

[[rule]]
id = "late-app"
kind = "threshold"
regex = 'status (?P<code>5\d\d)'
allowed_lateness = "5s"
group_by = ["code"]
threshold = 2
window = "30s"

[[rule]]
id = "any-error"
kind = "threshold"
where = { level = "error" }
group_by = ["service"]
threshold = 3
window = "1m"

[[rule]]
id = "never"
kind = "match"
regex = 'disk (?P<dev>sd[a-z]) failed'

[[rule]]
id = "sshd-fail"
kind = "threshold"
where = { kind = "log", "fields.program" = { in = ["sshd", "7", "sshd"] } }
regex = 'Failed password for (?P<user>\S+) from (?P<ip>[0-9.]+)'
group_by = ["ip"]
threshold = 2
window = "1m"

[[rule]]
id = "cron-fail"
kind = "match"
where = { "fields.program" = "cron" }
regex = 'Failed password for (?P<user>\S+) from (?P<ip>[0-9.]+)'

[[rule]]
id = "sshd-fail-each"
kind = "match"
where = { "fields.program" = "sshd" }
regex = 'Failed password for (?P<user>\S+) from (?P<ip>[0-9.]+)'

[[rule]]
id = "cron-any"
kind = "match"
where = { "fields.program" = "cron", level = "error" }

[[rule]]
id = "metrics"
kind = "threshold"
where = { kind = { in = ["metric", "gauge"] } }
group_by = ["service"]
threshold = 2
window = "1m"

[[rule]]
id = "late-sshd"
kind = "match"
where = { "fields.program" = "sshd" }
allowed_lateness = "5s"
"#;

fn engine_event(i: usize, kind: u8, msg: u8, svc: u8, level: u8, back: u8) -> Event {
    let message = match msg % 7 {
        0 => format!("Failed password for root from 10.0.0.{} port 22", i % 3),
        1 => format!("GET /x status 50{}", i % 2),
        2 => "disk sdb failed".to_owned(),
        3 => "all good".to_owned(),
        4 => format!("  user{} : {} incorrect", i % 2, i % 4),
        5 => "x y : denied".to_owned(),
        _ => format!("status 503 and Failed password for x from 10.0.0.{}", i % 2),
    };
    let ts = 1_796_000_000_000i64 + i as i64 * 1000 - i64::from(back % 4) * 4000;
    let service = ["api", "db", "web"][usize::from(svc % 3)];
    let level = ["info", "error"][usize::from(level % 2)];
    // The program as syslog gives it, a number (read as its JSON text), null, or none.
    let program = [
        serde_json::json!("sshd"),
        serde_json::json!("cron"),
        serde_json::json!(7),
        serde_json::Value::Null,
    ][i % 4]
        .clone();
    let mut fields = serde_json::Map::new();
    if i % 5 != 4 {
        fields.insert("program".to_owned(), program);
    }
    let line = serde_json::json!({
        "kind": if kind.is_multiple_of(3) { "metric" } else { "log" },
        "ts": ts,
        "message": message,
        "service": service,
        "level": level,
        "fields": fields,
    })
    .to_string();
    Event::decode(line.as_bytes(), &defaults()).expect("test events decode")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..config() })]

    /// The shared regex set decides which rules an event reaches; the rules each alone (no
    /// set, every rule asked) detect exactly the same, in the same order, with the same late
    /// counts.
    #[test]
    fn rules_together_detect_what_each_detects_alone(
        events in proptest::collection::vec((0u8..6, 0u8..10, 0u8..3, 0u8..2, 0u8..8), 1..120)
    ) {
        let configs = incidentd::config::load_str(Path::new("/t/incidentd.toml"), MIXED_RULES)
            .expect("rules load")
            .rules;
        let events = events
            .into_iter()
            .enumerate()
            .map(|(i, (kind, msg, svc, level, back))| engine_event(i, kind, msg, svc, level, back));
        same_together_and_alone(&configs, events)?;
    }
}

/// Runs `events` through `configs` together (one engine: the shared set, the literals, the
/// index) and through each rule alone (an engine of its own, every event asked), and checks
/// that both detect the same, in the same order, with the same labels and the same matched,
/// fired and late counts.
fn same_together_and_alone(
    configs: &[incidentd::engine::config::RuleConfig],
    events: impl IntoIterator<Item = Event>,
) -> Result<(), TestCaseError> {
    let mut together = incidentd::engine::Engine::new(configs);
    let mut alone: Vec<incidentd::engine::Engine> = configs
        .iter()
        .map(|c| incidentd::engine::Engine::new(std::slice::from_ref(c)))
        .collect();
    let view = |d: &Vec<incidentd::detection::Detection>| {
        d.iter()
            .map(|d| {
                (
                    d.rule.clone(),
                    d.key.clone(),
                    d.ts,
                    d.count,
                    d.labels.clone(),
                )
            })
            .collect::<Vec<_>>()
    };
    // The same events in two halves: a copy of the engine's compiled rules matches, a third
    // engine applies what it found (as `rules test` does on several threads). The copy is
    // made again after a few events, as a worker copies an engine that has state.
    let mut matcher = together.matcher();
    let mut applier = incidentd::engine::Engine::new(configs);
    let mut matched = incidentd::engine::Matched::default();
    for (i, ev) in events.into_iter().enumerate() {
        let mut a = Vec::new();
        together.on_event(&ev, &mut a);
        let mut b = Vec::new();
        for e in &mut alone {
            e.on_event(&ev, &mut b);
        }
        prop_assert_eq!(view(&a), view(&b));
        if i % 7 == 0 {
            matched.clear();
        }
        if i == 5 {
            matcher = together.matcher();
        }
        matcher.match_event(&ev, &mut matched);
        let mut c = Vec::new();
        applier.on_matched(&ev, &matched, matched.len() - 1, &mut c);
        prop_assert_eq!(format!("{a:?}"), format!("{c:?}"));
    }
    let counts = |rules: Vec<incidentd::engine::RuleInfo>| {
        rules
            .into_iter()
            .map(|r| (r.id, r.matched, r.fired, r.late))
            .collect::<Vec<_>>()
    };
    let alone_counts: Vec<_> = alone.iter().flat_map(|e| counts(e.rules())).collect();
    prop_assert_eq!(counts(together.rules()), alone_counts);
    prop_assert_eq!(counts(applier.rules()), counts(together.rules()));
    prop_assert_eq!(together.take_late_inputs(), applier.take_late_inputs());
    Ok(())
}

/// sshd messages: every failure form the shipped SSH rules count, the scan forms, and near
/// misses (the same words not at the start, a form cut short, successful logins).
fn ssh_message(form: u8, ip: u8, user: u8) -> String {
    let ip = format!("203.0.113.{}", ip % 4);
    let user = ["root", "admin x", "from 6.6.6.6 port 1", "", "Failed"][usize::from(user % 5)];
    match form % 14 {
        0 => format!("Failed password for {user} from {ip} port 22 ssh2"),
        1 => format!("Failed publickey for invalid user {user} from {ip} port 22 ssh2"),
        2 => format!("Invalid user {user} from {ip} port 4242"),
        3 => format!(
            "error: maximum authentication attempts exceeded for {user} from {ip} port 22 ssh2 [preauth]"
        ),
        4 => format!("Connection closed by authenticating user {user} {ip} port 22 [preauth]"),
        5 => format!(
            "pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= rhost={ip}  user={user}"
        ),
        6 => format!("Did not receive identification string from {ip} port 22"),
        7 => format!("Connection closed by {ip} port 22 [preauth]"),
        8 => format!("banner exchange: Connection from {ip} port 22: invalid format"),
        // Near misses: none of these may count.
        9 => format!("x Failed password for {user} from {ip} port 22 ssh2"),
        10 => format!("Accepted password for {user} from {ip} port 22 ssh2"),
        11 => format!("Connection closed by {ip} port 22"),
        12 => format!("Disconnected from user {user} {ip} port 22"),
        _ => format!("Failed password for {user} from {ip} port 22 ssh2 trailing"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..config() })]

    /// The shipped SSH rules, whose patterns are anchored, are asked only when one of their
    /// literals starts the message; together they detect exactly what each detects alone
    /// (no set, no literals: every rule runs its own regex on every event).
    #[test]
    fn shipped_ssh_rules_together_detect_what_each_detects_alone(
        events in proptest::collection::vec((0u8..14, 0u8..4, 0u8..5, 0u8..3), 1..200)
    ) {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/etc/rules.d/ssh.toml"))
            .expect("the shipped SSH rules")
            .lines()
            .filter(|l| !l.starts_with("actions ="))
            .collect::<Vec<_>>()
            .join("\n");
        let configs = incidentd::config::load_str(Path::new("/t/ssh.toml"), &text)
            .expect("the shipped SSH rules load")
            .rules;
        prop_assert!(configs.len() >= 2, "a set needs two regex rules");
        let mut ts = 1_795_998_000_000i64;
        let events = events.into_iter().map(|(form, ip, user, gap)| {
            ts += i64::from(gap) * 4000;
            let line = serde_json::json!({
                "kind": "log",
                "ts": ts,
                "message": ssh_message(form, ip, user),
                "fields": {"program": if form % 7 == 6 { "sshd-session" } else { "sshd" }},
            })
            .to_string();
            Event::decode(line.as_bytes(), &defaults()).expect("test events decode")
        });
        same_together_and_alone(&configs, events)?;
    }
}
