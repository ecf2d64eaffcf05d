use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

use super::*;

struct Ca {
    issuer: Issuer<'static, KeyPair>,
    der: CertificateDer<'static>,
}

fn ca() -> Ca {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).expect("ca");
    Ca {
        der: cert.der().clone(),
        issuer: Issuer::new(p, key),
    }
}

fn leaf(ca: &Ca, uris: &[&str], eku: &[ExtendedKeyUsagePurpose]) -> CertificateDer<'static> {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).expect("params");
    for u in uris {
        p.subject_alt_names
            .push(SanType::URI((*u).try_into().expect("uri")));
    }
    p.extended_key_usages = eku.to_vec();
    p.signed_by(&key, &ca.issuer).expect("leaf").der().clone()
}

fn verify(ca: &Ca, expect: Expect, cert: &CertificateDer<'static>) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der.clone()).expect("root");
    ServerIdentityVerifier::new(Arc::new(roots), expect)
        .verify_server_cert(
            cert,
            &[],
            &ServerName::try_from("localhost").expect("name"),
            &[],
            UnixTime::now(),
        )
        .is_ok()
}

#[test]
fn only_the_expected_controller_is_accepted() {
    use ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let ca = ca();
    let c2 = leaf(
        &ca,
        &["urn:palisade:controller:2"],
        &[ServerAuth, ClientAuth],
    );
    assert!(verify(&ca, Expect::AnyController, &c2));
    assert!(verify(&ca, Expect::Controller(2), &c2));
    assert!(!verify(&ca, Expect::Controller(3), &c2), "another member");
    for (uris, eku) in [
        (vec!["urn:palisade:edge:e1"], vec![ServerAuth, ClientAuth]),
        (
            vec!["urn:palisade:admin:viewer"],
            vec![ServerAuth, ClientAuth],
        ),
        (vec![], vec![ServerAuth]),
        (
            vec!["urn:palisade:controller:2", "urn:palisade:controller:3"],
            vec![ServerAuth],
        ),
        // a controller identity without the server usage
        (vec!["urn:palisade:controller:2"], vec![ClientAuth]),
    ] {
        let cert = leaf(&ca, &uris, &eku);
        assert!(
            !verify(&ca, Expect::AnyController, &cert),
            "{uris:?} {eku:?}"
        );
    }
    // the right identity from another CA
    let other = ca_other();
    let foreign = leaf(&other, &["urn:palisade:controller:2"], &[ServerAuth]);
    assert!(!verify(&ca, Expect::Controller(2), &foreign));
}

fn ca_other() -> Ca {
    ca()
}

#[test]
fn identities_parse_from_certificates() {
    let ca = ca();
    let der = leaf(
        &ca,
        &["urn:palisade:edge:edge-a"],
        &[ExtendedKeyUsagePurpose::ClientAuth],
    );
    assert_eq!(
        Principal::from_der(der.as_ref()),
        Ok(Principal::Edge("edge-a".into()))
    );
    assert_eq!(
        Principal::from_der(b"garbage"),
        Err(identity::IdentityError::Unparsable)
    );
    let none = leaf(&ca, &["https://example.com"], &[]);
    assert_eq!(
        Principal::from_der(none.as_ref()),
        Err(identity::IdentityError::Missing)
    );
    let bad = leaf(&ca, &["urn:palisade:admin:root"], &[]);
    assert!(matches!(
        Principal::from_der(bad.as_ref()),
        Err(identity::IdentityError::Malformed(_))
    ));
}
