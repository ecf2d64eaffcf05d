//! The device behind a request: the client certificate the connection presented (already
//! verified by TLS against the device CA), matched against the replica.
//!
//! On an enrolled device, a certificate counts only while it is the one the catalog records,
//! before its expiry: re-enrolling or renewing a device makes its old certificate count for
//! nothing at the next request, on connections already open too (every request, and every
//! re-decision of what stays open, resolves it again).
//!
//! A certificate naming a device that is wiped, revoked or pending again is that device, in
//! that state: only the device CA issues certificates, and it names the device it issued to.
//! `decide()` sees the state, so every rule that asks for an enrolled device refuses it and
//! the denial says why (as `palisadectl simulate` does for the same device), instead of the
//! request passing for one from no device at all.

use palisade_policy::catalog::{DeviceRecord, DeviceState};

use crate::view::View;

/// A device certificate as a connection presented it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceCredential<'a> {
    /// The device id its SAN URI names.
    pub id: &'a str,
    /// SHA-256 of the certificate, hex.
    pub fingerprint: &'a str,
}

/// Why a presented device certificate does not count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceRefused {
    /// The catalog has no such device.
    #[error("the certificate names a device this cluster does not know")]
    Unknown,
    /// The device is enrolled and holds another certificate now (or its own expired).
    #[error("the certificate is no longer this device's (renewed, re-enrolled or expired)")]
    NotCurrent,
}

/// The device `presented` names at `now` (unix seconds): an enrolled device only with its
/// current certificate, a device in any other state as it is.
pub fn resolve<'v>(
    view: &'v View,
    presented: DeviceCredential<'_>,
    now: i64,
) -> Result<&'v DeviceRecord, DeviceRefused> {
    let d = view
        .devices
        .get(presented.id)
        .ok_or(DeviceRefused::Unknown)?;
    if d.state != DeviceState::Enrolled || d.holds(presented.fingerprint, now.saturating_mul(1000))
    {
        Ok(d)
    } else {
        Err(DeviceRefused::NotCurrent)
    }
}
