//! Who is calling: the identity in the peer's client certificate (read by the authorization
//! layer, `crate::authz`, which decides what it may call), and the actor its writes record.
//!
//! Identities are SAN URIs: `urn:palisade:controller:<node id>`, `urn:palisade:edge:<edge id>`
//! and `urn:palisade:admin:<viewer|operator|admin>` (the certificate's common name is the
//! actor recorded with each write). A certificate with none of these, or with more than one, is
//! refused.

use tonic::{Request, Status};

pub use palisade_link::identity::{IdentityError, Principal, Role};

/// The actor recorded for writes made by `p`.
pub fn actor(p: &Principal) -> palisade_policy::catalog::Actor {
    let (subject, kind) = match p {
        Principal::Controller(id) => (format!("controller-{id}"), "system"),
        Principal::Edge(id) => (id.clone(), "edge"),
        Principal::Admin { name, .. } => (name.clone(), "admin"),
    };
    palisade_policy::catalog::Actor {
        subject,
        kind: kind.into(),
    }
}

/// The edge calling (the authorization layer admitted only edges to edge methods).
pub fn require_edge<T>(req: &Request<T>) -> Result<String, Status> {
    match crate::authz::caller(req)? {
        Principal::Edge(id) => Ok(id),
        other => Err(Status::permission_denied(format!("{other} is not an edge"))),
    }
}

/// The controller calling (the authorization layer admitted only controllers).
pub fn require_controller<T>(req: &Request<T>) -> Result<u64, Status> {
    match crate::authz::caller(req)? {
        Principal::Controller(id) => Ok(id),
        other => Err(Status::permission_denied(format!(
            "{other} may not call the Raft transport"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_link::pki::{DevCa, Subject};

    fn der(pem: &str) -> Vec<u8> {
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("pem")
    }

    #[test]
    fn identities_round_trip_through_certificates() {
        let ca = DevCa::new().expect("ca");
        for (subject, want) in [
            (Subject::Controller(3), Principal::Controller(3)),
            (
                Subject::Edge("edge-a".into()),
                Principal::Edge("edge-a".into()),
            ),
            (
                Subject::Admin {
                    name: "ops@example.com".into(),
                    role: Role::Operator,
                },
                Principal::Admin {
                    name: "ops@example.com".into(),
                    role: Role::Operator,
                },
            ),
        ] {
            let pair = ca.issue(&subject).expect("issue");
            assert_eq!(Principal::from_der(&der(&pair.cert_pem)), Ok(want));
        }
        let plain = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
        assert!(Principal::from_der(plain.cert.der()).is_err());
        assert!(Principal::from_der(b"garbage").is_err());
    }
}
