//! The Raft network: openraft's RPCs over tonic gRPC with mutual TLS, to each member's
//! `RaftTransport` service.

use std::io::Cursor;

use futures::Future;
use openraft::RaftNetworkFactory;
use openraft::alias::{SnapshotOf, VoteOf};
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::RPCOption;
use openraft::network::v2::RaftNetworkV2;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use palisade_link::{Expect, LinkOptions, LinkTls};
use palisade_proto::v1 as pb;
use palisade_proto::v1::raft_transport_client::RaftTransportClient;
use tonic::transport::Channel;

use super::wire;
use super::{Member, TypeConfig};

type C = TypeConfig;

/// Snapshot chunk size on the wire.
const SNAPSHOT_CHUNK: usize = 1024 * 1024;

/// Creates connections to other members.
#[derive(Debug, Clone)]
pub struct Network {
    tls: LinkTls,
}

impl Network {
    /// A network whose connections present this controller's certificate and accept only the
    /// member they dial.
    pub fn new(tls: LinkTls) -> Self {
        Self { tls }
    }
}

/// Raft links: openraft sets a deadline on each RPC itself (snapshot chunks may take long), so
/// the link adds none; keepalive pings notice a frozen member within about two seconds.
fn raft_link() -> LinkOptions {
    LinkOptions {
        call_timeout: None,
        ..LinkOptions::default()
    }
}

/// A connection to one member (lazily connected, reconnecting).
#[derive(Debug, Clone)]
pub struct Connection {
    target: u64,
    client: Option<RaftTransportClient<Channel>>,
    error: Option<String>,
}

impl RaftNetworkFactory<C> for Network {
    type Network = Connection;

    async fn new_client(&mut self, target: u64, node: &Member) -> Self::Network {
        let built =
            self.tls
                .connect_lazy(&node.raft_addr, Expect::Controller(target), &raft_link());
        match built {
            Ok(ch) => Connection {
                target,
                client: Some(
                    RaftTransportClient::new(ch).max_decoding_message_size(64 * 1024 * 1024),
                ),
                error: None,
            },
            Err(e) => Connection {
                target,
                client: None,
                error: Some(format!("bad address {:?}: {e}", node.raft_addr)),
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

fn unreachable<E: std::error::Error + 'static>(e: &E) -> RPCError<C> {
    RPCError::Unreachable(Unreachable::new(e))
}

fn status_err(s: tonic::Status) -> RPCError<C> {
    match s.code() {
        tonic::Code::Unavailable
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Cancelled
        | tonic::Code::Unknown => unreachable(&s),
        _ => RPCError::Network(NetworkError::new(&s)),
    }
}

impl Connection {
    fn client(&self) -> Result<RaftTransportClient<Channel>, RPCError<C>> {
        self.client.clone().ok_or_else(|| {
            unreachable(&Msg(self
                .error
                .clone()
                .unwrap_or_else(|| format!("no route to {}", self.target))))
        })
    }
}

impl RaftNetworkV2<C> for Connection {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<C>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<C>, RPCError<C>> {
        let req = wire::append_to_pb(&rpc).map_err(|s| RPCError::Network(NetworkError::new(&s)))?;
        let mut req = tonic::Request::new(req);
        req.set_timeout(option.hard_ttl());
        let resp = self
            .client()?
            .append_entries(req)
            .await
            .map_err(status_err)?;
        wire::append_resp_from_pb(resp.into_inner())
            .map_err(|s| RPCError::Network(NetworkError::new(&s)))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<C>,
        option: RPCOption,
    ) -> Result<VoteResponse<C>, RPCError<C>> {
        let mut req = tonic::Request::new(wire::vote_req_to_pb(&rpc));
        req.set_timeout(option.hard_ttl());
        let resp = self.client()?.vote(req).await.map_err(status_err)?;
        wire::vote_resp_from_pb(resp.into_inner())
            .map_err(|s| RPCError::Network(NetworkError::new(&s)))
    }

    async fn full_snapshot(
        &mut self,
        vote: VoteOf<C>,
        snapshot: SnapshotOf<C, Self::SnapshotData>,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<C>, StreamingError<C>> {
        let data = snapshot.snapshot.into_inner();
        let (membership_log_id, membership) =
            wire::stored_membership_to_pb(&snapshot.meta.last_membership);
        let meta = pb::SnapshotMeta {
            last_log_id: wire::log_id_opt_to_pb(&snapshot.meta.last_log_id),
            last_membership: Some(membership),
            last_membership_log_id: membership_log_id,
            snapshot_id: snapshot
                .meta
                .last_log_id
                .map(|l| format!("{}-{}", l.leader_id.term, l.index))
                .unwrap_or_default(),
        };
        let mut chunks: Vec<pb::SnapshotChunkRequest> = Vec::new();
        let mut first = true;
        let mut parts = data.chunks(SNAPSHOT_CHUNK).peekable();
        if parts.peek().is_none() {
            chunks.push(pb::SnapshotChunkRequest {
                vote: Some(wire::vote_to_pb(&vote)),
                meta: Some(meta.clone()),
                data: Vec::new(),
            });
        }
        for part in parts {
            chunks.push(pb::SnapshotChunkRequest {
                vote: first.then(|| wire::vote_to_pb(&vote)),
                meta: first.then(|| meta.clone()),
                data: part.to_vec(),
            });
            first = false;
        }
        let mut client = self.client().map_err(|_| {
            StreamingError::Unreachable(Unreachable::new(&Msg(format!(
                "no route to {}",
                self.target
            ))))
        })?;
        let send = client.install_snapshot(tokio_stream::iter(chunks));
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            resp = send => {
                let resp = resp.map_err(|s| StreamingError::Unreachable(Unreachable::new(&s)))?.into_inner();
                let vote = wire::vote_from_pb(resp.vote).map_err(|s| StreamingError::Unreachable(Unreachable::new(&s)))?;
                Ok(SnapshotResponse { vote })
            }
        }
    }
}
