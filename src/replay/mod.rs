//! Offline replay: a log or NDJSON file through the same [`Engine`] the daemon runs, on
//! event time, with per-rule counts and every detection. Used by `incidentctl rules test`.
//!
//! Formats: `ndjson` (one event per line, §3.2), `raw` (each line is a `log` event whose
//! message is the line), `syslog` (RFC 3164 `Mmm dd hh:mm:ss host program[pid]: text`, the year
//! taken from the caller; RFC 5424 lines are recognised by their `<pri>1 ` prefix). For text
//! formats the message is the text after `program[pid]: `, and program, pid and host are set.

use std::collections::BTreeMap;
use std::io::{BufRead, Read};
use std::time::Instant;

use serde::Serialize;

use crate::clock::Timestamp;
use crate::engine::{Detection, Engine};
use crate::event::{Defaults, Event};
use crate::source::line_filter::LineFinder;
use crate::source::parse::{set, syslog::parse_syslog_into, text_of};

mod chunked;

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

/// The result of a replay: counts, not detections (they go to the caller one by one as they
/// fire, so a replay's memory does not grow with what it finds). Its JSON form is what
/// `rules test -o json` prints after the detections.
#[derive(Debug, Serialize)]
pub struct Report {
    pub lines: u64,
    pub events: u64,
    pub rejected: u64,
    /// Lines not parsed (neither events nor rejections): blank lines, and lines no rule's
    /// regex could match. `lines = events + rejected + skipped`.
    pub skipped: u64,
    /// Lines longer than [`Replay::max_line_bytes`]: text lines are cut to it and marked
    /// `fields.truncated`, as the daemon's file tail does; NDJSON lines are rejected.
    pub oversize: u64,
    pub seconds: f64,
    pub rules: Vec<RuleCount>,
    /// How many detections were handed over.
    #[serde(skip)]
    pub detected: u64,
    /// The first rejected lines with their reasons (at most 20), for people.
    #[serde(skip)]
    pub first_rejections: Vec<(u64, String)>,
}

impl Report {
    fn new() -> Report {
        Report {
            lines: 0,
            events: 0,
            rejected: 0,
            skipped: 0,
            oversize: 0,
            seconds: 0.0,
            rules: Vec::new(),
            detected: 0,
            first_rejections: Vec::new(),
        }
    }
}

/// Settings of one replay.
pub struct Replay {
    pub format: Format,
    /// Year for syslog timestamps that have none.
    pub year: i32,
    pub host: String,
    /// Event time for lines that carry none (raw lines, NDJSON without `ts`); also the wall
    /// time the replay runs at.
    pub default_ts: Timestamp,
    /// `[engine] max_future_skew`: lines stamped later than `default_ts` plus this are
    /// rejected (`future_ts`), as the daemon rejects them on every input.
    pub max_future_skew: std::time::Duration,
    /// Threads that match lines while this one applies them in order (see
    /// [`chunked`]); `None`: one per core when the machine has two or more (at most 8),
    /// `Some(0)`: none. Input of one chunk is read on one thread either way.
    pub workers: Option<usize>,
    /// Longer lines are cut to this many bytes (`[[source.file]] max_line_bytes`), and no
    /// more than a few bytes beyond it are ever held: memory is bounded by this, not by the
    /// input.
    pub max_line_bytes: usize,
}

impl Replay {
    /// The latest event time accepted.
    pub fn latest(&self) -> Timestamp {
        crate::watermark::latest_accepted(self.default_ts, self.max_future_skew)
    }

    /// The bytes of a line kept when it is longer: two more than the limit, so that what is
    /// kept is still over the limit once a `\r` before the newline is trimmed, and the line
    /// is cut where the limit says.
    fn kept_bytes(&self) -> usize {
        self.max_line_bytes.saturating_add(2)
    }

    /// Runs `input` through `engine`, handing each detection to `detected` as it fires, in
    /// order. `progress` is called with the bytes read so far every few thousand lines.
    pub fn run(
        &self,
        engine: &mut Engine,
        input: impl Read,
        progress: impl FnMut(u64),
        detected: &mut dyn FnMut(ReplayDetection),
    ) -> std::io::Result<Report> {
        // The report keeps only what lean detections hold.
        engine.lean = true;
        let report = self.run_lean(engine, input, progress, detected);
        engine.lean = false;
        engine.prefiltered = false;
        report
    }

    fn run_lean(
        &self,
        engine: &mut Engine,
        input: impl Read,
        mut progress: impl FnMut(u64),
        detected: &mut dyn FnMut(ReplayDetection),
    ) -> std::io::Result<Report> {
        let started = Instant::now();
        // Text lines that no rule's regex can match are counted but not parsed (NDJSON is
        // not filtered: JSON escapes make its text differ from the message).
        let patterns = match self.format {
            Format::Raw | Format::Syslog => engine.line_patterns(),
            Format::Ndjson => None,
        };
        let mut run = Run::new(self, patterns.as_deref(), detected);
        let mut bytes = 0u64;
        // Rule sets whose state only events change get no ticks before the end, filtered or
        // not, so the line filter cannot change what they detect (their memory is bounded by
        // `max_groups`).
        let mid_run_ticks = engine.needs_ticks();
        let chunked = run
            .finder
            .as_ref()
            .is_some_and(|f| f.by_literals() || run.prefilter.is_some());
        // Lines reach the rules only after one of their regexes (or literals) matched: a
        // match is likely.
        engine.prefiltered = chunked;
        let workers = self
            .workers
            .map_or_else(chunked::workers, |w| w.min(chunked::MAX_WORKERS));
        match chunked {
            true => {
                bytes = chunked::run(
                    &mut run,
                    engine,
                    input,
                    workers,
                    mid_run_ticks,
                    &mut progress,
                )?;
            }
            false => {
                let mut input = std::io::BufReader::with_capacity(64 << 10, input);
                let mut line = Vec::with_capacity(4096);
                loop {
                    let n = read_line_kept(&mut input, &mut line, self.kept_bytes())?;
                    if n == 0 {
                        break;
                    }
                    bytes += n;
                    run.line(engine, &line, true);
                    if run.report.lines.is_multiple_of(8192) {
                        // Event time is the clock offline: let quiet groups go as the log
                        // moves on.
                        if mid_run_ticks {
                            run.tick(engine);
                        }
                        progress(bytes);
                    }
                }
            }
        }
        // Timers due by the last event's time fire; the log says nothing about later.
        run.tick(engine);
        progress(bytes);
        let mut report = run.report;
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

/// Reads one line into `line` (cleared first): its first `keep` bytes and its newline; the
/// rest of a longer line is read and dropped. The bytes read, 0 at the end of the input.
pub(crate) fn read_line_kept(
    input: &mut impl BufRead,
    line: &mut Vec<u8>,
    keep: usize,
) -> std::io::Result<u64> {
    line.clear();
    let mut read = 0u64;
    loop {
        let available = match input.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if available.is_empty() {
            return Ok(read);
        }
        let (take, ended) = match memchr::memchr(b'\n', available) {
            Some(i) => (i + 1, true),
            None => (available.len(), false),
        };
        let text = if ended { take - 1 } else { take };
        let room = keep.saturating_sub(line.len());
        line.extend_from_slice(&available[..text.min(room)]);
        if ended {
            line.push(b'\n');
        }
        input.consume(take);
        read += take as u64;
        if ended {
            return Ok(read);
        }
    }
}

/// Whether some line of `region` is longer than `max` bytes (without its newline).
fn has_line_over(region: &[u8], max: usize) -> bool {
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', region) {
        if nl - start > max {
            return true;
        }
        start = nl + 1;
    }
    region.len() - start > max
}

/// The number of `\n` in `bytes`, and whether every byte is ASCII, in one pass (written so
/// the compiler vectorizes it: 32 byte-wide counters, summed before they can overflow).
fn newlines_and_ascii(bytes: &[u8]) -> (u64, bool) {
    const LANES: usize = 32;
    let mut newlines = 0u64;
    let mut high = 0u8;
    let mut lanes = bytes.chunks_exact(LANES);
    // At most 255 lanes per round, so no byte-wide counter overflows.
    loop {
        let mut counts = [0u8; LANES];
        let mut ors = [0u8; LANES];
        let mut n = 0;
        for lane in lanes.by_ref().take(255) {
            for i in 0..LANES {
                counts[i] += u8::from(lane[i] == b'\n');
                ors[i] |= lane[i];
            }
            n += 1;
        }
        newlines += counts.iter().map(|c| u64::from(*c)).sum::<u64>();
        high |= ors.iter().fold(0, |a, b| a | b);
        if n < 255 {
            break;
        }
    }
    for b in lanes.remainder() {
        newlines += u64::from(*b == b'\n');
        high |= b;
    }
    (newlines, high.is_ascii())
}

/// The filters that let a replay skip lines no rule can match: the finder of the next line
/// worth parsing (by the rules' literals, or their lazy DFA), and with the DFA, the rules'
/// regexes as one set, for lines checked one at a time.
struct Filters {
    prefilter: Option<regex::RegexSet>,
    finder: Option<LineFinder>,
}

/// The state of one replay.
struct Run<'a> {
    replay: &'a Replay,
    report: Report,
    detected: &'a mut dyn FnMut(ReplayDetection),
    scratch: Event,
    out: Vec<Detection>,
    /// The replay's clock: the newest event time seen; lines without a time get it (or
    /// `default_ts` before any time is known).
    newest: Option<Timestamp>,
    /// The rules' regexes, when a line no regex matches can be skipped (and lines are not
    /// found by literals).
    prefilter: Option<regex::RegexSet>,
    /// What finds the next line worth parsing in a chunk.
    finder: Option<LineFinder>,
    /// On a thread that only matches: the events parsed, with what the rules' regexes
    /// found, for the thread that applies them.
    keep: Option<chunked::Kept>,
    /// Whether some line has parsed (a file in the wrong format is parsed line by line).
    parsed_one: bool,
}

impl<'a> Run<'a> {
    /// A replay's state; `patterns`: the rules' line patterns, when lines no rule can match
    /// may go unparsed.
    fn new(
        replay: &'a Replay,
        patterns: Option<&[String]>,
        detected: &'a mut dyn FnMut(ReplayDetection),
    ) -> Run<'a> {
        let finder = patterns.and_then(LineFinder::new);
        // Lines found by their literals are checked by them alone (see `Run::may_match`).
        let by_literals = finder.as_ref().is_some_and(LineFinder::by_literals);
        let filters = Filters {
            prefilter: patterns.filter(|_| !by_literals).and_then(|p| {
                regex::RegexSetBuilder::new(p)
                    .dfa_size_limit(32 << 20)
                    .build()
                    .ok()
            }),
            finder,
        };
        Run::with(replay, filters, detected)
    }

    /// A replay's state with line filters built already.
    fn with(
        replay: &'a Replay,
        Filters { prefilter, finder }: Filters,
        detected: &'a mut dyn FnMut(ReplayDetection),
    ) -> Run<'a> {
        Run {
            replay,
            report: Report::new(),
            detected,
            // Reused for syslog lines: parsing overwrites its buffers instead of allocating.
            scratch: Event::log(String::new(), replay.default_ts, &replay.host),
            out: Vec::new(),
            newest: None,
            prefilter,
            finder,
            keep: None,
            parsed_one: false,
        }
    }

    /// Copies of this run's line filters, for a worker.
    fn filters(&self) -> Filters {
        Filters {
            prefilter: self.prefilter.clone(),
            finder: self.finder.clone(),
        }
    }
    /// Complete lines (the last one may lack its newline at the end of input). With the
    /// lazy DFA, the earliest end of any rule's match from `pos` is found; no line before the
    /// one holding that match's last byte can match on its own (a match inside it would end
    /// earlier), so those lines are only counted. That line is checked exactly (the match may
    /// have begun on an earlier line, so it may not match on its own) and the search goes on
    /// from the next line. With literals, the leftmost literal from `pos` is found: the lines
    /// before its line hold none and are only counted, and its line is parsed (the rules
    /// decide).
    fn region(&mut self, engine: &mut Engine, region: &[u8]) {
        // One pass counts the lines and tells whether the chunk is ASCII (then valid UTF-8
        // with no need to check it byte by byte); lines skipped below are not counted again.
        let (newlines, ascii) = newlines_and_ascii(region);
        let lines = newlines + u64::from(region.last().is_some_and(|b| *b != b'\n'));
        // Byte regexes do not see the U+FFFD that lossy decoding puts in invalid UTF-8, and
        // a file in the wrong format must show its rejections, not be skipped, and a line
        // over the limit is cut, never skipped (as the daemon's tail does): such a chunk,
        // and every chunk until a line was in the format, is read line by line (so what is
        // parsed and what skipped does not depend on where the chunks end).
        let max = self.replay.max_line_bytes;
        if !self.parsed_one
            || (!ascii && std::str::from_utf8(region).is_err())
            || (region.len() > max && has_line_over(region, max))
        {
            for line in region.split_inclusive(|b| *b == b'\n') {
                self.line(engine, line, true);
            }
            return;
        }
        let read_before = self.report.lines;
        let mut pos = 0;
        while pos < region.len() {
            let found = match &mut self.finder {
                Some(f) => f.next_end(region, pos),
                None => Err(()),
            };
            let (end, single_line) = match found {
                Ok(Some(found)) => found,
                Ok(None) => break,
                // The DFA gave up (a Unicode word boundary beside non-ASCII text): the rest
                // of the chunk is checked line by line.
                Err(()) => {
                    let mut start = pos;
                    for line in region[pos..].split_inclusive(|b| *b == b'\n') {
                        self.line_in(engine, region, start..start + line.len(), true, read_before);
                        start += line.len();
                    }
                    break;
                }
            };
            let last = if end > pos { end - 1 } else { pos };
            let start = memchr::memrchr(b'\n', &region[pos..last]).map_or(pos, |i| pos + i + 1);
            let stop =
                memchr::memchr(b'\n', &region[last..]).map_or(region.len(), |i| last + i + 1);
            // When the pattern that matched cannot match a newline and its match ends inside
            // the line's text, the whole match is in that text, which therefore matches on
            // its own (the patterns have no anchors, and a word boundary sees a line end as
            // the end of the text): no need to check it again. A literal found (reported as
            // one line's) ending inside the text is in it: the line holds one, which is what
            // the check would ask.
            let text_end = start + trim_newline(&region[start..stop]).len();
            let known = single_line && start < end && end <= text_end;
            self.line_in(engine, region, start..stop, !known, read_before);
            pos = stop;
        }
        // Every line not read above was skipped.
        let read = self.report.lines - read_before;
        self.report.lines = read_before + lines;
        self.report.skipped += lines - read;
    }

    /// [`Run::line`] for the line at `at` in a chunk whose earlier lines were not all read
    /// (`read_before`: the lines counted before the chunk): a rejection gets the line's
    /// number, counted only then.
    fn line_in(
        &mut self,
        engine: &mut Engine,
        region: &[u8],
        at: std::ops::Range<usize>,
        filter: bool,
        read_before: u64,
    ) {
        let noted = self.report.first_rejections.len();
        let start = at.start;
        self.line(engine, &region[at], filter);
        if self.report.first_rejections.len() > noted
            && let Some((number, _)) = self.report.first_rejections.last_mut()
        {
            *number = read_before + memchr::memchr_iter(b'\n', &region[..start]).count() as u64 + 1;
        }
    }

    /// Whether the format can read `line` (always, for raw lines).
    fn parses(&mut self, line: &[u8]) -> bool {
        let r = self.replay;
        match r.format {
            Format::Syslog => {
                parse_syslog_into(&mut self.scratch, &text_of(line).0, r.year, &r.host)
            }
            Format::Raw | Format::Ndjson => true,
        }
    }

    /// One line, with or without its newline; `filter` lets a line no rule can match go
    /// unparsed.
    fn line(&mut self, engine: &mut Engine, line: &[u8], filter: bool) {
        let r = self.replay;
        self.report.lines += 1;
        let text = trim_newline(line);
        let over = text.len() > r.max_line_bytes;
        if over {
            self.report.oversize += 1;
        }
        let text = &text[..text.len().min(r.max_line_bytes)];
        if text.iter().all(u8::is_ascii_whitespace) {
            self.report.skipped += 1;
            return;
        }
        // Until a line was in the format, a line is skipped only if it is: a file in the
        // wrong format shows its rejections. A cut line is never skipped.
        if filter
            && !over
            && self.may_match(text) == Some(false)
            && (self.parsed_one || self.parses(text))
        {
            self.parsed_one = true;
            self.report.skipped += 1;
            return;
        }
        let now = self.newest.unwrap_or(r.default_ts);
        let parsed: Result<(), String> = match r.format {
            // A cut JSON line is not JSON: refused, as the ingest socket refuses it.
            Format::Ndjson if over => Err(format!(
                "line longer than {} bytes (--max-line-bytes)",
                r.max_line_bytes
            )),
            Format::Ndjson => {
                let defaults = Defaults {
                    source: "replay",
                    host: &r.host,
                    now,
                    latest: r.latest(),
                };
                Event::decode(text, &defaults)
                    .map(|e| self.scratch = e)
                    .map_err(|e| e.to_string())
            }
            Format::Raw => {
                self.scratch.ts = now;
                set(
                    self.scratch.message.get_or_insert_with(String::new),
                    &text_of(text).0,
                );
                Ok(())
            }
            Format::Syslog => {
                if parse_syslog_into(&mut self.scratch, &text_of(text).0, r.year, &r.host) {
                    if self.scratch.ts > r.latest() {
                        Err(crate::event::DecodeError::FutureTs {
                            ts: self.scratch.ts,
                            latest: r.latest(),
                        }
                        .to_string())
                    } else {
                        Ok(())
                    }
                } else {
                    Err("not a syslog line".to_owned())
                }
            }
        };
        match parsed {
            Ok(()) => {
                if over {
                    // Taken off again once applied: the event is parsed into again.
                    self.scratch.fields.insert("truncated".into(), true.into());
                }
                let ev = &self.scratch;
                self.parsed_one = true;
                self.report.events += 1;
                self.newest = Some(self.newest.map_or(ev.ts, |n| n.max(ev.ts)));
                match &mut self.keep {
                    Some(kept) => kept.push(engine, &mut self.scratch, over),
                    None => {
                        engine.on_event(ev, &mut self.out);
                        hand_over(&mut self.out, &mut self.report, self.detected);
                        if over {
                            self.scratch.fields.remove("truncated");
                        }
                    }
                }
            }
            Err(e) => {
                self.report.rejected += 1;
                if self.report.first_rejections.len() < 20 {
                    self.report.first_rejections.push((self.report.lines, e));
                }
            }
        }
    }

    /// Whether the line filter lets `text` (one line's) be parsed: when lines are found by
    /// their literals, whether it holds one; otherwise whether some rule's regex matches it.
    /// `None`: no filter.
    fn may_match(&self, text: &[u8]) -> Option<bool> {
        let text = text_of(text).0;
        match self.finder.as_ref().and_then(|f| f.holds_literal(&text)) {
            Some(holds) => Some(holds),
            None => self.prefilter.as_ref().map(|p| p.is_match(&text)),
        }
    }

    fn tick(&mut self, engine: &mut Engine) {
        if let Some(now) = self.newest {
            engine.on_tick(now, &mut self.out);
            hand_over(&mut self.out, &mut self.report, self.detected);
        }
    }
}

/// What fired, to the caller, counted.
fn hand_over(
    out: &mut Vec<Detection>,
    report: &mut Report,
    detected: &mut dyn FnMut(ReplayDetection),
) {
    for d in out.drain(..) {
        report.detected += 1;
        detected(ReplayDetection::from(d));
    }
}

fn trim_newline(b: &[u8]) -> &[u8] {
    let b = b.strip_suffix(b"\n").unwrap_or(b);
    b.strip_suffix(b"\r").unwrap_or(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::line_filter::{may_match_newline, without_newline};

    fn engine(text: &str) -> Engine {
        Engine::new(&crate::engine::config::test_rules(text))
    }

    #[test]
    fn newlines_and_ascii_agree_with_a_byte_count() {
        // Lengths around the 32-byte lanes and the 255-lane rounds; one byte ≥ 0x80 anywhere.
        for len in [
            0usize,
            1,
            31,
            32,
            33,
            255 * 32 - 1,
            255 * 32,
            255 * 32 + 1,
            3 * 255 * 32 + 77,
        ] {
            let bytes: Vec<u8> = (0..len)
                .map(|i| if i % 7 == 0 { b'\n' } else { b'a' })
                .collect();
            let want = bytes.iter().filter(|b| **b == b'\n').count() as u64;
            assert_eq!(newlines_and_ascii(&bytes), (want, true), "{len}");
            for at in [0, len / 2, len.saturating_sub(1)] {
                if len > 0 {
                    let mut b = bytes.clone();
                    b[at] = 0xC3;
                    let want = b.iter().filter(|b| **b == b'\n').count() as u64;
                    assert_eq!(newlines_and_ascii(&b), (want, false), "{len} {at}");
                }
            }
        }
    }

    /// A replay's report with every detection it handed over.
    pub(super) struct Replayed {
        pub(super) report: Report,
        pub(super) detections: Vec<ReplayDetection>,
    }

    impl std::ops::Deref for Replayed {
        type Target = Report;
        fn deref(&self) -> &Report {
            &self.report
        }
    }

    /// `log` read as syslog of 2026 through a fresh engine with `rules`.
    fn syslog_replay(rules: &str, log: &[u8]) -> Replayed {
        syslog_replay_on(rules, log, 0, |_| {})
    }

    /// [`syslog_replay`] with `workers`, telling `progress` the bytes read so far.
    pub(super) fn syslog_replay_on(
        rules: &str,
        log: &[u8],
        workers: usize,
        progress: impl FnMut(u64),
    ) -> Replayed {
        let max = crate::source::config::DEFAULT_MAX_LINE_BYTES;
        replay_of(rules, (log, Format::Syslog), (workers, max), progress)
    }

    /// `input` in `format` (syslog of 2026) through a fresh engine with `rules`, with
    /// `workers` and lines cut at `max_line_bytes`.
    pub(super) fn replay_of(
        rules: &str,
        (input, format): (impl Read, Format),
        (workers, max_line_bytes): (usize, usize),
        progress: impl FnMut(u64),
    ) -> Replayed {
        let replay = Replay {
            format,
            year: 2026,
            host: "h".into(),
            default_ts: Timestamp(0),
            max_future_skew: std::time::Duration::MAX,
            workers: Some(workers),
            max_line_bytes,
        };
        let mut detections = Vec::new();
        let report = replay
            .run(&mut engine(rules), input, progress, &mut |d| {
                detections.push(d)
            })
            .unwrap();
        assert_eq!(report.detected, detections.len() as u64);
        Replayed { report, detections }
    }

    pub(super) const SSH: &str = r#"
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
        assert!(engine(SSH).line_patterns().is_some());
        // A pattern anchored to the message filters lines without its anchors: the message
        // is the end of the line.
        let anchored = SSH.replace("regex = 'Failed", "regex = '^Failed");
        let p = engine(&anchored).line_patterns().expect("offered");
        let line = "Nov 23 10:00:00 h sshd[1]: Failed password for root from 10.0.0.1 port 22";
        assert!(regex::Regex::new(&p[0]).unwrap().is_match(line));
        assert!(!regex::Regex::new("^Failed").unwrap().is_match(line));
        let late = format!("{SSH}allowed_lateness = \"5s\"\n");
        assert!(engine(&late).line_patterns().is_none());
        let without_regex = format!(
            "{SSH}\n[[rule]]\nid = \"errors\"\nkind = \"match\"\nwhere = {{ level = \"error\" }}\n"
        );
        assert!(engine(&without_regex).line_patterns().is_none());
        let rate = SSH
            .replace("kind = \"threshold\"", "kind = \"rate\"")
            .replace(
                "threshold = 3\n",
                "total_where = { kind = \"log\" }\nratio = 0.5\n",
            );
        assert!(engine(&rate).line_patterns().is_none());
    }

    #[test]
    fn prefiltered_replay_finds_the_same_detections() {
        let mut log = String::new();
        for i in 0..400u32 {
            let s = i % 60;
            if i == 200 {
                // The rules' search finds this line, which is not syslog: rejected, and
                // reported with its own line number (201) though lines before it in its chunk
                // were skipped uncounted.
                log.push_str("garbage Failed password for root from 10.0.0.9 port 22\n");
            }
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
        log.push_str("not syslog at all\n\n   \n");
        log.push_str("Nov 23 11:00:01 h sshd[1]: Failed password for root from 10.0.0.1 port 22");
        let valid = log.into_bytes();
        // Invalid UTF-8 sends its chunk down the line-by-line path.
        let mut invalid = valid.clone();
        invalid.splice(
            0..0,
            b"Nov 23 09:59:00 h sshd[1]: Failed password for \xff from 10.0.0.1 port 22\n"
                .iter()
                .copied(),
        );
        let run = syslog_replay;
        // A second rule without a regex turns the prefilter off.
        let unfiltered = format!(
            "{SSH}\n[[rule]]\nid = \"never\"\nkind = \"match\"\nwhere = {{ level = \"critical\" }}\n"
        );
        for log in [&valid[..], &invalid[..]] {
            let fast = run(SSH, log);
            let slow = run(&unfiltered, log);
            assert_eq!(slow.skipped, 2, "the blank lines");
            // Invalid UTF-8 is filtered line by line.
            assert!(fast.skipped > 2);
            let ssh = |r: &Replayed| -> Vec<(String, i64)> {
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
            assert_eq!(fast.lines, if log == &valid[..] { 405 } else { 406 });
            let garbage = if log == &valid[..] { 201 } else { 202 };
            assert!(
                fast.first_rejections.iter().any(|(n, _)| *n == garbage),
                "{:?}",
                fast.first_rejections
            );
            for rejection in &fast.first_rejections {
                assert!(slow.first_rejections.contains(rejection), "{rejection:?}");
            }
            for r in [&fast, &slow] {
                assert_eq!(r.events + r.rejected + r.skipped, r.lines);
            }
            // The last line, without its newline, is seen by both.
            assert_eq!(ssh(&fast).last(), ssh(&slow).last());
        }
    }

    #[test]
    fn several_rules_word_boundaries_and_non_ascii_text_filter_exactly() {
        // Two rules in one search. Found by their literals, the lines holding `disk ` or
        // `Out of memory: Killed process ` are parsed and the rules decide. `\w?` leaves the
        // first pattern without a known beginning, so the lazy DFA searches instead: a
        // Unicode word boundary makes it give up at non-ASCII text, and the rest of that
        // chunk is checked line by line. Either way the answer is the unfiltered one.
        for (disk, by_literals) in [
            (r"\bdisk (?:full|gone)\b", true),
            (r"\b\w?disk (?:full|gone)\b", false),
        ] {
            let rules = format!(
                r#"
[[rule]]
id = "disk"
kind = "match"
regex = '{disk}'

[[rule]]
id = "oom"
kind = "threshold"
threshold = 2
window = "1m"
regex = 'Out of memory: Killed process (?P<pid>\d+)'
group_by = ["host"]
"#
            );
            let patterns = engine(&rules).line_patterns().expect("filtered");
            assert_eq!(
                LineFinder::new(&patterns).map(|f| f.by_literals()),
                Some(by_literals)
            );
            let mut log = String::new();
            for i in 0..300u32 {
                let s = i % 60;
                log.push_str(&format!("Nov 23 10:{:02}:{s:02} h kernel: ", i / 60));
                log.push_str(match i % 9 {
                    0 => "Out of memory: Killed process 42 (java)\n",
                    3 => "disk full on /var\n",
                    4 => "diskfull is not a word match\n",
                    5 => "café disk gone ünter\n",
                    6 => "a match that spans Out of memory: Killed\n",
                    _ => "nothing to see\n",
                });
                if i % 50 == 0 {
                    log.push_str("process 7 continues the line above\n");
                }
            }
            let run = |rules: &str| syslog_replay(rules, log.as_bytes());
            let fast = run(&rules);
            let slow = run(&format!(
                "{rules}\n[[rule]]\nid = \"never\"\nkind = \"match\"\nwhere = {{ level = \"critical\" }}\n"
            ));
            assert!(fast.skipped > 0 && slow.skipped == 0);
            for id in ["disk", "oom"] {
                let of = |r: &Replayed| {
                    r.detections
                        .iter()
                        .filter(|d| d.rule == id)
                        .map(|d| (d.key.clone(), d.ts.millis()))
                        .collect::<Vec<_>>()
                };
                assert!(!of(&fast).is_empty(), "{id}");
                assert_eq!(of(&fast), of(&slow), "{id}");
            }
            assert_eq!(
                fast.rules[..2]
                    .iter()
                    .map(|r| r.matched)
                    .collect::<Vec<_>>(),
                [66, 34]
            );
            assert_eq!(fast.lines, slow.lines);
        }
    }

    #[test]
    fn a_match_across_lines_is_not_taken_for_a_line_that_matches() {
        let hir = |p: &str| regex_syntax::parse(p).unwrap();
        for (p, newline) in [
            (r"Failed (\S+) from", false),
            (r"a.b", false),
            (r"Killed\s+process", true),
            (r"(?s)a.b", true),
            (r"x[^a]y", true),
            ("a\nb", true),
            (r"\bdisk\b", false),
        ] {
            assert_eq!(may_match_newline(&hir(p)), newline, "{p}");
            // The finder's patterns have no `\n` left but a literal one.
            assert_eq!(
                may_match_newline(&without_newline(&hir(p))),
                p.contains('\n'),
                "{p}"
            );
        }
        // `\s+` spans the newline: the DFA's earliest match ends on the second line, which
        // does not match on its own and must not be counted (`\w?` leaves the pattern
        // without a known beginning, so the DFA finds the lines). Found by its literal
        // instead, the first line holds `Killed` and is parsed; the rule decides.
        for (pattern, events) in [(r"\w?Killed\s+process", 1), (r"Killed\s+process", 2)] {
            let rules = format!(
                r#"
[[rule]]
id = "oom"
kind = "match"
regex = '{pattern}'
"#
            );
            let log = "Nov 23 10:00:00 h kernel: Killed\n process here\n\
                       Nov 23 10:00:02 h kernel: Killed process 9\n";
            let r = syslog_replay(&rules, log.as_bytes());
            assert_eq!(
                (r.lines, r.events, r.skipped, r.rejected),
                (3, events, 3 - events, 0),
                "{pattern}"
            );
            assert_eq!(r.detections.len(), 1);
            assert_eq!(r.rules[0].matched, 1);
        }
    }

    #[test]
    fn an_empty_match_inside_a_character_does_not_hide_an_earlier_line() {
        // `(?-u:\B)` matches empty between the two bytes of `é`, where a search in UTF-8
        // mode steps past it and the regex set's `is_match` says no: a pattern that can
        // match empty turns both the line filter and the engine's set off.
        let rules = r#"
[[rule]]
id = "inside"
kind = "match"
regex = '(?-u:\B)'

[[rule]]
id = "word"
kind = "match"
regex = 'aéb'
"#;
        let log = "Nov 23 10:00:00 h x: aéb\nNov 23 10:00:01 h x: qq\n";
        let r = syslog_replay(rules, log.as_bytes());
        assert_eq!(r.rules[1].matched, 1, "{:?}", r.rules);
        assert_eq!(r.skipped, 0);
    }

    #[test]
    fn a_wrong_format_is_still_rejected_with_the_filter_on() {
        let text = "just words\nmore words here\nFailed password for root from 10.0.0.1\n";
        let r = syslog_replay(SSH, text.as_bytes());
        assert_eq!((r.rejected, r.skipped, r.events), (3, 0, 0));
    }
}
