//! Palisade identities in certificates.
//!
//! Identities are SAN URIs: `urn:palisade:controller:<node id>`, `urn:palisade:edge:<edge id>`
//! and `urn:palisade:admin:<viewer|operator|admin>` (an admin certificate's common name is the
//! actor recorded with each write). A certificate with none of these, or with more than one,
//! carries no identity.

use std::fmt;

use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

/// Admin roles; each includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
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

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "viewer" => Some(Role::Viewer),
            "operator" => Some(Role::Operator),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// Who holds a certificate.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// A controller (Raft node id).
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

/// Why a certificate carries no usable identity. Messages are safe to return to the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    /// Not an X.509 certificate.
    #[error("the certificate does not parse")]
    Unparsable,
    /// No `urn:palisade:` SAN URI.
    #[error("the certificate carries no Palisade identity (urn:palisade:...)")]
    Missing,
    /// More than one `urn:palisade:` SAN URI.
    #[error("the certificate carries more than one Palisade identity")]
    Ambiguous,
    /// A `urn:palisade:` URI that does not name a known kind of identity.
    #[error("malformed Palisade identity: {0}")]
    Malformed(String),
}

impl Principal {
    /// Reads the identity from a DER certificate.
    pub fn from_der(der: &[u8]) -> Result<Principal, IdentityError> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|_| IdentityError::Unparsable)?;
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
                IdentityError::Missing
            } else {
                IdentityError::Ambiguous
            });
        };
        let malformed = || IdentityError::Malformed(one.chars().take(64).collect());
        let (kind, value) = one.split_once(':').ok_or_else(malformed)?;
        match kind {
            "controller" => value
                .parse()
                .map(Principal::Controller)
                .map_err(|_| malformed()),
            "edge" if !value.is_empty() => Ok(Principal::Edge(value.to_string())),
            "admin" => Role::parse(value)
                .map(|role| Principal::Admin { name: cn, role })
                .ok_or_else(malformed),
            _ => Err(malformed()),
        }
    }

    /// The SAN URI that carries this identity.
    pub fn uri(&self) -> String {
        match self {
            Principal::Controller(id) => format!("urn:palisade:controller:{id}"),
            Principal::Edge(id) => format!("urn:palisade:edge:{id}"),
            Principal::Admin { role, .. } => format!("urn:palisade:admin:{}", role.as_str()),
        }
    }
}
