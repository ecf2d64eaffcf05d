//! The identity assertion an edge adds to every request it forwards: a short-lived JWT signed
//! with Ed25519 (EdDSA), in the `X-Palisade-Assertion` header. Upstreams verify it with the
//! public key every edge publishes at `/.well-known/palisade/jwks.json`.
//!
//! The key comes from a PEM file (PKCS#8 Ed25519) that all edges of a deployment share, so an
//! upstream behind a load balancer verifies assertions from any edge with one JWKS. Without a
//! file, an edge generates a key at start and says so: fine for one edge, wrong for many.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ring::signature::{Ed25519KeyPair, KeyPair};
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

/// Issuer of every assertion.
pub const ISSUER: &str = "palisade";
/// Lifetime of an assertion, in seconds: it covers one request.
pub const LIFETIME_SECS: i64 = 60;

/// What an upstream learns about the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssertionClaims {
    /// Always `palisade`.
    pub iss: String,
    /// The application id.
    pub aud: String,
    /// The OIDC subject, as the identity provider gave it.
    pub sub: String,
    /// The identity provider id.
    pub idp: String,
    /// Email, if known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    /// Display name, if known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Groups.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The MFA method that was passed, if any (`totp`, `webauthn`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amr: Option<String>,
    /// The policy rule that let the request in (the name `palisadectl simulate` reports).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule: String,
    /// The managed device the session is bound to (its certificate was presented on this
    /// request), if any.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub device: String,
    /// The protocol the client used: `http/1.1`, `h2` or `h3`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub proto: String,
    /// The request id, also in the edge's log.
    pub jti: String,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expiry (unix seconds).
    pub exp: i64,
}

/// Signs assertions and publishes the key.
pub struct AssertionSigner {
    kid: String,
    key: EncodingKey,
    jwks: String,
}

impl std::fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

impl AssertionSigner {
    /// Loads a PKCS#8 Ed25519 private key in PEM.
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let der = match PrivateKeyDer::from_pem_slice(pem.as_bytes()) {
            Ok(PrivateKeyDer::Pkcs8(k)) => k.secret_pkcs8_der().to_vec(),
            Ok(_) => return Err("the assertion key must be PKCS#8 (BEGIN PRIVATE KEY)".into()),
            Err(e) => return Err(format!("the assertion key is not PEM: {e}")),
        };
        Self::from_pkcs8(&der)
    }

    /// Generates a fresh key (one edge, development).
    pub fn generate() -> Result<Self, String> {
        let doc = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map_err(|_| "could not generate an Ed25519 key".to_string())?;
        Self::from_pkcs8(doc.as_ref())
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|_| "the assertion key is not an Ed25519 key".to_string())?;
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        // RFC 7638 thumbprint: members in lexicographic order, no whitespace.
        let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(sha256(canonical.as_bytes()));
        let jwks = serde_json::json!({
            "keys": [{
                "kty": "OKP",
                "crv": "Ed25519",
                "x": x,
                "kid": kid,
                "alg": "EdDSA",
                "use": "sig",
            }]
        })
        .to_string();
        Ok(Self {
            kid,
            key: EncodingKey::from_ed_der(der),
            jwks,
        })
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document.
    pub fn jwks(&self) -> &str {
        &self.jwks
    }

    /// Signs one assertion.
    pub fn sign(&self, claims: &AssertionClaims) -> Result<String, String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.key).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::jwk::JwkSet;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn signed_assertions_verify_against_the_published_jwks() {
        let s = AssertionSigner::generate().unwrap();
        let claims = AssertionClaims {
            iss: ISSUER.into(),
            aud: "wiki".into(),
            sub: "alice".into(),
            idp: "corp".into(),
            email: "alice@example.com".into(),
            name: String::new(),
            groups: vec!["eng".into()],
            amr: None,
            rule: "employees".into(),
            device: "dev-7".into(),
            proto: "h3".into(),
            jti: "r1".into(),
            iat: 1_000,
            exp: 4_000_000_000,
        };
        let token = s.sign(&claims).unwrap();
        let set: JwkSet = serde_json::from_str(s.jwks()).unwrap();
        let jwk = set.find(s.kid()).unwrap();
        let mut v = Validation::new(Algorithm::EdDSA);
        v.set_audience(&["wiki"]);
        v.set_issuer(&[ISSUER]);
        let got = jsonwebtoken::decode::<AssertionClaims>(
            &token,
            &DecodingKey::from_jwk(jwk).unwrap(),
            &v,
        )
        .unwrap();
        assert_eq!(got.claims, claims);
        // another key does not verify it
        let other = AssertionSigner::generate().unwrap();
        let set: JwkSet = serde_json::from_str(other.jwks()).unwrap();
        let k = DecodingKey::from_jwk(&set.keys[0]).unwrap();
        assert!(jsonwebtoken::decode::<AssertionClaims>(&token, &k, &v).is_err());
    }

    #[test]
    fn pem_keys_load_and_garbage_is_refused() {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let s = AssertionSigner::from_pem(&pair.serialize_pem()).unwrap();
        assert!(!s.kid().is_empty());
        assert!(AssertionSigner::from_pem("nope").is_err());
        let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(AssertionSigner::from_pem(&ec.serialize_pem()).is_err());
    }
}
