//! Offline replay: a log or NDJSON file through the same [`Engine`] the daemon runs, on
//! event time, with per-rule counts and every detection. Used by `incidentctl rules test`.
//!
//! Formats: `ndjson` (one event per line, §3.2), `raw` (each line is a `log` event whose
//! message is the line), `syslog` (RFC 3164 `Mmm dd hh:mm:ss host program[pid]: text`, the year
//! taken from the caller; RFC 5424 lines are recognised by their `<pri>1 ` prefix). For text
//! formats the message is the text after `program[pid]: `, and program, pid and host are set.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Instant;

use serde::Serialize;

use super::{Detection, Engine};
use crate::clock::Timestamp;
use crate::event::{Defaults, Event, Level};

/// How each line of the input is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Ndjson,
    Raw,
    Syslog,
}

#[derive(Debug, Serialize)]
pub struct RuleCount {
    pub id: String,
    pub matched: u64,
    pub fired: u64,
}

#[derive(Debug, Serialize)]
pub struct ReplayDetection {
    pub rule: String,
    pub ts: Timestamp,
    pub key: String,
    pub labels: BTreeMap<String, String>,
    pub count: u64,
}

impl From<Detection> for ReplayDetection {
    fn from(d: Detection) -> Self {
        ReplayDetection {
            rule: d.rule,
            ts: d.ts,
            key: d.key,
            labels: d.labels,
            count: d.count,
        }
    }
}

/// The result of a replay; its JSON form is what `rules test -o json` prints.
#[derive(Debug, Serialize)]
pub struct Report {
    pub lines: u64,
    pub events: u64,
    pub rejected: u64,
    pub seconds: f64,
    pub rules: Vec<RuleCount>,
    pub detections: Vec<ReplayDetection>,
    /// The first rejected lines with their reasons (at most 20), for people.
    #[serde(skip)]
    pub first_rejections: Vec<(u64, String)>,
}

/// Settings of one replay.
pub struct Replay {
    pub format: Format,
    /// Year for syslog timestamps that have none.
    pub year: i32,
    pub host: String,
    /// Event time for lines that carry none (raw lines, NDJSON without `ts`).
    pub default_ts: Timestamp,
}

impl Replay {
    /// Runs `input` through `engine`. `progress` is called with the bytes read so far every
    /// few thousand lines.
    pub fn run(
        &self,
        engine: &mut Engine,
        mut input: impl BufRead,
        mut progress: impl FnMut(u64),
    ) -> std::io::Result<Report> {
        let started = Instant::now();
        let mut report = Report {
            lines: 0,
            events: 0,
            rejected: 0,
            seconds: 0.0,
            rules: Vec::new(),
            detections: Vec::new(),
            first_rejections: Vec::new(),
        };
        let mut line = Vec::with_capacity(4096);
        // Reused for syslog lines: parsing overwrites its buffers instead of allocating.
        let mut scratch = log_event(String::new(), self.default_ts, &self.host);
        let mut out = Vec::new();
        let mut bytes = 0u64;
        // The replay's clock is the newest event time seen; lines without a time get it (or
        // `default_ts` before any time is known).
        let mut newest: Option<Timestamp> = None;
        loop {
            line.clear();
            let n = input.read_until(b'\n', &mut line)?;
            if n == 0 {
                break;
            }
            bytes += n as u64;
            report.lines += 1;
            let text = trim_newline(&line);
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let parsed: Result<(), String> = match self.format {
                Format::Ndjson => {
                    let defaults = Defaults {
                        source: "replay",
                        host: &self.host,
                        now: newest.unwrap_or(self.default_ts),
                    };
                    Event::decode(text, &defaults)
                        .map(|e| scratch = e)
                        .map_err(|e| e.to_string())
                }
                Format::Raw => {
                    scratch.ts = newest.unwrap_or(self.default_ts);
                    set(
                        scratch.message.get_or_insert_with(String::new),
                        &text_of(text),
                    );
                    Ok(())
                }
                Format::Syslog => {
                    if parse_syslog_into(&mut scratch, &text_of(text), self.year, &self.host) {
                        Ok(())
                    } else {
                        Err("not a syslog line".to_owned())
                    }
                }
            };
            match parsed {
                Ok(()) => {
                    let ev = &scratch;
                    report.events += 1;
                    newest = Some(newest.map_or(ev.ts, |n| n.max(ev.ts)));
                    engine.on_event(ev, &mut out);
                    report
                        .detections
                        .extend(out.drain(..).map(ReplayDetection::from));
                }
                Err(e) => {
                    report.rejected += 1;
                    if report.first_rejections.len() < 20 {
                        report.first_rejections.push((report.lines, e));
                    }
                }
            }
            if report.lines.is_multiple_of(8192) {
                // Event time is the clock offline: let quiet groups go as the log moves on.
                tick(engine, newest, &mut out, &mut report);
                progress(bytes);
            }
        }
        // Timers due by the last event's time fire; the log says nothing about later.
        tick(engine, newest, &mut out, &mut report);
        progress(bytes);
        report.seconds = started.elapsed().as_secs_f64();
        report.rules = engine
            .rules()
            .into_iter()
            .map(|r| RuleCount {
                id: r.id,
                matched: r.matched,
                fired: r.fired,
            })
            .collect();
        Ok(report)
    }
}

/// Advances the engine to `now` (when any time is known) and collects what fired.
fn tick(
    engine: &mut Engine,
    now: Option<Timestamp>,
    out: &mut Vec<Detection>,
    report: &mut Report,
) {
    if let Some(now) = now {
        engine.on_tick(now, out);
        report
            .detections
            .extend(out.drain(..).map(ReplayDetection::from));
    }
}

/// The line as text: borrowed when it is valid UTF-8 (the common case, checked fast), decoded
/// lossily otherwise.
fn text_of(b: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(b) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(b),
    }
}

/// Splits at the first space, byte-wise (faster than a `char` pattern).
fn split_space(s: &str) -> Option<(&str, &str)> {
    let i = memchr::memchr(b' ', s.as_bytes())?;
    // A space is ASCII, so both sides are on character boundaries.
    Some((&s[..i], &s[i + 1..]))
}

fn trim_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

fn log_event(message: String, ts: Timestamp, host: &str) -> Event {
    Event {
        ts,
        kind: "log".into(),
        source: "replay".into(),
        level: Level::Info,
        service: None,
        host: host.to_owned(),
        message: Some(message),
        value: None,
        correlation_id: None,
        trace_id: None,
        labels: BTreeMap::new(),
        fields: serde_json::Map::new(),
    }
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// Parses one syslog line (RFC 3164, or RFC 5424 with `<pri>1 `). The message is the text after
/// `program[pid]: `; program and pid become fields, the host is the event's host.
pub fn parse_syslog(line: &str, year: i32, default_host: &str) -> Option<Event> {
    let mut ev = log_event(String::new(), Timestamp(0), default_host);
    parse_syslog_into(&mut ev, line, year, default_host).then_some(ev)
}

/// Like [`parse_syslog`], overwriting `ev` in place so a replay reuses its buffers instead of
/// allocating per line. Returns false (leaving `ev` unspecified) for a line that is not syslog.
pub fn parse_syslog_into(ev: &mut Event, line: &str, year: i32, default_host: &str) -> bool {
    parse_into(ev, line, year, default_host).is_some()
}

fn parse_into(ev: &mut Event, line: &str, year: i32, default_host: &str) -> Option<()> {
    let (level, rest) = match line.strip_prefix('<') {
        Some(r) => {
            let (pri, after) = r.split_once('>')?;
            let pri: u8 = pri.parse().ok()?;
            (Some(level_of(pri & 7)), after)
        }
        None => (None, line),
    };
    if let Some(r5424) = rest.strip_prefix("1 ") {
        *ev = parse_5424(r5424, level, default_host)?;
        return Some(());
    }
    // "Nov 23 10:00:00 host program[pid]: text"; the day may be space-padded.
    let month = MONTHS.iter().position(|m| rest.get(..3) == Some(*m))? as u8 + 1;
    let rest = rest.get(3..)?.trim_start();
    let (day, rest) = split_space(rest)?;
    let (clock, rest) = split_space(rest)?;
    let mut hms = clock.split(':').map(|p| p.parse::<u8>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    let date =
        time::Date::from_calendar_date(year, time::Month::try_from(month).ok()?, day.parse().ok()?)
            .ok()?;
    let ts = date.with_hms(h, m, s).ok()?.assume_utc();
    let (host, rest) = split_space(rest)?;
    ev.ts = Timestamp((ts.unix_timestamp_nanos() / 1_000_000) as i64);
    ev.level = level.unwrap_or(Level::Info);
    set(
        &mut ev.host,
        if host.is_empty() { default_host } else { host },
    );
    let (tag, message) = match rest.split_once(": ") {
        Some((tag, msg)) if !tag.contains(' ') => (Some(tag), msg),
        _ => (None, rest),
    };
    let (program, pid) = match tag.map(|t| {
        t.split_once('[')
            .map_or((t, None), |(p, pid)| (p, pid.strip_suffix(']')))
    }) {
        Some((p, pid)) => (Some(p), pid.and_then(|p| p.parse::<u64>().ok())),
        None => (None, None),
    };
    match program {
        Some(p) => set_field(&mut ev.fields, "program", p),
        None => {
            ev.fields.remove("program");
        }
    }
    match pid {
        Some(n) => match ev.fields.get_mut("pid") {
            Some(v) => *v = n.into(),
            None => {
                ev.fields.insert("pid".into(), n.into());
            }
        },
        None => {
            ev.fields.remove("pid");
        }
    }
    set(ev.message.get_or_insert_with(String::new), message);
    Some(())
}

fn set(dst: &mut String, src: &str) {
    dst.clear();
    dst.push_str(src);
}

/// Sets a string field, reusing the existing key and buffer when present.
fn set_field(fields: &mut serde_json::Map<String, serde_json::Value>, key: &str, value: &str) {
    match fields.get_mut(key) {
        Some(serde_json::Value::String(s)) => set(s, value),
        _ => {
            fields.insert(key.to_owned(), value.into());
        }
    }
}

fn parse_5424(rest: &str, level: Option<Level>, default_host: &str) -> Option<Event> {
    // TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] MSG
    let mut parts = rest.splitn(6, ' ');
    let ts = Timestamp::parse_rfc3339(parts.next()?).ok()?;
    let host = parts.next().filter(|h| *h != "-").unwrap_or(default_host);
    let app = parts.next().filter(|a| *a != "-");
    let pid = parts.next().and_then(|p| p.parse::<u64>().ok());
    let _msgid = parts.next();
    let tail = parts.next().unwrap_or("");
    let message = if let Some(sd) = tail.strip_prefix('-') {
        sd.trim_start()
    } else if tail.starts_with('[') {
        // Skip structured data: balanced [..] groups.
        let mut depth = 0;
        let mut end = tail.len();
        for (i, c) in tail.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => {
                    depth -= 1;
                    if depth == 0 && !tail[i + 1..].starts_with('[') {
                        end = i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        tail[end..].trim_start()
    } else {
        tail
    };
    let mut ev = log_event(message.trim_start_matches('\u{feff}').to_owned(), ts, host);
    if let Some(a) = app {
        ev.fields.insert("program".into(), a.into());
    }
    if let Some(p) = pid {
        ev.fields.insert("pid".into(), p.into());
    }
    if let Some(l) = level {
        ev.level = l;
    }
    Some(ev)
}

fn level_of(severity: u8) -> Level {
    match severity {
        0..=2 => Level::Critical,
        3 => Level::Error,
        4 => Level::Warning,
        5 => Level::Notice,
        6 => Level::Info,
        _ => Level::Debug,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3164_lines() {
        let e = parse_syslog(
            "Nov  3 10:00:07 web-1 sshd[4242]: Failed password for root from 1.2.3.4 port 22 ssh2",
            2026,
            "h",
        )
        .unwrap();
        assert_eq!(e.ts.to_rfc3339(), "2026-11-03T10:00:07.000Z");
        assert_eq!(e.host, "web-1");
        assert_eq!(e.fields["program"], "sshd");
        assert_eq!(e.fields["pid"], 4242);
        assert_eq!(
            e.message.as_deref(),
            Some("Failed password for root from 1.2.3.4 port 22 ssh2")
        );
        let p = parse_syslog(
            "<34>Oct 11 22:14:15 mymachine su: 'su root' failed for lonvick on /dev/pts/8",
            2025,
            "h",
        )
        .unwrap();
        assert_eq!(p.level, Level::Critical);
        assert_eq!(p.fields["program"], "su");
        assert!(parse_syslog("not a syslog line", 2026, "h").is_none());
        assert!(parse_syslog("Foo 12 10:00:00 h x: y", 2026, "h").is_none());
    }

    #[test]
    fn rfc5424_lines() {
        let e = parse_syslog(
            r#"<165>1 2026-11-23T10:00:00.003Z host1 evntslog 77 ID47 [exampleSDID@32473 iut="3"] An application event"#,
            2026,
            "h",
        )
        .unwrap();
        assert_eq!(e.message.as_deref(), Some("An application event"));
        assert_eq!(e.host, "host1");
        assert_eq!(e.level, Level::Notice);
        assert_eq!(e.fields["pid"], 77);
        let dash = parse_syslog("<13>1 2026-11-23T10:00:00Z h app - - - hello", 2026, "x").unwrap();
        assert_eq!(dash.message.as_deref(), Some("hello"));
    }
}
