//! The caller of a request: the presented session token, verified with the view's keys and
//! checked against its revocations, and the MFA assertion that counts with it.

use palisade_policy::catalog::UserKey;
use palisade_policy::request::{Identity, MfaProof, SessionTimes};
use palisade_policy::token::{SessionClaims, TokenError};

use crate::view::View;

/// An authenticated caller, after every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The verified session.
    pub session: SessionClaims,
    /// The identity `decide()` sees, with the MFA proof that counts (if any).
    pub identity: Identity,
    /// The MFA assertion token as presented, when it counts.
    pub mfa_token: Option<String>,
}

impl Caller {
    /// The caller a freshly issued session makes, before any MFA (the sign-in callback uses
    /// it to decide whether the sign-in reached what it was for).
    pub fn signed_in(session: SessionClaims) -> Caller {
        let identity = identity_of(&session, None);
        Caller {
            session,
            identity,
            mfa_token: None,
        }
    }

    /// The user, as the catalog keys factors and counters.
    pub fn user(&self) -> UserKey {
        UserKey {
            provider: self.session.idp.clone(),
            subject: self.session.sub.clone(),
        }
    }
}

/// Why a presented session token does not make a caller (the cookie should be cleared).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SessionRefused {
    /// It does not verify, has expired or has been idle too long.
    #[error("session token refused: {0}")]
    Token(TokenError),
    /// It was issued for another host.
    #[error("session token issued for another host")]
    OtherHost,
    /// It is revoked (by id, or by a revocation of its user).
    #[error("session revoked")]
    Revoked,
    /// It was signed in from a device whose certificate this request does not present.
    #[error("session bound to a device whose certificate was not presented")]
    OtherDevice,
}

/// Where a session token was presented: the host addressed and the device (its id) whose
/// current certificate the connection presented, if any.
#[derive(Debug, Clone, Copy)]
pub struct Presented<'a> {
    /// The lowercase host.
    pub host: &'a str,
    /// The device, when its certificate counts.
    pub device: Option<&'a str>,
}

/// The caller from the presented tokens at `now` (unix seconds): `Ok(None)` when no session
/// token was presented, an error when one was but cannot be used. `active_since` counts as
/// activity (a connection open since then); 0 for none.
///
/// An MFA assertion counts only while it verifies, is bound to this session and user, and its
/// factor exists, is usable and is not revoked: removing or revoking a factor ends the
/// assertions issued with it. An assertion that does not count is ignored, not an error.
pub fn verify(
    view: &View,
    session_token: Option<&str>,
    mfa_token: Option<&str>,
    at: Presented<'_>,
    now: i64,
    active_since: i64,
) -> Result<Option<Caller>, SessionRefused> {
    let Some(token) = session_token else {
        return Ok(None);
    };
    let session = view
        .keyring
        .verify_session_active(token, now, active_since)
        .map_err(SessionRefused::Token)?;
    if session.aud != at.host {
        return Err(SessionRefused::OtherHost);
    }
    if !session.did.is_empty() && at.device != Some(session.did.as_str()) {
        return Err(SessionRefused::OtherDevice);
    }
    if view.revocations.session_revoked(
        &session.sid,
        &session.idp,
        &session.sub,
        session.iat,
        session.rev,
    ) {
        return Err(SessionRefused::Revoked);
    }
    let user = UserKey {
        provider: session.idp.clone(),
        subject: session.sub.clone(),
    };
    let mfa = mfa_token.and_then(|t| {
        let m = view.keyring.verify_mfa(t, &session.sid, now).ok()?;
        if m.sub != session.sub {
            return None;
        }
        view.usable_factor(&user, &m.factor_id)?;
        let proof = MfaProof {
            method: m.method,
            factor_id: m.factor_id,
            authenticated_at: jiff::Timestamp::from_second(m.auth_time).ok()?,
            user_verified: m.uv,
        };
        Some((proof, t.to_string()))
    });
    let (mfa, mfa_token) = match mfa {
        Some((proof, token)) => (Some(proof), Some(token)),
        None => (None, None),
    };
    let identity = identity_of(&session, mfa);
    Ok(Some(Caller {
        session,
        identity,
        mfa_token,
    }))
}

/// The identity `decide()` sees for a session, with the MFA proof that counts.
fn identity_of(session: &SessionClaims, mfa: Option<MfaProof>) -> Identity {
    let times = jiff::Timestamp::from_second(session.iat)
        .ok()
        .zip(jiff::Timestamp::from_second(session.last_active).ok())
        .map(|(issued_at, last_active)| SessionTimes {
            issued_at,
            last_active,
        });
    Identity {
        provider: session.idp.clone(),
        subject: session.sub.clone(),
        email: session.email.clone(),
        groups: session.groups.clone(),
        claims: session.claims.clone(),
        mfa,
        session: times,
    }
}
