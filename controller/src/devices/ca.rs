//! The device CA: created once by the first leader (its key sealed into the catalog), and used
//! by every member to turn a device's certificate signing request into a short-lived client
//! certificate naming the device (`urn:palisade:device:<id>`).
//!
//! Only the CSR's public key is used: its signature proves the device holds the key, and its
//! key type must be one edges and agents handle (ECDSA P-256 or P-384, Ed25519). Subject,
//! names and usages are the controller's choice, never the request's.

use std::time::Duration;

use palisade_policy::catalog::DeviceCertificate;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateSigningRequestDer;

/// Largest CSR accepted.
const MAX_CSR_BYTES: usize = 8 * 1024;
/// How far back a certificate's validity starts (clocks of devices drift).
const BACKDATE: Duration = Duration::from_secs(300);
/// How long the device CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Why a certificate could not be issued. Messages are safe to return to the device.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IssueError {
    /// Not a PKCS#10 request, or one with extensions we do not read.
    #[error("the certificate signing request does not parse")]
    Unparsable,
    /// Too large.
    #[error("the certificate signing request is larger than {MAX_CSR_BYTES} bytes")]
    TooLarge,
    /// A key type devices may not use.
    #[error("a device key must be ECDSA P-256, ECDSA P-384 or Ed25519")]
    KeyType,
    /// The CA itself is unusable (a controller fault, not the device's).
    #[error("the device CA cannot sign")]
    Ca,
}

/// A new device CA: its certificate (PEM) and private key (PKCS#8 DER, to be sealed).
pub fn generate() -> Result<(String, Vec<u8>), rcgen::Error> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "Palisade device CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + CA_VALIDITY;
    let cert = params.self_signed(&key)?;
    Ok((cert.pem(), key.serialize_der()))
}

/// A certificate issued to a device.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The device certificate then the CA certificate, PEM.
    pub chain_pem: String,
    /// Its catalog record.
    pub certificate: DeviceCertificate,
}

/// Issues device `id` a certificate for the key in `csr_der`, valid `ttl` from `now`.
pub fn issue(
    ca_pem: &str,
    ca_key_der: &[u8],
    csr_der: &[u8],
    id: &str,
    ttl: Duration,
    now: time::OffsetDateTime,
) -> Result<Issued, IssueError> {
    if csr_der.len() > MAX_CSR_BYTES {
        return Err(IssueError::TooLarge);
    }
    let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(
        csr_der.to_vec(),
    ))
    .map_err(|_| IssueError::Unparsable)?;
    let alg = csr.public_key.algorithm();
    let allowed = [
        &rcgen::PKCS_ECDSA_P256_SHA256,
        &rcgen::PKCS_ECDSA_P384_SHA384,
        &rcgen::PKCS_ED25519,
    ];
    if !allowed.contains(&alg) {
        return Err(IssueError::KeyType);
    }
    let ca_key = KeyPair::try_from(ca_key_der).map_err(|_| IssueError::Ca)?;
    let issuer = Issuer::from_ca_cert_pem(ca_pem, ca_key).map_err(|_| IssueError::Ca)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(|_| IssueError::Ca)?;
    params.distinguished_name.push(DnType::CommonName, id);
    params.subject_alt_names = vec![SanType::URI(
        format!("{}{id}", palisade_link::device::DEVICE_URI_PREFIX)
            .try_into()
            .map_err(|_| IssueError::Ca)?,
    )];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = now - BACKDATE;
    params.not_after = now + ttl;
    let cert = params
        .signed_by(&csr.public_key, &issuer)
        .map_err(|_| IssueError::Ca)?;
    let not_after_ms = (params.not_after.unix_timestamp_nanos() / 1_000_000) as i64;
    Ok(Issued {
        certificate: DeviceCertificate {
            fingerprint_sha256: palisade_link::device::fingerprint(cert.der()),
            not_after_ms,
        },
        chain_pem: format!("{}{}", cert.pem(), ca_pem),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_link::device::PresentedDevice;

    fn csr(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
        let key = KeyPair::generate_for(alg).expect("key");
        CertificateParams::new(vec!["ignored.example".to_string()])
            .expect("params")
            .serialize_request(&key)
            .expect("csr")
            .der()
            .to_vec()
    }

    #[test]
    fn a_device_gets_a_client_certificate_naming_it_and_nothing_else() {
        let (ca, key) = generate().expect("ca");
        let now = time::OffsetDateTime::now_utc();
        for alg in [
            &rcgen::PKCS_ECDSA_P256_SHA256,
            &rcgen::PKCS_ECDSA_P384_SHA384,
            &rcgen::PKCS_ED25519,
        ] {
            let issued = issue(
                &ca,
                &key,
                &csr(alg),
                "dev-7",
                Duration::from_secs(3600),
                now,
            )
            .expect("issued");
            use rustls::pki_types::pem::PemObject;
            let chain: Vec<rustls::pki_types::CertificateDer<'static>> =
                rustls::pki_types::CertificateDer::pem_slice_iter(issued.chain_pem.as_bytes())
                    .collect::<Result<_, _>>()
                    .expect("pem");
            assert_eq!(chain.len(), 2, "the leaf, then the CA");
            let der = chain[0].to_vec();
            let presented = PresentedDevice::from_der(&der).expect("a device identity");
            assert_eq!(presented.id, "dev-7");
            assert_eq!(presented.fingerprint, issued.certificate.fingerprint_sha256);
            let (_, x) = x509_parser::parse_x509_certificate(&der).expect("x509");
            assert!(
                x.subject_alternative_name()
                    .unwrap()
                    .unwrap()
                    .value
                    .general_names
                    .len()
                    == 1,
                "the requested DNS name is not copied"
            );
            assert!(issued.chain_pem.ends_with(&ca));
        }
    }

    #[test]
    fn foreign_keys_and_garbage_are_refused() {
        let (ca, key) = generate().expect("ca");
        let now = time::OffsetDateTime::now_utc();
        // made with `openssl req -new -newkey rsa:2048 -nodes -outform DER` (ring cannot
        // generate RSA keys)
        let rsa = include_bytes!("testdata/rsa-2048.csr.der");
        assert_eq!(
            issue(&ca, &key, rsa, "d", Duration::from_secs(60), now).map(|_| ()),
            Err(IssueError::KeyType)
        );
        assert_eq!(
            issue(&ca, &key, b"not a csr", "d", Duration::from_secs(60), now).map(|_| ()),
            Err(IssueError::Unparsable)
        );
        let mut tampered = csr(&rcgen::PKCS_ECDSA_P256_SHA256);
        let n = tampered.len();
        tampered[n - 5] ^= 0xff;
        assert_eq!(
            issue(&ca, &key, &tampered, "d", Duration::from_secs(60), now).map(|_| ()),
            Err(IssueError::Unparsable),
            "a CSR whose signature does not verify"
        );
    }
}
