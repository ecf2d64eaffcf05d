//! The connection to the cluster: credentials from flags or the environment, and `call!`, one
//! admin API call through the leader-following client.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use palisade_link::admin::AdminClient;

use crate::input::{local, read_file};
use crate::report::Failure;

/// The longest a command waits for the cluster to elect a leader.
const ELECTION_WAIT: Duration = Duration::from_secs(15);

#[derive(Debug, Args)]
pub(crate) struct Conn {
    /// Controller admin addresses, comma-separated (any member; writes follow the leader).
    #[arg(
        long,
        short = 's',
        global = true,
        env = "PALISADE_SERVER",
        value_delimiter = ',',
        default_value = "127.0.0.1:7400"
    )]
    server: Vec<String>,
    /// Admin client certificate (PEM).
    #[arg(long, global = true, env = "PALISADE_CERT")]
    cert: Option<PathBuf>,
    /// Admin client key (PEM).
    #[arg(long, global = true, env = "PALISADE_KEY")]
    key: Option<PathBuf>,
    /// CA certificate (PEM).
    #[arg(long, global = true, env = "PALISADE_CA")]
    ca: Option<PathBuf>,
    /// Per-call timeout in seconds.
    #[arg(long, global = true, default_value_t = 30)]
    timeout: u64,
}

impl Conn {
    /// The CA file given, if any.
    pub(crate) fn ca(&self) -> Option<&std::path::Path> {
        self.ca.as_deref()
    }
}

pub(crate) fn client(conn: &Conn) -> Result<AdminClient, Failure> {
    let need = |p: &Option<PathBuf>, flag: &str, env: &str| {
        p.clone()
            .ok_or_else(|| local(format!("{flag} (or {env}) is required")))
    };
    let cert = read_file(&need(&conn.cert, "--cert", "PALISADE_CERT")?)?;
    let key = read_file(&need(&conn.key, "--key", "PALISADE_KEY")?)?;
    let ca = read_file(&need(&conn.ca, "--ca", "PALISADE_CA")?)?;
    // A person (or a script) asking during a leader election waits for it rather than failing:
    // elections take well under a second; the wait is bounded by the call timeout.
    let timeout = Duration::from_secs(conn.timeout);
    Ok(AdminClient::new(conn.server.clone(), &cert, &key, &ca)
        .with_timeout(timeout)
        .with_election_wait(timeout.min(ELECTION_WAIT)))
}

/// `call!(client, service_module::ServiceClient, method, request)`: the response message, or
/// returns the failure from the enclosing function.
macro_rules! call {
    ($c:expr, $m:ident :: $client:ident, $method:ident, $req:expr) => {{
        let req = $req;
        $c.call(|ch| {
            let req = req.clone();
            async move {
                palisade_proto::v1::$m::$client::new(ch)
                    .max_decoding_message_size(256 * 1024 * 1024)
                    .max_encoding_message_size(256 * 1024 * 1024)
                    .$method(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .map_err($crate::report::from_status)?
    }};
}
