//! Text input in chunks of whole lines (64 KiB, more for a longer line), on one core or
//! more. On one, each chunk goes through [`Run::region`] in turn. With workers, each free
//! worker takes the next chunk from one shared queue and does what keeps no state: find the
//! lines some rule can match, parse them, and run each rule's `where` and regex on them (an
//! engine of the same rules, [`Engine::match_event`]); this thread applies their answers to
//! the one engine in input order ([`Engine::on_matched`]), so windows, groups and detections
//! are exactly those of a replay on one thread. A worker the scheduler leaves off its core
//! holds up only the chunk in its hands (with a chunk per worker in turn, the others ran out
//! of work while this thread waited for it). At most `workers × DEPTH × 2` chunks are out at
//! once, so memory stays bounded whatever the input.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Filters, Replay, ReplayDetection, Report, Run, hand_over};
use crate::clock::Timestamp;
use crate::engine::{Engine, Matched};
use crate::event::Event;

/// Bytes read for one chunk (more only for a line longer than that).
const CHUNK: usize = 64 << 10;
/// Chunks per worker the shared queues hold (waiting, and done but not yet applied).
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
    /// The events, `..used`; those after are spare, to parse into again instead of
    /// allocating. An event is swapped in and out of place, never moved along the list.
    events: Vec<Event>,
    used: usize,
    matched: Matched,
    /// The events of lines cut at the limit (marked `truncated`), by index.
    cut: Vec<usize>,
}

impl Kept {
    /// Matches the event just parsed into `scratch` and keeps it; `scratch` becomes a spare
    /// event to parse the next line into. `cut`: the event is marked `truncated`.
    pub(super) fn push(&mut self, engine: &mut Engine, scratch: &mut Event, cut: bool) {
        engine.match_event(scratch, &mut self.matched);
        if cut {
            self.cut.push(self.used);
        }
        match self.events.get_mut(self.used) {
            Some(spare) => std::mem::swap(scratch, spare),
            None => {
                let mut next = scratch.clone();
                if cut {
                    // A clone of this event.
                    next.fields.remove("truncated");
                }
                self.events.push(std::mem::replace(scratch, next));
            }
        }
        self.used += 1;
    }

    /// The events kept, in order.
    fn events(&self) -> &[Event] {
        &self.events[..self.used]
    }

    fn recycle(&mut self) {
        // Spare events are parsed into again: the marks go.
        for i in self.cut.drain(..) {
            self.events[i].fields.remove("truncated");
        }
        self.used = 0;
        // A chunk of short lines can make many events; no more are kept than a chunk of
        // ordinary lines needs.
        self.events.truncate(SPARE_EVENTS);
        self.events.shrink_to(SPARE_EVENTS);
        self.matched.clear();
        self.matched.shrink_to(SPARE_EVENTS);
    }
}

/// A chunk for a worker: `buf[..len]`, whole lines (the last may lack its newline at the end
/// of the input); `dropped`: bytes of the input cut from a line over the limit in it.
struct Job {
    /// The chunk's place in the input.
    index: usize,
    buf: Vec<u8>,
    len: usize,
    dropped: u64,
    kept: Kept,
}

/// A chunk a worker read.
struct Done {
    index: usize,
    buf: Vec<u8>,
    len: usize,
    dropped: u64,
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
    workers: usize,
    mid_run_ticks: bool,
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<u64> {
    let replay = run.replay;
    // Set by a worker that panicked: the chunk in its hands never comes, and this thread
    // would wait for it for ever (the other workers keep the queue of chunks done open).
    let failed = AtomicBool::new(false);
    let failed = &failed;
    std::thread::scope(|s| {
        let mut applier = Applier {
            run,
            engine,
            done: None,
            waiting: BTreeMap::new(),
            failed,
            applied: 0,
            bytes: 0,
            pool: Vec::new(),
            mid_run_ticks,
        };
        let mut jobs: Option<SyncSender<Job>> = None;
        let mut sent = 0usize;
        let mut buf = vec![0u8; CHUNK];
        let keep = replay.kept_bytes();
        // Bytes of lines over the limit dropped for the chunk being read.
        let mut dropped = 0u64;
        let (mut filled, mut eof) = fill(&mut input, &mut buf, 0)?;
        while filled > 0 {
            // Whole lines only: the bytes after the last newline wait for the next chunk.
            let end = match (eof, memchr::memrchr(b'\n', &buf[..filled])) {
                (true, _) => filled,
                (false, Some(i)) => i + 1,
                (false, None) if filled >= keep => {
                    // A line over the limit (the buffer holds only its start): its first
                    // `keep` bytes stay, the rest up to its newline is read and dropped.
                    let (n, more, ended) = drop_rest(&mut input, &mut buf, filled, keep)?;
                    dropped += more;
                    (filled, eof) = (n, ended);
                    continue;
                }
                (false, None) => {
                    // A line longer than the buffer, but not over the limit.
                    let size = (buf.len() * 2).min(keep.max(CHUNK) + 1);
                    buf.resize(size, 0);
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
            if jobs.is_none() && workers > 0 && !eof && applier.run.parsed_one {
                // One queue of chunks that every worker takes from (whichever is free takes
                // the next: one that the scheduler left off its core for a while holds up
                // no more than the chunk in its hands), and one of chunks done, applied here
                // in input order.
                let (job_tx, job_rx) = sync_channel::<Job>(workers * DEPTH);
                let (done_tx, done_rx) = sync_channel::<Done>(workers * DEPTH);
                let job_rx = Arc::new(Mutex::new(job_rx));
                for _ in 0..workers {
                    // Copies of what this thread compiled, not built again per worker.
                    let matcher = applier.engine.matcher();
                    let filters = applier.run.filters();
                    let (job_rx, done_tx) = (Arc::clone(&job_rx), done_tx.clone());
                    s.spawn(move || {
                        let _flag = Failed(failed);
                        work(replay, (matcher, filters), &job_rx, done_tx);
                    });
                }
                jobs = Some(job_tx);
                applier.done = Some(done_rx);
            }
            let chunk_dropped = std::mem::take(&mut dropped);
            match &jobs {
                None => {
                    applier.run.region(applier.engine, &buf[..end]);
                    applier.finish(end as u64 + chunk_dropped, progress);
                    applier.pool.push((buf, kept));
                }
                Some(jobs) => {
                    let mut job = Job {
                        index: sent,
                        buf,
                        len: end,
                        dropped: chunk_dropped,
                        kept,
                    };
                    // While the queue is full, the oldest chunk is waited for and applied (the
                    // chunks done meanwhile are kept). Waiting for whichever is done first
                    // instead was slower: 0.29-0.40 s against 0.29-0.34 s, alternating.
                    loop {
                        match jobs.try_send(job) {
                            Ok(()) => break,
                            Err(TrySendError::Full(back)) => {
                                job = back;
                                applier.apply(progress)?;
                            }
                            Err(TrySendError::Disconnected(_)) => return Err(stopped()),
                        }
                    }
                    sent += 1;
                    // What is done is applied at once, in order; beside a full queue (above),
                    // the oldest is waited for when twice the queue's worth of chunks is out.
                    while applier.apply_ready(progress)? {}
                    while sent - applier.applied >= workers * DEPTH * 2 {
                        applier.apply(progress)?;
                    }
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

/// Sets its flag when dropped by a panicking thread.
struct Failed<'a>(&'a AtomicBool);

impl Drop for Failed<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, Ordering::Release);
        }
    }
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

/// The rest of a line over the limit, whose first `filled` bytes are in `buf` (no newline
/// among them, `filled >= keep`), read and dropped from byte `keep` on: the bytes after its
/// newline (the newline first) are moved to `buf[keep..]`. The bytes now in `buf`, the bytes
/// dropped, and whether the input ended.
fn drop_rest(
    input: &mut impl Read,
    buf: &mut Vec<u8>,
    filled: usize,
    keep: usize,
) -> std::io::Result<(usize, u64, bool)> {
    let mut dropped = (filled - keep) as u64;
    let mut scratch = vec![0u8; CHUNK];
    loop {
        let (n, eof) = fill(input, &mut scratch, 0)?;
        match memchr::memchr(b'\n', &scratch[..n]) {
            Some(i) => {
                let rest = &scratch[i..n];
                buf.resize(buf.len().max(keep + rest.len()), 0);
                buf[keep..keep + rest.len()].copy_from_slice(rest);
                return Ok((keep + rest.len(), dropped + i as u64, eof));
            }
            None if eof => return Ok((keep, dropped + n as u64, true)),
            None => dropped += n as u64,
        }
    }
}

/// One worker: chunks in (from the queue all workers share), what they hold out, until
/// either side hangs up.
fn work(
    replay: &Replay,
    (mut matcher, filters): (Engine, Filters),
    jobs: &Mutex<Receiver<Job>>,
    done: SyncSender<Done>,
) {
    matcher.prefiltered = true;
    let mut nothing = |_: ReplayDetection| {};
    let mut run = Run::with(replay, filters, &mut nothing);
    // Workers start once a line has parsed.
    run.parsed_one = true;
    loop {
        // The lock is held only while taking a chunk (a worker that panicked holding it
        // left the queue as it was).
        let next = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok(Job {
            index,
            buf,
            len,
            dropped,
            kept,
        }) = next
        else {
            break;
        };
        run.report = Report::new();
        run.newest = None;
        run.keep = Some(kept);
        run.region(&mut matcher, &buf[..len]);
        let finished = Done {
            index,
            buf,
            len,
            dropped,
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
    /// The chunks the workers finished, in the order they finished them.
    done: Option<Receiver<Done>>,
    /// Those received ahead of the oldest not yet applied, by their place in the input (at
    /// most the chunks out at once).
    waiting: BTreeMap<usize, Done>,
    /// Whether a worker panicked.
    failed: &'r AtomicBool,
    applied: usize,
    bytes: u64,
    /// Buffers and event lists applied, for the next chunks.
    pool: Vec<(Vec<u8>, Kept)>,
    mid_run_ticks: bool,
}

impl Applier<'_, '_> {
    /// After a chunk of `len` bytes was applied.
    fn finish(&mut self, len: u64, progress: &mut dyn FnMut(u64)) {
        if self.mid_run_ticks {
            self.run.tick(self.engine);
        }
        self.bytes += len;
        progress(self.bytes);
    }

    /// Applies the oldest chunk not yet applied, waiting for it.
    fn apply(&mut self, progress: &mut dyn FnMut(u64)) -> std::io::Result<()> {
        loop {
            if let Some(done) = self.waiting.remove(&self.applied) {
                return self.apply_done(done, progress);
            }
            let rx = self.done.as_ref().ok_or_else(stopped)?;
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(done) => {
                    self.waiting.insert(done.index, done);
                }
                Err(RecvTimeoutError::Timeout) if !self.failed.load(Ordering::Acquire) => {}
                Err(_) => return Err(stopped()),
            }
        }
    }

    /// Takes in the chunks finished so far and applies the oldest if it is among them;
    /// whether it was.
    fn apply_ready(&mut self, progress: &mut dyn FnMut(u64)) -> std::io::Result<bool> {
        if let Some(rx) = &self.done {
            loop {
                match rx.try_recv() {
                    Ok(done) => {
                        self.waiting.insert(done.index, done);
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return Err(stopped()),
                }
            }
        }
        match self.waiting.remove(&self.applied) {
            Some(done) => self.apply_done(done, progress).map(|()| true),
            None => Ok(false),
        }
    }

    /// Applies `done`, the oldest chunk not yet applied.
    fn apply_done(&mut self, mut done: Done, progress: &mut dyn FnMut(u64)) -> std::io::Result<()> {
        self.applied += 1;
        let run = &mut *self.run;
        let before = run.report.lines;
        for (i, ev) in done.kept.events().iter().enumerate() {
            self.engine
                .on_matched(ev, &done.kept.matched, i, &mut run.out);
            hand_over(&mut run.out, &mut run.report, run.detected);
        }
        let r = &done.report;
        run.report.lines += r.lines;
        run.report.events += r.events;
        run.report.rejected += r.rejected;
        run.report.skipped += r.skipped;
        run.report.oversize += r.oversize;
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
        self.finish(done.len as u64 + done.dropped, progress);
        done.kept.recycle();
        self.pool.push((done.buf, done.kept));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::Format;
    use super::super::tests::{SSH, replay_of, syslog_replay_on};
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
            "{} lines, {} events, {} rejected, {} skipped, {} oversize, {} detected, rejections {:?}, rules {:?}",
            r.lines,
            r.events,
            r.rejected,
            r.skipped,
            r.oversize,
            r.detected,
            r.first_rejections,
            r.rules
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
        // The 150 KB line, cut at 64 KiB.
        assert!(counts.contains(" 1 oversize"), "{counts}");
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

    /// A syslog input made on demand: lines of `lens[i]` bytes (without the newline) where
    /// `lens[i]` is set, ordinary lines between them; remembers the largest read asked of it.
    struct Made {
        lines: Vec<Vec<u8>>,
        at: (usize, usize),
        largest_read: usize,
        len: u64,
    }

    impl Made {
        fn new(lines: Vec<Vec<u8>>) -> Made {
            let len = lines.iter().map(|l| l.len() as u64).sum();
            Made {
                lines,
                at: (0, 0),
                largest_read: 0,
                len,
            }
        }
    }

    impl Read for &mut Made {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            self.largest_read = self.largest_read.max(buf.len());
            let (line, pos) = self.at;
            let Some(l) = self.lines.get(line) else {
                return Ok(0);
            };
            let n = (l.len() - pos).min(buf.len()).min(7919);
            buf[..n].copy_from_slice(&l[pos..pos + n]);
            self.at = if pos + n == l.len() {
                (line + 1, 0)
            } else {
                (line, pos + n)
            };
            Ok(n)
        }
    }

    /// Lines over `--max-line-bytes` are cut to it, marked `truncated`, never skipped, and
    /// what the cut text matches is what fires, with any number of workers; no buffer grows
    /// with the line, and every byte is counted as read.
    #[test]
    fn lines_over_the_limit_are_cut_and_no_buffer_grows_with_them() {
        const MAX: usize = 300;
        let head = "Nov 23 10:00:00 h sshd[1]: ";
        let rules = format!(
            "{SSH}\n[[rule]]\nid = \"cut\"\nkind = \"match\"\n\
             where = {{ \"fields.truncated\" = true }}\nregex = '.'\n\
             [[rule]]\nid = \"lost\"\nkind = \"match\"\nregex = 'Lost connection from \\S+x$'\n"
        );
        let mut lines = Vec::new();
        let mut over = 0;
        // Lengths around the limit (a `\r` before the newline is not part of the line), and
        // far over it: beyond a chunk, and beyond many.
        let lens = [
            MAX - 1,
            MAX,
            MAX + 1,
            MAX + 2,
            5_000,
            CHUNK + 3,
            3 * CHUNK,
            3_000_000,
        ];
        for (i, len) in lens.iter().cycle().take(3 * lens.len()).enumerate() {
            for j in 0..20 {
                let l = format!("{head}Accepted publickey for u{j} from 10.1.1.{i}\n");
                lines.push(l.into_bytes());
            }
            // The address runs on past the limit, so the cut decides it; or the address
            // comes only after the limit, so the cut loses it.
            let start = match i % 2 {
                0 => format!("{head}Failed password for root from 10.0.0.7"),
                _ => format!("{head}Failed password for u{i}"),
            };
            let mut l = start.into_bytes();
            let tail: &[u8] = if i % 2 == 0 {
                b""
            } else {
                b" from 10.0.0.8 port 22"
            };
            let fill = if i % 2 == 0 { b'9' } else { b'u' };
            l.resize(len - tail.len(), fill);
            l.extend_from_slice(tail);
            over += usize::from(*len > MAX);
            if i % 3 == 0 {
                l.push(b'\r');
            }
            l.push(b'\n');
            lines.push(l);
            // Matched by no rule whole, by one once cut: never skipped for it.
            let mut l = format!("{head}Lost connection from 10.0.0.5").into_bytes();
            l.resize(*len, b'x');
            l.extend_from_slice(b"!\n");
            lines.push(l);
        }
        // The address where the limit cuts it.
        let prefix = format!("{head}Failed password for root from ");
        let cut_ip = format!("10.0.0.7{}", "9".repeat(MAX - prefix.len() - 8));
        let mut answers = Vec::new();
        for workers in [0, 1, 2, 3] {
            let mut input = Made::new(lines.clone());
            let mut progress = Vec::new();
            let r = replay_of(&rules, (&mut input, Format::Syslog), (workers, MAX), |b| {
                progress.push(b)
            });
            assert_eq!(progress.last(), Some(&input.len), "{workers} workers");
            assert!(
                input.largest_read <= 2 * CHUNK,
                "{workers} workers: a read of {} bytes",
                input.largest_read
            );
            assert_eq!(r.oversize, 2 * over as u64 + 3, "{workers} workers");
            assert_eq!(r.lines, lines.len() as u64);
            let cut = r.rules.iter().find(|c| c.id == "cut").unwrap();
            // A mark left on an event parsed into again would show on any line.
            assert_eq!(cut.matched, r.oversize, "every cut line, and only those");
            let lost = r.rules.iter().find(|c| c.id == "lost").unwrap();
            // Cut lines (the `!` goes from all but the shortest).
            assert_eq!(
                lost.matched,
                lens.iter().filter(|l| **l >= MAX).count() as u64 * 3
            );
            let keys: Vec<&str> = r.detections.iter().map(|d| d.key.as_str()).collect();
            assert!(
                keys.iter().any(|k| k.ends_with(&format!("/{cut_ip}"))),
                "{keys:?}"
            );
            // Every failure matches but those whose address the cut took away (two bytes
            // over leave " from 10.0.0.8 port ", which still matches).
            let ssh = r.rules.iter().find(|c| c.id == "ssh").unwrap();
            let lost = (0..3 * lens.len()).filter(|i| i % 2 == 1 && lens[i % lens.len()] > MAX + 2);
            assert_eq!(ssh.matched, (3 * lens.len() - lost.count()) as u64);
            answers.push(format!("{:?} {:?}", r.rules, r.detections));
        }
        assert!(answers.iter().all(|a| *a == answers[0]));
    }

    /// A line of any length read on one line at a time (NDJSON) keeps no more than the
    /// limit, and the bytes read are all counted.
    #[test]
    fn a_line_read_alone_keeps_no_more_than_the_limit() {
        let mut long = vec![b'x'; 1_000_000];
        long.push(b'\n');
        long.extend_from_slice(b"short\nlast");
        let mut input = std::io::BufReader::with_capacity(4096, &long[..]);
        let mut line = Vec::new();
        let mut read = Vec::new();
        loop {
            let n = super::super::read_line_kept(&mut input, &mut line, 102).unwrap();
            if n == 0 {
                break;
            }
            read.push((n, line.clone()));
        }
        assert_eq!(read.len(), 3);
        assert_eq!(read[0].0, 1_000_001);
        assert_eq!(read[0].1.len(), 103, "102 bytes and the newline");
        assert_eq!(read[1], (6, b"short\n".to_vec()));
        assert_eq!(read[2], (4, b"last".to_vec()));
    }
}
