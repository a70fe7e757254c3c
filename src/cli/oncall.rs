//! `incidentctl oncall [TEAM] [--at TIME]`: who is on call, and until when.

use super::*;

pub(super) async fn oncall(
    client: &Client,
    team: Option<String>,
    at: Option<String>,
    json_out: bool,
    now: Timestamp,
) -> Result<(), CliError> {
    let path = with_query("/v1/oncall", &[("team", team), ("at", at)])?;
    let v: Value = client.get(&path).await?;
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    let list = v["oncall"].as_array().cloned().unwrap_or_default();
    if list.is_empty() {
        outln!("no teams");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|o| {
            let until = o["until"]
                .as_str()
                .and_then(|t| Timestamp::parse_rfc3339(t).ok())
                .map(|t| {
                    let left = json!((t.millis() - now.millis()).max(0) / 1000);
                    format!("{t} (in {})", human_secs(&left))
                })
                .unwrap_or_else(|| "-".into());
            let mut primary = o["primary"].as_str().unwrap_or("").to_owned();
            if let Some(f) = o["override_for"].as_str() {
                primary.push_str(&format!(" (for {f})"));
            }
            vec![
                o["team"].as_str().unwrap_or("").to_owned(),
                primary,
                o["secondary"].as_str().unwrap_or("-").to_owned(),
                until,
            ]
        })
        .collect();
    out!(
        "{}",
        table(&["TEAM", "PRIMARY", "SECONDARY", "UNTIL"], &rows)
    );
    Ok(())
}
