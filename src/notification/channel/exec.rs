//! `kind = "exec"`: runs `command` with the version-1 JSON document on its stdin; exit 0
//! is delivered. A program that fails is tried again (it may depend on something that
//! comes back); one that cannot start is not.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{Channel, ChannelConfig, Context, Delivered, DeliveryError, Problems, Templates};

/// Bytes of a failing program's stderr kept (300 characters are shown).
const STDERR_KEPT: usize = 1200;

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
        let (stdin, stderr) = (child.stdin.take(), child.stderr.take());
        // The document is written while stderr is read: a program that writes to stderr
        // before it reads its input never waits on us, nor we on it. Only the start of
        // stderr is kept; the rest is read and dropped.
        let write = async {
            if let Some(mut stdin) = stdin {
                stdin
                    .write_all(doc.as_bytes())
                    .await
                    .map_err(|e| DeliveryError::Transient(format!("writing to {prog}: {e}")))?;
            }
            Ok::<_, DeliveryError>(())
        };
        let drain = async {
            let mut kept = Vec::new();
            if let Some(mut err) = stderr {
                let mut buf = [0u8; 4096];
                while let Ok(n) = err.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    let room = STDERR_KEPT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
            kept
        };
        let run = async {
            let (written, kept) = tokio::join!(write, drain);
            written?;
            let status = child
                .wait()
                .await
                .map_err(|e| DeliveryError::Transient(format!("waiting for {prog}: {e}")))?;
            Ok::<_, DeliveryError>((status, kept))
        };
        let out = tokio::time::timeout(self.timeout, run)
            .await
            .map_err(|_| {
                DeliveryError::Transient(format!("{prog} did not finish within {:?}", self.timeout))
            })??;
        let (status, stderr) = out;
        if status.success() {
            return Ok(Delivered::default());
        }
        let stderr: String = String::from_utf8_lossy(&stderr).chars().take(300).collect();
        Err(DeliveryError::Transient(format!(
            "{prog} exited with {status}: {stderr}",
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::NotifyEvent;
    use super::super::tests::*;
    use super::*;

    /// A program that writes 200 MB to stderr before it reads a 300 KB document, and fails:
    /// neither side waits on the other, the error shows the start of stderr, and nothing
    /// near that size is held.
    #[tokio::test]
    async fn a_failing_program_s_stderr_is_shown_from_its_start_and_drained() {
        let c = channel(
            "id = \"s\"\nkind = \"exec\"\ntimeout = \"20s\"\ncommand = [\"sh\", \"-c\", \"echo first words >&2; head -c 200000000 /dev/zero | tr '\\\\0' x >&2; cat >/dev/null; exit 3\"]\n",
        );
        let exec = Exec::new(&c).unwrap();
        let mut inc = incident();
        // A document larger than a pipe holds: written while the program fills stderr.
        inc.title = "t".repeat(300_000);
        let ctx = ctx(&inc, &c, NotifyEvent::Opened);
        let Err(err) = exec
            .deliver(&ctx, &templates(), &crate::http_client().unwrap())
            .await
        else {
            panic!("delivered");
        };
        let err = err.to_string();
        assert!(
            err.contains("exited with exit status: 3: first words"),
            "{err}"
        );
        assert!(err.len() < 400, "{}", err.len());
    }
}
