//! Palisade's gRPC contracts and their generated tonic/prost code; nothing else.
//!
//! Everything lives in package `palisade.v1` (see `proto/palisade/v1/*.proto`):
//! - `admin.proto`: the operator-facing admin API (policy, revocations, devices, factors, keys,
//!   cluster and propagation status, audit);
//! - `sync.proto`: the edge subscription stream (snapshot, deltas, heartbeats, reports);
//! - `raft.proto`: the controller-to-controller Raft transport;
//! - `edge.proto`: writes that start at an edge (MFA counters, self-service, tunnel sessions)
//!   and device enrollment;
//! - `catalog.proto` and `common.proto`: the replicated objects and shared types.
//!
//! Conversions to and from the domain model live in the crates that own the domain
//! (`palisade-policy`, `palisade-controller`), never here.

#![forbid(unsafe_code)]
#![allow(missing_debug_implementations, clippy::all)]

/// Package `palisade.v1`.
pub mod v1 {
    tonic::include_proto!("palisade.v1");
}

/// The encoded `FileDescriptorSet` of every Palisade proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("palisade_descriptor");
