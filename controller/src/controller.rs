//! The controller core: one Raft member, its write path (followers forward to the leader) and
//! its read path (linearizable unless a local read is asked for). Both return typed errors
//! (`crate::error`); the gRPC services in `admin`, `edge_auth` and `raft::service` are thin
//! layers over this.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::ReadPolicy;
use openraft::error::{ClientWriteError, RaftError};
use palisade_policy::catalog::{Actor, Command, CommandError, Envelope, Outcome};
use palisade_proto::v1 as pb;
use palisade_proto::v1::raft_transport_client::RaftTransportClient;
use tonic::Status;

use crate::error::{ReadError, WriteError};
use crate::raft::state_machine::StateHandle;
use crate::raft::{Member, Request, Response, StateMachine, TypeConfig};
use crate::seal::DataKey;

/// The Raft handle.
pub type Raft = openraft::Raft<TypeConfig, StateMachine>;

/// Wall-clock now, unix milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// An acknowledged write.
#[derive(Debug, Clone, PartialEq)]
pub struct Written {
    /// The revision (log index).
    pub revision: u64,
    /// What the command produced.
    pub outcome: Outcome,
    /// When the leader stamped it.
    pub at_ms: i64,
}

pub use palisade_link::{IDEMPOTENCY_HEADER, IdempotencyKey};

impl Written {
    /// As the wire `WriteResult`.
    pub fn to_pb(&self) -> pb::WriteResult {
        pb::WriteResult {
            revision: self.revision,
            committed_at: Some(ts(self.at_ms)),
        }
    }
}

/// A protobuf timestamp from unix milliseconds.
pub fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// One controller.
#[derive(Debug, Clone)]
pub struct Controller {
    /// This member's id.
    pub id: u64,
    /// The Raft handle.
    pub raft: Raft,
    /// Read access to the applied state.
    pub state: StateHandle,
    /// The data key for secrets.
    pub key: Arc<DataKey>,
    /// TLS for calls to other members (each must hold the identity of the member dialled).
    pub client_tls: palisade_link::LinkTls,
    /// Largest policy document accepted.
    pub max_document_bytes: usize,
    /// The edges subscribed to this member.
    pub edges: Arc<crate::sync::EdgeRegistry>,
    /// The longest session lifetime of the current policy, by policy version (the default
    /// revocation lifetime; computing it compiles the policy, so once per version).
    pub ttl_cache: Arc<std::sync::Mutex<Option<(u64, std::time::Duration)>>>,
    /// Channels to the other members for edge-status queries, by address (reused: a TLS
    /// handshake per poll made `WaitForRevision` tens of milliseconds slower than the edges).
    pub peer_channels:
        Arc<std::sync::Mutex<std::collections::HashMap<String, tonic::transport::Channel>>>,
    /// How long a leader may go without a quorum acknowledging it before it stops vouching
    /// for its view to edges.
    pub contact_timeout: std::time::Duration,
}

pub use crate::error::unavailable_with_leader;

impl Controller {
    /// Whether this member, if it is the leader, has lost contact with the cluster: no quorum
    /// acknowledged it within `contact_timeout` (and it is not the only voter). A leader cut
    /// off from the others (a partition, even one way) keeps a view that stops advancing while
    /// the rest elect another leader and move on; edges subscribed to it must move. Followers
    /// are not judged here: one that loses its leader stops knowing a leader when it starts an
    /// election, which the edge sync already handles.
    pub fn leader_out_of_contact(&self) -> bool {
        let s = self.raft_status();
        if s.leader != Some(self.id) {
            return false;
        }
        s.voters() > 1
            && s.quorum_acked_ago
                .is_none_or(|ago| ago > self.contact_timeout)
    }

    /// This member's Raft status now (the only view of Raft the rest of the controller has).
    pub fn raft_status(&self) -> crate::raft::RaftStatus {
        crate::raft::status::status(self.id, &self.raft)
    }

    /// The leader's id and member record, if known.
    pub fn leader(&self) -> Option<(u64, Member)> {
        self.raft_status().leader_member()
    }

    /// Proposes a command as `actor` and waits until it is committed and applied. A follower
    /// forwards it to the leader, then waits (at most 5 s) until it has applied the write
    /// itself, so a read on this member right after sees it.
    pub async fn write(&self, actor: Actor, command: Command) -> Result<Written, WriteError> {
        self.write_inner(actor, None, command, true).await
    }

    /// As `write`, named by the caller's idempotency key: the catalog applies a keyed write
    /// once, and a retry (through any member) gets the first answer.
    pub async fn write_keyed(
        &self,
        actor: Actor,
        key: Option<IdempotencyKey>,
        command: Command,
    ) -> Result<Written, WriteError> {
        self.write_inner(actor, key, command, true).await
    }

    pub(crate) async fn write_inner(
        &self,
        actor: Actor,
        key: Option<IdempotencyKey>,
        command: Command,
        may_forward: bool,
    ) -> Result<Written, WriteError> {
        let at_ms = now_ms();
        let env = Envelope {
            actor: actor.clone(),
            at_ms,
            command: command.clone(),
            idempotency_key: key.as_ref().map(|k| k.as_str().to_string()),
        };
        let timer = std::time::Instant::now();
        match self.raft.client_write(Request(env)).await {
            Ok(resp) => {
                metrics::histogram!("palisade_controller_write_seconds")
                    .record(timer.elapsed().as_secs_f64());
                let revision = resp.log_id.index;
                match resp.data {
                    Response::Applied(Ok(outcome)) => Ok(Written {
                        revision,
                        outcome,
                        at_ms,
                    }),
                    Response::Applied(Err(e)) => Err(WriteError::Refused(e)),
                    Response::Empty => Ok(Written {
                        revision,
                        outcome: Outcome::Done,
                        at_ms,
                    }),
                }
            }
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                let leader = f.leader_id.zip(f.leader_node);
                match leader {
                    Some((id, node)) if may_forward && id != self.id => {
                        let written = self.forward(id, &node, actor, key, command).await?;
                        // read-your-writes on this member: what the caller reads here next
                        // includes its write
                        let mut applied = self.state.applied();
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(5),
                            applied.wait_for(|r| *r >= written.revision),
                        )
                        .await;
                        Ok(written)
                    }
                    Some((id, node)) => Err(WriteError::NotLeader {
                        leader: Some((id, node)),
                    }),
                    None => Err(WriteError::NotLeader { leader: None }),
                }
            }
            Err(RaftError::APIError(e)) => {
                tracing::warn!(error = %e, "raft refused a write");
                Err(WriteError::Unavailable(format!(
                    "this member cannot take the write now: {e}"
                )))
            }
            Err(RaftError::Fatal(e)) => {
                tracing::error!(error = %e, "raft is shut down");
                Err(WriteError::Unavailable(
                    "this member is shutting down".into(),
                ))
            }
        }
    }

    async fn forward(
        &self,
        leader_id: u64,
        leader: &Member,
        actor: Actor,
        key: Option<IdempotencyKey>,
        command: Command,
    ) -> Result<Written, WriteError> {
        // One cached channel per leader address: a TLS handshake per forwarded write would
        // add milliseconds to every write a follower takes (edges write through any member).
        let channel = self
            .forward_channel(leader_id, &leader.raft_addr)
            .ok_or_else(|| WriteError::Forward(Status::unavailable("bad leader address")))?;
        let mut client = RaftTransportClient::new(channel)
            .max_decoding_message_size(64 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let req = pb::ForwardWriteRequest {
            command: serde_json::to_vec(&command)
                .map_err(|e| WriteError::Unavailable(format!("encoding the command: {e}")))?,
            actor: Some(pb::Actor {
                subject: actor.subject,
                kind: actor_kind(&actor.kind) as i32,
                role: 0,
                origin: format!("forwarded by controller {}", self.id),
            }),
            idempotency_key: key.map(|k| k.as_str().to_string()).unwrap_or_default(),
        };
        let resp = client
            .forward_write(req)
            .await
            .map_err(WriteError::Forward)?
            .into_inner();
        let write = resp.write.unwrap_or_default();
        // The leader answers a catalog refusal as a result, so it arrives typed.
        let result: Result<Outcome, CommandError> = serde_json::from_slice(&resp.response)
            .map_err(|e| WriteError::Forward(Status::internal(e.to_string())))?;
        let outcome = result?;
        let at_ms = write
            .committed_at
            .map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
            .unwrap_or(0);
        Ok(Written {
            revision: write.revision,
            outcome,
            at_ms,
        })
    }

    /// Waits until this member can serve a linearizable read (read index confirmed by a quorum
    /// and applied locally). A follower answers `UNAVAILABLE` with the leader's address.
    pub async fn linearizable(&self) -> Result<(), ReadError> {
        match self.raft.ensure_linearizable(ReadPolicy::ReadIndex).await {
            Ok(_) => Ok(()),
            Err(e) => match e.forward_to_leader() {
                Some(f) => Err(ReadError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node.clone()),
                }),
                None => Err(ReadError::Unavailable(e.to_string())),
            },
        }
    }

    /// A (lazily connecting, cached) channel to member `id`'s Raft endpoint for forwarded
    /// writes; it accepts only that member's certificate.
    fn forward_channel(&self, id: u64, raft_addr: &str) -> Option<tonic::transport::Channel> {
        let key = format!("forward:{id}@{raft_addr}");
        let opts = palisade_link::LinkOptions::default();
        self.cached_channel(key, id, raft_addr, &opts)
    }

    pub(crate) fn cached_channel(
        &self,
        key: String,
        id: u64,
        addr: &str,
        opts: &palisade_link::LinkOptions,
    ) -> Option<tonic::transport::Channel> {
        let mut cache = self.peer_channels.lock().ok()?;
        if let Some(ch) = cache.get(&key) {
            return Some(ch.clone());
        }
        let ch = self
            .client_tls
            .connect_lazy(addr, palisade_link::Expect::Controller(id), opts)
            .ok()?;
        cache.insert(key, ch.clone());
        Some(ch)
    }

    /// Prepares a read at the requested consistency; returns how it was served.
    pub async fn read_info(&self, consistency: i32) -> Result<pb::ReadInfo, ReadError> {
        let local = consistency == pb::ReadConsistency::Local as i32;
        if !local {
            self.linearizable().await?;
        }
        Ok(pb::ReadInfo {
            revision: self.state.read(|s| s.revision()),
            local,
            served_by: self.id,
        })
    }
}

/// The wire actor kind for a catalog actor kind.
pub fn actor_kind(kind: &str) -> pb::ActorKind {
    match kind {
        "admin" => pb::ActorKind::Admin,
        "edge" => pb::ActorKind::Edge,
        "user" => pb::ActorKind::User,
        _ => pb::ActorKind::System,
    }
}

/// A catalog actor from the wire (for forwarded writes).
pub fn actor_from_pb(a: Option<pb::Actor>) -> Actor {
    let a = a.unwrap_or_default();
    let kind = match pb::ActorKind::try_from(a.kind).unwrap_or(pb::ActorKind::System) {
        pb::ActorKind::Admin => "admin",
        pb::ActorKind::Edge => "edge",
        pb::ActorKind::User => "user",
        _ => "system",
    };
    Actor {
        subject: a.subject,
        kind: kind.into(),
    }
}
