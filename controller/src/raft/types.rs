//! openraft's type configuration for Palisade.

use std::fmt;

use palisade_policy::catalog::{CommandError, Envelope, Outcome};
use serde::{Deserialize, Serialize};

/// A controller as a Raft member: where to reach its Raft transport and its admin API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Raft transport address, `host:port`.
    pub raft_addr: String,
    /// Admin API address, `host:port`.
    pub admin_addr: String,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} admin={}", self.raft_addr, self.admin_addr)
    }
}

/// The application data in a log entry: one catalog command with its envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request(pub Envelope);

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the command itself: it may carry sealed secrets or documents.
        write!(f, "command by {} at {}", self.0.actor.subject, self.0.at_ms)
    }
}

/// What applying a log entry returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// A blank or membership entry.
    Empty,
    /// The catalog command's result.
    Applied(Result<Outcome, CommandError>),
}

openraft::declare_raft_types!(
    /// Palisade's Raft types: u64 node ids, `Member` nodes, catalog commands as app data.
    pub TypeConfig:
        D = Request,
        R = Response,
        Node = Member,
);
