//! On-call targets: a route's `channels` or an escalation step's `channels` may name
//! `oncall:primary` or `oncall:secondary` (of the team owning the incident's service, through
//! `[[service]] owner`), or `oncall:TEAM:primary` / `oncall:TEAM:secondary` (of a named team).
//! Such a target becomes the channels in the team's `contacts` for whoever holds that turn at
//! the time the message is due: an escalation step's secondary is the one on call when the
//! step fires.

use crate::clock::Timestamp;
use crate::incident::Incident;
use crate::incident::oncall::TeamConfig;

use super::config::NotifyConfig;

const PREFIX: &str = "oncall:";

/// Which turn of a rotation a target names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Turn {
    Primary,
    Secondary,
}

/// A parsed `oncall:` target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// A named team, or `None` for the owner of the incident's service.
    pub team: Option<&'a str>,
    pub turn: Turn,
}

/// `Ok(None)` for a plain channel id, `Ok(Some(..))` for an on-call target, `Err` for an
/// `oncall:` name that is neither form.
pub fn parse(target: &str) -> Result<Option<Target<'_>>, String> {
    let Some(rest) = target.strip_prefix(PREFIX) else {
        return Ok(None);
    };
    let (team, turn) = match rest.rsplit_once(':') {
        Some((team, turn)) if !team.is_empty() => (Some(team), turn),
        Some(_) => (None, ""),
        None => (None, rest),
    };
    let turn = match turn {
        "primary" => Turn::Primary,
        "secondary" => Turn::Secondary,
        _ => {
            return Err(format!(
                "`{target}` is not an on-call target (oncall:primary, oncall:secondary, \
                 oncall:TEAM:primary or oncall:TEAM:secondary)"
            ));
        }
    };
    Ok(Some(Target { team, turn }))
}

/// What is wrong with a target in the configuration: an unknown team, or a contact naming
/// an unknown channel is checked with the teams (see [`contact_problems`]).
pub fn problem(target: &str, teams: &[TeamConfig]) -> Option<String> {
    match parse(target) {
        Err(e) => Some(e),
        Ok(Some(Target { team: Some(t), .. })) if !teams.iter().any(|x| x.name == t) => {
            Some(format!("no [[team]] is named `{t}` (in `{target}`)"))
        }
        Ok(_) => None,
    }
}

/// Contacts naming channels that do not exist: (team, member, channel).
pub fn contact_problems(
    teams: &[TeamConfig],
    known: impl Fn(&str) -> bool,
) -> Vec<(&str, &str, &str)> {
    let mut out = Vec::new();
    for t in teams {
        for (member, channels) in &t.contacts {
            for c in channels.iter().filter(|c| !known(c)) {
                out.push((t.name.as_str(), member.as_str(), c.as_str()));
            }
        }
    }
    out
}

/// The channels a target stands for, for `inc` at `at`: a plain id is itself; an on-call
/// target is the contacts of the member whose turn it is. `Err` says why nobody is reached.
pub fn reach(
    target: &str,
    inc: &Incident,
    config: &NotifyConfig,
    at: Timestamp,
) -> Result<Vec<String>, String> {
    let t = match parse(target) {
        Ok(None) => return Ok(vec![target.to_owned()]),
        Ok(Some(t)) => t,
        Err(e) => return Err(e),
    };
    let name = match t.team {
        Some(name) => name,
        None => {
            let Some(service) = inc.service.as_deref() else {
                return Err(format!("{target}: the incident has no service"));
            };
            config
                .services
                .iter()
                .find(|s| s.name == service)
                .and_then(|s| s.owner.as_deref())
                .ok_or_else(|| format!("{target}: no [[team]] owns service `{service}`"))?
        }
    };
    let team = config
        .teams
        .iter()
        .find(|x| x.name == name)
        .ok_or_else(|| format!("{target}: no [[team]] is named `{name}`"))?;
    let on = team
        .at(at)
        .ok_or_else(|| format!("{target}: team `{name}` has no members"))?;
    let member = match t.turn {
        Turn::Primary => on.primary,
        Turn::Secondary => on
            .secondary
            .ok_or_else(|| format!("{target}: team `{name}` has no secondary"))?,
    };
    match team.contacts.get(&member) {
        Some(c) if !c.is_empty() => Ok(c.clone()),
        _ => Err(format!("{target}: {member} (team {name}) has no contacts")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_parse_or_say_what_is_wrong() {
        assert_eq!(parse("pager"), Ok(None));
        assert_eq!(
            parse("oncall:primary"),
            Ok(Some(Target {
                team: None,
                turn: Turn::Primary
            }))
        );
        assert_eq!(
            parse("oncall:db:secondary"),
            Ok(Some(Target {
                team: Some("db"),
                turn: Turn::Secondary
            }))
        );
        assert!(parse("oncall:tertiary").is_err());
        assert!(parse("oncall::primary").is_err());
        assert!(parse("oncall:db:").is_err());
        assert_eq!(
            problem("oncall:web:primary", &[]),
            Some("no [[team]] is named `web` (in `oncall:web:primary`)".into())
        );
    }
}
