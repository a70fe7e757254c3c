//! Privilege preflight: whether this process can carry out each enabled action, checked at
//! `--check-config`, at start and at reload. Each problem is a warning naming the action and
//! what is missing — the command, a capability (CAP_NET_ADMIN for nft/ip/iptables, CAP_KILL to
//! signal other users' processes, CAP_SETUID for `user`), a writable path, polkit or root for
//! systemctl — shown in `/v1/status` and `incidentctl actions list`. Nothing is refused: an
//! action may only be used on a host where it works.

use std::path::{Path, PathBuf};

use super::config::{ActionConfig, ActionKind, Operation};

/// Capability numbers (linux/capability.h).
const CAP_KILL: u32 = 5;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;
const CAP_NET_ADMIN: u32 = 12;

/// Programs that change the firewall or the network over netlink.
const NETWORK_TOOLS: [&str; 7] = [
    "nft",
    "ip",
    "ip6tables",
    "iptables",
    "ipset",
    "iptables-restore",
    "ip6tables-restore",
];

/// Where the polkit rule that lets the incidentd user manage units may be.
const POLKIT_RULES: [&str; 2] = [
    "/usr/share/polkit-1/rules.d/50-incidentd.rules",
    "/etc/polkit-1/rules.d/50-incidentd.rules",
];

/// What this process may do.
#[derive(Debug, Clone)]
pub struct Privileges {
    pub uid: u32,
    /// The effective capability set (`CapEff` of /proc/self/status).
    pub effective: u64,
    /// `PATH` to look commands up in.
    pub path: Vec<PathBuf>,
    /// Whether a polkit rule for the incidentd user is installed.
    pub polkit_rule: bool,
}

impl Privileges {
    /// This process's.
    pub fn current() -> Privileges {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let effective = status
            .lines()
            .find_map(|l| l.strip_prefix("CapEff:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .unwrap_or(0);
        Privileges {
            uid: nix::unistd::geteuid().as_raw(),
            effective,
            path: std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).collect())
                .unwrap_or_else(|| {
                    [
                        "/usr/local/sbin",
                        "/usr/local/bin",
                        "/usr/sbin",
                        "/usr/bin",
                        "/sbin",
                        "/bin",
                    ]
                    .iter()
                    .map(PathBuf::from)
                    .collect()
                }),
            polkit_rule: POLKIT_RULES.iter().any(|p| Path::new(p).is_file()),
        }
    }

    fn has(&self, cap: u32) -> bool {
        self.effective & (1 << cap) != 0
    }

    /// The program `name` resolves to, if it exists and is executable.
    fn find(&self, name: &str) -> Option<PathBuf> {
        use std::os::unix::fs::PermissionsExt;
        let runnable = |p: &Path| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        };
        if name.contains('/') {
            let p = PathBuf::from(name);
            return runnable(&p).then_some(p);
        }
        self.path.iter().map(|d| d.join(name)).find(|p| runnable(p))
    }
}

/// One problem: which action, and what it lacks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    pub action: String,
    pub problem: String,
}

impl std::fmt::Display for Warning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "action {}: {}", self.action, self.problem)
    }
}

/// Every problem of every action (and its revert) under `p`.
pub fn check(actions: &[ActionConfig], p: &Privileges) -> Vec<Warning> {
    let mut out = Vec::new();
    for a in actions {
        let mut problems = Vec::new();
        operation(&a.op, p, &mut problems);
        if let Some(r) = &a.common.revert {
            let before = problems.len();
            operation(r, p, &mut problems);
            for m in &mut problems[before..] {
                *m = format!("revert: {m}");
            }
        }
        problems.dedup();
        out.extend(problems.into_iter().map(|problem| Warning {
            action: a.common.id.clone(),
            problem,
        }));
    }
    out
}

fn operation(op: &Operation, p: &Privileges, out: &mut Vec<String>) {
    let templated = |s: &str| s.contains("{{") || s.contains("{%");
    match op.kind {
        Some(ActionKind::Exec) => {
            let argv0 = if op.shell {
                "/bin/sh"
            } else {
                op.command.first().map_or("", String::as_str)
            };
            if !templated(argv0) {
                match p.find(argv0) {
                    None => out.push(format!(
                        "the command `{argv0}` is not found or not executable"
                    )),
                    Some(path) => {
                        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                        if NETWORK_TOOLS.contains(&name) && !p.has(CAP_NET_ADMIN) {
                            out.push(format!(
                                "`{name}` needs CAP_NET_ADMIN, which incidentd does not hold (enable the remediation drop-in)"
                            ));
                        }
                    }
                }
            }
            if let Some(user) = &op.user
                && !(p.has(CAP_SETUID) && p.has(CAP_SETGID))
            {
                out.push(format!(
                    "running as user `{user}` needs CAP_SETUID and CAP_SETGID, which incidentd does not hold"
                ));
            }
            // Paths the command names that exist but that this process cannot write (a
            // clean-up under ProtectSystem=strict, say).
            for arg in op.command.iter().skip(1) {
                if arg.starts_with('/')
                    && !templated(arg)
                    && Path::new(arg).exists()
                    && !writable(arg)
                {
                    out.push(format!(
                        "`{arg}` is not writable for incidentd (ReadWritePaths= in a drop-in)"
                    ));
                }
            }
            if let Some(cwd) = &op.cwd
                && !cwd.is_dir()
            {
                out.push(format!(
                    "the working directory {} does not exist",
                    cwd.display()
                ));
            }
        }
        Some(ActionKind::Systemd) => {
            if p.find("systemctl").is_none() {
                out.push("`systemctl` is not found".into());
            } else if p.uid != 0 && !p.polkit_rule {
                out.push(format!(
                    "systemctl as uid {} needs root or the polkit rule 50-incidentd.rules (with the units listed)",
                    p.uid
                ));
            }
        }
        Some(ActionKind::Signal) => {
            if !p.has(CAP_KILL) {
                out.push(format!(
                    "without CAP_KILL signals reach only processes of uid {} (enable the remediation drop-in)",
                    p.uid
                ));
            }
        }
        Some(ActionKind::Http) | None => {}
    }
}

/// Checks `actions` against this process, logs each problem and keeps them for `/v1/status`
/// and `GET /v1/actions`.
pub fn publish(actions: &[ActionConfig], telemetry: &crate::telemetry::Telemetry) {
    let warnings = check(actions, &Privileges::current());
    for w in &warnings {
        tracing::warn!(action = %w.action, problem = %w.problem, "action preflight");
    }
    *telemetry
        .preflight
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = warnings
        .into_iter()
        .map(|w| (w.action, w.problem))
        .collect();
}

/// Whether this process may write `path` (access(2) with W_OK).
fn writable(path: &str) -> bool {
    nix::unistd::access(path, nix::unistd::AccessFlags::W_OK).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[[action]]` tables split as the loader splits them (common keys, the operation).
    fn actions(text: &str) -> Vec<ActionConfig> {
        use serde::Deserialize;
        let doc: toml::Table = toml::from_str(text).unwrap();
        let tables = doc["action"].as_array().unwrap();
        tables
            .iter()
            .map(|t| {
                let (mut common, mut op) = (toml::Table::new(), toml::Table::new());
                for (k, v) in t.as_table().unwrap() {
                    if super::super::config::COMMON_KEYS.contains(&k.as_str()) {
                        common.insert(k.clone(), v.clone());
                    } else {
                        op.insert(k.clone(), v.clone());
                    }
                }
                ActionConfig {
                    common: super::super::config::ActionCommon::deserialize(toml::Value::Table(
                        common,
                    ))
                    .unwrap(),
                    op: Operation::deserialize(toml::Value::Table(op)).unwrap(),
                    origin: "test".into(),
                }
            })
            .collect()
    }

    const SHIPPED_LIKE: &str = r#"
[[action]]
id = "ban"
kind = "exec"
command = ["nft", "add", "element", "inet", "filter", "banned", "{ {{ labels.ip }} }"]
safe = true

[[action]]
id = "reap"
kind = "signal"
mode = "zombies"

[[action]]
id = "as-user"
kind = "exec"
command = ["true"]
user = "nobody"

[[action]]
id = "gone"
kind = "exec"
command = ["/nonexistent/tool"]
"#;

    fn with(effective: u64, uid: u32) -> Privileges {
        let dir = tempfile::tempdir().unwrap().keep();
        for tool in ["nft", "true", "systemctl"] {
            let p = dir.join(tool);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        Privileges {
            uid,
            effective,
            path: vec![dir],
            polkit_rule: false,
        }
    }

    #[test]
    fn an_empty_capability_set_is_named_per_action() {
        let w = check(&actions(SHIPPED_LIKE), &with(0, 1000));
        let said: Vec<String> = w.iter().map(|w| w.to_string()).collect();
        assert!(
            said.iter()
                .any(|s| s.starts_with("action ban:") && s.contains("CAP_NET_ADMIN")),
            "{said:#?}"
        );
        assert!(
            said.iter()
                .any(|s| s.starts_with("action reap:") && s.contains("CAP_KILL")),
            "{said:#?}"
        );
        assert!(
            said.iter()
                .any(|s| s.starts_with("action as-user:") && s.contains("CAP_SETUID")),
            "{said:#?}"
        );
        assert!(
            said.iter()
                .any(|s| s.starts_with("action gone:") && s.contains("not found")),
            "{said:#?}"
        );
    }

    #[test]
    fn the_drop_ins_capabilities_silence_the_warnings() {
        let caps = 1 << CAP_NET_ADMIN | 1 << CAP_KILL | 1 << CAP_SETUID | 1 << CAP_SETGID;
        let w = check(&actions(SHIPPED_LIKE), &with(caps, 1000));
        assert_eq!(
            w.iter().map(|w| w.action.as_str()).collect::<Vec<_>>(),
            ["gone"],
            "{w:#?}"
        );
    }

    #[test]
    fn systemctl_needs_root_or_the_polkit_rule() {
        let a = actions("[[action]]\nid = \"r\"\nkind = \"systemd\"\nunit = \"x.service\"\n");
        assert_eq!(check(&a, &with(0, 1000)).len(), 1);
        assert!(check(&a, &with(0, 0)).is_empty());
        let mut p = with(0, 1000);
        p.polkit_rule = true;
        assert!(check(&a, &p).is_empty());
    }
}
