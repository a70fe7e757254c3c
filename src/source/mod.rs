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
pub mod json_array;
pub mod line_filter;
pub mod lines;
pub mod parse;
pub mod probe;
pub mod socket;
pub mod syslog;
pub mod tail;

use crate::event::{DecodeError, Event};

/// The events of a request body, one at a time, each with its 1-based line number (or index
/// in a JSON array) or the reason it was refused. Blank lines are skipped; a body starting
/// with `[` is a JSON array of events. Lines and array elements are decoded as they are asked
/// for, so a caller that hands each event on holds one at a time, however long the body (an
/// array is checked whole first, without keeping anything: a malformed one is refused whole).
pub fn body_events<'a>(
    body: &'a [u8],
    max_line_bytes: usize,
    defaults: &'a crate::event::Defaults<'a>,
) -> BodyEvents<'a> {
    let trimmed = body.trim_ascii_start();
    let inner = if trimmed.first() == Some(&b'[') {
        match json_array::JsonArray::new(trimmed) {
            Ok(values) => Inner::Array(values.enumerate()),
            Err(e) => {
                let err = match std::str::from_utf8(trimmed) {
                    Err(u) => DecodeError::InvalidUtf8 {
                        offset: u.valid_up_to(),
                    },
                    Ok(_) => DecodeError::InvalidJson(e.to_string()),
                };
                Inner::Refused(Some(err))
            }
        }
    } else {
        let newline: fn(&u8) -> bool = |b| *b == b'\n';
        Inner::Lines(body.split(newline).enumerate())
    };
    BodyEvents {
        inner,
        max_line_bytes,
        defaults,
    }
}

/// See [`body_events`].
pub struct BodyEvents<'a> {
    inner: Inner<'a>,
    max_line_bytes: usize,
    defaults: &'a crate::event::Defaults<'a>,
}

/// A body's lines, numbered from 0.
type Lines<'a> = std::iter::Enumerate<std::slice::Split<'a, u8, fn(&u8) -> bool>>;

enum Inner<'a> {
    Lines(Lines<'a>),
    Array(std::iter::Enumerate<json_array::JsonArray<'a>>),
    /// A body that is not a JSON array although it starts like one.
    Refused(Option<DecodeError>),
}

impl Iterator for BodyEvents<'_> {
    type Item = (u64, Result<Event, DecodeError>);

    fn next(&mut self) -> Option<Self::Item> {
        match &mut self.inner {
            Inner::Refused(e) => e.take().map(|e| (1, Err(e))),
            Inner::Array(values) => {
                let (i, v) = values.next()?;
                let decoded = v
                    .map_err(|e| DecodeError::InvalidJson(e.to_string()))
                    .and_then(|v| Event::from_value(v, self.defaults));
                Some((i as u64 + 1, decoded))
            }
            Inner::Lines(lines) => loop {
                let (i, raw) = lines.next()?;
                let line = raw.strip_suffix(b"\r").unwrap_or(raw);
                if line.trim_ascii().is_empty() {
                    continue;
                }
                let n = i as u64 + 1;
                if line.len() > self.max_line_bytes {
                    let max = self.max_line_bytes;
                    return Some((n, Err(DecodeError::Oversize { max })));
                }
                return Some((n, Event::decode(line, self.defaults)));
            },
        }
    }
}
