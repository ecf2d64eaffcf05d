//! Views, tokens and callers for the unit tests: one policy with an application per kind of
//! verdict, one signing key, and tokens signed with it.

use palisade_policy::catalog::{FactorKind, FactorRecord, UserKey};
use palisade_policy::document::MfaMethod;
use palisade_policy::request::{Identity, MfaProof};
use palisade_policy::token::{MfaClaims, SessionClaims, SigningKey, TokenKind};

use crate::session::Caller;
use crate::view::{Change, View};

/// The time every fixture is built around (unix seconds).
pub const NOW: i64 = 1_800_000_000;

/// One application per verdict; hosts name what they test.
pub const POLICY: &str = r#"{
  "schema_version": 1,
  "identity_providers": [
    {"id": "corp", "issuer": "https://login.example.com", "client_id": "edge",
     "client_secret_ref": "corp-oidc"},
    {"id": "partner", "issuer": "https://partner.example.net", "client_id": "edge",
     "client_secret_ref": "partner-oidc"}
  ],
  "apps": [
    {"id": "public", "mfa": {"required": false}, "hosts": ["public.test"], "upstreams": ["http://127.0.0.1:9"],
     "rules": [{"name": "everyone", "decision": "bypass", "include": [{"everyone": true}]}]},
    {"id": "wiki", "mfa": {"required": false}, "hosts": ["wiki.test"], "upstreams": ["http://127.0.0.1:9"],
     "identity_providers": ["corp"],
     "rules": [
       {"name": "no-contractors", "decision": "deny", "include": [{"group": "contractors"}]},
       {"name": "staff", "decision": "allow", "include": [{"group": "staff"}]}
     ]},
    {"id": "db", "hosts": ["db.test"], "upstreams": ["http://127.0.0.1:9"],
     "identity_providers": ["corp"],
     "mfa": {"required": true, "methods": ["security_key", "platform"], "max_age": "30m"},
     "rules": [{"name": "dbas", "decision": "allow", "include": [{"group": "staff"}]}]},
    {"id": "ops", "mfa": {"required": false}, "hosts": ["ops.test"], "upstreams": ["http://127.0.0.1:9"],
     "staleness": {"mode": "fail_closed", "max_staleness": "30s"},
     "rules": [{"name": "staff", "decision": "allow", "include": [{"group": "staff"}]}]},
    {"id": "quic", "mfa": {"required": false}, "hosts": ["quic.test"], "upstreams": ["http://127.0.0.1:9"],
     "protocols": ["h3"],
     "rules": [{"name": "staff", "decision": "allow", "include": [{"group": "staff"}]}]},
    {"id": "laptops", "mfa": {"required": false}, "hosts": ["laptops.test"], "upstreams": ["http://127.0.0.1:9"],
     "rules": [{"name": "managed-staff", "decision": "allow",
                "include": [{"group": "staff"}],
                "require": [{"device": {"enrolled": true, "os": ["linux"]}}, {"device_group": "fleet"}]}]},
    {"id": "api", "mfa": {"required": false}, "hosts": ["wiki.test"], "path_prefixes": ["/API/"],
     "upstreams": ["http://127.0.0.1:9"],
     "rules": [{"name": "staff", "decision": "allow", "include": [{"group": "staff"}]}]}
  ]
}"#;

/// A user of the `corp` provider.
pub fn user(subject: &str) -> UserKey {
    UserKey {
        provider: "corp".into(),
        subject: subject.into(),
    }
}

/// An active factor of `subject`.
pub fn factor(id: &str, subject: &str, kind: FactorKind) -> FactorRecord {
    FactorRecord {
        id: id.into(),
        user: user(subject),
        kind,
        name: format!("{kind:?}"),
        created_at_ms: 1_000,
        credential_json: String::new(),
        credential_id: String::new(),
        sign_count: 0,
        active: true,
        revision: 1,
        revoked_at_ms: 0,
        confirm_attempts: 0,
        binding_sha256: String::new(),
    }
}

/// An enrolled Linux device `dev-1` in group `fleet`, holding the certificate whose
/// fingerprint is `"ab"` repeated.
pub fn device() -> palisade_policy::catalog::DeviceRecord {
    use palisade_policy::catalog::{DeviceCertificate, DeviceRecord, DeviceState, Posture};
    DeviceRecord {
        id: "dev-1".into(),
        owner: "alice@example.com".into(),
        serial: "S1".into(),
        display_name: "laptop".into(),
        groups: vec!["fleet".into()],
        state: DeviceState::Enrolled,
        posture: Posture {
            os: "linux".into(),
            reported_at_ms: (NOW - 60) * 1000,
            ..Posture::default()
        },
        enrollment_token_sha256: String::new(),
        enrollment_expires_at_ms: 0,
        certificate: Some(DeviceCertificate {
            fingerprint_sha256: "ab".repeat(32),
            not_after_ms: (NOW + 3600) * 1000,
        }),
        enrolled_at_ms: (NOW - 600) * 1000,
        posture_nonce_ms: 0,
        revision: 5,
    }
}

/// The signing key every fixture view holds.
pub fn key() -> SigningKey {
    SigningKey {
        kid: "k-1".into(),
        secret: vec![7; 32],
        active: true,
    }
}

/// A view with the policy, the key, and alice's security key `fac-key` and TOTP `fac-totp`.
pub fn view(extra: impl IntoIterator<Item = Change>) -> View {
    let base = [
        Change::PolicyApplied {
            version: 1,
            document_json: POLICY.into(),
        },
        Change::SigningKeyUpserted(key()),
        Change::FactorUpserted(factor("fac-key", "alice", FactorKind::SecurityKey)),
        Change::FactorUpserted(factor("fac-totp", "alice", FactorKind::Totp)),
    ];
    View::from_snapshot(10, base.into_iter().chain(extra)).expect("fixture view")
}

/// Session claims of `subject` in `groups` for `host`, issued at `NOW - 60`.
pub fn session(subject: &str, groups: &[&str], host: &str) -> SessionClaims {
    SessionClaims {
        sid: format!("sid-{subject}"),
        idp: "corp".into(),
        sub: subject.into(),
        email: format!("{subject}@example.com"),
        name: String::new(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        claims: Default::default(),
        aud: host.into(),
        iat: NOW - 60,
        exp: NOW + 3600,
        last_active: NOW - 60,
        idle_secs: 1800,
        rev: 10,
        did: String::new(),
    }
}

/// `claims` signed as a session token with the fixture key.
pub fn session_token(view: &View, claims: &SessionClaims) -> String {
    view.keyring
        .sign(TokenKind::Session, claims)
        .expect("sign session")
}

/// An MFA assertion for `session`, passed with `factor_id` at `auth_time`.
pub fn mfa_token(
    view: &View,
    session: &SessionClaims,
    method: MfaMethod,
    factor_id: &str,
    auth_time: i64,
) -> String {
    let claims = MfaClaims {
        sid: session.sid.clone(),
        sub: session.sub.clone(),
        method,
        factor_id: factor_id.into(),
        auth_time,
        exp: auth_time + 3600,
        uv: method == MfaMethod::Platform,
    };
    view.keyring
        .sign(TokenKind::Mfa, &claims)
        .expect("sign mfa")
}

/// A caller who passed a factor at `auth_time`.
pub fn caller_with_mfa(auth_time: i64) -> Caller {
    let s = session("alice", &["staff"], "db.test");
    Caller {
        identity: Identity {
            provider: s.idp.clone(),
            subject: s.sub.clone(),
            email: s.email.clone(),
            groups: s.groups.clone(),
            claims: Default::default(),
            mfa: Some(MfaProof {
                method: MfaMethod::SecurityKey,
                factor_id: "fac-key".into(),
                authenticated_at: jiff::Timestamp::from_second(auth_time).expect("time"),
                user_verified: false,
            }),
            session: None,
        },
        session: s,
        mfa_token: None,
    }
}
