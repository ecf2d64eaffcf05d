//! One Palisade edge: the sync client and replica, the HTTPS ingress (HTTP/1.1, HTTP/2 and
//! HTTP/3 over QUIC), sign-in with OpenID
//! Connect, Palisade's own second factor (TOTP, WebAuthn) and the self-service portal,
//! enforcement on every request, and the reverse proxy to upstreams. See
//! `docs/ARCHITECTURE.md` and `docs/edge.md`.

#![forbid(unsafe_code)]

/// Palisade's reserved path prefix on every application host.
pub use palisade_edge_core::reserved::{JWKS_PATH, PREFIX as RESERVED};

pub mod assertion;
pub(crate) mod auth;
pub mod config;
pub mod controllers;
pub mod cookie;
pub(crate) mod enforce;
pub mod h3;
pub mod http;
pub mod ingress;
pub mod limits;
pub mod mfa;
pub mod oidc;
pub mod ops;
pub mod pages;
pub mod process;
pub mod proxy;
pub mod replica;
pub mod sync;
pub mod tls;
