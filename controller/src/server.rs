//! Starting a controller: storage, Raft, bootstrap, the gRPC server (Raft transport and admin
//! API over mutual TLS, with health and reflection), metrics and housekeeping; and stopping it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use palisade_policy::catalog::{Actor, Command, Sealed};
use palisade_proto::v1 as pb;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use crate::admin::Admin;
use crate::config::{Config, InitialMember};
use crate::controller::{Controller, now_ms};
use crate::raft::network::Network;
use crate::raft::service::RaftService;
use crate::raft::{LogStore, Member, StateMachine, open_db};
use crate::seal::DataKey;

/// Largest gRPC message accepted (policy documents plus headroom).
fn max_message(cfg: &Config) -> usize {
    cfg.max_document_bytes + 4 * 1024 * 1024
}

/// A running controller.
#[derive(Debug)]
pub struct Running {
    /// The controller.
    pub controller: Controller,
    /// The address the gRPC server is bound to.
    pub addr: SocketAddr,
    /// The address the device listener is bound to, when enabled.
    pub device_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Running {
    /// Stops serving, shuts Raft down and waits for background tasks.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        let _ = self.controller.raft.shutdown().await;
        for t in self.tasks {
            t.abort();
        }
        Ok(())
    }
}

/// Loads the data key from the config.
pub fn load_data_key(cfg: &Config) -> anyhow::Result<DataKey> {
    let text = match (&cfg.data_key, &cfg.data_key_file) {
        (Some(k), _) => k.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .with_context(|| format!("reading data key {}", path.display()))?,
        (None, None) => anyhow::bail!("a data key is required"),
    };
    DataKey::parse(&text).map_err(|e| anyhow::anyhow!("data key: {e}"))
}

fn read(path: &std::path::Path) -> anyhow::Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}

/// Starts a controller and returns once its gRPC server is listening.
pub async fn start(cfg: Config, members: Vec<InitialMember>) -> anyhow::Result<Running> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let key = Arc::new(load_data_key(&cfg)?);
    let cert = read(&cfg.tls_cert)?;
    let tls_key = read(&cfg.tls_key)?;
    let ca = read(&cfg.tls_ca)?;
    let identity = Identity::from_pem(&cert, &tls_key);
    let server_tls = ServerTlsConfig::new()
        .identity(identity)
        .client_ca_root(Certificate::from_pem(&ca));
    let client_tls = palisade_link::LinkTls::new(&cert, &tls_key, &ca)
        .map_err(|e| anyhow::anyhow!("--tls-ca: {e}"))?;

    let db = open_db(&cfg.data_dir.join("raft.redb"))
        .with_context(|| format!("opening {}", cfg.data_dir.display()))?;
    let log = LogStore::new(db.clone())?;
    let sm = StateMachine::new(db)?.with_resume_window(cfg.sync_resume_window);
    let state = sm.handle();
    let raft_config = Arc::new(
        cfg.raft_config()
            .map_err(|e| anyhow::anyhow!("raft config: {e}"))?,
    );
    let raft = openraft::Raft::new(
        cfg.node_id,
        raft_config,
        Network::new(client_tls.clone()),
        log,
        sm,
    )
    .await
    .context("starting raft")?;

    let controller = Controller {
        id: cfg.node_id,
        raft: raft.clone(),
        state,
        key,
        client_tls,
        max_document_bytes: cfg.max_document_bytes,
        edges: Arc::default(),
        ttl_cache: Arc::default(),
        peer_channels: Arc::default(),
        contact_timeout: std::time::Duration::from_millis(
            cfg.election_timeout_max_ms + 2 * cfg.heartbeat_ms,
        ),
    };

    // Bind before bootstrapping so peers can reach us as soon as we are a member.
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("binding {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let advertise = cfg.advertise.clone().unwrap_or_else(|| addr.to_string());

    if !raft.is_initialized().await.context("reading raft state")? {
        let initial: Option<BTreeMap<u64, Member>> = if cfg.init {
            Some(
                [(
                    cfg.node_id,
                    Member {
                        raft_addr: advertise.clone(),
                        admin_addr: advertise.clone(),
                    },
                )]
                .into(),
            )
        } else if !members.is_empty() && members.iter().map(|m| m.id).min() == Some(cfg.node_id) {
            Some(
                members
                    .iter()
                    .map(|m| {
                        (
                            m.id,
                            Member {
                                raft_addr: m.addr.clone(),
                                admin_addr: m.addr.clone(),
                            },
                        )
                    })
                    .collect(),
            )
        } else {
            None
        };
        if let Some(initial) = initial {
            tracing::info!(members = ?initial.keys().collect::<Vec<_>>(), "bootstrapping a new cluster");
            raft.initialize(initial)
                .await
                .context("bootstrapping the cluster")?;
        }
    }

    let (shutdown, shutdown_rx) = watch::channel(false);
    let admin = Admin::new(controller.clone());
    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<pb::policy_service_server::PolicyServiceServer<Admin>>()
        .await;
    health_reporter
        .set_serving::<pb::raft_transport_server::RaftTransportServer<RaftService>>()
        .await;
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(palisade_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(palisade_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()?;
    let limit = max_message(&cfg);
    let router = Server::builder()
        .tls_config(server_tls)?
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .layer(crate::rpc_metrics::RpcMetricsLayer)
        .layer(crate::authz::AuthzLayer)
        .add_service(
            pb::raft_transport_server::RaftTransportServer::new(RaftService::new(
                controller.clone(),
            ))
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024),
        )
        .add_service(
            pb::policy_service_server::PolicyServiceServer::new(admin.clone())
                .max_decoding_message_size(limit)
                .max_encoding_message_size(limit),
        )
        .add_service(pb::revocation_service_server::RevocationServiceServer::new(
            admin.clone(),
        ))
        .add_service(pb::edge_auth_server::EdgeAuthServer::new(
            crate::edge_auth::EdgeAuthService::new(controller.clone()),
        ))
        .add_service(pb::device_service_server::DeviceServiceServer::new(
            admin.clone(),
        ))
        .add_service(pb::factor_service_server::FactorServiceServer::new(
            admin.clone(),
        ))
        .add_service(pb::key_service_server::KeyServiceServer::new(admin.clone()))
        .add_service(pb::cluster_service_server::ClusterServiceServer::new(
            admin.clone(),
        ))
        .add_service(pb::audit_service_server::AuditServiceServer::new(admin))
        .add_service(
            pb::edge_sync_server::EdgeSyncServer::new(crate::sync::SyncService::new(
                controller.clone(),
                controller.edges.clone(),
                Duration::from_millis(cfg.sync_heartbeat_ms),
                shutdown_rx.clone(),
            ))
            .max_encoding_message_size(64 * 1024 * 1024),
        )
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);
    let mut stop = shutdown_rx.clone();
    // Accepted sockets get TCP_NODELAY here: `Server::tcp_nodelay` only applies to listeners
    // tonic binds itself. Without it, small frames (deltas, report acknowledgements) could wait
    // for a delayed ACK (40 ms on Linux).
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, async move {
        let _ = stop.wait_for(|s| *s).await;
    }));

    let device_addr = match cfg.device_listen {
        Some(at) => {
            let listener = crate::devices::listener::bind(at).await?;
            let bound = listener.local_addr()?;
            let verifier = palisade_link::device::DeviceClientVerifier::new();
            let tls = crate::devices::listener::server_config(&cert, &tls_key, verifier.clone())?;
            let (ctl, stop) = (controller.clone(), shutdown_rx.clone());
            let ttl = Duration::from_secs(cfg.device_cert_ttl_secs);
            tokio::spawn(async move {
                if let Err(e) =
                    crate::devices::listener::serve(listener, tls, verifier, ctl, ttl, stop).await
                {
                    tracing::error!(error = %e, "the device listener stopped");
                }
            });
            tracing::info!(addr = %bound, "device listener");
            Some(bound)
        }
        None => None,
    };

    let tasks = vec![
        tokio::spawn(housekeeping(controller.clone(), shutdown_rx.clone())),
        tokio::spawn(raft_metrics(controller.clone(), shutdown_rx)),
    ];
    tracing::info!(node_id = cfg.node_id, %addr, advertise = %advertise, key = %controller.key.fingerprint(), "controller listening");
    Ok(Running {
        controller,
        addr,
        device_addr,
        shutdown,
        tasks,
        server,
    })
}

/// On the leader: create the first signing key as soon as there is none (checked twice a second,
/// a cheap read), and garbage-collect expired revocations and retired keys once a minute.
async fn housekeeping(ctl: Controller, mut stop: watch::Receiver<bool>) {
    let system = Actor {
        subject: format!("controller-{}", ctl.id),
        kind: "system".into(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let mut last_gc = 0i64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if !ctl.raft.is_leader() {
            continue;
        }
        if ctl.state.read(|s| s.catalog.signing_keys.is_empty()) {
            let mut secret = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut secret);
            match ctl.key.seal(crate::seal::Slot::SigningKey, &secret) {
                Ok(sealed) => {
                    if let Err(e) = ctl
                        .write(
                            system.clone(),
                            Command::RotateSigningKey {
                                secret: Sealed(sealed),
                                overlap_ms: 0,
                            },
                        )
                        .await
                    {
                        tracing::warn!(error = %e, "could not create the first signing key");
                    }
                }
                Err(e) => tracing::error!(error = %e, "could not seal a signing key"),
            }
        }
        if ctl.state.read(|s| s.catalog.device_ca.is_none()) {
            create_device_ca(&ctl, &system).await;
        }
        if now_ms() - last_gc >= 60_000 {
            last_gc = now_ms();
            if let Err(e) = ctl.write(system.clone(), Command::CollectGarbage).await {
                tracing::debug!(error = %e, "garbage collection skipped");
            }
        }
    }
}

/// Creates the device CA: generated here, its key sealed before it is proposed.
async fn create_device_ca(ctl: &Controller, system: &Actor) {
    let (certificate_pem, key) = match crate::devices::ca::generate() {
        Ok(ca) => ca,
        Err(e) => {
            tracing::error!(error = %e, "could not generate the device CA");
            return;
        }
    };
    let sealed = match ctl.key.seal(crate::seal::Slot::DeviceCaKey, &key) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "could not seal the device CA key");
            return;
        }
    };
    let command = Command::CreateDeviceCa {
        certificate_pem,
        key: Sealed(sealed),
    };
    match ctl.write(system.clone(), command).await {
        Ok(_) => tracing::info!("device CA created"),
        Err(e) => tracing::warn!(error = %e, "could not create the device CA"),
    }
}

/// Exports Raft metrics to Prometheus.
async fn raft_metrics(ctl: Controller, mut stop: watch::Receiver<bool>) {
    let mut rx = crate::raft::StatusWatch::new(ctl.id, &ctl.raft);
    let mut last_leader = None;
    loop {
        let m = rx.current();
        metrics::gauge!("palisade_raft_term").set(m.term as f64);
        metrics::gauge!("palisade_raft_is_leader").set(if m.leader == Some(ctl.id) {
            1.0
        } else {
            0.0
        });
        metrics::gauge!("palisade_raft_last_log_index").set(m.last_log_index as f64);
        metrics::gauge!("palisade_raft_commit_index").set(m.commit_index as f64);
        metrics::gauge!("palisade_raft_applied_index").set(m.applied_index as f64);
        metrics::gauge!("palisade_raft_snapshot_index").set(m.snapshot_index as f64);
        metrics::gauge!("palisade_raft_members").set(m.members.len() as f64);
        if m.leader != last_leader {
            if last_leader.is_some() {
                metrics::counter!("palisade_raft_leader_changes_total").increment(1);
            }
            last_leader = m.leader;
        }
        tokio::select! {
            alive = rx.changed() => if !alive { return },
            _ = stop.changed() => return,
        }
    }
}
