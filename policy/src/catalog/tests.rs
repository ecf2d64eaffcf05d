use super::*;

fn env(at_ms: i64, command: Command) -> Envelope {
    Envelope {
        actor: Actor {
            subject: "ops@example.com".into(),
            kind: "admin".into(),
        },
        at_ms,
        command,
        idempotency_key: None,
    }
}

/// Alice's pending TOTP factor with a sealed seed and `binding`.
fn totp_factor(binding: &str) -> Command {
    Command::AddFactor {
        user: alice(),
        kind: FactorKind::Totp,
        name: "phone".into(),
        credential_json: String::new(),
        credential_id: String::new(),
        totp_seed: Some(Sealed(vec![1; 40])),
        enrollment_code_sha256: None,
        binding_sha256: binding.into(),
    }
}

fn alice() -> UserKey {
    UserKey {
        provider: "corp".into(),
        subject: "alice".into(),
    }
}

const DOC: &str = r#"{"schema_version":1,"apps":[{"id":"s","hosts":["s.example.com"],"upstreams":["http://127.0.0.1:1"],"rules":[{"name":"r","decision":"bypass","include":[{"everyone":true}]}]}]}"#;

#[test]
fn policy_history_rollback_and_concurrency() {
    let mut c = Catalog::default();
    let apply = |doc: &str, expected| Command::ApplyPolicy {
        document_json: doc.into(),
        comment: "c".into(),
        expected_version: expected,
    };
    assert_eq!(
        c.apply(1, &env(10, apply(DOC, 0))).0,
        Ok(Outcome::Policy(1))
    );
    let doc2 = DOC.replace("s.example.com", "t.example.com");
    assert_eq!(
        c.apply(2, &env(20, apply(&doc2, 1))).0,
        Ok(Outcome::Policy(2))
    );
    assert_eq!(
        c.apply(3, &env(30, apply(DOC, 1))).0,
        Err(CommandError::VersionConflict {
            expected: 1,
            current: 2
        })
    );
    let (r, changes) = c.apply(
        4,
        &env(40, apply("{\"schema_version\":1,\"apps\":[{}]}", 0)),
    );
    assert!(matches!(r, Err(CommandError::InvalidPolicy(_))));
    assert!(changes.is_empty());
    assert_eq!(c.policy_history.len(), 2);
    assert_eq!(
        c.apply(
            5,
            &env(
                50,
                Command::RollbackPolicy {
                    to_version: 1,
                    comment: "back".into()
                }
            )
        )
        .0,
        Ok(Outcome::Policy(3))
    );
    let cur = c.current_policy().expect("current");
    assert_eq!(
        (
            cur.version,
            cur.revision,
            cur.rolled_back_from,
            cur.document_json.as_str()
        ),
        (3, 5, Some(1), DOC)
    );
    assert_eq!(cur.digest.len(), 64);
    assert_eq!(c.revision, 5);
}

#[test]
fn revocations_expire_by_garbage_collection() {
    let mut c = Catalog::default();
    let (r, ch) = c.apply(
        7,
        &env(
            1000,
            Command::Revoke {
                target: RevocationTarget::Session("s1".into()),
                reason: "stolen laptop".into(),
                expires_at_ms: 5000,
            },
        ),
    );
    assert_eq!(r, Ok(Outcome::Revocation("rev-7".into())));
    assert_eq!(ch, vec![Change::RevocationAdded("rev-7".into())]);
    // A session revocation is kept until every session it can cover has expired.
    let until = c.revocations["rev-7"].expires_at_ms;
    assert_eq!(until, 1000 + c.session_coverage_ms());
    assert!(
        c.apply(
            8,
            &env(
                1000,
                Command::Revoke {
                    target: RevocationTarget::Device("d".into()),
                    reason: " ".into(),
                    expires_at_ms: 5000
                }
            )
        )
        .0
        .is_err()
    );
    assert_eq!(
        c.apply(9, &env(until - 1, Command::CollectGarbage)).0,
        Ok(Outcome::Collected(0))
    );
    assert_eq!(
        c.apply(10, &env(until, Command::CollectGarbage)).1,
        vec![Change::RevocationRemoved("rev-7".into())]
    );
    assert!(c.revocations.is_empty());
}

fn create_device(serial: &str, token: &str, expires: i64) -> Command {
    Command::CreateDevice {
        owner: "alice@example.com".into(),
        serial: serial.into(),
        display_name: "mac".into(),
        groups: vec![],
        token_sha256: token.into(),
        token_expires_at_ms: expires,
    }
}

fn cert(c: char, not_after_ms: i64) -> DeviceCertificate {
    DeviceCertificate {
        fingerprint_sha256: c.to_string().repeat(64),
        not_after_ms,
    }
}

fn enroll(id: &str, token: &str, certificate: DeviceCertificate) -> Command {
    Command::EnrollDevice {
        id: id.into(),
        token_sha256: token.into(),
        certificate,
        posture: Posture {
            os: "macos".into(),
            firewall_enabled: true,
            ..Posture::default()
        },
    }
}

#[test]
fn device_lifecycle() {
    let mut c = Catalog::default();
    let token = "a".repeat(64);
    assert_eq!(
        c.apply(1, &env(0, create_device("C02X", &token, 100))).0,
        Ok(Outcome::Device("dev-1".into()))
    );
    assert_eq!(
        c.device_by_token(&token).map(|d| d.id.as_str()),
        Some("dev-1")
    );
    let set = |state| Command::SetDeviceState {
        id: "dev-1".into(),
        state,
    };
    assert!(
        c.apply(2, &env(50, set(DeviceState::Enrolled))).0.is_err(),
        "enrolling takes a certificate"
    );
    assert_eq!(
        c.apply(2, &env(100, enroll("dev-1", &token, cert('1', 1000))))
            .0,
        Err(CommandError::Invalid(
            "the enrollment token has expired".into()
        ))
    );
    assert_eq!(
        c.apply(
            2,
            &env(50, enroll("dev-1", &"b".repeat(64), cert('1', 1000)))
        )
        .0,
        Err(CommandError::Invalid(
            "the enrollment token is unknown or already used".into()
        ))
    );
    let (r, changes) = c.apply(3, &env(50, enroll("dev-1", &token, cert('1', 1000))));
    assert_eq!(r, Ok(Outcome::Device("dev-1".into())));
    assert_eq!(changes, vec![Change::Device("dev-1".into())]);
    let d = &c.devices["dev-1"];
    assert!(d.enrollment_token_sha256.is_empty() && d.state == DeviceState::Enrolled);
    assert_eq!((d.enrolled_at_ms, d.posture.reported_at_ms), (50, 50));
    assert!(d.posture.firewall_enabled && !d.posture.screen_lock);
    assert!(d.holds(&"1".repeat(64), 60) && !d.holds(&"1".repeat(64), 1000));
    assert!(
        c.apply(4, &env(60, enroll("dev-1", &token, cert('2', 1000))))
            .0
            .is_err(),
        "a token works once"
    );

    // Renewal needs the current certificate.
    let renew = |presented: char, new: DeviceCertificate| Command::RenewDeviceCertificate {
        id: "dev-1".into(),
        presented_sha256: presented.to_string().repeat(64),
        certificate: new,
    };
    assert!(c.apply(5, &env(60, renew('9', cert('2', 2000)))).0.is_err());
    assert!(c.apply(5, &env(60, renew('1', cert('2', 2000)))).0.is_ok());
    assert!(!c.devices["dev-1"].holds(&"1".repeat(64), 70));
    assert!(c.devices["dev-1"].holds(&"2".repeat(64), 70));
    assert!(
        c.apply(6, &env(60, renew('2', cert('3', 10)))).0.is_err(),
        "an expired certificate is refused"
    );

    // Wiped: the certificate is gone, the old token stays used.
    assert!(c.apply(7, &env(60, set(DeviceState::Wiped))).0.is_ok());
    assert!(!c.devices["dev-1"].holds(&"2".repeat(64), 70));
    assert!(
        c.apply(8, &env(60, enroll("dev-1", &token, cert('4', 1000))))
            .0
            .is_err()
    );

    // The same hardware enrolled again under a new record supersedes the old one.
    let t2 = "c".repeat(64);
    let t3 = "d".repeat(64);
    assert!(
        c.apply(9, &env(60, create_device("SER", &t2, 500)))
            .0
            .is_ok()
    );
    assert!(
        c.apply(10, &env(60, enroll("dev-9", &t2, cert('5', 1000))))
            .0
            .is_ok()
    );
    assert!(
        c.apply(11, &env(60, create_device("SER", &t3, 500)))
            .0
            .is_ok()
    );
    let (_, changes) = c.apply(12, &env(70, enroll("dev-11", &t3, cert('6', 1000))));
    assert_eq!(
        changes,
        vec![
            Change::Device("dev-9".into()),
            Change::Device("dev-11".into())
        ]
    );
    assert_eq!(c.devices["dev-9"].state, DeviceState::Wiped);
    assert!(!c.devices["dev-9"].holds(&"5".repeat(64), 80));
    assert!(c.devices["dev-11"].holds(&"6".repeat(64), 80));

    assert!(c.apply(13, &env(80, set(DeviceState::Revoked))).0.is_ok());
    assert!(
        c.apply(14, &env(80, set(DeviceState::Wiped))).0.is_err(),
        "revoked is final"
    );
    assert_eq!(
        c.apply(
            15,
            &env(
                60,
                Command::RecordPosture {
                    id: "nope".into(),
                    posture: Posture::default()
                }
            )
        )
        .0,
        Err(CommandError::NotFound {
            kind: "device".into(),
            id: "nope".into()
        })
    );
}

#[test]
fn the_device_ca_is_created_once() {
    let mut c = Catalog::default();
    let ca = |pem: &str| Command::CreateDeviceCa {
        certificate_pem: pem.into(),
        key: Sealed(vec![1, 2, 3]),
    };
    assert!(c.apply(1, &env(0, ca("junk"))).0.is_err());
    let pem = "-----BEGIN CERTIFICATE-----\nAA==\n-----END CERTIFICATE-----\n";
    let (r, changes) = c.apply(2, &env(0, ca(pem)));
    assert_eq!(
        (r, changes.clone()),
        (Ok(Outcome::Done), vec![Change::DeviceCa])
    );
    assert_eq!(c.resolve(&changes), vec![Resolved::DeviceCa(pem.into())]);
    assert!(c.apply(3, &env(0, ca(pem))).0.is_err(), "only one");
}

#[test]
fn totp_replay_lockout_and_unlock() {
    let mut c = Catalog::default();
    let add = totp_factor("");
    assert_eq!(
        c.apply(1, &env(0, add)).0,
        Ok(Outcome::Factor("fac-1".into()))
    );
    assert!(!c.factors["fac-1"].active);
    assert!(
        c.apply(
            2,
            &env(
                0,
                Command::ActivateTotp {
                    id: "fac-1".into(),
                    step: 100,
                    attempt: 0,
                }
            )
        )
        .0
        .is_ok()
    );
    assert_eq!(
        c.apply(
            3,
            &env(
                0,
                Command::RecordTotpUse {
                    user: alice(),
                    step: 100,
                    attempt: 0,
                    factor_id: String::new(),
                    session_id: String::new(),
                }
            )
        )
        .0,
        Err(CommandError::TotpReplayed)
    );
    assert!(
        c.apply(
            4,
            &env(
                0,
                Command::RecordTotpUse {
                    user: alice(),
                    step: 101,
                    attempt: 0,
                    factor_id: String::new(),
                    session_id: String::new(),
                }
            )
        )
        .0
        .is_ok()
    );
    let fail = || Command::RecordMfaFailure {
        user: alice(),
        challenge_sha256: String::new(),
    };
    let mut at = 1_000;
    for i in 0..MAX_FAILED_ATTEMPTS {
        let (r, _) = c.apply(10 + u64::from(i), &as_edge(at, fail()));
        let Ok(Outcome::Counters(k)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(k.failed_attempts, i + 1);
        if i + 1 < 5 {
            assert_eq!(k.locked_until_ms, 0);
        } else {
            assert!(k.locked_until_ms > at);
            // While locked, nothing more is counted (and nothing is written).
            let (r, ch) = c.apply(200 + u64::from(i), &as_edge(at, fail()));
            assert_eq!(
                r,
                Err(CommandError::LockedOut {
                    until_ms: k.locked_until_ms
                })
            );
            assert!(ch.is_empty());
            at = k.locked_until_ms.saturating_add(1).min(i64::MAX - 1);
        }
    }
    assert_eq!(
        c.counters(&alice()).locked_until_ms,
        i64::MAX,
        "locked for good at the limit"
    );
    assert!(
        c.apply(500, &env(0, Command::UnlockUser { user: alice() }))
            .0
            .is_ok()
    );
    assert_eq!(
        c.counters(&alice()),
        Counters {
            totp_last_step: 101,
            failed_attempts: 0,
            locked_until_ms: 0,
            last_attempt: 0,
            locked_by: 0,
        }
    );
    // Removing the factor removes its sealed seed too.
    assert!(
        c.apply(501, &env(0, Command::RemoveFactor { id: "fac-1".into() }))
            .0
            .is_ok()
    );
    assert!(c.totp_seeds.is_empty());
}

#[test]
fn webauthn_counter_must_advance() {
    let mut c = Catalog::default();
    let add = Command::AddFactor {
        user: alice(),
        kind: FactorKind::SecurityKey,
        name: "yubikey".into(),
        credential_json: "{}".into(),
        credential_id: "Y3JlZA".into(),
        totp_seed: None,
        enrollment_code_sha256: None,
        binding_sha256: String::new(),
    };
    assert!(c.apply(1, &env(0, add.clone())).0.is_ok());
    assert!(c.apply(2, &env(0, add)).0.is_err(), "same credential twice");
    let used = |n: u32| Command::RecordWebauthnUse {
        id: "fac-1".into(),
        sign_count: n,
        challenge_sha256: format!("challenge-{n}"),
        session_id: String::new(),
    };
    assert!(c.apply(3, &env(0, used(5))).0.is_ok());
    assert_eq!(
        c.apply(4, &env(0, used(5))).0,
        Err(CommandError::ChallengeUsed)
    );
    let mut again = used(5);
    if let Command::RecordWebauthnUse {
        challenge_sha256, ..
    } = &mut again
    {
        *challenge_sha256 = "fresh".into();
    }
    assert_eq!(
        c.apply(5, &env(0, again)).0,
        Err(CommandError::CounterRegressed)
    );
    assert_eq!(
        c.apply(6, &env(0, used(3))).0,
        Err(CommandError::CounterRegressed)
    );
    assert!(c.apply(7, &env(0, used(6))).0.is_ok());
    // Used challenges are forgotten once no challenge of that age could still be answered.
    let (r, _) = c.apply(8, &env(CHALLENGE_MEMORY_MS + 1, Command::CollectGarbage));
    assert_eq!(r, Ok(Outcome::Collected(2)));
    assert!(c.used_challenges.is_empty());
}

#[test]
fn enrollment_code_is_checked_and_consumed() {
    let mut c = Catalog::default();
    let hash = "a".repeat(64);
    let issue = Command::IssueEnrollmentCode {
        user: alice(),
        code_sha256: hash.clone(),
        expires_at_ms: 10_000,
    };
    assert!(c.apply(1, &env(0, issue)).0.is_ok());
    let add = |code: &str| Command::AddFactor {
        user: alice(),
        kind: FactorKind::SecurityKey,
        name: "key".into(),
        credential_json: "{}".into(),
        credential_id: format!("cred-{code}"),
        totp_seed: None,
        enrollment_code_sha256: Some(code.to_string()),
        binding_sha256: String::new(),
    };
    assert!(
        c.apply(2, &env(0, add(&"b".repeat(64)))).0.is_err(),
        "wrong code"
    );
    assert!(c.factors.is_empty());
    assert!(c.apply(3, &env(0, add(&hash))).0.is_ok());
    assert!(c.apply(4, &env(0, add(&hash))).0.is_err(), "used once");
}

#[test]
fn auth_events_are_kept_per_user_newest_first() {
    let mut c = Catalog::default();
    let ev = |i: i64| AuthEvent {
        user: alice(),
        at_ms: i,
        action: "login.oidc".into(),
        result: "ok".into(),
        edge_id: "edge-1".into(),
        request_id: format!("r{i}"),
        session_id: format!("s{i}"),
        details: Default::default(),
    };
    for i in 0..(AUTH_EVENTS_PER_USER as i64 + 5) {
        let (r, changes) = c.apply(
            1 + i as u64,
            &env(
                0,
                Command::RecordAuthEvents {
                    events: vec![ev(i)],
                },
            ),
        );
        assert!(r.is_ok());
        assert!(changes.is_empty(), "edges are not told");
    }
    let got: Vec<i64> = c.auth_events(&alice()).map(|e| e.at_ms).collect();
    assert_eq!(got.len(), AUTH_EVENTS_PER_USER);
    assert_eq!(got[0], AUTH_EVENTS_PER_USER as i64 + 4);
}

#[test]
fn key_rotation_overlap_then_retirement() {
    let mut c = Catalog::default();
    let _ = c.apply(
        1,
        &env(
            0,
            Command::RotateSigningKey {
                secret: Sealed(vec![1; 48]),
                overlap_ms: 0,
            },
        ),
    );
    let _ = c.apply(
        2,
        &env(
            1000,
            Command::RotateSigningKey {
                secret: Sealed(vec![2; 48]),
                overlap_ms: 500,
            },
        ),
    );
    assert!(!c.signing_keys["k-1"].active && c.signing_keys["k-2"].active);
    assert_eq!(
        c.apply(3, &env(1499, Command::CollectGarbage)).0,
        Ok(Outcome::Collected(0))
    );
    assert_eq!(
        c.apply(4, &env(1500, Command::CollectGarbage)).0,
        Ok(Outcome::Collected(1))
    );
    assert!(format!("{:?}", c.signing_keys["k-2"]).contains("Sealed(48 bytes)"));
}

#[test]
fn apply_is_deterministic() {
    let cmds = [
        Command::ApplyPolicy {
            document_json: DOC.into(),
            comment: String::new(),
            expected_version: 0,
        },
        Command::Revoke {
            target: RevocationTarget::User {
                user: alice(),
                issued_before: 5,
            },
            reason: "r".into(),
            expires_at_ms: 10_000,
        },
        Command::RecordMfaFailure {
            user: alice(),
            challenge_sha256: String::new(),
        },
        Command::PutSecret {
            name: "corp-oidc".into(),
            value: Sealed(vec![9; 20]),
        },
    ];
    let run = || {
        let mut c = Catalog::default();
        for (i, cmd) in cmds.iter().enumerate() {
            let _ = c.apply(i as u64 + 1, &env(100 * i as i64, cmd.clone()));
        }
        serde_json::to_string(&c).expect("serialize")
    };
    assert_eq!(run(), run());
}

fn as_edge(at_ms: i64, command: Command) -> Envelope {
    Envelope {
        actor: Actor {
            subject: "alice via edge-1".into(),
            kind: "user".into(),
        },
        at_ms,
        command,
        idempotency_key: None,
    }
}

fn key(name: &str) -> Command {
    Command::AddFactor {
        user: alice(),
        kind: FactorKind::SecurityKey,
        name: name.into(),
        credential_json: "{}".into(),
        credential_id: format!("cred-{name}"),
        totp_seed: None,
        enrollment_code_sha256: None,
        binding_sha256: String::new(),
    }
}

#[test]
fn a_revoked_factor_stays_revoked_after_its_revocation_is_collected() {
    let mut c = Catalog::default();
    assert!(c.apply(1, &env(0, key("yubikey"))).0.is_ok());
    let (r, _) = c.apply(
        2,
        &env(
            1_000,
            Command::Revoke {
                target: RevocationTarget::Factor("fac-1".into()),
                reason: "stolen key".into(),
                expires_at_ms: 61_000,
            },
        ),
    );
    assert!(r.is_ok(), "{r:?}");
    assert!(
        !c.factors["fac-1"].active,
        "revoking a factor deactivates it in the same write"
    );
    assert!(c.apply(3, &env(120_000, Command::CollectGarbage)).0.is_ok());
    assert!(
        c.factors.get("fac-1").is_none_or(|f| !f.active),
        "the factor comes back once its revocation is collected"
    );
}

#[test]
fn session_revocations_outlive_every_session_they_cover() {
    let mut c = Catalog::default();
    let doc = |lifetime: &str| {
        DOC.replace(
            r#""upstreams""#,
            &format!(r#""session":{{"lifetime":"{lifetime}","idle_timeout":"1m"}},"upstreams""#),
        )
    };
    let apply = |d: String| Command::ApplyPolicy {
        document_json: d,
        comment: "c".into(),
        expected_version: 0,
    };
    // v1 issues 30-day sessions; v2 shortens lifetimes to a minute, then alice is revoked
    // with the expiry the current policy suggests.
    assert!(c.apply(1, &env(0, apply(doc("30d")))).0.is_ok());
    assert!(c.apply(2, &env(1_000, apply(doc("1m")))).0.is_ok());
    let at = 2_000;
    for (rev, target) in [
        (
            3,
            RevocationTarget::User {
                user: alice(),
                issued_before: 2,
            },
        ),
        (4, RevocationTarget::Session("s-1".into())),
    ] {
        let (r, _) = c.apply(
            rev,
            &env(
                at,
                Command::Revoke {
                    target,
                    reason: "incident".into(),
                    expires_at_ms: at + 60_000,
                },
            ),
        );
        let Ok(Outcome::Revocation(id)) = r else {
            panic!("{r:?}")
        };
        let thirty_days = 30 * 86_400_000;
        assert!(
            c.revocations[&id].expires_at_ms >= at + thirty_days,
            "a session issued under v1 outlives revocation {id}: {:?}",
            c.revocations[&id]
        );
    }
}

#[test]
fn a_success_never_clears_a_lock() {
    let mut c = Catalog::default();
    for i in 0..5 {
        assert!(
            c.apply(
                i + 1,
                &as_edge(
                    1_000,
                    Command::RecordMfaFailure {
                        user: alice(),
                        challenge_sha256: String::new(),
                    }
                )
            )
            .0
            .is_ok()
        );
    }
    let locked = c.counters(&alice()).locked_until_ms;
    assert!(locked > 1_000, "locked after 5 failures");
    let (r, _) = c.apply(
        10,
        &as_edge(
            2_000,
            Command::RecordTotpUse {
                user: alice(),
                step: 100,
                attempt: 0,
                factor_id: String::new(),
                session_id: String::new(),
            },
        ),
    );
    assert!(
        r.is_err() || c.counters(&alice()).locked_until_ms == locked,
        "a code recorded while locked cleared the lock: {r:?} {:?}",
        c.counters(&alice())
    );
}

#[test]
fn user_driven_writes_cannot_flush_the_admin_audit_trail() {
    let mut c = Catalog::default();
    let apply = Command::ApplyPolicy {
        document_json: DOC.into(),
        comment: "c".into(),
        expected_version: 0,
    };
    assert!(c.apply(1, &env(0, apply)).0.is_ok());
    for i in 0..(AUDIT_RETENTION as u64 + 1) {
        let ev = AuthEvent {
            user: alice(),
            at_ms: 0,
            action: "mfa.webauthn".into(),
            result: "failed".into(),
            edge_id: "edge-1".into(),
            request_id: format!("r{i}"),
            session_id: "s".into(),
            details: BTreeMap::new(),
        };
        let _ = c.apply(
            2 + i,
            &as_edge(0, Command::RecordAuthEvents { events: vec![ev] }),
        );
    }
    assert!(
        c.audit.iter().any(|a| a.action == "policy.apply"),
        "the policy.apply record was flushed by user-driven writes"
    );
}

#[test]
fn factors_per_user_are_capped() {
    let mut c = Catalog::default();
    for i in 0..MAX_FACTORS_PER_USER {
        let (r, _) = c.apply(1 + i as u64, &as_edge(0, key(&format!("k{i}"))));
        assert!(r.is_ok(), "{i}: {r:?}");
    }
    let (r, _) = c.apply(100, &as_edge(0, key("one-too-many")));
    assert!(r.is_err(), "more factors than the cap: {r:?}");
}

fn reserve(c: &mut Catalog, rev: u64, at: i64, pending: Option<&str>) -> Result<u64, CommandError> {
    match c
        .apply(
            rev,
            &as_edge(
                at,
                Command::ReserveMfaAttempt {
                    user: alice(),
                    pending_factor: pending.map(str::to_string),
                },
            ),
        )
        .0
    {
        Ok(Outcome::Attempt { ticket, .. }) => Ok(ticket),
        Ok(other) => panic!("{other:?}"),
        Err(e) => Err(e),
    }
}

fn totp_use(step: u64, attempt: u64) -> Command {
    Command::RecordTotpUse {
        user: alice(),
        step,
        attempt,
        factor_id: "fac-1".into(),
        session_id: "sid-1".into(),
    }
}

#[test]
fn a_burst_of_guesses_checks_no_more_codes_than_the_lockout_allows() {
    let mut c = Catalog::default();
    // 300 concurrent guesses arrive as 300 reservations, serialised by Raft.
    let granted: Vec<u64> = (0..300)
        .filter_map(|i| reserve(&mut c, 1 + i, 1_000, None).ok())
        .collect();
    assert_eq!(
        granted.len(),
        5,
        "only 5 codes may be checked before the lock"
    );
    let k = c.counters(&alice());
    assert_eq!(k.failed_attempts, 5);
    assert!(k.locked_until_ms > 1_000);
    // The right code among the first four does not lift the lock the fifth set.
    let (r, _) = c.apply(400, &as_edge(1_100, totp_use(50, granted[1])));
    assert!(r.is_ok(), "{r:?}");
    let k = c.counters(&alice());
    assert_eq!(k.locked_until_ms, c.counters(&alice()).locked_until_ms);
    assert!(
        k.locked_until_ms > 1_100,
        "a success never clears a lock a failure set"
    );
    assert_eq!(
        k.failed_attempts, 4,
        "only its own reservation is taken back"
    );
    // Nothing else is checked until the lock ends.
    assert!(matches!(
        reserve(&mut c, 401, 1_200, None),
        Err(CommandError::LockedOut { .. })
    ));
}

#[test]
fn the_right_code_at_the_limit_lifts_the_lock_its_own_attempt_set() {
    let mut c = Catalog::default();
    for i in 0..4 {
        reserve(&mut c, 1 + i, 1_000, None).expect("reserved");
    }
    let fifth = reserve(&mut c, 10, 1_000, None).expect("reserved");
    assert!(c.locked_until(&alice(), 1_000).is_some());
    let (r, _) = c.apply(11, &as_edge(1_000, totp_use(60, fifth)));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(c.counters(&alice()).failed_attempts, 0);
    assert_eq!(c.locked_until(&alice(), 1_000), None);
    // The success is the session's recorded factor pass.
    assert_eq!(
        c.recent_pass("sid-1", &alice(), 1_000)
            .map(|p| p.factor_id.as_str()),
        None,
        "fac-1 does not exist, so the pass does not count"
    );
    assert_eq!(c.mfa_passes.get("sid-1").map(|p| p.at_ms), Some(1_000));
}

#[test]
fn pending_enrollments_take_five_wrong_codes_then_refuse() {
    let mut c = Catalog::default();
    let add = totp_factor(&"b".repeat(64));
    assert!(c.apply(1, &as_edge(0, add)).0.is_ok());
    assert_eq!(c.factors["fac-1"].binding_sha256, "b".repeat(64));
    for i in 0..MAX_CONFIRM_ATTEMPTS {
        reserve(
            &mut c,
            10 + u64::from(i),
            1_000_000 * i64::from(i),
            Some("fac-1"),
        )
        .expect("reserved");
    }
    assert_eq!(
        c.counters(&alice()).failed_attempts,
        5,
        "counted toward the lockout"
    );
    let r = reserve(&mut c, 20, 10_000_000, Some("fac-1"));
    assert!(matches!(r, Err(CommandError::Invalid(_))), "{r:?}");
    // Someone else's pending factor is not found.
    let bob = UserKey {
        provider: "corp".into(),
        subject: "bob".into(),
    };
    let (r, _) = c.apply(
        21,
        &as_edge(
            10_000_000,
            Command::ReserveMfaAttempt {
                user: bob,
                pending_factor: Some("fac-1".into()),
            },
        ),
    );
    assert!(matches!(r, Err(CommandError::NotFound { .. })), "{r:?}");
}

#[test]
fn edges_receive_only_the_secrets_the_policy_references() {
    let mut c = Catalog::default();
    let put = |name: &str| Command::PutSecret {
        name: name.into(),
        value: Sealed(vec![1; 8]),
    };
    assert_eq!(c.apply(1, &env(0, put("corp-oidc"))).1, vec![]);
    assert_eq!(c.apply(2, &env(0, put("unrelated"))).1, vec![]);
    let doc = |r: &str| {
        format!(
            r#"{{"schema_version":1,"identity_providers":[{{"id":"corp","issuer":"https://login.example.com","client_id":"e","client_secret_ref":"{r}"}}],"apps":[{{"id":"s","hosts":["s.example.com"],"upstreams":["http://127.0.0.1:1"],"rules":[{{"name":"r","decision":"allow","include":[{{"everyone":true}}]}}]}}]}}"#
        )
    };
    let apply = |d: String| Command::ApplyPolicy {
        document_json: d,
        comment: String::new(),
        expected_version: 0,
    };
    let (r, ch) = c.apply(3, &env(0, apply(doc("corp-oidc"))));
    assert!(r.is_ok(), "{r:?}");
    assert!(ch.contains(&Change::Secret("corp-oidc".into())), "{ch:?}");
    assert_eq!(
        c.edge_secrets().into_iter().collect::<Vec<_>>(),
        ["corp-oidc"]
    );
    assert_eq!(
        c.resolve(&[Change::Secret("unrelated".into())]),
        vec![],
        "an unreferenced secret is never resolved for edges"
    );
    let (_, ch) = c.apply(4, &env(0, apply(doc("other"))));
    assert!(
        ch.contains(&Change::SecretWithdrawn("corp-oidc".into())),
        "{ch:?}"
    );
    assert_eq!(
        c.apply(5, &env(0, put("other"))).1,
        vec![Change::Secret("other".into())]
    );
}

#[test]
fn a_keyed_write_is_applied_once_and_its_retries_get_its_answer() {
    let keyed = |at_ms: i64, key: &str, command: Command| Envelope {
        idempotency_key: Some(key.into()),
        ..env(at_ms, command)
    };
    let revoke = |sid: &str| Command::Revoke {
        target: RevocationTarget::Session(sid.into()),
        reason: "lost phone".into(),
        expires_at_ms: 0,
    };
    let mut c = Catalog::default();
    let first = c.apply(5, &keyed(1_000, "k1", revoke("s1")));
    assert_eq!(first.0, Ok(Outcome::Revocation("rev-5".into())));
    // The answer was lost; the client retries (through another member): nothing is applied
    // again, the first answer comes back.
    let retry = c.apply(6, &keyed(2_000, "k1", revoke("s1")));
    assert_eq!(retry, (Ok(Outcome::Revocation("rev-5".into())), Vec::new()));
    assert_eq!(c.revocations.len(), 1);
    assert_eq!(c.revision, 6);
    // Unkeyed writes and other keys apply as always; the same key from another actor is
    // another write.
    assert!(c.apply(7, &env(3_000, revoke("s1"))).0.is_ok());
    let mut other = keyed(3_000, "k1", revoke("s2"));
    other.actor.subject = "someone-else@example.com".into();
    assert_eq!(
        c.apply(8, &other).0,
        Ok(Outcome::Revocation("rev-8".into()))
    );
    assert_eq!(c.revocations.len(), 3);
    // A key names one write: reused for another kind of write, it is refused.
    let misuse = c.apply(9, &keyed(4_000, "k1", Command::CollectGarbage));
    assert!(
        matches!(&misuse.0, Err(CommandError::Invalid(m)) if m.contains("different write")),
        "{misuse:?}"
    );
    // A refusal is an answer too: its retry is refused the same way.
    let bad = |at| {
        keyed(
            at,
            "k2",
            Command::ApplyPolicy {
                document_json: "{}".into(),
                comment: String::new(),
                expected_version: 0,
            },
        )
    };
    let (r1, _) = c.apply(10, &bad(5_000));
    assert!(r1.is_err());
    assert_eq!(c.apply(11, &bad(6_000)).0, r1);
    // Keys are forgotten after the window, by the entries' own stamps (every member alike).
    let gc = c.apply(
        12,
        &env(1_000 + IDEMPOTENCY_WINDOW_MS + 1, Command::CollectGarbage),
    );
    assert!(gc.0.is_ok());
    assert!(!c.keyed_writes.values().any(|w| w.revision == 5));
    assert_eq!(c.keyed_writes.len(), c.keyed_order.len());
}

/// An enrolled device `dev-1` of alice@example.com (revisions 1 and 2).
fn enrolled_device() -> Catalog {
    let mut c = Catalog::default();
    let token = "a".repeat(64);
    assert!(
        c.apply(1, &env(0, create_device("C02X", &token, 100)))
            .0
            .is_ok()
    );
    let (r, _) = c.apply(2, &env(10, enroll("dev-1", &token, cert('1', 100_000))));
    assert!(r.is_ok(), "{r:?}");
    c
}

fn open_tunnel(device: &str, user: UserKey, email: &str, expires_at_ms: i64) -> Command {
    Command::OpenTunnelSession {
        device_id: device.into(),
        user,
        user_email: email.into(),
        session_id: "sid-1".into(),
        edge_id: "edge-1".into(),
        expires_at_ms,
    }
}

#[test]
fn tunnel_sessions_open_replace_close_and_expire() {
    let mut c = enrolled_device();
    // The owner (by email) opens one.
    let (r, changes) = c.apply(
        3,
        &env(20, open_tunnel("dev-1", alice(), "alice@example.com", 500)),
    );
    assert_eq!(r, Ok(Outcome::TunnelSession("tun-3".into())));
    assert_eq!(changes, vec![Change::TunnelSession("tun-3".into())]);
    let t = &c.tunnel_sessions["tun-3"];
    assert_eq!(
        (
            t.device_id.as_str(),
            t.opened_at_ms,
            t.expires_at_ms,
            t.revision
        ),
        ("dev-1", 20, 500, 3)
    );
    assert_eq!(
        c.resolve(&changes),
        vec![Resolved::TunnelSession(t.clone())]
    );

    // A new sign-in replaces it.
    let (r, changes) = c.apply(
        4,
        &env(30, open_tunnel("dev-1", alice(), "alice@example.com", 600)),
    );
    assert_eq!(r, Ok(Outcome::TunnelSession("tun-4".into())));
    assert_eq!(
        changes,
        vec![
            Change::TunnelSessionRemoved("tun-3".into()),
            Change::TunnelSession("tun-4".into())
        ]
    );
    assert_eq!(c.tunnel_sessions.len(), 1);

    // Closed: gone; closing again is refused.
    let close = |id: &str| Command::CloseTunnelSession {
        id: id.into(),
        reason: "disconnected".into(),
    };
    let (r, changes) = c.apply(5, &env(40, close("tun-4")));
    assert_eq!(r, Ok(Outcome::TunnelSession("tun-4".into())));
    assert_eq!(changes, vec![Change::TunnelSessionRemoved("tun-4".into())]);
    assert!(matches!(
        c.apply(6, &env(40, close("tun-4"))).0,
        Err(CommandError::NotFound { .. })
    ));

    // Expired ones are collected.
    assert!(
        c.apply(
            7,
            &env(50, open_tunnel("dev-1", alice(), "alice@example.com", 600)),
        )
        .0
        .is_ok()
    );
    let (_, changes) = c.apply(8, &env(600, Command::CollectGarbage));
    assert!(changes.contains(&Change::TunnelSessionRemoved("tun-7".into())));
    assert!(c.tunnel_sessions.is_empty());
}

#[test]
fn a_tunnel_session_needs_the_owner_an_enrolled_device_and_nothing_revoked() {
    let mut c = enrolled_device();
    let mallory = UserKey {
        provider: "corp".into(),
        subject: "mallory".into(),
    };
    let refused = |c: &mut Catalog, cmd| {
        let (r, changes) = c.apply(9, &env(20, cmd));
        assert!(r.is_err(), "{r:?}");
        assert!(changes.is_empty());
    };
    refused(
        &mut c,
        open_tunnel("dev-1", mallory, "mallory@example.com", 500),
    );
    refused(
        &mut c,
        open_tunnel("dev-9", alice(), "alice@example.com", 500),
    );
    refused(
        &mut c,
        open_tunnel("dev-1", alice(), "alice@example.com", 20),
    );
    assert!(
        c.apply(
            10,
            &env(
                20,
                Command::Revoke {
                    target: RevocationTarget::Session("sid-1".into()),
                    reason: "stolen".into(),
                    expires_at_ms: 0,
                },
            ),
        )
        .0
        .is_ok()
    );
    refused(
        &mut c,
        open_tunnel("dev-1", alice(), "alice@example.com", 500),
    );
    let mut c = enrolled_device();
    assert!(
        c.apply(
            10,
            &env(
                20,
                Command::SetDeviceState {
                    id: "dev-1".into(),
                    state: DeviceState::Wiped,
                },
            ),
        )
        .0
        .is_ok()
    );
    refused(
        &mut c,
        open_tunnel("dev-1", alice(), "alice@example.com", 500),
    );
    assert!(c.tunnel_sessions.is_empty());
}
