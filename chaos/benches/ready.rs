//! `cargo bench -p palisade-chaos --bench ready`: how long a new edge takes to become ready
//! from a snapshot of a large catalog, end to end through a real cluster: 3 controller
//! processes (release build) holding a policy of 10,000 applications and 1,000,000 revocations
//! (`PALISADE_BENCH_APPS`, `PALISADE_BENCH_REVOCATIONS`), written through the admin API like any
//! client would. Then an edge process with no state starts; the time is from its start until
//! its `/readyz` answers 200 with the cluster's latest revision applied (subscribe, snapshot
//! streamed from a controller's applied state, replica built and compiled, swapped in).
//! Repeated `PALISADE_BENCH_ROUNDS` times (default 3).

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_chaos::cluster::{ClusterSpec, LocalCluster, ops_get_at, ops_status_at};
use serde_json::json;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

fn policy(apps: usize) -> String {
    let list: Vec<_> = (0..apps)
        .map(|a| {
            json!({
                "id": format!("app-{a}"), "hosts": [format!("app-{a}.example.com")],
                "upstreams": ["http://127.0.0.1:9"], "mfa": {"required": false},
                "rules": (0..10).map(|r| json!({"name": format!("r{r}"), "decision": "allow",
                    "include": [{"group": format!("g{}", (a + r) % 300)}]})).collect::<Vec<_>>()
            })
        })
        .collect();
    json!({
        "schema_version": 1,
        "identity_providers": [{"id": "dev", "issuer": "https://login.example.com",
            "client_id": "bench", "client_secret_ref": "dev-oidc"}],
        "apps": list
    })
    .to_string()
}

fn dir_size(p: &std::path::Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.filter_map(|e| e.ok())
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_size(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

async fn run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let apps = env_or("PALISADE_BENCH_APPS", 10_000);
    let revocations = env_or("PALISADE_BENCH_REVOCATIONS", 1_000_000);
    let rounds = env_or("PALISADE_BENCH_ROUNDS", 3);
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = std::env::var("PALISADE_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| tmp.path().to_path_buf());
    let mut spec = ClusterSpec::new(
        3,
        1,
        env!("CARGO_BIN_EXE_palisade-chaos").into(),
        path.clone(),
    );
    spec.log_filter = "warn".into();
    let mut cluster = LocalCluster::start(spec).await.expect("cluster");
    cluster.kill_edge(0);

    let t = Instant::now();
    cluster
        .apply_policy(&policy(apps), "bench")
        .await
        .expect("policy");
    println!(
        "policy with {apps} applications applied in {:?}",
        t.elapsed()
    );

    let admin = Arc::new(cluster.admin().expect("admin"));
    let writers = 64;
    let per = revocations.div_ceil(writers);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let admin = admin.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let id = format!("ready-{w}-{i}");
                loop {
                    match palisade_chaos::cluster::revoke_session(&admin, &id, "bench").await {
                        Ok(_) => break,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await.expect("writer");
    }
    let took = t.elapsed();
    println!(
        "{} revocations written in {took:?} ({:.0}/s, {writers} concurrent clients)",
        per * writers,
        (per * writers) as f64 / took.as_secs_f64()
    );
    let latest = cluster.latest_revision().await.expect("status");
    for id in 1..=3u64 {
        println!(
            "controller {id}: data directory {:.1} MB",
            dir_size(&path.join(format!("data-{id}"))) as f64 / 1e6
        );
    }

    let mut times = Vec::new();
    for round in 0..rounds {
        let t = Instant::now();
        cluster.spawn_edge(0).await.expect("edge");
        let ops = cluster.edges[0].addrs.as_ref().expect("addrs").ops;
        loop {
            if ops_status_at(ops, "/readyz").await == Some(200)
                && let Some(m) = ops_get_at(ops, "/metrics").await
                && let Some(rev) = m
                    .lines()
                    .find(|l| l.starts_with("palisade_edge_revision "))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<f64>().ok())
                && rev as u64 >= latest
            {
                break;
            }
            if t.elapsed() > Duration::from_secs(600) {
                panic!("the edge did not become ready in 10 minutes");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let d = t.elapsed();
        println!("round {round}: new edge ready with revision {latest} after {d:?}");
        times.push(d);
        cluster.kill_edge(0);
    }
    times.sort_unstable();
    println!(
        "\nnew edge ready from a snapshot of {apps} applications and {} revocations: p50 {:?}, max {:?} ({} rounds)",
        per * writers,
        times[times.len() / 2],
        times[times.len() - 1],
        times.len()
    );
}
