//! The cluster harness: starts local clusters of real processes, with the sample upstream and a
//! development identity provider. `palisade-chaos up` is the local cluster for development; fault
//! scenarios and propagation reports build on the same harness. See `docs/ARCHITECTURE.md`.

#![forbid(unsafe_code)]

pub mod cluster;
pub mod devidp;
pub mod host;
pub mod up;
pub mod upstream;
