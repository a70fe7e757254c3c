//! A time-ordered ring of buckets: what rate, metric, burn_rate and spike keep per group.
//!
//! Buckets are keyed by their start (or window index), oldest first. Events mostly arrive in
//! order, so finding a bucket looks from the back; an out-of-order event inside the window
//! gets its bucket inserted in place.

use std::collections::VecDeque;

/// A bucket that knows its key (start time or window index).
pub trait Keyed {
    fn key(&self) -> i64;
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Ring<B>(VecDeque<B>);

impl<B> Default for Ring<B> {
    fn default() -> Self {
        Ring(VecDeque::new())
    }
}

impl<B: Keyed> Ring<B> {
    /// The newest key held, or `k` when that is newer (or the ring is empty).
    pub fn newest_or(&self, k: i64) -> i64 {
        self.0.back().map_or(k, |b| b.key().max(k))
    }

    /// The bucket keyed `k`, created with `make` in its place if absent.
    pub fn entry(&mut self, k: i64, make: impl FnOnce() -> B) -> &mut B {
        let i = match self.0.iter().rposition(|b| b.key() <= k) {
            Some(i) if self.0[i].key() == k => i,
            found => {
                let at = found.map_or(0, |i| i + 1);
                self.0.insert(at, make());
                at
            }
        };
        &mut self.0[i]
    }

    /// Removes the buckets keyed `edge` or older, oldest first, handing each to `gone`.
    pub fn expire(&mut self, edge: i64, mut gone: impl FnMut(B)) {
        while self.0.front().is_some_and(|b| b.key() <= edge) {
            if let Some(b) = self.0.pop_front() {
                gone(b);
            }
        }
    }

    pub fn get(&self, k: i64) -> Option<&B> {
        self.0.iter().rev().find(|b| b.key() == k)
    }

    pub fn iter_mut(&mut self) -> impl DoubleEndedIterator<Item = &mut B> {
        self.0.iter_mut()
    }

    pub fn iter(&self) -> impl DoubleEndedIterator<Item = &B> {
        self.0.iter()
    }

    pub fn back(&self) -> Option<&B> {
        self.0.back()
    }

    pub fn front(&self) -> Option<&B> {
        self.0.front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Keyed for (i64, u32) {
        fn key(&self) -> i64 {
            self.0
        }
    }

    #[test]
    fn keeps_order_finds_in_place_and_expires_from_the_front() {
        let mut r: Ring<(i64, u32)> = Ring::default();
        for k in [10, 30, 20, 30, 5] {
            r.entry(k, || (k, 0)).1 += 1;
        }
        let keys: Vec<(i64, u32)> = r.iter().copied().collect();
        assert_eq!(keys, [(5, 1), (10, 1), (20, 1), (30, 2)]);
        assert_eq!(r.newest_or(25), 30);
        let mut gone = Vec::new();
        r.expire(10, |b| gone.push(b.0));
        assert_eq!(gone, [5, 10]);
        assert_eq!(r.front().map(|b| b.0), Some(20));
        assert_eq!(r.get(30).map(|b| b.1), Some(2));
    }
}
