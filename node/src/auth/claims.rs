//! The session an edge issues after a sign-in: the provider's claims mapped as the policy
//! says, and how the edge names the caller to the controllers.

use std::time::Duration;

use palisade_edge_core::Caller;
use palisade_policy::document::IdentityProvider;
use palisade_policy::token::SessionClaims;
use palisade_proto::v1 as pb;
use serde_json::Value;

use crate::oidc::random_token;

/// Most claims (in bytes of JSON) carried in a session beyond the standard ones.
const MAX_EXTRA_CLAIMS: usize = 1024;

/// Who the edge acts for in calls to the controllers.
pub(crate) trait UserRefOf {
    /// The caller as the controllers' `EdgeAuth` names a user.
    fn user_ref(&self) -> pb::UserRef;
}

impl UserRefOf for Caller {
    fn user_ref(&self) -> pb::UserRef {
        pb::UserRef {
            identity_provider: self.session.idp.clone(),
            subject: self.session.sub.clone(),
            session_id: self.session.sid.clone(),
            mfa_assertion: self.mfa_token.clone().unwrap_or_default(),
            email: self.session.email.clone(),
        }
    }
}

/// What a new session is issued with, besides the provider's claims.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Issue<'a> {
    /// The host it is issued for.
    pub(crate) host: &'a str,
    /// When (unix seconds).
    pub(crate) now: i64,
    /// The application's session lifetime.
    pub(crate) lifetime: Duration,
    /// The application's idle timeout.
    pub(crate) idle: Duration,
    /// The catalog revision this edge enforces.
    pub(crate) revision: u64,
    /// The device the user signs in from (its current certificate was presented): the session
    /// is bound to it.
    pub(crate) device: Option<&'a str>,
}

fn claim_strings(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// Builds the session from the provider's claims, as the provider's claim mapping says. The
/// email counts only if the provider may assert it (`email_verified`, the provider's domains);
/// otherwise the session has none.
pub(crate) fn session_claims(
    p: &IdentityProvider,
    subject: &str,
    claims: &serde_json::Map<String, Value>,
    at: Issue<'_>,
) -> Result<SessionClaims, crate::oidc::ProviderError> {
    let Issue {
        host,
        now,
        lifetime,
        idle,
        revision,
        device,
    } = at;
    let first = |name: &str| {
        claim_strings(claims.get(name))
            .into_iter()
            .next()
            .unwrap_or_default()
    };
    const SKIP: &[&str] = &[
        "iss",
        "aud",
        "exp",
        "iat",
        "nbf",
        "nonce",
        "at_hash",
        "c_hash",
        "email_verified",
        "auth_time",
        "sid",
        "azp",
        "jti",
        "sub",
        "acr",
        "amr",
    ];
    let mut extra = std::collections::BTreeMap::new();
    let mut size = 0;
    for (k, v) in claims {
        if SKIP.contains(&k.as_str())
            || *k == p.claims.email
            || *k == p.claims.groups
            || *k == p.claims.name
        {
            continue;
        }
        let vals = claim_strings(Some(v));
        let cost = k.len() + vals.iter().map(|s| s.len() + 3).sum::<usize>();
        if vals.is_empty() || size + cost > MAX_EXTRA_CLAIMS {
            continue;
        }
        size += cost;
        extra.insert(k.clone(), vals);
    }
    let verified = match claims.get("email_verified") {
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => s == "true",
        _ => false,
    };
    let email = p
        .accepted_email(&first(&p.claims.email), verified)
        .unwrap_or_default();
    Ok(SessionClaims {
        sid: random_token()?,
        idp: p.id.clone(),
        sub: subject.to_string(),
        email,
        name: first(&p.claims.name),
        groups: claim_strings(claims.get(&p.claims.groups)),
        claims: extra,
        aud: host.to_string(),
        iat: now,
        exp: now + lifetime.as_secs() as i64,
        last_active: now,
        idle_secs: idle.as_secs() as i64,
        rev: revision,
        did: device.unwrap_or_default().to_string(),
    })
}
