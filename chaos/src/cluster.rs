//! A local Palisade cluster made of real processes: N controllers and M edges, each its own OS
//! process started from a *host binary* (`palisade-chaos` itself, or a test's host binary) that
//! runs `palisade_controller::process::run` or `palisade_node::process::run` depending on its
//! first argument (see [`crate::host`]). Every process is ended (by PID) when the cluster is
//! dropped, also on panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use palisade_controller::client::AdminClient;
use palisade_node::ingress::Addresses;
use palisade_proto::v1 as pb;

/// What to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Number of controllers (voters).
    pub controllers: u64,
    /// Number of edges.
    pub edges: usize,
    /// The host binary.
    pub host: PathBuf,
    /// Where the PKI, data and logs go.
    pub dir: PathBuf,
    /// Fixed HTTPS ports for the edges (else port 0).
    pub edge_https_ports: Vec<u16>,
    /// Log filter for the processes (`PALISADE_LOG`).
    pub log_filter: String,
    /// Controller sync heartbeat, milliseconds.
    pub sync_heartbeat_ms: u64,
}

impl ClusterSpec {
    /// Defaults for `controllers` and `edges`, under `dir`, with `host`.
    pub fn new(controllers: u64, edges: usize, host: PathBuf, dir: PathBuf) -> Self {
        Self {
            controllers,
            edges,
            host,
            dir,
            edge_https_ports: Vec::new(),
            log_filter: "info,openraft=warn".into(),
            sync_heartbeat_ms: 200,
        }
    }
}

/// One controller process.
#[derive(Debug)]
pub struct ControllerProc {
    /// Raft node id.
    pub id: u64,
    /// Admin/Raft/sync port.
    pub port: u16,
    /// Prometheus port.
    pub metrics_port: u16,
    /// The process, when running.
    pub child: Option<Child>,
    /// Its log file.
    pub log: PathBuf,
}

impl ControllerProc {
    /// `127.0.0.1:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// One edge process.
#[derive(Debug)]
pub struct EdgeProc {
    /// Edge id.
    pub id: String,
    /// Where it listens (known once started).
    pub addrs: Option<Addresses>,
    /// The process, when running.
    pub child: Option<Child>,
    /// Its log file.
    pub log: PathBuf,
    https_port: u16,
}

impl EdgeProc {
    /// The HTTPS address; panics before the edge was started.
    pub fn https(&self) -> std::net::SocketAddr {
        self.addrs
            .as_ref()
            .map(|a| a.https)
            .unwrap_or_else(|| std::net::SocketAddr::from(([127, 0, 0, 1], self.https_port)))
    }
}

/// A running local cluster.
#[derive(Debug)]
pub struct LocalCluster {
    /// Its directory.
    pub dir: PathBuf,
    /// Controllers by id.
    pub controllers: BTreeMap<u64, ControllerProc>,
    /// Edges.
    pub edges: Vec<EdgeProc>,
    spec: ClusterSpec,
}

/// A port that was free a moment ago (controllers need their address before they start, to
/// know each other).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for e in &mut self.edges {
            stop(&mut e.child);
        }
        for c in self.controllers.values_mut() {
            stop(&mut c.child);
        }
    }
}

fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn log_file(path: &Path) -> anyhow::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

impl LocalCluster {
    /// Writes a PKI, starts the controllers, waits for a leader, then starts the edges and waits
    /// until each listens.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<LocalCluster> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        std::fs::create_dir_all(&spec.dir)?;
        let ids: Vec<u64> = (1..=spec.controllers).collect();
        let edge_ids: Vec<String> = (1..=spec.edges).map(|i| format!("edge-{i}")).collect();
        palisade_controller::pki::init_dir(&spec.dir.join("pki"), &ids, &edge_ids)?;
        let mut controllers = BTreeMap::new();
        for id in &ids {
            controllers.insert(
                *id,
                ControllerProc {
                    id: *id,
                    port: free_port()?,
                    metrics_port: free_port()?,
                    child: None,
                    log: spec.dir.join(format!("controller-{id}.log")),
                },
            );
        }
        let edges = edge_ids
            .iter()
            .enumerate()
            .map(|(i, id)| EdgeProc {
                id: id.clone(),
                addrs: None,
                child: None,
                log: spec.dir.join(format!("{id}.log")),
                https_port: spec.edge_https_ports.get(i).copied().unwrap_or(0),
            })
            .collect();
        let mut c = LocalCluster {
            dir: spec.dir.clone(),
            controllers,
            edges,
            spec,
        };
        for id in ids {
            c.spawn_controller(id)?;
        }
        c.wait_leader(Duration::from_secs(30)).await?;
        c.wait_signing_key(Duration::from_secs(30)).await?;
        for i in 0..c.edges.len() {
            c.spawn_edge(i).await?;
        }
        Ok(c)
    }

    /// The PKI directory.
    pub fn pki(&self) -> PathBuf {
        self.dir.join("pki")
    }

    /// Reads a PKI file.
    pub fn pki_file(&self, name: &str) -> anyhow::Result<String> {
        let p = self.pki().join(name);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    }

    /// Controller addresses.
    pub fn controller_addrs(&self) -> Vec<String> {
        self.controllers.values().map(|c| c.addr()).collect()
    }

    /// (Re)starts controller `id`.
    pub fn spawn_controller(&mut self, id: u64) -> anyhow::Result<()> {
        let pki = self.pki();
        let initial = self
            .controllers
            .values()
            .map(|c| format!("{}={}", c.id, c.addr()))
            .collect::<Vec<_>>()
            .join(",");
        let spec = &self.spec;
        let c = self
            .controllers
            .get_mut(&id)
            .context("no such controller")?;
        let mut cmd = Command::new(&spec.host);
        cmd.arg("controller")
            .args(["--node-id", &id.to_string(), "--listen", &c.addr()])
            .arg("--data-dir")
            .arg(spec.dir.join(format!("data-{id}")))
            .arg("--tls-cert")
            .arg(pki.join(format!("controller-{id}.pem")))
            .arg("--tls-key")
            .arg(pki.join(format!("controller-{id}.key")))
            .arg("--tls-ca")
            .arg(pki.join("ca.pem"))
            .arg("--data-key-file")
            .arg(pki.join("data.key"))
            .args(["--initial-members", &initial])
            .args(["--election-timeout-min-ms", "600"])
            .args(["--election-timeout-max-ms", "1200"])
            .args(["--heartbeat-ms", "100"])
            .args(["--sync-heartbeat-ms", &spec.sync_heartbeat_ms.to_string()])
            .args(["--metrics-listen", &format!("127.0.0.1:{}", c.metrics_port)])
            .env("PALISADE_LOG", &spec.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&c.log)?);
        c.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", spec.host.display()))?,
        );
        Ok(())
    }

    /// (Re)starts edge `i` and waits until it listens.
    pub async fn spawn_edge(&mut self, i: usize) -> anyhow::Result<()> {
        let pki = self.pki();
        let controllers = self.controller_addrs().join(",");
        let spec = &self.spec;
        let e = self.edges.get_mut(i).context("no such edge")?;
        let addr_file = spec.dir.join(format!("{}.addresses.json", e.id));
        let _ = std::fs::remove_file(&addr_file);
        let https = match &e.addrs {
            // a restarted edge keeps its address, as a real one would
            Some(a) => a.https.to_string(),
            None => format!("127.0.0.1:{}", e.https_port),
        };
        let mut cmd = Command::new(&spec.host);
        cmd.arg("edge")
            .args(["--edge-id", &e.id, "--controllers", &controllers])
            .args(["--labels", &format!("edge={}", e.id)])
            .arg("--tls-cert")
            .arg(pki.join(format!("edge-{}.pem", e.id)))
            .arg("--tls-key")
            .arg(pki.join(format!("edge-{}.key", e.id)))
            .arg("--tls-ca")
            .arg(pki.join("ca.pem"))
            .args(["--controller-name", "localhost"])
            .args(["--https-listen", &https])
            .args(["--http-listen", "off", "--ops-listen", "127.0.0.1:0"])
            .arg("--cert")
            .arg(format!(
                "{}:{}",
                pki.join("ingress.pem").display(),
                pki.join("ingress.key").display()
            ))
            .arg("--assertion-key")
            .arg(pki.join("assertion.key"))
            .arg("--addresses-file")
            .arg(&addr_file)
            .env("PALISADE_LOG", &spec.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&e.log)?);
        e.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", spec.host.display()))?,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(s) = std::fs::read_to_string(&addr_file)
                && let Ok(a) = serde_json::from_str::<Addresses>(&s)
            {
                e.addrs = Some(a);
                return Ok(());
            }
            if let Some(Ok(Some(status))) = e.child.as_mut().map(|c| c.try_wait()) {
                bail!("{} exited with {status}; see {}", e.id, e.log.display());
            }
            if Instant::now() > deadline {
                bail!("{} did not start listening; see {}", e.id, e.log.display());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILLs edge `i`.
    pub fn kill_edge(&mut self, i: usize) {
        if let Some(e) = self.edges.get_mut(i) {
            stop(&mut e.child);
        }
    }

    /// SIGKILLs controller `id`.
    pub fn kill_controller(&mut self, id: u64) {
        if let Some(c) = self.controllers.get_mut(&id) {
            stop(&mut c.child);
        }
    }

    fn signal(pid: u32, sig: &str) -> anyhow::Result<()> {
        let st = Command::new("kill")
            .arg(sig)
            .arg(pid.to_string())
            .status()
            .context("running kill")?;
        if !st.success() {
            bail!("kill {sig} {pid} failed");
        }
        Ok(())
    }

    /// SIGSTOPs controller `id` (it stops answering anyone).
    pub fn pause_controller(&self, id: u64) -> anyhow::Result<()> {
        match self.controllers.get(&id).and_then(|c| c.child.as_ref()) {
            Some(c) => Self::signal(c.id(), "-STOP"),
            None => Ok(()),
        }
    }

    /// SIGCONTs controller `id`.
    pub fn resume_controller(&self, id: u64) -> anyhow::Result<()> {
        match self.controllers.get(&id).and_then(|c| c.child.as_ref()) {
            Some(c) => Self::signal(c.id(), "-CONT"),
            None => Ok(()),
        }
    }

    /// The current leader, as a running controller reports it (0 when unknown).
    pub async fn leader(&self) -> u64 {
        let Ok(admin) = self.admin() else {
            return 0;
        };
        status(&admin.with_timeout(Duration::from_secs(1)))
            .await
            .map(|s| s.leader_id)
            .unwrap_or(0)
    }

    /// An admin client with role `admin`, knowing every controller.
    pub fn admin(&self) -> anyhow::Result<AdminClient> {
        Ok(AdminClient::new(
            self.controller_addrs(),
            &self.pki_file("admin-admin.pem")?,
            &self.pki_file("admin-admin.key")?,
            &self.pki_file("ca.pem")?,
        )
        .with_timeout(Duration::from_secs(5)))
    }

    /// The cluster status as a controller reports it.
    pub async fn status(&self) -> anyhow::Result<pb::GetClusterStatusResponse> {
        status(&self.admin()?).await
    }

    /// Waits until a controller reports a leader.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let deadline = Instant::now() + timeout;
        let admin = self.admin()?;
        loop {
            if let Ok(s) = status(&admin).await
                && s.leader_id != 0
            {
                return Ok(s.leader_id);
            }
            if Instant::now() > deadline {
                bail!(
                    "no leader within {timeout:?}; logs are in {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the catalog holds a session signing key (the leader creates the first one
    /// right after the cluster forms); edges cannot sign anyone in before.
    pub async fn wait_signing_key(&self, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let admin = self.admin()?;
        loop {
            let r = admin
                .call(|ch| async move {
                    pb::key_service_client::KeyServiceClient::new(ch)
                        .list_signing_keys(pb::ListSigningKeysRequest {})
                        .await
                        .map(|r| r.into_inner())
                })
                .await;
            if let Ok(r) = r
                && !r.keys.is_empty()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "no signing key within {timeout:?}; logs are in {}",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The revision the cluster has applied (as the contacted member reports it).
    pub async fn latest_revision(&self) -> anyhow::Result<u64> {
        let s = self.status().await?;
        Ok(s.applied_revision.max(s.commit_index))
    }

    /// Applies a policy document; returns the revision.
    pub async fn apply_policy(&self, json: &str, comment: &str) -> anyhow::Result<u64> {
        let admin = self.admin()?;
        let r = admin
            .call(|ch| async move {
                pb::policy_service_client::PolicyServiceClient::new(ch)
                    .apply_policy(pb::ApplyPolicyRequest {
                        document_json: json.to_string(),
                        comment: comment.to_string(),
                        expected_version: 0,
                    })
                    .await
                    .map(|r| r.into_inner())
            })
            .await
            .map_err(|s| anyhow::anyhow!("applying the policy: {}", s.message()))?;
        Ok(r.write.map(|w| w.revision).unwrap_or(0))
    }

    /// Stores a named secret; returns the revision.
    pub async fn put_secret(&self, name: &str, value: &[u8]) -> anyhow::Result<u64> {
        let admin = self.admin()?;
        let r = admin
            .call(|ch| async move {
                pb::key_service_client::KeyServiceClient::new(ch)
                    .put_secret(pb::PutSecretRequest {
                        name: name.to_string(),
                        value: value.to_vec(),
                    })
                    .await
                    .map(|r| r.into_inner())
            })
            .await
            .map_err(|s| anyhow::anyhow!("storing secret {name}: {}", s.message()))?;
        Ok(r.write.map(|w| w.revision).unwrap_or(0))
    }

    /// Waits until every edge has applied `revision`.
    pub async fn wait_edges(&self, revision: u64, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        let admin = self.admin()?;
        let want = self.edges.iter().filter(|e| e.child.is_some()).count();
        loop {
            let r = wait_for_revision(&admin, revision, Duration::from_secs(2)).await;
            if let Ok(r) = &r
                && r.complete
                && r.applied.len() >= want
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("edges did not apply revision {revision} within {timeout:?}: {r:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `GetClusterStatus` through any controller.
pub async fn status(admin: &AdminClient) -> anyhow::Result<pb::GetClusterStatusResponse> {
    admin
        .call(|ch| async move {
            pb::cluster_service_client::ClusterServiceClient::new(ch)
                .get_cluster_status(pb::GetClusterStatusRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await
        .map_err(|s| anyhow::anyhow!("cluster status: {}", s.message()))
}

/// `WaitForRevision` for every edge, waiting at most `timeout` on the server.
pub async fn wait_for_revision(
    admin: &AdminClient,
    revision: u64,
    timeout: Duration,
) -> Result<pb::WaitForRevisionResponse, tonic::Status> {
    let timeout = prost_types::Duration {
        seconds: timeout.as_secs() as i64,
        nanos: timeout.subsec_nanos() as i32,
    };
    admin
        .call(|ch| async move {
            pb::cluster_service_client::ClusterServiceClient::new(ch)
                .wait_for_revision(pb::WaitForRevisionRequest {
                    revision,
                    scope: None,
                    timeout: Some(timeout),
                })
                .await
                .map(|r| r.into_inner())
        })
        .await
}

/// Revokes one session through the admin API; returns (revision, revocation id).
pub async fn revoke_session(
    admin: &AdminClient,
    session_id: &str,
    reason: &str,
) -> Result<(u64, String), tonic::Status> {
    let r = admin
        .call(|ch| {
            let (sid, reason) = (session_id.to_string(), reason.to_string());
            async move {
                pb::revocation_service_client::RevocationServiceClient::new(ch)
                    .revoke(pb::RevokeRequest {
                        target: Some(pb::RevocationTarget {
                            target: Some(pb::revocation_target::Target::SessionId(sid)),
                        }),
                        reason,
                        ttl: None,
                    })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await?;
    Ok((
        r.write.map(|w| w.revision).unwrap_or(0),
        r.revocation.map(|r| r.id).unwrap_or_default(),
    ))
}

/// GETs a path from an edge's plain-HTTP ops listener (`/metrics`, `/readyz`); `None` when it
/// does not answer within 2 s.
pub async fn ops_get(port: u16, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: ops\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(2), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    Some(out)
}

/// The status code of an ops listener's answer.
pub async fn ops_status(port: u16, path: &str) -> Option<u16> {
    ops_get(port, path).await?.split(' ').nth(1)?.parse().ok()
}
