//! Which rules' regexes can match a message, found once per event for all rules: from the
//! literals of every pattern when each pattern starts with known literals; when some do and
//! others do not, from those literals and a set of the others; when none does, from one pass
//! of the `RegexSet` of them all.

use crate::engine::literals::Literals;

/// How the patterns that may match a message are found, for every rule's regex at once: the
/// literals that start them, when every pattern starts with known literals (no regex runs
/// for the whole set then, and the set is never built); the literals of some and a set of
/// the others; or one `RegexSet` of them all when none has literals.
#[derive(Debug, Clone)]
pub struct SharedSet(Way);

#[derive(Debug, Clone)]
enum Way {
    Literals(Literals),
    Set(regex::RegexSet),
    /// The literals of the patterns that start with some (`literal_ids`: their indexes
    /// among all patterns, ascending) and a set of the others (`set_ids`, likewise).
    Both {
        literals: Literals,
        literal_ids: Vec<usize>,
        set: regex::RegexSet,
        set_ids: Vec<usize>,
    },
}

/// The set of `patterns`, its lazy DFA given room for its states (a large set thrashes its
/// cache otherwise and falls back to slower engines; 32 MiB is allocated only as states are
/// created). Each pattern compiled alone already, so the set compiles too.
fn set_of(patterns: &[&str]) -> Option<regex::RegexSet> {
    regex::RegexSetBuilder::new(patterns)
        .dfa_size_limit(32 << 20)
        .build()
        .ok()
}

impl SharedSet {
    /// For `patterns` (at least two, none of which matches the empty string); `None` if
    /// neither way can be built, and every rule then runs its own regex.
    pub(crate) fn new(patterns: &[&str]) -> Option<SharedSet> {
        if let Some(l) = Literals::new(patterns) {
            return Some(SharedSet(Way::Literals(l)));
        }
        // The patterns that have literals of their own, by the literals (a scan that costs
        // about the same for one literal or a hundred); the rest by a set, which is smaller
        // and quicker without them.
        let (literal_ids, set_ids): (Vec<usize>, Vec<usize>) =
            (0..patterns.len()).partition(|&i| Literals::new(&patterns[i..=i]).is_some());
        let pick = |ids: &[usize]| ids.iter().map(|&i| patterns[i]).collect::<Vec<_>>();
        if !literal_ids.is_empty()
            && let Some(literals) = Literals::new(&pick(&literal_ids))
            && let Some(set) = set_of(&pick(&set_ids))
        {
            return Some(SharedSet(Way::Both {
                literals,
                literal_ids,
                set,
                set_ids,
            }));
        }
        set_of(patterns).map(|set| SharedSet(Way::Set(set)))
    }
}

/// The patterns that may match one message.
#[derive(Clone)]
enum Hits {
    /// The set's answer: these patterns match.
    Set(regex::SetMatches),
    /// A literal of each of these patterns occurs (ascending): they may match.
    Literals(Vec<usize>),
}

impl Hits {
    fn has(&self, p: usize) -> bool {
        match self {
            Hits::Set(m) => m.matched(p),
            Hits::Literals(l) => l.binary_search(&p).is_ok(),
        }
    }
}

/// The patterns that may match a message, found lazily the first time a regex rule's `where`
/// holds for the event (or the engine's index asks); a rule then runs its own regex (for the
/// captures) only if its pattern is among them.
#[derive(Clone)]
pub struct RegexGate<'a> {
    set: Option<&'a SharedSet>,
    /// `None` until asked; then `Some(None)` when no pattern can match (known without
    /// allocating), or `Some(Some(hits))`.
    hits: Option<Option<Hits>>,
    /// The events were filtered by these regexes already: a match is likely.
    likely: bool,
    /// The list the literals' candidates go into, handed from event to event so that none
    /// allocates (see [`RegexGate::into_spare`]).
    spare: Vec<usize>,
}

impl<'a> RegexGate<'a> {
    /// A gate for one event; `spare` is the list the previous event's gate gave back.
    pub fn new(set: Option<&'a SharedSet>, likely: bool, spare: Vec<usize>) -> Self {
        RegexGate {
            set,
            hits: None,
            likely,
            spare,
        }
    }

    /// The candidates' list, to hand to the next event's gate.
    pub fn into_spare(self) -> Vec<usize> {
        match self.hits {
            Some(Some(Hits::Literals(list))) => list,
            _ => self.spare,
        }
    }

    /// The set's patterns that may match `message`, ascending (computed once per event, as
    /// for [`RegexGate::allows`]); none without a set.
    pub fn matched(&mut self, message: &str) -> impl Iterator<Item = usize> + '_ {
        if self.set.is_some() {
            // Any pattern: this fills the cache.
            self.allows(0, message);
        }
        let (set, lits) = match self.hits.as_ref().and_then(|h| h.as_ref()) {
            Some(Hits::Set(m)) => (Some(m.iter()), None),
            Some(Hits::Literals(l)) => (None, Some(l.iter().copied())),
            None => (None, None),
        };
        set.into_iter().flatten().chain(lits.into_iter().flatten())
    }

    /// Whether pattern `p` is known (from the set) or likely (prefiltered input, or its
    /// literal occurs) to match once [`RegexGate::allows`] said yes, so the rule can go
    /// straight for the captures (only speed depends on it).
    pub(super) fn expects_match(&self, p: Option<usize>) -> bool {
        self.likely || (p.is_some() && matches!(self.hits, Some(Some(Hits::Set(_)))))
    }

    /// Whether pattern `p` of the set can match `message` (true without a set). A message no
    /// pattern can match costs one scan (the literals' when there are some, else the set's
    /// `is_match`) and no allocation.
    pub(super) fn allows(&mut self, p: usize, message: &str) -> bool {
        let Some(shared) = self.set else {
            return true;
        };
        let likely = self.likely;
        self.hits
            .get_or_insert_with(|| {
                let matches = |m: regex::SetMatches| m.matched_any().then_some(Hits::Set(m));
                match &shared.0 {
                    // Only the patterns whose literal occurs can match.
                    Way::Literals(l) => {
                        let mut out = std::mem::take(&mut self.spare);
                        if l.candidates(message, &mut out) {
                            Some(Hits::Literals(out))
                        } else {
                            self.spare = out;
                            None
                        }
                    }
                    // On filtered input a match is likely: which patterns match, in one
                    // pass; otherwise a cheaper `is_match` first.
                    Way::Set(set) if likely => matches(set.matches(message)),
                    Way::Set(set) => set
                        .is_match(message)
                        .then(|| set.matches(message))
                        .and_then(matches),
                    // The literals' candidates and the set's matches, as candidates.
                    Way::Both {
                        literals,
                        literal_ids,
                        set,
                        set_ids,
                    } => {
                        let mut out = std::mem::take(&mut self.spare);
                        literals.candidates(message, &mut out);
                        // Ascending stays ascending: `literal_ids` is.
                        for p in out.iter_mut() {
                            *p = literal_ids[*p];
                        }
                        if likely || set.is_match(message) {
                            let from_literals = out.len();
                            out.extend(set.matches(message).iter().map(|i| set_ids[i]));
                            if from_literals > 0 && out.len() > from_literals {
                                out.sort_unstable();
                            }
                        }
                        if out.is_empty() {
                            self.spare = out;
                            None
                        } else {
                            Some(Hits::Literals(out))
                        }
                    }
                }
            })
            .as_ref()
            .is_some_and(|h| h.has(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few patterns without literals go to a small set beside the others' literals; the
    /// candidates of both come back as the patterns' own indexes, ascending.
    #[test]
    fn a_few_patterns_without_literals_go_to_a_set_beside_the_literals() {
        let patterns = [
            r"Failed password for (?P<u>\S+)",
            r"^\s*(?P<user>\S+) : denied",
            r"status (5\d\d)",
        ];
        let shared = SharedSet::new(&patterns).expect("a gate");
        assert!(matches!(
            &shared.0,
            Way::Both { literal_ids, set_ids, .. } if literal_ids == &[0, 2] && set_ids == &[1]
        ));
        for (message, want) in [
            ("  bob : denied, then status 503", vec![1, 2]),
            ("status 503", vec![2]),
            ("bob : denied", vec![1]),
            ("Failed password for x; status 500", vec![0, 2]),
            ("x bob : denied", vec![]),
        ] {
            let mut gate = RegexGate::new(Some(&shared), false, Vec::new());
            assert_eq!(gate.matched(message).collect::<Vec<_>>(), want, "{message}");
        }
        // Most without literals: the one with literals still goes by them, beside a set.
        let shared = SharedSet::new(&[r"\d+ a", r"\w+ b", "c"]).expect("a gate");
        assert!(matches!(
            &shared.0,
            Way::Both { literal_ids, set_ids, .. } if literal_ids == &[2] && set_ids == &[0, 1]
        ));
        // None with literals: one set of them all.
        let shared = SharedSet::new(&[r"\d+ a", r"\w+ b"]).expect("a gate");
        assert!(matches!(shared.0, Way::Set(_)));
    }
}
