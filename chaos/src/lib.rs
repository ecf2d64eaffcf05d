//! The cluster harness: starts local clusters of real processes, with the sample upstream and a
//! development identity provider. `palisade-chaos up` is the local cluster for development;
//! `run` and `suite` break clusters on purpose and report what users feel: the time from an
//! acknowledged revocation or policy change to its enforcement at every edge, and whether the
//! contracts held. See `chaos/README.md` and `docs/ARCHITECTURE.md`.

#![forbid(unsafe_code)]

pub mod applied;
pub mod cluster;
pub mod devidp;
pub mod faultproxy;
pub mod h3client;
pub mod host;
pub mod netns;
pub mod report;
pub mod run;
pub mod scenario;
pub mod softkey;
pub mod suite;
pub mod sweep;
pub mod up;
pub mod upstream;
