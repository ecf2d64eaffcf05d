//! The faults of a scenario, started and healed on schedule: processes killed, paused and
//! restarted, namespaces partitioned, links cut, delayed and made lossy, membership changed.
//! Some faults leave a check behind (a stale window, an edge restart), awaited by the
//! invariants once the workload is over.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::setup::Bed;
use super::{GUARDED_HOST, GUARDED_MAX_STALENESS, PROBE_HOST};
use crate::cluster::{LocalCluster, ops_status_at};
use crate::faultproxy::Faults;
use crate::scenario::{FaultKind, ScheduledFault};

/// A stale window checked: the fault's label and the edges that still served the
/// fail-closed application.
pub(super) type StaleCheck = JoinHandle<(String, Vec<usize>)>;
/// An edge restart probed from its first seconds: the edge and the requests it served
/// without a snapshot.
pub(super) type SnapshotCheck = JoinHandle<(usize, usize)>;

/// The faults in force, and the checks they left behind.
pub(super) struct Faulter {
    /// When the workload started.
    start: Instant,
    /// The controllers each fault in force acted on, by fault index.
    faulted: HashMap<usize, Vec<u64>>,
    pub(super) stale_checks: Vec<StaleCheck>,
    pub(super) snapshot_checks: Vec<SnapshotCheck>,
}

impl Faulter {
    /// No fault in force yet; the workload started at `start`.
    pub(super) fn new(start: Instant) -> Self {
        Faulter {
            start,
            faulted: HashMap::new(),
            stale_checks: Vec::new(),
            snapshot_checks: Vec::new(),
        }
    }

    /// Starts fault `i`.
    pub(super) async fn start(
        &mut self,
        bed: &mut Bed,
        i: usize,
        f: &ScheduledFault,
    ) -> anyhow::Result<()> {
        tracing::info!(fault = %f.label(), "fault starts");
        match f.kind {
            FaultKind::KillLeader => {
                let l = bed.cluster.leader().await;
                bed.cluster.kill_controller(l);
                self.faulted.insert(i, vec![l]);
            }
            FaultKind::PauseLeader => {
                let l = bed.cluster.leader().await;
                bed.cluster.pause_controller(l)?;
                self.faulted.insert(i, vec![l]);
            }
            FaultKind::KillFollower => {
                let victim = nth_follower(&bed.cluster, f.follower).await;
                bed.cluster.kill_controller(victim);
                self.faulted.insert(i, vec![victim]);
            }
            FaultKind::KillEdge => {
                bed.probe.down[f.edge].store(true, std::sync::atomic::Ordering::SeqCst);
                bed.cluster.kill_edge(f.edge);
            }
            FaultKind::PauseAllControllers => {
                let ids: Vec<u64> = bed.cluster.controllers.keys().copied().collect();
                for id in &ids {
                    bed.cluster.pause_controller(*id)?;
                }
                self.faulted.insert(i, ids);
                // once the view is older than the limit (plus the time to notice), the
                // fail-closed application must be refused at every edge
                let check_at = Instant::now() + GUARDED_MAX_STALENESS + Duration::from_millis(1500);
                if check_at < self.start + Duration::from_secs_f64(f.end_s) {
                    let probe = bed.probe.clone();
                    let edges = bed.cluster.edges.len();
                    let label = f.label();
                    self.stale_checks.push(tokio::spawn(async move {
                        tokio::time::sleep_until(check_at.into()).await;
                        let mut bad = Vec::new();
                        for e in 0..edges {
                            let s = probe.status(GUARDED_HOST, e, None).await;
                            if s == Some(200) {
                                bad.push(e);
                            }
                        }
                        (label, bad)
                    }));
                }
            }
            FaultKind::RollingRestart => {}
            FaultKind::PartitionLeader | FaultKind::OneWayPartition => {
                let l = bed.cluster.leader().await;
                let others = controller_ips(&bed.cluster, l);
                if let Some(lab) = &bed.cluster.lab {
                    lab.partition(
                        &format!("c{l}"),
                        &others,
                        f.kind == FaultKind::OneWayPartition,
                    )?;
                }
                self.faulted.insert(i, vec![l]);
            }
            FaultKind::PartitionEdge => {
                let edge_id = bed.cluster.edges[f.edge].id.clone();
                let to = bed.cluster.edge_controller(&edge_id).await.unwrap_or(0);
                if let (Some(lab), Some(c)) = (&bed.cluster.lab, bed.cluster.controllers.get(&to)) {
                    let ip = match c.ip {
                        std::net::IpAddr::V4(v4) => vec![v4],
                        std::net::IpAddr::V6(_) => Vec::new(),
                    };
                    lab.partition(&edge_id, &ip, false)?;
                }
                tracing::info!(edge = %edge_id, controller = to, "edge cut off from its controller");
            }
            FaultKind::LinkDown => {
                let l = bed.cluster.leader().await;
                if let Some(lab) = &bed.cluster.lab {
                    lab.link(&format!("c{l}"), false)?;
                }
                self.faulted.insert(i, vec![l]);
            }
            FaultKind::LinkDelay | FaultKind::LinkLoss => {
                let faults = if f.kind == FaultKind::LinkDelay {
                    Faults {
                        delay: Duration::from_millis(f.delay_ms),
                        jitter: Duration::from_millis(f.jitter_ms),
                        ..Faults::none()
                    }
                } else {
                    Faults {
                        loss: f.loss,
                        ..Faults::none()
                    }
                };
                for p in bed.cluster.proxies.values() {
                    p.set(faults);
                }
            }
            FaultKind::StallLeader => {
                let l = bed.cluster.leader().await;
                if let Some(p) = bed.cluster.proxies.get(&l) {
                    p.set(Faults {
                        stalled: true,
                        ..Faults::none()
                    });
                }
                self.faulted.insert(i, vec![l]);
            }
            FaultKind::MembershipChange => {
                let victim = nth_follower(&bed.cluster, f.follower).await;
                let current: Vec<u64> = bed.cluster.controllers.keys().copied().collect();
                let t = Instant::now();
                // Bounded like every other call here: the heals must come on time.
                let changed = tokio::time::timeout(
                    Duration::from_secs(30),
                    bed.cluster.add_controller(|new| {
                        current
                            .iter()
                            .copied()
                            .filter(|c| *c != victim)
                            .chain([new])
                            .collect()
                    }),
                )
                .await
                .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 30 s")));
                match changed {
                    Ok(new) => {
                        tracing::info!(added = new, removed = victim, took = ?t.elapsed(), "membership changed");
                        bed.cluster.retire_controller(victim);
                    }
                    Err(e) => bed
                        .probe
                        .violation(format!("membership change failed: {e:#}")),
                }
            }
        }
        Ok(())
    }

    /// Heals fault `i`.
    pub(super) async fn heal(
        &mut self,
        bed: &mut Bed,
        i: usize,
        f: &ScheduledFault,
    ) -> anyhow::Result<()> {
        tracing::info!(fault = %f.label(), "fault heals");
        match f.kind {
            FaultKind::KillLeader | FaultKind::KillFollower => {
                for id in self.faulted.remove(&i).unwrap_or_default() {
                    bed.cluster.spawn_controller(id)?;
                }
            }
            FaultKind::PauseLeader | FaultKind::PauseAllControllers => {
                for id in self.faulted.remove(&i).unwrap_or_default() {
                    bed.cluster.resume_controller(id)?;
                }
            }
            FaultKind::KillEdge => {
                bed.cluster.spawn_edge(f.edge).await?;
                bed.probe.down[f.edge].store(false, std::sync::atomic::Ordering::SeqCst);
                let e = &bed.cluster.edges[f.edge];
                let unknown = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
                let ops = e.addrs.as_ref().map(|a| a.ops).unwrap_or(unknown);
                // while it has no snapshot, it must serve nothing
                let (probe, canary, edge) = (bed.probe.clone(), bed.canary.clone(), f.edge);
                self.snapshot_checks.push(tokio::spawn(async move {
                    let until = Instant::now() + Duration::from_secs(3);
                    let mut served_unready = 0;
                    while Instant::now() < until {
                        let s = probe.status(PROBE_HOST, edge, Some(&canary)).await;
                        // readiness only ever turns true, so a 200 followed by a
                        // not-ready answer was served without a snapshot
                        if s == Some(200) && ops_status_at(ops, "/readyz").await != Some(200) {
                            served_unready += 1;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    (edge, served_unready)
                }));
            }
            FaultKind::RollingRestart | FaultKind::MembershipChange => {}
            FaultKind::PartitionLeader | FaultKind::OneWayPartition | FaultKind::PartitionEdge => {
                if let Some(lab) = &bed.cluster.lab {
                    let names: Vec<String> = lab.hosts.keys().cloned().collect();
                    for n in names {
                        lab.heal(&n)?;
                    }
                }
                self.faulted.remove(&i);
            }
            FaultKind::LinkDown => {
                for id in self.faulted.remove(&i).unwrap_or_default() {
                    if let Some(lab) = &bed.cluster.lab {
                        lab.link(&format!("c{id}"), true)?;
                    }
                }
            }
            FaultKind::LinkDelay | FaultKind::LinkLoss | FaultKind::StallLeader => {
                for p in bed.cluster.proxies.values() {
                    p.set(Faults::none());
                }
                self.faulted.remove(&i);
            }
        }
        Ok(())
    }
}

/// The `n`-th follower (modulo their number) at this moment.
async fn nth_follower(c: &LocalCluster, n: usize) -> u64 {
    let l = c.leader().await;
    let followers: Vec<u64> = c
        .controllers
        .keys()
        .copied()
        .filter(|id| *id != l)
        .collect();
    followers[n % followers.len()]
}

/// The addresses of every controller but `except` (namespaces only).
fn controller_ips(c: &LocalCluster, except: u64) -> Vec<std::net::Ipv4Addr> {
    c.controllers
        .values()
        .filter(|p| p.id != except)
        .filter_map(|p| match p.ip {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .collect()
}
