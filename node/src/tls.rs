//! TLS for the public ingress: certificates from files, chosen per connection by SNI.
//!
//! Each certificate is indexed by the DNS names in its subjectAltName extension (exact names and
//! `*.` wildcards, which cover one label). A client hello is answered with the certificate whose
//! names cover the server name it asked for; without SNI, or for a name no certificate covers, the
//! first certificate given is the default. ALPN offers HTTP/2 and HTTP/1.1 on TCP, HTTP/3 on QUIC.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// One certificate chain and its key, as files.
#[derive(Debug, Clone)]
pub struct CertFiles {
    /// PEM chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl std::str::FromStr for CertFiles {
    type Err = String;

    /// `CERT.pem:KEY.pem`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (cert, key) = s
            .split_once(':')
            .ok_or_else(|| format!("{s:?} is not CERT_FILE:KEY_FILE"))?;
        if cert.is_empty() || key.is_empty() {
            return Err(format!("{s:?} is not CERT_FILE:KEY_FILE"));
        }
        Ok(CertFiles {
            cert: cert.into(),
            key: key.into(),
        })
    }
}

/// Picks a certificate by SNI.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// The certificate for `name` (lowercase DNS name).
    pub fn lookup(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = name else {
            return self.default.clone();
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return k.clone();
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return k.clone();
        }
        self.default.clone()
    }

    /// Names covered, for logs.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.exact.keys().cloned().collect();
        v.extend(self.wildcard.keys().map(|p| format!("*.{p}")));
        v.sort();
        v
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.lookup(hello.server_name()))
    }
}

fn load_one(files: &CertFiles) -> Result<(Arc<CertifiedKey>, Vec<String>), String> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
        .map_err(|e| format!("reading {}: {e}", files.cert.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("reading {}: {e}", files.cert.display()))?;
    let Some(leaf) = chain.first() else {
        return Err(format!("{} holds no certificate", files.cert.display()));
    };
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| format!("reading {}: {e}", files.key.display()))?;
    let signing = rustls::crypto::ring::default_provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{}: unusable private key: {e}", files.key.display()))?;
    let names = dns_names(leaf).map_err(|e| format!("{}: {e}", files.cert.display()))?;
    let certified = CertifiedKey::new(chain, signing);
    certified.keys_match().map_err(|e| {
        format!(
            "{} does not belong to {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok((Arc::new(certified), names))
}

fn dns_names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref())
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::DNSName(d) = n {
                out.push(d.trim_end_matches('.').to_ascii_lowercase());
            }
        }
    }
    Ok(out)
}

/// Loads every certificate and builds the resolver. The first one is the default.
pub fn resolver(files: &[CertFiles]) -> Result<SniResolver, String> {
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for f in files {
        let (key, names) = load_one(f)?;
        for n in names {
            match n.strip_prefix("*.") {
                Some(parent) => {
                    wildcard.entry(parent.to_string()).or_insert(key.clone());
                }
                None => {
                    exact.entry(n).or_insert(key.clone());
                }
            }
        }
        default.get_or_insert(key);
    }
    let default = default.ok_or("at least one certificate is needed (--cert CERT:KEY)")?;
    Ok(SniResolver {
        exact,
        wildcard,
        default,
    })
}

/// The rustls server configuration for the ingress, offering `alpn` (`h2` and `http/1.1` on
/// TCP, `h3` on QUIC). It asks for (never requires) a device certificate, checked against the
/// device CA `devices` holds (the replica's): a browser on an unmanaged machine sends none and
/// is served as before; a certificate from any other CA fails the handshake. It accepts no
/// early data: 0-RTT stays off on QUIC (a replayed request could act twice).
pub fn server_config(
    resolver: Arc<SniResolver>,
    devices: Arc<palisade_link::device::DeviceClientVerifier>,
    alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default protocol versions")
    .with_client_cert_verifier(devices)
    .with_cert_resolver(resolver);
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg.max_early_data_size = 0;
    Arc::new(cfg)
}

/// Reads a PEM bundle of CA certificates into a root store.
pub fn roots_from(path: &Path, roots: &mut rustls::RootCertStore) -> Result<(), String> {
    for c in CertificateDer::pem_file_iter(path).map_err(|e| format!("{}: {e}", path.display()))? {
        let c = c.map_err(|e| format!("{}: {e}", path.display()))?;
        roots
            .add(c)
            .map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
