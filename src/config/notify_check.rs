//! The notification tables checked against each other: channels, routes, escalations,
//! inhibit rules and the on-call targets and contacts they name.

use std::path::Path;

use super::file::*;
use crate::de::ConfigError;

/// `[[channel]]`, `[[route]]`, `[[escalation]]` and `[[inhibit]]` tables as read, with
/// where each starts.
pub(super) type NotifyItems = (
    Vec<(super::notify::ChannelConfig, usize)>,
    Vec<(super::notify::RouteConfig, usize)>,
    Vec<(super::notify::EscalationConfig, usize)>,
    Vec<(super::notify::InhibitConfig, usize)>,
);

/// Checks channels, routes and escalations against each other; keeps the good ones.
pub(super) fn check_notify(
    path: &Path,
    text: &str,
    (channels, routes, escalations, inhibits): NotifyItems,
    out: &mut super::notify::NotifyConfig,
    errors: &mut Vec<ConfigError>,
) {
    let mut err = |at: usize, key: String, message: String| {
        errors.push(ConfigError {
            file: path.to_owned(),
            line: Some(line_of(text, at)),
            key,
            message,
        })
    };
    for (c, at) in &channels {
        if c.id.starts_with("oncall:") {
            err(
                *at,
                format!("channel[{}].id", c.id),
                "`oncall:` names on-call targets; choose another id".into(),
            );
        }
    }
    for (c, at) in channels {
        let mut problems = c.problems();
        if let Some(t) = &c.template {
            let file = out.settings.templates_dir.join(t);
            if !file.is_file() {
                problems.push(("template", format!("no template file {}", file.display())));
            }
        }
        for (key, m) in &problems {
            err(at, format!("channel[{}].{key}", c.id), m.clone());
        }
        if out.channels.iter().any(|o| o.id == c.id) {
            err(at, format!("channel[{}]", c.id), "defined twice".into());
        } else if problems.is_empty() {
            out.channels.push(c);
        }
    }
    // A target is a channel, or an on-call turn (its team's contacts are checked below).
    let known = |id: &str, out: &super::notify::NotifyConfig| {
        matches!(crate::notification::oncall::parse(id), Ok(Some(_)))
            || out.channels.iter().any(|c| c.id == id)
    };
    let oncall_problem = |id: &str, out: &super::notify::NotifyConfig| {
        crate::notification::oncall::problem(id, &out.teams)
    };
    let mut late = Vec::new();
    for (team, member, c) in crate::notification::oncall::contact_problems(&out.teams, |id| {
        out.channels.iter().any(|x| x.id == id)
    }) {
        late.push(ConfigError {
            file: path.to_owned(),
            line: None,
            key: format!("team[{team}].contacts.{member}"),
            message: format!("no [[channel]] has the id `{c}`"),
        });
    }
    for (e, at) in escalations {
        let mut ok = !e.steps.is_empty();
        if e.steps.is_empty() {
            err(
                at,
                format!("escalation[{}].steps", e.id),
                "needs at least one step".into(),
            );
        }
        for (i, step) in e.steps.iter().enumerate() {
            for c in &step.channels {
                let problem = oncall_problem(c, out).or_else(|| {
                    (!known(c, out)).then(|| format!("no [[channel]] has the id `{c}`"))
                });
                if let Some(p) = problem {
                    ok = false;
                    err(at, format!("escalation[{}].steps[{i}]", e.id), p);
                }
            }
        }
        if ok {
            out.escalations.push(e);
        }
    }
    for (i, (r, at)) in routes.into_iter().enumerate() {
        let mut ok = true;
        for c in &r.channels {
            let problem = oncall_problem(c, out)
                .or_else(|| (!known(c, out)).then(|| format!("no [[channel]] has the id `{c}`")));
            if let Some(p) = problem {
                ok = false;
                err(at, format!("route[{i}].channels"), p);
            }
        }
        if let Some(e) = &r.escalation
            && !out.escalations.iter().any(|x| &x.id == e)
        {
            ok = false;
            err(
                at,
                format!("route[{i}].escalation"),
                format!("no [[escalation]] has the id `{e}`"),
            );
        }
        if r.group_by.is_empty() && (r.group_wait.is_some() || r.group_interval.is_some()) {
            ok = false;
            err(
                at,
                format!("route[{i}].group_by"),
                "`group_wait` and `group_interval` need `group_by`".into(),
            );
        }
        if let Err(e) = r.matchers.where_.check() {
            ok = false;
            err(at, format!("route[{i}].match.where"), e);
        }
        if r.channels.is_empty() && r.escalation.is_none() {
            ok = false;
            err(
                at,
                format!("route[{i}]"),
                "names no `channels` and no `escalation`".into(),
            );
        }
        if ok {
            out.routes.push(r);
        }
    }
    for (i, (h, at)) in inhibits.into_iter().enumerate() {
        let mut ok = true;
        for (side, w) in [("source", &h.source), ("target", &h.target)] {
            if let Err(e) = w.check() {
                ok = false;
                err(at, format!("inhibit[{i}].{side}"), e);
            }
        }
        if h.source.is_empty() || h.target.is_empty() {
            ok = false;
            err(
                at,
                format!("inhibit[{i}]"),
                "needs a `source` and a `target` with at least one condition each".into(),
            );
        }
        if h.downstream && out.services.iter().all(|s| s.depends_on.is_empty()) {
            ok = false;
            err(
                at,
                format!("inhibit[{i}].downstream"),
                "no [[service]] has `depends_on`, so nothing is downstream of anything".into(),
            );
        }
        if ok {
            out.inhibits.push(h);
        }
    }
    errors.extend(late);
}
