//! One Palisade edge: ingress, sync client and replica, enforcement on every request, login /
//! MFA / enrollment pages, reverse proxy. See `docs/ARCHITECTURE.md`.
//!
//! Not yet built: tracked by issues 4 (sync client), 5 (HTTP edge and SSO) and 6 (MFA).

#![forbid(unsafe_code)]
