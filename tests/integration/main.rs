//! Integration tests: the real daemon and client binaries in temporary folders.

mod actions;
mod boundary;
mod cli;
mod config;
mod correlation;
mod daemon;
mod durability;
mod fleet;
mod ingest;
mod install;
mod journald;
mod lifecycle;
mod notify;
mod plugins;
mod preflight;
mod replay;
mod roles;
mod silences;
mod sources;
mod ssh;
mod stream;
mod systemd;
mod tail;
mod util;
mod watermark;
mod web;
