//! `incidentctl send`: NDJSON events from files or standard input to `POST /v1/events`, in
//! requests of at most [`BATCH_BYTES`] of whole lines, so a file of any size goes through
//! with bounded memory and each request stays under the daemon's `max_body_bytes`. Line
//! numbers in the rejections are the inputs' own, counted across them in order.

use std::io::{BufRead, Read};
use std::path::PathBuf;

use serde_json::{Value, json};

use super::CliError;
use super::client::Client;

/// The most bytes of lines in one request (the daemon's `max_body_bytes` is 8 MiB by
/// default); a longer line is not sent but reported.
const BATCH_BYTES: usize = 1 << 20;
/// A JSON array is sent whole, in one request: at most this large.
const MAX_ARRAY_BYTES: u64 = 8 << 20;
/// Rejected lines shown (and listed with `-o json`); all are counted.
const LISTED: usize = 100;

/// A line not sent: its number, the reason and the message.
type Unsent = (u64, &'static str, String);

/// What the requests answered, added up.
#[derive(Default)]
struct Totals {
    accepted: u64,
    rejected: u64,
    listed: Vec<Value>,
}

impl Totals {
    fn reject(&mut self, line: u64, reason: &str, error: &str) {
        self.rejected += 1;
        if self.listed.len() < LISTED {
            self.listed
                .push(json!({"line": line, "reason": reason, "error": error}));
        }
    }
}

/// Standard input first (when `files` is empty or names `-`), then each file in order.
fn inputs(files: &[PathBuf]) -> Result<Vec<Box<dyn BufRead>>, CliError> {
    let mut out: Vec<Box<dyn BufRead>> = Vec::new();
    if files.is_empty() || files.iter().any(|f| f.as_os_str() == "-") {
        out.push(Box::new(std::io::stdin().lock()));
    }
    for f in files.iter().filter(|f| f.as_os_str() != "-") {
        let file = std::fs::File::open(f)
            .map_err(|e| CliError::Failed(format!("cannot read {}: {e}", f.display())))?;
        out.push(Box::new(std::io::BufReader::with_capacity(64 << 10, file)));
    }
    Ok(out)
}

pub(super) async fn send(
    client: &Client,
    files: &[PathBuf],
    json_out: bool,
) -> Result<(), CliError> {
    let mut inputs = inputs(files)?;
    let mut totals = Totals::default();
    let unreadable = |e: std::io::Error| CliError::Failed(format!("cannot read the input: {e}"));
    // A body that starts with `[` is one JSON array of events, sent as it is.
    let array = match inputs.first_mut() {
        Some(first) => first
            .fill_buf()
            .map_err(unreadable)?
            .trim_ascii_start()
            .starts_with(b"["),
        None => false,
    };
    if array {
        let mut body = Vec::new();
        for input in inputs {
            input
                .take(MAX_ARRAY_BYTES + 1 - body.len() as u64)
                .read_to_end(&mut body)
                .map_err(unreadable)?;
        }
        if body.len() as u64 > MAX_ARRAY_BYTES {
            return Err(CliError::Failed(format!(
                "a JSON array larger than {MAX_ARRAY_BYTES} bytes: send the events as NDJSON, one per line"
            )));
        }
        post(client, body, (0, &mut Vec::new()), &mut totals).await?;
        return report(&totals, json_out);
    }
    let mut batch = Vec::with_capacity(BATCH_BYTES);
    // Lines in the requests already sent, and in `batch`.
    let (mut sent_lines, mut batch_lines) = (0u64, 0u64);
    let mut line = Vec::new();
    // Lines of `batch` not sent, by number, with why.
    let mut unsent: Vec<Unsent> = Vec::new();
    for mut input in inputs {
        loop {
            let n = crate::replay::read_line_kept(&mut input, &mut line, BATCH_BYTES + 1)
                .map_err(unreadable)?;
            if n == 0 {
                break;
            }
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            // Not sent: a line longer than a part, and a line that would make its part read
            // as one JSON array (the daemon takes a body starting with `[` for one). An empty
            // line keeps the numbers of those after it; each is said with the rejections of
            // its part, in line order.
            let refused = if line.len() - 1 > BATCH_BYTES {
                Some((
                    "oversize",
                    format!("line longer than {BATCH_BYTES} bytes; not sent"),
                ))
            } else if line.trim_ascii_start().starts_with(b"[") {
                let why = "an event must be a JSON object (an array line is not sent)";
                Some(("not_an_object", why.to_owned()))
            } else {
                None
            };
            if let Some((reason, error)) = refused {
                batch.push(b'\n');
                batch_lines += 1;
                match unsent.len() < LISTED {
                    true => unsent.push((sent_lines + batch_lines, reason, error)),
                    false => totals.rejected += 1,
                }
                continue;
            }
            if batch.len() + line.len() > BATCH_BYTES {
                let body = std::mem::take(&mut batch);
                post(client, body, (sent_lines, &mut unsent), &mut totals).await?;
                sent_lines += batch_lines;
                batch_lines = 0;
            }
            batch.extend_from_slice(&line);
            batch_lines += 1;
        }
    }
    if batch.iter().any(|b| !b.is_ascii_whitespace()) || !unsent.is_empty() {
        post(client, batch, (sent_lines, &mut unsent), &mut totals).await?;
    }
    report(&totals, json_out)
}

/// One request; its rejections numbered after the `before` lines already sent, with the
/// `unsent` lines of the same part, in line order.
async fn post(
    client: &Client,
    body: Vec<u8>,
    (before, unsent): (u64, &mut Vec<Unsent>),
    totals: &mut Totals,
) -> Result<(), CliError> {
    let v: Value = client
        .call(
            hyper::Method::POST,
            "/v1/events",
            Some(body),
            "application/x-ndjson",
        )
        .await
        .map_err(|e| {
            // Earlier parts are in: say how far it got, so the rest can be sent again.
            CliError::Failed(format!(
                "{e}; {} event(s) accepted before it, nothing sent from line {} on",
                totals.accepted,
                before + 1
            ))
        })?;
    totals.accepted += v["accepted"].as_u64().unwrap_or(0);
    let listed = v["rejected"].as_array().cloned().unwrap_or_default();
    let all = v["rejected_total"].as_u64().unwrap_or(listed.len() as u64);
    let text = |r: &Value, k: &str| r[k].as_str().unwrap_or("").to_owned();
    let mut here: Vec<(u64, String, String)> = listed
        .iter()
        .map(|r| {
            let line = before + r["line"].as_u64().unwrap_or(0);
            (line, text(r, "reason"), text(r, "error"))
        })
        .collect();
    here.extend(unsent.drain(..).map(|(n, r, e)| (n, r.to_owned(), e)));
    here.sort_by_key(|(n, _, _)| *n);
    for (line, reason, error) in &here {
        totals.reject(*line, reason, error);
    }
    // Counted, not listed by the daemon.
    totals.rejected += all.saturating_sub(listed.len() as u64);
    Ok(())
}

fn report(t: &Totals, json_out: bool) -> Result<(), CliError> {
    if json_out {
        let v = json!({"accepted": t.accepted, "rejected": t.listed, "rejected_total": t.rejected});
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        outln!("accepted {}", t.accepted);
        for r in &t.listed {
            eprintln!("line {}: {}", r["line"], r["error"].as_str().unwrap_or(""));
        }
        if t.rejected > t.listed.len() as u64 {
            eprintln!(
                "… and {} more rejected line(s)",
                t.rejected - t.listed.len() as u64
            );
        }
    }
    match t.rejected {
        0 => Ok(()),
        n => Err(CliError::Failed(format!("{n} line(s) rejected"))),
    }
}
