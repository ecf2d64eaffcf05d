//! One Palisade controller: a Raft member holding the catalog durably, serving the admin API,
//! the Raft transport and the edge sync stream. See `docs/ARCHITECTURE.md`.
//!
//! Not yet built: tracked by issues 3 (controller) and 4 (propagation).

#![forbid(unsafe_code)]
