//! WebAuthn answers as a browser (or a script) posts them, finishing a real ceremony: the
//! client data, authenticator data and signature never panic the verifier, and nothing the
//! fuzzer makes up passes it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webauthn_rs::prelude::{
    PublicKeyCredential, RegisterPublicKeyCredential, SecurityKey, Url, Uuid, WebauthnBuilder,
};

fuzz_target!(|data: &[u8]| {
    let origin = Url::parse("https://app.example.com").expect("origin");
    let Ok(wa) = WebauthnBuilder::new("app.example.com", &origin).and_then(|b| b.build()) else {
        return;
    };
    if let Ok(cred) = serde_json::from_slice::<RegisterPublicKeyCredential>(data)
        && let Ok((_, state)) =
            wa.start_securitykey_registration(Uuid::nil(), "a", "a", None, None, None)
    {
        assert!(wa.finish_securitykey_registration(&cred, &state).is_err());
    }
    if let Ok(cred) = serde_json::from_slice::<PublicKeyCredential>(data) {
        let keys: Vec<SecurityKey> = Vec::new();
        if let Ok((_, state)) = wa.start_securitykey_authentication(&keys) {
            assert!(wa.finish_securitykey_authentication(&cred, &state).is_err());
        }
    }
});
