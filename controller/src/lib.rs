//! One Palisade controller: a Raft member holding the catalog durably, serving the admin API,
//! the Raft transport and the edge sync stream. See `docs/ARCHITECTURE.md`.

#![forbid(unsafe_code)]

pub mod admin;
pub mod authz;
pub mod config;
pub mod controller;
pub mod convert;
pub mod devices;
pub mod edge_auth;
pub mod edges;
pub mod error;
pub mod identity;
pub mod process;
pub mod raft;
pub mod rpc_metrics;
pub mod seal;
pub mod server;
pub mod sync;
