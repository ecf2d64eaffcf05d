//! Session and MFA tokens: what an edge issues after login and after MFA, and what any edge
//! verifies on every request without asking anyone.
//!
//! Format: `v1.<kid>.<payload>.<mac>`, where `payload` is base64url (no padding) JSON and `mac` is
//! HMAC-SHA256 over `palisade/<kind>/v1 \0 kid \0 payload` with the signing key named by `kid`.
//! The kind in the MAC input separates session tokens from MFA tokens, so one can never be
//! replayed as the other. Keys come from the catalog and rotate: the active key signs, every key
//! not yet retired verifies.
//!
//! Idle timeout without server state: a session token carries `last_active`; the edge re-issues
//! the cookie with a fresh `last_active` when the old one is more than a minute old
//! (`SessionClaims::should_refresh`). `now` is always an argument; nothing here reads a clock.

use std::collections::BTreeMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::document::MfaMethod;

type HmacSha256 = Hmac<Sha256>;

/// Largest token accepted, in bytes (a cookie is at most 4 KiB).
pub const MAX_TOKEN_BYTES: usize = 4096;
/// Clock skew tolerated between edges, in seconds.
pub const SKEW_SECS: i64 = 30;
/// How often the idle-timeout marker is refreshed, in seconds.
pub const REFRESH_SECS: i64 = 60;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    /// The SSO session.
    Session,
    /// An MFA assertion bound to a session.
    Mfa,
}

impl TokenKind {
    fn context(self) -> &'static [u8] {
        match self {
            TokenKind::Session => b"palisade/session/v1",
            TokenKind::Mfa => b"palisade/mfa/v1",
        }
    }
}

/// A signing key. `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKey {
    /// Key id carried in tokens.
    pub kid: String,
    /// Secret (at least 32 bytes).
    pub secret: Vec<u8>,
    /// Whether it signs new tokens (exactly one key should).
    pub active: bool,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

/// The keys an edge holds.
#[derive(Debug, Clone, Default)]
pub struct KeyRing {
    keys: Vec<(SigningKey, HmacSha256)>,
}

impl KeyRing {
    /// Builds a key ring. Keys with secrets shorter than 32 bytes or an unusable kid are skipped.
    pub fn new(keys: impl IntoIterator<Item = SigningKey>) -> Self {
        let keys = keys
            .into_iter()
            .filter(|k| k.secret.len() >= 32 && !k.kid.is_empty() && !k.kid.contains('.'))
            .filter_map(|k| HmacSha256::new_from_slice(&k.secret).ok().map(|m| (k, m)))
            .collect();
        Self { keys }
    }

    /// The active key, if any.
    pub fn active(&self) -> Option<&SigningKey> {
        self.keys.iter().map(|(k, _)| k).find(|k| k.active)
    }

    /// A 32-byte key derived from the key named `kid` (or the active key when `None`) for another
    /// purpose, as HMAC-SHA256(secret, `label`): sealed state cookies use it, so they rotate with
    /// the signing keys. Returns the kid used.
    pub fn derive(&self, kid: Option<&str>, label: &[u8]) -> Option<(String, [u8; 32])> {
        let (key, mac) = match kid {
            Some(kid) => self.keys.iter().find(|(k, _)| k.kid == kid)?,
            None => self.keys.iter().find(|(k, _)| k.active)?,
        };
        let mut m = mac.clone();
        m.update(b"palisade/derive/v1\0");
        m.update(label);
        Some((key.kid.clone(), m.finalize().into_bytes().into()))
    }

    fn mac_for(&self, kid: &str) -> Option<&HmacSha256> {
        self.keys.iter().find(|(k, _)| k.kid == kid).map(|(_, m)| m)
    }

    /// Signs claims with the active key.
    pub fn sign<T: Serialize>(&self, kind: TokenKind, claims: &T) -> Result<String, TokenError> {
        let (key, mac) = self
            .keys
            .iter()
            .find(|(k, _)| k.active)
            .ok_or(TokenError::NoActiveKey)?;
        let payload = serde_json::to_vec(claims).map_err(|_| TokenError::Malformed)?;
        let payload = URL_SAFE_NO_PAD.encode(payload);
        let tag = compute_mac(mac.clone(), kind, &key.kid, &payload);
        Ok(format!(
            "v1.{}.{}.{}",
            key.kid,
            payload,
            URL_SAFE_NO_PAD.encode(tag)
        ))
    }

    /// Checks the MAC and decodes the payload; expiry is checked by the caller's claims type.
    fn open<T: for<'de> Deserialize<'de>>(
        &self,
        kind: TokenKind,
        token: &str,
    ) -> Result<(String, T), TokenError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Malformed);
        }
        let mut parts = token.split('.');
        let (Some("v1"), Some(kid), Some(payload), Some(tag), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(TokenError::Malformed);
        };
        let mac = self.mac_for(kid).ok_or(TokenError::UnknownKey)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| TokenError::Malformed)?;
        let mut m = mac.clone();
        feed(&mut m, kind, kid, payload);
        m.verify_slice(&tag).map_err(|_| TokenError::BadSignature)?;
        let bytes = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims = serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed)?;
        Ok((kid.to_string(), claims))
    }

    /// Verifies a session token at `now` (unix seconds).
    pub fn verify_session(&self, token: &str, now: i64) -> Result<SessionClaims, TokenError> {
        self.verify_session_active(token, now, 0)
    }

    /// Verifies a session token at `now`, counting the session as active at `active_since` if
    /// that is later than the token says (a connection opened then and still open is
    /// activity). The returned claims carry the later of the two.
    pub fn verify_session_active(
        &self,
        token: &str,
        now: i64,
        active_since: i64,
    ) -> Result<SessionClaims, TokenError> {
        let (_, mut c): (_, SessionClaims) = self.open(TokenKind::Session, token)?;
        c.last_active = c.last_active.max(active_since.min(now));
        if c.iat > now + SKEW_SECS {
            return Err(TokenError::NotYetValid);
        }
        if now >= c.exp + SKEW_SECS {
            return Err(TokenError::Expired);
        }
        if now >= c.last_active.saturating_add(c.idle_secs) + SKEW_SECS {
            return Err(TokenError::IdleTimeout);
        }
        Ok(c)
    }

    /// Verifies an MFA token at `now` and checks it is bound to `session_id`.
    pub fn verify_mfa(
        &self,
        token: &str,
        session_id: &str,
        now: i64,
    ) -> Result<MfaClaims, TokenError> {
        let (_, c): (_, MfaClaims) = self.open(TokenKind::Mfa, token)?;
        if c.auth_time > now + SKEW_SECS {
            return Err(TokenError::NotYetValid);
        }
        if now >= c.exp + SKEW_SECS {
            return Err(TokenError::Expired);
        }
        if c.sid != session_id {
            return Err(TokenError::WrongSession);
        }
        Ok(c)
    }
}

fn feed(m: &mut HmacSha256, kind: TokenKind, kid: &str, payload: &str) {
    m.update(kind.context());
    m.update(b"\0");
    m.update(kid.as_bytes());
    m.update(b"\0");
    m.update(payload.as_bytes());
}

fn compute_mac(mut m: HmacSha256, kind: TokenKind, kid: &str, payload: &str) -> Vec<u8> {
    feed(&mut m, kind, kid, payload);
    m.finalize().into_bytes().to_vec()
}

/// Why a token was refused. Messages are safe to show to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format, or its payload does not decode.
    #[error("malformed token")]
    Malformed,
    /// Signed with a key this edge does not hold (retired, or forged).
    #[error("token signed with an unknown key")]
    UnknownKey,
    /// The MAC does not verify.
    #[error("token signature does not verify")]
    BadSignature,
    /// Past its absolute expiry.
    #[error("token expired")]
    Expired,
    /// Not used within the idle timeout.
    #[error("session idle for too long")]
    IdleTimeout,
    /// Issued in the future (beyond the allowed skew).
    #[error("token not yet valid")]
    NotYetValid,
    /// An MFA token presented with another session.
    #[error("MFA assertion belongs to another session")]
    WrongSession,
    /// No active key to sign with.
    #[error("no active signing key")]
    NoActiveKey,
}

/// Claims of an SSO session token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// Session id: 128 random bits, base64url.
    pub sid: String,
    /// Identity provider id.
    pub idp: String,
    /// OIDC subject.
    pub sub: String,
    /// Email.
    #[serde(default)]
    pub email: String,
    /// Display name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Groups.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Other claims used by policy.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<String, Vec<String>>,
    /// The application the session was issued for, or empty for the edge-wide session.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub aud: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Absolute expiry (unix seconds).
    pub exp: i64,
    /// Last activity (unix seconds), refreshed by the edge.
    pub last_active: i64,
    /// Idle timeout in seconds.
    pub idle_secs: i64,
    /// The catalog revision the issuing edge had applied: a user revocation at a later
    /// revision covers this session whatever the clocks say (0 in tokens from before it was
    /// carried, which every user revocation covers).
    #[serde(default)]
    pub rev: u64,
    /// The device the session was signed in from (its certificate was presented then), or
    /// empty: a bound session is refused without that device's certificate.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub did: String,
}

impl SessionClaims {
    /// Whether the edge should re-issue the cookie to move `last_active` forward.
    pub fn should_refresh(&self, now: i64) -> bool {
        now - self.last_active >= REFRESH_SECS
    }
}

/// Claims of an MFA assertion token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MfaClaims {
    /// The session it is bound to.
    pub sid: String,
    /// OIDC subject (must match the session's).
    pub sub: String,
    /// Method used.
    pub method: MfaMethod,
    /// Factor used (checked against factor revocations).
    pub factor_id: String,
    /// When the challenge was passed (unix seconds).
    pub auth_time: i64,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Whether the authenticator verified the user.
    #[serde(default)]
    pub uv: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new([
            SigningKey {
                kid: "k1".into(),
                secret: vec![7; 32],
                active: false,
            },
            SigningKey {
                kid: "k2".into(),
                secret: vec![9; 32],
                active: true,
            },
        ])
    }

    fn session(now: i64) -> SessionClaims {
        SessionClaims {
            sid: "c2Vzc2lvbi1pZC0xMjM0NQ".into(),
            idp: "corp".into(),
            sub: "alice".into(),
            email: "alice@example.com".into(),
            name: String::new(),
            groups: vec!["eng".into()],
            claims: BTreeMap::new(),
            aud: String::new(),
            iat: now,
            exp: now + 3600,
            last_active: now,
            idle_secs: 600,
            rev: 0,
            did: String::new(),
        }
    }

    #[test]
    fn round_trip_and_rotation() {
        let r = ring();
        let t = r.sign(TokenKind::Session, &session(1000)).expect("sign");
        assert!(t.starts_with("v1.k2."));
        assert_eq!(r.verify_session(&t, 1001).expect("verify"), session(1000));
        // After rotation to a new key, the old token still verifies while k2 is kept.
        let rotated = KeyRing::new([
            SigningKey {
                kid: "k2".into(),
                secret: vec![9; 32],
                active: false,
            },
            SigningKey {
                kid: "k3".into(),
                secret: vec![3; 32],
                active: true,
            },
        ]);
        assert!(rotated.verify_session(&t, 1001).is_ok());
        // Once k2 is retired, it no longer does.
        let retired = KeyRing::new([SigningKey {
            kid: "k3".into(),
            secret: vec![3; 32],
            active: true,
        }]);
        assert_eq!(
            retired.verify_session(&t, 1001),
            Err(TokenError::UnknownKey)
        );
    }

    #[test]
    fn expiry_idle_and_future() {
        let r = ring();
        let t = r.sign(TokenKind::Session, &session(1000)).expect("sign");
        assert_eq!(
            r.verify_session(&t, 1000 + 3600 + SKEW_SECS),
            Err(TokenError::Expired)
        );
        assert_eq!(
            r.verify_session(&t, 1000 + 600 + SKEW_SECS),
            Err(TokenError::IdleTimeout)
        );
        assert_eq!(
            r.verify_session(&t, 1000 - SKEW_SECS - 1),
            Err(TokenError::NotYetValid)
        );
    }

    #[test]
    fn tampering_and_kind_confusion_are_refused() {
        let r = ring();
        let t = r.sign(TokenKind::Session, &session(1000)).expect("sign");
        let mut parts: Vec<&str> = t.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sid":"x","idp":"corp","sub":"mallory","iat":1000,"exp":99999,"last_active":1000,"idle_secs":99999}"#);
        parts[2] = &forged;
        assert_eq!(
            r.verify_session(&parts.join("."), 1001),
            Err(TokenError::BadSignature)
        );
        // A session token is not an MFA token.
        assert!(r.verify_mfa(&t, "c2Vzc2lvbi1pZC0xMjM0NQ", 1001).is_err());
        for junk in ["", "v1", "v1.k2.a.b.c", "v2.k2.a.b", "v1.k2.!!!.???"] {
            assert!(r.verify_session(junk, 1001).is_err(), "{junk}");
        }
        assert_eq!(
            r.verify_session(&"a".repeat(MAX_TOKEN_BYTES + 1), 1),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn mfa_is_bound_to_its_session() {
        let r = ring();
        let m = MfaClaims {
            sid: "s1".into(),
            sub: "alice".into(),
            method: MfaMethod::SecurityKey,
            factor_id: "fac-1".into(),
            auth_time: 1000,
            exp: 2000,
            uv: true,
        };
        let t = r.sign(TokenKind::Mfa, &m).expect("sign");
        assert_eq!(r.verify_mfa(&t, "s1", 1500), Ok(m));
        assert_eq!(r.verify_mfa(&t, "s2", 1500), Err(TokenError::WrongSession));
        assert_eq!(
            r.verify_mfa(&t, "s1", 2000 + SKEW_SECS),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn short_keys_are_not_used_and_debug_hides_secrets() {
        let r = KeyRing::new([SigningKey {
            kid: "weak".into(),
            secret: vec![1; 16],
            active: true,
        }]);
        assert!(r.active().is_none());
        let k = SigningKey {
            kid: "k".into(),
            secret: b"super-secret-material-0123456789".to_vec(),
            active: true,
        };
        assert!(!format!("{k:?}").contains("super-secret"));
    }
}
