//! Conversions from the catalog's domain types to the wire types of the admin API. Secret
//! material is never copied into admin responses.

use palisade_policy::catalog as cat;
use palisade_proto::v1 as pb;

use crate::controller::ts;
use tonic::Status;

/// A wire actor.
pub fn actor(a: &cat::Actor) -> pb::Actor {
    pb::Actor {
        subject: a.subject.clone(),
        kind: crate::controller::actor_kind(&a.kind) as i32,
        role: 0,
        origin: String::new(),
    }
}

/// A policy version; `with_document` false leaves the document out.
pub fn policy_version(p: &cat::PolicyVersion, with_document: bool) -> pb::PolicyVersion {
    pb::PolicyVersion {
        version: p.version,
        revision: p.revision,
        author: Some(actor(&p.author)),
        applied_at: Some(ts(p.applied_at_ms)),
        comment: p.comment.clone(),
        document_json: if with_document {
            p.document_json.clone()
        } else {
            String::new()
        },
        digest: p.digest.clone(),
        rolled_back_from: p.rolled_back_from.unwrap_or(0),
    }
}

/// A revocation target.
pub fn target(t: &cat::RevocationTarget) -> pb::RevocationTarget {
    use pb::revocation_target::Target as T;
    let t = match t {
        cat::RevocationTarget::Session(s) => T::SessionId(s.clone()),
        cat::RevocationTarget::User {
            user,
            issued_before,
        } => T::User(pb::UserRevocation {
            subject: user.subject.clone(),
            identity_provider: user.provider.clone(),
            issued_before: (*issued_before > 0).then(|| ts(issued_before.saturating_mul(1000))),
        }),
        cat::RevocationTarget::Device(d) => T::DeviceId(d.clone()),
        cat::RevocationTarget::Factor(f) => T::FactorId(f.clone()),
        cat::RevocationTarget::TunnelSession(s) => T::TunnelSessionId(s.clone()),
    };
    pb::RevocationTarget { target: Some(t) }
}

/// A revocation target from the wire, validated.
pub fn target_from_pb(t: Option<pb::RevocationTarget>) -> Result<cat::RevocationTarget, String> {
    use pb::revocation_target::Target as T;
    let t = t
        .and_then(|t| t.target)
        .ok_or("target is required (session, user, device, factor or tunnel session)")?;
    let nonempty = |s: String, what: &str| {
        if s.trim().is_empty() {
            Err(format!("{what} must not be empty"))
        } else {
            Ok(s)
        }
    };
    Ok(match t {
        T::SessionId(s) => cat::RevocationTarget::Session(nonempty(s, "session id")?),
        T::DeviceId(s) => cat::RevocationTarget::Device(nonempty(s, "device id")?),
        T::FactorId(s) => cat::RevocationTarget::Factor(nonempty(s, "factor id")?),
        T::TunnelSessionId(s) => {
            cat::RevocationTarget::TunnelSession(nonempty(s, "tunnel session id")?)
        }
        T::User(u) => cat::RevocationTarget::User {
            user: cat::UserKey {
                provider: nonempty(u.identity_provider, "identity provider")?,
                subject: nonempty(u.subject, "subject")?,
            },
            // Optional: without it, the revocation covers sessions by revision alone.
            issued_before: u.issued_before.map(|t| t.seconds).unwrap_or(0),
        },
    })
}

/// A revocation.
pub fn revocation(r: &cat::Revocation) -> pb::Revocation {
    pb::Revocation {
        id: r.id.clone(),
        target: Some(target(&r.target)),
        reason: r.reason.clone(),
        actor: Some(actor(&r.actor)),
        created_at: Some(ts(r.created_at_ms)),
        expires_at: Some(ts(r.expires_at_ms)),
        revision: r.revision,
    }
}

/// A device state on the wire.
pub fn device_state(s: cat::DeviceState) -> pb::DeviceState {
    match s {
        cat::DeviceState::Pending => pb::DeviceState::Pending,
        cat::DeviceState::Enrolled => pb::DeviceState::Enrolled,
        cat::DeviceState::Wiped => pb::DeviceState::Wiped,
        cat::DeviceState::Revoked => pb::DeviceState::Revoked,
    }
}

/// The wire OS family of a catalog OS name (`macos`, `linux`, ...).
pub fn os_to_pb(os: &str) -> pb::OsFamily {
    pb::OsFamily::from_name(os).unwrap_or(pb::OsFamily::Unspecified)
}

/// The catalog's name of a wire OS family.
pub fn os_from_pb(os: i32) -> String {
    pb::OsFamily::name_of(os).to_string()
}

/// A device.
pub fn device(d: &cat::DeviceRecord) -> pb::Device {
    pb::Device {
        id: d.id.clone(),
        owner: d.owner.clone(),
        serial: d.serial.clone(),
        display_name: d.display_name.clone(),
        state: device_state(d.state) as i32,
        posture: Some(posture(&d.posture)),
        groups: d.groups.clone(),
        enrolled_at: (d.enrolled_at_ms > 0).then(|| ts(d.enrolled_at_ms)),
        certificate_fingerprint: d
            .certificate
            .as_ref()
            .map(|c| c.fingerprint_sha256.clone())
            .unwrap_or_default(),
        certificate_not_after: d.certificate.as_ref().map(|c| ts(c.not_after_ms)),
        revision: d.revision,
    }
}

/// A tunnel session on the wire.
pub fn tunnel_session(t: &cat::TunnelSessionRecord) -> pb::TunnelSession {
    pb::TunnelSession {
        id: t.id.clone(),
        device_id: t.device_id.clone(),
        subject: t.user.subject.clone(),
        identity_provider: t.user.provider.clone(),
        session_id: t.session_id.clone(),
        edge_id: t.edge_id.clone(),
        opened_at: Some(ts(t.opened_at_ms)),
        expires_at: Some(ts(t.expires_at_ms)),
        revision: t.revision,
    }
}

/// A posture on the wire (every field; unreported ones stay false or empty).
pub fn posture(p: &cat::Posture) -> pb::DevicePosture {
    pb::DevicePosture {
        os: os_to_pb(&p.os) as i32,
        os_version: p.os_version.clone(),
        client_version: p.client_version.clone(),
        mandatory_auth: p.mandatory_auth,
        disk_encrypted: p.disk_encrypted,
        firewall_enabled: p.firewall_enabled,
        screen_lock: p.screen_lock,
        mdm_provider: p.mdm_provider.clone(),
        mdm_compliant: p.mdm_compliant,
        reported_at: (p.reported_at_ms > 0).then(|| ts(p.reported_at_ms)),
    }
}

/// A reported posture into the catalog's, stamped `now_ms` (the report time is the
/// controller's, never the device's). Every field is kept; bad input is refused whole.
pub fn posture_from_pb(p: pb::DevicePosture, now_ms: i64) -> Result<cat::Posture, Status> {
    if !p.client_version.is_empty() && semver::Version::parse(&p.client_version).is_err() {
        return Err(Status::invalid_argument(format!(
            "client_version {:?} is not semver",
            p.client_version.chars().take(64).collect::<String>()
        )));
    }
    let long = [&p.os_version, &p.client_version, &p.mdm_provider]
        .into_iter()
        .any(|f| f.len() > 128);
    if long {
        return Err(Status::invalid_argument(
            "posture text fields are at most 128 bytes",
        ));
    }
    Ok(cat::Posture {
        os: os_from_pb(p.os),
        os_version: p.os_version,
        client_version: p.client_version,
        mandatory_auth: p.mandatory_auth,
        disk_encrypted: p.disk_encrypted,
        firewall_enabled: p.firewall_enabled,
        screen_lock: p.screen_lock,
        mdm_provider: p.mdm_provider,
        mdm_compliant: p.mdm_compliant,
        reported_at_ms: now_ms,
    })
}

/// A signing key on the wire, with `secret` as given (empty for admin listings, the unsealed
/// key only on edge streams).
pub fn signing_key(k: &cat::SigningKeyRecord, secret: Vec<u8>) -> pb::SigningKey {
    pb::SigningKey {
        kid: k.kid.clone(),
        algorithm: "HS256".into(),
        secret,
        state: if k.active {
            pb::SigningKeyState::Active as i32
        } else {
            pb::SigningKeyState::VerifyOnly as i32
        },
        created_at: Some(ts(k.created_at_ms)),
        retire_at: (k.retire_at_ms > 0).then(|| ts(k.retire_at_ms)),
    }
}

/// A factor (public part only).
pub fn factor(f: &cat::FactorRecord) -> pb::Factor {
    let kind = match f.kind {
        cat::FactorKind::Totp => pb::FactorKind::Totp,
        cat::FactorKind::SecurityKey => pb::FactorKind::SecurityKey,
        cat::FactorKind::Platform => pb::FactorKind::Platform,
    };
    pb::Factor {
        id: f.id.clone(),
        subject: f.user.subject.clone(),
        identity_provider: f.user.provider.clone(),
        kind: kind as i32,
        name: f.name.clone(),
        created_at: Some(ts(f.created_at_ms)),
        last_used_at: None,
        webauthn: (f.kind != cat::FactorKind::Totp).then(|| pb::WebauthnCredential {
            credential_id: f.credential_id.as_bytes().to_vec(),
            credential_json: f.credential_json.clone(),
            sign_count: f.sign_count,
            user_verified: f.kind == cat::FactorKind::Platform,
            aaguid: String::new(),
        }),
        revision: f.revision,
        pending: !f.active,
    }
}

/// Counters.
pub fn counters(user: &cat::UserKey, c: &cat::Counters) -> pb::UserCounters {
    pb::UserCounters {
        subject: user.subject.clone(),
        identity_provider: user.provider.clone(),
        totp_last_step: c.totp_last_step,
        failed_attempts: c.failed_attempts,
        locked_until: (c.locked_until_ms > 0)
            .then(|| ts(c.locked_until_ms.min(253_402_300_799_000))),
    }
}

/// An audit record.
pub fn audit(a: &cat::AuditRecord) -> pb::AuditEvent {
    pb::AuditEvent {
        id: format!("w-{}", a.revision),
        time: Some(ts(a.at_ms)),
        actor: Some(actor(&a.actor)),
        action: a.action.clone(),
        target: a.target.clone(),
        result: a.result.clone(),
        revision: a.revision,
        ..Default::default()
    }
}

/// A simulated request from the wire, field by field; `SimRequestSpec::into_request` parses it
/// (the same parser `palisadectl simulate` runs on its requests file). An unspecified device
/// state is a pending device, as it always was on the wire.
pub fn sim_spec(r: pb::SimulatedRequest) -> palisade_policy::SimRequestSpec {
    use palisade_policy::simulate::{SimDeviceSpec, SimIdentitySpec};
    palisade_policy::SimRequestSpec {
        label: r.label,
        host: r.host,
        path: r.path,
        protocol: r.protocol,
        source_ip: r.source_ip,
        time: r
            .time
            .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
            .map(|t| t.to_string())
            .unwrap_or_default(),
        identity: r.identity.map(|i| SimIdentitySpec {
            identity_provider: i.identity_provider,
            subject: i.subject,
            email: i.email,
            groups: i.groups,
            claims: i.claims.into_iter().collect(),
            mfa_method: i.mfa_method,
            mfa_age_seconds: i.mfa_age.map(|d| d.seconds).unwrap_or(0),
        }),
        device: r.device.map(|d| {
            let posture = d.posture.unwrap_or_default();
            let state = match pb::DeviceState::try_from(d.state).unwrap_or_default() {
                pb::DeviceState::Enrolled => "enrolled",
                pb::DeviceState::Wiped => "wiped",
                pb::DeviceState::Revoked => "revoked",
                pb::DeviceState::Pending | pb::DeviceState::Unspecified => "pending",
            };
            SimDeviceSpec {
                id: d.id,
                state: state.into(),
                os: os_from_pb(posture.os),
                client_version: posture.client_version,
                mandatory_auth: posture.mandatory_auth,
                groups: d.groups,
                disk_encrypted: posture.disk_encrypted,
                firewall: posture.firewall_enabled,
                screen_lock: posture.screen_lock,
                mdm_compliant: posture.mdm_compliant,
                posture_reported_at: posture
                    .reported_at
                    .and_then(|t| jiff::Timestamp::new(t.seconds, t.nanos).ok())
                    .map(|t| t.to_string())
                    .unwrap_or_default(),
            }
        }),
    }
}
