//! Text input in chunks of whole lines (64 KiB, more for a longer line), on one core or
//! more. On one, each chunk goes through [`Run::region`] in turn. With workers, threads each
//! take every n-th chunk and do what keeps no state: find the lines some rule can match,
//! parse them, and run each rule's `where` and regex on them (an engine of the same rules,
//! [`Engine::match_event`]); this thread applies their answers to the one engine in input
//! order ([`Engine::on_matched`]), so windows, groups and detections are exactly those of a
//! replay on one thread. Each worker holds at most [`DEPTH`] chunks queued and [`DEPTH`]
//! done, so memory stays bounded whatever the input.

use std::io::Read;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use super::{Replay, ReplayDetection, Report, Run, hand_over};
use crate::clock::Timestamp;
use crate::engine::config::RuleConfig;
use crate::engine::{Engine, Matched};
use crate::event::Event;

/// Bytes read for one chunk (more only for a line longer than that).
const CHUNK: usize = 64 << 10;
/// Chunks each worker may have queued, and done but not yet applied.
const DEPTH: usize = 2;
/// Parsed events kept per list to parse into again.
const SPARE_EVENTS: usize = 2048;
/// Never more workers than this, however many cores or `--threads`.
pub(super) const MAX_WORKERS: usize = 8;

/// How many workers suit this machine: one per core when there are two or more, else none.
pub(super) fn workers() -> usize {
    match std::thread::available_parallelism() {
        Ok(n) if n.get() >= 2 => n.get().min(MAX_WORKERS),
        _ => 0,
    }
}

/// Events a worker parsed, with what the rules' regexes found in them.
#[derive(Default)]
pub(super) struct Kept {
    events: Vec<Event>,
    matched: Matched,
    /// Events already applied, to parse into again instead of allocating.
    spare: Vec<Event>,
}

impl Kept {
    /// Matches the event just parsed into `scratch` and keeps it; `scratch` becomes a spare
    /// event to parse the next line into.
    pub(super) fn push(&mut self, engine: &mut Engine, scratch: &mut Event) {
        engine.match_event(scratch, &mut self.matched);
        let next = self.spare.pop().unwrap_or_else(|| scratch.clone());
        self.events.push(std::mem::replace(scratch, next));
    }

    fn recycle(&mut self) {
        self.spare.append(&mut self.events);
        // A chunk of short lines can make many events; no more are kept than a chunk of
        // ordinary lines needs.
        self.spare.truncate(SPARE_EVENTS);
        self.spare.shrink_to(SPARE_EVENTS);
        self.events.shrink_to(SPARE_EVENTS);
        self.matched.clear();
        self.matched.shrink_to(SPARE_EVENTS);
    }
}

/// A chunk for a worker: `buf[..len]`, whole lines (the last may lack its newline at the end
/// of the input).
struct Job {
    buf: Vec<u8>,
    len: usize,
    kept: Kept,
}

/// A chunk a worker read.
struct Done {
    buf: Vec<u8>,
    len: usize,
    /// Lines, events, rejections and skipped lines of this chunk alone; rejections are
    /// numbered from the chunk's first line.
    report: Report,
    newest: Option<Timestamp>,
    kept: Kept,
}

/// Reads `input` to its end in chunks of whole lines, through `run`'s engine and, when
/// `workers` is not 0, that many threads; the bytes read. A chunk is read on this thread
/// while no line has parsed yet (see [`Run::region`]) and when it is the whole input.
pub(super) fn run(
    run: &mut Run<'_>,
    engine: &mut Engine,
    mut input: impl Read,
    (patterns, workers): (&[String], usize),
    mid_run_ticks: bool,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<u64> {
    let configs: Vec<RuleConfig> = match workers {
        0 => Vec::new(),
        _ => engine.rule_configs(),
    };
    let replay = run.replay;
    std::thread::scope(|s| {
        let mut applier = Applier {
            run,
            engine,
            dones: Vec::new(),
            applied: 0,
            bytes: 0,
            pool: Vec::new(),
            mid_run_ticks,
        };
        let mut jobs = Vec::new();
        let mut sent = 0usize;
        let mut buf = vec![0u8; CHUNK];
        let (mut filled, mut eof) = fill(&mut input, &mut buf, 0)?;
        while filled > 0 {
            // Whole lines only: the bytes after the last newline wait for the next chunk.
            let end = match (eof, memchr::memrchr(b'\n', &buf[..filled])) {
                (true, _) => filled,
                (false, Some(i)) => i + 1,
                (false, None) => {
                    // A line longer than the buffer.
                    buf.resize(buf.len() * 2, 0);
                    (filled, eof) = fill(&mut input, &mut buf, filled)?;
                    continue;
                }
            };
            let (mut next, kept) = applier.pool.pop().unwrap_or_default();
            let carried = filled - end;
            // Every chunk is read into CHUNK bytes (more only for a longer line), whichever
            // buffer it lands in: where chunks end does not depend on the number of threads,
            // and a buffer grown for a long line holds no more than one chunk after it.
            next.resize(CHUNK.max(carried), 0);
            next[..carried].copy_from_slice(&buf[end..filled]);
            if jobs.is_empty() && workers > 0 && !eof && applier.run.parsed_one {
                for _ in 0..workers {
                    let (job_tx, job_rx) = sync_channel::<Job>(DEPTH);
                    let (done_tx, done_rx) = sync_channel::<Done>(DEPTH);
                    let configs = &configs;
                    s.spawn(move || work(replay, (patterns, configs), job_rx, done_tx));
                    jobs.push(job_tx);
                    applier.dones.push(done_rx);
                }
            }
            if jobs.is_empty() {
                applier.run.region(applier.engine, &buf[..end]);
                applier.finish(end, progress);
                applier.pool.push((buf, kept));
            } else {
                jobs[sent % workers]
                    .send(Job {
                        buf,
                        len: end,
                        kept,
                    })
                    .map_err(|_| stopped())?;
                sent += 1;
                // Apply the oldest chunk once every worker has its fill.
                while sent - applier.applied >= workers * DEPTH {
                    applier.apply(progress)?;
                }
            }
            buf = next;
            if eof {
                break;
            }
            (filled, eof) = fill(&mut input, &mut buf, carried)?;
        }
        drop(jobs);
        while applier.applied < sent {
            applier.apply(progress)?;
        }
        Ok(applier.bytes)
    })
}

fn stopped() -> std::io::Error {
    std::io::Error::other("a replay worker thread stopped")
}

/// Reads into `buf[from..]` until it is full or the input ends: (bytes in `buf`, whether
/// the input ended).
fn fill(input: &mut impl Read, buf: &mut [u8], from: usize) -> std::io::Result<(usize, bool)> {
    let mut filled = from;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => return Ok((filled, true)),
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((filled, false))
}

/// One worker: chunks in, what they hold out, until either side hangs up.
fn work(
    replay: &Replay,
    (patterns, configs): (&[String], &[RuleConfig]),
    jobs: Receiver<Job>,
    done: SyncSender<Done>,
) {
    let mut matcher = Engine::new(configs);
    matcher.prefiltered = true;
    let mut nothing = |_: ReplayDetection| {};
    let mut run = Run::new(replay, Some(patterns), &mut nothing);
    // Workers start once a line has parsed.
    run.parsed_one = true;
    for Job { buf, len, kept } in jobs {
        run.report = Report::new();
        run.newest = None;
        run.keep = Some(kept);
        run.region(&mut matcher, &buf[..len]);
        let finished = Done {
            buf,
            len,
            report: std::mem::replace(&mut run.report, Report::new()),
            newest: run.newest,
            kept: run.keep.take().unwrap_or_default(),
        };
        if done.send(finished).is_err() {
            break;
        }
    }
}

/// This thread's side: the workers' chunks applied in input order.
struct Applier<'r, 'a> {
    run: &'r mut Run<'a>,
    engine: &'r mut Engine,
    dones: Vec<Receiver<Done>>,
    applied: usize,
    bytes: u64,
    /// Buffers and event lists applied, for the next chunks.
    pool: Vec<(Vec<u8>, Kept)>,
    mid_run_ticks: bool,
}

impl Applier<'_, '_> {
    /// After a chunk of `len` bytes was applied.
    fn finish(&mut self, len: usize, progress: &mut dyn FnMut(u64)) {
        if self.mid_run_ticks {
            self.run.tick(self.engine);
        }
        self.bytes += len as u64;
        progress(self.bytes);
    }

    /// Applies the oldest chunk not yet applied.
    fn apply(&mut self, progress: &mut dyn FnMut(u64)) -> std::io::Result<()> {
        let workers = self.dones.len();
        let mut done = self.dones[self.applied % workers]
            .recv()
            .map_err(|_| stopped())?;
        self.applied += 1;
        let run = &mut *self.run;
        let before = run.report.lines;
        for (i, ev) in done.kept.events.iter().enumerate() {
            self.engine
                .on_matched(ev, &done.kept.matched, i, &mut run.out);
            hand_over(&mut run.out, &mut run.report, run.detected);
        }
        let r = &done.report;
        run.report.lines += r.lines;
        run.report.events += r.events;
        run.report.rejected += r.rejected;
        run.report.skipped += r.skipped;
        let room = 20usize.saturating_sub(run.report.first_rejections.len());
        run.report.first_rejections.extend(
            done.report
                .first_rejections
                .drain(..)
                .take(room)
                .map(|(n, e)| (before + n, e)),
        );
        if let Some(t) = done.newest {
            run.newest = Some(run.newest.map_or(t, |n| n.max(t)));
        }
        self.finish(done.len, progress);
        done.kept.recycle();
        self.pool.push((done.buf, done.kept));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{SSH, syslog_replay_on};
    use super::*;

    /// `log` read as syslog of 2026 with `workers` by the SSH rule and one that matches
    /// logins: the report's counts, its rejections, the rules' counts and every detection,
    /// as text.
    fn replayed(log: &[u8], workers: usize) -> (String, String, Vec<u64>) {
        let rules = format!(
            "{SSH}\n[[rule]]\nid = \"accepted\"\nkind = \"match\"\n\
             where = {{ \"fields.program\" = \"sshd\" }}\nregex = 'Accepted \\S+ for (?P<user>\\S+)'\n"
        );
        let mut progress = Vec::new();
        let r = syslog_replay_on(&rules, log, workers, |b| progress.push(b));
        assert!(progress.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(progress.last(), Some(&(log.len() as u64)));
        let detections: Vec<String> = r.detections.iter().map(|d| format!("{d:?}")).collect();
        let r = r.report;
        let counts = format!(
            "{} lines, {} events, {} rejected, {} skipped, {} detected, rejections {:?}, rules {:?}",
            r.lines, r.events, r.rejected, r.skipped, r.detected, r.first_rejections, r.rules
        );
        (counts, detections.join("\n"), progress)
    }

    /// About 1.5 MB of auth.log: failures from 40 addresses, logins, lines no rule reads,
    /// lines that are not syslog but hold a failure (rejected), a few lines an hour back
    /// (behind the window), a line of 150 KB, a chunk with bytes that are not UTF-8, and no
    /// newline at the end.
    fn log() -> Vec<u8> {
        let mut log = Vec::new();
        for i in 0..24_000u32 {
            let t = 3600 + i / 4 - if i % 997 == 0 { 3000 } else { 0 };
            let stamp = format!("Nov 23 {:02}:{:02}:{:02}", t / 3600, t / 60 % 60, t % 60);
            let line = match i % 10 {
                0..=3 => format!(
                    "{stamp} h sshd[{i}]: Failed password for u{i} from 10.0.{}.{} port 22 ssh2",
                    i % 2,
                    i % 7
                ),
                4 => format!(
                    "{stamp} h sshd[{i}]: Accepted publickey for u{} from ::1",
                    i % 7
                ),
                5 if i % 1000 == 5 => {
                    format!(
                        "not syslog: Failed password for x from 10.9.9.{} port 1",
                        i % 9
                    )
                }
                _ => format!("{stamp} h CRON[{i}]: (root) CMD (run-parts /etc/cron.hourly)"),
            };
            log.extend_from_slice(line.as_bytes());
            log.push(b'\n');
            if i == 9_000 {
                log.extend_from_slice(b"Nov 23 03:00:00 h sshd[1]: Failed password for ");
                log.extend(std::iter::repeat_n(b'u', 150_000));
                log.extend_from_slice(b" from 10.0.0.1 port 22\n");
            }
            if i == 17_000 {
                log.extend_from_slice(
                    b"Nov 23 03:00:00 h sshd[1]: Accepted password for \xff\xfe\n",
                );
            }
        }
        log.pop();
        log
    }

    #[test]
    fn workers_find_what_one_thread_finds() {
        let log = log();
        assert!(log.len() > 20 * CHUNK);
        let (counts, detections, chunks) = replayed(&log, 0);
        // The log holds what the test means it to.
        assert!(counts.starts_with("24002 lines"), "{counts}");
        assert!(!counts.contains(" 0 skipped"), "{counts}");
        assert!(!counts.contains("fired: 0 }"), "{counts}");
        assert!(counts.contains(" 24 rejected"), "{counts}");
        assert!(detections.lines().count() > 1000);
        assert!(detections.contains("rule: \"accepted\""));
        for workers in [1, 2, 3] {
            let (c, d, p) = replayed(&log, workers);
            assert_eq!(c, counts, "{workers} workers");
            assert!(d == detections, "{workers} workers: the detections differ");
            // The chunks end at the same places, also after the long line.
            assert_eq!(p, chunks, "{workers} workers");
        }
        // A log of one chunk is read on this thread, with the same answer.
        let short = &log[..log[..CHUNK / 2].iter().rposition(|b| *b == b'\n').unwrap()];
        assert_eq!(replayed(short, 2), replayed(short, 0));
    }
}
