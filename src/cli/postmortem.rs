//! `incidentctl postmortem ID [--edit]`: print the post-mortem, or edit it in `$VISUAL` /
//! `$EDITOR` and store what is saved (`PUT /v1/incidents/{id}/postmortem`).

use std::io::Write;

use super::*;

pub(super) async fn postmortem(
    client: &Client,
    id: u64,
    edit: bool,
    json_out: bool,
) -> Result<(), CliError> {
    let path = format!("/v1/incidents/{id}/postmortem");
    let (status, body) = client
        .raw(hyper::Method::GET, &path, Vec::new(), "application/json")
        .await?;
    let text = String::from_utf8_lossy(&body).into_owned();
    if !status.is_success() {
        return Err(CliError::Failed(error_message(&text)));
    }
    if !edit {
        if json_out {
            let v = json!({"incident_id": id, "markdown": text});
            outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        } else {
            out!("{text}");
        }
        return Ok(());
    }
    let edited = edit_in_editor(id, &text)?;
    if edited == text {
        outln!("post-mortem of incident {id} unchanged; nothing stored");
        return Ok(());
    }
    let (status, body) = client
        .raw(
            hyper::Method::PUT,
            &path,
            edited.into_bytes(),
            "text/markdown; charset=utf-8",
        )
        .await?;
    if !status.is_success() {
        return Err(CliError::Failed(error_message(&String::from_utf8_lossy(
            &body,
        ))));
    }
    outln!("post-mortem of incident {id} stored");
    Ok(())
}

fn error_message(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| text.to_owned())
}

/// Writes `text` to a private temporary file, runs the editor on it (through `sh`, so
/// `EDITOR="code --wait"` works), and reads it back.
fn edit_in_editor(id: u64, text: &str) -> Result<String, CliError> {
    use std::os::unix::fs::OpenOptionsExt;
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| {
            std::env::var("EDITOR")
                .ok()
                .filter(|e| !e.trim().is_empty())
        })
        .unwrap_or_else(|| "vi".into());
    let file = std::env::temp_dir().join(format!(
        "incidentctl-postmortem-{id}-{}.md",
        std::process::id()
    ));
    let fail =
        |what: &str, e: std::io::Error| CliError::Failed(format!("{what} {}: {e}", file.display()));
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&file)
            .map_err(|e| fail("cannot create", e))?;
        f.write_all(text.as_bytes())
            .map_err(|e| fail("cannot write", e))?;
    }
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&file)
        .status();
    let read = std::fs::read_to_string(&file);
    let removed = std::fs::remove_file(&file);
    let status =
        status.map_err(|e| CliError::Failed(format!("cannot run the editor `{editor}`: {e}")))?;
    if !status.success() {
        return Err(CliError::Failed(format!(
            "the editor `{editor}` exited with {status}; nothing stored"
        )));
    }
    if let Err(e) = removed {
        eprintln!("incidentctl: could not remove {}: {e}", file.display());
    }
    read.map_err(|e| fail("cannot read back", e))
}
