//! Where the engine's work goes, and who may look at its input: traits the daemon wires to
//! the layers above (the incident manager, detector plugins), so the engine knows neither.

use async_trait::async_trait;
use tokio::sync::mpsc;

use super::Input;
use crate::detection::{Coverage, Detection};

/// What the engine hands on, in the order it was made: a checkpoint comes after the
/// detections it covers, so it is saved in the same flush as they are or a later one.
// Detections are nearly all of the traffic: boxing them would cost an allocation each.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Output {
    Detection(Detection),
    /// The rules' window state and what it covers (file lines, journal entries, timers).
    Checkpoint {
        state: Vec<u8>,
        coverage: Coverage,
    },
}

/// The receiver of the engine's output has gone away (shutdown, or a crash above).
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the receiver of the engine's output is gone")]
pub struct SinkClosed;

/// The engine's output port: waits while the receiver is full (backpressure).
#[async_trait]
pub trait DetectionSink: Send + Sync + 'static {
    async fn send(&self, out: Output) -> Result<(), SinkClosed>;
}

/// A bounded channel of [`Output`] is a sink (tests, tools).
#[async_trait]
impl DetectionSink for mpsc::Sender<Output> {
    async fn send(&self, out: Output) -> Result<(), SinkClosed> {
        mpsc::Sender::send(self, out).await.map_err(|_| SinkClosed)
    }
}

/// Something that sees each input after the engine applied it, and must never block it
/// (detector plugins' feeds).
pub trait Tap: Send + Sync + 'static {
    fn offer(&self, input: &Input);
}

/// No tap.
impl Tap for () {
    fn offer(&self, _: &Input) {}
}
