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
use palisade_link::admin::{AdminClient, IdempotencyKey};
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
    /// How the processes are connected.
    pub network: Network,
    /// A CA the edges trust for the identity provider (`--idp-ca`), besides the system's.
    pub idp_ca: Option<PathBuf>,
    /// Extra arguments for every edge (tests that need other limits).
    pub edge_args: Vec<String>,
}

/// How the cluster's processes reach each other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// Everything on 127.0.0.1.
    #[default]
    Loopback,
    /// On 127.0.0.1, with a fault proxy in front of each controller (every link into a
    /// controller goes through it): delay, jitter, loss, stalls, blocks.
    Proxied,
    /// Each process in its own network namespace on a bridge (root only): real partitions with
    /// nftables and links set down.
    Namespaces,
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
            network: Network::Loopback,
            idp_ca: None,
            edge_args: Vec::new(),
        }
    }
}

/// One controller process.
#[derive(Debug)]
pub struct ControllerProc {
    /// Raft node id.
    pub id: u64,
    /// Its address (127.0.0.1, or its namespace's).
    pub ip: std::net::IpAddr,
    /// Admin/Raft/sync port.
    pub port: u16,
    /// Prometheus port.
    pub metrics_port: u16,
    /// Device listener port (`DeviceEnrollment`).
    pub device_port: u16,
    /// The process, when running.
    pub child: Option<Child>,
    /// Its log file.
    pub log: PathBuf,
}

impl ControllerProc {
    /// `ip:port`, where it listens.
    pub fn addr(&self) -> String {
        std::net::SocketAddr::new(self.ip, self.port).to_string()
    }

    /// `ip:port` of its device listener.
    pub fn device_addr(&self) -> String {
        std::net::SocketAddr::new(self.ip, self.device_port).to_string()
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
    ip: std::net::IpAddr,
}

impl EdgeProc {
    /// The HTTPS address; panics before the edge was started.
    pub fn https(&self) -> std::net::SocketAddr {
        self.addrs
            .as_ref()
            .map(|a| a.https)
            .unwrap_or_else(|| std::net::SocketAddr::new(self.ip, self.https_port))
    }

    /// The HTTP/3 (UDP) address, once started, unless the edge runs without HTTP/3.
    pub fn h3(&self) -> Option<std::net::SocketAddr> {
        self.addrs.as_ref().and_then(|a| a.h3)
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
    /// The fault proxy in front of each controller (`Network::Proxied`).
    pub proxies: BTreeMap<u64, crate::faultproxy::FaultProxy>,
    /// The namespaces (`Network::Namespaces`); dropped after the processes.
    pub lab: Option<crate::netns::Lab>,
    spec: ClusterSpec,
}

/// A controller's listen and metrics ports on loopback (controllers need their address before
/// they start, to know each other).
/// A controller's ports on loopback: gRPC, metrics, devices.
fn controller_ports() -> std::io::Result<(u16, u16, u16)> {
    let p = palisade_controller::process::loopback_ports(3)?;
    Ok((p[0], p[1], p[2]))
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
        // one spare controller identity, for membership changes
        let with_spare: Vec<u64> = (1..=spec.controllers + 1).collect();
        let edge_ids: Vec<String> = (1..=spec.edges).map(|i| format!("edge-{i}")).collect();
        palisade_link::pki::init_dir(&spec.dir.join("pki"), &with_spare, &edge_ids)?;
        let mut lab = match spec.network {
            Network::Namespaces => Some(crate::netns::Lab::create()?),
            _ => None,
        };
        let loopback: std::net::IpAddr = [127, 0, 0, 1].into();
        let mut controllers = BTreeMap::new();
        for id in &ids {
            let (ip, port, metrics_port, device_port) = match lab.as_mut() {
                Some(l) => (
                    l.add_host(&format!("c{id}"), 10 + *id as u8)?.ip.into(),
                    7400,
                    9400,
                    7401,
                ),
                None => {
                    let (port, metrics, devices) = controller_ports()?;
                    (loopback, port, metrics, devices)
                }
            };
            controllers.insert(
                *id,
                ControllerProc {
                    id: *id,
                    ip,
                    port,
                    metrics_port,
                    device_port,
                    child: None,
                    log: spec.dir.join(format!("controller-{id}.log")),
                },
            );
        }
        let mut edges = Vec::new();
        for (i, id) in edge_ids.iter().enumerate() {
            let (ip, https_port) = match lab.as_mut() {
                Some(l) => (l.add_host(id, 100 + i as u8)?.ip.into(), 8443),
                None => (loopback, spec.edge_https_ports.get(i).copied().unwrap_or(0)),
            };
            edges.push(EdgeProc {
                id: id.clone(),
                addrs: None,
                child: None,
                log: spec.dir.join(format!("{id}.log")),
                https_port,
                ip,
            });
        }
        let mut proxies = BTreeMap::new();
        if spec.network == Network::Proxied {
            for c in controllers.values() {
                let target = std::net::SocketAddr::new(c.ip, c.port);
                proxies.insert(
                    c.id,
                    crate::faultproxy::FaultProxy::start(
                        std::net::SocketAddr::new(loopback, 0),
                        target,
                        c.id,
                    )
                    .await?,
                );
            }
        }
        let mut c = LocalCluster {
            dir: spec.dir.clone(),
            controllers,
            edges,
            proxies,
            lab,
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

    /// Controller addresses (where they listen; admin calls from the harness go there).
    pub fn controller_addrs(&self) -> Vec<String> {
        self.controllers.values().map(|c| c.addr()).collect()
    }

    /// The address other members and edges use for controller `id`: its fault proxy when the
    /// network is proxied, else where it listens.
    pub fn advertised(&self, id: u64) -> Option<String> {
        match self.proxies.get(&id) {
            Some(p) => Some(p.listen.to_string()),
            None => self.controllers.get(&id).map(|c| c.addr()),
        }
    }

    fn advertised_all(&self) -> Vec<String> {
        self.controllers
            .keys()
            .filter_map(|id| self.advertised(*id))
            .collect()
    }

    /// The harness's own address as the cluster's processes see it (where the identity
    /// provider and the upstream must listen): 127.0.0.1, or the lab's bridge.
    pub fn harness_ip(&self) -> std::net::IpAddr {
        match &self.lab {
            Some(l) => l.gateway().into(),
            None => [127, 0, 0, 1].into(),
        }
    }

    fn command(&self, host_name: &str) -> anyhow::Result<Command> {
        match &self.lab {
            Some(l) => l.command(host_name, &self.spec.host),
            None => Ok(Command::new(&self.spec.host)),
        }
    }

    /// (Re)starts controller `id`. A member of the initial set gets the initial member list; a
    /// controller started later (see `add_controller`) waits to be added.
    pub fn spawn_controller(&mut self, id: u64) -> anyhow::Result<()> {
        let pki = self.pki();
        let initial = if id <= self.spec.controllers {
            (1..=self.spec.controllers)
                .filter_map(|m| Some(format!("{m}={}", self.advertised(m)?)))
                .collect::<Vec<_>>()
                .join(",")
        } else {
            String::new()
        };
        let advertise = self.advertised(id).context("no such controller")?;
        let mut cmd = self.command(&format!("c{id}"))?;
        let spec = &self.spec;
        let c = self
            .controllers
            .get_mut(&id)
            .context("no such controller")?;
        cmd.arg("controller")
            .args(["--node-id", &id.to_string(), "--listen", &c.addr()])
            .args(["--advertise", &advertise])
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
            .args(["--election-timeout-min-ms", "600"])
            .args(["--election-timeout-max-ms", "1200"])
            .args(["--heartbeat-ms", "100"])
            .args(["--sync-heartbeat-ms", &spec.sync_heartbeat_ms.to_string()])
            .args([
                "--metrics-listen",
                &std::net::SocketAddr::new(c.ip, c.metrics_port).to_string(),
            ])
            .args(["--device-listen", &c.device_addr()])
            .env("PALISADE_LOG", &spec.log_filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file(&c.log)?);
        if !initial.is_empty() {
            cmd.args(["--initial-members", &initial]);
        }
        c.child = Some(
            cmd.spawn()
                .with_context(|| format!("starting {}", spec.host.display()))?,
        );
        Ok(())
    }

    /// Starts a new controller (the spare identity, id `controllers + 1`, or later ones when
    /// their certificates exist), adds it as a learner, waits until it caught up, and makes the
    /// voters `voters`. Returns its id.
    pub async fn add_controller(
        &mut self,
        voters_after: impl Fn(u64) -> Vec<u64>,
    ) -> anyhow::Result<u64> {
        let id = self.controllers.keys().max().copied().unwrap_or(0) + 1;
        let loopback: std::net::IpAddr = [127, 0, 0, 1].into();
        let (ip, port, metrics_port, device_port) = match self.lab.as_mut() {
            Some(l) => (
                l.add_host(&format!("c{id}"), 10 + id as u8)?.ip.into(),
                7400,
                9400,
                7401,
            ),
            None => {
                let (port, metrics, devices) = controller_ports()?;
                (loopback, port, metrics, devices)
            }
        };
        if self.spec.network == Network::Proxied {
            let p = crate::faultproxy::FaultProxy::start(
                std::net::SocketAddr::new(loopback, 0),
                std::net::SocketAddr::new(ip, port),
                id,
            )
            .await?;
            self.proxies.insert(id, p);
        }
        self.controllers.insert(
            id,
            ControllerProc {
                id,
                ip,
                port,
                metrics_port,
                device_port,
                child: None,
                log: self.spec.dir.join(format!("controller-{id}.log")),
            },
        );
        self.spawn_controller(id)?;
        let addr = self.advertised(id).context("address")?;
        let admin = self.admin()?.with_timeout(Duration::from_secs(30));
        admin
            .call(|ch| {
                let addr = addr.clone();
                async move {
                    pb::cluster_service_client::ClusterServiceClient::new(ch)
                        .add_learner(pb::AddLearnerRequest {
                            id,
                            raft_addr: addr.clone(),
                            admin_addr: addr,
                            wait_caught_up: true,
                        })
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await
            .context("adding the learner")?;
        let voters = voters_after(id);
        admin
            .call(|ch| {
                let voters = voters.clone();
                async move {
                    pb::cluster_service_client::ClusterServiceClient::new(ch)
                        .change_membership(pb::ChangeMembershipRequest {
                            voters,
                            retain_as_learners: false,
                        })
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await
            .context("changing the voters")?;
        Ok(id)
    }

    /// Stops controller `id` for good and forgets it (after it left the membership).
    pub fn retire_controller(&mut self, id: u64) {
        if let Some(mut c) = self.controllers.remove(&id) {
            stop(&mut c.child);
        }
        self.proxies.remove(&id);
    }

    /// (Re)starts edge `i` and waits until it listens.
    pub async fn spawn_edge(&mut self, i: usize) -> anyhow::Result<()> {
        let pki = self.pki();
        let controllers = self.advertised_all().join(",");
        let name = self.edges.get(i).context("no such edge")?.id.clone();
        let mut cmd = self.command(&name)?;
        let spec = &self.spec;
        let e = self.edges.get_mut(i).context("no such edge")?;
        let addr_file = spec.dir.join(format!("{}.addresses.json", e.id));
        let _ = std::fs::remove_file(&addr_file);
        let https = match &e.addrs {
            // a restarted edge keeps its address, as a real one would
            Some(a) => a.https.to_string(),
            None => std::net::SocketAddr::new(e.ip, e.https_port).to_string(),
        };
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
            .args(["--http-listen", "off"])
            .args([
                "--ops-listen",
                &std::net::SocketAddr::new(e.ip, 0).to_string(),
            ])
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
        if let Some(ca) = &spec.idp_ca {
            cmd.arg("--idp-ca").arg(ca);
        }
        cmd.args(&spec.edge_args);
        // Each start of an edge begins a new incarnation in its log (an edge keeps no state
        // across restarts, so "never goes back" holds per incarnation).
        {
            use std::io::Write as _;
            writeln!(log_file(&e.log)?, "{}", crate::applied::INCARNATION_MARK)
                .with_context(|| format!("writing {}", e.log.display()))?;
        }
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

    /// The controller an edge is subscribed to, as the cluster reports it.
    pub async fn edge_controller(&self, edge_id: &str) -> Option<u64> {
        let admin = self.admin().ok()?.with_timeout(Duration::from_secs(2));
        let r = admin
            .call(|ch| async move {
                pb::cluster_service_client::ClusterServiceClient::new(ch)
                    .get_propagation_status(pb::GetPropagationStatusRequest::default())
                    .await
                    .map(|r| r.into_inner())
            })
            .await
            .ok()?;
        r.edges
            .iter()
            .find(|e| e.id == edge_id)
            .map(|e| e.connected_to)
            .filter(|c| *c != 0)
    }

    /// The revision the cluster has applied (as the contacted member reports it).
    pub async fn latest_revision(&self) -> anyhow::Result<u64> {
        let s = self.status().await?;
        Ok(s.applied_revision.max(s.commit_index))
    }

    /// Applies a policy document; returns the revision.
    pub async fn apply_policy(&self, json: &str, comment: &str) -> anyhow::Result<u64> {
        Ok(self.apply_policy_if(json, comment, 0).await?.0)
    }

    /// Applies a policy document only if version `expected` is current (0: any); returns the
    /// revision and the new version. A write whose answer was lost and that arrives late is
    /// then refused instead of undoing newer changes.
    pub async fn apply_policy_if(
        &self,
        json: &str,
        comment: &str,
        expected: u64,
    ) -> anyhow::Result<(u64, u64)> {
        apply_policy_keyed(
            &self.admin()?,
            &IdempotencyKey::random(),
            json,
            comment,
            expected,
        )
        .await
        .map_err(|s| anyhow::anyhow!("applying the policy: {}", s.message()))
    }

    /// The current policy version and document, as the leader knows it.
    pub async fn current_policy(&self) -> anyhow::Result<(u64, String)> {
        current_policy(&self.admin()?)
            .await
            .map_err(|s| anyhow::anyhow!("reading the policy: {}", s.message()))
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

/// Every page of a paged listing: `fetch(token)` returns one page's items and the next token
/// (empty on the last page). At most `max_pages` pages are read, so a server that never ends
/// its listing cannot hang the caller.
pub async fn collect_pages<T, F, Fut>(mut fetch: F, max_pages: usize) -> anyhow::Result<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<(Vec<T>, String)>>,
{
    let mut all = Vec::new();
    let mut token = String::new();
    for _ in 0..max_pages {
        let (items, next) = fetch(token).await?;
        all.extend(items);
        if next.is_empty() {
            return Ok(all);
        }
        token = next;
    }
    anyhow::bail!("the listing did not end within {max_pages} pages")
}

/// Every revocation in force, following the admin API's pages (at most 1,000 each).
pub async fn list_revocations(admin: &AdminClient) -> anyhow::Result<Vec<pb::Revocation>> {
    collect_pages(
        |token| async move {
            let r = admin
                .call(|ch| {
                    let token = token.clone();
                    async move {
                        pb::revocation_service_client::RevocationServiceClient::new(ch)
                            .list_revocations(pb::ListRevocationsRequest {
                                page: Some(pb::PageRequest {
                                    page_size: 1000,
                                    page_token: token,
                                }),
                                consistency: 0,
                            })
                            .await
                            .map(|r| r.into_inner())
                    }
                })
                .await?;
            let next = r.page.map(|p| p.next_page_token).unwrap_or_default();
            Ok((r.revocations, next))
        },
        100_000,
    )
    .await
}

/// Revokes one session through the admin API; returns (revision, revocation id).
pub async fn revoke_session(
    admin: &AdminClient,
    session_id: &str,
    reason: &str,
) -> Result<(u64, String), tonic::Status> {
    revoke_session_keyed(admin, &IdempotencyKey::random(), session_id, reason).await
}

/// As `revoke_session`, named by `key`: retried with the same key, it is applied once.
pub async fn revoke_session_keyed(
    admin: &AdminClient,
    key: &IdempotencyKey,
    session_id: &str,
    reason: &str,
) -> Result<(u64, String), tonic::Status> {
    let r = admin
        .call_keyed(key, |ch| {
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
    ops_get_at(std::net::SocketAddr::from(([127, 0, 0, 1], port)), path).await
}

/// GETs a path from an ops listener at `addr`; `None` when it does not answer within 2 s.
pub async fn ops_get_at(addr: std::net::SocketAddr, path: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr))
        .await
        .ok()?
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

/// The status code of the answer of an ops listener at `addr`.
pub async fn ops_status_at(addr: std::net::SocketAddr, path: &str) -> Option<u16> {
    ops_get_at(addr, path)
        .await?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// Applies a policy document, named by `key`, only if version `expected` is current (0: any);
/// returns the revision and the new version. Retried with the same key, it is applied once.
pub async fn apply_policy_keyed(
    admin: &AdminClient,
    key: &IdempotencyKey,
    json: &str,
    comment: &str,
    expected: u64,
) -> Result<(u64, u64), tonic::Status> {
    let r = admin
        .call_keyed(key, |ch| async move {
            pb::policy_service_client::PolicyServiceClient::new(ch)
                .apply_policy(pb::ApplyPolicyRequest {
                    document_json: json.to_string(),
                    comment: comment.to_string(),
                    expected_version: expected,
                })
                .await
                .map(|r| r.into_inner())
        })
        .await?;
    Ok((
        r.write.map(|w| w.revision).unwrap_or(0),
        r.version.map(|v| v.version).unwrap_or(0),
    ))
}

/// The current policy version and document, read linearizably (from the leader).
pub async fn current_policy(admin: &AdminClient) -> Result<(u64, String), tonic::Status> {
    let r = admin
        .call(|ch| async move {
            pb::policy_service_client::PolicyServiceClient::new(ch)
                .get_policy(pb::GetPolicyRequest::default())
                .await
                .map(|r| r.into_inner())
        })
        .await?;
    let v = r.version.unwrap_or_default();
    Ok((v.version, v.document_json))
}

#[cfg(test)]
mod tests {
    use super::collect_pages;

    /// A listing of 2,500 items in pages of 1,000 is read whole (the chaos invariant "no
    /// acknowledged write is lost" once read only the first page).
    #[tokio::test]
    async fn every_page_is_read() {
        let all: Vec<u32> = (0..2500).collect();
        let got = collect_pages(
            |token| {
                let all = all.clone();
                async move {
                    let start: usize = if token.is_empty() { 0 } else { token.parse()? };
                    let end = (start + 1000).min(all.len());
                    let next = if end < all.len() {
                        end.to_string()
                    } else {
                        String::new()
                    };
                    Ok((all[start..end].to_vec(), next))
                }
            },
            10,
        )
        .await
        .expect("pages");
        assert_eq!(got, all);
        let endless = collect_pages(|_| async { Ok((vec![1u32], "again".to_string())) }, 5).await;
        assert!(endless.is_err(), "a listing that never ends is an error");
    }
}
