//! Which lines of a text log some rule could match, found without parsing them, over a whole
//! chunk of lines at once: when every rule's pattern (anchors dropped, see
//! `Engine::line_patterns`) begins with one of a few known literals, one multi-literal search
//! (aho-corasick, Teddy for a small set) for them, and only lines holding one are parsed (the
//! rules decide); otherwise one lazy DFA over every pattern. Used by the replay (`rules test`)
//! and by the file tail ([`LineFilter`]), which both parse only the lines it names.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use regex_syntax::hir::Hir;
use regex_syntax::hir::literal::{ExtractKind, Extractor};

/// A literal shorter than this would make too many lines worth parsing: the patterns are
/// searched with the DFA instead.
const MIN_LITERAL: usize = 4;

/// Finds the next line worth parsing in a chunk.
#[derive(Debug, Clone)]
pub struct LineFinder {
    how: How,
    /// Per pattern: it cannot match a newline, so a match of it lies within one line.
    single_line: Vec<bool>,
}

#[derive(Debug)]
enum How {
    /// Every match of every pattern begins with one of these literals, none of which holds
    /// a newline: a line without one cannot match, a line with one is parsed. Searched for
    /// the leftmost one (a copy shares the automaton).
    Literals(aho_corasick::AhoCorasick),
    /// One lazy DFA over every pattern, searched forward for the earliest position at which
    /// any match ends (no reverse scan for where it starts, and one pass whatever the number
    /// of rules).
    Dfa(Box<Dfa>),
}

#[derive(Debug)]
struct Dfa {
    dfa: regex_automata::hybrid::dfa::DFA,
    cache: regex_automata::hybrid::dfa::Cache,
}

/// A copy shares the compiled automaton; a DFA's copy starts with an empty cache of its own.
impl Clone for How {
    fn clone(&self) -> How {
        match self {
            How::Literals(ac) => How::Literals(ac.clone()),
            How::Dfa(d) => How::Dfa(Box::new(Dfa {
                cache: d.dfa.create_cache(),
                dfa: d.dfa.clone(),
            })),
        }
    }
}

impl LineFinder {
    /// None when the patterns cannot be built into one lazy DFA and do not all begin with
    /// literals (the chunks are then read line by line).
    pub(crate) fn new(patterns: &[String]) -> Option<LineFinder> {
        use regex_automata::{MatchKind, hybrid::dfa::DFA, util::prefilter::Prefilter};
        // A line's text holds no newline, so a class's `\n` (as in `\s`) can never be part
        // of a match in one line: without it, no match spans lines, and each pattern's match
        // lies within the line where it ends (checked below, per pattern).
        let hirs = patterns
            .iter()
            .map(|p| regex_syntax::parse(p).ok().map(|h| without_newline(&h)))
            .collect::<Option<Vec<_>>>()?;
        let single_line = hirs.iter().map(|h| !may_match_newline(h)).collect();
        if let Some(literals) = prefix_literals(&hirs)
            && let Ok(ac) = aho_corasick::AhoCorasick::builder()
                .match_kind(aho_corasick::MatchKind::LeftmostFirst)
                .build(&literals)
        {
            return Some(LineFinder {
                how: How::Literals(ac),
                single_line,
            });
        }
        let nfa = regex_automata::nfa::thompson::Compiler::new()
            // Empty matches are reported wherever they are, even inside a character: in
            // UTF-8 mode the search would step over one there and could miss an earlier
            // ending match of another pattern.
            .configure(regex_automata::nfa::thompson::Config::new().utf8(false))
            .build_many_from_hir(&hirs)
            .ok()?;
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    // No match state is reached before the first position where some match
                    // of some pattern ends (threads are only dropped after a match), so the
                    // first one seen is the earliest end of any match.
                    .match_kind(MatchKind::LeftmostFirst)
                    .prefilter(Prefilter::from_hirs_prefix(MatchKind::LeftmostFirst, &hirs))
                    // A Unicode word boundary stops the search at non-ASCII text (an error,
                    // below) instead of refusing the patterns.
                    .unicode_word_boundary(true)
                    .cache_capacity(32 << 20),
            )
            .build_from_nfa(nfa)
            .ok()?;
        let cache = dfa.create_cache();
        Some(LineFinder {
            how: How::Dfa(Box::new(Dfa { dfa, cache })),
            single_line,
        })
    }

    /// Whether lines are found by their literals: a line is then worth parsing when it
    /// holds one ([`LineFinder::holds_literal`]), whether or not a pattern matches it.
    pub(crate) fn by_literals(&self) -> bool {
        matches!(self.how, How::Literals(_))
    }

    /// With literals: whether `text` (one line's) holds one, so that it is worth parsing.
    /// `None` for a DFA (the patterns themselves tell).
    pub(crate) fn holds_literal(&self, text: &str) -> Option<bool> {
        match &self.how {
            How::Literals(ac) => Some(ac.is_match(text)),
            How::Dfa(_) => None,
        }
    }

    /// With the DFA: the end of the earliest-ending match of any pattern at or after `pos`,
    /// and whether that pattern's matches lie within one line. With literals: the end of the
    /// leftmost literal at or after `pos`, which lies in one line (every line before it holds
    /// none, so none of those can match). `Err` when the DFA cannot tell (it stopped at a
    /// byte it cannot handle).
    pub(crate) fn next_end(&mut self, hay: &[u8], pos: usize) -> Result<Option<(usize, bool)>, ()> {
        let d = match &mut self.how {
            How::Literals(ac) => {
                let input = aho_corasick::Input::new(hay).range(pos..);
                return Ok(ac.find(input).map(|m| (m.end(), true)));
            }
            How::Dfa(d) => d,
        };
        let input = regex_automata::Input::new(hay).range(pos..).earliest(true);
        d.dfa
            .try_search_fwd(&mut d.cache, &input)
            .map(|m| {
                m.map(|m| {
                    let one_line = self
                        .single_line
                        .get(m.pattern().as_usize())
                        .copied()
                        .unwrap_or(false);
                    (m.offset(), one_line)
                })
            })
            .map_err(|_| ())
    }
}

/// The literals every match of every pattern begins with, when there are such (each
/// pattern's prefixes, extracted from its syntax; a look-around counts as matching the
/// empty string, so they are never too few), none shorter than [`MIN_LITERAL`] and none
/// holding a newline.
fn prefix_literals(hirs: &[Hir]) -> Option<Vec<Vec<u8>>> {
    let mut all = Vec::new();
    for hir in hirs {
        // (Not shortened to the few bytes a fast search prefers: "pam_" would find every
        // cron line. The extractor itself still cuts an alternation past its limit of 250
        // literals, which only makes more lines worth parsing.)
        let seq = Extractor::new().kind(ExtractKind::Prefix).extract(hir);
        for lit in seq.literals()? {
            let bytes = lit.as_bytes();
            if bytes.len() < MIN_LITERAL || bytes.contains(&b'\n') {
                return None;
            }
            all.push(bytes.to_vec());
        }
    }
    // A literal another one begins is dropped: a line holding it holds the shorter one. In
    // sorted order, the literals a kept one begins follow it.
    all.sort();
    let mut kept: Vec<Vec<u8>> = Vec::with_capacity(all.len());
    for lit in all {
        if !kept.last().is_some_and(|k| lit.starts_with(k)) {
            kept.push(lit);
        }
    }
    Some(kept)
}
/// `hir` with `\n` taken out of every class (literals are kept as they are).
pub(crate) fn without_newline(hir: &regex_syntax::hir::Hir) -> regex_syntax::hir::Hir {
    use regex_syntax::hir::{
        Class, ClassBytes, ClassBytesRange, ClassUnicode, ClassUnicodeRange, Hir, HirKind,
    };
    crate::engine::map_leaves(hir, &|h: &Hir| match h.kind() {
        HirKind::Class(Class::Unicode(c)) => {
            let mut c = c.clone();
            c.difference(&ClassUnicode::new([ClassUnicodeRange::new('\n', '\n')]));
            Hir::class(Class::Unicode(c))
        }
        HirKind::Class(Class::Bytes(c)) => {
            let mut c = c.clone();
            c.difference(&ClassBytes::new([ClassBytesRange::new(b'\n', b'\n')]));
            Hir::class(Class::Bytes(c))
        }
        _ => h.clone(),
    })
}

/// Whether `hir` can match a `\n` (conservatively: any literal or class that holds one).
pub(crate) fn may_match_newline(hir: &regex_syntax::hir::Hir) -> bool {
    use regex_syntax::hir::{Class, HirKind};
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => false,
        HirKind::Literal(l) => l.0.contains(&b'\n'),
        HirKind::Class(Class::Unicode(c)) => c
            .ranges()
            .iter()
            .any(|r| r.start() <= '\n' && '\n' <= r.end()),
        HirKind::Class(Class::Bytes(c)) => c
            .ranges()
            .iter()
            .any(|r| r.start() <= b'\n' && b'\n' <= r.end()),
        HirKind::Repetition(r) => may_match_newline(&r.sub),
        HirKind::Capture(c) => may_match_newline(&c.sub),
        HirKind::Concat(v) | HirKind::Alternation(v) => v.iter().any(may_match_newline),
    }
}

/// The patterns the file tails skip lines by, shared: the daemon sets them from the rules
/// (and clears them while a reload is under way, and whenever a rule or a detector plugin
/// needs every line); each tail builds its own [`LineFinder`] when they change.
#[derive(Debug, Default)]
pub struct LineFilter {
    /// Moves on each [`LineFilter::set`]; 0 until the first.
    generation: AtomicU64,
    patterns: Mutex<Option<Arc<[String]>>>,
}

impl LineFilter {
    /// `None`: every line is parsed.
    pub fn set(&self, patterns: Option<Vec<String>>) {
        let mut p = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        *p = patterns.map(Arc::from);
        self.generation.fetch_add(1, Ordering::Release);
    }

    fn current(&self) -> (u64, Option<Arc<[String]>>) {
        let p = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        (self.generation.load(Ordering::Acquire), p.clone())
    }
}

/// One reader's side of a [`LineFilter`]: its own finder (a lazy DFA has a cache of its
/// own), rebuilt when the shared patterns change.
#[derive(Debug, Default)]
pub struct Skipper {
    seen: u64,
    finder: Option<LineFinder>,
}

impl Skipper {
    /// Starts on a chunk read from a file. `enabled` is the source's own say (its format
    /// makes the message a part of the line, and `skip_unmatched` is on). Only the chunk's
    /// complete lines are looked at.
    pub fn chunk<'a>(
        &'a mut self,
        shared: &'a LineFilter,
        chunk: &'a [u8],
        enabled: bool,
    ) -> ChunkSkip<'a> {
        if shared.generation.load(Ordering::Acquire) != self.seen {
            let (generation, patterns) = shared.current();
            self.seen = generation;
            self.finder = patterns.and_then(|p| LineFinder::new(&p));
            if generation > 0 && self.finder.is_none() {
                tracing::debug!("every line is parsed: the rules give no line filter");
            }
        }
        let lines = memchr::memrchr(b'\n', chunk).map_or(&chunk[..0], |i| &chunk[..=i]);
        ChunkSkip {
            shared,
            seen: self.seen,
            finder: self.finder.as_mut().filter(|_| enabled),
            lines,
            next_end: None,
            sampled: false,
        }
    }
}

/// Which complete lines of one chunk can go unparsed.
pub struct ChunkSkip<'a> {
    shared: &'a LineFilter,
    /// The patterns' generation the finder was built from.
    seen: u64,
    finder: Option<&'a mut LineFinder>,
    lines: &'a [u8],
    /// The last search: `Some(None)` when nothing was found before the chunk ends, else the
    /// end of what was found from where it started: the earliest-ending match (the DFA), or
    /// the leftmost literal (literals).
    next_end: Option<Option<usize>>,
    /// Whether a line with text was parsed already.
    sampled: bool,
}

impl ChunkSkip<'_> {
    /// Whether the line at `start..end` (`end` is its newline) can go unparsed: no pattern
    /// matches inside it. Lines are asked about in order. The first line with text of each
    /// chunk is parsed whatever it holds, so a file in the wrong format still shows as
    /// `unparsed` and the event clock still moves on.
    pub fn skip(&mut self, start: usize, end: usize) -> bool {
        if self.finder.is_some() && self.shared.generation.load(Ordering::Acquire) != self.seen {
            // The patterns changed (a reload began): nothing more is skipped on the old ones.
            self.finder = None;
        }
        let Some(finder) = self.finder.as_deref_mut() else {
            return false;
        };
        if end >= self.lines.len() {
            return false;
        }
        let line = &self.lines[start..end];
        // Lossy decoding puts U+FFFD in the message, which the byte patterns do not see.
        if !line.is_ascii() && std::str::from_utf8(line).is_err() {
            return false;
        }
        if !self.sampled {
            // A blank line is never an event.
            self.sampled = !line.trim_ascii().is_empty();
            return !self.sampled;
        }
        // With the DFA, every match starting at or after the last search's start ends at or
        // after its earliest end; with literals, no literal starts between the search's start
        // and the leftmost one's line. While what was found lies beyond `start`, either holds
        // for this line too (a line before the one found is skipped, that line is parsed).
        let stale = match self.next_end {
            None => true,
            Some(Some(e)) => e <= start,
            Some(None) => false,
        };
        if stale {
            match finder.next_end(self.lines, start) {
                Ok(found) => self.next_end = Some(found.map(|(e, _)| e)),
                Err(()) => {
                    // The DFA gave up (a Unicode word boundary beside non-ASCII text):
                    // the rest of the chunk is parsed.
                    self.finder = None;
                    return false;
                }
            }
        }
        // A match ending inside the line may lie wholly in it: parsed, and the rule decides.
        match self.next_end {
            Some(Some(e)) => e > end,
            _ => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(patterns: &[&str]) -> LineFilter {
        let f = LineFilter::default();
        f.set(Some(patterns.iter().map(|p| p.to_string()).collect()));
        f
    }

    /// Each complete line of `chunk` with whether it was skipped.
    fn skipped(skipper: &mut Skipper, shared: &LineFilter, chunk: &[u8]) -> Vec<(String, bool)> {
        let mut skip = skipper.chunk(shared, chunk, true);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(nl) = memchr::memchr(b'\n', &chunk[start..]) {
            let end = start + nl;
            let s = skip.skip(start, end);
            out.push((String::from_utf8_lossy(&chunk[start..end]).into_owned(), s));
            start = end + 1;
        }
        out
    }

    #[test]
    fn lines_no_pattern_matches_are_skipped_and_the_first_is_parsed() {
        let chunk = b"noise one\n\nFailed password for root\nnoise two\nthe disk full now\nmy disk fuller\nFailed  for\nFailed x for\npartial Failed x for";
        // Each pattern begins with a literal: lines holding one are parsed (the rules
        // decide), the others skipped. `\w?` leaves the first pattern without a known
        // beginning: the DFA then skips every line no pattern matches.
        for (patterns, by_literals) in [
            ([r"Failed \S+ for", r"\bdisk full\b"], true),
            ([r"\w?Failed \S+ for", r"\bdisk full\b"], false),
        ] {
            let shared = filter(&patterns);
            let mut skipper = Skipper::default();
            let got = skipped(&mut skipper, &shared, chunk);
            assert_eq!(
                skipper.finder.as_ref().map(LineFinder::by_literals),
                Some(by_literals)
            );
            let want = [
                ("noise one", false), // the first line with text is always parsed
                ("", true),
                ("Failed password for root", false),
                ("noise two", true),
                ("the disk full now", false),
                ("my disk fuller", !by_literals),
                ("Failed  for", !by_literals),
                ("Failed x for", false),
            ];
            let got: Vec<(&str, bool)> = got.iter().map(|(l, s)| (l.as_str(), *s)).collect();
            assert_eq!(got, want, "{patterns:?}");
        }
    }

    /// The literals a line is found by: each pattern's beginnings, without those another one
    /// begins; none when some pattern could begin otherwise, or with too short a literal.
    #[test]
    fn lines_are_found_by_literals_only_when_every_pattern_begins_with_one() {
        let literals = |patterns: &[&str]| {
            let hirs: Vec<Hir> = patterns
                .iter()
                .map(|p| without_newline(&regex_syntax::parse(p).unwrap()))
                .collect();
            prefix_literals(&hirs).map(|ls| {
                ls.into_iter()
                    .map(|l| String::from_utf8(l).unwrap())
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(
            literals(&[
                r"(?:error: )?Failed (?P<m>\S+) for",
                r"(?:Connection closed|Connection reset) by \S+",
                r"Connection closed by (?:authenticating|invalid) user",
                r"\bROOT LOGIN\b",
            ])
            .unwrap(),
            [
                "Connection closed by ",
                "Connection reset by ",
                "Failed ",
                "ROOT LOGIN",
                "error: Failed ",
            ]
        );
        // Case folded: each spelling.
        assert_eq!(literals(&["(?i)oom!"]).unwrap().len(), 8);
        for none in [
            &[r"Failed \S+", r"\d+ errors"][..],
            &[r"Fai"],
            &[r"(?:Failed|at)x"],
            &["a\nbcdef"],
            &[r".*Failed"],
        ] {
            assert_eq!(literals(none), None, "{none:?}");
        }
    }

    #[test]
    fn nothing_is_skipped_without_patterns_off_or_in_invalid_utf8() {
        let chunk = b"first\nnoise\nnoise\n";
        let mut skipper = Skipper::default();
        // Never set, then set to none.
        let shared = LineFilter::default();
        assert!(
            skipped(&mut skipper, &shared, chunk)
                .iter()
                .all(|(_, s)| !s)
        );
        assert!(!skipper.chunk(&shared, b"\n\n", true).skip(0, 0));
        shared.set(None);
        assert!(
            skipped(&mut skipper, &shared, chunk)
                .iter()
                .all(|(_, s)| !s)
        );
        // Set: skipped; the source turned it off: not.
        shared.set(Some(vec!["match".into()]));
        assert!(skipped(&mut skipper, &shared, chunk)[1].1);
        let mut skip = skipper.chunk(&shared, chunk, false);
        assert!(!skip.skip(0, 5) && !skip.skip(6, 11));
        // A line with invalid UTF-8 is parsed (lossy decoding could make it match where
        // its bytes do not); the others are not.
        let bad = b"first\nnoise \xff\nnoise\n";
        let got = skipped(&mut skipper, &shared, bad);
        assert_eq!(
            got.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            [false, false, true]
        );
        // A change in the middle of a chunk stops the skipping at once.
        let mut skip = skipper.chunk(&shared, chunk, true);
        assert!(!skip.skip(0, 5) && skip.skip(6, 11));
        shared.set(None);
        assert!(!skip.skip(12, 17));
        // A new pattern set reaches a reader that built its finder before.
        shared.set(Some(vec!["noise".into()]));
        assert!(
            skipped(&mut skipper, &shared, chunk)
                .iter()
                .all(|(_, s)| !s)
        );
    }

    #[test]
    fn no_patterns_skip_every_line_but_the_first_and_a_pri_pattern_keeps_pri_lines() {
        let mut skipper = Skipper::default();
        let got = skipped(&mut skipper, &filter(&[]), b"one\ntwo\nthree\n");
        assert_eq!(
            got.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            [false, true, true]
        );
        let mut skipper = Skipper::default();
        let got = skipped(
            &mut skipper,
            &filter(&["(?m)^<"]),
            b"one\n<11>two\nthree <\n<x\n",
        );
        assert_eq!(
            got.iter().map(|(_, s)| *s).collect::<Vec<_>>(),
            [false, false, true, false]
        );
    }

    #[test]
    fn a_match_spanning_lines_does_not_skip_the_lines_it_touches_wrongly() {
        // `a\nb` can only match across a newline: no line matches it on its own, and the
        // line where such a match ends is parsed (the rule decides), never a line with a match.
        let shared = filter(&["a\nb", "zz"]);
        let mut skipper = Skipper::default();
        let got = skipped(&mut skipper, &shared, b"x\na\nb\nzz\nq\n");
        assert_eq!(got[3], ("zz".into(), false));
        assert_eq!(got[4], ("q".into(), true));
    }

    proptest::proptest! {
        /// A line some pattern matches is never skipped; in ASCII text a line none matches
        /// is skipped, except the chunk's first line with text.
        #[test]
        fn a_line_a_pattern_matches_is_never_skipped(
            lines in proptest::collection::vec("[ab :é\r-]{0,12}", 1..30),
            picks in proptest::collection::vec(0usize..8, 1..4),
        ) {
            const PATTERNS: [&str; 8] = [
                "ab", r"a\s+b", r"\bb", "a.b", "(?i)AB", r"b[^a]a", "é:", r"(?:a|é)b+ ",
            ];
            let patterns: Vec<&str> = picks.iter().map(|i| PATTERNS[*i]).collect();
            let shared = filter(&patterns);
            let res: Vec<regex::Regex> = patterns.iter().map(|p| regex::Regex::new(p).unwrap()).collect();
            let chunk = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
            let mut skipper = Skipper::default();
            let got = skipped(&mut skipper, &shared, chunk.as_bytes());
            let mut sampled = false;
            for (line, skip) in got {
                let matches = res.iter().any(|r| r.is_match(&line));
                let first = !sampled && !line.trim_ascii().is_empty();
                sampled |= first;
                if matches {
                    proptest::prop_assert!(!skip, "matching line {:?} skipped", line);
                } else if chunk.is_ascii() {
                    // Beside non-ASCII text a Unicode `\b` makes the DFA give up, and the
                    // rest of the chunk is parsed.
                    proptest::prop_assert_eq!(skip, !first, "line {:?}", line);
                }
            }
        }

        /// Patterns that each begin with a literal of four bytes or more: a line some pattern
        /// matches is never skipped, and a line holding none of their first four bytes
        /// always is (but the chunk's first with text).
        #[test]
        fn a_line_found_by_literals_is_never_one_a_pattern_matches(
            lines in proptest::collection::vec("[abAB \n]{0,16}", 1..30),
            picks in proptest::collection::vec(0usize..8, 1..4),
        ) {
            const PATTERNS: [(&str, &[&str]); 8] = [
                ("abab", &["abab"]),
                (r"abba\s+b", &["abba"]),
                ("(?i)abba", &["abba"]),
                (r"(?:baab|abab) b", &["baab", "abab"]),
                (r"\bbaba\b", &["baba"]),
                (r"aaaa.b", &["aaaa"]),
                ("bbbb[^a]", &["bbbb"]),
                (r"(?:ab ab|ba ba)\S", &["ab a", "ba b"]),
            ];
            let patterns: Vec<&str> = picks.iter().map(|i| PATTERNS[*i].0).collect();
            let shared = filter(&patterns);
            let res: Vec<regex::Regex> = patterns.iter().map(|p| regex::Regex::new(p).unwrap()).collect();
            let chunk = lines.concat();
            let mut skipper = Skipper::default();
            let got = skipped(&mut skipper, &shared, chunk.as_bytes());
            proptest::prop_assert!(skipper.finder.as_ref().is_some_and(LineFinder::by_literals));
            let mut sampled = false;
            for (line, skip) in got {
                let first = !sampled && !line.trim_ascii().is_empty();
                sampled |= first;
                if res.iter().any(|r| r.is_match(&line)) {
                    proptest::prop_assert!(!skip, "matching line {:?} skipped", line);
                }
                let folded = line.to_ascii_lowercase();
                let begins = picks.iter().flat_map(|i| PATTERNS[*i].1).any(|b| folded.contains(b));
                if !begins && !first {
                    proptest::prop_assert!(skip, "line {:?} parsed", line);
                }
            }
        }
    }
}
