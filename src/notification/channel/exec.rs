//! `kind = "exec"`: runs `command` with the version-1 JSON document on its stdin; exit 0
//! is delivered. A program that fails is tried again (it may depend on something that
//! comes back); one that cannot start is not.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::{Channel, ChannelConfig, Context, Delivered, DeliveryError, Problems, Templates};

pub struct Exec {
    command: Vec<String>,
    timeout: Duration,
}

impl Exec {
    pub fn new(c: &ChannelConfig) -> Result<Exec, Problems> {
        if c.command.is_empty() {
            return Err(vec![("command", "an exec channel needs `command`".into())]);
        }
        Ok(Exec {
            command: c.command.clone(),
            timeout: c.timeout,
        })
    }
}

#[async_trait::async_trait]
impl Channel for Exec {
    async fn deliver(
        &self,
        ctx: &Context<'_>,
        _: &Templates,
        _: &reqwest::Client,
    ) -> Result<Delivered, DeliveryError> {
        let (prog, args) = self
            .command
            .split_first()
            .ok_or_else(|| DeliveryError::Invalid("no command".into()))?;
        let mut child = tokio::process::Command::new(prog)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| DeliveryError::Invalid(format!("cannot start {prog}: {e}")))?;
        let doc = ctx.document().to_string();
        let run = async {
            if let Some(mut stdin) = child.stdin.take() {
                stdin
                    .write_all(doc.as_bytes())
                    .await
                    .map_err(|e| DeliveryError::Transient(format!("writing to {prog}: {e}")))?;
            }
            child
                .wait_with_output()
                .await
                .map_err(|e| DeliveryError::Transient(format!("waiting for {prog}: {e}")))
        };
        let out = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| {
                DeliveryError::Transient(format!("{prog} did not finish within {:?}", self.timeout))
            })??;
        if out.status.success() {
            return Ok(Delivered::default());
        }
        let stderr: String = String::from_utf8_lossy(&out.stderr)
            .chars()
            .take(300)
            .collect();
        Err(DeliveryError::Transient(format!(
            "{prog} exited with {}: {stderr}",
            out.status
        )))
    }
}
