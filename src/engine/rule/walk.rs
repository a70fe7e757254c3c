//! A pattern's match and groups found by walking its syntax tree: a backtracker without an
//! automaton, on ASCII messages, for the branches of a rule's patterns (`branches.rs`), the
//! rest of a pattern after its leading literal and a pattern anchored with `^`
//! (`captures.rs`).
//!
//! The bounded backtracker of `regex-automata` steps through an NFA state by state, and at
//! each step tests and sets a bit in its memory of where it has been: about 25 instructions a
//! state, three or four states a byte, so about 400 ns for a `Failed password` line, the
//! largest cost of a dense replay. Log patterns are mostly literals and runs of one class
//! (`\S+`, `.*?`, `[0-9A-Za-z.:%_-]+`, `\d+`), which this walker takes whole: a literal is one
//! comparison, a run one scan, and then the rest is tried at each length of the run, longest
//! first when greedy, shortest first when lazy. It tries the alternatives in the order
//! leftmost-first backtracking does (the first alternation branch first, a greedy repetition's
//! next round before stopping, a lazy one's the other way), and keeps a group's last
//! position as that backtracker does, so the first match it finds is the regex's, with the
//! same groups (a property test holds it to the regex crate).
//!
//! It has no memory of where it has been, so a pattern and message can make it try many
//! ways: it gives up after a number of steps linear in the message's length (a run's scan
//! counts a step per byte), or at a depth of nesting, and the caller runs the bounded
//! backtracker, whose time is linear. Patterns with anything else (look-arounds but `^` and
//! `$`, a repeated part that can match nothing, classes beyond ASCII) are not walked.

use regex_automata::PatternID;
use regex_automata::util::captures::Captures as Slots;
use regex_automata::util::primitives::NonMaxUsize;
use regex_syntax::hir::{Class, Hir, HirKind, Look};

/// Nesting deeper than this (a repeated group's rounds, each one level) gives up.
const MAX_DEPTH: u32 = 200;
/// Steps allowed per byte of the message, plus [`BASE_STEPS`].
const STEPS_PER_BYTE: usize = 16;
const BASE_STEPS: usize = 256;

/// A byte class as a table.
type Table = Box<[bool; 256]>;

#[derive(Clone, Debug)]
enum Node {
    Lit(Box<[u8]>),
    Class(Table),
    /// A class repeated `min..=max` times, greedy or lazy: scanned once. `next`: the byte
    /// the rest of its sequence must begin with, when known (a literal follows), so that
    /// only the lengths where it stands are tried.
    Run {
        class: Table,
        min: usize,
        max: usize,
        greedy: bool,
        next: Option<u8>,
    },
    /// Anything else, optional (`?`, `??`); `first`: the byte a match of `sub` begins with,
    /// when known, so that where another stands, `sub` is passed over at once.
    Opt {
        sub: Vec<Node>,
        greedy: bool,
        first: Option<u8>,
    },
    /// Anything else repeated; each round matches at least one byte.
    Repeat {
        sub: Vec<Node>,
        min: usize,
        max: usize,
        greedy: bool,
    },
    /// Branches, each with the byte it begins with when known.
    Alt(Vec<(Vec<Node>, Option<u8>)>),
    /// Where group `i` starts or ends.
    Open(usize),
    Close(usize),
    Start,
    End,
}

/// What is left to match after a sequence ends.
enum Cont<'a> {
    Seq(&'a [Node], Option<&'a Cont<'a>>),
    /// A repetition's next round or its end: `count` rounds done.
    Round {
        sub: &'a [Node],
        min: usize,
        max: usize,
        greedy: bool,
        count: usize,
        rest: &'a [Node],
        next: Option<&'a Cont<'a>>,
    },
}

/// A pattern compiled for walking.
#[derive(Clone, Debug)]
pub(super) struct Walker {
    nodes: Vec<Node>,
    /// The slots' values before the walk set them, to undo on a way that fails (kept
    /// between reads so that none allocates).
    undo: Vec<(usize, Option<NonMaxUsize>)>,
}

impl Walker {
    /// For `hir` (classes over bytes, see `ascii_hir`); `None` when it holds anything this
    /// walker does not take.
    pub(super) fn new(hir: &Hir) -> Option<Walker> {
        let mut nodes = Vec::new();
        compile(hir, &mut nodes)?;
        mark_next(&mut nodes);
        Some(Walker {
            nodes,
            undo: Vec::new(),
        })
    }

    /// Matches the pattern at `at` in `hay` (anchored there; `^` and `$` are the ends of
    /// `hay`), writing the match and its groups into `caps` as the bounded backtracker
    /// would (so the caller reads them the same way). `Some(false)`: no match; `None`: it
    /// gave up, `caps` holds no match and the caller asks the backtracker.
    pub(super) fn read(&mut self, hay: &[u8], at: usize, caps: &mut Slots) -> Option<bool> {
        let found = self.read_slots(hay, at, caps.slots_mut());
        caps.set_pattern((found == Some(true)).then_some(PatternID::ZERO));
        found
    }

    /// [`Walker::read`] into the slots themselves (two per group, the whole match first).
    fn read_slots(
        &mut self,
        hay: &[u8],
        at: usize,
        slots: &mut [Option<NonMaxUsize>],
    ) -> Option<bool> {
        slots.iter_mut().for_each(|s| *s = None);
        self.undo.clear();
        let mut walk = Walk {
            hay,
            slots,
            undo: &mut self.undo,
            steps: BASE_STEPS + STEPS_PER_BYTE * hay.len().saturating_sub(at),
            depth: 0,
            gave_up: false,
            end: 0,
        };
        if at > hay.len() {
            return Some(false);
        }
        let found = walk.seq(&self.nodes, at, None);
        if walk.gave_up {
            walk.slots.iter_mut().for_each(|s| *s = None);
            return None;
        }
        if found {
            let end = walk.end;
            if let [start, stop, ..] = walk.slots {
                *start = NonMaxUsize::new(at);
                *stop = NonMaxUsize::new(end);
            }
        } else {
            walk.slots.iter_mut().for_each(|s| *s = None);
        }
        Some(found)
    }
}

/// Sets each run's `next` where a literal follows it in its sequence (group marks between
/// them match nothing), in `nodes` and every sequence within.
fn mark_next(nodes: &mut [Node]) {
    for i in 0..nodes.len() {
        let next = first_byte(&nodes[i + 1..]);
        match &mut nodes[i] {
            Node::Run { next: n, .. } => *n = next,
            Node::Repeat { sub, .. } | Node::Opt { sub, .. } => mark_next(sub),
            Node::Alt(branches) => branches.iter_mut().for_each(|(b, _)| mark_next(b)),
            _ => {}
        }
    }
}

/// The byte every match of `seq` begins with, when it begins with a literal or with branches
/// that all begin with that byte (group marks before it match nothing).
fn first_byte(seq: &[Node]) -> Option<u8> {
    match seq
        .iter()
        .find(|n| !matches!(n, Node::Open(_) | Node::Close(_)))?
    {
        Node::Lit(l) => l.first().copied(),
        // The byte all branches begin with (`invalid user |illegal user `).
        Node::Alt(branches) => {
            let (_, first) = branches.first()?;
            branches.iter().all(|(_, f)| f == first).then_some(*first)?
        }
        _ => None,
    }
}

fn table(ranges: impl Iterator<Item = (u8, u8)>) -> Table {
    let mut t = Box::new([false; 256]);
    for (a, b) in ranges {
        for x in a..=b {
            t[usize::from(x)] = true;
        }
    }
    t
}

/// `hir` as a class table, when it is a class or a one-byte literal.
fn as_table(hir: &Hir) -> Option<Table> {
    match hir.kind() {
        HirKind::Class(Class::Bytes(c)) => Some(table(c.iter().map(|r| (r.start(), r.end())))),
        HirKind::Class(Class::Unicode(c)) => {
            let ascii = c.iter().all(|r| r.end().is_ascii());
            ascii.then(|| table(c.iter().map(|r| (r.start() as u8, r.end() as u8))))
        }
        HirKind::Literal(l) if l.0.len() == 1 => Some(table(std::iter::once((l.0[0], l.0[0])))),
        _ => None,
    }
}

fn compile(hir: &Hir, out: &mut Vec<Node>) -> Option<()> {
    match hir.kind() {
        HirKind::Empty => {}
        HirKind::Literal(l) => match out.last_mut() {
            Some(Node::Lit(prev)) => {
                let mut joined = prev.to_vec();
                joined.extend_from_slice(&l.0);
                *prev = joined.into_boxed_slice();
            }
            _ => out.push(Node::Lit(l.0.clone())),
        },
        HirKind::Class(_) => out.push(Node::Class(as_table(hir)?)),
        HirKind::Look(Look::Start) => out.push(Node::Start),
        HirKind::Look(Look::End) => out.push(Node::End),
        HirKind::Look(_) => return None,
        HirKind::Repetition(r) => {
            let min = usize::try_from(r.min).ok()?;
            let max = match r.max {
                Some(m) => usize::try_from(m).ok()?,
                None => usize::MAX,
            };
            if let Some(class) = as_table(&r.sub) {
                out.push(Node::Run {
                    class,
                    min,
                    max,
                    greedy: r.greedy,
                    next: None,
                });
            } else if (min, max) == (0, 1) {
                let mut sub = Vec::new();
                compile(&r.sub, &mut sub)?;
                let first = first_byte(&sub);
                out.push(Node::Opt {
                    sub,
                    greedy: r.greedy,
                    first,
                });
            } else {
                // A round that can match nothing could go round forever.
                if r.sub.properties().minimum_len().is_none_or(|n| n == 0) {
                    return None;
                }
                let mut sub = Vec::new();
                compile(&r.sub, &mut sub)?;
                out.push(Node::Repeat {
                    sub,
                    min,
                    max,
                    greedy: r.greedy,
                });
            }
        }
        HirKind::Capture(c) => {
            let i = usize::try_from(c.index).ok()?;
            out.push(Node::Open(i));
            compile(&c.sub, out)?;
            out.push(Node::Close(i));
        }
        HirKind::Concat(parts) => {
            for p in parts {
                compile(p, out)?;
            }
        }
        HirKind::Alternation(alts) => {
            let mut branches = Vec::with_capacity(alts.len());
            for a in alts {
                let mut b = Vec::new();
                compile(a, &mut b)?;
                let first = first_byte(&b);
                branches.push((b, first));
            }
            out.push(Node::Alt(branches));
        }
    }
    Some(())
}

struct Walk<'h> {
    hay: &'h [u8],
    slots: &'h mut [Option<NonMaxUsize>],
    undo: &'h mut Vec<(usize, Option<NonMaxUsize>)>,
    /// Steps left before giving up.
    steps: usize,
    depth: u32,
    gave_up: bool,
    /// Where the match ended, once found.
    end: usize,
}

impl Walk<'_> {
    /// Puts back the slots set since the undo log was `mark` long.
    fn undo_to(&mut self, mark: usize) {
        while self.undo.len() > mark {
            if let Some((slot, old)) = self.undo.pop() {
                self.slots[slot] = old;
            }
        }
    }

    /// Whether `items`, then `k`, match at `pos`.
    fn seq(&mut self, items: &[Node], pos: usize, k: Option<&Cont<'_>>) -> bool {
        if self.depth >= MAX_DEPTH {
            self.gave_up = true;
            return false;
        }
        self.depth += 1;
        let found = self.seq_inner(items, pos, k);
        self.depth -= 1;
        found
    }

    fn seq_inner(&mut self, mut items: &[Node], mut pos: usize, k: Option<&Cont<'_>>) -> bool {
        let hay = self.hay;
        loop {
            if self.steps == 0 {
                self.gave_up = true;
                return false;
            }
            self.steps -= 1;
            let Some((first, rest)) = items.split_first() else {
                return match k {
                    None => {
                        self.end = pos;
                        true
                    }
                    Some(Cont::Seq(items, next)) => self.seq(items, pos, *next),
                    Some(&Cont::Round {
                        sub,
                        min,
                        max,
                        greedy,
                        count,
                        rest,
                        next,
                    }) => self.rounds(sub, (min, max, greedy), count, pos, rest, next),
                };
            };
            match first {
                Node::Lit(l) => {
                    let here = &hay[pos..];
                    if here.first() != l.first() || !here.starts_with(l) {
                        return false;
                    }
                    pos += l.len();
                }
                Node::Class(t) => match hay.get(pos) {
                    Some(&b) if t[usize::from(b)] => pos += 1,
                    _ => return false,
                },
                Node::Start => {
                    if pos != 0 {
                        return false;
                    }
                }
                Node::End => {
                    if pos != hay.len() {
                        return false;
                    }
                }
                // Undone by whichever way that tried this one fails.
                Node::Open(i) | Node::Close(i) => {
                    let slot = 2 * i + usize::from(matches!(first, Node::Close(_)));
                    let Some(s) = self.slots.get_mut(slot) else {
                        self.gave_up = true;
                        return false;
                    };
                    let old = std::mem::replace(s, NonMaxUsize::new(pos));
                    self.undo.push((slot, old));
                }
                Node::Run {
                    class,
                    min,
                    max,
                    greedy,
                    next,
                } => {
                    let limit = (*max).min(hay.len() - pos);
                    let in_class = |i: usize| class[usize::from(hay[pos + i])];
                    let mark = self.undo.len();
                    let try_at = |s: &mut Self, c: usize| {
                        if next.is_some_and(|b| hay.get(pos + c) != Some(&b)) {
                            return false;
                        }
                        if s.seq(rest, pos + c, k) {
                            return true;
                        }
                        s.undo_to(mark);
                        false
                    };
                    if *greedy {
                        // Scanned as far as it goes, then tried from the longest down. The
                        // scan and the lengths tried cost up to `n` more steps: counted, so
                        // that runs inside runs cannot make the walk quadratic.
                        let n = hay[pos..pos + limit]
                            .iter()
                            .position(|&b| !class[usize::from(b)])
                            .unwrap_or(limit);
                        if self.steps < n {
                            self.gave_up = true;
                            return false;
                        }
                        self.steps -= n;
                        if n < *min {
                            return false;
                        }
                        for c in (*min..=n).rev() {
                            if try_at(self, c) {
                                return true;
                            }
                            if self.gave_up {
                                return false;
                            }
                        }
                        return false;
                    }
                    // Lazy: the run grows a byte at a time, only as far as a way needs (a
                    // `.*?` before ` from ` never reads to the end of the line), a step a
                    // byte.
                    if *min > limit || !(0..*min).all(in_class) {
                        return false;
                    }
                    let mut c = *min;
                    loop {
                        if try_at(self, c) {
                            return true;
                        }
                        if self.gave_up || c >= limit || !in_class(c) {
                            return false;
                        }
                        if self.steps == 0 {
                            self.gave_up = true;
                            return false;
                        }
                        self.steps -= 1;
                        c += 1;
                    }
                }
                Node::Opt { sub, greedy, first } => {
                    // `sub` cannot begin here: only the way without it is left.
                    if first.is_some_and(|f| hay.get(pos) != Some(&f)) {
                        items = rest;
                        continue;
                    }
                    let after = Cont::Seq(rest, k);
                    let mark = self.undo.len();
                    if *greedy {
                        if self.seq(sub, pos, Some(&after)) {
                            return true;
                        }
                    } else if self.seq(rest, pos, k) {
                        return true;
                    }
                    self.undo_to(mark);
                    if self.gave_up {
                        return false;
                    }
                    if *greedy {
                        items = rest;
                        continue;
                    }
                    return self.seq(sub, pos, Some(&after));
                }
                Node::Repeat {
                    sub,
                    min,
                    max,
                    greedy,
                } => return self.rounds(sub, (*min, *max, *greedy), 0, pos, rest, k),
                Node::Alt(branches) => {
                    let after = Cont::Seq(rest, k);
                    let mark = self.undo.len();
                    let here = hay.get(pos);
                    for (b, first) in branches {
                        if first.is_some_and(|f| here != Some(&f)) {
                            continue;
                        }
                        if self.seq(b, pos, Some(&after)) {
                            return true;
                        }
                        self.undo_to(mark);
                        if self.gave_up {
                            return false;
                        }
                    }
                    return false;
                }
            }
            items = rest;
        }
    }

    /// A repetition of `sub` with `count` rounds done at `pos`: another round, or the rest.
    fn rounds(
        &mut self,
        sub: &[Node],
        (min, max, greedy): (usize, usize, bool),
        count: usize,
        pos: usize,
        rest: &[Node],
        next: Option<&Cont<'_>>,
    ) -> bool {
        // Another round (when `more`), or the rest.
        let way = |s: &mut Self, more: bool| {
            if !more {
                return count >= min && s.seq(rest, pos, next);
            }
            count < max && {
                let round = Cont::Round {
                    sub,
                    min,
                    max,
                    greedy,
                    count: count + 1,
                    rest,
                    next,
                };
                s.seq(sub, pos, Some(&round))
            }
        };
        let mark = self.undo.len();
        // Greedy: another round first; lazy: the rest first.
        if way(self, greedy) {
            return true;
        }
        self.undo_to(mark);
        if self.gave_up {
            return false;
        }
        if way(self, !greedy) {
            return true;
        }
        self.undo_to(mark);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Groups = Vec<Option<(usize, usize)>>;

    /// The walker's answer for `pattern` on `message`, as groups; `None` if it gave up or
    /// does not take the pattern.
    fn walk(pattern: &str, message: &str) -> Option<Option<Groups>> {
        let hir = super::super::branches::ascii_hir(pattern)?;
        let mut w = Walker::new(&hir)?;
        let mut caps = super::super::branches::byte_backtracker(&hir)?.create_captures();
        let found = w.read(message.as_bytes(), 0, &mut caps)?;
        assert_eq!(found, caps.is_match());
        Some(found.then(|| {
            (0..caps.group_len())
                .map(|i| caps.get_group(i).map(|g| (g.start, g.end)))
                .collect()
        }))
    }

    /// The regex crate's answer for `pattern` anchored at the start of `message`.
    fn regex_groups(pattern: &str, message: &str) -> Option<Groups> {
        let re = regex::Regex::new(&format!("^(?:{pattern})")).ok()?;
        re.captures(message)
            .map(|c| c.iter().map(|g| g.map(|g| (g.start(), g.end()))).collect())
    }

    #[test]
    fn a_failed_password_line_gives_the_regex_groups() {
        let p = r"(?:error: )?Failed (?P<method>\S+) for (?:invalid user |illegal user )?(?P<user>.*?) from (?P<ip>[0-9A-Za-z.:%_-]+)(?: port \d+)?(?: ssh\d?)?(?:: [A-Z0-9-]+ \S+)?(?: \[preauth\])?$";
        for m in [
            "Failed password for root from 198.51.3.17 port 43122 ssh2",
            "Failed password for invalid user a from 6.6.6.6 port 1 from 10.0.0.1 port 22 ssh2",
            "error: Failed publickey for git from ::1 port 22 ssh2: RSA SHA256:x [preauth]",
            "Failed password for root from 1.2.3.4 port x",
            "Failed password for  from 1.2.3.4",
        ] {
            assert_eq!(walk(p, m), Some(regex_groups(p, m)), "{m}");
        }
    }

    #[test]
    fn patterns_it_cannot_walk_are_refused() {
        for p in [r"\bword", r"(?m)^a$", r"(?:a*)*b", r"(a|)+"] {
            let hir = super::super::branches::ascii_hir(p);
            assert!(hir.as_ref().and_then(Walker::new).is_none(), "{p}");
        }
        // A literal beyond ASCII is bytes like any other.
        assert!(Walker::new(&super::super::branches::ascii_hir("(?-u:\\xff)a").unwrap()).is_some());
    }

    #[test]
    fn it_gives_up_where_trying_every_way_would_take_too_long() {
        // Nested runs that fail at the end: exponential without a memory of where it has
        // been.
        let p = r"(?:a+)+b";
        let m = "a".repeat(64);
        assert_eq!(walk(p, &m), None);
        // A short one is answered.
        assert_eq!(walk(p, "aab"), Some(regex_groups(p, "aab")));
        // A lazy run, then a run scanned to the end at each of its lengths: quadratic in the
        // message unless the scans count (each try adds only a step, each scan 2,000 bytes).
        let p = r"(?P<a>.*?)(?P<b>\S+)x$";
        let m = "a".repeat(2_000);
        assert_eq!(walk(p, &m), None);
        assert_eq!(walk(p, "aaax"), Some(regex_groups(p, "aaax")));
    }

    /// Small patterns over a small alphabet: runs greedy and lazy, bounded repetitions,
    /// repeated groups, alternations, groups inside repetitions, `$`.
    fn pattern() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just(" ".to_owned()),
            Just("ab".to_owned()),
            Just(r"\S".to_owned()),
            Just(".".to_owned()),
            Just(r"\d".to_owned()),
            Just("[ab]".to_owned()),
            Just("$".to_owned()),
            Just("^".to_owned()),
            Just("(?i:a)".to_owned()),
            Just("B".to_owned()),
            Just(String::new()),
        ];
        leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                (inner.clone(), 0..10usize).prop_map(|(p, q)| {
                    let suffix = [
                        "*", "+", "?", "*?", "+?", "{1,2}", "??", "{1,2}?", "{0,2}", "{2,}",
                    ][q];
                    format!("(?:{p}){suffix}")
                }),
                inner.clone().prop_map(|p| format!("({p})")),
                proptest::collection::vec(inner.clone(), 2..4).prop_map(|v| v.concat()),
                proptest::collection::vec(inner, 2..4).prop_map(|v| format!("(?:{})", v.join("|"))),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_walker_agrees_with_the_regex(
            p in pattern(),
            messages in proptest::collection::vec("[ab 1\n]{0,10}", 1..6),
        ) {
            for m in &messages {
                if let Some(got) = walk(&p, m) {
                    prop_assert_eq!(got, regex_groups(&p, m), "{} on {:?}", p, m);
                }
            }
        }

        /// From any position, as the rest of a pattern after its literal is walked: the
        /// bounded backtracker anchored there (`^` is still the message's start) is the
        /// reference.
        #[test]
        fn the_walker_agrees_with_the_backtracker_from_any_position(
            p in pattern(),
            messages in proptest::collection::vec("[abAB 1\n]{0,10}", 1..4),
        ) {
            use regex_automata::{Anchored, Input};
            let hir = super::super::branches::ascii_hir(&p).expect("the pattern parses");
            let Some(mut w) = Walker::new(&hir) else { return Ok(()) };
            let bt = super::super::branches::byte_backtracker(&hir).expect("a backtracker");
            let (mut cache, mut want) = (bt.create_cache(), bt.create_captures());
            let mut got = bt.create_captures();
            for m in &messages {
                for at in 0..=m.len() {
                    let input = Input::new(m).span(at..m.len()).anchored(Anchored::Yes);
                    bt.try_search(&mut cache, &input, &mut want).expect("short messages");
                    if let Some(found) = w.read(m.as_bytes(), at, &mut got) {
                        prop_assert_eq!(found, want.is_match(), "{} on {:?} at {}", p, m, at);
                        if found {
                            prop_assert_eq!(got.slots(), want.slots(), "{} on {:?} at {}", p, m, at);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn log_patterns_are_walked() {
        for p in [
            r"(?:error: )?Failed (?P<method>\S+) for (?:invalid user |illegal user )?(?P<user>.*?) from (?P<ip>[0-9A-Za-z.:%_-]+)(?: port \d+)?(?: ssh\d?)?(?:: [A-Z0-9-]+ \S+)?(?: \[preauth\])?$",
            r#"^(?:\S+:\d+ )?(?P<client>\S+) \S+ \S+ \[[^\]]+\] "(?:[^"\\]|\\.)*" (?P<status>5\d\d) "#,
            r"^\s*(?P<user>\S+) : (?:\d+ incorrect password attempts?|user NOT in sudoers) ;",
            r"^authentication failed for \S+ from (?P<ip>[0-9A-Fa-f.:]+)(?: port \d+)?$",
            r"^Unable to negotiate with (?P<ip>[0-9A-Za-z.:%_-]+) port \d+: no matching \S+(?: \S+)* found\.(?: Their offer: .*)?$",
        ] {
            let hir = super::super::branches::ascii_hir(p).expect("parses");
            assert!(Walker::new(&hir).is_some(), "{p}");
        }
    }
}
