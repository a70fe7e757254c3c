//! A literal prefilter shared by every rule's regex: the literals one of which starts every
//! match of some pattern, searched for with one vectorised multi-literal search (Teddy) over
//! the message. A message where none occurs cannot match any pattern, and costs that one scan
//! instead of the regex set's. With many rules the set's own prefilter has too many literals
//! for Teddy (it expands classes such as `\d`) and falls back to a byte-at-a-time automaton;
//! here classes stop the literals, so they stay few and short.

use regex_automata::util::prefilter::Prefilter;
use regex_automata::{MatchKind, Span};
use regex_syntax::hir::literal::{ExtractKind, Extractor};

/// Teddy searches at most this many literals; more and there is no prefilter.
const MAX_LITERALS: usize = 128;

#[derive(Debug, Clone)]
pub(crate) struct Literals {
    pre: Prefilter,
}

impl Literals {
    /// The prefilter for `patterns`, or `None` when it would not be exact or not fast: a
    /// pattern that does not parse, one some match of which starts with no known literal
    /// (a class, a repetition that may be empty, case folding beyond a few variants), too
    /// many literals, or none that a fast searcher takes.
    pub(crate) fn new(patterns: &[&str]) -> Option<Literals> {
        let mut ex = Extractor::new();
        ex.kind(ExtractKind::Prefix)
            .limit_class(4)
            .limit_repeat(4)
            .limit_literal_len(16)
            .limit_total(MAX_LITERALS);
        let mut all = regex_syntax::hir::literal::Seq::empty();
        for p in patterns {
            let hir = regex_syntax::parse(p).ok()?;
            let mut seq = ex.extract(&hir);
            // Infinite (no literal starts every match): the union is infinite too.
            all.union(&mut seq);
        }
        // Keeps the set exact as prefixes: literals may be shortened, never dropped.
        all.optimize_for_prefix_by_preference();
        let lits = all.literals()?;
        if lits.is_empty() || lits.len() > MAX_LITERALS || lits.iter().any(|l| l.is_empty()) {
            return None;
        }
        let bytes: Vec<&[u8]> = lits.iter().map(|l| l.as_bytes()).collect();
        let pre = Prefilter::new(MatchKind::LeftmostFirst, &bytes)?;
        pre.is_fast().then_some(Literals { pre })
    }

    /// False only when no pattern can match `message`.
    pub(crate) fn may_match(&self, message: &str) -> bool {
        let hay = message.as_bytes();
        self.pre
            .find(
                hay,
                Span {
                    start: 0,
                    end: hay.len(),
                },
            )
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::Literals;

    #[test]
    fn a_message_without_any_literal_is_ruled_out() {
        let pats: Vec<String> = (0..100)
            .map(|i| format!(r"app{i}\[\d+\]: request failed with status (?P<code>5\d\d)"))
            .chain([r"Failed password for (?:invalid user )?(?P<user>\S+) from (?P<ip>\S+)".into()])
            .collect();
        let refs: Vec<&str> = pats.iter().map(String::as_str).collect();
        let lits = Literals::new(&refs).expect("a prefilter for 101 literal-led patterns");
        assert!(lits.may_match("sshd[1]: Failed password for root from 192.0.2.1 port 22"));
        assert!(lits.may_match("app57[42]: request failed with status 503"));
        assert!(!lits.may_match("CRON[2000]: pam_unix(cron:session): session opened"));
        assert!(!lits.may_match("app[42]: request failed with status 503"));
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
        for m in [
            "an ERROR here",
            "eRrOr",
            "connection refused",
            "read timeout",
            "XFAILED",
            "it Failed",
        ] {
            assert!(lits.may_match(m), "{m}");
        }
        assert!(!lits.may_match("all good"));
    }
}
