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
        let mut buf = [0u8; 24];
        match self.rfc3339_into(&mut buf) {
            Some(text) => text.to_owned(),
            None => self.to_rfc3339_slow(),
        }
    }

    /// `to_rfc3339`'s text in `buf`, for years 0 to 9999 (None otherwise): the calendar
    /// from `time`, the digits written here (the hot path of every stored entry and event;
    /// `time`'s general formatter cost several times as much).
    fn rfc3339_into(self, buf: &mut [u8; 24]) -> Option<&str> {
        let dt = OffsetDateTime::from_unix_timestamp_nanos(i128::from(self.0) * 1_000_000).ok()?;
        let year = u32::try_from(dt.year()).ok().filter(|y| *y <= 9999)?;
        let mut put = |at: usize, value: u32, width: usize| {
            let mut v = value;
            for i in (0..width).rev() {
                buf[at + i] = b'0' + (v % 10) as u8;
                v /= 10;
            }
        };
        put(0, year, 4);
        put(5, u32::from(u8::from(dt.month())), 2);
        put(8, u32::from(dt.day()), 2);
        put(11, u32::from(dt.hour()), 2);
        put(14, u32::from(dt.minute()), 2);
        put(17, u32::from(dt.second()), 2);
        put(20, u32::from(dt.millisecond()), 3);
        for (at, b) in [
            (4, b'-'),
            (7, b'-'),
            (10, b'T'),
            (13, b':'),
            (16, b':'),
            (19, b'.'),
        ] {
            buf[at] = b;
        }
        buf[23] = b'Z';
        std::str::from_utf8(buf).ok()
    }

    fn to_rfc3339_slow(self) -> String {
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
        let mut buf = [0u8; 24];
        match self.rfc3339_into(&mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&self.to_rfc3339_slow()),
        }
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

    proptest::proptest! {
        /// The digits written by hand say what `time`'s formatter says, from year 0 to 9999
        /// and around its edges; beyond them the formatter's answer (or `@…ms`) is kept.
        #[test]
        fn the_fast_rfc3339_text_is_times_own(ms in -62_300_000_000_000i64..253_500_000_000_000i64) {
            let t = Timestamp(ms);
            proptest::prop_assert_eq!(t.to_rfc3339(), t.to_rfc3339_slow());
            proptest::prop_assert_eq!(serde_json::to_string(&t).unwrap(), format!("\"{}\"", t.to_rfc3339_slow()));
        }
    }

    #[test]
    fn edges_of_the_fast_rfc3339_text() {
        for ms in [
            0,
            -1,
            999,
            1_000,
            253_402_300_799_999,
            253_402_300_800_000,
            -62_167_219_200_000,
            -62_167_219_200_001,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(
                Timestamp(ms).to_rfc3339(),
                Timestamp(ms).to_rfc3339_slow(),
                "{ms}"
            );
        }
        assert_eq!(Timestamp(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
        assert_eq!(
            Timestamp(253_402_300_799_999).to_rfc3339(),
            "9999-12-31T23:59:59.999Z"
        );
    }
}
