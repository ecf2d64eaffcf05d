//! MFA steps shared by the end-to-end tests: URLs at an application host, the TOTP generator
//! for a seed the portal shows, and registering and passing a software security key.

use palisade_chaos::softkey::SoftKey;
use serde_json::{Value, json};

use super::{APP_HOST, Browser, Page, csrf};

/// `https://APP_HOST:port/path`.
pub fn url(port: u16, path: &str) -> String {
    url_at(APP_HOST, port, path)
}

/// `https://host:port/path`.
pub fn url_at(host: &str, port: u16, path: &str) -> String {
    format!("https://{host}:{port}{path}")
}

/// A page's JSON body.
pub fn json_of(p: &Page) -> Value {
    serde_json::from_str(&p.body).unwrap_or_else(|_| panic!("{} {}", p.status, p.body))
}

/// Whether a response sets the MFA assertion cookie.
pub fn mfa_cookie_set(p: &Page) -> bool {
    p.set_cookies
        .iter()
        .any(|c| c.starts_with("__Host-palisade-mfa=") && !c.contains("Max-Age=0"))
}

/// The TOTP generator for a base32 seed as the portal shows it (RFC 6238 defaults).
pub fn totp_for(secret_b32: &str) -> totp_rs::Totp {
    let b32 = secret_b32.trim_end_matches('=');
    assert!(
        b32.len() * 5 >= 160,
        "seed of at least 160 bits: {secret_b32}"
    );
    let seed = totp_rs::Secret::try_from_base32(b32).expect("base32 seed");
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(seed)
        .build()
        .expect("totp")
}

/// Registers `key` as a security key for the signed-in browser; returns the factor id.
pub async fn register_key(b: &mut Browser, port: u16, key: &SoftKey, name: &str) -> String {
    register_key_at(b, APP_HOST, port, key, name).await
}

/// Registers `key` as a security key at `host` (the relying party) for the signed-in browser;
/// returns the factor id.
pub async fn register_key_at(
    b: &mut Browser,
    host: &str,
    port: u16,
    key: &SoftKey,
    name: &str,
) -> String {
    let url = |port, path| url_at(host, port, path);
    let portal = b.get(&url(port, "/.palisade/portal")).await;
    let token = csrf(&portal.body);
    let begin = b
        .post_json(
            &url(port, "/.palisade/portal/webauthn/begin"),
            &token,
            &json!({"kind": "security_key", "name": name}),
        )
        .await;
    assert_eq!(begin.status, 200, "{}", begin.body);
    let options = json_of(&begin);
    assert_eq!(options["publicKey"]["rp"]["id"], host);
    let answer = key.register(&options, &format!("https://{host}:{port}"));
    let done = b
        .post_json(
            &url(port, "/.palisade/portal/webauthn/finish"),
            &token,
            &answer,
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    json_of(&done)["factor_id"]
        .as_str()
        .expect("factor id")
        .to_string()
}

/// Starts an authentication ceremony for `rd`; returns the anti-CSRF token and the options.
pub async fn begin_auth(b: &mut Browser, port: u16, rd: &str) -> (String, Value) {
    begin_auth_at(b, APP_HOST, port, rd).await
}

/// Starts an authentication ceremony for `rd` at `host`; returns the anti-CSRF token and the
/// options.
pub async fn begin_auth_at(b: &mut Browser, host: &str, port: u16, rd: &str) -> (String, Value) {
    let url = |port, path| url_at(host, port, path);
    let p = b.get(&url(port, rd)).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let prompt = b.get(&url(port, p.location.as_deref().expect("loc"))).await;
    assert!(prompt.body.contains("id=webauthn-auth"), "{}", prompt.body);
    let token = csrf(&prompt.body);
    let begin = b
        .post_json(
            &url(port, "/.palisade/mfa/webauthn/begin"),
            &token,
            &json!({"rd": rd}),
        )
        .await;
    assert_eq!(begin.status, 200, "{}", begin.body);
    (token, json_of(&begin))
}

/// Passes `key` for the application at `rd` (which must ask for it).
pub async fn pass_key(b: &mut Browser, port: u16, key: &mut SoftKey, rd: &str) {
    pass_key_at(b, APP_HOST, port, key, rd).await
}

/// Passes `key` for the application at `host` and `rd` (which must ask for it).
pub async fn pass_key_at(b: &mut Browser, host: &str, port: u16, key: &mut SoftKey, rd: &str) {
    let url = |port, path| url_at(host, port, path);
    let (token, options) = begin_auth_at(b, host, port, rd).await;
    let answer = key.assert(&options, host, &format!("https://{host}:{port}"));
    let ok = b
        .post_json(
            &url(port, "/.palisade/mfa/webauthn/finish"),
            &token,
            &answer,
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert!(mfa_cookie_set(&ok));
}
