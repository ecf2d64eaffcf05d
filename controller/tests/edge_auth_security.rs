//! `EdgeAuth` under attack, against real controller processes (review findings H1, M1, M2, M5,
//! M7): what an edge asks for on behalf of a user must not let a stolen SSO session, a burst of
//! guesses or a compromised edge get further than the factors allow.
//!
//! - a revoked TOTP factor is refused by the controller, also after its revocation record is
//!   gone, and a session or user revocation outlasts sessions issued under an earlier policy;
//! - a burst of concurrent wrong codes checks no more codes than the lockout allows, and the
//!   right code afterwards does not unlock;
//! - a pending enrollment takes five wrong first codes, then refuses even the right one;
//! - an edge that mints an MFA assertion with the catalog keys cannot pass it off as a recent
//!   factor, and edges receive only the secrets the policy references;
//! - once a user is locked out, failures write nothing more to Raft.

mod support;

use std::time::Duration;

use palisade_policy::document::MfaMethod;
use palisade_policy::token::{MfaClaims, TokenKind};
use palisade_proto::v1 as pb;
use pb::edge_auth_client::EdgeAuthClient;
use support::{Cluster, Options, edge_auth, eventually, replica};
use tonic::transport::Channel;

const T: Duration = Duration::from_secs(30);

const POLICY: &str = r#"{
  "schema_version": 1,
  "identity_providers": [{"id": "corp", "issuer": "https://login.example.com", "client_id": "edge", "client_secret_ref": "corp-oidc"}],
  "mfa": {"enrollment_requires_code": false},
  "apps": [{
    "id": "app", "hosts": ["app.example.com"], "upstreams": ["http://127.0.0.1:1"],
    "session": {"lifetime": "LIFETIME", "idle_timeout": "1m"},
    "rules": [{"name": "staff", "decision": "allow", "include": [{"email_domain": "example.com"}]}]
  }]
}"#;

fn policy(lifetime: &str) -> String {
    POLICY.replace("LIFETIME", lifetime)
}

async fn apply(c: &Cluster, doc: &str) -> u64 {
    let req = pb::ApplyPolicyRequest {
        document_json: doc.into(),
        comment: "security test".into(),
        expected_version: 0,
    };
    c.client()
        .call(|ch| {
            let req = req.clone();
            async move {
                pb::policy_service_client::PolicyServiceClient::new(ch)
                    .apply_policy(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .expect("apply")
        .write
        .unwrap_or_default()
        .revision
}

async fn put_secret(c: &Cluster, name: &str, value: &[u8]) {
    let req = pb::PutSecretRequest {
        name: name.into(),
        value: value.to_vec(),
    };
    c.client()
        .call(|ch| {
            let req = req.clone();
            async move {
                pb::key_service_client::KeyServiceClient::new(ch)
                    .put_secret(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .expect("secret");
}

/// `EdgeAuth` as edge `id`, at the first member.
fn user(subject: &str, sid: &str) -> pb::UserRef {
    pb::UserRef {
        identity_provider: "corp".into(),
        subject: subject.into(),
        session_id: sid.into(),
        email: format!("{subject}@example.com"),
        ..Default::default()
    }
}

fn totp(uri: &str) -> totp_rs::Totp {
    let secret = url_param(uri, "secret");
    totp_rs::Builder::new()
        .with_algorithm(totp_rs::Algorithm::SHA1)
        .with_digits(6)
        .with_skew(1)
        .with_step_duration(30)
        .with_secret(
            totp_rs::Secret::try_from_base32(secret.trim_end_matches('=')).expect("base32"),
        )
        .build()
        .expect("totp")
}

fn url_param(uri: &str, name: &str) -> String {
    uri.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .expect("param")
        .to_string()
}

/// The secret a browser keeps for its pending enrollment, and its hash for the controllers.
const BINDING: &[u8] = b"the browser's enrollment secret";

fn binding_sha256() -> String {
    use sha2::Digest;
    sha2::Sha256::digest(BINDING)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A code of a step that has not been used yet: the step after `used`, waiting for it.
async fn fresh_code(t: &totp_rs::Totp, used: &mut u64) -> String {
    loop {
        let step = now() / 30;
        if step > *used {
            *used = step;
            return t.generate(now()).to_string();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Enrolls a TOTP factor for `who` without any existing factor; returns (factor id, TOTP,
/// the step its first code used).
async fn enroll_totp(
    ea: &mut EdgeAuthClient<Channel>,
    who: &pb::UserRef,
) -> (String, totp_rs::Totp, u64) {
    let begun = ea
        .begin_totp_enrollment(pb::BeginTotpEnrollmentRequest {
            user: Some(who.clone()),
            name: "phone".into(),
            binding_sha256: binding_sha256(),
            ..Default::default()
        })
        .await
        .expect("begin")
        .into_inner();
    let t = totp(&begun.provisioning_uri);
    let mut used = 0;
    let code = fresh_code(&t, &mut used).await;
    ea.confirm_totp_enrollment(pb::ConfirmTotpEnrollmentRequest {
        user: Some(who.clone()),
        factor_id: begun.factor_id.clone(),
        code,
        binding: BINDING.to_vec(),
    })
    .await
    .expect("confirm");
    (begun.factor_id, t, used)
}

async fn verify(
    ea: &mut EdgeAuthClient<Channel>,
    who: &pb::UserRef,
    code: String,
) -> pb::VerifyTotpResponse {
    ea.verify_totp(pb::VerifyTotpRequest {
        user: Some(who.clone()),
        code,
        ..Default::default()
    })
    .await
    .expect("verify")
    .into_inner()
}

async fn commit_index(c: &Cluster) -> u64 {
    let leader = c.wait_leader(T).await;
    c.status(leader).await.expect("status").commit_index
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revoked_factors_and_sessions_stay_revoked() {
    let c = Cluster::start(1, 0, Options::default()).await;
    apply(&c, &policy("30d")).await;
    let mut ea = edge_auth(&c, "e1").await;
    let alice = user("alice", "s-alice");
    let (factor, t, mut used) = enroll_totp(&mut ea, &alice).await;

    // Revoke the factor; its code must be refused by the controller itself.
    let req = pb::RevokeRequest {
        target: Some(pb::RevocationTarget {
            target: Some(pb::revocation_target::Target::FactorId(factor.clone())),
        }),
        reason: "stolen phone".into(),
        ..Default::default()
    };
    c.client()
        .call(|ch| {
            let req = req.clone();
            async move {
                pb::revocation_service_client::RevocationServiceClient::new(ch)
                    .revoke(req)
                    .await
            }
        })
        .await
        .expect("revoke factor");
    let code = fresh_code(&t, &mut used).await;
    let r = verify(&mut ea, &alice, code).await;
    assert_ne!(
        r.result,
        pb::TotpResult::Ok as i32,
        "the controller accepted a code from a revoked factor: {r:?}"
    );

    // v1 issued 30-day sessions; v2 shortens lifetimes to a minute. A user revocation made
    // now must still cover the 30-day sessions.
    apply(&c, &policy("1m")).await;
    let req = pb::RevokeRequest {
        target: Some(pb::RevocationTarget {
            target: Some(pb::revocation_target::Target::User(pb::UserRevocation {
                subject: "alice".into(),
                identity_provider: "corp".into(),
                issued_before: Some(prost_types::Timestamp {
                    seconds: now() as i64,
                    nanos: 0,
                }),
            })),
        }),
        reason: "incident".into(),
        ..Default::default()
    };
    let rev = c
        .client()
        .call(|ch| {
            let req = req.clone();
            async move {
                pb::revocation_service_client::RevocationServiceClient::new(ch)
                    .revoke(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .expect("revoke user")
        .revocation
        .expect("revocation");
    let expires = rev.expires_at.expect("expiry").seconds;
    assert!(
        expires >= now() as i64 + 30 * 86_400,
        "the revocation expires in {}s, before sessions from policy v1",
        expires - now() as i64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_guesses_is_bounded_and_does_not_unlock() {
    let c = Cluster::start(1, 0, Options::default()).await;
    apply(&c, &policy("1h")).await;
    let mut ea = edge_auth(&c, "e1").await;
    let alice = user("alice", "s-alice");
    let (_, t, mut used) = enroll_totp(&mut ea, &alice).await;
    let right = t.generate(now()).to_string();
    let before_burst = commit_index(&c).await;
    // 300 concurrent wrong codes on one HTTP/2 connection.
    let calls = (0..300).map(|i| {
        let mut ea = ea.clone();
        let alice = alice.clone();
        let mut code = format!("{:06}", (i * 7919 + 13) % 1_000_000);
        if code == right {
            code = "000000".into();
        }
        async move {
            ea.verify_totp(pb::VerifyTotpRequest {
                user: Some(alice),
                code,
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner().result)
        }
    });
    let results = futures::future::join_all(calls).await;
    let checked = results
        .iter()
        .filter(|r| matches!(r, Ok(x) if *x == pb::TotpResult::Invalid as i32))
        .count();
    assert!(
        checked <= 5,
        "{checked} codes were checked in the burst; the lockout allows 5"
    );
    let writes = commit_index(&c).await - before_burst;
    assert!(
        writes <= 10,
        "the burst wrote {writes} Raft entries; refusals must not be proposed"
    );
    // Wrong codes one after the other lock the user out within five...
    let mut locked = false;
    for i in 0..6 {
        let bad = if right == "000000" {
            "111111"
        } else {
            "000000"
        };
        let r = verify(&mut ea, &alice, bad.into()).await;
        if r.result == pb::TotpResult::LockedOut as i32 {
            locked = true;
            break;
        }
        assert!(i < 5, "six wrong codes without a lock: {r:?}");
    }
    assert!(locked);
    // ...and then the right code is not even checked.
    let code = fresh_code(&t, &mut used).await;
    let r = verify(&mut ea, &alice, code).await;
    assert_eq!(
        r.result,
        pb::TotpResult::LockedOut as i32,
        "a locked user's code was checked: {r:?}"
    );

    // While locked, failures write nothing more to Raft.
    let before = commit_index(&c).await;
    for _ in 0..5 {
        let _ = ea
            .record_mfa_failure(pb::RecordMfaFailureRequest {
                user: Some(alice.clone()),
                ..Default::default()
            })
            .await;
        let _ = ea
            .verify_totp(pb::VerifyTotpRequest {
                user: Some(alice.clone()),
                code: "123456".into(),
                ..Default::default()
            })
            .await;
    }
    assert_eq!(
        commit_index(&c).await,
        before,
        "failures of a locked user were written"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_enrollment_takes_five_wrong_codes() {
    let c = Cluster::start(1, 0, Options::default()).await;
    apply(&c, &policy("1h")).await;
    let mut ea = edge_auth(&c, "e1").await;
    let alice = user("alice", "s-alice");
    let begun = ea
        .begin_totp_enrollment(pb::BeginTotpEnrollmentRequest {
            user: Some(alice.clone()),
            name: "phone".into(),
            binding_sha256: binding_sha256(),
            ..Default::default()
        })
        .await
        .expect("begin")
        .into_inner();
    let t = totp(&begun.provisioning_uri);
    let right = t.generate(now()).to_string();
    for i in 0..6 {
        let mut code = format!("{:06}", (i * 104_729 + 7) % 1_000_000);
        if code == right {
            code = "999999".into();
        }
        let _ = ea
            .confirm_totp_enrollment(pb::ConfirmTotpEnrollmentRequest {
                user: Some(alice.clone()),
                factor_id: begun.factor_id.clone(),
                code,
                binding: BINDING.to_vec(),
            })
            .await;
    }
    let mut used = 0;
    let code = fresh_code(&t, &mut used).await;
    // Without the browser's secret, even the right code is refused, with the same answer.
    let r = ea
        .confirm_totp_enrollment(pb::ConfirmTotpEnrollmentRequest {
            user: Some(alice.clone()),
            factor_id: begun.factor_id.clone(),
            code: code.clone(),
            binding: b"a guess".to_vec(),
        })
        .await
        .expect_err("wrong binding");
    let unknown = ea
        .confirm_totp_enrollment(pb::ConfirmTotpEnrollmentRequest {
            user: Some(alice.clone()),
            factor_id: "fac-999999".into(),
            code: code.clone(),
            binding: BINDING.to_vec(),
        })
        .await
        .expect_err("no such factor");
    assert_eq!(
        (r.code(), r.message()),
        (unknown.code(), unknown.message()),
        "refusals tell apart a wrong secret and an unknown factor"
    );
    let r = ea
        .confirm_totp_enrollment(pb::ConfirmTotpEnrollmentRequest {
            user: Some(alice.clone()),
            factor_id: begun.factor_id.clone(),
            code,
            binding: BINDING.to_vec(),
        })
        .await;
    assert!(
        r.is_err(),
        "the right code activated the factor after six wrong ones: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compromised_edge_cannot_forge_a_recent_factor_or_read_every_secret() {
    let c = Cluster::start(1, 0, Options::default()).await;
    put_secret(&c, "corp-oidc", b"client-secret").await;
    put_secret(&c, "unrelated", b"not-for-edges").await;
    let rev = apply(&c, &policy("1h")).await;
    let mut ea = edge_auth(&c, "e1").await;
    let bob = user("bob", "s-bob");
    let (bob_factor, _, _) = enroll_totp(&mut ea, &bob).await;

    let (r, _stop) = replica(&c, "e1");
    let view = eventually("the edge replica with a signing key", T, || async {
        r.view()
            .filter(|v| v.revision >= rev && v.keyring.active().is_some())
    })
    .await;
    assert!(
        !view.secrets.contains_key("unrelated"),
        "an edge received a secret no identity provider references"
    );
    assert!(view.secrets.contains_key("corp-oidc"));

    // The edge holds the signing keys, so it can mint an MFA assertion for bob...
    let now = now() as i64;
    let forged = view
        .keyring
        .sign(
            TokenKind::Mfa,
            &MfaClaims {
                sid: "forged-session".into(),
                sub: "bob".into(),
                method: MfaMethod::Totp,
                factor_id: bob_factor.clone(),
                auth_time: now,
                exp: now + 600,
                uv: false,
            },
        )
        .expect("sign");
    // ...but the controller must not take it as proof that bob passed a factor.
    let mut as_bob = user("bob", "forged-session");
    as_bob.mfa_assertion = forged;
    let r = ea
        .register_webauthn(pb::RegisterWebauthnRequest {
            user: Some(as_bob),
            kind: pb::FactorKind::SecurityKey as i32,
            name: "attacker's key".into(),
            credential: Some(pb::WebauthnCredential {
                credential_id: b"attacker-credential".to_vec(),
                credential_json: "{}".into(),
                ..Default::default()
            }),
            ..Default::default()
        })
        .await;
    assert!(
        r.is_err(),
        "a factor was planted for bob with a forged assertion: {r:?}"
    );
}

/// An edge whose call timed out repeats it at the next controller with the same idempotency
/// key (issue 12). A TOTP check is two writes (reserve an attempt, record the step); repeated,
/// it must get the first answers: the code accepted, one attempt counted, no "replayed".
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_repeated_code_check_gets_its_first_answer() {
    let c = Cluster::start(1, 0, Options::default()).await;
    apply(&c, &policy("30d")).await;
    let mut ea = edge_auth(&c, "e1").await;
    let alice = user("alice", "s-alice");
    let (factor, t, mut used) = enroll_totp(&mut ea, &alice).await;
    let code = fresh_code(&t, &mut used).await;
    let keyed = |key: &str| {
        let mut req = tonic::Request::new(pb::VerifyTotpRequest {
            user: Some(alice.clone()),
            code: code.clone(),
            ..Default::default()
        });
        req.metadata_mut().insert(
            palisade_link::IDEMPOTENCY_HEADER,
            key.parse().expect("metadata"),
        );
        req
    };
    let first = ea
        .verify_totp(keyed("check-0001"))
        .await
        .expect("first")
        .into_inner();
    assert_eq!(first.result, pb::TotpResult::Ok as i32, "{first:?}");
    let repeated = ea
        .verify_totp(keyed("check-0001"))
        .await
        .expect("repeat")
        .into_inner();
    assert_eq!(
        repeated.result,
        pb::TotpResult::Ok as i32,
        "a repeat with the same key must get the first answer: {repeated:?}"
    );
    assert_eq!(repeated.factor_id, factor);
    // The same code under another key is a new check: a replay, and its own attempt the only
    // one counted since the success (the repeat reserved no second attempt).
    let other = ea
        .verify_totp(keyed("check-0002"))
        .await
        .expect("other")
        .into_inner();
    assert_eq!(other.result, pb::TotpResult::Replayed as i32, "{other:?}");
    assert_eq!(other.failed_attempts, 1, "{other:?}");
}
