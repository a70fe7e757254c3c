//! How incidents, timelines, stats and status are shown; reading inputs.

use super::*;

pub(super) async fn transition(
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

pub(crate) fn incidents_table(incidents: &[Incident], now: Timestamp) -> String {
    let colour = output::colour_enabled();
    let rows: Vec<Vec<String>> = incidents
        .iter()
        .map(|i| {
            vec![
                i.id.to_string(),
                output::severity(i.severity, colour),
                i.status.to_string(),
                i.stage.stage.to_string(),
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
            "STAGE",
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
pub(super) fn key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` is not key=value")),
    }
}

/// An Alertmanager-style matcher (`k=v`, `k!=v`, `k=~re`, `k!~re`) as a name and the
/// condition the daemon reads (`"v"`, `{"ne": "v"}`, `{"regex": "re"}`, `{"not_regex": "re"}`).
pub(super) fn matcher(s: &str) -> Result<(String, Value), String> {
    let at = s
        .find(['=', '!'])
        .ok_or_else(|| format!("`{s}` is not key=value, key!=value, key=~regex or key!~regex"))?;
    let (k, rest) = s.split_at(at);
    let (op, v) = if let Some(v) = rest.strip_prefix("=~") {
        (Some("regex"), v)
    } else if let Some(v) = rest.strip_prefix("!~") {
        (Some("not_regex"), v)
    } else if let Some(v) = rest.strip_prefix("!=") {
        (Some("ne"), v)
    } else if let Some(v) = rest.strip_prefix('=') {
        (None, v)
    } else {
        return Err(format!(
            "`{s}` is not key=value, key!=value, key=~regex or key!~regex"
        ));
    };
    if k.is_empty() {
        return Err(format!("`{s}` names no key"));
    }
    let cond = match op {
        None => Value::from(v),
        Some(op) => serde_json::json!({ op: v }),
    };
    Ok((k.to_owned(), cond))
}

/// "ack: 3m 12s left; resolve: met" from the `sla` object of `GET /v1/incidents/{id}`.
fn sla_text(sla: &Value) -> String {
    let Some(m) = sla.as_object() else {
        return "-".into();
    };
    m.iter()
        .map(|(kind, s)| {
            let within = s["within"].as_str().unwrap_or("?");
            match s["state"].as_str() {
                Some("running") => format!(
                    "{kind} within {within}: {} left",
                    human_secs(&s["left_seconds"])
                ),
                Some(state) => format!("{kind} within {within}: {state}"),
                None => format!("{kind}: ?"),
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A duration in seconds as people read it ("4m 12s").
pub(super) fn human_secs(v: &Value) -> String {
    match v.as_f64() {
        Some(s) => {
            let d = std::time::Duration::from_secs(s.round().max(0.0) as u64);
            humantime::format_duration(d).to_string()
        }
        None => "-".into(),
    }
}

pub(super) fn print_stats(v: &Value) {
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

pub(super) fn print_incident(i: &Incident, sla: &Value, now: Timestamp) {
    let opt = |t: Option<Timestamp>| {
        t.map(|t| format!("{t} ({})", ago(t, now)))
            .unwrap_or_else(|| "-".into())
    };
    outln!("Incident {}: {}", i.id, output::one_line(&i.title));
    let rows = vec![
        vec!["key".into(), i.key.clone()],
        vec!["severity".into(), i.severity.to_string()],
        vec!["status".into(), i.status.to_string()],
        vec!["sla".into(), sla_text(sla)],
        vec![
            "stage".into(),
            format!(
                "{} (since {})",
                i.stage.stage,
                ago(i.stage.since.unwrap_or(i.created_at), now)
            ),
        ],
        vec![
            "service".into(),
            i.service.clone().unwrap_or_else(|| "-".into()),
        ],
        vec!["host".into(), i.host.clone().unwrap_or_else(|| "-".into())],
        vec![
            "assignee".into(),
            i.assignee.clone().unwrap_or_else(|| "-".into()),
        ],
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

pub(super) fn timeline_table(entries: &[TimelineEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let kind = serde_json::to_value(e.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let mut what = match (&e.note, &*e.data) {
                (_, Value::Object(d)) if d.contains_key("to") => format!(
                    "{} → {}",
                    d["from"].as_str().unwrap_or("-"),
                    d["to"].as_str().unwrap_or("-")
                ),
                (_, Value::Object(d)) if d.contains_key("summary") => {
                    crate::incident::fold::shown_count(&e.data)
                        + d["summary"].as_str().unwrap_or("")
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

pub(super) fn print_status(v: &Value) {
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
