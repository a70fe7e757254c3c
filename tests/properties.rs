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
