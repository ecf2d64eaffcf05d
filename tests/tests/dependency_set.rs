//! The dependency set builds together and uses exactly one TLS crypto provider (ring): every
//! TLS user in the stack (tonic, quinn, hyper-rustls, the OIDC client's HTTP client) accepts a
//! ring-backed rustls configuration, and a QUIC handshake completes over loopback. `.ci/run` also
//! fails if aws-lc-rs enters the dependency graph.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

fn install_ring() {
    // Every main and test harness does this first; a second call in the same process is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

fn self_signed() -> (CertificateDer<'static>, PrivateKeyDer<'static>, String) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let der = CertificateDer::from(cert.cert.der().to_vec());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    (der, key, cert.cert.pem())
}

fn client_config(root: &CertificateDer<'static>, alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).expect("root");
    let mut c = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    c.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    c
}

#[test]
fn only_ring_is_the_process_provider() {
    install_ring();
    let provider = rustls::crypto::CryptoProvider::get_default().expect("installed");
    // ring's provider offers these suites; aws-lc-rs would add post-quantum key exchange groups.
    assert!(
        provider
            .kx_groups
            .iter()
            .all(|g| !format!("{:?}", g.name()).contains("MLKEM"))
    );
    // Builders that pick the process provider do not panic.
    let _ = rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
}

#[tokio::test]
async fn quic_handshake_over_loopback_with_ring() {
    install_ring();
    let (cert, key, _) = self_signed();
    let mut server_tls = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)
        .expect("server tls");
    server_tls.alpn_protocols = vec![b"h3".to_vec()];
    let server_cfg = quinn::ServerConfig::with_crypto(Arc::new(
        quinn::crypto::rustls::QuicServerConfig::try_from(server_tls).expect("quic server"),
    ));
    let server = quinn::Endpoint::server(server_cfg, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .expect("bind");
    let addr = server.local_addr().expect("addr");
    let accept = tokio::spawn(async move {
        let conn = server
            .accept()
            .await
            .expect("incoming")
            .await
            .expect("handshake");
        conn.remote_address()
    });
    let client_cfg = quinn::ClientConfig::new(Arc::new(
        quinn::crypto::rustls::QuicClientConfig::try_from(client_config(&cert, &[b"h3"]))
            .expect("quic client"),
    ));
    let mut client =
        quinn::Endpoint::client(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).expect("client");
    client.set_default_client_config(client_cfg);
    let conn = client
        .connect(addr, "localhost")
        .expect("connect")
        .await
        .expect("client handshake");
    assert_eq!(conn.remote_address(), addr);
    accept.await.expect("server task");
    // h3 and h3-quinn are part of the set and wrap this connection type.
    let _h3 = h3_quinn::Connection::new(conn);
}

#[tokio::test]
async fn tonic_hyper_and_oidc_http_clients_take_ring_configs() {
    install_ring();
    let (cert, _key, cert_pem) = self_signed();
    // tonic
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(cert_pem))
        .domain_name("localhost");
    let _endpoint = tonic::transport::Endpoint::from_static("https://127.0.0.1:1")
        .tls_config(tls)
        .expect("tonic tls");
    // hyper-rustls
    let _https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(&cert, &[]))
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    // The OIDC client's HTTP client (reqwest via openidconnect) builds with rustls.
    let _http = openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .expect("reqwest with rustls");
}

#[test]
fn identity_and_operations_crates_work() {
    // WebAuthn relying party.
    let origin = webauthn_rs::prelude::Url::parse("https://edge.test").expect("url");
    let _webauthn = webauthn_rs::WebauthnBuilder::new("edge.test", &origin)
        .expect("builder")
        .build()
        .expect("webauthn");
    // TOTP (RFC 6238 test vector, SHA-1, 8 digits at T=59).
    let totp = totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(8)
        .with_secret(b"12345678901234567890".to_vec())
        .build()
        .expect("totp");
    assert_eq!(totp.generate(59).to_string(), "94287082");
    // jsonwebtoken with exactly one crypto backend.
    let header = jsonwebtoken::decode_header(
        "eyJhbGciOiJIUzI1NiJ9.e30.ZRrHA1JJJW8opsbCGfG_HACGpVUMN_a9IV7pAx_Zmeo",
    )
    .expect("header");
    assert_eq!(header.alg, jsonwebtoken::Algorithm::HS256);
    // Prometheus exporter.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let handle = recorder.handle();
    metrics::with_local_recorder(&recorder, || {
        metrics::counter!("palisade_test_total").increment(1)
    });
    assert!(handle.render().contains("palisade_test_total 1"));
}
