//! `[[source.file]]`, `[[source.journald]]`, `[[source.syslog]]`, `[[source.exec]]` and
//! `[[source.probe]]` tables.
//!
//! Every source has an `id` (unique across all sources: it names the source in events,
//! `/v1/status` and checkpoints). Line sources share the parsing keys of [`Parsing`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::de::{Pattern, duration, octal_mode, positive_duration};

/// All configured sources.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SourcesConfig {
    pub file: Vec<FileSourceConfig>,
    pub journald: Vec<JournaldSourceConfig>,
    pub syslog: Vec<SyslogSourceConfig>,
    pub exec: Vec<ExecSourceConfig>,
    pub probe: Vec<ProbeSourceConfig>,
}

impl SourcesConfig {
    /// Every source id with its table name, in config order.
    pub fn ids(&self) -> impl Iterator<Item = (&'static str, &str)> {
        let f = self.file.iter().map(|s| ("file", s.id.as_str()));
        let j = self.journald.iter().map(|s| ("journald", s.id.as_str()));
        let y = self.syslog.iter().map(|s| ("syslog", s.id.as_str()));
        let e = self.exec.iter().map(|s| ("exec", s.id.as_str()));
        let p = self.probe.iter().map(|s| ("probe", s.id.as_str()));
        f.chain(j).chain(y).chain(e).chain(p)
    }
}

/// How a line becomes an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LineFormat {
    /// The line is the message.
    Raw,
    /// A JSON object per line: event keys are used where present (`ts`/`time`/`timestamp`,
    /// `level`, `message`/`msg`, ...), every other key becomes a field.
    Json,
    /// `key=value key2="quoted value"` pairs, mapped like `json`.
    Logfmt,
    /// RFC 3164 (year inferred) or RFC 5424.
    Syslog,
    /// `pattern`'s named groups become fields (`ts`, `level`, `message`, `host`, `service` are
    /// taken as those event keys).
    Regex,
    /// `journalctl -o json` records: unit, priority, message, realtime timestamp.
    Journald,
}

impl LineFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            LineFormat::Raw => "raw",
            LineFormat::Json => "json",
            LineFormat::Logfmt => "logfmt",
            LineFormat::Syslog => "syslog",
            LineFormat::Regex => "regex",
            LineFormat::Journald => "journald",
        }
    }
}

/// The parsing keys shared by line sources, gathered from their tables.
#[derive(Clone, Debug, PartialEq)]
pub struct Parsing {
    pub format: LineFormat,
    pub pattern: Option<Pattern>,
    /// The event kind of parsed lines (default `log`) unless the line names one.
    pub kind: String,
    pub service: Option<String>,
    pub labels: BTreeMap<String, String>,
}

impl Parsing {
    /// The parsing of a source whose format is fixed (syslog, journald).
    fn fixed(
        format: LineFormat,
        kind: &str,
        service: &Option<String>,
        labels: &BTreeMap<String, String>,
    ) -> Parsing {
        Parsing {
            format,
            pattern: None,
            kind: kind.to_owned(),
            service: service.clone(),
            labels: labels.clone(),
        }
    }
}

fn default_kind() -> String {
    "log".into()
}

/// `max_line_bytes` of a file source, and `rules test --max-line-bytes`, by default.
pub const DEFAULT_MAX_LINE_BYTES: usize = 65536;

fn default_max_line() -> usize {
    DEFAULT_MAX_LINE_BYTES
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

/// Where a file seen for the first time (with no checkpoint) is read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    End,
    Beginning,
}

/// `[[source.file]]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSourceConfig {
    pub id: String,
    /// A path or a glob (`/var/log/nginx/*.log`); relative to the config's folder.
    pub path: String,
    pub format: LineFormat,
    #[serde(default)]
    pub pattern: Option<Pattern>,
    #[serde(default)]
    pub read_from: ReadFrom,
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Longer lines are cut to this many bytes and counted as `oversize`.
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
    /// How often files are checked without a change notification (and the glob re-run).
    #[serde(default = "one_second", deserialize_with = "positive_duration")]
    pub poll_interval: Duration,
    /// Lines that no rule could match are counted (`skipped`) and not parsed, when every
    /// rule allows it (see `source::line_filter`). Off: every line becomes an event.
    #[serde(default = "yes")]
    pub skip_unmatched: bool,
    /// The most paths of the glob looked at (in the glob's order); the others are not
    /// followed, and that is said. Each followed file holds a descriptor and up to
    /// `max_line_bytes` of a line not yet ended.
    #[serde(default = "default_max_files")]
    pub max_files: usize,
}

fn yes() -> bool {
    true
}

fn default_max_files() -> usize {
    1024
}

/// The parsing keys of a line source's table.
macro_rules! parsing_of {
    ($t:ty) => {
        impl $t {
            pub fn parsing(&self) -> Parsing {
                Parsing {
                    format: self.format,
                    pattern: self.pattern.clone(),
                    kind: self.kind.clone(),
                    service: self.service.clone(),
                    labels: self.labels.clone(),
                }
            }
        }
    };
}

parsing_of!(FileSourceConfig);

/// `[[source.journald]]`: the systemd journal (or a journal folder), read with `journalctl`,
/// its cursor checkpointed with the rule windows so nothing is read twice or lost across
/// restarts.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JournaldSourceConfig {
    pub id: String,
    /// A journal folder (`journalctl --directory`); the system journal when unset.
    #[serde(default)]
    pub directory: Option<PathBuf>,
    /// Units whose entries are read (`_SYSTEMD_UNIT`; `ssh` means `ssh.service`); any of them.
    #[serde(default)]
    pub units: Vec<String>,
    /// Syslog identifiers whose entries are read (`SYSLOG_IDENTIFIER`); any of them. With
    /// `units` too, an entry must match both lists.
    #[serde(default)]
    pub identifiers: Vec<String>,
    /// Entries at this priority or more urgent: a name (`emerg` … `debug`), a number 0–7, or
    /// a range `FROM..TO`.
    #[serde(default)]
    pub priority: Option<String>,
    /// With no checkpointed cursor: the journal's end (only new entries) or its beginning.
    #[serde(default)]
    pub read_from: ReadFrom,
    /// How often the journal is read for new entries.
    #[serde(default = "one_second", deserialize_with = "positive_duration")]
    pub poll_interval: Duration,
    /// The `journalctl` program.
    #[serde(default = "default_journalctl")]
    pub journalctl: PathBuf,
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_journalctl() -> PathBuf {
    PathBuf::from("journalctl")
}

impl JournaldSourceConfig {
    pub fn parsing(&self) -> Parsing {
        Parsing::fixed(
            LineFormat::Journald,
            &self.kind,
            &self.service,
            &self.labels,
        )
    }

    /// Problems with the table's own keys, for the loader to place at file:line.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let Some(p) = &self.priority {
            let ok = |s: &str| {
                s.parse::<u8>().is_ok_and(|n| n <= 7)
                    || [
                        "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
                    ]
                    .contains(&s)
            };
            let valid = match p.split_once("..") {
                Some((a, b)) => ok(a) && ok(b),
                None => ok(p),
            };
            if !valid {
                out.push((
                    "priority",
                    format!(
                        "invalid priority `{p}` (a name emerg..debug, a number 0-7, or a range FROM..TO)"
                    ),
                ));
            }
        }
        for (key, list) in [("units", &self.units), ("identifiers", &self.identifiers)] {
            if list.iter().any(|u| u.is_empty() || u.starts_with('-')) {
                out.push((key, "names may not be empty or begin with '-'".into()));
            }
        }
        out
    }
}

/// `[[source.syslog]]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SyslogSourceConfig {
    pub id: String,
    /// Unix datagram socket; a relative name lives in `runtime_dir`.
    pub socket: PathBuf,
    #[serde(default = "default_socket_mode", deserialize_with = "octal_mode")]
    pub socket_mode: u32,
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn default_socket_mode() -> u32 {
    0o660
}

impl SyslogSourceConfig {
    pub fn parsing(&self) -> Parsing {
        Parsing::fixed(LineFormat::Syslog, &self.kind, &self.service, &self.labels)
    }
}

/// `[[source.exec]]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ExecSourceConfig {
    pub id: String,
    /// Program and arguments; no shell is involved.
    pub command: Vec<String>,
    pub format: LineFormat,
    #[serde(default)]
    pub pattern: Option<Pattern>,
    #[serde(default = "default_kind")]
    pub kind: String,
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default = "default_max_line")]
    pub max_line_bytes: usize,
    /// First wait before restarting a command that exited; doubled per quick exit.
    #[serde(default = "one_second", deserialize_with = "positive_duration")]
    pub restart_delay: Duration,
    #[serde(default = "one_minute", deserialize_with = "positive_duration")]
    pub max_restart_delay: Duration,
}

fn one_minute() -> Duration {
    Duration::from_secs(60)
}

parsing_of!(ExecSourceConfig);

/// One host check of a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeCheck {
    Memory,
    Disk,
    Load,
    Units,
    Processes,
    Zombies,
    Http,
    Tcp,
}

impl ProbeCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeCheck::Memory => "memory",
            ProbeCheck::Disk => "disk",
            ProbeCheck::Load => "load",
            ProbeCheck::Units => "units",
            ProbeCheck::Processes => "processes",
            ProbeCheck::Zombies => "zombies",
            ProbeCheck::Http => "http",
            ProbeCheck::Tcp => "tcp",
        }
    }
}

/// An HTTP check target.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpTarget {
    pub url: String,
    /// Status codes counted as up (default: any 2xx or 3xx).
    #[serde(default)]
    pub expect_status: Vec<u16>,
    #[serde(default)]
    pub service: Option<String>,
}

/// `[[source.probe]]`
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ProbeSourceConfig {
    pub id: String,
    #[serde(default = "thirty_seconds", deserialize_with = "positive_duration")]
    pub interval: Duration,
    pub checks: Vec<ProbeCheck>,
    /// Timeout of each network check (http, tcp) and of each systemctl call.
    #[serde(default = "five_seconds", deserialize_with = "positive_duration")]
    pub timeout: Duration,
    /// Mount points for `disk` (default: every local, real file system).
    #[serde(default)]
    pub mounts: Vec<PathBuf>,
    /// systemd units for `units`.
    #[serde(default)]
    pub units: Vec<String>,
    /// Process names (as in /proc/PID/comm) for `processes`.
    #[serde(default)]
    pub processes: Vec<String>,
    #[serde(default)]
    pub http: Vec<HttpTarget>,
    /// `host:port` addresses for `tcp`.
    #[serde(default)]
    pub tcp: Vec<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

fn five_seconds() -> Duration {
    Duration::from_secs(5)
}

/// Checks that need the whole table: what serde alone cannot say. Returns (key, message).
pub fn validate_parsing(p: &Parsing, max_line_bytes: Option<usize>) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    match (p.format, &p.pattern) {
        (LineFormat::Regex, None) => out.push((
            "format",
            "format \"regex\" needs a `pattern` with named groups".to_owned(),
        )),
        (LineFormat::Regex, Some(re)) if re.0.capture_names().flatten().next().is_none() => out
            .push((
                "pattern",
                "the pattern has no named groups (?P<name>...), so lines would carry nothing"
                    .to_owned(),
            )),
        (f, Some(_)) if f != LineFormat::Regex => out.push((
            "pattern",
            format!(
                "`pattern` is only used with format \"regex\", not \"{}\"",
                f.as_str()
            ),
        )),
        _ => {}
    }
    if p.kind.is_empty() {
        out.push(("kind", "must not be empty".to_owned()));
    }
    if let Some(m) = max_line_bytes
        && m < 16
    {
        out.push(("max_line_bytes", "must be at least 16".to_owned()));
    }
    out
}

/// Checks of a probe table.
pub fn validate_probe(p: &ProbeSourceConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let needs = |check: ProbeCheck, empty: bool, key: &'static str, out: &mut Vec<_>| {
        if p.checks.contains(&check) && empty {
            out.push((
                "checks",
                format!(
                    "check \"{}\" needs at least one entry in `{key}`",
                    check.as_str()
                ),
            ));
        }
    };
    needs(ProbeCheck::Units, p.units.is_empty(), "units", &mut out);
    needs(
        ProbeCheck::Processes,
        p.processes.is_empty(),
        "processes",
        &mut out,
    );
    needs(ProbeCheck::Http, p.http.is_empty(), "http", &mut out);
    needs(ProbeCheck::Tcp, p.tcp.is_empty(), "tcp", &mut out);
    if p.checks.is_empty() {
        out.push(("checks", "name at least one check".to_owned()));
    }
    for t in &p.http {
        if !(t.url.starts_with("http://") || t.url.starts_with("https://")) {
            out.push((
                "http",
                format!("`{}` is not an http:// or https:// URL", t.url),
            ));
        }
    }
    for a in &p.tcp {
        if a.rsplit_once(':')
            .is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err())
        {
            out.push(("tcp", format!("`{a}` is not a host:port address")));
        }
    }
    out
}

/// `[ingest]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// NDJSON ingest socket; a relative name lives in `runtime_dir`.
    pub socket: PathBuf,
    #[serde(deserialize_with = "octal_mode")]
    pub socket_mode: u32,
    /// The socket's group (a name); the daemon's own group when unset. Who can open the
    /// socket is decided by its mode and group; who may submit events by `allow`.
    pub socket_group: Option<String>,
    /// Roles whose connections may submit events (peer credentials, as on the control
    /// API); others are refused and counted as `forbidden`.
    pub allow: Vec<crate::access::Role>,
    /// Longer lines are rejected (counted as `oversize`) and skipped.
    pub max_line_bytes: usize,
    /// Concurrent ingest connections at most (admins' connections are not counted).
    pub max_connections: usize,
    /// Concurrent connections of one user other than an admin.
    pub max_connections_per_user: usize,
    /// A connection that sends nothing for this long is closed.
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            socket: PathBuf::from("ingest.sock"),
            socket_mode: 0o660,
            socket_group: None,
            allow: vec![crate::access::Role::Admin, crate::access::Role::Responder],
            max_line_bytes: 65536,
            max_connections: 256,
            max_connections_per_user: 16,
            idle_timeout: Duration::from_secs(300),
        }
    }
}
