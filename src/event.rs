//! The event: what every source produces and every rule reads (DESIGN §3.2).
//!
//! Decoding is strict and explains itself: each rejected line gets a [`DecodeError`] whose
//! [`reason`](DecodeError::reason) is the counter it is counted under.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;

/// Severity of a single event (not of an incident).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    #[default]
    Info,
    Notice,
    Warning,
    Error,
    Critical,
}

impl Level {
    pub const NAMES: &'static str = "debug, info, notice, warning, error, critical";

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Notice => "notice",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Critical => "critical",
        }
    }
}

impl FromStr for Level {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "debug" => Level::Debug,
            "info" => Level::Info,
            "notice" => Level::Notice,
            "warning" | "warn" => Level::Warning,
            "error" | "err" => Level::Error,
            "critical" | "crit" => Level::Critical,
            other => {
                return Err(format!(
                    "unknown level `{other}` (expected {})",
                    Level::NAMES
                ));
            }
        })
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event, fully defaulted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub ts: Timestamp,
    pub kind: String,
    pub source: String,
    pub level: Level,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub fields: serde_json::Map<String, Value>,
}

/// The wire form: only `kind` is required, and unknown keys are refused so a typo never
/// silently loses data.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireEvent {
    ts: Option<Value>,
    kind: Option<String>,
    source: Option<String>,
    level: Option<String>,
    service: Option<String>,
    host: Option<String>,
    message: Option<String>,
    value: Option<f64>,
    correlation_id: Option<String>,
    trace_id: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    fields: serde_json::Map<String, Value>,
}

/// What decoding fills in when the event leaves it out.
#[derive(Clone, Debug)]
pub struct Defaults<'a> {
    pub source: &'a str,
    pub host: &'a str,
    pub now: Timestamp,
    /// The latest event time accepted (wall time plus `[engine] max_future_skew`); a later
    /// `ts` is rejected as `future_ts` (see [`crate::watermark`]).
    pub latest: Timestamp,
}

impl<'a> Defaults<'a> {
    /// Defaults at wall time `now`, accepting event times up to `now + skew`.
    pub fn at(source: &'a str, host: &'a str, now: Timestamp, skew: std::time::Duration) -> Self {
        Defaults {
            source,
            host,
            now,
            latest: crate::watermark::latest_accepted(now, skew),
        }
    }
}

/// Why a line was not accepted as an event.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("line is longer than {max} bytes")]
    Oversize { max: usize },
    #[error("line is not valid UTF-8 (byte {offset})")]
    InvalidUtf8 { offset: usize },
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("an event must be a JSON object")]
    NotAnObject,
    #[error("missing required key `kind`")]
    MissingKind,
    #[error("invalid `{key}`: {message}")]
    InvalidField { key: &'static str, message: String },
    #[error(
        "`ts` {ts} is more than the allowed skew ahead of wall time (latest accepted {latest})"
    )]
    FutureTs { ts: Timestamp, latest: Timestamp },
}

impl DecodeError {
    /// Every reason, in the order `/v1/status` shows them.
    pub const REASONS: [&'static str; 7] = [
        "oversize",
        "invalid_utf8",
        "invalid_json",
        "not_an_object",
        "missing_kind",
        "invalid_field",
        "future_ts",
    ];

    /// The counter this rejection is counted under.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Oversize { .. } => "oversize",
            DecodeError::InvalidUtf8 { .. } => "invalid_utf8",
            DecodeError::InvalidJson(_) => "invalid_json",
            DecodeError::NotAnObject => "not_an_object",
            DecodeError::MissingKind => "missing_kind",
            DecodeError::InvalidField { .. } => "invalid_field",
            DecodeError::FutureTs { .. } => "future_ts",
        }
    }

    pub fn reason_index(&self) -> usize {
        let r = self.reason();
        Self::REASONS.iter().position(|x| *x == r).unwrap_or(0)
    }
}

impl Event {
    /// Decodes one NDJSON line (without its newline).
    pub fn decode(line: &[u8], defaults: &Defaults<'_>) -> Result<Event, DecodeError> {
        let text = std::str::from_utf8(line).map_err(|e| DecodeError::InvalidUtf8 {
            offset: e.valid_up_to(),
        })?;
        // The common case goes straight into the wire struct, without a JSON tree. Whatever
        // it refuses (not an object, a bad field, a key twice) goes the way that says what is
        // wrong and takes a repeated key's last value: the same answer either way.
        if let Ok(wire) = serde_json::from_str::<WireEvent>(text) {
            return Self::from_wire(wire, defaults);
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
        Self::from_value(value, defaults)
    }

    /// Builds an event from an already parsed JSON value (used for JSON arrays in
    /// `POST /v1/events`).
    pub fn from_value(value: Value, defaults: &Defaults<'_>) -> Result<Event, DecodeError> {
        if !value.is_object() {
            return Err(DecodeError::NotAnObject);
        }
        let wire: WireEvent = serde_json::from_value(value).map_err(|e| {
            let message = e.to_string();
            // serde names the offending key in its message; pick the closest known key so the
            // error says which one.
            DecodeError::InvalidField {
                key: guess_key(&message),
                message,
            }
        })?;
        Self::from_wire(wire, defaults)
    }

    fn from_wire(wire: WireEvent, defaults: &Defaults<'_>) -> Result<Event, DecodeError> {
        let kind = match wire.kind {
            Some(k) if !k.is_empty() => k,
            _ => return Err(DecodeError::MissingKind),
        };
        let ts = match wire.ts {
            None | Some(Value::Null) => defaults.now,
            Some(Value::String(s)) => Timestamp::parse_rfc3339(&s)
                .map_err(|message| DecodeError::InvalidField { key: "ts", message })?,
            Some(Value::Number(n)) => match n.as_i64() {
                // Years 1 to 9999, as RFC 3339 text allows; window arithmetic then never
                // overflows.
                Some(ms) if (-62_135_596_800_000..=253_402_300_799_999).contains(&ms) => {
                    Timestamp::from_millis(ms)
                }
                Some(ms) => {
                    return Err(DecodeError::InvalidField {
                        key: "ts",
                        message: format!("{ms} epoch milliseconds is outside the years 1 to 9999"),
                    });
                }
                None => {
                    return Err(DecodeError::InvalidField {
                        key: "ts",
                        message: format!("{n} is not a whole number of epoch milliseconds"),
                    });
                }
            },
            Some(other) => {
                return Err(DecodeError::InvalidField {
                    key: "ts",
                    message: format!("expected RFC 3339 text or epoch milliseconds, got {other}"),
                });
            }
        };
        if ts > defaults.latest {
            return Err(DecodeError::FutureTs {
                ts,
                latest: defaults.latest,
            });
        }
        let level = match wire.level {
            None => Level::Info,
            Some(l) => l.parse().map_err(|message| DecodeError::InvalidField {
                key: "level",
                message,
            })?,
        };
        Ok(Event {
            ts,
            kind,
            source: wire.source.unwrap_or_else(|| defaults.source.to_owned()),
            level,
            service: wire.service,
            host: wire.host.unwrap_or_else(|| defaults.host.to_owned()),
            message: wire.message,
            value: wire.value,
            correlation_id: wire.correlation_id,
            trace_id: wire.trace_id,
            labels: wire.labels,
            fields: wire.fields,
        })
    }
}

fn guess_key(message: &str) -> &'static str {
    const KEYS: [&str; 12] = [
        "ts",
        "kind",
        "source",
        "level",
        "service",
        "host",
        "message",
        "value",
        "correlation_id",
        "trace_id",
        "labels",
        "fields",
    ];
    if message.starts_with("unknown field") {
        return "event";
    }
    KEYS.iter()
        .find(|k| message.contains(&format!("`{k}`")))
        .copied()
        .unwrap_or("event")
}

/// This machine's host name, the default `host` of events.
pub fn local_hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned())
}

impl Event {
    /// A `log` event of the source `replay` with only a message, a time and a host: what
    /// parsers start from and fill in.
    pub fn log(message: String, ts: Timestamp, host: &str) -> Event {
        Event {
            ts,
            kind: "log".into(),
            source: "replay".into(),
            level: Level::Info,
            service: None,
            host: host.to_owned(),
            message: Some(message),
            value: None,
            correlation_id: None,
            trace_id: None,
            labels: BTreeMap::new(),
            fields: serde_json::Map::new(),
        }
    }

    /// The memory the event's strings hold (their capacity, not their length): what a spare
    /// event (see [`Recycle`]) keeps.
    pub fn held_bytes(&self) -> usize {
        fn value(v: &Value) -> usize {
            match v {
                Value::String(s) => s.capacity(),
                Value::Array(a) => a.iter().map(value).sum(),
                Value::Object(m) => m.iter().map(|(k, v)| k.capacity() + value(v)).sum(),
                _ => 0,
            }
        }
        let text = |s: &String| s.capacity();
        let fields: usize = self
            .fields
            .iter()
            .map(|(k, v)| k.capacity() + value(v))
            .sum();
        let labels: usize = self.labels.iter().map(|(k, v)| text(k) + text(v)).sum();
        text(&self.kind)
            + text(&self.source)
            + text(&self.host)
            + self.message.as_ref().map_or(0, text)
            + self.service.as_ref().map_or(0, text)
            + self.correlation_id.as_ref().map_or(0, text)
            + self.trace_id.as_ref().map_or(0, text)
            + fields
            + labels
    }
}

/// Events handed back to the source that parsed them once the engine has applied them, so
/// the source parses its next lines into them (their strings and fields keep their memory)
/// instead of allocating each event and freeing it on another thread. Bounded: a source that
/// has enough spare events lets the rest go.
#[derive(Debug, Clone)]
pub struct Recycle(std::sync::mpsc::SyncSender<Vec<(u64, Event)>>);

/// The source's end of a [`Recycle`].
pub type Recycled = std::sync::mpsc::Receiver<Vec<(u64, Event)>>;

impl Recycle {
    /// A channel holding up to `batches` batches of spare events.
    pub fn channel(batches: usize) -> (Recycle, Recycled) {
        let (tx, rx) = std::sync::mpsc::sync_channel(batches);
        (Recycle(tx), rx)
    }

    /// Hands `events` back. When the source holds enough already (or is gone), they are
    /// dropped here: spare memory, not data.
    pub fn give_back(&self, events: Vec<(u64, Event)>) {
        if events.is_empty() {
            return;
        }
        let _spare_or_dropped = self.0.try_send(events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_holds_what_its_strings_hold_even_when_cleared() {
        let mut ev = Event::log("x".repeat(10_000), Timestamp(0), "h");
        ev.fields.insert("program".into(), "p".repeat(5_000).into());
        assert!(ev.held_bytes() >= 15_000);
        // Cleared, a string keeps its memory: still counted.
        if let Some(m) = &mut ev.message {
            m.clear();
        }
        assert!(ev.held_bytes() >= 15_000);
        let small = Event::log("short".into(), Timestamp(0), "h");
        assert!(small.held_bytes() < 100);
        // What comes back full goes round again; what holds too much is let go.
        let (recycle, recycled) = Recycle::channel(1);
        recycle.give_back(vec![(0, small.clone())]);
        recycle.give_back(vec![(1, small)]);
        assert_eq!(recycled.try_recv().map(|b| b.len()), Ok(1));
        assert!(recycled.try_recv().is_err());
    }

    fn defaults() -> Defaults<'static> {
        Defaults::at("ingest", "h1", Timestamp(1_000), std::time::Duration::MAX)
    }

    #[test]
    fn only_kind_is_required() {
        let e = Event::decode(br#"{"kind":"log"}"#, &defaults()).unwrap();
        assert_eq!(e.kind, "log");
        assert_eq!(e.source, "ingest");
        assert_eq!(e.host, "h1");
        assert_eq!(e.level, Level::Info);
        assert_eq!(e.ts, Timestamp(1_000));
    }

    #[test]
    fn full_event_decodes() {
        let line = br#"{"ts":"2026-11-23T10:00:00Z","kind":"error","source":"api","level":"error","service":"checkout","host":"web-1","message":"upstream timeout","value":1850.0,"correlation_id":"req-42","trace_id":"4bf92f35","labels":{"region":"eu"},"fields":{"status":502}}"#;
        let e = Event::decode(line, &defaults()).unwrap();
        assert_eq!(e.ts.to_rfc3339(), "2026-11-23T10:00:00.000Z");
        assert_eq!(e.level, Level::Error);
        assert_eq!(e.labels["region"], "eu");
        assert_eq!(e.fields["status"], 502);
        assert_eq!(e.value, Some(1850.0));
        let epoch = Event::decode(br#"{"kind":"x","ts":1763892000000}"#, &defaults()).unwrap();
        assert_eq!(epoch.ts, Timestamp(1_763_892_000_000));
    }

    #[test]
    fn rejections_carry_their_reason() {
        let d = defaults();
        let reason = |l: &[u8]| Event::decode(l, &d).unwrap_err().reason();
        assert_eq!(reason(b"{not json"), "invalid_json");
        assert_eq!(reason(b"\xff\xfe{}"), "invalid_utf8");
        assert_eq!(reason(b"[1,2]"), "not_an_object");
        assert_eq!(reason(br#"{"message":"no kind"}"#), "missing_kind");
        assert_eq!(reason(br#"{"kind":""}"#), "missing_kind");
        assert_eq!(reason(br#"{"kind":"x","level":"loud"}"#), "invalid_field");
        assert_eq!(reason(br#"{"kind":"x","ts":"noon"}"#), "invalid_field");
        assert_eq!(
            reason(br#"{"kind":"x","ts":-9223372036854775808}"#),
            "invalid_field"
        );
        assert_eq!(
            reason(br#"{"kind":"x","ts":9223372036854775807}"#),
            "invalid_field"
        );
        assert_eq!(reason(br#"{"kind":"x","labels":{"a":1}}"#), "invalid_field");
        assert_eq!(reason(br#"{"kind":"x","colour":"red"}"#), "invalid_field");
        let err = Event::decode(br#"{"kind":"x","level":"loud"}"#, &d).unwrap_err();
        assert!(err.to_string().contains("level"), "{err}");
    }

    #[test]
    fn a_repeated_key_takes_its_last_value_as_before() {
        // The typed fast path refuses a repeated key; the tree path takes the last value.
        let e = Event::decode(br#"{"kind":"a","message":"x","kind":"b"}"#, &defaults()).unwrap();
        assert_eq!((e.kind.as_str(), e.message.as_deref()), ("b", Some("x")));
        assert!(matches!(
            Event::decode(br#"["kind"]"#, &defaults()),
            Err(DecodeError::NotAnObject)
        ));
        assert!(matches!(
            Event::decode(br#"{"kind":"a","value":"high"}"#, &defaults()),
            Err(DecodeError::InvalidField { .. })
        ));
        assert!(matches!(
            Event::decode(br#"{"kind":"a","#, &defaults()),
            Err(DecodeError::InvalidJson(_))
        ));
    }

    #[test]
    fn times_ahead_of_the_skew_are_rejected_as_future_ts() {
        // Wall time 1 s after the epoch, skew 5 minutes.
        let d = Defaults::at(
            "ingest",
            "h1",
            Timestamp(1_000),
            std::time::Duration::from_secs(300),
        );
        let at = |ts: &str| Event::decode(format!(r#"{{"kind":"x","ts":{ts}}}"#).as_bytes(), &d);
        assert!(at("301000").is_ok());
        assert_eq!(at("301001").unwrap_err().reason(), "future_ts");
        assert_eq!(
            at(r#""9999-12-31T23:59:59Z""#).unwrap_err().reason(),
            "future_ts"
        );
        // Old times are fine: a backlog of any age is processed on its own time.
        assert!(at(r#""1969-07-20T20:17:00Z""#).is_ok());
    }
}
