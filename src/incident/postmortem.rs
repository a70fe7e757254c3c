//! A post-mortem draft in Markdown (`GET /v1/incidents/{id}/postmortem`), written from the
//! incident and its timeline: summary, impact, timeline, detections with what they saw, root
//! cause, actions, notifications, the incident's own times to detect, acknowledge and resolve,
//! and headed sections left for the people who write the lessons and follow-ups.

use std::fmt::Write;

use super::{EntryKind, Incident, TimelineEntry};
use crate::clock::Timestamp;

fn dur(from: Timestamp, to: Timestamp) -> String {
    let ms = (to.millis() - from.millis()).max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(ms.div_ceil(1000))).to_string()
}

/// Table cells cannot hold newlines or bare pipes.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The stored post-mortem: the text of the timeline's last `postmortem` entry — unless that
/// is the daemon's draft and the incident is active again (reopened): a draft written now
/// then says what is true.
pub fn stored(i: &Incident, timeline: &[TimelineEntry]) -> Option<String> {
    let e = timeline
        .iter()
        .rev()
        .find(|e| e.kind == EntryKind::Postmortem)?;
    if e.actor == "system" && i.status.is_active() {
        return None;
    }
    e.data.get("text")?.as_str().map(str::to_owned)
}

pub fn render(i: &Incident, timeline: &[TimelineEntry], now: Timestamp) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Post-mortem: incident {} — {}\n", i.id, i.title);
    let _ = writeln!(md, "## Summary\n");
    let _ = writeln!(
        md,
        "- Status: {}; severity: {}; key: `{}`",
        i.status, i.severity, i.key
    );
    let _ = writeln!(md, "- Created {}", i.created_at.to_rfc3339());
    if !i.rules.is_empty() {
        let _ = writeln!(md, "- Detected by: {}", i.rules.join(", "));
    }
    if let Some(a) = &i.assignee {
        let _ = writeln!(md, "- Assigned to: {a}");
    }
    if !i.tags.is_empty() {
        let _ = writeln!(md, "- Tags: {}", i.tags.join(", "));
    }
    if let Some(r) = &i.runbook {
        let _ = writeln!(md, "- Runbook: {r}");
    }

    let _ = writeln!(md, "\n## Impact\n");
    let end = i.resolved_at.or(i.cancelled_at).or(i.closed_at);
    let _ = writeln!(
        md,
        "- Duration: {} (first event {} to {})",
        dur(i.first_event_at, end.unwrap_or(now)),
        i.first_event_at.to_rfc3339(),
        end.map_or("now, still unresolved".to_owned(), |e| e.to_rfc3339())
    );
    let _ = writeln!(md, "- Severity: {}", i.severity);
    let _ = writeln!(
        md,
        "- Services: {}",
        i.service.as_deref().unwrap_or("(none recorded)")
    );
    let _ = writeln!(
        md,
        "- Hosts: {}",
        i.host.as_deref().unwrap_or("(none recorded)")
    );
    let _ = writeln!(md, "- Detections: {}", i.detections);

    let _ = writeln!(md, "\n## Timeline\n");
    let _ = writeln!(
        md,
        "| time | what | who | details |\n| --- | --- | --- | --- |"
    );
    for e in timeline {
        let details = match (&e.note, &*e.data) {
            (Some(n), _) => n.clone(),
            (None, serde_json::Value::Null) => String::new(),
            (None, d) => d.to_string(),
        };
        let _ = writeln!(
            md,
            "| {} | {:?} | {} | {} |",
            e.ts.to_rfc3339(),
            e.kind,
            cell(&e.actor),
            cell(&details)
        );
    }

    let _ = writeln!(md, "\n## Detections and evidence\n");
    let detections: Vec<&TimelineEntry> = timeline
        .iter()
        .filter(|e| e.kind == EntryKind::Detection)
        .collect();
    if detections.is_empty() {
        let _ = writeln!(md, "No detections: the incident was raised by hand.");
    }
    for e in detections {
        let d = &e.data;
        // A folded entry stands for several detections (the last one's summary).
        let folded = super::fold::shown_count(d);
        let _ = writeln!(
            md,
            "- {} `{}`: {folded}{} (events {} to {}, count {})",
            e.ts.to_rfc3339(),
            d["rule"].as_str().unwrap_or("?"),
            d["summary"].as_str().unwrap_or(""),
            d["first_event_ts"].as_str().unwrap_or("?"),
            d["event_ts"].as_str().unwrap_or("?"),
            d["count"]
        );
        if let Some(m) = d["message"].as_str() {
            let _ = writeln!(md, "  - last event: `{}`", m.replace('`', "'"));
        }
    }
    // Detections folded since the last entry (see `fold.rs`).
    if let Some(f) = &i.folded {
        let _ = writeln!(
            md,
            "- {} `{}`: {} detections not yet in the timeline, the last: {} (event {}, count {})",
            f.at.to_rfc3339(),
            f.facts.rule,
            f.detections,
            f.last.summary,
            f.last.event_ts.to_rfc3339(),
            f.last.count
        );
    }

    if !i.evidence.is_empty() {
        let _ = writeln!(
            md,
            "\nEvidence (the first and the latest events behind the detections):\n"
        );
        for ev in &i.evidence {
            let _ = writeln!(
                md,
                "- {} {} {} `{}`: {}",
                ev.ts.to_rfc3339(),
                ev.host,
                ev.source,
                ev.kind,
                ev.message.as_deref().unwrap_or("").replace('`', "'")
            );
        }
    }

    let _ = writeln!(md, "\n## Root cause\n");
    let _ = writeln!(
        md,
        "{}",
        match (&i.root_cause, &i.root_cause_reason) {
            (Some(r), Some(why)) => format!("{r} ({why})"),
            (Some(r), None) => r.clone(),
            _ => "Not determined by incidentd. Describe it here.".to_owned(),
        }
    );

    for (title, kinds) in [
        (
            "Actions and their results",
            &[
                EntryKind::ActionProposed,
                EntryKind::ActionApproved,
                EntryKind::ActionDenied,
                EntryKind::ActionExecuted,
                EntryKind::ActionHeld,
                EntryKind::ActionVerified,
            ][..],
        ),
        (
            "Notifications",
            &[EntryKind::Notification, EntryKind::TicketLinked][..],
        ),
    ] {
        let _ = writeln!(md, "\n## {title}\n");
        let rows: Vec<&TimelineEntry> = timeline
            .iter()
            .filter(|e| kinds.contains(&e.kind))
            .collect();
        if rows.is_empty() {
            let _ = writeln!(md, "None recorded.");
        }
        for e in rows {
            let _ = writeln!(
                md,
                "- {} {:?} by {}: {}",
                e.ts.to_rfc3339(),
                e.kind,
                e.actor,
                e.note.clone().unwrap_or_else(|| e.data.to_string())
            );
        }
    }

    let _ = writeln!(md, "\n## Response times\n");
    let _ = writeln!(
        md,
        "- Time to detect: {}",
        dur(i.first_event_at, i.created_at)
    );
    let _ = writeln!(
        md,
        "- Time to acknowledge: {}",
        i.acknowledged_at
            .map_or("not acknowledged".to_owned(), |a| dur(i.created_at, a))
    );
    let _ = writeln!(
        md,
        "- Time to resolve: {}",
        i.resolved_at
            .map_or("not resolved".to_owned(), |r| dur(i.created_at, r))
    );

    let _ = writeln!(md, "\n## Stages\n");
    let end = i
        .closed_at
        .or(i.cancelled_at)
        .or(i.resolved_at)
        .unwrap_or(now);
    let _ = writeln!(md, "- Now at: {}", i.stage.stage);
    for (stage, ms) in i.stage.durations(i.created_at, end) {
        let _ = writeln!(md, "- {stage}: {}", dur(Timestamp(0), Timestamp(ms as i64)));
    }

    let _ = writeln!(md, "\n## Lessons learned\n\n_To be written._");
    let _ = writeln!(md, "\n## Follow-ups\n\n_To be written._");
    md
}
