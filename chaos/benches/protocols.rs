//! `cargo bench -p palisade-chaos --bench protocols`: HTTP/1.1, HTTP/2 and HTTP/3 through one
//! edge in the same run with the same load tool, for an authenticated request proxied to a
//! keep-alive upstream.
//!
//! The tool is `oha` built with its `http3` feature, outside the workspace so that it does not
//! slow the workspace's builds:
//!
//! ```sh
//! cargo install oha --locked --features http3 --root target/oha --target-dir target/oha-build
//! ```
//!
//! (`PALISADE_OHA` names another binary.) Real processes (3 controllers, 1 edge, release
//! build), a real sign-in; then for each round (`PALISADE_BENCH_ROUNDS`, default 2) oha runs
//! `PALISADE_BENCH_SECONDS` (default 10) with `PALISADE_BENCH_CONNECTIONS` (default 32)
//! connections over each protocol in turn, so a drift of this noisy machine does not favour
//! one. The load generator shares the 2 cores with everything else; the figures are a report,
//! not a test.

use std::path::PathBuf;
use std::time::Duration;

use common::{Bench, env_or, sign_in};
use serde_json::{Value, json};

mod common;

const HOST: &str = "bench.palisade.localhost";

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

fn oha() -> PathBuf {
    std::env::var_os("PALISADE_OHA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/oha/bin/oha"))
}

/// What one oha run measured.
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    ok: u64,
    other: u64,
}

/// Runs oha over `version` (`1.1`, `2`, `3`) against the edge for `seconds`.
fn load(
    version: &str,
    target: (u16, u16),
    ca: &std::path::Path,
    cookie: &str,
    seconds: u64,
    connections: usize,
) -> Run {
    let (tcp, udp) = target;
    let port = if version == "3" { udp } else { tcp };
    let out = std::process::Command::new(oha())
        .args(["--no-tui", "--output-format", "json"])
        .args(["-z", &format!("{seconds}s"), "-c", &connections.to_string()])
        .args(["--http-version", version])
        .arg("--cacert")
        .arg(ca)
        .args(["--connect-to", &format!("{HOST}:{tcp}:127.0.0.1:{port}")])
        .args(["-H", &format!("cookie: __Host-palisade-session={cookie}")])
        .arg(format!("https://{HOST}:{tcp}/"))
        .output()
        .expect("oha runs");
    assert!(
        out.status.success(),
        "oha over HTTP/{version}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "oha printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let codes = v["statusCodeDistribution"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let ok = codes.get("200").and_then(Value::as_u64).unwrap_or(0);
    let all: u64 = codes.values().filter_map(Value::as_u64).sum();
    // oha ends the requests in flight at the deadline (one per connection): not failures
    let errors: u64 = v["errorDistribution"]
        .as_object()
        .map(|e| {
            e.iter()
                .filter(|(k, _)| !k.contains("deadline"))
                .filter_map(|(_, n)| n.as_u64())
                .sum()
        })
        .unwrap_or(0);
    let ms = |p: &str| v["latencyPercentiles"][p].as_f64().unwrap_or(0.0) * 1e3;
    Run {
        rps: v["summary"]["requestsPerSec"].as_f64().unwrap_or(0.0),
        p50_ms: ms("p50"),
        p99_ms: ms("p99"),
        ok,
        other: all - ok + errors,
    }
}

async fn run() {
    let oha = oha();
    assert!(
        oha.is_file(),
        "{} is missing: cargo install oha --locked --features http3 --root target/oha --target-dir target/oha-build (or set PALISADE_OHA)",
        oha.display()
    );
    let seconds = env_or("PALISADE_BENCH_SECONDS", 10) as u64;
    let connections = env_or("PALISADE_BENCH_CONNECTIONS", 32);
    let rounds = env_or("PALISADE_BENCH_ROUNDS", 2).max(1);
    let bench = Bench::start().await;
    let (cluster, up, idp) = (&bench.cluster, bench.upstream, &bench.idp);
    let policy = json!({
        "schema_version": 1,
        "identity_providers": [{"id": "dev", "issuer": idp.issuer, "client_id": "bench",
            "client_secret_ref": "dev-oidc", "scopes": ["openid", "email", "groups"]}],
        "apps": [{"id": "bench", "hosts": [HOST], "upstreams": [format!("http://{up}")],
                  "protocols": ["http", "h3"], "mfa": {"required": false},
                  "rules": [{"name": "staff", "decision": "allow",
                             "include": [{"email_domain": "example.com"}]}]}]
    });
    let rev = cluster
        .apply_policy(&policy.to_string(), "bench")
        .await
        .expect("policy");
    cluster
        .wait_edges(rev, Duration::from_secs(60))
        .await
        .expect("the edge applies the policy");
    let ca_pem = cluster.pki_file("ingress-ca.pem").expect("ca");
    let ca = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(ca.path(), &ca_pem).expect("write the CA");
    let edge = &cluster.edges[0];
    let target = (
        edge.https().port(),
        edge.h3().expect("the edge serves HTTP/3").port(),
    );
    let cookie = sign_in(&ca_pem, HOST, target.0, None).await;
    println!(
        "\nauthenticated GET through one edge to a keep-alive upstream; oha, {connections} connections, {seconds} s per protocol, {rounds} rounds\n"
    );
    println!(
        "{:<10} {:>10} {:>9} {:>9} {:>10} {:>8}",
        "protocol", "req/s", "p50 ms", "p99 ms", "200", "other"
    );
    let mut total = [0.0f64; 3];
    for _ in 0..rounds {
        for (i, version) in ["1.1", "2", "3"].into_iter().enumerate() {
            let r = load(version, target, ca.path(), &cookie, seconds, connections);
            println!(
                "HTTP/{version:<5} {:>10.0} {:>9.2} {:>9.2} {:>10} {:>8}",
                r.rps, r.p50_ms, r.p99_ms, r.ok, r.other
            );
            total[i] += r.rps;
        }
    }
    println!(
        "\nover all rounds: HTTP/2 / HTTP/1.1 = {:.2}, HTTP/3 / HTTP/1.1 = {:.2} (goal: at least 0.50)",
        total[1] / total[0].max(1.0),
        total[2] / total[0].max(1.0)
    );
}
