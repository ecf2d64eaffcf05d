//! `palisadectl revoke` and `palisadectl revocations`.

use clap::{Args, ValueEnum};
use palisade_link::admin::AdminClient;
use palisade_proto::v1 as pb;
use serde_json::json;

use crate::input::{duration, first_page, user};
use crate::report::{Failure, Report, ts};

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// What to revoke.
    #[arg(value_enum)]
    kind: RevokeKind,
    /// Session id, device id, factor id, or `provider/subject` for a user (an id may start
    /// with `-`).
    #[arg(allow_hyphen_values = true)]
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

pub(crate) async fn revoke(c: &AdminClient, a: RevokeArgs) -> Result<Report, Failure> {
    use pb::revocation_target::Target;
    let target = match a.kind {
        RevokeKind::Session => Target::SessionId(a.id),
        RevokeKind::Device => Target::DeviceId(a.id),
        RevokeKind::Factor => Target::FactorId(a.id),
        RevokeKind::User => {
            // No time from this machine's clock: the revocation covers every session issued
            // before it took effect, by catalog revision (one clock).
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
            reason: a.reason,
            ttl
        }
    );
    let rev = r.revocation.unwrap_or_default();
    let w = r.write.unwrap_or_default();
    Ok(Report::new(
        format!(
            "revoked ({}) at revision {}; expires {}\n",
            rev.id,
            w.revision,
            ts(&rev.expires_at)
        ),
        json!({"id": rev.id, "revision": w.revision, "expires_at": ts(&rev.expires_at)}),
    ))
}

/// What a revocation targets, for people and scripts alike (`user corp/alice`).
fn target(t: &Option<pb::RevocationTarget>) -> String {
    use pb::revocation_target::Target;
    match t.as_ref().and_then(|t| t.target.as_ref()) {
        Some(Target::SessionId(id)) => format!("session {id}"),
        Some(Target::DeviceId(id)) => format!("device {id}"),
        Some(Target::FactorId(id)) => format!("factor {id}"),
        Some(Target::TunnelSessionId(id)) => format!("tunnel session {id}"),
        Some(Target::User(u)) => format!("user {}/{}", u.identity_provider, u.subject),
        None => String::new(),
    }
}

pub(crate) async fn list(c: &AdminClient) -> Result<Report, Failure> {
    let r = call!(
        c,
        revocation_service_client::RevocationServiceClient,
        list_revocations,
        pb::ListRevocationsRequest {
            page: first_page(1000),
            consistency: 0
        }
    );
    let rows = r
        .revocations
        .iter()
        .map(|x| json!({"id": x.id, "revision": x.revision, "target": target(&x.target), "reason": x.reason, "actor": x.actor.as_ref().map(|a| a.subject.clone()), "expires_at": ts(&x.expires_at)}))
        .collect();
    Ok(Report::table(
        &[
            ("ID", "id"),
            ("REVISION", "revision"),
            ("TARGET", "target"),
            ("EXPIRES", "expires_at"),
            ("REASON", "reason"),
        ],
        rows,
    ))
}
