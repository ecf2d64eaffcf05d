//! `KeyService`: session signing keys and sealed secrets.

use std::time::Duration;

use palisade_policy::catalog::{self as cat, Command, Outcome};
use palisade_proto::v1 as pb;
use rand::RngCore;
use tonic::{Request, Response, Status};

use crate::authz::caller;
use crate::controller::IdempotencyKey;
use crate::convert;

use super::{Admin, duration};

const MAX_SECRET_BYTES: usize = 64 * 1024;

#[tonic::async_trait]
impl pb::key_service_server::KeyService for Admin {
    async fn rotate_signing_key(
        &self,
        req: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::RotateSigningKeyResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        // Without an overlap, the previous key verifies as long as any session it signed lives;
        // an explicit zero retires it now (ending every session it signed).
        let explicit_zero = r.overlap.is_some_and(|d| d.seconds == 0 && d.nanos == 0);
        let overlap = match duration(r.overlap)? {
            Some(d) => d,
            None if explicit_zero => Duration::ZERO,
            None => Duration::from_millis(
                self.ctl
                    .state
                    .read(|s| s.catalog.session_coverage_ms())
                    .max(0) as u64,
            ),
        };
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut secret);
        let sealed = self
            .ctl
            .key
            .seal(crate::seal::Slot::SigningKey, &secret)
            .map_err(|e| Status::internal(e.to_string()))?;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::RotateSigningKey {
                    secret: cat::Sealed(sealed),
                    overlap_ms: overlap.as_millis() as i64,
                },
            )
            .await?;
        let Outcome::Key(kid) = written.outcome.clone() else {
            return Err(Status::internal("unexpected outcome"));
        };
        Ok(Response::new(pb::RotateSigningKeyResponse {
            kid,
            write: Some(written.to_pb()),
        }))
    }

    async fn list_signing_keys(
        &self,
        _req: Request<pb::ListSigningKeysRequest>,
    ) -> Result<Response<pb::ListSigningKeysResponse>, Status> {
        self.ctl.linearizable().await?;
        let keys = self.ctl.state.read(|s| {
            s.catalog
                .signing_keys
                .values()
                .map(|k| convert::signing_key(k, Vec::new()))
                .collect()
        });
        Ok(Response::new(pb::ListSigningKeysResponse { keys }))
    }

    async fn put_secret(
        &self,
        req: Request<pb::PutSecretRequest>,
    ) -> Result<Response<pb::PutSecretResponse>, Status> {
        let who = caller(&req)?;
        let key = IdempotencyKey::from_request(&req)?;
        let r = req.into_inner();
        if r.value.is_empty() || r.value.len() > MAX_SECRET_BYTES {
            return Err(Status::invalid_argument(format!(
                "a secret value must be 1 to {MAX_SECRET_BYTES} bytes"
            )));
        }
        let sealed = self
            .ctl
            .key
            .seal(crate::seal::Slot::Secret(&r.name), &r.value)
            .map_err(|e| Status::internal(e.to_string()))?;
        let written = self
            .ctl
            .write_keyed(
                crate::identity::actor(&who),
                key,
                Command::PutSecret {
                    name: r.name.clone(),
                    value: cat::Sealed(sealed),
                },
            )
            .await?;
        tracing::info!(actor = %who, name = %r.name, "secret set");
        Ok(Response::new(pb::PutSecretResponse {
            write: Some(written.to_pb()),
        }))
    }

    async fn list_secrets(
        &self,
        _req: Request<pb::ListSecretsRequest>,
    ) -> Result<Response<pb::ListSecretsResponse>, Status> {
        self.ctl.linearizable().await?;
        let secrets = self.ctl.state.read(|s| {
            s.catalog
                .secrets
                .keys()
                .map(|name| pb::Secret {
                    name: name.clone(),
                    value: Vec::new(),
                    updated_at: None,
                })
                .collect()
        });
        Ok(Response::new(pb::ListSecretsResponse { secrets }))
    }
}
