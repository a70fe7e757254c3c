//! Reading config files into [`Config`], collecting every error with `file:line: key`.
//!
//! Each file is parsed once into toml's spanned tree. Every top-level table (and every
//! `[[rule]]`) is then deserialized on its own from that tree, so serde's errors keep their
//! byte spans and one bad table does not hide errors in the next. A byte offset becomes a line
//! number and a key path (`rule[ssh-brute-force].window`) by walking the same tree.

use std::path::{Path, PathBuf};

use toml::de::DeTable;

use super::rule::RuleConfig;
use super::source::SourcesConfig;
use super::{Config, ControlConfig, DaemonConfig, IncidentsConfig, IngestConfig};

use super::file::*;
use super::notify_check::{NotifyItems, check_notify};
pub use crate::de::{ConfigError, ConfigErrors};

/// Loads the main config at `path` and the rules in its `rules_dir`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_owned(),
            line: None,
            key: String::new(),
            message: format!("cannot read config: {e}"),
        }])
    })?;
    load_str(path, &text)
}

/// Like [`load`], with the main file's text given (its folder still anchors relative paths).
pub fn load_str(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let base = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_owned();
    let mut errors = Vec::new();
    let mut config = Config {
        path: path.to_owned(),
        rules_dir: base.join("rules.d"),
        plugins_dir: PathBuf::from("/usr/lib/incidentd/plugins"),
        daemon: DaemonConfig::default(),
        engine: Default::default(),
        control: ControlConfig::default(),
        ingest: IngestConfig::default(),
        incidents: IncidentsConfig::default(),
        sources: SourcesConfig::default(),
        services: Vec::new(),
        actions: Vec::new(),
        remediation: Default::default(),
        plugins: Vec::new(),
        notify: Default::default(),
        rules: Vec::new(),
    };
    config.notify.settings.templates_dir = base.join("templates");
    let mut rules_dir_set = false;
    let mut plugin_tables: Vec<super::plugin::PluginTable> = Vec::new();
    let mut notify_items: NotifyItems = Default::default();
    let mut slas = None;
    let mut teams: Vec<(crate::incident::oncall::TeamConfig, usize)> = Vec::new();
    let mut plugin_tables_at: Option<usize> = None;

    if let Some(file) = File::parse(path, text, &mut errors) {
        for (key, value) in file.root.iter() {
            let name: &str = key.get_ref();
            match name {
                "rules_dir" => {
                    if let Some(p) = file.value::<PathBuf>(value, &mut errors) {
                        config.rules_dir = base.join(p);
                        rules_dir_set = true;
                    }
                }
                "plugins_dir" => {
                    if let Some(p) = file.value::<PathBuf>(value, &mut errors) {
                        config.plugins_dir = base.join(p);
                    }
                }
                "daemon" => {
                    if let Some(mut d) = file.value::<DaemonConfig>(value, &mut errors) {
                        // Only keys the file sets are relative to it; defaults are absolute.
                        d.state_dir = base.join(d.state_dir);
                        d.runtime_dir = base.join(d.runtime_dir);
                        config.daemon = d;
                    }
                }
                "engine" => {
                    if let Some(e) = file.value(value, &mut errors) {
                        config.engine = e;
                    }
                }
                "control" => {
                    if let Some(c) = file.value(value, &mut errors) {
                        config.control = c;
                    }
                }
                "ingest" => {
                    if let Some(i) = file.value(value, &mut errors) {
                        config.ingest = i;
                    }
                }
                "incidents" => {
                    if let Some(i) = file.value(value, &mut errors) {
                        config.incidents = i;
                    }
                }
                "rule" => file.rules(value, &mut config.rules, &mut errors),
                "source" => file.sources(value, &base, &mut config.sources, &mut errors),
                "service" => file.services(value, &mut config.services, &mut errors),
                "action" => file.actions(value, &mut config.actions, &mut errors),
                "channel" => notify_items.0 = file.array_of(value, "channel", &mut errors),
                "route" => notify_items.1 = file.array_of(value, "route", &mut errors),
                "escalation" => notify_items.2 = file.array_of(value, "escalation", &mut errors),
                "inhibit" => notify_items.3 = file.array_of(value, "inhibit", &mut errors),
                "sla" => slas = Some(file.array_of(value, "sla", &mut errors)),
                "team" => teams = file.array_of(value, "team", &mut errors),
                "notifications" => {
                    if let Some(mut n) =
                        file.value::<super::notify::NotificationsConfig>(value, &mut errors)
                    {
                        n.templates_dir = base.join(n.templates_dir);
                        config.notify.settings = n;
                    }
                }
                "plugin" => {
                    if let Some(list) =
                        file.value::<Vec<super::plugin::PluginTable>>(value, &mut errors)
                    {
                        plugin_tables = list;
                        plugin_tables_at = Some(key.span().start);
                    }
                }
                "remediation" => {
                    if let Some(r) = file.value(value, &mut errors) {
                        config.remediation = r;
                    }
                }
                other => {
                    errors.push(file.error_at(key.span().start, format!("unknown key `{other}`")))
                }
            }
        }
    }

    config.incidents.services = config.services.clone();
    for (i, (t, at)) in teams.into_iter().enumerate() {
        let problem = t.problem().or_else(|| {
            config
                .incidents
                .teams
                .iter()
                .any(|o| o.name == t.name)
                .then(|| format!("team `{}` is defined twice", t.name))
        });
        match problem {
            Some(p) => errors.push(ConfigError {
                file: path.to_owned(),
                line: Some(line_of(text, at)),
                key: format!("team[{i}]"),
                message: p,
            }),
            None => config.incidents.teams.push(t),
        }
    }
    for s in &config.services {
        if let Some(o) = &s.owner
            && !config.incidents.teams.iter().any(|t| &t.name == o)
        {
            errors.push(ConfigError {
                file: path.to_owned(),
                line: None,
                key: format!("service[{}].owner", s.name),
                message: format!("no [[team]] is named `{o}`"),
            });
        }
    }
    if let Some(slas) = slas {
        check_slas(path, text, slas, &mut config.incidents.slas, &mut errors);
    }
    config.notify.services = config.services.clone();
    config.notify.teams = config.incidents.teams.clone();
    check_notify(path, text, notify_items, &mut config.notify, &mut errors);
    // Each enabled plugin's manifest, checked where it stands.
    for t in plugin_tables {
        let line = plugin_tables_at.map(|at| line_of(text, at));
        if config.plugins.iter().any(|p| p.table.name == t.name) {
            errors.push(ConfigError {
                file: path.to_owned(),
                line,
                key: format!("plugin[{}]", t.name),
                message: "enabled twice".into(),
            });
            continue;
        }
        if !super::plugin::plain_name(&t.name) {
            errors.push(ConfigError {
                file: path.to_owned(),
                line,
                key: format!("plugin[{}].name", t.name),
                message: "a plugin name is a plain name of a-z, 0-9, '_' and '-': a folder of plugins_dir".into(),
            });
            continue;
        }
        let dir = config.plugins_dir.join(&t.name);
        match super::plugin::load_manifest(&dir, &t.name) {
            Ok(manifest) => config.plugins.push(super::plugin::PluginConfig {
                table: t,
                manifest,
                dir,
            }),
            Err(mut e) => {
                if e.iter().all(|e| e.line.is_none()) {
                    // The manifest is missing: say where it was enabled too.
                    e = vec![ConfigError {
                        file: path.to_owned(),
                        line,
                        key: format!("plugin[{}]", t.name),
                        message: e
                            .iter()
                            .map(|e| e.message.clone())
                            .collect::<Vec<_>>()
                            .join("; "),
                    }];
                }
                errors.extend(e);
            }
        }
    }
    load_rules_dir(
        &config.rules_dir,
        rules_dir_set,
        &mut config.rules,
        &mut errors,
    );
    check_rules(&config.rules, &mut errors);
    validate(&config, path, &mut errors);
    bound_rules(&mut config, &mut errors);

    if errors.is_empty() {
        Ok(config)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Splits a table into the keys in `shared` and the rest, leaving out `skip`.
pub(super) fn split_keys<'a>(
    table: &DeTable<'a>,
    shared: &[&str],
    skip: &[&str],
) -> (DeTable<'a>, DeTable<'a>) {
    let (mut a, mut b) = (DeTable::new(), DeTable::new());
    for (k, val) in table.iter() {
        let name: &str = k.get_ref();
        if skip.contains(&name) {
            continue;
        }
        if shared.contains(&name) {
            a.insert(k.clone(), val.clone());
        } else {
            b.insert(k.clone(), val.clone());
        }
    }
    (a, b)
}

/// Loads rules for offline use: from a folder of rules files, or from a file (a main config
/// with its `rules_dir`, or a rules file alone).
pub fn load_rules(path: &Path) -> Result<Vec<RuleConfig>, ConfigErrors> {
    let (mut rules, mut errors) = (Vec::new(), Vec::new());
    if path.is_dir() {
        load_rules_dir(path, true, &mut rules, &mut errors);
    } else if is_rules_file(path) {
        load_rules_file(path, &mut rules, &mut errors);
    } else {
        return load(path).map(|c| c.rules);
    }
    check_rules(&rules, &mut errors);
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(ConfigErrors(errors))
    }
}

/// Reads `dir/*.toml` in name order. A missing default `rules.d` is fine; a missing folder
/// the config names is an error.
fn load_rules_dir(
    dir: &Path,
    named: bool,
    rules: &mut Vec<RuleConfig>,
    errors: &mut Vec<ConfigError>,
) {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !named => return,
        Err(e) => {
            errors.push(ConfigError {
                file: dir.to_owned(),
                line: None,
                key: "rules_dir".into(),
                message: format!("cannot read rules folder: {e}"),
            });
            return;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    for path in files {
        load_rules_file(&path, rules, errors);
    }
}

/// One rules file: only `[[rule]]` tables.
fn load_rules_file(path: &Path, rules: &mut Vec<RuleConfig>, errors: &mut Vec<ConfigError>) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            errors.push(ConfigError {
                file: path.to_owned(),
                line: None,
                key: String::new(),
                message: format!("cannot read rules file: {e}"),
            });
            return;
        }
    };
    let Some(file) = File::parse(path, &text, errors) else {
        return;
    };
    for (key, value) in file.root.iter() {
        match &**key.get_ref() {
            "rule" => file.rules(value, rules, errors),
            other => errors.push(file.error_at(
                key.span().start,
                format!("unknown key `{other}` (a rules file holds only [[rule]] tables)"),
            )),
        }
    }
}

/// Whether the file at `path` holds only `[[rule]]` tables (a `rules.d` file, whose rules may
/// name actions that only the main config defines).
fn is_rules_file(path: &Path) -> bool {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|text| text.parse::<toml::Table>().ok())
        .is_some_and(|root| !root.is_empty() && root.keys().all(|k| k == "rule"))
}

/// Checks that need every rule at once.
fn check_rules(rules: &[RuleConfig], errors: &mut Vec<ConfigError>) {
    let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for rule in rules {
        if let Some(first) = seen.insert(rule.id(), &rule.origin) {
            let (file, line) = split_origin(&rule.origin);
            errors.push(ConfigError {
                file,
                line,
                key: format!("rule[{}].id", rule.id()),
                message: format!(
                    "duplicate rule id `{}` (first defined at {first})",
                    rule.id()
                ),
            });
        }
    }
}

/// `[daemon] retention` and `max_events_in_memory` bound every rule: a rule that looks
/// back further than the retention, or whose `max_groups × threshold` exceeds the events
/// in memory, is an error naming both; a rule without `max_groups` gets the most groups
/// that fit (at most the default).
fn bound_rules(config: &mut Config, errors: &mut Vec<ConfigError>) {
    let retention = config.daemon.retention;
    let budget = config.daemon.max_events_in_memory;
    let show = |d: std::time::Duration| humantime::format_duration(d).to_string();
    for r in &mut config.rules {
        let (file, line) = split_origin(&r.origin);
        let mut err = |key: &str, message: String| {
            errors.push(ConfigError {
                file: file.clone(),
                line,
                key: format!("rule[{}].{key}", r.common.id),
                message,
            })
        };
        if let Some((back, how)) = r.kind.lookback()
            && back > retention
        {
            err(
                "window",
                format!(
                    "looks back {} ({how}), longer than [daemon] retention {}; raise the retention or shorten the window",
                    show(back),
                    show(retention)
                ),
            );
        }
        if let Some(late) = r.common.allowed_lateness
            && late > retention
        {
            err(
                "allowed_lateness",
                format!(
                    "{} is longer than [daemon] retention {}",
                    show(late),
                    show(retention)
                ),
            );
        }
        let per_group = r.kind.events_per_group();
        match r.common.max_groups {
            Some(n) if n.get().saturating_mul(per_group) > budget => err(
                "max_groups",
                format!(
                    "{} groups × {per_group} events each is more than [daemon] max_events_in_memory {budget}",
                    n.get()
                ),
            ),
            Some(_) => {}
            None if per_group > budget => err(
                "max_groups",
                format!(
                    "one group alone holds up to {per_group} events, more than [daemon] max_events_in_memory {budget}"
                ),
            ),
            None => {
                let fit = (budget / per_group).clamp(1, crate::engine::config::DEFAULT_MAX_GROUPS);
                r.common.max_groups = std::num::NonZeroUsize::new(fit);
            }
        }
    }
}

/// `[[sla]]` tables replace the runbook's defaults; each needs a severity and a time.
fn check_slas(
    path: &Path,
    text: &str,
    slas: Vec<(crate::incident::sla::SlaConfig, usize)>,
    out: &mut Vec<crate::incident::sla::SlaConfig>,
    errors: &mut Vec<ConfigError>,
) {
    out.clear();
    for (i, (s, at)) in slas.into_iter().enumerate() {
        let problem = if s.severity.is_empty() {
            Some("names no severity")
        } else if s.ack_within.is_none() && s.resolve_within.is_none() {
            Some("needs `ack_within`, `resolve_within` or both")
        } else {
            None
        };
        match problem {
            Some(p) => errors.push(ConfigError {
                file: path.to_owned(),
                line: Some(line_of(text, at)),
                key: format!("sla[{i}]"),
                message: p.into(),
            }),
            None => out.push(s),
        }
    }
}

/// Checks across tables of the main file.
fn validate(config: &Config, path: &Path, errors: &mut Vec<ConfigError>) {
    for (key, t) in [
        ("control.web_token", &config.control.web_token),
        ("control.web_admin_token", &config.control.web_admin_token),
    ] {
        if let Some(t) = t
            && t.0.chars().count() < 16
        {
            errors.push(ConfigError {
                file: path.to_owned(),
                line: None,
                key: key.into(),
                message: "the board's tokens must be at least 16 characters (an empty one would let any page make changes)".into(),
            });
        }
    }
    if let (Some(a), Some(r)) = (&config.control.web_admin_token, &config.control.web_token)
        && a.0 == r.0
    {
        errors.push(ConfigError {
            file: path.to_owned(),
            line: None,
            key: "control.web_admin_token".into(),
            message: "must differ from `web_token`, or every responder holding the board's token could approve actions".into(),
        });
    }
    if let Some(a) = config.control.web_listen
        && !a.ip().is_loopback()
    {
        errors.push(ConfigError {
            file: path.to_owned(),
            line: None,
            key: "control.web_listen".into(),
            message: format!(
                "{a} is not a loopback address: the board is served on 127.0.0.1 or ::1 only (put a reverse proxy with its own authentication in front for more)"
            ),
        });
    }
    for r in &config.rules {
        if let super::RuleKindConfig::Plugin(p) = &r.kind {
            let problem = match config.plugins.iter().find(|x| x.table.name == p.plugin) {
                None => Some(format!(
                    "plugin `{}` is not enabled (add a [[plugin]] table with name = \"{}\")",
                    p.plugin, p.plugin
                )),
                Some(x) if x.manifest.kind != super::plugin::PluginKind::Detector => Some(format!(
                    "plugin `{}` is a source; only detector plugins send detections",
                    p.plugin
                )),
                Some(_) => None,
            };
            if let Some(message) = problem {
                let (file, line) = match r.origin.rsplit_once(':') {
                    Some((f, l)) => (PathBuf::from(f), l.parse().ok()),
                    None => (path.to_owned(), None),
                };
                errors.push(ConfigError {
                    file,
                    line,
                    key: format!("rule[{}].plugin", r.common.id),
                    message,
                });
            }
        }
    }
    for r in &config.rules {
        for a in &r.common.actions {
            if !config.actions.iter().any(|x| &x.common.id == a) {
                let (file, line) = match r.origin.rsplit_once(':') {
                    Some((f, l)) => (PathBuf::from(f), l.parse().ok()),
                    None => (path.to_owned(), None),
                };
                errors.push(ConfigError {
                    file,
                    line,
                    key: format!("rule[{}].actions", r.common.id),
                    message: format!("no [[action]] has the id `{a}`"),
                });
            }
        }
    }
    let mut err = |key: &str, message: String| {
        errors.push(ConfigError {
            file: path.to_owned(),
            line: None,
            key: key.to_owned(),
            message,
        })
    };
    if config.ingest.max_line_bytes < 16 {
        err("ingest.max_line_bytes", "must be at least 16".into());
    }
    if let Some(h) = &config.daemon.host
        && (h.is_empty() || h.len() > 253 || h.chars().any(|c| c.is_control() || c.is_whitespace()))
    {
        err(
            "daemon.host",
            "must be a host name: 1 to 253 characters, no spaces or control characters".into(),
        );
    }
    if config.daemon.event_queue == 0 || config.daemon.detection_queue == 0 {
        err("daemon", "queue capacities must be at least 1".into());
    }
    if config.daemon.checkpoint_detections == 0 {
        err(
            "daemon.checkpoint_detections",
            "must be at least 1 (a checkpoint after every N detections)".into(),
        );
    }
    if config.control_socket() == config.ingest_socket() {
        err(
            "ingest.socket",
            "the ingest and control sockets must differ".into(),
        );
    }
    for s in &config.sources.syslog {
        let p = config.daemon.runtime_dir.join(&s.socket);
        if p == config.control_socket() || p == config.ingest_socket() {
            err(
                &format!("source.syslog[{}].socket", s.id),
                "must differ from the control and ingest sockets".into(),
            );
        }
    }
    if config.incidents.auto_close_after < config.incidents.reopen_window {
        err(
            "incidents.auto_close_after",
            "must be at least reopen_window, or resolved incidents close before they can be reopened".into(),
        );
    }
    if config.incidents.evidence_samples > 100 {
        err(
            "incidents.evidence_samples",
            "at most 100 (every detection rewrites the incident with them)".into(),
        );
    }
    if config.incidents.rate_limit.max == 0 {
        err("incidents.rate_limit.max", "must be at least 1".into());
    }
}

fn split_origin(origin: &str) -> (PathBuf, Option<usize>) {
    match origin.rsplit_once(':') {
        Some((f, l)) => (PathBuf::from(f), l.parse().ok()),
        None => (PathBuf::from(origin), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errs(text: &str) -> Vec<String> {
        match load_str(Path::new("/nonexistent/incidentd.toml"), text) {
            Ok(_) => Vec::new(),
            Err(e) => e.0.iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn fleet_settings_are_checked() {
        let e = errs(
            r#"
[daemon]
host = "web 1"
checkpoint_detections = 0

[[channel]]
id = "am"
kind = "alertmanager"
urls = ["http://a:9093", "b:9093"]
link = "{{ incident.id"

[[channel]]
id = "hook"
kind = "webhook"
url = "http://x"
urls = ["http://y"]
"#,
        );
        let all = e.join("\n");
        assert!(all.contains("daemon.host: must be a host name"), "{all}");
        assert!(
            all.contains("daemon.checkpoint_detections: must be at least 1"),
            "{all}"
        );
        assert!(
            all.contains("incidentd.toml:6: channel[am].urls: `b:9093` is not an http"),
            "{all}"
        );
        assert!(
            all.contains("incidentd.toml:6: channel[am].link: the template does not compile"),
            "{all}"
        );
        assert!(
            all.contains(
                "incidentd.toml:12: channel[hook].urls: only an alertmanager channel takes `urls`"
            ),
            "{all}"
        );
    }

    #[test]
    fn a_good_config_loads() {
        let c = load_str(
            Path::new("/etc/x/incidentd.toml"),
            r#"
[daemon]
state_dir = "state"
[[rule]]
id = "ssh"
kind = "threshold"
threshold = 5
window = "1m"
regex = 'Failed password for \S+ from (?P<ip>\S+)'
group_by = ["ip"]
"#,
        )
        .unwrap();
        assert_eq!(c.daemon.state_dir, Path::new("/etc/x/state"));
        assert_eq!(c.rules.len(), 1);
        assert_eq!(c.rules[0].origin, "/etc/x/incidentd.toml:4");
    }

    #[test]
    fn every_error_names_file_line_and_key() {
        let e = errs(
            r#"
[daemon]
retention = "soon"
colour = "red"

[[rule]]
id = "a"
kind = "threshold"
threshold = 5
window = "1m"
regex = "(unclosed"

[[rule]]
id = "b"
kind = "match"
windw = "1m"

[[rule]]
id = "c"
kind = "telepathy"

[mystery]
"#,
        );
        let all = e.join("\n");
        assert!(
            all.contains("incidentd.toml:3: daemon.retention: `soon` is not a duration"),
            "{all}"
        );
        assert!(
            all.contains("incidentd.toml:4: daemon.colour: unknown field `colour`"),
            "{all}"
        );
        assert!(
            all.contains("incidentd.toml:11: rule[a].regex: invalid regex"),
            "{all}"
        );
        assert!(
            all.contains("incidentd.toml:16: rule[b].windw: unknown field `windw`"),
            "{all}"
        );
        assert!(
            all.contains("incidentd.toml:20: rule[c].kind: rule kind `telepathy` is not available"),
            "{all}"
        );
        assert!(
            all.contains("incidentd.toml:22: mystery: unknown key `mystery`"),
            "{all}"
        );
        assert_eq!(e.len(), 6, "{all}");
    }

    #[test]
    fn absurd_durations_are_refused() {
        let e = errs("[[rule]]\nid = \"a\"\nkind = \"absence\"\ntimeout = \"300000000y\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains(":4: rule[a].timeout: `300000000y` is longer than 100 years"),
            "{e:?}"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = errs("[daemon]\nstate_dir = \n");
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with("/nonexistent/incidentd.toml:2: TOML syntax error"),
            "{e:?}"
        );
    }

    #[test]
    fn semantic_rule_errors_point_at_the_key() {
        let e =
            errs("[[rule]]\nid = \"t\"\nkind = \"threshold\"\nthreshold = 0\nwindow = \"1m\"\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains(":4: rule[t].threshold: "), "{e:?}");
    }

    #[test]
    fn source_tables_load_and_their_errors_have_lines() {
        let ok = load_str(
            Path::new("/etc/incidentd/incidentd.toml"),
            r#"
[[source.file]]
id = "nginx"
path = "logs/*.log"
format = "regex"
pattern = '^(?P<ip>\S+) '
[[source.syslog]]
id = "sys"
socket = "syslog.sock"
[[source.exec]]
id = "journal"
command = ["journalctl", "-f", "-o", "json"]
format = "journald"
[[source.probe]]
id = "host"
checks = ["memory", "tcp"]
tcp = ["127.0.0.1:22"]
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok.sources.file[0].path, "/etc/incidentd/logs/*.log");
        assert_eq!(ok.sources.ids().count(), 4);

        let e = errs(
            r#"
[[source.file]]
id = "a"
path = "/var/log/x.log"
format = "regex"

[[source.file]]
id = "a"
path = "/var/log/y.log"
format = "raw"
pattern = "x"
[[source.exec]]
id = "e"
colour = "red"

[[source.probe]]
id = "p"
checks = ["http", "tcp"]
tcp = ["nowhere"]

[[source.pipe]]
id = "q"
"#,
        );
        let all = e.join("\n");
        for want in [
            "incidentd.toml:5: source.file[a].format: format \"regex\" needs a `pattern`",
            "incidentd.toml:8: source.file[a].id: duplicate source id `a` (first defined at line 2)",
            "incidentd.toml:11: source.file[a].pattern: `pattern` is only used with format \"regex\"",
            "incidentd.toml:14: source.exec[e].colour: unknown field `colour`",
            "incidentd.toml:18: source.probe[p].checks: check \"http\" needs at least one entry in `http`",
            "incidentd.toml:19: source.probe[p].tcp: `nowhere` is not a host:port address",
            "incidentd.toml:21: source.pipe: unknown source kind `pipe`",
        ] {
            assert!(all.contains(want), "missing {want:?} in\n{all}");
        }
    }
}
