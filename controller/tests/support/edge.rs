//! A simulated edge for sync tests: subscribes to a controller with an edge certificate, keeps
//! a replica of revoked session ids, checks every delta's continuity, reports what it applied,
//! and fails over to the next controller when its stream ends.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use palisade_proto::v1 as pb;
use tokio::task::JoinHandle;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// What the simulated edge saw.
#[derive(Debug, Default, Clone)]
pub struct EdgeState {
    /// Applied revision.
    pub revision: u64,
    /// Revoked session ids in the replica.
    pub sessions: BTreeSet<String>,
    /// Snapshots received, with their reason.
    pub snapshots: Vec<String>,
    /// Deltas applied.
    pub deltas: u64,
    /// Continuity violations (gap, duplicate, regression) observed. Must stay empty.
    pub violations: Vec<String>,
    /// Subscriptions made (1 + reconnects).
    pub subscriptions: u64,
    /// Heartbeats received.
    pub heartbeats: u64,
}

/// A running simulated edge.
#[derive(Debug)]
pub struct SimEdge {
    pub state: Arc<Mutex<EdgeState>>,
    pub paused: Arc<std::sync::atomic::AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for SimEdge {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SimEdge {
    pub fn snapshot(&self) -> EdgeState {
        self.state.lock().expect("state").clone()
    }

    /// Starts an edge named `id` (needs `edge-<id>` files in `pki`) that tries `servers` in
    /// order, starting at `first`.
    pub fn start(
        pki: &std::path::Path,
        id: &str,
        servers: Vec<String>,
        first: usize,
        labels: &[(&str, &str)],
    ) -> SimEdge {
        let read = |f: String| std::fs::read_to_string(pki.join(f)).expect("pki file");
        let tls = ClientTlsConfig::new()
            .identity(Identity::from_pem(
                read(format!("edge-{id}.pem")),
                read(format!("edge-{id}.key")),
            ))
            .ca_certificate(Certificate::from_pem(read("ca.pem".into())))
            .domain_name("localhost");
        let state = Arc::new(Mutex::new(EdgeState::default()));
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let labels: std::collections::HashMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let task = tokio::spawn(run(
            id.to_string(),
            servers,
            first,
            tls,
            labels,
            state.clone(),
            paused.clone(),
        ));
        SimEdge {
            state,
            paused,
            task,
        }
    }
}

async fn run(
    id: String,
    servers: Vec<String>,
    mut next: usize,
    tls: ClientTlsConfig,
    labels: std::collections::HashMap<String, String>,
    state: Arc<Mutex<EdgeState>>,
    paused: Arc<std::sync::atomic::AtomicBool>,
) {
    loop {
        let addr = servers[next % servers.len()].clone();
        next += 1;
        let Ok(ep) = Endpoint::from_shared(format!("https://{addr}")) else {
            continue;
        };
        let Ok(ep) = ep.tls_config(tls.clone()) else {
            continue;
        };
        // Small flow-control windows, so a paused edge backs up to the controller quickly.
        let ep = ep
            .initial_stream_window_size(65_535)
            .initial_connection_window_size(65_535);
        let Ok(ch) = ep.connect_timeout(Duration::from_secs(1)).connect().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let last = state.lock().expect("state").revision;
        let mut client = pb::edge_sync_client::EdgeSyncClient::new(ch.clone())
            .max_decoding_message_size(256 << 20);
        let (report_tx, report_rx) = tokio::sync::mpsc::channel::<pb::EdgeReport>(64);
        let mut reporter = pb::edge_sync_client::EdgeSyncClient::new(ch);
        let report_task = tokio::spawn(async move {
            reporter
                .report(tokio_stream::wrappers::ReceiverStream::new(report_rx))
                .await
        });
        let stream = client
            .subscribe(pb::SubscribeRequest {
                edge_id: id.clone(),
                labels: labels.clone(),
                last_applied_revision: last,
                software_version: "test".into(),
            })
            .await;
        let Ok(stream) = stream else {
            report_task.abort();
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        state.lock().expect("state").subscriptions += 1;
        let mut stream = stream.into_inner();
        let mut building: Option<(u64, BTreeSet<String>)> = None;
        loop {
            while paused.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let msg = match tokio::time::timeout(Duration::from_secs(3), stream.message()).await {
                Ok(Ok(Some(m))) => m,
                _ => break,
            };
            let applied = {
                let mut guard = state.lock().expect("state");
                let s = &mut *guard;
                match msg.event {
                    Some(pb::sync_event::Event::SnapshotBegin(b)) => {
                        s.snapshots.push(b.reason.clone());
                        building = Some((b.revision, BTreeSet::new()));
                        None
                    }
                    Some(pb::sync_event::Event::SnapshotChunk(c)) => {
                        if let Some((_, set)) = building.as_mut() {
                            for e in c.entries {
                                if let Some(pb::catalog_entry::Entry::Revocation(r)) = e.entry
                                    && let Some(pb::revocation_target::Target::SessionId(sid)) =
                                        r.target.and_then(|t| t.target)
                                {
                                    set.insert(sid);
                                }
                            }
                        }
                        None
                    }
                    Some(pb::sync_event::Event::SnapshotEnd(e)) => {
                        let Some((rev, set)) = building.take() else {
                            continue;
                        };
                        if e.revision != rev {
                            s.violations.push(format!(
                                "snapshot end {} does not match begin {rev}",
                                e.revision
                            ));
                        }
                        if rev < s.revision {
                            let at = s.revision;
                            s.violations
                                .push(format!("snapshot at {rev} would regress from {at}"));
                        } else {
                            s.revision = rev;
                            s.sessions = set;
                        }
                        Some(s.revision)
                    }
                    Some(pb::sync_event::Event::Delta(d)) => {
                        if d.prev_revision != s.revision {
                            let at = s.revision;
                            s.violations.push(format!(
                                "delta {} follows {} but the edge is at {at}",
                                d.revision, d.prev_revision
                            ));
                            None
                        } else {
                            for c in d.changes {
                                match c.change {
                                    Some(pb::catalog_change::Change::RevocationAdded(r)) => {
                                        if let Some(pb::revocation_target::Target::SessionId(sid)) =
                                            r.target.and_then(|t| t.target)
                                        {
                                            s.sessions.insert(sid);
                                        }
                                    }
                                    Some(pb::catalog_change::Change::RevocationExpired(_)) => {}
                                    _ => {}
                                }
                            }
                            s.revision = d.revision;
                            s.deltas += 1;
                            Some(s.revision)
                        }
                    }
                    Some(pb::sync_event::Event::Heartbeat(_)) => {
                        s.heartbeats += 1;
                        Some(s.revision)
                    }
                    None => None,
                }
            };
            if let Some(rev) = applied {
                let _ = report_tx.try_send(pb::EdgeReport {
                    edge_id: id.clone(),
                    labels: labels.clone(),
                    applied_revision: rev,
                    health: pb::EdgeHealth::Serving as i32,
                    staleness: None,
                    applied_at: None,
                });
            }
        }
        drop(report_tx);
        report_task.abort();
    }
}
