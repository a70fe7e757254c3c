//! `incidentctl`: the command-line client (DESIGN §3.6).
//!
//! Every verb maps to one control API call through [`client::Client`]; `rules check` runs
//! the config loader locally and needs no daemon. Human tables by default, `-o json` for
//! scripts. Exit codes: 0 ok, 1 failure (with the daemon's message), 2 usage (clap).

/// `println!` for a command's output: a reader that went away (`incidentctl … | head`) ends
/// the command quietly, as with any Unix filter, instead of a panic on the broken pipe.
/// Control characters that came from incident text are shown escaped (see
/// [`crate::cli::terminal_safe`]).
macro_rules! outln {
    () => {{
        use std::io::Write as _;
        $crate::cli::wrote(writeln!(std::io::stdout()));
    }};
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        $crate::cli::wrote(writeln!(std::io::stdout(), "{}", $crate::cli::terminal_safe(&text)));
    }};
}

/// `print!` for a command's output; see [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let text = format!($($arg)*);
        $crate::cli::wrote(write!(std::io::stdout(), "{}", $crate::cli::terminal_safe(&text)));
    }};
}

pub mod client;
pub mod output;
pub mod watch;

use std::io::Read;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};

use crate::clock::{Clock, SystemClock, Timestamp};
use crate::engine::RuleInfo;
use crate::incident::{Incident, TimelineEntry, Transition};
use crate::store::Page;
use client::{Client, ClientError};
use output::{ago, table};

/// What incidentctl prints, with control characters escaped: incident text (user names from
/// logs, summaries, labels) may hold escape sequences or newlines meant to rewrite the
/// terminal or forge lines. Kept: newlines and tabs of the output's own layout, the severity
/// colours and the screen clearing of `watch`, which incidentctl writes itself.
pub fn terminal_safe(s: &str) -> std::borrow::Cow<'_, str> {
    // watch clears the screen itself.
    const OURS: [&str; 7] = [
        output::COLOURS[0],
        output::COLOURS[1],
        output::COLOURS[2],
        output::COLOURS[3],
        output::COLOURS[4],
        "\x1b[H",
        "\x1b[2J",
    ];
    crate::escape::escape_controls(s, true, false, &OURS)
}

pub const DEFAULT_SOCKET: &str = "/run/incidentd/control.sock";

#[derive(Parser, Debug)]
#[command(
    name = "incidentctl",
    version,
    about = "Control incidentd: incidents, rules, events."
)]
pub struct Args {
    /// Control socket of the daemon.
    #[arg(long, global = true, env = "INCIDENTD_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Give up on the daemon after this long (connecting and answering), with a message.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: std::time::Duration,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Daemon version, uptime, queues, counters and the last reload.
    Status,
    /// Send NDJSON events (from files, or standard input) to the daemon.
    Send {
        /// Files of NDJSON events; `-` or none reads standard input.
        files: Vec<PathBuf>,
    },
    /// Raise an external alert: creates an incident, or joins the open one of the same key.
    Alert {
        /// Alerts with the same key share an incident.
        key: String,
        /// What is wrong.
        #[arg(required = true)]
        summary: Vec<String>,
        #[arg(long, default_value = "sev3")]
        severity: String,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        host: Option<String>,
        /// A label `key=value` (repeatable).
        #[arg(long, value_parser = key_value)]
        label: Vec<(String, String)>,
        #[arg(long)]
        runbook: Option<String>,
    },
    /// List incidents, newest first (or --sort).
    List {
        /// Status filter, comma-separated (`active` = open, acknowledged, mitigated).
        #[arg(long)]
        status: Option<String>,
        /// Severity filter, comma-separated.
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        service: Option<String>,
        /// Label filter `key:value` (repeatable).
        #[arg(long)]
        label: Vec<String>,
        /// Text in title, key or notes (case-insensitive).
        #[arg(short, long)]
        q: Option<String>,
        /// Order: newest (default), oldest, severity (worst first).
        #[arg(long)]
        sort: Option<String>,
        /// Created since: a duration ("2h") or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Follow the cursor through every page.
        #[arg(long)]
        all: bool,
    },
    /// Show one incident.
    Show { id: u64 },
    /// Show an incident's timeline.
    Timeline { id: u64 },
    /// Incidents sharing the key, the service or a correlation id with this one.
    Related { id: u64 },
    /// Write the whole incident log as NDJSON (one timeline entry per line, in log order).
    Export {
        /// Write to this file instead of standard output.
        #[arg(long)]
        to: Option<PathBuf>,
    },
    /// Write a post-mortem draft in Markdown.
    Postmortem { id: u64 },
    /// Counts, false positives, and time to detect, acknowledge and resolve.
    Stats {
        /// Only incidents created since: a duration ("7d") or an RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
    },
    /// Acknowledge an incident.
    Ack(TransitionArgs),
    /// Mark an incident mitigated.
    Mitigate(TransitionArgs),
    /// Resolve an incident.
    Resolve(TransitionArgs),
    /// Close an incident.
    Close(TransitionArgs),
    /// Cancel an incident (a false positive).
    Cancel(TransitionArgs),
    /// Reopen a resolved incident.
    Reopen(TransitionArgs),
    /// Add a note to an incident's timeline.
    Note { id: u64, text: Vec<String> },
    /// Change an incident's severity (admins).
    Severity {
        id: u64,
        /// sev1 (worst) to sev5; also critical, high, medium, low, info.
        severity: String,
        /// A note recorded with the change.
        #[arg(short = 'm', long = "message")]
        message: Option<String>,
    },
    /// Add tags to an incident (and remove others with --remove).
    Tag {
        id: u64,
        tags: Vec<String>,
        /// A tag to remove (repeatable).
        #[arg(long)]
        remove: Vec<String>,
    },
    /// Assign an incident to someone (or --clear the assignment).
    Assign {
        id: u64,
        #[arg(required_unless_present = "clear")]
        assignee: Option<String>,
        #[arg(long, conflicts_with = "assignee")]
        clear: bool,
    },
    /// Rules: list the loaded ones, or check files without a daemon.
    Rules {
        #[command(subcommand)]
        command: RulesCmd,
    },
    /// Reload the daemon's config and rules.
    Reload,
    /// A live view of the active incidents and their changes (Ctrl-C to quit). Through a
    /// pipe: one line per change; with -o json: one event per line.
    Watch {
        /// Start after this change number (replays what came since) instead of now.
        #[arg(long)]
        after: Option<u64>,
        /// Only these event types, comma-separated: incident_created, incident_updated,
        /// detection, action, notification.
        #[arg(long)]
        types: Option<String>,
    },
    /// Remediation actions: runs and approvals, dry-runs, runs by hand.
    Actions {
        #[command(subcommand)]
        command: ActionsCmd,
    },
    /// Silences: hold back notifications and automatic actions for matching incidents.
    Silence {
        #[command(subcommand)]
        command: SilenceCmd,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff), e.g. `incidentctl man > incidentctl.1`.
    Man,
}

#[derive(clap::Args, Debug)]
pub struct TransitionArgs {
    pub id: u64,
    /// A note recorded with the change.
    #[arg(short = 'm', long = "message")]
    pub message: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ActionsCmd {
    /// Action runs, newest first (pending approvals with --state pending).
    List {
        /// States, comma-separated: pending, denied, expired, running, succeeded, failed.
        #[arg(long)]
        state: Option<String>,
        /// Only this incident's runs.
        #[arg(long)]
        incident: Option<u64>,
    },
    /// Approve a pending run (admins); it runs at once and the answer is its result.
    Approve { id: u64 },
    /// Deny a pending run (admins).
    Deny {
        id: u64,
        #[arg(short = 'm', long = "message")]
        message: Option<String>,
    },
    /// Show exactly what an action would do for an incident, with no side effect.
    DryRun { incident: u64, action: String },
    /// Run an action for an incident now (admins).
    Run { incident: u64, action: String },
}

#[derive(Subcommand, Debug)]
pub enum SilenceCmd {
    /// Create a silence (admins). At least one matcher; --duration or --until.
    Add {
        /// Severities, comma-separated (sev1..sev4).
        #[arg(long)]
        severity: Option<String>,
        #[arg(long)]
        service: Option<String>,
        #[arg(long)]
        host: Option<String>,
        /// A rule whose detections feed the incident (`alert` for external alerts).
        #[arg(long)]
        rule: Option<String>,
        /// A label `key=value` the incident must carry (repeatable).
        #[arg(long, value_parser = key_value)]
        label: Vec<(String, String)>,
        /// How long from the start, e.g. 2h, 30m.
        #[arg(long, conflicts_with = "until", required_unless_present = "until")]
        duration: Option<String>,
        /// End time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// Start time (RFC 3339; default now).
        #[arg(long)]
        start: Option<String>,
        /// Why (required).
        #[arg(short = 'c', long)]
        comment: String,
    },
    /// List silences, newest first.
    List {
        /// States, comma-separated: active, pending, expired (default all).
        #[arg(long)]
        state: Option<String>,
    },
    /// End a silence now (admins); it stays listed as expired for a while.
    Rm { id: u64 },
}

#[derive(Subcommand, Debug)]
pub enum RulesCmd {
    /// The loaded rules with kind, severity and counts.
    List,
    /// Validate a config file (and its rules.d) without a daemon; exit 1 on any error.
    Check {
        #[arg(default_value = "/etc/incidentd/incidentd.toml")]
        config: PathBuf,
    },
    /// Replay a log or NDJSON file offline through the engine, on event time, and print what
    /// would fire.
    Test {
        /// The input file (`-` for standard input).
        file: PathBuf,
        /// A config file (with its rules_dir), a rules file, or a folder of rules files.
        #[arg(long, default_value = "/etc/incidentd/incidentd.toml")]
        rules: PathBuf,
        /// How to read each line.
        #[arg(long, value_enum, default_value_t = crate::replay::Format::Ndjson)]
        format: crate::replay::Format,
        /// Year for syslog timestamps (default: the file's modification year).
        #[arg(long)]
        year: Option<i32>,
        /// A JSON file `{"detections":[{"rule","ts","key"},…]}`: compare, and exit 1 on any
        /// missing or unexpected detection.
        #[arg(long)]
        expect: Option<PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Failed(String),
}

/// Runs one invocation; the caller maps the error to exit code 1.
pub async fn run(args: Args) -> Result<(), CliError> {
    let client = Client::new(&args.socket).with_timeout(args.timeout);
    let json_out = args.output == Format::Json;
    let now = SystemClock.now();
    let print_json = |v: &Value| outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    match args.command {
        Cmd::Alert {
            key,
            summary,
            severity,
            service,
            host,
            label,
            runbook,
        } => {
            let labels: serde_json::Map<String, Value> =
                label.into_iter().map(|(k, v)| (k, v.into())).collect();
            let v: Value = client
                .post(
                    "/v1/alerts",
                    &json!({"key": key, "summary": summary.join(" "), "severity": severity,
                        "service": service, "host": host, "labels": labels, "runbook": runbook}),
                )
                .await?;
            if json_out {
                print_json(&v);
            } else if v["created"] == true {
                outln!("created incident {}", v["incident_id"]);
            } else if v["reopened"] == true {
                outln!("reopened incident {}", v["incident_id"]);
            } else if v["deduplicated"] == true {
                outln!("added to incident {} (same key)", v["incident_id"]);
            } else {
                outln!("rate limited: no new incident for key {key} (see [incidents] rate_limit)");
            }
        }
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Args::command(),
                "incidentctl",
                &mut std::io::stdout(),
            );
        }
        Cmd::Man => {
            use clap::CommandFactory;
            clap_mangen::Man::new(Args::command())
                .render(&mut std::io::stdout())
                .map_err(|e| CliError::Failed(format!("cannot write the manual page: {e}")))?;
        }
        Cmd::Status => {
            let v: Value = client.get("/v1/status").await?;
            if json_out {
                print_json(&v);
            } else {
                print_status(&v);
            }
        }
        Cmd::Send { files } => {
            let body = read_inputs(&files)?;
            let v: Value = client
                .call(
                    hyper::Method::POST,
                    "/v1/events",
                    Some(body),
                    "application/x-ndjson",
                )
                .await?;
            if json_out {
                print_json(&v);
            } else {
                outln!("accepted {}", v["accepted"]);
                for r in v["rejected"].as_array().into_iter().flatten() {
                    eprintln!("line {}: {}", r["line"], r["error"].as_str().unwrap_or(""));
                }
            }
            if v["rejected"].as_array().is_some_and(|r| !r.is_empty()) {
                return Err(CliError::Failed(format!(
                    "{} line(s) rejected",
                    v["rejected"].as_array().map(Vec::len).unwrap_or(0)
                )));
            }
        }
        Cmd::List {
            status,
            severity,
            service,
            label,
            q,
            sort,
            since,
            limit,
            all,
        } => {
            let mut params: Vec<(&str, String)> = vec![("limit", limit.to_string())];
            for (k, v) in [
                ("status", status),
                ("severity", severity),
                ("service", service),
                ("q", q),
                ("sort", sort),
                ("since", since),
            ] {
                if let Some(v) = v {
                    params.push((k, v));
                }
            }
            params.extend(label.into_iter().map(|l| ("label", l)));
            let mut incidents = Vec::new();
            let mut cursor: Option<crate::store::Cursor> = None;
            loop {
                let mut p = params.clone();
                if let Some(c) = cursor {
                    p.push(("cursor", c.to_string()));
                }
                let query =
                    serde_urlencoded::to_string(&p).map_err(|e| CliError::Failed(e.to_string()))?;
                let page: Page = client.get(&format!("/v1/incidents?{query}")).await?;
                incidents.extend(page.incidents);
                match page.next_cursor {
                    Some(c) if all => cursor = Some(c),
                    _ => break,
                }
            }
            if json_out {
                print_json(&json!({"incidents": incidents}));
            } else {
                out!("{}", incidents_table(&incidents, now));
            }
        }
        Cmd::Show { id } => {
            let inc: Incident = client.get(&format!("/v1/incidents/{id}")).await?;
            if json_out {
                print_json(&json!(inc));
            } else {
                print_incident(&inc, now);
            }
        }
        Cmd::Timeline { id } => {
            let v: Value = client.get(&format!("/v1/incidents/{id}/timeline")).await?;
            if json_out {
                print_json(&v);
            } else {
                let entries: Vec<TimelineEntry> =
                    serde_json::from_value(v["timeline"].clone()).unwrap_or_default();
                out!("{}", timeline_table(&entries));
            }
        }
        Cmd::Export { to } => {
            let (status, body) = client
                .raw(
                    hyper::Method::GET,
                    "/v1/export",
                    Vec::new(),
                    "application/json",
                )
                .await?;
            if !status.is_success() {
                return Err(CliError::Failed(
                    String::from_utf8_lossy(&body).into_owned(),
                ));
            }
            match to {
                Some(path) => {
                    std::fs::write(&path, &body).map_err(|e| {
                        CliError::Failed(format!("cannot write {}: {e}", path.display()))
                    })?;
                    eprintln!(
                        "wrote {} timeline entries to {}",
                        body.iter().filter(|b| **b == b'\n').count(),
                        path.display()
                    );
                }
                None => {
                    use std::io::Write;
                    std::io::stdout()
                        .write_all(&body)
                        .map_err(|e| CliError::Failed(format!("cannot write: {e}")))?;
                }
            }
        }
        Cmd::Postmortem { id } => {
            let (status, body) = client
                .raw(
                    hyper::Method::GET,
                    &format!("/v1/incidents/{id}/postmortem"),
                    Vec::new(),
                    "application/json",
                )
                .await?;
            let text = String::from_utf8_lossy(&body);
            if !status.is_success() {
                let msg = serde_json::from_str::<Value>(&text)
                    .ok()
                    .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                    .unwrap_or_else(|| text.into_owned());
                return Err(CliError::Failed(msg));
            }
            if json_out {
                print_json(&json!({"incident_id": id, "markdown": text}));
            } else {
                out!("{text}");
            }
        }
        Cmd::Stats { since } => {
            let path = with_query("/v1/stats", &[("since", since)])?;
            let v: Value = client.get(&path).await?;
            if json_out {
                print_json(&v);
            } else {
                print_stats(&v);
            }
        }
        Cmd::Related { id } => {
            let v: Value = client.get(&format!("/v1/incidents/{id}/related")).await?;
            if json_out {
                print_json(&v);
            } else {
                let items = v["related"].as_array().cloned().unwrap_or_default();
                let mut incidents = Vec::new();
                let mut why = Vec::new();
                for item in items {
                    if let Ok(i) = serde_json::from_value::<Incident>(item["incident"].clone()) {
                        incidents.push(i);
                        why.push(
                            item["why"]
                                .as_array()
                                .map(|w| {
                                    w.iter()
                                        .filter_map(Value::as_str)
                                        .collect::<Vec<_>>()
                                        .join(",")
                                })
                                .unwrap_or_default(),
                        );
                    }
                }
                if incidents.is_empty() {
                    outln!("no incident shares a key, service or correlation id with {id}");
                } else {
                    out!("{}", incidents_table(&incidents, now));
                    for (i, w) in incidents.iter().zip(why) {
                        outln!("{}: shares {w}", i.id);
                    }
                }
            }
        }
        Cmd::Ack(a) => transition(&client, Transition::Ack, a, json_out).await?,
        Cmd::Mitigate(a) => transition(&client, Transition::Mitigate, a, json_out).await?,
        Cmd::Resolve(a) => transition(&client, Transition::Resolve, a, json_out).await?,
        Cmd::Close(a) => transition(&client, Transition::Close, a, json_out).await?,
        Cmd::Cancel(a) => transition(&client, Transition::Cancel, a, json_out).await?,
        Cmd::Reopen(a) => transition(&client, Transition::Reopen, a, json_out).await?,
        Cmd::Note { id, text } => {
            let note = text.join(" ");
            let inc: Incident = client
                .post(&format!("/v1/incidents/{id}/notes"), &json!({"note": note}))
                .await?;
            if json_out {
                print_json(&json!(inc));
            } else {
                outln!("note added to incident {id}");
            }
        }
        Cmd::Severity {
            id,
            severity,
            message,
        } => {
            let inc: Incident = client
                .post(
                    &format!("/v1/incidents/{id}/severity"),
                    &json!({"severity": severity, "note": message}),
                )
                .await?;
            if json_out {
                print_json(&json!(inc));
            } else {
                outln!("incident {id} is now {}", inc.severity);
            }
        }
        Cmd::Tag { id, tags, remove } => {
            let inc: Incident = client
                .post(
                    &format!("/v1/incidents/{id}/tags"),
                    &json!({"add": tags, "remove": remove}),
                )
                .await?;
            if json_out {
                print_json(&json!(inc));
            } else {
                outln!("incident {id} tags: {}", inc.tags.join(", "));
            }
        }
        Cmd::Assign {
            id,
            assignee,
            clear: _,
        } => {
            let inc: Incident = client
                .post(
                    &format!("/v1/incidents/{id}/assign"),
                    &json!({ "assignee": assignee }),
                )
                .await?;
            if json_out {
                print_json(&json!(inc));
            } else {
                match &inc.assignee {
                    Some(a) => outln!("incident {id} is assigned to {}", output::one_line(a)),
                    None => outln!("incident {id} is unassigned"),
                }
            }
        }
        Cmd::Rules {
            command: RulesCmd::List,
        } => {
            let v: Value = client.get("/v1/rules").await?;
            if json_out {
                print_json(&v);
            } else {
                let rules: Vec<RuleInfo> =
                    serde_json::from_value(v["rules"].clone()).unwrap_or_default();
                let rows: Vec<Vec<String>> = rules
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.clone(),
                            r.kind.clone(),
                            r.severity.to_string(),
                            if r.enabled { "yes".into() } else { "no".into() },
                            r.matched.to_string(),
                            r.fired.to_string(),
                            r.origin.clone(),
                        ]
                    })
                    .collect();
                out!(
                    "{}",
                    table(
                        &["ID", "KIND", "SEV", "ENABLED", "MATCHED", "FIRED", "ORIGIN"],
                        &rows
                    )
                );
            }
        }
        Cmd::Rules {
            command: RulesCmd::Check { config },
        } => match crate::config::load(&config) {
            Ok(c) => {
                if json_out {
                    print_json(&json!({"ok": true, "rules": c.rules.len()}));
                } else {
                    outln!("{}: OK ({} rules)", config.display(), c.rules.len());
                }
            }
            Err(errors) => {
                if json_out {
                    let list: Vec<String> = errors.0.iter().map(|e| e.to_string()).collect();
                    print_json(&json!({"ok": false, "errors": list}));
                }
                return Err(CliError::Failed(errors.to_string()));
            }
        },
        Cmd::Rules {
            command:
                RulesCmd::Test {
                    file,
                    rules,
                    format,
                    year,
                    expect,
                },
        } => {
            rules_test(&file, &rules, format, year, expect.as_deref(), json_out)?;
        }
        Cmd::Watch { after, types } => {
            watch::Watch {
                client,
                json: json_out,
                after,
                types,
            }
            .run()
            .await?;
        }
        Cmd::Silence { command } => silence(&client, command, json_out, now).await?,
        Cmd::Actions { command } => actions(&client, command, json_out, now).await?,
        Cmd::Reload => {
            let v: Value = client.post("/v1/reload", &json!({})).await?;
            if json_out {
                print_json(&v);
            } else {
                outln!("{}", v["message"].as_str().unwrap_or("reloaded"));
            }
        }
    }
    Ok(())
}

fn rules_test(
    file: &std::path::Path,
    rules: &std::path::Path,
    format: crate::replay::Format,
    year: Option<i32>,
    expect: Option<&std::path::Path>,
    json_out: bool,
) -> Result<(), CliError> {
    use std::io::IsTerminal;
    // Read the expectations first: a broken expect file fails before the replay runs.
    let expected = expect.map(read_expectations).transpose()?;
    let configs = crate::config::load_rules(rules).map_err(|e| CliError::Failed(e.to_string()))?;
    let mut engine = crate::engine::Engine::new(&configs);
    let stdin = file.as_os_str() == "-";
    let (input, total, mtime): (Box<dyn std::io::Read>, u64, Option<std::time::SystemTime>) =
        if stdin {
            (Box::new(std::io::stdin().lock()), 0, None)
        } else {
            let f = std::fs::File::open(file)
                .map_err(|e| CliError::Failed(format!("cannot open {}: {e}", file.display())))?;
            let meta = f.metadata().ok();
            (
                Box::new(f),
                meta.as_ref().map(|m| m.len()).unwrap_or(0),
                meta.and_then(|m| m.modified().ok()),
            )
        };
    let file_year = mtime
        .map(time::OffsetDateTime::from)
        .unwrap_or_else(time::OffsetDateTime::now_utc)
        .year();
    let replay = crate::replay::Replay {
        format,
        year: year.unwrap_or(file_year),
        host: crate::event::local_hostname(),
        default_ts: SystemClock.now(),
        // As the daemon's default `[engine] max_future_skew`.
        max_future_skew: crate::watermark::DEFAULT_MAX_FUTURE_SKEW,
    };
    let show_progress = !json_out && total > (8 << 20) && std::io::stderr().is_terminal();
    let report = replay
        .run(&mut engine, input, |done| {
            if show_progress {
                eprint!("\r{:>3}% of {} MB", done * 100 / total.max(1), total >> 20);
            }
        })
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", file.display())))?;
    if show_progress {
        eprintln!();
    }
    let verdict = expected.map(|want| compare_detections(&want, &report.detections));
    // Like `send`: a file none of whose lines could be read is a failure (a wrong --format,
    // say), not an empty report.
    let all_rejected = report.rejected > 0 && report.events == 0;
    let all_rejected_err = || {
        CliError::Failed(format!(
            "every line was rejected ({} lines; is --format right?)",
            report.rejected
        ))
    };
    if json_out {
        outln!("{}", serde_json::to_string(&report).unwrap_or_default());
        if all_rejected {
            return Err(all_rejected_err());
        }
        return verdict.unwrap_or(Ok(()));
    }
    let rows: Vec<Vec<String>> = report
        .rules
        .iter()
        .map(|r| vec![r.id.clone(), r.matched.to_string(), r.fired.to_string()])
        .collect();
    out!("{}", table(&["RULE", "MATCHED", "FIRED"], &rows));
    outln!();
    let shown = report.detections.len().min(50);
    let rows: Vec<Vec<String>> = report.detections[..shown]
        .iter()
        .map(|d| {
            vec![
                d.ts.to_string(),
                d.rule.clone(),
                d.key.clone(),
                d.count.to_string(),
            ]
        })
        .collect();
    out!("{}", table(&["EVENT TIME", "RULE", "KEY", "COUNT"], &rows));
    if report.detections.len() > shown {
        outln!(
            "… and {} more detections (-o json lists them all)",
            report.detections.len() - shown
        );
    }
    for (line, err) in &report.first_rejections {
        eprintln!("line {line}: {err}");
    }
    let rate = report.lines as f64 / report.seconds.max(1e-9);
    outln!(
        "\n{} lines, {} events, {} not parsed (no rule could match), {} rejected, {} detections in {:.3} s ({:.0} lines/s)",
        report.lines,
        report.events,
        report.skipped,
        report.rejected,
        report.detections.len(),
        report.seconds,
        rate
    );
    if all_rejected {
        return Err(all_rejected_err());
    }
    if let Some(v) = verdict {
        v?;
        outln!(
            "expectations met: {} detection(s) as expected",
            report.detections.len()
        );
    }
    Ok(())
}

/// One expected detection: (rule, event time, incident key).
type Expected = (String, String, String);

fn read_expectations(path: &std::path::Path) -> Result<Vec<Expected>, CliError> {
    #[derive(serde::Deserialize)]
    struct File {
        detections: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        rule: String,
        ts: Timestamp,
        key: String,
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
    let file: File = serde_json::from_str(&text)
        .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
    Ok(file
        .detections
        .into_iter()
        .map(|d| (d.rule, d.ts.to_string(), d.key))
        .collect())
}

/// Ok when the detections are exactly the expected ones, in order; else says which differ.
fn compare_detections(
    want: &[Expected],
    got: &[crate::replay::ReplayDetection],
) -> Result<(), CliError> {
    let got: Vec<Expected> = got
        .iter()
        .map(|d| (d.rule.clone(), d.ts.to_string(), d.key.clone()))
        .collect();
    if got == want {
        return Ok(());
    }
    let mut lines = vec![format!(
        "expected {} detection(s), got {}",
        want.len(),
        got.len()
    )];
    for w in want.iter().filter(|w| !got.contains(w)) {
        lines.push(format!("  missing:    {} {} {}", w.1, w.0, w.2));
    }
    for g in got.iter().filter(|g| !want.contains(g)) {
        lines.push(format!("  unexpected: {} {} {}", g.1, g.0, g.2));
    }
    if lines.len() == 1 {
        lines.push("  the same detections, in another order".into());
    }
    Err(CliError::Failed(lines.join("\n")))
}

async fn actions(
    client: &Client,
    cmd: ActionsCmd,
    json_out: bool,
    now: Timestamp,
) -> Result<(), CliError> {
    let print_json = |v: &Value| outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
    let show_run = |v: &Value| {
        let state = v["state"].as_str().unwrap_or("?");
        outln!(
            "run {} of {} for incident {}: {state}",
            v["id"],
            v["action"].as_str().unwrap_or("?"),
            v["incident_id"]
        );
        if let Some(o) = v.get("outcome").filter(|o| !o.is_null()) {
            if let Some(code) = o["exit_code"].as_i64() {
                outln!("exit status {code}, {} ms", o["duration_ms"]);
            }
            if let Some(st) = o["http_status"].as_u64() {
                outln!("HTTP {st}, {} ms", o["duration_ms"]);
            }
            for (name, key) in [("stdout", "stdout"), ("stderr", "stderr")] {
                if let Some(t) = o[key].as_str().filter(|t| !t.is_empty()) {
                    outln!("--- {name}\n{}", t.trim_end());
                }
            }
            if let Some(e) = o["error"].as_str() {
                outln!("error: {e}");
            }
        }
    };
    match cmd {
        ActionsCmd::List { state, incident } => {
            let path = with_query(
                "/v1/actions",
                &[
                    ("state", state),
                    ("incident", incident.map(|i| i.to_string())),
                ],
            )?;
            let v: Value = client.get(&path).await?;
            if json_out {
                print_json(&v);
                return Ok(());
            }
            let list = v["actions"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                outln!("no action runs");
                return Ok(());
            }
            let time = |v: &Value| {
                v.as_str()
                    .and_then(|s| Timestamp::parse_rfc3339(s).ok())
                    .map(|t| ago(t, now))
                    .unwrap_or_else(|| "-".into())
            };
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|r| {
                    vec![
                        r["id"].to_string(),
                        r["incident_id"].to_string(),
                        r["action"].as_str().unwrap_or("").to_owned(),
                        r["state"].as_str().unwrap_or("").to_owned(),
                        time(&r["requested_at"]),
                        if r["state"] == "pending" {
                            time(&r["expires_at"])
                        } else {
                            r["decided_by"].as_str().unwrap_or("-").to_owned()
                        },
                        r["reason"].as_str().unwrap_or("").to_owned(),
                    ]
                })
                .collect();
            out!(
                "{}",
                table(
                    &[
                        "RUN",
                        "INCIDENT",
                        "ACTION",
                        "STATE",
                        "REQUESTED",
                        "EXPIRES/BY",
                        "WHY"
                    ],
                    &rows
                )
            );
        }
        ActionsCmd::Approve { id } => {
            let v: Value = client
                .post(&format!("/v1/actions/{id}/approve"), &json!({}))
                .await?;
            if json_out {
                print_json(&v);
            } else {
                show_run(&v);
            }
            if v["state"] == "failed" {
                return Err(CliError::Failed(format!("run {id} failed")));
            }
        }
        ActionsCmd::Deny { id, message } => {
            let v: Value = client
                .post(&format!("/v1/actions/{id}/deny"), &json!({"note": message}))
                .await?;
            if json_out {
                print_json(&v);
            } else {
                outln!("run {id} denied");
            }
        }
        ActionsCmd::DryRun { incident, action } => {
            let v: Value = client
                .post(
                    &format!("/v1/incidents/{incident}/actions/{action}/dry-run"),
                    &json!({}),
                )
                .await?;
            if json_out {
                print_json(&v);
            } else {
                outln!("{action} for incident {incident} would (dry run, nothing done):");
                describe_plan(&v["plan"]);
                if !v["revert"].is_null() {
                    outln!("and to revert:");
                    describe_plan(&v["revert"]);
                }
            }
        }
        ActionsCmd::Run { incident, action } => {
            let v: Value = client
                .post(
                    &format!("/v1/incidents/{incident}/actions/{action}/run"),
                    &json!({}),
                )
                .await?;
            if json_out {
                print_json(&v);
            } else {
                show_run(&v);
            }
            if v["state"] == "failed" {
                return Err(CliError::Failed(format!("{action} failed")));
            }
        }
    }
    Ok(())
}

/// A plan in words: the argv, the signal targets, or the request.
fn describe_plan(p: &Value) {
    match p["type"].as_str() {
        Some("exec") => {
            let argv: Vec<String> = p["argv"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let a = a.as_str().unwrap_or("");
                    if a.is_empty() || a.contains(char::is_whitespace) {
                        format!("'{a}'")
                    } else {
                        a.to_owned()
                    }
                })
                .collect();
            outln!("  run: {}", output::one_line(&argv.join(" ")));
            for (k, v) in p["env"].as_object().into_iter().flatten() {
                outln!(
                    "  env: {}={}",
                    output::one_line(k),
                    output::one_line(v.as_str().unwrap_or(""))
                );
            }
            if let Some(c) = p["cwd"].as_str() {
                outln!("  in:  {c}");
            }
            if let Some(u) = p["user"].as_str() {
                outln!("  as:  {u}");
            }
        }
        Some("signal") => {
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                outln!(
                    "  signal {}: no process matches now",
                    p["signal"].as_str().unwrap_or("?")
                );
            }
            for t in targets {
                outln!(
                    "  signal {} to {} ({}): {}",
                    p["signal"].as_str().unwrap_or("?"),
                    t["pid"],
                    t["name"].as_str().unwrap_or(""),
                    t["why"].as_str().unwrap_or("")
                );
            }
        }
        Some("http") => {
            outln!(
                "  {} {}",
                p["method"].as_str().unwrap_or("?"),
                p["url"].as_str().unwrap_or("?")
            );
            for (k, v) in p["headers"].as_object().into_iter().flatten() {
                outln!("  {k}: {}", v.as_str().unwrap_or(""));
            }
            if let Some(b) = p["body"].as_str() {
                outln!("  body: {b}");
            }
        }
        _ => outln!("  {p}"),
    }
}

async fn silence(
    client: &Client,
    cmd: SilenceCmd,
    json_out: bool,
    now: Timestamp,
) -> Result<(), CliError> {
    let print = |v: &Value| {
        if json_out {
            outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
        } else {
            out!("{}", silences_table(std::slice::from_ref(v), now));
        }
    };
    match cmd {
        SilenceCmd::Add {
            severity,
            service,
            host,
            rule,
            label,
            duration,
            until,
            start,
            comment,
        } => {
            let severity: Vec<&str> = severity
                .as_deref()
                .map(|s| s.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default();
            let labels: serde_json::Map<String, Value> =
                label.into_iter().map(|(k, v)| (k, v.into())).collect();
            let body = json!({
                "matchers": {"severity": severity, "service": service, "host": host,
                    "rule": rule, "labels": labels},
                "starts_at": start, "ends_at": until, "duration": duration, "comment": comment,
            });
            let v: Value = client.post("/v1/silences", &body).await?;
            print(&v);
        }
        SilenceCmd::List { state } => {
            let path = with_query("/v1/silences", &[("state", state)])?;
            let v: Value = client.get(&path).await?;
            if json_out {
                outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                let list = v["silences"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    outln!("no silences");
                } else {
                    out!("{}", silences_table(&list, now));
                }
            }
        }
        SilenceCmd::Rm { id } => {
            let (status, body) = client
                .raw(
                    hyper::Method::DELETE,
                    &format!("/v1/silences/{id}"),
                    Vec::new(),
                    "application/json",
                )
                .await?;
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if !status.is_success() {
                return Err(CliError::Failed(
                    v["error"]["message"]
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned()),
                ));
            }
            if json_out {
                print(&v);
            } else {
                outln!("silence {id} expired");
            }
        }
    }
    Ok(())
}

/// Silences as a table: state, span in relative times, what they match, who and why.
fn silences_table(list: &[Value], now: Timestamp) -> String {
    let time = |v: &Value| {
        v.as_str()
            .and_then(|s| Timestamp::parse_rfc3339(s).ok())
            .map(|t| ago(t, now))
            .unwrap_or_else(|| "-".into())
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            let m = &s["matchers"];
            let mut matchers = Vec::new();
            if let Some(sev) = m["severity"].as_array() {
                let sev: Vec<&str> = sev.iter().filter_map(Value::as_str).collect();
                matchers.push(format!("severity={}", sev.join(",")));
            }
            for k in ["service", "host", "rule"] {
                if let Some(v) = m[k].as_str() {
                    matchers.push(format!("{k}={v}"));
                }
            }
            for (k, v) in m["labels"].as_object().into_iter().flatten() {
                matchers.push(format!("{k}={}", v.as_str().unwrap_or("")));
            }
            vec![
                s["id"].to_string(),
                s["state"].as_str().unwrap_or("?").to_owned(),
                time(&s["starts_at"]),
                time(&s["ends_at"]),
                matchers.join(" "),
                s["created_by"].as_str().unwrap_or("").to_owned(),
                s["comment"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    table(
        &["ID", "STATE", "STARTS", "ENDS", "MATCHES", "BY", "COMMENT"],
        &rows,
    )
}

async fn transition(
    client: &Client,
    t: Transition,
    a: TransitionArgs,
    json_out: bool,
) -> Result<(), CliError> {
    let body = json!({"note": a.message});
    let inc: Incident = client
        .post(&format!("/v1/incidents/{}/{}", a.id, t.as_str()), &body)
        .await?;
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&inc).unwrap_or_default());
    } else {
        outln!("incident {} is now {}", inc.id, inc.status);
    }
    Ok(())
}

fn read_inputs(files: &[PathBuf]) -> Result<Vec<u8>, CliError> {
    let mut body = Vec::new();
    if files.is_empty() || files.iter().any(|f| f.as_os_str() == "-") {
        std::io::stdin()
            .read_to_end(&mut body)
            .map_err(|e| CliError::Failed(format!("cannot read standard input: {e}")))?;
    }
    for f in files.iter().filter(|f| f.as_os_str() != "-") {
        let mut b = std::fs::read(f)
            .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", f.display())))?;
        if !b.ends_with(b"\n") {
            b.push(b'\n');
        }
        body.extend(b);
    }
    Ok(body)
}

pub(crate) fn incidents_table(incidents: &[Incident], now: Timestamp) -> String {
    let colour = output::colour_enabled();
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                output::severity(i.severity, colour),
                i.status.to_string(),
                ago(i.created_at, now),
                i.detections.to_string(),
                i.service.clone().unwrap_or_else(|| "-".into()),
                i.title.clone(),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "SEV",
            "STATUS",
            "CREATED",
            "DETECTIONS",
            "SERVICE",
            "TITLE",
        ],
        &rows,
    )
}

/// `path?k=v&…` with the parameters that are set (none: the bare path).
pub(crate) fn with_query(
    path: &str,
    params: &[(&str, Option<String>)],
) -> Result<String, CliError> {
    let set: Vec<(&str, &String)> = params
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (*k, v)))
        .collect();
    if set.is_empty() {
        return Ok(path.to_owned());
    }
    let q = serde_urlencoded::to_string(&set).map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(format!("{path}?{q}"))
}

/// `key=value`, for clap (a bad one is a usage error, exit code 2).
fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

/// A duration in seconds as people read it ("4m 12s").
fn human_secs(v: &Value) -> String {
    match v.as_f64() {
        Some(s) => {
            let d = std::time::Duration::from_secs(s.round().max(0.0) as u64);
            humantime::format_duration(d).to_string()
        }
        None => "-".into(),
    }
}

fn print_stats(v: &Value) {
    let counts = |m: &Value| {
        m.as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, n)| format!("{k} {n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    outln!("incidents   {}", v["incidents"]);
    outln!("by status   {}", counts(&v["by_status"]));
    outln!("by severity {}", counts(&v["by_severity"]));
    if let Some(share) = v["cancelled_share"].as_f64() {
        outln!("cancelled   {:.1}% (false positives)", share * 100.0);
    }
    let mut rows = Vec::new();
    let mut add = |scope: String, t: &Value| {
        for (name, key) in [
            ("detect", "mttd"),
            ("acknowledge", "mtta"),
            ("resolve", "mttr"),
        ] {
            let s = &t[key];
            if s["count"].as_u64().unwrap_or(0) == 0 {
                continue;
            }
            rows.push(vec![
                scope.clone(),
                format!("time to {name}"),
                s["count"].to_string(),
                human_secs(&s["mean"]),
                human_secs(&s["p50"]),
                human_secs(&s["p90"]),
            ]);
        }
    };
    add("all".into(), &v["times"]);
    for (group, prefix) in [("times_by_severity", ""), ("times_by_service", "service ")] {
        if let Some(o) = v[group].as_object() {
            for (k, t) in o {
                add(format!("{prefix}{k}"), t);
            }
        }
    }
    if !rows.is_empty() {
        outln!();
        out!(
            "{}",
            table(&["SCOPE", "MEASURE", "N", "MEAN", "P50", "P90"], &rows)
        );
    }
    let rules: Vec<Vec<String>> = v["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                r["id"].as_str().unwrap_or("").to_owned(),
                r["matched"].to_string(),
                r["fired"].to_string(),
                v["incidents_by_rule"][r["id"].as_str().unwrap_or("")]
                    .as_u64()
                    .unwrap_or(0)
                    .to_string(),
            ]
        })
        .collect();
    if !rules.is_empty() {
        outln!();
        out!(
            "{}",
            table(&["RULE", "MATCHED", "FIRED", "INCIDENTS"], &rules)
        );
    }
}

fn print_incident(i: &Incident, now: Timestamp) {
    let opt = |t: Option<Timestamp>| {
        t.map(|t| format!("{t} ({})", ago(t, now)))
            .unwrap_or_else(|| "-".into())
    };
    outln!("Incident {}: {}", i.id, output::one_line(&i.title));
    let rows = vec![
        vec!["key".into(), i.key.clone()],
        vec!["severity".into(), i.severity.to_string()],
        vec!["status".into(), i.status.to_string()],
        vec![
            "service".into(),
            i.service.clone().unwrap_or_else(|| "-".into()),
        ],
        vec!["host".into(), i.host.clone().unwrap_or_else(|| "-".into())],
        vec!["rules".into(), i.rules.join(", ")],
        vec!["detections".into(), i.detections.to_string()],
        vec![
            "labels".into(),
            i.labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" "),
        ],
        vec!["first event".into(), opt(Some(i.first_event_at))],
        vec!["created".into(), opt(Some(i.created_at))],
        vec!["acknowledged".into(), opt(i.acknowledged_at)],
        vec!["mitigated".into(), opt(i.mitigated_at)],
        vec!["resolved".into(), opt(i.resolved_at)],
        vec!["closed".into(), opt(i.closed_at)],
        vec![
            "runbook".into(),
            i.runbook.clone().unwrap_or_else(|| "-".into()),
        ],
    ];
    for r in rows {
        outln!("  {:<13} {}", r[0], output::one_line(&r[1]));
    }
}

fn timeline_table(entries: &[TimelineEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let mut what = match (&e.note, &e.data) {
                (_, Value::Object(d)) if d.contains_key("to") => format!(
                    "{} → {}",
                    d["from"].as_str().unwrap_or("?"),
                    d["to"].as_str().unwrap_or("?")
                ),
                (_, Value::Object(d)) if d.contains_key("summary") => {
                    d["summary"].as_str().unwrap_or("").to_owned()
                }
                (_, Value::Object(d)) if d.contains_key("rule") => {
                    format!("rule {}", d["rule"].as_str().unwrap_or(""))
                }
                _ => String::new(),
            };
            if let Some(n) = &e.note {
                if !what.is_empty() {
                    what.push_str(": ");
                }
                what.push_str(n);
            }
            vec![
                e.seq.to_string(),
                e.ts.to_string(),
                kind,
                e.actor.clone(),
                what,
            ]
        })
        .collect();
    table(&["SEQ", "TIME", "TYPE", "ACTOR", "DETAIL"], &rows)
}

fn print_status(v: &Value) {
    outln!(
        "incidentd {} (pid {}), up {}s",
        v["version"].as_str().unwrap_or("?"),
        v["pid"],
        v["uptime_seconds"]
    );
    outln!("  config      {}", v["config"].as_str().unwrap_or("?"));
    outln!("  state       {}", v["state_dir"].as_str().unwrap_or("?"));
    outln!("  rules       {}", v["rules"]);
    outln!(
        "  event queue {}/{}",
        v["queues"]["events"]["len"],
        v["queues"]["events"]["capacity"]
    );
    for s in v["sources"].as_array().into_iter().flatten() {
        let rejected: u64 = s["rejected"]
            .as_object()
            .map(|m| m.values().filter_map(Value::as_u64).sum())
            .unwrap_or(0);
        outln!(
            "  source {:<8} lines {} accepted {} rejected {}",
            s["id"].as_str().unwrap_or("?"),
            s["lines"],
            s["accepted"],
            rejected
        );
        for (reason, n) in s["rejected"].as_object().into_iter().flatten() {
            if n.as_u64().unwrap_or(0) > 0 {
                outln!("    {reason}: {n}");
            }
        }
    }
    outln!(
        "  engine      events {} detections {}",
        v["engine"]["events"],
        v["engine"]["detections"]
    );
    let by = &v["incidents"]["by_status"];
    let counts: Vec<String> = by
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    outln!("  incidents   {}", counts.join(", "));
    if let Some(err) = v["reload"]["last_error"].as_str() {
        outln!("  last reload FAILED (previous config in force):");
        for l in err.lines() {
            outln!("    {l}");
        }
    }
}

/// Ends the command when its output cannot be written: quietly (success) when the reader went
/// away, with the error otherwise.
pub(crate) fn wrote(result: std::io::Result<()>) {
    match result {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => {
            eprintln!("incidentctl: cannot write the output: {e}");
            std::process::exit(1)
        }
    }
}
