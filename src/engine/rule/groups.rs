//! Per-group state with a cap: the map every stateful kind keeps its groups in.
//!
//! At most `max` groups are held. Inserting one more evicts the least recently touched tenth
//! at once (one `select_nth_unstable` over the recency stamps), so eviction costs O(1) per
//! new group amortized and memory is bounded by configuration, not by input.

use std::hash::RandomState;

/// hashbrown for `entry_ref` (one hash per event, the key allocated only for a new group),
/// with std's randomly keyed SipHash: group keys come from the input, which an attacker may
/// write.
type Map<V> = hashbrown::HashMap<String, V, RandomState>;

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Slot<T> {
    state: T,
    seen: u64,
}

#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct GroupMap<T> {
    map: Map<Slot<T>>,
    seq: u64,
    max: usize,
    /// Groups evicted because of the cap.
    pub evicted: u64,
}

impl<T> GroupMap<T> {
    pub fn new(max: usize) -> Self {
        GroupMap {
            map: Map::default(),
            seq: 0,
            max: max.max(1),
            evicted: 0,
        }
    }

    /// The state of `key`, created with `init` if absent (evicting first when full), and
    /// marked most recently used.
    pub fn touch(&mut self, key: &str, init: impl FnOnce() -> T) -> &mut T {
        self.seq += 1;
        let seq = self.seq;
        if self.map.len() >= self.max && !self.map.contains_key(key) {
            self.evict();
        }
        let slot = self.map.entry_ref(key).or_insert_with(|| Slot {
            state: init(),
            seen: seq,
        });
        slot.seen = seq;
        &mut slot.state
    }

    /// Inserts `key` unless present, without counting as a use (seeding).
    pub fn seed(&mut self, key: String, state: T) {
        if self.map.len() < self.max {
            self.map.entry(key).or_insert(Slot { state, seen: 0 });
        }
    }

    pub fn retain(&mut self, mut keep: impl FnMut(&mut T) -> bool) {
        self.map.retain(|_, s| keep(&mut s.state));
    }

    pub fn states_mut(&mut self) -> impl Iterator<Item = &mut T> {
        self.map.values_mut().map(|s| &mut s.state)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// The most groups held.
    pub fn max(&self) -> usize {
        self.max
    }

    #[cfg(test)]
    pub fn contains(&self, key: &str) -> bool {
        self.map.contains_key(key)
    }

    fn evict(&mut self) {
        let n = (self.max / 10).max(1);
        let mut seen: Vec<u64> = self.map.values().map(|s| s.seen).collect();
        let (_, cut, _) = seen.select_nth_unstable(n - 1);
        let cut = *cut;
        let before = self.map.len();
        self.map.retain(|_, s| s.seen > cut);
        self.evicted += (before - self.map.len()) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_and_least_recently_used_go_first() {
        let mut m: GroupMap<u32> = GroupMap::new(100);
        *m.touch("keep", || 0) += 1;
        for i in 0..10_000 {
            m.touch(&format!("g{i}"), || 0);
            if i % 50 == 0 {
                *m.touch("keep", || 0) += 1;
            }
        }
        assert!(m.len() <= 100, "{}", m.len());
        assert!(m.evicted >= 9_800, "{}", m.evicted);
        assert!(m.contains("keep"));
        assert_eq!(*m.touch("keep", || 0), 201);
    }
}
