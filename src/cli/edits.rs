//! `incidentctl edit|merge|split`: incidents edited by hand.

use super::*;

/// Sends an edit (`PATCH` for the incident itself, `POST` for merge and split) and prints
/// the incident it answers with.
pub(super) async fn edited(
    client: &Client,
    path: &str,
    body: Value,
    json_out: bool,
) -> Result<(), CliError> {
    let method = if path.ends_with("/merge") || path.ends_with("/split") {
        hyper::Method::POST
    } else {
        hyper::Method::PATCH
    };
    let (status, answer) = client
        .raw(
            method,
            path,
            body.to_string().into_bytes(),
            "application/json",
        )
        .await?;
    let v: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if !status.is_success() {
        let msg = v["error"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
        return Err(CliError::Failed(msg));
    }
    if json_out {
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        outln!(
            "incident {}: {} ({}, {})",
            v["id"],
            output::one_line(v["title"].as_str().unwrap_or("")),
            v["status"].as_str().unwrap_or("?"),
            v["key"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}
