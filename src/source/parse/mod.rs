//! Line parsers: turn one line of text into an [`Event`] by the source's `format`.
//!
//! A line a parser cannot read is not lost: it becomes a plain `log` event whose message is the
//! line, with `fields.parse_error` saying why, and is counted as `unparsed`. Timestamps come
//! from the line when it carries one (RFC 3339, syslog, epoch seconds or milliseconds), else
//! from the clock.

pub mod logfmt;
pub mod syslog;

use std::borrow::Cow;

use serde_json::Value;

use crate::clock::Timestamp;
use crate::event::{Event, Level};
use crate::source::config::{LineFormat, Parsing};

/// Turns lines of one source into events.
pub struct Parser {
    parsing: Parsing,
    source: String,
    host: String,
    /// `[engine] max_future_skew`: lines stamped later than `now` plus this are refused.
    max_future_skew: std::time::Duration,
}

/// The result of parsing one line.
/// What parsing a line into an event found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// The format could not read the line; the event carries it raw.
    pub unparsed: bool,
    /// As [`Parsed::future`].
    pub future: bool,
}

pub struct Parsed {
    pub event: Event,
    /// The format could not read the line; the event carries it raw.
    pub unparsed: bool,
    /// The line's time lies more than `[engine] max_future_skew` ahead of `now`: the caller
    /// must refuse it (counted as `future_ts`), so no line can move the clock into the future.
    pub future: bool,
}

impl Parser {
    pub fn new(parsing: Parsing, source: &str, host: &str) -> Self {
        Parser {
            parsing,
            source: source.to_owned(),
            host: host.to_owned(),
            max_future_skew: crate::watermark::DEFAULT_MAX_FUTURE_SKEW,
        }
    }

    /// Sets `[engine] max_future_skew` (the default is [`crate::watermark::DEFAULT_MAX_FUTURE_SKEW`]).
    pub fn with_future_skew(mut self, skew: std::time::Duration) -> Self {
        self.max_future_skew = skew;
        self
    }

    pub fn format(&self) -> LineFormat {
        self.parsing.format
    }

    /// Parses `line` (without its newline). `now` is the event time of lines without one
    /// and anchors the year of RFC 3164 timestamps.
    pub fn parse(&self, line: &str, now: Timestamp) -> Parsed {
        let mut event = Event::log(String::new(), now, &self.host);
        let Verdict { unparsed, future } = self.parse_into(&mut event, line, now);
        Parsed {
            event,
            unparsed,
            future,
        }
    }

    /// [`Parser::parse`] into `ev`, an event of this source made before (a spare one the
    /// engine handed back): it ends up exactly as a new one would, its strings' memory reused
    /// where the format allows.
    pub fn parse_into(&self, ev: &mut Event, line: &str, now: Timestamp) -> Verdict {
        self.reset(ev, now);
        let result = match self.parsing.format {
            LineFormat::Raw => {
                raw_into(ev, line);
                Ok(())
            }
            LineFormat::Syslog => {
                if syslog::parse_syslog_into(ev, line, year_of(now), &self.host) {
                    // RFC 3164 has no year: a date ahead of now by more than a day belongs to
                    // last year (a December line read in January).
                    if ev.ts.millis() > now.millis() + 86_400_000 {
                        syslog::parse_syslog_into(ev, line, year_of(now) - 1, &self.host);
                    }
                    set(&mut ev.source, &self.source);
                    set(&mut ev.kind, &self.parsing.kind);
                    Ok(())
                } else {
                    Err("not a syslog line")
                }
            }
            LineFormat::Json | LineFormat::Journald => match serde_json::from_str::<Value>(line) {
                Ok(Value::Object(map)) => {
                    if self.parsing.format == LineFormat::Journald {
                        journald_into(ev, map);
                    } else {
                        object_into(ev, map.into_iter());
                    }
                    Ok(())
                }
                Ok(_) => Err("not a JSON object"),
                Err(_) => Err("invalid JSON"),
            },
            LineFormat::Logfmt => match logfmt::pairs(line) {
                Some(pairs) if !pairs.is_empty() => {
                    object_into(
                        ev,
                        pairs
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), Value::String(v.into_owned()))),
                    );
                    Ok(())
                }
                _ => Err("not logfmt"),
            },
            LineFormat::Regex => match self.parsing.pattern.as_ref().and_then(|p| {
                let caps = p.0.captures(line)?;
                Some(
                    p.0.capture_names()
                        .flatten()
                        .filter_map(|name| {
                            caps.name(name).map(|m| {
                                (
                                    crate::de::Pattern::label_of(name).to_owned(),
                                    Value::String(m.as_str().to_owned()),
                                )
                            })
                        })
                        .collect::<Vec<_>>(),
                )
            }) {
                Some(groups) => {
                    let had_message = groups.iter().any(|(k, _)| k == "message" || k == "msg");
                    object_into(ev, groups.into_iter());
                    if !had_message {
                        ev.message = Some(line.to_owned());
                    }
                    Ok(())
                }
                None => Err("line does not match the pattern"),
            },
        };
        let unparsed = match result {
            Ok(()) => false,
            Err(why) => {
                *ev = Event::log(line.to_owned(), now, &self.host);
                set(&mut ev.source, &self.source);
                set(&mut ev.kind, &self.parsing.kind);
                ev.fields.insert("parse_error".into(), why.into());
                true
            }
        };
        if ev.service.is_none() {
            ev.service.clone_from(&self.parsing.service);
        }
        for (k, v) in &self.parsing.labels {
            ev.labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let future = crate::watermark::too_far_ahead(ev.ts, now, self.max_future_skew);
        Verdict { unparsed, future }
    }

    /// Makes `ev` what [`Event::log`] makes for this source, keeping its strings' memory. A
    /// syslog event keeps its `program` and `pid` fields, which parsing sets or removes.
    fn reset(&self, ev: &mut Event, now: Timestamp) {
        ev.ts = now;
        set(&mut ev.kind, &self.parsing.kind);
        set(&mut ev.source, &self.source);
        ev.level = crate::event::Level::Info;
        ev.service = None;
        set(&mut ev.host, &self.host);
        match &mut ev.message {
            Some(m) => m.clear(),
            None => ev.message = Some(String::new()),
        }
        ev.value = None;
        ev.correlation_id = None;
        ev.trace_id = None;
        ev.labels.clear();
        match self.parsing.format {
            LineFormat::Syslog => ev.fields.retain(|k, _| k == "program" || k == "pid"),
            _ => ev.fields.clear(),
        }
    }
}

fn year_of(ts: Timestamp) -> i32 {
    time::OffsetDateTime::from_unix_timestamp(ts.millis().div_euclid(1000))
        .map(|t| t.year())
        .unwrap_or(1970)
}

/// A raw line: the message is the line; a leading RFC 3339 timestamp is the event time.
fn raw_into(ev: &mut Event, line: &str) {
    let first = line.split_ascii_whitespace().next().unwrap_or("");
    let first = first.trim_start_matches('[').trim_end_matches(']');
    if first.len() >= 19
        && first.as_bytes()[4] == b'-'
        && let Ok(ts) = Timestamp::parse_rfc3339(first)
    {
        ev.ts = ts;
    }
    set(ev.message.get_or_insert_with(String::new), line);
}

/// An event time written as RFC 3339 text, epoch seconds or epoch milliseconds.
fn time_of(v: &Value) -> Option<Timestamp> {
    const MAX_MS: f64 = 253_402_300_799_999.0;
    let n = match v {
        Value::String(s) => {
            if let Ok(ts) = Timestamp::parse_rfc3339(s) {
                return Some(ts);
            }
            // "2026-11-23 10:00:00" (a space instead of T) is common in logs.
            if s.len() >= 19 && s.as_bytes()[10] == b' ' {
                let fixed = format!("{}T{}", &s[..10], &s[11..]);
                let fixed = if fixed.len() == 19 {
                    fixed + "Z"
                } else {
                    fixed
                };
                if let Ok(ts) = Timestamp::parse_rfc3339(&fixed) {
                    return Some(ts);
                }
            }
            s.parse::<f64>().ok()?
        }
        Value::Number(n) => n.as_f64()?,
        _ => return None,
    };
    // Below 1e11 it is seconds (until the year 5138), else milliseconds.
    let ms = if n.abs() < 1e11 { n * 1000.0 } else { n };
    (ms.is_finite() && ms.abs() <= MAX_MS).then(|| Timestamp::from_millis(ms as i64))
}

/// A level named as logs name it: `warn`, `ERROR`, `fatal`, `trace`, or a syslog number.
pub fn level_of_text(s: &str) -> Option<Level> {
    let lower = s.trim().to_ascii_lowercase();
    if let Ok(n) = lower.parse::<u8>()
        && n <= 7
    {
        return Some(syslog::level_of(n));
    }
    match lower.as_str() {
        "fatal" | "panic" | "emerg" | "emergency" | "alert" => Some(Level::Critical),
        "trace" => Some(Level::Debug),
        "information" | "informational" => Some(Level::Info),
        "warning" | "warn" => Some(Level::Warning),
        other => other.parse().ok(),
    }
}

fn text(v: Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s),
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Maps the keys of a JSON object (or logfmt pairs, or regex groups) onto the event: known
/// event keys where they fit, everything else into `fields`.
fn object_into(ev: &mut Event, pairs: impl Iterator<Item = (String, Value)>) {
    for (k, v) in pairs {
        match k.as_str() {
            "ts" | "time" | "timestamp" | "@timestamp" | "t" => match time_of(&v) {
                Some(ts) => ev.ts = ts,
                None => {
                    ev.fields.insert(k, v);
                }
            },
            "level" | "lvl" | "severity" | "loglevel" => match v.as_str().and_then(level_of_text) {
                Some(l) => ev.level = l,
                None => {
                    ev.fields.insert(k, v);
                }
            },
            "message" | "msg" => ev.message = text(v),
            "kind" => {
                if let Some(s) = v.as_str().filter(|s| !s.is_empty()) {
                    set(&mut ev.kind, s);
                }
            }
            "service" => ev.service = text(v),
            "host" | "hostname" => {
                if let Some(h) = text(v) {
                    ev.host = h;
                }
            }
            "value" => match v
                .as_f64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            {
                Some(x) => ev.value = Some(x),
                None => {
                    ev.fields.insert(k, v);
                }
            },
            "correlation_id" => ev.correlation_id = text(v),
            "trace_id" => ev.trace_id = text(v),
            "labels" => match v {
                Value::Object(m) => {
                    for (lk, lv) in m {
                        if let Some(s) = text(lv) {
                            ev.labels.insert(lk, s);
                        }
                    }
                }
                other => {
                    ev.fields.insert(k, other);
                }
            },
            _ => {
                ev.fields.insert(k, v);
            }
        }
    }
}

/// A `journalctl -o json` record.
fn journald_into(ev: &mut Event, map: serde_json::Map<String, Value>) {
    for (k, v) in map {
        match k.as_str() {
            "MESSAGE" => {
                ev.message = match v {
                    // Binary messages come as arrays of bytes.
                    Value::Array(bytes) => {
                        let b: Vec<u8> = bytes
                            .iter()
                            .filter_map(|x| x.as_u64().map(|n| n as u8))
                            .collect();
                        Some(String::from_utf8_lossy(&b).into_owned())
                    }
                    other => text(other),
                }
            }
            "PRIORITY" => {
                if let Some(l) = v.as_str().and_then(level_of_text) {
                    ev.level = l;
                }
            }
            "__REALTIME_TIMESTAMP" => {
                if let Some(us) = v.as_str().and_then(|s| s.parse::<i64>().ok()) {
                    ev.ts = Timestamp::from_millis(us / 1000);
                }
            }
            "_HOSTNAME" => {
                if let Some(h) = text(v) {
                    ev.host = h;
                }
            }
            "_SYSTEMD_UNIT" => {
                if let Some(u) = text(v) {
                    ev.fields.insert("unit".into(), u.into());
                }
            }
            "_COMM" => {
                if let Some(c) = text(v) {
                    ev.fields.insert("comm".into(), c.into());
                }
            }
            "SYSLOG_IDENTIFIER" => {
                if let Some(p) = text(v) {
                    ev.fields.insert("program".into(), p.into());
                }
            }
            "_PID" => {
                if let Some(p) = v.as_str().and_then(|s| s.parse::<u64>().ok()) {
                    ev.fields.insert("pid".into(), p.into());
                }
            }
            // Cursors and other journal bookkeeping are not worth carrying.
            _ if k.starts_with("__") => {}
            _ => {
                ev.fields.insert(k.to_ascii_lowercase(), v);
            }
        }
    }
}

/// The line as text: borrowed when it is valid UTF-8 (the common case, checked fast), decoded
/// lossily otherwise. The flag says whether bytes were replaced.
pub fn text_of(b: &[u8]) -> (Cow<'_, str>, bool) {
    match std::str::from_utf8(b) {
        Ok(s) => (Cow::Borrowed(s), false),
        Err(_) => (String::from_utf8_lossy(b), true),
    }
}

/// Splits at the first space, byte-wise (faster than a `char` pattern).
pub(crate) fn split_space(s: &str) -> Option<(&str, &str)> {
    let i = memchr::memchr(b' ', s.as_bytes())?;
    // A space is ASCII, so both sides are on character boundaries.
    Some((&s[..i], &s[i + 1..]))
}

pub(crate) fn set(dst: &mut String, src: &str) {
    dst.clear();
    dst.push_str(src);
}

/// Sets a string field, reusing the existing key and buffer when present.
pub(crate) fn set_field(
    fields: &mut serde_json::Map<String, serde_json::Value>,
    key: &str,
    value: &str,
) {
    match fields.get_mut(key) {
        Some(serde_json::Value::String(s)) => set(s, value),
        _ => {
            fields.insert(key.to_owned(), value.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::de::Pattern;

    fn parser(format: LineFormat, pattern: Option<&str>) -> Parser {
        Parser::new(
            Parsing {
                format,
                pattern: pattern.map(|p| Pattern(regex::Regex::new(p).unwrap())),
                kind: "log".into(),
                service: Some("web".into()),
                labels: [("env".to_owned(), "prod".to_owned())].into(),
            },
            "nginx",
            "h1",
        )
    }

    const NOW: Timestamp = Timestamp(1_795_435_200_000); // 2026-11-23T10:00:00Z

    #[test]
    fn an_event_parsed_into_again_is_exactly_a_new_one() {
        // Every format, with lines that set, omit and change what the one before set: a
        // spare event must carry nothing of its earlier line.
        let lines = [
            "Nov 23 09:59:58 web-1 sshd[1001]: Failed password for root from 1.2.3.4 port 22 ssh2",
            "Nov 23 09:59:59 web-1 kernel: Out of memory",
            "<11>Nov 23 09:59:59 web-1 cron[7]: job failed",
            "Nov 23 10:00:00 plain text without a tag",
            "<34>1 2026-11-23T09:59:00Z host app 12 ID47 [x@1 a=\"b\"] a 5424 message",
            "not syslog at all",
            "2026-11-23T09:59:58Z GET /health 200",
            r#"{"level":"error","message":"m","service":"api","trace_id":"t","fields":{"x":1},"labels":{"l":"v"},"value":3}"#,
            r#"{"message":"plain","correlation_id":"c"}"#,
            r#"{"ts":"2026-11-23T09:00:00Z","kind":"metric","host":"h2","y":"z"}"#,
            "level=warn msg=\"disk low\" disk=sda",
            "ts=2026-11-23T09:00:00Z level=info msg=hi",
            "",
        ];
        let formats = [
            (LineFormat::Syslog, None),
            (LineFormat::Raw, None),
            (LineFormat::Json, None),
            (LineFormat::Logfmt, None),
            (LineFormat::Journald, None),
            (LineFormat::Regex, Some(r"^(?P<level>\w+) (?P<user>\S+)")),
        ];
        for (format, pattern) in formats {
            let p = parser(format, pattern);
            let mut reused = Event::log(String::new(), Timestamp(0), "");
            // Twice round, so each line follows every other kind of line at least once.
            for line in lines.iter().chain(lines.iter().rev()) {
                let fresh = p.parse(line, NOW);
                let verdict = p.parse_into(&mut reused, line, NOW);
                assert_eq!(reused, fresh.event, "{format:?}: {line}");
                assert_eq!(
                    (verdict.unparsed, verdict.future),
                    (fresh.unparsed, fresh.future),
                    "{format:?}: {line}"
                );
            }
        }
    }

    #[test]
    fn raw_lines_keep_the_line_and_a_leading_time() {
        let p = parser(LineFormat::Raw, None);
        let e = p.parse("2026-11-23T09:59:58Z GET /health 200", NOW).event;
        assert_eq!(e.ts.to_rfc3339(), "2026-11-23T09:59:58.000Z");
        assert_eq!(
            e.message.as_deref(),
            Some("2026-11-23T09:59:58Z GET /health 200")
        );
        assert_eq!((e.source.as_str(), e.host.as_str()), ("nginx", "h1"));
        assert_eq!(e.service.as_deref(), Some("web"));
        assert_eq!(e.labels["env"], "prod");
        assert_eq!(p.parse("no time here", NOW).event.ts, NOW);
    }

    #[test]
    fn json_maps_common_keys_and_keeps_the_rest() {
        let p = parser(LineFormat::Json, None);
        let r = p.parse(
            r#"{"time":"2026-11-23T09:00:00Z","level":"WARN","msg":"slow","status":503,"trace_id":"t1","service":"api"}"#,
            NOW,
        );
        assert!(!r.unparsed);
        let e = r.event;
        assert_eq!(e.ts.to_rfc3339(), "2026-11-23T09:00:00.000Z");
        assert_eq!(e.level, Level::Warning);
        assert_eq!(e.message.as_deref(), Some("slow"));
        assert_eq!(e.fields["status"], 503);
        assert_eq!(e.trace_id.as_deref(), Some("t1"));
        assert_eq!(e.service.as_deref(), Some("api"));
        let epoch = p.parse(r#"{"ts":1795431600.5,"msg":"x"}"#, NOW).event;
        assert_eq!(epoch.ts, Timestamp(1_795_431_600_500));
        let bad = p.parse("{broken", NOW);
        assert!(bad.unparsed);
        assert_eq!(bad.event.message.as_deref(), Some("{broken"));
        assert_eq!(bad.event.fields["parse_error"], "invalid JSON");
        assert!(p.parse("[1]", NOW).unparsed);
    }

    #[test]
    fn logfmt_and_regex() {
        let p = parser(LineFormat::Logfmt, None);
        let e = p
            .parse(
                r#"ts=2026-11-23T08:00:00Z level=error msg="db down" retries=3"#,
                NOW,
            )
            .event;
        assert_eq!(e.level, Level::Error);
        assert_eq!(e.message.as_deref(), Some("db down"));
        assert_eq!(e.fields["retries"], "3");
        assert_eq!(e.ts.to_rfc3339(), "2026-11-23T08:00:00.000Z");

        let p = parser(
            LineFormat::Regex,
            Some(r"^(?P<ip>\S+) .* (?P<status>\d{3})$"),
        );
        let e = p.parse("10.0.0.1 GET / 502", NOW).event;
        assert_eq!(e.fields["ip"], "10.0.0.1");
        assert_eq!(e.fields["status"], "502");
        assert_eq!(e.message.as_deref(), Some("10.0.0.1 GET / 502"));
        let miss = p.parse("nothing", NOW);
        assert!(miss.unparsed);
        assert_eq!(
            miss.event.fields["parse_error"],
            "line does not match the pattern"
        );
    }

    #[test]
    fn syslog_infers_the_year() {
        let p = parser(LineFormat::Syslog, None);
        let e = p.parse("Nov 23 09:00:00 web-1 sshd[1]: hi", NOW).event;
        assert_eq!(e.ts.to_rfc3339(), "2026-11-23T09:00:00.000Z");
        assert_eq!(e.source, "nginx");
        // In November a December line is from last year.
        let dec = p.parse("Dec 31 23:00:00 web-1 cron[2]: x", NOW).event;
        assert_eq!(dec.ts.to_rfc3339(), "2025-12-31T23:00:00.000Z");
        assert!(p.parse("garbage", NOW).unparsed);
    }

    #[test]
    fn journald_records() {
        let p = parser(LineFormat::Journald, None);
        let e = p
            .parse(
                r#"{"__REALTIME_TIMESTAMP":"1795431600123456","PRIORITY":"3","_SYSTEMD_UNIT":"nginx.service","MESSAGE":"boom","_HOSTNAME":"web-2","__CURSOR":"s=1","SYSLOG_IDENTIFIER":"nginx","_PID":"77"}"#,
                NOW,
            )
            .event;
        assert_eq!(e.ts, Timestamp(1_795_431_600_123));
        assert_eq!(e.level, Level::Error);
        assert_eq!(e.fields["unit"], "nginx.service");
        assert_eq!(e.fields["pid"], 77);
        assert_eq!(e.host, "web-2");
        assert_eq!(e.message.as_deref(), Some("boom"));
        assert!(!e.fields.contains_key("__cursor"));
    }
}
