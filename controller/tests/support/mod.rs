//! A test harness that runs real `palisade-controller` processes on loopback: a development PKI
//! in a temporary directory, one data directory per member, ports chosen by the OS, and
//! helpers to kill, pause, resume and restart members. Everything it started is killed when the
//! harness is dropped.

#![allow(dead_code)]

pub mod edge;
pub mod linearizability;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use palisade_link::admin::AdminClient;
use palisade_proto::v1 as pb;
use tonic::Status;

/// Waits until `f` returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One member process.
#[derive(Debug)]
pub struct Member {
    pub id: u64,
    pub port: u16,
    pub metrics_port: u16,
    /// The device listener's port.
    pub device_port: u16,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Member {
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The device listener's address.
    pub fn device_addr(&self) -> String {
        format!("127.0.0.1:{}", self.device_port)
    }
}

/// Writers that revoke unique sessions through a leader-following client until stopped, and
/// remember which writes were acknowledged.
#[derive(Debug)]
pub struct Writers {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<Vec<String>>>,
}

impl Writers {
    /// Starts `n` writers whose session ids begin with `prefix`.
    pub fn start(cluster: &Cluster, n: usize, prefix: &str) -> Writers {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..n)
            .map(|w| {
                let client = cluster.client();
                let stop = stop.clone();
                let prefix = prefix.to_string();
                tokio::spawn(async move {
                    let mut acked = Vec::new();
                    let mut i = 0;
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        let id = format!("{prefix}{w}-{i}");
                        i += 1;
                        if Cluster::revoke(&client, &id).await.is_ok() {
                            acked.push(id);
                        } else {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    }
                    acked
                })
            })
            .collect();
        Writers { stop, tasks }
    }

    /// Stops the writers and returns every acknowledged session id.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut all = Vec::new();
        for t in self.tasks {
            all.extend(t.await.expect("writer"));
        }
        all
    }
}

/// GETs a plain-HTTP URL path from a local port (for `/metrics`).
pub async fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// Options for a cluster.
#[derive(Debug, Clone)]
pub struct Options {
    pub resume_window: usize,
    pub snapshot_every: u64,
    pub logs_to_keep: u64,
    pub max_document_bytes: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            resume_window: 10_000,
            snapshot_every: 10_000,
            logs_to_keep: 1_000,
            max_document_bytes: 1024 * 1024,
        }
    }
}

/// A cluster of controller processes.
#[derive(Debug)]
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub members: BTreeMap<u64, Member>,
    pub initial: Vec<u64>,
    pub opts: Options,
}

impl Cluster {
    pub fn pki(&self) -> PathBuf {
        self.dir.path().join("pki")
    }

    /// Starts `voters` members bootstrapped from a static member list, plus `spares` members
    /// that run but are not part of the cluster yet.
    pub async fn start(voters: u64, spares: u64, opts: Options) -> Cluster {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let ids: Vec<u64> = (1..=voters + spares).collect();
        palisade_link::pki::init_dir(
            &dir.path().join("pki"),
            &ids,
            &(1..=6).map(|i| format!("e{i}")).collect::<Vec<_>>(),
        )
        .expect("pki");
        let mut ports = palisade_controller::process::loopback_ports(3 * ids.len())
            .expect("loopback ports")
            .into_iter();
        let members = ids
            .iter()
            .map(|id| {
                (
                    *id,
                    Member {
                        id: *id,
                        port: ports.next().expect("port"),
                        metrics_port: ports.next().expect("port"),
                        device_port: ports.next().expect("port"),
                        child: None,
                        log: dir.path().join(format!("n{id}.log")),
                    },
                )
            })
            .collect();
        let mut c = Cluster {
            dir,
            members,
            initial: (1..=voters).collect(),
            opts,
        };
        for id in ids {
            c.spawn(id);
        }
        c.wait_leader(Duration::from_secs(20)).await;
        // And every running member agrees on it, still, after longer than the largest election
        // timeout. A member that knows the leader's id from its vote but has not yet received
        // the membership entry does not know the leader's address, so a write to it is answered
        // UNAVAILABLE "no leader is known yet, retry shortly" (right, but not what tests start
        // from; seen in CI right after a first agreement); and a member that started after the
        // others were elected can call an election and depose the leader.
        eventually(
            "every member to agree on one leader for longer than an election timeout",
            Duration::from_secs(30),
            || async {
                let first = c.agreed_leader().await?;
                tokio::time::sleep(Duration::from_millis(1300)).await;
                (c.agreed_leader().await? == first).then_some(())
            },
        )
        .await;
        c
    }

    /// The (leader, term) every running initial member reports, if they all report the same.
    async fn agreed_leader(&self) -> Option<(u64, u64)> {
        let mut agreed = None;
        for (id, m) in &self.members {
            if m.child.is_none() || !self.initial.contains(id) {
                continue;
            }
            let s = self.status(*id).await.ok()?;
            let this = (s.leader_id, s.term);
            if s.leader_id == 0 || agreed.is_some_and(|a| a != this) {
                return None;
            }
            agreed = Some(this);
        }
        agreed
    }

    fn initial_members_arg(&self) -> String {
        self.initial
            .iter()
            .map(|id| format!("{id}={}", self.members[id].addr()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Starts (or restarts) a member's process.
    pub fn spawn(&mut self, id: u64) {
        let pki = self.pki();
        let initial = if self.initial.contains(&id) {
            Some(self.initial_members_arg())
        } else {
            None
        };
        let m = self.members.get_mut(&id).expect("member");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)
            .expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_palisade-controller"));
        cmd.arg("--node-id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(m.addr())
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("data-{id}")))
            .arg("--tls-cert")
            .arg(pki.join(format!("controller-{id}.pem")))
            .arg("--tls-key")
            .arg(pki.join(format!("controller-{id}.key")))
            .arg("--tls-ca")
            .arg(pki.join("ca.pem"))
            .arg("--data-key-file")
            .arg(pki.join("data.key"))
            .arg("--snapshot-every")
            .arg(self.opts.snapshot_every.to_string())
            .arg("--logs-to-keep")
            .arg(self.opts.logs_to_keep.to_string())
            .arg("--max-document-bytes")
            .arg(self.opts.max_document_bytes.to_string())
            .arg("--election-timeout-min-ms")
            .arg("600")
            .arg("--election-timeout-max-ms")
            .arg("1200")
            .arg("--heartbeat-ms")
            .arg("100")
            .arg("--sync-resume-window")
            .arg(self.opts.resume_window.to_string())
            .arg("--sync-heartbeat-ms")
            .arg("200")
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{}", m.metrics_port))
            .arg("--device-listen")
            .arg(m.device_addr())
            .env("PALISADE_LOG", "info,openraft=warn")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(initial) = initial {
            cmd.arg("--initial-members").arg(initial);
        }
        m.child = Some(cmd.spawn().expect("spawn palisade-controller"));
    }

    /// SIGKILLs a member.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut c) = self.members.get_mut(&id).and_then(|m| m.child.take()) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&self, id: u64, sig: &str) {
        if let Some(c) = self.members.get(&id).and_then(|m| m.child.as_ref()) {
            let status = Command::new("kill")
                .arg(sig)
                .arg(c.id().to_string())
                .status()
                .expect("kill");
            assert!(status.success(), "kill {sig} failed");
        }
    }

    /// SIGSTOPs a member (it stops answering: a partition from everyone's point of view).
    pub fn pause(&self, id: u64) {
        self.signal(id, "-STOP");
    }

    /// SIGCONTs a paused member.
    pub fn resume(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    fn admin(&self, role: &str, servers: Vec<String>) -> AdminClient {
        let pki = self.pki();
        let read = |f: &str| std::fs::read_to_string(pki.join(f)).expect("pki file");
        AdminClient::new(
            servers,
            &read(&format!("admin-{role}.pem")),
            &read(&format!("admin-{role}.key")),
            &read("ca.pem"),
        )
        .with_timeout(Duration::from_secs(5))
    }

    /// An admin client that knows every running member.
    pub fn client(&self) -> AdminClient {
        self.admin(
            "admin",
            self.members
                .values()
                .filter(|m| m.child.is_some())
                .map(|m| m.addr())
                .collect(),
        )
    }

    /// An admin client trying `servers` in this order.
    pub fn client_with(&self, servers: Vec<String>) -> AdminClient {
        self.admin("admin", servers)
    }

    /// An admin client talking to one member only.
    pub fn client_for(&self, id: u64) -> AdminClient {
        self.admin("admin", vec![self.members[&id].addr()])
    }

    /// Addresses of all members, in id order.
    pub fn addrs(&self) -> Vec<String> {
        self.members.values().map(|m| m.addr()).collect()
    }

    /// A client with another role.
    pub fn client_as(&self, role: &str) -> AdminClient {
        self.admin(role, self.members.values().map(|m| m.addr()).collect())
    }

    /// The status one member reports.
    pub async fn status(&self, id: u64) -> Result<pb::GetClusterStatusResponse, Status> {
        let c = self.client_for(id).with_timeout(Duration::from_secs(2));
        c.call(|ch| async move {
            pb::cluster_service_client::ClusterServiceClient::new(ch)
                .get_cluster_status(pb::GetClusterStatusRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await
    }

    /// Waits until a running member reports a leader that is itself running, and returns it.
    pub async fn wait_leader(&self, timeout: Duration) -> u64 {
        eventually("a leader", timeout, || async {
            for (id, m) in &self.members {
                if m.child.is_none() {
                    continue;
                }
                if let Ok(s) = self.status(*id).await
                    && s.leader_id != 0
                    && self
                        .members
                        .get(&s.leader_id)
                        .is_some_and(|l| l.child.is_some())
                    && let Ok(ls) = self.status(s.leader_id).await
                    && ls.state == "leader"
                {
                    return Some(s.leader_id);
                }
            }
            None
        })
        .await
    }

    /// Waits until member `id` has applied at least `revision`.
    pub async fn wait_applied(&self, id: u64, revision: u64, timeout: Duration) {
        eventually(
            &format!("member {id} to apply revision {revision}"),
            timeout,
            || async {
                self.status(id)
                    .await
                    .ok()
                    .filter(|s| s.applied_revision >= revision)
                    .map(|_| ())
            },
        )
        .await
    }

    /// Revokes a session (a cheap, unique write) and returns the revision.
    pub async fn revoke(client: &AdminClient, session: &str) -> Result<u64, Status> {
        let req = pb::RevokeRequest {
            target: Some(pb::RevocationTarget {
                target: Some(pb::revocation_target::Target::SessionId(
                    session.to_string(),
                )),
            }),
            reason: "test".into(),
            ttl: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        };
        client
            .call(|ch| {
                let req = req.clone();
                async move {
                    pb::revocation_service_client::RevocationServiceClient::new(ch)
                        .revoke(req)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await
            .map(|r| r.write.unwrap_or_default().revision)
    }

    /// Session ids of all revocations, read from one member (linearizable unless `local`).
    pub async fn revoked_sessions(
        client: &AdminClient,
        local: bool,
    ) -> Result<Vec<String>, Status> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let req = pb::ListRevocationsRequest {
                page: Some(pb::PageRequest {
                    page_size: 1000,
                    page_token: token.clone(),
                }),
                consistency: if local {
                    pb::ReadConsistency::Local as i32
                } else {
                    0
                },
            };
            let r = client
                .call(|ch| {
                    let req = req.clone();
                    async move {
                        pb::revocation_service_client::RevocationServiceClient::new(ch)
                            .list_revocations(req)
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await?;
            for rev in r.revocations {
                if let Some(pb::revocation_target::Target::SessionId(s)) =
                    rev.target.and_then(|t| t.target)
                {
                    out.push(s);
                }
            }
            token = r.page.unwrap_or_default().next_page_token;
            if token.is_empty() {
                return Ok(out);
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in self.members.values_mut() {
            if let Some(mut c) = m.child.take() {
                // A paused process must be resumed to be killed cleanly.
                let _ = Command::new("kill")
                    .arg("-CONT")
                    .arg(c.id().to_string())
                    .status();
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        if std::thread::panicking() {
            for m in self.members.values() {
                if let Ok(log) = std::fs::read_to_string(&m.log) {
                    let tail: Vec<&str> = log.lines().rev().take(30).collect();
                    eprintln!("---- member {} log (last 30 lines) ----", m.id);
                    for l in tail.into_iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

/// An `EdgeAuth` client as edge `id` (its certificate from the cluster's PKI).
pub async fn edge_auth(
    c: &Cluster,
    id: &str,
) -> pb::edge_auth_client::EdgeAuthClient<tonic::transport::Channel> {
    let read = |f: &str| std::fs::read_to_string(c.pki().join(f)).expect("pki");
    let tls = tonic::transport::ClientTlsConfig::new()
        .identity(tonic::transport::Identity::from_pem(
            read(&format!("edge-{id}.pem")),
            read(&format!("edge-{id}.key")),
        ))
        .ca_certificate(tonic::transport::Certificate::from_pem(read("ca.pem")))
        .domain_name("localhost");
    let ch = tonic::transport::Endpoint::from_shared(format!("https://{}", c.addrs()[0]))
        .expect("endpoint")
        .tls_config(tls)
        .expect("tls")
        .connect()
        .await
        .expect("connect");
    pb::edge_auth_client::EdgeAuthClient::new(ch)
}

/// A real edge replica (the edge's own sync client) as edge `id`.
pub fn replica(
    c: &Cluster,
    id: &str,
) -> (
    std::sync::Arc<palisade_node::sync::Replica>,
    tokio::sync::watch::Sender<bool>,
) {
    let read = |f: &str| std::fs::read_to_string(c.pki().join(f)).expect("pki");
    let r = std::sync::Arc::new(palisade_node::sync::Replica::default());
    let (tx, rx) = tokio::sync::watch::channel(false);
    palisade_node::sync::spawn(
        palisade_node::sync::SyncConfig {
            edge_id: id.into(),
            labels: Default::default(),
            controllers: c.addrs(),
            cert_pem: read(&format!("edge-{id}.pem")),
            key_pem: read(&format!("edge-{id}.key")),
            ca_pem: read("ca.pem"),
            server_name: "localhost".into(),
            silence_timeout: Duration::from_secs(2),
            randomize_start: false,
        },
        r.clone(),
        rx,
    );
    (r, tx)
}
