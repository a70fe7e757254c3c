//! The detection engine: owns every rule's state and turns events into detections.
//!
//! [`Engine`] is plain synchronous code — `on_event` and `on_tick` — so that
//! `incidentctl rules test` and the unit tests replay files through exactly the code the
//! daemon runs. [`run`] is the thin async task around it: it receives events from the sources'
//! bounded channel, commands (reload, rule listing) from an [`EngineHandle`], and sends
//! [`Detection`]s to the incident manager with backpressure. Windows run on event time; the
//! engine's clock is the newest event time seen, moved forward by wall time while live.

pub mod config;
mod index;
mod line_patterns;
pub(crate) use line_patterns::{map_leaves, may_match_empty};
mod literals;
mod matched;
pub mod rule;
mod sink;
mod task;

pub use line_patterns::{LineScope, line_patterns, never_sees, source_line_patterns};
pub use matched::Matched;
pub use sink::{DetectionSink, Output, SinkClosed, Tap};
pub use task::{Checkpoints, EngineCommand, EngineHandle, run};

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::clock::Timestamp;
pub use crate::cursor::{FileId, JOURNAL_INO, JournalCursor, JournalPos, TailCursor};
pub use crate::detection::{AppliedId, Coverage, Detection, Origin};
use crate::engine::config::RuleConfig;
use crate::event::Event;
use crate::severity::Severity;
pub use rule::{Filter, RuleStats};
use rule::{Hit, Rule};

/// What sources hand the engine, in order.
#[derive(Debug)]
pub enum Input {
    /// An event and when it reached its source.
    Event(Event, std::time::Instant),
    /// Events of one ingest connection, in order: the lines one read brought, decoded.
    Events {
        events: Vec<Event>,
        /// When the first of them was read (latencies count from there).
        read_at: std::time::Instant,
        /// One permit per event of the budget the ingest connections share with the file
        /// sources (`[daemon] event_queue`), given back when the input is dropped after it
        /// was applied.
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    },
    /// Lines of one file read up to `cursor.offset`. The cursor is recorded once the events
    /// are applied, so a checkpoint's cursors and window state always agree (DESIGN §5).
    Tail {
        /// Each line's event with the offset where the line starts.
        lines: Vec<(u64, Event)>,
        cursor: TailCursor,
        /// When the batch was read.
        read_at: std::time::Instant,
        /// One permit per line of the file sources' shared budget, given back when the
        /// input is dropped after it was applied.
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
        /// Where the events go once applied, for the tail to parse its next lines into.
        recycle: Option<crate::event::Recycle>,
    },
    /// A file the tail has finished with (drained after rotation or deletion).
    TailDone { source: String, id: FileId },
    /// Entries of a journald source up to `cursor`, which is recorded once they are
    /// applied (so it is checkpointed together with the windows they fed).
    Journal {
        source: String,
        entries: Vec<(JournalPos, Event)>,
        /// The journal's cursor of the last entry.
        cursor: String,
        read_at: std::time::Instant,
    },
    /// A detection from a detector plugin, for the rule(s) bound to it.
    Plugin {
        plugin: String,
        detection: PluginDetection,
    },
}

impl Input {
    /// Once applied: hands a tail's events back to it for its next lines (see
    /// [`crate::event::Recycle`]).
    pub fn recycle(&mut self) {
        if let Input::Tail {
            lines,
            recycle: Some(r),
            ..
        } = self
        {
            r.give_back(std::mem::take(lines));
        }
    }
}

/// Sequence-number ids remembered per journald source.
const JOURNAL_SEQ_IDS: usize = 8;

/// A plugin's `{"type":"detection",…}` line (protocol 1).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PluginDetection {
    /// Detections with the same key share an incident (the rule's key template may use it).
    pub key: String,
    pub summary: String,
    /// Raises the rule's severity when worse; never lowers it.
    #[serde(default)]
    pub severity: Option<Severity>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// When it happened (default: when it arrived).
    #[serde(default)]
    pub ts: Option<Timestamp>,
    /// Which rule, when several rules bind the plugin.
    #[serde(default)]
    pub rule: Option<String>,
    /// The event behind it, kept as the incident's evidence.
    #[serde(default)]
    pub evidence: Option<Event>,
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
}

/// One loaded rule, as `GET /v1/rules` and `incidentctl rules list` show it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RuleInfo {
    pub id: String,
    pub kind: String,
    pub severity: Severity,
    pub enabled: bool,
    pub description: Option<String>,
    pub origin: String,
    pub matched: u64,
    pub fired: u64,
    /// Groups holding state now.
    pub groups: usize,
    /// The most groups it keeps (`max_groups`, or what `[daemon] max_events_in_memory`
    /// leaves).
    #[serde(default)]
    pub max_groups: usize,
    /// Events that arrived after their window had passed, or later than `allowed_lateness`.
    #[serde(default)]
    pub late: u64,
    /// Groups evicted because of `max_groups`.
    #[serde(default)]
    pub evicted: u64,
}

/// Every rule's window state at one moment, to survive restarts (DESIGN §5). A rule's state
/// is restored only into a rule with exactly the same definition. Written from borrowed state
/// ([`Engine::checkpoint`]) and read back as owned ([`Engine::restore`]).
#[derive(Serialize, serde::Deserialize)]
struct Checkpoint<R> {
    version: u32,
    now: Timestamp,
    rules: Vec<R>,
    /// Where each file source had read to (version 2 on).
    #[serde(default)]
    tails: Vec<TailCursor>,
    /// The file sources configured when the checkpoint was taken.
    #[serde(default)]
    tail_sources: Vec<String>,
    /// Where each journald source had read to.
    #[serde(default)]
    journals: BTreeMap<String, JournalCursor>,
}

const CHECKPOINT_VERSION: u32 = 2;

#[derive(Serialize)]
struct RuleStateRef<'a> {
    id: &'a str,
    definition: String,
    detector: &'a rule::Detector,
    stats: RuleStats,
}

#[derive(serde::Deserialize)]
struct RuleState {
    id: String,
    /// The rule's definition as it was; state is only restored into an identical one.
    definition: String,
    detector: rule::Detector,
    stats: RuleStats,
}

/// Why a checkpoint could not be used.
#[derive(Debug, thiserror::Error)]
#[error("engine checkpoint unreadable: {0}")]
pub struct CheckpointError(String);

fn definition(c: &RuleConfig) -> String {
    format!("{:?}|{:?}", c.common, c.kind)
}

/// All rules and their state.
pub struct Engine {
    rules: Vec<Rule>,
    /// Every rule's regex in one set, when at least two rules have one.
    prefilter: Option<rule::SharedSet>,
    /// Which rules the set can rule out for an event (with the set).
    index: index::RuleIndex,
    /// The regex gate's candidate list, kept from event to event.
    gate_spare: Vec<usize>,
    templates: minijinja::Environment<'static>,
    /// Newest event time seen.
    now: Timestamp,
    /// How far each file tail's events have been applied: (source, file) → cursor.
    tails: BTreeMap<(String, FileId), TailCursor>,
    /// File sources configured now (saved with the cursors).
    tail_sources: Vec<String>,
    /// How far each journald source's entries have been applied.
    journals: BTreeMap<String, JournalCursor>,
    /// Files truncated since the last checkpoint message.
    reset_files: Vec<(String, FileId)>,
    /// Files finished since the last checkpoint message.
    done_files: Vec<(String, FileId)>,
    /// Events dropped as late, per input, since the last [`Engine::take_late_inputs`].
    late_inputs: BTreeMap<String, u64>,
    /// Plugin detections that bind to no rule are logged at most this often.
    plugin_warn: crate::telemetry::Throttle,
    /// Events were already filtered by the rules' regexes or their literals (an offline
    /// replay), so a rule's regex usually matches: it goes straight for the captures instead of checking for a
    /// match first. Only speed depends on it.
    pub prefiltered: bool,
    /// Only a detection's rule, time, key, group, labels and count are wanted (an offline
    /// replay reports nothing else): its summary is not rendered and the event is not copied
    /// into it.
    pub lean: bool,
}

impl Engine {
    /// Builds an engine from validated rule configs.
    pub fn new(configs: &[RuleConfig]) -> Engine {
        let mut rules: Vec<Rule> = configs
            .iter()
            .map(|c| Rule::build(Arc::new(c.clone())))
            .collect();
        let templates = templates_for(&mut rules);
        let prefilter = prefilter_for(&mut rules);
        let index = index::RuleIndex::new(&rules);
        Engine::of_compiled(rules, prefilter, index, templates)
    }

    /// An engine of compiled rules, with its clock, cursors and counters empty.
    fn of_compiled(
        rules: Vec<Rule>,
        prefilter: Option<rule::SharedSet>,
        index: index::RuleIndex,
        templates: minijinja::Environment<'static>,
    ) -> Engine {
        Engine {
            rules,
            prefilter,
            index,
            gate_spare: Vec::new(),
            templates,
            now: Timestamp(i64::MIN),
            tails: BTreeMap::new(),
            tail_sources: Vec::new(),
            journals: BTreeMap::new(),
            reset_files: Vec::new(),
            done_files: Vec::new(),
            late_inputs: BTreeMap::new(),
            plugin_warn: crate::telemetry::Throttle::new(Duration::from_secs(10)),
            prefiltered: false,
            lean: false,
        }
    }

    /// Replaces the rule set. A rule whose definition did not change keeps its window state
    /// and counters; every other rule starts fresh.
    pub fn replace_rules(&mut self, configs: &[RuleConfig]) {
        let mut old: BTreeMap<String, Rule> = self
            .rules
            .drain(..)
            .map(|r| (r.id().to_owned(), r))
            .collect();
        self.rules = configs
            .iter()
            .map(|c| match old.remove(c.id()) {
                Some(mut r) if r.config.same_definition(c) => {
                    r.config = Arc::new(c.clone());
                    r
                }
                _ => Rule::build(Arc::new(c.clone())),
            })
            .collect();
        self.templates = templates_for(&mut self.rules);
        self.prefilter = prefilter_for(&mut self.rules);
        self.index = index::RuleIndex::new(&self.rules);
    }

    /// Runs one event through every rule, appending what fired to `out`. Timers that fall
    /// due as the event moves the clock forward fire first, as they would have live.
    pub fn on_event(&mut self, ev: &Event, out: &mut Vec<Detection>) {
        self.advance(ev, out);
        let Engine {
            rules,
            prefilter,
            index,
            templates,
            now,
            lean,
            prefiltered,
            gate_spare,
            ..
        } = self;
        let (now, mut late) = (*now, false);
        reach(
            (prefilter, index, gate_spare),
            *prefiltered,
            rules,
            ev,
            |_, rule, gate| {
                late |= visit(rule, (templates, *lean), (ev, now), out, |r| {
                    r.on_event(ev, gate, now)
                });
            },
        );
        self.note_late(ev, late);
    }

    /// Moves the clock to the event's time, when later: timers that fall due fire first, as
    /// they would have live.
    fn advance(&mut self, ev: &Event, out: &mut Vec<Detection>) {
        if ev.ts > self.now {
            self.now = ev.ts;
            self.fire_due(out);
        }
    }

    /// Counts a late event once for its input.
    #[inline]
    fn note_late(&mut self, ev: &Event, late: bool) {
        if late {
            self.count_late(ev);
        }
    }

    #[cold]
    fn count_late(&mut self, ev: &Event) {
        // `source` may come from a client: the map stays small.
        let key = if self.late_inputs.len() < crate::telemetry::MAX_LATE_INPUTS
            || self.late_inputs.contains_key(&ev.source)
        {
            ev.source.clone()
        } else {
            "(other)".to_owned()
        };
        *self.late_inputs.entry(key).or_default() += 1;
    }

    /// The rules' regexes made to filter whole lines ([`line_patterns`]).
    pub fn line_patterns(&self) -> Option<Vec<String>> {
        line_patterns(self.rules.iter().map(|r| &*r.config))
    }

    /// Whether some rule needs the clock to move without events: timers (absence,
    /// sequence, `for`), rates and spikes closing their buckets, `allowed_lateness`. `match`
    /// and `threshold` rules use ticks only to free groups the window has left, which a
    /// replay can leave to `max_groups`.
    pub fn needs_ticks(&self) -> bool {
        self.rules
            .iter()
            .filter(|r| r.config.common.enabled)
            .any(|r| {
                !matches!(
                    r.config.kind,
                    crate::engine::config::RuleKindConfig::Match(_)
                        | crate::engine::config::RuleKindConfig::Threshold(_)
                ) || r.config.common.allowed_lateness.is_some()
            })
    }

    /// Applies one input from a source. Returns true when a checkpoint should be taken at
    /// once: a file went back to an earlier offset (truncated), so line positions are about
    /// to be reused and detections recorded before must not shadow the new lines.
    pub fn on_input(&mut self, input: &Input, out: &mut Vec<Detection>) -> bool {
        match input {
            Input::Event(ev, _) => {
                self.on_event(ev, out);
                false
            }
            Input::Events { events, .. } => {
                for ev in events {
                    self.on_event(ev, out);
                }
                false
            }
            Input::Tail { lines, cursor, .. } => {
                for (offset, ev) in lines {
                    let before = out.len();
                    self.on_event(ev, out);
                    for d in &mut out[before..] {
                        if d.origin.is_none() {
                            d.origin = Some(Origin::Line {
                                source: cursor.source.clone(),
                                dev: cursor.id.dev,
                                ino: cursor.id.ino,
                                offset: *offset,
                            });
                        }
                    }
                }
                match self.tails.get_mut(&(cursor.source.clone(), cursor.id)) {
                    Some(c) => {
                        let went_back = cursor.offset < c.offset;
                        c.clone_from(cursor);
                        if went_back {
                            self.reset_files.push((cursor.source.clone(), cursor.id));
                        }
                        went_back
                    }
                    None => {
                        self.tails.insert(cursor.key(), cursor.clone());
                        false
                    }
                }
            }
            Input::TailDone { source, id } => {
                self.tails.remove(&(source.clone(), *id));
                self.done_files.push((source.clone(), *id));
                false
            }
            Input::Journal {
                source,
                entries,
                cursor,
                ..
            } => {
                for (pos, ev) in entries {
                    let before = out.len();
                    self.on_event(ev, out);
                    for d in &mut out[before..] {
                        if d.origin.is_none() {
                            d.origin = Some(Origin::Line {
                                source: source.clone(),
                                dev: pos.seq_id,
                                ino: JOURNAL_INO,
                                offset: pos.seqnum,
                            });
                        }
                    }
                }
                let j = self.journals.entry(source.clone()).or_default();
                for (pos, _) in entries {
                    let next = match j.next.iter().position(|(id, _)| *id == pos.seq_id) {
                        Some(i) => j.next.remove(i).1.max(pos.seqnum + 1),
                        None => pos.seqnum + 1,
                    };
                    j.next.push((pos.seq_id, next));
                    if j.next.len() > JOURNAL_SEQ_IDS {
                        j.next.remove(0);
                    }
                }
                j.cursor.clone_from(cursor);
                false
            }
            Input::Plugin { plugin, detection } => {
                if let Err(e) = self.on_plugin(plugin, detection, out)
                    && let Some(suppressed) = self.plugin_warn.allow()
                {
                    tracing::warn!(plugin = %plugin, key = %detection.key, error = %e, suppressed, "plugin detection dropped");
                }
                false
            }
        }
    }

    /// A plugin's detection, as a detection of the rule bound to the plugin: its id, key
    /// template (or `RULE/KEY`), labels, summary template (or the plugin's summary), and its
    /// severity unless the plugin's is worse.
    pub fn on_plugin(
        &mut self,
        plugin: &str,
        d: &PluginDetection,
        out: &mut Vec<Detection>,
    ) -> Result<(), String> {
        let bound: Vec<usize> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| {
                r.config.common.enabled
                    && matches!(&r.config.kind, crate::engine::config::RuleKindConfig::Plugin(p) if p.plugin == plugin)
            })
            .map(|(i, _)| i)
            .collect();
        let i = match (&d.rule, bound.as_slice()) {
            (Some(name), _) => *bound
                .iter()
                .find(|i| self.rules[**i].id() == name)
                .ok_or_else(|| {
                    format!("it names rule `{name}`, which does not bind plugin `{plugin}`")
                })?,
            (None, [one]) => *one,
            (None, []) => return Err(format!("no enabled rule binds plugin `{plugin}`")),
            (None, _) => {
                return Err(format!(
                    "several rules bind plugin `{plugin}`: the detection must name one in `rule`"
                ));
            }
        };
        let ts =
            d.ts.unwrap_or_else(|| crate::clock::Clock::now(&crate::clock::SystemClock));
        let rule = &mut self.rules[i];
        rule.stats.matched += 1;
        rule.stats.fired += 1;
        let hit = Hit {
            fire: rule::Fire {
                count: 1,
                first_ts: ts,
            },
            group: vec![("key".to_owned(), d.key.clone())],
            captures: d.labels.clone(),
        };
        let mut det = detection(&self.templates, rule, d.evidence.as_ref(), hit, self.lean);
        det.ts = ts;
        if let Some(s) = d.severity {
            det.severity = det.severity.min(s);
        }
        if rule.config.common.summary.is_none() {
            det.summary = d.summary.clone();
        }
        det.labels.insert("plugin".into(), plugin.to_owned());
        out.push(det);
        Ok(())
    }

    /// The file cursors as of the last applied input (restored ones included).
    pub fn tail_cursors(&self) -> Vec<TailCursor> {
        self.tails.values().cloned().collect()
    }

    /// The file sources the restored checkpoint knew.
    pub fn tail_sources(&self) -> &[String] {
        &self.tail_sources
    }

    /// The cursor a journald source resumes after, from the restored checkpoint.
    pub fn journal_cursor(&self, source: &str) -> Option<&str> {
        self.journals.get(source).map(|j| j.cursor.as_str())
    }

    /// Sets the journald sources configured now; cursors of other sources are dropped.
    pub fn set_journal_sources(&mut self, ids: &[String]) {
        self.journals.retain(|s, _| ids.contains(s));
    }

    /// Sets the file sources configured now; cursors of other sources are dropped.
    pub fn set_tail_sources(&mut self, ids: Vec<String>) {
        self.tails.retain(|(s, _), _| ids.contains(s));
        self.tail_sources = ids;
    }

    /// The engine's clock: the newest event time applied, or wall time where the watermark
    /// let it move (see [`crate::watermark`]).
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Events dropped as late since the last call, per input (the event's `source`).
    pub fn take_late_inputs(&mut self) -> BTreeMap<String, u64> {
        std::mem::take(&mut self.late_inputs)
    }

    /// Advances the engine clock (wall time while live), fires due timers, and lets rules
    /// expire state.
    pub fn on_tick(&mut self, now: Timestamp, out: &mut Vec<Detection>) {
        if now > self.now {
            self.now = now;
        }
        self.fire_due(out);
        for rule in &mut self.rules {
            rule.on_tick(self.now);
        }
    }

    fn fire_due(&mut self, out: &mut Vec<Detection>) {
        let mut hits = Vec::new();
        // Only rules with timers: with many rules this runs for nearly every event.
        for &k in self.index.timed() {
            let rule = &mut self.rules[k];
            rule.due(self.now, &mut hits);
            for hit in hits.drain(..) {
                let mut d = detection(&self.templates, rule, None, hit, self.lean);
                d.origin = Some(Origin::Timer { at: self.now });
                out.push(d);
            }
        }
    }

    /// Every rule's state, serialized (JSON).
    pub fn checkpoint(&self) -> Vec<u8> {
        let cp = Checkpoint {
            version: CHECKPOINT_VERSION,
            now: self.now,
            rules: self
                .rules
                .iter()
                .map(|r| RuleStateRef {
                    id: r.id(),
                    definition: definition(&r.config),
                    detector: &r.detector,
                    stats: r.stats,
                })
                .collect(),
            tails: self.tails.values().cloned().collect(),
            tail_sources: self.tail_sources.clone(),
            journals: self.journals.clone(),
        };
        // Plain data with string keys: serializing to JSON cannot fail.
        serde_json::to_vec(&cp).unwrap_or_default()
    }

    /// A checkpoint and what it covers, for the incident manager to save.
    pub fn checkpoint_output(&mut self, wall: Timestamp) -> Output {
        let coverage = Coverage {
            cursors: self
                .tails
                .values()
                .map(|c| (c.source.clone(), c.id.dev, c.id.ino, c.offset))
                .chain(self.journals.iter().flat_map(|(s, j)| {
                    j.next
                        .iter()
                        .map(move |(id, next)| (s.clone(), *id, JOURNAL_INO, *next))
                }))
                .collect(),
            reset: self
                .reset_files
                .drain(..)
                .map(|(s, id)| (s, id.dev, id.ino))
                .collect(),
            done: self
                .done_files
                .drain(..)
                .map(|(s, id)| (s, id.dev, id.ino))
                .collect(),
            now: self.now,
            wall,
        };
        Output::Checkpoint {
            state: self.checkpoint(),
            coverage,
        }
    }

    /// Restores the state of each rule whose definition is unchanged since the checkpoint;
    /// returns how many were restored. Other rules keep a fresh state.
    pub fn restore(&mut self, bytes: &[u8]) -> Result<usize, CheckpointError> {
        let cp: Checkpoint<RuleState> =
            serde_json::from_slice(bytes).map_err(|e| CheckpointError(e.to_string()))?;
        // Version 1 had no file cursors; its rule state reads the same.
        if !(1..=CHECKPOINT_VERSION).contains(&cp.version) {
            return Err(CheckpointError(format!(
                "version {} is newer than this incidentd understands ({CHECKPOINT_VERSION})",
                cp.version
            )));
        }
        self.tails = cp.tails.into_iter().map(|c| (c.key(), c)).collect();
        self.tail_sources = cp.tail_sources;
        self.journals = cp.journals;
        let mut saved: BTreeMap<String, RuleState> =
            cp.rules.into_iter().map(|r| (r.id.clone(), r)).collect();
        let mut restored = 0;
        for rule in &mut self.rules {
            if let Some(st) = saved.remove(rule.id())
                && st.definition == definition(&rule.config)
            {
                rule.detector = st.detector;
                rule.stats = st.stats;
                restored += 1;
            }
        }
        if cp.now > self.now {
            self.now = cp.now;
        }
        Ok(restored)
    }

    /// After a restore: a clock further ahead of wall time than `skew` (saved by a version
    /// that let a future event move it) is pulled back to `wall`, and the rules' window state,
    /// which was built on that clock, starts empty (their counters stay). Returns the clock
    /// that was pulled back.
    pub fn pull_back(&mut self, wall: Timestamp, skew: Duration) -> Option<Timestamp> {
        if !crate::watermark::too_far_ahead(self.now, wall, skew) {
            return None;
        }
        let was = self.now;
        for r in &mut self.rules {
            let stats = r.stats;
            *r = Rule::build(r.config.clone());
            r.stats = stats;
        }
        self.templates = templates_for(&mut self.rules);
        self.prefilter = prefilter_for(&mut self.rules);
        self.index = index::RuleIndex::new(&self.rules);
        self.now = wall;
        Some(was)
    }

    pub fn rules(&self) -> Vec<RuleInfo> {
        self.rules
            .iter()
            .map(|r| {
                let RuleStats {
                    matched,
                    fired,
                    late: too_late,
                } = r.stats;
                let (late, evicted) = r.detector.dropped();
                let late = late + too_late;
                RuleInfo {
                    id: r.id().to_owned(),
                    kind: r.config.kind.name().to_owned(),
                    severity: r.config.common.severity,
                    enabled: r.config.common.enabled,
                    description: r.config.common.description.clone(),
                    origin: r.config.origin.clone(),
                    matched,
                    fired,
                    groups: r.detector.groups(),
                    max_groups: r.config.common.max_groups(),
                    late,
                    evicted,
                }
            })
            .collect()
    }
}

/// The shared gate of every rule's regex (their literals, or one `RegexSet`), when the rules
/// have two or more different patterns (for a single one it would only add a pass); each
/// such rule learns its pattern's index. Rules with the same pattern share one index: the
/// gate looks for each pattern once.
fn prefilter_for(rules: &mut [Rule]) -> Option<rule::SharedSet> {
    let mut patterns: Vec<&str> = Vec::new();
    let mut index_of: HashMap<&str, usize> = HashMap::new();
    let indexes: Vec<Option<usize>> = rules
        .iter()
        .map(|r| {
            let p = r.config.common.regex.as_ref()?.as_str();
            Some(*index_of.entry(p).or_insert_with(|| {
                patterns.push(p);
                patterns.len() - 1
            }))
        })
        .collect();
    // A pattern that can match the empty string matches every message anyway, and with one
    // the set's `is_match` can say no where `matches` says yes (an empty match inside a
    // character, as `(?-u:\B)` finds): no gate then.
    let set = (patterns.len() >= 2 && !patterns.iter().any(|p| may_match_empty(p)))
        .then(|| rule::SharedSet::new(&patterns))
        .flatten();
    if set.is_none() {
        for r in rules.iter_mut() {
            r.pattern = None;
        }
        return None;
    }
    for (r, p) in rules.iter_mut().zip(indexes) {
        r.pattern = p;
    }
    set
}

/// The rules' templates, and on each rule whether they may read `event` (turning the event
/// into template values is most of the cost of a detection, so it is done only when they
/// may).
fn templates_for(rules: &mut [Rule]) -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for r in rules.iter() {
        let c = &r.config.common;
        // Templates were compiled once during validation; a failure here cannot happen for a
        // validated config, and rendering falls back to the default text if it somehow did.
        if let Some(t) = &c.summary {
            let _ = env.add_template_owned(format!("{}#summary", c.id), t.clone());
        }
        if let Some(t) = &c.incident_key {
            let _ = env.add_template_owned(format!("{}#key", c.id), t.clone());
        }
    }
    for r in rules {
        // Conservatively by the text: a template that names `event`, or has any statement
        // (`set`, `with`, `include`, `import`… can reach it indirectly), or calls `debug`.
        let c = &r.config.common;
        r.templates_read_event = [&c.summary, &c.incident_key]
            .into_iter()
            .flatten()
            .any(|t| t.contains("event") || t.contains("{%") || t.contains("debug"));
    }
    env
}

/// Calls `each` for every rule `ev` reaches, in rule order, with the event's regex gate:
/// with a set or keyed rules, only the rules the index leaves; otherwise every rule.
fn reach(
    (prefilter, index, gate_spare): (
        &Option<rule::SharedSet>,
        &mut index::RuleIndex,
        &mut Vec<usize>,
    ),
    prefiltered: bool,
    rules: &mut [Rule],
    ev: &Event,
    mut each: impl FnMut(usize, &mut Rule, &mut rule::RegexGate<'_>),
) {
    let spare = std::mem::take(gate_spare);
    let mut gate = rule::RegexGate::new(prefilter.as_ref(), prefiltered, spare);
    let some = (prefilter.is_some() || index.keyed()).then(|| index.candidates(&mut gate, ev));
    let count = some.as_ref().map_or(rules.len(), Vec::len);
    for k in (0..count).map(|k| some.as_ref().map_or(k, |c| c[k])) {
        each(k, &mut rules[k], &mut gate);
    }
    if let Some(list) = some {
        index.give_back(list);
    }
    *gate_spare = gate.into_spare();
}

/// What `act` makes of the event for `rule`, turned into a detection when it fires; whether
/// the rule counted the event late. Only an event behind the watermark (`now`) can be late:
/// only then is the rule's late count looked at.
fn visit(
    rule: &mut Rule,
    (templates, lean): (&minijinja::Environment<'static>, bool),
    (ev, now): (&Event, Timestamp),
    out: &mut Vec<Detection>,
    act: impl FnOnce(&mut Rule) -> Option<Hit>,
) -> bool {
    let behind = ev.ts < now;
    let before = if behind { rule.late_count() } else { 0 };
    if let Some(hit) = act(rule) {
        out.push(detection(templates, rule, Some(ev), hit, lean));
    }
    behind && rule.late_count() > before
}

/// Builds a detection; `ev` is the event that made the rule fire, or `None` for a timer
/// (absence), whose time is the fire's. `lean`: see [`Engine::lean`].
fn detection(
    env: &minijinja::Environment<'static>,
    rule: &Rule,
    ev: Option<&Event>,
    hit: Hit,
    lean: bool,
) -> Detection {
    let c = &rule.config.common;
    let mut labels = ev.map(|e| e.labels.clone()).unwrap_or_default();
    if ev.is_none() {
        // A timer has no event: its group values are what it knows.
        labels.extend(hit.group.iter().cloned());
    }
    labels.extend(hit.captures);
    labels.extend(c.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    // Shared with the templates' context, which reads the few values a template names
    // instead of copying both maps into its own values; unwrapped once rendered.
    let labels = Arc::new(labels);
    let group: Arc<BTreeMap<String, String>> = Arc::new(hit.group.iter().cloned().collect());
    let group_text = hit
        .group
        .iter()
        .map(|(_, v)| v.as_str())
        .collect::<Vec<_>>()
        .join("/");

    // Made only for a rule that has a template to render (a detection of a rule without
    // one, in a replay, renders nothing).
    let ctx = || {
        minijinja::context! {
            rule => &c.id,
            severity => c.severity.as_str(),
            count => hit.fire.count,
            group => minijinja::Value::from_dyn_object(group.clone()),
            labels => minijinja::Value::from_dyn_object(labels.clone()),
            event => if rule.templates_read_event {
                minijinja::Value::from(minijinja::value::Serde(ev))
            } else {
                minijinja::Value::UNDEFINED
            },
        }
    };
    // The default text is made only when there is no template or it fails.
    let render = |has: bool, name: &dyn Fn() -> String, fallback: &dyn Fn() -> String| {
        if !has {
            return fallback();
        }
        let name = name();
        match env.get_template(&name) {
            Ok(t) => t.render(ctx()).unwrap_or_else(|e| {
                tracing::warn!(rule = %c.id, template = %name, error = %e, "template failed; using the default text");
                fallback()
            }),
            Err(_) => fallback(),
        }
    };
    let key = render(
        c.incident_key.is_some(),
        &|| format!("{}#key", c.id),
        &|| {
            if group_text.is_empty() {
                c.id.clone()
            } else {
                format!("{}/{}", c.id, group_text)
            }
        },
    );
    let summary = if lean {
        String::new()
    } else {
        let default_summary = || {
            let head = c
                .description
                .clone()
                .unwrap_or_else(|| format!("rule {} fired", c.id));
            let mut s = head;
            if !group_text.is_empty() {
                s.push_str(&format!(" ({group_text})"));
            }
            if let crate::engine::config::RuleKindConfig::Absence(a) = &rule.config.kind {
                s.push_str(&format!(
                    ": no event for {}",
                    humantime::format_duration(a.timeout)
                ));
            } else if hit.fire.count > 1 {
                s.push_str(&format!(": {} events", hit.fire.count));
            }
            s
        };
        render(
            c.summary.is_some(),
            &|| format!("{}#summary", c.id),
            &default_summary,
        )
    };
    // The context is gone with the rendering, so these are the only holders.
    let labels = Arc::try_unwrap(labels).unwrap_or_else(|shared| (*shared).clone());
    let group = Arc::try_unwrap(group).unwrap_or_else(|shared| (*shared).clone());
    let service = ev
        .and_then(|e| e.service.clone())
        .or_else(|| group.get("service").cloned());
    let host = ev
        .map(|e| e.host.clone())
        .or_else(|| group.get("host").cloned());
    Detection {
        rule: c.id.clone(),
        severity: c.severity,
        key,
        summary,
        ts: ev.map(|e| e.ts).unwrap_or(hit.fire.first_ts),
        first_ts: hit.fire.first_ts,
        count: hit.fire.count,
        group,
        labels,
        service,
        host,
        correlation_id: ev.and_then(|e| e.correlation_id.clone()),
        trace_id: ev.and_then(|e| e.trace_id.clone()),
        runbook: c.runbook.clone(),
        resolve_after_ms: c.resolve_after.map(|d| d.as_millis() as u64),
        message: ev.filter(|_| !lean).and_then(|e| e.message.clone()),
        origin: None,
        arrived: None,
        detected: None,
        evidence: ev.filter(|_| !lean).map(|e| Box::new(e.clone())),
    }
}

#[cfg(test)]
mod tests;
