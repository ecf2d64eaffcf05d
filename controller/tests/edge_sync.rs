//! The edge's sync client (`palisade-node`) against real controller processes: it converges,
//! resumes, fails over from a partitioned member, reports what it enforces, measures its
//! staleness, and a fail-closed application is denied once the view is too old and served again
//! after reconnecting. An edge with no snapshot is not ready.

mod support;

use std::sync::Arc;
use std::time::Duration;

use palisade_node::replica::revoked_session_ids;
use palisade_node::sync::{Replica, SyncConfig, spawn};
use palisade_policy::request::{Context, Identity, Protocol};
use palisade_policy::{Decision, DenyReason, decide};
use palisade_proto::v1 as pb;
use support::{Cluster, Options, eventually};
use tokio::sync::watch;

const T: Duration = Duration::from_secs(30);

fn edge(
    c: &Cluster,
    id: &str,
    controllers: Vec<String>,
    zone: &str,
) -> (Arc<Replica>, watch::Sender<bool>) {
    let read = |f: &str| std::fs::read_to_string(c.pki().join(f)).expect("pki");
    let cfg = SyncConfig {
        edge_id: id.into(),
        labels: [("zone".to_string(), zone.to_string())].into(),
        controllers,
        cert_pem: read(&format!("edge-{id}.pem")),
        key_pem: read(&format!("edge-{id}.key")),
        ca_pem: read("ca.pem"),
        server_name: "localhost".into(),
        silence_timeout: Duration::from_millis(1500),
        randomize_start: false,
    };
    let replica = Arc::new(Replica::default());
    let (tx, rx) = watch::channel(false);
    spawn(cfg, replica.clone(), rx);
    (replica, tx)
}

const FAIL_CLOSED: &str = r#"{
  "schema_version": 1,
  "identity_providers": [{"id": "corp", "issuer": "https://login.example.com", "client_id": "edge", "client_secret_ref": "corp"}],
  "apps": [{
    "id": "console", "hosts": ["console.example.com"], "upstreams": ["http://127.0.0.1:1"],
    "mfa": {"required": false},
    "staleness": {"mode": "fail_closed", "max_staleness": "2s"},
    "rules": [{"name": "staff", "decision": "allow", "include": [{"email_domain": "example.com"}]}]
  }]
}"#;

fn decide_now(r: &Replica) -> Decision {
    let view = r.view().expect("a view");
    let (_, policy) = view.policy.clone().expect("policy");
    let app = policy.route("console.example.com", "/").expect("routed");
    let id = Identity {
        provider: "corp".into(),
        subject: "alice".into(),
        email: "alice@example.com".into(),
        groups: vec![],
        claims: Default::default(),
        mfa: None,
        session: None,
    };
    let staleness = r.staleness();
    let ctx = Context {
        source_ip: "192.0.2.1".parse().expect("ip"),
        protocol: Protocol::Http,
        view_age: staleness,
    };
    decide(app, Some(&id), None, &ctx, jiff::Timestamp::now())
}

async fn apply(c: &Cluster, doc: &str) -> u64 {
    let req = pb::ApplyPolicyRequest {
        document_json: doc.into(),
        comment: "edge sync test".into(),
        expected_version: 0,
    };
    c.client()
        .call(|ch| {
            let req = req.clone();
            async move {
                pb::policy_service_client::PolicyServiceClient::new(ch)
                    .apply_policy(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .expect("apply")
        .write
        .unwrap_or_default()
        .revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn edges_converge_fail_over_report_and_fail_closed_when_stale() {
    let c = Cluster::start(3, 0, Options::default()).await;
    let addrs = c.addrs();
    let leader = c.wait_leader(T).await;
    let follower = [1u64, 2, 3]
        .into_iter()
        .find(|i| *i != leader)
        .expect("follower");
    // e1 starts at the follower we will partition; the others start elsewhere.
    let mut order = vec![c.members[&follower].addr()];
    order.extend(
        addrs
            .iter()
            .filter(|a| **a != c.members[&follower].addr())
            .cloned(),
    );
    let (e1, _s1) = edge(&c, "e1", order, "a");
    let (e2, _s2) = edge(&c, "e2", addrs.clone(), "b");
    let (e3, _s3) = edge(&c, "e3", addrs.iter().rev().cloned().collect(), "b");
    let edges = [&e1, &e2, &e3];

    let rev = apply(&c, FAIL_CLOSED).await;
    for i in 0..20 {
        Cluster::revoke(&c.client(), &format!("s{i}"))
            .await
            .expect("revoke");
    }
    let commit = c.status(leader).await.expect("status").commit_index;
    for (i, e) in edges.iter().enumerate() {
        eventually(&format!("edge {i} at {commit}"), T, || async {
            (e.revision() >= commit && revoked_session_ids(&*e.view()?).len() == 20).then_some(())
        })
        .await;
    }
    assert!(rev <= commit);

    // The cluster knows every edge enforces the commit revision.
    let done = c
        .client()
        .call(|ch| async move {
            pb::cluster_service_client::ClusterServiceClient::new(ch)
                .wait_for_revision(pb::WaitForRevisionRequest {
                    revision: commit,
                    scope: None,
                    timeout: Some(prost_types::Duration {
                        seconds: 10,
                        nanos: 0,
                    }),
                })
                .await
                .map(|r| r.into_inner())
        })
        .await
        .expect("wait");
    assert!(done.complete && done.applied.len() == 3, "{done:?}");

    // Partition e1's controller: e1 fails over and keeps up with new writes.
    c.pause(follower);
    for i in 20..30 {
        Cluster::revoke(&c.client_for(leader), &format!("s{i}"))
            .await
            .expect("revoke");
    }
    let commit = c.status(leader).await.expect("status").commit_index;
    eventually("e1 fails over and catches up", T, || async {
        (e1.revision() >= commit).then_some(())
    })
    .await;
    assert!(e1.subscriptions() >= 2, "e1 resubscribed to another member");
    assert_eq!(revoked_session_ids(&e1.view().expect("view")).len(), 30);
    c.resume(follower);
    assert!(
        matches!(decide_now(&e1), Decision::Allow { .. }),
        "a current view allows"
    );

    // Partition every controller: views go stale and the fail-closed app is denied.
    for id in [1, 2, 3] {
        c.pause(id);
    }
    eventually("views older than 2s", T, || async {
        edges
            .iter()
            .all(|e| e.staleness() > Duration::from_secs(2))
            .then_some(())
    })
    .await;
    for e in edges {
        assert!(
            matches!(
                decide_now(e),
                Decision::Deny {
                    reason: DenyReason::StaleView { .. },
                    ..
                }
            ),
            "stale view must fail closed"
        );
    }
    for id in [1, 2, 3] {
        c.resume(id);
    }
    eventually("views current again", T, || async {
        edges
            .iter()
            .all(|e| e.staleness() < Duration::from_secs(1))
            .then_some(())
    })
    .await;
    for e in edges {
        assert!(
            matches!(decide_now(e), Decision::Allow { .. }),
            "served again after reconnecting"
        );
        assert_eq!(e.refused(), 0, "no delta was refused");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_without_a_snapshot_is_not_ready() {
    let c = Cluster::start(1, 0, Options::default()).await;
    c.pause(1);
    let (e, _stop) = edge(&c, "e1", c.addrs(), "a");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !e.ready() && e.view().is_none(),
        "no snapshot, nothing to enforce"
    );
    assert_eq!(e.staleness(), Duration::MAX);
    c.resume(1);
    eventually("ready after the first snapshot", T, || async {
        e.ready().then_some(())
    })
    .await;
}

async fn wait_for_revision(
    client: &palisade_link::admin::AdminClient,
    revision: u64,
    timeout: Duration,
) -> pb::WaitForRevisionResponse {
    client
        .call(|ch| async move {
            pb::cluster_service_client::ClusterServiceClient::new(ch)
                .wait_for_revision(pb::WaitForRevisionRequest {
                    revision,
                    scope: None,
                    timeout: Some(timeout.try_into().expect("duration")),
                })
                .await
                .map(|r| r.into_inner())
        })
        .await
        .expect("wait")
}

/// `WaitForRevision` asked at a member the edge is not subscribed to: the wait starts before
/// the write, and it is the other member's registry (through its `ListLocalEdges` long poll)
/// that wakes it. A revision nobody reaches times out with the edge still pending.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wait_for_revision_is_woken_by_an_edge_on_another_member() {
    let c = Cluster::start(3, 0, Options::default()).await;
    let leader = c.wait_leader(T).await;
    let [home, asked] = {
        let others: Vec<u64> = [1u64, 2, 3].into_iter().filter(|i| *i != leader).collect();
        [others[0], others[1]]
    };
    let (e1, _s1) = edge(&c, "e1", vec![c.members[&home].addr()], "a");
    apply(&c, FAIL_CLOSED).await;
    let commit = c.status(leader).await.expect("status").commit_index;
    eventually("e1 at the commit revision", T, || async {
        (e1.revision() >= commit).then_some(())
    })
    .await;

    let asking = c.client_for(asked);
    let next = commit + 1;
    let waiting =
        tokio::spawn(
            async move { wait_for_revision(&asking, next, Duration::from_secs(20)).await },
        );
    let written = Cluster::revoke(&c.client_for(leader), "late")
        .await
        .expect("revoke");
    assert!(written >= next);
    let done = waiting.await.expect("join");
    assert!(done.complete, "{done:?}");
    assert_eq!(done.applied, vec!["e1".to_string()]);

    let never =
        wait_for_revision(&c.client_for(asked), written + 1000, Duration::from_secs(1)).await;
    assert!(!never.complete);
    assert_eq!(never.pending.len(), 1, "{never:?}");
    let waited = Duration::try_from(never.waited.expect("waited")).expect("duration");
    assert!(waited >= Duration::from_secs(1), "{waited:?}");
}
