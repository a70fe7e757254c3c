//! Incidents: the model, the status machine, and the manager.
//!
//! The manager ([`manager::spawn`]) is the single writer of the store. It receives
//! [`Detection`](crate::engine::Detection)s from the engine and [`Command`]s from API handlers
//! (through an [`IncidentHandle`]), applies each as one store transaction, group-commits a
//! batch with one flush, and only then replies. It runs on a blocking thread, since every
//! step ends in disk work.

mod coalesce;
mod command;
pub mod config;
pub mod correlate;
mod editing;
mod entry_data;
pub mod feed;
pub mod fold;
mod housekeeping;
mod intake;
pub mod lifecycle;
pub mod manager;
pub mod matcher;
mod model;
pub mod oncall;
pub mod port;
pub mod postmortem;
pub mod project;
mod recent;
pub mod silence;
mod silencing;
pub mod sla;
pub mod stage;
pub mod stats;
mod unflushed;

pub use entry_data::EntryData;
pub use lifecycle::Transition;
pub use manager::{Command, IncidentError, IncidentHandle, NewIncident, SilenceCommand};
pub use model::{EntryKind, Incident, Severity, Status, TimelineEntry};
pub use silence::{NewSilence, Silence, SilenceState};
pub use stage::Stage;
