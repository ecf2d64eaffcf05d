//! `palisadectl factors`: users' MFA factors, lockouts and enrollment codes.

use clap::Subcommand;
use palisade_link::admin::AdminClient;
use palisade_proto::v1 as pb;
use serde_json::json;

use crate::input::user;
use crate::report::{Failure, Report, enum_name, ts};

#[derive(Debug, Subcommand)]
pub(crate) enum FactorCmd {
    /// List a user's factors and counters.
    List {
        /// `provider/subject`.
        user: String,
    },
    /// Remove a factor.
    Remove {
        #[arg(allow_hyphen_values = true)]
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

pub(crate) async fn run(c: &AdminClient, cmd: FactorCmd) -> Result<Report, Failure> {
    Ok(match cmd {
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
            let rows = r
                .factors
                .iter()
                .map(|f| {
                    let kind = pb::FactorKind::try_from(f.kind)
                        .map(|k| enum_name(k.as_str_name(), "FACTOR_KIND_"))
                        .unwrap_or_default();
                    json!({"id": f.id, "kind": kind, "name": f.name, "pending": f.pending, "created_at": ts(&f.created_at)})
                })
                .collect();
            let counters = r.counters.unwrap_or_default();
            let table = Report::table(
                &[
                    ("ID", "id"),
                    ("KIND", "kind"),
                    ("NAME", "name"),
                    ("CREATED", "created_at"),
                ],
                rows,
            );
            Report::new(
                format!(
                    "{}failed attempts: {}; locked until: {}\n",
                    table.text,
                    counters.failed_attempts,
                    ts(&counters.locked_until)
                ),
                json!({"factors": table.value, "failed_attempts": counters.failed_attempts, "locked_until": ts(&counters.locked_until)}),
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
            Report::new(
                format!(
                    "factor {id} removed at revision {}\n",
                    r.write.unwrap_or_default().revision
                ),
                json!({ "id": id }),
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
            Report::new(format!("{u} unlocked\n"), json!({ "user": u }))
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
            Report::new(
                format!(
                    "enrollment code for {u} (shown once): {}\nexpires {}\n",
                    r.code,
                    ts(&r.expires_at)
                ),
                json!({"code": r.code, "expires_at": ts(&r.expires_at)}),
            )
        }
    })
}
