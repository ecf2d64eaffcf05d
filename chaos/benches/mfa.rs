//! `cargo bench -p palisade-chaos --bench mfa`: how long passing a second factor takes.
//!
//! - TOTP at the edge: `POST /.palisade/mfa/totp` with a valid code, measured from the client,
//!   for N distinct users (each code works once: the controllers check it against the sealed
//!   seed and record its time step through Raft before the edge answers).
//! - WebAuthn at the edge: `POST /.palisade/mfa/webauthn/finish` with a software security key's
//!   assertion (webauthn-rs verification, then the counter and challenge recorded through Raft).
//! - WebAuthn assertion verification alone: webauthn-rs `finish_securitykey_authentication`
//!   in process, no network.
//!
//! Real processes (3 controllers, 1 edge, release build) and the development identity provider
//! with numbered load users. `PALISADE_BENCH_USERS` (default 200) sets N. The client runs on
//! the same 2 cores; the figures are a report, not a test.

use std::time::{Duration, Instant};

use palisade_chaos::cluster::{ClusterSpec, LocalCluster};
use palisade_chaos::devidp::DevIdp;
use palisade_chaos::softkey::SoftKey;
use serde_json::{Value, json};

const HOST: &str = "mfa.palisade.localhost";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

fn summary(label: &str, mut v: Vec<Duration>) {
    v.sort_unstable();
    let p = |q: f64| {
        v.get(((v.len().max(1) - 1) as f64 * q) as usize)
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e3
    };
    println!(
        "{label:<58} n {:>5}   p50 {:>7.3} ms   p99 {:>7.3} ms   max {:>7.3} ms",
        v.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

fn field(body: &str, name: &str) -> String {
    for pat in [format!("name={name} value=\""), format!("id={name}>")] {
        if let Some(i) = body.find(&pat) {
            let rest = &body[i + pat.len()..];
            return rest
                .split(['"', '<'])
                .next()
                .unwrap_or_default()
                .replace("&amp;", "&");
        }
    }
    panic!("no {name} on the page: {body}");
}

fn totp(secret: &str) -> totp_rs::Totp {
    totp_rs::Builder::new()
        .with_secret(totp_rs::Secret::try_from_base32(secret.trim_end_matches('=')).expect("seed"))
        .build()
        .expect("totp")
}

fn unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

struct User {
    session: String,
    csrf: String,
    totp: totp_rs::Totp,
    key: SoftKey,
}

async fn run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let n: usize = std::env::var("PALISADE_BENCH_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = ClusterSpec::new(
        3,
        1,
        env!("CARGO_BIN_EXE_palisade-chaos").into(),
        dir.path().to_path_buf(),
    );
    spec.log_filter = "warn".into();
    // The benchmark is one client signing in and passing MFA as many users, as fast as it
    // can: the rate limits are for real clients.
    spec.edge_args = [
        "--rate-sign-in",
        "0/0",
        "--rate-mfa",
        "0/0",
        "--rate-portal",
        "0/0",
        "--rate-reserved",
        "0/0",
    ]
    .map(String::from)
    .to_vec();
    let cluster = LocalCluster::start(spec).await.expect("cluster");
    let idp = DevIdp::start("127.0.0.1:0".parse().expect("addr"), "bench")
        .await
        .expect("idp");
    cluster
        .put_secret("dev-oidc", idp.client_secret.as_bytes())
        .await
        .expect("secret");
    // The upstream is never reached: every measured request ends at the edge.
    let policy = json!({
        "schema_version": 1,
        "identity_providers": [{"id": "dev", "issuer": idp.issuer, "client_id": "bench",
            "client_secret_ref": "dev-oidc", "scopes": ["openid", "email", "groups"]}],
        "mfa": {"enrollment_requires_code": false},
        "apps": [{"id": "bench", "hosts": [HOST], "upstreams": ["http://127.0.0.1:9"],
            "mfa": {"required": true, "methods": ["totp", "security_key"], "max_age": "1h"},
            "rules": [{"name": "staff", "decision": "allow", "include": [{"email_domain": "example.com"}]}]}]
    });
    let rev = cluster
        .apply_policy(&policy.to_string(), "bench")
        .await
        .expect("policy");
    cluster
        .wait_edges(rev, Duration::from_secs(30))
        .await
        .expect("edge");
    let ca = cluster.pki_file("ingress-ca.pem").expect("ca");
    let port = cluster.edges[0].https().port();
    let origin = format!("https://{HOST}:{port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
        .resolve(HOST, "127.0.0.1:0".parse().expect("addr"))
        .build()
        .expect("client");
    let get = |path: &str, cookie: &str| {
        http.get(format!("{origin}{path}"))
            .header("cookie", cookie.to_string())
            .send()
    };

    // N users sign in, enroll TOTP (the first code passes it) and a security key.
    let t = Instant::now();
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        let session = palisade_chaos::devidp::sign_in(&http, HOST, port, &format!("load-{i}"))
            .await
            .expect("sign-in");
        let cookie = format!("__Host-palisade-session={session}");
        let portal = get("/.palisade/portal", &cookie)
            .await
            .expect("portal")
            .text()
            .await
            .expect("body");
        let csrf = field(&portal, "csrf");
        let page = http
            .post(format!("{origin}/.palisade/portal/totp/begin"))
            .header("cookie", &cookie)
            .form(&[("csrf", csrf.as_str()), ("name", "Phone")])
            .send()
            .await
            .expect("begin")
            .text()
            .await
            .expect("body");
        let secret = field(&page, "totp-secret");
        let factor = field(&page, "factor_id");
        let totp = totp(&secret);
        let code = totp.generate(unix()).to_string();
        let r = http
            .post(format!("{origin}/.palisade/portal/totp/confirm"))
            .header("cookie", &cookie)
            .form(&[
                ("csrf", csrf.as_str()),
                ("factor_id", factor.as_str()),
                ("code", code.as_str()),
            ])
            .send()
            .await
            .expect("confirm");
        assert_eq!(r.status(), 303, "enrollment confirmed");
        let mfa = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.split(';')
                    .next()
                    .filter(|c| c.starts_with("__Host-palisade-mfa="))
            })
            .expect("mfa cookie")
            .to_string();
        // a security key, added within 10 minutes of passing TOTP
        let key = SoftKey::new();
        let both = format!("{cookie}; {mfa}");
        let r = http
            .post(format!("{origin}/.palisade/portal/webauthn/begin"))
            .header("cookie", &both)
            .header("x-palisade-csrf", &csrf)
            .header("content-type", "application/json")
            .body(json!({"kind": "security_key", "name": "Key"}).to_string())
            .send()
            .await
            .expect("begin");
        let ceremony = format!(
            "{both}; {}",
            set_cookie(&r, "__Host-palisade-webauthn=").expect("ceremony cookie")
        );
        let begin: Value =
            serde_json::from_slice(&r.bytes().await.expect("body")).expect("options");
        let r = http
            .post(format!("{origin}/.palisade/portal/webauthn/finish"))
            .header("cookie", ceremony)
            .header("x-palisade-csrf", &csrf)
            .header("content-type", "application/json")
            .body(key.register(&begin, &origin).to_string())
            .send()
            .await
            .expect("finish");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        users.push(User {
            session: cookie,
            csrf,
            totp,
            key,
        });
    }
    println!(
        "{n} users signed in, enrolled TOTP and a security key in {:?}",
        t.elapsed()
    );

    // TOTP: codes of the next step (the enrollment used this one).
    let wait = 30 - unix() % 30;
    tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(300)).await;
    let mut totp_lat = Vec::with_capacity(n);
    for u in &users {
        let code = u.totp.generate(unix()).to_string();
        let t = Instant::now();
        let r = http
            .post(format!("{origin}/.palisade/mfa/totp"))
            .header("cookie", &u.session)
            .form(&[
                ("csrf", u.csrf.as_str()),
                ("rd", "/"),
                ("code", code.as_str()),
            ])
            .send()
            .await
            .expect("verify");
        let status = r.status();
        let _ = r.bytes().await;
        totp_lat.push(t.elapsed());
        assert_eq!(status, 303, "code accepted");
    }

    // WebAuthn at the edge.
    let mut begin_lat = Vec::with_capacity(n);
    let mut finish_lat = Vec::with_capacity(n);
    for u in users.iter_mut() {
        let t = Instant::now();
        let r = http
            .post(format!("{origin}/.palisade/mfa/webauthn/begin"))
            .header("cookie", &u.session)
            .header("x-palisade-csrf", &u.csrf)
            .header("content-type", "application/json")
            .body(json!({"rd": "/"}).to_string())
            .send()
            .await
            .expect("begin");
        let ceremony = set_cookie(&r, "__Host-palisade-webauthn=").expect("ceremony cookie");
        let options: Value =
            serde_json::from_slice(&r.bytes().await.expect("body")).expect("options");
        begin_lat.push(t.elapsed());
        let answer = u.key.assert(&options, HOST, &origin);
        let t = Instant::now();
        let r = http
            .post(format!("{origin}/.palisade/mfa/webauthn/finish"))
            .header("cookie", format!("{}; {ceremony}", u.session))
            .header("x-palisade-csrf", &u.csrf)
            .header("content-type", "application/json")
            .body(answer.to_string())
            .send()
            .await
            .expect("finish");
        let status = r.status();
        let _ = r.bytes().await;
        finish_lat.push(t.elapsed());
        assert_eq!(status, 200, "assertion accepted");
    }

    // webauthn-rs verification alone, in process.
    let verify_lat = verify_in_process(n.max(500));

    println!("\nsequential requests from one client to one edge (release build, 3 controllers)\n");
    summary(
        "TOTP: POST /.palisade/mfa/totp (incl. controller + Raft)",
        totp_lat,
    );
    summary("WebAuthn: POST .../webauthn/begin", begin_lat);
    summary(
        "WebAuthn: POST .../webauthn/finish (incl. controller + Raft)",
        finish_lat,
    );
    summary(
        "WebAuthn: webauthn-rs assertion verification only",
        verify_lat,
    );
}

fn set_cookie(r: &reqwest::Response, prefix: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next().filter(|c| c.starts_with(prefix)))
        .map(String::from)
}

fn verify_in_process(n: usize) -> Vec<Duration> {
    use webauthn_rs::prelude::*;
    let origin = Url::parse(&format!("https://{HOST}")).expect("origin");
    let wa = WebauthnBuilder::new(HOST, &origin)
        .expect("builder")
        .build()
        .expect("webauthn");
    let mut key = SoftKey::new();
    let (ccr, reg) = wa
        .start_securitykey_registration(Uuid::from_bytes([7; 16]), "u", "U", None, None, None)
        .expect("start");
    let options = serde_json::to_value(&ccr).expect("json");
    let answer = key.register(&options, origin.as_str().trim_end_matches('/'));
    let cred: RegisterPublicKeyCredential =
        serde_json::from_value(answer["credential"].clone()).expect("credential");
    let sk = wa
        .finish_securitykey_registration(&cred, &reg)
        .expect("registered");
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let (rcr, state) = wa
            .start_securitykey_authentication(std::slice::from_ref(&sk))
            .expect("start");
        let options = serde_json::to_value(&rcr).expect("json");
        let answer = key.assert(&options, HOST, origin.as_str().trim_end_matches('/'));
        let pkc: PublicKeyCredential =
            serde_json::from_value(answer["credential"].clone()).expect("assertion");
        let t = Instant::now();
        let r = wa.finish_securitykey_authentication(&pkc, &state);
        out.push(t.elapsed());
        assert!(r.is_ok(), "{r:?}");
    }
    out
}
