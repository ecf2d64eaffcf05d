//! ID tokens as an identity provider (or an attacker in its place) returns them: validation
//! never panics, and nothing the fuzzer makes up validates against a key it does not hold.
#![no_main]

use jsonwebtoken::jwk::JwkSet;
use libfuzzer_sys::fuzz_target;
use palisade_node::oidc::{Expected, validate_id_token};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let keys: JwkSet = serde_json::from_str(
        r#"{"keys":[{"kty":"EC","crv":"P-256","kid":"k1","use":"sig","alg":"ES256",
            "x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}]}"#,
    )
    .expect("keys");
    let expected = Expected {
        issuer: "https://login.example.com",
        client_id: "palisade",
        nonce: "n-0S6_WzA2Mj",
    };
    assert!(validate_id_token(s, &expected, &keys).is_err());
    // A token-shaped input: the fuzzer's bytes as header and payload.
    let parts: Vec<&str> = s.splitn(3, '\n').collect();
    if parts.len() == 3 {
        use base64::Engine;
        let e = |x: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(x);
        let t = format!("{}.{}.{}", e(parts[0]), e(parts[1]), e(parts[2]));
        assert!(validate_id_token(&t, &expected, &keys).is_err());
    }
});
