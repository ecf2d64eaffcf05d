//! Idempotency keys: a client's name for one write, carried in the `palisade-idempotency-key`
//! metadata header by every attempt of a call. The controllers' catalog applies a keyed write
//! once; a retry with the same key, through any member, gets the first answer. So a client
//! whose answer was lost (a frozen member, a cut connection, a deadline) can try the next
//! member without applying the write twice.

use sha2::{Digest, Sha256};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};

/// The metadata header in which clients name a write, so that retrying it is safe.
pub const IDEMPOTENCY_HEADER: &str = "palisade-idempotency-key";

/// A client's name for one write: 8 to 64 characters of `A-Z a-z 0-9 _ -`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Checks a key as sent.
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_chars = s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if (8..=64).contains(&s.len()) && ok_chars {
            Ok(Self(s.to_string()))
        } else {
            Err(format!(
                "{IDEMPOTENCY_HEADER} must be 8 to 64 characters of A-Z, a-z, 0-9, '-' and '_'"
            ))
        }
    }

    /// A fresh random key (128 bits).
    pub fn random() -> Self {
        use rand::Rng;
        let bytes: [u8; 16] = rand::rng().random();
        Self(hex(&bytes))
    }

    /// The key of one step of a call that makes several writes (`reserve`, then `use`): each
    /// step is applied once, and a retry of the whole call repeats each step under the same
    /// derived key, so it gets each step's first answer.
    pub fn derive(&self, step: &str) -> Self {
        let mut h = Sha256::new();
        h.update(self.0.as_bytes());
        h.update([0u8]);
        h.update(step.as_bytes());
        Self(hex(&h.finalize()[..16]))
    }

    /// The key a request carries, if any; a malformed one is refused.
    pub fn from_request<T>(req: &Request<T>) -> Result<Option<Self>, Status> {
        let Some(v) = req.metadata().get(IDEMPOTENCY_HEADER) else {
            return Ok(None);
        };
        let s = v
            .to_str()
            .map_err(|_| Status::invalid_argument(format!("{IDEMPOTENCY_HEADER} is not ASCII")))?;
        Self::parse(s).map(Some).map_err(Status::invalid_argument)
    }

    /// The key.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Adds a call's idempotency key to every request made through it (reads ignore it).
#[derive(Debug, Clone)]
pub struct KeyHeader(MetadataValue<Ascii>);

impl KeyHeader {
    /// The header for `key` (always valid metadata: keys are ASCII letters, digits, `-`, `_`).
    pub fn new(key: &IdempotencyKey) -> Self {
        Self(
            MetadataValue::try_from(key.as_str())
                .unwrap_or_else(|_| MetadataValue::from_static("invalid-key")),
        )
    }
}

impl Interceptor for KeyHeader {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        // A key the caller set on the request itself wins.
        if !req.metadata().contains_key(IDEMPOTENCY_HEADER) {
            req.metadata_mut()
                .insert(IDEMPOTENCY_HEADER, self.0.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_derived_keys_are_valid_distinct_and_stable() {
        assert!(IdempotencyKey::parse("short").is_err());
        assert!(IdempotencyKey::parse("has a space in it").is_err());
        assert!(IdempotencyKey::parse(&"x".repeat(65)).is_err());
        let k = IdempotencyKey::parse(&"k".repeat(64)).unwrap();
        let (a, b) = (k.derive("reserve"), k.derive("use"));
        assert_ne!(a, b);
        assert_eq!(a, k.derive("reserve"));
        assert!(IdempotencyKey::parse(a.as_str()).is_ok());
        assert_ne!(IdempotencyKey::random(), IdempotencyKey::random());
        let mut req = Request::new(());
        req.metadata_mut()
            .insert(IDEMPOTENCY_HEADER, MetadataValue::from_static("bad key!"));
        assert!(IdempotencyKey::from_request(&req).is_err());
        let req = KeyHeader::new(&a).call(Request::new(())).unwrap();
        assert_eq!(IdempotencyKey::from_request(&req).unwrap(), Some(a));
    }
}
