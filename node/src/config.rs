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

    /// HTTPS listener (HTTP/1.1 and HTTP/2).
    #[arg(long, env = "PALISADE_HTTPS_LISTEN", default_value = "0.0.0.0:8443")]
    pub https_listen: SocketAddr,

    /// Plain-HTTP listener: redirects to HTTPS and `/healthz` only. `off` disables it.
    #[arg(long, env = "PALISADE_HTTP_LISTEN", default_value = "0.0.0.0:8080")]
    pub http_listen: String,

    /// HTTP/3 (QUIC) listener, UDP: `https` binds the HTTPS listener's address and port, an
    /// address binds that, `off` turns HTTP/3 off. `Alt-Svc` advertises it on the HTTPS port
    /// users reach (`--public-https-port`) while it serves.
    #[arg(long, env = "PALISADE_H3_LISTEN", default_value = "https")]
    pub h3_listen: String,

    /// HTTP/3: request streams a connection may have open at once.
    #[arg(long, env = "PALISADE_H3_MAX_STREAMS", default_value_t = 100)]
    pub h3_max_streams: u32,

    /// HTTP/3: a connection silent this long is closed, milliseconds.
    #[arg(long, env = "PALISADE_H3_IDLE_TIMEOUT_MS", default_value_t = 30_000)]
    pub h3_idle_timeout_ms: u64,

    /// The HTTPS port users reach (behind a load balancer it differs from the listener's);
    /// redirects from plain HTTP go there. Defaults to the listener's port.
    #[arg(long, env = "PALISADE_PUBLIC_HTTPS_PORT")]
    pub public_https_port: Option<u16>,

    /// A serving certificate and its key, `CERT.pem:KEY.pem`; repeat for more. Chosen by SNI
    /// from each certificate's DNS names; the first is the default.
    #[arg(
        long = "cert",
        env = "PALISADE_CERTS",
        value_delimiter = ',',
        required = true
    )]
    pub certs: Vec<crate::tls::CertFiles>,

    /// Ed25519 private key (PKCS#8 PEM) signing the identity assertion sent to upstreams. Give
    /// every edge the same key. Without it the edge generates one at start (one edge only).
    #[arg(long, env = "PALISADE_ASSERTION_KEY")]
    pub assertion_key: Option<PathBuf>,

    /// Extra CA certificates (PEM) trusted for identity providers, besides the system's.
    #[arg(long, env = "PALISADE_IDP_CA")]
    pub idp_ca: Option<PathBuf>,

    /// Extra CA certificates (PEM) trusted for `https://` upstreams, besides the system's.
    #[arg(long, env = "PALISADE_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,

    /// Time to wait for an upstream's response headers, milliseconds (then 504).
    #[arg(long, env = "PALISADE_UPSTREAM_TIMEOUT_MS", default_value_t = 30_000)]
    pub upstream_timeout_ms: u64,

    /// Largest request head accepted, bytes (then 431).
    #[arg(long, env = "PALISADE_MAX_HEADER_BYTES", default_value_t = 65_536)]
    pub max_header_bytes: usize,

    /// Most client connections open at once; further ones wait in the listen queue until one
    /// closes.
    #[arg(long, env = "PALISADE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// A request body that sends nothing for this long is abandoned (the request fails),
    /// milliseconds: a slow upload cannot hold a task and an upstream connection for ever.
    #[arg(long, env = "PALISADE_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub body_timeout_ms: u64,

    /// `Strict-Transport-Security: max-age` on every HTTPS answer, seconds; 0 sends none.
    #[arg(long, env = "PALISADE_HSTS_MAX_AGE", default_value_t = 31_536_000)]
    pub hsts_max_age: u64,

    /// Sign-in starts and callbacks per client address: `RATE/BURST` (per second, at once);
    /// `0/0` turns the limit off. Over it: 429 with `Retry-After`.
    #[arg(long, env = "PALISADE_RATE_SIGN_IN", default_value = "2/30")]
    pub rate_sign_in: String,

    /// MFA prompt and check requests per user, `RATE/BURST`.
    #[arg(long, env = "PALISADE_RATE_MFA", default_value = "2/40")]
    pub rate_mfa: String,

    /// Portal requests per user, `RATE/BURST`.
    #[arg(long, env = "PALISADE_RATE_PORTAL", default_value = "2/60")]
    pub rate_portal: String,

    /// Any `/.palisade/` request per client address, `RATE/BURST`.
    #[arg(long, env = "PALISADE_RATE_RESERVED", default_value = "20/200")]
    pub rate_reserved: String,

    /// Write the bound addresses (JSON) to this file once listening; for tools and tests that
    /// bind port 0.
    #[arg(long, env = "PALISADE_ADDRESSES_FILE")]
    pub addresses_file: Option<PathBuf>,

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
        if self.http_listen != "off" && self.http_listen.parse::<SocketAddr>().is_err() {
            errs.push("--http-listen must be host:port or off".into());
        }
        if !matches!(self.h3_listen.as_str(), "https" | "off")
            && self.h3_listen.parse::<SocketAddr>().is_err()
        {
            errs.push("--h3-listen must be https, host:port or off".into());
        }
        if !(1..=10_000).contains(&self.h3_max_streams) {
            errs.push("--h3-max-streams must be between 1 and 10000".into());
        }
        if !(1_000..=600_000).contains(&self.h3_idle_timeout_ms) {
            errs.push("--h3-idle-timeout-ms must be between 1000 and 600000".into());
        }
        for c in &self.certs {
            for p in [&c.cert, &c.key] {
                if !p.is_file() {
                    errs.push(format!("--cert: {} is not a readable file", p.display()));
                }
            }
        }
        for (flag, path) in [
            ("--assertion-key", &self.assertion_key),
            ("--idp-ca", &self.idp_ca),
            ("--upstream-ca", &self.upstream_ca),
        ] {
            if let Some(p) = path
                && !p.is_file()
            {
                errs.push(format!("{flag} {} is not a readable file", p.display()));
            }
        }
        if !(100..=600_000).contains(&self.upstream_timeout_ms) {
            errs.push("--upstream-timeout-ms must be between 100 and 600000".into());
        }
        if !(8192..=1_048_576).contains(&self.max_header_bytes) {
            errs.push("--max-header-bytes must be between 8192 and 1048576".into());
        }
        for (flag, v) in [
            ("--rate-sign-in", &self.rate_sign_in),
            ("--rate-mfa", &self.rate_mfa),
            ("--rate-portal", &self.rate_portal),
            ("--rate-reserved", &self.rate_reserved),
        ] {
            if parse_rate(v).is_none() {
                errs.push(format!(
                    "{flag} {v:?} is not RATE/BURST (e.g. 2/30: two a second, thirty at once)"
                ));
            }
        }
        if self.max_connections == 0 {
            errs.push("--max-connections must be at least 1".into());
        }
        if !(100..=3_600_000).contains(&self.body_timeout_ms) {
            errs.push("--body-timeout-ms must be between 100 and 3600000".into());
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

    /// The plain-HTTP listener, unless disabled.
    pub fn http_listen(&self) -> Option<SocketAddr> {
        self.http_listen.parse().ok()
    }

    /// The HTTP/3 listener (UDP), given where HTTPS is bound; `None` when turned off.
    pub fn h3_listen(&self, https: SocketAddr) -> Option<SocketAddr> {
        match self.h3_listen.as_str() {
            "off" => None,
            "https" => Some(https),
            a => a.parse().ok(),
        }
    }

    /// The silence timeout.
    pub fn silence_timeout(&self) -> Duration {
        Duration::from_millis(self.silence_timeout_ms)
    }

    /// The rate limits (validated).
    pub fn rates(&self) -> crate::limits::Rates {
        let d = crate::limits::Rates::default();
        crate::limits::Rates {
            sign_in: parse_rate(&self.rate_sign_in).unwrap_or(d.sign_in),
            mfa: parse_rate(&self.rate_mfa).unwrap_or(d.mfa),
            portal: parse_rate(&self.rate_portal).unwrap_or(d.portal),
            reserved: parse_rate(&self.rate_reserved).unwrap_or(d.reserved),
        }
    }
}

/// `RATE/BURST`: a rate per second and a burst, both finite and not negative.
fn parse_rate(s: &str) -> Option<crate::limits::Rate> {
    let (r, b) = s.split_once('/')?;
    let (r, b): (f64, f64) = (r.trim().parse().ok()?, b.trim().parse().ok()?);
    (r.is_finite() && b.is_finite() && r >= 0.0 && b >= 0.0 && (r == 0.0 || b >= 1.0))
        .then(|| crate::limits::Rate::new(r, b))
}
