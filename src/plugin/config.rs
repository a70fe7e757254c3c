//! `[[plugin]]` tables and the manifests they name (`plugins_dir/NAME/plugin.toml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::de::ConfigError;
use crate::de::positive_duration;
use crate::engine::config::Condition;

/// What a plugin does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PluginKind {
    /// Receives the events its `subscribe` table chooses; sends detections (and events).
    Detector,
    /// Sends events.
    Source,
}

/// `[[plugin]]` in the main config: enables a plugin found in `plugins_dir`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PluginTable {
    pub name: String,
    /// Appended to the manifest's command.
    #[serde(default)]
    pub args: Vec<String>,
    /// Added to (and over) the manifest's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Overrides the manifest's queue size.
    #[serde(default)]
    pub queue: Option<usize>,
}

/// `plugin.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub kind: PluginKind,
    /// Run in the plugin's folder; a relative program is looked up there first, then in PATH.
    pub command: Vec<String>,
    /// The events a detector receives (a `where` table; `{}` means every event).
    #[serde(default)]
    pub subscribe: Option<BTreeMap<String, Condition>>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Events waiting for the plugin; when full, events for it are dropped (and counted).
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// The protocol it speaks (only 1 exists).
    #[serde(default = "default_protocol")]
    pub protocol: u32,
    /// Its hello must come within this, or it is killed.
    #[serde(default = "default_hello", deserialize_with = "positive_duration")]
    pub hello_timeout: Duration,
    /// How often it gets a `tick`.
    #[serde(default = "default_tick", deserialize_with = "positive_duration")]
    pub tick_interval: Duration,
    /// Restart backoff: first delay, doubled up to the maximum.
    #[serde(default = "default_restart", deserialize_with = "positive_duration")]
    pub restart_delay: Duration,
    #[serde(
        default = "default_max_restart",
        deserialize_with = "positive_duration"
    )]
    pub max_restart_delay: Duration,
    /// After `shutdown`, how long it may take to exit before it is killed.
    #[serde(default = "default_grace", deserialize_with = "positive_duration")]
    pub shutdown_grace: Duration,
}

fn default_queue() -> usize {
    1024
}
fn default_protocol() -> u32 {
    1
}
fn default_hello() -> Duration {
    Duration::from_secs(5)
}
fn default_tick() -> Duration {
    Duration::from_secs(10)
}
fn default_restart() -> Duration {
    Duration::from_secs(1)
}
fn default_max_restart() -> Duration {
    Duration::from_secs(60)
}
fn default_grace() -> Duration {
    Duration::from_secs(5)
}

/// The protocol this build speaks.
pub const PROTOCOL: u32 = 1;

/// An enabled plugin: its table, its manifest, and its folder.
#[derive(Clone, Debug, PartialEq)]
pub struct PluginConfig {
    pub table: PluginTable,
    pub manifest: Manifest,
    pub dir: PathBuf,
}

impl PluginConfig {
    pub fn name(&self) -> &str {
        &self.table.name
    }

    pub fn queue(&self) -> usize {
        self.table.queue.unwrap_or(self.manifest.queue).max(1)
    }
}

/// Reads and checks `dir/plugin.toml`; errors carry the manifest's file and line.
pub fn load_manifest(dir: &Path, name: &str) -> Result<Manifest, Vec<ConfigError>> {
    let path = dir.join("plugin.toml");
    let err = |line: Option<usize>, key: &str, message: String| ConfigError {
        file: path.clone(),
        line,
        key: key.to_owned(),
        message,
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        vec![err(
            None,
            "",
            format!("cannot read the manifest of plugin `{name}`: {e}"),
        )]
    })?;
    let m: Manifest = toml::from_str(&text).map_err(|e| {
        let line = e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
        vec![err(line, "", e.message().to_owned())]
    })?;
    let line_of = |key: &str| {
        text.lines()
            .position(|l| l.trim_start().starts_with(key))
            .map(|i| i + 1)
    };
    let mut errors = Vec::new();
    if m.name != name {
        errors.push(err(
            line_of("name"),
            "name",
            format!(
                "the manifest says `{}`, but it is in the folder of plugin `{name}`",
                m.name
            ),
        ));
    }
    if m.command.is_empty() {
        errors.push(err(line_of("command"), "command", "needs a program".into()));
    }
    if m.protocol != PROTOCOL {
        errors.push(err(
            line_of("protocol"),
            "protocol",
            format!(
                "protocol {} is not spoken by this incidentd (it speaks {PROTOCOL})",
                m.protocol
            ),
        ));
    }
    match (m.kind, &m.subscribe) {
        (PluginKind::Detector, None) => errors.push(err(
            line_of("kind"),
            "subscribe",
            "a detector needs `subscribe`, a `where` table of the events it receives (`{}` for all)".into(),
        )),
        (PluginKind::Source, Some(_)) => errors.push(err(
            line_of("subscribe"),
            "subscribe",
            "a source receives no events; drop `subscribe`".into(),
        )),
        (_, Some(w)) => {
            if let Err(e) = crate::engine::Filter::new(w) {
                errors.push(err(line_of("subscribe"), "subscribe", e));
            }
        }
        _ => {}
    }
    for (key, message) in check_home(dir, &path, &m) {
        errors.push(err(line_of(key), key, message));
    }
    if errors.is_empty() {
        Ok(m)
    } else {
        Err(errors)
    }
}

/// A plugin name names a folder of `plugins_dir` and nothing else.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Plugins stay home, as sshd's StrictModes has it: the command is the plugin's own file or a
/// program found on PATH (an interpreter), never a path out of its folder; and the folder,
/// the manifest and the plugin's own files it runs are owned by root or the daemon's user
/// and writable by no one else.
fn check_home(dir: &Path, manifest: &Path, m: &Manifest) -> Vec<(&'static str, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let escapes = |p: &str| {
        Path::new(p).is_absolute()
            || Path::new(p)
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
    };
    if let Some(bad) = m.command.iter().find(|c| escapes(c)) {
        out.push((
            "command",
            format!(
                "`{bad}` leaves the plugin's folder; a command is a file of the folder or a program on PATH"
            ),
        ));
    }
    let me = nix::unistd::geteuid().as_raw();
    let mut own: Vec<std::path::PathBuf> = vec![dir.to_owned(), manifest.to_owned()];
    // The plugin's own files it runs: command elements naming a file in its folder.
    own.extend(
        m.command
            .iter()
            .map(|c| dir.join(c))
            .filter(|p| p.is_file()),
    );
    for p in own {
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        let key = if p == dir {
            "name"
        } else if p == manifest {
            "kind"
        } else {
            "command"
        };
        // Group-writable is fine for a user's private group (only the owner is in it), as
        // sshd allows: Debian gives users umask 002 with such groups.
        let private_group = || {
            let Some(owner) = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(meta.uid()))
                .ok()
                .flatten()
            else {
                return false;
            };
            // A user-private group: named after its user, the user's primary group, and no
            // listed members (a shared primary group such as `users` is not one).
            owner.gid.as_raw() == meta.gid()
                && nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(meta.gid()))
                    .ok()
                    .flatten()
                    .is_some_and(|g| g.mem.is_empty() && g.name == owner.name)
        };
        let loose = meta.mode() & 0o002 != 0 || (meta.mode() & 0o020 != 0 && !private_group());
        if loose {
            out.push((
                key,
                format!(
                    "{} is writable by group or others (mode {:o}); a plugin runs as the daemon, so only its owner may change it (chmod go-w)",
                    p.display(),
                    meta.mode() & 0o7777
                ),
            ));
        } else if meta.uid() != 0 && meta.uid() != me {
            out.push((
                key,
                format!(
                    "{} belongs to uid {}, neither root nor the daemon's user: another user could change what the daemon runs",
                    p.display(),
                    meta.uid()
                ),
            ));
        }
    }
    out
}
