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
//! (`palisade-policy`, `palisade-controller`), never here; only the names of wire enums that
//! every crate writes the same way (`OsFamily`) are given here once.

#![forbid(unsafe_code)]
#![allow(missing_debug_implementations, clippy::all)]

/// Package `palisade.v1`.
pub mod v1 {
    tonic::include_proto!("palisade.v1");
}

impl v1::OsFamily {
    /// The family's name as policies, posture and the command line write it (`macos`,
    /// `windows`, `linux`, `ios`, `android`, `chromeos`; empty when unspecified).
    pub fn name(self) -> &'static str {
        match self {
            v1::OsFamily::Macos => "macos",
            v1::OsFamily::Windows => "windows",
            v1::OsFamily::Linux => "linux",
            v1::OsFamily::Ios => "ios",
            v1::OsFamily::Android => "android",
            v1::OsFamily::Chromeos => "chromeos",
            v1::OsFamily::Unspecified => "",
        }
    }

    /// The family named `name` (`None` for an unknown name; empty is `Unspecified`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "" => v1::OsFamily::Unspecified,
            "macos" => v1::OsFamily::Macos,
            "windows" => v1::OsFamily::Windows,
            "linux" => v1::OsFamily::Linux,
            "ios" => v1::OsFamily::Ios,
            "android" => v1::OsFamily::Android,
            "chromeos" => v1::OsFamily::Chromeos,
            _ => return None,
        })
    }

    /// The name of a wire value (unknown values are unspecified).
    pub fn name_of(value: i32) -> &'static str {
        Self::try_from(value)
            .unwrap_or(v1::OsFamily::Unspecified)
            .name()
    }
}

/// The encoded `FileDescriptorSet` of every Palisade proto, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("palisade_descriptor");
