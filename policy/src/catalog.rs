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
    /// All of a user's sessions issued before a time (unix seconds).
    User {
        /// The user.
        user: UserKey,
        /// Sessions issued strictly before this are refused.
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

/// Device lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// Waiting for the enrollment token.
    Pending,
    /// Enrolled.
    Enrolled,
    /// Wiped: must enroll again.
    Wiped,
    /// Revoked.
    Revoked,
}

/// Reported posture.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posture {
    /// OS family (`macos`, `windows`, `linux`, `ios`, `android`, `chromeos`), empty if unknown.
    pub os: String,
    /// OS version.
    pub os_version: String,
    /// Palisade client version (semver).
    pub client_version: String,
    /// Mandatory authentication enforced by the client.
    pub mandatory_auth: bool,
    /// Disk encrypted.
    pub disk_encrypted: bool,
    /// Reported at (unix ms).
    pub reported_at_ms: i64,
}

/// A device record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// `dev-<revision>`.
    pub id: String,
    /// Owner email or subject.
    pub owner: String,
    /// Serial number.
    pub serial: String,
    /// Friendly name.
    pub display_name: String,
    /// Groups.
    pub groups: Vec<String>,
    /// State.
    pub state: DeviceState,
    /// Last posture.
    pub posture: Posture,
    /// SHA-256 of the one-time enrollment token, hex (empty once redeemed).
    pub enrollment_token_sha256: String,
    /// Token expiry (unix ms).
    pub enrollment_expires_at_ms: i64,
    /// Revision of the last change.
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
    /// False while a TOTP factor waits for its first code.
    pub active: bool,
    /// Revision of the last change.
    pub revision: u64,
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

/// Lockout policy (NIST SP 800-63B allows at most 100 consecutive failures).
pub const MAX_FAILED_ATTEMPTS: u32 = 100;

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
    /// Revoke something.
    Revoke {
        /// Target.
        target: RevocationTarget,
        /// Why.
        reason: String,
        /// Expiry (unix ms).
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
    },
    /// Activate a pending TOTP factor and record the step of its first code.
    ActivateTotp {
        /// Factor id.
        id: String,
        /// Time step of the code that proved it.
        step: u64,
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
    /// Record an accepted TOTP step (refused if not after the last one).
    RecordTotpUse {
        /// User.
        user: UserKey,
        /// Step.
        step: u64,
    },
    /// Record a WebAuthn assertion's counter (refused if it did not advance).
    RecordWebauthnUse {
        /// Factor id.
        id: String,
        /// Counter.
        sign_count: u32,
        /// SHA-256 (hex) of the challenge the assertion answered; a challenge is accepted once.
        #[serde(default)]
        challenge_sha256: String,
    },
    /// Count a failed MFA attempt.
    RecordMfaFailure {
        /// User.
        user: UserKey,
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
}

/// Why a command changed nothing. Messages are safe to return to operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CommandError {
    /// The policy document is invalid.
    #[error("invalid policy document: {}", .0.join("; "))]
    InvalidPolicy(Vec<String>),
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
    /// A transition that is not allowed.
    #[error("{0}")]
    Invalid(String),
}

impl From<Violations> for CommandError {
    fn from(v: Violations) -> Self {
        CommandError::InvalidPolicy(v.0.iter().map(|x| x.to_string()).collect())
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
    /// Secret set (name).
    Secret(String),
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
    /// The most recent writes, oldest first (at most `AUDIT_RETENTION`).
    #[serde(default)]
    pub audit: VecDeque<AuditRecord>,
    /// WebAuthn challenges already answered (SHA-256 hex → forget after, unix ms).
    #[serde(default)]
    pub used_challenges: BTreeMap<String, i64>,
    /// Recent sign-in and MFA attempts by user, oldest first.
    #[serde(default)]
    pub auth_events: BTreeMap<String, VecDeque<AuthEvent>>,
}

fn not_found(kind: &str, id: impl ToString) -> CommandError {
    CommandError::NotFound {
        kind: kind.into(),
        id: id.to_string(),
    }
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
                    Some(v) => Resolved::Secret(name.clone(), v.clone()),
                    None => Resolved::RevocationRemoved(String::new()),
                },
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

    /// Applies one command at `revision`. On error nothing changes except the revision.
    pub fn apply(
        &mut self,
        revision: u64,
        env: &Envelope,
    ) -> (Result<Outcome, CommandError>, Vec<Change>) {
        self.revision = revision;
        let mut changes = Vec::new();
        let r = self.apply_inner(revision, env, &mut changes);
        if r.is_err() {
            changes.clear();
        }
        let quiet = matches!(
            (&env.command, &r),
            (Command::CollectGarbage, Ok(Outcome::Collected(0)))
        );
        if !quiet {
            let (action, target) = describe(&env.command, &r);
            self.audit.push_back(AuditRecord {
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
            while self.audit.len() > AUDIT_RETENTION {
                self.audit.pop_front();
            }
        }
        (r, changes)
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
                CompiledPolicy::from_json(document_json)?;
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
                CompiledPolicy::from_json(&old)?;
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
                if *expires_at_ms <= at {
                    return Err(CommandError::Invalid(
                        "the revocation would already have expired".into(),
                    ));
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
                        expires_at_ms: *expires_at_ms,
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
                    .filter(|f| !f.active && f.created_at_ms.saturating_add(PENDING_TOTP_MS) <= at)
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
                Ok(Outcome::Collected(
                    expired.len() + retired.len() + abandoned.len() + forgotten,
                ))
            }
            Command::CreateDevice {
                owner,
                serial,
                display_name,
                groups,
                token_sha256,
                token_expires_at_ms,
            } => {
                if owner.trim().is_empty() {
                    return Err(CommandError::Invalid("a device needs an owner".into()));
                }
                if token_sha256.len() != 64 {
                    return Err(CommandError::Invalid(
                        "enrollment token hash must be SHA-256 hex".into(),
                    ));
                }
                let id = format!("dev-{revision}");
                self.devices.insert(
                    id.clone(),
                    DeviceRecord {
                        id: id.clone(),
                        owner: owner.clone(),
                        serial: serial.clone(),
                        display_name: display_name.clone(),
                        groups: groups.clone(),
                        state: DeviceState::Pending,
                        posture: Posture::default(),
                        enrollment_token_sha256: token_sha256.clone(),
                        enrollment_expires_at_ms: *token_expires_at_ms,
                        revision,
                    },
                );
                changes.push(Change::Device(id.clone()));
                Ok(Outcome::Device(id))
            }
            Command::SetDeviceState { id, state } => {
                let d = self
                    .devices
                    .get_mut(id)
                    .ok_or_else(|| not_found("device", id))?;
                let ok = match (d.state, state) {
                    (DeviceState::Revoked, _) => false,
                    (DeviceState::Pending | DeviceState::Wiped, DeviceState::Enrolled) => true,
                    (_, DeviceState::Wiped | DeviceState::Revoked) => true,
                    _ => false,
                };
                if !ok {
                    return Err(CommandError::Invalid(
                        format!("a {:?} device cannot become {:?}", d.state, state).to_lowercase(),
                    ));
                }
                if *state == DeviceState::Enrolled {
                    if d.enrollment_expires_at_ms <= at {
                        return Err(CommandError::Invalid(
                            "the enrollment token has expired".into(),
                        ));
                    }
                    d.enrollment_token_sha256.clear();
                }
                d.state = *state;
                d.revision = revision;
                changes.push(Change::Device(id.clone()));
                Ok(Outcome::Device(id.clone()))
            }
            Command::RecordPosture { id, posture } => {
                let d = self
                    .devices
                    .get_mut(id)
                    .ok_or_else(|| not_found("device", id))?;
                d.posture = posture.clone();
                d.revision = revision;
                changes.push(Change::Device(id.clone()));
                Ok(Outcome::Device(id.clone()))
            }
            Command::AddFactor {
                user,
                kind,
                name,
                credential_json,
                credential_id,
                totp_seed,
                enrollment_code_sha256,
            } => {
                let is_totp = *kind == FactorKind::Totp;
                if name.trim().is_empty() || name.chars().count() > 64 {
                    return Err(CommandError::Invalid(
                        "a factor name must be 1 to 64 characters".into(),
                    ));
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
                    },
                );
                if let Some(seed) = totp_seed {
                    self.totp_seeds.insert(id.clone(), seed.clone());
                }
                changes.push(Change::Factor(id.clone()));
                Ok(Outcome::Factor(id))
            }
            Command::ActivateTotp { id, step } => {
                let f = self
                    .factors
                    .get_mut(id)
                    .ok_or_else(|| not_found("factor", id))?;
                if f.kind != FactorKind::Totp || f.active {
                    return Err(CommandError::Invalid(
                        "only a pending TOTP factor can be activated".into(),
                    ));
                }
                f.active = true;
                f.revision = revision;
                let user = f.user.clone();
                changes.push(Change::Factor(id.clone()));
                self.bump_totp(&user, *step, changes)?;
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
                if name.trim().is_empty() || name.len() > 64 {
                    return Err(CommandError::Invalid(
                        "a factor name must be 1 to 64 characters".into(),
                    ));
                }
                f.name = name.clone();
                f.revision = revision;
                changes.push(Change::Factor(id.clone()));
                Ok(Outcome::Factor(id.clone()))
            }
            Command::RecordTotpUse { user, step } => {
                let c = self.bump_totp(user, *step, changes)?;
                Ok(Outcome::Counters(c))
            }
            Command::RecordWebauthnUse {
                id,
                sign_count,
                challenge_sha256,
            } => {
                if self.used_challenges.contains_key(challenge_sha256) {
                    return Err(CommandError::Invalid(
                        "this challenge was already answered".into(),
                    ));
                }
                let f = self
                    .factors
                    .get_mut(id)
                    .ok_or_else(|| not_found("factor", id))?;
                // Authenticators that do not implement counters always send 0.
                if (*sign_count != 0 || f.sign_count != 0) && *sign_count <= f.sign_count {
                    return Err(CommandError::CounterRegressed);
                }
                f.sign_count = *sign_count;
                f.revision = revision;
                let user = f.user.clone();
                if !challenge_sha256.is_empty() {
                    self.used_challenges.insert(
                        challenge_sha256.clone(),
                        at.saturating_add(CHALLENGE_MEMORY_MS),
                    );
                }
                changes.push(Change::Factor(id.clone()));
                let c = self.reset_failures(&user, changes);
                Ok(Outcome::Counters(c))
            }
            Command::RecordMfaFailure { user } => {
                let slot = self
                    .counters
                    .entry(user_slot(user))
                    .or_insert_with(|| (user.clone(), Counters::default()));
                slot.1.failed_attempts = slot.1.failed_attempts.saturating_add(1);
                if let Some(ms) = lockout_ms(slot.1.failed_attempts) {
                    slot.1.locked_until_ms = at.saturating_add(ms);
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
                changes.push(Change::Secret(name.clone()));
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

    fn bump_totp(
        &mut self,
        user: &UserKey,
        step: u64,
        changes: &mut Vec<Change>,
    ) -> Result<Counters, CommandError> {
        let slot = self
            .counters
            .entry(user_slot(user))
            .or_insert_with(|| (user.clone(), Counters::default()));
        if step <= slot.1.totp_last_step {
            return Err(CommandError::TotpReplayed);
        }
        slot.1.totp_last_step = step;
        slot.1.failed_attempts = 0;
        slot.1.locked_until_ms = 0;
        changes.push(Change::Counters(user.clone()));
        Ok(slot.1.clone())
    }

    fn reset_failures(&mut self, user: &UserKey, changes: &mut Vec<Change>) -> Counters {
        let slot = self
            .counters
            .entry(user_slot(user))
            .or_insert_with(|| (user.clone(), Counters::default()));
        slot.1.failed_attempts = 0;
        slot.1.locked_until_ms = 0;
        changes.push(Change::Counters(user.clone()));
        slot.1.clone()
    }
}

/// The audit action name and target of a command.
fn describe(c: &Command, r: &Result<Outcome, CommandError>) -> (&'static str, String) {
    let produced = match r {
        Ok(Outcome::Policy(v)) => format!("policy v{v}"),
        Ok(
            Outcome::Revocation(id) | Outcome::Device(id) | Outcome::Factor(id) | Outcome::Key(id),
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
        Command::AddFactor { user: u, kind, .. } => {
            ("factor.add", format!("{} {kind:?} {produced}", user(u)))
        }
        Command::ActivateTotp { id, .. } => ("factor.activate", id.clone()),
        Command::RemoveFactor { id } => ("factor.remove", id.clone()),
        Command::RenameFactor { id, .. } => ("factor.rename", id.clone()),
        Command::RecordTotpUse { user: u, .. } => ("mfa.totp", user(u)),
        Command::RecordWebauthnUse { id, .. } => ("mfa.webauthn", id.clone()),
        Command::RecordMfaFailure { user: u } => ("mfa.failure", user(u)),
        Command::UnlockUser { user: u } => ("user.unlock", user(u)),
        Command::RotateSigningKey { .. } => ("key.rotate", produced),
        Command::IssueEnrollmentCode { user: u, .. } => ("factor.enrollment_code", user(u)),
        Command::PutSecret { name, .. } => ("secret.put", name.clone()),
        Command::RecordAuthEvents { events } => ("auth.events", format!("{} events", events.len())),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
