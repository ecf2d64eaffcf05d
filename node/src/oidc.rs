//! OpenID Connect relying party: discovery, the JWKS cache, the authorization request (code flow
//! with PKCE, `state` and `nonce`), the code exchange, and ID token validation per OIDC Core
//! 3.1.3.7.
//!
//! Providers are named in the policy (issuer, client id, the name of the catalog secret holding
//! the client secret), so they change with the catalog like everything else. Discovery documents
//! are fetched on first use and kept for an hour; a JWKS is refetched when a token names a key the
//! cache does not hold (the provider rotated), at most once every 2 seconds per provider.
//!
//! Validation is strict: the issuer must match exactly, the audience must contain our client id
//! (and `azp`, when present with several audiences, must be it), `exp` is checked with 60 s of
//! skew, the nonce must be the one this login attempt sent, and the signature must verify with an
//! asymmetric algorithm from the allow-list against the provider's JWKS. `none` and every HMAC
//! algorithm are refused outright, which rules out the HS256-with-the-RSA-public-key confusion.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use palisade_policy::document::IdentityProvider;
use ring::rand::{SecureRandom, SystemRandom};
use serde::Deserialize;
use serde_json::{Map, Value};
use subtle::ConstantTimeEq;

/// Clock skew tolerated on `exp`/`iat`, in seconds.
pub const SKEW_SECS: u64 = 60;
/// Algorithms an ID token may be signed with.
pub const ALLOWED_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];
const DISCOVERY_TTL: Duration = Duration::from_secs(3600);
const JWKS_REFETCH_MIN: Duration = Duration::from_secs(2);
const MAX_DOCUMENT: usize = 512 * 1024;

/// Why an ID token (or the exchange that produced it) was refused. Messages are safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    /// Not a JWT.
    #[error("the ID token is malformed")]
    Malformed,
    /// `none`, an HMAC algorithm, or another algorithm not on the allow-list.
    #[error("the ID token is signed with a refused algorithm ({0})")]
    Algorithm(String),
    /// No key in the provider's JWKS matches.
    #[error("the ID token is signed with a key the provider does not publish")]
    UnknownKey,
    /// The signature does not verify.
    #[error("the ID token signature does not verify")]
    Signature,
    /// `iss` is not the provider's issuer.
    #[error("the ID token was issued by another issuer")]
    Issuer,
    /// `aud` does not contain our client id, or `azp` names another client.
    #[error("the ID token is meant for another client")]
    Audience,
    /// Past `exp`.
    #[error("the ID token has expired")]
    Expired,
    /// Issued in the future.
    #[error("the ID token is not valid yet")]
    NotYetValid,
    /// The nonce is not the one this login sent (a replayed or injected token).
    #[error("the ID token's nonce does not match this sign-in")]
    Nonce,
    /// A required claim is missing.
    #[error("the ID token lacks the {0} claim")]
    MissingClaim(String),
}

/// What validation yields: every claim of the token.
#[derive(Debug, Clone)]
pub struct IdClaims {
    /// `sub`.
    pub subject: String,
    /// All claims.
    pub all: Map<String, Value>,
}

/// What the token must satisfy.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    /// The provider's issuer, exactly.
    pub issuer: &'a str,
    /// Our client id.
    pub client_id: &'a str,
    /// The nonce this login attempt sent.
    pub nonce: &'a str,
}

/// Validates an ID token (OIDC Core 3.1.3.7) against the provider's keys. Pure apart from the
/// system clock jsonwebtoken reads for `exp`.
pub fn validate_id_token(
    token: &str,
    expected: &Expected<'_>,
    keys: &JwkSet,
) -> Result<IdClaims, IdTokenError> {
    if token.len() > 16 * 1024 {
        return Err(IdTokenError::Malformed);
    }
    let alg = header_alg(token)?;
    let header = jsonwebtoken::decode_header(token).map_err(|_| IdTokenError::Malformed)?;
    if header.alg != alg || !ALLOWED_ALGS.contains(&alg) {
        return Err(IdTokenError::Algorithm(format!("{alg:?}")));
    }
    let jwk = find_key(keys, header.kid.as_deref(), alg).ok_or(IdTokenError::UnknownKey)?;
    let key = DecodingKey::from_jwk(jwk).map_err(|_| IdTokenError::UnknownKey)?;
    let mut v = Validation::new(alg);
    v.leeway = SKEW_SECS;
    v.set_issuer(&[expected.issuer]);
    v.set_audience(&[expected.client_id]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    v.validate_nbf = true;
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidSignature => IdTokenError::Signature,
            K::InvalidIssuer => IdTokenError::Issuer,
            K::InvalidAudience => IdTokenError::Audience,
            K::ExpiredSignature => IdTokenError::Expired,
            K::ImmatureSignature => IdTokenError::NotYetValid,
            K::MissingRequiredClaim(c) => IdTokenError::MissingClaim(c.clone()),
            K::InvalidAlgorithm | K::MissingAlgorithm | K::UnsupportedAlgorithm => {
                IdTokenError::Algorithm(format!("{alg:?}"))
            }
            _ => IdTokenError::Malformed,
        }
    })?;
    let claims = data.claims;
    // iat in the future beyond skew
    let now = jsonwebtoken::get_current_timestamp();
    if let Some(iat) = claims.get("iat").and_then(Value::as_u64)
        && iat > now + SKEW_SECS
    {
        return Err(IdTokenError::NotYetValid);
    }
    // azp: with several audiences it must be present and be us; when present it must be us.
    let several_audiences = claims
        .get("aud")
        .and_then(Value::as_array)
        .is_some_and(|a| a.len() > 1);
    match claims.get("azp").and_then(Value::as_str) {
        Some(azp) if azp != expected.client_id => return Err(IdTokenError::Audience),
        None if several_audiences => return Err(IdTokenError::Audience),
        _ => {}
    }
    let nonce = claims.get("nonce").and_then(Value::as_str).unwrap_or("");
    if nonce.is_empty() || !bool::from(nonce.as_bytes().ct_eq(expected.nonce.as_bytes())) {
        return Err(IdTokenError::Nonce);
    }
    let subject = claims
        .get("sub")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| IdTokenError::MissingClaim("sub".into()))?
        .to_string();
    Ok(IdClaims {
        subject,
        all: claims,
    })
}

/// Reads `alg` from the raw header, so that `none` and unknown algorithms get a precise error
/// instead of a parse failure.
fn header_alg(token: &str) -> Result<Algorithm, IdTokenError> {
    let head = token.split('.').next().ok_or(IdTokenError::Malformed)?;
    let raw = URL_SAFE_NO_PAD
        .decode(head.trim_end_matches('='))
        .map_err(|_| IdTokenError::Malformed)?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| IdTokenError::Malformed)?;
    let name = v
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(IdTokenError::Malformed)?;
    name.parse::<Algorithm>()
        .map_err(|_| IdTokenError::Algorithm(name.chars().take(16).collect()))
}

fn find_key<'a>(keys: &'a JwkSet, kid: Option<&str>, alg: Algorithm) -> Option<&'a Jwk> {
    use jsonwebtoken::jwk::AlgorithmParameters as P;
    let fits = |k: &Jwk| {
        let family_ok = matches!(
            (&k.algorithm, alg),
            (
                P::RSA(_),
                Algorithm::RS256
                    | Algorithm::RS384
                    | Algorithm::RS512
                    | Algorithm::PS256
                    | Algorithm::PS384
                    | Algorithm::PS512
            ) | (P::EllipticCurve(_), Algorithm::ES256 | Algorithm::ES384)
                | (P::OctetKeyPair(_), Algorithm::EdDSA)
        );
        let alg_ok = k
            .common
            .key_algorithm
            .is_none_or(|ka| format!("{ka:?}") == format!("{alg:?}"));
        let use_ok = !matches!(
            k.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        );
        family_ok && alg_ok && use_ok
    };
    match kid {
        Some(kid) => keys
            .keys
            .iter()
            .find(|k| k.common.key_id.as_deref() == Some(kid) && fits(k)),
        None => {
            let mut it = keys.keys.iter().filter(|k| fits(k));
            let first = it.next()?;
            it.next().is_none().then_some(first)
        }
    }
}

/// The parts of a discovery document Palisade uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// Must equal the configured issuer.
    pub issuer: String,
    /// Where the browser goes.
    pub authorization_endpoint: String,
    /// Where the code is exchanged.
    pub token_endpoint: String,
    /// The provider's keys.
    pub jwks_uri: String,
    /// Claims for an access token.
    #[serde(default)]
    pub userinfo_endpoint: Option<String>,
    /// Logout at the provider (RP-initiated logout), if offered.
    #[serde(default)]
    pub end_session_endpoint: Option<String>,
}

/// Why talking to a provider failed. Logged in full; users see a generic message.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Network or HTTP failure.
    #[error("{0}")]
    Http(String),
    /// The document was not what OIDC says.
    #[error("{0}")]
    Invalid(String),
    /// The token endpoint refused the code.
    #[error("the provider refused the authorization code: {0}")]
    Refused(String),
    /// The ID token failed validation.
    #[error(transparent)]
    IdToken(#[from] IdTokenError),
}

struct Cached {
    discovery: Discovery,
    fetched: Instant,
    jwks: JwkSet,
    jwks_fetched: Instant,
}

/// A fresh login attempt: what goes in the sealed cookie and in the authorization URL.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The OAuth state.
    pub state: String,
    /// The OIDC nonce.
    pub nonce: String,
    /// The PKCE verifier (S256).
    pub verifier: String,
}

impl Attempt {
    /// Random state, nonce and verifier (256 bits each).
    pub fn new() -> Result<Self, ProviderError> {
        Ok(Self {
            state: random_token()?,
            nonce: random_token()?,
            verifier: random_token()?,
        })
    }

    /// The S256 PKCE challenge.
    pub fn challenge(&self) -> String {
        URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            self.verifier.as_bytes(),
        ))
    }
}

/// 256 random bits, base64url.
pub fn random_token() -> Result<String, ProviderError> {
    let mut b = [0u8; 32];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| ProviderError::Invalid("no randomness".into()))?;
    Ok(URL_SAFE_NO_PAD.encode(b))
}

/// The result of a successful code exchange.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// `sub`.
    pub subject: String,
    /// ID token claims, with userinfo claims added when the mapping needs them.
    pub claims: Map<String, Value>,
}

/// The relying party: an HTTP client and the per-provider caches.
pub struct RelyingParty {
    http: reqwest::Client,
    cache: Mutex<HashMap<String, Arc<Cached>>>,
}

impl std::fmt::Debug for RelyingParty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelyingParty").finish_non_exhaustive()
    }
}

impl RelyingParty {
    /// A relying party trusting the web PKI plus the CA certificates in `extra_roots` (PEM).
    pub fn new(extra_roots: Option<&str>) -> Result<Self, String> {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .user_agent("palisade-edge");
        if let Some(pem) = extra_roots {
            for c in reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| format!("identity provider CA bundle: {e}"))?
            {
                b = b.add_root_certificate(c);
            }
        }
        Ok(Self {
            http: b.build().map_err(|e| e.to_string())?,
            cache: Mutex::new(HashMap::new()),
        })
    }

    fn cache_key(p: &IdentityProvider) -> String {
        format!("{}\0{}", p.id, p.issuer)
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, url: &str) -> Result<T, ProviderError> {
        let r = self
            .http
            .get(url)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| ProviderError::Http(format!("GET {url}: {e}")))?;
        let status = r.status();
        if !status.is_success() {
            return Err(ProviderError::Http(format!("GET {url}: HTTP {status}")));
        }
        let body = read_limited(r, MAX_DOCUMENT, url).await?;
        serde_json::from_slice(&body).map_err(|e| ProviderError::Invalid(format!("GET {url}: {e}")))
    }

    async fn provider(
        &self,
        p: &IdentityProvider,
        force_jwks: bool,
    ) -> Result<Arc<Cached>, ProviderError> {
        let key = Self::cache_key(p);
        let cached = self
            .cache
            .lock()
            .map_err(|_| ProviderError::Invalid("cache poisoned".into()))?
            .get(&key)
            .cloned();
        if let Some(c) = &cached {
            let fresh = c.fetched.elapsed() < DISCOVERY_TTL;
            let jwks_ok = !force_jwks || c.jwks_fetched.elapsed() < JWKS_REFETCH_MIN;
            if fresh && jwks_ok {
                return Ok(c.clone());
            }
        }
        let discovery: Discovery = match &cached {
            Some(c) if c.fetched.elapsed() < DISCOVERY_TTL => c.discovery.clone(),
            _ => {
                let url = format!(
                    "{}/.well-known/openid-configuration",
                    p.issuer.trim_end_matches('/')
                );
                let d: Discovery = self.get_json(&url).await?;
                if d.issuer != p.issuer {
                    return Err(ProviderError::Invalid(format!(
                        "discovery at {url} names issuer {:?}, not {:?}",
                        d.issuer, p.issuer
                    )));
                }
                d
            }
        };
        let jwks: JwkSet = self.get_json(&discovery.jwks_uri).await?;
        let now = Instant::now();
        let c = Arc::new(Cached {
            fetched: match &cached {
                Some(c) if c.discovery.issuer == discovery.issuer && !force_jwks => c.fetched,
                _ => now,
            },
            discovery,
            jwks,
            jwks_fetched: now,
        });
        if let Ok(mut m) = self.cache.lock() {
            m.insert(key, c.clone());
        }
        Ok(c)
    }

    /// The discovery document (fetching it if needed).
    pub async fn discovery(&self, p: &IdentityProvider) -> Result<Discovery, ProviderError> {
        Ok(self.provider(p, false).await?.discovery.clone())
    }

    /// The authorization URL for one attempt.
    pub async fn authorization_url(
        &self,
        p: &IdentityProvider,
        redirect_uri: &str,
        a: &Attempt,
    ) -> Result<String, ProviderError> {
        let d = self.discovery(p).await?;
        let mut u = url::Url::parse(&d.authorization_endpoint)
            .map_err(|e| ProviderError::Invalid(format!("authorization_endpoint: {e}")))?;
        let scopes = if p.scopes.is_empty() {
            "openid email profile".to_string()
        } else {
            let mut s = p.scopes.clone();
            if !s.iter().any(|x| x == "openid") {
                s.insert(0, "openid".into());
            }
            s.join(" ")
        };
        u.query_pairs_mut()
            .append_pair("response_type", "code")
            .append_pair("client_id", &p.client_id)
            .append_pair("redirect_uri", redirect_uri)
            .append_pair("scope", &scopes)
            .append_pair("state", &a.state)
            .append_pair("nonce", &a.nonce)
            .append_pair("code_challenge", &a.challenge())
            .append_pair("code_challenge_method", "S256");
        Ok(u.into())
    }

    /// Exchanges the code, validates the ID token and, when the claim mapping needs claims the ID
    /// token lacks, reads the userinfo endpoint.
    pub async fn exchange(
        &self,
        p: &IdentityProvider,
        client_secret: &str,
        redirect_uri: &str,
        code: &str,
        verifier: &str,
        nonce: &str,
    ) -> Result<SignedIn, ProviderError> {
        let c = self.provider(p, false).await?;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ];
        let r = self
            .http
            .post(&c.discovery.token_endpoint)
            .basic_auth(form_encode(&p.client_id), Some(form_encode(client_secret)))
            .header("accept", "application/json")
            .form(&form)
            .send()
            .await
            .map_err(|e| ProviderError::Http(format!("token endpoint: {e}")))?;
        let status = r.status();
        let body = read_limited(r, MAX_RESPONSE, "token endpoint").await?;
        let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        if !status.is_success() {
            let err = v
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            return Err(ProviderError::Refused(format!("HTTP {status}: {err}")));
        }
        let id_token = v
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::Invalid("the token response has no id_token".into()))?;
        let expected = Expected {
            issuer: &p.issuer,
            client_id: &p.client_id,
            nonce,
        };
        let claims = match validate_id_token(id_token, &expected, &c.jwks) {
            Err(IdTokenError::UnknownKey) => {
                // the provider may have rotated its keys since we cached them
                let c = self.provider(p, true).await?;
                validate_id_token(id_token, &expected, &c.jwks)?
            }
            other => other?,
        };
        let mut all = claims.all;
        let wanted = [&p.claims.email, &p.claims.groups, &p.claims.name];
        let missing = wanted
            .iter()
            .any(|c| !c.is_empty() && !all.contains_key(*c));
        if missing
            && let (Some(ui), Some(at)) = (
                c.discovery.userinfo_endpoint.as_deref(),
                v.get("access_token").and_then(Value::as_str),
            )
        {
            match self.userinfo(ui, at).await {
                Ok(info) if info.get("sub").and_then(Value::as_str) == Some(&claims.subject) => {
                    for (k, val) in info {
                        all.entry(k).or_insert(val);
                    }
                }
                Ok(_) => {
                    return Err(ProviderError::Invalid(
                        "userinfo names another subject than the ID token".into(),
                    ));
                }
                Err(e) => tracing::warn!(provider = %p.id, error = %e, "userinfo unavailable"),
            }
        }
        Ok(SignedIn {
            subject: claims.subject,
            claims: all,
        })
    }

    async fn userinfo(&self, url: &str, token: &str) -> Result<Map<String, Value>, ProviderError> {
        let r = self
            .http
            .get(url)
            .bearer_auth(token)
            .header("accept", "application/json")
            .send()
            .await
            .map_err(|e| ProviderError::Http(format!("userinfo: {e}")))?;
        if !r.status().is_success() {
            return Err(ProviderError::Http(format!(
                "userinfo: HTTP {}",
                r.status()
            )));
        }
        let body = read_limited(r, MAX_RESPONSE, "userinfo").await?;
        serde_json::from_slice(&body).map_err(|e| ProviderError::Invalid(format!("userinfo: {e}")))
    }
}

/// Largest token or userinfo response read from a provider.
const MAX_RESPONSE: usize = 64 * 1024;

/// Reads a response body of at most `max` bytes: a larger declared length is refused before
/// reading, and a body that grows past it is abandoned, so a provider cannot make an edge
/// buffer without bound.
async fn read_limited(
    mut r: reqwest::Response,
    max: usize,
    what: &str,
) -> Result<Vec<u8>, ProviderError> {
    let too_large = || ProviderError::Invalid(format!("{what}: response larger than {max} bytes"));
    if r.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = r
        .chunk()
        .await
        .map_err(|e| ProviderError::Http(format!("{what}: {e}")))?
    {
        if body.len() + chunk.len() > max {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// `application/x-www-form-urlencoded` encoding of a client id or secret for HTTP Basic, as
/// RFC 6749 2.3.1 requires.
fn form_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    /// A provider answering with more than a response may hold is refused without buffering
    /// it all (review finding L4), whether it declares its length or streams.
    #[tokio::test]
    async fn provider_responses_are_read_within_a_limit() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for chunked in [false, true] {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                let head = if chunked {
                    "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_string()
                } else {
                    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", 10 << 20)
                };
                let _ = s.write_all(head.as_bytes()).await;
                let chunk = vec![b'a'; 65_536];
                for _ in 0..160 {
                    let data = if chunked {
                        let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
                        c.extend_from_slice(&chunk);
                        c.extend_from_slice(b"\r\n");
                        c
                    } else {
                        chunk.clone()
                    };
                    if s.write_all(&data).await.is_err() {
                        break;
                    }
                }
            }
        });
        let http = reqwest::Client::new();
        for _ in 0..2 {
            let r = http
                .get(format!("http://{addr}/token"))
                .send()
                .await
                .expect("response");
            let e = read_limited(r, MAX_RESPONSE, "token endpoint")
                .await
                .expect_err("too large");
            assert!(e.to_string().contains("larger than"), "{e}");
        }
    }

    struct Idp {
        jwks: JwkSet,
        key: EncodingKey,
        public_pem: Vec<u8>,
    }

    fn idp() -> Idp {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let key = EncodingKey::from_ec_der(&pair.serialize_der());
        let public_pem = pair.public_key_pem().into_bytes();
        let jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        let mut jwk = jwk;
        jwk.common.key_id = Some("k1".into());
        Idp {
            jwks: JwkSet { keys: vec![jwk] },
            key,
            public_pem,
        }
    }

    fn claims(now: u64) -> Value {
        json!({"iss": "https://idp.test", "aud": "edge", "sub": "alice", "nonce": "n1",
               "iat": now, "exp": now + 300, "email": "alice@example.com"})
    }

    fn sign(i: &Idp, c: &Value) -> String {
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k1".into());
        jsonwebtoken::encode(&h, c, &i.key).unwrap()
    }

    const EXP: Expected<'static> = Expected {
        issuer: "https://idp.test",
        client_id: "edge",
        nonce: "n1",
    };

    #[test]
    fn a_good_token_validates() {
        let i = idp();
        let now = jsonwebtoken::get_current_timestamp();
        let c = validate_id_token(&sign(&i, &claims(now)), &EXP, &i.jwks).unwrap();
        assert_eq!(c.subject, "alice");
        assert_eq!(c.all["email"], "alice@example.com");
    }

    #[test]
    fn each_violation_has_its_own_error() {
        let i = idp();
        let now = jsonwebtoken::get_current_timestamp();
        let with = |k: &str, v: Value| {
            let mut c = claims(now);
            c[k] = v;
            sign(&i, &c)
        };
        let check = |t: String, e: IdTokenError| {
            assert_eq!(validate_id_token(&t, &EXP, &i.jwks).unwrap_err(), e);
        };
        check(
            with("iss", json!("https://evil.test")),
            IdTokenError::Issuer,
        );
        check(
            with("iss", json!("https://idp.test/")),
            IdTokenError::Issuer,
        );
        check(with("aud", json!("other")), IdTokenError::Audience);
        check(
            with("aud", json!(["other", "edge"])),
            IdTokenError::Audience,
        );
        check(with("azp", json!("other")), IdTokenError::Audience);
        check(with("exp", json!(now - 120)), IdTokenError::Expired);
        check(with("iat", json!(now + 600)), IdTokenError::NotYetValid);
        check(with("nonce", json!("n0")), IdTokenError::Nonce);
        let mut c = claims(now);
        c.as_object_mut().unwrap().remove("nonce");
        check(sign(&i, &c), IdTokenError::Nonce);
        let mut c = claims(now);
        c.as_object_mut().unwrap().remove("sub");
        check(sign(&i, &c), IdTokenError::MissingClaim("sub".into()));
        // several audiences are fine with azp naming us
        let mut c = claims(now);
        c["aud"] = json!(["other", "edge"]);
        c["azp"] = json!("edge");
        assert!(validate_id_token(&sign(&i, &c), &EXP, &i.jwks).is_ok());
        // a key the provider does not publish
        let other = idp();
        check(sign(&other, &claims(now)), IdTokenError::Signature);
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some("k9".into());
        let t = jsonwebtoken::encode(&h, &claims(now), &other.key).unwrap();
        check(t, IdTokenError::UnknownKey);
    }

    #[test]
    fn none_and_hmac_are_refused() {
        let i = idp();
        let now = jsonwebtoken::get_current_timestamp();
        let body = URL_SAFE_NO_PAD.encode(claims(now).to_string());
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#));
        assert_eq!(
            validate_id_token(&none, &EXP, &i.jwks).unwrap_err(),
            IdTokenError::Algorithm("none".into())
        );
        // HS256 keyed with the provider's public key: the classic confusion
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("k1".into());
        let t = jsonwebtoken::encode(&h, &claims(now), &EncodingKey::from_secret(&i.public_pem))
            .unwrap();
        assert_eq!(
            validate_id_token(&t, &EXP, &i.jwks).unwrap_err(),
            IdTokenError::Algorithm("HS256".into())
        );
        assert_eq!(
            validate_id_token("not a jwt", &EXP, &i.jwks).unwrap_err(),
            IdTokenError::Malformed
        );
    }

    #[test]
    fn pkce_challenge_is_s256_of_the_verifier() {
        // S256 = base64url(SHA-256(verifier)); expected value computed with Python's hashlib
        let a = Attempt {
            state: String::new(),
            nonce: String::new(),
            verifier: "dBjftJeZ4CVP-mB92K1uhHBu7vVgEI2wVC7pxeFDm3bk".into(),
        };
        assert_eq!(a.challenge(), "MELl8vBj2I-AZFydwOKHsQFviCeazzrCzbveCxBalpI");
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_tokens_never_panic(t in ".{0,400}", parts in proptest::collection::vec("[A-Za-z0-9_-]{0,80}", 0..5)) {
            let i = idp();
            let _ = validate_id_token(&t, &EXP, &i.jwks);
            let _ = validate_id_token(&parts.join("."), &EXP, &i.jwks);
        }
    }
}
