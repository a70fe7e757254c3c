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

mod actions;
mod channels;
mod edits;
mod oncall;
mod postmortem;
mod rules;
mod send;
mod show;
mod silences;

use actions::*;
use channels::*;
use edits::*;
use oncall::*;
use postmortem::*;
use rules::*;
use show::*;
use silences::*;

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
    /// Exits 0 when what it raised is sev3 or milder, 1 for sev1/sev2, 2 for sev3 with
    /// --fail-on-warning, so a CI job can fail on it; 3 when it could not raise it.
    Alert {
        /// Alerts with the same key share an incident (not with --file).
        #[arg(required_unless_present = "file")]
        key: Option<String>,
        /// What is wrong (not needed with --resolve).
        summary: Vec<String>,
        /// Alerts from a file of NDJSON, one `{"key","summary","severity",…}` a line (`-`:
        /// standard input), sent in one request and answered one by one.
        #[arg(long, conflicts_with = "key")]
        file: Option<PathBuf>,
        /// The alert has ended: resolve the active incident of its key (idempotent).
        #[arg(long)]
        resolve: bool,
        /// Exit 2 when what was raised is sev3.
        #[arg(long)]
        fail_on_warning: bool,
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
    /// The post-mortem in Markdown: the one stored when the incident was resolved (or
    /// edited since), else a draft written now.
    Postmortem {
        id: u64,
        /// Open it in $VISUAL or $EDITOR and store what is saved (responders).
        #[arg(long)]
        edit: bool,
    },
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
    /// Who is on call for each team (or one), now or at a time.
    Oncall {
        team: Option<String>,
        /// RFC 3339 time (default now).
        #[arg(long)]
        at: Option<String>,
    },
    /// Change an incident's title.
    Edit {
        id: u64,
        #[arg(long)]
        title: String,
    },
    /// Merge incident ID into INTO: its detections and keys follow, and ID is closed.
    Merge { id: u64, into: u64 },
    /// Take KEY, which joined incident ID by correlation, out into a new incident.
    Split { id: u64, key: String },
    /// Move the response stage: assess, contain, investigate, remediate, recover (back
    /// only with -m REASON).
    Stage {
        id: u64,
        stage: String,
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
    /// Notification channels: their figures, and test messages.
    Channels {
        #[command(subcommand)]
        command: ChannelsCmd,
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
    /// Every configured action for an incident: whether its rules bind it, its policy
    /// (automatic, approval, held by the breaker or a silence) and its plan or why it
    /// cannot render. Nothing runs.
    Available { incident: u64 },
    /// Run an action for an incident now (admins).
    Run { incident: u64, action: String },
}

#[derive(Subcommand, Debug)]
#[allow(clippy::large_enum_variant)] // parsed once per run
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
        /// A label condition (repeatable), as Alertmanager writes them: `key=value`,
        /// `key!=value`, `key=~regex`, `key!~regex`.
        #[arg(long, value_parser = matcher)]
        label: Vec<(String, Value)>,
        /// A condition on any incident field (repeatable), same operators:
        /// `title=~brute`, `labels.ip!=10.0.0.1`, `rule!=alert`.
        #[arg(long = "where", value_parser = matcher)]
        where_: Vec<(String, Value)>,
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

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Failed(String),
    /// Not an error: the exit code a command chose (`alert`'s severity verdict).
    #[error("exit code {0}")]
    Verdict(u8),
    /// `alert` failed (unreachable daemon, refused alerts): exit 3, apart from its verdicts.
    #[error("{0}")]
    AlertFailed(Box<CliError>),
}

/// `incidentctl alert`'s exit code: 1 when a firing alert is sev1 or sev2, else 2 when one
/// is sev3 and `fail_on_warning`, else 0 (resolved alerts raise nothing).
fn alert_verdict(alerts: &[Value], fail_on_warning: bool, now: crate::clock::Timestamp) -> u8 {
    let firing = alerts.iter().filter(|a| {
        let ended = a
            .get("ends_at")
            .and_then(|v| serde_json::from_value::<crate::clock::Timestamp>(v.clone()).ok())
            .is_some_and(|t| t <= now);
        a["status"].as_str() != Some("resolved") && !ended
    });
    let sev = |a: &Value| {
        a["severity"]
            .as_str()
            .and_then(|s| s.parse::<crate::severity::Severity>().ok())
            .unwrap_or(crate::severity::Severity::Sev3)
    };
    let worst = firing.map(sev).min();
    match worst {
        Some(s) if s <= crate::severity::Severity::Sev2 => 1,
        Some(crate::severity::Severity::Sev3) if fail_on_warning => 2,
        _ => 0,
    }
}

/// Alerts from an NDJSON file (`-`: standard input); a line that is not a JSON object is
/// refused with its line number before anything is sent.
fn read_alerts(path: &std::path::Path) -> Result<Vec<Value>, CliError> {
    let text = if path.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())
    } else {
        std::fs::read_to_string(path)
    }
    .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", path.display())))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(line) {
            Ok(v @ Value::Object(_)) => out.push(v),
            Ok(_) => {
                return Err(CliError::Failed(format!(
                    "{}:{}: an alert must be a JSON object",
                    path.display(),
                    n + 1
                )));
            }
            Err(e) => {
                return Err(CliError::Failed(format!(
                    "{}:{}: not JSON: {e}",
                    path.display(),
                    n + 1
                )));
            }
        }
    }
    if out.is_empty() {
        return Err(CliError::Failed(format!("{}: no alerts", path.display())));
    }
    Ok(out)
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
            file,
            resolve,
            fail_on_warning,
            severity,
            service,
            host,
            label,
            runbook,
        } => {
            let alerts: Vec<Value> = match (&file, key) {
                (Some(f), _) => read_alerts(f).map_err(|e| CliError::AlertFailed(Box::new(e)))?,
                (None, Some(key)) => {
                    if summary.is_empty() && !resolve {
                        return Err(CliError::AlertFailed(Box::new(CliError::Failed(
                            "an alert needs a summary (or --resolve)".into(),
                        ))));
                    }
                    let labels: serde_json::Map<String, Value> =
                        label.into_iter().map(|(k, v)| (k, v.into())).collect();
                    vec![json!({"key": key, "summary": summary.join(" "),
                        "severity": severity, "service": service, "host": host,
                        "labels": labels, "runbook": runbook,
                        "status": if resolve { "resolved" } else { "firing" }})]
                }
                (None, None) => {
                    return Err(CliError::AlertFailed(Box::new(CliError::Failed(
                        "name a key, or --file".into(),
                    ))));
                }
            };
            let fail = |e: CliError| CliError::AlertFailed(Box::new(e));
            let mut answers: Vec<Value> = Vec::with_capacity(alerts.len());
            if file.is_some() {
                // At most 1000 a request, as the API takes them.
                for chunk in alerts.chunks(1000) {
                    let v: Value = client
                        .post("/v1/alerts", &Value::Array(chunk.to_vec()))
                        .await
                        .map_err(|e| fail(e.into()))?;
                    answers.extend(v["alerts"].as_array().cloned().unwrap_or_default());
                }
            } else {
                answers.push(
                    client
                        .post("/v1/alerts", &alerts[0])
                        .await
                        .map_err(|e| fail(e.into()))?,
                );
            }
            if json_out {
                match file {
                    Some(_) => print_json(&json!({"alerts": answers})),
                    None => print_json(&answers[0]),
                }
            }
            let mut failed = false;
            for (a, v) in alerts.iter().zip(&answers) {
                let key = a["key"].as_str().unwrap_or("?");
                let said = if let Some(e) = v["error"].as_str() {
                    failed = true;
                    format!("error: {e}")
                } else if v["created"] == true {
                    format!("created incident {}", v["incident_id"])
                } else if v["reopened"] == true {
                    format!("reopened incident {}", v["incident_id"])
                } else if v["deduplicated"] == true {
                    format!("added to incident {} (same key)", v["incident_id"])
                } else if v["resolved"] == true {
                    format!("resolved incident {}", v["incident_id"])
                } else if v["nothing_to_resolve"] == true {
                    "no active incident to resolve".to_owned()
                } else {
                    "rate limited: no new incident (see [incidents] rate_limit)".to_owned()
                };
                if !json_out {
                    outln!("{key}: {said}");
                }
            }
            if failed {
                return Err(fail(CliError::Failed("some alerts were refused".into())));
            }
            let code = alert_verdict(&alerts, fail_on_warning, now);
            if code != 0 {
                return Err(CliError::Verdict(code));
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
        Cmd::Send { files } => send::send(&client, &files, json_out).await?,
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
            let v: Value = client.get(&format!("/v1/incidents/{id}")).await?;
            if json_out {
                print_json(&v);
            } else {
                let inc: Incident = serde_json::from_value(v.clone())
                    .map_err(|e| CliError::Failed(format!("unexpected answer: {e}")))?;
                print_incident(&inc, &v["sla"], now);
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
        Cmd::Postmortem { id, edit } => postmortem(&client, id, edit, json_out).await?,
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
        Cmd::Oncall { team, at } => oncall(&client, team, at, json_out, now).await?,
        Cmd::Edit { id, title } => {
            edited(
                &client,
                &format!("/v1/incidents/{id}"),
                json!({"title": title}),
                json_out,
            )
            .await?
        }
        Cmd::Merge { id, into } => {
            let path = format!("/v1/incidents/{id}/merge");
            edited(&client, &path, json!({"into": into}), json_out).await?
        }
        Cmd::Split { id, key } => {
            let path = format!("/v1/incidents/{id}/split");
            edited(&client, &path, json!({"key": key}), json_out).await?
        }
        Cmd::Stage { id, stage, message } => {
            let inc: Incident = client
                .post(
                    &format!("/v1/incidents/{id}/stage"),
                    &json!({"stage": stage, "note": message}),
                )
                .await?;
            if json_out {
                print_json(&json!(inc));
            } else {
                outln!("incident {id} is now at stage {}", inc.stage.stage);
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
                    threads,
                    max_line_bytes,
                },
        } => {
            let input = (file.as_path(), format, year);
            let reading = (threads, max_line_bytes);
            rules_test(input, &rules, expect.as_deref(), reading, json_out)?;
        }
        Cmd::Rules {
            command:
                RulesCmd::ImportFail2ban {
                    dir,
                    jails,
                    out,
                    check,
                },
        } => import_fail2ban(&dir, &jails, out.as_deref(), check, json_out)?,
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
        Cmd::Channels { command } => channels(&client, command, json_out, now).await?,
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
