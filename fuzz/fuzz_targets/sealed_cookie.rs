//! Sealed state cookies (sign-in attempts, WebAuthn ceremonies, enrollments) as a client sends
//! them back: opening never panics and nothing forged opens.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_policy::token::{KeyRing, SigningKey};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let ring = KeyRing::new([SigningKey {
        kid: "k-1".into(),
        secret: vec![9; 32],
        active: true,
    }]);
    for purpose in ["login", "webauthn", "enroll"] {
        let r: Result<serde_json::Value, _> =
            palisade_node::cookie::open(&ring, purpose, s, 1_800_000_000);
        assert!(r.is_err(), "a value nobody sealed opened");
    }
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(data) {
        headers.insert(http::header::COOKIE, v);
        let _ = palisade_node::cookie::get(&headers, palisade_node::cookie::SESSION);
        palisade_node::cookie::strip_own(&mut headers);
    }
});
