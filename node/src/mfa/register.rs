//! Registering a security key or this device's platform authenticator from the portal: the
//! ceremony (with the attachment the user chose), and the new factor recorded through the
//! controllers (with the admin-issued enrollment code when policy requires one).

use http::StatusCode;
use http::header;
use palisade_edge_core::Caller;
use palisade_policy::catalog::FactorKind;
use palisade_policy::document::MfaMethod;
use serde_json::{Value, json};
use webauthn_rs::prelude::{
    AuthenticatorAttachment, PasskeyRegistration, RegisterPublicKeyCredential, SecurityKey,
    SecurityKeyRegistration,
};

use crate::controllers::api::NewCredential;
use crate::cookie;
use crate::http::Gateway;
use crate::http::context::RequestCtx;
use crate::http::framing::safe_return_to;
use crate::mfa::webauthn::{
    CEREMONY_COOKIE, Ceremony, NewKey, Purpose, ceremony_and_rp, ceremony_response, challenge_of,
    json_response, no_relying_party, relying_party, user_handle,
};
use crate::mfa::{Answer, call_failure, portal_after, refuse, user_factors};
use palisade_edge_core::mfa::recently_verified;

impl Gateway {
    pub(crate) fn webauthn_register_begin(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        body: &Value,
    ) -> Answer {
        let (view, now) = (&*ctx.view, ctx.now);
        let key = match body["kind"].as_str().unwrap_or_default() {
            "security_key" => NewKey::SecurityKey,
            "platform" => NewKey::Platform,
            _ => {
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "kind must be security_key or platform",
                ));
            }
        };
        let factors = user_factors(view, caller);
        if !factors.is_empty() && !recently_verified(caller, now) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "adding a factor needs one of your existing factors passed within the last 10 minutes",
            ));
        }
        // A security key or device authenticator is only added after one was passed, when
        // the user has one (a phished code must not buy a phishing-resistant factor).
        let holds_key = factors.iter().any(|f| f.kind != FactorKind::Totp);
        let passed_key = caller
            .identity
            .mfa
            .as_ref()
            .is_some_and(|m| m.method != MfaMethod::Totp);
        if holds_key && !passed_key {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "adding a security key or device authenticator needs one of your security keys or device authenticators passed within the last 10 minutes",
            ));
        }
        let Some(wa) = relying_party(ctx) else {
            return Err(no_relying_party());
        };
        let exclude: Vec<Vec<u8>> = factors
            .iter()
            .filter(|f| f.kind != FactorKind::Totp)
            .filter_map(|f| {
                serde_json::from_str::<SecurityKey>(&f.credential_json)
                    .ok()
                    .map(|k| k.cred_id().clone())
            })
            .collect();
        let exclude = (!exclude.is_empty()).then_some(exclude);
        let user_name = if caller.session.email.is_empty() {
            caller.session.sub.clone()
        } else {
            caller.session.email.clone()
        };
        let display = if caller.session.name.is_empty() {
            user_name.clone()
        } else {
            caller.session.name.clone()
        };
        let started = if key == NewKey::Platform {
            wa.start_passkey_registration(user_handle(caller), &user_name, &display, exclude)
                .map(|(o, s)| (serde_json::to_value(o), serde_json::to_value(s)))
        } else {
            wa.start_securitykey_registration(
                user_handle(caller),
                &user_name,
                &display,
                exclude,
                None,
                Some(AuthenticatorAttachment::CrossPlatform),
            )
            .map(|(o, s)| (serde_json::to_value(o), serde_json::to_value(s)))
        };
        let (mut options, state) = match started {
            Ok((Ok(o), Ok(s))) => (o, s),
            _ => {
                return Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the ceremony could not start",
                ));
            }
        };
        if key == NewKey::Platform {
            // Only this device's own authenticator may answer: a security key plugged in
            // would otherwise register instead (and be refused at the finish, leaving an
            // orphan credential on the key).
            options["publicKey"]["authenticatorSelection"]["authenticatorAttachment"] =
                json!("platform");
        }
        if key == NewKey::SecurityKey {
            // webauthn-rs asks security keys for credProtect "userVerificationRequired" while
            // user verification itself is only "preferred"; Chromium refuses that combination
            // ("protection policy is inconsistent"). The extension is not enforced, so it is
            // left out; user verification is decided per application at authentication.
            if let Some(ext) = options["publicKey"]["extensions"].as_object_mut() {
                ext.remove("credentialProtectionPolicy");
                ext.remove("enforceCredentialProtectionPolicy");
            }
        }
        let ceremony = Ceremony {
            sid: caller.session.sid.clone(),
            challenge: challenge_of(&options),
            state,
            purpose: Purpose::Register {
                key,
                name: body["name"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(64)
                    .collect(),
                code: body["enrollment_code"]
                    .as_str()
                    .unwrap_or_default()
                    .chars()
                    .take(128)
                    .collect(),
                rd: body["rd"]
                    .as_str()
                    .filter(|rd| !rd.is_empty())
                    .map(safe_return_to)
                    .unwrap_or_default(),
            },
        };
        ceremony_response(ctx, &ceremony, options)
    }

    pub(crate) async fn webauthn_register_finish(
        &self,
        ctx: &RequestCtx,
        caller: &Caller,
        body: &Value,
        sealed: Option<&str>,
    ) -> Answer {
        let (host, rid) = (ctx.host.as_str(), ctx.rid.as_str());
        let expired = "this registration expired or belongs to another session; start again";
        let (c, wa) = ceremony_and_rp(ctx, caller, sealed, true, expired)?;
        let Purpose::Register {
            key,
            name,
            code,
            rd,
        } = c.purpose.clone()
        else {
            return Err(refuse(StatusCode::BAD_REQUEST, expired));
        };
        let Ok(reg) =
            serde_json::from_value::<RegisterPublicKeyCredential>(body["credential"].clone())
        else {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "the authenticator's answer is malformed",
            ));
        };
        // The browser says where the credential lives; a "platform" factor must be one.
        let attachment = body["attachment"].as_str().unwrap_or_default();
        if key == NewKey::Platform && attachment == "cross-platform" {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "that was a roaming security key, not this device's authenticator; add it as a security key",
            ));
        }
        if key == NewKey::SecurityKey && attachment == "platform" {
            return Err(refuse(
                StatusCode::BAD_REQUEST,
                "that was this device's built-in authenticator; add it as this device",
            ));
        }
        let credential = if key == NewKey::Platform {
            serde_json::from_value::<PasskeyRegistration>(c.state.clone())
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    wa.finish_passkey_registration(&reg, &s)
                        .map_err(|e| e.to_string())
                })
                .map(|k| (k.cred_id().clone(), serde_json::to_string(&k)))
        } else {
            serde_json::from_value::<SecurityKeyRegistration>(c.state.clone())
                .map_err(|e| e.to_string())
                .and_then(|s| {
                    wa.finish_securitykey_registration(&reg, &s)
                        .map_err(|e| e.to_string())
                })
                .map(|k| (k.cred_id().clone(), serde_json::to_string(&k)))
        };
        let (cred_id, json) = match credential {
            Ok((id, Ok(json))) => (id, json),
            Ok(_) => {
                return Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "the credential could not be stored",
                ));
            }
            Err(e) => {
                tracing::info!(request_id = %rid, subject = %caller.session.sub, error = %e, "WebAuthn registration refused");
                return Err(refuse(
                    StatusCode::BAD_REQUEST,
                    "the authenticator's registration was not accepted",
                ));
            }
        };
        let Some(ctl) = &self.controllers else {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "the controllers are unreachable",
            ));
        };
        let kind = if key == NewKey::Platform {
            FactorKind::Platform
        } else {
            FactorKind::SecurityKey
        };
        let credential = NewCredential {
            kind,
            name,
            credential_id: cred_id.to_vec(),
            credential_json: json,
            enrollment_code: code,
        };
        match ctl.register_webauthn(caller, credential).await {
            Ok((factor_id, revision)) => {
                self.wait_applied(revision).await;
                tracing::info!(request_id = %rid, subject = %caller.session.sub, factor = %factor_id, kind = ?kind, "WebAuthn factor added");
                self.record_event(caller, "factor.add", "ok", rid, host, &factor_id);
                let mut r = json_response(
                    StatusCode::OK,
                    json!({ "redirect": portal_after("added", &rd), "factor_id": factor_id }),
                );
                r.headers_mut()
                    .append(header::SET_COOKIE, cookie::clear(CEREMONY_COOKIE));
                Ok(r)
            }
            Err(e) => {
                tracing::info!(request_id = %rid, error = %e, "WebAuthn factor not added");
                Err(refuse(StatusCode::BAD_REQUEST, &call_failure(&e)))
            }
        }
    }
}
