//! `incidentctl silence …`: silences and their table.

use super::*;

pub(super) async fn silence(
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
            where_,
            duration,
            until,
            start,
            comment,
        } => {
            let severity: Vec<&str> = severity
                .as_deref()
                .map(|s| s.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default();
            let labels: serde_json::Map<String, Value> = label.into_iter().collect();
            let where_: serde_json::Map<String, Value> = where_.into_iter().collect();
            let body = json!({
                "matchers": {"severity": severity, "service": service, "host": host,
                    "rule": rule, "labels": labels, "where": where_},
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
pub(super) fn silences_table(list: &[Value], now: Timestamp) -> String {
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
                matchers.push(shown_matcher(k, v));
            }
            for (k, v) in m["where"].as_object().into_iter().flatten() {
                matchers.push(shown_matcher(k, v));
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

/// A stored condition as the CLI takes it (`k=v`, `k!=v`, `k=~re`, `k!~re`), others as JSON.
fn shown_matcher(k: &str, v: &Value) -> String {
    let op = |name: &str| v.get(name).and_then(Value::as_str);
    if let Some(v) = v.as_str() {
        format!("{k}={v}")
    } else if let Some(x) = op("ne") {
        format!("{k}!={x}")
    } else if let Some(x) = op("regex") {
        format!("{k}=~{x}")
    } else if let Some(x) = op("not_regex") {
        format!("{k}!~{x}")
    } else {
        format!("{k} {v}")
    }
}
