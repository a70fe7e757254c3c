//! The watermark: how event time and wall time move the engine's clock.
//!
//! Event time drives every window and timer: the engine's clock is the newest event time it
//! has applied. Wall time may move that clock forward only while **every input is caught
//! up** — no unread bytes in a followed file or journal, nothing queued on the way to the
//! engine — the way stream processors treat idle sources. A backlog of any age (a months-old
//! log read from its start, lines written while the daemon was down) is therefore processed
//! on its own event time, exactly as `incidentctl rules test` processes the same bytes, and a
//! quiet host still fires its absence rules by wall time once nothing is left to read.
//!
//! No event may move the clock past wall time by more than `[engine] max_future_skew`: such
//! an event is rejected where it enters (reason `future_ts`), on every input.
//!
//! [`Backlog`] is the shared count of inputs that know they are behind; each such input
//! holds an [`InputProgress`] and says when it has caught up. This module is a leaf: the
//! sources and the engine both use it, and it uses neither.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::clock::Timestamp;

/// `[engine] max_future_skew` when the config does not set it.
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(5 * 60);

/// How many inputs are behind (have data they have not handed to the engine yet).
#[derive(Debug, Default)]
pub struct Backlog {
    behind: AtomicUsize,
}

impl Backlog {
    pub fn new() -> Arc<Backlog> {
        Arc::new(Backlog::default())
    }

    /// Registers an input. It starts **behind**: until it has looked at its data once, it
    /// cannot know there is no backlog.
    pub fn input(self: &Arc<Self>) -> InputProgress {
        self.behind.fetch_add(1, Ordering::SeqCst);
        InputProgress {
            backlog: self.clone(),
            behind: AtomicBool::new(true),
        }
    }

    /// Whether no registered input is behind.
    pub fn caught_up(&self) -> bool {
        self.behind.load(Ordering::SeqCst) == 0
    }

    /// Inputs behind now (for `/v1/status`).
    pub fn behind(&self) -> usize {
        self.behind.load(Ordering::SeqCst)
    }
}

/// One input's part of the [`Backlog`]. Dropping it (the input stopped) withdraws it.
#[derive(Debug)]
pub struct InputProgress {
    backlog: Arc<Backlog>,
    behind: AtomicBool,
}

impl InputProgress {
    /// Says whether this input has data it has not handed on. Cheap when nothing changes.
    pub fn set_behind(&self, behind: bool) {
        if self.behind.swap(behind, Ordering::SeqCst) != behind {
            if behind {
                self.backlog.behind.fetch_add(1, Ordering::SeqCst);
            } else {
                self.backlog.behind.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }

    pub fn is_behind(&self) -> bool {
        self.behind.load(Ordering::SeqCst)
    }
}

impl Drop for InputProgress {
    fn drop(&mut self) {
        self.set_behind(false);
    }
}

/// The latest event time accepted at wall time `wall`: `wall + skew`.
pub fn latest_accepted(wall: Timestamp, skew: Duration) -> Timestamp {
    wall.saturating_add(skew)
}

/// Whether an event stamped `ts` lies too far ahead of wall time `wall` to be accepted.
pub fn too_far_ahead(ts: Timestamp, wall: Timestamp, skew: Duration) -> bool {
    ts > latest_accepted(wall, skew)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inputs_start_behind_and_count_once() {
        let b = Backlog::new();
        assert!(b.caught_up());
        let a = b.input();
        let c = b.input();
        assert_eq!(b.behind(), 2);
        a.set_behind(false);
        a.set_behind(false);
        assert_eq!(b.behind(), 1);
        c.set_behind(false);
        assert!(b.caught_up());
        c.set_behind(true);
        c.set_behind(true);
        assert_eq!(b.behind(), 1);
        drop(c);
        assert!(b.caught_up());
        drop(a);
        assert!(b.caught_up());
    }

    #[test]
    fn the_future_bound_is_wall_time_plus_the_skew() {
        let skew = Duration::from_secs(300);
        let wall = Timestamp(1_000_000);
        assert!(!too_far_ahead(Timestamp(1_000_000 + 300_000), wall, skew));
        assert!(too_far_ahead(Timestamp(1_000_000 + 300_001), wall, skew));
        assert!(!too_far_ahead(Timestamp(i64::MIN), wall, skew));
        assert!(!too_far_ahead(
            Timestamp(i64::MAX),
            Timestamp(i64::MAX - 1),
            skew
        ));
    }
}
