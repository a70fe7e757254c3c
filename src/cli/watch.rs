//! `incidentctl watch`: a live view of open incidents and their changes, from
//! `GET /v1/stream`.
//!
//! On a terminal the screen is redrawn on each change: the active incidents (worst severity
//! first) over the latest changes. Through a pipe it prints one line per change, and with
//! `-o json` one event per line (NDJSON). A lost connection (the daemon restarting) is
//! retried, resuming after the last change seen, so nothing is skipped.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::time::Duration;

use serde_json::Value;

use super::client::{Client, ClientError};
use super::output;
use super::{CliError, incidents_table};
use crate::clock::{Clock, SystemClock};
use crate::incident::{Incident, TimelineEntry};
use crate::store::Page;

/// Changes kept on screen under the table.
const RECENT: usize = 10;

pub struct Watch {
    pub client: Client,
    pub json: bool,
    /// Start after this change number instead of now.
    pub after: Option<u64>,
    /// Only these event types (comma-separated).
    pub types: Option<String>,
}

impl Watch {
    pub async fn run(self) -> Result<(), CliError> {
        let screen = !self.json && std::io::stdout().is_terminal();
        let mut open: BTreeMap<u64, Incident> = BTreeMap::new();
        let path = super::with_query("/v1/stream", &[("types", self.types.clone())])?;
        let mut last = self.after;
        let mut connected_once = false;
        // One listener for the whole run: a Ctrl-C that comes while a change is being
        // printed is kept for the next wait (a listener made per wait would miss it).
        let mut interrupt =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
                .map_err(|e| CliError::Failed(format!("cannot listen for Ctrl-C: {e}")))?;
        let mut recent: VecDeque<String> = VecDeque::new();
        let mut retry = Duration::from_millis(250);
        loop {
            match self
                .follow(
                    &path,
                    &mut last,
                    screen,
                    &mut open,
                    &mut recent,
                    &mut retry,
                    &mut interrupt,
                )
                .await
            {
                Ok(Flow::Quit) => return Ok(()),
                Ok(Flow::Ended) => connected_once = true,
                // Refusals (a bad position, a missing role) do not get better by retrying;
                // a daemon that is restarting does.
                Err(e @ ClientError::Api { status, .. }) if status < 500 => return Err(e.into()),
                Err(e) if connected_once || last.is_some() => {
                    if !screen {
                        eprintln!("{e}; retrying in {retry:?}");
                    }
                }
                Err(e) => return Err(e.into()),
            }
            tokio::select! {
                () = tokio::time::sleep(retry) => {}
                _ = interrupt.recv() => return Ok(()),
            }
            retry = (retry * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection: shows what the stream sends until it ends or Ctrl-C.
    #[allow(clippy::too_many_arguments)]
    async fn follow(
        &self,
        path: &str,
        last: &mut Option<u64>,
        screen: bool,
        open: &mut BTreeMap<u64, Incident>,
        recent: &mut VecDeque<String>,
        retry: &mut Duration,
        interrupt: &mut tokio::signal::unix::Signal,
    ) -> Result<Flow, ClientError> {
        let mut stream = self.client.stream(path, *last).await?;
        loop {
            let msg = tokio::select! {
                m = stream.next() => m?,
                _ = interrupt.recv() => return Ok(Flow::Quit),
            };
            let Some(msg) = msg else {
                if !screen {
                    eprintln!("the stream ended; reconnecting");
                }
                return Ok(Flow::Ended);
            };
            if let Some(id) = msg.id.as_deref().and_then(|i| i.parse().ok()) {
                *last = Some(id);
            }
            let data: Value = serde_json::from_str(&msg.data).unwrap_or(Value::Null);
            if msg.event == "ready" {
                // The stream is open from here: (re)read the active incidents, so none
                // created before it is missed.
                if screen {
                    open.clear();
                    let mut cursor: Option<String> = None;
                    loop {
                        let page_path = match &cursor {
                            Some(c) => format!("/v1/incidents?status=active&limit=1000&cursor={c}"),
                            None => "/v1/incidents?status=active&limit=1000".to_owned(),
                        };
                        let page: Page = self.client.get(&page_path).await?;
                        open.extend(page.incidents.into_iter().map(|i| (i.id, i)));
                        match page.next_cursor {
                            Some(c) => cursor = Some(c.to_string()),
                            None => break,
                        }
                    }
                    draw(open, recent, *last);
                }
                continue;
            }
            *retry = Duration::from_millis(250);
            if self.json {
                outln!("{data}");
                let _ = std::io::stdout().flush();
                continue;
            }
            let line = change_line(&msg.event, &data);
            if screen {
                if let Ok(inc) = serde_json::from_value::<Incident>(data["incident"].clone()) {
                    if inc.status.is_active() {
                        open.insert(inc.id, inc);
                    } else {
                        open.remove(&inc.id);
                    }
                }
                recent.push_front(line);
                recent.truncate(RECENT);
                draw(open, recent, *last);
            } else {
                outln!("{line}");
                let _ = std::io::stdout().flush();
            }
        }
    }
}

/// How one connection ended.
enum Flow {
    Quit,
    Ended,
}

/// One change in words: time, incident, event, and what happened.
pub fn change_line(event: &str, data: &Value) -> String {
    let entry: Option<TimelineEntry> = serde_json::from_value(data["entry"].clone()).ok();
    let inc = &data["incident"];
    let colour = output::colour_enabled();
    let severity = inc["severity"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .map(|s| output::severity(s, colour))
        .unwrap_or_else(|| "-".into());
    let Some(e) = entry else {
        return format!("{event} (unreadable event)");
    };
    let d = &e.data;
    let mut what = match event {
        "incident_created" | "detection" => {
            crate::incident::fold::shown_count(d)
                + d["summary"]
                    .as_str()
                    .or(inc["title"].as_str())
                    .unwrap_or("")
        }
        _ if d.get("to").is_some() => format!(
            "{} → {}",
            d["from"].as_str().unwrap_or("-"),
            d["to"].as_str().unwrap_or("-")
        ),
        _ => String::new(),
    };
    if let Some(n) = &e.note {
        if !what.is_empty() {
            what.push_str(": ");
        }
        what.push_str(n);
    }
    let kind = serde_json::to_value(e.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    // Untrusted text (summaries, titles, notes, actors) on one line, escaped.
    format!(
        "{}  #{} {} {} {} by {}  {}",
        e.ts,
        e.incident_id,
        output::one_line(event),
        kind,
        severity,
        output::one_line(&e.actor),
        output::one_line(&what)
    )
    .trim_end()
    .to_owned()
}

fn draw(open: &BTreeMap<u64, Incident>, recent: &VecDeque<String>, last: Option<u64>) {
    let now = SystemClock.now();
    let mut list: Vec<Incident> = open.values().cloned().collect();
    // Worst first, newest first within a severity.
    list.sort_by(|a, b| a.severity.cmp(&b.severity).then(b.id.cmp(&a.id)));
    let mut out = String::from("\x1b[H\x1b[2J");
    out.push_str(&format!(
        "incidentd: {} active incident(s), as of {}{}  (Ctrl-C to quit)\n\n",
        list.len(),
        now,
        last.map(|l| format!(", change {l}")).unwrap_or_default()
    ));
    if list.is_empty() {
        out.push_str("no active incidents\n");
    } else {
        out.push_str(&incidents_table(&list, now));
    }
    out.push_str("\nLatest changes\n");
    for l in recent {
        out.push_str(l);
        out.push('\n');
    }
    out!("{out}");
    let _ = std::io::stdout().flush();
}
