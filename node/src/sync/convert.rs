//! The sync boundary: catalog objects as they arrive on the edge stream, converted once into
//! the domain types the enforcement core holds (`palisade_edge_core::view::Change`). Whatever
//! does not convert (a missing field, an unknown enum value, a timestamp out of range) is
//! refused with a `ReplicaError`, and the replica keeps its last good view.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use palisade_edge_core::view::{Change, Delta, ReplicaError, View};
use palisade_policy::catalog::{
    Counters, DeviceCertificate, DeviceRecord, DeviceState, FactorKind, FactorRecord, Posture,
    RevocationTarget, TunnelSessionRecord, UserKey,
};
use palisade_policy::token::SigningKey;
use palisade_proto::v1 as pb;

/// Unix milliseconds of a wire timestamp (0 when absent).
fn ms(t: Option<&prost_types::Timestamp>) -> i64 {
    t.map(|t| {
        t.seconds
            .saturating_mul(1000)
            .saturating_add(i64::from(t.nanos) / 1_000_000)
    })
    .unwrap_or(0)
}

fn invalid(what: &'static str, id: &str, reason: &'static str) -> ReplicaError {
    ReplicaError::Invalid {
        what,
        id: id.to_string(),
        reason,
    }
}

/// A revocation in force.
pub fn revocation(r: &pb::Revocation) -> Result<Change, ReplicaError> {
    use pb::revocation_target::Target as T;
    let target = match r
        .target
        .as_ref()
        .and_then(|t| t.target.as_ref())
        .ok_or(ReplicaError::Malformed("revocation"))?
    {
        T::SessionId(s) => RevocationTarget::Session(s.clone()),
        T::DeviceId(d) => RevocationTarget::Device(d.clone()),
        T::FactorId(f) => RevocationTarget::Factor(f.clone()),
        T::TunnelSessionId(t) => RevocationTarget::TunnelSession(t.clone()),
        T::User(u) => RevocationTarget::User {
            user: UserKey {
                provider: u.identity_provider.clone(),
                subject: u.subject.clone(),
            },
            issued_before: u.issued_before.map(|t| t.seconds).unwrap_or(0),
        },
    };
    Ok(Change::RevocationAdded {
        id: r.id.clone(),
        revision: r.revision,
        target,
    })
}

/// A device record (its public part: no enrollment token hash reaches an edge).
/// A tunnel session from the wire: every field it is checked by is required.
pub fn tunnel_session(t: &pb::TunnelSession) -> Result<TunnelSessionRecord, ReplicaError> {
    if t.id.is_empty() || t.device_id.is_empty() || t.session_id.is_empty() {
        return Err(invalid(
            "tunnel session",
            &t.id,
            "id, device and session are required",
        ));
    }
    let expires_at_ms = ms(t.expires_at.as_ref());
    if expires_at_ms == 0 {
        return Err(invalid("tunnel session", &t.id, "no expiry"));
    }
    Ok(TunnelSessionRecord {
        id: t.id.clone(),
        device_id: t.device_id.clone(),
        user: UserKey {
            provider: t.identity_provider.clone(),
            subject: t.subject.clone(),
        },
        session_id: t.session_id.clone(),
        edge_id: t.edge_id.clone(),
        opened_at_ms: ms(t.opened_at.as_ref()),
        expires_at_ms,
        revision: t.revision,
    })
}

pub fn device(d: &pb::Device) -> Result<DeviceRecord, ReplicaError> {
    let state = match pb::DeviceState::try_from(d.state) {
        Ok(pb::DeviceState::Pending) => DeviceState::Pending,
        Ok(pb::DeviceState::Enrolled) => DeviceState::Enrolled,
        Ok(pb::DeviceState::Wiped) => DeviceState::Wiped,
        Ok(pb::DeviceState::Revoked) => DeviceState::Revoked,
        Ok(pb::DeviceState::Unspecified) | Err(_) => {
            return Err(invalid("device", &d.id, "unknown state"));
        }
    };
    let posture = d
        .posture
        .as_ref()
        .map(|p| Posture {
            os: pb::OsFamily::name_of(p.os).to_string(),
            os_version: p.os_version.clone(),
            client_version: p.client_version.clone(),
            mandatory_auth: p.mandatory_auth,
            disk_encrypted: p.disk_encrypted,
            firewall_enabled: p.firewall_enabled,
            screen_lock: p.screen_lock,
            mdm_provider: p.mdm_provider.clone(),
            mdm_compliant: p.mdm_compliant,
            reported_at_ms: ms(p.reported_at.as_ref()),
        })
        .unwrap_or_default();
    let certificate = match (d.certificate_fingerprint.as_str(), &d.certificate_not_after) {
        ("", _) => None,
        (fp, Some(until)) => Some(DeviceCertificate {
            fingerprint_sha256: fp.to_ascii_lowercase(),
            not_after_ms: ms(Some(until)),
        }),
        (_, None) => {
            return Err(invalid("device", &d.id, "certificate without an expiry"));
        }
    };
    Ok(DeviceRecord {
        id: d.id.clone(),
        owner: d.owner.clone(),
        serial: d.serial.clone(),
        display_name: d.display_name.clone(),
        groups: d.groups.clone(),
        state,
        posture,
        enrollment_token_sha256: String::new(),
        enrollment_expires_at_ms: 0,
        certificate,
        enrolled_at_ms: ms(d.enrolled_at.as_ref()),
        posture_nonce_ms: 0,
        revision: d.revision,
    })
}

/// A factor's public part. A WebAuthn credential id arrives as the catalog's base64url text;
/// raw bytes are encoded to it.
pub fn factor(f: &pb::Factor) -> Result<FactorRecord, ReplicaError> {
    let kind = match pb::FactorKind::try_from(f.kind) {
        Ok(pb::FactorKind::Totp) => FactorKind::Totp,
        Ok(pb::FactorKind::SecurityKey) => FactorKind::SecurityKey,
        Ok(pb::FactorKind::Platform) => FactorKind::Platform,
        Ok(pb::FactorKind::Unspecified) | Err(_) => {
            return Err(invalid("factor", &f.id, "unknown kind"));
        }
    };
    let (credential_id, credential_json, sign_count) = match (&f.webauthn, kind) {
        (_, FactorKind::Totp) => (String::new(), String::new(), 0),
        (None, _) => {
            return Err(invalid(
                "factor",
                &f.id,
                "WebAuthn factor without a credential",
            ));
        }
        (Some(w), _) => {
            let id = match std::str::from_utf8(&w.credential_id) {
                Ok(s) if !s.is_empty() && URL_SAFE_NO_PAD.decode(s).is_ok() => s.to_string(),
                _ => URL_SAFE_NO_PAD.encode(&w.credential_id),
            };
            (id, w.credential_json.clone(), w.sign_count)
        }
    };
    Ok(FactorRecord {
        id: f.id.clone(),
        user: UserKey {
            provider: f.identity_provider.clone(),
            subject: f.subject.clone(),
        },
        kind,
        name: f.name.clone(),
        created_at_ms: ms(f.created_at.as_ref()),
        credential_json,
        credential_id,
        sign_count,
        active: !f.pending,
        revision: f.revision,
        revoked_at_ms: 0,
        confirm_attempts: 0,
        binding_sha256: String::new(),
    })
}

/// A session signing key.
pub fn signing_key(k: &pb::SigningKey) -> SigningKey {
    SigningKey {
        kid: k.kid.clone(),
        secret: k.secret.clone(),
        active: k.state == pb::SigningKeyState::Active as i32,
    }
}

/// A user's MFA counters.
pub fn counters(c: &pb::UserCounters) -> Change {
    Change::CountersUpdated(
        UserKey {
            provider: c.identity_provider.clone(),
            subject: c.subject.clone(),
        },
        Counters {
            totp_last_step: c.totp_last_step,
            failed_attempts: c.failed_attempts,
            locked_until_ms: ms(c.locked_until.as_ref()),
            last_attempt: 0,
            locked_by: 0,
        },
    )
}

/// One snapshot entry, as the upsert it amounts to (`None` for what edges do not hold).
pub fn entry(e: pb::CatalogEntry) -> Result<Option<Change>, ReplicaError> {
    use pb::catalog_entry::Entry as E;
    Ok(Some(
        match e.entry.ok_or(ReplicaError::Malformed("snapshot entry"))? {
            E::Policy(p) => Change::PolicyApplied {
                version: p.version,
                document_json: p.document_json,
            },
            E::Revocation(r) => revocation(&r)?,
            E::Device(d) => Change::DeviceUpserted(device(&d)?),
            E::Factor(f) => Change::FactorUpserted(factor(&f)?),
            E::SigningKey(k) => Change::SigningKeyUpserted(signing_key(&k)),
            E::Secret(s) => Change::SecretUpserted {
                name: s.name,
                value: s.value,
            },
            E::Counters(c) => counters(&c),
            E::DeviceCa(ca) => Change::DeviceCaSet(ca.certificate_pem),
            E::TunnelSession(t) => Change::TunnelSessionUpserted(tunnel_session(&t)?),
        },
    ))
}

/// One delta change (`None` for what edges do not hold).
pub fn change(c: &pb::CatalogChange) -> Result<Option<Change>, ReplicaError> {
    use pb::catalog_change::Change as C;
    Ok(Some(
        match c
            .change
            .as_ref()
            .ok_or(ReplicaError::Malformed("delta change"))?
        {
            C::PolicyApplied(p) => Change::PolicyApplied {
                version: p.version,
                document_json: p.document_json.clone(),
            },
            C::RevocationAdded(r) => revocation(r)?,
            C::RevocationExpired(id) => Change::RevocationExpired(id.clone()),
            C::DeviceUpserted(d) => Change::DeviceUpserted(device(d)?),
            C::DeviceRemoved(id) => Change::DeviceRemoved(id.clone()),
            C::FactorUpserted(f) => Change::FactorUpserted(factor(f)?),
            C::FactorRemoved(id) => Change::FactorRemoved(id.clone()),
            C::SigningKeyUpserted(k) => Change::SigningKeyUpserted(signing_key(k)),
            C::SigningKeyRemoved(kid) => Change::SigningKeyRemoved(kid.clone()),
            C::SecretUpserted(s) => Change::SecretUpserted {
                name: s.name.clone(),
                value: s.value.clone(),
            },
            C::SecretRemoved(name) => Change::SecretRemoved(name.clone()),
            C::CountersUpdated(c) => counters(c),
            C::DeviceCaSet(ca) => Change::DeviceCaSet(ca.certificate_pem.clone()),
            C::TunnelSessionUpserted(t) => Change::TunnelSessionUpserted(tunnel_session(t)?),
            C::TunnelSessionRemoved(id) => Change::TunnelSessionRemoved(id.clone()),
        },
    ))
}

/// A view from a complete snapshot at `revision`, converted from the wire.
pub fn snapshot(revision: u64, entries: Vec<pb::CatalogEntry>) -> Result<View, ReplicaError> {
    let mut changes = Vec::with_capacity(entries.len());
    for e in entries {
        changes.extend(entry(e)?);
    }
    View::from_snapshot(revision, changes)
}

/// The view after a wire delta, or why it was refused (`view` stays as it is).
pub fn apply(view: &View, delta: &pb::CatalogDelta) -> Result<View, ReplicaError> {
    let mut changes = Vec::with_capacity(delta.changes.len());
    for c in &delta.changes {
        changes.extend(change(c)?);
    }
    view.apply(Delta {
        revision: delta.revision,
        prev_revision: delta.prev_revision,
        changes,
    })
}
