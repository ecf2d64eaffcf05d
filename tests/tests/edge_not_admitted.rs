//! An edge whose certificate every controller refuses stops its sync client and says why,
//! instead of knocking forever: against real controllers, with a certificate that is not an
//! edge's (refused by `Subscribe`) and one from another CA (refused in the TLS handshake).

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_chaos::cluster::{ClusterSpec, LocalCluster};
use palisade_node::sync::{Replica, SyncConfig};
use tokio::sync::watch;

/// Runs a sync client with `cert`/`key` against every controller of `cluster`; returns why it
/// stopped (panics if it is still knocking after 20 s).
async fn halted_with(cluster: &LocalCluster, cert: String, key: String) -> String {
    let replica = Arc::new(Replica::default());
    let (_stop, rx) = watch::channel(false);
    let task = palisade_node::sync::spawn(
        SyncConfig {
            edge_id: "edge-1".into(),
            labels: Default::default(),
            controllers: cluster.controller_addrs(),
            cert_pem: cert,
            key_pem: key,
            ca_pem: cluster.pki_file("ca.pem").expect("ca"),
            server_name: "localhost".into(),
            silence_timeout: Duration::from_secs(2),
            randomize_start: false,
        },
        replica.clone(),
        rx,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !task.is_finished() {
        assert!(
            Instant::now() < deadline,
            "the sync client still retries a certificate every controller refuses"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!replica.ready());
    replica
        .halted()
        .expect("a sync client that stopped says why")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_every_controller_refuses_stops_and_says_why() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = LocalCluster::start(ClusterSpec::new(
        2,
        1,
        env!("CARGO_BIN_EXE_palisade-e2e-host").into(),
        dir.path().to_path_buf(),
    ))
    .await
    .expect("cluster");

    // A certificate from the cluster's CA that names an admin, not an edge.
    let why = halted_with(
        &cluster,
        cluster.pki_file("admin-viewer.pem").expect("cert"),
        cluster.pki_file("admin-viewer.key").expect("key"),
    )
    .await;
    assert!(
        why.contains("viewer@local"),
        "the refusal names the identity presented: {why}"
    );
    for a in cluster.controller_addrs() {
        assert!(why.contains(&a), "every member is named: {why}");
    }

    // An edge certificate from another CA: refused in the handshake.
    let foreign = tempfile::tempdir().expect("tempdir");
    palisade_link::pki::init_dir(foreign.path(), &[1], &["edge-1".to_string()]).expect("pki");
    let read = |f: &str| std::fs::read_to_string(foreign.path().join(f)).expect(f);
    let why = halted_with(&cluster, read("edge-edge-1.pem"), read("edge-edge-1.key")).await;
    assert!(why.contains("fatal alert"), "{why}");

    // The cluster's own certificate for edge-1 is admitted: the client keeps running and syncs.
    let replica = Arc::new(Replica::default());
    let (stop, rx) = watch::channel(false);
    let task = palisade_node::sync::spawn(
        SyncConfig {
            edge_id: "edge-1".into(),
            labels: Default::default(),
            controllers: cluster.controller_addrs(),
            cert_pem: cluster.pki_file("edge-edge-1.pem").expect("cert"),
            key_pem: cluster.pki_file("edge-edge-1.key").expect("key"),
            ca_pem: cluster.pki_file("ca.pem").expect("ca"),
            server_name: "localhost".into(),
            silence_timeout: Duration::from_secs(2),
            randomize_start: false,
        },
        replica.clone(),
        rx,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !replica.ready() {
        assert!(Instant::now() < deadline, "the admitted edge never synced");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(replica.halted().is_none() && !task.is_finished());
    let _ = stop.send(true);
}
