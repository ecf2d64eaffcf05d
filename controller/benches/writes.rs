//! `cargo bench -p palisade-controller --bench writes`: durable write throughput and latency on
//! a 3-member cluster of real controller processes (release build) on this machine, with 1
//! client and with 64 concurrent clients writing revocations through the admin API, compared
//! with the cost of one fsync on the same disk.
//!
//! This is a report, not a timed test: it prints figures and never fails on them.

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Cluster, Options};

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(label: &str, mut lat: Vec<Duration>, wall: Duration) {
    lat.sort_unstable();
    println!(
        "{label:<28} {:>7} writes in {:>6.2}s = {:>8.0} writes/s   p50 {:>7.2} ms   p99 {:>7.2} ms   max {:>7.2} ms",
        lat.len(),
        wall.as_secs_f64(),
        lat.len() as f64 / wall.as_secs_f64(),
        pct(&lat, 0.5).as_secs_f64() * 1e3,
        pct(&lat, 0.99).as_secs_f64() * 1e3,
        lat.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

fn fsync_cost(dir: &std::path::Path) -> Vec<Duration> {
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path).expect("probe file");
    let block = vec![0xa5u8; 4096];
    let mut out = Vec::new();
    for _ in 0..300 {
        let t = Instant::now();
        f.write_all(&block).expect("write");
        f.sync_data().expect("fdatasync");
        out.push(t.elapsed());
    }
    out
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let c = Cluster::start(3, 0, Options::default()).await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    println!(
        "3-member cluster, leader {leader}; every write is fsynced by a quorum before it is acknowledged"
    );

    let mut fs = fsync_cost(c.dir.path());
    fs.sort_unstable();
    println!(
        "fsync (4 KiB write + fdatasync) on the data disk: p50 {:.2} ms   p99 {:.2} ms",
        pct(&fs, 0.5).as_secs_f64() * 1e3,
        pct(&fs, 0.99).as_secs_f64() * 1e3
    );

    let client = c.client_for(leader).with_timeout(Duration::from_secs(10));
    for i in 0..100 {
        Cluster::revoke(&client, &format!("warm-{i}"))
            .await
            .expect("warm-up");
    }

    // One client, sequential.
    let mut lat = Vec::new();
    let start = Instant::now();
    for i in 0..1000 {
        let t = Instant::now();
        Cluster::revoke(&client, &format!("one-{i}"))
            .await
            .expect("write");
        lat.push(t.elapsed());
    }
    report("1 client", lat, start.elapsed());

    // 64 concurrent clients, 10 seconds.
    let total = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(10);
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let client = client.clone();
            let total = total.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut i = 0;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    if Cluster::revoke(&client, &format!("c{w}-{i}")).await.is_ok() {
                        lat.push(t.elapsed());
                        total.fetch_add(1, Ordering::Relaxed);
                    }
                    i += 1;
                }
                lat
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("client task"));
    }
    report("64 concurrent clients", lat, start.elapsed());
}
