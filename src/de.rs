//! Small serde helpers for config values: durations, compiled regexes, octal modes.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A humantime duration ("90s", "10m", "1h").
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    /// Longer than anything a rule or daemon setting needs; keeps time arithmetic far from
    /// overflow.
    const MAX: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    let s = String::deserialize(d)?;
    let v = humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "`{s}` is not a duration ({e}); use e.g. \"90s\", \"10m\", \"1h\""
        ))
    })?;
    if v > MAX {
        return Err(serde::de::Error::custom(format!(
            "`{s}` is longer than 100 years"
        )));
    }
    Ok(v)
}

/// A duration that must be longer than zero (windows, timeouts).
pub fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let v = duration(d)?;
    if v.is_zero() {
        return Err(serde::de::Error::custom("must be longer than zero"));
    }
    Ok(v)
}

/// A list of humantime durations (`["1h", "4h", "12h"]`), each longer than zero.
pub fn durations<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
    let items = Vec::<String>::deserialize(d)?;
    items
        .iter()
        .map(|s| {
            let v = humantime::parse_duration(s).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{s}` is not a duration ({e}); use e.g. \"90s\", \"10m\", \"1h\""
                ))
            })?;
            if v.is_zero() || v > Duration::from_secs(100 * 365 * 24 * 3600) {
                return Err(serde::de::Error::custom(format!(
                    "`{s}` must be longer than zero and at most 100 years"
                )));
            }
            Ok(v)
        })
        .collect()
}

pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// A regular expression compiled while the config is read, so a bad pattern is reported at
/// its own line.
#[derive(Clone)]
pub struct Pattern(pub regex::Regex);

impl Pattern {
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The label a named group fills: its name without the `__N` that
    /// [`number_repeated_names`] gave a repeated name.
    pub fn label_of(group: &str) -> &str {
        match group.rsplit_once(REPEAT_MARK) {
            Some((base, n)) if !base.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
            _ => group,
        }
    }
}

/// What separates a repeated group name from its number.
const REPEAT_MARK: &str = "__";

/// A named group may appear in several branches of one pattern (`Failed … from (?P<ip>…)|
/// Invalid user … from (?P<ip>…)`), as log patterns need and the regex crate refuses: the
/// second and later groups of a name are renamed `name__2`, `name__3`…, and
/// [`Pattern::label_of`] maps them back. The first group of the name that took part in the
/// match gives the label.
pub fn number_repeated_names(pattern: &str) -> std::borrow::Cow<'_, str> {
    let mut seen: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut out = String::with_capacity(pattern.len() + 8);
    let (mut last, mut changed) = (0, false);
    let bytes = pattern.as_bytes();
    let mut i = 0;
    let mut in_class = false;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => {
                i += 2;
                continue;
            }
            b'[' if !in_class => in_class = true,
            b']' if in_class => in_class = false,
            b'(' if !in_class => {
                let rest = &pattern[i..];
                let open = ["(?P<", "(?<"].into_iter().find(|o| rest.starts_with(o));
                if let Some(open) = open
                    && let Some(end) = rest[open.len()..].find('>')
                {
                    let name = &rest[open.len()..open.len() + end];
                    let n = seen.entry(name).or_insert(0);
                    *n += 1;
                    if *n > 1 {
                        let at = i + open.len() + end;
                        out.push_str(&pattern[last..at]);
                        out.push_str(&format!("{REPEAT_MARK}{n}"));
                        last = at;
                        changed = true;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    if !changed {
        return std::borrow::Cow::Borrowed(pattern);
    }
    out.push_str(&pattern[last..]);
    std::borrow::Cow::Owned(out)
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.0.as_str() == other.0.as_str()
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.0.as_str())
    }
}

/// A pattern as written: one string, or a list of alternatives (any of them matches).
#[derive(Deserialize)]
#[serde(untagged)]
enum PatternText {
    One(String),
    AnyOf(Vec<String>),
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = match PatternText::deserialize(d)? {
            PatternText::One(s) => s,
            PatternText::AnyOf(list) if list.is_empty() => {
                return Err(serde::de::Error::custom("an empty list of patterns"));
            }
            PatternText::AnyOf(mut list) if list.len() == 1 => list.remove(0),
            PatternText::AnyOf(list) => list
                .iter()
                .map(|p| format!("(?:{p})"))
                .collect::<Vec<_>>()
                .join("|"),
        };
        regex::Regex::new(&number_repeated_names(&s))
            .map(Pattern)
            .map_err(|e| {
                // regex's syntax errors span several lines (pattern, caret, reason): keep the reason.
                let text = e.to_string();
                let reason = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .trim();
                serde::de::Error::custom(format!(
                    "invalid regex `{s}`: {}",
                    reason.trim_start_matches("error: ")
                ))
            })
    }
}

impl serde::Serialize for Pattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A file mode written as an octal string ("0660").
pub fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let s = String::deserialize(d)?;
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            serde::de::Error::custom(format!("`{s}` is not an octal file mode such as \"0660\""))
        })
}

/// A secret: given inline, as `"${ENV_NAME}"` (read from the environment at load), or as
/// `{ file = "/path" }` (read at load, trailing newline dropped). Never logged, never shown.
#[derive(Clone, PartialEq, Default)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(…)")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            File { file: PathBuf },
        }
        match Raw::deserialize(d)? {
            Raw::Text(t) => match t.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
                Some(name) => std::env::var(name).map(Secret).map_err(|_| {
                    serde::de::Error::custom(format!("the environment variable {name} is not set"))
                }),
                None => Ok(Secret(t)),
            },
            Raw::File { file } => std::fs::read_to_string(&file)
                .map(|s| Secret(s.trim_end_matches(['\n', '\r']).to_owned()))
                .map_err(|e| {
                    serde::de::Error::custom(format!("cannot read {}: {e}", file.display()))
                }),
        }
    }
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Every problem found, in file order. Its `Display` is one error per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_group_name_is_numbered_and_maps_back() {
        let p = r"Failed \S+ for (?P<user>\S+) from (?P<ip>\S+)|Invalid user (?<user>\S+) from (?P<ip>[\d.]+)|(?P<ip>x)[(?P<ip>]\(?P<ip>";
        let n = number_repeated_names(p);
        assert_eq!(
            n,
            r"Failed \S+ for (?P<user>\S+) from (?P<ip>\S+)|Invalid user (?<user__2>\S+) from (?P<ip__2>[\d.]+)|(?P<ip__3>x)[(?P<ip>]\(?P<ip>"
        );
        let re = regex::Regex::new(&n).unwrap();
        let labels: Vec<&str> = re
            .capture_names()
            .flatten()
            .map(Pattern::label_of)
            .collect();
        assert_eq!(labels, ["user", "ip", "user", "ip", "ip"]);
        assert_eq!(Pattern::label_of("a__b"), "a__b");
        assert_eq!(Pattern::label_of("__2"), "__2");
        assert!(matches!(
            number_repeated_names("(?P<a>x)"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn a_list_of_patterns_is_any_of_them() {
        #[derive(Deserialize)]
        struct T {
            regex: Pattern,
        }
        let t: T = toml::from_str(
            r#"regex = ['^Failed \S+ for (?P<user>\S+) from (?P<ip>\S+)$', '^Invalid user (?P<user>.*?) from (?P<ip>\S+)$']"#,
        )
        .unwrap();
        let c = t
            .regex
            .0
            .captures("Invalid user a b from 10.0.0.1")
            .unwrap();
        let ip = t
            .regex
            .0
            .capture_names()
            .enumerate()
            .filter(|(_, n)| n.is_some_and(|n| Pattern::label_of(n) == "ip"))
            .find_map(|(i, _)| c.get(i))
            .map(|m| m.as_str());
        assert_eq!(ip, Some("10.0.0.1"));
        assert!(!t.regex.0.is_match("Failed password for a from"));
        assert!(toml::from_str::<T>("regex = []").is_err());
    }
}
