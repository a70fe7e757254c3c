//! The patterns a whole text line must match for some rule to count it, when there are
//! such: replay (`rules test`) and the file tails parse only the lines one of them matches.

use std::collections::BTreeMap;

use super::config::{RuleConfig, RuleKindConfig};
use crate::condition::Condition;

/// The rules' regexes, one of which every line some rule could count must match, so lines
/// none matches can skip parsing altogether. Only offered when that is exact: every enabled
/// rule is a `match` or `threshold` rule (they see matched events only and have no timers),
/// without `allowed_lateness` (which reads the clock other lines move), with a `regex` on the
/// message (a match in the message is then a match in the whole line, once its anchors are
/// dropped).
pub fn line_patterns<'a>(rules: impl IntoIterator<Item = &'a RuleConfig>) -> Option<Vec<String>> {
    let mut patterns = Vec::new();
    for c in rules.into_iter().filter(|c| sees_events(c)) {
        patterns.push(rule_line_pattern(c)?);
    }
    (!patterns.is_empty()).then_some(patterns)
}

/// What every event of one text source (a file of syslog or raw lines) shares.
#[derive(Clone, Copy, Debug)]
pub struct LineScope<'a> {
    /// The source's id (the events' `source`).
    pub source: &'a str,
    /// The source's `kind` (every line's event has it).
    pub kind: &'a str,
    /// Whether a line can set its own level (a syslog line's `<PRI>`); otherwise every event
    /// has level `info`.
    pub level_from_pri: bool,
}

/// [`line_patterns`] for the lines of one source: a rule whose `where` fails on the
/// source's `source` or `kind` never sees its events, so it neither adds a pattern nor
/// keeps lines from being skipped, whatever its kind (but a `rate` or `burn_rate` rule
/// whose `total_where` takes them needs every line). A rule whose `where` fails on level
/// `info` sees only lines that start with a syslog `<PRI>`: with a regex, its pattern is
/// enough; without one, every line starting with `<` is parsed. An empty list: no rule
/// could count any line of the source.
pub fn source_line_patterns<'a>(
    rules: impl IntoIterator<Item = &'a RuleConfig>,
    scope: &LineScope<'_>,
) -> Option<Vec<String>> {
    let mut patterns = Vec::new();
    let mut with_pri = false;
    for c in rules.into_iter().filter(|c| sees_events(c)) {
        // A rate's denominator counts every event `total_where` takes, whatever `where`
        // says: a source it takes cannot skip a line.
        let total = match &c.kind {
            RuleKindConfig::Rate(r) => Some(&r.total_where),
            RuleKindConfig::BurnRate(b) => Some(&b.total_where),
            _ => None,
        };
        if total.is_some_and(|t| !never_sees(t, scope)) {
            return None;
        }
        if never_sees(&c.common.where_, scope) {
            continue;
        }
        // Above `info` only: it sees the lines with a `<PRI>` (here, lines can carry one).
        if fails(&c.common.where_, "level", "info") && c.common.regex.is_none() && kind_skips(c) {
            with_pri = true;
            continue;
        }
        patterns.push(rule_line_pattern(c)?);
    }
    if with_pri {
        patterns.push("(?m)^<".to_owned());
    }
    Some(patterns)
}

/// Whether a `where` table (a rule's, a detector plugin's `subscribe`) fails on every event
/// of the source: on its `source` or `kind`, or on level `info` when its lines cannot set
/// another.
pub fn never_sees(where_: &BTreeMap<String, Condition>, scope: &LineScope<'_>) -> bool {
    fails(where_, "source", scope.source)
        || fails(where_, "kind", scope.kind)
        || (!scope.level_from_pri && fails(where_, "level", "info"))
}

/// Whether `where_` has a condition on `key` that fails on `value`.
fn fails(where_: &BTreeMap<String, Condition>, key: &str, value: &str) -> bool {
    where_
        .get(key)
        .is_some_and(|cond| !cond.holds(Some(value), || value.trim().parse().ok()))
}

/// Whether the rule is enabled and reads events (a `plugin` rule reads only its plugin's
/// detections).
fn sees_events(c: &RuleConfig) -> bool {
    c.common.enabled && !matches!(c.kind, RuleKindConfig::Plugin(_))
}

/// Whether the rule's kind lets lines it cannot match go unseen.
fn kind_skips(c: &RuleConfig) -> bool {
    matches!(
        c.kind,
        RuleKindConfig::Match(_) | RuleKindConfig::Threshold(_)
    ) && c.common.allowed_lateness.is_none()
}

/// The line pattern of one rule that lets lines go unseen, or None when it needs them all.
fn rule_line_pattern(c: &RuleConfig) -> Option<String> {
    let re = c.common.regex.as_ref()?;
    // A pattern that can match the empty string matches every line: nothing could be
    // skipped.
    if !kind_skips(c) || may_match_empty(re.as_str()) {
        return None;
    }
    line_pattern(re.as_str())
}

/// The pattern a whole line is filtered with, for a rule's pattern on the message: the
/// message is the line's end (after `program[pid]: `), so a pattern anchored to the
/// message's start or end matches, without its anchors, somewhere in the line. Dropping the
/// anchors only lets more lines through (they are parsed and the rule decides), and leaves
/// a pattern that holds for lines inside a chunk.
fn line_pattern(pattern: &str) -> Option<String> {
    use regex_syntax::hir::{Hir, HirKind, Look};
    let strip = |h: &Hir| -> Hir {
        match h.kind() {
            HirKind::Look(
                Look::Start
                | Look::End
                | Look::StartLF
                | Look::EndLF
                | Look::StartCRLF
                | Look::EndCRLF,
            ) => Hir::empty(),
            _ => h.clone(),
        }
    };
    let hir = regex_syntax::parse(pattern).ok()?;
    if !hir.properties().look_set().contains_anchor() {
        return Some(pattern.to_owned());
    }
    let bare = map_leaves(&hir, &strip);
    (!bare.properties().look_set().contains_anchor()).then(|| bare.to_string())
}

/// `hir` rebuilt with `leaf` applied to each leaf (literal, class, look, empty), through
/// repetitions, groups, concatenations and alternations.
pub(crate) fn map_leaves(
    hir: &regex_syntax::hir::Hir,
    leaf: &dyn Fn(&regex_syntax::hir::Hir) -> regex_syntax::hir::Hir,
) -> regex_syntax::hir::Hir {
    use regex_syntax::hir::{Hir, HirKind};
    match hir.kind() {
        HirKind::Repetition(r) => {
            let mut r = r.clone();
            r.sub = Box::new(map_leaves(&r.sub, leaf));
            Hir::repetition(r)
        }
        HirKind::Capture(c) => {
            let mut c = c.clone();
            c.sub = Box::new(map_leaves(&c.sub, leaf));
            Hir::capture(c)
        }
        HirKind::Concat(v) => Hir::concat(v.iter().map(|h| map_leaves(h, leaf)).collect()),
        HirKind::Alternation(v) => {
            Hir::alternation(v.iter().map(|h| map_leaves(h, leaf)).collect())
        }
        _ => leaf(hir),
    }
}

/// Whether `pattern` can match the empty string (or cannot be parsed, to be safe).
pub(crate) fn may_match_empty(pattern: &str) -> bool {
    regex_syntax::parse(pattern).map_or(true, |h| h.properties().minimum_len() == Some(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTH: LineScope<'static> = LineScope {
        source: "auth",
        kind: "log",
        level_from_pri: true,
    };

    fn of(rules: &str, scope: &LineScope) -> Option<Vec<String>> {
        source_line_patterns(&crate::engine::config::test_rules(rules), scope)
    }

    const SSH: &str = r#"
[[rule]]
id = "ssh"
kind = "threshold"
threshold = 3
window = "1m"
where = { kind = "log" }
regex = '^Failed password for \S+ from (?P<ip>[0-9.]+)$'
group_by = ["ip"]
"#;

    #[test]
    fn rules_that_never_see_a_source_do_not_keep_its_lines() {
        let ssh = of(SSH, &AUTH);
        let line = "Nov 23 10:00:00 h sshd[1]: Failed password for root from 10.0.0.1";
        let p = ssh.as_ref().expect("offered");
        assert_eq!(p.len(), 1);
        assert!(
            regex::Regex::new(&p[0]).unwrap().is_match(line),
            "anchors dropped"
        );
        // Rules of other kinds, other sources, and with timers, none of which sees a line
        // of `auth`, leave the filter as it was.
        let others = format!(
            "{SSH}
[[rule]]
id = \"down\"
kind = \"absence\"
where = {{ kind = \"heartbeat\" }}
timeout = \"1m\"
[[rule]]
id = \"disk\"
kind = \"metric\"
where = {{ kind = {{ in = [\"metric\", \"probe\"] }} }}
op = \">\"
aggregate = \"last\"
window = \"10m\"
value_threshold = 90.0
[[rule]]
id = \"nginx\"
kind = \"match\"
where = {{ source = \"nginx\" }}
[[rule]]
id = \"off\"
kind = \"match\"
enabled = false
[[rule]]
id = \"anomaly\"
kind = \"plugin\"
plugin = \"zscore\"
"
        );
        assert_eq!(of(&others, &AUTH), ssh);
        // A source whose kind the absence rule reads: every line is needed.
        let beat = LineScope {
            kind: "heartbeat",
            ..AUTH
        };
        assert_eq!(of(&others, &beat), None);
        // No rule sees the nginx source's lines but the one without a regex: none skipped.
        let nginx = LineScope {
            source: "nginx",
            ..AUTH
        };
        assert_eq!(of(&others, &nginx), None);
        // A source no rule sees at all: every line may go.
        let other = LineScope {
            source: "cron",
            kind: "cron",
            ..AUTH
        };
        assert_eq!(of(&others, &other), Some(vec![]));
    }

    #[test]
    fn a_rate_whose_total_takes_a_source_needs_every_line_of_it() {
        let rate = |total: &str| {
            format!(
                "{SSH}
[[rule]]
id = \"error-ratio\"
kind = \"rate\"
where = {{ level = \"error\" }}
total_where = {total}
ratio = 0.5
window = \"5m\"
"
            )
        };
        let raw = LineScope {
            level_from_pri: false,
            ..AUTH
        };
        // Its `where` never holds for raw lines (all `info`), but every line is in its total.
        assert_eq!(of(&rate("{}"), &raw), None);
        assert_eq!(of(&rate("{ kind = \"log\" }"), &AUTH), None);
        // A total of other events leaves this source's lines to the other rules.
        assert_eq!(
            of(&rate("{ kind = \"request\" }"), &raw).map(|p| p.len()),
            Some(1)
        );
        let burn = "[[rule]]\nid = \"slo\"\nkind = \"burn_rate\"\nwhere = { kind = \"request\", \"fields.status\" = { ge = 500 } }\ntotal_where = { kind = \"request\" }\nobjective = 0.999\nwindows = [[\"1h\", \"5m\", 14.4]]\n";
        assert_eq!(of(&format!("{SSH}{burn}"), &AUTH).map(|p| p.len()), Some(1));
        let all = burn.replace("total_where = { kind = \"request\" }", "total_where = {}");
        assert_eq!(of(&format!("{SSH}{all}"), &AUTH), None);
    }

    #[test]
    fn a_subscription_sees_a_source_unless_its_kind_source_or_level_rules_it_out() {
        let table = |t: &str| -> BTreeMap<String, Condition> { toml::from_str(t).unwrap() };
        let raw = LineScope {
            level_from_pri: false,
            ..AUTH
        };
        assert!(never_sees(&table("kind = \"metric\""), &AUTH));
        assert!(never_sees(
            &table("source = { in = [\"a\", \"b\"] }"),
            &AUTH
        ));
        assert!(!never_sees(&table(""), &AUTH));
        assert!(!never_sees(&table("kind = { ne = \"metric\" }"), &AUTH));
        assert!(!never_sees(&table("level = \"error\""), &AUTH));
        assert!(never_sees(&table("level = \"error\""), &raw));
    }

    #[test]
    fn a_rule_on_levels_above_info_keeps_only_lines_with_a_syslog_priority() {
        let burst = format!(
            "{SSH}
[[rule]]
id = \"errors\"
kind = \"threshold\"
threshold = 10
window = \"1m\"
where = {{ level = {{ in = [\"error\", \"critical\"] }} }}
"
        );
        let p = of(&burst, &AUTH).expect("offered");
        assert_eq!(p.len(), 2);
        assert_eq!(p[1], "(?m)^<");
        // Raw lines are all `info`: the rule never counts one.
        let raw = LineScope {
            level_from_pri: false,
            ..AUTH
        };
        assert_eq!(of(&burst, &raw).map(|p| p.len()), Some(1));
        // A rule that also counts `info` needs every line.
        let all = burst.replace("\"critical\"]", "\"critical\", \"info\"]");
        assert_eq!(of(&all, &AUTH), None);
        // As does one on levels above info whose kind needs every line in time.
        let spike = format!(
            "{SSH}
[[rule]]
id = \"errors\"
kind = \"spike\"
where = {{ level = \"error\" }}
window = \"10m\"
baseline = 6
factor = 3.0
"
        );
        assert_eq!(of(&spike, &AUTH), None);
    }
}
