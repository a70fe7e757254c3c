//! One config file as parsed TOML with spans: each table deserialized on its own, every
//! error placed at `file:line` and the key that holds it.

use super::ServiceConfig;
use super::action::{self, ActionConfig};
use super::load::*;
use super::rule::{COMMON_KEYS, RuleCommon, RuleConfig, RuleKindConfig};
use super::source::{self, SourcesConfig};
use serde::de::DeserializeOwned;
use std::path::Path;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};

/// One parsed file and the means to turn byte offsets into `line` and `key`.
pub(super) struct File<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) root: DeTable<'a>,
}

impl<'a> File<'a> {
    pub(super) fn parse(
        path: &'a Path,
        text: &'a str,
        errors: &mut Vec<ConfigError>,
    ) -> Option<File<'a>> {
        match DeTable::parse(text) {
            Ok(root) => Some(File {
                path,
                text,
                root: root.into_inner(),
            }),
            Err(e) => {
                errors.push(ConfigError {
                    file: path.to_owned(),
                    line: e.span().map(|s| line_of(text, s.start)),
                    key: String::new(),
                    message: format!("TOML syntax error: {}", e.message().trim()),
                });
                None
            }
        }
    }

    pub(super) fn error_at(&self, offset: usize, message: String) -> ConfigError {
        let mut path = Vec::new();
        key_path(&self.root, offset, &mut path);
        ConfigError {
            file: self.path.to_owned(),
            line: Some(line_of(self.text, offset)),
            key: path.join("."),
            message,
        }
    }

    /// Deserializes one value of this file, recording its errors. serde stops at the first
    /// error in a table, so the offending key is taken out and the table read again until it
    /// deserializes or the error cannot be pinned to a key: every bad key is reported at once.
    pub(super) fn value<T: DeserializeOwned>(
        &self,
        v: &Spanned<DeValue<'a>>,
        errors: &mut Vec<ConfigError>,
    ) -> Option<T> {
        self.value_with(v, errors, |d| T::deserialize(d))
    }

    pub(super) fn value_with<T>(
        &self,
        v: &Spanned<DeValue<'a>>,
        errors: &mut Vec<ConfigError>,
        f: impl Fn(ValueDeserializer<'a>) -> Result<T, toml::de::Error>,
    ) -> Option<T> {
        let mut v = v.clone();
        let mut failed = false;
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..64 {
            let e = match f(ValueDeserializer::from(v.clone())) {
                Ok(t) => return (!failed).then_some(t),
                Err(e) => e,
            };
            failed = true;
            let span = e.span().unwrap_or_else(|| v.span());
            let message = e.message().trim().to_owned();
            let DeValue::Table(table) = v.get_mut() else {
                errors.push(self.error_at(span.start, message));
                return None;
            };
            // The key the error is about: the one whose key or value holds the error's span, or,
            // for errors reported on the whole table, the one the message names.
            let named = message.split('`').nth(1).unwrap_or("").to_owned();
            if message.starts_with("missing field") && removed.contains(&named) {
                // Only a consequence of taking out a key already reported.
                return None;
            }
            let culprit = table
                .iter()
                .find(|(k, val)| k.span().contains(&span.start) || contains(val, span.start))
                .or_else(|| table.iter().find(|(k, _)| **k.get_ref() == *named))
                .map(|(k, _)| k.clone());
            match culprit {
                Some(k) => {
                    let at = if table.get(&k).is_some_and(|val| contains(val, span.start))
                        || k.span().contains(&span.start)
                    {
                        span.start
                    } else {
                        k.span().start
                    };
                    errors.push(self.error_at(at, message));
                    removed.push(k.get_ref().to_string());
                    table.remove(&k);
                }
                None => {
                    errors.push(self.error_at(span.start, message));
                    return None;
                }
            }
        }
        None
    }

    /// `[[source.KIND]]` tables: each read on its own, then checked as a whole; ids must be
    /// unique across every kind.
    pub(super) fn sources(
        &self,
        v: &Spanned<DeValue<'a>>,
        base: &Path,
        out: &mut SourcesConfig,
        errors: &mut Vec<ConfigError>,
    ) {
        let DeValue::Table(kinds) = v.get_ref() else {
            errors.push(self.error_at(
                v.span().start,
                "`source` holds [[source.file]], [[source.journald]], [[source.syslog]], [[source.exec]] and [[source.probe]] tables".into(),
            ));
            return;
        };
        let mut seen: std::collections::HashMap<String, usize> = Default::default();
        for (kind, items) in kinds.iter() {
            let kind_name: &str = kind.get_ref();
            let DeValue::Array(items) = items.get_ref() else {
                errors.push(self.error_at(
                    items.span().start,
                    format!(
                        "`source.{kind_name}` must be an array of tables ([[source.{kind_name}]])"
                    ),
                ));
                continue;
            };
            for item in items {
                let DeValue::Table(table) = item.get_ref() else {
                    errors.push(
                        self.error_at(item.span().start, "each source must be a table".into()),
                    );
                    continue;
                };
                let at = |key: &str| {
                    table
                        .iter()
                        .find(|(k, _)| &**k.get_ref() == key)
                        .map(|(_, v)| v.span().start)
                        .unwrap_or(item.span().start)
                };
                let mut problems = Vec::new();
                let id = match kind_name {
                    "file" => self
                        .value::<source::FileSourceConfig>(item, errors)
                        .map(|mut s| {
                            problems =
                                source::validate_parsing(&s.parsing(), Some(s.max_line_bytes));
                            if let Err(e) = glob::Pattern::new(&s.path) {
                                problems.push(("path", format!("invalid glob `{}`: {e}", s.path)));
                            }
                            if s.max_files == 0 {
                                problems.push(("max_files", "must be at least 1".to_owned()));
                            }
                            s.path = base.join(&s.path).to_string_lossy().into_owned();
                            let id = s.id.clone();
                            out.file.push(s);
                            id
                        }),
                    "journald" => self
                        .value::<source::JournaldSourceConfig>(item, errors)
                        .map(|mut s| {
                            problems = s.problems();
                            s.directory = s.directory.map(|d| base.join(d));
                            let id = s.id.clone();
                            out.journald.push(s);
                            id
                        }),
                    "syslog" => self
                        .value::<source::SyslogSourceConfig>(item, errors)
                        .map(|s| {
                            problems = source::validate_parsing(&s.parsing(), None);
                            let id = s.id.clone();
                            out.syslog.push(s);
                            id
                        }),
                    "exec" => self
                        .value::<source::ExecSourceConfig>(item, errors)
                        .map(|s| {
                            problems =
                                source::validate_parsing(&s.parsing(), Some(s.max_line_bytes));
                            if s.command.first().is_none_or(|c| c.is_empty()) {
                                problems.push(("command", "name the program to run".into()));
                            }
                            let id = s.id.clone();
                            out.exec.push(s);
                            id
                        }),
                    "probe" => self
                        .value::<source::ProbeSourceConfig>(item, errors)
                        .map(|s| {
                            problems = source::validate_probe(&s);
                            let id = s.id.clone();
                            out.probe.push(s);
                            id
                        }),
                    other => {
                        errors.push(self.error_at(
                            kind.span().start,
                            format!("unknown source kind `{other}` (expected file, journald, syslog, exec or probe)"),
                        ));
                        break;
                    }
                };
                for (key, message) in problems {
                    errors.push(self.error_at(at(key), message));
                }
                if let Some(id) = id {
                    let line = line_of(self.text, item.span().start);
                    if id.is_empty()
                        || !id
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                    {
                        errors.push(self.error_at(
                            at("id"),
                            format!(
                                "source id `{id}` may only hold letters, digits, '-', '_' and '.'"
                            ),
                        ));
                    } else if let Some(first) = seen.insert(id.clone(), line) {
                        errors.push(self.error_at(
                            at("id"),
                            format!("duplicate source id `{id}` (first defined at line {first})"),
                        ));
                    }
                }
            }
        }
    }

    /// Each `[[rule]]` is read on its own; its keys are split into the shared ones and the
    /// kind's own so both halves can refuse unknown keys.
    /// The tables of an array of tables (`[[name]]`) with their spans; anything else in it
    /// is reported.
    pub(super) fn array_tables<'v>(
        &self,
        v: &'v Spanned<DeValue<'a>>,
        name: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<(&'v DeTable<'a>, std::ops::Range<usize>)> {
        let DeValue::Array(items) = v.get_ref() else {
            errors.push(self.error_at(
                v.span().start,
                format!("`{name}` must be an array of tables ([[{name}]])"),
            ));
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| match item.get_ref() {
                DeValue::Table(t) => Some((t, item.span())),
                _ => {
                    errors.push(
                        self.error_at(item.span().start, format!("each {name} must be a table")),
                    );
                    None
                }
            })
            .collect()
    }

    /// An array of tables, each read on its own, with where it starts.
    pub(super) fn array_of<T: DeserializeOwned>(
        &self,
        v: &Spanned<DeValue<'a>>,
        name: &str,
        errors: &mut Vec<ConfigError>,
    ) -> Vec<(T, usize)> {
        let DeValue::Array(items) = v.get_ref() else {
            errors.push(self.error_at(
                v.span().start,
                format!("`{name}` must be an array of tables ([[{name}]])"),
            ));
            return Vec::new();
        };
        items
            .iter()
            .filter_map(|item| {
                self.value::<T>(item, errors)
                    .map(|t| (t, item.span().start))
            })
            .collect()
    }

    /// `[[action]]` tables: policy keys and the operation read apart (each refusing unknown
    /// keys), then checked for their kind.
    pub(super) fn actions(
        &self,
        v: &Spanned<DeValue<'a>>,
        out: &mut Vec<ActionConfig>,
        errors: &mut Vec<ConfigError>,
    ) {
        for (table, span) in self.array_tables(v, "action", errors) {
            let (common, op) = split_keys(table, &action::COMMON_KEYS, &[]);
            let as_value = |t: DeTable<'a>| Spanned::new(span.clone(), DeValue::Table(t));
            let common: Option<action::ActionCommon> = self.value(&as_value(common), errors);
            let op: Option<action::Operation> = self.value(&as_value(op), errors);
            let (Some(common), Some(op)) = (common, op) else {
                continue;
            };
            let at = |key: &str| {
                table
                    .iter()
                    .find(|(k, _)| &**k.get_ref() == key)
                    .map_or(span.start, |(k, _)| k.span().start)
            };
            let mut problems = op.problems();
            if let Some(r) = &common.revert {
                problems.extend(
                    r.problems()
                        .into_iter()
                        .map(|(_, m)| ("revert", format!("revert: {m}"))),
                );
            }
            if common.revert_after.is_some() && common.revert.is_none() {
                problems.push(("revert_after", "`revert_after` needs a `revert`".into()));
            }
            if common.max_runs == 0 {
                problems.push(("max_runs", "must be at least 1".into()));
            }
            if out.iter().any(|a| a.common.id == common.id) {
                problems.push(("id", format!("action `{}` is defined twice", common.id)));
            }
            let before = errors.len();
            for (key, message) in problems {
                errors.push(self.error_at(at(key), message));
            }
            if errors.len() == before {
                out.push(ActionConfig {
                    origin: format!("{}:{}", self.path.display(), line_of(self.text, span.start)),
                    common,
                    op,
                });
            }
        }
    }

    /// `[[service]]` tables: unique names, known dependencies, no cycles.
    pub(super) fn services(
        &self,
        v: &Spanned<DeValue<'a>>,
        out: &mut Vec<ServiceConfig>,
        errors: &mut Vec<ConfigError>,
    ) {
        let DeValue::Array(items) = v.get_ref() else {
            errors.push(self.error_at(
                v.span().start,
                "`service` must be an array of tables ([[service]])".into(),
            ));
            return;
        };
        let mut spans = Vec::new();
        for item in items {
            if let Some(s) = self.value::<ServiceConfig>(item, errors) {
                if let Some(i) = out.iter().position(|o| o.name == s.name) {
                    errors.push(self.error_at(
                        item.span().start,
                        format!(
                            "service `{}` is defined twice (first at line {})",
                            s.name,
                            line_of(self.text, spans[i])
                        ),
                    ));
                    continue;
                }
                spans.push(item.span().start);
                out.push(s);
            }
        }
        for (s, at) in out.iter().zip(&spans) {
            for d in &s.depends_on {
                if d == &s.name {
                    errors.push(
                        self.error_at(*at, format!("service `{}` depends on itself", s.name)),
                    );
                } else if !out.iter().any(|o| &o.name == d) {
                    errors.push(self.error_at(
                        *at,
                        format!(
                            "service `{}` depends on `{d}`, which no [[service]] table defines",
                            s.name
                        ),
                    ));
                }
            }
        }
        if let Some(cycle) = crate::incident::correlate::find_cycle(out) {
            let at = out
                .iter()
                .position(|s| s.name == cycle[0])
                .map_or(v.span().start, |i| spans[i]);
            errors.push(self.error_at(
                at,
                format!(
                    "services depend on each other in a cycle: {}",
                    cycle.join(" → ")
                ),
            ));
        }
    }

    pub(super) fn rules(
        &self,
        v: &Spanned<DeValue<'a>>,
        out: &mut Vec<RuleConfig>,
        errors: &mut Vec<ConfigError>,
    ) {
        for (table, span) in self.array_tables(v, "rule", errors) {
            // `kind` is read on its own below.
            let (common, kind) = split_keys(table, &COMMON_KEYS, &["kind"]);
            let origin = format!("{}:{}", self.path.display(), line_of(self.text, span.start));
            let as_value = |t: DeTable<'a>| Spanned::new(span.clone(), DeValue::Table(t));
            let common: Option<RuleCommon> = self.value(&as_value(common), errors);
            let kind = match table.iter().find(|(k, _)| &**k.get_ref() == "kind") {
                None => {
                    errors.push(self.error_at(
                        span.start,
                        format!("missing key `kind` (one of {})", RuleKindConfig::KINDS),
                    ));
                    None
                }
                Some((_, val)) => {
                    let name = val.get_ref().as_str().unwrap_or("").to_owned();
                    let unknown = RuleKindConfig::deserialize(
                        &name,
                        ValueDeserializer::from(as_value(DeTable::new())),
                    )
                    .is_none();
                    if unknown {
                        errors.push(self.error_at(val.span().start, format!(
                            "rule kind `{name}` is not available in this version (available: {})",
                            RuleKindConfig::KINDS
                        )));
                        None
                    } else {
                        self.value_with(&as_value(kind), errors, |d| {
                            RuleKindConfig::deserialize(&name, d).unwrap_or_else(|| {
                                Err(serde::de::Error::custom(format!(
                                    "unknown rule kind `{name}`"
                                )))
                            })
                        })
                    }
                }
            };
            if let (Some(common), Some(kind)) = (common, kind) {
                let rule = RuleConfig {
                    common,
                    kind,
                    origin,
                };
                for (key, message) in crate::engine::rule::validate(&rule) {
                    let offset = table
                        .iter()
                        .find(|(k, _)| &**k.get_ref() == key)
                        .map(|(_, v)| v.span().start)
                        .unwrap_or(span.start);
                    errors.push(self.error_at(offset, message));
                }
                out.push(rule);
            }
        }
    }
}

pub(super) fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

/// True when `offset` lies in `v` (for tables and arrays: in any of their keys or values;
/// a `[table]`'s own span covers only its header).
pub(super) fn contains(v: &Spanned<DeValue<'_>>, offset: usize) -> bool {
    v.span().contains(&offset)
        || match v.get_ref() {
            DeValue::Table(t) => t
                .iter()
                .any(|(k, v)| k.span().contains(&offset) || contains(v, offset)),
            DeValue::Array(items) => items.iter().any(|i| contains(i, offset)),
            _ => false,
        }
}

/// Fills `path` with the keys leading to `offset`, naming array elements by their `id` when
/// they have one.
pub(super) fn key_path(table: &DeTable<'_>, offset: usize, path: &mut Vec<String>) {
    for (k, v) in table.iter() {
        let name: &DeString<'_> = k.get_ref();
        if k.span().contains(&offset) {
            path.push(name.to_string());
            return;
        }
        if contains(v, offset) {
            path.push(name.to_string());
            descend(v, offset, path);
            return;
        }
    }
}

pub(super) fn descend(v: &Spanned<DeValue<'_>>, offset: usize, path: &mut Vec<String>) {
    match v.get_ref() {
        DeValue::Table(t) => key_path(t, offset, path),
        DeValue::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                if contains(item, offset) {
                    let label = match item.get_ref() {
                        DeValue::Table(t) => t
                            .iter()
                            .find(|(k, _)| &**k.get_ref() == "id" || &**k.get_ref() == "name")
                            .and_then(|(_, v)| v.get_ref().as_str().map(str::to_owned)),
                        _ => None,
                    }
                    .unwrap_or_else(|| i.to_string());
                    if let Some(last) = path.last_mut() {
                        last.push_str(&format!("[{label}]"));
                    }
                    descend(item, offset, path);
                    return;
                }
            }
        }
        _ => {}
    }
}
