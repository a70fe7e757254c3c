//! Integration tests: the real daemon and client binaries in temporary folders.

mod cli;
mod config;
mod durability;
mod ingest;
mod lifecycle;
mod util;
