//! `palisadectl secrets`: named secrets (identity-provider client secrets). Values go in and
//! never come back out.

use clap::Subcommand;
use palisade_link::admin::AdminClient;
use palisade_proto::v1 as pb;
use serde_json::json;

use crate::input::local;
use crate::report::{Failure, Report};

#[derive(Debug, Subcommand)]
pub(crate) enum SecretCmd {
    /// Set a secret from a file or standard input (`-`).
    Put {
        name: String,
        /// File with the value; `-` for standard input.
        #[arg(long, default_value = "-")]
        from: String,
    },
    /// List secret names.
    List,
}

pub(crate) async fn run(c: &AdminClient, cmd: SecretCmd) -> Result<Report, Failure> {
    Ok(match cmd {
        SecretCmd::Put { name, from } => {
            let value = if from == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                    .map_err(|e| local(format!("reading stdin: {e}")))?;
                s.trim_end_matches('\n').as_bytes().to_vec()
            } else {
                std::fs::read(&from).map_err(|e| local(format!("reading {from}: {e}")))?
            };
            call!(
                c,
                key_service_client::KeyServiceClient,
                put_secret,
                pb::PutSecretRequest {
                    name: name.clone(),
                    value
                }
            );
            Report::new(format!("secret {name} set\n"), json!({ "name": name }))
        }
        SecretCmd::List => {
            let r = call!(
                c,
                key_service_client::KeyServiceClient,
                list_secrets,
                pb::ListSecretsRequest {}
            );
            Report::new(
                r.secrets
                    .iter()
                    .map(|s| format!("{}\n", s.name))
                    .collect::<String>(),
                json!(r.secrets.iter().map(|s| &s.name).collect::<Vec<_>>()),
            )
        }
    })
}
