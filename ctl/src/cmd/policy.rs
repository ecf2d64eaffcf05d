//! `palisadectl apply`, `diff`, `simulate`, `get`, `history` and `rollback`: the policy
//! document and its versions.

use std::path::PathBuf;

use clap::Subcommand;
use palisade_link::admin::AdminClient;
use palisade_policy::SimRequestSpec;
use palisade_proto::v1 as pb;
use serde_json::{Value, json};

use crate::input::{first_page, local, read_file};
use crate::report::{Failure, Report, invalid_document, ts};

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCmd {
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

pub(crate) async fn run(c: &AdminClient, cmd: PolicyCmd) -> Result<Report, Failure> {
    Ok(match cmd {
        PolicyCmd::Apply {
            file,
            message,
            expected_version,
        } => {
            let r = call!(
                c,
                policy_service_client::PolicyServiceClient,
                apply_policy,
                pb::ApplyPolicyRequest {
                    document_json: read_file(&file)?,
                    comment: message,
                    expected_version
                }
            );
            let v = r.version.unwrap_or_default();
            let w = r.write.unwrap_or_default();
            let d = r.diff.unwrap_or_default();
            Report::new(
                format!(
                    "applied policy version {} at revision {}\n{}",
                    v.version,
                    w.revision,
                    diff_human(&d)
                ),
                json!({"version": version_json(&v), "revision": w.revision, "diff": diff_json(&d)}),
            )
        }
        PolicyCmd::Diff { file, against } => {
            let r = call!(
                c,
                policy_service_client::PolicyServiceClient,
                diff_policy,
                pb::DiffPolicyRequest {
                    document_json: read_file(&file)?,
                    against_version: against
                }
            );
            if !r.violations.is_empty() {
                return Err(invalid_document(&r.violations));
            }
            let d = r.diff.unwrap_or_default();
            Report::new(diff_human(&d), diff_json(&d))
        }
        PolicyCmd::Simulate { requests, file } => simulate(c, requests, file).await?,
        PolicyCmd::Get { version, local } => {
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
                Some(v) => Report::new(
                    format!("{}\n", v.document_json),
                    json!({"version": version_json(&v), "document": serde_json::from_str::<Value>(&v.document_json).unwrap_or(Value::Null), "local_read": r.read.map(|x| x.local)}),
                ),
                None => Report::new("no policy has been applied yet\n", Value::Null),
            }
        }
        PolicyCmd::History => {
            let r = call!(
                c,
                policy_service_client::PolicyServiceClient,
                list_policy_history,
                pb::ListPolicyHistoryRequest {
                    page: first_page(1000),
                    consistency: 0
                }
            );
            let rows = r
                .versions
                .iter()
                .map(|v| {
                    // `note`: the comment as the table shows it, with where a rollback led.
                    let mut row = version_json(v);
                    row["note"] = if v.rolled_back_from > 0 {
                        json!(format!(
                            "{} (rollback to v{})",
                            v.comment, v.rolled_back_from
                        ))
                    } else {
                        json!(v.comment)
                    };
                    row
                })
                .collect();
            Report::table(
                &[
                    ("VERSION", "version"),
                    ("REVISION", "revision"),
                    ("APPLIED", "applied_at"),
                    ("AUTHOR", "author"),
                    ("COMMENT", "note"),
                ],
                rows,
            )
        }
        PolicyCmd::Rollback { to, message } => {
            let r = call!(
                c,
                policy_service_client::PolicyServiceClient,
                rollback_policy,
                pb::RollbackPolicyRequest {
                    to_version: to,
                    comment: message
                }
            );
            let v = r.version.unwrap_or_default();
            let w = r.write.unwrap_or_default();
            Report::new(
                format!(
                    "restored version {to} as version {} at revision {}\n",
                    v.version, w.revision
                ),
                json!({"version": version_json(&v), "revision": w.revision}),
            )
        }
    })
}

async fn simulate(
    c: &AdminClient,
    requests: PathBuf,
    file: Option<PathBuf>,
) -> Result<Report, Failure> {
    let document_json = match file {
        Some(f) => read_file(&f)?,
        None => String::new(),
    };
    let specs: Vec<SimRequestSpec> = serde_json::from_str(&read_file(&requests)?)
        .map_err(|e| local(format!("{}: {e}", requests.display())))?;
    let mut reqs = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        // The controller parses these again with the same parser; checking here names the
        // problem before anything is sent.
        spec.clone()
            .into_request(jiff::Timestamp::now())
            .map_err(|e| Failure::new(3, format!("requests[{i}]: {e}")))?;
        reqs.push(sim_pb(spec));
    }
    let r = call!(
        c,
        policy_service_client::PolicyServiceClient,
        simulate_policy,
        pb::SimulatePolicyRequest {
            document_json,
            requests: reqs
        }
    );
    if !r.violations.is_empty() {
        return Err(invalid_document(&r.violations));
    }
    let rows = r
        .results
        .iter()
        .map(|x| json!({"label": x.label, "application": x.application, "decision": x.decision, "rule": x.rule, "reason": x.reason, "mfa_methods": x.mfa_methods}))
        .collect();
    Ok(Report::table(
        &[
            ("LABEL", "label"),
            ("APPLICATION", "application"),
            ("DECISION", "decision"),
            ("REASON", "reason"),
        ],
        rows,
    ))
}

/// A checked request on the wire, field by field (the inverse of the controller's copy).
fn sim_pb(s: SimRequestSpec) -> pb::SimulatedRequest {
    let time = s
        .time
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| prost_types::Timestamp {
            seconds: t.as_second(),
            nanos: t.subsec_nanosecond(),
        });
    pb::SimulatedRequest {
        label: s.label,
        host: s.host,
        path: s.path,
        protocol: s.protocol,
        source_ip: s.source_ip,
        time,
        identity: s.identity.map(|i| pb::SimulatedIdentity {
            identity_provider: i.identity_provider,
            subject: i.subject,
            email: i.email,
            groups: i.groups,
            claims: i.claims.into_iter().collect(),
            mfa_method: i.mfa_method,
            mfa_age: Some(prost_types::Duration {
                seconds: i.mfa_age_seconds,
                nanos: 0,
            }),
        }),
        device: s.device.map(|d| {
            let state = match d.state.as_str() {
                "pending" => pb::DeviceState::Pending,
                "wiped" => pb::DeviceState::Wiped,
                "revoked" => pb::DeviceState::Revoked,
                _ => pb::DeviceState::Enrolled,
            };
            let os = pb::OsFamily::from_name(&d.os).unwrap_or_default();
            pb::SimulatedDevice {
                id: d.id,
                state: state as i32,
                posture: Some(pb::DevicePosture {
                    os: os as i32,
                    client_version: d.client_version,
                    mandatory_auth: d.mandatory_auth,
                    disk_encrypted: d.disk_encrypted,
                    firewall_enabled: d.firewall,
                    screen_lock: d.screen_lock,
                    mdm_compliant: d.mdm_compliant,
                    reported_at: d
                        .posture_reported_at
                        .parse::<jiff::Timestamp>()
                        .ok()
                        .map(|t| prost_types::Timestamp {
                            seconds: t.as_second(),
                            nanos: t.subsec_nanosecond(),
                        }),
                    ..Default::default()
                }),
                groups: d.groups,
            }
        }),
    }
}
