//! A built rule: the compiled `where` conditions and `regex`, the group key, the templates,
//! and the kind's detector. Each kind lives in its own file with its state and tests.

mod absence;
mod branches;
mod burn_rate;
mod captures;
mod gate;
mod walk;
pub use gate::{RegexGate, SharedSet};
mod groups;
mod r#match;
mod metric;
mod rate;
mod ring;
mod sequence;
pub use sequence::MAX_PENDING;
mod spike;
mod threshold;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::clock::Timestamp;
use crate::engine::config::{Condition, RuleConfig, RuleKindConfig};
use crate::event::Event;

pub use absence::AbsenceDetector;
pub use burn_rate::BurnRateDetector;
pub use r#match::MatchDetector;
pub use metric::MetricDetector;
pub use rate::RateDetector;
pub use sequence::SequenceDetector;
pub use spike::SpikeDetector;
pub use threshold::ThresholdDetector;

/// What a kind's detector reports when it fires for a group.
#[derive(Debug, Clone, PartialEq)]
pub struct Fire {
    /// Events counted in the window that fired.
    pub count: u64,
    /// Event time of the earliest of them.
    pub first_ts: Timestamp,
}

/// The one dispatch from a rule's state to its kind: `$call` with `$d` bound to the kind's
/// detector — a static call the compiler can inline (the engine makes one per rule and
/// event; a `dyn Kind` call cost 8-13% with 10 and 100 rules) — and `$plugin` for plugin
/// rules, which hold no state.
macro_rules! dispatch {
    ($self:expr, $d:ident => $call:expr, $plugin:expr) => {
        match $self {
            Detector::Match($d) => $call,
            Detector::Threshold($d) => $call,
            Detector::Absence($d) => $call,
            Detector::Rate($d) => $call,
            Detector::Sequence($d) => $call,
            Detector::Metric($d) => $call,
            Detector::Spike($d) => $call,
            Detector::BurnRate($d) => $call,
            Detector::Plugin => $plugin,
        }
    };
}

/// The kind-specific part of a rule: plain synchronous code over event time.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub enum Detector {
    Match(MatchDetector),
    Threshold(ThresholdDetector),
    Absence(AbsenceDetector),
    Rate(RateDetector),
    Sequence(SequenceDetector),
    Metric(MetricDetector),
    Spike(SpikeDetector),
    BurnRate(BurnRateDetector),
    /// Fed by a plugin's detections, never by events.
    Plugin,
}

impl Detector {
    fn new(config: &RuleConfig) -> Detector {
        let max_groups = config.common.max_groups();
        match &config.kind {
            RuleKindConfig::Match(_) => Detector::Match(MatchDetector),
            RuleKindConfig::Threshold(c) => Detector::Threshold(ThresholdDetector::new(
                c.threshold.get(),
                c.window,
                max_groups,
            )),
            RuleKindConfig::Absence(c) => {
                let names = &config.common.group_by;
                let expected = c
                    .expected
                    .iter()
                    .map(|key| {
                        let values = names
                            .iter()
                            .cloned()
                            .zip(key.split('/').map(str::to_owned))
                            .collect();
                        (key.clone(), values)
                    })
                    .collect();
                Detector::Absence(AbsenceDetector::new(c.timeout, max_groups, expected))
            }
            RuleKindConfig::Rate(c) => Detector::Rate(RateDetector::new(
                c.ratio,
                c.min_events,
                c.window,
                max_groups,
            )),
            RuleKindConfig::Sequence(c) => {
                Detector::Sequence(SequenceDetector::new(c.within, c.mode, max_groups))
            }
            RuleKindConfig::Metric(c) => Detector::Metric(MetricDetector::new(
                c.aggregate,
                c.op,
                c.value_threshold,
                c.window,
                c.for_,
                max_groups,
            )),
            RuleKindConfig::Spike(c) => Detector::Spike(SpikeDetector::new(
                c.window,
                c.baseline.get(),
                c.factor,
                c.direction,
                c.measure,
                c.min_count,
                max_groups,
            )),
            RuleKindConfig::BurnRate(c) => {
                let pairs: Vec<_> = c.windows.iter().map(|w| (w.0, w.1, w.2)).collect();
                Detector::BurnRate(BurnRateDetector::new(c.objective, &pairs, max_groups))
            }
            RuleKindConfig::Plugin(_) => Detector::Plugin,
        }
    }

    fn on_event(
        &mut self,
        key: &str,
        group: &GroupValues<'_>,
        ts: Timestamp,
        marks: Marks,
    ) -> Option<Fire> {
        dispatch!(self, d => Kind::on_event(d, key, group, ts, marks), None)
    }

    fn has_timers(&self) -> bool {
        dispatch!(self, d => Kind::has_timers(d), false)
    }

    fn due(&mut self, now: Timestamp, out: &mut Vec<(Vec<(String, String)>, Fire)>) {
        dispatch!(self, d => Kind::due(d, now, out), ())
    }

    fn on_tick(&mut self, now: Timestamp) {
        dispatch!(self, d => Kind::on_tick(d, now), ())
    }

    /// (late events dropped, groups evicted by `max_groups`).
    pub fn dropped(&self) -> (u64, u64) {
        dispatch!(self, d => Kind::dropped(d), (0, 0))
    }

    /// Groups currently holding state.
    pub fn groups(&self) -> usize {
        dispatch!(self, d => Kind::groups(d), 0)
    }
}

/// A group's (name, value) pairs, made only when a kind needs them.
pub type GroupValues<'a> = dyn Fn() -> Vec<(String, String)> + 'a;

/// What every rule kind does: plain synchronous code over event time, one file per kind.
/// Adding a kind: its file (config, detector, this trait, tests), a variant of
/// [`Detector`] and `RuleKindConfig` with their one match each, and its docs.
pub trait Kind {
    /// One event of a group: `matched` when it matched the rule, `total` when it matched the
    /// rule's `total_where` (rate rules), `first`/`then` for sequence rules.
    fn on_event(
        &mut self,
        key: &str,
        group: &GroupValues<'_>,
        ts: Timestamp,
        marks: Marks,
    ) -> Option<Fire>;
    /// Whether this kind fires from timers at all (absence, not_followed_by, spike down).
    fn has_timers(&self) -> bool {
        false
    }
    /// Timers due at `now` (engine time): (group values, fire) for each.
    fn due(&mut self, _now: Timestamp, _out: &mut Vec<(Vec<(String, String)>, Fire)>) {}
    /// Lets go of state that can no longer fire at `now` (event time).
    fn on_tick(&mut self, _now: Timestamp) {}
    /// (late events dropped, groups evicted by `max_groups`).
    fn dropped(&self) -> (u64, u64) {
        (0, 0)
    }
    /// Groups currently holding state.
    fn groups(&self) -> usize {
        0
    }
}

/// What one event is to a rule: it matched the rule (`where` and `regex`); it matched a rate
/// rule's `total_where`; it is a sequence rule's `first` or `then`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Marks {
    pub matched: bool,
    pub total: bool,
    pub first: bool,
    pub then: bool,
    /// The event's `value` (metric rules).
    pub value: Option<f64>,
}

/// A compiled `where` table: every pair must hold.
type Conditions = Vec<(Key, Condition)>;

/// A compiled `where` table for code outside the rules (a detector plugin's `subscribe`).
#[derive(Debug, Clone)]
pub struct Filter(Vec<(Key, Condition)>);

impl Filter {
    /// Compiles `w`; an unknown event key is an error naming the keys there are.
    pub fn new(w: &BTreeMap<String, Condition>) -> Result<Filter, String> {
        w.iter()
            .map(|(k, c)| {
                Key::parse(k)
                    .map(|key| (key, c.clone()))
                    .ok_or_else(|| format!("unknown event key `{k}` (use {})", Key::NAMES))
            })
            .collect::<Result<_, _>>()
            .map(Filter)
    }

    pub fn matches(&self, ev: &Event) -> bool {
        self.0.iter().all(|(k, c)| condition_holds(k, c, ev))
    }
}

/// An event key a `where` condition or `group_by` can name.
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Kind,
    Source,
    Service,
    Host,
    Level,
    Message,
    Value,
    CorrelationId,
    TraceId,
    Label(String),
    Field(String),
}

impl Key {
    const NAMES: &'static str = "kind, source, service, host, level, message, value, correlation_id, trace_id, labels.NAME, fields.NAME";

    fn parse(name: &str) -> Option<Key> {
        Some(match name {
            "kind" => Key::Kind,
            "source" => Key::Source,
            "service" => Key::Service,
            "host" => Key::Host,
            "level" => Key::Level,
            "message" => Key::Message,
            "value" => Key::Value,
            "correlation_id" => Key::CorrelationId,
            "trace_id" => Key::TraceId,
            _ => {
                if let Some(l) = name.strip_prefix("labels.").filter(|l| !l.is_empty()) {
                    Key::Label(l.to_owned())
                } else if let Some(f) = name.strip_prefix("fields.").filter(|f| !f.is_empty()) {
                    Key::Field(f.to_owned())
                } else {
                    return None;
                }
            }
        })
    }

    fn get<'e>(&self, ev: &'e Event) -> Option<Cow<'e, str>> {
        let s = |o: &'e Option<String>| o.as_deref().map(Cow::Borrowed);
        match self {
            Key::Kind => Some(Cow::Borrowed(&ev.kind)),
            Key::Source => Some(Cow::Borrowed(&ev.source)),
            Key::Service => s(&ev.service),
            Key::Host => Some(Cow::Borrowed(&ev.host)),
            Key::Level => Some(Cow::Borrowed(ev.level.as_str())),
            Key::Message => s(&ev.message),
            Key::Value => ev.value.map(|v| Cow::Owned(v.to_string())),
            Key::CorrelationId => s(&ev.correlation_id),
            Key::TraceId => s(&ev.trace_id),
            Key::Label(l) => ev.labels.get(l).map(|v| Cow::Borrowed(v.as_str())),
            Key::Field(f) => field_text(ev, f),
        }
    }

    fn number(&self, ev: &Event) -> Option<f64> {
        match self {
            Key::Value => ev.value,
            Key::Field(f) => match ev.fields.get(f)? {
                serde_json::Value::Number(n) => n.as_f64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            },
            other => other.get(ev)?.trim().parse().ok(),
        }
    }
}

/// An event's field as a `where` condition reads it: a string as it is, any other value as
/// JSON text, `null` as missing.
fn field_text<'e>(ev: &'e Event, name: &str) -> Option<Cow<'e, str>> {
    match ev.fields.get(name)? {
        serde_json::Value::String(v) => Some(Cow::Borrowed(v.as_str())),
        serde_json::Value::Null => None,
        other => Some(Cow::Owned(other.to_string())),
    }
}

/// An event key the engine's rule index looks rules up by (see [`Rule::required`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexedKey {
    Kind,
    /// `fields.program`: the program of a syslog or journal line.
    Program,
}

impl IndexedKey {
    /// The event's text for this key, exactly as a `where` condition on it reads it.
    pub fn of(self, ev: &Event) -> Option<Cow<'_, str>> {
        match self {
            IndexedKey::Kind => Some(Cow::Borrowed(&ev.kind)),
            IndexedKey::Program => field_text(ev, "program"),
        }
    }
}

/// Orders a rule's conditions so the cheap ones are tested first: a `where` is all of them,
/// in any order, and most events fail one of the cheapest (`kind`, `level`) before a map is
/// looked up, a number parsed or a regex run.
fn cheapest_first(conditions: &mut [(Key, Condition)]) {
    fn cost(c: &Condition) -> u8 {
        match c {
            Condition::Regex(_) | Condition::NotRegex(_) => 4,
            Condition::Cidr(_) | Condition::NotCidr(_) | Condition::Contains(_) => 2,
            Condition::Gt(_) | Condition::Ge(_) | Condition::Lt(_) | Condition::Le(_) => 1,
            Condition::Not(inner) => cost(inner),
            _ => 0,
        }
    }
    conditions.sort_by_key(|(k, c)| {
        let key = match k {
            Key::Label(_) | Key::Field(_) | Key::Message => 1,
            _ => 0,
        };
        key + cost(c)
    });
}

fn condition_holds(key: &Key, cond: &Condition, ev: &Event) -> bool {
    let text = match cond {
        // Comparisons read the key as a number; text is not needed.
        Condition::Gt(_) | Condition::Ge(_) | Condition::Lt(_) | Condition::Le(_) => None,
        _ => key.get(ev),
    };
    cond.holds(text.as_deref(), || key.number(ev))
}

/// Where a `group_by` name takes its value from.
#[derive(Debug, Clone)]
enum GroupSource {
    /// The named groups of the rule's regex that fill this label (one name may stand in
    /// several branches), by index: the first that took part in the match.
    Capture(Vec<usize>),
    /// An event key.
    Key(Key),
}

/// Checks a parsed rule for problems serde cannot see. Returns (key, message) pairs; the
/// loader turns the key into a line.
pub fn validate(rule: &RuleConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let c = &rule.common;
    if c.id.is_empty()
        || !c
            .id
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.:".contains(ch))
    {
        out.push((
            "id",
            format!(
                "rule id `{}` must be non-empty and use only letters, digits, - _ . :",
                c.id
            ),
        ));
    }
    for name in c.where_.keys() {
        if Key::parse(name).is_none() {
            out.push((
                "where",
                format!("unknown event key `{name}` (use {})", Key::NAMES),
            ));
        }
    }
    for name in &c.group_by {
        if group_source(rule, name).is_none() {
            out.push((
                "group_by",
                format!(
                    "`{name}` is neither a named group of the rule's regex nor an event key ({})",
                    Key::NAMES
                ),
            ));
        }
    }
    if let RuleKindConfig::Absence(a) = &rule.kind {
        for e in &a.expected {
            if e.split('/').count() != c.group_by.len() {
                let names = if c.group_by.is_empty() {
                    "and there are none".to_owned()
                } else {
                    format!("({})", c.group_by.join(", "))
                };
                out.push((
                    "expected",
                    format!("`{e}` must give one value per group_by name {names}, joined with /"),
                ));
            }
        }
    }
    if let RuleKindConfig::Sequence(q) = &rule.kind {
        for (table, w) in [("first", &q.first), ("then", &q.then)] {
            for name in w.keys() {
                if Key::parse(name).is_none() {
                    out.push((
                        table,
                        format!("unknown event key `{name}` (use {})", Key::NAMES),
                    ));
                }
            }
        }
    }
    if let RuleKindConfig::Spike(p) = &rule.kind
        && !(p.factor > 1.0 && p.factor.is_finite())
    {
        out.push((
            "factor",
            format!("must be greater than 1, not {}", p.factor),
        ));
    }
    if let RuleKindConfig::BurnRate(b) = &rule.kind {
        if !(b.objective > 0.0 && b.objective < 1.0) {
            out.push((
                "objective",
                format!(
                    "must be between 0 and 1 (exclusive), e.g. 0.999, not {}",
                    b.objective
                ),
            ));
        }
        if b.windows.is_empty() {
            out.push((
                "windows",
                "needs at least one [long, short, burn] triple".into(),
            ));
        }
        for w in &b.windows {
            if w.1 >= w.0 || w.2.is_nan() || w.2 <= 0.0 {
                out.push((
                    "windows",
                    format!(
                        "[{}, {}, {}]: the short window must be shorter than the long one and the burn rate positive",
                        humantime::format_duration(w.0),
                        humantime::format_duration(w.1),
                        w.2
                    ),
                ));
            }
        }
        for name in b.total_where.keys() {
            if Key::parse(name).is_none() {
                out.push((
                    "total_where",
                    format!("unknown event key `{name}` (use {})", Key::NAMES),
                ));
            }
        }
    }
    if let RuleKindConfig::Rate(r) = &rule.kind {
        if !(r.ratio > 0.0 && r.ratio < 1.0) {
            out.push((
                "ratio",
                format!("must be between 0 and 1 (exclusive), not {}", r.ratio),
            ));
        }
        for name in r.total_where.keys() {
            if Key::parse(name).is_none() {
                out.push((
                    "total_where",
                    format!("unknown event key `{name}` (use {})", Key::NAMES),
                ));
            }
        }
    }
    for (key, tmpl) in [("summary", &c.summary), ("incident_key", &c.incident_key)] {
        if let Some(t) = tmpl {
            let env = minijinja::Environment::new();
            if let Err(e) = env.template_from_str(t) {
                out.push((key, format!("invalid template: {e}")));
            }
        }
    }
    out
}

fn group_source(rule: &RuleConfig, name: &str) -> Option<GroupSource> {
    let captured: Vec<usize> = rule
        .common
        .regex
        .as_ref()
        .map(|p| {
            p.0.capture_names()
                .enumerate()
                .filter(|(_, n)| n.is_some_and(|n| crate::de::Pattern::label_of(n) == name))
                .map(|(i, _)| i)
                .collect()
        })
        .unwrap_or_default();
    if !captured.is_empty() {
        return Some(GroupSource::Capture(captured));
    }
    Key::parse(name)
        .or_else(|| Some(Key::Label(name.to_owned())).filter(|_| !name.contains('.')))
        .map(GroupSource::Key)
}

/// Counters a rule keeps about itself.
#[derive(Debug, Clone, Copy, Default, Serialize, serde::Deserialize)]
pub struct RuleStats {
    pub matched: u64,
    pub fired: u64,
    /// Events dropped for arriving later than `allowed_lateness`.
    #[serde(default)]
    pub late: u64,
}

/// A rule ready to run.
#[derive(Clone, Debug)]
pub struct Rule {
    pub config: Arc<RuleConfig>,
    conditions: Vec<(Key, Condition)>,
    /// Conditions on labels the rule's regex fills (`labels.ip` with a group `ip`): they
    /// hold on the captured text, after the regex matched. By capture index.
    after: Vec<(Vec<usize>, Condition)>,
    /// `total_where` of a rate rule; `None` for other kinds.
    total: Option<Vec<(Key, Condition)>>,
    /// `first` and `then` of a sequence rule.
    sequence: Option<(Conditions, Conditions)>,
    /// Reused for every event: where the regex's groups matched, and the group key. Boxed:
    /// [`Rule::on_event`] takes it out while the detector acts, which moves a pointer only.
    locs: Option<Box<captures::Captures>>,
    /// Per capture group of the regex, the label it fills (its name without the `__N` of a
    /// repeated name), worked out once instead of at every detection.
    capture_labels: Vec<Option<String>>,
    key_buf: String,
    /// This rule's pattern in the engine's [`RegexGate`] set, when there is one.
    pub pattern: Option<usize>,
    group_by: Vec<(String, GroupSource)>,
    pub detector: Detector,
    pub stats: RuleStats,
    /// Whether the rule's summary or key template reads `event` (set with the templates).
    pub templates_read_event: bool,
}

/// Where a matched event's groups are: in the rule's own captures, or as found by a copy of
/// the rule elsewhere. `None` when the event did not match.
#[derive(Clone, Copy)]
enum Spans<'a> {
    Read(Option<&'a captures::Captures>),
    Given(Option<&'a [Option<(usize, usize)>]>),
}

impl Spans<'_> {
    fn get(&self, i: usize) -> Option<(usize, usize)> {
        match self {
            Spans::Read(l) => l.and_then(|l| l.get(i)),
            Spans::Given(s) => s.and_then(|s| s.get(i).copied().flatten()),
        }
    }

    /// Whether the event matched (there are spans to read).
    fn any(&self) -> bool {
        match self {
            Spans::Read(l) => l.is_some(),
            Spans::Given(s) => s.is_some(),
        }
    }
}

/// What matching an event produced, before templates are rendered.
#[derive(Clone, Debug)]
pub struct Hit {
    pub fire: Fire,
    /// group_by name → value, in group_by order.
    pub group: Vec<(String, String)>,
    /// Regex captures, named.
    pub captures: BTreeMap<String, String>,
}

impl Rule {
    /// Builds a rule from a config that passed [`validate`].
    pub fn build(config: Arc<RuleConfig>) -> Rule {
        let mut conditions = Vec::new();
        let mut after = Vec::new();
        for (k, c) in &config.common.where_ {
            let captured = match Key::parse(k) {
                Some(Key::Label(l)) => match group_source(&config, &l) {
                    Some(GroupSource::Capture(ids)) => Some(ids),
                    _ => None,
                },
                _ => None,
            };
            match captured {
                Some(ids) => after.push((ids, c.clone())),
                None => conditions.extend(Key::parse(k).map(|k| (k, c.clone()))),
            }
        }
        cheapest_first(&mut conditions);
        let group_by = config
            .common
            .group_by
            .iter()
            .filter_map(|n| group_source(&config, n).map(|s| (n.clone(), s)))
            .collect();
        let total_where = match &config.kind {
            RuleKindConfig::Rate(r) => Some(&r.total_where),
            RuleKindConfig::BurnRate(b) => Some(&b.total_where),
            _ => None,
        };
        let compile = |w: &BTreeMap<String, Condition>| -> Vec<(Key, Condition)> {
            let mut out: Vec<(Key, Condition)> = w
                .iter()
                .filter_map(|(k, c)| Key::parse(k).map(|k| (k, c.clone())))
                .collect();
            cheapest_first(&mut out);
            out
        };
        let total = total_where.map(compile);
        let sequence = match &config.kind {
            RuleKindConfig::Sequence(q) => Some((compile(&q.first), compile(&q.then))),
            _ => None,
        };
        Rule {
            sequence,
            detector: Detector::new(&config),
            locs: config
                .common
                .regex
                .as_ref()
                .map(|p| Box::new(captures::Captures::new(&p.0))),
            capture_labels: config.common.regex.as_ref().map_or_else(Vec::new, |p| {
                p.0.capture_names()
                    .map(|n| n.map(|n| crate::de::Pattern::label_of(n).to_owned()))
                    .collect()
            }),
            key_buf: String::new(),
            pattern: None,
            conditions,
            after,
            total,
            group_by,
            stats: RuleStats::default(),
            templates_read_event: true,
            config,
        }
    }

    pub fn id(&self) -> &str {
        self.config.id()
    }

    /// Runs one event through the rule. Nothing is allocated for an event that does not
    /// match, nor for a known group that does not fire: labels and group values are built
    /// only when the rule fires (or an absence rule meets a new group).
    /// `now` is the engine's clock (the newest event time seen), for `allowed_lateness`.
    pub fn on_event(
        &mut self,
        ev: &Event,
        gate: &mut RegexGate<'_>,
        now: Timestamp,
    ) -> Option<Hit> {
        if !self.acts_at(ev, now) {
            return None;
        }
        if self.ruled_out(ev, gate) {
            return None;
        }
        let matched = self.matches(ev, gate);
        let locs = if matched { self.locs.take() } else { None };
        let hit = self.act(ev, matched, Spans::Read(locs.as_deref()));
        if locs.is_some() {
            self.locs = locs;
        }
        hit
    }

    /// [`Rule::on_event`] with what [`Rule::matches`] found for the event elsewhere (by
    /// another copy of this rule): whether it matched, and its groups' spans by index.
    pub fn on_matched(
        &mut self,
        ev: &Event,
        now: Timestamp,
        matched: bool,
        spans: &[Option<(usize, usize)>],
    ) -> Option<Hit> {
        if !self.acts_at(ev, now) {
            return None;
        }
        self.act(ev, matched, Spans::Given(matched.then_some(spans)))
    }

    /// A rule that counts only events its regex matches is done when the shared regex set
    /// says it cannot match, before its `where` is looked at: with many regex rules the set's
    /// one pass rules out nearly all of them (a condition index for free).
    pub fn ruled_out(&self, ev: &Event, gate: &mut RegexGate<'_>) -> bool {
        match (self.pattern, &self.config.common.regex) {
            (Some(p), Some(_)) if self.total.is_none() => match ev.message.as_deref() {
                Some(message) => !gate.allows(p, message),
                None => true,
            },
            _ => false,
        }
    }

    /// Whether the rule looks at the event at all (enabled, not a plugin's, not late), which
    /// counts a late event.
    fn acts_at(&mut self, ev: &Event, now: Timestamp) -> bool {
        if !self.config.common.enabled || matches!(self.detector, Detector::Plugin) {
            return false;
        }
        if let Some(lateness) = self.config.common.allowed_lateness
            && ev.ts < now.saturating_sub(lateness)
        {
            self.stats.late += 1;
            return false;
        }
        true
    }

    /// Whether the event matches the rule's `where` and regex (with the conditions on what
    /// the regex captured): the half of [`Rule::on_event`] that keeps no state but the
    /// captures' scratch, so a copy of the rule can run it on another thread.
    pub fn matches(&mut self, ev: &Event, gate: &mut RegexGate<'_>) -> bool {
        let message = ev.message.as_deref().unwrap_or("");
        self.conditions
            .iter()
            .all(|(k, c)| condition_holds(k, c, ev))
            && match (&self.config.common.regex, &mut self.locs) {
                (Some(re), Some(locs)) => {
                    ev.message.is_some()
                        && self.pattern.is_none_or(|p| gate.allows(p, message))
                        && locs.read(&re.0, message, gate.expects_match(self.pattern))
                        && self.after.iter().all(|(ids, c)| {
                            let text = ids
                                .iter()
                                .find_map(|i| locs.get(*i))
                                .map(|(a, b)| &message[a..b]);
                            c.holds(text, || text.and_then(|t| t.trim().parse().ok()))
                        })
                }
                _ => true,
            }
    }

    /// The spans of the groups of the last match [`Rule::matches`] found, by group index,
    /// appended to `into`.
    pub fn spans_into(&self, into: &mut Vec<Option<(usize, usize)>>) {
        if let (Some(re), Some(locs)) = (&self.config.common.regex, &self.locs) {
            locs.spans_into(re.0.captures_len(), into);
        }
    }

    /// The stateful half: the event (which `matched` or not) goes to the rule's detector.
    fn act(&mut self, ev: &Event, matched: bool, spans: Spans<'_>) -> Option<Hit> {
        let message = ev.message.as_deref().unwrap_or("");
        let total = self
            .total
            .as_ref()
            .is_some_and(|t| t.iter().all(|(k, c)| condition_holds(k, c, ev)));
        let (first, then) = match (&self.sequence, matched) {
            (Some((f, t)), true) => (
                f.iter().all(|(k, c)| condition_holds(k, c, ev)),
                t.iter().all(|(k, c)| condition_holds(k, c, ev)),
            ),
            _ => (false, false),
        };
        if (!matched && !total) || (self.sequence.is_some() && !first && !then) {
            return None;
        }
        if matched {
            self.stats.matched += 1;
        }
        let value = |src: &GroupSource| -> Option<Cow<'_, str>> {
            match src {
                GroupSource::Capture(ids) => ids
                    .iter()
                    .find_map(|i| spans.get(*i))
                    .map(|(a, b)| Cow::Borrowed(&message[a..b])),
                GroupSource::Key(k) => k.get(ev),
            }
        };
        self.key_buf.clear();
        for (i, (_, src)) in self.group_by.iter().enumerate() {
            if i > 0 {
                self.key_buf.push('/');
            }
            if let Some(v) = value(src) {
                self.key_buf.push_str(&v);
            }
        }
        let group_by = &self.group_by;
        let group = || -> Vec<(String, String)> {
            group_by
                .iter()
                .map(|(name, src)| {
                    (
                        name.clone(),
                        value(src).map(Cow::into_owned).unwrap_or_default(),
                    )
                })
                .collect()
        };
        let fire = self.detector.on_event(
            &self.key_buf,
            &group,
            ev.ts,
            Marks {
                matched,
                total,
                first,
                then,
                value: ev.value,
            },
        )?;
        self.stats.fired += 1;
        let mut captures = BTreeMap::new();
        if spans.any() {
            for (i, label) in self.capture_labels.iter().enumerate() {
                if let (Some(label), Some((a, b))) = (label, spans.get(i))
                    && !captures.contains_key(label)
                {
                    captures.insert(label.clone(), message[a..b].to_owned());
                }
            }
        }
        Some(Hit {
            fire,
            group: group(),
            captures,
        })
    }

    pub fn on_tick(&mut self, now: Timestamp) {
        self.detector.on_tick(now);
    }

    /// The rule's pattern in the engine's set when the rule can only act on events that
    /// pattern matches (it counts nothing else and no lateness is counted before its regex):
    /// the engine then runs it only for those.
    pub fn gated_by(&self) -> Option<usize> {
        let plain = self.total.is_none()
            && self.config.common.allowed_lateness.is_none()
            && self.config.common.regex.is_some()
            && !matches!(self.detector, Detector::Plugin);
        self.pattern.filter(|_| plain)
    }

    /// The values one event key must have for this rule to act on an event, when its
    /// `where` asks that key to equal one of them (`=` or `in`; `fields.program` is taken
    /// before `kind`) and the rule acts on no event its `where` rejects (no `total_where`,
    /// no lateness counted before the conditions): the engine's index then asks it only
    /// for events with one of those values.
    pub fn required(&self) -> Option<(IndexedKey, &[String])> {
        if self.total.is_some() || self.config.common.allowed_lateness.is_some() {
            return None;
        }
        let values = |want: &Key| {
            self.conditions
                .iter()
                .find(|(k, _)| k == want)
                .and_then(|(_, c)| match c {
                    Condition::Equals(v) => Some(std::slice::from_ref(v)),
                    Condition::In(list) => Some(list.as_slice()),
                    _ => None,
                })
        };
        values(&Key::Field("program".to_owned()))
            .map(|v| (IndexedKey::Program, v))
            .or_else(|| values(&Key::Kind).map(|v| (IndexedKey::Kind, v)))
    }

    /// Events this rule dropped as late so far (past `allowed_lateness`, or past its window).
    pub fn late_count(&self) -> u64 {
        self.stats.late + self.detector.dropped().0
    }

    /// Whether the rule can fire from a timer (enabled, and of a kind that has timers).
    pub fn has_timers(&self) -> bool {
        self.config.common.enabled && self.detector.has_timers()
    }

    /// Detections whose time has come at `now` (absence timers), appended to `out`.
    pub fn due(&mut self, now: Timestamp, out: &mut Vec<Hit>) {
        if !self.has_timers() {
            return;
        }
        let mut fired = Vec::new();
        self.detector.due(now, &mut fired);
        // Groups live in hash maps: order what fell due together by time, then group, so
        // replays and restored engines emit exactly the same sequence.
        fired.sort_by(|(ga, fa), (gb, fb)| fa.first_ts.cmp(&fb.first_ts).then_with(|| ga.cmp(gb)));
        self.stats.fired += fired.len() as u64;
        out.extend(fired.into_iter().map(|(group, fire)| Hit {
            fire,
            group,
            captures: BTreeMap::new(),
        }));
    }
}
