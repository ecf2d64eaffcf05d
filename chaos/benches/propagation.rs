//! `cargo bench -p palisade-chaos --bench propagation`: time from a change's commit until every
//! edge has applied it, with 3 controller processes and 10 edge processes (release build) on
//! this machine. Single changes one at a time, and bursts of 1,000.
//!
//! "Applied at every edge" is what the cluster knows: `WaitForRevision` returns once every edge
//! has reported the revision (so the figure includes the edge's report back). Each edge's own
//! commit-to-applied histogram (`palisade_propagation_seconds`) is printed too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_chaos::cluster::{ClusterSpec, LocalCluster};
use palisade_link::admin::AdminClient;

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64() * 1e3
}

fn line(label: &str, mut v: Vec<Duration>) {
    v.sort_unstable();
    println!(
        "{label:<60} n={:<5} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
        v.len(),
        pct(&v, 0.5),
        pct(&v, 0.99),
        pct(&v, 1.0)
    );
}

async fn revoke(admin: &AdminClient, id: String) -> u64 {
    palisade_chaos::cluster::revoke_session(admin, &id, "bench")
        .await
        .expect("revoke")
        .0
}

async fn wait_all(admin: &AdminClient, revision: u64, edges: usize) -> Duration {
    let t = Instant::now();
    let r = palisade_chaos::cluster::wait_for_revision(admin, revision, Duration::from_secs(30))
        .await
        .expect("wait");
    assert!(
        r.complete && r.applied.len() >= edges,
        "not applied everywhere: {r:?}"
    );
    t.elapsed()
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let edges = env_or("PALISADE_BENCH_EDGES", 10);
    let singles = env_or("PALISADE_BENCH_SINGLES", 300);
    let bursts = env_or("PALISADE_BENCH_BURSTS", 5);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = ClusterSpec::new(
        3,
        edges,
        env!("CARGO_BIN_EXE_palisade-chaos").into(),
        dir.path().to_path_buf(),
    );
    spec.log_filter = "warn".into();
    let cluster = LocalCluster::start(spec).await.expect("cluster");
    let admin = Arc::new(cluster.admin().expect("admin"));
    let rev = cluster.latest_revision().await.expect("status");
    cluster
        .wait_edges(rev, Duration::from_secs(30))
        .await
        .expect("edges ready");
    println!("3 controllers, {edges} edge processes\n");

    let ops: Vec<u16> = cluster
        .edges
        .iter()
        .filter_map(|e| e.addrs.as_ref().map(|a| a.ops.port()))
        .collect();
    // what the cluster knows: ack -> WaitForRevision says every edge reported it
    let mut single = Vec::new();
    for i in 0..singles {
        let r = revoke(&admin, format!("single-{i}")).await;
        single.push(wait_all(&admin, r, edges).await);
    }
    // what the edges show: ack -> every edge's exported revision reaches it
    let mut seen = Vec::new();
    for i in 0..singles {
        let r = revoke(&admin, format!("seen-{i}")).await;
        let acked = Instant::now();
        let polls = ops.iter().map(|port| async move {
            loop {
                let text = ops_metrics(*port).await;
                let rev = text
                    .lines()
                    .find(|l| l.starts_with("palisade_edge_revision "))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
                if rev as u64 >= r {
                    return Instant::now();
                }
                tokio::time::sleep(Duration::from_micros(500)).await;
            }
        });
        let last = futures::future::join_all(polls)
            .await
            .into_iter()
            .max()
            .unwrap_or(acked);
        seen.push(last.duration_since(acked));
    }
    line(
        "single change: acknowledged -> WaitForRevision: every edge applied",
        single,
    );
    line(
        "single change: acknowledged -> every edge's metrics show it",
        seen,
    );
    let mut from_first = Vec::new();
    let mut from_last = Vec::new();
    for b in 0..bursts {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..50 {
            let admin = admin.clone();
            tasks.push(tokio::spawn(async move {
                let mut max = 0;
                for i in 0..20 {
                    max = max.max(revoke(&admin, format!("burst-{b}-{w}-{i}")).await);
                }
                max
            }));
        }
        let mut last = 0;
        for t in tasks {
            last = last.max(t.await.expect("writer"));
        }
        let acked = Instant::now();
        let waited = wait_all(&admin, last, edges).await;
        from_last.push(waited);
        from_first.push(acked.duration_since(start) + waited);
    }
    line(
        "burst of 1,000: last write acknowledged -> every edge applied",
        from_last,
    );
    line(
        "burst of 1,000: first write sent -> every edge applied all",
        from_first,
    );

    println!("\neach edge's own commit -> applied histogram (palisade_propagation_seconds):");
    for e in &cluster.edges {
        let Some(port) = e.addrs.as_ref().map(|a| a.ops.port()) else {
            continue;
        };
        let text = ops_metrics(port).await;
        let q: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("palisade_propagation_seconds{quantile"))
            .map(|l| {
                let (k, v) = l.rsplit_once(' ').unwrap_or((l, ""));
                let q = k
                    .trim_start_matches("palisade_propagation_seconds{quantile=\"")
                    .trim_end_matches("\"}");
                format!("q{q}={:.2}ms", v.parse::<f64>().unwrap_or(0.0) * 1e3)
            })
            .collect();
        println!("  {:<8} {}", e.id, q.join("  "));
    }
}

async fn ops_metrics(port: u16) -> String {
    palisade_chaos::cluster::ops_get(port, "/metrics")
        .await
        .unwrap_or_default()
}
