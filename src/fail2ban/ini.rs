//! fail2ban's configuration files read as fail2ban reads them: Python's configparser
//! (sections, `key = value` or `key: value`, indented continuation lines, `#`/`;` comment
//! lines and ` ;` inline comments, lower-cased keys, `[DEFAULT]`), fail2ban's `[INCLUDES]`
//! (`before`/`after`, relative to the including file), `NAME.conf` followed by `NAME.d/*.conf`,
//! `NAME.local` and `NAME.d/*.local`, and `%(name)s` interpolation with fail2ban's
//! `%(section/name)s`, `%(known/name)s` (the value before the last override) and `__name__`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What went wrong reading a configuration.
#[derive(Debug, thiserror::Error)]
pub enum IniError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("`{name}` refers to itself through %(…)s interpolation, or nests too deeply")]
    Loop { name: String },
    #[error(
        "{path}: more than {MAX_READS} files read through [INCLUDES] (one included again and again?)"
    )]
    TooManyIncludes { path: PathBuf },
    #[error("{path}: larger than {MAX_FILE_BYTES} bytes; not a fail2ban configuration file")]
    TooLarge { path: PathBuf },
}

/// Files one resource may read with its includes: fail2ban's own read two to four. A file
/// included from both sides at every level of a chain would be read 2^n times.
const MAX_READS: usize = 256;
/// The largest configuration file read (fail2ban's largest filter is about 40 KB).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// Sections in the order first seen, each key → value, plus `[DEFAULT]` and the values
/// later files overrode (`known/`).
#[derive(Debug, Default, Clone)]
pub struct Ini {
    pub sections: Sections,
    pub defaults: BTreeMap<String, String>,
    known: BTreeMap<String, BTreeMap<String, String>>,
    /// Every file read, in order.
    pub files: Vec<PathBuf>,
}

/// A configuration file's text, refused when over [`MAX_FILE_BYTES`].
fn read_capped(path: &Path) -> Result<String, IniError> {
    use std::io::Read;
    let read = |source| IniError::Read {
        path: path.to_owned(),
        source,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(read)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(read)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(IniError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

impl Ini {
    /// Reads a resource: `base.conf`, `base.d/*.conf`, `base.local`, `base.d/*.local` (those
    /// that exist), each with its includes. None of them existing is an error.
    pub fn read_resource(base: &Path) -> Result<Ini, IniError> {
        let mut ini = Ini::default();
        let mut any = false;
        for ext in ["conf", "local"] {
            let file = base.with_extension(ext);
            if file.is_file() {
                ini.read_with_includes(&file, &mut Vec::new())?;
                any = true;
            }
            let dir = PathBuf::from(format!("{}.d", base.display()));
            if let Ok(entries) = std::fs::read_dir(&dir) {
                let mut names: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|e| e == ext))
                    .collect();
                names.sort();
                for p in names {
                    ini.read_with_includes(&p, &mut Vec::new())?;
                    any = true;
                }
            }
        }
        if !any {
            return Err(IniError::Read {
                path: base.with_extension("conf"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
            });
        }
        Ok(ini)
    }

    /// Reads `path` with what its `[INCLUDES]` names before and after it.
    fn read_with_includes(&mut self, path: &Path, seen: &mut Vec<PathBuf>) -> Result<(), IniError> {
        if seen.iter().any(|p| p == path) {
            return Ok(());
        }
        if self.files.len() >= MAX_READS {
            return Err(IniError::TooManyIncludes {
                path: path.to_owned(),
            });
        }
        let text = read_capped(path)?;
        let file = parse(path, &text)?;
        let includes = |key: &str| -> Vec<PathBuf> {
            file.iter()
                .find(|(n, _)| n == "INCLUDES")
                .and_then(|(_, s)| s.get(key))
                .map(|v| {
                    v.lines()
                        .map(str::trim)
                        .filter(|l| !l.is_empty())
                        .map(|l| {
                            let p = Path::new(l);
                            if p.is_absolute() {
                                p.to_owned()
                            } else {
                                path.parent().unwrap_or(Path::new(".")).join(p)
                            }
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        let (before, after) = (includes("before"), includes("after"));
        seen.push(path.to_owned());
        for p in before {
            // fail2ban skips an include that does not exist (`common.local` rarely does).
            if p.is_file() {
                self.read_with_includes(&p, seen)?;
            }
        }
        self.merge(file);
        self.files.push(path.to_owned());
        for p in after {
            if p.is_file() {
                self.read_with_includes(&p, seen)?;
            }
        }
        seen.pop();
        Ok(())
    }

    fn merge(&mut self, file: Sections) {
        for (name, values) in file {
            if name == "INCLUDES" {
                continue;
            }
            if name == "DEFAULT" {
                self.defaults.extend(values);
                continue;
            }
            match self.sections.iter_mut().find(|(n, _)| *n == name) {
                Some((_, old)) => {
                    let known = self.known.entry(name.clone()).or_default();
                    for (k, v) in values {
                        if let Some(prev) = old.insert(k.clone(), v) {
                            known.insert(k, prev);
                        }
                    }
                }
                None => self.sections.push((name, values)),
            }
        }
    }

    pub fn section(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s)
    }

    /// The raw value of `key` in `section`, else in `[DEFAULT]`.
    pub fn raw(&self, section: &str, key: &str) -> Option<&str> {
        self.section(section)
            .and_then(|s| s.get(key))
            .or_else(|| self.defaults.get(key))
            .map(String::as_str)
    }

    /// Every key `section` has (its own and `[DEFAULT]`'s).
    pub fn keys(&self, section: &str) -> Vec<String> {
        let mut k: Vec<String> = self.defaults.keys().cloned().collect();
        if let Some(s) = self.section(section) {
            k.extend(s.keys().cloned());
        }
        k.sort();
        k.dedup();
        k
    }

    /// The value of `key` in `section` with `%(…)s` interpolated; `over` (tried first) holds
    /// values that replace the configuration's (the jail's filter arguments, say).
    pub fn get(
        &self,
        section: &str,
        key: &str,
        over: &BTreeMap<String, String>,
    ) -> Result<Option<String>, IniError> {
        let raw = match over.get(key) {
            Some(v) => Some(v.as_str()),
            None => self.raw(section, key),
        };
        match raw {
            None => Ok(None),
            Some(v) => self.interpolate(section, v, over, 0).map(Some),
        }
    }

    /// Replaces each `%(name)s` in `text` (`%%` is a `%`).
    pub fn interpolate(
        &self,
        section: &str,
        text: &str,
        over: &BTreeMap<String, String>,
        depth: usize,
    ) -> Result<String, IniError> {
        if !text.contains('%') {
            return Ok(text.to_owned());
        }
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(i) = rest.find('%') {
            out.push_str(&rest[..i]);
            let tail = &rest[i..];
            if let Some(after) = tail.strip_prefix("%%") {
                out.push('%');
                rest = after;
                continue;
            }
            let name_end = tail
                .strip_prefix("%(")
                .and_then(|t| t.find(")s").map(|e| (t, e)));
            let Some((t, e)) = name_end else {
                // A lone % (in a regex, `%` is a literal): kept as written.
                out.push('%');
                rest = &tail[1..];
                continue;
            };
            let name = t[..e].to_lowercase();
            // configparser's own limit; it also bounds what doubling references can build.
            if depth > 10 || out.len() > 1 << 20 {
                return Err(IniError::Loop { name });
            }
            let value = self.lookup(section, &name, over);
            match value {
                Some(v) => out.push_str(&self.interpolate(section, &v, over, depth + 1)?),
                // Unknown names stay as written, as `<tags>` stay for the next stage.
                None => out.push_str(&tail[..e + 4]),
            }
            rest = &t[e + 2..];
        }
        out.push_str(rest);
        Ok(out)
    }

    fn lookup(&self, section: &str, name: &str, over: &BTreeMap<String, String>) -> Option<String> {
        if name == "__name__" {
            return Some(section.to_owned());
        }
        if let Some((sec, key)) = name.split_once('/') {
            return match sec {
                "known" => self
                    .known
                    .get(section)
                    .and_then(|k| k.get(key))
                    .cloned()
                    .or_else(|| self.defaults.get(key).cloned()),
                "default" => self.defaults.get(key).cloned(),
                _ => self
                    .sections
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(sec))
                    .and_then(|(_, s)| s.get(key))
                    .cloned(),
            };
        }
        over.get(name)
            .cloned()
            .or_else(|| self.raw(section, name).map(str::to_owned))
    }
}

/// Sections in file order: (name, key → value).
type Sections = Vec<(String, BTreeMap<String, String>)>;

/// One file's sections, in order, keys lower-cased.
fn parse(path: &Path, text: &str) -> Result<Sections, IniError> {
    let mut out: Vec<(String, BTreeMap<String, String>)> = Vec::new();
    let mut current: Option<(String, BTreeMap<String, String>)> = None;
    let mut last_key: Option<String> = None;
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if trimmed.is_empty() {
            // An empty line inside a value belongs to it; trailing ones are trimmed below.
            if let (Some((_, s)), Some(k)) = (&mut current, &last_key)
                && let Some(v) = s.get_mut(k)
            {
                v.push('\n');
            }
            continue;
        }
        let indented = line.starts_with(|c: char| c.is_whitespace());
        if indented && let (Some((_, s)), Some(k)) = (&mut current, &last_key) {
            let v = s.get_mut(k).expect("the key just set");
            v.push('\n');
            v.push_str(strip_inline_comment(trimmed));
            continue;
        }
        if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            if let Some(done) = current.take() {
                out.push(done);
            }
            current = Some((name.trim().to_owned(), BTreeMap::new()));
            last_key = None;
            continue;
        }
        let at = trimmed.find(['=', ':']).ok_or_else(|| IniError::Syntax {
            path: path.to_owned(),
            line: n + 1,
            message: format!("neither a section, an option nor a comment: `{trimmed}`"),
        })?;
        let (key, value) = (
            trimmed[..at].trim().to_lowercase(),
            trimmed[at + 1..].trim(),
        );
        let Some((_, s)) = &mut current else {
            return Err(IniError::Syntax {
                path: path.to_owned(),
                line: n + 1,
                message: format!("option `{key}` before any [section]"),
            });
        };
        s.insert(key.clone(), strip_inline_comment(value).to_owned());
        last_key = Some(key);
    }
    if let Some(done) = current.take() {
        out.push(done);
    }
    for (_, s) in &mut out {
        for v in s.values_mut() {
            let t = v.trim_end_matches('\n').len();
            v.truncate(t);
        }
    }
    Ok(out)
}

/// configparser with `inline_comment_prefixes = ";"`: a `;` after whitespace starts a comment.
fn strip_inline_comment(v: &str) -> &str {
    let b = v.as_bytes();
    for i in 1..b.len() {
        if b[i] == b';' && b[i - 1].is_ascii_whitespace() {
            return v[..i].trim_end();
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn includes_overrides_continuations_and_interpolation() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        std::fs::write(
            p.join("paths.conf"),
            "[DEFAULT]\nsshd_log = /var/log/auth.log\n",
        )
        .unwrap();
        std::fs::write(
            p.join("jail.conf"),
            "# comment\n[INCLUDES]\nbefore = paths.conf\n\n[DEFAULT]\nmaxretry = 5 ; inline\nfilter = %(__name__)s[mode=%(mode)s]\nmode = normal\n\n[sshd]\nlogpath = %(sshd_log)s\nport    = ssh\nfailregex = ^a <HOST>$\n            ^b 100%% <HOST>$\n\n\n[other]\nenabled: true\n",
        )
        .unwrap();
        std::fs::create_dir(p.join("jail.d")).unwrap();
        std::fs::write(
            p.join("jail.d/x.conf"),
            "[sshd]\nenabled = true\nport = 2222\n",
        )
        .unwrap();
        std::fs::write(
            p.join("jail.local"),
            "[sshd]\nport = %(known/port)s,2200\nMaxRetry = 3\n",
        )
        .unwrap();
        let ini = Ini::read_resource(&p.join("jail")).unwrap();
        let none = BTreeMap::new();
        let get = |s: &str, k: &str| ini.get(s, k, &none).unwrap();
        assert_eq!(get("sshd", "logpath").as_deref(), Some("/var/log/auth.log"));
        assert_eq!(get("sshd", "maxretry").as_deref(), Some("3"));
        assert_eq!(get("other", "maxretry").as_deref(), Some("5"));
        assert_eq!(get("sshd", "filter").as_deref(), Some("sshd[mode=normal]"));
        assert_eq!(get("sshd", "port").as_deref(), Some("2222,2200"));
        assert_eq!(get("sshd", "enabled").as_deref(), Some("true"));
        assert_eq!(get("other", "enabled").as_deref(), Some("true"));
        assert_eq!(
            get("sshd", "failregex").as_deref(),
            Some("^a <HOST>$\n^b 100% <HOST>$")
        );
        let mut over = BTreeMap::new();
        over.insert("mode".to_owned(), "aggressive".to_owned());
        assert_eq!(
            ini.get("sshd", "filter", &over).unwrap().as_deref(),
            Some("sshd[mode=aggressive]")
        );
        assert_eq!(ini.files.len(), 4, "{:?}", ini.files);
        std::fs::write(p.join("bad.conf"), "[a]\njust words\n").unwrap();
        let e = Ini::read_resource(&p.join("bad")).unwrap_err().to_string();
        assert!(
            e.ends_with("bad.conf:2: neither a section, an option nor a comment: `just words`"),
            "{e}"
        );
    }

    /// A chain of files each including the next from both sides would be read 2^n times; a
    /// file the size of a disk is not a configuration file. Both are refused with the path.
    #[test]
    fn includes_read_again_and_again_and_huge_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        for i in 0..20 {
            std::fs::write(
                p.join(format!("f{i}.conf")),
                format!(
                    "[INCLUDES]\nbefore = f{n}.conf\nafter = f{n}.conf\n[s]\nk{i} = v\n",
                    n = i + 1
                ),
            )
            .unwrap();
        }
        std::fs::write(p.join("f20.conf"), "[s]\nlast = v\n").unwrap();
        let e = Ini::read_resource(&p.join("f0")).unwrap_err().to_string();
        assert!(
            e.contains("more than 256 files read through [INCLUDES]"),
            "{e}"
        );
        // A chain of five such levels is read: 63 reads, each level reading the next twice.
        let ok = Ini::read_resource(&p.join("f15")).unwrap();
        assert_eq!(ok.files.len(), 63);
        let big = std::fs::File::create(p.join("big.conf")).unwrap();
        big.set_len(MAX_FILE_BYTES + 1).unwrap();
        let e = Ini::read_resource(&p.join("big")).unwrap_err().to_string();
        assert!(e.contains("big.conf: larger than 1048576 bytes"), "{e}");
    }
}
