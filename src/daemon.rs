//! The daemon: wiring, signals, sd_notify, reload and shutdown.
//!
//! Start order follows "load before bind": the config is validated first, then stale sockets
//! are checked (a live daemon behind one refuses the start), the store is opened, and only
//! then are sockets bound and tasks spawned. Shutdown is one tree: cancelling the sources
//! token stops the ingest socket and the API; when their event senders are gone the engine
//! drains its queue and ends; when the engine's sender is gone the incident manager drains,
//! flushes and ends. The daemon waits for all of it under `shutdown_timeout` and names what is
//! still running if the deadline passes.

use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::StreamExt;
use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use tokio::net::UnixListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::api::{ApiState, ReloadRequest};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, ConfigErrors};
use crate::engine::{Engine, EngineHandle};
use crate::incident::{Command, IncidentHandle, NewIncident, Severity, manager};
use crate::source::socket::IngestSocket;
use crate::store::{SledStore, Store, StoreError};
use crate::telemetry::Telemetry;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("invalid configuration:\n{0}")]
    Config(ConfigErrors),
    #[error("another incidentd is already listening on {path}; stop it first")]
    AlreadyRunning { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error("cannot {what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("signal handling: {0}")]
    Signals(std::io::Error),
}

fn io_err<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> DaemonError + 'a {
    move |source| DaemonError::Io {
        what,
        path: path.to_owned(),
        source,
    }
}

/// What the command line says beyond the config file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub state_dir: Option<PathBuf>,
    pub runtime_dir: Option<PathBuf>,
}

/// Loads the config at `path` with the command-line overrides applied.
pub fn load_config(path: &Path, overrides: &Overrides) -> Result<Config, ConfigErrors> {
    let mut c = crate::config::load(path)?;
    c.override_dirs(
        overrides.state_dir.as_deref(),
        overrides.runtime_dir.as_deref(),
    );
    Ok(c)
}

/// Installs the signal handlers. Call first thing: SIGHUP's default action kills the process.
pub fn signals() -> Result<signal_hook_tokio::Signals, DaemonError> {
    signal_hook_tokio::Signals::new([SIGTERM, SIGINT, SIGHUP]).map_err(DaemonError::Signals)
}

fn notify(states: &[NotifyState<'_>]) {
    // Outside systemd there is no NOTIFY_SOCKET and this does nothing.
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

/// Names of the tasks still running, for a shutdown that overruns its deadline.
#[derive(Clone, Default)]
struct Running(Arc<Mutex<BTreeMap<&'static str, usize>>>);

impl Running {
    fn spawn<F>(&self, tracker: &TaskTracker, name: &'static str, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_default() += 1;
        let me = self.clone();
        tracker.spawn(async move {
            fut.await;
            me.done(name);
        });
    }

    fn spawn_blocking<F>(&self, tracker: &TaskTracker, name: &'static str, f: F)
    where
        F: FnOnce() + Send + 'static,
    {
        *self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name)
            .or_default() += 1;
        let me = self.clone();
        tracker.spawn_blocking(move || {
            f();
            me.done(name);
        });
    }

    fn done(&self, name: &'static str) {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(name) {
            *n -= 1;
            if *n == 0 {
                m.remove(name);
            }
        }
    }

    fn names(&self) -> Vec<&'static str> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

/// Refuses a socket path with a live daemon behind it; removes a stale one.
fn claim_socket_path(path: &Path) -> Result<(), DaemonError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err("inspect", path)(e)),
        Ok(m) if !m.file_type().is_socket() => {
            return Err(DaemonError::NotASocket {
                path: path.to_owned(),
            });
        }
        Ok(_) => {}
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(DaemonError::AlreadyRunning {
            path: path.to_owned(),
        }),
        Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => {
            tracing::info!(socket = %path.display(), "removing stale socket left by an earlier run");
            std::fs::remove_file(path)
                .or_else(|e| {
                    if e.kind() == ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(io_err("remove stale socket", path))
        }
        Err(e) => Err(io_err("probe socket", path)(e)),
    }
}

/// Makes the state folder private whatever the umask: the folder and every folder in it 0700,
/// every file 0600. Returns how many modes were tightened (files sled makes later sit inside
/// the private folder).
fn make_private(dir: &Path) -> std::io::Result<usize> {
    use std::os::unix::fs::PermissionsExt;
    let mut tightened = 0;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let meta = std::fs::symlink_metadata(&d)?;
        if meta.permissions().mode() & 0o077 != 0 {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
            tightened += 1;
        }
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && meta.permissions().mode() & 0o077 != 0 {
                let mode = meta.permissions().mode() & 0o700;
                std::fs::set_permissions(
                    entry.path(),
                    std::fs::Permissions::from_mode(mode | 0o600),
                )?;
                tightened += 1;
            }
        }
    }
    Ok(tightened)
}

/// Gives a socket the group `name` (`[ingest] socket_group`).
fn set_group(path: &Path, name: &str) -> Result<(), DaemonError> {
    let group = nix::unistd::Group::from_name(name)
        .map_err(std::io::Error::from)
        .and_then(|g| g.ok_or_else(|| std::io::Error::other(format!("no group named `{name}`"))))
        .map_err(io_err("find the socket group for", path))?;
    nix::unistd::chown(path, None, Some(group.gid))
        .map_err(std::io::Error::from)
        .map_err(io_err("set the group of", path))
}

fn bind(path: &Path, mode: u32) -> Result<UnixListener, DaemonError> {
    let l = UnixListener::bind(path).map_err(io_err("bind socket", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(io_err("set mode of", path))?;
    Ok(l)
}

/// Runs the daemon until SIGTERM/SIGINT. `signals` must have been installed by [`signals`].
pub async fn run(
    mut config: Config,
    overrides: Overrides,
    mut signals: signal_hook_tokio::Signals,
) -> Result<(), DaemonError> {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let telemetry = Arc::new(Telemetry::default());
    let host: Arc<str> = match &config.daemon.host {
        Some(h) => h.as_str().into(),
        None => crate::event::local_hostname().into(),
    };

    std::fs::create_dir_all(&config.daemon.runtime_dir)
        .map_err(io_err("create folder", &config.daemon.runtime_dir))?;
    // The state folder itself is made private (its parents are left as they are).
    let state = &config.daemon.state_dir;
    if let Some(parent) = state.parent() {
        std::fs::create_dir_all(parent).map_err(io_err("create folder", parent))?;
    }
    if !state.exists() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(state)
            .map_err(io_err("create folder", state))?;
    }
    let control_path = config.control_socket();
    let ingest_path = config.ingest_socket();
    claim_socket_path(&control_path)?;
    claim_socket_path(&ingest_path)?;

    let state_dir = config.daemon.state_dir.clone();
    match make_private(&state_dir) {
        Ok(0) => {}
        Ok(n) => tracing::warn!(state_dir = %state_dir.display(), tightened = n,
            "the state folder was readable by others; made it private (folders 0700, files 0600)"),
        Err(e) => return Err(io_err("make private", &state_dir)(e)),
    }
    let (store, moved_aside) = tokio::task::spawn_blocking(move || SledStore::open(&state_dir))
        .await
        .map_err(|e| DaemonError::Io {
            what: "open store in",
            path: config.daemon.state_dir.clone(),
            source: std::io::Error::other(e),
        })??;
    // Reopened from disk after write failures (a full disk), so it heals without a restart.
    let store: Arc<dyn Store> = Arc::new(crate::store::HealingStore::new(
        store,
        config.daemon.state_dir.clone(),
    ));
    // sled made its files with the umask: private too.
    make_private(&config.daemon.state_dir)
        .map_err(io_err("make private", &config.daemon.state_dir))?;

    let control_listener = bind(&control_path, config.control.socket_mode)?;
    let ingest_listener = match bind(&ingest_path, config.ingest.socket_mode).and_then(|l| {
        match &config.ingest.socket_group {
            Some(g) => set_group(&ingest_path, g).map(|()| l),
            None => Ok(l),
        }
    }) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&control_path);
            return Err(e);
        }
    };

    let tracker = TaskTracker::new();
    let running = Running::default();
    let root = CancellationToken::new();
    let sources_token = root.child_token();

    let (remediation, remediation_rx) = crate::remediation::channel();
    let incidents: IncidentHandle = manager::spawn(
        store.clone(),
        config.incidents.clone(),
        clock.clone(),
        telemetry.clone(),
        config.daemon.detection_queue,
        &tracker,
    )?;
    let notifier = crate::notification::spawn(
        config.notify.clone(),
        store.clone(),
        incidents.clone(),
        clock.clone(),
        telemetry.clone(),
        host.clone(),
        &tracker,
        sources_token.clone(),
    )?;
    crate::remediation::preflight::publish(&config.actions, &telemetry);
    crate::notification::reach::publish(&config.notify.channels, &telemetry);
    running.spawn(
        &tracker,
        "self-watch",
        crate::selfwatch::run(
            config.daemon.self_alert_after,
            telemetry.clone(),
            incidents.clone(),
            store.clone(),
            clock.clone(),
            host.clone(),
            sources_token.clone(),
        ),
    );
    running.spawn(
        &tracker,
        "remediation",
        crate::remediation::serve(
            remediation_rx,
            crate::incident::feed::ChangeFeed::new(store.clone(), incidents.changes()),
            config.actions.clone(),
            config.remediation.clone(),
            crate::remediation::rule_actions(&config.rules),
            store.clone(),
            incidents.clone(),
            clock.clone(),
            telemetry.clone(),
            sources_token.clone(),
        ),
    );
    let (events_tx, events_rx) = mpsc::channel(config.daemon.event_queue);
    let feeds = crate::plugin::Feeds::default();
    let mut plugins = crate::plugin::Supervisor::new(
        feeds.clone(),
        events_tx.clone(),
        telemetry.clone(),
        host.clone(),
        tracker.clone(),
        sources_token.child_token(),
        config.daemon.shutdown_timeout / 2,
    );
    let (engine_tx, engine_rx) = mpsc::channel(16);
    let engine = EngineHandle::new(engine_tx);
    let mut rules_engine = Engine::new(&config.rules);
    restore_engine(&mut rules_engine, store.as_ref());
    let wall = clock.now();
    if let Some(was) = rules_engine.pull_back(wall, config.engine.max_future_skew) {
        let text = format!(
            "the checkpointed engine clock {was} lay ahead of wall time {wall} by more than [engine] max_future_skew; pulled back to wall time, rule windows started empty"
        );
        tracing::warn!(clock = %was, wall = %wall, "{text}");
        *telemetry
            .watermark
            .pulled_back
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(text);
    }
    telemetry.watermark.set_clock(rules_engine.now());
    let backlog = crate::watermark::Backlog::new();
    // Registered before the engine's first tick: until each has looked at its data, wall
    // time must not move the clock over a restored backlog.
    let mut tail_progress: std::collections::VecDeque<_> = config
        .sources
        .file
        .iter()
        .map(|_| backlog.input())
        .collect();
    let mut journal_progress: std::collections::VecDeque<_> = config
        .sources
        .journald
        .iter()
        .map(|_| backlog.input())
        .collect();
    // File sources resume where the checkpoint's cursors say.
    let known_sources: Vec<String> = rules_engine.tail_sources().to_vec();
    let mut cursors = crate::source::tail::cursors_by_source(rules_engine.tail_cursors());
    let journal_cursors: Vec<Option<String>> = config
        .sources
        .journald
        .iter()
        .map(|j| rules_engine.journal_cursor(&j.id).map(str::to_owned))
        .collect();
    rules_engine.set_journal_sources(
        &config
            .sources
            .journald
            .iter()
            .map(|j| j.id.clone())
            .collect::<Vec<_>>(),
    );
    rules_engine.set_tail_sources(config.sources.file.iter().map(|f| f.id.clone()).collect());
    running.spawn(
        &tracker,
        "engine",
        crate::engine::run(
            rules_engine,
            events_rx,
            engine_rx,
            incidents.sender(),
            telemetry.clone(),
            clock.clone(),
            crate::engine::Checkpoints {
                interval: config.daemon.checkpoint_interval,
                detections: config.daemon.checkpoint_detections,
            },
            feeds,
            backlog.clone(),
        ),
    );
    plugins.max_future_skew = config.engine.max_future_skew;
    plugins.apply(&config.plugins);

    // Lines and events in flight from the file sources and the ingest connections.
    let line_budget = Arc::new(tokio::sync::Semaphore::new(config.daemon.event_queue.max(
        // A batch must always fit.
        crate::source::tail::BATCH_LINES.max(crate::source::socket::BATCH_EVENTS),
    )));
    let line_filters = LineFilters(
        (config.sources.file.iter())
            .map(|fc| {
                let pri = fc.format == crate::source::config::LineFormat::Syslog;
                (fc.id.clone(), fc.kind.clone(), pri, Arc::default())
            })
            .collect(),
    );
    line_filters.set(Some(&config));
    for (fc, (.., line_filter)) in config.sources.file.iter().zip(&line_filters.0) {
        let tail = crate::source::tail::FileTail {
            parser: crate::source::parse::Parser::new(fc.parsing(), &fc.id, &host)
                .with_future_skew(config.engine.max_future_skew),
            events: events_tx.clone(),
            stats: telemetry.source(&fc.id, "file"),
            clock: clock.clone(),
            restored: cursors.remove(&fc.id).unwrap_or_default(),
            known: known_sources.contains(&fc.id),
            budget: line_budget.clone(),
            progress: tail_progress.pop_front().unwrap_or_else(|| backlog.input()),
            line_filter: line_filter.clone(),
            config: fc.clone(),
        };
        let token = sources_token.clone();
        running.spawn_blocking(&tracker, "file tail", move || tail.run(token));
    }

    for (jc, cursor) in config.sources.journald.iter().zip(journal_cursors) {
        let src = crate::source::journald::JournaldSource {
            parser: crate::source::parse::Parser::new(jc.parsing(), &jc.id, &host)
                .with_future_skew(config.engine.max_future_skew),
            events: events_tx.clone(),
            stats: telemetry.source(&jc.id, "journald"),
            clock: clock.clone(),
            cursor,
            oversize_after: None,
            progress: journal_progress
                .pop_front()
                .unwrap_or_else(|| backlog.input()),
            config: jc.clone(),
        };
        running.spawn(&tracker, "journald source", src.run(sources_token.clone()));
    }
    for sc in &config.sources.syslog {
        let path = config.daemon.runtime_dir.join(&sc.socket);
        let socket = crate::source::syslog::bind(&path, sc.socket_mode)
            .map_err(io_err("bind syslog socket", &path))?;
        let src = crate::source::syslog::SyslogSocket {
            socket,
            path,
            parser: crate::source::parse::Parser::new(sc.parsing(), &sc.id, &host)
                .with_future_skew(config.engine.max_future_skew),
            events: events_tx.clone(),
            stats: telemetry.source(&sc.id, "syslog"),
            clock: clock.clone(),
        };
        running.spawn(&tracker, "syslog socket", src.run(sources_token.clone()));
    }
    for ec in &config.sources.exec {
        let src = crate::source::exec::ExecSource {
            parser: crate::source::parse::Parser::new(ec.parsing(), &ec.id, &host)
                .with_future_skew(config.engine.max_future_skew),
            events: events_tx.clone(),
            stats: telemetry.source(&ec.id, "exec"),
            clock: clock.clone(),
            config: ec.clone(),
        };
        running.spawn(&tracker, "exec source", src.run(sources_token.clone()));
    }

    if !config.sources.probe.is_empty() {
        let http = crate::http_client().map_err(|e| DaemonError::Io {
            what: "build the HTTP client for",
            path: PathBuf::from("probes"),
            source: std::io::Error::other(e),
        })?;
        for pc in &config.sources.probe {
            let probe = crate::source::probe::Probe {
                config: pc.clone(),
                events: events_tx.clone(),
                stats: telemetry.source(&pc.id, "probe"),
                clock: clock.clone(),
                host: host.clone(),
                http: http.clone(),
            };
            running.spawn(&tracker, "probe", probe.run(sources_token.clone()));
        }
    }

    // Every input that can be behind is registered by now: until the engine's first tick,
    // the status shows them all as behind.
    telemetry
        .watermark
        .inputs_behind
        .set(backlog.behind() as u64);
    let slas: crate::api::SharedSlas =
        std::sync::Arc::new(std::sync::RwLock::new(config.incidents.slas.clone()));
    let teams: crate::api::SharedTeams =
        std::sync::Arc::new(std::sync::RwLock::new(config.incidents.teams.clone()));
    let roles: crate::api::roles::SharedRoles =
        Arc::new(std::sync::RwLock::new(role_groups(&config)));
    let ingest = IngestSocket {
        listener: ingest_listener,
        max_line_bytes: config.ingest.max_line_bytes,
        max_future_skew: config.engine.max_future_skew,
        gate: crate::access::ConnectionGate::new(
            config.ingest.max_connections,
            config.ingest.max_connections_per_user,
        ),
        allow: config.ingest.allow.clone(),
        roles: roles.clone(),
        idle_timeout: config.ingest.idle_timeout,
        events: events_tx.clone(),
        budget: line_budget.clone(),
        telemetry: telemetry.clone(),
        clock: clock.clone(),
        host: host.clone(),
    };
    running.spawn(
        &tracker,
        "ingest socket",
        ingest.run(sources_token.clone(), tracker.clone()),
    );

    let (reload_tx, mut reload_rx) = mpsc::channel::<ReloadRequest>(4);
    let api_state = Arc::new(ApiState {
        store: store.clone(),
        incidents: incidents.clone(),
        engine: engine.clone(),
        events: events_tx,
        reload: reload_tx,
        telemetry: telemetry.clone(),
        clock: clock.clone(),
        host,
        max_line_bytes: config.ingest.max_line_bytes,
        max_future_skew: config.engine.max_future_skew,
        max_body_bytes: config.control.max_body_bytes,
        config_path: config.path.clone(),
        state_dir: config.daemon.state_dir.clone(),
        control_socket: control_path.clone(),
        ingest_socket: ingest_path.clone(),
        event_queue_capacity: config.daemon.event_queue,
        request_timeout: config.control.request_timeout,
        roles: roles.clone(),
        shutdown: sources_token.clone(),
        remediation: remediation.clone(),
        notify: notifier.clone(),
        slas: slas.clone(),
        teams: teams.clone(),
    });
    // Loopback TCP listeners: users are told apart by who owns the client's end.
    let tcp_limits = || crate::api::Limits {
        max_connections: config.control.max_connections,
        max_connections_per_user: config.control.max_connections_per_user,
        header_timeout: config.control.header_timeout,
    };
    if let Some(addr) = config.control.web_listen {
        running.spawn(
            &tracker,
            "web board",
            crate::api::web::serve(
                (addr, tcp_limits()),
                api_state.clone(),
                crate::api::web::WebTokens {
                    responder: config.control.web_token.as_ref().map(|t| t.0.clone()),
                    admin: config.control.web_admin_token.as_ref().map(|t| t.0.clone()),
                },
                sources_token.clone(),
            ),
        );
    }
    if let Some(addr) = config.control.metrics_listen {
        running.spawn(
            &tracker,
            "metrics listener",
            crate::api::metrics::serve_tcp(
                (addr, tcp_limits()),
                api_state.clone(),
                sources_token.clone(),
            ),
        );
    }
    running.spawn(
        &tracker,
        "control API",
        crate::api::serve(
            control_listener,
            crate::api::Limits {
                max_connections: config.control.max_connections,
                max_connections_per_user: config.control.max_connections_per_user,
                header_timeout: config.control.header_timeout,
            },
            api_state,
            sources_token.clone(),
        ),
    );

    if let Some(aside) = moved_aside {
        let new = NewIncident {
            title: format!(
                "incidentd state store was corrupt and was moved aside to {}",
                aside.display()
            ),
            severity: Severity::Sev2,
            key: Some("incidentd/store-corrupt".into()),
            service: Some("incidentd".into()),
            host: None,
            labels: Default::default(),
            runbook: None,
            note: Some(
                "Earlier incidents are in the moved folder; inspect it before deleting.".into(),
            ),
        };
        if let Err(e) = incidents
            .command(Command::Create {
                incident: new,
                actor: manager::SYSTEM_ACTOR.into(),
            })
            .await
        {
            tracing::error!(error = %e, "could not record the store corruption incident");
        }
    }

    {
        // The time-driven lifecycle (auto-resolve, auto-close) runs a few times per its
        // shortest period.
        let shortest = config
            .rules
            .iter()
            .filter_map(|r| r.common.resolve_after)
            .chain(
                config
                    .incidents
                    .slas
                    .iter()
                    .flat_map(|s| [s.ack_within, s.resolve_within])
                    .flatten(),
            )
            .chain([
                config.incidents.auto_close_after,
                config.incidents.retain_closed,
            ])
            .min()
            .unwrap_or(config.incidents.auto_close_after);
        let every = (shortest / 4).clamp(
            std::time::Duration::from_millis(250),
            std::time::Duration::from_secs(60),
        );
        let (inc, token) = (incidents.clone(), root.child_token());
        running.spawn(&tracker, "housekeeping", async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {
                        if !inc.housekeep().await {
                            break;
                        }
                    }
                }
            }
        });
    }
    if let Some(period) = sd_notify::watchdog_enabled() {
        // Ping only while the pipeline answers: the manager answers a ping after a flush, the
        // engine after its queue ahead of the command is processed.
        let (inc, eng, token) = (incidents.clone(), engine.clone(), root.child_token());
        running.spawn(&tracker, "watchdog", async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tick.tick() => {
                        if inc.ping().await && eng.rules().await.is_some() {
                            notify(&[NotifyState::Watchdog]);
                        } else {
                            tracing::error!("pipeline did not answer the watchdog check");
                        }
                    }
                }
            }
        });
    }
    let ready = format!("running; {} rules", config.rules.len());
    notify(&[NotifyState::Ready, NotifyState::Status(&ready)]);
    tracing::info!(control = %control_path.display(), ingest = %ingest_path.display(),
        state_dir = %config.daemon.state_dir.display(), rules = config.rules.len(), "incidentd started");

    loop {
        tokio::select! {
            sig = signals.next() => match sig {
                Some(SIGHUP) => {
                    let to = Reloadable { engine: &engine, incidents: &incidents, remediation: &remediation, telemetry: &telemetry, roles: &roles, slas: &slas, teams: &teams, plugins: &mut plugins, notifier: &notifier, line_filters: &line_filters };
                    let _ = reload(&mut config, &overrides, to).await;
                }
                Some(sig) => {
                    tracing::info!(signal = sig, "shutting down");
                    break;
                }
                None => break,
            },
            Some(reply) = reload_rx.recv() => {
                let to = Reloadable { engine: &engine, incidents: &incidents, remediation: &remediation, telemetry: &telemetry, roles: &roles, slas: &slas, teams: &teams, plugins: &mut plugins, notifier: &notifier, line_filters: &line_filters };
                let r = reload(&mut config, &overrides, to).await;
                let _ = reply.send(r);
            }
        }
    }

    notify(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    drop(plugins);
    drop(engine);
    drop(incidents);
    drop(reload_rx);
    sources_token.cancel();
    root.cancel();
    tracker.close();
    let deadline = config.daemon.shutdown_timeout;
    let finished = tokio::time::timeout(deadline, tracker.wait()).await.is_ok();
    for p in [&control_path, &ingest_path] {
        let _ = std::fs::remove_file(p);
    }
    if finished {
        tracing::info!("incidentd stopped cleanly");
    } else {
        tracing::error!(still_running = ?running.names(), timeout = ?deadline, "shutdown deadline passed; exiting anyway");
    }
    Ok(())
}

fn role_groups(config: &Config) -> crate::api::roles::RoleGroups {
    crate::api::roles::RoleGroups {
        admin: config.control.admin_groups.clone(),
        responder: config.control.responder_groups.clone(),
    }
}

/// Restores the engine's window state from the last checkpoint. An unreadable checkpoint is
/// logged and ignored: detection then starts fresh, which loses windows but nothing stored.
fn restore_engine(engine: &mut Engine, store: &dyn Store) {
    match store.load_checkpoint() {
        Ok(None) => {}
        Ok(Some(bytes)) => match engine.restore(&bytes) {
            Ok(n) => tracing::info!(
                rules = n,
                "restored rule window state from the last checkpoint"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring the engine checkpoint; rule windows start empty")
            }
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the engine checkpoint; rule windows start empty")
        }
    }
}

/// The file sources' line filters: (source id, its kind, whether its lines may carry a
/// syslog `<PRI>`, the filter its tail reads).
struct LineFilters(
    Vec<(
        String,
        String,
        bool,
        Arc<crate::source::line_filter::LineFilter>,
    )>,
);

impl LineFilters {
    /// What each tail may leave unparsed under `config`'s rules (`None`: nothing): lines
    /// none of the rules that can see that source's events could match, unless a detector
    /// plugin subscribes to its events (it is offered every one).
    fn set(&self, config: Option<&Config>) {
        for (source, kind, level_from_pri, filter) in &self.0 {
            let scope = crate::engine::LineScope {
                source,
                kind,
                level_from_pri: *level_from_pri,
            };
            filter.set(config.and_then(|c| {
                let offered = c.plugins.iter().any(|p| {
                    p.manifest.kind == crate::plugin::config::PluginKind::Detector
                        && (p.manifest.subscribe.as_ref())
                            .is_none_or(|s| !crate::engine::never_sees(s, &scope))
                });
                (!offered)
                    .then(|| crate::engine::source_line_patterns(&c.rules, &scope))
                    .flatten()
            }));
        }
    }
}

/// Reloads config and rules. A broken config keeps the old one running and says why in the
/// log, `/v1/status` and sd_notify STATUS.
/// What a reload hands the new configuration to.
struct Reloadable<'a> {
    engine: &'a EngineHandle,
    incidents: &'a IncidentHandle,
    remediation: &'a crate::remediation::RemediationHandle,
    telemetry: &'a Telemetry,
    roles: &'a crate::api::roles::SharedRoles,
    slas: &'a crate::api::SharedSlas,
    teams: &'a crate::api::SharedTeams,
    plugins: &'a mut crate::plugin::Supervisor,
    notifier: &'a crate::notification::NotifyHandle,
    line_filters: &'a LineFilters,
}

async fn reload(
    config: &mut Config,
    overrides: &Overrides,
    to: Reloadable<'_>,
) -> Result<String, String> {
    let Reloadable {
        engine,
        incidents,
        remediation,
        telemetry,
        roles,
        slas,
        teams,
        plugins,
        notifier,
        line_filters,
    } = to;
    let mut states = vec![NotifyState::Reloading];
    if let Ok(m) = NotifyState::monotonic_usec_now() {
        states.push(m);
    }
    notify(&states);
    let path = config.path.clone();
    let ov = overrides.clone();
    let loaded = tokio::task::spawn_blocking(move || load_config(&path, &ov))
        .await
        .unwrap_or_else(|e| {
            Err(ConfigErrors(vec![crate::config::ConfigError {
                file: config.path.clone(),
                line: None,
                key: String::new(),
                message: format!("reload task failed: {e}"),
            }]))
        });
    let now = SystemClock.now();
    match loaded {
        Err(errors) => {
            let text = errors.to_string();
            for e in &errors.0 {
                tracing::error!(error = %e, "reload refused; the previous configuration stays in force");
            }
            telemetry.set_reload(|r| {
                r.last_error = Some(text.clone());
                r.last_error_at = Some(now);
            });
            let status = format!(
                "running with the previous config; reload failed: {}",
                errors.0.first().map(|e| e.to_string()).unwrap_or_default()
            );
            notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
            Err(text)
        }
        Ok(new) => {
            if new.control_socket() != config.control_socket()
                || new.ingest_socket() != config.ingest_socket()
                || new.daemon.state_dir != config.daemon.state_dir
            {
                tracing::warn!("socket paths and state_dir take effect only after a restart");
            }
            if new.control.web_listen != config.control.web_listen
                || new.control.web_token != config.control.web_token
                || new.control.web_admin_token != config.control.web_admin_token
            {
                tracing::warn!(
                    "[control] web_listen, web_token and web_admin_token take effect only after a restart"
                );
            }
            if new.sources != config.sources {
                tracing::warn!("[[source.*]] changes take effect only after a restart");
            }
            // No line read while the rules change is skipped (the tails look at every line),
            // so neither the old nor the new rules miss one. Lines read before were judged by
            // the old rules.
            line_filters.set(None);
            if !engine.reload(new.rules.clone()).await
                || !incidents.configure(new.incidents.clone()).await
                || !remediation
                    .configure(
                        new.actions.clone(),
                        new.remediation.clone(),
                        crate::remediation::rule_actions(&new.rules),
                    )
                    .await
            {
                return Err("the daemon is shutting down".into());
            }
            crate::remediation::preflight::publish(&new.actions, telemetry);
            crate::notification::reach::publish(&new.notify.channels, telemetry);
            plugins.apply(&new.plugins);
            line_filters.set(Some(&new));
            if !notifier.configure(new.notify.clone()).await {
                return Err("the daemon is shutting down".into());
            }
            let summary = format!("reloaded; {} rules", new.rules.len());
            tracing::info!(rules = new.rules.len(), "configuration reloaded");
            telemetry.set_reload(|r| {
                r.generation += 1;
                r.last_ok_at = Some(now);
                r.last_error = None;
                r.last_error_at = None;
            });
            // Sockets and the state folder stay as they were bound.
            let keep = (
                config.control.clone(),
                config.ingest.clone(),
                config.daemon.clone(),
            );
            let groups = role_groups(&new);
            let sources = std::mem::take(&mut config.sources);
            *config = new;
            (config.control, config.ingest, config.daemon) = keep;
            // Who may do what changes at once; the rest of [control] waits for a restart.
            config.control.admin_groups = groups.admin.clone();
            config.control.responder_groups = groups.responder.clone();
            *roles.write().unwrap_or_else(|p| p.into_inner()) = groups;
            *slas.write().unwrap_or_else(|p| p.into_inner()) = config.incidents.slas.clone();
            *teams.write().unwrap_or_else(|p| p.into_inner()) = config.incidents.teams.clone();
            // The running sources stay as started, and so does what the config says of them.
            config.sources = sources;
            notify(&[
                NotifyState::Ready,
                NotifyState::Status(&format!("running; {summary}")),
            ]);
            Ok(summary)
        }
    }
}
