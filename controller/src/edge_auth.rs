//! `EdgeAuth`: writes an edge makes on behalf of a signed-in user. Only edges (by client
//! certificate) may call it; the edge vouches for the user, whose identity is recorded as the
//! actor of the write.
//!
//! State every edge must agree on goes through here and Raft: the TOTP time step last accepted
//! (so a code works once, at one edge), failed-attempt counters and lockout, WebAuthn signature
//! counters and answered challenges, factor enrollment, and self-service revocations. TOTP seeds
//! never leave the controllers: the edge forwards the code, the controller checks it and records
//! the step in one Raft write.
//!
//! Every code check reserves an attempt in Raft first (`ReserveMfaAttempt`), so concurrent
//! guesses across edges are serialised and a locked user's code is never checked; once a user
//! is locked out nothing more about their MFA attempts is written. A WebAuthn ceremony counts
//! at most one failure (its challenge is used up either way).
//!
//! Adding or removing a factor while the user already has one needs a factor passed by the same
//! SSO session within the last 10 minutes, as the controllers recorded it when they checked the
//! TOTP code or the WebAuthn counter: never an edge-signed token, since edges hold the keys that
//! sign those. Adding or removing a phishing-resistant factor (a security key or platform
//! authenticator) needs a phishing-resistant pass when the user has one. A pending TOTP
//! enrollment can only be confirmed by the browser that began it, five wrong codes end it, and
//! confirming never counts as passing a factor.

use palisade_policy::catalog::{
    Actor, AuthEvent, Command, CommandError, Counters, FactorKind, FactorRecord, Outcome,
    RevocationTarget, UserKey,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use palisade_proto::v1 as pb;
use sha2::{Digest, Sha256};
use tonic::{Request, Response, Status};

use crate::admin::{Admin, sha256_hex};
use crate::controller::{Controller, IdempotencyKey, now_ms, ts};
use crate::convert;
use crate::error::WriteError;
use crate::identity::require_edge;
use crate::seal::Slot;

/// The one answer to every refused first-code confirmation, so that refusals tell an attacker
/// nothing (which factor ids exist, whose they are, whether the code or the binding was wrong).
const CONFIRM_REFUSED: &str = "that code was not accepted; check the authenticator's clock and enter the next code, or start again";
/// TOTP parameters (RFC 6238 defaults every authenticator app supports).
const TOTP_DIGITS: usize = 6;
const TOTP_STEP: u64 = 30;
/// 160-bit seeds (RFC 4226 recommends at least that).
const TOTP_SEED_BYTES: usize = 20;
/// Largest WebAuthn credential record accepted.
const MAX_CREDENTIAL_JSON: usize = 16 * 1024;

/// The `EdgeAuth` service of one controller.
#[derive(Debug, Clone)]
pub struct EdgeAuthService {
    ctl: Controller,
    /// Users with a code check in progress at this controller: one at a time per user, so a
    /// burst of guesses does not even propose the reservations the lockout would refuse.
    checking: Arc<Mutex<HashSet<UserKey>>>,
}

/// One user's code check in progress; ends when dropped.
struct Checking {
    users: Arc<Mutex<HashSet<UserKey>>>,
    user: UserKey,
}

impl Drop for Checking {
    fn drop(&mut self) {
        self.users
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.user);
    }
}

impl EdgeAuthService {
    /// The service for `ctl`.
    pub fn new(ctl: Controller) -> Self {
        Self {
            ctl,
            checking: Arc::default(),
        }
    }

    /// Starts checking a code for `user`, unless one is being checked already.
    fn one_check_at_a_time(&self, user: &UserKey) -> Result<Checking, Status> {
        let mut users = self.checking.lock().unwrap_or_else(|p| p.into_inner());
        if !users.insert(user.clone()) {
            return Err(Status::resource_exhausted(
                "another code for this user is being checked; try again in a moment",
            ));
        }
        Ok(Checking {
            users: self.checking.clone(),
            user: user.clone(),
        })
    }

    /// Refuses a factor change unless the user has no usable factor yet, or this session
    /// passed one within `RECENT_MFA_MS` by the controllers' own record. A change that
    /// concerns a phishing-resistant factor needs a phishing-resistant pass when the user holds
    /// such a factor. Returns whether the user has a usable factor.
    fn require_recent_mfa(
        &self,
        user: &pb::UserRef,
        key: &UserKey,
        phishing_resistant_change: bool,
    ) -> Result<bool, Status> {
        let now = now_ms();
        self.ctl.state.read(|s| {
            let c = &s.catalog;
            let usable: Vec<&FactorRecord> = c.user_factors(key).filter(|f| f.usable()).collect();
            if usable.is_empty() {
                return Ok(false);
            }
            let strong_held = usable.iter().any(|f| f.kind != FactorKind::Totp);
            let need_strong = phishing_resistant_change && strong_held;
            match c.recent_pass(&user.session_id, key, now) {
                Some(p) if !need_strong || p.kind != FactorKind::Totp => Ok(true),
                _ => Err(recent_mfa_needed(need_strong)),
            }
        })
    }

    /// The enrollment code hash to put in `AddFactor`, when policy requires one for a first
    /// factor.
    fn enrollment_code(&self, has_factor: bool, code: &str) -> Result<Option<String>, Status> {
        if has_factor {
            return Ok(None);
        }
        let required = self.ctl.state.read(|s| {
            s.catalog.current_policy().is_some_and(|p| {
                serde_json::from_str::<palisade_policy::document::PolicyDocument>(&p.document_json)
                    .is_ok_and(|d| d.mfa.enrollment_requires_code)
            })
        });
        if !required {
            return Ok(None);
        }
        if code.trim().is_empty() {
            return Err(Status::failed_precondition(
                "an enrollment code from your administrator is required to add a first factor",
            ));
        }
        Ok(Some(sha256_hex(code.trim())))
    }

    /// Counts a failed attempt (with the WebAuthn challenge it answered, if any). Nothing is
    /// written for a user who is locked out, or for a challenge already used: the counters are
    /// returned as they are. Returns the counters and the write's revision (0 without one).
    async fn count_failure(
        &self,
        actor: Actor,
        idem: Option<IdempotencyKey>,
        key: &UserKey,
        challenge: &[u8],
    ) -> Result<(Counters, u64), Status> {
        let challenge_sha256 = if challenge.is_empty() {
            String::new()
        } else {
            hex(&Sha256::digest(challenge))
        };
        // Checked here before proposing: a refused command is still a Raft entry.
        let (locked, used) = self.ctl.state.read(|s| {
            (
                s.catalog.locked_until(key, now_ms()).is_some(),
                !challenge_sha256.is_empty()
                    && s.catalog.used_challenges.contains_key(&challenge_sha256),
            )
        });
        if locked || used {
            return Ok((self.counters(key), 0));
        }
        match self
            .ctl
            .write_keyed(
                actor,
                idem,
                Command::RecordMfaFailure {
                    user: key.clone(),
                    challenge_sha256,
                },
            )
            .await
        {
            Ok(w) => match w.outcome {
                Outcome::Counters(c) => Ok((c, w.revision)),
                _ => Ok((self.counters(key), w.revision)),
            },
            Err(WriteError::Refused(
                CommandError::LockedOut { .. } | CommandError::ChallengeUsed,
            )) => Ok((self.counters(key), 0)),
            Err(e) => Err(e.into()),
        }
    }

    fn counters(&self, key: &UserKey) -> Counters {
        self.ctl.state.read(|s| s.catalog.counters(key))
    }

    /// Reserves an attempt at a code (`pending_factor`: a first code for that enrollment).
    async fn reserve(
        &self,
        actor: Actor,
        idem: Option<IdempotencyKey>,
        key: &UserKey,
        pending_factor: Option<String>,
    ) -> Result<(u64, Counters), WriteError> {
        let w = self
            .ctl
            .write_keyed(
                actor,
                idem,
                Command::ReserveMfaAttempt {
                    user: key.clone(),
                    pending_factor,
                },
            )
            .await?;
        match w.outcome {
            Outcome::Attempt { ticket, counters } => Ok((ticket, counters)),
            _ => Err(WriteError::Unavailable("unexpected outcome".into())),
        }
    }

    /// A factor as edges see it.
    fn factor_pb(&self, id: &str) -> Option<pb::Factor> {
        self.ctl
            .state
            .read(|s| s.catalog.factors.get(id).map(convert::factor))
    }

    /// A user's own factor, or NOT_FOUND (another user's factor is not found either).
    fn own_factor(&self, key: &UserKey, id: &str) -> Result<FactorRecord, Status> {
        self.ctl
            .state
            .read(|s| s.catalog.factors.get(id).cloned())
            .filter(|f| f.user == *key)
            .ok_or_else(|| Status::not_found("no such factor"))
    }
}

fn recent_mfa_needed(phishing_resistant: bool) -> Status {
    Status::permission_denied(if phishing_resistant {
        "changing a security key or device authenticator needs one of your security keys or device authenticators passed within the last 10 minutes"
    } else {
        "changing factors needs one of your existing factors passed within the last 10 minutes"
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The actor for a user acting through an edge.
fn user_actor(edge: &str, user: Option<&pb::UserRef>) -> Result<(Actor, pb::UserRef), Status> {
    let u = user
        .filter(|u| !u.identity_provider.trim().is_empty() && !u.subject.trim().is_empty())
        .ok_or_else(|| {
            Status::invalid_argument("user (identity provider and subject) is required")
        })?;
    Ok((
        Actor {
            subject: format!("{}/{} via {edge}", u.identity_provider, u.subject),
            kind: "user".into(),
        },
        u.clone(),
    ))
}

fn user_key(u: &pb::UserRef) -> UserKey {
    UserKey {
        provider: u.identity_provider.clone(),
        subject: u.subject.clone(),
    }
}

fn factor_name(name: &str, default: &str) -> Result<String, Status> {
    let name = name.trim();
    let name = if name.is_empty() { default } else { name };
    if name.chars().count() > 64 || name.chars().any(char::is_control) {
        return Err(Status::invalid_argument(
            "a factor name must be at most 64 printable characters",
        ));
    }
    Ok(name.to_string())
}

/// The TOTP generator for a seed.
fn totp(seed: Vec<u8>, account: &str) -> Result<totp_rs::Totp, Status> {
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(TOTP_DIGITS as u8)
        .with_skew(1)
        .with_step_duration(TOTP_STEP)
        .with_secret(seed)
        .with_issuer(Some("Palisade"))
        .with_account_name(account.to_string())
        .build()
        .map_err(|_| Status::internal("TOTP parameters"))
}

/// The time step of `code` for one of `seeds` at `now_secs` (±1 step), if any. Every seed is
/// tried (codes compare in constant time), whichever matched first.
fn match_code(seeds: Vec<(String, Vec<u8>)>, code: &str, now_secs: u64) -> Option<(String, u64)> {
    if code.len() != TOTP_DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut found = None;
    for (id, seed) in seeds {
        let Ok(t) = totp(seed, "") else { continue };
        if let Some(step) = t.check(code, now_secs)
            && found.is_none()
        {
            found = Some((id, step));
        }
    }
    found
}

fn kind_from_pb(k: i32) -> Result<FactorKind, Status> {
    match pb::FactorKind::try_from(k) {
        Ok(pb::FactorKind::SecurityKey) => Ok(FactorKind::SecurityKey),
        Ok(pb::FactorKind::Platform) => Ok(FactorKind::Platform),
        Ok(pb::FactorKind::Totp) => Ok(FactorKind::Totp),
        _ => Err(Status::invalid_argument("kind must be a factor kind")),
    }
}

/// The key of one write of a call (each write a call makes has its own, derived from the
/// call's key, so a retried call repeats each write under the same key).
fn write_key(idem: &Option<IdempotencyKey>, name: &str) -> Option<IdempotencyKey> {
    idem.as_ref().map(|k| k.derive(name))
}

fn locked(until_ms: i64) -> Option<prost_types::Timestamp> {
    (until_ms > 0).then(|| ts(until_ms.min(253_402_300_799_000)))
}

#[tonic::async_trait]
impl pb::edge_auth_server::EdgeAuth for EdgeAuthService {
    async fn revoke_own(
        &self,
        req: Request<pb::RevokeOwnRequest>,
    ) -> Result<Response<pb::RevokeOwnResponse>, Status> {
        let edge = require_edge(&req)?;
        let idem = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let (actor, user) = user_actor(&edge, r.user.as_ref())?;
        let target = convert::target_from_pb(r.target).map_err(Status::invalid_argument)?;
        let key = user_key(&user);
        let own = match &target {
            // Their current session, or one their sign-ins recorded.
            RevocationTarget::Session(sid) => {
                sid == &user.session_id
                    || self.ctl.state.read(|s| {
                        s.catalog
                            .auth_events(&key)
                            .any(|e| e.session_id == *sid && !sid.is_empty())
                    })
            }
            // A device they own (by email or subject).
            RevocationTarget::Device(id) => self.ctl.state.read(|s| {
                s.catalog.devices.get(id).is_some_and(|d| {
                    d.owner == user.subject || (!user.email.is_empty() && d.owner == user.email)
                })
            }),
            _ => {
                return Err(Status::invalid_argument(
                    "an edge may only revoke a user's own sessions and devices",
                ));
            }
        };
        if !own {
            return Err(Status::permission_denied(
                "that session or device is not the caller's",
            ));
        }
        let reason = if r.reason.trim().is_empty() {
            "signed out".to_string()
        } else {
            r.reason.chars().take(200).collect()
        };
        let admin = Admin::new(self.ctl.clone());
        let (write, revocation) = admin
            .revoke_as(actor.clone(), idem, target, reason, None)
            .await?;
        tracing::info!(actor = %actor.subject, revision = write.revision, "session revoked by its user");
        Ok(Response::new(pb::RevokeOwnResponse {
            revocation,
            write: Some(write),
        }))
    }

    async fn verify_totp(
        &self,
        req: Request<pb::VerifyTotpRequest>,
    ) -> Result<Response<pb::VerifyTotpResponse>, Status> {
        let edge = require_edge(&req)?;
        let idem = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let (actor, user) = user_actor(&edge, r.user.as_ref())?;
        let key = user_key(&user);
        let now = now_ms();
        let (sealed, locked_now) = self.ctl.state.read(|s| {
            let seeds: Vec<(String, Vec<u8>)> = s
                .catalog
                .user_factors(&key)
                .filter(|f| f.usable() && f.kind == FactorKind::Totp)
                .filter_map(|f| Some((f.id.clone(), s.catalog.totp_seeds.get(&f.id)?.0.clone())))
                .collect();
            (seeds, s.catalog.locked_until(&key, now))
        });
        let mut resp = pb::VerifyTotpResponse::default();
        if sealed.is_empty() {
            resp.result = pb::TotpResult::NoFactor as i32;
            return Ok(Response::new(resp));
        }
        let locked_out = |resp: &mut pb::VerifyTotpResponse, c: &Counters| {
            resp.result = pb::TotpResult::LockedOut as i32;
            resp.failed_attempts = c.failed_attempts;
            resp.locked_until = locked(c.locked_until_ms);
        };
        if locked_now.is_some() {
            locked_out(&mut resp, &self.counters(&key));
            return Ok(Response::new(resp));
        }
        let _checking = self.one_check_at_a_time(&key)?;
        // The attempt is counted before the code is checked: concurrent guesses are serialised
        // here, and none is checked once the lock is in force.
        let (ticket, counters) = match self
            .reserve(actor.clone(), write_key(&idem, "reserve"), &key, None)
            .await
        {
            Ok(x) => x,
            Err(WriteError::Refused(CommandError::LockedOut { .. })) => {
                locked_out(&mut resp, &self.counters(&key));
                return Ok(Response::new(resp));
            }
            Err(e) => return Err(e.into()),
        };
        let seeds = sealed
            .into_iter()
            .filter_map(|(id, s)| Some((id, self.ctl.key.open(Slot::TotpSeed(&key), &s).ok()?)))
            .collect();
        let code: String = r.code.chars().filter(|c| !c.is_whitespace()).collect();
        match match_code(seeds, &code, (now / 1000) as u64) {
            Some((factor_id, step)) => {
                match self
                    .ctl
                    .write_keyed(
                        actor,
                        write_key(&idem, "use"),
                        Command::RecordTotpUse {
                            user: key.clone(),
                            step,
                            attempt: ticket,
                            factor_id: factor_id.clone(),
                            session_id: user.session_id.clone(),
                        },
                    )
                    .await
                {
                    Ok(w) => {
                        resp.result = pb::TotpResult::Ok as i32;
                        resp.factor_id = factor_id;
                        resp.write = Some(w.to_pb());
                        return Ok(Response::new(resp));
                    }
                    // The step was already used (here or at another edge): a replay, which
                    // stays counted as a failed attempt.
                    Err(WriteError::Refused(CommandError::TotpReplayed)) => {
                        resp.result = pb::TotpResult::Replayed as i32;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            None => resp.result = pb::TotpResult::Invalid as i32,
        }
        tracing::info!(request_id = %r.request_id, failed_attempts = counters.failed_attempts, "TOTP code refused");
        resp.failed_attempts = counters.failed_attempts;
        resp.locked_until = locked(counters.locked_until_ms);
        resp.write = Some(pb::WriteResult {
            revision: ticket,
            ..Default::default()
        });
        Ok(Response::new(resp))
    }

    async fn begin_totp_enrollment(
        &self,
        req: Request<pb::BeginTotpEnrollmentRequest>,
    ) -> Result<Response<pb::BeginTotpEnrollmentResponse>, Status> {
        let edge = require_edge(&req)?;
        let idem = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let (actor, user) = user_actor(&edge, r.user.as_ref())?;
        let key = user_key(&user);
        let binding = r.binding_sha256.trim().to_ascii_lowercase();
        if binding.len() != 64 || !binding.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Status::invalid_argument(
                "binding_sha256 (SHA-256 hex of the browser's secret) is required",
            ));
        }
        let has_factor = self.require_recent_mfa(&user, &key, false)?;
        let code = self.enrollment_code(has_factor, &r.enrollment_code)?;
        let name = factor_name(&r.name, "Authenticator app")?;
        let mut seed = vec![0u8; TOTP_SEED_BYTES];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut seed);
        let label = if r.account_label.trim().is_empty() {
            user.subject.clone()
        } else {
            r.account_label.chars().take(128).collect()
        };
        let uri = totp(seed.clone(), &label)?
            .to_url()
            .map_err(|_| Status::internal("TOTP provisioning URI"))?;
        let sealed = self
            .ctl
            .key
            .seal(Slot::TotpSeed(&key), &seed)
            .map_err(|_| Status::internal("sealing the seed"))?;
        // Not keyed: a retry draws a new seed, so it must make a new pending factor for it
        // (the one whose answer was lost expires unconfirmed).
        let _ = idem;
        let w = self
            .ctl
            .write(
                actor,
                Command::AddFactor {
                    user: key,
                    kind: FactorKind::Totp,
                    name,
                    credential_json: String::new(),
                    credential_id: String::new(),
                    totp_seed: Some(palisade_policy::catalog::Sealed(sealed)),
                    enrollment_code_sha256: code,
                    binding_sha256: binding,
                },
            )
            .await?;
        let Outcome::Factor(factor_id) = w.outcome else {
            return Err(Status::internal("unexpected outcome"));
        };
        Ok(Response::new(pb::BeginTotpEnrollmentResponse {
            factor_id,
            provisioning_uri: uri,
        }))
    }

    async fn confirm_totp_enrollment(
        &self,
        req: Request<pb::ConfirmTotpEnrollmentRequest>,
    ) -> Result<Response<pb::ConfirmTotpEnrollmentResponse>, Status> {
        let edge = require_edge(&req)?;
        let idem = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let (actor, user) = user_actor(&edge, r.user.as_ref())?;
        let key = user_key(&user);
        let refused = || Status::invalid_argument(CONFIRM_REFUSED);
        let now = now_ms();
        let binding = hex(&Sha256::digest(&r.binding));
        let (f, sealed) = self
            .ctl
            .state
            .read(|s| {
                let f = s
                    .catalog
                    .factors
                    .get(&r.factor_id)
                    .filter(|f| f.user == key && f.pending())?
                    .clone();
                let sealed = s.catalog.totp_seeds.get(&f.id)?.clone();
                Some((f, sealed))
            })
            .ok_or_else(refused)?;
        let bound = !f.binding_sha256.is_empty()
            && bool::from(subtle::ConstantTimeEq::ct_eq(
                f.binding_sha256.as_bytes(),
                binding.as_bytes(),
            ));
        if !bound
            || self
                .ctl
                .state
                .read(|s| s.catalog.locked_until(&key, now).is_some())
        {
            return Err(refused());
        }
        let _checking = self.one_check_at_a_time(&key).map_err(|_| refused())?;
        // Counted before the code is checked, against the user and against this enrollment.
        let (ticket, _) = self
            .reserve(
                actor.clone(),
                write_key(&idem, "reserve"),
                &key,
                Some(f.id.clone()),
            )
            .await
            .map_err(|e| match e {
                WriteError::Refused(_) => refused(),
                other => other.into(),
            })?;
        let seed = self
            .ctl
            .key
            .open(Slot::TotpSeed(&key), &sealed.0)
            .map_err(|_| Status::internal("opening the seed"))?;
        let code: String = r.code.chars().filter(|c| !c.is_whitespace()).collect();
        let Some((_, step)) = match_code(vec![(f.id.clone(), seed)], &code, (now / 1000) as u64)
        else {
            return Err(refused());
        };
        let w = self
            .ctl
            .write_keyed(
                actor,
                write_key(&idem, "activate"),
                Command::ActivateTotp {
                    id: f.id.clone(),
                    step,
                    attempt: ticket,
                },
            )
            .await
            .map_err(|e| match e {
                WriteError::Refused(_) => refused(),
                other => other.into(),
            })?;
        let factor = self.factor_pb(&f.id);
        Ok(Response::new(pb::ConfirmTotpEnrollmentResponse {
            factor,
            write: Some(w.to_pb()),
        }))
    }

    async fn register_webauthn(
        &self,
        req: Request<pb::RegisterWebauthnRequest>,
    ) -> Result<Response<pb::FactorWriteResponse>, Status> {
        let edge = require_edge(&req)?;
        let idem = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let (actor, user) = user_actor(&edge, r.user.as_ref())?;
        let key = user_key(&user);
        let kind = kind_from_pb(r.kind)?;
        if kind == FactorKind::Totp {
            return Err(Status::invalid_argument("kind must be a WebAuthn kind"));
        }
        let cred = r
            .credential
            .ok_or_else(|| Status::invalid_argument("credential is required"))?;
        if cred.credential_id.is_empty()
            || cred.credential_json.is_empty()
            || cred.credential_json.len() > MAX_CREDENTIAL_JSON
            || serde_json::from_str::<serde_json::Value>(&cred.credential_json).is_err()
        {
            return Err(Status::invalid_argument(
                "the credential record is malformed",
            ));
        }
        let has_factor = self.require_recent_mfa(&user, &key, true)?;
        let code = self.enrollment_code(has_factor, &r.enrollment_code)?;
        let default = match kind {
            FactorKind::Platform => "This device",
            _ => "Security key",
        };
        let name = factor_name(&r.name, default)?;
        let w = self
            .ctl
            .write_keyed(
                actor,
                write_key(&idem, "add"),
                Command::AddFactor {
                    user: key,
                    kind,
                    name,
                    credential_json: cred.credential_json,
                    credential_id: base64::Engine::encode(
                        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                        &cred.credential_id,
                    ),
                    totp_seed: None,
                    enrollment_code_sha256: code,
                    binding_sha256: String::new(),
                },
            )
            .await?;
        let factor = match &w.outcome {
            Outcome::Factor(id) => self.factor_pb(id),
            _ => None,
        };
        Ok(Response::new(pb::FactorWriteResponse {
            factor,
            write: Some(w.to_pb()),
        }))
    }

    async fn record_webauthn_use(
        &self,
        req: Request<pb::RecordWebauthnUseRequest>,
    ) -> Result<Response<pb::RecordWebauthnUseResponse>, Status> {
        let edge = require_edge(&req)?;
        let idem = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let (actor, user) = user_actor(&edge, r.user.as_ref())?;
        let key = user_key(&user);
        let f = self.own_factor(&key, &r.factor_id)?;
        if r.challenge.len() < 16 {
            return Err(Status::invalid_argument(
                "the answered challenge is required",
            ));
        }
        let mut resp = pb::RecordWebauthnUseResponse::default();
        let challenge_sha256 = hex(&Sha256::digest(&r.challenge));
        // A used challenge or a locked user is refused here, before anything is proposed.
        let refusal = self.ctl.state.read(|s| {
            if s.catalog.used_challenges.contains_key(&challenge_sha256) {
                Some(CommandError::ChallengeUsed)
            } else {
                s.catalog
                    .locked_until(&key, now_ms())
                    .map(|until_ms| CommandError::LockedOut { until_ms })
            }
        });
        if let Some(e) = refusal {
            resp.refusal = e.to_string();
            return Ok(Response::new(resp));
        }
        match self
            .ctl
            .write_keyed(
                actor.clone(),
                write_key(&idem, "use"),
                Command::RecordWebauthnUse {
                    id: f.id,
                    sign_count: r.sign_count,
                    challenge_sha256,
                    session_id: user.session_id.clone(),
                },
            )
            .await
        {
            Ok(w) => {
                resp.accepted = true;
                resp.write = Some(w.to_pb());
            }
            Err(WriteError::Refused(e)) => {
                tracing::warn!(request_id = %r.request_id, refusal = %e, "WebAuthn assertion refused by the catalog");
                resp.refusal = e.to_string();
                // A cloned authenticator's regressed counter is a failed attempt (the challenge
                // is used up with it); a reused challenge or a locked user writes nothing more.
                if matches!(
                    e,
                    CommandError::CounterRegressed | CommandError::NotFound { .. }
                ) {
                    let (_, revision) = self
                        .count_failure(actor, write_key(&idem, "failure"), &key, &r.challenge)
                        .await?;
                    resp.write = Some(pb::WriteResult {
                        revision,
                        ..Default::default()
                    });
                }
            }
            Err(e) => return Err(e.into()),
        }
        Ok(Response::new(resp))
    }

    async fn record_mfa_failure(
        &self,
        req: Request<pb::RecordMfaFailureRequest>,
    ) -> Result<Response<pb::RecordMfaFailureResponse>, Status> {
        let edge = require_edge(&req)?;
        let idem = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let (actor, user) = user_actor(&edge, r.user.as_ref())?;
        let (c, revision) = self
            .count_failure(
                actor,
                write_key(&idem, "failure"),
                &user_key(&user),
                &r.challenge,
            )
            .await?;
        Ok(Response::new(pb::RecordMfaFailureResponse {
            failed_attempts: c.failed_attempts,
            locked_until: locked(c.locked_until_ms),
            recorded: revision != 0,
        }))
    }

    async fn rename_factor(
        &self,
        req: Request<pb::RenameFactorRequest>,
    ) -> Result<Response<pb::FactorWriteResponse>, Status> {
        let edge = require_edge(&req)?;
        let idem = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let (actor, user) = user_actor(&edge, r.user.as_ref())?;
        let f = self.own_factor(&user_key(&user), &r.factor_id)?;
        let name = factor_name(&r.name, "")?;
        if name.is_empty() {
            return Err(Status::invalid_argument("a factor needs a name"));
        }
        let w = self
            .ctl
            .write_keyed(
                actor,
                write_key(&idem, "rename"),
                Command::RenameFactor {
                    id: f.id.clone(),
                    name,
                },
            )
            .await?;
        let factor = self.factor_pb(&f.id);
        Ok(Response::new(pb::FactorWriteResponse {
            factor,
            write: Some(w.to_pb()),
        }))
    }

    async fn remove_own_factor(
        &self,
        req: Request<pb::RemoveOwnFactorRequest>,
    ) -> Result<Response<pb::FactorWriteResponse>, Status> {
        let edge = require_edge(&req)?;
        let idem = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let (actor, user) = user_actor(&edge, r.user.as_ref())?;
        let key = user_key(&user);
        let f = self.own_factor(&key, &r.factor_id)?;
        // A pending TOTP factor can be dropped freely; an active one needs a recent factor
        // (a phishing-resistant one to remove a security key or device authenticator).
        if f.usable() {
            self.require_recent_mfa(&user, &key, f.kind != FactorKind::Totp)?;
        }
        let w = self
            .ctl
            .write_keyed(
                actor,
                write_key(&idem, "remove"),
                Command::RemoveFactor { id: f.id },
            )
            .await?;
        Ok(Response::new(pb::FactorWriteResponse {
            factor: None,
            write: Some(w.to_pb()),
        }))
    }

    async fn record_auth_events(
        &self,
        req: Request<pb::RecordAuthEventsRequest>,
    ) -> Result<Response<pb::RecordAuthEventsResponse>, Status> {
        let edge = require_edge(&req)?;
        let idem = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        if r.events.len() > 100 {
            return Err(Status::invalid_argument("at most 100 events per call"));
        }
        let events: Vec<AuthEvent> = r
            .events
            .into_iter()
            .filter_map(|e| {
                let (provider, subject) = e.target.split_once('/')?;
                let clip = |s: &str| s.chars().take(200).collect::<String>();
                Some(AuthEvent {
                    user: UserKey {
                        provider: clip(provider),
                        subject: clip(subject),
                    },
                    at_ms: e
                        .time
                        .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
                        .unwrap_or_else(now_ms),
                    action: clip(&e.action),
                    result: clip(&e.result),
                    // The edge is who the certificate says, whatever the event claims.
                    edge_id: edge.clone(),
                    request_id: clip(&e.request_id),
                    session_id: e
                        .details
                        .get("session_id")
                        .map(|s| clip(s))
                        .unwrap_or_default(),
                    details: e
                        .details
                        .iter()
                        .take(8)
                        .map(|(k, v)| (clip(k), clip(v)))
                        .collect(),
                })
            })
            .collect();
        // Once a user is locked out, nothing more about their MFA attempts is written.
        let now = now_ms();
        let events: Vec<AuthEvent> = self.ctl.state.read(|s| {
            events
                .into_iter()
                .filter(|e| {
                    !(e.action.starts_with("mfa.")
                        && s.catalog.locked_until(&e.user, now).is_some())
                })
                .collect()
        });
        let accepted = events.len() as u32;
        if accepted > 0 {
            self.ctl
                .write_keyed(
                    Actor {
                        subject: edge.clone(),
                        kind: "edge".into(),
                    },
                    write_key(&idem, "events"),
                    Command::RecordAuthEvents { events },
                )
                .await?;
        }
        Ok(Response::new(pb::RecordAuthEventsResponse { accepted }))
    }

    async fn list_auth_events(
        &self,
        req: Request<pb::ListAuthEventsRequest>,
    ) -> Result<Response<pb::ListAuthEventsResponse>, Status> {
        let edge = require_edge(&req)?;
        let r = req.into_inner();
        let (_, user) = user_actor(&edge, r.user.as_ref())?;
        let key = user_key(&user);
        let limit = match r.limit {
            0 => 50,
            n => n.min(200) as usize,
        };
        let events = self.ctl.state.read(|s| {
            s.catalog
                .auth_events(&key)
                .take(limit)
                .map(|e| pb::AuditEvent {
                    time: Some(ts(e.at_ms)),
                    actor: Some(pb::Actor {
                        subject: format!("{}/{}", e.user.provider, e.user.subject),
                        kind: pb::ActorKind::User as i32,
                        ..Default::default()
                    }),
                    action: e.action.clone(),
                    target: format!("{}/{}", e.user.provider, e.user.subject),
                    result: e.result.clone(),
                    edge_id: e.edge_id.clone(),
                    request_id: e.request_id.clone(),
                    details: e.details.clone().into_iter().collect(),
                    ..Default::default()
                })
                .collect()
        });
        Ok(Response::new(pb::ListAuthEventsResponse { events }))
    }

    async fn open_tunnel_session(
        &self,
        req: Request<pb::OpenTunnelSessionRequest>,
    ) -> Result<Response<pb::OpenTunnelSessionResponse>, Status> {
        let edge = require_edge(&req)?;
        let idem = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let (actor, user) = user_actor(&edge, r.user.as_ref())?;
        if !r.edge_id.is_empty() && r.edge_id != edge {
            return Err(Status::invalid_argument(
                "edge_id must name the calling edge (or be empty)",
            ));
        }
        if r.device_id.trim().is_empty() || r.device_id.len() > 128 {
            return Err(Status::invalid_argument("device_id is required"));
        }
        let expires_at_ms = r
            .expires_at
            .map(|t| t.seconds.saturating_mul(1000) + i64::from(t.nanos) / 1_000_000)
            .ok_or_else(|| {
                Status::invalid_argument("expires_at (the SSO session's expiry) is required")
            })?;
        let written = self
            .ctl
            .write_keyed(
                actor,
                write_key(&idem, "tunnel"),
                Command::OpenTunnelSession {
                    device_id: r.device_id,
                    user: user_key(&user),
                    user_email: user.email.clone(),
                    session_id: user.session_id.clone(),
                    edge_id: edge.clone(),
                    expires_at_ms,
                },
            )
            .await?;
        let Outcome::TunnelSession(id) = &written.outcome else {
            return Err(Status::internal("unexpected outcome"));
        };
        let session = self.ctl.state.read(|s| {
            s.catalog
                .tunnel_sessions
                .get(id)
                .map(convert::tunnel_session)
        });
        tracing::info!(tunnel = %id, edge = %edge, revision = written.revision, "tunnel session opened");
        Ok(Response::new(pb::OpenTunnelSessionResponse {
            session,
            write: Some(written.to_pb()),
        }))
    }

    async fn close_tunnel_session(
        &self,
        req: Request<pb::CloseTunnelSessionRequest>,
    ) -> Result<Response<pb::CloseTunnelSessionResponse>, Status> {
        let edge = require_edge(&req)?;
        let idem = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        if r.id.trim().is_empty() || r.id.len() > 128 {
            return Err(Status::invalid_argument("id is required"));
        }
        let reason = match r.reason.trim() {
            "" => "closed".to_string(),
            reason => reason.chars().take(200).collect(),
        };
        let written = self
            .ctl
            .write_keyed(
                Actor {
                    subject: edge.clone(),
                    kind: "edge".into(),
                },
                write_key(&idem, "tunnel-close"),
                Command::CloseTunnelSession { id: r.id, reason },
            )
            .await?;
        Ok(Response::new(pb::CloseTunnelSessionResponse {
            write: Some(written.to_pb()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn code_at(seed: &[u8], t: u64) -> String {
        totp(seed.to_vec(), "")
            .expect("totp")
            .generate(t)
            .to_string()
    }

    #[test]
    fn codes_match_within_one_step_only() {
        let seed = [42u8; TOTP_SEED_BYTES];
        let now = 1_800_000_015;
        let seeds = || vec![("fac-1".to_string(), seed.to_vec())];
        let step = now / TOTP_STEP;
        for (dt, want) in [
            (0i64, Some(step)),
            (-30, Some(step - 1)),
            (30, Some(step + 1)),
        ] {
            let c = code_at(&seed, now.saturating_add_signed(dt));
            assert_eq!(
                match_code(seeds(), &c, now).map(|(_, s)| s),
                want,
                "dt {dt}"
            );
        }
        for dt in [-90i64, 90] {
            let c = code_at(&seed, now.saturating_add_signed(dt));
            if c != code_at(&seed, now)
                && c != code_at(&seed, now - 30)
                && c != code_at(&seed, now + 30)
            {
                assert_eq!(match_code(seeds(), &c, now), None, "dt {dt}");
            }
        }
        assert_eq!(match_code(seeds(), "12345", now), None);
        assert_eq!(match_code(seeds(), "12345a", now), None);
        assert_eq!(match_code(seeds(), "1234567", now), None);
    }

    #[test]
    fn the_matching_factor_is_reported() {
        let a = [1u8; TOTP_SEED_BYTES];
        let b = [2u8; TOTP_SEED_BYTES];
        let now = 1_800_000_000;
        let seeds = vec![
            ("fac-a".to_string(), a.to_vec()),
            ("fac-b".to_string(), b.to_vec()),
        ];
        let c = code_at(&b, now);
        if c != code_at(&a, now) {
            assert_eq!(
                match_code(seeds, &c, now).map(|(id, _)| id).as_deref(),
                Some("fac-b")
            );
        }
    }

    proptest! {
        // Whatever a user types, checking it never panics and only 6 digits can match.
        #[test]
        fn totp_input_never_panics(code in ".{0,40}", seed in proptest::collection::vec(any::<u8>(), 0..64), now in 0u64..100_000_000_000) {
            let r = match_code(vec![("f".into(), seed)], &code, now);
            if r.is_some() {
                prop_assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }
}
