//! `palisadectl keys`: session signing keys (never their material).

use clap::Subcommand;
use palisade_link::admin::AdminClient;
use palisade_proto::v1 as pb;
use serde_json::json;

use crate::input::duration;
use crate::report::{Failure, Report, ts};

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCmd {
    /// Create a new active signing key.
    Rotate {
        /// How long the previous key still verifies sessions it signed; by default as long as
        /// any of them can live. `0s` ends them now (a leaked key, a compromised edge).
        #[arg(long)]
        overlap: Option<String>,
    },
    /// List signing keys (never their material).
    List,
}

pub(crate) async fn run(c: &AdminClient, cmd: KeyCmd) -> Result<Report, Failure> {
    Ok(match cmd {
        KeyCmd::Rotate { overlap } => {
            let overlap = overlap.as_deref().map(duration).transpose()?;
            let r = call!(
                c,
                key_service_client::KeyServiceClient,
                rotate_signing_key,
                pb::RotateSigningKeyRequest { overlap }
            );
            Report::new(
                format!("new active signing key {}\n", r.kid),
                json!({ "kid": r.kid }),
            )
        }
        KeyCmd::List => {
            let r = call!(
                c,
                key_service_client::KeyServiceClient,
                list_signing_keys,
                pb::ListSigningKeysRequest {}
            );
            let rows = r
                .keys
                .iter()
                .map(|k| {
                    let active = k.state == pb::SigningKeyState::Active as i32;
                    json!({"kid": k.kid, "active": active, "use": if active { "sign" } else { "verify" }, "created_at": ts(&k.created_at), "retire_at": ts(&k.retire_at)})
                })
                .collect();
            Report::table(
                &[
                    ("KID", "kid"),
                    ("USE", "use"),
                    ("CREATED", "created_at"),
                    ("RETIRES", "retire_at"),
                ],
                rows,
            )
        }
    })
}
