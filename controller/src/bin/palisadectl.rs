//! `palisadectl`: the operator's command line for the admin API.
//!
//! Exit codes: 0 success; 1 other error; 2 usage or local configuration error; 3 invalid input
//! (validation failed: nothing was written); 4 not found; 5 not authenticated or not allowed;
//! 6 cluster unavailable (no leader, unreachable); 7 precondition failed (version conflict,
//! state does not allow it).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use palisade_controller::client::{AdminClient, validation_failure};
use palisade_proto::v1 as pb;
use serde_json::{Value, json};
use tonic::{Code, Status};

#[derive(Debug, Parser)]
#[command(
    name = "palisadectl",
    version,
    about = "Operate a Palisade cluster through its admin API"
)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    /// Output format.
    #[arg(long, short = 'o', global = true, default_value = "human")]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Args)]
struct Conn {
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate and apply a policy document.
    Apply {
        /// The document.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// A comment stored with the version.
        #[arg(short = 'm', long, default_value = "")]
        message: String,
        /// Apply only if this version is current.
        #[arg(long, default_value_t = 0)]
        expected_version: u64,
    },
    /// Validate a document and show what it would change.
    Diff {
        /// The draft document.
        #[arg(short = 'f', long)]
        file: PathBuf,
        /// Compare against this version instead of the current one.
        #[arg(long, default_value_t = 0)]
        against: u64,
    },
    /// Decide described requests against a draft (or the current) document.
    Simulate {
        /// Requests: a JSON array (see docs/controller.md).
        #[arg(short = 'r', long)]
        requests: PathBuf,
        /// Draft document; the current one when left out.
        #[arg(short = 'f', long)]
        file: Option<PathBuf>,
    },
    /// Show the current document or a version of it.
    Get {
        /// Version; the current one when left out.
        #[arg(long, default_value_t = 0)]
        version: u64,
        /// Serve from the contacted member's state without a leadership check.
        #[arg(long)]
        local: bool,
    },
    /// List applied policy versions.
    History,
    /// Restore an earlier policy version as a new version.
    Rollback {
        /// The version to restore.
        #[arg(long)]
        to: u64,
        /// A comment stored with the new version.
        #[arg(short = 'm', long, default_value = "")]
        message: String,
    },
    /// Revoke a session, a user's sessions, a device or a factor.
    Revoke(RevokeArgs),
    /// List revocations in force.
    Revocations,
    /// Managed devices.
    Devices {
        #[command(subcommand)]
        cmd: DeviceCmd,
    },
    /// Users' MFA factors.
    Factors {
        #[command(subcommand)]
        cmd: FactorCmd,
    },
    /// Session signing keys.
    Keys {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Named secrets (identity-provider client secrets).
    Secrets {
        #[command(subcommand)]
        cmd: SecretCmd,
    },
    /// Cluster status: members, leader, term, commit and applied indexes.
    Status,
    /// Edges: the revision each has applied, its lag and when it last reported.
    Edges {
        /// Only edges with these labels, `key=value,...`.
        #[arg(long, short = 'l', value_delimiter = ',')]
        selector: Vec<String>,
    },
    /// Wait until every edge (in scope) enforces a revision.
    Wait {
        /// The revision (as printed by a write).
        revision: u64,
        /// Only edges with these labels, `key=value,...`.
        #[arg(long, short = 'l', value_delimiter = ',')]
        selector: Vec<String>,
        /// Give up after this long, e.g. `30s`.
        #[arg(long, default_value = "10s")]
        within: String,
    },
    /// Change cluster membership.
    Members {
        #[command(subcommand)]
        cmd: MemberCmd,
    },
    /// The audit trail of writes.
    Audit {
        /// Only actions starting with this, e.g. `policy.`.
        #[arg(long, default_value = "")]
        action: String,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Development PKI for a local cluster.
    Pki {
        #[command(subcommand)]
        cmd: PkiCmd,
    },
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// What to revoke.
    #[arg(value_enum)]
    kind: RevokeKind,
    /// Session id, device id, factor id, or `provider/subject` for a user.
    id: String,
    /// Why (required; recorded with the revocation).
    #[arg(long)]
    reason: String,
    /// How long to keep it, e.g. `12h`; defaults to the longest session lifetime in policy.
    #[arg(long)]
    ttl: Option<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RevokeKind {
    Session,
    User,
    Device,
    Factor,
}

#[derive(Debug, Subcommand)]
enum DeviceCmd {
    /// List devices.
    List {
        /// Only this owner's.
        #[arg(long, default_value = "")]
        owner: String,
    },
    /// Show one device.
    Get { id: String },
    /// Create a device and print its one-time enrollment token.
    Enroll {
        /// Owner (email).
        #[arg(long)]
        owner: String,
        /// Serial number.
        #[arg(long, default_value = "")]
        serial: String,
        /// Friendly name.
        #[arg(long, default_value = "")]
        name: String,
        /// Device groups.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
    },
    /// Mark a device wiped: it must enroll again.
    Wipe {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Revoke a device permanently.
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
enum FactorCmd {
    /// List a user's factors and counters.
    List {
        /// `provider/subject`.
        user: String,
    },
    /// Remove a factor.
    Remove {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Clear a user's failed attempts and lockout.
    Unlock {
        /// `provider/subject`.
        user: String,
    },
    /// Issue a one-time code that lets a user enroll a first factor.
    EnrollmentCode {
        /// `provider/subject`.
        user: String,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCmd {
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

#[derive(Debug, Subcommand)]
enum SecretCmd {
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

#[derive(Debug, Subcommand)]
enum MemberCmd {
    /// Add a learner, then make it a voter with `members voters`.
    Add {
        /// Node id.
        id: u64,
        /// Its address (`host:port`).
        addr: String,
    },
    /// Set the complete list of voters.
    Voters {
        /// Node ids.
        #[arg(value_delimiter = ',')]
        ids: Vec<u64>,
    },
    /// Remove a member.
    Remove { id: u64 },
}

#[derive(Debug, Subcommand)]
enum PkiCmd {
    /// Write a CA, controller/edge/admin certificates and a data key into a directory.
    Init {
        /// Output directory.
        #[arg(long)]
        dir: PathBuf,
        /// Controller node ids.
        #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
        controllers: Vec<u64>,
        /// Edge ids.
        #[arg(long, value_delimiter = ',', default_value = "edge-1,edge-2")]
        edges: Vec<String>,
    },
}

struct Failure {
    code: u8,
    message: String,
    details: Vec<String>,
}

fn from_status(s: Status) -> Failure {
    let code = match s.code() {
        Code::InvalidArgument | Code::OutOfRange => 3,
        Code::NotFound => 4,
        Code::Unauthenticated | Code::PermissionDenied => 5,
        Code::Unavailable | Code::DeadlineExceeded => 6,
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => 7,
        _ => 1,
    };
    if let Some(f) = validation_failure(&s).filter(|f| !f.violations.is_empty()) {
        return invalid_document(&f.violations);
    }
    Failure {
        code,
        message: s.message().to_string(),
        details: Vec::new(),
    }
}

fn invalid_document(violations: &[pb::FieldViolation]) -> Failure {
    Failure {
        code: 3,
        message: format!("the policy document has {} problem(s)", violations.len()),
        details: violations
            .iter()
            .map(|v| format!("{}: {}", v.path, v.reason))
            .collect(),
    }
}

fn local(msg: impl Into<String>) -> Failure {
    Failure {
        code: 2,
        message: msg.into(),
        details: vec![],
    }
}

fn ts(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
        .map(|t| t.to_string())
        .unwrap_or_default()
}

fn user(s: &str) -> Result<(String, String), Failure> {
    s.split_once('/')
        .map(|(p, u)| (p.to_string(), u.to_string()))
        .filter(|(p, u)| !p.is_empty() && !u.is_empty())
        .ok_or_else(|| local(format!("{s:?} is not provider/subject")))
}

fn selector(labels: &[String]) -> Result<pb::LabelSelector, Failure> {
    let mut sel = pb::LabelSelector::default();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| local(format!("{l:?} is not key=value")))?;
        sel.match_labels.insert(k.to_string(), v.to_string());
    }
    Ok(sel)
}

fn edge_json(e: &pb::EdgeStatus) -> Value {
    json!({"id": e.id, "labels": e.labels, "applied_revision": e.applied_revision, "lag": e.lag, "last_seen": ts(&e.last_seen), "connected_to": e.connected_to, "ready": e.ready})
}

fn read_file(p: &PathBuf) -> Result<String, Failure> {
    std::fs::read_to_string(p).map_err(|e| local(format!("reading {}: {e}", p.display())))
}

fn duration(s: &str) -> Result<prost_types::Duration, Failure> {
    let d = palisade_policy::duration::parse_duration(s).map_err(local)?;
    Ok(prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: 0,
    })
}

fn client(conn: &Conn) -> Result<AdminClient, Failure> {
    let need = |p: &Option<PathBuf>, flag: &str, env: &str| {
        p.clone()
            .ok_or_else(|| local(format!("{flag} (or {env}) is required")))
    };
    let cert = read_file(&need(&conn.cert, "--cert", "PALISADE_CERT")?)?;
    let key = read_file(&need(&conn.key, "--key", "PALISADE_KEY")?)?;
    let ca = read_file(&need(&conn.ca, "--ca", "PALISADE_CA")?)?;
    Ok(AdminClient::new(conn.server.clone(), &cert, &key, &ca)
        .with_timeout(Duration::from_secs(conn.timeout)))
}

macro_rules! call {
    ($c:expr, $m:ident :: $client:ident, $method:ident, $req:expr) => {{
        let req = $req;
        $c.call(|ch| {
            let req = req.clone();
            async move {
                pb::$m::$client::new(ch)
                    .max_decoding_message_size(256 * 1024 * 1024)
                    .max_encoding_message_size(256 * 1024 * 1024)
                    .$method(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .map_err(from_status)?
    }};
}

fn version_json(v: &pb::PolicyVersion) -> Value {
    json!({"version": v.version, "revision": v.revision, "author": v.author.as_ref().map(|a| a.subject.clone()), "applied_at": ts(&v.applied_at), "comment": v.comment, "digest": v.digest, "rolled_back_from": v.rolled_back_from})
}

fn diff_json(d: &pb::PolicyDiff) -> Value {
    json!({"added_applications": d.added_applications, "removed_applications": d.removed_applications, "changed_applications": d.changed_applications, "changed_identity_providers": d.changed_identity_providers, "unified": d.unified})
}

fn diff_human(d: &pb::PolicyDiff) -> String {
    let mut out = String::new();
    for (label, list) in [
        ("added", &d.added_applications),
        ("removed", &d.removed_applications),
        ("changed", &d.changed_applications),
        ("identity providers changed", &d.changed_identity_providers),
    ] {
        if !list.is_empty() {
            out.push_str(&format!("{label}: {}\n", list.join(", ")));
        }
    }
    if out.is_empty() {
        out.push_str("no changes\n");
    }
    out.push_str(&d.unified);
    out
}

fn device_json(d: &pb::Device) -> Value {
    let state = pb::DeviceState::try_from(d.state)
        .map(|s| {
            s.as_str_name()
                .trim_start_matches("DEVICE_STATE_")
                .to_lowercase()
        })
        .unwrap_or_default();
    let posture = d.posture.clone().unwrap_or_default();
    json!({"id": d.id, "owner": d.owner, "serial": d.serial, "name": d.display_name, "state": state, "groups": d.groups, "client_version": posture.client_version, "revision": d.revision})
}

async fn run(cli: Cli) -> Result<(String, Value), Failure> {
    if let Cmd::Pki {
        cmd: PkiCmd::Init {
            dir,
            controllers,
            edges,
        },
    } = &cli.cmd
    {
        palisade_controller::pki::init_dir(dir, controllers, edges)
            .map_err(|e| local(format!("{e:#}")))?;
        return Ok((
            format!(
                "wrote a development CA, certificates and a data key to {}\n",
                dir.display()
            ),
            json!({"dir": dir}),
        ));
    }
    let c = client(&cli.conn)?;
    Ok(match cli.cmd {
        Cmd::Apply {
            file,
            message,
            expected_version,
        } => {
            let doc = read_file(&file)?;
            let r = call!(
                c,
                policy_service_client::PolicyServiceClient,
                apply_policy,
                pb::ApplyPolicyRequest {
                    document_json: doc,
                    comment: message,
                    expected_version
                }
            );
            let v = r.version.clone().unwrap_or_default();
            let w = r.write.unwrap_or_default();
            let d = r.diff.clone().unwrap_or_default();
            (
                format!(
                    "applied policy version {} at revision {}\n{}",
                    v.version,
                    w.revision,
                    diff_human(&d)
                ),
                json!({"version": version_json(&v), "revision": w.revision, "diff": diff_json(&d)}),
            )
        }
        Cmd::Diff { file, against } => {
            let doc = read_file(&file)?;
            let r = call!(
                c,
                policy_service_client::PolicyServiceClient,
                diff_policy,
                pb::DiffPolicyRequest {
                    document_json: doc,
                    against_version: against
                }
            );
            if !r.violations.is_empty() {
                return Err(invalid_document(&r.violations));
            }
            let d = r.diff.unwrap_or_default();
            (diff_human(&d), diff_json(&d))
        }
        Cmd::Simulate { requests, file } => {
            let doc = match file {
                Some(f) => read_file(&f)?,
                None => String::new(),
            };
            let reqs: Vec<Value> = serde_json::from_str(&read_file(&requests)?)
                .map_err(|e| local(format!("{}: {e}", requests.display())))?;
            let reqs = reqs
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    sim_request(v).map_err(|e| Failure {
                        code: 3,
                        message: format!("requests[{i}]: {e}"),
                        details: vec![],
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let r = call!(
                c,
                policy_service_client::PolicyServiceClient,
                simulate_policy,
                pb::SimulatePolicyRequest {
                    document_json: doc,
                    requests: reqs
                }
            );
            if !r.violations.is_empty() {
                return Err(invalid_document(&r.violations));
            }
            let mut text = String::new();
            for x in &r.results {
                text.push_str(&format!(
                    "{:<20} {:<16} {:<16} {}\n",
                    x.label, x.application, x.decision, x.reason
                ));
            }
            (text, Value::Array(r.results.iter().map(|x| json!({"label": x.label, "application": x.application, "decision": x.decision, "rule": x.rule, "reason": x.reason, "mfa_methods": x.mfa_methods})).collect()))
        }
        Cmd::Get { version, local } => {
            let consistency = if local {
                pb::ReadConsistency::Local
            } else {
                pb::ReadConsistency::Linearizable
            } as i32;
            let r = call!(
                c,
                policy_service_client::PolicyServiceClient,
                get_policy,
                pb::GetPolicyRequest {
                    version,
                    consistency
                }
            );
            match r.version {
                Some(v) => (
                    format!("{}\n", v.document_json),
                    json!({"version": version_json(&v), "document": serde_json::from_str::<Value>(&v.document_json).unwrap_or(Value::Null), "local_read": r.read.map(|x| x.local)}),
                ),
                None => ("no policy has been applied yet\n".into(), Value::Null),
            }
        }
        Cmd::History => {
            let r = call!(
                c,
                policy_service_client::PolicyServiceClient,
                list_policy_history,
                pb::ListPolicyHistoryRequest {
                    page: Some(pb::PageRequest {
                        page_size: 1000,
                        page_token: String::new()
                    }),
                    consistency: 0
                }
            );
            let mut text = format!(
                "{:<8} {:<9} {:<26} {:<24} {}\n",
                "VERSION", "REVISION", "APPLIED", "AUTHOR", "COMMENT"
            );
            for v in &r.versions {
                let comment = if v.rolled_back_from > 0 {
                    format!("{} (rollback to v{})", v.comment, v.rolled_back_from)
                } else {
                    v.comment.clone()
                };
                text.push_str(&format!(
                    "{:<8} {:<9} {:<26} {:<24} {}\n",
                    v.version,
                    v.revision,
                    ts(&v.applied_at),
                    v.author.as_ref().map(|a| a.subject.as_str()).unwrap_or(""),
                    comment
                ));
            }
            (
                text,
                Value::Array(r.versions.iter().map(version_json).collect()),
            )
        }
        Cmd::Rollback { to, message } => {
            let r = call!(
                c,
                policy_service_client::PolicyServiceClient,
                rollback_policy,
                pb::RollbackPolicyRequest {
                    to_version: to,
                    comment: message
                }
            );
            let v = r.version.clone().unwrap_or_default();
            let w = r.write.unwrap_or_default();
            (
                format!(
                    "restored version {to} as version {} at revision {}\n",
                    v.version, w.revision
                ),
                json!({"version": version_json(&v), "revision": w.revision}),
            )
        }
        Cmd::Revoke(a) => {
            use pb::revocation_target::Target;
            let target = match a.kind {
                RevokeKind::Session => Target::SessionId(a.id.clone()),
                RevokeKind::Device => Target::DeviceId(a.id.clone()),
                RevokeKind::Factor => Target::FactorId(a.id.clone()),
                RevokeKind::User => {
                    // No time from this machine's clock: the revocation covers every session
                    // issued before it took effect, by catalog revision (one clock).
                    let (p, s) = user(&a.id)?;
                    Target::User(pb::UserRevocation {
                        subject: s,
                        identity_provider: p,
                        issued_before: None,
                    })
                }
            };
            let ttl = a.ttl.as_deref().map(duration).transpose()?;
            let r = call!(
                c,
                revocation_service_client::RevocationServiceClient,
                revoke,
                pb::RevokeRequest {
                    target: Some(pb::RevocationTarget {
                        target: Some(target)
                    }),
                    reason: a.reason.clone(),
                    ttl
                }
            );
            let rev = r.revocation.unwrap_or_default();
            let w = r.write.unwrap_or_default();
            (
                format!(
                    "revoked ({}) at revision {}; expires {}\n",
                    rev.id,
                    w.revision,
                    ts(&rev.expires_at)
                ),
                json!({"id": rev.id, "revision": w.revision, "expires_at": ts(&rev.expires_at)}),
            )
        }
        Cmd::Revocations => {
            let r = call!(
                c,
                revocation_service_client::RevocationServiceClient,
                list_revocations,
                pb::ListRevocationsRequest {
                    page: Some(pb::PageRequest {
                        page_size: 1000,
                        page_token: String::new()
                    }),
                    consistency: 0
                }
            );
            let mut text = String::new();
            let mut arr = Vec::new();
            for x in &r.revocations {
                let t = format!("{:?}", x.target.as_ref().and_then(|t| t.target.clone()));
                text.push_str(&format!(
                    "{:<14} {:<9} {:<60} {}\n",
                    x.id, x.revision, t, x.reason
                ));
                arr.push(json!({"id": x.id, "revision": x.revision, "target": t, "reason": x.reason, "actor": x.actor.as_ref().map(|a| a.subject.clone()), "expires_at": ts(&x.expires_at)}));
            }
            (text, Value::Array(arr))
        }
        Cmd::Devices { cmd } => match cmd {
            DeviceCmd::List { owner } => {
                let r = call!(
                    c,
                    device_service_client::DeviceServiceClient,
                    list_devices,
                    pb::ListDevicesRequest {
                        owner,
                        state: 0,
                        page: Some(pb::PageRequest {
                            page_size: 1000,
                            page_token: String::new()
                        }),
                        consistency: 0
                    }
                );
                let arr: Vec<Value> = r.devices.iter().map(device_json).collect();
                let text = arr
                    .iter()
                    .map(|d| {
                        format!(
                            "{:<12} {:<10} {:<30} {}\n",
                            d["id"].as_str().unwrap_or(""),
                            d["state"].as_str().unwrap_or(""),
                            d["owner"].as_str().unwrap_or(""),
                            d["serial"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                (text, Value::Array(arr))
            }
            DeviceCmd::Get { id } => {
                let r = call!(
                    c,
                    device_service_client::DeviceServiceClient,
                    get_device,
                    pb::GetDeviceRequest { id, consistency: 0 }
                );
                let d = device_json(&r.device.unwrap_or_default());
                (
                    format!("{}\n", serde_json::to_string_pretty(&d).unwrap_or_default()),
                    d,
                )
            }
            DeviceCmd::Enroll {
                owner,
                serial,
                name,
                groups,
            } => {
                let r = call!(
                    c,
                    device_service_client::DeviceServiceClient,
                    enroll_device,
                    pb::EnrollDeviceRequest {
                        owner,
                        serial,
                        display_name: name,
                        groups,
                        token_ttl: None
                    }
                );
                let d = r.device.unwrap_or_default();
                (
                    format!(
                        "device {} created; one-time enrollment token (shown once):\n{}\nexpires {}\n",
                        d.id,
                        r.enrollment_token,
                        ts(&r.token_expires_at)
                    ),
                    json!({"device": device_json(&d), "enrollment_token": r.enrollment_token, "expires_at": ts(&r.token_expires_at)}),
                )
            }
            DeviceCmd::Wipe { id, reason } => {
                let r = call!(
                    c,
                    device_service_client::DeviceServiceClient,
                    mark_device_wiped,
                    pb::DeviceActionRequest { id, reason }
                );
                let d = device_json(&r.device.unwrap_or_default());
                (
                    format!("device {} marked wiped\n", d["id"].as_str().unwrap_or("")),
                    d,
                )
            }
            DeviceCmd::Revoke { id, reason } => {
                let r = call!(
                    c,
                    device_service_client::DeviceServiceClient,
                    revoke_device,
                    pb::DeviceActionRequest { id, reason }
                );
                let d = device_json(&r.device.unwrap_or_default());
                (
                    format!("device {} revoked\n", d["id"].as_str().unwrap_or("")),
                    d,
                )
            }
        },
        Cmd::Factors { cmd } => match cmd {
            FactorCmd::List { user: u } => {
                let (p, s) = user(&u)?;
                let r = call!(
                    c,
                    factor_service_client::FactorServiceClient,
                    list_factors,
                    pb::ListFactorsRequest {
                        subject: s,
                        identity_provider: p,
                        consistency: 0
                    }
                );
                let arr: Vec<Value> = r.factors.iter().map(|f| json!({"id": f.id, "kind": pb::FactorKind::try_from(f.kind).map(|k| k.as_str_name().trim_start_matches("FACTOR_KIND_").to_lowercase()).unwrap_or_default(), "name": f.name, "pending": f.pending, "created_at": ts(&f.created_at)})).collect();
                let counters = r.counters.unwrap_or_default();
                let mut text: String = arr
                    .iter()
                    .map(|f| {
                        format!(
                            "{:<12} {:<14} {}\n",
                            f["id"].as_str().unwrap_or(""),
                            f["kind"].as_str().unwrap_or(""),
                            f["name"].as_str().unwrap_or("")
                        )
                    })
                    .collect();
                text.push_str(&format!(
                    "failed attempts: {}; locked until: {}\n",
                    counters.failed_attempts,
                    ts(&counters.locked_until)
                ));
                (
                    text,
                    json!({"factors": arr, "failed_attempts": counters.failed_attempts, "locked_until": ts(&counters.locked_until)}),
                )
            }
            FactorCmd::Remove { id, reason } => {
                let r = call!(
                    c,
                    factor_service_client::FactorServiceClient,
                    remove_factor,
                    pb::RemoveFactorRequest {
                        factor_id: id.clone(),
                        reason
                    }
                );
                (
                    format!(
                        "factor {id} removed at revision {}\n",
                        r.write.unwrap_or_default().revision
                    ),
                    json!({"id": id}),
                )
            }
            FactorCmd::Unlock { user: u } => {
                let (p, s) = user(&u)?;
                call!(
                    c,
                    factor_service_client::FactorServiceClient,
                    unlock_user,
                    pb::UnlockUserRequest {
                        subject: s,
                        identity_provider: p
                    }
                );
                (format!("{u} unlocked\n"), json!({"user": u}))
            }
            FactorCmd::EnrollmentCode { user: u } => {
                let (p, s) = user(&u)?;
                let r = call!(
                    c,
                    factor_service_client::FactorServiceClient,
                    issue_factor_enrollment_code,
                    pb::IssueFactorEnrollmentCodeRequest {
                        subject: s,
                        identity_provider: p,
                        ttl: None
                    }
                );
                (
                    format!(
                        "enrollment code for {u} (shown once): {}\nexpires {}\n",
                        r.code,
                        ts(&r.expires_at)
                    ),
                    json!({"code": r.code, "expires_at": ts(&r.expires_at)}),
                )
            }
        },
        Cmd::Keys { cmd } => match cmd {
            KeyCmd::Rotate { overlap } => {
                let overlap = overlap.as_deref().map(duration).transpose()?;
                let r = call!(
                    c,
                    key_service_client::KeyServiceClient,
                    rotate_signing_key,
                    pb::RotateSigningKeyRequest { overlap }
                );
                (
                    format!("new active signing key {}\n", r.kid),
                    json!({"kid": r.kid}),
                )
            }
            KeyCmd::List => {
                let r = call!(
                    c,
                    key_service_client::KeyServiceClient,
                    list_signing_keys,
                    pb::ListSigningKeysRequest {}
                );
                let arr: Vec<Value> = r.keys.iter().map(|k| json!({"kid": k.kid, "active": k.state == pb::SigningKeyState::Active as i32, "created_at": ts(&k.created_at), "retire_at": ts(&k.retire_at)})).collect();
                (
                    arr.iter()
                        .map(|k| {
                            format!(
                                "{:<10} {:<7} {}\n",
                                k["kid"].as_str().unwrap_or(""),
                                if k["active"] == true {
                                    "active"
                                } else {
                                    "verify"
                                },
                                k["created_at"].as_str().unwrap_or("")
                            )
                        })
                        .collect(),
                    Value::Array(arr),
                )
            }
        },
        Cmd::Secrets { cmd } => match cmd {
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
                (format!("secret {name} set\n"), json!({"name": name}))
            }
            SecretCmd::List => {
                let r = call!(
                    c,
                    key_service_client::KeyServiceClient,
                    list_secrets,
                    pb::ListSecretsRequest {}
                );
                (
                    r.secrets.iter().map(|s| format!("{}\n", s.name)).collect(),
                    Value::Array(r.secrets.iter().map(|s| json!(s.name)).collect()),
                )
            }
        },
        Cmd::Status => {
            let r = call!(
                c,
                cluster_service_client::ClusterServiceClient,
                get_cluster_status,
                pb::GetClusterStatusRequest {}
            );
            let mut text = format!(
                "node {} ({}); leader {}; term {}; commit index {}; applied revision {}; snapshot index {}\n",
                r.node_id,
                r.state,
                r.leader_id,
                r.term,
                r.commit_index,
                r.applied_revision,
                r.snapshot_index
            );
            for m in &r.members {
                let matched = if r.state == "leader" {
                    format!("  replicated to {}", m.matched_index)
                } else {
                    String::new()
                };
                let leader = if m.id == r.leader_id {
                    "  (leader)"
                } else {
                    ""
                };
                text.push_str(&format!(
                    "  {:<4} {:<8} {}{matched}{leader}\n",
                    m.id, m.role, m.raft_addr
                ));
            }
            (
                text,
                json!({"node_id": r.node_id, "state": r.state, "leader_id": r.leader_id, "term": r.term, "commit_index": r.commit_index, "applied_revision": r.applied_revision, "snapshot_index": r.snapshot_index, "members": r.members.iter().map(|m| json!({"id": m.id, "role": m.role, "addr": m.raft_addr, "matched_index": m.matched_index, "reachable": m.reachable})).collect::<Vec<_>>()}),
            )
        }
        Cmd::Edges { selector: labels } => {
            let sel = selector(&labels)?;
            let r = call!(
                c,
                cluster_service_client::ClusterServiceClient,
                get_propagation_status,
                pb::GetPropagationStatusRequest {
                    selector: Some(sel)
                }
            );
            let mut text = format!(
                "commit revision {}\n{:<20} {:<10} {:<6} {:<6} {:<12} {}\n",
                r.commit_revision, "EDGE", "APPLIED", "LAG", "READY", "CONTROLLER", "LAST SEEN"
            );
            for e in &r.edges {
                text.push_str(&format!(
                    "{:<20} {:<10} {:<6} {:<6} {:<12} {}\n",
                    e.id,
                    e.applied_revision,
                    e.lag,
                    e.ready,
                    e.connected_to,
                    ts(&e.last_seen)
                ));
            }
            (
                text,
                json!({"commit_revision": r.commit_revision, "edges": r.edges.iter().map(edge_json).collect::<Vec<_>>()}),
            )
        }
        Cmd::Wait {
            revision,
            selector: labels,
            within,
        } => {
            let sel = selector(&labels)?;
            let within = duration(&within)?;
            let r = call!(
                c,
                cluster_service_client::ClusterServiceClient,
                wait_for_revision,
                pb::WaitForRevisionRequest {
                    revision,
                    scope: Some(sel),
                    timeout: Some(within)
                }
            );
            let waited = r
                .waited
                .map(|d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
                .unwrap_or(0.0);
            let value = json!({"complete": r.complete, "applied": r.applied, "pending": r.pending.iter().map(edge_json).collect::<Vec<_>>(), "waited_seconds": waited});
            if !r.complete {
                let pending = r
                    .pending
                    .iter()
                    .map(|e| format!("{} (at {})", e.id, e.applied_revision))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(Failure {
                    code: 7,
                    message: format!(
                        "revision {revision} is not enforced everywhere after {waited:.3}s; pending: {pending}"
                    ),
                    details: vec![],
                });
            }
            (
                format!(
                    "revision {revision} is enforced by {} edge(s) ({waited:.3}s)\n",
                    r.applied.len()
                ),
                value,
            )
        }
        Cmd::Members { cmd } => {
            let r = match cmd {
                MemberCmd::Add { id, addr } => call!(
                    c,
                    cluster_service_client::ClusterServiceClient,
                    add_learner,
                    pb::AddLearnerRequest {
                        id,
                        raft_addr: addr.clone(),
                        admin_addr: addr,
                        wait_caught_up: true
                    }
                ),
                MemberCmd::Voters { ids } => call!(
                    c,
                    cluster_service_client::ClusterServiceClient,
                    change_membership,
                    pb::ChangeMembershipRequest {
                        voters: ids,
                        retain_as_learners: false
                    }
                ),
                MemberCmd::Remove { id } => call!(
                    c,
                    cluster_service_client::ClusterServiceClient,
                    remove_member,
                    pb::RemoveMemberRequest { id }
                ),
            };
            let text = r
                .members
                .iter()
                .map(|m| format!("  {:<4} {:<8} {}\n", m.id, m.role, m.raft_addr))
                .collect();
            (
                text,
                json!({"revision": r.write.unwrap_or_default().revision, "members": r.members.iter().map(|m| json!({"id": m.id, "role": m.role, "addr": m.raft_addr})).collect::<Vec<_>>()}),
            )
        }
        Cmd::Audit { action, limit } => {
            let r = call!(
                c,
                audit_service_client::AuditServiceClient,
                list_audit_events,
                pb::ListAuditEventsRequest {
                    action_prefix: action,
                    target: String::new(),
                    since: None,
                    page: Some(pb::PageRequest {
                        page_size: limit,
                        page_token: String::new()
                    })
                }
            );
            let arr: Vec<Value> = r.events.iter().map(|e| json!({"revision": e.revision, "time": ts(&e.time), "actor": e.actor.as_ref().map(|a| a.subject.clone()), "action": e.action, "target": e.target, "result": e.result})).collect();
            (
                arr.iter()
                    .map(|e| {
                        format!(
                            "{:<8} {:<26} {:<22} {:<20} {:<30} {}\n",
                            e["revision"],
                            e["time"].as_str().unwrap_or(""),
                            e["actor"].as_str().unwrap_or(""),
                            e["action"].as_str().unwrap_or(""),
                            e["target"].as_str().unwrap_or(""),
                            e["result"].as_str().unwrap_or("")
                        )
                    })
                    .collect(),
                Value::Array(arr),
            )
        }
        Cmd::Pki { .. } => unreachable_pki(),
    })
}

fn unreachable_pki() -> (String, Value) {
    // `pki` is handled before connecting; this arm exists only to keep the match exhaustive.
    (String::new(), Value::Null)
}

fn sim_request(v: &Value) -> Result<pb::SimulatedRequest, String> {
    let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let time = match v.get("time").and_then(Value::as_str) {
        Some(t) => {
            let t: jiff::Timestamp = t.parse().map_err(|e| format!("time {t:?}: {e}"))?;
            Some(prost_types::Timestamp {
                seconds: t.as_second(),
                nanos: t.subsec_nanosecond(),
            })
        }
        None => None,
    };
    let identity = v.get("identity").map(|i| {
        let g = |k: &str| i.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        pb::SimulatedIdentity {
            identity_provider: g("identity_provider"),
            subject: g("subject"),
            email: g("email"),
            groups: i
                .get("groups")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
            claims: i
                .get("claims")
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default(),
            mfa_method: g("mfa_method"),
            mfa_age: i.get("mfa_age_seconds").and_then(Value::as_i64).map(|s| {
                prost_types::Duration {
                    seconds: s,
                    nanos: 0,
                }
            }),
        }
    });
    let device = v.get("device").map(|d| {
        let g = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let state = match g("state").as_str() {
            "enrolled" | "" => pb::DeviceState::Enrolled,
            "wiped" => pb::DeviceState::Wiped,
            "revoked" => pb::DeviceState::Revoked,
            _ => pb::DeviceState::Pending,
        };
        let os = palisade_controller::convert::os_to_pb(&g("os"));
        pb::SimulatedDevice {
            id: g("id"),
            state: state as i32,
            posture: Some(pb::DevicePosture {
                os: os as i32,
                client_version: g("client_version"),
                mandatory_auth: d
                    .get("mandatory_auth")
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
                ..Default::default()
            }),
            groups: d
                .get("groups")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        }
    });
    Ok(pb::SimulatedRequest {
        label: s("label"),
        host: s("host"),
        path: s("path"),
        protocol: s("protocol"),
        source_ip: s("source_ip"),
        time,
        identity,
        device,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let output = cli.output;
    match run(cli).await {
        Ok((text, value)) => {
            match output {
                Output::Human => print!("{text}"),
                Output::Json => println!(
                    "{}",
                    serde_json::to_string_pretty(&value).unwrap_or_default()
                ),
            }
            ExitCode::SUCCESS
        }
        Err(f) => {
            match output {
                Output::Human => {
                    eprintln!("error: {}", f.message);
                    for d in &f.details {
                        eprintln!("  {d}");
                    }
                }
                Output::Json => println!(
                    "{}",
                    json!({"error": f.message, "details": f.details, "exit_code": f.code})
                ),
            }
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // Catches clashing argument names and types between global and subcommand flags.
        super::Cli::command().debug_assert();
    }
}
