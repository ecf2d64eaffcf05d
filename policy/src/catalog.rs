//! The replicated catalog: everything the controller cluster agrees on, and how one command
//! changes it. This is the Raft state machine's domain; the controller stores it durably and
//! serves it, edges hold a replica of its public part.
//!
//! `apply` is deterministic: it reads no clock (the leader stamps `at` into the envelope) and no
//! randomness (ids derive from the revision), so every member reaches the same state. A command
//! that is invalid against the current state changes nothing and returns an error; the error is
//! itself the replicated outcome. Secret material (TOTP seeds, signing keys, named secrets) is
//! only ever held here as `Sealed` ciphertext, encrypted by the controller before proposing, so
//! neither the Raft log nor a snapshot holds a secret in the clear.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::compile::CompiledPolicy;
use crate::document::MfaMethod;
use crate::violation::Violations;

mod device;
mod tunnel;
pub use device::*;
pub use tunnel::TunnelSessionRecord;

/// Ciphertext of a secret. `Debug` shows only its length.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed(pub Vec<u8>);

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({} bytes)", self.0.len())
    }
}

/// Who acts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Certificate common name, edge id or user subject.
    pub subject: String,
    /// `admin`, `edge`, `user` or `system`.
    pub kind: String,
}

/// A command with the metadata the leader stamps on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Who asked for it.
    pub actor: Actor,
    /// When the leader accepted it (unix milliseconds).
    pub at_ms: i64,
    /// What to do.
    pub command: Command,
    /// The client's name for this write (with the actor, it identifies the write): a command
    /// whose key was applied within `IDEMPOTENCY_WINDOW_MS` is not applied again, it returns
    /// the first one's result. A client whose answer was lost retries with the same key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The user a factor or counter belongs to.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct UserKey {
    /// Identity provider id.
    pub provider: String,
    /// OIDC subject.
    pub subject: String,
}

/// What a revocation targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationTarget {
    /// One session.
    Session(String),
    /// All of a user's sessions issued before the revocation took effect (edges compare the
    /// revision a session was issued at with the revocation's), and, when `issued_before` is
    /// set, every session issued before that time (unix seconds).
    User {
        /// The user.
        user: UserKey,
        /// Sessions issued strictly before this are refused too; 0 for none.
        issued_before: i64,
    },
    /// A device.
    Device(String),
    /// A factor.
    Factor(String),
    /// A device tunnel session.
    TunnelSession(String),
}

/// A revocation in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// `rev-<revision>`.
    pub id: String,
    /// What is revoked.
    pub target: RevocationTarget,
    /// Why.
    pub reason: String,
    /// Who.
    pub actor: Actor,
    /// When (unix ms).
    pub created_at_ms: i64,
    /// Garbage-collected after this (unix ms).
    pub expires_at_ms: i64,
    /// Revision of the revocation.
    pub revision: u64,
}

/// Kinds of factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactorKind {
    /// TOTP.
    Totp,
    /// Roaming security key.
    SecurityKey,
    /// Platform authenticator.
    Platform,
}

impl FactorKind {
    /// The policy method this factor satisfies.
    pub fn method(self) -> MfaMethod {
        match self {
            FactorKind::Totp => MfaMethod::Totp,
            FactorKind::SecurityKey => MfaMethod::SecurityKey,
            FactorKind::Platform => MfaMethod::Platform,
        }
    }
}

/// A factor. The TOTP seed lives apart, sealed, in `Catalog::totp_seeds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactorRecord {
    /// `fac-<revision>`.
    pub id: String,
    /// Owner.
    pub user: UserKey,
    /// Kind.
    pub kind: FactorKind,
    /// Name.
    pub name: String,
    /// Created (unix ms).
    pub created_at_ms: i64,
    /// WebAuthn credential (JSON of the webauthn-rs credential), empty for TOTP.
    pub credential_json: String,
    /// WebAuthn credential id, base64url; empty for TOTP.
    pub credential_id: String,
    /// Last accepted WebAuthn signature counter.
    pub sign_count: u32,
    /// False while a TOTP factor waits for its first code, and once the factor is revoked.
    pub active: bool,
    /// Revision of the last change.
    pub revision: u64,
    /// When the factor was revoked (unix ms), 0 if it never was. A revoked factor never
    /// satisfies anything again, whatever happens to the revocation record.
    #[serde(default)]
    pub revoked_at_ms: i64,
    /// Wrong first codes entered for a pending TOTP factor (at most `MAX_CONFIRM_ATTEMPTS`).
    #[serde(default)]
    pub confirm_attempts: u32,
    /// SHA-256 (hex) of the secret the browser that began a pending TOTP enrollment holds;
    /// only that browser can confirm it.
    #[serde(default)]
    pub binding_sha256: String,
}

impl FactorRecord {
    /// Whether the factor satisfies MFA: enrolled, active and not revoked.
    pub fn usable(&self) -> bool {
        self.active && self.revoked_at_ms == 0
    }

    /// Whether this is a TOTP factor still waiting for its first code.
    pub fn pending(&self) -> bool {
        self.kind == FactorKind::Totp && !self.active && self.revoked_at_ms == 0
    }
}

/// A session's last successful factor, as the controllers recorded it (never from an edge's
/// token): adding or removing factors needs a recent one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaPass {
    /// The user.
    pub user: UserKey,
    /// The factor passed.
    pub factor_id: String,
    /// Its kind.
    pub kind: FactorKind,
    /// When (unix ms, the leader's clock).
    pub at_ms: i64,
}

/// Per-user counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Last accepted TOTP time step.
    pub totp_last_step: u64,
    /// Consecutive failed MFA attempts.
    pub failed_attempts: u32,
    /// Locked until (unix ms), 0 when not locked.
    pub locked_until_ms: i64,
    /// Revision of the last attempt reserved (`ReserveMfaAttempt`), 0 if none.
    #[serde(default)]
    pub last_attempt: u64,
    /// Revision of the attempt whose reservation set the current lock, 0 if none.
    #[serde(default)]
    pub locked_by: u64,
}

/// A session signing key (sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigningKeyRecord {
    /// `k-<revision>`.
    pub kid: String,
    /// Sealed 32-byte secret.
    pub secret: Sealed,
    /// Signs new tokens.
    pub active: bool,
    /// Created (unix ms).
    pub created_at_ms: i64,
    /// Removed after this (unix ms); 0 while active.
    pub retire_at_ms: i64,
}

/// One applied policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyVersion {
    /// Version number, from 1.
    pub version: u64,
    /// Revision.
    pub revision: u64,
    /// Author.
    pub author: Actor,
    /// Applied at (unix ms).
    pub applied_at_ms: i64,
    /// Comment.
    pub comment: String,
    /// The document as submitted.
    pub document_json: String,
    /// SHA-256 of `document_json`, hex.
    pub digest: String,
    /// Set when produced by a rollback.
    pub rolled_back_from: Option<u64>,
}

/// One recorded write, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Revision of the write.
    pub revision: u64,
    /// When (unix ms).
    pub at_ms: i64,
    /// Who.
    pub actor: Actor,
    /// Dotted action name, e.g. `policy.apply`.
    pub action: String,
    /// What it acted on.
    pub target: String,
    /// `ok`, or the refusal.
    pub result: String,
}

/// How many audit records the catalog keeps (older ones are dropped first).
pub const AUDIT_RETENTION: usize = 10_000;

/// Most factors (active and pending) one user may hold: each is replicated to every edge.
pub const MAX_FACTORS_PER_USER: usize = 10;

/// Lockout policy (NIST SP 800-63B allows at most 100 consecutive failures).
pub const MAX_FAILED_ATTEMPTS: u32 = 100;

/// Wrong first codes a pending TOTP enrollment accepts before it is refused for good.
pub const MAX_CONFIRM_ATTEMPTS: u32 = 5;

/// A factor passed this recently (by the controllers' record) allows adding or removing
/// factors.
pub const RECENT_MFA_MS: i64 = 10 * 60 * 1000;

/// Clock skew a revocation must also outlast (tokens are accepted this long past expiry).
const REVOCATION_SKEW_MS: i64 = 2 * 60 * 1000;

/// Something to change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Validate and apply a policy document.
    ApplyPolicy {
        /// The document.
        document_json: String,
        /// Comment.
        comment: String,
        /// When non-zero, the version that must be current.
        expected_version: u64,
    },
    /// Restore an earlier version as a new one.
    RollbackPolicy {
        /// Version to restore.
        to_version: u64,
        /// Comment.
        comment: String,
    },
    /// Revoke something. A factor is deactivated and a device marked revoked in the same
    /// write, for good; a session or user revocation is kept at least until every session it
    /// can cover has expired (`Catalog::session_coverage_ms`), whatever expiry was asked for.
    Revoke {
        /// Target.
        target: RevocationTarget,
        /// Why.
        reason: String,
        /// Expiry (unix ms): how long the revocation record is kept at least; 0 for the
        /// shortest that covers its target.
        expires_at_ms: i64,
    },
    /// Remove revocations, retired keys and expired pending enrollments as of `at_ms`.
    CollectGarbage,
    /// Create a pending device.
    CreateDevice {
        /// Owner.
        owner: String,
        /// Serial.
        serial: String,
        /// Name.
        display_name: String,
        /// Groups.
        groups: Vec<String>,
        /// SHA-256 of the enrollment token, hex.
        token_sha256: String,
        /// Token expiry (unix ms).
        token_expires_at_ms: i64,
    },
    /// Set a device's state (wiped, revoked, or enrolled on redemption).
    SetDeviceState {
        /// Device id.
        id: String,
        /// New state.
        state: DeviceState,
    },
    /// Record posture.
    RecordPosture {
        /// Device id.
        id: String,
        /// Posture.
        posture: Posture,
    },
    /// Create the device CA (once; its key sealed by the controller).
    CreateDeviceCa {
        /// The CA certificate, PEM.
        certificate_pem: String,
        /// Its private key (PKCS#8 DER), sealed.
        key: Sealed,
    },
    /// Redeem a device's one-time enrollment token with the certificate issued for it.
    EnrollDevice {
        /// Device id (the one the token belongs to).
        id: String,
        /// SHA-256 of the presented token, hex.
        token_sha256: String,
        /// The certificate issued.
        certificate: DeviceCertificate,
        /// Posture sent with the enrollment.
        posture: Posture,
    },
    /// A device's own posture report, bound to a controller-issued nonce: accepted only for an
    /// enrolled device and only with a nonce issued after the last one it used.
    ReportPosture {
        /// Device id.
        id: String,
        /// Posture (stamped by the controller).
        posture: Posture,
        /// When the nonce was issued (unix ms).
        nonce_issued_at_ms: i64,
    },
    /// Replace an enrolled device's certificate, authorised by the current one.
    RenewDeviceCertificate {
        /// Device id.
        id: String,
        /// SHA-256 fingerprint of the certificate presented, hex.
        presented_sha256: String,
        /// The new certificate.
        certificate: DeviceCertificate,
    },
    /// Add a factor (a TOTP factor with its sealed seed starts inactive).
    AddFactor {
        /// Owner.
        user: UserKey,
        /// Kind.
        kind: FactorKind,
        /// Name.
        name: String,
        /// WebAuthn credential JSON.
        credential_json: String,
        /// WebAuthn credential id.
        credential_id: String,
        /// Sealed TOTP seed.
        totp_seed: Option<Sealed>,
        /// SHA-256 (hex) of the admin-issued enrollment code the user presented, when the
        /// controller found that policy requires one; it must match the user's code, which
        /// is consumed.
        #[serde(default)]
        enrollment_code_sha256: Option<String>,
        /// For a TOTP factor: SHA-256 (hex) of the secret the enrolling browser holds.
        #[serde(default)]
        binding_sha256: String,
    },
    /// Activate a pending TOTP factor and record the step of its first code.
    ActivateTotp {
        /// Factor id.
        id: String,
        /// Time step of the code that proved it.
        step: u64,
        /// The attempt reserved for this code (`ReserveMfaAttempt`).
        #[serde(default)]
        attempt: u64,
    },
    /// Remove a factor.
    RemoveFactor {
        /// Factor id.
        id: String,
    },
    /// Rename a factor.
    RenameFactor {
        /// Factor id.
        id: String,
        /// New name.
        name: String,
    },
    /// Reserve one attempt at a code before it is checked: refused while the user is locked
    /// out; otherwise the attempt counts as a failure until a success settles it, and may
    /// start a lock. Concurrent guesses are serialised here, so no burst can check more codes
    /// than the lockout allows. With `pending_factor`, the attempt confirms that pending TOTP
    /// enrollment and also counts against it (`MAX_CONFIRM_ATTEMPTS`).
    ReserveMfaAttempt {
        /// User.
        user: UserKey,
        /// The pending TOTP factor whose first code is being checked.
        #[serde(default)]
        pending_factor: Option<String>,
    },
    /// Record an accepted TOTP step (refused if not after the last one).
    RecordTotpUse {
        /// User.
        user: UserKey,
        /// Step.
        step: u64,
        /// The attempt reserved for this code; 0 (no reservation) is refused while locked.
        #[serde(default)]
        attempt: u64,
        /// The factor that matched.
        #[serde(default)]
        factor_id: String,
        /// The SSO session that passed it (recorded as its last factor pass).
        #[serde(default)]
        session_id: String,
    },
    /// Record a WebAuthn assertion's counter (refused if it did not advance, or while the
    /// user is locked out).
    RecordWebauthnUse {
        /// Factor id.
        id: String,
        /// Counter.
        sign_count: u32,
        /// SHA-256 (hex) of the challenge the assertion answered; a challenge is accepted once.
        #[serde(default)]
        challenge_sha256: String,
        /// The SSO session that passed it (recorded as its last factor pass).
        #[serde(default)]
        session_id: String,
    },
    /// Count a failed MFA attempt (refused while locked: nothing more is recorded then).
    RecordMfaFailure {
        /// User.
        user: UserKey,
        /// SHA-256 (hex) of the WebAuthn challenge the failed answer was for; the ceremony is
        /// used up, so a ceremony yields at most one failure.
        #[serde(default)]
        challenge_sha256: String,
    },
    /// Clear failures and lockout.
    UnlockUser {
        /// User.
        user: UserKey,
    },
    /// Add a new active signing key; the previous active one verifies until `overlap_ms` later.
    RotateSigningKey {
        /// Sealed secret.
        secret: Sealed,
        /// Overlap for the previous key.
        overlap_ms: i64,
    },
    /// Issue a one-time code that lets a user enroll a first factor.
    IssueEnrollmentCode {
        /// The user.
        user: UserKey,
        /// SHA-256 of the code, hex.
        code_sha256: String,
        /// Expiry (unix ms).
        expires_at_ms: i64,
    },
    /// Set a named secret.
    PutSecret {
        /// Name.
        name: String,
        /// Sealed value.
        value: Sealed,
    },
    /// Record sign-in and MFA attempts reported by edges (kept per user, newest
    /// `AUTH_EVENTS_PER_USER`). Edges are not told: only the portal reads them.
    RecordAuthEvents {
        /// The events.
        events: Vec<AuthEvent>,
    },
    /// Open a tunnel session for an enrolled device, its owner signed in: it replaces any
    /// earlier one of the device.
    OpenTunnelSession {
        /// The device.
        device_id: String,
        /// The user who signed in.
        user: UserKey,
        /// The user's email, when the identity provider gave one (a device's owner may be
        /// recorded by email).
        user_email: String,
        /// The SSO session that authorised it.
        session_id: String,
        /// The edge opening it.
        edge_id: String,
        /// When it ends (unix ms): at the SSO session's expiry at the latest.
        expires_at_ms: i64,
    },
    /// Close a tunnel session (the device disconnected, or its edge ended it).
    CloseTunnelSession {
        /// The tunnel session.
        id: String,
        /// Why.
        reason: String,
    },
}

/// A sign-in or MFA attempt as an edge saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthEvent {
    /// Whose.
    pub user: UserKey,
    /// When (unix ms, the edge's clock).
    pub at_ms: i64,
    /// `login.oidc`, `mfa.totp`, `mfa.webauthn`, `logout` ...
    pub action: String,
    /// `ok`, `failed`, `locked_out` ...
    pub result: String,
    /// The edge.
    pub edge_id: String,
    /// The edge's request id.
    pub request_id: String,
    /// The SSO session it belongs to.
    pub session_id: String,
    /// Extra detail (never secrets): the application host, the factor, the session expiry.
    pub details: BTreeMap<String, String>,
}

/// How many auth events the catalog keeps per user.
pub const AUTH_EVENTS_PER_USER: usize = 50;
/// How long an idempotency key is remembered (by the leader's stamp on the entries): longer
/// than any client keeps retrying one write.
pub const IDEMPOTENCY_WINDOW_MS: i64 = 10 * 60 * 1000;
/// At most this many idempotency keys are remembered; the oldest go first.
pub const MAX_IDEMPOTENCY_KEYS: usize = 100_000;

/// The result of a keyed write, kept to answer its retries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyedWrite {
    /// When it was applied (the leader's stamp, unix ms).
    pub at_ms: i64,
    /// Its revision.
    pub revision: u64,
    /// What it was (`policy.apply`, `revoke`, ...): a retry must be the same kind of write.
    pub action: String,
    /// Its result.
    pub result: Result<Outcome, CommandError>,
}
/// How long a used WebAuthn challenge is remembered (longer than any challenge lives).
pub const CHALLENGE_MEMORY_MS: i64 = 15 * 60 * 1000;
/// How long a pending TOTP factor waits for its first code.
pub const PENDING_TOTP_MS: i64 = 15 * 60 * 1000;

/// What a successful command produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing to report beyond success.
    Done,
    /// A policy version became current.
    Policy(u64),
    /// A revocation id.
    Revocation(String),
    /// A device id.
    Device(String),
    /// A factor id.
    Factor(String),
    /// Counters after the change.
    Counters(Counters),
    /// A key id.
    Key(String),
    /// Number of objects collected.
    Collected(usize),
    /// A tunnel session id.
    TunnelSession(String),
    /// An attempt was reserved: its ticket (the revision) and the counters after it.
    Attempt {
        /// Pass this back with the success that settles the attempt.
        ticket: u64,
        /// Counters after the reservation.
        counters: Counters,
    },
}

/// Why a command changed nothing. Messages are safe to return to operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    /// The policy document is invalid: every violation, by JSON path.
    #[error("invalid policy document: {}", .0.iter().map(|v| v.to_string()).collect::<Vec<_>>().join("; "))]
    InvalidPolicy(Vec<crate::violation::Violation>),
    /// Optimistic concurrency failed.
    #[error("policy version {current} is current, not {expected}")]
    VersionConflict {
        /// Expected.
        expected: u64,
        /// Actual.
        current: u64,
    },
    /// No such object.
    #[error("no {kind} {id:?}")]
    NotFound {
        /// Object kind.
        kind: String,
        /// Id.
        id: String,
    },
    /// A TOTP step at or before the last accepted one.
    #[error("this code was already used")]
    TotpReplayed,
    /// A WebAuthn counter that did not advance.
    #[error("authenticator signature counter went backwards (possible cloned authenticator)")]
    CounterRegressed,
    /// The user is locked out of MFA.
    #[error("too many failed attempts: locked out")]
    LockedOut {
        /// Until when (unix ms; `i64::MAX` until an admin unlocks).
        until_ms: i64,
    },
    /// A WebAuthn challenge answered (or failed) before.
    #[error("this challenge was already answered")]
    ChallengeUsed,
    /// A device certificate presented as the device's current one is not (any more): the
    /// device was wiped, revoked or renewed meanwhile.
    #[error("the presented certificate is not this device's current certificate")]
    CertificateNotCurrent,
    /// A transition that is not allowed.
    #[error("{0}")]
    Invalid(String),
}

impl From<Violations> for CommandError {
    fn from(v: Violations) -> Self {
        CommandError::InvalidPolicy(v.0)
    }
}

/// One change, for edge deltas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// New current policy version (number).
    Policy(u64),
    /// Revocation added (id).
    RevocationAdded(String),
    /// Revocation removed (id).
    RevocationRemoved(String),
    /// Device upserted (id).
    Device(String),
    /// Factor upserted (id).
    Factor(String),
    /// Factor removed (id).
    FactorRemoved(String),
    /// Counters changed.
    Counters(UserKey),
    /// Signing key upserted (kid).
    SigningKey(String),
    /// Signing key removed (kid).
    SigningKeyRemoved(String),
    /// Secret set, or newly referenced by the policy (name).
    Secret(String),
    /// Secret no longer referenced by the policy, or gone (name): edges drop it.
    SecretWithdrawn(String),
    /// The device CA created.
    DeviceCa,
    /// Tunnel session opened (id).
    TunnelSession(String),
    /// Tunnel session closed, replaced or expired (id).
    TunnelSessionRemoved(String),
}

/// A change with the object as it is right after the change, for edge deltas.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Resolved {
    /// The new current policy version.
    Policy(PolicyVersion),
    /// A revocation added.
    RevocationAdded(Revocation),
    /// A revocation removed (id).
    RevocationRemoved(String),
    /// A device as it is now.
    Device(DeviceRecord),
    /// A factor as it is now.
    Factor(FactorRecord),
    /// A factor removed (id).
    FactorRemoved(String),
    /// A user's counters as they are now.
    Counters(UserKey, Counters),
    /// A signing key as it is now.
    SigningKey(SigningKeyRecord),
    /// A signing key removed (kid).
    SigningKeyRemoved(String),
    /// A secret as it is now (sealed).
    Secret(String, Sealed),
    /// A secret edges must drop (name).
    SecretWithdrawn(String),
    /// The device CA certificate (PEM; its key never leaves the controllers).
    DeviceCa(String),
    /// A tunnel session as it is now.
    TunnelSession(TunnelSessionRecord),
    /// A tunnel session removed (id).
    TunnelSessionRemoved(String),
}

/// The catalog.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Revision of the last applied entry.
    pub revision: u64,
    /// Every applied policy version, oldest first.
    pub policy_history: Vec<PolicyVersion>,
    /// Revocations by id.
    pub revocations: BTreeMap<String, Revocation>,
    /// Devices by id.
    pub devices: BTreeMap<String, DeviceRecord>,
    /// Factors by id.
    pub factors: BTreeMap<String, FactorRecord>,
    /// Sealed TOTP seeds by factor id (controller only; never sent to edges).
    pub totp_seeds: BTreeMap<String, Sealed>,
    /// Counters by user.
    pub counters: BTreeMap<String, (UserKey, Counters)>,
    /// Signing keys by kid.
    pub signing_keys: BTreeMap<String, SigningKeyRecord>,
    /// Named secrets.
    pub secrets: BTreeMap<String, Sealed>,
    /// Factor enrollment codes by user: (SHA-256 hex, expiry unix ms).
    #[serde(default)]
    pub enrollment_codes: BTreeMap<String, (String, i64)>,
    /// The most recent writes by admins and the system, oldest first (at most
    /// `AUDIT_RETENTION`). Writes on behalf of users go to `user_audit`, so a user cannot
    /// flush this trail.
    #[serde(default)]
    pub audit: VecDeque<AuditRecord>,
    /// The most recent writes made by edges on behalf of users, oldest first (at most
    /// `AUDIT_RETENTION`).
    #[serde(default)]
    pub user_audit: VecDeque<AuditRecord>,
    /// Each SSO session's last factor pass (by session id), kept `RECENT_MFA_MS`.
    #[serde(default)]
    pub mfa_passes: BTreeMap<String, MfaPass>,
    /// The longest session lifetime any applied policy version allowed (ms); 0 when not known
    /// (a catalog from before it was tracked).
    #[serde(default)]
    pub max_session_lifetime_ms: i64,
    /// The secrets the current policy references (what edges receive); `None` when not known
    /// (a catalog from before it was tracked): computed from the current policy then.
    #[serde(default)]
    pub edge_secret_refs: Option<std::collections::BTreeSet<String>>,
    /// WebAuthn challenges already answered (SHA-256 hex → forget after, unix ms).
    #[serde(default)]
    pub used_challenges: BTreeMap<String, i64>,
    /// Recent sign-in and MFA attempts by user, oldest first.
    #[serde(default)]
    pub auth_events: BTreeMap<String, VecDeque<AuthEvent>>,
    /// Keyed writes of the last `IDEMPOTENCY_WINDOW_MS`, by actor and key.
    #[serde(default)]
    pub keyed_writes: BTreeMap<String, KeyedWrite>,
    /// The same keys, oldest first, for expiry.
    #[serde(default)]
    pub keyed_order: VecDeque<(i64, String)>,
    /// The CA that issues device certificates (created by the first leader).
    #[serde(default)]
    pub device_ca: Option<DeviceCa>,
    /// Live tunnel sessions by id.
    #[serde(default)]
    pub tunnel_sessions: BTreeMap<String, TunnelSessionRecord>,
}

fn not_found(kind: &str, id: impl ToString) -> CommandError {
    CommandError::NotFound {
        kind: kind.into(),
        id: id.to_string(),
    }
}

fn keyed_slot(actor: &Actor, key: &str) -> String {
    format!("{}\u{0}{}\u{0}{}", actor.kind, actor.subject, key)
}

fn user_slot(u: &UserKey) -> String {
    format!("{}\u{0}{}", u.provider, u.subject)
}

/// Lockout backoff after `failures` consecutive failures: none for the first 5, then doubling
/// from 30 s up to 15 min; at `MAX_FAILED_ATTEMPTS` locked until an admin unlocks.
pub fn lockout_ms(failures: u32) -> Option<i64> {
    if failures >= MAX_FAILED_ATTEMPTS {
        return Some(i64::MAX);
    }
    if failures < 5 {
        return None;
    }
    let exp = (failures - 5).min(5);
    Some((30_000i64 << exp).min(900_000))
}

impl Catalog {
    /// The current policy version.
    pub fn current_policy(&self) -> Option<&PolicyVersion> {
        self.policy_history.last()
    }

    /// Resolves changes into the objects they produced (objects that no longer exist are
    /// reported as removals).
    pub fn resolve(&self, changes: &[Change]) -> Vec<Resolved> {
        changes
            .iter()
            .map(|c| match c {
                Change::Policy(v) => match self.policy_history.iter().find(|p| p.version == *v) {
                    Some(p) => Resolved::Policy(p.clone()),
                    None => Resolved::RevocationRemoved(String::new()),
                },
                Change::RevocationAdded(id) => match self.revocations.get(id) {
                    Some(r) => Resolved::RevocationAdded(r.clone()),
                    None => Resolved::RevocationRemoved(id.clone()),
                },
                Change::RevocationRemoved(id) => Resolved::RevocationRemoved(id.clone()),
                Change::Device(id) => match self.devices.get(id) {
                    Some(d) => Resolved::Device(d.clone()),
                    None => Resolved::RevocationRemoved(String::new()),
                },
                Change::Factor(id) => match self.factors.get(id) {
                    Some(f) => Resolved::Factor(f.clone()),
                    None => Resolved::FactorRemoved(id.clone()),
                },
                Change::FactorRemoved(id) => Resolved::FactorRemoved(id.clone()),
                Change::Counters(u) => Resolved::Counters(u.clone(), self.counters(u)),
                Change::SigningKey(kid) => match self.signing_keys.get(kid) {
                    Some(k) => Resolved::SigningKey(k.clone()),
                    None => Resolved::SigningKeyRemoved(kid.clone()),
                },
                Change::SigningKeyRemoved(kid) => Resolved::SigningKeyRemoved(kid.clone()),
                Change::Secret(name) => match self.secrets.get(name) {
                    Some(v) if self.edge_secrets().contains(name) => {
                        Resolved::Secret(name.clone(), v.clone())
                    }
                    _ => Resolved::RevocationRemoved(String::new()),
                },
                Change::SecretWithdrawn(name) => Resolved::SecretWithdrawn(name.clone()),
                Change::DeviceCa => match &self.device_ca {
                    Some(ca) => Resolved::DeviceCa(ca.certificate_pem.clone()),
                    None => Resolved::RevocationRemoved(String::new()),
                },
                Change::TunnelSession(id) => match self.tunnel_sessions.get(id) {
                    Some(t) => Resolved::TunnelSession(t.clone()),
                    None => Resolved::TunnelSessionRemoved(id.clone()),
                },
                Change::TunnelSessionRemoved(id) => Resolved::TunnelSessionRemoved(id.clone()),
            })
            .filter(|r| !matches!(r, Resolved::RevocationRemoved(id) if id.is_empty()))
            .collect()
    }

    /// A user's recent sign-in and MFA attempts, newest first.
    pub fn auth_events(&self, user: &UserKey) -> impl Iterator<Item = &AuthEvent> {
        self.auth_events
            .get(&user_slot(user))
            .into_iter()
            .flat_map(|l| l.iter().rev())
    }

    /// A user's factors (active and pending).
    pub fn user_factors<'a>(&'a self, user: &'a UserKey) -> impl Iterator<Item = &'a FactorRecord> {
        self.factors.values().filter(move |f| f.user == *user)
    }

    /// A user's counters (default when none recorded).
    pub fn counters(&self, user: &UserKey) -> Counters {
        self.counters
            .get(&user_slot(user))
            .map(|(_, c)| c.clone())
            .unwrap_or_default()
    }

    /// Until when (unix ms) the user is locked out of MFA at `at_ms`, if they are.
    pub fn locked_until(&self, user: &UserKey, at_ms: i64) -> Option<i64> {
        let until = self.counters.get(&user_slot(user))?.1.locked_until_ms;
        (until > at_ms).then_some(until)
    }

    /// How long (ms) a session or user revocation must be kept to outlast every session it
    /// can cover: the longest session lifetime any applied policy version allowed (the
    /// absolute maximum when that is not known), at least the edge's default, plus skew.
    pub fn session_coverage_ms(&self) -> i64 {
        const DEFAULT_MS: i64 = 12 * 3600 * 1000;
        let longest = if self.max_session_lifetime_ms > 0 || self.policy_history.is_empty() {
            self.max_session_lifetime_ms
        } else {
            crate::compile::MAX_SESSION_LIFETIME.as_millis() as i64
        };
        longest.max(DEFAULT_MS) + REVOCATION_SKEW_MS
    }

    /// The names of the secrets edges receive: those the current policy's identity providers
    /// reference, and no other.
    pub fn edge_secrets(&self) -> std::collections::BTreeSet<String> {
        if let Some(refs) = &self.edge_secret_refs {
            return refs.clone();
        }
        self.current_policy()
            .and_then(|p| crate::compile::parse_document(&p.document_json).ok())
            .map(|d| secret_refs(&d))
            .unwrap_or_default()
    }

    /// The session's last factor pass, if it was within `RECENT_MFA_MS` of `at_ms`, by `user`,
    /// with a factor that is still usable.
    pub fn recent_pass(&self, session_id: &str, user: &UserKey, at_ms: i64) -> Option<&MfaPass> {
        let p = self.mfa_passes.get(session_id)?;
        let usable = self
            .factors
            .get(&p.factor_id)
            .is_some_and(|f| f.usable() && f.user == *user);
        (p.user == *user && usable && at_ms - p.at_ms <= RECENT_MFA_MS && p.at_ms <= at_ms)
            .then_some(p)
    }

    /// Every audit record kept (admin and user-driven), oldest first.
    pub fn audit_records(&self) -> Vec<&AuditRecord> {
        let mut all: Vec<&AuditRecord> = self.audit.iter().chain(self.user_audit.iter()).collect();
        all.sort_by_key(|r| r.revision);
        all
    }

    /// Applies one command at `revision`. On error nothing changes except the revision.
    pub fn apply(
        &mut self,
        revision: u64,
        env: &Envelope,
    ) -> (Result<Outcome, CommandError>, Vec<Change>) {
        self.revision = revision;
        self.forget_keys(env.at_ms);
        let slot = env
            .idempotency_key
            .as_deref()
            .map(|k| keyed_slot(&env.actor, k));
        if let Some(slot) = &slot
            && let Some(first) = self.keyed_writes.get(slot)
        {
            // A retry of a write already applied: its answer again, and nothing else.
            let (action, _) = describe(&env.command, &Ok(Outcome::Done));
            if first.action != action {
                return (
                    Err(CommandError::Invalid(format!(
                        "this idempotency key was used for a different write ({})",
                        first.action
                    ))),
                    Vec::new(),
                );
            }
            return (first.result.clone(), Vec::new());
        }
        let mut changes = Vec::new();
        let r = self.apply_inner(revision, env, &mut changes);
        if r.is_err() {
            changes.clear();
        }
        if let Some(slot) = slot {
            let (action, _) = describe(&env.command, &Ok(Outcome::Done));
            self.keyed_writes.insert(
                slot.clone(),
                KeyedWrite {
                    at_ms: env.at_ms,
                    revision,
                    action: action.into(),
                    result: r.clone(),
                },
            );
            self.keyed_order.push_back((env.at_ms, slot));
            while self.keyed_order.len() > MAX_IDEMPOTENCY_KEYS {
                if let Some((_, old)) = self.keyed_order.pop_front() {
                    self.keyed_writes.remove(&old);
                }
            }
        }
        let quiet = matches!(
            (&env.command, &r),
            (Command::CollectGarbage, Ok(Outcome::Collected(0)))
        );
        if !quiet {
            let (action, target) = describe(&env.command, &r);
            let trail = match env.actor.kind.as_str() {
                "user" | "edge" | "device" => &mut self.user_audit,
                _ => &mut self.audit,
            };
            trail.push_back(AuditRecord {
                revision,
                at_ms: env.at_ms,
                actor: env.actor.clone(),
                action: action.into(),
                target,
                result: match &r {
                    Ok(_) => "ok".into(),
                    Err(e) => e.to_string(),
                },
            });
            while trail.len() > AUDIT_RETENTION {
                trail.pop_front();
            }
        }
        (r, changes)
    }

    /// Forgets idempotency keys older than the window (as of the entry being applied).
    fn forget_keys(&mut self, at_ms: i64) {
        while self
            .keyed_order
            .front()
            .is_some_and(|(t, _)| at_ms.saturating_sub(*t) > IDEMPOTENCY_WINDOW_MS)
        {
            if let Some((_, old)) = self.keyed_order.pop_front() {
                self.keyed_writes.remove(&old);
            }
        }
    }

    fn apply_inner(
        &mut self,
        revision: u64,
        env: &Envelope,
        changes: &mut Vec<Change>,
    ) -> Result<Outcome, CommandError> {
        let at = env.at_ms;
        match &env.command {
            Command::ApplyPolicy {
                document_json,
                comment,
                expected_version,
            } => {
                let current = self.current_policy().map(|p| p.version).unwrap_or(0);
                if *expected_version != 0 && *expected_version != current {
                    return Err(CommandError::VersionConflict {
                        expected: *expected_version,
                        current,
                    });
                }
                let (doc, compiled) = CompiledPolicy::from_json(document_json)?;
                self.policy_changed(&doc, &compiled, changes);
                Ok(self.push_policy(
                    revision,
                    env,
                    document_json.clone(),
                    comment.clone(),
                    None,
                    changes,
                ))
            }
            Command::RollbackPolicy {
                to_version,
                comment,
            } => {
                let old = self
                    .policy_history
                    .iter()
                    .find(|p| p.version == *to_version)
                    .ok_or_else(|| not_found("policy version", to_version))?
                    .document_json
                    .clone();
                // A document valid then may not be valid for this build; check again.
                let (doc, compiled) = CompiledPolicy::from_json(&old)?;
                self.policy_changed(&doc, &compiled, changes);
                Ok(self.push_policy(
                    revision,
                    env,
                    old,
                    comment.clone(),
                    Some(*to_version),
                    changes,
                ))
            }
            Command::Revoke {
                target,
                reason,
                expires_at_ms,
            } => {
                if reason.trim().is_empty() {
                    return Err(CommandError::Invalid("a revocation needs a reason".into()));
                }
                if *expires_at_ms != 0 && *expires_at_ms <= at {
                    return Err(CommandError::Invalid(
                        "the revocation would already have expired".into(),
                    ));
                }
                // Sessions carry their own expiry, fixed when issued under whatever policy was
                // current then: the record must outlast the longest of them.
                let covering = at.saturating_add(self.session_coverage_ms());
                let expires_at_ms = match target {
                    RevocationTarget::Session(_) | RevocationTarget::User { .. } => {
                        (*expires_at_ms).max(covering)
                    }
                    _ if *expires_at_ms == 0 => covering,
                    _ => *expires_at_ms,
                };
                // A factor or device has no lifetime: revoking it changes the object itself,
                // so it stays revoked after the record is collected.
                match target {
                    RevocationTarget::Factor(fid) => {
                        if let Some(f) = self.factors.get_mut(fid)
                            && f.revoked_at_ms == 0
                        {
                            f.active = false;
                            f.revoked_at_ms = at;
                            f.revision = revision;
                            self.totp_seeds.remove(fid);
                            changes.push(Change::Factor(fid.clone()));
                        }
                    }
                    RevocationTarget::Device(did) => {
                        if let Some(d) = self.devices.get_mut(did)
                            && d.state != DeviceState::Revoked
                        {
                            d.state = DeviceState::Revoked;
                            d.enrollment_token_sha256.clear();
                            d.certificate = None;
                            d.revision = revision;
                            changes.push(Change::Device(did.clone()));
                        }
                    }
                    _ => {}
                }
                let id = format!("rev-{revision}");
                self.revocations.insert(
                    id.clone(),
                    Revocation {
                        id: id.clone(),
                        target: target.clone(),
                        reason: reason.clone(),
                        actor: env.actor.clone(),
                        created_at_ms: at,
                        expires_at_ms,
                        revision,
                    },
                );
                changes.push(Change::RevocationAdded(id.clone()));
                Ok(Outcome::Revocation(id))
            }
            Command::CollectGarbage => {
                let expired: Vec<String> = self
                    .revocations
                    .values()
                    .filter(|r| r.expires_at_ms <= at)
                    .map(|r| r.id.clone())
                    .collect();
                for id in &expired {
                    self.revocations.remove(id);
                    changes.push(Change::RevocationRemoved(id.clone()));
                }
                let retired: Vec<String> = self
                    .signing_keys
                    .values()
                    .filter(|k| !k.active && k.retire_at_ms <= at)
                    .map(|k| k.kid.clone())
                    .collect();
                for kid in &retired {
                    self.signing_keys.remove(kid);
                    changes.push(Change::SigningKeyRemoved(kid.clone()));
                }
                let abandoned: Vec<String> = self
                    .factors
                    .values()
                    .filter(|f| {
                        f.pending() && f.created_at_ms.saturating_add(PENDING_TOTP_MS) <= at
                    })
                    .map(|f| f.id.clone())
                    .collect();
                for id in &abandoned {
                    self.factors.remove(id);
                    self.totp_seeds.remove(id);
                    changes.push(Change::FactorRemoved(id.clone()));
                }
                let before = self.used_challenges.len();
                self.used_challenges.retain(|_, until| *until > at);
                let forgotten = before - self.used_challenges.len();
                self.enrollment_codes.retain(|_, (_, until)| *until > at);
                let passes = self.mfa_passes.len();
                self.mfa_passes
                    .retain(|_, p| p.at_ms.saturating_add(RECENT_MFA_MS) > at);
                let forgotten = forgotten + (passes - self.mfa_passes.len());
                let ended = self.collect_tunnel_sessions(at, changes);
                Ok(Outcome::Collected(
                    expired.len() + retired.len() + abandoned.len() + forgotten + ended,
                ))
            }
            Command::CreateDevice { .. }
            | Command::SetDeviceState { .. }
            | Command::RecordPosture { .. }
            | Command::CreateDeviceCa { .. }
            | Command::EnrollDevice { .. }
            | Command::RenewDeviceCertificate { .. }
            | Command::ReportPosture { .. } => {
                self.apply_device(revision, at, &env.command, changes)
            }
            Command::OpenTunnelSession { .. } | Command::CloseTunnelSession { .. } => {
                self.apply_tunnel(revision, at, &env.command, changes)
            }
            Command::AddFactor {
                user,
                kind,
                name,
                credential_json,
                credential_id,
                totp_seed,
                enrollment_code_sha256,
                binding_sha256,
            } => {
                let is_totp = *kind == FactorKind::Totp;
                if name.trim().is_empty() || name.chars().count() > 64 {
                    return Err(CommandError::Invalid(
                        "a factor name must be 1 to 64 characters".into(),
                    ));
                }
                let held = self
                    .user_factors(user)
                    .filter(|f| f.revoked_at_ms == 0)
                    .count();
                if held >= MAX_FACTORS_PER_USER {
                    return Err(CommandError::Invalid(format!(
                        "at most {MAX_FACTORS_PER_USER} factors per user; remove one first"
                    )));
                }
                if let Some(code) = enrollment_code_sha256 {
                    match self.enrollment_codes.get(&user_slot(user)) {
                        Some((want, until)) if want == code && *until > at => {
                            self.enrollment_codes.remove(&user_slot(user));
                        }
                        _ => {
                            return Err(CommandError::Invalid(
                                "the enrollment code is wrong or has expired".into(),
                            ));
                        }
                    }
                }
                if is_totp != totp_seed.is_some() {
                    return Err(CommandError::Invalid(
                        "a TOTP factor needs a seed, and only a TOTP factor has one".into(),
                    ));
                }
                if !is_totp && (credential_json.is_empty() || credential_id.is_empty()) {
                    return Err(CommandError::Invalid(
                        "a WebAuthn factor needs its credential".into(),
                    ));
                }
                if !is_totp
                    && self
                        .factors
                        .values()
                        .any(|f| f.credential_id == *credential_id)
                {
                    return Err(CommandError::Invalid(
                        "this credential is already registered".into(),
                    ));
                }
                let id = format!("fac-{revision}");
                self.factors.insert(
                    id.clone(),
                    FactorRecord {
                        id: id.clone(),
                        user: user.clone(),
                        kind: *kind,
                        name: name.clone(),
                        created_at_ms: at,
                        credential_json: credential_json.clone(),
                        credential_id: credential_id.clone(),
                        sign_count: 0,
                        active: !is_totp,
                        revision,
                        revoked_at_ms: 0,
                        confirm_attempts: 0,
                        binding_sha256: binding_sha256.clone(),
                    },
                );
                if let Some(seed) = totp_seed {
                    self.totp_seeds.insert(id.clone(), seed.clone());
                }
                changes.push(Change::Factor(id.clone()));
                Ok(Outcome::Factor(id))
            }
            Command::ActivateTotp { id, step, attempt } => {
                let f = self
                    .factors
                    .get(id)
                    .ok_or_else(|| not_found("factor", id))?;
                if !f.pending() {
                    return Err(CommandError::Invalid(
                        "only a pending TOTP factor can be activated".into(),
                    ));
                }
                let user = f.user.clone();
                self.bump_totp(&user, *step, *attempt, at, changes)?;
                if let Some(f) = self.factors.get_mut(id) {
                    f.active = true;
                    f.revision = revision;
                    f.binding_sha256.clear();
                }
                changes.push(Change::Factor(id.clone()));
                Ok(Outcome::Factor(id.clone()))
            }
            Command::RemoveFactor { id } => {
                self.factors
                    .remove(id)
                    .ok_or_else(|| not_found("factor", id))?;
                self.totp_seeds.remove(id);
                changes.push(Change::FactorRemoved(id.clone()));
                Ok(Outcome::Done)
            }
            Command::RenameFactor { id, name } => {
                let f = self
                    .factors
                    .get_mut(id)
                    .ok_or_else(|| not_found("factor", id))?;
                if name.trim().is_empty() || name.chars().count() > 64 {
                    return Err(CommandError::Invalid(
                        "a factor name must be 1 to 64 characters".into(),
                    ));
                }
                f.name = name.clone();
                f.revision = revision;
                changes.push(Change::Factor(id.clone()));
                Ok(Outcome::Factor(id.clone()))
            }
            Command::ReserveMfaAttempt {
                user,
                pending_factor,
            } => {
                if let Some(until_ms) = self.locked_until(user, at) {
                    return Err(CommandError::LockedOut { until_ms });
                }
                if let Some(fid) = pending_factor {
                    let f = self
                        .factors
                        .get_mut(fid)
                        .filter(|f| f.user == *user && f.pending())
                        .ok_or_else(|| not_found("pending factor", fid))?;
                    if f.confirm_attempts >= MAX_CONFIRM_ATTEMPTS {
                        return Err(CommandError::Invalid(
                            "too many wrong codes for this enrollment; start it again".into(),
                        ));
                    }
                    f.confirm_attempts += 1;
                }
                let slot = self
                    .counters
                    .entry(user_slot(user))
                    .or_insert_with(|| (user.clone(), Counters::default()));
                let c = &mut slot.1;
                c.failed_attempts = c.failed_attempts.saturating_add(1);
                c.last_attempt = revision;
                if let Some(ms) = lockout_ms(c.failed_attempts) {
                    c.locked_until_ms = at.saturating_add(ms);
                    c.locked_by = revision;
                }
                let counters = c.clone();
                changes.push(Change::Counters(user.clone()));
                Ok(Outcome::Attempt {
                    ticket: revision,
                    counters,
                })
            }
            Command::RecordTotpUse {
                user,
                step,
                attempt,
                factor_id,
                session_id,
            } => {
                let c = self.bump_totp(user, *step, *attempt, at, changes)?;
                if !session_id.is_empty() && !factor_id.is_empty() {
                    self.mfa_passes.insert(
                        session_id.clone(),
                        MfaPass {
                            user: user.clone(),
                            factor_id: factor_id.clone(),
                            kind: FactorKind::Totp,
                            at_ms: at,
                        },
                    );
                }
                Ok(Outcome::Counters(c))
            }
            Command::RecordWebauthnUse {
                id,
                sign_count,
                challenge_sha256,
                session_id,
            } => {
                if self.used_challenges.contains_key(challenge_sha256) {
                    return Err(CommandError::ChallengeUsed);
                }
                let f = self
                    .factors
                    .get(id)
                    .filter(|f| f.usable())
                    .ok_or_else(|| not_found("factor", id))?;
                if let Some(until_ms) = self.locked_until(&f.user, at) {
                    return Err(CommandError::LockedOut { until_ms });
                }
                // Authenticators that do not implement counters always send 0.
                if (*sign_count != 0 || f.sign_count != 0) && *sign_count <= f.sign_count {
                    return Err(CommandError::CounterRegressed);
                }
                let (user, kind) = (f.user.clone(), f.kind);
                if let Some(f) = self.factors.get_mut(id) {
                    f.sign_count = *sign_count;
                    f.revision = revision;
                }
                if !challenge_sha256.is_empty() {
                    self.used_challenges.insert(
                        challenge_sha256.clone(),
                        at.saturating_add(CHALLENGE_MEMORY_MS),
                    );
                }
                if !session_id.is_empty() {
                    self.mfa_passes.insert(
                        session_id.clone(),
                        MfaPass {
                            user: user.clone(),
                            factor_id: id.clone(),
                            kind,
                            at_ms: at,
                        },
                    );
                }
                changes.push(Change::Factor(id.clone()));
                let c = self.reset_failures(&user, changes);
                Ok(Outcome::Counters(c))
            }
            Command::RecordMfaFailure {
                user,
                challenge_sha256,
            } => {
                if let Some(until_ms) = self.locked_until(user, at) {
                    return Err(CommandError::LockedOut { until_ms });
                }
                if !challenge_sha256.is_empty() {
                    if self.used_challenges.contains_key(challenge_sha256) {
                        return Err(CommandError::ChallengeUsed);
                    }
                    self.used_challenges.insert(
                        challenge_sha256.clone(),
                        at.saturating_add(CHALLENGE_MEMORY_MS),
                    );
                }
                let slot = self
                    .counters
                    .entry(user_slot(user))
                    .or_insert_with(|| (user.clone(), Counters::default()));
                slot.1.failed_attempts = slot.1.failed_attempts.saturating_add(1);
                if let Some(ms) = lockout_ms(slot.1.failed_attempts) {
                    slot.1.locked_until_ms = at.saturating_add(ms);
                    slot.1.locked_by = revision;
                }
                changes.push(Change::Counters(user.clone()));
                Ok(Outcome::Counters(slot.1.clone()))
            }
            Command::UnlockUser { user } => {
                let c = self.reset_failures(user, changes);
                Ok(Outcome::Counters(c))
            }
            Command::RotateSigningKey { secret, overlap_ms } => {
                if *overlap_ms < 0 {
                    return Err(CommandError::Invalid("overlap must not be negative".into()));
                }
                for k in self.signing_keys.values_mut().filter(|k| k.active) {
                    k.active = false;
                    k.retire_at_ms = at.saturating_add(*overlap_ms);
                    changes.push(Change::SigningKey(k.kid.clone()));
                }
                let kid = format!("k-{revision}");
                self.signing_keys.insert(
                    kid.clone(),
                    SigningKeyRecord {
                        kid: kid.clone(),
                        secret: secret.clone(),
                        active: true,
                        created_at_ms: at,
                        retire_at_ms: 0,
                    },
                );
                changes.push(Change::SigningKey(kid.clone()));
                Ok(Outcome::Key(kid))
            }
            Command::IssueEnrollmentCode {
                user,
                code_sha256,
                expires_at_ms,
            } => {
                if code_sha256.len() != 64 || *expires_at_ms <= at {
                    return Err(CommandError::Invalid(
                        "an enrollment code needs a SHA-256 hash and a future expiry".into(),
                    ));
                }
                self.enrollment_codes
                    .insert(user_slot(user), (code_sha256.clone(), *expires_at_ms));
                Ok(Outcome::Done)
            }
            Command::PutSecret { name, value } => {
                if name.is_empty()
                    || !name.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                    })
                {
                    return Err(CommandError::Invalid(format!(
                        "{name:?} is not a secret name (lowercase letters, digits, '-', '_')"
                    )));
                }
                self.secrets.insert(name.clone(), value.clone());
                if self.edge_secrets().contains(name) {
                    changes.push(Change::Secret(name.clone()));
                }
                Ok(Outcome::Done)
            }
            Command::RecordAuthEvents { events } => {
                if events.len() > 100 {
                    return Err(CommandError::Invalid("at most 100 events per write".into()));
                }
                for e in events {
                    let list = self.auth_events.entry(user_slot(&e.user)).or_default();
                    list.push_back(e.clone());
                    while list.len() > AUTH_EVENTS_PER_USER {
                        list.pop_front();
                    }
                }
                Ok(Outcome::Done)
            }
        }
    }

    fn push_policy(
        &mut self,
        revision: u64,
        env: &Envelope,
        document_json: String,
        comment: String,
        rolled_back_from: Option<u64>,
        changes: &mut Vec<Change>,
    ) -> Outcome {
        let version = self.current_policy().map(|p| p.version).unwrap_or(0) + 1;
        let digest = hex(&Sha256::digest(document_json.as_bytes()));
        self.policy_history.push(PolicyVersion {
            version,
            revision,
            author: env.actor.clone(),
            applied_at_ms: env.at_ms,
            comment,
            document_json,
            digest,
            rolled_back_from,
        });
        changes.push(Change::Policy(version));
        Outcome::Policy(version)
    }

    /// Records an accepted TOTP step and settles the attempt reserved for it.
    ///
    /// The reservation counted the attempt as a failure. If it is still the latest attempt,
    /// the run of failures ends here, and a lock this very reservation set (the code that
    /// reached the limit was the right one) is lifted. If other attempts were reserved after
    /// it, only this one is taken back and any lock they set stays: a success never clears a
    /// lock that a failure caused. Without a reservation the step is refused while locked.
    fn bump_totp(
        &mut self,
        user: &UserKey,
        step: u64,
        attempt: u64,
        at: i64,
        changes: &mut Vec<Change>,
    ) -> Result<Counters, CommandError> {
        let locked = self.locked_until(user, at);
        let slot = self
            .counters
            .entry(user_slot(user))
            .or_insert_with(|| (user.clone(), Counters::default()));
        let c = &mut slot.1;
        if attempt == 0 {
            if let Some(until_ms) = locked {
                return Err(CommandError::LockedOut { until_ms });
            }
        } else if c.last_attempt < attempt {
            return Err(CommandError::Invalid("no such attempt was reserved".into()));
        }
        if step <= c.totp_last_step {
            return Err(CommandError::TotpReplayed);
        }
        c.totp_last_step = step;
        if attempt == 0 || c.last_attempt == attempt {
            c.failed_attempts = 0;
            if attempt == 0 || c.locked_by == attempt {
                c.locked_until_ms = 0;
                c.locked_by = 0;
            }
        } else {
            c.failed_attempts = c.failed_attempts.saturating_sub(1);
        }
        changes.push(Change::Counters(user.clone()));
        Ok(c.clone())
    }

    /// After a new policy version validated: tracks the longest session lifetime ever allowed
    /// and which secrets edges receive (sending newly referenced ones, withdrawing the rest).
    fn policy_changed(
        &mut self,
        doc: &crate::document::PolicyDocument,
        compiled: &CompiledPolicy,
        changes: &mut Vec<Change>,
    ) {
        let lifetime = compiled.longest_session_lifetime().as_millis() as i64;
        self.max_session_lifetime_ms = self.max_session_lifetime_ms.max(lifetime);
        let before = self.edge_secrets();
        let after = secret_refs(doc);
        for name in after.difference(&before) {
            if self.secrets.contains_key(name) {
                changes.push(Change::Secret(name.clone()));
            }
        }
        for name in before.difference(&after) {
            changes.push(Change::SecretWithdrawn(name.clone()));
        }
        self.edge_secret_refs = Some(after);
    }

    fn reset_failures(&mut self, user: &UserKey, changes: &mut Vec<Change>) -> Counters {
        let slot = self
            .counters
            .entry(user_slot(user))
            .or_insert_with(|| (user.clone(), Counters::default()));
        slot.1.failed_attempts = 0;
        slot.1.locked_until_ms = 0;
        slot.1.locked_by = 0;
        changes.push(Change::Counters(user.clone()));
        slot.1.clone()
    }
}

/// The secret names a policy's identity providers reference.
fn secret_refs(doc: &crate::document::PolicyDocument) -> std::collections::BTreeSet<String> {
    doc.identity_providers
        .iter()
        .map(|p| p.client_secret_ref.clone())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The audit action name and target of a command.
fn describe(c: &Command, r: &Result<Outcome, CommandError>) -> (&'static str, String) {
    let produced = match r {
        Ok(Outcome::Policy(v)) => format!("policy v{v}"),
        Ok(
            Outcome::Revocation(id)
            | Outcome::Device(id)
            | Outcome::Factor(id)
            | Outcome::Key(id)
            | Outcome::TunnelSession(id),
        ) => id.clone(),
        _ => String::new(),
    };
    let user = |u: &UserKey| format!("{}/{}", u.provider, u.subject);
    match c {
        Command::ApplyPolicy { .. } => ("policy.apply", produced),
        Command::RollbackPolicy { to_version, .. } => {
            ("policy.rollback", format!("to v{to_version}"))
        }
        Command::Revoke { target, .. } => ("revocation.create", format!("{target:?}")),
        Command::CollectGarbage => ("catalog.gc", produced),
        Command::CreateDevice { serial, .. } => {
            ("device.create", format!("{produced} serial {serial}"))
        }
        Command::SetDeviceState { id, state } => ("device.state", format!("{id} -> {state:?}")),
        Command::RecordPosture { id, .. } => ("device.posture", id.clone()),
        Command::CreateDeviceCa { .. } => ("device.ca", String::new()),
        Command::ReportPosture { id, .. } => ("device.posture_report", id.clone()),
        Command::EnrollDevice {
            id, certificate, ..
        } => (
            "device.enroll",
            format!("{id} certificate {}", certificate.fingerprint_sha256),
        ),
        Command::RenewDeviceCertificate {
            id, certificate, ..
        } => (
            "device.renew",
            format!("{id} certificate {}", certificate.fingerprint_sha256),
        ),
        Command::AddFactor { user: u, kind, .. } => {
            ("factor.add", format!("{} {kind:?} {produced}", user(u)))
        }
        Command::ActivateTotp { id, .. } => ("factor.activate", id.clone()),
        Command::RemoveFactor { id } => ("factor.remove", id.clone()),
        Command::RenameFactor { id, .. } => ("factor.rename", id.clone()),
        Command::ReserveMfaAttempt { user: u, .. } => ("mfa.attempt", user(u)),
        Command::RecordTotpUse { user: u, .. } => ("mfa.totp", user(u)),
        Command::RecordWebauthnUse { id, .. } => ("mfa.webauthn", id.clone()),
        Command::RecordMfaFailure { user: u, .. } => ("mfa.failure", user(u)),
        Command::UnlockUser { user: u } => ("user.unlock", user(u)),
        Command::RotateSigningKey { .. } => ("key.rotate", produced),
        Command::IssueEnrollmentCode { user: u, .. } => ("factor.enrollment_code", user(u)),
        Command::PutSecret { name, .. } => ("secret.put", name.clone()),
        Command::RecordAuthEvents { events } => ("auth.events", format!("{} events", events.len())),
        Command::OpenTunnelSession {
            device_id, user: u, ..
        } => (
            "tunnel.open",
            format!("{produced} device {device_id} user {}", user(u)),
        ),
        Command::CloseTunnelSession { id, reason } => ("tunnel.close", format!("{id}: {reason}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
