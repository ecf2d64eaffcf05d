//! The edge's enforcement core: what every protocol adapter (HTTP/1.1 and HTTP/2 today,
//! HTTP/3 and the device tunnel next) asks before it lets anything through.
//!
//! - [`view`]: the replica of the catalog an edge enforces, in the catalog's own domain types
//!   (`FactorRecord`, `DeviceRecord`, `Counters`, `RevocationTarget`), advanced by
//!   already-converted [`view::Change`]s. Wire types stop at the sync boundary.
//! - [`session`]: the caller, from the presented session and MFA tokens, checked against the
//!   view's keys, revocations and factors.
//! - [`enforce`]: one request's [`enforce::Verdict`] (forward, sign in, MFA, deny, not found,
//!   unavailable) from what every protocol has: host, path, method, peer, transport and the
//!   presented credentials.
//! - [`mfa`]: the rules about factors that the edge applies (which factors count, the lockout,
//!   the recent-factor window), each in one place.
//! - [`reserved`]: Palisade's own paths on every application host, parsed once into an enum.
//!
//! This crate does no I/O, spawns nothing and never reads a clock: `now` is always an argument
//! (unix seconds). It must stay that way so that every verdict is reproducible in a table test
//! and every adapter gets the same answer for the same request. It depends on
//! `palisade-policy` and nothing that speaks a protocol: no hyper, tonic, tokio or protobuf.

#![forbid(unsafe_code)]

pub mod device;
pub mod enforce;
pub mod mfa;
pub mod reserved;
pub mod session;
pub mod view;

#[cfg(test)]
mod fixtures;

pub use enforce::{Credentials, Request, Transport, Unavailable, Verdict, enforce};
pub use reserved::ReservedPath;
pub use session::Caller;
pub use view::{Change, Delta, ReplicaError, Revocations, View};
