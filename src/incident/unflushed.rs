//! What the engine sent the incident manager since the store last flushed. The engine never
//! sends a detection twice, so when a failed store heals (reopened from what is on disk), the
//! manager applies these again, in order, before anything new.

use super::manager::Msg;
use crate::engine::Detection;

/// The engine's messages since the last successful flush: its detections in order (at most
/// [`MAX_UNFLUSHED`]; older ones beyond it are dropped and counted) and its latest
/// checkpoint, which goes after them.
#[derive(Default)]
pub(super) struct Unflushed {
    detections: std::collections::VecDeque<Detection>,
    checkpoint: Option<(Vec<u8>, crate::detection::Coverage)>,
    dropped: u64,
}

/// Detections kept while the store cannot flush, at most: memory stays bounded on a disk
/// that stays full.
const MAX_UNFLUSHED: usize = 100_000;

impl Unflushed {
    /// Keeps a detection once the manager has applied it (moved, not copied).
    pub(super) fn keep_detection(&mut self, d: Detection) {
        if self.detections.len() >= MAX_UNFLUSHED {
            self.detections.pop_front();
            self.dropped += 1;
        }
        self.detections.push_back(d);
    }

    /// Keeps the engine's latest checkpoint.
    pub(super) fn keep_checkpoint(&mut self, bytes: Vec<u8>, coverage: crate::detection::Coverage) {
        self.checkpoint = Some((bytes, coverage));
    }

    pub(super) fn clear(&mut self) {
        self.detections.clear();
        self.checkpoint = None;
    }

    /// The messages to apply again, in order.
    pub(super) fn take(&mut self) -> Vec<Msg> {
        if self.dropped > 0 {
            tracing::error!(
                dropped = self.dropped,
                "detections made while the store could not write were too many to keep; the oldest are lost"
            );
            self.dropped = 0;
        }
        let mut out: Vec<Msg> = self.detections.drain(..).map(Msg::Detection).collect();
        if let Some((bytes, coverage)) = self.checkpoint.take() {
            out.push(Msg::Checkpoint(bytes, coverage));
        }
        out
    }
}
