//! Session and MFA tokens as a client presents them: verifying never panics, and whatever
//! verifies is well-formed (a token can only verify under a key the ring holds).
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_policy::token::{KeyRing, SigningKey, TokenKind};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let ring = KeyRing::new([SigningKey {
        kid: "k-1".into(),
        secret: vec![7; 32],
        active: true,
    }]);
    let now = 1_800_000_000;
    if let Ok(c) = ring.verify_session(s, now) {
        // Only our own key signs; a fuzzer cannot forge the MAC, so a verified token must be
        // one the ring could have produced.
        assert!(ring.sign(TokenKind::Session, &c).is_ok());
    }
    let _ = ring.verify_session_active(s, now, now - 10);
    let _ = ring.verify_mfa(s, "sid", now);
});
