//! `[control]`: the control socket, who may do what on it, and its limits.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::de::{self, octal_mode};

use crate::de::Secret;

/// `[control]`
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Control socket; a relative name lives in `runtime_dir`.
    pub socket: PathBuf,
    /// Octal mode of the control socket.
    #[serde(deserialize_with = "octal_mode")]
    pub socket_mode: u32,
    /// Groups whose members are admins (root always is).
    pub admin_groups: Vec<String>,
    /// Groups whose members may change status, notes, tags and assignment.
    pub responder_groups: Vec<String>,
    /// Optional TCP listener for `/metrics` only.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Optional loopback TCP listener for the web board (off by default).
    pub web_listen: Option<std::net::SocketAddr>,
    /// The token the board's buttons (acknowledge, mitigate, resolve) must send; without
    /// one the board only reads. Peer credentials do not cross TCP.
    pub web_token: Option<Secret>,
    /// The token that also lets the board approve or deny pending actions (an admin's).
    pub web_admin_token: Option<Secret>,
    /// Concurrent API connections of non-admins at most (admins are never turned away).
    pub max_connections: usize,
    /// Concurrent connections (streams included) of one user other than an admin.
    pub max_connections_per_user: usize,
    /// A request's headers must arrive within this long, or the connection is closed.
    #[serde(deserialize_with = "de::positive_duration")]
    pub header_timeout: Duration,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take before it is answered 503.
    #[serde(deserialize_with = "de::positive_duration")]
    pub request_timeout: Duration,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            socket: PathBuf::from("control.sock"),
            socket_mode: 0o660,
            admin_groups: Vec::new(),
            responder_groups: Vec::new(),
            metrics_listen: None,
            web_listen: None,
            web_token: None,
            web_admin_token: None,
            max_connections: 64,
            max_connections_per_user: 8,
            header_timeout: Duration::from_secs(10),
            max_body_bytes: 8 << 20,
            request_timeout: Duration::from_secs(30),
        }
    }
}
