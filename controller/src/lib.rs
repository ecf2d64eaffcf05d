//! One Palisade controller: a Raft member holding the catalog durably, serving the admin API,
//! the Raft transport and the edge sync stream. See `docs/ARCHITECTURE.md`.

#![forbid(unsafe_code)]

pub mod raft;
