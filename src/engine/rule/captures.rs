//! A rule's regex run for its capture groups.
//!
//! `regex::Regex::captures_read` first finds where the match is with its lazy DFA (a forward
//! scan, then a reverse one for the start) and only then runs the bounded backtracker over
//! that span for the groups. On the short messages of log lines the backtracker alone, over
//! the whole message, gives the same answer (both report the leftmost-first match with the
//! same groups) in about half the time, once the message is known to match: the engine's
//! regex set or the regex's own `is_match` (which stops at the first match state) tells
//! that. Messages too long for the backtracker's bounded memory use the regex.
//!
//! A pattern that begins with a literal (`Failed password for …`) is split: the literal is
//! found with `memmem` and the backtracker runs only the rest, anchored right after each
//! occurrence in turn. The backtracker tries start positions from left to right and a match
//! can only start where the literal is, so this finds the same leftmost-first match and
//! groups, without stepping through the literal byte by byte (its dearest part). A pattern
//! anchored before its literal (`^authentication failed for …`) is split too, and its
//! literal is looked for at the start only.
//!
//! On an ASCII message, the rest of a split pattern, and a pattern anchored with `^`, are
//! first walked over their syntax (`walk.rs`, about 2.5 times faster on log patterns); the
//! backtracker answers where the walker does not take the pattern or gives up.
//!
//! A rule's list of patterns, each anchored with `^`, goes first to
//! [`Branches`](super::branches::Branches), which runs only the branch that can match.

use regex_automata::nfa::thompson::NFA;
use regex_automata::nfa::thompson::backtrack::{BoundedBacktracker, Cache};
use regex_automata::util::captures::Captures as Slots;
use regex_automata::{Anchored, Input};
use regex_syntax::hir::{Hir, HirKind, Look};

use super::walk::Walker;

/// Occurrences of a split pattern's literal tried before the regex takes over.
const SPLIT_TRIES: usize = 4;

/// A pattern split into its leading literal and the rest.
#[derive(Clone, Debug)]
struct Split {
    literal: memchr::memmem::Finder<'static>,
    /// Where the last match started (the literal's position).
    start: usize,
    /// The pattern is anchored at the start (`^literal…`): the literal is looked for there
    /// only.
    at_start: bool,
    /// The rest walked (see `walk.rs`), for ASCII messages, before the backtracker.
    walker: Option<Walker>,
}

#[derive(Clone, Debug)]
pub struct Captures {
    locs: regex::CaptureLocations,
    /// None when the pattern could not be built for the backtracker (the regex is used).
    /// With `split`, it runs the pattern after the literal.
    backtrack: Option<(BoundedBacktracker, Cache, Slots)>,
    split: Option<Split>,
    /// The pattern with ASCII classes (`\S`, `\d`, `\w` as bytes): on an ASCII message it
    /// matches exactly where the Unicode one does, with the same groups, and its automaton
    /// is a fraction of the size (`\S` alone is hundreds of UTF-8 states). Used for patterns
    /// without a split literal.
    ascii: Option<(BoundedBacktracker, Cache, Slots)>,
    /// The pattern walked, tried before `ascii` when the pattern is anchored at the start
    /// (an unanchored one would be walked from every position).
    ascii_walker: Option<Walker>,
    /// A list of patterns each anchored at the start, run one branch at a time on ASCII
    /// messages (see `branches.rs`).
    pub(super) branches: Option<super::branches::Branches>,
    /// Whether the last match is in `branches`.
    pub(super) in_branches: bool,
    /// Whether the last match is in `backtrack`'s slots rather than in `locs`.
    in_slots: bool,
    /// Whether it is in `ascii`'s slots.
    in_ascii: bool,
}

impl Captures {
    pub fn new(re: &regex::Regex) -> Captures {
        let (built, split) = match split_literal(re.as_str()) {
            Some((literal, rest, at_start)) => (
                NFA::compiler()
                    .build_from_hir(&rest)
                    .map_err(|_| ())
                    .and_then(|nfa| BoundedBacktracker::new_from_nfa(nfa).map_err(|_| ())),
                Some(Split {
                    walker: split_walker(re.as_str(), &literal, at_start),
                    literal: memchr::memmem::Finder::new(&literal).into_owned(),
                    start: 0,
                    at_start,
                }),
            ),
            None => (BoundedBacktracker::new(re.as_str()).map_err(|_| ()), None),
        };
        let backtrack = built.ok().map(|bt| {
            let cache = bt.create_cache();
            let slots = bt.create_captures();
            (bt, cache, slots)
        });
        let split = split.filter(|_| backtrack.is_some());
        let ascii = if split.is_none() && backtrack.is_some() {
            ascii_backtracker(re.as_str())
        } else {
            None
        };
        let ascii_walker = ascii.as_ref().and_then(|_| {
            let hir = super::branches::ascii_hir(re.as_str())?;
            let anchored = match hir.kind() {
                HirKind::Concat(parts) => parts
                    .first()
                    .is_some_and(|p| p.kind() == &HirKind::Look(Look::Start)),
                kind => kind == &HirKind::Look(Look::Start),
            };
            anchored.then(|| Walker::new(&hir)).flatten()
        });
        Captures {
            locs: re.capture_locations(),
            branches: super::branches::Branches::new(re.as_str()),
            in_branches: false,
            split,
            backtrack,
            ascii,
            ascii_walker,
            in_slots: false,
            in_ascii: false,
        }
    }

    /// Runs `re` (the regex this was made for) on `message`; `expected` says the caller
    /// knows or expects that it matches (only speed depends on it). True when it matched;
    /// the groups are then in [`Captures::get`].
    pub fn read(&mut self, re: &regex::Regex, message: &str, expected: bool) -> bool {
        self.in_ascii = false;
        self.in_branches = false;
        if let Some(branches) = &mut self.branches
            && let Some(matched) = branches.read(message)
        {
            self.in_branches = matched;
            return matched;
        }
        if let Some((bt, cache, slots)) = &mut self.ascii
            && message.len() <= bt.max_haystack_len()
            && message.is_ascii()
        {
            if let Some(w) = &mut self.ascii_walker
                && let Some(found) = w.read(message.as_bytes(), 0, slots)
            {
                self.in_slots = true;
                self.in_ascii = true;
                return found;
            }
            if !expected && !re.is_match(message) {
                return false;
            }
            if let Ok(()) = bt.try_captures(cache, message, slots) {
                self.in_slots = true;
                self.in_ascii = true;
                return slots.is_match();
            }
        }
        if let Some((bt, cache, slots)) = &mut self.backtrack
            && message.len() <= bt.max_haystack_len()
        {
            // A split pattern is not asked first: it runs anchored at no more than
            // `SPLIT_TRIES` occurrences of its literal, each try bounded by the backtracker's
            // memory, and a message without the literal costs one `memmem` scan.
            if !expected && self.split.is_none() && !re.is_match(message) {
                return false;
            }
            // `None`: left to the regex.
            let found = match &mut self.split {
                None => bt
                    .try_captures(cache, message, slots)
                    .ok()
                    .map(|()| slots.is_match()),
                Some(split) => {
                    let ascii = split.walker.is_some() && message.is_ascii();
                    let mut from = 0;
                    let mut tries = 0;
                    loop {
                        let found = if split.at_start {
                            (from == 0 && message.as_bytes().starts_with(split.literal.needle()))
                                .then_some(0)
                        } else {
                            split.literal.find(&message.as_bytes()[from..])
                        };
                        let Some(at) = found else {
                            slots.set_pattern(None);
                            break Some(false);
                        };
                        // Each try starts over (and clears the backtracker's memory of where
                        // it has been): a message with the literal at every turn and no match
                        // after it would cost time quadratic in its length, so after a few
                        // tries the regex takes over.
                        tries += 1;
                        if tries > SPLIT_TRIES {
                            break None;
                        }
                        let start = from + at;
                        let rest = start + split.literal.needle().len();
                        let walked = match &mut split.walker {
                            Some(w) if ascii => w.read(message.as_bytes(), rest, slots),
                            _ => None,
                        };
                        let searched = match walked {
                            Some(_) => Ok(()),
                            None => {
                                let input = Input::new(message)
                                    .span(rest..message.len())
                                    .anchored(Anchored::Yes);
                                bt.try_search(cache, &input, slots)
                            }
                        };
                        match searched {
                            Ok(()) if slots.is_match() => {
                                split.start = start;
                                break Some(true);
                            }
                            Ok(()) => from = start + 1,
                            Err(_) => break None,
                        }
                    }
                }
            };
            if let Some(matched) = found {
                self.in_slots = true;
                return matched;
            }
        }
        self.in_slots = false;
        re.captures_read(&mut self.locs, message).is_some()
    }

    /// Where each of the `len` groups of the last match is, in order, appended to `into`: as
    /// [`Captures::get`] for `0..len`, in one pass over the match's slots.
    pub fn spans_into(&self, len: usize, into: &mut Vec<Option<(usize, usize)>>) {
        let start = into.len();
        let slots = if self.in_branches {
            self.branches.as_ref().and_then(|b| b.slots())
        } else if self.in_ascii {
            self.ascii.as_ref().map(|(_, _, s)| s)
        } else if self.in_slots {
            self.backtrack.as_ref().map(|(_, _, s)| s)
        } else {
            None
        };
        match slots {
            Some(slots) => into.extend(slots.iter().map(|s| s.map(|s| (s.start, s.end)))),
            None => into.extend((0..len).map(|i| self.locs.get(i))),
        }
        into.resize(start + len, None);
        // The whole match begins at the split literal.
        if !self.in_branches
            && !self.in_ascii
            && self.in_slots
            && let Some(split) = &self.split
            && let Some(Some((_, end))) = into.get(start).copied()
        {
            into[start] = Some((split.start, end));
        }
    }

    /// Where group `i` of the last match is, when it took part.
    pub fn get(&self, i: usize) -> Option<(usize, usize)> {
        if self.in_branches {
            self.branches.as_ref()?.get(i)
        } else if self.in_ascii {
            let (_, _, slots) = self.ascii.as_ref()?;
            slots.get_group(i).map(|s| (s.start, s.end))
        } else if self.in_slots {
            let (_, _, slots) = self.backtrack.as_ref()?;
            let span = slots.get_group(i).map(|s| (s.start, s.end));
            match (&self.split, i) {
                // The whole match begins at the literal.
                (Some(split), 0) => span.map(|(_, end)| (split.start, end)),
                _ => span,
            }
        } else {
            self.locs.get(i)
        }
    }
}

/// A backtracker for `pattern` read without Unicode (classes over bytes), when it can be.
fn ascii_backtracker(pattern: &str) -> Option<(BoundedBacktracker, Cache, Slots)> {
    let bt = super::branches::byte_backtracker(&super::branches::ascii_hir(pattern)?)?;
    let cache = bt.create_cache();
    let slots = bt.create_captures();
    Some((bt, cache, slots))
}

/// The walker of the rest of `pattern` after its leading `literal`, read without Unicode
/// (for ASCII messages): only when that reading splits at the same literal, the same way.
fn split_walker(pattern: &str, literal: &[u8], at_start: bool) -> Option<Walker> {
    let (l, rest, a) = split_hir(super::branches::ascii_hir(pattern)?)?;
    (l == literal && a == at_start)
        .then(|| Walker::new(&rest))
        .flatten()
}

/// `pattern` as its leading literal (case-sensitive, outside any group) and the rest, when it
/// has one, and whether the literal must start the message (`^literal…`); parsed with the
/// regex crate's default flags.
fn split_literal(pattern: &str) -> Option<(Vec<u8>, Hir, bool)> {
    split_hir(regex_syntax::parse(pattern).ok()?)
}

/// `hir` as its leading literal (outside any group) and the rest, and whether it is anchored
/// before the literal.
fn split_hir(hir: Hir) -> Option<(Vec<u8>, Hir, bool)> {
    let HirKind::Concat(parts) = hir.kind() else {
        return None;
    };
    let at_start = matches!(parts.first()?.kind(), HirKind::Look(Look::Start));
    let parts = &parts[usize::from(at_start)..];
    let HirKind::Literal(literal) = parts.first()?.kind() else {
        return None;
    };
    Some((
        literal.0.to_vec(),
        Hir::concat(parts[1..].to_vec()),
        at_start,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backtracker_and_the_regex_agree() {
        let patterns = [
            r"Failed password for (?:invalid user )?(?P<user>\S+) from (?P<ip>[0-9A-Fa-f.:]+)",
            r"(?P<a>a*)(?P<b>b)?",
            r"(?i)ÉTÉ (\w+)|(x)",
            r"\b(\d+)\b ms",
            // Split at a literal: several occurrences, the first without a match; a word
            // boundary right after the literal; a literal and nothing else to capture.
            r"ab(c+)d",
            r"x\b(y|\s)",
            r"ab(?:c)?",
            r"(?i)ab(c)",
            // Anchored before the literal: only a literal at the start counts.
            r"^ab(c+)d",
            r"^x\b(y|\s)",
            // Anchored without a literal: walked on ASCII messages.
            r"^(?:\S+:\d+ )?(?P<a>\S+) (?P<b>a|x)?",
            r"^\s*(\S+) (?:abc|ab)",
        ];
        let messages = [
            "abxabcabccd ab",
            "xy x y x",
            "ab",
            "Failed password for invalid user admin from 10.0.0.1 port 22",
            "Failed password for root from ::1 port 22",
            "xx aaab été chaud 12 ms",
            "",
            "été",
            "no 123x ms 45 ms",
            "abccd ab",
            "x y",
        ];
        for p in patterns {
            let re = regex::Regex::new(p).unwrap();
            let mut c = Captures::new(&re);
            assert!(c.backtrack.is_some(), "{p}");
            let literal_first = ["Failed", "ab(", "x\\b", "ab(?:", "^ab(", "^x\\b"]
                .iter()
                .any(|l| p.starts_with(l));
            // Walked: after a literal (without a word boundary), or anchored.
            let walked =
                c.split.as_ref().is_some_and(|s| s.walker.is_some()) || c.ascii_walker.is_some();
            assert_eq!(
                walked,
                !p.contains(r"\b") && (literal_first || p.starts_with('^')),
                "{p}"
            );
            assert_eq!(c.split.is_some(), literal_first, "{p}");
            assert_eq!(c.ascii.is_some(), !literal_first, "{p}");
            for m in messages {
                let want = re.captures(m);
                for expected in [false, true] {
                    assert_eq!(c.read(&re, m, expected), want.is_some(), "{p} on {m:?}");
                    if let Some(w) = &want {
                        for i in 0..w.len() {
                            let span = w.get(i).map(|g| (g.start(), g.end()));
                            assert_eq!(c.get(i), span, "{p} on {m:?} group {i}");
                        }
                        let mut spans = vec![Some((7, 7))];
                        c.spans_into(w.len(), &mut spans);
                        let all: Vec<_> =
                            w.iter().map(|g| g.map(|g| (g.start(), g.end()))).collect();
                        assert_eq!(spans[1..], all, "{p} on {m:?}");
                    }
                }
            }
        }
        // A literal at every turn and no match after it: the regex takes over after a few
        // tries, with the same answer.
        let re = regex::Regex::new(r"x(\d+)").unwrap();
        let mut c = Captures::new(&re);
        assert!(c.split.is_some());
        let many = format!("{}x12", "x".repeat(10_000));
        assert!(c.read(&re, &many, true));
        assert!(!c.in_slots);
        assert_eq!(c.get(1), Some((10_001, 10_003)));
        assert!(c.read(&re, "ab x7", true));
        assert!(c.in_slots);
        assert_eq!((c.get(0), c.get(1)), (Some((3, 5)), Some((4, 5))));
        let mut spans = Vec::new();
        c.spans_into(2, &mut spans);
        assert_eq!(spans, [Some((3, 5)), Some((4, 5))]);
        // A message longer than the backtracker takes goes to the regex.
        let re = regex::Regex::new(r"(x+)y").unwrap();
        let mut c = Captures::new(&re);
        let long = format!("{}y", "x".repeat(1 << 20));
        assert!(c.read(&re, &long, false));
        assert!(!c.in_slots);
        assert_eq!(c.get(1), Some((0, 1 << 20)));
    }
}
