//! `incidentctl rules import-fail2ban`: a fail2ban configuration read as fail2ban reads it
//! ([`ini`]), its jails made into incidentd rules and nftables ban actions, its Python
//! patterns made into this engine's ([`pyre`]).
//!
//! A jail becomes a `threshold` rule: `maxretry` failures per address (`labels.ip`, from
//! `<HOST>`) within `findtime`, its `failregex` lines as the rule's list of patterns (each
//! inside `prefregex` when the filter has one), `ignoreregex` as `message = { not_regex }`,
//! `ignoreip` as `labels.ip = { not_cidr }` (host names as `not_in`), the filter's `_daemon`
//! as `fields.program`; and an action that adds the address to an nftables set and takes it
//! out after `bantime`. Filters are read for syslog-parsed messages: the line's
//! `host program[pid]: ` prefix (`__prefix_line`) is what the syslog and journald sources
//! split off, so it is read as empty. Nothing is dropped silently: every pattern that could
//! not be translated, every informational line (`<F-NOFAIL>`), every setting with no
//! equivalent is in the report, and a jail whose patterns all fail is refused with them.

pub mod ini;
pub mod pyre;

use std::collections::BTreeMap;
use std::path::Path;

use ini::{Ini, IniError};

/// What stops an import as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read the jails: {0}")]
    Jails(#[source] IniError),
    #[error("no jail named {name} (there are: {known})")]
    UnknownJail { name: String, known: String },
}

/// One jail: imported (with what the report says of it), or refused and why.
#[derive(Debug)]
pub struct Jail {
    pub name: String,
    pub filter: String,
    pub outcome: Result<Imported, String>,
}

#[derive(Debug)]
pub struct Imported {
    pub rule: toml::Table,
    pub action: toml::Table,
    /// What was translated approximately, left out, or has no equivalent.
    pub notes: Vec<String>,
}

/// A filter's patterns in this engine's syntax.
#[derive(Debug, Default)]
pub struct Filter {
    pub patterns: Vec<String>,
    pub ignore: Vec<String>,
    /// `_daemon`, as a pattern on the program name.
    pub daemon: Option<String>,
    pub notes: Vec<String>,
    /// Patterns not imported: (the pattern as fail2ban has it, why).
    pub refused: Vec<(String, String)>,
}

/// The host as fail2ban's `<HOST>` finds it (an IPv4 or IPv6 address, or a host name).
/// The address comes first and must end where a word ends (else `attacker.example` would
/// give `a`); a name is tried when the rest of the pattern refuses that reading. (A name of
/// hex letters with nothing after `<HOST>`, `bad.example`, still reads as `bad`.)
const HOST: &str = r"(?P<ip>(?:::f{4,6}:)?[0-9A-Fa-f:.]*[0-9A-Fa-f]\b|[\w.-]*\w)";
/// The group `<F-NOFAIL>` and `<F-MLFGAINED>` become: what they mark is not a failure.
const NOFAIL: &str = "f2b_nofail";
const ADDR: &str = r"(?P<ip>(?:::f{4,6}:)?[0-9A-Fa-f:.]*[0-9A-Fa-f]\b)";

/// Reads `dir/jail.conf` (and the rest) and imports `only` (or every enabled jail).
pub fn import(dir: &Path, only: &[String]) -> Result<Vec<Jail>, ImportError> {
    let jails = Ini::read_resource(&dir.join("jail")).map_err(ImportError::Jails)?;
    let names: Vec<String> = jails
        .sections
        .iter()
        .map(|(n, _)| n.clone())
        .filter(|n| !n.starts_with("KNOWN/"))
        .collect();
    let none = BTreeMap::new();
    let chosen: Vec<String> = if only.is_empty() {
        names
            .iter()
            .filter(|n| {
                jails
                    .get(n, "enabled", &none)
                    .ok()
                    .flatten()
                    .is_some_and(|v| is_true(&v))
            })
            .cloned()
            .collect()
    } else {
        for n in only {
            if !names.contains(n) {
                return Err(ImportError::UnknownJail {
                    name: n.clone(),
                    known: names.join(", "),
                });
            }
        }
        only.to_vec()
    };
    Ok(chosen
        .into_iter()
        .map(|name| jail(dir, &jails, &name))
        .collect())
}

fn is_true(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "yes" | "1" | "on"
    )
}

fn jail(dir: &Path, jails: &Ini, name: &str) -> Jail {
    let none = BTreeMap::new();
    let get = |k: &str| jails.get(name, k, &none).ok().flatten();
    let spec = get("filter").unwrap_or_else(|| name.to_owned());
    let spec = spec.lines().next().unwrap_or("").trim().to_owned();
    let (filter_name, params) = split_filter(&spec);
    let outcome = (|| {
        let filter = load_filter(dir, &filter_name, &params)?;
        if filter.patterns.is_empty() {
            let why: Vec<String> = filter
                .refused
                .iter()
                .map(|(p, r)| format!("`{p}`: {r}"))
                .collect();
            return Err(format!(
                "no failregex could be imported{}",
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", why.join("; "))
                }
            ));
        }
        if !filter.patterns.iter().any(|p| p.contains("(?P<ip>")) {
            return Err("no failregex has <HOST> or <ADDR>: nothing to count per address".into());
        }
        build(name, &filter_name, &filter, &get)
    })();
    Jail {
        name: name.to_owned(),
        filter: spec,
        outcome,
    }
}

/// `sshd[mode=aggressive, x="a,b"]` → (`sshd`, {mode: aggressive, x: a,b}).
fn split_filter(spec: &str) -> (String, BTreeMap<String, String>) {
    let Some((name, rest)) = spec.split_once('[') else {
        return (spec.to_owned(), BTreeMap::new());
    };
    let args = rest.strip_suffix(']').unwrap_or(rest);
    let mut out = BTreeMap::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut parts = Vec::new();
    for c in args.chars() {
        match (c, quote) {
            ('"' | '\'', None) => quote = Some(c),
            (q, Some(open)) if q == open => quote = None,
            (',', None) => parts.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    parts.push(cur);
    for p in parts {
        if let Some((k, v)) = p.split_once('=') {
            out.insert(k.trim().to_lowercase(), v.trim().to_owned());
        }
    }
    (name.trim().to_owned(), out)
}

/// Reads `filter.d/NAME` with the jail's arguments and translates its patterns.
pub fn load_filter(
    dir: &Path,
    name: &str,
    params: &BTreeMap<String, String>,
) -> Result<Filter, String> {
    let ini = Ini::read_resource(&dir.join("filter.d").join(name)).map_err(|e| e.to_string())?;
    // [Init] holds the defaults of the filter's arguments; the jail's arguments win.
    let mut over: BTreeMap<String, String> = ini.section("Init").cloned().unwrap_or_default();
    over.extend(params.clone());
    over.insert("__prefix_line".into(), String::new());
    let opt = |key: &str| -> Result<Option<String>, String> {
        let v = ini
            .get("Definition", key, &over)
            .map_err(|e| e.to_string())?;
        v.map(|v| tags(&ini, &v, &over)).transpose()
    };
    let mut f = Filter::default();
    let lines = |v: Option<String>| -> Vec<String> {
        v.map(|v| {
            v.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
    };
    let prefregex = opt("prefregex")?.filter(|p| !p.trim().is_empty());
    let failregex = lines(opt("failregex")?);
    let ignoreregex = lines(opt("ignoreregex")?);
    if failregex.is_empty() {
        return Err("the filter has no failregex".into());
    }
    for fr in failregex {
        match pattern(&fr, prefregex.as_deref()) {
            Ok(t) => {
                f.patterns.push(t.pattern);
                f.notes.extend(t.notes.0);
                f.ignore.extend(t.marked);
            }
            Err(why) if why == pyre::NOT_A_FAILURE => f.notes.push(format!(
                "`{fr}` matches only lines that are not failures (<F-NOFAIL>, <F-MLFGAINED>): left out"
            )),
            Err(why) => f.refused.push((fr, why)),
        }
    }
    for ir in ignoreregex {
        match pattern(&ir, prefregex.as_deref()) {
            Ok(t) => {
                f.ignore.push(t.pattern);
                f.notes.extend(t.notes.0);
            }
            Err(why) => f.refused.push((ir, format!("ignoreregex: {why}"))),
        }
    }
    if let Some(d) = opt("_daemon")?
        && !matches!(d.trim(), "" | r"\S*" | r"\S+" | ".*")
    {
        match pyre::translate(d.trim()) {
            Ok((p, _)) => f.daemon = Some(format!("^(?:{p})$")),
            Err(e) => f.notes.push(format!("_daemon `{d}` not used: {e}")),
        }
    }
    if let Some(m) = opt("maxlines")?
        && m.trim().parse::<u32>().is_ok_and(|n| n > 1)
    {
        f.notes.push(format!(
            "maxlines = {} (multi-line matching) has no equivalent: each line is matched alone",
            m.trim()
        ));
    }
    let mut seen = std::collections::HashSet::new();
    f.notes.retain(|n| seen.insert(n.clone()));
    if let Some(j) = opt("journalmatch")?.filter(|j| !j.trim().is_empty()) {
        f.notes.push(format!(
            "journalmatch `{}`: use a [[source.journald]] with the matching units or identifiers",
            j.trim()
        ));
    }
    Ok(f)
}

/// The longest a value may grow while its tags are replaced.
const MAX_TAGGED_BYTES: usize = 1 << 20;

/// Replaces `<name>` tags that name an option (`<mode>`, `<mdre-<mode>>`, `<lt_file/x>`),
/// innermost first, until none is left; fail2ban's pattern tags (`<HOST>`, `<F-USER>`…)
/// stay for [`regex_tags`].
fn tags(ini: &Ini, text: &str, over: &BTreeMap<String, String>) -> Result<String, String> {
    let mut s = text.to_owned();
    // Tags that are not options are hidden here while the rest are replaced.
    let mut hidden: Vec<String> = Vec::new();
    for _ in 0..200 {
        let Some((start, end)) = innermost_tag(&s) else {
            break;
        };
        let name = &s[start + 1..end];
        let value = if let Some((sec, key)) = name.split_once('/') {
            if sec.eq_ignore_ascii_case("known") {
                ini.interpolate("Definition", &format!("%(known/{key})s"), over, 0)
                    .ok()
                    .filter(|v| !v.starts_with("%("))
            } else {
                ini.get(sec, key, over).ok().flatten()
            }
        } else if is_pattern_tag(name) {
            None
        } else {
            ini.get("Definition", name, over).ok().flatten()
        };
        match value {
            // A value that names itself grows with each round.
            Some(v) if s.len() + v.len() > MAX_TAGGED_BYTES => {
                return Err(format!("tags expand past {MAX_TAGGED_BYTES} bytes"));
            }
            Some(v) => s.replace_range(start..=end, &v),
            None => {
                let marker = format!("\u{1}{}\u{2}", hidden.len());
                hidden.push(s[start..=end].to_owned());
                s.replace_range(start..=end, &marker);
            }
        }
    }
    for (i, h) in hidden.iter().enumerate().rev() {
        s = s.replace(&format!("\u{1}{i}\u{2}"), h);
    }
    if s.contains('\u{1}') {
        return Err("tags nest too deeply".into());
    }
    Ok(s)
}

fn is_pattern_tag(name: &str) -> bool {
    let n = name.trim_start_matches('/');
    matches!(
        n,
        "HOST" | "ADDR" | "IP4" | "IP6" | "DNS" | "CIDR" | "SUBNET" | "SKIPLINES"
    ) || n.starts_with("F-")
}

/// The first `<…>` holding no other `<` whose name looks like an option or a tag.
fn innermost_tag(s: &str) -> Option<(usize, usize)> {
    let b = s.as_bytes();
    let mut open = None;
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'<' => open = Some(i),
            b'>' => {
                if let Some(o) = open {
                    let name = &s[o + 1..i];
                    if !name.is_empty()
                        && name
                            .bytes()
                            .all(|c| c.is_ascii_alphanumeric() || b"_-/.".contains(&c))
                    {
                        return Some((o, i));
                    }
                    open = None;
                }
            }
            _ => {}
        }
    }
    None
}

/// One failregex (inside `prefregex`'s content, if any) in this engine's syntax.
fn pattern(fr: &str, prefregex: Option<&str>) -> Result<pyre::Translation, String> {
    if fr.contains("<SKIPLINES>") {
        return Err("<SKIPLINES> matches across lines: no equivalent here".into());
    }
    let whole = match prefregex {
        Some(pre) => {
            let (a, rest) = pre
                .split_once("<F-CONTENT>")
                .ok_or("prefregex has no <F-CONTENT>")?;
            let (_, b) = rest
                .split_once("</F-CONTENT>")
                .ok_or("prefregex's <F-CONTENT> is not closed")?;
            // fail2ban searches the content from its start: a failregex not anchored at its
            // end may leave the rest of the line unmatched.
            // (fail2ban searches it: an unanchored one may also start further in).
            let (open_start, fr) = match fr.strip_prefix('^') {
                Some(rest) => ("", rest),
                None => (".*?", fr),
            };
            let open_end = if fr.ends_with('$') { "" } else { ".*" };
            format!("{a}{open_start}(?:{fr}){open_end}{b}")
        }
        None => fr.to_owned(),
    };
    let tagged = regex_tags(&whole)?;
    let t = pyre::translate_excluding(&tagged, Some(NOFAIL)).map_err(|e| e.0)?;
    let compiled = regex::Regex::new(&crate::de::number_repeated_names(&t.pattern));
    match compiled {
        Ok(_) => Ok(t),
        Err(e) => Err(format!(
            "does not compile here: {}",
            e.to_string().lines().last().unwrap_or("").trim()
        )),
    }
}

/// fail2ban's pattern tags as named groups: `<HOST>`/`<ADDR>`/`<IP4>`/`<IP6>`/`<DNS>`/
/// `<SUBNET>` → `ip`, `<F-USER>…</F-USER>` (and `<F-ALT_USER…>`) → `user`, other
/// `<F-NAME>` → `name`; `<F-MLFID>`, `<F-MLFFORGET>` and `<F-CONTENT>` group only.
fn regex_tags(p: &str) -> Result<String, String> {
    let mut out = String::with_capacity(p.len() + 64);
    let mut rest = p;
    while let Some(i) = rest.find('<') {
        // `(?P<name>` names a group; it is no tag.
        if rest[..i].ends_with("(?P") || rest[..i].ends_with("(?") {
            out.push_str(&rest[..=i]);
            rest = &rest[i + 1..];
            continue;
        }
        out.push_str(&rest[..i]);
        let t = &rest[i..];
        let Some(end) = t.find('>') else {
            out.push_str(t);
            rest = "";
            break;
        };
        let name = &t[1..end];
        let replaced = match name {
            "HOST" => Some(HOST.to_owned()),
            "ADDR" => Some(ADDR.to_owned()),
            "IP4" => Some(r"(?P<ip>\d{1,3}(?:\.\d{1,3}){3})".to_owned()),
            "IP6" => Some(r"(?P<ip>[0-9A-Fa-f]*:[0-9A-Fa-f:.]*[0-9A-Fa-f])".to_owned()),
            "DNS" => Some(r"(?P<ip>[\w.-]*\w)".to_owned()),
            "SUBNET" => Some(format!(r"{ADDR}(?:/\d{{1,3}})?")),
            "CIDR" => Some(r"(?P<cidr>\d{1,3})".to_owned()),
            n if n.starts_with("/F-") => Some(")".to_owned()),
            n if n.starts_with("F-") => {
                let f = &n[2..];
                Some(match f {
                    "NOFAIL" | "MLFGAINED" => format!("(?P<{NOFAIL}>"),
                    "MLFID" | "MLFFORGET" | "CONTENT" => "(?:".to_owned(),
                    _ => {
                        let lower = f.to_ascii_lowercase();
                        let base = lower
                            .strip_prefix("alt_")
                            .map(|s| s.trim_end_matches(|c: char| c.is_ascii_digit()))
                            .unwrap_or(&lower);
                        format!("(?P<{}>", base.replace('-', "_"))
                    }
                })
            }
            // Anything else (`<NOSRV>` in HAProxy's log) is text, as fail2ban leaves it.
            _ => None,
        };
        match replaced {
            Some(r) => {
                out.push_str(&r);
                rest = &t[end + 1..];
            }
            None => {
                out.push('<');
                rest = &t[1..];
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// fail2ban's times: seconds, or numbers with s/m/h/d/w/mo/y (summed); -1 is forever.
pub fn seconds(v: &str) -> Option<i64> {
    let v = v.trim();
    if let Ok(n) = v.parse::<i64>() {
        return Some(n);
    }
    let re = regex::Regex::new(r"(?i)(\d+(?:\.\d+)?)\s*(mo(?:nths?)?|y(?:ears?)?|w(?:eeks?)?|d(?:ays?)?|h(?:ours?)?|m(?:in(?:utes?)?)?|s(?:ec(?:onds?)?)?)?").ok()?;
    let mut total = 0f64;
    let mut any = false;
    for c in re.captures_iter(v) {
        let n: f64 = c[1].parse().ok()?;
        let unit = c
            .get(2)
            .map(|m| m.as_str().to_ascii_lowercase())
            .unwrap_or_default();
        let mult = match unit.chars().next() {
            None | Some('s') => 1.0,
            Some('m') if unit.starts_with("mo") => 30.0 * 86400.0,
            Some('m') => 60.0,
            Some('h') => 3600.0,
            Some('d') => 86400.0,
            Some('w') => 7.0 * 86400.0,
            Some('y') => 365.0 * 86400.0,
            _ => return None,
        };
        total += n * mult;
        any = true;
    }
    any.then_some(total as i64)
}

fn build(
    jail: &str,
    filter_name: &str,
    f: &Filter,
    get: &dyn Fn(&str) -> Option<String>,
) -> Result<Imported, String> {
    use toml::Value;
    let mut notes = f.notes.clone();
    for (p, why) in &f.refused {
        notes.push(format!("not imported: `{p}`: {why}"));
    }
    let maxretry = get("maxretry")
        .and_then(|v| v.trim().parse::<i64>().ok())
        .unwrap_or(5)
        .max(1);
    let findtime = get("findtime").and_then(|v| seconds(&v)).unwrap_or(600);
    if findtime <= 0 {
        return Err(format!("findtime must be positive, not {findtime}"));
    }
    let bantime = get("bantime").and_then(|v| seconds(&v)).unwrap_or(600);
    let id: String = jail
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.:".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut where_ = toml::Table::new();
    where_.insert("kind".into(), "log".into());
    if let Some(d) = &f.daemon {
        let mut c = toml::Table::new();
        c.insert("regex".into(), Value::String(d.clone()));
        where_.insert("fields.program".into(), Value::Table(c));
    }
    if !f.ignore.is_empty() {
        let mut c = toml::Table::new();
        c.insert(
            "not_regex".into(),
            Value::Array(f.ignore.iter().cloned().map(Value::String).collect()),
        );
        where_.insert("message".into(), Value::Table(c));
    }
    let ignore = get("ignoreip").unwrap_or_default();
    let (mut nets, mut hosts) = (Vec::new(), Vec::new());
    for entry in ignore
        .split([' ', ',', '\n', '\t'])
        .filter(|e| !e.is_empty())
    {
        if crate::engine::config::Networks::parse(entry).is_ok() {
            nets.push(Value::String(entry.to_owned()));
        } else {
            hosts.push(Value::String(entry.to_owned()));
        }
    }
    // One condition per key: networks as not_cidr; host names alone as not_in.
    let mut ip = toml::Table::new();
    if !nets.is_empty() {
        ip.insert("not_cidr".into(), Value::Array(nets));
        if !hosts.is_empty() {
            let names: Vec<String> = hosts
                .iter()
                .filter_map(|h| h.as_str().map(str::to_owned))
                .collect();
            notes.push(format!(
                "ignoreip host names ({}) are not applied beside its networks: list their addresses",
                names.join(", ")
            ));
        }
    } else if !hosts.is_empty() {
        notes.push("ignoreip host names are compared with the address as written (no DNS)".into());
        ip.insert("not_in".into(), Value::Array(hosts));
    }
    if !ip.is_empty() {
        where_.insert("labels.ip".into(), Value::Table(ip));
    }
    if get("ignoreself").is_none_or(|v| is_true(&v)) {
        notes.push(
            "ignoreself: this host's own addresses are not excluded by themselves; add them to ignoreip"
                .into(),
        );
    }
    let mut labels = toml::Table::new();
    labels.insert("category".into(), "security".into());
    labels.insert("fail2ban_jail".into(), Value::String(jail.to_owned()));
    let action_id = format!("f2b-ban-{id}");
    let mut rule = toml::Table::new();
    rule.insert("id".into(), Value::String(format!("f2b-{id}")));
    rule.insert("kind".into(), "threshold".into());
    rule.insert("severity".into(), "high".into());
    rule.insert(
        "description".into(),
        Value::String(format!(
            "fail2ban jail {jail} (filter {filter_name}), imported"
        )),
    );
    rule.insert("where".into(), Value::Table(where_));
    rule.insert(
        "regex".into(),
        Value::Array(f.patterns.iter().cloned().map(Value::String).collect()),
    );
    rule.insert("group_by".into(), Value::Array(vec!["ip".into()]));
    rule.insert("threshold".into(), Value::Integer(maxretry));
    rule.insert("window".into(), Value::String(format!("{findtime}s")));
    rule.insert(
        "summary".into(),
        Value::String(format!(
            "{{{{ count }}}} failures from {{{{ labels.ip }}}} (fail2ban jail {jail})"
        )),
    );
    rule.insert("labels".into(), Value::Table(labels));
    rule.insert(
        "actions".into(),
        Value::Array(vec![Value::String(action_id.clone())]),
    );
    let nft = |verb: &str| {
        Value::Array(
            [
                "nft",
                verb,
                "element",
                "inet",
                "filter",
                "banned",
                "{ {{ labels.ip }} }",
            ]
            .into_iter()
            .map(|s| Value::String(s.to_owned()))
            .collect(),
        )
    };
    let mut action = toml::Table::new();
    action.insert("id".into(), Value::String(action_id));
    action.insert("kind".into(), "exec".into());
    action.insert("command".into(), nft("add"));
    if bantime > 0 {
        let mut revert = toml::Table::new();
        revert.insert("kind".into(), "exec".into());
        revert.insert("command".into(), nft("delete"));
        action.insert("revert".into(), Value::Table(revert));
        action.insert("revert_after".into(), Value::String(format!("{bantime}s")));
    } else {
        notes.push("bantime is negative (forever): the ban is never lifted".into());
    }
    action.insert("safe".into(), Value::Boolean(true));
    action.insert("auto_even_for_sev1".into(), Value::Boolean(true));
    for k in ["bantime.increment", "bantime.factor", "bantime.maxtime"] {
        if get(k).is_some_and(|v| is_true(&v) || k != "bantime.increment") {
            notes.push(format!(
                "{k}: growing ban times have no equivalent; the ban is {bantime}s"
            ));
        }
    }
    Ok(Imported {
        rule,
        action,
        notes,
    })
}

/// The imported jails as a config fragment (actions and rules, for the main config), each
/// jail's report as comments above its tables; refused jails as comments only.
pub fn render(jails: &[Jail], source: &Path) -> String {
    let mut out = format!(
        "# Imported from fail2ban ({}) by `incidentctl rules import-fail2ban`.\n\
         # Append to the main config (it holds [[action]] tables as well as [[rule]]s). The ban\n\
         # action adds the address to an nftables set `banned` (type ipv4_addr) in table\n\
         # `inet filter`; create it and a drop rule for it, and give the unit CAP_NET_ADMIN\n\
         # (the remediation drop-in). IPv6 addresses need a set of type ipv6_addr.\n",
        source.display()
    );
    for j in jails {
        out.push_str(&format!("\n# Jail {} (filter {}): ", j.name, j.filter));
        match &j.outcome {
            Err(why) => out.push_str(&format!("refused: {}\n", comment(why))),
            Ok(imp) => {
                out.push_str("imported.\n");
                for n in &imp.notes {
                    out.push_str(&format!("#   {}\n", comment(n)));
                }
                let mut doc = toml::Table::new();
                doc.insert(
                    "action".into(),
                    toml::Value::Array(vec![toml::Value::Table(imp.action.clone())]),
                );
                doc.insert(
                    "rule".into(),
                    toml::Value::Array(vec![toml::Value::Table(imp.rule.clone())]),
                );
                out.push_str(&toml::to_string(&doc).unwrap_or_default());
            }
        }
    }
    out
}

fn comment(s: &str) -> String {
    s.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_filter_arguments() {
        assert_eq!(seconds("600"), Some(600));
        assert_eq!(seconds("10m"), Some(600));
        assert_eq!(seconds("1h 30m"), Some(5400));
        assert_eq!(seconds("1d"), Some(86400));
        assert_eq!(seconds("2w"), Some(14 * 86400));
        assert_eq!(seconds("1mo"), Some(30 * 86400));
        assert_eq!(seconds("-1"), Some(-1));
        let (n, p) = split_filter(r#"sshd[mode=aggressive, x="a,b"]"#);
        assert_eq!(n, "sshd");
        assert_eq!(p["mode"], "aggressive");
        assert_eq!(p["x"], "a,b");
    }

    /// A value that names itself grows with each of the 200 rounds: refused once past 1 MiB.
    #[test]
    fn a_tag_that_names_itself_is_refused_before_it_grows() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("grow.conf");
        std::fs::write(&f, format!("[Definition]\nx = <x>{}\n", "a".repeat(10_000))).unwrap();
        let ini = Ini::read_resource(&dir.path().join("grow")).unwrap();
        let e = tags(&ini, "<x>", &BTreeMap::new()).unwrap_err();
        assert!(e.contains("expand past 1048576 bytes"), "{e}");
    }

    #[test]
    fn a_jail_with_prefregex_tags_and_modes_becomes_a_rule() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("filter.d")).unwrap();
        std::fs::write(
            d.join("filter.d/common.conf"),
            "[DEFAULT]\n__prefix_line = \\s*\\S+ sshd\\[\\d+\\]:\\s+\n",
        )
        .unwrap();
        std::fs::write(
            d.join("filter.d/demo.conf"),
            r#"[INCLUDES]
before = common.conf
[DEFAULT]
_daemon = sshd
[Definition]
prefregex = ^<F-MLFID>%(__prefix_line)s</F-MLFID>(?:error: )?<F-CONTENT>.+</F-CONTENT>$
cmn = ^Failed \S+ for <F-USER>\S+</F-USER> from <HOST>( port \d+)?\s*$
      ^<F-NOFAIL>Connection closed</F-NOFAIL> by <HOST>$
failregex = %(cmn)s
            <mdre-<mode>>
            ^(?<=x)y <HOST>$
mdre-normal =
mdre-extra = ^Did not receive identification string from <HOST>$
ignoreregex = for trusted from
mode = normal
"#,
        )
        .unwrap();
        std::fs::write(
            d.join("jail.conf"),
            "[DEFAULT]\nmaxretry = 5\nfindtime = 10m\nbantime = 1h\nfilter = %(__name__)s[mode=%(mode)s]\nmode = normal\n\n[demo]\nenabled = true\nmode = extra\nignoreip = 127.0.0.1/8 ::1 10.0.0.0/8\n\n[off]\nfilter = demo\n",
        )
        .unwrap();
        let jails = import(d, &[]).unwrap();
        assert_eq!(jails.len(), 1, "only the enabled jail");
        let j = &jails[0];
        let imp = j.outcome.as_ref().unwrap();
        let rule = &imp.rule;
        assert_eq!(rule["threshold"].as_integer(), Some(5));
        assert_eq!(rule["window"].as_str(), Some("600s"));
        assert_eq!(imp.action["revert_after"].as_str(), Some("3600s"));
        let pats: Vec<&str> = rule["regex"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(pats.len(), 2, "{pats:?}");
        let re = regex::Regex::new(&crate::de::number_repeated_names(
            &pats
                .iter()
                .map(|p| format!("(?:{p})"))
                .collect::<Vec<_>>()
                .join("|"),
        ))
        .unwrap();
        assert!(re.is_match("Failed password for root from 1.2.3.4 port 22"));
        assert!(re.is_match("error: Failed password for root from 2001:db8::1"));
        assert!(re.is_match("Did not receive identification string from 1.2.3.4"));
        assert!(!re.is_match("Connection closed by 1.2.3.4"));
        assert!(
            imp.notes.iter().any(|n| n.contains("F-NOFAIL")),
            "{:?}",
            imp.notes
        );
        assert!(
            imp.notes
                .iter()
                .any(|n| n.contains("not imported") && n.contains("look-behind")),
            "{:?}",
            imp.notes
        );
        let w = rule["where"].as_table().unwrap();
        assert_eq!(w["fields.program"]["regex"].as_str(), Some("^(?:sshd)$"));
        assert_eq!(
            w["labels.ip"]["not_cidr"].as_array().unwrap().len(),
            3,
            "{w:?}"
        );
        assert!(w["message"]["not_regex"].is_array());
        // The rendered fragment loads as a config.
        let text = render(&jails, d);
        let cfg = d.join("incidentd.toml");
        std::fs::create_dir(d.join("rules.d")).unwrap();
        std::fs::write(&cfg, format!("rules_dir = \"rules.d\"\n{text}")).unwrap();
        crate::config::load(&cfg).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert!(matches!(
            import(d, &["nope".into()]),
            Err(ImportError::UnknownJail { .. })
        ));
    }
}
