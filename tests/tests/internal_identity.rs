//! Only the holder of a controller identity can speak for the cluster (contract 9).
//!
//! An impostor server holds a certificate from the same PKI that is not a controller's (an
//! edge's, a viewer's, the public ingress certificate) or a controller certificate for another
//! member, and serves a snapshot with an allow-everyone policy and a signing key of its own.
//! Every internal TLS client must refuse it at the handshake:
//! - `palisadectl`'s admin client;
//! - the edge's sync client (it must not become ready from the impostor's snapshot) and its
//!   `EdgeAuth` client;
//! - the controllers' Raft client, which must also refuse a real controller that is not the
//!   member it dialled.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use palisade_link::admin::AdminClient;
use palisade_link::pki;
use palisade_node::controllers::{CallError, ControllerClient, Retry};
use palisade_node::sync::{Replica, SyncConfig};
use palisade_proto::v1 as pb;
use tokio::sync::watch;
use tonic::transport::{Identity, Server, ServerTlsConfig};

const ALLOW_EVERYONE: &str = r#"{"schema_version":1,"apps":[{"id":"all","hosts":["app.example.com"],"upstreams":["http://127.0.0.1:1"],"mfa":{"required":false},"rules":[{"name":"everyone","decision":"bypass","include":[{"everyone":true}]}]}]}"#;

/// An `EdgeSync` that hands every subscriber the impostor's catalog.
#[derive(Debug, Default)]
struct ImpostorSync;

type Events = Pin<Box<dyn futures::Stream<Item = Result<pb::SyncEvent, tonic::Status>> + Send>>;

fn ev(e: pb::sync_event::Event) -> Result<pb::SyncEvent, tonic::Status> {
    Ok(pb::SyncEvent { event: Some(e) })
}

#[tonic::async_trait]
impl pb::edge_sync_server::EdgeSync for ImpostorSync {
    type SubscribeStream = Events;

    async fn subscribe(
        &self,
        _: tonic::Request<pb::SubscribeRequest>,
    ) -> Result<tonic::Response<Events>, tonic::Status> {
        use pb::catalog_entry::Entry as E;
        use pb::sync_event::Event;
        let entries = vec![
            pb::CatalogEntry {
                entry: Some(E::Policy(pb::PolicyVersion {
                    version: 1,
                    revision: 1,
                    document_json: ALLOW_EVERYONE.into(),
                    ..Default::default()
                })),
            },
            pb::CatalogEntry {
                entry: Some(E::SigningKey(pb::SigningKey {
                    kid: "k-evil".into(),
                    algorithm: "HS256".into(),
                    secret: vec![7; 32],
                    state: pb::SigningKeyState::Active as i32,
                    ..Default::default()
                })),
            },
        ];
        let n = entries.len() as u64;
        let events = vec![
            ev(Event::SnapshotBegin(pb::SnapshotBegin {
                revision: 1_000_000,
                entry_count: n,
                ..Default::default()
            })),
            ev(Event::SnapshotChunk(pb::SnapshotChunk { entries })),
            ev(Event::SnapshotEnd(pb::SnapshotEnd {
                revision: 1_000_000,
                entry_count: n,
                ..Default::default()
            })),
        ];
        let heartbeats = futures::stream::unfold((), |_| async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Some((
                ev(Event::Heartbeat(pb::Heartbeat {
                    commit_revision: 1_000_000,
                    ..Default::default()
                })),
                (),
            ))
        });
        Ok(tonic::Response::new(Box::pin(futures::StreamExt::chain(
            futures::stream::iter(events),
            heartbeats,
        ))))
    }

    async fn report(
        &self,
        _: tonic::Request<tonic::Streaming<pb::EdgeReport>>,
    ) -> Result<tonic::Response<pb::ReportSummary>, tonic::Status> {
        Ok(tonic::Response::new(pb::ReportSummary::default()))
    }
}

/// Starts an impostor serving TLS with `cert`/`key`; returns its address.
async fn impostor(cert: &str, key: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
    let (_, health) = tonic_health::server::health_reporter();
    let router = Server::builder()
        .tls_config(tls)
        .expect("tls")
        .add_service(health)
        .add_service(pb::edge_sync_server::EdgeSyncServer::new(ImpostorSync));
    let task = tokio::spawn(async move {
        let _ = router
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await;
    });
    (addr, task)
}

struct Pki {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Pki {
    fn new() -> Pki {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        pki::init_dir(dir.path(), &[1, 2, 3], &["e1".to_string()]).expect("pki");
        Pki {
            path: dir.path().to_path_buf(),
            _dir: dir,
        }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path.join(name)).expect(name)
    }

    fn pair(&self, name: &str) -> (String, String) {
        (
            self.read(&format!("{name}.pem")),
            self.read(&format!("{name}.key")),
        )
    }
}

/// The certificates that are not a controller's.
const NOT_A_CONTROLLER: &[&str] = &["edge-e1", "admin-viewer", "admin-admin", "ingress"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_client_refuses_a_server_that_is_not_a_controller() {
    let pki = Pki::new();
    let (cert, key) = pki.pair("admin-viewer");
    for who in NOT_A_CONTROLLER {
        let (scert, skey) = pki.pair(who);
        let (addr, task) = impostor(&scert, &skey).await;
        let client = AdminClient::new(vec![addr.to_string()], &cert, &key, &pki.read("ca.pem"))
            .with_timeout(Duration::from_secs(5));
        let r = client
            .call(|ch| async move {
                pb::cluster_service_client::ClusterServiceClient::new(ch)
                    .get_cluster_status(pb::GetClusterStatusRequest::default())
                    .await
            })
            .await;
        let e = r.expect_err("the impostor must not answer");
        assert_eq!(
            e.code(),
            tonic::Code::Unavailable,
            "the TLS handshake with {who} must fail, not reach a service: {e:?}"
        );
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_clients_refuse_a_server_that_is_not_a_controller() {
    let pki = Pki::new();
    let (cert, key) = pki.pair("edge-e1");
    for who in NOT_A_CONTROLLER {
        let (scert, skey) = pki.pair(who);
        let (addr, task) = impostor(&scert, &skey).await;

        // The sync client: no snapshot from an impostor, so never ready.
        let replica = Arc::new(Replica::default());
        let (stop, rx) = watch::channel(false);
        palisade_node::sync::spawn(
            SyncConfig {
                edge_id: "e1".into(),
                labels: Default::default(),
                controllers: vec![addr.to_string()],
                cert_pem: cert.clone(),
                key_pem: key.clone(),
                ca_pem: pki.read("ca.pem"),
                server_name: "localhost".into(),
                silence_timeout: Duration::from_secs(2),
                randomize_start: false,
            },
            replica.clone(),
            rx,
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(
            !replica.ready(),
            "the edge installed a snapshot from {who}, which is not a controller"
        );
        let _ = stop.send(true);

        // The EdgeAuth client: the handshake fails, so nothing is asked of the impostor.
        let ctl = ControllerClient::new(
            vec![addr.to_string()],
            &cert,
            &key,
            &pki.read("ca.pem"),
            "localhost",
        );
        let r = ctl
            .call(Retry::Safe, |mut c| async move {
                c.record_mfa_failure(pb::RecordMfaFailureRequest::default())
                    .await
            })
            .await;
        assert!(
            matches!(r, Err(CallError::Unreachable(_))),
            "the EdgeAuth client reached a service at {who}: {r:?}"
        );
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raft_client_refuses_anyone_but_the_member_it_dialled() {
    use openraft::RaftNetworkFactory;
    use openraft::network::RPCOption;
    use openraft::network::v2::RaftNetworkV2;
    use palisade_controller::raft::Member;
    use palisade_controller::raft::network::Network;

    let pki = Pki::new();
    let (cert, key) = pki.pair("controller-1");
    let tls = palisade_link::LinkTls::new(&cert, &key, &pki.read("ca.pem")).expect("tls");
    // Member 2 is dialled; the server holds an edge's, a viewer's, the ingress or member 3's
    // certificate.
    let mut holders: Vec<&str> = NOT_A_CONTROLLER.to_vec();
    holders.push("controller-3");
    for who in holders {
        let (scert, skey) = pki.pair(who);
        let (addr, task) = impostor(&scert, &skey).await;
        let mut net = Network::new(tls.clone());
        let mut conn = net
            .new_client(
                2,
                &Member {
                    raft_addr: addr.to_string(),
                    admin_addr: addr.to_string(),
                },
            )
            .await;
        let vote = palisade_controller::raft::wire::vote_req_from_pb(pb::VoteRequest {
            vote: Some(pb::Vote {
                term: 1,
                node_id: 1,
                committed: false,
            }),
            last_log_id: None,
            leadership_transfer: false,
        })
        .expect("vote");
        let r = conn
            .vote(vote, RPCOption::new(Duration::from_secs(3)))
            .await;
        assert!(
            matches!(r, Err(openraft::error::RPCError::Unreachable(_))),
            "the Raft client spoke to {who} as member 2: {r:?}"
        );
        task.abort();
    }
}
