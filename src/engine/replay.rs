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
use crate::event::{Defaults, Event};
use crate::source::parse::{log_event, set, syslog::parse_syslog_into, text_of};

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
    /// Lines no rule's regex could match, counted as events without being parsed.
    pub skipped: u64,
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
            skipped: 0,
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
        // Text lines that no rule's regex can match are counted but not parsed (NDJSON is
        // not filtered: JSON escapes make its text differ from the message).
        let prefilter = match self.format {
            Format::Raw | Format::Syslog => engine.line_prefilter(),
            Format::Ndjson => None,
        };
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
            if let Some(p) = &prefilter
                && !p.is_match(&text_of(text).0)
            {
                report.events += 1;
                report.skipped += 1;
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
                        &text_of(text).0,
                    );
                    Ok(())
                }
                Format::Syslog => {
                    if parse_syslog_into(&mut scratch, &text_of(text).0, self.year, &self.host) {
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

fn trim_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn engine(text: &str) -> Engine {
        Engine::new(&crate::engine::tests::rules(text))
    }

    const SSH: &str = r#"
[[rule]]
id = "ssh"
kind = "threshold"
threshold = 3
window = "1m"
regex = 'Failed password for (?:invalid user )?\S+ from (?P<ip>[0-9.]+)'
group_by = ["ip"]
"#;

    #[test]
    fn the_line_prefilter_is_offered_only_when_exact() {
        assert!(engine(SSH).line_prefilter().is_some());
        let anchored = SSH.replace("regex = 'Failed", "regex = '^Failed");
        assert!(engine(&anchored).line_prefilter().is_none());
        let late = format!("{SSH}allowed_lateness = \"5s\"\n");
        assert!(engine(&late).line_prefilter().is_none());
        let without_regex = format!(
            "{SSH}\n[[rule]]\nid = \"errors\"\nkind = \"match\"\nwhere = {{ level = \"error\" }}\n"
        );
        assert!(engine(&without_regex).line_prefilter().is_none());
        let rate = SSH
            .replace("kind = \"threshold\"", "kind = \"rate\"")
            .replace(
                "threshold = 3\n",
                "total_where = { kind = \"log\" }\nratio = 0.5\n",
            );
        assert!(engine(&rate).line_prefilter().is_none());
    }

    #[test]
    fn prefiltered_replay_finds_the_same_detections() {
        let mut log = String::new();
        for i in 0..400u32 {
            let s = i % 60;
            log.push_str(&format!("Nov 23 10:{:02}:{s:02} h sshd[1]: ", i / 60));
            if i % 7 == 0 {
                log.push_str(&format!(
                    "Failed password for root from 10.0.0.{} port 22\n",
                    i % 3
                ));
            } else {
                log.push_str("Accepted publickey for deploy from 10.9.9.9\n");
            }
        }
        log.push_str("not syslog at all\n");
        let replay = Replay {
            format: Format::Syslog,
            year: 2026,
            host: "h".into(),
            default_ts: Timestamp(0),
        };
        let run = |rules: &str| {
            let mut e = engine(rules);
            replay.run(&mut e, log.as_bytes(), |_| {}).unwrap()
        };
        let fast = run(SSH);
        // A second, anchored rule turns the prefilter off.
        let slow = run(&format!(
            "{SSH}\n[[rule]]\nid = \"never\"\nkind = \"match\"\nregex = '^never$'\n"
        ));
        assert!(fast.skipped > 0 && slow.skipped == 0);
        let ssh = |r: &Report| -> Vec<(String, i64)> {
            r.detections
                .iter()
                .filter(|d| d.rule == "ssh")
                .map(|d| (d.key.clone(), d.ts.millis()))
                .collect()
        };
        assert!(!ssh(&fast).is_empty());
        assert_eq!(ssh(&fast), ssh(&slow));
        assert_eq!(fast.rules[0].matched, slow.rules[0].matched);
        assert_eq!(fast.lines, slow.lines);
    }
}
