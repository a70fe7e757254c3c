//! Sources: inputs that turn bytes into [`Event`](crate::event::Event)s and send them to the
//! engine's bounded channel, waiting when it is full (backpressure) and counting every
//! rejected line by reason.
//!
//! The ingest socket ([`socket`]) and `POST /v1/events` (in the control API) take NDJSON
//! events; the configured sources read what a host already writes: file tails ([`tail`]),
//! the systemd journal ([`journald`]), a syslog datagram socket ([`syslog`]), commands ([`exec`]) and host probes ([`probe`]).
//! [`parse`] turns their lines into events; [`line_filter`] names the lines some rule could
//! match, so the others need no parsing; [`lines`] is the shared line reader with its
//! length limit.

pub mod config;
pub mod exec;
pub mod journald;
pub mod line_filter;
pub mod lines;
pub mod parse;
pub mod probe;
pub mod socket;
pub mod syslog;
pub mod tail;

use crate::event::{DecodeError, Event};

/// Splits an NDJSON body into decoded events and per-line errors (1-based line numbers).
/// Blank lines are skipped; a body starting with `[` is a JSON array of events.
pub fn decode_body(
    body: &[u8],
    max_line_bytes: usize,
    defaults: &crate::event::Defaults<'_>,
) -> (Vec<Event>, Vec<(u64, DecodeError)>) {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let trimmed = body.trim_ascii_start();
    if trimmed.first() == Some(&b'[') {
        match serde_json::from_slice::<Vec<serde_json::Value>>(trimmed) {
            Ok(values) => {
                for (i, v) in values.into_iter().enumerate() {
                    match Event::from_value(v, defaults) {
                        Ok(e) => events.push(e),
                        Err(e) => errors.push((i as u64 + 1, e)),
                    }
                }
            }
            Err(e) => {
                let err = match std::str::from_utf8(trimmed) {
                    Err(u) => DecodeError::InvalidUtf8 {
                        offset: u.valid_up_to(),
                    },
                    Ok(_) => DecodeError::InvalidJson(e.to_string()),
                };
                errors.push((1, err));
            }
        }
        return (events, errors);
    }
    for (i, raw) in body.split(|b| *b == b'\n').enumerate() {
        let line = raw.strip_suffix(b"\r").unwrap_or(raw);
        if line.trim_ascii().is_empty() {
            continue;
        }
        let n = i as u64 + 1;
        if line.len() > max_line_bytes {
            errors.push((
                n,
                DecodeError::Oversize {
                    max: max_line_bytes,
                },
            ));
            continue;
        }
        match Event::decode(line, defaults) {
            Ok(e) => events.push(e),
            Err(e) => errors.push((n, e)),
        }
    }
    (events, errors)
}
