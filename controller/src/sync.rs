//! The edge sync service: how every controller, leader or follower, pushes the catalog to edges.
//!
//! A subscription gets a snapshot when the edge is new or too far behind (older than the
//! resume window, or after a compaction replaced this member's state), then every applied
//! entry as a delta in revision order (entries with no catalog change too, so edges can verify
//! continuity), with heartbeats in between carrying the cluster's commit revision. A slow edge
//! never slows the others: its subscription lags on the shared broadcast, drops what it missed
//! and is sent a fresh snapshot. A member that has lost its leader ends its subscriptions, so
//! edges fail over to a member that is still part of the majority.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use palisade_policy::catalog::Resolved;
use palisade_proto::v1 as pb;
use palisade_proto::v1::edge_sync_server::EdgeSync;
use tokio::sync::{broadcast, mpsc, watch};
use tonic::{Request, Response, Status, Streaming};

use crate::controller::{Controller, now_ms, ts};
use crate::convert;
use crate::identity::require_edge;
use crate::raft::state_machine::{Applied, AppliedEvent, DeltaEntry};
use crate::seal::{DataKey, Slot};

/// Snapshot entries per chunk.
const CHUNK: usize = 1000;
/// How long a member may go without a leader before it ends its subscriptions.
const LEADERLESS_LIMIT: Duration = Duration::from_secs(3);
/// How long a leader that lost its quorum keeps its subscriptions (without heartbeats) before
/// ending them, on top of the contact timeout itself.
const CUT_OFF_LIMIT: Duration = Duration::from_millis(300);

/// What one controller knows of the edges subscribed to it.
///
/// Every change bumps a generation that waiters watch (`WaitForRevision` here and, through
/// `ListLocalEdges` long polls, on the other members), so nobody polls for edge progress.
#[derive(Debug)]
pub struct EdgeRegistry {
    edges: Mutex<HashMap<String, pb::EdgeStatus>>,
    generation: watch::Sender<u64>,
}

impl Default for EdgeRegistry {
    fn default() -> Self {
        EdgeRegistry {
            edges: Mutex::default(),
            generation: watch::Sender::new(0),
        }
    }
}

impl EdgeRegistry {
    fn update(&self, id: &str, f: impl FnOnce(&mut pb::EdgeStatus)) {
        {
            let mut edges = self.edges.lock().unwrap_or_else(|p| p.into_inner());
            let e = edges
                .entry(id.to_string())
                .or_insert_with(|| pb::EdgeStatus {
                    id: id.to_string(),
                    ..Default::default()
                });
            f(e);
        }
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Every edge this member has heard from, and the generation that list belongs to.
    pub fn snapshot(&self) -> (Vec<pb::EdgeStatus>, u64) {
        // the generation is read first: a change racing with the copy bumps it past what is
        // returned, so a waiter asking "changed since?" with it is woken, never stranded
        let generation = *self.generation.borrow();
        (self.list(), generation)
    }

    /// Every edge this member has heard from.
    pub fn list(&self) -> Vec<pb::EdgeStatus> {
        self.edges
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Waits until the generation differs from `seen` or `wait` has passed; returns the
    /// snapshot then.
    pub async fn changed_since(&self, seen: u64, wait: Duration) -> (Vec<pb::EdgeStatus>, u64) {
        let mut rx = self.generation.subscribe();
        // `wait_for` checks the current value first, so a change before the call counts
        let _ = tokio::time::timeout(wait, rx.wait_for(|g| *g != seen)).await;
        self.snapshot()
    }

    /// A receiver that sees every change of the generation.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

/// The service.
#[derive(Debug, Clone)]
pub struct SyncService {
    ctl: Controller,
    registry: Arc<EdgeRegistry>,
    heartbeat: Duration,
    shutdown: watch::Receiver<bool>,
}

impl SyncService {
    /// Serves edge subscriptions from `ctl`'s applied state.
    pub fn new(
        ctl: Controller,
        registry: Arc<EdgeRegistry>,
        heartbeat: Duration,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        Self {
            ctl,
            registry,
            heartbeat,
            shutdown,
        }
    }
}

fn sealed_key(
    key: &DataKey,
    slot: Slot<'_>,
    sealed: &palisade_policy::catalog::Sealed,
) -> Option<Vec<u8>> {
    match key.open(slot, &sealed.0) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::error!(error = %e, ?slot, "cannot open a sealed value for edges; is every controller using the same data key?");
            None
        }
    }
}

fn signing_key(
    key: &DataKey,
    k: &palisade_policy::catalog::SigningKeyRecord,
) -> Option<pb::SigningKey> {
    Some(convert::signing_key(
        k,
        sealed_key(key, Slot::SigningKey, &k.secret)?,
    ))
}

/// The whole catalog as edges see it: never TOTP seeds, never a factor that is pending or
/// revoked, and only the secrets the current policy references.
pub fn snapshot_entries(key: &DataKey, s: &Applied) -> Vec<pb::CatalogEntry> {
    use pb::catalog_entry::Entry as E;
    let c = &s.catalog;
    let mut out = Vec::with_capacity(1 + c.revocations.len() + c.devices.len() + c.factors.len());
    if let Some(p) = c.current_policy() {
        out.push(E::Policy(convert::policy_version(p, true)));
    }
    if let Some(ca) = &c.device_ca {
        out.push(E::DeviceCa(pb::DeviceCa {
            certificate_pem: ca.certificate_pem.clone(),
        }));
    }
    out.extend(
        c.revocations
            .values()
            .map(|r| E::Revocation(convert::revocation(r))),
    );
    out.extend(c.devices.values().map(|d| E::Device(convert::device(d))));
    out.extend(
        c.tunnel_sessions
            .values()
            .map(|t| E::TunnelSession(convert::tunnel_session(t))),
    );
    out.extend(
        c.factors
            .values()
            .filter(|f| f.usable())
            .map(|f| E::Factor(convert::factor(f))),
    );
    out.extend(
        c.signing_keys
            .values()
            .filter_map(|k| signing_key(key, k))
            .map(E::SigningKey),
    );
    let referenced = c.edge_secrets();
    out.extend(
        c.secrets
            .iter()
            .filter(|(name, _)| referenced.contains(*name))
            .filter_map(|(name, v)| {
                Some(E::Secret(pb::Secret {
                    name: name.clone(),
                    value: sealed_key(key, Slot::Secret(name), v)?,
                    updated_at: None,
                }))
            }),
    );
    out.extend(
        c.counters
            .values()
            .map(|(u, k)| E::Counters(convert::counters(u, k))),
    );
    out.into_iter()
        .map(|e| pb::CatalogEntry { entry: Some(e) })
        .collect()
}

/// One applied entry as a wire delta.
pub fn delta(key: &DataKey, d: &DeltaEntry) -> pb::CatalogDelta {
    use pb::catalog_change::Change as C;
    let changes = d
        .items
        .iter()
        .filter_map(|item| {
            Some(match item {
                Resolved::Policy(p) => C::PolicyApplied(convert::policy_version(p, true)),
                Resolved::RevocationAdded(r) => C::RevocationAdded(convert::revocation(r)),
                Resolved::RevocationRemoved(id) => C::RevocationExpired(id.clone()),
                Resolved::Device(dev) => C::DeviceUpserted(convert::device(dev)),
                Resolved::TunnelSession(t) => C::TunnelSessionUpserted(convert::tunnel_session(t)),
                Resolved::TunnelSessionRemoved(id) => C::TunnelSessionRemoved(id.clone()),
                Resolved::Factor(f) if f.usable() => C::FactorUpserted(convert::factor(f)),
                // Pending, or revoked: edges must not hold it (one they never had is ignored).
                Resolved::Factor(f) => C::FactorRemoved(f.id.clone()),
                Resolved::FactorRemoved(id) => C::FactorRemoved(id.clone()),
                Resolved::Counters(u, k) => C::CountersUpdated(convert::counters(u, k)),
                Resolved::SigningKey(k) => C::SigningKeyUpserted(signing_key(key, k)?),
                Resolved::SigningKeyRemoved(kid) => C::SigningKeyRemoved(kid.clone()),
                Resolved::Secret(name, v) => C::SecretUpserted(pb::Secret {
                    name: name.clone(),
                    value: sealed_key(key, Slot::Secret(name), v)?,
                    updated_at: None,
                }),
                Resolved::SecretWithdrawn(name) => C::SecretRemoved(name.clone()),
                Resolved::DeviceCa(pem) => C::DeviceCaSet(pb::DeviceCa {
                    certificate_pem: pem.clone(),
                }),
            })
        })
        .map(|c| pb::CatalogChange { change: Some(c) })
        .collect();
    pb::CatalogDelta {
        revision: d.revision,
        prev_revision: d.prev_revision,
        committed_at: (d.at_ms > 0).then(|| ts(d.at_ms)),
        changes,
    }
}

fn event(e: pb::sync_event::Event) -> Result<pb::SyncEvent, Status> {
    Ok(pb::SyncEvent { event: Some(e) })
}

/// Sent (or failed to send): the subscription ends when the edge has gone.
type Tx = mpsc::Sender<Result<pb::SyncEvent, Status>>;

struct Subscription {
    ctl: Controller,
    tx: Tx,
    edge: String,
}

impl Subscription {
    async fn send(&self, e: pb::sync_event::Event) -> Result<(), ()> {
        self.tx.send(event(e)).await.map_err(|_| ())
    }

    /// Sends a snapshot of the current state; returns its revision.
    async fn snapshot(&self, reason: &str) -> Result<u64, ()> {
        let (revision, at_ms, entries) = self.ctl.state.read(|s| {
            (
                s.revision(),
                s.last_applied_at_ms,
                snapshot_entries(&self.ctl.key, s),
            )
        });
        tracing::debug!(edge = %self.edge, revision, reason, entries = entries.len(), "sending snapshot");
        metrics::counter!("palisade_sync_snapshots_total", "reason" => reason.to_string())
            .increment(1);
        let count = entries.len() as u64;
        self.send(pb::sync_event::Event::SnapshotBegin(pb::SnapshotBegin {
            revision,
            reason: reason.into(),
            entry_count: count,
        }))
        .await?;
        let mut entries = entries.into_iter().peekable();
        while entries.peek().is_some() {
            let chunk: Vec<pb::CatalogEntry> = entries.by_ref().take(CHUNK).collect();
            self.send(pb::sync_event::Event::SnapshotChunk(pb::SnapshotChunk {
                entries: chunk,
            }))
            .await?;
        }
        self.send(pb::sync_event::Event::SnapshotEnd(pb::SnapshotEnd {
            revision,
            entry_count: count,
            committed_at: (at_ms > 0).then(|| ts(at_ms)),
        }))
        .await?;
        Ok(revision)
    }

    fn heartbeat(&self) -> pb::Heartbeat {
        let raft = self.ctl.raft_status();
        pb::Heartbeat {
            commit_revision: raft.commit_index,
            applied_revision: self.ctl.state.read(|s| s.revision()),
            server_time: Some(ts(now_ms())),
            served_by: self.ctl.id,
            leader_id: raft.leader.unwrap_or(0),
        }
    }

    /// Brings the edge from `last` to the current state: nothing, the recent entries it missed,
    /// or a snapshot. Returns the revision the edge is at afterwards.
    async fn catch_up(&self, last: u64) -> Result<u64, ()> {
        let plan = self.ctl.state.read_with_recent(|s, recent| {
            let current = s.revision();
            if last >= current && last > 0 {
                // The edge is level with (or ahead of) this member; deltas after `last` follow.
                return Ok(last);
            }
            let covered = last > 0
                && recent.front().is_some_and(|f| f.prev_revision <= last)
                && recent.back().is_some_and(|b| b.revision == current);
            if covered {
                Err(Some(
                    recent
                        .iter()
                        .filter(|d| d.revision > last)
                        .cloned()
                        .collect::<Vec<_>>(),
                ))
            } else {
                Err(None)
            }
        });
        match plan {
            Ok(at) => Ok(at),
            Err(Some(missed)) => {
                let mut at = last;
                for d in missed {
                    self.send(pb::sync_event::Event::Delta(delta(&self.ctl.key, &d)))
                        .await?;
                    at = d.revision;
                }
                Ok(at)
            }
            Err(None) => {
                self.snapshot(if last == 0 { "new" } else { "compacted" })
                    .await
            }
        }
    }

    async fn run(self, last: u64, heartbeat: Duration, mut shutdown: watch::Receiver<bool>) {
        let mut events = self.ctl.state.subscribe();
        let Ok(mut sent) = self.catch_up(last).await else {
            return;
        };
        let mut tick = tokio::time::interval(heartbeat);
        let mut leaderless_since: Option<Instant> = None;
        loop {
            tokio::select! {
                ev = events.recv() => {
                    let r = match ev {
                        Ok(AppliedEvent::Entry(d)) if d.revision <= sent => Ok(sent),
                        Ok(AppliedEvent::Entry(d)) if d.prev_revision == sent => {
                            self.send(pb::sync_event::Event::Delta(delta(&self.ctl.key, &d))).await.map(|_| d.revision)
                        }
                        Ok(AppliedEvent::Entry(_)) => self.snapshot("gap").await,
                        Ok(AppliedEvent::Snapshot { .. }) => self.snapshot("compacted").await,
                        Err(broadcast::error::RecvError::Lagged(n)) => {
                            tracing::info!(edge = %self.edge, missed = n, "slow edge: sending a fresh snapshot");
                            self.snapshot("slow_subscriber").await
                        }
                        Err(broadcast::error::RecvError::Closed) => return,
                    };
                    match r {
                        Ok(at) => sent = at,
                        Err(()) => return,
                    }
                }
                _ = tick.tick() => {
                    let hb = self.heartbeat();
                    let cut_off = self.ctl.leader_out_of_contact();
                    if hb.leader_id == 0 || cut_off {
                        // No heartbeat then: the edge's view must not look current. Soon
                        // after, the stream ends and the edge moves on.
                        let since = *leaderless_since.get_or_insert_with(Instant::now);
                        let limit = if cut_off { CUT_OFF_LIMIT } else { LEADERLESS_LIMIT };
                        if since.elapsed() > limit {
                            let _ = self.tx.send(Err(Status::unavailable("this controller is out of contact with the cluster; subscribe to another member"))).await;
                            return;
                        }
                        continue;
                    }
                    leaderless_since = None;
                    if self.send(pb::sync_event::Event::Heartbeat(hb)).await.is_err() {
                        return;
                    }
                }
                _ = self.tx.closed() => return,
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[tonic::async_trait]
impl EdgeSync for SyncService {
    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::SyncEvent, Status>> + Send>>;

    async fn subscribe(
        &self,
        req: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let edge = require_edge(&req)?;
        let r = req.into_inner();
        if !r.edge_id.is_empty() && r.edge_id != edge {
            return Err(Status::permission_denied(format!(
                "this certificate belongs to edge {edge:?}, not {:?}",
                r.edge_id
            )));
        }
        if self.ctl.raft_status().leader.is_none() || self.ctl.leader_out_of_contact() {
            return Err(Status::unavailable(
                "this controller has no leader or is cut off from the cluster; subscribe to another member",
            ));
        }
        let (tx, rx) = mpsc::channel(256);
        let node = self.ctl.id;
        self.registry.update(&edge, |e| {
            e.labels = r.labels.clone();
            e.connected_to = node;
            e.last_seen = Some(ts(now_ms()));
        });
        metrics::counter!("palisade_sync_subscriptions_total").increment(1);
        tracing::info!(edge = %edge, last = r.last_applied_revision, "edge subscribed");
        let sub = Subscription {
            ctl: self.ctl.clone(),
            tx,
            edge,
        };
        tokio::spawn(sub.run(
            r.last_applied_revision,
            self.heartbeat,
            self.shutdown.clone(),
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn report(
        &self,
        req: Request<Streaming<pb::EdgeReport>>,
    ) -> Result<Response<pb::ReportSummary>, Status> {
        let edge = require_edge(&req)?;
        let mut stream = req.into_inner();
        let mut received = 0u64;
        while let Some(report) = stream.next().await {
            let report = report?;
            if !report.edge_id.is_empty() && report.edge_id != edge {
                return Err(Status::permission_denied(
                    "an edge may only report for itself",
                ));
            }
            received += 1;
            let node = self.ctl.id;
            let commit = self.ctl.raft_status().commit_index;
            self.registry.update(&edge, |e| {
                if !report.labels.is_empty() {
                    e.labels = report.labels.clone();
                }
                e.applied_revision = report.applied_revision;
                e.lag = commit.saturating_sub(report.applied_revision);
                e.last_seen = Some(ts(now_ms()));
                e.connected_to = node;
                e.ready = report.health == pb::EdgeHealth::Serving as i32
                    || report.health == pb::EdgeHealth::Stale as i32;
                e.staleness = report.staleness;
            });
        }
        Ok(Response::new(pb::ReportSummary { received }))
    }
}
