//! The controller's configuration: flags and `PALISADE_*` environment variables, validated at
//! start.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// `palisade-controller`: one member of the Raft-replicated controller cluster.
#[derive(Debug, Clone, Parser)]
#[command(name = "palisade-controller", version, about)]
pub struct Config {
    /// This member's Raft node id (unique in the cluster, never reused).
    #[arg(long, env = "PALISADE_NODE_ID")]
    pub node_id: u64,

    /// Address the gRPC server (Raft transport, admin API, edge sync) listens on.
    #[arg(long, env = "PALISADE_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,

    /// `host:port` other members, admins and edges use to reach this member; defaults to
    /// `--listen`.
    #[arg(long, env = "PALISADE_ADVERTISE")]
    pub advertise: Option<String>,

    /// Address of the device listener (`DeviceEnrollment`: enrollment with a one-time token,
    /// renewal with the device certificate); unset disables it. Devices reach it, so it is
    /// apart from `--listen`, which admits only internal certificates.
    #[arg(long, env = "PALISADE_DEVICE_LISTEN")]
    pub device_listen: Option<SocketAddr>,

    /// How long a device certificate is valid, seconds (devices renew before it ends).
    #[arg(long, env = "PALISADE_DEVICE_CERT_TTL_SECS", default_value_t = 86_400)]
    pub device_cert_ttl_secs: u64,

    /// Address of the Prometheus `/metrics` endpoint; unset disables it.
    #[arg(long, env = "PALISADE_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,

    /// Directory for the Raft log, snapshots and state (one redb file).
    #[arg(long, env = "PALISADE_DATA_DIR")]
    pub data_dir: PathBuf,

    /// This member's certificate (PEM), with identity `urn:palisade:controller:<node id>`.
    #[arg(long, env = "PALISADE_TLS_CERT")]
    pub tls_cert: PathBuf,

    /// This member's private key (PEM).
    #[arg(long, env = "PALISADE_TLS_KEY")]
    pub tls_key: PathBuf,

    /// CA certificate(s) (PEM) that sign controller, edge and admin certificates.
    #[arg(long, env = "PALISADE_TLS_CA")]
    pub tls_ca: PathBuf,

    /// File holding the 32-byte data key (hex or base64) that encrypts secrets at rest.
    #[arg(long, env = "PALISADE_DATA_KEY_FILE", conflicts_with = "data_key")]
    pub data_key_file: Option<PathBuf>,

    /// The data key itself (hex or base64). Prefer `--data-key-file`.
    #[arg(long, env = "PALISADE_DATA_KEY", hide_env_values = true)]
    pub data_key: Option<String>,

    /// Bootstrap a new single-member cluster with this member (first start of the first member
    /// only; ignored when the data directory already holds state).
    #[arg(long, env = "PALISADE_INIT")]
    pub init: bool,

    /// Bootstrap with a static initial member list instead: `1=host:port,2=host:port,...`. Every
    /// member may be given the same list; only the lowest id initializes.
    #[arg(long, env = "PALISADE_INITIAL_MEMBERS", value_delimiter = ',')]
    pub initial_members: Vec<String>,

    /// Minimum election timeout, milliseconds.
    #[arg(long, env = "PALISADE_ELECTION_TIMEOUT_MIN_MS", default_value_t = 750)]
    pub election_timeout_min_ms: u64,

    /// Maximum election timeout, milliseconds.
    #[arg(long, env = "PALISADE_ELECTION_TIMEOUT_MAX_MS", default_value_t = 1500)]
    pub election_timeout_max_ms: u64,

    /// Leader heartbeat interval, milliseconds.
    #[arg(long, env = "PALISADE_HEARTBEAT_MS", default_value_t = 150)]
    pub heartbeat_ms: u64,

    /// Take a snapshot after this many entries since the last one.
    #[arg(long, env = "PALISADE_SNAPSHOT_EVERY", default_value_t = 10_000)]
    pub snapshot_every: u64,

    /// Log entries kept behind a snapshot for slow followers before compaction.
    #[arg(long, env = "PALISADE_LOGS_TO_KEEP", default_value_t = 1_000)]
    pub logs_to_keep: u64,

    /// Interval of heartbeats on edge subscriptions, milliseconds. Edges measure staleness
    /// from them.
    #[arg(long, env = "PALISADE_SYNC_HEARTBEAT_MS", default_value_t = 500)]
    pub sync_heartbeat_ms: u64,

    /// Recent entries kept in memory so a reconnecting edge resumes with deltas; an edge further
    /// behind gets a snapshot.
    #[arg(long, env = "PALISADE_SYNC_RESUME_WINDOW", default_value_t = 10_000)]
    pub sync_resume_window: usize,

    /// Largest policy document accepted by the admin API, bytes.
    #[arg(long, env = "PALISADE_MAX_DOCUMENT_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_document_bytes: usize,

    /// Log format: `text` or `json`.
    #[arg(long, env = "PALISADE_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

/// A member of the static initial list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialMember {
    /// Node id.
    pub id: u64,
    /// Address.
    pub addr: String,
}

impl Config {
    /// The advertised address.
    pub fn advertise(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.listen.to_string())
    }

    /// Checks everything that can be checked before starting; every problem is reported.
    pub fn validate(&self) -> Result<Vec<InitialMember>, Vec<String>> {
        let mut errs = Vec::new();
        if self.node_id == 0 {
            errs.push("--node-id must be greater than 0".to_string());
        }
        if !(300..=30 * 86_400).contains(&self.device_cert_ttl_secs) {
            errs.push(
                "--device-cert-ttl-secs must be between 300 (5 min) and 2592000 (30 days)".into(),
            );
        }
        if self.election_timeout_min_ms >= self.election_timeout_max_ms {
            errs.push(
                "--election-timeout-min-ms must be less than --election-timeout-max-ms".into(),
            );
        }
        if self.heartbeat_ms == 0 || self.heartbeat_ms * 3 > self.election_timeout_min_ms {
            errs.push(
                "--heartbeat-ms must be positive and at most a third of --election-timeout-min-ms"
                    .into(),
            );
        }
        if self.sync_heartbeat_ms == 0 || self.sync_heartbeat_ms > 60_000 {
            errs.push("--sync-heartbeat-ms must be between 1 and 60000".into());
        }
        if self.snapshot_every == 0 {
            errs.push("--snapshot-every must be positive".into());
        }
        if self.data_key.is_none() && self.data_key_file.is_none() {
            errs.push("a data key is required: --data-key-file or PALISADE_DATA_KEY".into());
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
        if self.init && !self.initial_members.is_empty() {
            errs.push("use either --init or --initial-members, not both".into());
        }
        let mut members = Vec::new();
        for m in &self.initial_members {
            match m.split_once('=').and_then(|(id, addr)| {
                id.parse::<u64>()
                    .ok()
                    .filter(|i| *i > 0)
                    .map(|id| (id, addr))
            }) {
                Some((id, addr)) if addr.contains(':') => members.push(InitialMember {
                    id,
                    addr: addr.to_string(),
                }),
                _ => errs.push(format!("--initial-members entry {m:?} is not id=host:port")),
            }
        }
        if !members.is_empty() && !members.iter().any(|m| m.id == self.node_id) {
            errs.push("--initial-members must include this member's --node-id".into());
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            errs.push("--log-format must be text or json".into());
        }
        if errs.is_empty() {
            Ok(members)
        } else {
            Err(errs)
        }
    }

    /// openraft's configuration from these settings.
    pub fn raft_config(&self) -> Result<openraft::Config, String> {
        let c = openraft::Config {
            cluster_name: "palisade".into(),
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            heartbeat_interval: self.heartbeat_ms,
            install_snapshot_timeout: 10_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.logs_to_keep,
            purge_batch_size: 256,
            ..Default::default()
        };
        c.validate().map_err(|e| e.to_string())
    }

    /// Heartbeat interval as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms)
    }
}
