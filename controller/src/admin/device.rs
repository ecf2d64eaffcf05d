//! `DeviceService`: managed devices, their enrollment tokens and lifecycle.

use std::time::Duration;

use palisade_policy::catalog::{self as cat, Command, Outcome};
use palisade_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::authz::caller;
use crate::controller::{IdempotencyKey, now_ms, ts};
use crate::convert;

use super::{Admin, duration, paginate, random_token, required, sha256_hex};

#[tonic::async_trait]
impl pb::device_service_server::DeviceService for Admin {
    async fn enroll_device(
        &self,
        req: Request<pb::EnrollDeviceRequest>,
    ) -> Result<Response<pb::EnrollDeviceResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        required(&r.owner, "owner")?;
        let ttl = duration(r.token_ttl)?.unwrap_or(Duration::from_secs(86_400));
        let token = random_token();
        let expires = now_ms() + ttl.as_millis() as i64;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::CreateDevice {
                    owner: r.owner,
                    serial: r.serial,
                    display_name: r.display_name,
                    groups: r.groups,
                    token_sha256: sha256_hex(&token),
                    token_expires_at_ms: expires,
                },
            )
            .await?;
        let Outcome::Device(id) = &written.outcome else {
            return Err(Status::internal("unexpected outcome"));
        };
        let device = self
            .ctl
            .state
            .read(|s| s.catalog.devices.get(id).map(convert::device));
        Ok(Response::new(pb::EnrollDeviceResponse {
            device,
            enrollment_token: token,
            token_expires_at: Some(ts(expires)),
            write: Some(written.to_pb()),
        }))
    }

    async fn get_device(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::GetDeviceResponse>, Status> {
        let r = req.into_inner();
        let read = self.ctl.read_info(r.consistency).await?;
        let device = self
            .ctl
            .state
            .read(|s| s.catalog.devices.get(&r.id).map(convert::device))
            .ok_or_else(|| Status::not_found(format!("no device {:?}", r.id)))?;
        Ok(Response::new(pb::GetDeviceResponse {
            device: Some(device),
            read: Some(read),
        }))
    }

    async fn list_devices(
        &self,
        req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        let r = req.into_inner();
        let read = self.ctl.read_info(r.consistency).await?;
        let all: Vec<pb::Device> = self.ctl.state.read(|s| {
            s.catalog
                .devices
                .values()
                .filter(|d| r.owner.is_empty() || d.owner == r.owner)
                .map(convert::device)
                .filter(|d| r.state == 0 || d.state == r.state)
                .collect()
        });
        let (devices, page) = paginate(all, r.page)?;
        Ok(Response::new(pb::ListDevicesResponse {
            devices,
            page: Some(page),
            read: Some(read),
        }))
    }

    async fn list_tunnel_sessions(
        &self,
        req: Request<pb::ListTunnelSessionsRequest>,
    ) -> Result<Response<pb::ListTunnelSessionsResponse>, Status> {
        let r = req.into_inner();
        let read = self.ctl.read_info(r.consistency).await?;
        let all: Vec<pb::TunnelSession> = self.ctl.state.read(|s| {
            s.catalog
                .tunnel_sessions
                .values()
                .filter(|t| r.device_id.is_empty() || t.device_id == r.device_id)
                .map(convert::tunnel_session)
                .collect()
        });
        let (sessions, page) = paginate(all, r.page)?;
        Ok(Response::new(pb::ListTunnelSessionsResponse {
            sessions,
            page: Some(page),
            read: Some(read),
        }))
    }

    async fn mark_device_wiped(
        &self,
        req: Request<pb::DeviceActionRequest>,
    ) -> Result<Response<pb::DeviceActionResponse>, Status> {
        self.device_state(req, cat::DeviceState::Wiped).await
    }

    async fn revoke_device(
        &self,
        req: Request<pb::DeviceActionRequest>,
    ) -> Result<Response<pb::DeviceActionResponse>, Status> {
        self.device_state(req, cat::DeviceState::Revoked).await
    }

    async fn record_posture(
        &self,
        req: Request<pb::RecordPostureRequest>,
    ) -> Result<Response<pb::DeviceActionResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        let p = r
            .posture
            .ok_or_else(|| Status::invalid_argument("posture is required"))?;
        let posture = convert::posture_from_pb(p, now_ms())?;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::RecordPosture {
                    id: r.id.clone(),
                    posture,
                },
            )
            .await?;
        let device = self
            .ctl
            .state
            .read(|s| s.catalog.devices.get(&r.id).map(convert::device));
        Ok(Response::new(pb::DeviceActionResponse {
            device,
            write: Some(written.to_pb()),
        }))
    }
}

impl Admin {
    async fn device_state(
        &self,
        req: Request<pb::DeviceActionRequest>,
        state: cat::DeviceState,
    ) -> Result<Response<pb::DeviceActionResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        required(&r.id, "id")?;
        required(&r.reason, "reason")?;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::SetDeviceState {
                    id: r.id.clone(),
                    state,
                },
            )
            .await?;
        tracing::info!(actor = %who, device = %r.id, ?state, reason = %r.reason, "device state changed");
        let device = self
            .ctl
            .state
            .read(|s| s.catalog.devices.get(&r.id).map(convert::device));
        Ok(Response::new(pb::DeviceActionResponse {
            device,
            write: Some(written.to_pb()),
        }))
    }
}
