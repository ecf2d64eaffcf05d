//! Who is calling: the identity in the peer's client certificate, and what it may do.
//!
//! Identities are SAN URIs: `urn:palisade:controller:<node id>`, `urn:palisade:edge:<edge id>`
//! and `urn:palisade:admin:<viewer|operator|admin>` (the certificate's common name is the
//! actor recorded with each write). A certificate with none of these, or with more than one, is
//! refused.

use std::fmt;

use tonic::{Request, Status};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Admin roles; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Reads only.
    Viewer,
    /// Reads, revocations, device and factor operations, policy apply and rollback.
    Operator,
    /// Everything, including membership, keys and secrets.
    Admin,
}

impl Role {
    /// The role's name in certificates.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Another controller.
    Controller(u64),
    /// An edge.
    Edge(String),
    /// An operator.
    Admin {
        /// Common name.
        name: String,
        /// Role.
        role: Role,
    },
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Principal::Controller(id) => write!(f, "controller {id}"),
            Principal::Edge(id) => write!(f, "edge {id}"),
            Principal::Admin { name, role } => write!(f, "{name} ({})", role.as_str()),
        }
    }
}

impl Principal {
    /// Reads the principal from a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Principal, String> {
        let (_, cert) = X509Certificate::from_der(der)
            .map_err(|_| "client certificate does not parse".to_string())?;
        let cn = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|c| c.as_str().ok())
            .unwrap_or("")
            .to_string();
        let mut found = Vec::new();
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::URI(uri) = name
                    && let Some(rest) = uri.strip_prefix("urn:palisade:")
                {
                    found.push(rest.to_string());
                }
            }
        }
        let [one] = found.as_slice() else {
            return Err(if found.is_empty() {
                "client certificate carries no Palisade identity (urn:palisade:...)".into()
            } else {
                "client certificate carries more than one Palisade identity".into()
            });
        };
        let (kind, value) = one.split_once(':').ok_or("malformed Palisade identity")?;
        match kind {
            "controller" => value
                .parse()
                .map(Principal::Controller)
                .map_err(|_| "malformed controller identity".into()),
            "edge" if !value.is_empty() => Ok(Principal::Edge(value.to_string())),
            "admin" => Role::parse(value)
                .map(|role| Principal::Admin { name: cn, role })
                .ok_or_else(|| format!("unknown admin role {value:?}")),
            _ => Err("unknown Palisade identity kind".into()),
        }
    }

    /// Reads the principal from a request's peer certificate.
    pub fn from_request<T>(req: &Request<T>) -> Result<Principal, Status> {
        let certs = req
            .peer_certs()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        let leaf = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a client certificate is required"))?;
        Principal::from_der(leaf.as_ref()).map_err(Status::unauthenticated)
    }

    /// The actor recorded for writes.
    pub fn actor(&self) -> palisade_policy::catalog::Actor {
        let (subject, kind) = match self {
            Principal::Controller(id) => (format!("controller-{id}"), "system"),
            Principal::Edge(id) => (id.clone(), "edge"),
            Principal::Admin { name, .. } => (name.clone(), "admin"),
        };
        palisade_policy::catalog::Actor {
            subject,
            kind: kind.into(),
        }
    }
}

/// Requires an admin of at least `min` role.
pub fn require_role<T>(req: &Request<T>, min: Role) -> Result<Principal, Status> {
    let p = Principal::from_request(req)?;
    match &p {
        Principal::Admin { role, .. } if *role >= min => Ok(p),
        Principal::Admin { role, .. } => Err(Status::permission_denied(format!(
            "this call needs the {} role; the certificate has {}",
            min.as_str(),
            role.as_str()
        ))),
        other => Err(Status::permission_denied(format!(
            "{other} may not call the admin API"
        ))),
    }
}

/// Requires another controller.
pub fn require_controller<T>(req: &Request<T>) -> Result<u64, Status> {
    match Principal::from_request(req)? {
        Principal::Controller(id) => Ok(id),
        other => Err(Status::permission_denied(format!(
            "{other} may not call the Raft transport"
        ))),
    }
}

/// Requires an edge.
pub fn require_edge<T>(req: &Request<T>) -> Result<String, Status> {
    match Principal::from_request(req)? {
        Principal::Edge(id) => Ok(id),
        other => Err(Status::permission_denied(format!("{other} is not an edge"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{DevCa, Subject};

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
