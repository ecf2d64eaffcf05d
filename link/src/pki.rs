//! A development PKI: an internal CA with certificates for controllers, edges and admins whose
//! identities are SAN URIs (`urn:palisade:controller:<id>`, `urn:palisade:edge:<id>`,
//! `urn:palisade:admin:<role>`), and a separate CA for the public ingress certificate.
//! `palisadectl pki init` writes one for a local cluster; tests make one in a temporary
//! directory. Production deployments bring certificates from their own CAs with the same SAN
//! URIs and extended key usages.
//!
//! Each certificate carries only the usages it needs: controllers are TLS servers and clients
//! (they serve the cluster and dial each other), edges and admins are clients only, and the
//! ingress certificate is a server certificate from another CA entirely. So neither an edge's
//! key, an admin's key nor the key on every internet-facing edge can serve as a controller.
//! Leaf certificates are valid for a year (`LEAF_VALIDITY`).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use crate::identity::Role;

/// A new data key for sealing catalog secrets: 32 random bytes, hex (what
/// `palisade-controller --data-key-file` reads).
pub fn data_key_hex() -> String {
    use rand::Rng;
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long a development leaf certificate is valid.
pub const LEAF_VALIDITY: std::time::Duration = std::time::Duration::from_secs(365 * 86_400);
/// How long a development CA is valid.
const CA_VALIDITY: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86_400);

/// Sets a validity from yesterday (clock skew between hosts) for `valid`.
fn validity(params: &mut CertificateParams, valid: std::time::Duration) {
    let today = jiff::tz::TimeZone::UTC
        .to_datetime(jiff::Timestamp::now())
        .date();
    let d = today.yesterday().unwrap_or(today);
    params.not_before = rcgen::date_time_ymd(i32::from(d.year()), d.month() as u8, d.day() as u8);
    params.not_after = params.not_before + valid;
}

/// A certificate and its key, PEM.
#[derive(Clone)]
pub struct CertPair {
    /// Certificate chain, PEM (leaf only; the CA is distributed separately).
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM.
    pub key_pem: String,
}

impl std::fmt::Debug for CertPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CertPair { .. }")
    }
}

/// An in-memory CA that issues Palisade identities.
pub struct DevCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub ca_pem: String,
}

impl std::fmt::Debug for DevCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevCa { .. }")
    }
}

/// The kinds of identity a certificate can carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// A controller (Raft node id).
    Controller(u64),
    /// An edge (edge id).
    Edge(String),
    /// An operator with a role.
    Admin {
        /// Common name (recorded as the actor).
        name: String,
        /// Role.
        role: Role,
    },
}

impl DevCa {
    /// Creates a new CA for the cluster's identities.
    pub fn new() -> anyhow::Result<Self> {
        Self::named("Palisade development CA")
    }

    /// Creates a new CA with this common name.
    pub fn named(common_name: &str) -> anyhow::Result<Self> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        validity(&mut params, CA_VALIDITY);
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key)?;
        Ok(Self {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        })
    }

    /// Issues a certificate for `subject`: a controller's is a TLS server (also for
    /// `localhost` and 127.0.0.1, for tools that check names) and client certificate; an
    /// edge's or an admin's is a client certificate only.
    pub fn issue(&self, subject: &Subject) -> anyhow::Result<CertPair> {
        let key = KeyPair::generate()?;
        let server = matches!(subject, Subject::Controller(_));
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        validity(&mut params, LEAF_VALIDITY);
        if server {
            params
                .subject_alt_names
                .push(SanType::DnsName("localhost".try_into()?));
            params
                .subject_alt_names
                .push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        }
        let (cn, uri) = match subject {
            Subject::Controller(id) => (
                format!("controller-{id}"),
                format!("urn:palisade:controller:{id}"),
            ),
            Subject::Edge(id) => (format!("edge-{id}"), format!("urn:palisade:edge:{id}")),
            Subject::Admin { name, role } => (
                name.clone(),
                format!("urn:palisade:admin:{}", role.as_str()),
            ),
        };
        params
            .subject_alt_names
            .push(SanType::URI(uri.as_str().try_into()?));
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = if server {
            vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ]
        } else {
            vec![ExtendedKeyUsagePurpose::ClientAuth]
        };
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

impl DevCa {
    /// Issues a client certificate whose only SAN is `uri` (tests: a device certificate from a
    /// CA that is not the device CA).
    pub fn issue_uri(&self, uri: &str) -> anyhow::Result<CertPair> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        validity(&mut params, LEAF_VALIDITY);
        params.subject_alt_names.push(SanType::URI(uri.try_into()?));
        params.distinguished_name.push(DnType::CommonName, uri);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Issues a public serving certificate (server auth only) for the edge's HTTPS ingress,
    /// covering `names` (DNS names, `*.` wildcards allowed, or IP addresses).
    pub fn issue_server(&self, names: &[String]) -> anyhow::Result<CertPair> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        validity(&mut params, LEAF_VALIDITY);
        for n in names {
            match n.parse::<IpAddr>() {
                Ok(ip) => params.subject_alt_names.push(SanType::IpAddress(ip)),
                Err(_) => params
                    .subject_alt_names
                    .push(SanType::DnsName(n.as_str().try_into()?)),
            }
        }
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_else(|| "palisade".into()),
        );
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok(CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// Names the development ingress certificate covers. Every `*.localhost` name resolves to the
/// loopback address in browsers and curl, so applications get real host names locally; the
/// wildcard sits one level below `localhost` because clients refuse `*.localhost` itself.
pub const DEV_INGRESS_NAMES: &[&str] = &["localhost", "*.palisade.localhost", "127.0.0.1"];

/// An Ed25519 key (PKCS#8 PEM) for the edges' identity assertions.
pub fn assertion_key_pem() -> anyhow::Result<String> {
    Ok(KeyPair::generate_for(&rcgen::PKCS_ED25519)?.serialize_pem())
}

/// Paths of one identity's files in a PKI directory.
#[derive(Debug, Clone)]
pub struct IdentityFiles {
    /// Certificate.
    pub cert: PathBuf,
    /// Key.
    pub key: PathBuf,
}

/// Writes the internal CA (`ca.pem`), `controllers` controller identities, `edges` edge
/// identities, admin identities for every role, the ingress CA (`ingress-ca.pem`, what
/// browsers and HTTP clients trust) with a serving certificate for the ingress
/// (`ingress.pem`, for `DEV_INGRESS_NAMES`), the identity assertion key (`assertion.key`) and
/// a data key into `dir`. Keys are written with mode 0600.
pub fn init_dir(dir: &Path, controllers: &[u64], edges: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let ca = DevCa::new()?;
    write(dir, "ca.pem", &ca.ca_pem, false)?;
    let mut subjects: Vec<(String, Subject)> = controllers
        .iter()
        .map(|id| (format!("controller-{id}"), Subject::Controller(*id)))
        .collect();
    subjects.extend(
        edges
            .iter()
            .map(|e| (format!("edge-{e}"), Subject::Edge(e.clone()))),
    );
    for role in [Role::Viewer, Role::Operator, Role::Admin] {
        subjects.push((
            format!("admin-{}", role.as_str()),
            Subject::Admin {
                name: format!("{}@local", role.as_str()),
                role,
            },
        ));
    }
    for (name, subject) in subjects {
        let pair = ca.issue(&subject)?;
        write(dir, &format!("{name}.pem"), &pair.cert_pem, false)?;
        write(dir, &format!("{name}.key"), &pair.key_pem, true)?;
    }
    let ingress_ca = DevCa::named("Palisade development ingress CA")?;
    write(dir, "ingress-ca.pem", &ingress_ca.ca_pem, false)?;
    let ingress = ingress_ca.issue_server(
        &DEV_INGRESS_NAMES
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>(),
    )?;
    write(dir, "ingress.pem", &ingress.cert_pem, false)?;
    write(dir, "ingress.key", &ingress.key_pem, true)?;
    write(dir, "assertion.key", &assertion_key_pem()?, true)?;
    write(dir, "data.key", &(data_key_hex() + "\n"), true)?;
    Ok(())
}

/// The files for an identity written by `init_dir`.
pub fn files(dir: &Path, name: &str) -> IdentityFiles {
    IdentityFiles {
        cert: dir.join(format!("{name}.pem")),
        key: dir.join(format!("{name}.key")),
    }
}

fn write(dir: &Path, name: &str, contents: &str, secret: bool) -> anyhow::Result<()> {
    let path = dir.join(name);
    std::fs::write(&path, contents)?;
    if secret {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}
