//! Cookies: reading them from requests, writing Palisade's own, keeping them away from upstreams,
//! and sealed short-lived state (login attempts now, WebAuthn ceremonies later) so that any edge
//! can finish what another began without shared storage.
//!
//! Every Palisade cookie uses the `__Host-` prefix (Secure, `Path=/`, no `Domain`), HttpOnly and
//! `SameSite=Lax`.
//!
//! Sealed state format: `s1.<kid>.<base64url(nonce || AES-256-GCM ciphertext || tag)>`. The key
//! is derived from the catalog signing key named by `kid` (so it rotates with it), and the
//! additional data binds the ciphertext to its purpose: a login state can never be opened as
//! anything else. The plaintext carries its own expiry.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{COOKIE, HeaderMap, HeaderValue};
use palisade_policy::token::KeyRing;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// The SSO session cookie.
pub const SESSION: &str = "__Host-palisade-session";
/// The MFA assertion cookie.
pub const MFA: &str = "__Host-palisade-mfa";
/// Prefix of login-attempt cookies; the rest of the name is derived from the OAuth `state`.
pub const LOGIN_PREFIX: &str = "__Host-palisade-login-";
/// Every Palisade cookie starts with this; such cookies are never forwarded upstream.
pub const OWN_PREFIX: &str = "__Host-palisade";
/// Largest sealed value accepted.
const MAX_SEALED: usize = 4096;

/// Iterates over `name=value` pairs of every `Cookie` header.
pub fn pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|p| {
            let (n, v) = p.trim().split_once('=')?;
            Some((n.trim(), v.trim().trim_matches('"')))
        })
}

/// The value of cookie `name`. When the client sent the name twice, `None`: an attacker able to
/// plant a cookie must not choose which one Palisade reads.
pub fn get<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut found = pairs(headers).filter(|(n, _)| *n == name).map(|(_, v)| v);
    let first = found.next()?;
    match found.next() {
        Some(_) => None,
        None => Some(first),
    }
}

/// A `Set-Cookie` value for one of Palisade's cookies.
pub fn set(name: &str, value: &str, max_age_secs: i64) -> HeaderValue {
    let v = format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age={}",
        max_age_secs.max(0)
    );
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// A `Set-Cookie` value that deletes one of Palisade's cookies.
pub fn clear(name: &str) -> HeaderValue {
    set(name, "", 0)
}

/// Removes Palisade's own cookies from the request, keeping the application's.
pub fn strip_own(headers: &mut HeaderMap) {
    if !pairs(headers).any(|(n, _)| n.starts_with(OWN_PREFIX)) {
        return;
    }
    let kept: Vec<String> = pairs(headers)
        .filter(|(n, _)| !n.starts_with(OWN_PREFIX))
        .map(|(n, v)| format!("{n}={v}"))
        .collect();
    headers.remove(COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::from_str(&kept.join("; "))
    {
        headers.insert(COOKIE, v);
    }
}

/// Why sealed state could not be opened. Shown to users as "start again".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Not sealed state, or tampered with.
    #[error("the sign-in state is invalid")]
    Invalid,
    /// Sealed under a key that has since been retired.
    #[error("the sign-in state was sealed with a retired key")]
    UnknownKey,
    /// Too old.
    #[error("the sign-in attempt took too long")]
    Expired,
    /// No signing key yet (the edge has no snapshot).
    #[error("this edge has no signing key yet")]
    NoKey,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    exp: i64,
    v: T,
}

fn label(purpose: &str) -> Vec<u8> {
    format!("state-seal/{purpose}").into_bytes()
}

fn aad(purpose: &str, kid: &str) -> Vec<u8> {
    format!("palisade/state/v1\0{purpose}\0{kid}").into_bytes()
}

/// Seals `value` for `purpose`, valid until `exp` (unix seconds).
pub fn seal<T: Serialize>(
    ring: &KeyRing,
    purpose: &str,
    value: &T,
    exp: i64,
) -> Result<String, StateError> {
    let (kid, key) = ring
        .derive(None, &label(purpose))
        .ok_or(StateError::NoKey)?;
    let mut buf =
        serde_json::to_vec(&Envelope { exp, v: value }).map_err(|_| StateError::Invalid)?;
    let mut nonce = [0u8; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| StateError::NoKey)?;
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).map_err(|_| StateError::NoKey)?);
    k.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad(purpose, &kid)),
        &mut buf,
    )
    .map_err(|_| StateError::Invalid)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&buf);
    Ok(format!("s1.{kid}.{}", URL_SAFE_NO_PAD.encode(out)))
}

/// Opens sealed state for `purpose` at `now` (unix seconds).
pub fn open<T: for<'de> Deserialize<'de>>(
    ring: &KeyRing,
    purpose: &str,
    sealed: &str,
    now: i64,
) -> Result<T, StateError> {
    if sealed.len() > MAX_SEALED {
        return Err(StateError::Invalid);
    }
    let mut parts = sealed.split('.');
    let (Some("s1"), Some(kid), Some(body), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(StateError::Invalid);
    };
    let (_, key) = ring
        .derive(Some(kid), &label(purpose))
        .ok_or(StateError::UnknownKey)?;
    let mut raw = URL_SAFE_NO_PAD
        .decode(body)
        .map_err(|_| StateError::Invalid)?;
    if raw.len() < NONCE_LEN + AES_256_GCM.tag_len() {
        return Err(StateError::Invalid);
    }
    let mut ct = raw.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&raw).map_err(|_| StateError::Invalid)?;
    let k = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).map_err(|_| StateError::NoKey)?);
    let plain = k
        .open_in_place(nonce, Aad::from(aad(purpose, kid)), &mut ct)
        .map_err(|_| StateError::Invalid)?;
    let env: Envelope<T> = serde_json::from_slice(plain).map_err(|_| StateError::Invalid)?;
    if now >= env.exp {
        return Err(StateError::Expired);
    }
    Ok(env.v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_policy::token::SigningKey;
    use proptest::prelude::*;

    fn ring(kid: &str, byte: u8) -> KeyRing {
        KeyRing::new([SigningKey {
            kid: kid.into(),
            secret: vec![byte; 32],
            active: true,
        }])
    }

    #[test]
    fn round_trip_and_purpose_binding() {
        let r = ring("k1", 7);
        let s = seal(&r, "login", &"hello".to_string(), 100).unwrap();
        assert_eq!(open::<String>(&r, "login", &s, 99).unwrap(), "hello");
        assert_eq!(
            open::<String>(&r, "webauthn", &s, 99),
            Err(StateError::Invalid)
        );
        assert_eq!(
            open::<String>(&r, "login", &s, 100),
            Err(StateError::Expired)
        );
        assert_eq!(
            open::<String>(&ring("k1", 8), "login", &s, 99),
            Err(StateError::Invalid)
        );
        assert_eq!(
            open::<String>(&ring("k2", 7), "login", &s, 99),
            Err(StateError::UnknownKey)
        );
        // one flipped character anywhere is refused
        for i in 3..s.len() {
            let mut b = s.clone().into_bytes();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            let t = String::from_utf8(b).unwrap();
            assert!(open::<String>(&r, "login", &t, 99).is_err(), "index {i}");
        }
    }

    #[test]
    fn cookies_are_read_strictly_and_stripped() {
        let mut h = HeaderMap::new();
        h.append(
            COOKIE,
            HeaderValue::from_static("a=1; __Host-palisade-session=x"),
        );
        h.append(COOKIE, HeaderValue::from_static("b=2"));
        assert_eq!(get(&h, SESSION), Some("x"));
        assert_eq!(get(&h, "b"), Some("2"));
        strip_own(&mut h);
        assert_eq!(h.get(COOKIE).unwrap(), "a=1; b=2");
        let mut dup = HeaderMap::new();
        dup.append(
            COOKIE,
            HeaderValue::from_static("__Host-palisade-session=x; __Host-palisade-session=y"),
        );
        assert_eq!(get(&dup, SESSION), None);
        strip_own(&mut dup);
        assert!(dup.get(COOKIE).is_none());
        let v = set(SESSION, "tok", 60);
        assert_eq!(
            v,
            "__Host-palisade-session=tok; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=60"
        );
    }

    proptest! {
        #[test]
        fn opening_arbitrary_input_never_panics(s in ".{0,300}", t in "s1\\.k1\\.[A-Za-z0-9_-]{0,200}") {
            let r = ring("k1", 1);
            let _ = open::<serde_json::Value>(&r, "login", &s, 0);
            let _ = open::<serde_json::Value>(&r, "login", &t, 0);
        }

        #[test]
        fn cookie_parsing_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut h = HeaderMap::new();
            if let Ok(v) = HeaderValue::from_bytes(&raw) {
                h.insert(COOKIE, v);
            }
            let _ = get(&h, SESSION);
            strip_own(&mut h);
        }
    }
}
