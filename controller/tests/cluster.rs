//! Three- and five-member clusters of real controller processes: writes on any member, leader
//! kills under load, restarts, snapshot catch-up after compaction, and membership changes.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade_proto::v1 as pb;
use support::{Cluster, Options, Writers, eventually};
use tokio::sync::Mutex;

const T: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writes_are_accepted_on_any_member_and_a_restarted_member_catches_up() {
    let mut c = Cluster::start(3, 0, Options::default()).await;
    let mut last = 0;
    for id in [1, 2, 3] {
        for i in 0..3 {
            let rev = Cluster::revoke(&c.client_for(id), &format!("via-{id}-{i}"))
                .await
                .unwrap_or_else(|e| panic!("write via member {id}: {e}"));
            assert!(rev > last, "revisions go forward");
            last = rev;
        }
    }
    c.kill(3);
    for i in 0..20 {
        Cluster::revoke(&c.client(), &format!("while-down-{i}"))
            .await
            .expect("write with one member down");
    }
    let leader = c.wait_leader(T).await;
    let commit = c.status(leader).await.expect("status").commit_index;
    c.spawn(3);
    c.wait_applied(3, commit, T).await;
    let leader_status = c.status(leader).await.expect("leader status");
    for m in &leader_status.members {
        assert!(
            m.matched_index >= commit,
            "the leader reports member {} replicated to {} (commit {commit})",
            m.id,
            m.matched_index
        );
    }
    let on_3 = Cluster::revoked_sessions(&c.client_for(3), true)
        .await
        .expect("local read on member 3");
    assert_eq!(
        on_3.len(),
        29,
        "member 3 caught up from its own disk and the leader"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_during_writes_loses_no_acknowledged_write() {
    let mut c = Cluster::start(3, 0, Options::default()).await;
    let writers = Writers::start(&c, 4, "w");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let leader = c.wait_leader(T).await;
    c.kill(leader);
    tokio::time::sleep(Duration::from_millis(3000)).await;
    c.spawn(leader);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let acked = writers.stop().await;
    assert!(
        acked.len() > 20,
        "writes continued around the kill: {} acknowledged",
        acked.len()
    );
    let new_leader = c.wait_leader(T).await;
    let commit = c.status(new_leader).await.expect("status").commit_index;
    let present: BTreeSet<String> = Cluster::revoked_sessions(&c.client(), false)
        .await
        .expect("linearizable read")
        .into_iter()
        .collect();
    let lost: Vec<&String> = acked.iter().filter(|a| !present.contains(*a)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    for id in [1, 2, 3] {
        c.wait_applied(id, commit, T).await;
        let local: BTreeSet<String> = Cluster::revoked_sessions(&c.client_for(id), true)
            .await
            .expect("local read")
            .into_iter()
            .collect();
        assert!(
            acked.iter().all(|a| local.contains(a)),
            "member {id} is missing acknowledged writes"
        );
    }
    eprintln!(
        "leader {leader} killed under load: {} acknowledged writes, all present on every member",
        acked.len()
    );
}

/// The follower is stopped rather than paused: openraft never purges log entries still in flight
/// to a follower, and an RPC to a paused process stays in flight, so only a follower whose
/// connections are refused lets the leader compact past it. The controller purges in batches of
/// 256 entries, hence 400 writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_follower_that_was_away_catches_up_by_snapshot_after_compaction() {
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
    let follower = [1, 2, 3]
        .into_iter()
        .find(|id| *id != leader)
        .expect("follower");
    c.kill(follower);
    let client = c.client_for(leader);
    for i in 0..400 {
        Cluster::revoke(&client, &format!("p{i}"))
            .await
            .expect("write while a follower is away");
    }
    let status = eventually("a snapshot on the leader", T, || async {
        c.status(leader)
            .await
            .ok()
            .filter(|s| s.snapshot_index > 300)
    })
    .await;
    c.spawn(follower);
    c.wait_applied(follower, status.commit_index, T).await;
    let metrics = support::http_get(c.members[&follower].metrics_port, "/metrics")
        .await
        .expect("metrics");
    let installed = metrics
        .lines()
        .find(|l| l.starts_with("palisade_raft_snapshots_installed_total"))
        .and_then(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(
        installed >= 1.0,
        "the follower caught up by installing the leader's snapshot (installed {installed})"
    );
    let on_follower = Cluster::revoked_sessions(&c.client_for(follower), true)
        .await
        .expect("local read");
    assert_eq!(on_follower.len(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn membership_goes_from_three_to_five_and_back_under_writes() {
    let c = Cluster::start(3, 2, Options::default()).await;
    let writers = Writers::start(&c, 2, "w");
    let admin = c.client();
    let call_cluster = |req: ClusterReq| {
        let admin = admin.clone();
        async move {
            admin
                .call(|ch| {
                    let req = req.clone();
                    async move {
                        let mut cl = pb::cluster_service_client::ClusterServiceClient::new(ch);
                        match req {
                            ClusterReq::Learner(r) => cl.add_learner(r).await,
                            ClusterReq::Voters(r) => cl.change_membership(r).await,
                            ClusterReq::Remove(r) => cl.remove_member(r).await,
                        }
                        .map(|r| r.into_inner())
                    }
                })
                .await
        }
    };
    for id in [4, 5] {
        call_cluster(ClusterReq::Learner(pb::AddLearnerRequest {
            id,
            raft_addr: c.members[&id].addr(),
            admin_addr: c.members[&id].addr(),
            wait_caught_up: true,
        }))
        .await
        .expect("add learner");
    }
    let r = call_cluster(ClusterReq::Voters(pb::ChangeMembershipRequest {
        voters: vec![1, 2, 3, 4, 5],
        retain_as_learners: false,
    }))
    .await
    .expect("five voters");
    assert_eq!(r.members.iter().filter(|m| m.role == "voter").count(), 5);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = call_cluster(ClusterReq::Voters(pb::ChangeMembershipRequest {
        voters: vec![1, 2, 3],
        retain_as_learners: true,
    }))
    .await
    .expect("back to three voters");
    assert_eq!(r.members.iter().filter(|m| m.role == "voter").count(), 3);
    for id in [4, 5] {
        call_cluster(ClusterReq::Remove(pb::RemoveMemberRequest { id }))
            .await
            .expect("remove member");
    }
    let acked = writers.stop().await;
    let leader = c.wait_leader(T).await;
    let s = c.status(leader).await.expect("status");
    assert_eq!(
        s.members.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    let present: BTreeSet<String> = Cluster::revoked_sessions(&c.client(), false)
        .await
        .expect("read")
        .into_iter()
        .collect();
    assert!(
        acked.iter().all(|a| present.contains(a)),
        "acknowledged writes survived the membership changes"
    );
    assert!(!acked.is_empty());
}

#[derive(Clone)]
enum ClusterReq {
    Learner(pb::AddLearnerRequest),
    Voters(pb::ChangeMembershipRequest),
    Remove(pb::RemoveMemberRequest),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reads_and_writes_are_linearizable_under_leader_kills() {
    use support::linearizability::{Kind, Op, check};
    let c = Arc::new(Mutex::new(Cluster::start(3, 0, Options::default()).await));
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/examples/wiki.json"
    ))
    .expect("example");
    let start = std::time::Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let history = Arc::new(Mutex::new(Vec::<Op>::new()));
    let mut clients = Vec::new();
    for w in 0..3 {
        let client = c.lock().await.client().with_timeout(Duration::from_secs(3));
        let (stop, history, doc) = (stop.clone(), history.clone(), doc.clone());
        clients.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let call = start.elapsed().as_nanos() as u64;
                if i % 2 == 0 {
                    let value = format!("c{w}-{i}");
                    let req = pb::ApplyPolicyRequest {
                        document_json: doc.clone(),
                        comment: value.clone(),
                        expected_version: 0,
                    };
                    let r = client
                        .call(|ch| {
                            let req = req.clone();
                            async move {
                                pb::policy_service_client::PolicyServiceClient::new(ch)
                                    .apply_policy(req)
                                    .await
                            }
                        })
                        .await;
                    let ret = r.is_ok().then(|| start.elapsed().as_nanos() as u64);
                    history.lock().await.push(Op {
                        call,
                        ret,
                        kind: Kind::Write(value),
                    });
                } else {
                    let r = client
                        .call(|ch| async move {
                            pb::policy_service_client::PolicyServiceClient::new(ch)
                                .get_policy(pb::GetPolicyRequest {
                                    version: 0,
                                    consistency: 0,
                                })
                                .await
                        })
                        .await;
                    if let Ok(r) = r {
                        let ret = start.elapsed().as_nanos() as u64;
                        let v = r.into_inner().version.map(|v| v.comment);
                        history.lock().await.push(Op {
                            call,
                            ret: Some(ret),
                            kind: Kind::Read(v),
                        });
                    }
                }
            }
        }));
    }
    for _ in 0..2 {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let mut cl = c.lock().await;
        let leader = cl.wait_leader(T).await;
        cl.kill(leader);
        drop(cl);
        tokio::time::sleep(Duration::from_millis(2000)).await;
        let mut cl = c.lock().await;
        cl.spawn(leader);
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for cl in clients {
        cl.await.expect("client");
    }
    let h = history.lock().await.clone();
    let writes = h
        .iter()
        .filter(|o| matches!(o.kind, Kind::Write(_)))
        .count();
    let unknown = h.iter().filter(|o| o.ret.is_none()).count();
    let checked = check(&h).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        checked > 50,
        "too few operations to mean anything: {checked}"
    );
    eprintln!(
        "linearizability: {checked} operations checked ({writes} writes, {} reads, {unknown} with unknown outcome) across 2 leader kills",
        checked - writes
    );
}

/// A revocation of `session` named by `key`, sent to whichever member `client` reaches.
async fn keyed_revoke(
    client: &palisade_link::admin::AdminClient,
    session: &str,
    key: &str,
) -> Result<String, tonic::Status> {
    let r = client
        .call(|ch| async move {
            let mut req = tonic::Request::new(pb::RevokeRequest {
                target: Some(pb::RevocationTarget {
                    target: Some(pb::revocation_target::Target::SessionId(
                        session.to_string(),
                    )),
                }),
                reason: "test".into(),
                ttl: None,
            });
            // An explicit key wins over the one the client adds: the same write sent again,
            // as after a lost answer.
            req.metadata_mut()
                .insert("palisade-idempotency-key", key.parse().expect("ascii"));
            pb::revocation_service_client::RevocationServiceClient::new(ch)
                .revoke(req)
                .await
                .map(|r| r.into_inner())
        })
        .await?;
    Ok(r.revocation.map(|v| v.id).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_frozen_member_costs_a_deadline_and_a_retried_write_applies_once() {
    let c = Cluster::start(3, 0, Options::default()).await;
    let leader = c.wait_leader(T).await;
    let follower = [1, 2, 3].into_iter().find(|i| *i != leader).unwrap();

    // The same keyed write through a follower (forwarded) and then the leader: one revocation,
    // both answers name it.
    let via_follower = keyed_revoke(&c.client_for(follower), "lost-answer", "retry-key-0001")
        .await
        .expect("write through a follower");
    let via_leader = keyed_revoke(&c.client_for(leader), "lost-answer", "retry-key-0001")
        .await
        .expect("the same write at the leader");
    assert_eq!(via_follower, via_leader, "a retry gets the first answer");
    let listed = Cluster::revoked_sessions(&c.client(), false).await.unwrap();
    assert_eq!(
        listed.iter().filter(|s| *s == "lost-answer").count(),
        1,
        "applied once: {listed:?}"
    );
    // A malformed key is refused and changes nothing.
    let bad = keyed_revoke(&c.client_for(leader), "bad-key", "no spaces").await;
    assert_eq!(
        bad.expect_err("bad key").code(),
        tonic::Code::InvalidArgument
    );

    // Freeze the leader: it still accepts TCP connections but never answers. A client that
    // lists it first, with palisadectl's 30 s call timeout and a connection already open to
    // it, must move on after keepalive notices, not wait out the deadline.
    let mut servers = vec![c.members[&leader].addr()];
    servers.extend(
        c.members
            .values()
            .filter(|m| m.id != leader)
            .map(|m| m.addr()),
    );
    let client = c
        .client_with(servers.clone())
        .with_timeout(Duration::from_secs(30));
    Cluster::revoke(&client, "before-freeze")
        .await
        .expect("a write before the freeze");
    c.pause(leader);
    let started = std::time::Instant::now();
    // Writes keep being tried (as the chaos harness and any script would) until the other
    // members have elected a leader; none of it may wait out the 30 s deadline.
    let id = eventually("a write while the leader is frozen", T, || async {
        keyed_revoke(&client, "during-freeze", "freeze-key-0001")
            .await
            .ok()
    })
    .await;
    let took = started.elapsed();
    assert!(!id.is_empty());
    assert!(
        took < Duration::from_secs(15),
        "a write with a frozen first member took {took:?}"
    );
    // A fresh client (palisadectl) listing the frozen member first: status answers from the
    // next member within a connect timeout.
    let status_started = std::time::Instant::now();
    let args = [
        "palisadectl".to_string(),
        "--server".into(),
        servers.join(","),
        "--cert".into(),
        c.pki().join("admin-admin.pem").display().to_string(),
        "--key".into(),
        c.pki().join("admin-admin.key").display().to_string(),
        "--ca".into(),
        c.pki().join("ca.pem").display().to_string(),
        "status".into(),
    ];
    // (in this process, on its own thread and runtime: what the palisadectl binary runs)
    let code = tokio::task::spawn_blocking(move || palisadectl::main_from(args))
        .await
        .expect("join");
    let status_took = status_started.elapsed();
    assert_eq!(code, std::process::ExitCode::SUCCESS, "palisadectl status");
    assert!(
        status_took < Duration::from_secs(10),
        "palisadectl status with a frozen first member took {status_took:?}"
    );
    eprintln!("with the leader frozen: a write took {took:?}, palisadectl status {status_took:?}");
    c.resume(leader);
    let listed = Cluster::revoked_sessions(&c.client(), false).await.unwrap();
    assert_eq!(
        listed.iter().filter(|s| *s == "during-freeze").count(),
        1,
        "retried writes applied once: {listed:?}"
    );
}

/// `palisadectl` during a leader election: the leader it lists first has just been killed, the
/// others still point at it, then hold an election. The command waits for the new leader
/// instead of failing with "cluster unavailable", and its write applies once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn palisadectl_rides_through_a_leader_election() {
    let mut c = Cluster::start(3, 0, Options::default()).await;
    let leader = c.wait_leader(T).await;
    let first = c.client_for(leader).servers()[0].clone();
    let mut servers = vec![first.clone()];
    servers.extend(c.addrs().into_iter().filter(|a| *a != first));
    let pki = c.pki();
    let args: Vec<String> = [
        "palisadectl",
        "--server",
        &servers.join(","),
        "--cert",
        &pki.join("admin-admin.pem").display().to_string(),
        "--key",
        &pki.join("admin-admin.key").display().to_string(),
        "--ca",
        &pki.join("ca.pem").display().to_string(),
        "revoke",
        "session",
        "during-election",
        "--reason",
        "test",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    c.kill(leader);
    let started = std::time::Instant::now();
    let code = tokio::task::spawn_blocking(move || palisadectl::main_from(args))
        .await
        .expect("join");
    assert_eq!(
        code,
        std::process::ExitCode::SUCCESS,
        "palisadectl failed during the election ({:?} after the kill)",
        started.elapsed()
    );
    let listed = Cluster::revoked_sessions(&c.client(), false).await.unwrap();
    assert_eq!(
        listed.iter().filter(|s| *s == "during-election").count(),
        1,
        "{listed:?}"
    );
    eprintln!(
        "palisadectl answered {:?} after the leader was killed",
        started.elapsed()
    );
}
