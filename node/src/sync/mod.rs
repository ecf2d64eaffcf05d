//! The edge's sync client: subscribes to a controller, keeps the replica current, reports what
//! it applied, and fails over with jittered backoff.
//!
//! It resumes from its last revision after a reconnect. A delta that breaks continuity or fails
//! validation is refused: the last good view stays in force, the problem is logged, and the edge
//! resubscribes asking for a snapshot. It never panics on input from the network.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a member whose session failed is tried last.
const SUSPECT_FOR: Duration = Duration::from_secs(10);
/// TCP and TLS connect timeout to a controller: an unreachable member costs this much per try.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// The longest wait (jittered) before the next attempt after a working subscription ended; it
/// doubles with each attempt that fails, up to 2 s.
const FIRST_BACKOFF: Duration = Duration::from_millis(50);

use arc_swap::ArcSwapOption;
use palisade_link::{Expect, LinkOptions, LinkTls};
use palisade_proto::v1 as pb;
use rand::Rng;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::replica::{ReplicaError, View};

pub mod convert;

/// How the edge reaches the controllers.
#[derive(Clone)]
pub struct SyncConfig {
    /// This edge's id (must match its certificate).
    pub edge_id: String,
    /// Labels reported to the controllers.
    pub labels: HashMap<String, String>,
    /// Controller addresses (`host:port`), tried in turn; a Kubernetes service name works too.
    pub controllers: Vec<String>,
    /// Edge certificate, key and CA (PEM).
    pub cert_pem: String,
    /// Edge private key (PEM).
    pub key_pem: String,
    /// CA certificate (PEM).
    pub ca_pem: String,
    /// Not used for trust (controllers are recognised by the identity in their certificates,
    /// `urn:palisade:controller:<id>`); kept so existing configurations still parse.
    pub server_name: String,
    /// A stream that is silent for this long is considered dead (a few heartbeats).
    pub silence_timeout: Duration,
    /// Start with a random controller (spreads edges over members); otherwise the first.
    pub randomize_start: bool,
}

impl std::fmt::Debug for SyncConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncConfig")
            .field("edge_id", &self.edge_id)
            .field("controllers", &self.controllers)
            .finish_non_exhaustive()
    }
}

/// The replica every request reads: the current view, and how current it is.
#[derive(Debug)]
pub struct Replica {
    view: ArcSwapOption<View>,
    /// Announces every applied revision.
    applied: watch::Sender<u64>,
    /// When the edge last knew it had applied everything the cluster had committed.
    current_at: Mutex<Option<Instant>>,
    /// Heartbeats not yet caught up with: (commit revision, when received).
    pending: Mutex<VecDeque<(u64, Instant)>>,
    /// Deltas refused (discontinuous or invalid).
    refused: AtomicU64,
    /// Subscriptions made.
    subscriptions: AtomicU64,
    /// Why the sync client stopped for good (every controller refused this edge's
    /// certificate); `None` while it runs.
    halted: Mutex<Option<String>>,
}

impl Default for Replica {
    fn default() -> Self {
        Self {
            view: ArcSwapOption::default(),
            applied: watch::channel(0).0,
            current_at: Mutex::default(),
            pending: Mutex::default(),
            refused: AtomicU64::default(),
            subscriptions: AtomicU64::default(),
            halted: Mutex::default(),
        }
    }
}

impl Replica {
    /// A receiver of the applied revision, for waiting on propagation.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// The current view; `None` until the first snapshot (the edge is not ready).
    pub fn view(&self) -> Option<Arc<View>> {
        self.view.load_full()
    }

    /// Whether the edge has a view to enforce.
    pub fn ready(&self) -> bool {
        self.view.load().is_some()
    }

    /// The applied revision (0 before the first snapshot).
    pub fn revision(&self) -> u64 {
        self.view.load().as_ref().map(|v| v.revision).unwrap_or(0)
    }

    /// How old the view is: time since the edge last knew it was current. `Duration::MAX`
    /// before the first snapshot.
    pub fn staleness(&self) -> Duration {
        self.current_at
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|t| t.elapsed())
            .unwrap_or(Duration::MAX)
    }

    /// Deltas refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Subscriptions made so far (1 + reconnects).
    pub fn subscriptions(&self) -> u64 {
        self.subscriptions.load(Ordering::Relaxed)
    }

    /// Why the sync client gave up, if it did: every controller refused this edge's
    /// certificate, which no retry can change (the certificate is read at start).
    pub fn halted(&self) -> Option<String> {
        self.halted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Installs `v` as the view every request reads. Each install is logged at debug level
    /// under the target `palisade_node::applied` (revision, policy version, how), so a test
    /// can check from outside that an edge never goes back (contract 2).
    fn install(&self, v: View, how: &'static str) {
        let revision = v.revision;
        tracing::debug!(
            target: "palisade_node::applied",
            revision,
            policy = v.policy.as_ref().map_or(0, |(version, _)| *version),
            how,
            "applied"
        );
        self.view.store(Some(Arc::new(v)));
        self.applied.send_replace(revision);
        metrics::gauge!("palisade_edge_revision").set(revision as f64);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let mut caught_up = None;
        while pending.front().is_some_and(|(c, _)| *c <= revision) {
            caught_up = pending.pop_front().map(|(_, t)| t);
        }
        if let Some(t) = caught_up {
            *self.current_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        }
    }

    fn heartbeat(&self, commit: u64) {
        let now = Instant::now();
        if self.revision() >= commit && self.ready() {
            *self.current_at.lock().unwrap_or_else(|p| p.into_inner()) = Some(now);
            self.pending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clear();
        } else {
            let mut p = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            p.push_back((commit, now));
            while p.len() > 64 {
                p.pop_front();
            }
        }
        let s = self.staleness();
        metrics::gauge!("palisade_edge_staleness_seconds").set(if s == Duration::MAX {
            f64::INFINITY
        } else {
            s.as_secs_f64()
        });
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Why a subscription ended.
#[derive(Debug, thiserror::Error)]
enum SessionEnd {
    #[error("connect: {0}")]
    Connect(String),
    #[error("stream: {0}")]
    Stream(String),
    #[error("controller silent for {0:?}")]
    Silent(Duration),
    #[error("refused update: {0}")]
    Refused(ReplicaError),
    #[error(
        "the controller's snapshot at revision {snapshot} is older than the view in force ({enforced})"
    )]
    Behind { snapshot: u64, enforced: u64 },
    /// The controller (whose certificate this edge verified) refused this edge's certificate
    /// or identity: in the handshake (a TLS alert) or in answer to `Subscribe`.
    #[error("refused this edge's certificate: {0}")]
    NotAdmitted(String),
    #[error("shutting down")]
    Shutdown,
}

/// TLS alerts a server sends about the client's certificate (rustls' names for them).
/// `DecryptError` is how rustls reports a chain whose signature does not verify, such as a
/// certificate from another CA with the same name as the controllers' CA.
const CERTIFICATE_ALERTS: [&str; 9] = [
    "DecryptError",
    "BadCertificate",
    "UnsupportedCertificate",
    "CertificateRevoked",
    "CertificateExpired",
    "CertificateUnknown",
    "UnknownCA",
    "AccessDenied",
    "CertificateRequired",
];

/// Whether an error text reports the server refusing this client's certificate.
fn refuses_certificate(error: &str) -> bool {
    error
        .split("received fatal alert: ")
        .skip(1)
        .any(|rest| CERTIFICATE_ALERTS.iter().any(|a| rest.starts_with(a)))
}

/// Why a failed `Subscribe` ended the session.
fn subscribe_failed(s: &tonic::Status) -> SessionEnd {
    use tonic::Code::{PermissionDenied, Unauthenticated};
    let mut text = s.message().to_string();
    let mut cur = std::error::Error::source(s);
    while let Some(e) = cur {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cur = e.source();
    }
    if matches!(s.code(), PermissionDenied | Unauthenticated) {
        SessionEnd::NotAdmitted(s.message().to_string())
    } else if refuses_certificate(&text) {
        SessionEnd::NotAdmitted(text)
    } else {
        SessionEnd::Stream(s.message().to_string())
    }
}

/// Starts the sync client; it runs until `shutdown` turns true.
pub fn spawn(
    cfg: SyncConfig,
    replica: Arc<Replica>,
    shutdown: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(run(cfg, replica, shutdown))
}

async fn run(cfg: SyncConfig, replica: Arc<Replica>, mut shutdown: watch::Receiver<bool>) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls = match LinkTls::new(&cfg.cert_pem, &cfg.key_pem, &cfg.ca_pem) {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot use the controllers' CA; the edge stays not ready");
            return;
        }
    };
    let mut targets: Vec<String> = Vec::new();
    let mut next = 0usize;
    let mut backoff = FIRST_BACKOFF;
    let mut want_snapshot = false;
    // Members whose session just failed (silent, unreachable, out of contact) are tried last
    // for a while: a member cut off from the network can cost a connect timeout per attempt,
    // and the other members are the ones that can bring this edge up to date.
    let mut suspects: HashMap<String, Instant> = HashMap::new();
    // Members that refused this edge's certificate since the last other outcome. When every
    // member has, no retry can help (the certificate is read once, at start): the loop stops
    // and says why, instead of knocking forever.
    let mut refusals: HashMap<String, String> = HashMap::new();
    loop {
        if *shutdown.borrow() || cfg.controllers.is_empty() {
            return;
        }
        // Each full rotation resolves the configured names again, so a Kubernetes service name
        // expands to every controller pod behind it and pods that moved are found.
        if next >= targets.len() {
            targets = resolve(&cfg.controllers).await;
            next = if cfg.randomize_start && targets.len() > 1 {
                rand::rng().random_range(0..targets.len())
            } else {
                0
            };
            if targets.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = shutdown.changed() => return,
                }
                continue;
            }
        }
        suspects.retain(|_, at| at.elapsed() < SUSPECT_FOR);
        if suspects.contains_key(&targets[next])
            && let Some(k) = (0..targets.len())
                .map(|k| (next + k) % targets.len())
                .find(|i| !suspects.contains_key(&targets[*i]))
        {
            // take a healthy member's turn instead; the suspect keeps its place in the rotation
            targets.swap(next, k);
        }
        let addr = targets[next].clone();
        next += 1;
        let started = Instant::now();
        let subscribed_before = replica.subscriptions();
        let end = session(&cfg, &tls, &addr, &replica, want_snapshot, &mut shutdown).await;
        // The member took the subscription: it was healthy then, and its end now (killed,
        // frozen, cut off) is a new fault, not the next of a run of failed attempts. The
        // backoff those attempts built up must not delay the failover.
        let was_subscribed = replica.subscriptions() > subscribed_before;
        let asked_for_snapshot = std::mem::take(&mut want_snapshot);
        if !matches!(end, SessionEnd::NotAdmitted(_)) {
            refusals.clear();
        }
        match end {
            SessionEnd::Shutdown => return,
            SessionEnd::NotAdmitted(ref why) => {
                tracing::warn!(controller = %addr, reason = %why, "the controller refused this edge's certificate");
                refusals.insert(addr.clone(), why.clone());
                suspects.insert(addr.clone(), Instant::now());
                if targets.iter().all(|t| refusals.contains_key(t)) {
                    let why = format!(
                        "every controller refused this edge's certificate (edge id {:?}): {}",
                        cfg.edge_id,
                        refusals
                            .iter()
                            .map(|(a, r)| format!("{a}: {r}"))
                            .collect::<Vec<_>>()
                            .join("; ")
                    );
                    tracing::error!(reason = %why, "sync stopped: issue this edge a certificate the controllers accept, then restart it");
                    metrics::gauge!("palisade_edge_sync_halted").set(1.0);
                    *replica.halted.lock().unwrap_or_else(|p| p.into_inner()) = Some(why);
                    return;
                }
            }
            SessionEnd::Behind { .. } => {
                // Not a fault in what was sent, so not a refused update: that member has not
                // caught up yet. Another member (a majority has what this edge enforces) can
                // bring the edge forward; this one is tried last for a while.
                tracing::warn!(controller = %addr, reason = %end, "not going back; trying another member");
                metrics::counter!("palisade_edge_older_snapshots_refused_total").increment(1);
                suspects.insert(addr.clone(), Instant::now());
                want_snapshot = asked_for_snapshot;
            }
            SessionEnd::Refused(e) => {
                tracing::error!(controller = %addr, error = %e, "refused an update; keeping the last good view and resubscribing for a snapshot");
                replica.refused.fetch_add(1, Ordering::Relaxed);
                want_snapshot = true;
            }
            other => {
                tracing::warn!(controller = %addr, reason = %other, "subscription ended; failing over");
                suspects.insert(addr.clone(), Instant::now());
                if was_subscribed {
                    backoff = FIRST_BACKOFF;
                }
            }
        }
        metrics::counter!("palisade_edge_reconnects_total").increment(1);
        if started.elapsed() > Duration::from_secs(10) {
            backoff = FIRST_BACKOFF;
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(jitter)) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Expands each configured `host:port` to every address it resolves to (in order, without
/// duplicates); an entry that does not resolve is kept as written so its error is reported.
pub(crate) async fn resolve(configured: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for entry in configured {
        let resolved: Vec<String> = match tokio::net::lookup_host(entry.as_str()).await {
            Ok(addrs) => addrs.map(|a| a.to_string()).collect(),
            Err(e) => {
                tracing::warn!(controller = %entry, error = %e, "cannot resolve controller address");
                vec![entry.clone()]
            }
        };
        for a in resolved {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

async fn session(
    cfg: &SyncConfig,
    tls: &LinkTls,
    addr: &str,
    replica: &Replica,
    want_snapshot: bool,
    shutdown: &mut watch::Receiver<bool>,
) -> SessionEnd {
    // The subscription lives as long as the connection: no call deadline, but keepalive pings
    // (answered by the controller's HTTP/2 layer, however busy it is) notice a frozen
    // controller within a second, before the silence timeout and about when the other
    // members have elected a new leader.
    let opts = LinkOptions {
        connect_timeout: CONNECT_TIMEOUT,
        call_timeout: None,
        keepalive_interval: Duration::from_millis(250),
        keepalive_timeout: Duration::from_millis(750),
    };
    let ch = match tls.connect(addr, Expect::AnyController, &opts).await {
        Ok(ch) => ch,
        Err(e) if refuses_certificate(&e.to_string()) => {
            return SessionEnd::NotAdmitted(e.to_string());
        }
        Err(e) => return SessionEnd::Connect(e.to_string()),
    };
    let last = if want_snapshot { 0 } else { replica.revision() };
    let mut client = pb::edge_sync_client::EdgeSyncClient::new(ch.clone())
        .max_decoding_message_size(256 * 1024 * 1024);
    let stream = client
        .subscribe(pb::SubscribeRequest {
            edge_id: cfg.edge_id.clone(),
            labels: cfg.labels.clone(),
            last_applied_revision: last,
            software_version: env!("CARGO_PKG_VERSION").into(),
        })
        .await;
    let mut stream = match stream {
        Ok(s) => s.into_inner(),
        Err(s) => return subscribe_failed(&s),
    };
    replica.subscriptions.fetch_add(1, Ordering::Relaxed);
    let (report_tx, report_rx) = mpsc::channel::<pb::EdgeReport>(16);
    let mut reporter = pb::edge_sync_client::EdgeSyncClient::new(ch);
    let report_task = tokio::spawn(async move {
        reporter
            .report(tokio_stream::wrappers::ReceiverStream::new(report_rx))
            .await
    });
    let report = |replica: &Replica| {
        let staleness = replica.staleness();
        let health = if !replica.ready() {
            pb::EdgeHealth::NotReady
        } else {
            pb::EdgeHealth::Serving
        };
        // A full channel only means an older report is still queued; the next one follows.
        let _ = report_tx.try_send(pb::EdgeReport {
            edge_id: cfg.edge_id.clone(),
            labels: cfg.labels.clone(),
            applied_revision: replica.revision(),
            health: health as i32,
            staleness: Some(pb::Staleness {
                age: (staleness != Duration::MAX).then(|| prost_types::Duration {
                    seconds: staleness.as_secs() as i64,
                    nanos: staleness.subsec_nanos() as i32,
                }),
                revisions_behind: 0,
            }),
            applied_at: None,
        });
    };
    let mut building: Option<(pb::SnapshotBegin, Vec<pb::CatalogEntry>)> = None;
    let end = loop {
        let msg = tokio::select! {
            m = tokio::time::timeout(cfg.silence_timeout, stream.message()) => m,
            _ = shutdown.changed() => break SessionEnd::Shutdown,
        };
        let event = match msg {
            Err(_) => break SessionEnd::Silent(cfg.silence_timeout),
            Ok(Err(s)) => break SessionEnd::Stream(s.message().to_string()),
            Ok(Ok(None)) => break SessionEnd::Stream("closed by the controller".into()),
            Ok(Ok(Some(e))) => e.event,
        };
        match event {
            Some(pb::sync_event::Event::SnapshotBegin(b)) => building = Some((b, Vec::new())),
            Some(pb::sync_event::Event::SnapshotChunk(c)) => match building.as_mut() {
                Some((_, entries)) => entries.extend(c.entries),
                None => {
                    break SessionEnd::Refused(ReplicaError::BadSnapshot(
                        "chunk without a beginning".into(),
                    ));
                }
            },
            Some(pb::sync_event::Event::SnapshotEnd(e)) => {
                let Some((begin, entries)) = building.take() else {
                    break SessionEnd::Refused(ReplicaError::BadSnapshot(
                        "end without a beginning".into(),
                    ));
                };
                if e.revision != begin.revision || e.entry_count != entries.len() as u64 {
                    break SessionEnd::Refused(ReplicaError::BadSnapshot(format!(
                        "end at {} with {} entries, began at {} with {}",
                        e.revision,
                        entries.len(),
                        begin.revision,
                        begin.entry_count
                    )));
                }
                // Contract 2: the edge never goes back, also when it asked for a snapshot
                // (after a refused delta) and the member it reached is behind it (a restarted
                // member or a learner still catching up).
                if begin.revision < replica.revision() {
                    break SessionEnd::Behind {
                        snapshot: begin.revision,
                        enforced: replica.revision(),
                    };
                }
                let applying = std::time::Instant::now();
                match convert::snapshot(begin.revision, entries) {
                    Ok(v) => {
                        tracing::info!(revision = v.revision, reason = %begin.reason, revocations = v.revocations.len(), "snapshot installed");
                        metrics::counter!("palisade_edge_snapshots_total").increment(1);
                        replica.install(v, "snapshot");
                        metrics::histogram!("palisade_edge_apply_seconds", "update" => "snapshot")
                            .record(applying.elapsed().as_secs_f64());
                        report(replica);
                    }
                    Err(e) => break SessionEnd::Refused(e),
                }
            }
            Some(pb::sync_event::Event::Delta(d)) => {
                let Some(current) = replica.view() else {
                    break SessionEnd::Refused(ReplicaError::BadSnapshot(
                        "delta before any snapshot".into(),
                    ));
                };
                let applying = std::time::Instant::now();
                match convert::apply(&current, &d) {
                    Ok(v) => {
                        replica.install(v, "delta");
                        // the edge's own share of the propagation time: building the new view
                        // (policy compiled when it changed) and swapping it in
                        metrics::histogram!("palisade_edge_apply_seconds", "update" => "delta")
                            .record(applying.elapsed().as_secs_f64());
                        if let Some(t) = d.committed_at {
                            let ms = now_ms() - (t.seconds * 1000 + i64::from(t.nanos) / 1_000_000);
                            metrics::histogram!("palisade_propagation_seconds")
                                .record(ms.max(0) as f64 / 1000.0);
                        }
                        report(replica);
                    }
                    Err(e) => break SessionEnd::Refused(e),
                }
            }
            Some(pb::sync_event::Event::Heartbeat(h)) => {
                replica.heartbeat(h.commit_revision);
                report(replica);
            }
            None => {}
        }
    };
    drop(report_tx);
    report_task.abort();
    end
}

#[cfg(test)]
mod tests {
    use super::{SessionEnd, refuses_certificate, resolve, subscribe_failed};

    #[test]
    fn certificate_refusals_are_told_apart_from_outages() {
        assert!(refuses_certificate(
            "transport error: received fatal alert: UnknownCA"
        ));
        assert!(refuses_certificate(
            "cannot reach 10.0.0.1:7400: received fatal alert: CertificateExpired"
        ));
        assert!(!refuses_certificate(
            "received fatal alert: HandshakeFailure"
        ));
        assert!(!refuses_certificate("connection refused"));
        assert!(!refuses_certificate("UnknownCA"), "only an alert counts");
        for s in [
            tonic::Status::permission_denied("admin:root is not an edge"),
            tonic::Status::unauthenticated("no client certificate"),
            tonic::Status::unknown("h2 protocol error: received fatal alert: BadCertificate"),
        ] {
            assert!(
                matches!(subscribe_failed(&s), SessionEnd::NotAdmitted(_)),
                "{s:?}"
            );
        }
        for s in [
            tonic::Status::unavailable("no leader"),
            tonic::Status::internal("boom"),
        ] {
            assert!(
                matches!(subscribe_failed(&s), SessionEnd::Stream(_)),
                "{s:?}"
            );
        }
    }

    #[tokio::test]
    async fn names_expand_to_every_address_and_unknown_names_are_kept() {
        let got = resolve(&[
            "localhost:7400".to_string(),
            "127.0.0.1:7400".to_string(),
            "no-such-host.invalid:7400".to_string(),
        ])
        .await;
        assert!(got.iter().any(|a| a == "127.0.0.1:7400"), "{got:?}");
        assert_eq!(
            got.iter().filter(|a| *a == "127.0.0.1:7400").count(),
            1,
            "no duplicates: {got:?}"
        );
        assert_eq!(
            got.last().map(String::as_str),
            Some("no-such-host.invalid:7400")
        );
    }
}
