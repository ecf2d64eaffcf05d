//! The one check every state-changing request to the edge's own pages passes before its
//! handler runs: it comes from this origin (or names none, as non-browser clients do), and it
//! carries the session's anti-CSRF token (a form field, or the `x-palisade-csrf` header for the
//! WebAuthn script's JSON calls). The body is read here, bounded, and handed on parsed.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::header;
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use palisade_edge_core::Caller;

use crate::http::error::EdgeError;
use crate::http::framing::{form, read_body};
use crate::proxy::Body;

/// The header the WebAuthn script carries the token in.
pub(crate) const CSRF_HEADER: &str = "x-palisade-csrf";

/// The anti-CSRF token of a session: every form and fetch must carry it. It is derived from
/// the session id, which scripts on other sites cannot read (the cookie is HttpOnly and
/// `__Host-`); SameSite=Lax already keeps the session cookie off cross-site POSTs.
pub fn csrf_token(sid: &str) -> String {
    let d = Sha256::digest(format!("palisade/csrf/v1\0{sid}").as_bytes());
    URL_SAFE_NO_PAD.encode(&d[..18])
}

/// Whether `given` is the caller's token (compared in constant time).
pub(crate) fn csrf_ok(given: Option<&str>, caller: &Caller) -> bool {
    let want = csrf_token(&caller.session.sid);
    given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(want.as_bytes())))
}

/// Whether a state-changing request comes from this origin (or names none, as non-browser
/// clients do; the anti-CSRF token is checked as well).
pub(crate) fn same_origin(headers: &http::HeaderMap, authority: &str) -> bool {
    headers
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .is_none_or(|o| o.eq_ignore_ascii_case(&format!("https://{authority}")))
}

/// What a checked state-changing request submitted.
#[derive(Debug, Clone)]
pub(crate) enum Submitted {
    /// A form's fields.
    Form(BTreeMap<String, String>),
    /// A JSON document (from the WebAuthn script).
    Json(Value),
}

impl Submitted {
    /// A form field (empty when absent or not a form).
    pub(crate) fn field(&self, name: &str) -> String {
        match self {
            Submitted::Form(f) => f.get(name).cloned().unwrap_or_default(),
            Submitted::Json(v) => v[name].as_str().unwrap_or_default().to_string(),
        }
    }

    /// The JSON document (`null` for a form).
    pub(crate) fn json(&self) -> &Value {
        match self {
            Submitted::Json(v) => v,
            Submitted::Form(_) => &Value::Null,
        }
    }
}

/// Checks the origin and the anti-CSRF token of a state-changing request from `caller`, and
/// reads its body: a JSON document when `json`, a form otherwise.
pub(crate) async fn guard(
    req: &http::request::Parts,
    body: Body,
    authority: &str,
    caller: &Caller,
    json: bool,
) -> Result<Submitted, EdgeError> {
    if !same_origin(&req.headers, authority) {
        return Err(EdgeError::CrossSite);
    }
    if json {
        let token = req
            .headers
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        if !csrf_ok(token.as_deref(), caller) {
            return Err(EdgeError::Csrf);
        }
        let body = read_body(body).await.ok_or(EdgeError::TooLarge)?;
        let v = serde_json::from_slice::<Value>(&body)
            .map_err(|_| EdgeError::BadRequest("the request is not JSON".into()))?;
        return Ok(Submitted::Json(v));
    }
    let body = read_body(body).await.ok_or(EdgeError::TooLarge)?;
    let f = form(&body);
    if !csrf_ok(f.get("csrf").map(String::as_str), caller) {
        return Err(EdgeError::Csrf);
    }
    Ok(Submitted::Form(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_tokens_differ_per_session() {
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_eq!(csrf_token("a"), csrf_token("a"));
        assert_eq!(csrf_token("a").len(), 24);
    }

    use http::Request;

    #[test]
    fn origins_must_match_when_named() {
        let r = |origin: Option<&str>| {
            let mut b = Request::post("/.palisade/portal/revoke");
            if let Some(o) = origin {
                b = b.header(header::ORIGIN, o);
            }
            same_origin(b.body(()).expect("request").headers(), "app.test:8443")
        };
        assert!(r(None));
        assert!(r(Some("https://app.test:8443")));
        assert!(r(Some("HTTPS://APP.TEST:8443")));
        assert!(!r(Some("https://evil.test")));
        assert!(!r(Some("http://app.test:8443")));
        assert!(!r(Some("null")));
    }
}
