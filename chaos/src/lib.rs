//! The cluster harness: starts local clusters from the real binaries, injects faults and
//! measures propagation. See `docs/ARCHITECTURE.md`.
//!
//! Not yet built: tracked by issue 7.

#![forbid(unsafe_code)]
