//! The engine task: a thin `select!` around the synchronous [`Engine`], fed by the sources'
//! bounded channel, answering [`EngineCommand`]s, and moving the clock on a once-a-second
//! tick under the watermark rule (see [`crate::watermark`]): wall time moves the clock only
//! while every input is caught up. Detections and checkpoints go to the incident manager in
//! the order they were made.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::sink::{DetectionSink, Output, Tap};
use super::{Engine, Input, RuleInfo};
use crate::clock::Clock;
use crate::detection::Origin;
use crate::engine::config::RuleConfig;
use crate::telemetry::Telemetry;

/// Requests to the engine task.
pub enum EngineCommand {
    Reload(Vec<RuleConfig>, oneshot::Sender<()>),
    Rules(oneshot::Sender<Vec<RuleInfo>>),
}

/// The channel front of the engine task.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<EngineCommand>,
}

impl EngineHandle {
    pub fn new(tx: mpsc::Sender<EngineCommand>) -> Self {
        EngineHandle { tx }
    }

    /// Swaps the rule set; returns once the engine uses the new rules.
    pub async fn reload(&self, rules: Vec<RuleConfig>) -> bool {
        let (tx, rx) = oneshot::channel();
        self.tx.send(EngineCommand::Reload(rules, tx)).await.is_ok() && rx.await.is_ok()
    }

    pub async fn rules(&self) -> Option<Vec<RuleInfo>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(EngineCommand::Rules(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// When the engine checkpoints its state: every `interval`, and as soon as `detections`
/// detections were handed on since the last checkpoint (so the idempotency ids the store
/// keeps until a checkpoint covers them are bounded by configuration, even while a backlog
/// is read faster than `interval` lets pass), and when it stops.
#[derive(Clone, Copy, Debug)]
pub struct Checkpoints {
    pub interval: Duration,
    pub detections: usize,
}

/// The engine task. Ends when every event sender is gone (sources stopped), after the last
/// event's detections were handed on.
#[allow(clippy::too_many_arguments)]
pub async fn run<S: DetectionSink, T: Tap>(
    mut engine: Engine,
    mut events: mpsc::Receiver<Input>,
    mut commands: mpsc::Receiver<EngineCommand>,
    detections: S,
    telemetry: Arc<Telemetry>,
    clock: Arc<dyn Clock>,
    checkpoints: Checkpoints,
    feeds: T,
    backlog: Arc<crate::watermark::Backlog>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut checkpoint =
        tokio::time::interval(checkpoints.interval.max(Duration::from_millis(100)));
    // Detections handed on since the last checkpoint: each leaves an idempotency id in the
    // store until a checkpoint covers it.
    let mut uncovered = 0usize;
    checkpoint.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::new();
    let mut commands_open = true;
    loop {
        tokio::select! {
            biased;
            cmd = commands.recv(), if commands_open => match cmd {
                Some(EngineCommand::Reload(rules, done)) => {
                    engine.replace_rules(&rules);
                    let _ = done.send(());
                }
                Some(EngineCommand::Rules(reply)) => {
                    let _ = reply.send(engine.rules());
                }
                None => commands_open = false,
            },
            ev = events.recv() => {
                let Some(mut input) = ev else { break };
                telemetry.engine_events.add(match &input {
                    Input::Event(..) => 1,
                    Input::Events { events, .. } => events.len() as u64,
                    Input::Tail { lines, .. } => lines.len() as u64,
                    Input::Journal { entries, .. } => entries.len() as u64,
                    Input::TailDone { .. } | Input::Plugin { .. } => 0,
                });
                let checkpoint_now = engine.on_input(&input, &mut out);
                telemetry.watermark.set_clock(engine.now());
                let arrived = match &input {
                    Input::Event(_, at)
                    | Input::Events { read_at: at, .. }
                    | Input::Tail { read_at: at, .. }
                    | Input::Journal { read_at: at, .. } => Some(*at),
                    Input::TailDone { .. } | Input::Plugin { .. } => None,
                };
                feeds.offer(&input);
                input.recycle();
                let detected = std::time::Instant::now();
                uncovered += out.len();
                let checkpoint_now = checkpoint_now || uncovered >= checkpoints.detections;
                for d in out.drain(..) {
                    let mut d = d;
                    d.detected = Some(detected);
                    if let Some(at) = arrived.filter(|_| d.origin.as_ref().is_none_or(|o| !matches!(o, Origin::Timer { .. }))) {
                        d.arrived = Some(at);
                        telemetry.event_to_detection.observe(detected.duration_since(at));
                    }
                    telemetry.detections.inc();
                    tracing::debug!(rule = %d.rule, key = %d.key, count = d.count, "detection");
                    if detections.send(Output::Detection(d)).await.is_err() {
                        tracing::error!("incident manager is gone; detection dropped");
                        telemetry.detections_dropped.inc();
                    }
                }
                if checkpoint_now {
                    uncovered = 0;
                    checkpoint.reset();
                    let _ = detections.send(engine.checkpoint_output(clock.now())).await;
                }
            }
            _ = tick.tick() => {
                // The watermark (crate::watermark): wall time moves the clock only while
                // every input is caught up — nothing queued here, no input behind. Otherwise
                // the tick only lets rules free state on the event-time clock.
                // The order matters: an input hands on its last batch before it says it caught
                // up, so once it says so, that batch is already in the queue.
                let caught_up = backlog.caught_up() && events.is_empty();
                let to = if caught_up {
                    telemetry.watermark.wall_advances.inc();
                    clock.now()
                } else {
                    telemetry.watermark.held.inc();
                    engine.now()
                };
                telemetry.watermark.inputs_behind.set(backlog.behind() as u64);
                engine.on_tick(to, &mut out);
                uncovered += out.len();
                telemetry.watermark.set_clock(engine.now());
                telemetry.watermark.add_late(engine.take_late_inputs());
                for d in out.drain(..) {
                    telemetry.detections.inc();
                    if detections.send(Output::Detection(d)).await.is_err() {
                        telemetry.detections_dropped.inc();
                    }
                }
            }
            // On the manager's channel, after the detections it covers: saved in the same
            // flush or a later one, never before them.
            _ = checkpoint.tick() => {
                uncovered = 0;
                let _ = detections.send(engine.checkpoint_output(clock.now())).await;
            }
        }
    }
    // Every event has been processed: the last checkpoint holds all of their effects.
    if detections
        .send(engine.checkpoint_output(clock.now()))
        .await
        .is_err()
    {
        tracing::error!("incident manager is gone; final engine checkpoint not saved");
    }
    tracing::debug!("engine stopped");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{SystemClock, Timestamp};
    use crate::watermark::Backlog;

    const HEARTBEAT: &str = r#"
[[rule]]
id = "hb"
kind = "absence"
timeout = "10s"
where = { kind = "heartbeat" }
group_by = ["service"]
"#;

    fn detections(rx: &mut mpsc::Receiver<Output>) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(m) = rx.try_recv() {
            if let Output::Detection(d) = m {
                out.push(d.key);
            }
        }
        out
    }

    /// While an input is behind, ticks leave the clock on event time: a heartbeat from a year
    /// ago does not go "absent" by wall time. Once every input is caught up, the next tick
    /// moves the clock to wall time and the absence fires.
    #[tokio::test(start_paused = true)]
    async fn wall_time_moves_the_clock_only_while_every_input_is_caught_up() {
        let engine = Engine::new(&super::super::tests::rules(HEARTBEAT));
        let (tx, rx) = mpsc::channel(16);
        let (_commands, commands_rx) = mpsc::channel(1);
        let (dtx, mut drx) = mpsc::channel(64);
        let telemetry = Arc::new(Telemetry::default());
        let backlog = Backlog::new();
        let tail = backlog.input();
        let task = tokio::spawn(run(
            engine,
            rx,
            commands_rx,
            dtx,
            telemetry.clone(),
            Arc::new(SystemClock),
            Checkpoints {
                interval: Duration::from_secs(3600),
                detections: usize::MAX,
            },
            (),
            backlog.clone(),
        ));
        let old = SystemClock
            .now()
            .saturating_sub(Duration::from_secs(365 * 86_400));
        let ev = super::super::tests::ev(&format!(
            r#"{{"kind":"heartbeat","service":"api","ts":{}}}"#,
            old.millis()
        ));
        tx.send(Input::Event(ev, std::time::Instant::now()))
            .await
            .unwrap();
        // Five ticks with the tail behind.
        tokio::time::sleep(Duration::from_millis(5_500)).await;
        assert_eq!(detections(&mut drx), Vec::<String>::new());
        let clock = telemetry
            .watermark
            .clock
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(Timestamp(clock), old);
        assert!(telemetry.watermark.held.get() >= 5);
        assert_eq!(telemetry.watermark.wall_advances.get(), 0);
        // Caught up: the next tick moves the clock to wall time.
        tail.set_behind(false);
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        assert_eq!(detections(&mut drx), vec!["hb/api".to_owned()]);
        let clock = telemetry
            .watermark
            .clock
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(Timestamp(clock) > old.saturating_add(Duration::from_secs(300 * 86_400)));
        drop(tx);
        task.await.unwrap();
    }
}
