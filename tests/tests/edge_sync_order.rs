//! The edge's sync client against a scripted controller (a real controller certificate, a
//! scripted `EdgeSync`): the edge never goes back to an older snapshot, also one it asked
//! for, and a frozen controller (it accepts TCP connections, then never answers) costs it a
//! connect timeout, not a hang.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use palisade_link::pki;
use palisade_node::sync::{Replica, SyncConfig};
use palisade_proto::v1 as pb;
use tokio::sync::watch;
use tonic::transport::{Identity, Server, ServerTlsConfig};

type Events = Pin<Box<dyn futures::Stream<Item = Result<pb::SyncEvent, tonic::Status>> + Send>>;

fn ev(e: pb::sync_event::Event) -> Result<pb::SyncEvent, tonic::Status> {
    Ok(pb::SyncEvent { event: Some(e) })
}

fn snapshot(revision: u64) -> Vec<Result<pb::SyncEvent, tonic::Status>> {
    use pb::sync_event::Event;
    vec![
        ev(Event::SnapshotBegin(pb::SnapshotBegin {
            revision,
            reason: "new".into(),
            entry_count: 0,
        })),
        ev(Event::SnapshotEnd(pb::SnapshotEnd {
            revision,
            entry_count: 0,
            committed_at: None,
        })),
    ]
}

/// Session 1: a snapshot at 10, then a delta that does not follow it (the edge refuses it and
/// asks for a snapshot). Session 2: a snapshot at 5, from a member that is behind. Later
/// sessions: a snapshot at 12, half a second in.
#[derive(Debug, Default)]
struct Scripted {
    sessions: AtomicUsize,
}

#[tonic::async_trait]
impl pb::edge_sync_server::EdgeSync for Scripted {
    type SubscribeStream = Events;

    async fn subscribe(
        &self,
        _: tonic::Request<pb::SubscribeRequest>,
    ) -> Result<tonic::Response<Events>, tonic::Status> {
        use pb::sync_event::Event;
        let n = self.sessions.fetch_add(1, Ordering::SeqCst) + 1;
        let (delay, events) = match n {
            1 => {
                let mut e = snapshot(10);
                e.push(ev(Event::Delta(pb::CatalogDelta {
                    revision: 9,
                    prev_revision: 7,
                    ..Default::default()
                })));
                (Duration::ZERO, e)
            }
            2 => (Duration::ZERO, snapshot(5)),
            _ => (Duration::from_millis(500), snapshot(12)),
        };
        let heartbeats = futures::stream::unfold((), |_| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some((
                ev(Event::Heartbeat(pb::Heartbeat {
                    commit_revision: 12,
                    applied_revision: 12,
                    ..Default::default()
                })),
                (),
            ))
        });
        let first = futures::stream::once(async move {
            tokio::time::sleep(delay).await;
        })
        .filter_map(|_| async { None });
        Ok(tonic::Response::new(Box::pin(
            first.chain(futures::stream::iter(events)).chain(heartbeats),
        )))
    }

    async fn report(
        &self,
        _: tonic::Request<tonic::Streaming<pb::EdgeReport>>,
    ) -> Result<tonic::Response<pb::ReportSummary>, tonic::Status> {
        Ok(tonic::Response::new(pb::ReportSummary::default()))
    }
}

use futures::StreamExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_never_goes_back_and_a_frozen_controller_costs_a_timeout() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    pki::init_dir(dir.path(), &[1], &["e1".to_string()]).expect("pki");
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).expect(f);

    // The scripted controller, with controller 1's certificate.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let router = Server::builder()
        .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(
            read("controller-1.pem"),
            read("controller-1.key"),
        )))
        .expect("tls")
        .add_service(pb::edge_sync_server::EdgeSyncServer::new(
            Scripted::default(),
        ));
    let server = tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    // A frozen controller: the kernel accepts connections, nobody ever answers.
    let frozen = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let frozen_addr = frozen.local_addr().expect("addr");
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in frozen.incoming().take(8).flatten() {
            conns.push(c);
        }
        conns
    });

    let replica = Arc::new(Replica::default());
    let (stop, rx) = watch::channel(false);
    let started = Instant::now();
    palisade_node::sync::spawn(
        SyncConfig {
            edge_id: "e1".into(),
            labels: Default::default(),
            controllers: vec![frozen_addr.to_string(), addr.to_string()],
            cert_pem: read("edge-e1.pem"),
            key_pem: read("edge-e1.key"),
            ca_pem: read("ca.pem"),
            server_name: "localhost".into(),
            silence_timeout: Duration::from_secs(2),
            randomize_start: false,
        },
        replica.clone(),
        rx,
    );
    // Every revision the edge enforces, as often as it can be read.
    let mut seen: Vec<u64> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && replica.revision() != 12 {
        let r = replica.revision();
        if seen.last() != Some(&r) {
            if seen.is_empty() && r > 0 {
                eprintln!("first snapshot after {:?}", started.elapsed());
            }
            seen.push(r);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    seen.push(replica.revision());
    let _ = stop.send(true);
    server.abort();
    drop(held);
    assert!(
        seen.contains(&10),
        "the edge got past the frozen controller and took the first snapshot: {seen:?}"
    );
    assert!(
        !seen.contains(&5),
        "the edge went back from revision 10 to an older snapshot it had asked for: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&12), "{seen:?}");
    assert!(replica.refused() >= 1, "the broken delta was refused");
}
