//! A rule's regex run for its capture groups.
//!
//! `regex::Regex::captures_read` first finds where the match is with its lazy DFA (a forward
//! scan, then a reverse one for the start) and only then runs the bounded backtracker over
//! that span for the groups. On the short messages of log lines the backtracker alone, over
//! the whole message, gives the same answer (both report the leftmost-first match with the
//! same groups) in about half the time, once the message is known to match: the engine's
//! regex set or the regex's own `is_match` (which stops at the first match state) tells
//! that. Messages too long for the backtracker's bounded memory use the regex.

use regex_automata::nfa::thompson::backtrack::{BoundedBacktracker, Cache};
use regex_automata::util::captures::Captures as Slots;

#[derive(Debug)]
pub struct Captures {
    locs: regex::CaptureLocations,
    /// None when the pattern could not be built for the backtracker (the regex is used).
    backtrack: Option<(BoundedBacktracker, Cache, Slots)>,
    /// Whether the last match is in `backtrack`'s slots rather than in `locs`.
    in_slots: bool,
}

impl Captures {
    pub fn new(re: &regex::Regex) -> Captures {
        let backtrack = BoundedBacktracker::new(re.as_str()).ok().map(|bt| {
            let cache = bt.create_cache();
            let slots = bt.create_captures();
            (bt, cache, slots)
        });
        Captures {
            locs: re.capture_locations(),
            backtrack,
            in_slots: false,
        }
    }

    /// Runs `re` (the regex this was made for) on `message`; `expected` says the caller
    /// knows or expects that it matches (only speed depends on it). True when it matched;
    /// the groups are then in [`Captures::get`].
    pub fn read(&mut self, re: &regex::Regex, message: &str, expected: bool) -> bool {
        if let Some((bt, cache, slots)) = &mut self.backtrack
            && message.len() <= bt.max_haystack_len()
        {
            if !expected && !re.is_match(message) {
                return false;
            }
            if bt.try_captures(cache, message, slots).is_ok() {
                self.in_slots = true;
                return slots.is_match();
            }
        }
        self.in_slots = false;
        re.captures_read(&mut self.locs, message).is_some()
    }

    /// Where group `i` of the last match is, when it took part.
    pub fn get(&self, i: usize) -> Option<(usize, usize)> {
        if self.in_slots {
            let (_, _, slots) = self.backtrack.as_ref()?;
            slots.get_group(i).map(|s| (s.start, s.end))
        } else {
            self.locs.get(i)
        }
    }
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
        ];
        let messages = [
            "Failed password for invalid user admin from 10.0.0.1 port 22",
            "Failed password for root from ::1 port 22",
            "xx aaab été chaud 12 ms",
            "",
            "été",
            "no 123x ms 45 ms",
        ];
        for p in patterns {
            let re = regex::Regex::new(p).unwrap();
            let mut c = Captures::new(&re);
            assert!(c.backtrack.is_some(), "{p}");
            for m in messages {
                let want = re.captures(m);
                for expected in [false, true] {
                    assert_eq!(c.read(&re, m, expected), want.is_some(), "{p} on {m:?}");
                    if let Some(w) = &want {
                        for i in 0..w.len() {
                            let span = w.get(i).map(|g| (g.start(), g.end()));
                            assert_eq!(c.get(i), span, "{p} on {m:?} group {i}");
                        }
                    }
                }
            }
        }
        // A message longer than the backtracker takes goes to the regex.
        let re = regex::Regex::new(r"(x+)y").unwrap();
        let mut c = Captures::new(&re);
        let long = format!("{}y", "x".repeat(1 << 20));
        assert!(c.read(&re, &long, false));
        assert!(!c.in_slots);
        assert_eq!(c.get(1), Some((0, 1 << 20)));
    }
}
