//! `cargo bench -p palisade-chaos --bench device`: what managed devices cost, in one run.
//!
//! - **Enrollments per second** through the cluster: `PALISADE_BENCH_DEVICES` pending devices
//!   (default 200) created through the admin API, then enrolled concurrently
//!   (`PALISADE_BENCH_CONCURRENCY`, default 16) over the controllers' device listeners, spread
//!   across all three: token check, certificate issue, one Raft write each.
//! - **Posture reports per second**: every enrolled device asks for a nonce and reports once,
//!   concurrently; each report is one Raft write.
//! - **Edge requests per second with and without a device certificate**, same run, same edge:
//!   N keep-alive HTTPS/1.1 connections (`PALISADE_BENCH_CONNECTIONS`, default 32) for
//!   `PALISADE_BENCH_SECONDS` (default 10) each, in alternating rounds
//!   (`PALISADE_BENCH_ROUNDS`, default 2): to an application that asks nothing of
//!   the device with a session signed in without one, then to an application that requires an
//!   enrolled device with fresh posture, over connections presenting the device certificate and
//!   a session bound to it (the device resolved against the replica on every request).
//!
//! Real processes (3 controllers, 1 edge, release build). The load generator shares the 2 cores
//! with everything else; the figures are a report, not a test.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Bench, env_or, load, report, sign_in, through_edge, tls_client};
use palisade_link::admin::AdminClient;
use palisade_link::{Expect, LinkOptions, LinkTls};
use palisade_proto::v1 as pb;
use serde_json::json;

mod common;

const HOST: &str = "bench.palisade.localhost";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

fn policy(issuer: &str, upstream: std::net::SocketAddr) -> String {
    let up = format!("http://{upstream}");
    json!({
        "schema_version": 1,
        "identity_providers": [{"id": "dev", "issuer": issuer, "client_id": "bench",
            "client_secret_ref": "dev-oidc", "scopes": ["openid", "email", "groups"]}],
        "apps": [
            {"id": "plain", "hosts": [HOST], "upstreams": [up], "mfa": {"required": false},
             "rules": [{"name": "staff", "decision": "allow", "include": [{"email_domain": "example.com"}]}]},
            {"id": "managed", "hosts": [HOST], "path_prefixes": ["/managed"], "upstreams": [up],
             "mfa": {"required": false},
             "rules": [{"name": "fleet", "decision": "allow", "include": [{"email_domain": "example.com"}],
                        "require": [{"device": {"enrolled": true, "os": ["linux"], "max_age": "1h"}}]}]}
        ]
    })
    .to_string()
}

/// Creates a pending device; returns its one-time token.
async fn pending(admin: &AdminClient, serial: String) -> String {
    admin
        .call(|ch| {
            let serial = serial.clone();
            async move {
                pb::device_service_client::DeviceServiceClient::new(ch)
                    .enroll_device(pb::EnrollDeviceRequest {
                        owner: "alice@example.com".into(),
                        serial,
                        display_name: String::new(),
                        groups: vec![],
                        token_ttl: None,
                    })
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
        .expect("create device")
        .enrollment_token
}

fn posture() -> pb::DevicePosture {
    pb::DevicePosture {
        os: pb::OsFamily::Linux as i32,
        client_version: "1.0.0".into(),
        ..Default::default()
    }
}

/// An enrolled device: its key and certificate chain (PEM).
struct Enrolled {
    key: String,
    chain: String,
}

async fn enroll(ca: &str, endpoint: &str, token: String) -> Result<Enrolled, tonic::Status> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
    let csr = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|p| p.serialize_request(&key))
        .expect("csr");
    let ch = LinkTls::anonymous(ca)
        .expect("ca")
        .connect(endpoint, Expect::AnyController, &LinkOptions::default())
        .await
        .expect("device listener");
    let r = pb::device_enrollment_client::DeviceEnrollmentClient::new(ch)
        .enroll(pb::EnrollRequest {
            enrollment_token: token,
            csr_der: csr.der().to_vec(),
            posture: Some(posture()),
        })
        .await?
        .into_inner();
    Ok(Enrolled {
        key: key.serialize_pem(),
        chain: r.certificate_chain_pem,
    })
}

async fn report_posture(ca: &str, endpoint: &str, d: &Enrolled) {
    let ch = LinkTls::new(&d.chain, &d.key, ca)
        .expect("identity")
        .connect(endpoint, Expect::AnyController, &LinkOptions::default())
        .await
        .expect("device listener");
    let mut c = pb::device_enrollment_client::DeviceEnrollmentClient::new(ch);
    let nonce = c
        .posture_nonce(pb::PostureNonceRequest {})
        .await
        .expect("nonce")
        .into_inner()
        .nonce;
    c.report_posture(pb::ReportPostureRequest {
        posture: Some(posture()),
        nonce,
    })
    .await
    .expect("report");
}

/// Runs `work(i)` for `0..n` with at most `concurrency` at once; returns the results in order
/// and the rate per second.
async fn concurrently<T, F, Fut>(n: usize, concurrency: usize, work: F) -> (Vec<T>, f64)
where
    T: Send + 'static,
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = T> + Send,
{
    let work = Arc::new(work);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (work, next) = (work.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return done;
                }
                done.push((i, work(i).await));
            }
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("worker"));
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    all.sort_by_key(|(i, _)| *i);
    (all.into_iter().map(|(_, t)| t).collect(), rate)
}

async fn run() {
    let devices = env_or("PALISADE_BENCH_DEVICES", 200).max(1);
    let concurrency = env_or("PALISADE_BENCH_CONCURRENCY", 16).max(1);
    let seconds = env_or("PALISADE_BENCH_SECONDS", 10) as u64;
    let connections = env_or("PALISADE_BENCH_CONNECTIONS", 32);
    let bench = Bench::start().await;
    let (cluster, up, idp) = (&bench.cluster, bench.upstream, &bench.idp);
    cluster
        .apply_policy(&policy(&idp.issuer, up), "bench")
        .await
        .expect("policy");
    let internal_ca = cluster.pki_file("ca.pem").expect("ca");
    let endpoints: Vec<String> = cluster
        .controllers
        .values()
        .map(|c| c.device_addr())
        .collect();
    let admin = Arc::new(cluster.admin().expect("admin"));

    // The first leader creates the device CA shortly after the election.
    let deadline = Instant::now() + Duration::from_secs(30);
    let warm = loop {
        let token = pending(&admin, "warm-up".into()).await;
        match enroll(&internal_ca, &endpoints[0], token).await {
            Ok(d) => break d,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => panic!("no device CA after 30 s: {e}"),
        }
    };

    let (tokens, create_rate) = {
        let admin = admin.clone();
        concurrently(devices, concurrency, move |i| {
            let admin = admin.clone();
            async move { pending(&admin, format!("bench-{i}")).await }
        })
        .await
    };
    let tokens = Arc::new(std::sync::Mutex::new(tokens));
    let (enrolled, enroll_rate) = {
        let (ca, endpoints) = (internal_ca.clone(), endpoints.clone());
        concurrently(devices, concurrency, move |i| {
            let token = std::mem::take(&mut tokens.lock().expect("tokens")[i]);
            let (ca, endpoint) = (ca.clone(), endpoints[i % endpoints.len()].clone());
            async move { enroll(&ca, &endpoint, token).await.expect("enroll") }
        })
        .await
    };
    let enrolled = Arc::new(enrolled);
    let (_, posture_rate) = {
        let (ca, endpoints, enrolled) = (internal_ca.clone(), endpoints.clone(), enrolled.clone());
        concurrently(devices, concurrency, move |i| {
            let (ca, endpoint) = (ca.clone(), endpoints[i % endpoints.len()].clone());
            let enrolled = enrolled.clone();
            async move { report_posture(&ca, &endpoint, &enrolled[i]).await }
        })
        .await
    };
    println!(
        "\n{devices} devices, {concurrency} at a time, 3 controllers\n\
         {:<52} {create_rate:>8.0} /s\n{:<52} {enroll_rate:>8.0} /s\n{:<52} {posture_rate:>8.0} /s",
        "pending devices created (admin API, one write each)",
        "enrollments (token + CSR → certificate, one write)",
        "posture reports (nonce + report, one write each)",
    );

    // The edge, with and without the device certificate, same run.
    let commit = cluster.latest_revision().await.expect("status");
    cluster
        .wait_edges(commit, Duration::from_secs(60))
        .await
        .expect("edge applies everything");
    let ca = cluster.pki_file("ingress-ca.pem").expect("ca");
    let port = cluster.edges[0].https().port();
    let plain_cookie = sign_in(&ca, HOST, port, None).await;
    let device_cookie = sign_in(&ca, HOST, port, Some(format!("{}{}", warm.key, warm.chain))).await;
    let plain = through_edge(tls_client(&ca, None), HOST, port, "/", plain_cookie);
    let managed = through_edge(
        tls_client(&ca, Some((&warm.chain, &warm.key))),
        HOST,
        port,
        "/managed/",
        device_cookie,
    );
    // Alternating rounds, so that a drift of this noisy machine does not favour one side.
    let rounds = env_or("PALISADE_BENCH_ROUNDS", 2).max(1);
    println!("\n{connections} keep-alive connections, {seconds} s each, {rounds} rounds\n");
    let (mut without, mut with) = (0, 0);
    for _ in 0..rounds {
        let l = load(connections, seconds, plain.clone()).await;
        report("no device certificate (session + decide + proxy)", &l);
        without += l.requests;
        let l = load(connections, seconds, managed.clone()).await;
        report("device certificate, device-only app", &l);
        with += l.requests;
    }
    println!(
        "ratio with / without over all rounds: {:.2}",
        with as f64 / without.max(1) as f64
    );
}
