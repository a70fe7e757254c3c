//! One keyed sliding-window rate limit: "at most `max` per `per`" for each key, on event or
//! wall time (a [`Timestamp`]). It serves the incident manager's per-key creation limit,
//! remediation's circuit breaker and cooldown, and each notification channel's rate limit.
//!
//! Memory is bounded by configuration: each key keeps at most `max` times, and once more
//! than [`KEYS_BEFORE_SWEEP`] keys are held, keys whose every time has left its window are
//! forgotten.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::Duration;

use crate::clock::Timestamp;

/// Keys held before a sweep forgets the idle ones.
pub const KEYS_BEFORE_SWEEP: usize = 10_000;

/// Recent times per key.
#[derive(Debug)]
pub struct RateWindow<K> {
    keys: HashMap<K, (Duration, VecDeque<Timestamp>)>,
}

impl<K> Default for RateWindow<K> {
    fn default() -> Self {
        RateWindow {
            keys: HashMap::new(),
        }
    }
}

impl<K: Hash + Eq + Clone> RateWindow<K> {
    /// How many times of `key` lie within `per` before `now` (older ones are dropped).
    pub fn count(&mut self, key: &K, now: Timestamp, per: Duration) -> usize {
        match self.keys.get_mut(key) {
            Some((p, q)) => {
                *p = per;
                while q.front().is_some_and(|t| now.since(*t) >= per) {
                    q.pop_front();
                }
                q.len()
            }
            None => 0,
        }
    }

    /// The latest time counted for `key`.
    pub fn last(&self, key: &K) -> Option<Timestamp> {
        self.keys.get(key).and_then(|(_, q)| q.back().copied())
    }

    /// Counts one at `now` if fewer than `max` lie within `per`; else how long until the
    /// oldest leaves the window.
    pub fn admit(
        &mut self,
        key: &K,
        now: Timestamp,
        max: usize,
        per: Duration,
    ) -> Result<(), Duration> {
        if self.count(key, now, per) >= max {
            let oldest = self
                .keys
                .get(key)
                .and_then(|(_, q)| q.front().copied())
                .unwrap_or(now);
            return Err(per.saturating_sub(now.since(oldest)));
        }
        self.record(key, now, per, max);
        Ok(())
    }

    /// Counts one at `now` (keeping at most `max` times for the key).
    pub fn record(&mut self, key: &K, now: Timestamp, per: Duration, max: usize) {
        let (p, q) = self
            .keys
            .entry(key.clone())
            .or_insert_with(|| (per, VecDeque::new()));
        *p = per;
        q.push_back(now);
        while q.len() > max.max(1) {
            q.pop_front();
        }
        if self.keys.len() > KEYS_BEFORE_SWEEP {
            self.keys
                .retain(|_, (per, q)| q.back().is_some_and(|t| now.since(*t) < *per));
        }
    }

    /// Takes back the latest time counted for `key` (what it counted did not happen after all).
    pub fn forget_last(&mut self, key: &K) {
        if let Some((_, q)) = self.keys.get_mut(key) {
            q.pop_back();
        }
    }

    /// Keys held (for tests and status).
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;

    #[test]
    fn at_most_max_per_window_then_the_wait() {
        let mut w = RateWindow::default();
        let per = Duration::from_secs(60);
        let k = "k".to_owned();
        assert_eq!(w.admit(&k, Timestamp(0), 3, per), Ok(()));
        assert_eq!(w.admit(&k, Timestamp(10 * S), 3, per), Ok(()));
        assert_eq!(w.admit(&k, Timestamp(20 * S), 3, per), Ok(()));
        assert_eq!(
            w.admit(&k, Timestamp(30 * S), 3, per),
            Err(Duration::from_secs(30))
        );
        // Another key is not touched.
        assert_eq!(w.admit(&"j".to_owned(), Timestamp(30 * S), 3, per), Ok(()));
        // The first left the window.
        assert_eq!(w.admit(&k, Timestamp(60 * S), 3, per), Ok(()));
        assert_eq!(w.count(&k, Timestamp(60 * S), per), 3);
        assert_eq!(w.last(&k), Some(Timestamp(60 * S)));
        w.forget_last(&k);
        assert_eq!(w.count(&k, Timestamp(60 * S), per), 2);
    }

    #[test]
    fn idle_keys_are_forgotten_past_the_bound() {
        let mut w = RateWindow::default();
        let per = Duration::from_secs(1);
        for i in 0..KEYS_BEFORE_SWEEP {
            w.record(&i, Timestamp(0), per, 3);
        }
        assert_eq!(w.len(), KEYS_BEFORE_SWEEP);
        w.record(&usize::MAX, Timestamp(5 * S), per, 3);
        assert_eq!(w.len(), 1);
    }
}
