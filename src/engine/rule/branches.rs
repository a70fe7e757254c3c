//! A rule's list of patterns, each anchored at the start, taken one branch at a time.
//!
//! A rule with several patterns has one regex, `^(?:p1)|(?:p2)|…` (see
//! [`crate::de::Pattern`]); the shipped SSH rule's nine patterns make one automaton of about
//! 930 states. The bounded backtracker clears a bit per state and message byte before each
//! search and tries every branch from the state where they part, so most of its time went to
//! branches that cannot match. When every branch is anchored at the start, the leftmost-first
//! match is the first branch, in order, that matches at the start, with that branch's groups;
//! so each branch is run alone (about 100 states), and only when the message begins with one
//! of the branch's prefixes. The branch's automaton keeps the whole regex's group numbers.
//!
//! Built over bytes without Unicode classes and used only on ASCII messages, where `\S`,
//! `\w`, `\d`, `.` and case folding match exactly what their Unicode forms match.

use regex_automata::nfa::thompson::backtrack::{BoundedBacktracker, Cache};
use regex_automata::nfa::thompson::{Config, NFA};
use regex_automata::util::captures::Captures as Slots;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::literal::{ExtractKind, Extractor};
use regex_syntax::hir::{Hir, HirKind, Look};

use super::walk::Walker;

/// Branches beyond this many: the whole regex is run instead (each branch costs a try).
const MAX_BRANCHES: usize = 64;

/// What the branches' backtrackers may hold together: a bit per state and message byte, as
/// much as the whole regex's one backtracker holds at most (its default), so a rule with
/// many branches and a long message costs no more memory than before; a longer message
/// goes to the whole regex.
const VISITED_BITS: usize = 256 * 1024 * 8;

#[derive(Clone, Debug)]
struct Branch {
    /// Every match of the branch begins with one of these (`None`: no such list).
    prefixes: Option<Vec<Vec<u8>>>,
    /// The branch walked, tried before the backtracker (see `walk.rs`); `None` when the
    /// branch holds what the walker does not take.
    walker: Option<Walker>,
    backtracker: BoundedBacktracker,
    cache: Cache,
    slots: Slots,
}

#[derive(Clone, Debug)]
pub(super) struct Branches {
    branches: Vec<Branch>,
    /// The longest message the branches take (see [`VISITED_BITS`]).
    max_len: usize,
    /// The branch that matched last.
    matched: Option<usize>,
}

impl Branches {
    /// The branches of `pattern` when it is an alternation whose branches are all anchored
    /// at the start (`^` before the alternation, or at the head of each branch).
    pub(super) fn new(pattern: &str) -> Option<Branches> {
        let hir = ascii_hir(pattern)?;
        let alternatives: Vec<Hir> = match hir.kind() {
            HirKind::Concat(parts) if parts.len() == 2 && is_start(&parts[0]) => {
                match parts[1].kind() {
                    HirKind::Alternation(bs) => bs.clone(),
                    _ => return None,
                }
            }
            HirKind::Alternation(bs)
                if bs.iter().all(|b| match b.kind() {
                    HirKind::Concat(parts) => parts.first().is_some_and(is_start),
                    _ => false,
                }) =>
            {
                bs.clone()
            }
            _ => return None,
        };
        if alternatives.len() < 2 || alternatives.len() > MAX_BRANCHES {
            return None;
        }
        let mut branches = Vec::with_capacity(alternatives.len());
        for alt in &alternatives {
            let backtracker = byte_backtracker(alt)?;
            let prefixes = Extractor::new()
                .kind(ExtractKind::Prefix)
                .extract(alt)
                .literals()
                .filter(|ls| !ls.is_empty() && ls.iter().all(|l| !l.is_empty()))
                .map(|ls| ls.iter().map(|l| l.as_bytes().to_vec()).collect());
            branches.push(Branch {
                prefixes,
                walker: Walker::new(alt),
                cache: backtracker.create_cache(),
                slots: backtracker.create_captures(),
                backtracker,
            });
        }
        let states: usize = branches
            .iter()
            .map(|b| b.backtracker.get_nfa().states().len())
            .sum();
        let max_len = branches
            .iter()
            .map(|b| b.backtracker.max_haystack_len())
            .chain([(VISITED_BITS / states.max(1)).saturating_sub(1)])
            .min()?;
        Some(Branches {
            branches,
            max_len,
            matched: None,
        })
    }

    /// Runs the branches on `message`: `None` when this cannot answer (a message that is
    /// not ASCII or too long, or a backtracker that gave up); else whether one matched.
    pub(super) fn read(&mut self, message: &str) -> Option<bool> {
        self.matched = None;
        if message.len() > self.max_len || !message.is_ascii() {
            return None;
        }
        let bytes = message.as_bytes();
        let input = Input::new(message).anchored(Anchored::Yes);
        for (i, b) in self.branches.iter_mut().enumerate() {
            if let Some(prefixes) = &b.prefixes
                && !prefixes.iter().any(|p| bytes.starts_with(p))
            {
                continue;
            }
            let walked = b
                .walker
                .as_mut()
                .and_then(|w| w.read(bytes, 0, &mut b.slots));
            if walked.is_none() {
                b.backtracker
                    .try_search(&mut b.cache, &input, &mut b.slots)
                    .ok()?;
            }
            if b.slots.is_match() {
                self.matched = Some(i);
                return Some(true);
            }
        }
        Some(false)
    }

    /// The groups of the last match, in the whole regex's numbering.
    pub(super) fn slots(&self) -> Option<&Slots> {
        Some(&self.branches[self.matched?].slots)
    }

    /// Where group `i` (the whole regex's numbering) of the last match is.
    pub(super) fn get(&self, i: usize) -> Option<(usize, usize)> {
        let b = &self.branches[self.matched?];
        b.slots.get_group(i).map(|s| (s.start, s.end))
    }
}

/// `pattern` read without Unicode: classes over bytes.
pub(super) fn ascii_hir(pattern: &str) -> Option<Hir> {
    regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build()
        .parse(pattern)
        .ok()
}

/// A backtracker for `hir` over bytes.
pub(super) fn byte_backtracker(hir: &Hir) -> Option<BoundedBacktracker> {
    let nfa = NFA::compiler()
        .configure(Config::new().utf8(false))
        .build_from_hir(hir)
        .ok()?;
    BoundedBacktracker::new_from_nfa(nfa).ok()
}

fn is_start(h: &Hir) -> bool {
    matches!(h.kind(), HirKind::Look(Look::Start))
}

#[cfg(test)]
mod tests {
    use crate::engine::rule::captures::Captures;
    use proptest::prelude::*;

    /// The rule's regex as a config makes it: a list of patterns with repeated group names.
    fn rule_regex(patterns: &[&str]) -> regex::Regex {
        #[derive(Clone, serde::Deserialize)]
        struct T {
            regex: crate::de::Pattern,
        }
        let list = serde_json::json!({ "regex": patterns });
        serde_json::from_value::<T>(list).unwrap().regex.0
    }

    /// `Captures` (taking the branches where it can) gives what the regex gives: whether it
    /// matches, and every group.
    fn agree(re: &regex::Regex, c: &mut Captures, message: &str) -> Result<(), String> {
        let want = re.captures(message);
        for expected in [false, true] {
            let got = c.read(re, message, expected);
            if got != want.is_some() {
                return Err(format!("{} on {message:?}: matched {got}", re.as_str()));
            }
            if let Some(w) = &want {
                for i in 0..w.len() {
                    let span = w.get(i).map(|g| (g.start(), g.end()));
                    if c.get(i) != span {
                        return Err(format!(
                            "{} on {message:?}: group {i} {:?}, want {span:?}",
                            re.as_str(),
                            c.get(i)
                        ));
                    }
                }
                let mut spans = Vec::new();
                c.spans_into(w.len(), &mut spans);
                let want: Vec<_> = w.iter().map(|g| g.map(|g| (g.start(), g.end()))).collect();
                if spans != want {
                    return Err(format!("{} on {message:?}: spans {spans:?}", re.as_str()));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_first_branch_that_matches_wins_with_its_own_groups() {
        let re = rule_regex(&[
            r"^(?:error: )?Failed (?P<method>\S+) for (?:invalid user )?(?P<user>.*?) from (?P<ip>[0-9a-f.:]+)(?: port \d+)?$",
            r"^Invalid user (?P<user>.*?) from (?P<ip>[0-9a-f.:]+)$",
            r"^a(?P<x>b*)",
            r"^(?P<x>a)b",
            r"^(?i)ROOT (?P<ip>\S+)",
        ]);
        let mut c = Captures::new(&re);
        assert!(c.branches.is_some(), "every branch is anchored");
        for m in [
            "Failed password for invalid user a from b from 10.0.0.1 port 22",
            "error: Failed none for root from ::1",
            "Failed password for root from 10.0.0.1 port x",
            "Invalid user  from 1.2.3.4",
            "abb",
            "ab",
            "root 1.2.3.4",
            "RooT x",
            "",
            " Failed password for root from 10.0.0.1",
            "Invalid user été from 1.2.3.4",
        ] {
            agree(&re, &mut c, m).unwrap();
        }
        // The last message is not ASCII: the branches leave it to the whole regex.
        assert!(!c.in_branches);
        // Nor a message longer than their memory allows all of them together: no more than
        // the whole regex's one backtracker may hold.
        let b = c.branches.as_ref().unwrap();
        let states: usize = b
            .branches
            .iter()
            .map(|b| b.backtracker.get_nfa().states().len())
            .sum();
        assert!(states * (b.max_len + 1) <= super::VISITED_BITS);
        let fits = b.max_len - "Invalid user  from 10.0.0.1".len();
        for (user, taken) in [(fits, true), (fits + 1, false)] {
            let m = format!("Invalid user {} from 10.0.0.1", "u".repeat(user));
            agree(&re, &mut c, &m).unwrap();
            assert_eq!(c.in_branches, taken, "{} bytes", m.len());
        }
        assert!(c.read(&re, "abb", true) && c.in_branches);
        assert_eq!(
            (c.get(re.capture_names().position(|n| n == Some("x")).unwrap())),
            Some((1, 3))
        );
    }

    /// Where the walker gives up (see `walk.rs`), the backtracker answers, the same.
    #[test]
    fn where_the_walker_gives_up_the_answer_is_the_same() {
        let re = rule_regex(&[r"^(?:a+)+b", r"^(?P<c>c)"]);
        let mut c = Captures::new(&re);
        for m in ["a".repeat(64), "aab".to_owned(), "c".to_owned()] {
            agree(&re, &mut c, &m).unwrap();
        }
        let re = rule_regex(&[r"^(?P<a>.*?)(?P<b>\S+)x$"]);
        let mut c = Captures::new(&re);
        for m in [
            "a".repeat(2_000),
            "aaax".to_owned(),
            format!("{}x", "a".repeat(2_000)),
        ] {
            agree(&re, &mut c, &m).unwrap();
        }
    }

    #[test]
    fn branches_are_taken_only_when_every_one_is_anchored() {
        for (patterns, anchored) in [
            (vec![r"^a(b)", r"^c"], true),
            (vec![r"^a(b)", r"c"], false),
            (vec![r"(?m)^a", r"(?m)^b"], false),
            (vec![r"^a|b"], false),
            (vec![r"^abc"], false),
        ] {
            let re = rule_regex(&patterns);
            assert_eq!(
                Captures::new(&re).branches.is_some(),
                anchored,
                "{patterns:?}"
            );
        }
    }

    /// Small anchored patterns over a small alphabet, with groups, lazy and greedy
    /// repetitions and optional parts.
    fn pattern() -> impl Strategy<Value = String> {
        let atom = prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just(" ".to_owned()),
            Just(r"\S+".to_owned()),
            Just(".*?".to_owned()),
            Just("a*".to_owned()),
            Just("(?P<g>b+)".to_owned()),
            Just("(?P<h>.+?)".to_owned()),
            Just("(?:a |b )?".to_owned()),
            Just(r"\d".to_owned()),
        ];
        (proptest::collection::vec(atom, 1..5), any::<bool>())
            .prop_map(|(atoms, end)| format!("^{}{}", atoms.concat(), if end { "$" } else { "" }))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn branches_agree_with_the_regex(
            patterns in proptest::collection::vec(pattern(), 1..5),
            messages in proptest::collection::vec(prop_oneof!["[ab 1]{0,12}", "[ab 1é]{0,12}"], 1..8),
        ) {
            let refs: Vec<&str> = patterns.iter().map(String::as_str).collect();
            let re = rule_regex(&refs);
            // (Patterns that the parser merges, such as `^\d` twice, leave no alternation
            // and go to the whole regex; the answer must agree either way.)
            let mut c = Captures::new(&re);
            for m in &messages {
                if let Err(e) = agree(&re, &mut c, m) {
                    return Err(TestCaseError::fail(e));
                }
            }
        }
    }
}
