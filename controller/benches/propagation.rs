//! `cargo bench -p palisade-controller --bench propagation`: how long a change takes from
//! commit to applied at every edge.
//!
//! * 3 controller processes (release build) and 10 edges (the real `palisade-node` sync client
//!   and replica, each with its own mTLS connection, run in this process): single changes and
//!   bursts of 1,000;
//! * 1,000 lightweight subscribers (raw `EdgeSync.Subscribe` streams) on one controller, and the
//!   controller's resident memory per subscriber;
//! * the time a new edge needs to become ready from a snapshot holding 10,000 applications and
//!   `PALISADE_BENCH_REVOCATIONS` revocations (default 100,000).
//!
//! A report, not a timed test.

#[path = "../tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_node::sync::{Replica, SyncConfig};
use palisade_proto::v1 as pb;
use support::{Cluster, Options};
use tokio::sync::watch;

fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn line(label: &str, mut v: Vec<Duration>) {
    v.sort_unstable();
    println!(
        "{label:<58} n={:<5} p50 {:>8.2} ms   p99 {:>8.2} ms   max {:>8.2} ms",
        v.len(),
        pct(&v, 0.5).as_secs_f64() * 1e3,
        pct(&v, 0.99).as_secs_f64() * 1e3,
        v.last().copied().unwrap_or_default().as_secs_f64() * 1e3
    );
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn edge(c: &Cluster, id: &str, i: usize) -> (Arc<Replica>, watch::Sender<bool>) {
    let read = |f: &str| std::fs::read_to_string(c.pki().join(f)).expect("pki");
    let mut controllers = c.addrs();
    let n = controllers.len();
    controllers.rotate_left(i % n);
    let replica = Arc::new(Replica::default());
    let (tx, rx) = watch::channel(false);
    palisade_node::sync::spawn(
        SyncConfig {
            edge_id: id.into(),
            labels: Default::default(),
            controllers,
            cert_pem: read(&format!("edge-{id}.pem")),
            key_pem: read(&format!("edge-{id}.key")),
            ca_pem: read("ca.pem"),
            server_name: "localhost".into(),
            silence_timeout: Duration::from_secs(5),
            randomize_start: false,
        },
        replica.clone(),
        rx,
    );
    (replica, tx)
}

/// Waits until every receiver reaches `revision`; returns when each got there.
async fn all_reach(watches: &[watch::Receiver<u64>], revision: u64) -> Vec<Instant> {
    let waits = watches.iter().cloned().map(|mut w| async move {
        let _ = w.wait_for(|r| *r >= revision).await;
        Instant::now()
    });
    futures::future::join_all(waits).await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let revocations: usize = std::env::var("PALISADE_BENCH_REVOCATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let c = Cluster::start(
        3,
        0,
        Options {
            max_document_bytes: 64 << 20,
            snapshot_every: 1_000_000,
            logs_to_keep: 1_000_000,
            resume_window: 100_000,
        },
    )
    .await;
    let leader = c.wait_leader(Duration::from_secs(20)).await;
    let client = c.client_for(leader).with_timeout(Duration::from_secs(30));
    println!(
        "3 controllers (leader {leader}), 10 edges; times are from the write's acknowledgment (commit) to applied"
    );

    // Ten edges, spread over the three controllers.
    let edges: Vec<(Arc<Replica>, watch::Sender<bool>)> = (0..6)
        .map(|i| edge(&c, &format!("e{}", i + 1), i))
        .collect();
    let mut more: Vec<(Arc<Replica>, watch::Sender<bool>)> = Vec::new();
    // The PKI holds six edge identities; edges 7-10 reuse identities with their own connections.
    for i in 6..10 {
        more.push(edge(&c, &format!("e{}", i - 5), i));
    }
    let all: Vec<Arc<Replica>> = edges
        .iter()
        .chain(more.iter())
        .map(|(r, _)| r.clone())
        .collect();
    let watches: Vec<watch::Receiver<u64>> = all.iter().map(|r| r.watch()).collect();
    let rev = Cluster::revoke(&client, "warm").await.expect("write");
    all_reach(&watches, rev).await;

    // Single changes.
    let mut from_ack = Vec::new();
    let mut from_call = Vec::new();
    for i in 0..300 {
        let t0 = Instant::now();
        let rev = Cluster::revoke(&client, &format!("single-{i}"))
            .await
            .expect("write");
        let acked = Instant::now();
        let done = all_reach(&watches, rev)
            .await
            .into_iter()
            .max()
            .expect("edges");
        from_ack.push(done.saturating_duration_since(acked));
        from_call.push(done - t0);
    }
    line("single change: ack -> applied on all 10 edges", from_ack);
    line(
        "single change: write call -> applied on all 10 edges",
        from_call,
    );

    // Bursts of 1,000 from 64 concurrent writers.
    let mut burst_tail = Vec::new();
    let mut burst_total = Vec::new();
    for b in 0..5 {
        let t0 = Instant::now();
        let tasks: Vec<_> = (0..64)
            .map(|w| {
                let client = client.clone();
                tokio::spawn(async move {
                    let mut last = (0u64, Instant::now());
                    for i in (w..1000).step_by(64) {
                        if let Ok(r) = Cluster::revoke(&client, &format!("burst-{b}-{i}")).await
                            && r > last.0
                        {
                            last = (r, Instant::now());
                        }
                    }
                    last
                })
            })
            .collect();
        let mut last = (0u64, t0);
        for t in tasks {
            let l = t.await.expect("writer");
            if l.0 > last.0 {
                last = l;
            }
        }
        let done = all_reach(&watches, last.0)
            .await
            .into_iter()
            .max()
            .expect("edges");
        burst_tail.push(done.saturating_duration_since(last.1));
        burst_total.push(done - t0);
    }
    line(
        "burst of 1,000: last ack -> all applied on all 10 edges",
        burst_tail,
    );
    line(
        "burst of 1,000: first write call -> all applied everywhere",
        burst_total,
    );

    // 1,000 lightweight subscribers on one follower.
    let target = [1u64, 2, 3]
        .into_iter()
        .find(|i| *i != leader)
        .expect("follower");
    let pid = c.members[&target].child.as_ref().expect("running").id();
    let before = rss_kib(pid);
    let read = |f: &str| std::fs::read_to_string(c.pki().join(f)).expect("pki");
    let tls = tonic::transport::ClientTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            read("edge-e6.pem"),
            read("edge-e6.key"),
        ))
        .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost");
    let mut channels = Vec::new();
    for _ in 0..20 {
        let ep = tonic::transport::Endpoint::from_shared(format!(
            "https://{}",
            c.members[&target].addr()
        ))
        .expect("ep")
        .tls_config(tls.clone())
        .expect("tls");
        channels.push(ep.connect().await.expect("connect"));
    }
    let (rev_tx, rev_rx) = watch::channel(0u64);
    let mut sub_watches = Vec::new();
    let mut subs = Vec::new();
    let start_rev = Cluster::revoke(&client, "subs-start").await.expect("write");
    for i in 0..1000 {
        let (tx, rx) = watch::channel(0u64);
        sub_watches.push(rx);
        let mut cl =
            pb::edge_sync_client::EdgeSyncClient::new(channels[i % channels.len()].clone());
        let _ = &rev_rx;
        subs.push(tokio::spawn(async move {
            let mut stream = cl
                .subscribe(pb::SubscribeRequest {
                    edge_id: String::new(),
                    labels: Default::default(),
                    last_applied_revision: start_rev,
                    software_version: "bench".into(),
                })
                .await
                .expect("subscribe")
                .into_inner();
            while let Ok(Some(ev)) = stream.message().await {
                if let Some(pb::sync_event::Event::Delta(d)) = ev.event {
                    tx.send_replace(d.revision);
                }
            }
        }));
    }
    drop(rev_tx);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    let mut sub_lat = Vec::new();
    let mut sub_all = Vec::new();
    for i in 0..50 {
        let rev = Cluster::revoke(&client, &format!("fanout-{i}"))
            .await
            .expect("write");
        let acked = Instant::now();
        let times = all_reach(&sub_watches, rev).await;
        sub_lat.extend(times.iter().map(|t| t.saturating_duration_since(acked)));
        sub_all.push(
            times
                .into_iter()
                .max()
                .expect("subs")
                .saturating_duration_since(acked),
        );
    }
    line(
        "1,000 subscribers on one controller: ack -> each subscriber",
        sub_lat,
    );
    line(
        "1,000 subscribers on one controller: ack -> all 1,000",
        sub_all,
    );
    println!(
        "controller {target} resident memory: {} KiB before, {} KiB with 1,000 subscribers: {:.1} KiB per subscriber",
        before,
        after,
        (after.saturating_sub(before)) as f64 / 1000.0
    );
    for s in subs {
        s.abort();
    }

    // A new edge becoming ready from a large snapshot.
    let doc = big_document(10_000);
    let req = pb::ApplyPolicyRequest {
        document_json: doc,
        comment: "bench".into(),
        expected_version: 0,
    };
    client
        .call(|ch| {
            let req = req.clone();
            async move {
                pb::policy_service_client::PolicyServiceClient::new(ch)
                    .max_encoding_message_size(64 << 20)
                    .apply_policy(req)
                    .await
            }
        })
        .await
        .expect("apply 10,000 applications");
    let t = Instant::now();
    let tasks: Vec<_> = (0..64)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in (w..revocations).step_by(64) {
                    let _ = Cluster::revoke(&client, &format!("bulk-{i}")).await;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("bulk writer");
    }
    println!(
        "wrote {revocations} revocations in {:.1}s",
        t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let (fresh, _stop) = edge(&c, "e6", 1);
    let mut w = fresh.watch();
    let _ = w.wait_for(|r| *r > 0).await;
    let view = fresh.view().expect("view");
    println!(
        "new edge ready from a snapshot of {} applications and {} revocations: {:.2} s",
        view.policy
            .as_ref()
            .map(|(_, p)| p.apps().len())
            .unwrap_or(0),
        view.revocations.len(),
        t.elapsed().as_secs_f64()
    );
}

fn big_document(apps: usize) -> String {
    let apps: Vec<serde_json::Value> = (0..apps)
        .map(|a| {
            serde_json::json!({
                "id": format!("app-{a}"), "hosts": [format!("app-{a}.example.com")], "upstreams": ["http://127.0.0.1:8080"],
                "rules": (0..10).map(|r| serde_json::json!({"name": format!("r{r}"), "decision": "allow", "include": [{"group": format!("g{}", (a + r) % 300)}]})).collect::<Vec<_>>()
            })
        })
        .collect();
    serde_json::json!({
        "schema_version": 1,
        "identity_providers": [{"id": "corp", "issuer": "https://login.example.com", "client_id": "edge", "client_secret_ref": "corp"}],
        "apps": apps
    })
    .to_string()
}
