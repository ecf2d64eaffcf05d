//! The `RaftTransport` gRPC service: other controllers' Raft RPCs and forwarded writes. Only
//! controller certificates may call it.

use std::io::Cursor;
use std::pin::Pin;
use std::time::Duration;

use futures::StreamExt;
use openraft::alias::{SnapshotMetaOf, SnapshotOf};
use palisade_policy::catalog::Command;
use palisade_proto::v1 as pb;
use palisade_proto::v1::raft_transport_server::RaftTransport;
use tonic::{Request, Response, Status, Streaming};

use super::{TypeConfig, wire};
use crate::controller::{Controller, actor_from_pb};
use crate::error::WriteError;
use crate::identity::require_controller;
use palisade_policy::catalog::{CommandError, Outcome};

type C = TypeConfig;

/// Largest snapshot accepted, bytes.
const MAX_SNAPSHOT_BYTES: usize = 4 * 1024 * 1024 * 1024;

/// Longest a `ListLocalEdges` long poll is held.
pub const MAX_EDGE_WAIT: Duration = Duration::from_secs(30);

/// The service.
#[derive(Debug, Clone)]
pub struct RaftService {
    ctl: Controller,
}

impl RaftService {
    /// Serves Raft RPCs for `ctl`.
    pub fn new(ctl: Controller) -> Self {
        Self { ctl }
    }
}

fn raft_err(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("raft: {e}"))
}

#[tonic::async_trait]
impl RaftTransport for RaftService {
    async fn vote(
        &self,
        req: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        require_controller(&req)?;
        let r = wire::vote_req_from_pb(req.into_inner())?;
        let resp = self.ctl.raft.vote(r).await.map_err(raft_err)?;
        Ok(Response::new(wire::vote_resp_to_pb(&resp)))
    }

    async fn append_entries(
        &self,
        req: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        require_controller(&req)?;
        let r = wire::append_from_pb(req.into_inner())?;
        let resp = self.ctl.raft.append_entries(r).await.map_err(raft_err)?;
        Ok(Response::new(wire::append_resp_to_pb(&resp)))
    }

    async fn install_snapshot(
        &self,
        req: Request<Streaming<pb::SnapshotChunkRequest>>,
    ) -> Result<Response<pb::SnapshotResponse>, Status> {
        require_controller(&req)?;
        let mut stream: Pin<Box<Streaming<pb::SnapshotChunkRequest>>> = Box::pin(req.into_inner());
        let first = stream
            .next()
            .await
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))??;
        let vote = wire::vote_from_pb(first.vote)?;
        let meta = first
            .meta
            .ok_or_else(|| Status::invalid_argument("first snapshot chunk has no metadata"))?;
        let mut data = first.data;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            if data.len() + chunk.data.len() > MAX_SNAPSHOT_BYTES {
                return Err(Status::resource_exhausted("snapshot too large"));
            }
            data.extend_from_slice(&chunk.data);
        }
        let meta = SnapshotMetaOf::<C> {
            last_log_id: wire::log_id_from_pb(meta.last_log_id),
            last_membership: wire::stored_membership_from_pb(
                meta.last_membership_log_id,
                meta.last_membership,
            )?,
        };
        let snapshot = SnapshotOf::<C, Cursor<Vec<u8>>> {
            meta,
            snapshot: Cursor::new(data),
        };
        let resp = self
            .ctl
            .raft
            .install_full_snapshot(vote, snapshot)
            .await
            .map_err(raft_err)?;
        Ok(Response::new(pb::SnapshotResponse {
            vote: Some(wire::vote_to_pb(&resp.vote)),
        }))
    }

    async fn list_local_edges(
        &self,
        req: Request<pb::ListLocalEdgesRequest>,
    ) -> Result<Response<pb::ListLocalEdgesResponse>, Status> {
        require_controller(&req)?;
        let r = req.into_inner();
        let wait = match r.wait {
            None => Duration::ZERO,
            Some(d) => Duration::try_from(d)
                .map_err(|_| Status::invalid_argument("wait must not be negative"))?
                .min(MAX_EDGE_WAIT),
        };
        let (edges, generation) = self.ctl.edges.changed_since(r.generation, wait).await;
        Ok(Response::new(pb::ListLocalEdgesResponse {
            edges,
            generation,
        }))
    }

    async fn forward_write(
        &self,
        req: Request<pb::ForwardWriteRequest>,
    ) -> Result<Response<pb::ForwardWriteResponse>, Status> {
        require_controller(&req)?;
        let req = req.into_inner();
        let command: Command = serde_json::from_slice(&req.command).map_err(|e| {
            Status::invalid_argument(format!("forwarded command does not decode: {e}"))
        })?;
        // One hop only: if this member lost leadership meanwhile, the caller retries. A
        // catalog refusal is an answer, sent as a result so the caller keeps its type.
        let key = match req.idempotency_key.as_str() {
            "" => None,
            k => Some(
                crate::controller::IdempotencyKey::parse(k).map_err(Status::invalid_argument)?,
            ),
        };
        let (write, result) = match self
            .ctl
            .write_inner(actor_from_pb(req.actor), key, command, false)
            .await
        {
            Ok(w) => (Some(w.to_pb()), Ok(w.outcome)),
            Err(WriteError::Refused(e)) => (None, Err(e)),
            Err(e) => return Err(e.into()),
        };
        let result: Result<Outcome, CommandError> = result;
        Ok(Response::new(pb::ForwardWriteResponse {
            write,
            response: serde_json::to_vec(&result).map_err(|e| Status::internal(e.to_string()))?,
        }))
    }
}
