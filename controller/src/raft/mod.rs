//! Raft plumbing: the type configuration, the durable log store and the state machine.
//!
//! Both stores live in one redb file (`<data-dir>/raft.redb`). The log store writes every
//! append, vote and truncation in a transaction committed with `Durability::Immediate` (fsync)
//! before acknowledging it. The state machine keeps the catalog in memory for fast reads; its
//! durable form is the last snapshot (in the same redb file) plus the log up to the persisted
//! committed index, which openraft re-applies on start. Snapshots are taken every
//! `snapshot_every` entries, so that replay is bounded.

pub mod log_store;
pub mod network;
pub mod service;
pub mod state_machine;
pub mod status;
pub mod types;
pub mod wire;

pub use log_store::LogStore;
pub use state_machine::StateMachine;
pub use status::{MemberStatus, RaftStatus, StatusWatch};
pub use types::{Member, Request, Response, TypeConfig};

use std::io;

/// Turns any storage error into the `io::Error` openraft's storage traits use.
pub(crate) fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

/// Opens (or creates) the redb database shared by the log store and the state machine.
pub fn open_db(path: &std::path::Path) -> io::Result<std::sync::Arc<redb::Database>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let db = redb::Database::create(path).map_err(io_err)?;
    Ok(std::sync::Arc::new(db))
}
