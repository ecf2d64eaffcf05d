use super::*;

fn env(at_ms: i64, command: Command) -> Envelope {
    Envelope {
        actor: Actor {
            subject: "ops@example.com".into(),
            kind: "admin".into(),
        },
        at_ms,
        command,
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
        c.apply(9, &env(4999, Command::CollectGarbage)).0,
        Ok(Outcome::Collected(0))
    );
    assert_eq!(
        c.apply(10, &env(5000, Command::CollectGarbage)).1,
        vec![Change::RevocationRemoved("rev-7".into())]
    );
    assert!(c.revocations.is_empty());
}

#[test]
fn device_lifecycle() {
    let mut c = Catalog::default();
    let hash = "a".repeat(64);
    let create = Command::CreateDevice {
        owner: "alice@example.com".into(),
        serial: "C02X".into(),
        display_name: "mac".into(),
        groups: vec![],
        token_sha256: hash,
        token_expires_at_ms: 100,
    };
    assert_eq!(
        c.apply(1, &env(0, create)).0,
        Ok(Outcome::Device("dev-1".into()))
    );
    let set = |state| Command::SetDeviceState {
        id: "dev-1".into(),
        state,
    };
    assert!(
        c.apply(2, &env(100, set(DeviceState::Enrolled))).0.is_err(),
        "expired token"
    );
    assert!(c.apply(3, &env(50, set(DeviceState::Enrolled))).0.is_ok());
    assert!(c.devices["dev-1"].enrollment_token_sha256.is_empty());
    assert!(c.apply(4, &env(60, set(DeviceState::Wiped))).0.is_ok());
    assert!(c.apply(5, &env(60, set(DeviceState::Revoked))).0.is_ok());
    assert!(
        c.apply(6, &env(60, set(DeviceState::Enrolled))).0.is_err(),
        "revoked is final"
    );
    assert_eq!(
        c.apply(
            7,
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
fn totp_replay_lockout_and_unlock() {
    let mut c = Catalog::default();
    let add = Command::AddFactor {
        user: alice(),
        kind: FactorKind::Totp,
        name: "phone".into(),
        credential_json: String::new(),
        credential_id: String::new(),
        totp_seed: Some(Sealed(vec![1; 40])),
        enrollment_code_sha256: None,
    };
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
                    step: 100
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
                    step: 100
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
                    step: 101
                }
            )
        )
        .0
        .is_ok()
    );
    for i in 0..MAX_FAILED_ATTEMPTS {
        let (r, _) = c.apply(
            10 + u64::from(i),
            &env(1_000, Command::RecordMfaFailure { user: alice() }),
        );
        let Ok(Outcome::Counters(k)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(k.failed_attempts, i + 1);
        if i + 1 < 5 {
            assert_eq!(k.locked_until_ms, 0);
        } else {
            assert!(k.locked_until_ms > 1_000);
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
            locked_until_ms: 0
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
    };
    assert!(c.apply(1, &env(0, add.clone())).0.is_ok());
    assert!(c.apply(2, &env(0, add)).0.is_err(), "same credential twice");
    let used = |n: u32| Command::RecordWebauthnUse {
        id: "fac-1".into(),
        sign_count: n,
        challenge_sha256: format!("challenge-{n}"),
    };
    assert!(c.apply(3, &env(0, used(5))).0.is_ok());
    assert_eq!(
        c.apply(4, &env(0, used(5))).0,
        Err(CommandError::Invalid(
            "this challenge was already answered".into()
        ))
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
        Command::RecordMfaFailure { user: alice() },
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
