//! File tails (`[[source.file]]`): follow files matching a glob through rotation, truncation,
//! deletion and restarts, and never lose or repeat a line that was written while incidentd
//! could see it.
//!
//! Each source runs on its own thread with plain blocking reads (positioned `pread`s, so no
//! file position state is shared). It wakes on change notifications from the `notify` crate,
//! which watches each file's **folder** (an inotify watch on the file itself would follow the
//! inode away on rename and cannot exist for a file not created yet), and on a poll tick, since
//! notifications can coalesce, overflow, or not exist at all (NFS). On every wake it reads each
//! followed file to its end.
//!
//! Lines go to the engine in batches with the cursor just past the batch's last line
//! ([`Input::Tail`]); the engine records the cursor after applying the events, and its
//! checkpoint saves cursors and window state together. At start the cursors of the last
//! checkpoint say where to resume; a cursor is trusted only when device, inode and the
//! fingerprint of the file's first bytes still match and the file is not shorter than the
//! offset.
//!
//! Rotation by rename: the path now names a new inode; the old file is kept open and drained
//! to its end (a writer may still append for a moment), then dropped; the new file is read
//! from its start. Copytruncate: the file got shorter than the offset (or its first bytes
//! changed), so reading restarts at 0. A deleted file is drained and dropped.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc as std_mpsc;
use std::time::Instant;

pub use crate::cursor::{FINGERPRINT_BYTES, FileId, Fingerprint, TailCursor};

mod files;
use files::{literal_prefix_dir, not_followable, open_regular};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::engine::Input;
use crate::event::Event;
use crate::source::config::FileSourceConfig;
use crate::source::config::LineFormat;
use crate::source::config::ReadFrom;
use crate::source::line_filter::{LineFilter, Skipper};
use crate::source::parse::{Parser, text_of};
use crate::telemetry::SourceStats;

/// Lines per batch sent to the engine.
pub const BATCH_LINES: usize = 256;
/// Bytes read per `pread`.
const READ_BYTES: usize = 64 * 1024;
/// Batches of applied events the engine may hand back for the next lines (see
/// [`crate::event::Recycle`]): enough to cover the queue filling and draining again, so few
/// events are made only to be dropped. At most this many times [`BATCH_LINES`] spare events,
/// each holding at most [`SPARE_EVENT_BYTES`] in its strings.
const SPARE_BATCHES: usize = 8;
/// A spare event's strings hold at most this much memory (a long line once must not keep
/// its size in the spare events).
const SPARE_EVENT_BYTES: usize = 8192;
/// Poll intervals a drained, renamed-away file stays open in case its writer still appends
/// (until logrotate's postrotate makes it reopen).
const ORPHAN_GRACE_POLLS: u32 = 3;

/// How notifications reach the tail thread: a flag saying a folder changed (files may have
/// appeared, moved or gone) and a doorbell channel of capacity one, so a flood of events
/// while the thread is busy costs nothing but a failed `try_send`.
struct Bell {
    structure: AtomicBool,
    ring: std_mpsc::SyncSender<()>,
}

impl Bell {
    fn ring(&self, structure: bool) {
        if structure {
            self.structure.store(true, Ordering::Relaxed);
        }
        let _ = self.ring.try_send(());
    }
}

/// One `[[source.file]]` at run time.
pub struct FileTail {
    pub config: FileSourceConfig,
    pub parser: Parser,
    pub events: mpsc::Sender<Input>,
    pub stats: Arc<SourceStats>,
    pub clock: Arc<dyn Clock>,
    /// This source's cursors from the last checkpoint.
    pub restored: Vec<TailCursor>,
    /// Whether the checkpoint knew this source at all: if it did, files it does not list
    /// appeared while incidentd was down and are read from their start.
    pub known: bool,
    /// Events of file lines on their way to the engine, at most `[daemon] event_queue` of
    /// them across all file sources: a batch takes one permit per line and the engine gives
    /// them back once it has applied the batch, so batching never multiplies the queue.
    pub budget: Arc<tokio::sync::Semaphore>,
    /// This source's part of the watermark: behind while a followed file has bytes not read
    /// yet, so wall time does not move the engine's clock past a backlog.
    pub progress: crate::watermark::InputProgress,
    /// The rules' line filter: lines no rule could match are counted and not parsed.
    pub line_filter: Arc<LineFilter>,
}

/// A file being followed.
struct Followed {
    path: PathBuf,
    file: File,
    id: FileId,
    fingerprint: Fingerprint,
    /// Every byte before it has been turned into events (complete lines only).
    offset: u64,
    /// Bytes after `offset` already read: the start of a line without its newline yet.
    pending: u64,
    /// The first bytes (at most `max_line_bytes`) of that line, unless `discarding`.
    partial: Vec<u8>,
    /// Inside a line longer than the limit: its start was sent cut; skip to its newline.
    discarding: bool,
    /// No longer at its path (renamed or deleted): drain, then drop.
    orphan: bool,
    /// The file's first bytes (at most [`FINGERPRINT_BYTES`]) as this tail read them, when
    /// it read from the start: the fingerprint is taken from them, not from the file again,
    /// which may have been truncated and rewritten since the read.
    head: Vec<u8>,
    /// When it last grew (or became an orphan).
    quiet_since: Instant,
}

impl Followed {
    fn cursor(&self, source: &str) -> TailCursor {
        TailCursor {
            source: source.to_owned(),
            path: self.path.clone(),
            id: self.id,
            fingerprint: self.fingerprint,
            offset: self.offset,
        }
    }
}

impl FileTail {
    /// Runs until `cancel`, on the calling thread (give it a blocking thread).
    pub fn run(self, cancel: CancellationToken) {
        let (ring, rung) = std_mpsc::sync_channel::<()>(1);
        let bell = Arc::new(Bell {
            structure: AtomicBool::new(false),
            ring,
        });
        // Shutdown wakes the thread at once instead of at the next poll tick.
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let (c, b) = (cancel.clone(), bell.clone());
            h.spawn(async move {
                c.cancelled().await;
                b.ring(false);
            });
        }
        let watcher = watcher(bell.clone(), &self.stats);
        let (recycle, recycled) = crate::event::Recycle::channel(SPARE_BATCHES);
        let mut state = TailState {
            tail: self,
            followed: Vec::new(),
            watched: BTreeMap::new(),
            watcher,
            first_scan: true,
            buf: vec![0u8; READ_BYTES],
            refused: BTreeMap::new(),
            over_max_files: false,
            recycle,
            recycled,
            spare: Vec::new(),
            skipper: Skipper::default(),
        };
        tracing::info!(source = %state.tail.config.id, path = %state.tail.config.path, "following files");
        let poll = state.tail.config.poll_interval;
        let mut next_scan = Instant::now();
        while !cancel.is_cancelled() {
            let rescan = Instant::now() >= next_scan;
            if rescan {
                next_scan = Instant::now() + poll;
                state.scan();
            }
            if !state.read_all() {
                break; // the engine is gone: shutting down
            }
            // Every followed file was read to its end and every line handed on: caught up
            // (a file that cannot be read is retried, but does not hold the clock).
            state.tail.progress.set_behind(false);
            if rescan {
                state.update_gauges();
            }
            // Wait for a notification or the poll tick.
            let wait = next_scan.saturating_duration_since(Instant::now());
            if let Err(std_mpsc::RecvTimeoutError::Disconnected) = rung.recv_timeout(wait) {
                std::thread::sleep(wait);
            }
            if bell.structure.swap(false, Ordering::Relaxed) {
                next_scan = Instant::now();
            }
        }
        tracing::debug!(source = %state.tail.config.id, "file tail stopped");
    }
}

/// The notify watcher; its callback only rings the bell (it must not block).
fn watcher(bell: Arc<Bell>, stats: &SourceStats) -> Option<notify::RecommendedWatcher> {
    use notify::EventKind;
    let made = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let structure = match res {
            Ok(ev) if ev.need_rescan() => true,
            Ok(ev) => match ev.kind {
                EventKind::Modify(notify::event::ModifyKind::Data(_)) => false,
                EventKind::Access(_) => return,
                _ => true,
            },
            // Lost events: look at everything again.
            Err(_) => true,
        };
        bell.ring(structure);
    });
    match made {
        Ok(w) => Some(w),
        Err(e) => {
            stats.error("cannot start change notification (polling only)", &e);
            None
        }
    }
}

struct TailState {
    tail: FileTail,
    followed: Vec<Followed>,
    /// Folders watched, with their identity when the watch was made: a folder deleted and
    /// made again is a new inode whose watch must be made again.
    watched: BTreeMap<PathBuf, FileId>,
    watcher: Option<notify::RecommendedWatcher>,
    first_scan: bool,
    buf: Vec<u8>,
    /// Paths the glob matched that are not regular files (or lie under /proc or /sys), with
    /// why: refused, and said once until the reason changes.
    refused: BTreeMap<PathBuf, String>,
    /// Whether the glob matched more than `max_files` paths at the last scan (said when it
    /// starts to).
    over_max_files: bool,
    /// Handed to the engine with each batch; applied events come back through `recycled`.
    recycle: crate::event::Recycle,
    recycled: crate::event::Recycled,
    /// Events to parse the next lines into.
    spare: Vec<(u64, Event)>,
    skipper: Skipper,
}

impl TailState {
    fn source(&self) -> &str {
        &self.tail.config.id
    }

    /// Runs the glob, notices new, rotated, truncated and deleted files, and keeps folder
    /// watches in place.
    fn scan(&mut self) {
        let pattern = self.tail.config.path.clone();
        let mut found: BTreeMap<PathBuf, (FileId, std::fs::Metadata)> = BTreeMap::new();
        let mut refused: BTreeMap<PathBuf, String> = BTreeMap::new();
        let max_files = self.tail.config.max_files;
        let mut over = false;
        match glob::glob(&pattern) {
            Ok(paths) => {
                for p in paths {
                    if found.len() + refused.len() >= max_files {
                        over = true;
                        break;
                    }
                    let p = match p {
                        Ok(p) => p,
                        Err(e) => {
                            self.tail
                                .stats
                                .error("cannot read a folder of the glob", &e);
                            continue;
                        }
                    };
                    // Follows symlinks: the identity is the target's.
                    match std::fs::metadata(&p) {
                        Ok(m) => match not_followable(&p, &m) {
                            None => {
                                found.insert(p, (FileId::of(&m), m));
                            }
                            // Said once per path and reason.
                            Some(why) => {
                                if self.refused.get(&p) != Some(&why) {
                                    self.tail.stats.error("not tailed", &why);
                                }
                                refused.insert(p, why);
                            }
                        },
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => self
                            .tail
                            .stats
                            .error(&format!("cannot stat {}", p.display()), &e),
                    }
                }
            }
            Err(e) => self.tail.stats.error("invalid glob", &e),
        }
        self.refused = refused;
        if over && !self.over_max_files {
            let why = format!(
                "the glob matches more than max_files = {max_files} paths; the others are not followed"
            );
            self.tail.stats.error("not tailed", &why);
        }
        self.over_max_files = over;
        self.watch_folders(&found);

        // Files that left their path: rotated away (another inode there now) or deleted.
        for f in &mut self.followed {
            if f.orphan {
                // Back at its path (a symlink re-pointed, a moment of ENOENT): follow it on.
                if found.get(&f.path).is_some_and(|(id, _)| *id == f.id) {
                    f.orphan = false;
                }
                continue;
            }
            // Renamed to another path the glob also matches: the same file, followed on.
            if found.get(&f.path).is_none_or(|(id, _)| *id != f.id)
                && let Some((p, _)) = found.iter().find(|(_, (id, _))| *id == f.id)
            {
                tracing::info!(source = %self.tail.config.id, from = %f.path.display(), to = %p.display(), "file renamed");
                f.path = p.clone();
                continue;
            }
            // Past `max_files` the glob was not read to its end: a followed file it did not
            // reach is still there unless its path says otherwise.
            let still_there = || std::fs::metadata(&f.path).is_ok_and(|m| FileId::of(&m) == f.id);
            if over && !found.contains_key(&f.path) && still_there() {
                continue;
            }
            match found.get(&f.path) {
                Some((id, _)) if *id == f.id => {}
                Some(_) => {
                    f.orphan = true;
                    f.quiet_since = Instant::now();
                    self.tail.stats.rotations.inc();
                    tracing::info!(source = %self.tail.config.id, path = %f.path.display(), "file rotated; draining the old one");
                }
                None => {
                    f.orphan = true;
                    f.quiet_since = Instant::now();
                    self.tail.stats.rotations.inc();
                    tracing::info!(source = %self.tail.config.id, path = %f.path.display(), "file gone; draining what is left");
                }
            }
        }
        // New files at a path of the glob.
        let first = std::mem::replace(&mut self.first_scan, false);
        for (path, (id, meta)) in found {
            if self
                .followed
                .iter()
                .any(|f| !f.orphan && f.path == path && f.id == id)
            {
                continue;
            }
            // Files kept on from earlier scans count against the limit too.
            if self.followed.iter().filter(|f| !f.orphan).count() >= max_files {
                break;
            }
            // The same inode may still be followed under an older name (a rename into the
            // glob): keep that one.
            if self.followed.iter().any(|f| f.id == id) {
                continue;
            }
            let file = match open_regular(&path) {
                Ok(f) => f,
                Err(e) => {
                    self.tail
                        .stats
                        .error(&format!("cannot open {}", path.display()), &e);
                    continue;
                }
            };
            // The path may have been rotated between the glob's stat and the open: what
            // counts is the file actually opened.
            let (id, size) = match file.metadata() {
                Ok(m) => (FileId::of(&m), m.len()),
                Err(_) => (id, meta.len()),
            };
            if self.followed.iter().any(|f| f.id == id) {
                continue;
            }
            let offset = self.start_offset(&file, &path, id, size, first);
            let fingerprint = Fingerprint::read(&file, size).unwrap_or_default();
            tracing::info!(source = %self.tail.config.id, path = %path.display(), offset, size, "following file");
            self.announce(&path, id, fingerprint, offset);
            self.followed.push(Followed {
                path,
                file,
                id,
                fingerprint,
                offset,
                pending: 0,
                partial: Vec::new(),
                discarding: false,
                orphan: false,
                head: Vec::new(),
                quiet_since: Instant::now(),
            });
        }
        if first {
            self.resume_renamed();
        }
    }

    /// Where reading a newly found file starts: its checkpointed offset when the cursor
    /// still describes this very file; else its start, or its end for files that were there
    /// before incidentd first looked (`read_from = "end"`).
    fn start_offset(
        &mut self,
        file: &File,
        path: &Path,
        id: FileId,
        size: u64,
        first: bool,
    ) -> u64 {
        if let Some(i) = self.tail.restored.iter().position(|c| c.id == id) {
            let c = self.tail.restored.swap_remove(i);
            if c.fingerprint.matches(file) && c.offset <= size {
                return c.offset;
            }
            self.tail.stats.truncations.inc();
            tracing::warn!(source = %self.tail.config.id, path = %path.display(), stored = c.offset, size,
                "checkpointed position no longer fits this file (truncated, or inode reused); reading it from the start");
            return 0;
        }
        if first && !self.tail.known && self.tail.config.read_from == ReadFrom::End {
            return size;
        }
        0
    }

    /// Tells the engine where reading a newly followed file starts, before any of its lines:
    /// a quiet file then has a cursor in the next checkpoint (else a restart would read it
    /// from its start), and a start below a restored cursor (a file truncated or an inode
    /// reused while incidentd was down) makes the engine forget the old positions' ids.
    fn announce(&self, path: &Path, id: FileId, fingerprint: Fingerprint, offset: u64) {
        let _ = self.send(Input::Tail {
            lines: Vec::new(),
            cursor: TailCursor {
                source: self.source().to_owned(),
                path: path.to_owned(),
                id,
                fingerprint,
                offset,
            },
            read_at: Instant::now(),
            permit: None,
            recycle: None,
        });
    }

    /// After a restart, files rotated away while incidentd was down still hold lines it never
    /// read: find each remaining checkpointed file by inode in its old folder and drain it.
    /// A cursor whose file is gone from a folder that still exists is finished; one whose
    /// folder is missing (a file system not mounted yet) is kept.
    fn resume_renamed(&mut self) {
        for c in std::mem::take(&mut self.tail.restored) {
            let Some(dir) = c.path.parent() else { continue };
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut placed = false;
            for entry in entries.flatten() {
                let p = entry.path();
                let Ok(meta) = std::fs::metadata(&p) else {
                    continue;
                };
                if FileId::of(&meta) != c.id || !meta.is_file() {
                    continue;
                }
                let Ok(file) = File::open(&p) else { continue };
                let Ok(meta) = file.metadata() else { continue };
                if FileId::of(&meta) != c.id
                    || !c.fingerprint.matches(&file)
                    || c.offset > meta.len()
                {
                    continue;
                }
                tracing::info!(source = %self.tail.config.id, path = %p.display(), offset = c.offset,
                    "draining a file rotated away while incidentd was stopped");
                self.announce(&c.path, c.id, c.fingerprint, c.offset);
                // Before the file now at its old path: its lines are older.
                self.followed.insert(
                    0,
                    Followed {
                        path: c.path.clone(),
                        file,
                        id: c.id,
                        fingerprint: c.fingerprint,
                        offset: c.offset,
                        pending: 0,
                        partial: Vec::new(),
                        discarding: false,
                        orphan: true,
                        head: Vec::new(),
                        quiet_since: Instant::now(),
                    },
                );
                placed = true;
                break;
            }
            if !placed {
                tracing::info!(source = %self.tail.config.id, path = %c.path.display(),
                    "a file known from the checkpoint is gone; forgetting its position");
                let _ = self.send(Input::TailDone {
                    source: c.source.clone(),
                    id: c.id,
                });
            }
        }
    }

    /// Watches the folder of every file found and the first folder of the pattern that has
    /// no glob characters (where new files will appear). Symlinks also get their target's
    /// folder watched, since writes happen there.
    fn watch_folders(&mut self, found: &BTreeMap<PathBuf, (FileId, std::fs::Metadata)>) {
        let Some(w) = self.watcher.as_mut() else {
            return;
        };
        let mut want: BTreeSet<PathBuf> = BTreeSet::new();
        want.insert(literal_prefix_dir(&self.tail.config.path));
        for p in found.keys() {
            if let Some(d) = p.parent() {
                want.insert(d.to_owned());
            }
            if let Ok(real) = std::fs::canonicalize(p)
                && let Some(d) = real.parent()
            {
                want.insert(d.to_owned());
            }
        }
        use notify::Watcher;
        // Folders gone since: their watches went with them.
        self.watched.retain(|d, id| {
            std::fs::metadata(d).is_ok_and(|m| m.is_dir() && FileId::of(&m) == *id)
        });
        for d in want {
            let Ok(meta) = std::fs::metadata(&d) else {
                continue;
            };
            if self.watched.contains_key(&d) || !meta.is_dir() {
                continue;
            }
            // Replacing a stale watch (same path, old inode) is harmless if it is still there.
            let _ = w.unwatch(&d);
            match w.watch(&d, notify::RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(d, FileId::of(&meta));
                }
                Err(e) => self
                    .tail
                    .stats
                    .error(&format!("cannot watch {} (polling it)", d.display()), &e),
            }
        }
    }

    /// Reads every followed file to its end; drops orphans quiet for a few poll intervals.
    /// False when the engine is gone.
    fn read_all(&mut self) -> bool {
        let grace = self.tail.config.poll_interval * ORPHAN_GRACE_POLLS;
        let mut i = 0;
        while i < self.followed.len() {
            match self.read_file(i) {
                Ok(grew) => {
                    let f = &mut self.followed[i];
                    if grew {
                        f.quiet_since = Instant::now();
                    } else if f.orphan && f.quiet_since.elapsed() > grace {
                        let f = self.followed.remove(i);
                        if !self.finish(f) {
                            return false;
                        }
                        continue;
                    }
                }
                Err(ReadError::EngineGone) => return false,
                // Kept and tried again on the next wake: dropping it would lose its place.
                Err(ReadError::Io(e)) => {
                    let path = self.followed[i].path.display().to_string();
                    self.tail.stats.error(&format!("cannot read {path}"), &e);
                    let f = &mut self.followed[i];
                    if f.orphan && f.quiet_since.elapsed() > grace {
                        let f = self.followed.remove(i);
                        if !self.finish(f) {
                            return false;
                        }
                        continue;
                    }
                }
            }
            i += 1;
        }
        true
    }

    /// An orphan is done: its unterminated last line is a line after all (nothing will be
    /// appended to it any more), and its cursor is dropped.
    fn finish(&mut self, mut f: Followed) -> bool {
        let source = self.source().to_owned();
        if f.pending > 0 {
            let line = std::mem::take(&mut f.partial);
            let mut events = Vec::new();
            self.emit(&line, f.discarding, f.offset, &mut events);
            f.offset += f.pending;
            f.pending = 0;
            if !self.send(Input::Tail {
                lines: events,
                cursor: f.cursor(&source),
                read_at: Instant::now(),
                permit: None,
                recycle: Some(self.recycle.clone()),
            }) {
                return false;
            }
        }
        tracing::debug!(source = %source, path = %f.path.display(), "finished with file");
        self.send(Input::TailDone { source, id: f.id })
    }

    /// A file shorter than what was read, or whose first bytes changed, was truncated
    /// (copytruncate) or rewritten: read it again from its start.
    fn check_truncated(&mut self, i: usize) -> Result<(), ReadError> {
        let f = &mut self.followed[i];
        let size = f.file.metadata().map_err(ReadError::Io)?.len();
        let rewritten = f.fingerprint.len > 0 && !f.fingerprint.matches(&f.file);
        if size < f.offset + f.pending || rewritten {
            self.tail.stats.truncations.inc();
            tracing::info!(source = %self.tail.config.id, path = %f.path.display(), size, offset = f.offset,
                "file truncated (copytruncate?); reading it from the start");
            f.offset = 0;
            f.pending = 0;
            f.partial.clear();
            f.discarding = false;
            f.fingerprint = Fingerprint::default();
            f.head.clear();
            // Tell the engine before any new line: it checkpoints, so positions recorded
            // before the truncation cannot be mistaken for the new lines at the same offsets.
            let cursor = f.cursor(&self.tail.config.id);
            if !self.send(Input::Tail {
                lines: Vec::new(),
                cursor,
                read_at: Instant::now(),
                permit: None,
                recycle: Some(self.recycle.clone()),
            }) {
                return Err(ReadError::EngineGone);
            }
        }
        Ok(())
    }

    /// Extends the fingerprint of file `i` while it is shorter than [`FINGERPRINT_BYTES`]
    /// and more of the file has been read.
    fn refresh_fingerprint(&mut self, i: usize) {
        let f = &mut self.followed[i];
        let read = f.offset + f.pending;
        if f.fingerprint.len >= FINGERPRINT_BYTES || read <= f.fingerprint.len {
            return;
        }
        // Taken from the file again, a truncation and a rewrite since the read would give
        // the new bytes' fingerprint, and the rewrite would go unnoticed (its lines lost).
        let from_head = (f.head.len() as u64).min(read);
        if from_head > f.fingerprint.len {
            f.fingerprint = Fingerprint::of_bytes(&f.head[..from_head as usize]);
        } else if let Ok(fp) = Fingerprint::read(&f.file, read) {
            f.fingerprint = fp;
        }
    }

    /// Reads file `i` from where it stands to its end. True when it grew.
    fn read_file(&mut self, i: usize) -> Result<bool, ReadError> {
        self.check_truncated(i)?;
        let max = self.tail.config.max_line_bytes;
        let source = self.source().to_owned();
        let mut buf = std::mem::take(&mut self.buf);
        let mut skipper = std::mem::take(&mut self.skipper);
        let line_filter = self.tail.line_filter.clone();
        // The message is a part of the line only in these formats.
        let skipping = self.tail.config.skip_unmatched
            && matches!(
                self.tail.parser.format(),
                LineFormat::Syslog | LineFormat::Raw
            );
        let mut grew = false;
        let mut events: Vec<(u64, Event)> = Vec::new();
        let result = loop {
            let f = &self.followed[i];
            let n = match f.file.read_at(&mut buf, f.offset + f.pending) {
                Ok(n) => n,
                Err(e) => break Err(ReadError::Io(e)),
            };
            if n == 0 {
                break Ok(());
            }
            if !grew {
                // Unread bytes: behind until they are all handed on.
                self.tail.progress.set_behind(true);
            }
            grew = true;
            let chunk = &buf[..n];
            let f = &mut self.followed[i];
            if f.offset + f.pending == f.head.len() as u64
                && f.head.len() < FINGERPRINT_BYTES as usize
            {
                let take = (FINGERPRINT_BYTES as usize - f.head.len()).min(n);
                f.head.extend_from_slice(&chunk[..take]);
            }
            let mut skip = skipper.chunk(&line_filter, chunk, skipping);
            let mut start = 0;
            while let Some(nl) = memchr::memchr(b'\n', &chunk[start..]) {
                let end = start + nl;
                let seg = &chunk[start..end];
                let f = &mut self.followed[i];
                // Only a line read whole from this chunk, not over the limit.
                let skipped =
                    f.pending == 0 && !f.discarding && seg.len() <= max && skip.skip(start, end);
                let total = f.pending + seg.len() as u64 + 1;
                let line_start = f.offset;
                // An over-long line is sent (cut) only now that it is complete, so the
                // cursor after it and its event always travel together.
                let (line, cut) = if f.discarding {
                    f.discarding = false;
                    (
                        std::borrow::Cow::Owned(std::mem::take(&mut f.partial)),
                        true,
                    )
                } else if f.pending == 0 {
                    (std::borrow::Cow::Borrowed(seg), false)
                } else {
                    let mut line = std::mem::take(&mut f.partial);
                    line.extend_from_slice(seg);
                    (std::borrow::Cow::Owned(line), false)
                };
                f.offset += total;
                f.pending = 0;
                f.partial.clear();
                if skipped {
                    self.tail.stats.lines.inc();
                    self.tail.stats.skipped.inc();
                } else {
                    self.emit(&line, cut, line_start, &mut events);
                }
                start = end + 1;
                if events.len() >= BATCH_LINES {
                    self.refresh_fingerprint(i);
                    let cursor = self.followed[i].cursor(&source);
                    if !self.send(Input::Tail {
                        lines: std::mem::take(&mut events),
                        cursor,
                        read_at: Instant::now(),
                        permit: None,
                        recycle: Some(self.recycle.clone()),
                    }) {
                        self.buf = buf;
                        self.skipper = skipper;
                        return Err(ReadError::EngineGone);
                    }
                }
            }
            let rest = &chunk[start..];
            let f = &mut self.followed[i];
            f.pending += rest.len() as u64;
            if !f.discarding && !rest.is_empty() {
                // One byte more than the limit is kept: it may be the `\r` before the
                // newline, which is not part of the line (as in a line read whole).
                let keep = max + 1;
                if f.partial.len() + rest.len() > keep {
                    // Over the limit before its newline: keep its start, skip the rest.
                    let room = keep - f.partial.len().min(keep);
                    f.partial.extend_from_slice(&rest[..room]);
                    f.discarding = true;
                } else {
                    f.partial.extend_from_slice(rest);
                }
            }
            if n < buf.len() {
                break Ok(());
            }
        };
        self.buf = buf;
        self.skipper = skipper;
        result?;
        self.refresh_fingerprint(i);
        if grew {
            let cursor = self.followed[i].cursor(&source);
            if !self.send(Input::Tail {
                lines: events,
                cursor,
                read_at: Instant::now(),
                permit: None,
                recycle: Some(self.recycle.clone()),
            }) {
                return Err(ReadError::EngineGone);
            }
        }
        Ok(grew)
    }

    /// An event to parse the next line into: a spare one the engine handed back, or a new
    /// one. A spare event whose strings hold more than [`SPARE_EVENT_BYTES`] (a long line
    /// went through it) is let go, so spare memory stays bounded whatever the lines.
    fn spare_event(&mut self) -> Event {
        loop {
            if self.spare.is_empty()
                && let Ok(batch) = self.recycled.try_recv()
            {
                self.spare = batch;
            }
            match self.spare.pop() {
                Some((_, ev)) if ev.held_bytes() > SPARE_EVENT_BYTES => continue,
                Some((_, ev)) => return ev,
                None => {
                    return Event::log(String::new(), crate::clock::Timestamp(0), "");
                }
            }
        }
    }

    /// Turns one line (without its newline) into an event; a line at or over the limit is
    /// cut to it and marked `fields.truncated`.
    fn emit(&mut self, line: &[u8], cut: bool, offset: u64, events: &mut Vec<(u64, Event)>) {
        let stats = &self.tail.stats;
        let max = self.tail.config.max_line_bytes;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        stats.lines.inc();
        let cut = cut || line.len() > max;
        let line = if line.len() > max { &line[..max] } else { line };
        if line.trim_ascii().is_empty() {
            return;
        }
        let (text, lossy) = text_of(line);
        if lossy {
            stats.invalid_utf8.inc();
            stats.warn_line("invalid_utf8", "line has invalid UTF-8; decoded lossily");
        }
        let mut ev = self.spare_event();
        let stats = &self.tail.stats;
        let verdict = self
            .tail
            .parser
            .parse_into(&mut ev, &text, self.tail.clock.now());
        if verdict.unparsed {
            stats.unparsed.inc();
            stats.warn_line("unparsed", "line not in the source's format; passed on raw");
        }
        if verdict.future {
            // Consumed (the cursor moves past it) but never handed on.
            stats.future_ts(ev.ts);
            self.spare.push((0, ev));
            return;
        }
        if cut {
            stats.oversize.inc();
            stats.warn_line("oversize", &format!("line cut at {max} bytes"));
            ev.fields.insert("truncated".into(), true.into());
        }
        stats.events.inc();
        events.push((offset, ev));
    }

    fn send(&self, mut input: Input) -> bool {
        if let Input::Tail { lines, permit, .. } = &mut input
            && !lines.is_empty()
        {
            let n = u32::try_from(lines.len()).unwrap_or(u32::MAX);
            let Ok(handle) = tokio::runtime::Handle::try_current() else {
                return false;
            };
            match handle.block_on(self.tail.budget.clone().acquire_many_owned(n)) {
                Ok(p) => *permit = Some(p),
                Err(_) => return false,
            }
        }
        self.tail.events.blocking_send(input).is_ok()
    }

    fn update_gauges(&self) {
        self.tail.stats.files.set(self.followed.len() as u64);
        let lag: u64 = self
            .followed
            .iter()
            .map(|f| {
                f.file
                    .metadata()
                    .map(|m| m.len().saturating_sub(f.offset + f.pending))
                    .unwrap_or(0)
            })
            .sum();
        self.tail.stats.lag_bytes.set(lag);
    }
}

enum ReadError {
    Io(std::io::Error),
    EngineGone,
}

/// Groups restored cursors by source id.
pub fn cursors_by_source(cursors: Vec<TailCursor>) -> HashMap<String, Vec<TailCursor>> {
    let mut m: HashMap<String, Vec<TailCursor>> = HashMap::new();
    for c in cursors {
        m.entry(c.source.clone()).or_default().push(c);
    }
    m
}
