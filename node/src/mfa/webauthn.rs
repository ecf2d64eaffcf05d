//! WebAuthn at the edge: passing a security key or a platform authenticator (the MFA prompt's
//! script), and registering one from the portal.
//!
//! The ceremony state travels in a sealed, five-minute cookie bound to the session
//! (`Ceremony`, with a typed `Purpose`). The counter and the answered challenge of every
//! assertion are recorded through the controllers before the assertion counts, so a ceremony is
//! used once; a failed answer uses up its challenge too.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use palisade_edge_core::Caller;
use palisade_policy::catalog::{FactorKind, FactorRecord};
use palisade_policy::document::MfaMethod;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use webauthn_rs::prelude::{
    Passkey, PasskeyAuthentication, PublicKeyCredential, SecurityKey, SecurityKeyAuthentication,
    Url, Uuid, Webauthn, WebauthnBuilder,
};

use crate::cookie;
use crate::http::Gateway;
use crate::http::context::RequestCtx;
use crate::http::error::EdgeError;
use crate::http::framing::safe_return_to;
use crate::mfa::{
    Answer, call_failure, core_mfa, issue_mfa, locked_until, lockout_text, mfa_lifetime, refuse,
    user_factors,
};
use crate::proxy::{Body, full};

/// The WebAuthn ceremony cookie.
pub const CEREMONY_COOKIE: &str = "__Host-palisade-webauthn";
/// How long a WebAuthn ceremony may take.
const CEREMONY_SECS: i64 = 300;

/// The browser half of the WebAuthn ceremonies, served from the edge itself (no CDN).
const WEBAUTHN_JS: &str = include_str!("../webauthn.js");

/// `/.palisade/webauthn.js`.
pub(crate) fn script() -> Response<Body> {
    let mut r = Response::new(full(WEBAUTHN_JS));
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    r
}

/// Which authenticator a registration adds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum NewKey {
    /// A roaming security key.
    SecurityKey,
    /// This device's platform authenticator (always verifies the user).
    Platform,
}

/// What a ceremony is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "purpose", rename_all = "snake_case")]
pub(super) enum Purpose {
    /// Passing a factor for the application at `rd`; `uv` when user verification is required
    /// (a passkey ceremony).
    Authenticate {
        /// Where to go afterwards.
        rd: String,
        /// Whether user verification was required.
        uv: bool,
    },
    /// Adding a factor from the portal.
    Register {
        /// Which authenticator.
        key: NewKey,
        /// The factor's name.
        name: String,
        /// The admin-issued enrollment code, if one was given.
        code: String,
        /// Where the user was going before the portal (offered as the way back), or empty.
        #[serde(default)]
        rd: String,
    },
}

/// A WebAuthn ceremony in progress, sealed into `CEREMONY_COOKIE`.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Ceremony {
    /// The session it belongs to.
    pub(super) sid: String,
    /// The challenge, base64url.
    pub(super) challenge: String,
    /// The webauthn-rs state.
    pub(super) state: Value,
    /// What it is for.
    #[serde(flatten)]
    pub(super) purpose: Purpose,
}

pub(super) fn json_response(status: StatusCode, v: Value) -> Response<Body> {
    let mut r = Response::new(full(v.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// A stable WebAuthn user handle for an SSO identity (no personal data in it).
pub(super) fn user_handle(c: &Caller) -> Uuid {
    let d = Sha256::digest(format!("{}\0{}", c.session.idp, c.session.sub).as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    Uuid::from_bytes(b)
}

/// The relying party for a request: the policy's `mfa.webauthn_rp_id`, or the host itself;
/// the origin is exactly the one the browser used.
pub(super) fn relying_party(ctx: &RequestCtx) -> Option<Webauthn> {
    let origin = Url::parse(&format!("https://{}", ctx.authority)).ok()?;
    let rp_id = ctx
        .policy
        .mfa_policy()
        .webauthn_rp_id
        .clone()
        .unwrap_or_else(|| ctx.host.clone());
    WebauthnBuilder::new(&rp_id, &origin)
        .ok()?
        .rp_name("Palisade")
        .build()
        .ok()
}

pub(super) fn no_relying_party() -> EdgeError {
    refuse(
        StatusCode::BAD_REQUEST,
        "WebAuthn is not possible on this host name",
    )
}

/// Opens the ceremony cookie (a registration when `register`) and builds the relying party.
pub(super) fn ceremony_and_rp(
    ctx: &RequestCtx,
    caller: &Caller,
    sealed: Option<&str>,
    register: bool,
    expired: &str,
) -> Result<(Ceremony, Webauthn), EdgeError> {
    let c = open_ceremony(ctx, sealed, caller, register)
        .ok_or_else(|| refuse(StatusCode::BAD_REQUEST, expired))?;
    let wa = relying_party(ctx).ok_or_else(no_relying_party)?;
    Ok((c, wa))
}

pub(super) fn challenge_of(options: &Value) -> String {
    options["publicKey"]["challenge"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

pub(super) fn ceremony_response(ctx: &RequestCtx, c: &Ceremony, options: Value) -> Answer {
    let sealed =
        cookie::seal(&ctx.view.keyring, "webauthn", c, ctx.now + CEREMONY_SECS).map_err(|_| {
            refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "this edge cannot start a ceremony yet",
            )
        })?;
    let mut r = json_response(StatusCode::OK, options);
    r.headers_mut().append(
        header::SET_COOKIE,
        cookie::set(CEREMONY_COOKIE, &sealed, CEREMONY_SECS),
    );
    Ok(r)
}

fn open_ceremony(
    ctx: &RequestCtx,
    sealed: Option<&str>,
    caller: &Caller,
    register: bool,
) -> Option<Ceremony> {
    let c: Ceremony = cookie::open(&ctx.view.keyring, "webauthn", sealed?, ctx.now).ok()?;
    use subtle::ConstantTimeEq;
    let same_session = bool::from(c.sid.as_bytes().ct_eq(caller.session.sid.as_bytes()));
    let purpose_fits = matches!(c.purpose, Purpose::Register { .. }) == register;
    (same_session && purpose_fits).then_some(c)
}

impl Gateway {
    pub(crate) fn webauthn_auth_begin(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        body: &Value,
    ) -> Answer {
        let (view, now) = (&*ctx.view, ctx.now);
        let rd = safe_return_to(body["rd"].as_str().unwrap_or("/"));
        if let Some(until) = locked_until(view, caller, now) {
            return Err(refuse(
                StatusCode::TOO_MANY_REQUESTS,
                &lockout_text(until, now),
            ));
        }
        let Some(need) = self.need(ctx, caller, &rd) else {
            return Ok(json_response(StatusCode::OK, json!({ "redirect": rd })));
        };
        let keys: Vec<&FactorRecord> =
            core_mfa::eligible(&user_factors(view, caller), &need.methods)
                .into_iter()
                .filter(|f| f.kind != FactorKind::Totp)
                .collect();
        if keys.is_empty() {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "you have no security key or device authenticator this application accepts",
            ));
        }
        let Some(wa) = relying_party(ctx) else {
            return Err(no_relying_party());
        };
        // User verification is required when the application asks for it or when only
        // platform authenticators are allowed (they always verify the user).
        let uv = need.user_verification || keys.iter().all(|f| f.kind == FactorKind::Platform);
        let credentials = keys.iter().map(|f| f.credential_json.as_str());
        let started = if uv {
            let passkeys: Vec<Passkey> = credentials
                .filter_map(|j| serde_json::from_str(j).ok())
                .collect();
            wa.start_passkey_authentication(&passkeys)
                .map_err(|e| e.to_string())
                .map(|(o, s)| (serde_json::to_value(o), serde_json::to_value(s)))
        } else {
            let keys: Vec<SecurityKey> = credentials
                .filter_map(|j| serde_json::from_str(j).ok())
                .collect();
            wa.start_securitykey_authentication(&keys)
                .map_err(|e| e.to_string())
                .map(|(o, s)| (serde_json::to_value(o), serde_json::to_value(s)))
        };
        let (Ok(options), Ok(state)) = (match started {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "WebAuthn authentication could not start");
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "the ceremony could not start",
                ));
            }
        }) else {
            return Err(refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the ceremony could not start",
            ));
        };
        let ceremony = Ceremony {
            sid: caller.session.sid.clone(),
            challenge: challenge_of(&options),
            state,
            purpose: Purpose::Authenticate { rd, uv },
        };
        ceremony_response(ctx, &ceremony, options)
    }

    pub(crate) async fn webauthn_auth_finish(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        body: &Value,
        sealed: Option<&str>,
    ) -> Answer {
        let (view, host, rid, now) = (&*ctx.view, ctx.host.as_str(), ctx.rid.as_str(), ctx.now);
        // A locked user's answer is not checked, and nothing more about them is recorded.
        if let Some(until) = locked_until(view, caller, now) {
            return Err(refuse(
                StatusCode::TOO_MANY_REQUESTS,
                &lockout_text(until, now),
            ));
        }
        let expired = "this security key prompt expired or belongs to another session; start again";
        let (c, wa) = ceremony_and_rp(ctx, caller, sealed, false, expired)?;
        let Purpose::Authenticate { rd, uv } = c.purpose.clone() else {
            return Err(refuse(StatusCode::BAD_REQUEST, expired));
        };
        let Ok(cred) = serde_json::from_value::<PublicKeyCredential>(body["credential"].clone())
        else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "the authenticator's answer is malformed",
            ));
        };
        let started = std::time::Instant::now();
        let result = if uv {
            serde_json::from_value::<PasskeyAuthentication>(c.state.clone())
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    wa.finish_passkey_authentication(&cred, &s)
                        .map_err(|e| e.to_string())
                })
        } else {
            serde_json::from_value::<SecurityKeyAuthentication>(c.state.clone())
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    wa.finish_securitykey_authentication(&cred, &s)
                        .map_err(|e| e.to_string())
                })
        };
        metrics::histogram!("palisade_edge_webauthn_verify_seconds")
            .record(started.elapsed().as_secs_f64());
        let Some(ctl) = &self.controllers else {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the controllers are unreachable",
            ));
        };
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::info!(request_id = %rid, subject = %caller.session.sub, error = %e, "WebAuthn assertion refused");
                // The failure uses up the ceremony's challenge: a replayed ceremony is not
                // counted (or recorded) again.
                let challenge = URL_SAFE_NO_PAD
                    .decode(c.challenge.trim_end_matches('='))
                    .unwrap_or_default();
                let counted = ctl
                    .record_mfa_failure(caller, FactorKind::SecurityKey, challenge, rid)
                    .await
                    .unwrap_or_else(|e| {
                        tracing::warn!(request_id = %rid, error = %e, "MFA failure not counted");
                        false
                    });
                if counted {
                    self.record_event(caller, "mfa.webauthn", "failed", rid, host, "");
                }
                return Err(refuse(
                    StatusCode::UNAUTHORIZED,
                    "the security key's answer was not accepted",
                ));
            }
        };
        let cred_id = URL_SAFE_NO_PAD.encode(result.cred_id());
        let Some(factor) = user_factors(view, caller)
            .into_iter()
            .find(|f| f.kind != FactorKind::Totp && f.credential_id == cred_id)
        else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "this key is not one of your factors",
            ));
        };
        let platform = factor.kind == FactorKind::Platform;
        if platform && !result.user_verified() {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "this device authenticator did not verify you",
            ));
        }
        let Ok(challenge) = URL_SAFE_NO_PAD.decode(c.challenge.trim_end_matches('=')) else {
            return Err(refuse(StatusCode::BAD_REQUEST, "the ceremony is malformed"));
        };
        match ctl
            .record_webauthn_use(caller, &factor.id, result.counter(), challenge, rid)
            .await
        {
            Ok(None) => {}
            Ok(Some(refusal)) => {
                tracing::warn!(request_id = %rid, subject = %caller.session.sub, factor = %factor.id, refusal = %refusal, "WebAuthn assertion refused");
                self.record_event(caller, "mfa.webauthn", "refused", rid, host, &factor.id);
                return Err(refuse(StatusCode::UNAUTHORIZED, &refusal));
            }
            Err(e) => {
                tracing::warn!(request_id = %rid, error = %e, "WebAuthn use not recorded");
                return Err(refuse(StatusCode::SERVICE_UNAVAILABLE, &call_failure(&e)));
            }
        }
        let method = if platform {
            MfaMethod::Platform
        } else {
            MfaMethod::SecurityKey
        };
        let lifetime = mfa_lifetime(ctx, &rd);
        let Some(cookie) = issue_mfa(
            view,
            caller,
            method,
            &factor.id,
            result.user_verified(),
            lifetime,
            now,
        ) else {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "this edge cannot issue assertions yet",
            ));
        };
        tracing::info!(request_id = %rid, subject = %caller.session.sub, factor = %factor.id, "WebAuthn passed");
        self.record_event(caller, "mfa.webauthn", "ok", rid, host, &factor.id);
        let mut r = json_response(StatusCode::OK, json!({ "redirect": rd }));
        r.headers_mut().append(header::SET_COOKIE, cookie);
        r.headers_mut()
            .append(header::SET_COOKIE, cookie::clear(CEREMONY_COOKIE));
        Ok(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // WebAuthn inputs from the browser: whatever arrives, parsing never panics.
        #[test]
        fn webauthn_inputs_never_panic(s in ".{0,600}", raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = serde_json::from_str::<PublicKeyCredential>(&s);
            let _ = serde_json::from_str::<webauthn_rs::prelude::RegisterPublicKeyCredential>(&s);
            let _ = serde_json::from_slice::<PublicKeyCredential>(&raw);
            let v = json!({"id": s, "rawId": s, "type": "public-key", "response": {"authenticatorData": s, "clientDataJSON": s, "signature": s}});
            let _ = serde_json::from_value::<PublicKeyCredential>(v);
            let _ = crate::http::framing::form(&raw);
            let _ = challenge_of(&json!({"publicKey": {"challenge": s}}));
        }
    }
}
