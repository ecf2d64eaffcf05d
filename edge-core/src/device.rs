//! The device behind a request: the client certificate the connection presented (already
//! verified by TLS against the device CA), matched against the replica.
//!
//! A certificate counts only while it is the one the catalog records for that device, on an
//! enrolled device, before its expiry: wiping, revoking, re-enrolling or renewing a device
//! makes its old certificate count for nothing at the next request, on connections already
//! open too (every request, and every re-decision of what stays open, resolves it again).

use palisade_policy::catalog::DeviceRecord;

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
    /// The device is wiped, revoked or pending, or holds another certificate now.
    #[error("the certificate is no longer this device's (wiped, revoked, renewed or expired)")]
    NotCurrent,
}

/// The enrolled device that holds `presented` at `now` (unix seconds).
pub fn resolve<'v>(
    view: &'v View,
    presented: DeviceCredential<'_>,
    now: i64,
) -> Result<&'v DeviceRecord, DeviceRefused> {
    let d = view
        .devices
        .get(presented.id)
        .ok_or(DeviceRefused::Unknown)?;
    if d.holds(presented.fingerprint, now.saturating_mul(1000)) {
        Ok(d)
    } else {
        Err(DeviceRefused::NotCurrent)
    }
}
