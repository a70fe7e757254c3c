//! Time: the [`Timestamp`] type used everywhere, and the one place that reads wall time.
//!
//! Windows run on event time; only "now" (default event time, incident timestamps, uptime)
//! comes from [`Clock`], so tests and offline replays can substitute their own.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;

/// Milliseconds since the Unix epoch (UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// Parses RFC 3339 (`2026-11-23T10:00:00Z`, `…+02:00`, fractional seconds allowed).
    pub fn parse_rfc3339(s: &str) -> Result<Self, String> {
        let dt = OffsetDateTime::parse(s, &Rfc3339)
            .map_err(|e| format!("`{s}` is not an RFC 3339 time: {e}"))?;
        Ok(Timestamp((dt.unix_timestamp_nanos() / 1_000_000) as i64))
    }

    pub fn to_rfc3339(self) -> String {
        let nanos = i128::from(self.0) * 1_000_000;
        match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
            // Always UTC with milliseconds, so times line up in tables and sort as text.
            Ok(dt) => dt
                .format(format_description!(
                    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
                ))
                .unwrap_or_else(|_| format!("@{}ms", self.0)),
            Err(_) => format!("@{}ms", self.0),
        }
    }

    pub fn saturating_add(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(duration_millis(d)))
    }

    pub fn saturating_sub(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(duration_millis(d)))
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0).max(0) as u64)
    }
}

pub fn duration_millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Millis(i64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Millis(ms) => Ok(Timestamp(ms)),
            Raw::Text(s) => Timestamp::parse_rfc3339(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// The source of "now".
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

/// Wall time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl SystemClock {
    /// Now minus `d` (for "since 1h" style filters).
    pub fn now_minus(&self, d: Duration) -> Timestamp {
        self.now().saturating_sub(d)
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        Timestamp(duration_millis(d))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip_and_offsets() {
        let t = Timestamp::parse_rfc3339("2026-11-23T10:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-23T10:00:00.000Z");
        let u = Timestamp::parse_rfc3339("2026-11-23T12:00:00.250+02:00").unwrap();
        assert_eq!(u.millis() - t.millis(), 250);
        assert!(Timestamp::parse_rfc3339("yesterday").is_err());
    }
}
