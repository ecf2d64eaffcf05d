//! The edge's configuration: flags and `PALISADE_*` environment variables, validated at start.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// `palisade-node`: one Palisade edge.
#[derive(Debug, Clone, Parser)]
#[command(name = "palisade-node", version, about)]
pub struct Config {
    /// This edge's id (must match its certificate, `urn:palisade:edge:<id>`).
    #[arg(long, env = "PALISADE_EDGE_ID")]
    pub edge_id: String,

    /// Controller addresses (`host:port`, comma-separated), or one Kubernetes service name.
    #[arg(
        long,
        env = "PALISADE_CONTROLLERS",
        value_delimiter = ',',
        required = true
    )]
    pub controllers: Vec<String>,

    /// Labels reported to the controllers (`key=value`, comma-separated), used by
    /// `palisadectl wait -l`.
    #[arg(long, env = "PALISADE_LABELS", value_delimiter = ',')]
    pub labels: Vec<String>,

    /// This edge's certificate (PEM).
    #[arg(long, env = "PALISADE_TLS_CERT")]
    pub tls_cert: PathBuf,

    /// This edge's private key (PEM).
    #[arg(long, env = "PALISADE_TLS_KEY")]
    pub tls_key: PathBuf,

    /// CA certificate (PEM) of the controllers.
    #[arg(long, env = "PALISADE_TLS_CA")]
    pub tls_ca: PathBuf,

    /// Name the controllers' certificates are issued for.
    #[arg(long, env = "PALISADE_CONTROLLER_NAME", default_value = "localhost")]
    pub controller_name: String,

    /// Plain-HTTP listener for `/healthz`, `/readyz` and `/metrics`.
    #[arg(long, env = "PALISADE_OPS_LISTEN", default_value = "127.0.0.1:9480")]
    pub ops_listen: SocketAddr,

    /// A controller stream silent this long is considered dead and the edge fails over,
    /// milliseconds.
    #[arg(long, env = "PALISADE_SILENCE_TIMEOUT_MS", default_value_t = 2000)]
    pub silence_timeout_ms: u64,

    /// Log format: `text` or `json`.
    #[arg(long, env = "PALISADE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

impl Config {
    /// Checks everything that can be checked before starting; every problem is reported.
    pub fn validate(&self) -> Result<HashMap<String, String>, Vec<String>> {
        let mut errs = Vec::new();
        if self.edge_id.is_empty()
            || !self
                .edge_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            errs.push("--edge-id must be letters, digits, '-', '_' or '.'".to_string());
        }
        if self.controllers.iter().any(|c| !c.contains(':')) {
            errs.push("--controllers entries must be host:port".into());
        }
        let mut labels = HashMap::new();
        for l in &self.labels {
            match l.split_once('=') {
                Some((k, v)) if !k.is_empty() => {
                    labels.insert(k.to_string(), v.to_string());
                }
                _ => errs.push(format!("--labels entry {l:?} is not key=value")),
            }
        }
        for (flag, path) in [
            ("--tls-cert", &self.tls_cert),
            ("--tls-key", &self.tls_key),
            ("--tls-ca", &self.tls_ca),
        ] {
            if !path.is_file() {
                errs.push(format!("{flag} {} is not a readable file", path.display()));
            }
        }
        if !(100..=60_000).contains(&self.silence_timeout_ms) {
            errs.push("--silence-timeout-ms must be between 100 and 60000".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            errs.push("--log-format must be text or json".into());
        }
        if errs.is_empty() {
            Ok(labels)
        } else {
            Err(errs)
        }
    }

    /// The silence timeout.
    pub fn silence_timeout(&self) -> Duration {
        Duration::from_millis(self.silence_timeout_ms)
    }
}
