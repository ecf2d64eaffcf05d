//! A software WebAuthn authenticator (ES256, `none` attestation) for the negative cases a real
//! browser will not produce: another origin, a replayed challenge, a counter that goes backwards,
//! another user's credential. It builds the same bytes a CTAP2 authenticator and the browser
//! would (authenticator data, client data JSON, CBOR attestation object, DER signature), so the
//! edge's webauthn-rs checks run on real ceremonies. The positive paths are also tested with
//! Chromium's virtual authenticators (`tests/tests/webauthn_browser.rs`); the MFA benchmark
//! uses this key to time assertions. For tests and benchmarks only.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// A software authenticator with one ES256 credential.
#[derive(Debug)]
pub struct SoftKey {
    key: EcdsaKeyPair,
    /// The credential id.
    pub credential_id: Vec<u8>,
    /// The counter the next assertion carries (then incremented unless `fixed_counter`).
    pub counter: u32,
    /// Whether the counter stays put (an authenticator without a counter sends 0).
    pub fixed_counter: bool,
}

fn cbor_head(major: u8, len: usize, out: &mut Vec<u8>) {
    let m = major << 5;
    match len {
        0..=23 => out.push(m | len as u8),
        24..=0xff => out.extend([m | 24, len as u8]),
        _ => {
            out.push(m | 25);
            out.extend((len as u16).to_be_bytes());
        }
    }
}

fn cbor_text(s: &str, out: &mut Vec<u8>) {
    cbor_head(3, s.len(), out);
    out.extend(s.as_bytes());
}

fn cbor_bytes(b: &[u8], out: &mut Vec<u8>) {
    cbor_head(2, b.len(), out);
    out.extend(b);
}

fn b64(b: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(b)
}

impl Default for SoftKey {
    fn default() -> Self {
        Self::new()
    }
}

impl SoftKey {
    /// A new key with a random credential id.
    pub fn new() -> SoftKey {
        let rng = SystemRandom::new();
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).expect("key");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng)
            .expect("key");
        let mut credential_id = vec![0u8; 32];
        ring::rand::SecureRandom::fill(&rng, &mut credential_id).expect("random");
        SoftKey {
            key,
            credential_id,
            counter: 1,
            fixed_counter: false,
        }
    }

    fn cose_key(&self) -> Vec<u8> {
        let point = self.key.public_key().as_ref(); // 0x04 || x || y
        let (x, y) = (&point[1..33], &point[33..65]);
        let mut out = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
        cbor_bytes(x, &mut out);
        out.push(0x22);
        cbor_bytes(y, &mut out);
        out
    }

    fn auth_data(&self, rp_id: &str, flags: u8, counter: u32, attested: bool) -> Vec<u8> {
        let mut d = Sha256::digest(rp_id.as_bytes()).to_vec();
        d.push(flags);
        d.extend(counter.to_be_bytes());
        if attested {
            d.extend([0u8; 16]); // AAGUID
            d.extend((self.credential_id.len() as u16).to_be_bytes());
            d.extend(&self.credential_id);
            d.extend(self.cose_key());
        }
        d
    }

    /// The browser's `navigator.credentials.create()` answer for creation `options`, as the
    /// edge's finish endpoint takes it.
    pub fn register(&self, options: &Value, origin: &str) -> Value {
        let pk = &options["publicKey"];
        let rp_id = pk["rp"]["id"].as_str().expect("rp id");
        let client_data = json!({
            "type": "webauthn.create",
            "challenge": pk["challenge"],
            "origin": origin,
            "crossOrigin": false,
        })
        .to_string();
        // user present + user verified + attested credential data
        let auth = self.auth_data(rp_id, 0x01 | 0x04 | 0x40, 0, true);
        let mut att = vec![0xa3];
        cbor_text("fmt", &mut att);
        cbor_text("none", &mut att);
        cbor_text("attStmt", &mut att);
        att.push(0xa0);
        cbor_text("authData", &mut att);
        cbor_bytes(&auth, &mut att);
        json!({
            "attachment": "cross-platform",
            "credential": {
                "id": b64(&self.credential_id),
                "rawId": b64(&self.credential_id),
                "type": "public-key",
                "response": {
                    "attestationObject": b64(&att),
                    "clientDataJSON": b64(client_data.as_bytes()),
                    "transports": ["usb"],
                },
                "extensions": {},
            }
        })
    }

    /// The browser's `navigator.credentials.get()` answer for request `options`, signed by this
    /// key, as if the page were at `origin`.
    pub fn assert(&mut self, options: &Value, rp_id: &str, origin: &str) -> Value {
        let pk = &options["publicKey"];
        let client_data = json!({
            "type": "webauthn.get",
            "challenge": pk["challenge"],
            "origin": origin,
            "crossOrigin": false,
        })
        .to_string();
        let auth = self.auth_data(rp_id, 0x01 | 0x04, self.counter, false);
        if !self.fixed_counter {
            self.counter += 1;
        }
        let mut signed = auth.clone();
        signed.extend(Sha256::digest(client_data.as_bytes()));
        let sig = self.key.sign(&SystemRandom::new(), &signed).expect("sign");
        json!({
            "credential": {
                "id": b64(&self.credential_id),
                "rawId": b64(&self.credential_id),
                "type": "public-key",
                "response": {
                    "authenticatorData": b64(&auth),
                    "clientDataJSON": b64(client_data.as_bytes()),
                    "signature": b64(sig.as_ref()),
                    "userHandle": null,
                },
                "extensions": {},
            }
        })
    }
}
