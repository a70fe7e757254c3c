//! The control API: HTTP/1.1 + JSON over the control Unix socket (DESIGN §3.5).
//!
//! axum serves a `UnixListener`; each connection's peer credentials (SO_PEERCRED) are read
//! once at accept into a [`Peer`], whose user name is the actor of every change made through
//! that connection. Handlers never write the store themselves: they send commands to the
//! incident manager and answer with what it answers, after the change is durable.

mod actions;
mod channels;
pub mod config;
mod edits;
mod error;
mod listener;
pub mod metrics;
mod oncall;
mod postmortem;
pub mod roles;
mod routes;
mod silences;
mod stages;
mod stream;
pub mod web;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::UnixListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

pub use error::ApiError;

use crate::clock::Clock;
use crate::engine::EngineHandle;
use crate::incident::IncidentHandle;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Who is on the other end of a control connection.
pub use crate::access::Peer;

pub type ReloadRequest = oneshot::Sender<Result<String, String>>;

/// What handlers share.
pub struct ApiState {
    pub store: Arc<dyn Store>,
    pub incidents: IncidentHandle,
    pub engine: EngineHandle,
    pub events: mpsc::Sender<crate::engine::Input>,
    pub reload: mpsc::Sender<ReloadRequest>,
    pub telemetry: Arc<Telemetry>,
    pub clock: Arc<dyn Clock>,
    pub host: Arc<str>,
    pub max_line_bytes: usize,
    /// `[engine] max_future_skew`: later event times are rejected as `future_ts`.
    pub max_future_skew: std::time::Duration,
    pub max_body_bytes: usize,
    pub config_path: PathBuf,
    pub state_dir: PathBuf,
    pub control_socket: PathBuf,
    pub ingest_socket: PathBuf,
    pub event_queue_capacity: usize,
    /// Longest a request may take before it is answered 503.
    pub request_timeout: std::time::Duration,
    /// admin_groups and responder_groups, replaced on reload.
    pub roles: roles::SharedRoles,
    pub remediation: crate::remediation::RemediationHandle,
    /// The notifier: the channel list and test messages.
    pub notify: crate::notification::NotifyHandle,
    /// The `[[sla]]` tables in force (replaced on reload): time left in `GET
    /// /v1/incidents/{id}`, compliance in `/v1/stats`.
    pub slas: SharedSlas,
    /// The `[[team]]` tables in force (replaced on reload), for `GET /v1/oncall`.
    pub teams: SharedTeams,
    /// Cancelled at shutdown: ends the event streams, which would otherwise hold the
    /// server open.
    pub shutdown: CancellationToken,
}

/// The SLAs in force, shared with the reload.
pub type SharedSlas = Arc<std::sync::RwLock<Vec<crate::incident::sla::SlaConfig>>>;

/// The teams in force, shared with the reload.
pub type SharedTeams = Arc<std::sync::RwLock<Vec<crate::incident::oncall::TeamConfig>>>;

/// Serves the API until `cancel`, then finishes the requests in flight.
pub use listener::{Limits, serve_tcp};

/// Serves the control API on `listener` until `cancel` (`api/listener.rs` says who is admitted).
pub async fn serve(
    listener: UnixListener,
    limits: Limits,
    state: Arc<ApiState>,
    cancel: CancellationToken,
) {
    let roles = state.roles.clone();
    let app = routes::router(state);
    listener::serve(listener, limits, roles, app, cancel).await;
    tracing::debug!("control API stopped");
}
