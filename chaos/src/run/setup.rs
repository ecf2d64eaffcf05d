//! The test bed of one run: a cluster of real processes, the sample upstream, the development
//! identity provider, the scenario's policy applied at every edge, and one signed-in session
//! per scheduled revocation (plus a canary that is never revoked).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;

use super::probes::{H3Probe, Probe};
use super::{GUARDED_HOST, MARKER_HOST, PROBE_HOST, policy};
use crate::cluster::{ClusterSpec, LocalCluster};
use crate::devidp::DevIdp;
use crate::scenario::{ProbeProtocol, Scenario, Schedule};
use crate::upstream::Upstream;

/// Everything a run drives and watches. Dropping it stops every process it started.
pub(super) struct Bed {
    /// The cluster (dropped first: its processes stop before the services they call).
    pub(super) cluster: LocalCluster,
    /// The probes of every edge.
    pub(super) probe: Arc<Probe>,
    /// The admin API.
    pub(super) admin: Arc<palisade_link::admin::AdminClient>,
    /// One session cookie per scheduled revocation.
    pub(super) cookies: Vec<String>,
    /// A session that is never revoked.
    pub(super) canary: String,
    /// The identity provider's issuer and client id, and the upstream (for policy changes).
    pub(super) issuer: String,
    pub(super) client_id: String,
    pub(super) upstream_addr: std::net::SocketAddr,
    /// The policy version and marker number in force after setup.
    pub(super) policy_version: u64,
    pub(super) marker: u64,
    _upstream: Upstream,
    _idp: DevIdp,
    _tmp: tempfile::TempDir,
}

impl Bed {
    /// Starts the bed for `sc`; `dir` keeps the cluster's files when given (it must be empty).
    pub(super) async fn start(
        sc: &Scenario,
        schedule: &Schedule,
        host: PathBuf,
        dir: Option<PathBuf>,
    ) -> anyhow::Result<Bed> {
        let tmp = tempfile::Builder::new()
            .prefix("palisade-chaos-")
            .tempdir()?;
        // A kept directory must start empty: controllers would otherwise start from an earlier
        // run's data, whose members sat at other addresses, and never elect a leader.
        if let Some(d) = &dir
            && std::fs::read_dir(d).is_ok_and(|mut entries| entries.next().is_some())
        {
            anyhow::bail!(
                "{} is not empty; --dir keeps one run's files and needs an empty or new directory",
                d.display()
            );
        }
        let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
        let mut spec = ClusterSpec::new(sc.controllers, sc.edges, host, dir.clone());
        // The workload signs in one session per scheduled revocation from this one address
        // (two `/.palisade/` requests each): a load generator, not a client the per-address
        // limits are for. A release build signs in faster than the reserved-path limit allows.
        spec.edge_args = ["--rate-sign-in", "0/0", "--rate-reserved", "0/0"]
            .map(String::from)
            .to_vec();
        // Every revision each edge applies is logged (`applied.rs`), and checked afterwards.
        spec.log_filter = format!("info,openraft=warn,{}", crate::applied::FILTER);
        spec.network = sc.network;
        // In namespaces the edges reach the identity provider by the bridge's address, so it
        // serves HTTPS with a certificate from its own CA, which the edges are told to trust.
        let idp_ca = match sc.network {
            crate::cluster::Network::Namespaces => {
                let ca = palisade_link::pki::DevCa::new()?;
                std::fs::create_dir_all(&dir)?;
                let path = dir.join("idp-ca.pem");
                std::fs::write(&path, &ca.ca_pem)?;
                spec.idp_ca = Some(path);
                Some(ca)
            }
            _ => None,
        };
        let cluster = LocalCluster::start(spec).await?;
        let ca = cluster.pki_file("ingress-ca.pem")?;
        let harness = cluster.harness_ip();
        let upstream = Upstream::start(
            std::net::SocketAddr::new(harness, 0),
            format!(
                "https://localhost:{}/.well-known/palisade/jwks.json",
                cluster.edges[0].https().port()
            ),
            Some(&ca),
            None,
        )
        .await?;
        let idp_addr = std::net::SocketAddr::new(harness, 0);
        let idp = match &idp_ca {
            Some(ca) => DevIdp::start_tls(idp_addr, "palisade-chaos", ca).await?,
            None => DevIdp::start(idp_addr, "palisade-chaos").await?,
        };
        cluster
            .put_secret("dev-oidc", idp.client_secret.as_bytes())
            .await?;
        let marker = 0;
        let (rev, policy_version) = cluster
            .apply_policy_if(
                &policy(&idp.issuer, &idp.client_id, upstream.addr, marker),
                "chaos: initial",
                0,
            )
            .await?;
        cluster.wait_edges(rev, Duration::from_secs(20)).await?;

        let idp_ca_pem = idp_ca.as_ref().map(|c| c.ca_pem.clone());
        let mut clients = Vec::new();
        for e in &cluster.edges {
            clients.push((
                client_for(e.https(), &ca, idp_ca_pem.as_deref())?,
                e.https().port(),
            ));
        }
        // one session per revocation, plus a canary that is never revoked
        let port0 = cluster.edges[0].https().port();
        let mut cookies = Vec::new();
        for _ in 0..=schedule.revocations_s.len() {
            cookies.push(
                crate::devidp::sign_in(&clients[0].0, PROBE_HOST, port0, "alice")
                    .await
                    .context("signing in for the workload")?,
            );
        }
        let canary = cookies.pop().context("canary")?;
        let h3 = match sc.probe {
            ProbeProtocol::Https => None,
            ProbeProtocol::H3 => Some(
                cluster
                    .edges
                    .iter()
                    .map(|e| {
                        Ok(H3Probe {
                            addr: e.h3().context("the edge serves no HTTP/3")?,
                            ca: ca.clone(),
                            conn: tokio::sync::Mutex::new(None),
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?,
            ),
        };
        let probe = Arc::new(Probe {
            down: clients
                .iter()
                .map(|_| std::sync::atomic::AtomicBool::new(false))
                .collect(),
            clients,
            probes: Default::default(),
            violations: Mutex::new(Vec::new()),
            h3,
        });
        let admin = Arc::new(cluster.admin()?);
        Ok(Bed {
            issuer: idp.issuer.clone(),
            client_id: idp.client_id.clone(),
            upstream_addr: upstream.addr,
            cluster,
            probe,
            admin,
            cookies,
            canary,
            policy_version,
            marker,
            _upstream: upstream,
            _idp: idp,
            _tmp: tmp,
        })
    }
}

/// A client that sends the probed names to `edge`, trusting the ingress CA (and the identity
/// provider's, in namespaces).
fn client_for(
    edge: std::net::SocketAddr,
    ingress_ca: &str,
    idp_ca: Option<&str>,
) -> anyhow::Result<reqwest::Client> {
    let at = std::net::SocketAddr::new(edge.ip(), 0);
    let mut b = reqwest::Client::builder();
    if let Some(idp) = idp_ca {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(idp.as_bytes())?);
    }
    Ok(b.redirect(reqwest::redirect::Policy::none())
        .add_root_certificate(reqwest::Certificate::from_pem(ingress_ca.as_bytes())?)
        .resolve(PROBE_HOST, at)
        .resolve(GUARDED_HOST, at)
        .resolve(MARKER_HOST, at)
        .timeout(Duration::from_secs(2))
        .connect_timeout(Duration::from_millis(500))
        .pool_idle_timeout(Duration::from_secs(30))
        .build()?)
}
