//! One Palisade edge: the sync client and replica (built), and — still to come — ingress,
//! enforcement on every request, login / MFA / enrollment pages and the reverse proxy. See
//! `docs/ARCHITECTURE.md`.

#![forbid(unsafe_code)]

pub mod config;
pub mod ops;
pub mod replica;
pub mod sync;
