//! Edge sync against real controller processes: every change reaches every subscriber in order,
//! leader kills and failover lose and reorder nothing, a reconnect resumes with deltas or (past
//! the resume window) a snapshot, a stalled edge gets a fresh snapshot without slowing others,
//! and the cluster knows which revision each edge enforces.

mod support;

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_proto::v1 as pb;
use support::edge::SimEdge;
use support::{Cluster, Options, Writers, eventually};

const T: Duration = Duration::from_secs(30);

async fn converged(edges: &[&SimEdge], want: &BTreeSet<String>, revision: u64) {
    for (i, e) in edges.iter().enumerate() {
        eventually(
            &format!("edge {i} to converge at revision {revision}"),
            T,
            || async {
                let s = e.snapshot();
                (s.revision >= revision && want.iter().all(|w| s.sessions.contains(w)))
                    .then_some(())
            },
        )
        .await;
        let s = e.snapshot();
        assert!(s.violations.is_empty(), "edge {i}: {:?}", s.violations);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_change_reaches_every_edge_in_order_across_a_leader_kill() {
    let mut c = Cluster::start(3, 0, Options::default()).await;
    let addrs = c.addrs();
    let edges: Vec<SimEdge> = (0..3)
        .map(|i| {
            SimEdge::start(
                &c.pki(),
                &format!("e{}", i + 1),
                addrs.clone(),
                i,
                &[("zone", if i == 0 { "a" } else { "b" })],
            )
        })
        .collect();
    let client = c.client();
    let mut want = BTreeSet::new();
    for i in 0..30 {
        Cluster::revoke(&client, &format!("before-{i}"))
            .await
            .expect("write");
        want.insert(format!("before-{i}"));
    }
    let refs: Vec<&SimEdge> = edges.iter().collect();
    let leader = c.wait_leader(T).await;
    let rev = c.status(leader).await.expect("status").commit_index;
    converged(&refs, &want, rev).await;

    // Kill the leader while writes stream; edges subscribed to it fail over and resume.
    let writer = Writers::start(&c, 1, "during");
    tokio::time::sleep(Duration::from_millis(800)).await;
    c.kill(leader);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    want.extend(writer.stop().await);
    let leader = c.wait_leader(T).await;
    let rev = c.status(leader).await.expect("status").commit_index;
    converged(&refs, &want, rev).await;
    let failed_over = edges
        .iter()
        .filter(|e| e.snapshot().subscriptions > 1)
        .count();
    assert!(
        failed_over >= 1,
        "the edge subscribed to the killed leader reconnected elsewhere"
    );
    for e in &edges {
        let s = e.snapshot();
        assert_eq!(
            s.snapshots,
            vec!["new".to_string()],
            "resumed with deltas after failover, no second snapshot: {s:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reconnecting_past_the_resume_window_gets_a_snapshot() {
    let c = Cluster::start(
        1,
        0,
        Options {
            resume_window: 20,
            ..Options::default()
        },
    )
    .await;
    let client = c.client();
    let edge = SimEdge::start(&c.pki(), "e1", c.addrs(), 0, &[]);
    for i in 0..5 {
        Cluster::revoke(&client, &format!("a{i}"))
            .await
            .expect("write");
    }
    let rev = c.status(1).await.expect("status").commit_index;
    converged(&[&edge], &(0..5).map(|i| format!("a{i}")).collect(), rev).await;
    // A short stall stays within the window: deltas only.
    edge.paused.store(true, Ordering::Relaxed);
    for i in 0..50 {
        Cluster::revoke(&client, &format!("b{i}"))
            .await
            .expect("write");
    }
    edge.paused.store(false, Ordering::Relaxed);
    let rev = c.status(1).await.expect("status").commit_index;
    let want: BTreeSet<String> = (0..5)
        .map(|i| format!("a{i}"))
        .chain((0..50).map(|i| format!("b{i}")))
        .collect();
    converged(&[&edge], &want, rev).await;
    let s = edge.snapshot();
    assert_eq!(s.snapshots[0], "new");
    // The stalled subscription either kept up through its buffers or was resynchronized; a new
    // subscription far behind the 20-entry window must get a snapshot.
    drop(edge);
    let late = SimEdge::start(&c.pki(), "e2", c.addrs(), 0, &[]);
    converged(&[&late], &want, rev).await;
    assert_eq!(late.snapshot().snapshots, vec!["new".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_edge_does_not_slow_the_others_and_is_resynchronized() {
    let c = Cluster::start(1, 0, Options::default()).await;
    let fast = SimEdge::start(&c.pki(), "e1", c.addrs(), 0, &[]);
    let slow = SimEdge::start(&c.pki(), "e2", c.addrs(), 0, &[]);
    let client = c.client();
    Cluster::revoke(&client, "first").await.expect("write");
    let rev = c.status(1).await.expect("status").commit_index;
    converged(&[&fast, &slow], &["first".to_string()].into(), rev).await;
    slow.paused.store(true, Ordering::Relaxed);
    // Enough writes to overflow the stalled subscriber's buffers and the shared broadcast.
    let mut tasks = Vec::new();
    for w in 0..32 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let _ = Cluster::revoke(&client, &format!("w{w}-{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let rev = c.status(1).await.expect("status").commit_index;
    let want: BTreeSet<String> = Cluster::revoked_sessions(&client, false)
        .await
        .expect("read")
        .into_iter()
        .collect();
    converged(&[&fast], &want, rev).await;
    assert_eq!(
        fast.snapshot().snapshots.len(),
        1,
        "the fast edge was never resynchronized"
    );
    slow.paused.store(false, Ordering::Relaxed);
    converged(&[&slow], &want, rev).await;
    let s = slow.snapshot();
    assert!(
        s.snapshots.iter().any(|r| r == "slow_subscriber") || s.subscriptions > 1,
        "the stalled edge got a fresh snapshot: {:?}",
        s.snapshots
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cluster_knows_what_each_edge_enforces_and_can_wait_for_it() {
    let c = Cluster::start(3, 0, Options::default()).await;
    let addrs = c.addrs();
    let _edges: Vec<SimEdge> = (0..3)
        .map(|i| {
            SimEdge::start(
                &c.pki(),
                &format!("e{}", i + 1),
                addrs.clone(),
                i,
                &[("zone", if i == 0 { "a" } else { "b" })],
            )
        })
        .collect();
    let client = c.client();
    let rev = Cluster::revoke(&client, "wait-for-me")
        .await
        .expect("write");
    let wait = |scope: pb::LabelSelector| {
        let client = client.clone();
        async move {
            client
                .call(|ch| {
                    let scope = scope.clone();
                    async move {
                        pb::cluster_service_client::ClusterServiceClient::new(ch)
                            .wait_for_revision(pb::WaitForRevisionRequest {
                                revision: rev,
                                scope: Some(scope),
                                timeout: Some(prost_types::Duration {
                                    seconds: 10,
                                    nanos: 0,
                                }),
                            })
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await
                .expect("wait")
        }
    };
    // Edges register as they subscribe; wait until all three are known, then wait for the revision.
    eventually("three edges known", T, || async {
        let s = client
            .call(|ch| async move {
                pb::cluster_service_client::ClusterServiceClient::new(ch)
                    .get_propagation_status(pb::GetPropagationStatusRequest { selector: None })
                    .await
                    .map(|r| r.into_inner())
            })
            .await
            .ok()?;
        (s.edges.len() == 3).then_some(())
    })
    .await;
    let r = wait(pb::LabelSelector::default()).await;
    assert!(
        r.complete,
        "all edges applied revision {rev}: pending {:?}",
        r.pending
    );
    assert_eq!(r.applied.len(), 3);
    let r = wait(pb::LabelSelector {
        match_labels: [("zone".to_string(), "a".to_string())].into(),
    })
    .await;
    assert_eq!(r.applied, vec!["e1".to_string()]);
    // An edge never reaches a revision that does not exist yet: the wait times out and names it.
    let far = client
        .call(|ch| async move {
            pb::cluster_service_client::ClusterServiceClient::new(ch)
                .wait_for_revision(pb::WaitForRevisionRequest {
                    revision: rev + 1000,
                    scope: None,
                    timeout: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                })
                .await
                .map(|r| r.into_inner())
        })
        .await
        .expect("wait");
    assert!(!far.complete);
    assert_eq!(far.pending.len(), 3);
    // An admin certificate cannot subscribe as an edge, and an edge cannot use another's id.
    let admin_ch = c
        .client()
        .channel(&c.members[&1].addr())
        .await
        .expect("channel");
    let e = pb::edge_sync_client::EdgeSyncClient::new(admin_ch)
        .subscribe(pb::SubscribeRequest {
            edge_id: "e1".into(),
            ..Default::default()
        })
        .await
        .expect_err("admin as edge");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_raft_snapshot_on_the_edges_controller_forces_an_edge_snapshot() {
    let mut c = Cluster::start(
        3,
        0,
        Options {
            snapshot_every: 40,
            logs_to_keep: 5,
            ..Options::default()
        },
    )
    .await;
    let leader = c.wait_leader(T).await;
    let follower = [1u64, 2, 3]
        .into_iter()
        .find(|i| *i != leader)
        .expect("follower");
    // This edge only knows the follower.
    let e = SimEdge::start(&c.pki(), "e1", vec![c.members[&follower].addr()], 0, &[]);
    let client = c.client_for(leader);
    Cluster::revoke(&client, "first").await.expect("write");
    let rev = c.status(leader).await.expect("status").commit_index;
    converged(&[&e], &["first".to_string()].into(), rev).await;
    // The follower is away while the log is compacted past it; it comes back through a Raft
    // snapshot, and the edge's resume point is gone with it.
    c.kill(follower);
    let mut want: BTreeSet<String> = ["first".to_string()].into();
    for i in 0..400 {
        Cluster::revoke(&client, &format!("c{i}"))
            .await
            .expect("write");
        want.insert(format!("c{i}"));
    }
    eventually("a snapshot on the leader", T, || async {
        c.status(leader)
            .await
            .ok()
            .filter(|s| s.snapshot_index > 300)
    })
    .await;
    c.spawn(follower);
    let rev = c.status(leader).await.expect("status").commit_index;
    converged(&[&e], &want, rev).await;
    let s = e.snapshot();
    assert!(
        s.snapshots.iter().skip(1).any(|r| r == "compacted"),
        "the edge was resynchronized by a snapshot: {:?}",
        s.snapshots
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_edge_restarted_mid_stream_catches_up() {
    let c = Cluster::start(3, 0, Options::default()).await;
    let addrs = c.addrs();
    let writer = Writers::start(&c, 1, "r");
    let first = SimEdge::start(&c.pki(), "e1", addrs.clone(), 0, &[]);
    eventually("the edge to apply something", T, || async {
        (first.snapshot().revision > 5).then_some(())
    })
    .await;
    // Edges keep nothing on disk: a restarted edge starts from a snapshot and follows the stream.
    drop(first);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let restarted = SimEdge::start(&c.pki(), "e1", addrs, 1, &[]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let acked: BTreeSet<String> = writer.stop().await.into_iter().collect();
    let leader = c.wait_leader(T).await;
    let rev = c.status(leader).await.expect("status").commit_index;
    converged(&[&restarted], &acked, rev).await;
    assert!(
        restarted.snapshot().deltas > 0,
        "the restarted edge followed deltas after its snapshot"
    );
}
