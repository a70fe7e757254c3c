//! `incidentctl actions …`: runs, approvals, dry runs.

use super::*;

pub(super) async fn actions(
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
            // What the daemon cannot do of its enabled actions (the privilege preflight).
            for w in v["preflight"].as_array().into_iter().flatten() {
                outln!(
                    "warning: action {}: {}",
                    w["action"].as_str().unwrap_or("?"),
                    w["problem"].as_str().unwrap_or("?")
                );
            }
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
        ActionsCmd::Available { incident } => {
            let v: Value = client
                .get(&format!("/v1/incidents/{incident}/actions"))
                .await?;
            if json_out {
                print_json(&v);
            } else {
                for a in v["actions"].as_array().cloned().unwrap_or_default() {
                    let why = a["held"]
                        .as_str()
                        .or(a["approval"].as_str())
                        .map(|w| format!(": {w}"))
                        .unwrap_or_default();
                    outln!(
                        "{} ({}{}) {}{why}",
                        a["action"].as_str().unwrap_or("?"),
                        a["kind"].as_str().unwrap_or("?"),
                        if a["bound"] == true {
                            ", bound by its rule"
                        } else {
                            ""
                        },
                        a["policy"].as_str().unwrap_or("?"),
                    );
                    match a["cannot_render"].as_str() {
                        Some(e) => outln!("  cannot run for this incident: {e}"),
                        None => describe_plan(&a["plan"]),
                    }
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
pub(super) fn describe_plan(p: &Value) {
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
