//! `incidentctl channels …`: the channels with their figures, and test messages.

use super::*;

#[derive(Subcommand, Debug)]
pub enum ChannelsCmd {
    /// Every channel: kind, target (secrets left out), delivered, failed, queued,
    /// dead-lettered, the last error.
    List,
    /// Send a test message through a channel's real delivery path (admins); exits 0 only
    /// when the service accepted it, else prints its answer and exits 1.
    Test { id: String },
}

pub(super) async fn channels(
    client: &Client,
    cmd: ChannelsCmd,
    json_out: bool,
    now: Timestamp,
) -> Result<(), CliError> {
    match cmd {
        ChannelsCmd::List => {
            let v: Value = client.get("/v1/channels").await?;
            if json_out {
                outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                return Ok(());
            }
            let list = v["channels"].as_array().cloned().unwrap_or_default();
            if list.is_empty() {
                outln!("no channels");
                return Ok(());
            }
            let n = |c: &Value, k: &str| c[k].as_u64().unwrap_or(0).to_string();
            let rows: Vec<Vec<String>> = list
                .iter()
                .map(|c| {
                    let last = match (c["last_error"].as_str(), c["last_delivered_at"].as_str()) {
                        (Some(e), _) => format!("error: {e}"),
                        (None, Some(t)) => Timestamp::parse_rfc3339(t)
                            .map(|t| format!("delivered {}", ago(t, now)))
                            .unwrap_or_default(),
                        _ => "-".into(),
                    };
                    vec![
                        c["id"].as_str().unwrap_or("").to_owned(),
                        c["kind"].as_str().unwrap_or("").to_owned(),
                        c["target"].as_str().unwrap_or("").to_owned(),
                        n(c, "delivered"),
                        n(c, "failed_attempts"),
                        n(c, "queued"),
                        n(c, "dead_lettered"),
                        last,
                    ]
                })
                .collect();
            out!(
                "{}",
                table(
                    &[
                        "ID",
                        "KIND",
                        "TARGET",
                        "DELIVERED",
                        "FAILED",
                        "QUEUED",
                        "DEAD",
                        "LAST"
                    ],
                    &rows
                )
            );
        }
        ChannelsCmd::Test { id } => {
            let path = format!("/v1/channels/{}/test", path_segment(&id));
            let (status, body) = client
                .raw(
                    hyper::Method::POST,
                    &path,
                    b"{}".to_vec(),
                    "application/json",
                )
                .await?;
            let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if status != hyper::StatusCode::OK && status != hyper::StatusCode::BAD_GATEWAY {
                let msg = v["error"]["message"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
                return Err(CliError::Failed(format!("{status}: {msg}")));
            }
            if json_out {
                outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                for r in v["results"].as_array().into_iter().flatten() {
                    let to = r["peer"]
                        .as_str()
                        .map(|p| format!(" ({p})"))
                        .unwrap_or_default();
                    if r["ok"] == true {
                        outln!("{id}{to}: accepted");
                    } else {
                        outln!(
                            "{id}{to}: failed: {}",
                            r["error"].as_str().unwrap_or("unknown error")
                        );
                        if let Some(a) = r.get("answer") {
                            outln!("  answer: {a}");
                        }
                    }
                }
            }
            if v["ok"] != true {
                return Err(CliError::Verdict(1));
            }
        }
    }
    Ok(())
}

/// `id` as one path segment (percent-encoded, so `/` or `?` in it stay part of the id).
fn path_segment(id: &str) -> String {
    let mut u = reqwest::Url::parse("http://local/").expect("a valid base URL");
    if let Ok(mut p) = u.path_segments_mut() {
        p.push(id);
    }
    u.path().trim_start_matches('/').to_owned()
}
