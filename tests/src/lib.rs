//! Integration and end-to-end tests across real processes and real peers.
//!
//! The contract tests live in `tests/tests/`.

#![forbid(unsafe_code)]
