//! Encryption of secrets at rest: TOTP seeds, signing keys and named secrets are sealed with
//! AES-256-GCM under the controller's data key before they are proposed, so the Raft log and
//! snapshots only ever hold ciphertext. The key is given at start (a file or an environment
//! variable) and never written to the data directory.
//!
//! Format: `b"PS2" || key fingerprint (4 bytes) || nonce (12) || ciphertext || tag (16)`. The
//! additional data binds each ciphertext to its slot: its purpose and the object it belongs to
//! (a TOTP seed to its user, a named secret to its name), so a sealed value cannot be moved to
//! another purpose, another user or another secret by anyone who can write to the store.

use std::fmt;

use palisade_policy::catalog::UserKey;
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

const MAGIC: &[u8; 3] = b"PS2";

/// What a sealed value is, and whose: its additional authenticated data.
#[derive(Debug, Clone, Copy)]
pub enum Slot<'a> {
    /// A user's TOTP seed.
    TotpSeed(&'a UserKey),
    /// A session signing key (all are equivalent: any of them signs for the cluster).
    SigningKey,
    /// A named secret.
    Secret(&'a str),
    /// The device CA's private key.
    DeviceCaKey,
    /// A posture nonce issued to this device.
    PostureNonce(&'a str),
}

impl Slot<'_> {
    fn aad(&self) -> Vec<u8> {
        match self {
            Slot::TotpSeed(u) => format!("totp-seed\0{}\0{}", u.provider, u.subject).into_bytes(),
            Slot::SigningKey => b"signing-key".to_vec(),
            Slot::Secret(name) => format!("secret\0{name}").into_bytes(),
            Slot::DeviceCaKey => b"device-ca-key".to_vec(),
            Slot::PostureNonce(device) => format!("posture-nonce\0{device}").into_bytes(),
        }
    }
}

/// Why a data key could not be loaded or a value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    /// The key material is not 32 bytes of hex or base64.
    #[error("the data key must be 32 bytes, written as 64 hex characters or base64")]
    BadKey,
    /// The sealed value is not in Palisade's format.
    #[error("sealed value is malformed")]
    Malformed,
    /// The value was sealed under another key.
    #[error("sealed value was encrypted under a different data key (fingerprint {0})")]
    WrongKey(String),
    /// Authentication failed: corrupted or tampered with.
    #[error("sealed value failed authentication")]
    Tampered,
    /// The system random generator failed.
    #[error("no randomness available")]
    Random,
}

/// The controller's data key. `Debug` shows only its fingerprint.
pub struct DataKey {
    key: LessSafeKey,
    fingerprint: [u8; 4],
    rng: SystemRandom,
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DataKey({})", hex(&self.fingerprint))
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl DataKey {
    /// Builds a key from 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SealError> {
        if bytes.len() != 32 {
            return Err(SealError::BadKey);
        }
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| SealError::BadKey)?;
        let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
        let mut fingerprint = [0u8; 4];
        fingerprint.copy_from_slice(&digest.as_ref()[..4]);
        Ok(Self {
            key: LessSafeKey::new(unbound),
            fingerprint,
            rng: SystemRandom::new(),
        })
    }

    /// Parses 64 hex characters or standard/URL-safe base64 of 32 bytes (whitespace ignored).
    pub fn parse(text: &str) -> Result<Self, SealError> {
        use base64::Engine;
        let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes: Vec<u8> = (0..32)
                .filter_map(|i| u8::from_str_radix(&t[2 * i..2 * i + 2], 16).ok())
                .collect();
            return Self::from_bytes(&bytes);
        }
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::URL_SAFE,
        ];
        for e in engines {
            if let Ok(bytes) = e.decode(&t) {
                return Self::from_bytes(&bytes);
            }
        }
        let no_pad = [
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for e in no_pad {
            if let Ok(bytes) = e.decode(&t) {
                return Self::from_bytes(&bytes);
            }
        }
        Err(SealError::BadKey)
    }

    /// The key's fingerprint, hex.
    pub fn fingerprint(&self) -> String {
        hex(&self.fingerprint)
    }

    /// Seals `plaintext` for `slot`.
    pub fn seal(&self, slot: Slot<'_>, plaintext: &[u8]) -> Result<Vec<u8>, SealError> {
        let aad = slot.aad();
        let mut nonce = [0u8; NONCE_LEN];
        self.rng.fill(&mut nonce).map_err(|_| SealError::Random)?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_slice()),
                &mut buf,
            )
            .map_err(|_| SealError::Random)?;
        let mut out = Vec::with_capacity(3 + 4 + NONCE_LEN + buf.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.fingerprint);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Opens a value sealed for `slot`.
    pub fn open(&self, slot: Slot<'_>, sealed: &[u8]) -> Result<Vec<u8>, SealError> {
        let aad = slot.aad();
        let header = 3 + 4 + NONCE_LEN;
        if sealed.len() < header + 16 || &sealed[..3] != MAGIC {
            return Err(SealError::Malformed);
        }
        if sealed[3..7] != self.fingerprint {
            return Err(SealError::WrongKey(hex(&sealed[3..7])));
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&sealed[7..header]);
        let mut buf = sealed[header..].to_vec();
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_slice()),
                &mut buf,
            )
            .map_err(|_| SealError::Tampered)?;
        Ok(plain.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> DataKey {
        DataKey::parse(&"ab".repeat(32)).expect("key")
    }

    #[test]
    fn round_trip_and_purpose_binding() {
        let k = key();
        let s = k.seal(Slot::SigningKey, b"JBSWY3DPEHPK3PXP").expect("seal");
        assert!(!s.windows(16).any(|w| w == b"JBSWY3DPEHPK3PXP"));
        assert_eq!(
            k.open(Slot::SigningKey, &s).expect("open"),
            b"JBSWY3DPEHPK3PXP"
        );
        assert!(matches!(
            k.open(Slot::Secret("x"), &s),
            Err(SealError::Tampered)
        ));
        let mut t = s.clone();
        let last = t.len() - 1;
        t[last] ^= 1;
        assert!(matches!(
            k.open(Slot::SigningKey, &t),
            Err(SealError::Tampered)
        ));
        let other = DataKey::parse(&"cd".repeat(32)).expect("key");
        assert!(matches!(
            other.open(Slot::SigningKey, &s),
            Err(SealError::WrongKey(_))
        ));
        assert!(matches!(
            k.open(Slot::SigningKey, b"PS2"),
            Err(SealError::Malformed)
        ));
    }

    #[test]
    fn a_sealed_value_cannot_move_to_another_object() {
        let k = key();
        let alice = UserKey {
            provider: "corp".into(),
            subject: "alice".into(),
        };
        let bob = UserKey {
            provider: "corp".into(),
            subject: "bob".into(),
        };
        let s = k.seal(Slot::TotpSeed(&alice), b"seed").expect("seal");
        assert_eq!(k.open(Slot::TotpSeed(&alice), &s).expect("open"), b"seed");
        assert!(matches!(
            k.open(Slot::TotpSeed(&bob), &s),
            Err(SealError::Tampered)
        ));
        let s = k.seal(Slot::Secret("corp-oidc"), b"x").expect("seal");
        assert!(matches!(
            k.open(Slot::Secret("partner-oidc"), &s),
            Err(SealError::Tampered)
        ));
    }

    #[test]
    fn key_formats() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
        assert_eq!(
            DataKey::parse(&b64).expect("b64").fingerprint(),
            DataKey::from_bytes(&[7u8; 32]).expect("raw").fingerprint()
        );
        assert!(DataKey::parse("too short").is_err());
        assert!(DataKey::parse(&"ab".repeat(31)).is_err());
        assert!(!format!("{:?}", key()).contains("abab"));
        let fresh = palisade_link::pki::data_key_hex();
        assert_eq!(fresh.len(), 64);
        assert!(DataKey::parse(&fresh).is_ok());
    }
}
