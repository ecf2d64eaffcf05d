//! The controllers' `EdgeAuth` calls as typed methods: each builds its request from domain
//! values, picks its retry class once, and returns what the edge acts on. Handlers never build
//! a `pb::*Request` or read a `pb::*Response`.

use std::collections::BTreeMap;

use palisade_edge_core::Caller;
use palisade_policy::catalog::FactorKind;
use palisade_proto::v1 as pb;

use crate::auth::claims::UserRefOf;
use crate::controllers::{CallError, ControllerClient, Retry};

/// What the controllers said about a TOTP code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TotpOutcome {
    /// Accepted, with the factor that matched; the time step is recorded.
    Passed {
        /// The factor.
        factor_id: String,
    },
    /// Wrong.
    Invalid {
        /// Consecutive failures so far.
        failed_attempts: u32,
    },
    /// Right, but already used.
    Replayed,
    /// The user is locked out until then (unix seconds; `i64::MAX` until an admin unlocks).
    LockedOut {
        /// Until when.
        until: i64,
    },
    /// The user has no TOTP factor.
    NoFactor,
    /// The controllers gave no usable answer.
    Unchecked,
}

impl TotpOutcome {
    /// The result as the audit trail names it.
    pub fn name(&self) -> &'static str {
        match self {
            TotpOutcome::Passed { .. } => "ok",
            TotpOutcome::Invalid { .. } => "failed",
            TotpOutcome::Replayed => "replayed",
            TotpOutcome::LockedOut { .. } => "locked_out",
            TotpOutcome::NoFactor => "no_factor",
            TotpOutcome::Unchecked => "error",
        }
    }
}

/// A TOTP factor waiting for its first code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingTotp {
    /// The pending factor.
    pub factor_id: String,
    /// The `otpauth://` URI the QR code shows (it holds the seed: never logged).
    pub provisioning_uri: String,
}

/// A WebAuthn credential to register.
#[derive(Debug, Clone)]
pub struct NewCredential {
    /// Security key or platform authenticator.
    pub kind: FactorKind,
    /// The factor's name.
    pub name: String,
    /// The credential id (raw).
    pub credential_id: Vec<u8>,
    /// The webauthn-rs credential, JSON.
    pub credential_json: String,
    /// The admin-issued enrollment code, if one was given.
    pub enrollment_code: String,
}

/// One entry of a user's sign-in and MFA history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthEvent {
    /// When (unix seconds).
    pub at: i64,
    /// What (`login.oidc`, `mfa.totp`, `factor.add`, ...).
    pub action: String,
    /// The result.
    pub result: String,
    /// The edge that recorded it.
    pub edge_id: String,
    /// Details (session id, host, factor id, ...).
    pub details: BTreeMap<String, String>,
}

fn kind_of(kind: FactorKind) -> pb::FactorKind {
    match kind {
        FactorKind::Totp => pb::FactorKind::Totp,
        FactorKind::SecurityKey => pb::FactorKind::SecurityKey,
        FactorKind::Platform => pb::FactorKind::Platform,
    }
}

fn revision(w: Option<pb::WriteResult>) -> u64 {
    w.map(|w| w.revision).unwrap_or(0)
}

impl ControllerClient {
    /// Checks a TOTP code (the controllers hold the seeds and record the step, so a code works
    /// once across every edge). Returns the outcome and the user's TOTP factor, if they have
    /// one.
    pub async fn verify_totp(
        &self,
        caller: &Caller,
        code: &str,
        request_id: &str,
    ) -> Result<(TotpOutcome, String), CallError> {
        let req = pb::VerifyTotpRequest {
            user: Some(caller.user_ref()),
            code: code.chars().take(16).collect(),
            request_id: request_id.to_string(),
        };
        let r = self
            .call(Retry::Safe, |mut c| {
                let req = req.clone();
                async move { c.verify_totp(req).await }
            })
            .await?;
        let outcome =
            match pb::TotpResult::try_from(r.result).unwrap_or(pb::TotpResult::Unspecified) {
                pb::TotpResult::Ok => TotpOutcome::Passed {
                    factor_id: r.factor_id.clone(),
                },
                pb::TotpResult::Invalid => TotpOutcome::Invalid {
                    failed_attempts: r.failed_attempts,
                },
                pb::TotpResult::Replayed => TotpOutcome::Replayed,
                pb::TotpResult::LockedOut => TotpOutcome::LockedOut {
                    until: r.locked_until.map(|t| t.seconds).unwrap_or(i64::MAX),
                },
                pb::TotpResult::NoFactor => TotpOutcome::NoFactor,
                pb::TotpResult::Unspecified => TotpOutcome::Unchecked,
            };
        Ok((outcome, r.factor_id))
    }

    /// Begins adding an authenticator app: a pending factor bound to the browser holding the
    /// secret whose SHA-256 (hex) is `binding_sha256`.
    pub async fn begin_totp_enrollment(
        &self,
        caller: &Caller,
        name: &str,
        enrollment_code: &str,
        binding_sha256: &str,
    ) -> Result<PendingTotp, CallError> {
        let req = pb::BeginTotpEnrollmentRequest {
            user: Some(caller.user_ref()),
            name: name.to_string(),
            account_label: if caller.session.email.is_empty() {
                caller.session.sub.clone()
            } else {
                caller.session.email.clone()
            },
            enrollment_code: enrollment_code.to_string(),
            binding_sha256: binding_sha256.to_string(),
        };
        // Draws a new seed: never repeated once it may have arrived.
        let r = self
            .call(Retry::Once, |mut c| {
                let req = req.clone();
                async move { c.begin_totp_enrollment(req).await }
            })
            .await?;
        Ok(PendingTotp {
            factor_id: r.factor_id,
            provisioning_uri: r.provisioning_uri,
        })
    }

    /// Confirms a pending TOTP factor with its first code; returns the write's revision.
    pub async fn confirm_totp_enrollment(
        &self,
        caller: &Caller,
        factor_id: &str,
        code: &str,
        binding: &str,
    ) -> Result<u64, CallError> {
        let req = pb::ConfirmTotpEnrollmentRequest {
            user: Some(caller.user_ref()),
            factor_id: factor_id.to_string(),
            code: code.to_string(),
            binding: binding.as_bytes().to_vec(),
        };
        let r = self
            .call(Retry::Once, |mut c| {
                let req = req.clone();
                async move { c.confirm_totp_enrollment(req).await }
            })
            .await?;
        Ok(revision(r.write))
    }

    /// Records a WebAuthn assertion's counter and answered challenge before it counts:
    /// `Ok(None)` when accepted, `Ok(Some(refusal))` when the controllers refused it.
    pub async fn record_webauthn_use(
        &self,
        caller: &Caller,
        factor_id: &str,
        sign_count: u32,
        challenge: Vec<u8>,
        request_id: &str,
    ) -> Result<Option<String>, CallError> {
        let req = pb::RecordWebauthnUseRequest {
            user: Some(caller.user_ref()),
            factor_id: factor_id.to_string(),
            sign_count,
            request_id: request_id.to_string(),
            challenge,
        };
        let r = self
            .call(Retry::Once, |mut c| {
                let req = req.clone();
                async move { c.record_webauthn_use(req).await }
            })
            .await?;
        Ok((!r.accepted).then_some(r.refusal))
    }

    /// Counts a failed answer to a ceremony; whether it was counted (not when the user is
    /// locked out or the challenge was answered before).
    pub async fn record_mfa_failure(
        &self,
        caller: &Caller,
        kind: FactorKind,
        challenge: Vec<u8>,
        request_id: &str,
    ) -> Result<bool, CallError> {
        let req = pb::RecordMfaFailureRequest {
            user: Some(caller.user_ref()),
            kind: kind_of(kind) as i32,
            request_id: request_id.to_string(),
            challenge,
        };
        let r = self
            .call(Retry::Safe, |mut c| {
                let req = req.clone();
                async move { c.record_mfa_failure(req).await }
            })
            .await?;
        Ok(r.recorded)
    }

    /// Adds a WebAuthn factor; returns its id and the write's revision.
    pub async fn register_webauthn(
        &self,
        caller: &Caller,
        credential: NewCredential,
    ) -> Result<(String, u64), CallError> {
        let req = pb::RegisterWebauthnRequest {
            user: Some(caller.user_ref()),
            kind: kind_of(credential.kind) as i32,
            name: credential.name,
            credential: Some(pb::WebauthnCredential {
                credential_id: credential.credential_id,
                credential_json: credential.credential_json,
                sign_count: 0,
                user_verified: credential.kind == FactorKind::Platform,
                aaguid: String::new(),
            }),
            enrollment_code: credential.enrollment_code,
        };
        let r = self
            .call(Retry::Once, |mut c| {
                let req = req.clone();
                async move { c.register_webauthn(req).await }
            })
            .await?;
        Ok((r.factor.unwrap_or_default().id, revision(r.write)))
    }

    /// Renames one of the caller's factors; returns the write's revision.
    pub async fn rename_factor(
        &self,
        caller: &Caller,
        factor_id: &str,
        name: &str,
    ) -> Result<u64, CallError> {
        let req = pb::RenameFactorRequest {
            user: Some(caller.user_ref()),
            factor_id: factor_id.to_string(),
            name: name.to_string(),
        };
        let r = self
            .call(Retry::Safe, |mut c| {
                let req = req.clone();
                async move { c.rename_factor(req).await }
            })
            .await?;
        Ok(revision(r.write))
    }

    /// Removes one of the caller's factors; returns the write's revision.
    pub async fn remove_own_factor(
        &self,
        caller: &Caller,
        factor_id: &str,
    ) -> Result<u64, CallError> {
        let req = pb::RemoveOwnFactorRequest {
            user: Some(caller.user_ref()),
            factor_id: factor_id.to_string(),
        };
        let r = self
            .call(Retry::Once, |mut c| {
                let req = req.clone();
                async move { c.remove_own_factor(req).await }
            })
            .await?;
        Ok(revision(r.write))
    }

    /// Records sign-in and MFA events in their users' histories.
    pub async fn record_auth_events(&self, events: Vec<pb::AuditEvent>) -> Result<(), CallError> {
        let req = pb::RecordAuthEventsRequest { events };
        self.call(Retry::Safe, |mut c| {
            let req = req.clone();
            async move { c.record_auth_events(req).await }
        })
        .await
        .map(|_| ())
    }

    /// The caller's most recent sign-in and MFA events, newest first.
    pub async fn list_auth_events(
        &self,
        caller: &Caller,
        limit: u32,
    ) -> Result<Vec<AuthEvent>, CallError> {
        let req = pb::ListAuthEventsRequest {
            user: Some(caller.user_ref()),
            limit,
        };
        let r = self
            .call(Retry::Safe, |mut c| {
                let req = req.clone();
                async move { c.list_auth_events(req).await }
            })
            .await?;
        Ok(r.events
            .into_iter()
            .map(|e| AuthEvent {
                at: e.time.map(|t| t.seconds).unwrap_or(0),
                action: e.action,
                result: e.result,
                edge_id: e.edge_id,
                details: e.details.into_iter().collect(),
            })
            .collect())
    }

    /// Revokes one of the user's own sessions or devices (sign-out revokes the current
    /// session). Returns the revision of the revocation.
    pub async fn revoke_own(
        &self,
        user: pb::UserRef,
        target: pb::revocation_target::Target,
        reason: &str,
    ) -> Result<u64, CallError> {
        let req = pb::RevokeOwnRequest {
            user: Some(user),
            target: Some(pb::RevocationTarget {
                target: Some(target),
            }),
            reason: reason.into(),
        };
        let r = self
            .call(Retry::Safe, |mut c| {
                let req = req.clone();
                async move { c.revoke_own(req).await }
            })
            .await?;
        Ok(r.write.map(|w| w.revision).unwrap_or(0))
    }
}
