//! The end-to-end stack: 3 controller processes and 2 edge processes (real binaries, via the
//! `palisade-e2e-host` host binary), the sample upstream verifying identity assertions against
//! an edge's JWKS, the certified `oidc-provider` from npm as the identity provider, and a
//! deliberately malicious provider that returns whatever ID token a test forges.

#![allow(dead_code)]

pub mod devices;
pub mod h3;
pub mod mfa;

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use palisade_chaos::cluster::{ClusterSpec, LocalCluster};
use palisade_chaos::upstream::Upstream;
use serde_json::{Value, json};

pub const APP_HOST: &str = "app.palisade.localhost";
pub const FORGED_HOST: &str = "forged.palisade.localhost";
pub const CLIENT_ID: &str = "palisade-e2e";
pub const CLIENT_SECRET: &str = "e2e-client-secret-not-for-production";

/// The `oidc-provider` process.
pub struct OidcPeer {
    child: Child,
    pub issuer: String,
}

impl Drop for OidcPeer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl OidcPeer {
    pub fn start(redirect_uris: &[String], log: &Path) -> OidcPeer {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/oidc-provider");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "oidc-provider is not installed: run `npm ci` in {} (bash .ci/run does)",
            dir.display()
        );
        let mut child = Command::new("node")
            .arg("server.mjs")
            .current_dir(&dir)
            .env("CLIENT_ID", CLIENT_ID)
            .env("CLIENT_SECRET", CLIENT_SECRET)
            .env("REDIRECT_URIS", redirect_uris.join(","))
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).expect("log"))
            .spawn()
            .expect("node");
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        out.read_line(&mut line).expect("oidc-provider output");
        // keep draining, so the provider never writes into a closed pipe
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| {
            panic!(
                "oidc-provider did not start: {line:?}; see {}",
                log.display()
            )
        });
        OidcPeer {
            child,
            issuer: v["issuer"].as_str().expect("issuer").to_string(),
        }
    }
}

/// A provider that serves discovery, its JWKS and a token endpoint answering with the ID token
/// the test put there.
pub struct ForgingIdp {
    pub issuer: String,
    pub next: Arc<Mutex<String>>,
    pub jwks: Arc<Mutex<Value>>,
    pub private_pem: String,
    pub public_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ForgingIdp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .expect("fixture")
}

impl ForgingIdp {
    pub async fn start() -> ForgingIdp {
        let private_pem = fixture("fake-idp-rsa.key");
        let public_pem = fixture("fake-idp-rsa.pub.pem");
        let key = rsa_key(&private_pem);
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::RS256)
                .expect("jwk");
        jwk.common.key_id = Some("rsa-1".into());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let issuer = format!("http://{}", listener.local_addr().expect("addr"));
        let next = Arc::new(Mutex::new(String::new()));
        let jwks = Arc::new(Mutex::new(json!({"keys": [jwk]})));
        let (iss, n, keys) = (issuer.clone(), next.clone(), jwks.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (iss, n, keys) = (iss.clone(), n.clone(), keys.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                        let body = match req.uri().path() {
                            "/.well-known/openid-configuration" => json!({
                                "issuer": iss,
                                "authorization_endpoint": format!("{iss}/authorize"),
                                "token_endpoint": format!("{iss}/token"),
                                "jwks_uri": format!("{iss}/jwks"),
                            })
                            .to_string(),
                            "/jwks" => keys.lock().expect("lock").to_string(),
                            "/token" => json!({
                                "access_token": "at",
                                "token_type": "Bearer",
                                "id_token": *n.lock().expect("lock"),
                            })
                            .to_string(),
                            _ => "{}".into(),
                        };
                        async move {
                            Ok::<_, Infallible>(
                                hyper::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
        ForgingIdp {
            issuer,
            next,
            jwks,
            private_pem,
            public_pem,
            task,
        }
    }

    /// The ID token the next code exchange returns.
    pub fn will_return(&self, token: String) {
        *self.next.lock().expect("lock") = token;
    }

    /// Rotates to a new EC key (published next to the RSA one, as providers do during a
    /// rotation); returns a signer for it.
    pub fn rotate(&self) -> impl Fn(&Value) -> String + use<> {
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let key = jsonwebtoken::EncodingKey::from_ec_der(&pair.serialize_der());
        let mut jwk =
            jsonwebtoken::jwk::Jwk::from_encoding_key(&key, jsonwebtoken::Algorithm::ES256)
                .expect("jwk");
        jwk.common.key_id = Some("ec-2".into());
        self.jwks.lock().expect("lock")["keys"]
            .as_array_mut()
            .expect("keys")
            .push(serde_json::to_value(jwk).expect("jwk"));
        move |claims: &Value| {
            let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
            h.kid = Some("ec-2".into());
            jsonwebtoken::encode(&h, claims, &key).expect("sign")
        }
    }

    /// RS256 with the provider's real key.
    pub fn sign(&self, claims: &Value) -> String {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        h.kid = Some("rsa-1".into());
        jsonwebtoken::encode(&h, claims, &rsa_key(&self.private_pem)).expect("sign")
    }
}

fn rsa_key(pem: &str) -> jsonwebtoken::EncodingKey {
    use rustls::pki_types::PrivateKeyDer;
    use rustls::pki_types::pem::PemObject;
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("pem");
    jsonwebtoken::EncodingKey::from_rsa_der(der.secret_der())
}

/// Everything running.
pub struct Stack {
    pub cluster: LocalCluster,
    pub upstream: Upstream,
    pub idp: OidcPeer,
    pub forging: ForgingIdp,
    pub ca: String,
    pub dir: tempfile::TempDir,
}

pub fn policy(real: &str, forged: &str, upstream: SocketAddr) -> Value {
    let up = format!("http://{upstream}");
    json!({
        "schema_version": 1,
        "identity_providers": [
            {"id": "real", "issuer": real, "client_id": CLIENT_ID, "client_secret_ref": "real-oidc",
             "scopes": ["openid", "email", "profile", "groups"],
             "claims": {"email": "email", "groups": "groups", "name": "name"}},
            {"id": "forged", "issuer": forged, "client_id": CLIENT_ID, "client_secret_ref": "forged-oidc"}
        ],
        // Most tests enrol a first factor without an admin-issued code; one test turns it on.
        "mfa": {"enrollment_requires_code": false},
        "apps": [
            {"id": "app", "name": "E2E application", "hosts": [APP_HOST], "upstreams": [up],
             "identity_providers": ["real"], "mfa": {"required": false},
             "session": {"lifetime": "1h", "idle_timeout": "30m"},
             "max_body_bytes": 1048576,
             "rules": [{"name": "example-staff", "decision": "allow", "include": [{"email_domain": "example.com"}]}]},
            {"id": "app-admin", "name": "E2E admin area", "hosts": [APP_HOST], "path_prefixes": ["/admin"],
             "upstreams": [up], "identity_providers": ["real"], "mfa": {"required": false},
             "rules": [{"name": "admins-only", "decision": "allow", "include": [{"group": "admins"}]}]},
            {"id": "app-mfa", "name": "MFA-protected application", "hosts": [APP_HOST], "path_prefixes": ["/mfa"],
             "upstreams": [up], "identity_providers": ["real"],
             "mfa": {"required": true, "methods": ["totp", "security_key", "platform"], "max_age": "1h"},
             "rules": [{"name": "example-staff", "decision": "allow", "include": [{"email_domain": "example.com"}]}]},
            {"id": "app-keys", "name": "Keys-only application", "hosts": [APP_HOST], "path_prefixes": ["/keys"],
             "upstreams": [up], "identity_providers": ["real"],
             "mfa": {"required": true, "methods": ["security_key"], "max_age": "1h"},
             "rules": [{"name": "security-keys-only", "decision": "allow", "include": [{"email_domain": "example.com"}]}]},
            {"id": "app-platform", "name": "Device-authenticator application", "hosts": [APP_HOST], "path_prefixes": ["/platform"],
             "upstreams": [up], "identity_providers": ["real"],
             "mfa": {"required": true, "methods": ["platform"], "max_age": "1h"},
             "rules": [{"name": "platform-only", "decision": "allow", "include": [{"email_domain": "example.com"}]}]},
            {"id": "forged", "name": "Forged-token target", "hosts": [FORGED_HOST], "upstreams": [up],
             "identity_providers": ["forged"], "mfa": {"required": false},
             "rules": [{"name": "anyone", "decision": "allow", "include": [{"everyone": true}]}]}
        ]
    })
}

impl Drop for Stack {
    /// On a failing test, shows the tail of every process log (the directory goes away).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let mut logs: Vec<_> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.retain(|p| p.extension().is_some_and(|x| x == "log"));
        logs.sort();
        for p in logs {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            eprintln!("----- {} (last 30 lines)", p.display());
            for l in &lines[lines.len().saturating_sub(30)..] {
                eprintln!("{l}");
            }
        }
    }
}

impl Stack {
    pub async fn start() -> Stack {
        Stack::start_with(&[]).await
    }

    /// A stack whose edges get `edge_args` on top of the usual flags.
    pub async fn start_with(edge_args: &[&str]) -> Stack {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let mut spec = ClusterSpec::new(
            3,
            2,
            env!("CARGO_BIN_EXE_palisade-e2e-host").into(),
            dir.path().to_path_buf(),
        );
        spec.edge_args = edge_args.iter().map(|a| a.to_string()).collect();
        let cluster = LocalCluster::start(spec).await.expect("cluster");
        let ca = cluster.pki_file("ingress-ca.pem").expect("ca");
        let upstream = Upstream::start(
            "127.0.0.1:0".parse().expect("addr"),
            format!(
                "https://localhost:{}/.well-known/palisade/jwks.json",
                cluster.edges[0].https().port()
            ),
            Some(&ca),
            None,
        )
        .await
        .expect("upstream");
        let redirects: Vec<String> = cluster
            .edges
            .iter()
            .map(|e| format!("https://{APP_HOST}:{}/.palisade/callback", e.https().port()))
            .collect();
        let idp = OidcPeer::start(&redirects, &dir.path().join("oidc-provider.log"));
        let forging = ForgingIdp::start().await;
        cluster
            .put_secret("real-oidc", CLIENT_SECRET.as_bytes())
            .await
            .expect("secret");
        cluster
            .put_secret("forged-oidc", b"whatever")
            .await
            .expect("secret");
        let p = policy(&idp.issuer, &forging.issuer, upstream.addr);
        let rev = cluster
            .apply_policy(&p.to_string(), "e2e")
            .await
            .expect("policy");
        cluster
            .wait_edges(rev, Duration::from_secs(20))
            .await
            .expect("edges apply the policy");
        Stack {
            cluster,
            upstream,
            idp,
            forging,
            ca,
            dir,
        }
    }

    /// Applies the stack's policy with HTTP/3 accepted by every application (`protocols`
    /// defaults to `http` only) and waits for both edges.
    pub async fn accept_h3(&self) {
        let mut p = policy(&self.idp.issuer, &self.forging.issuer, self.upstream.addr);
        for app in p["apps"].as_array_mut().expect("apps") {
            app["protocols"] = json!(["http", "h3"]);
        }
        let rev = self
            .cluster
            .apply_policy(&p.to_string(), "h3")
            .await
            .expect("policy");
        self.cluster
            .wait_edges(rev, Duration::from_secs(20))
            .await
            .expect("edges apply");
    }

    pub fn edge_port(&self, i: usize) -> u16 {
        self.cluster.edges[i].https().port()
    }

    pub fn browser(&self) -> Browser {
        Browser::new(&self.ca)
    }

    /// Runs the real palisadectl with the admin identity; returns (exit code, stdout JSON).
    pub fn palisadectl(&self, args: &[&str]) -> (i32, Value) {
        palisadectl(&self.cluster, args)
    }
}

/// Runs the real `palisadectl` against `cluster` as its admin, JSON output: the exit code and
/// what it printed.
pub fn palisadectl(cluster: &LocalCluster, args: &[&str]) -> (i32, Value) {
    let pki = cluster.pki();
    let out = Command::new(env!("CARGO_BIN_EXE_palisadectl-e2e"))
        .args(["-o", "json", "--server"])
        .arg(cluster.controller_addrs().join(","))
        .arg("--cert")
        .arg(pki.join("admin-admin.pem"))
        .arg("--key")
        .arg(pki.join("admin-admin.key"))
        .arg("--ca")
        .arg(pki.join("ca.pem"))
        .args(args)
        .output()
        .expect("palisadectl");
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        json!({"stdout": String::from_utf8_lossy(&out.stdout), "stderr": String::from_utf8_lossy(&out.stderr)})
    });
    (out.status.code().unwrap_or(-1), v)
}

/// A scripted browser: no automatic redirects, cookies kept per side (edges, identity provider).
pub struct Browser {
    pub http: reqwest::Client,
    pub edge: HashMap<String, String>,
    pub idp: HashMap<String, String>,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
    pub set_cookies: Vec<String>,
}

fn absorb(jar: &mut HashMap<String, String>, set_cookies: &[String]) {
    for c in set_cookies {
        let first = c.split(';').next().unwrap_or("");
        if let Some((n, v)) = first.split_once('=') {
            let expired = c.to_ascii_lowercase().contains("max-age=0")
                || c.to_ascii_lowercase().contains("expires=thu, 01 jan 1970");
            if v.is_empty() || expired {
                jar.remove(n.trim());
            } else {
                jar.insert(n.trim().to_string(), v.to_string());
            }
        }
    }
}

fn cookie_header(jar: &HashMap<String, String>) -> String {
    jar.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

impl Browser {
    pub fn new(ca: &str) -> Browser {
        Browser::build(ca, None)
    }

    /// A browser on a managed device: it presents the device certificate (`pem`: the key and
    /// the chain) to the edges.
    pub fn on_device(ca: &str, pem: &str) -> Browser {
        Browser::build(
            ca,
            Some(reqwest::Identity::from_pem(pem.as_bytes()).expect("device identity")),
        )
    }

    /// A browser that also finds `hosts` at 127.0.0.1, on a managed device when `pem` (the
    /// device's key and chain) is given.
    pub fn for_hosts(ca: &str, pem: Option<&str>, hosts: &[&str]) -> Browser {
        let identity =
            pem.map(|p| reqwest::Identity::from_pem(p.as_bytes()).expect("device identity"));
        Browser::build_for(ca, identity, hosts)
    }

    fn build(ca: &str, identity: Option<reqwest::Identity>) -> Browser {
        Browser::build_for(ca, identity, &[])
    }

    fn build_for(ca: &str, identity: Option<reqwest::Identity>, hosts: &[&str]) -> Browser {
        let mut b = reqwest::Client::builder();
        if let Some(id) = identity {
            b = b.identity(id);
        }
        for host in [APP_HOST, FORGED_HOST].iter().chain(hosts) {
            b = b.resolve(host, "127.0.0.1:0".parse().expect("addr"));
        }
        let http = b
            .redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        Browser {
            http,
            edge: HashMap::new(),
            idp: HashMap::new(),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, jar: &HashMap<String, String>) -> Page {
        let req = if jar.is_empty() {
            req
        } else {
            req.header("cookie", cookie_header(jar))
        };
        let r = req.send().await.expect("request");
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(String::from);
        let set_cookies = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(String::from))
            .collect();
        let body = r.text().await.unwrap_or_default();
        Page {
            status,
            location,
            body,
            set_cookies,
        }
    }

    /// GET at an edge, keeping the edge's cookies.
    pub async fn get(&mut self, url: &str) -> Page {
        let p = self.send(self.http.get(url), &self.edge.clone()).await;
        absorb(&mut self.edge, &p.set_cookies);
        p
    }

    /// Signs in through the real provider's interaction pages; returns the final page.
    pub async fn login(&mut self, port: u16, user: &str) -> Page {
        let start = format!("https://{APP_HOST}:{port}/hello?x=1");
        let first = self.get(&start).await;
        assert_eq!(
            first.status, 302,
            "sign-in starts with a redirect: {}",
            first.body
        );
        let mut url = first.location.clone().expect("location");
        for _ in 0..12 {
            if url.starts_with(&format!("https://{APP_HOST}")) {
                let cb = self.get(&url).await;
                return cb;
            }
            let p = self.send(self.http.get(&url), &self.idp.clone()).await;
            absorb(&mut self.idp, &p.set_cookies);
            let base = url::Url::parse(&url).expect("url");
            if let Some(l) = &p.location {
                url = base.join(l).expect("join").to_string();
                continue;
            }
            assert_eq!(p.status, 200, "provider page {url}: {}", p.body);
            // the devInteractions login form posts back to the interaction URL
            let form = [("prompt", "login"), ("login", user), ("password", "any")];
            let p = self
                .send(self.http.post(&url).form(&form), &self.idp.clone())
                .await;
            absorb(&mut self.idp, &p.set_cookies);
            let l = p
                .location
                .unwrap_or_else(|| panic!("login POST: {} {}", p.status, p.body));
            url = base.join(&l).expect("join").to_string();
        }
        panic!("the sign-in did not come back to the edge");
    }

    /// POSTs a form at an edge, keeping the edge's cookies.
    pub async fn post_form(&mut self, url: &str, form: &[(&str, &str)]) -> Page {
        let p = self
            .send(self.http.post(url).form(form), &self.edge.clone())
            .await;
        absorb(&mut self.edge, &p.set_cookies);
        p
    }

    /// POSTs JSON at an edge with the page's anti-CSRF token, keeping the edge's cookies.
    pub async fn post_json(&mut self, url: &str, csrf: &str, body: &Value) -> Page {
        let p = self
            .send(
                self.http
                    .post(url)
                    .header("x-palisade-csrf", csrf)
                    .header("content-type", "application/json")
                    .body(body.to_string()),
                &self.edge.clone(),
            )
            .await;
        absorb(&mut self.edge, &p.set_cookies);
        p
    }

    pub fn session(&self) -> Option<String> {
        self.edge.get("__Host-palisade-session").cloned()
    }
}

/// Starts a sign-in at the forging provider's application; returns (state, nonce).
pub async fn start_forged(b: &mut Browser, port: u16) -> (String, String) {
    start_forged_at(b, FORGED_HOST, port, "/").await
}

/// Starts a sign-in at `host` and `path` of an application the forging provider signs in to;
/// returns (state, nonce).
pub async fn start_forged_at(
    b: &mut Browser,
    host: &str,
    port: u16,
    path: &str,
) -> (String, String) {
    let p = b.get(&format!("https://{host}:{port}{path}")).await;
    assert_eq!(p.status, 302, "{}", p.body);
    let u = url::Url::parse(&p.location.expect("location")).expect("url");
    let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    (q["state"].clone(), q["nonce"].clone())
}

/// Returns from the forging provider to the edge with `state`.
pub async fn finish_forged(b: &mut Browser, port: u16, state: &str, iss: &str) -> Page {
    finish_forged_at(b, FORGED_HOST, port, state, iss).await
}

/// Returns from the forging provider to the edge at `host` with `state`.
pub async fn finish_forged_at(
    b: &mut Browser,
    host: &str,
    port: u16,
    state: &str,
    iss: &str,
) -> Page {
    b.get(&format!(
        "https://{host}:{port}/.palisade/callback?code=c&state={state}&iss={}",
        url::form_urlencoded::byte_serialize(iss.as_bytes()).collect::<String>()
    ))
    .await
}

/// The claims in a session cookie (the payload is plain base64url JSON; only the MAC is secret).
pub fn session_claims(token: &str) -> Value {
    let payload = token.split('.').nth(2).expect("payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("b64")).expect("json")
}

/// A TLS connection to an edge for raw requests and keep-alive tests.
pub async fn tls(
    ca: &str,
    port: u16,
    host: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_alpn(ca, port, host, b"http/1.1").await
}

/// A TLS connection offering one ALPN protocol.
pub async fn tls_alpn(
    ca: &str,
    port: u16,
    host: &str,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tls_as(ca, port, host, alpn, None).await
}

/// A TLS connection offering one ALPN protocol, presenting `client` (certificate chain PEM,
/// key PEM) if given.
pub async fn tls_as(
    ca: &str,
    port: u16,
    host: &str,
    alpn: &[u8],
    client: Option<(&str, &str)>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca.as_bytes()) {
        roots.add(c.expect("ca")).expect("ca");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut cfg = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .expect("client certificate"),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("client key"),
            )
            .expect("client auth"),
    };
    cfg.alpn_protocols = vec![alpn.to_vec()];
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(ServerName::try_from(host.to_string()).expect("name"), tcp)
        .await
        .expect("tls")
}

/// Sends raw bytes and reads until the connection closes or `timeout`; returns what came back.
pub async fn raw(ca: &str, port: u16, host: &str, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tls(ca, port, host).await;
    s.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in `raw`.
pub fn status_of(raw: &str) -> u16 {
    raw.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// One HTTP/1.1 keep-alive connection to an edge.
pub struct KeepAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl KeepAlive {
    pub async fn open(ca: &str, port: u16) -> KeepAlive {
        KeepAlive::open_as(ca, port, None).await
    }

    /// A keep-alive connection presenting a client certificate (`cert_pem`, `key_pem`).
    pub async fn open_as(ca: &str, port: u16, client: Option<(&str, &str)>) -> KeepAlive {
        let s = tls_as(ca, port, APP_HOST, b"http/1.1", client).await;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        KeepAlive {
            sender,
            host: format!("{APP_HOST}:{port}"),
        }
    }

    /// GET on this connection; (status, body).
    pub async fn get(&mut self, path: &str, cookie: &str) -> (u16, String) {
        let req = hyper::Request::get(path)
            .header("host", &self.host)
            .header("cookie", format!("__Host-palisade-session={cookie}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        let r = self
            .sender
            .send_request(req)
            .await
            .expect("the connection stays open");
        let status = r.status().as_u16();
        let body = r.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }
}

/// The value of the first `<input ... name=NAME value="...">` (or `id=NAME>text<`) on a page.
pub fn field(body: &str, name: &str) -> Option<String> {
    for pat in [
        format!("name={name} value=\""),
        format!("name=\"{name}\" value=\""),
    ] {
        if let Some(i) = body.find(&pat) {
            let rest = &body[i + pat.len()..];
            return rest.split('"').next().map(|v| v.replace("&amp;", "&"));
        }
    }
    let pat = format!("id={name}>");
    let i = body.find(&pat)?;
    body[i + pat.len()..].split('<').next().map(str::to_string)
}

/// The anti-CSRF token of a portal or MFA page (forms carry it; scripted pages carry it on
/// `<body data-csrf>`).
pub fn csrf(body: &str) -> String {
    field(body, "csrf")
        .or_else(|| {
            let i = body.find("data-csrf=\"")?;
            body[i + 11..].split('"').next().map(str::to_string)
        })
        .unwrap_or_else(|| panic!("no anti-CSRF token on the page: {body}"))
}
