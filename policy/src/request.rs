//! What `decide()` looks at: the signed-in identity, the device, and the request context. The
//! edge builds these from a verified session, the replica's device record and the connection.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;

pub use crate::document::{MfaMethod, Os, Protocol};

/// Proof that the user passed a Palisade-owned second factor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MfaProof {
    /// Which method. `Platform` means a platform authenticator with user verification.
    pub method: MfaMethod,
    /// The factor used (for factor revocation).
    pub factor_id: String,
    /// When the challenge was passed.
    pub authenticated_at: Timestamp,
    /// Whether the authenticator verified the user (always true for `Platform`).
    pub user_verified: bool,
}

/// A verified SSO identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The identity provider id it came from.
    pub provider: String,
    /// The OIDC subject.
    pub subject: String,
    /// Email address (compared case-insensitively).
    pub email: String,
    /// Groups from the provider's groups claim.
    pub groups: Vec<String>,
    /// Other claims, as strings (a list claim holds several values).
    pub claims: BTreeMap<String, Vec<String>>,
    /// The MFA proof bound to this session, if any.
    pub mfa: Option<MfaProof>,
    /// When the SSO session began and was last used, if known: each application holds it to
    /// its own lifetime and idle timeout (`None`, as in `simulate`, skips those checks).
    pub session: Option<SessionTimes>,
}

/// When an SSO session began and was last used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    /// When the user signed in.
    pub issued_at: Timestamp,
    /// When the session was last used (refreshed by the edge about once a minute).
    pub last_active: Timestamp,
}

/// Lifecycle state of a device record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceState {
    /// Created but not yet enrolled.
    Pending,
    /// Enrolled and allowed.
    Enrolled,
    /// Wiped: must enroll again.
    Wiped,
    /// Revoked.
    Revoked,
}

/// A managed device, from the replica.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// Device id (also the staged-rollout cohort key).
    pub id: String,
    /// Lifecycle state.
    pub state: DeviceState,
    /// Palisade client version, if reported and valid semver.
    pub client_version: Option<semver::Version>,
    /// Whether the client enforces mandatory authentication.
    pub mandatory_auth: bool,
    /// Operating system family, if known.
    pub os: Option<Os>,
    /// Device groups.
    pub groups: Vec<String>,
    /// Reported: full-disk encryption on.
    pub disk_encrypted: bool,
    /// Reported: host firewall on.
    pub firewall: bool,
    /// Reported: screen lock configured.
    pub screen_lock: bool,
    /// Reported by an MDM: compliant.
    pub mdm_compliant: bool,
    /// When that posture was reported; `None` if never.
    pub posture_reported_at: Option<Timestamp>,
}

/// Facts about the request that are neither identity nor device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// Client source address.
    pub source_ip: IpAddr,
    /// Protocol the request arrived on.
    pub protocol: Protocol,
    /// Age of the edge's view of the catalog.
    pub view_age: Duration,
}
