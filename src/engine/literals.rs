//! A literal prefilter shared by every rule's regex: the literals one of which starts every
//! match of some pattern, searched for with one vectorised multi-literal search (Teddy) over
//! the message. A message where none occurs cannot match any pattern, and costs that one scan
//! instead of the regex set's. With many rules the set's own prefilter has too many literals
//! for Teddy (it expands classes such as `\d`) and falls back to a byte-at-a-time automaton;
//! here classes stop the literals, so they stay few and short.
//!
//! Each pattern's own literals are also kept, in one Aho-Corasick automaton that reports every
//! occurrence: a message where a literal occurs can only match the patterns that literal
//! starts, so the engine asks only those patterns' rules, without the set's pass over the
//! message for all patterns at once.

use std::collections::BTreeMap;

use aho_corasick::automaton::OverlappingState;
use aho_corasick::{AhoCorasick, Anchored, StartKind};
use regex_automata::util::prefilter::Prefilter;
use regex_automata::{MatchKind, Span};
use regex_syntax::hir::Look;
use regex_syntax::hir::literal::{ExtractKind, Extractor, Seq};

/// Teddy searches at most this many literals; more and there is no prefilter.
const MAX_LITERALS: usize = 128;

/// Each automaton of patterns' own literals holds at most this many (a few per pattern).
const MAX_OWNED_LITERALS: usize = 4096;

/// Patterns' own literals in one automaton; its pattern ids index `owners`.
#[derive(Debug, Clone)]
struct Owned {
    ac: AhoCorasick,
    /// Per literal, the patterns one of whose matches it may start, ascending.
    owners: Vec<Vec<usize>>,
}

impl Owned {
    fn new(literals: BTreeMap<Vec<u8>, Vec<usize>>, start: StartKind) -> Option<Owned> {
        if literals.len() > MAX_OWNED_LITERALS {
            return None;
        }
        let ac = AhoCorasick::builder()
            .start_kind(start)
            .build(literals.keys())
            .ok()?;
        Some(Owned {
            ac,
            owners: literals.into_values().collect(),
        })
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Literals {
    /// Patterns that may match anywhere in a message: Teddy over all their literals (maybe
    /// shortened), then each one's own literals from where Teddy found the first.
    anywhere: Option<(Prefilter, Owned)>,
    /// Patterns anchored at the start (`^`, `\A`): their literals, looked for there only. A
    /// message that does not start with one costs a few bytes, however long it is.
    start: Option<Owned>,
    /// How many patterns there are: candidates are deduplicated whenever the list grows past
    /// twice that, so a message holding one literal thousands of times costs no more memory
    /// than one holding every pattern's.
    patterns: usize,
}

fn extractor() -> Extractor {
    let mut ex = Extractor::new();
    ex.kind(ExtractKind::Prefix)
        .limit_class(4)
        .limit_repeat(4)
        .limit_literal_len(16)
        .limit_total(MAX_LITERALS);
    ex
}

impl Literals {
    /// The prefilter for `patterns`, or `None` when it would not be exact or not fast: a
    /// pattern that does not parse, one some match of which starts with no known literal
    /// (a class, a repetition that may be empty, case folding beyond a few variants), too
    /// many literals, or none that a fast searcher takes.
    pub(crate) fn new(patterns: &[&str]) -> Option<Literals> {
        let ex = extractor();
        let mut all = Seq::empty();
        let mut anywhere: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
        let mut start: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
        for (i, p) in patterns.iter().enumerate() {
            let hir = regex_syntax::parse(p).ok()?;
            let anchored = hir.properties().look_set_prefix().contains(Look::Start);
            let mut seq = ex.extract(&hir);
            // Infinite: some match starts with no known literal.
            if !seq.is_finite() {
                return None;
            }
            if !anchored {
                all.union(&mut seq.clone());
            }
            // Keeps the set exact as prefixes: literals may be shortened, never dropped.
            seq.optimize_for_prefix_by_preference();
            let into = if anchored { &mut start } else { &mut anywhere };
            for lit in seq.literals()? {
                if lit.is_empty() {
                    return None;
                }
                into.entry(lit.as_bytes().to_vec()).or_default().push(i);
            }
        }
        let anywhere = if anywhere.is_empty() {
            None
        } else {
            all.optimize_for_prefix_by_preference();
            let lits = all.literals()?;
            if lits.is_empty() || lits.len() > MAX_LITERALS || lits.iter().any(|l| l.is_empty()) {
                return None;
            }
            let bytes: Vec<&[u8]> = lits.iter().map(|l| l.as_bytes()).collect();
            let pre = Prefilter::new(MatchKind::LeftmostFirst, &bytes)?;
            if !pre.is_fast() {
                return None;
            }
            Some((pre, Owned::new(anywhere, StartKind::Unanchored)?))
        };
        let start = if start.is_empty() {
            None
        } else {
            Some(Owned::new(start, StartKind::Anchored)?)
        };
        Some(Literals {
            anywhere,
            start,
            patterns: patterns.len(),
        })
    }

    /// The patterns that may match `message` (a literal of theirs occurs in it, where it
    /// can start a match), ascending and once each, into `out` (cleared first). False, with
    /// `out` empty, when there are none: then no pattern matches.
    pub(crate) fn candidates(&self, message: &str, out: &mut Vec<usize>) -> bool {
        out.clear();
        let hay = message.as_bytes();
        if let Some(start) = &self.start {
            // Every literal that starts the message (an anchored search ends where no
            // literal can go on). The search only errs for a start kind the automaton was
            // not built for, which cannot happen here; if it did, every anchored pattern
            // would be a candidate, so no match is ever lost.
            let input = aho_corasick::Input::new(hay).anchored(Anchored::Yes);
            let mut state = OverlappingState::start();
            loop {
                if start
                    .ac
                    .try_find_overlapping(input.clone(), &mut state)
                    .is_err()
                {
                    out.extend(start.owners.iter().flatten());
                    break;
                }
                let Some(m) = state.get_match() else { break };
                out.extend_from_slice(&start.owners[m.pattern().as_usize()]);
            }
        }
        if let Some((pre, each)) = &self.anywhere {
            // Every pattern's literal begins with one of the prefilter's (those are the same
            // literals, at most shortened): none occurs before the first of those.
            let span = Span {
                start: 0,
                end: hay.len(),
            };
            if let Some(first) = pre.find(hay, span) {
                let input = aho_corasick::Input::new(hay).range(first.start..);
                for m in each.ac.find_overlapping_iter(input) {
                    out.extend_from_slice(&each.owners[m.pattern().as_usize()]);
                    if out.len() > 2 * self.patterns {
                        out.sort_unstable();
                        out.dedup();
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        !out.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Literals;

    fn may_match(l: &Literals, m: &str) -> bool {
        l.candidates(m, &mut Vec::new())
    }

    #[test]
    fn a_message_without_any_literal_is_ruled_out() {
        let pats: Vec<String> = (0..100)
            .map(|i| format!(r"app{i}\[\d+\]: request failed with status (?P<code>5\d\d)"))
            .chain([r"Failed password for (?:invalid user )?(?P<user>\S+) from (?P<ip>\S+)".into()])
            .collect();
        let refs: Vec<&str> = pats.iter().map(String::as_str).collect();
        let lits = Literals::new(&refs).expect("a prefilter for 101 literal-led patterns");
        let mut out = Vec::new();
        assert!(lits.candidates(
            "sshd[1]: Failed password for root from 192.0.2.1 port 22",
            &mut out
        ));
        assert_eq!(out, [100]);
        assert!(lits.candidates("app57[42]: request failed with status 503", &mut out));
        assert_eq!(out, [57]);
        // Every pattern whose literal occurs, once each, ascending.
        assert!(lits.candidates("app7[1] app57[1] app7[2] Failed password for", &mut out));
        assert_eq!(out, [7, 57, 100]);
        assert!(!lits.candidates(
            "CRON[2000]: pam_unix(cron:session): session opened",
            &mut out
        ));
        assert!(out.is_empty());
        assert!(!may_match(&lits, "app[42]: request failed with status 503"));
    }

    #[test]
    fn a_pattern_without_a_leading_literal_means_no_prefilter() {
        assert!(Literals::new(&["Failed password", r"\d+ errors"]).is_none());
        assert!(Literals::new(&["Failed password", ".*failed"]).is_none());
        assert!(Literals::new(&["Failed password", "[(a"]).is_none());
    }

    #[test]
    fn case_folding_and_alternatives_stay_exact() {
        let lits =
            Literals::new(&["(?i)error", "timeout|refused", "(?i)x?failed"]).expect("few variants");
        for (m, p) in [
            ("an ERROR here", 0),
            ("eRrOr", 0),
            ("connection refused", 1),
            ("read timeout", 1),
            ("XFAILED", 2),
            ("it Failed", 2),
        ] {
            let mut out = Vec::new();
            assert!(lits.candidates(m, &mut out), "{m}");
            assert!(out.contains(&p), "{m}: {out:?}");
        }
        assert!(!may_match(&lits, "all good"));
    }

    /// A literal shared by two patterns, and one pattern's literal inside another's, name
    /// both patterns; the literal found first in the message does not hide a later one.
    #[test]
    fn shared_and_nested_literals_name_every_pattern() {
        let lits = Literals::new(&["error: (?P<a>.*)", "error", "fatal error", "late"])
            .expect("literal-led patterns");
        let mut out = Vec::new();
        assert!(lits.candidates("a fatal error: x", &mut out));
        assert_eq!(out, [0, 1, 2]);
        assert!(lits.candidates("late, then error", &mut out));
        assert_eq!(out, [1, 3]);
    }

    /// A pattern anchored at the start is named only when its literal starts the message;
    /// the same literal elsewhere names only the unanchored patterns.
    #[test]
    fn anchored_patterns_are_named_only_by_a_literal_at_the_start() {
        let lits = Literals::new(&[
            "^Failed (?P<m>\\S+) for",
            "^(?:Invalid|Illegal) user",
            "error: Failed",
            "\\AFail",
        ])
        .expect("literal-led patterns");
        let mut out = Vec::new();
        assert!(lits.candidates("Failed password for root", &mut out));
        assert_eq!(out, [0, 3]);
        assert!(lits.candidates("error: Failed password for root", &mut out));
        assert_eq!(out, [2]);
        assert!(lits.candidates("Illegal user x", &mut out));
        assert_eq!(out, [1]);
        assert!(!lits.candidates("an Invalid user, Failed twice", &mut out));
        assert!(!lits.candidates("", &mut out));
        // Only anchored patterns: there is no search past the start at all.
        let only = Literals::new(&["^a+b", "^(?i)ok"]).expect("anchored literal-led patterns");
        assert!(only.candidates("OK then", &mut out));
        assert_eq!(out, [1]);
        assert!(!only.candidates("then ok", &mut out));
    }

    /// A long message made of one literal over and over names its pattern once, and the
    /// list never holds more than a few entries per pattern on the way.
    #[test]
    fn a_literal_repeated_thousands_of_times_names_its_pattern_once() {
        let lits = Literals::new(&["error: (?P<e>.+)", "fatal"]).expect("literal-led patterns");
        let mut out = Vec::new();
        let line = "error: ".repeat(10_000);
        assert!(lits.candidates(&line, &mut out));
        assert_eq!(out, [0]);
        assert!(out.capacity() < 64, "capacity {}", out.capacity());
    }

    use proptest::prelude::*;

    /// Small patterns over a small alphabet: literals, classes, alternations, optional and
    /// repeated groups, some anchored at the start, some case-insensitive.
    fn pattern() -> impl Strategy<Value = String> {
        let leaf = prop_oneof![
            4 => "[ab]{1,3}".prop_map(|l| regex::escape(&l)),
            2 => "[ab: x]{1,4}".prop_map(|l| regex::escape(&l)),
            1 => Just("[ab]".to_owned()),
            1 => Just(r"\d".to_owned()),
            1 => Just(".".to_owned()),
        ];
        let body = leaf.prop_recursive(3, 12, 3, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 1..4).prop_map(|v| v.concat()),
                (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("(?:{a}|{b})")),
                inner.clone().prop_map(|a| format!("(?:{a})?")),
                inner.prop_map(|a| format!("(?:{a})+")),
            ]
        });
        (0..5u8, body).prop_map(|(flags, b)| match flags {
            0 | 1 => format!("^{b}"),
            2 => format!("(?i){b}"),
            _ => b,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

        /// Every pattern that matches a message is among the candidates the literals name:
        /// ruling out a rule never loses a match.
        #[test]
        fn every_pattern_that_matches_is_a_candidate(
            patterns in proptest::collection::vec(pattern(), 1..6),
            messages in proptest::collection::vec("[ab]{0,4}[ab: x1A]{0,20}", 1..12),
        ) {
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let Some(lits) = Literals::new(&refs) else {
                return Ok(());
            };
            let res: Vec<regex::Regex> = patterns
                .iter()
                .map(|p| regex::Regex::new(p).expect("generated patterns compile"))
                .collect();
            let mut out = Vec::new();
            for m in &messages {
                lits.candidates(m, &mut out);
                for (i, re) in res.iter().enumerate() {
                    if re.is_match(m) {
                        prop_assert!(out.contains(&i), "{:?} matches {:?} but candidates are {:?}", patterns[i], m, out);
                    }
                }
            }
        }
    }
}
