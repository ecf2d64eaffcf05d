//! The cluster's view of its edges. Each member knows only the edges subscribed to it (its
//! `EdgeRegistry`); a cluster-wide answer asks every other member over `ListLocalEdges` and
//! keeps, per edge, the most recent report.
//!
//! Waiting for edges (`WaitForRevision`) is driven by the registries, not by polling: this
//! member's registry wakes the waiter directly, and every other member is asked with a long
//! poll that it answers as soon as its registry changes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use palisade_proto::v1 as pb;
use palisade_proto::v1::raft_transport_client::RaftTransportClient;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::controller::Controller;
use crate::raft::Member;
use crate::raft::service::MAX_EDGE_WAIT;

/// How long a member has to give its first answer before it is skipped.
const FIRST_ANSWER: Duration = Duration::from_secs(1);
/// Pause before asking a member again after it failed to answer.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

impl Controller {
    /// Every edge known to the cluster: this member's subscribers and every other member's,
    /// merged by the most recent report. Members that do not answer within a second are
    /// skipped.
    pub async fn cluster_edges(&self) -> Vec<pb::EdgeStatus> {
        self.wait_for_edges(|_| true, Duration::ZERO).await.0
    }

    /// Waits until `done` holds for the cluster's edges, or until `timeout`; returns the edges
    /// as last seen and whether `done` held. Every member is heard from once first (or
    /// skipped after a second), then each change of any member's registry re-checks `done`.
    pub async fn wait_for_edges(
        &self,
        done: impl Fn(&[pb::EdgeStatus]) -> bool,
        timeout: Duration,
    ) -> (Vec<pb::EdgeStatus>, bool) {
        let started = Instant::now();
        let deadline = started + timeout;
        let first_round_by = deadline.max(started + FIRST_ANSWER);
        let mut local = self.edges.subscribe();
        let peers: Vec<(u64, Member)> = self
            .raft_status()
            .members
            .into_iter()
            .filter(|m| m.id != self.id)
            .map(|m| (m.id, m.member))
            .collect();
        let mut unheard: HashSet<u64> = peers.iter().map(|(id, _)| *id).collect();
        let mut heard: HashMap<u64, Vec<pb::EdgeStatus>> = HashMap::new();
        let (tx, mut rx) = mpsc::channel(peers.len().max(1));
        // dropping the set when this returns cancels the long polls still open
        let mut polls = JoinSet::new();
        for (id, member) in peers {
            polls.spawn(self.clone().follow_member(id, member, deadline, tx.clone()));
        }
        drop(tx);
        loop {
            if unheard.is_empty() {
                let edges = self.merged(self.edges.list(), &heard);
                let ok = done(&edges);
                if ok || Instant::now() >= deadline {
                    return (edges, ok);
                }
            }
            let wake_at = if unheard.is_empty() {
                deadline
            } else {
                first_round_by
            };
            tokio::select! {
                Some((id, edges)) = rx.recv() => {
                    unheard.remove(&id);
                    heard.insert(id, edges);
                }
                Ok(()) = local.changed() => {}
                _ = tokio::time::sleep_until(wake_at) => unheard.clear(),
            }
        }
    }

    /// Sends member `id`'s edges to `tx` now, then again every time its registry changes,
    /// until `deadline`. A member that cannot be reached counts as having no edges.
    async fn follow_member(
        self,
        id: u64,
        member: Member,
        deadline: Instant,
        tx: mpsc::Sender<(u64, Vec<pb::EdgeStatus>)>,
    ) {
        let mut seen: Option<u64> = None;
        loop {
            let wait = match seen {
                None => Duration::ZERO,
                Some(_) => deadline
                    .saturating_duration_since(Instant::now())
                    .min(MAX_EDGE_WAIT),
            };
            if seen.is_some() && wait.is_zero() {
                return;
            }
            let answer = self
                .member_edges(id, &member, seen.unwrap_or(0), wait)
                .await;
            let edges = match answer {
                Some((edges, generation)) => {
                    seen = Some(generation);
                    edges
                }
                None => {
                    seen = None;
                    Vec::new()
                }
            };
            let failed = seen.is_none();
            if tx.send((id, edges)).await.is_err() {
                return;
            }
            if failed {
                if Instant::now() + RETRY_PAUSE >= deadline {
                    return;
                }
                tokio::time::sleep(RETRY_PAUSE).await;
            }
        }
    }

    /// One `ListLocalEdges` call: member `id`'s edges once its registry has moved past
    /// `generation` (or `wait` ran out). `None` when it did not answer.
    async fn member_edges(
        &self,
        id: u64,
        member: &Member,
        generation: u64,
        wait: Duration,
    ) -> Option<(Vec<pb::EdgeStatus>, u64)> {
        let opts = palisade_link::LinkOptions {
            connect_timeout: FIRST_ANSWER,
            call_timeout: None,
            ..palisade_link::LinkOptions::default()
        };
        let key = format!("edges:{id}@{}", member.raft_addr);
        let ch = self.cached_channel(key.clone(), id, &member.raft_addr, &opts)?;
        let req = pb::ListLocalEdgesRequest {
            generation,
            wait: (!wait.is_zero()).then(|| prost_types::Duration {
                seconds: wait.as_secs() as i64,
                nanos: wait.subsec_nanos() as i32,
            }),
        };
        let mut client = RaftTransportClient::new(ch);
        match tokio::time::timeout(wait + FIRST_ANSWER, client.list_local_edges(req)).await {
            Ok(Ok(r)) => {
                let r = r.into_inner();
                Some((r.edges, r.generation))
            }
            _ => {
                // reconnect next time (the member may have restarted elsewhere)
                if let Ok(mut c) = self.peer_channels.lock() {
                    c.remove(&key);
                }
                None
            }
        }
    }

    /// This member's edges and the others', keeping per edge the most recent report, with
    /// each edge's lag against this member's commit revision.
    fn merged(
        &self,
        local: Vec<pb::EdgeStatus>,
        others: &HashMap<u64, Vec<pb::EdgeStatus>>,
    ) -> Vec<pb::EdgeStatus> {
        let mut all: HashMap<String, pb::EdgeStatus> =
            local.into_iter().map(|e| (e.id.clone(), e)).collect();
        for e in others.values().flatten() {
            let newer = all.get(&e.id).is_none_or(|cur| {
                e.last_seen.as_ref().map(|t| (t.seconds, t.nanos))
                    > cur.last_seen.as_ref().map(|t| (t.seconds, t.nanos))
            });
            if newer {
                all.insert(e.id.clone(), e.clone());
            }
        }
        let commit = self.raft_status().commit_index;
        let mut out: Vec<pb::EdgeStatus> = all
            .into_values()
            .map(|mut e| {
                e.lag = commit.saturating_sub(e.applied_revision);
                e
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}
