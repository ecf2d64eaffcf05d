//! `decide()` for every condition kind, the evaluation order, MFA challenges, staged rollouts
//! and staleness.

use std::collections::BTreeMap;
use std::time::Duration;

use jiff::Timestamp;
use palisade_policy::decide::cohort_bucket;
use palisade_policy::request::{
    Context, Device, DeviceState, Identity, MfaMethod, MfaProof, Os, Protocol,
};
use palisade_policy::{Challenge, CompiledPolicy, Decision, DenyReason, decide};
use serde_json::json;

/// 2026-11-25 (a Wednesday) 10:00 UTC = 11:00 in Berlin.
fn wed_10_utc() -> Timestamp {
    "2026-11-25T10:00:00Z".parse().expect("timestamp")
}

fn compile(app: serde_json::Value) -> CompiledPolicy {
    let mut app = app;
    let obj = app.as_object_mut().expect("app object");
    obj.entry("id").or_insert(json!("app"));
    obj.entry("hosts").or_insert(json!(["app.example.com"]));
    obj.entry("upstreams")
        .or_insert(json!(["http://127.0.0.1:9000"]));
    let doc = json!({
        "schema_version": 1,
        "identity_providers": [
            {"id": "corp", "issuer": "https://login.example.com", "client_id": "edge", "client_secret_ref": "corp"},
            {"id": "partners", "issuer": "https://sso.partners.example.net", "client_id": "edge", "client_secret_ref": "partners"}
        ],
        "apps": [app]
    });
    match CompiledPolicy::from_json(&doc.to_string()) {
        Ok((_, p)) => p,
        Err(e) => panic!("test policy invalid: {e}"),
    }
}

fn rules(rules: serde_json::Value) -> CompiledPolicy {
    compile(json!({"mfa": {"required": false}, "rules": rules}))
}

fn alice() -> Identity {
    Identity {
        provider: "corp".into(),
        subject: "alice-sub".into(),
        email: "Alice@Example.com".into(),
        groups: vec!["eng".into(), "dba".into()],
        claims: BTreeMap::from([("department".to_string(), vec!["research".to_string()])]),
        mfa: None,
        session: None,
    }
}

fn with_mfa(mut id: Identity, method: MfaMethod, ago: i64) -> Identity {
    id.mfa = Some(MfaProof {
        method,
        factor_id: "fac-1".into(),
        authenticated_at: wed_10_utc() - jiff::SignedDuration::from_secs(ago),
        user_verified: method == MfaMethod::Platform,
    });
    id
}

fn laptop() -> Device {
    Device {
        id: "dev-laptop-1".into(),
        state: DeviceState::Enrolled,
        client_version: Some(semver::Version::new(2, 5, 1)),
        mandatory_auth: true,
        os: Some(Os::Macos),
        groups: vec!["engineering".into()],
        disk_encrypted: true,
        firewall: true,
        screen_lock: true,
        mdm_compliant: true,
        posture_reported_at: None,
    }
}

fn ctx(ip: &str) -> Context {
    Context {
        source_ip: ip.parse().expect("ip"),
        protocol: Protocol::Http,
        view_age: Duration::ZERO,
    }
}

fn run(
    p: &CompiledPolicy,
    id: Option<&Identity>,
    dev: Option<&Device>,
    c: &Context,
    now: Timestamp,
) -> Decision {
    let app = p.route("app.example.com", "/").expect("routed");
    decide(app, id, dev, c, now)
}

fn allowed_by(
    p: &CompiledPolicy,
    id: Option<&Identity>,
    dev: Option<&Device>,
    c: &Context,
) -> Option<String> {
    match run(p, id, dev, c, wed_10_utc()) {
        Decision::Allow { rule } => Some(rule.name.to_string()),
        _ => None,
    }
}

fn single(cond: serde_json::Value) -> CompiledPolicy {
    rules(json!([{"name": "r", "decision": "allow", "include": [cond]}]))
}

#[test]
fn everyone() {
    let p = single(json!({"everyone": true}));
    assert_eq!(
        allowed_by(&p, Some(&alice()), None, &ctx("192.0.2.1")).as_deref(),
        Some("r")
    );
}

#[test]
fn email_is_case_insensitive() {
    assert!(
        allowed_by(
            &single(json!({"email": "alice@EXAMPLE.com"})),
            Some(&alice()),
            None,
            &ctx("192.0.2.1")
        )
        .is_some()
    );
    assert!(
        allowed_by(
            &single(json!({"email": "bob@example.com"})),
            Some(&alice()),
            None,
            &ctx("192.0.2.1")
        )
        .is_none()
    );
}

#[test]
fn email_domain_matches_whole_domain_only() {
    assert!(
        allowed_by(
            &single(json!({"email_domain": "example.com"})),
            Some(&alice()),
            None,
            &ctx("192.0.2.1")
        )
        .is_some()
    );
    assert!(
        allowed_by(
            &single(json!({"email_domain": "ample.com"})),
            Some(&alice()),
            None,
            &ctx("192.0.2.1")
        )
        .is_none()
    );
    let mut sub = alice();
    sub.email = "alice@eu.example.com".into();
    assert!(
        allowed_by(
            &single(json!({"email_domain": "example.com"})),
            Some(&sub),
            None,
            &ctx("192.0.2.1")
        )
        .is_none()
    );
}

#[test]
fn group_and_claim() {
    assert!(
        allowed_by(
            &single(json!({"group": "dba"})),
            Some(&alice()),
            None,
            &ctx("192.0.2.1")
        )
        .is_some()
    );
    assert!(
        allowed_by(
            &single(json!({"group": "DBA"})),
            Some(&alice()),
            None,
            &ctx("192.0.2.1")
        )
        .is_none()
    );
    assert!(
        allowed_by(
            &single(json!({"claim": {"name": "department", "value": "research"}})),
            Some(&alice()),
            None,
            &ctx("192.0.2.1")
        )
        .is_some()
    );
    assert!(
        allowed_by(
            &single(json!({"claim": {"name": "department", "value": "sales"}})),
            Some(&alice()),
            None,
            &ctx("192.0.2.1")
        )
        .is_none()
    );
}

#[test]
fn identity_provider_condition_and_app_restriction() {
    assert!(
        allowed_by(
            &single(json!({"identity_provider": "corp"})),
            Some(&alice()),
            None,
            &ctx("192.0.2.1")
        )
        .is_some()
    );
    assert!(
        allowed_by(
            &single(json!({"identity_provider": "partners"})),
            Some(&alice()),
            None,
            &ctx("192.0.2.1")
        )
        .is_none()
    );
    let p = compile(
        json!({"identity_providers": ["partners"], "mfa": {"required": false}, "rules": [{"name": "r", "decision": "allow", "include": [{"everyone": true}]}]}),
    );
    assert!(matches!(
        run(&p, Some(&alice()), None, &ctx("192.0.2.1"), wed_10_utc()),
        Decision::Deny {
            reason: DenyReason::IdentityProviderNotAllowed { .. },
            ..
        }
    ));
}

#[test]
fn ip_v4_v6_and_mapped() {
    let p = single(json!({"ip": "10.0.0.0/8"}));
    assert!(allowed_by(&p, Some(&alice()), None, &ctx("10.9.8.7")).is_some());
    assert!(allowed_by(&p, Some(&alice()), None, &ctx("::ffff:10.9.8.7")).is_some());
    assert!(allowed_by(&p, Some(&alice()), None, &ctx("11.0.0.1")).is_none());
    let p6 = single(json!({"ip": "2001:db8::/32"}));
    assert!(allowed_by(&p6, Some(&alice()), None, &ctx("2001:db8::5")).is_some());
    let host = single(json!({"ip": "192.0.2.10"}));
    assert!(allowed_by(&host, Some(&alice()), None, &ctx("192.0.2.10")).is_some());
    assert!(allowed_by(&host, Some(&alice()), None, &ctx("192.0.2.11")).is_none());
}

/// Posture hygiene: each reported flag, MDM compliance and the report's freshness. A field
/// never reported (false, or no report time) is not proven.
#[test]
fn posture_flags_and_freshness() {
    let at = |d: &Device, p: &CompiledPolicy, now: Timestamp| {
        matches!(
            run(p, Some(&alice()), Some(d), &ctx("192.0.2.1"), now),
            Decision::Allow { .. }
        )
    };
    let now = wed_10_utc();
    let mut d = laptop();
    d.posture_reported_at = Some(now - jiff::SignedDuration::from_mins(10));
    for (field, flip) in [
        (
            "disk_encrypted",
            (|d: &mut Device| d.disk_encrypted = false) as fn(&mut Device),
        ),
        ("firewall", |d: &mut Device| d.firewall = false),
        ("screen_lock", |d: &mut Device| d.screen_lock = false),
        ("mdm_compliant", |d: &mut Device| d.mdm_compliant = false),
    ] {
        let p = single(json!({"device": {field: true}}));
        assert!(at(&d, &p, now), "{field} reported on");
        let mut off = d.clone();
        flip(&mut off);
        assert!(!at(&off, &p, now), "{field} reported off");
        let mut wiped = d.clone();
        wiped.state = DeviceState::Wiped;
        assert!(
            !at(&wiped, &p, now),
            "{field}: only an enrolled device's posture counts"
        );
    }
    let fresh = single(json!({"device": {"max_age": "1h"}}));
    assert!(at(&d, &fresh, now), "reported 10 minutes ago");
    assert!(
        !at(&d, &fresh, now + jiff::SignedDuration::from_mins(51)),
        "61 minutes old"
    );
    let mut never = d.clone();
    never.posture_reported_at = None;
    assert!(!at(&never, &fresh, now), "never reported is not fresh");
    let explained = match run(&fresh, Some(&alice()), Some(&never), &ctx("192.0.2.1"), now) {
        Decision::Deny { reason, .. } => reason.to_string(),
        other => panic!("{other:?}"),
    };
    assert!(
        explained.contains("posture reported within 1h"),
        "{explained}"
    );

    for (bad, want) in [
        (
            json!({"max_age": "soon"}),
            "rules[0].include[0].device.max_age",
        ),
        (
            json!({"max_age": "0s"}),
            "rules[0].include[0].device.max_age",
        ),
        (
            json!({"enrolled": false, "firewall": true}),
            "rules[0].include[0].device",
        ),
    ] {
        let doc = json!({
            "schema_version": 1,
            "identity_providers": [{"id": "corp", "issuer": "https://login.example.com", "client_id": "edge", "client_secret_ref": "corp"}],
            "apps": [{"id": "app", "hosts": ["app.example.com"], "upstreams": ["http://127.0.0.1:9000"],
                      "mfa": {"required": false},
                      "rules": [{"name": "r", "decision": "allow", "include": [{"device": bad}]}]}]
        });
        let errs = CompiledPolicy::from_json(&doc.to_string()).expect_err("refused");
        assert!(
            errs.0.iter().any(|v| v.path.ends_with(want)),
            "{bad}: {errs:?}"
        );
    }
}

/// A denial names what the caller's own device lacks (they can fix it), only when the rule's
/// audience includes the caller; who else the rule admits is never part of it.
#[test]
fn the_device_shortfall_is_named_for_the_caller_only() {
    let p = rules(json!([{"name": "fleet", "decision": "allow",
        "include": [{"email": "alice@example.com"}],
        "require": [{"device": {"enrolled": true, "firewall": true, "max_age": "1h"}}]}]));
    let now = wed_10_utc();
    let lacks =
        |id: Option<&Identity>, d: Option<&Device>| match run(&p, id, d, &ctx("192.0.2.1"), now) {
            Decision::Deny {
                reason: DenyReason::NoRuleMatched { device, .. },
                ..
            } => device,
            other => panic!("{other:?}"),
        };
    let mut d = laptop();
    d.firewall = false;
    d.posture_reported_at = Some(now - jiff::SignedDuration::from_hours(2));
    let got = lacks(Some(&alice()), Some(&d));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got[0].contains("host firewall on"), "{got:?}");
    assert!(
        got[1].contains("posture report") && got[1].contains("3600s"),
        "{got:?}"
    );
    let got = lacks(Some(&alice()), None);
    assert_eq!(got, ["an enrolled device presenting its certificate"]);
    // A known device that is no longer enrolled is told why, and nothing about its posture.
    let mut wiped = laptop();
    wiped.state = DeviceState::Wiped;
    let got = lacks(Some(&alice()), Some(&wiped));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("was wiped"), "{got:?}");
    // Someone the rule is not about learns nothing about its device requirements.
    let mut bob = alice();
    bob.email = "bob@example.com".into();
    assert!(lacks(Some(&bob), Some(&d)).is_empty());
}

#[test]
fn device_posture() {
    let enrolled = single(json!({"device": {"enrolled": true}}));
    assert!(
        allowed_by(
            &enrolled,
            Some(&alice()),
            Some(&laptop()),
            &ctx("192.0.2.1")
        )
        .is_some()
    );
    assert!(allowed_by(&enrolled, Some(&alice()), None, &ctx("192.0.2.1")).is_none());
    for state in [
        DeviceState::Wiped,
        DeviceState::Revoked,
        DeviceState::Pending,
    ] {
        let mut d = laptop();
        d.state = state;
        assert!(
            allowed_by(&enrolled, Some(&alice()), Some(&d), &ctx("192.0.2.1")).is_none(),
            "{state:?}"
        );
    }
    let unmanaged = single(json!({"device": {"enrolled": false}}));
    assert!(allowed_by(&unmanaged, Some(&alice()), None, &ctx("192.0.2.1")).is_some());
    assert!(
        allowed_by(
            &unmanaged,
            Some(&alice()),
            Some(&laptop()),
            &ctx("192.0.2.1")
        )
        .is_none()
    );

    let version = single(json!({"device": {"min_client_version": "2.5.0"}}));
    assert!(allowed_by(&version, Some(&alice()), Some(&laptop()), &ctx("192.0.2.1")).is_some());
    let mut old = laptop();
    old.client_version = Some(semver::Version::new(2, 4, 9));
    assert!(allowed_by(&version, Some(&alice()), Some(&old), &ctx("192.0.2.1")).is_none());
    old.client_version = None;
    assert!(allowed_by(&version, Some(&alice()), Some(&old), &ctx("192.0.2.1")).is_none());

    let mandatory = single(json!({"device": {"mandatory_auth": true}}));
    assert!(
        allowed_by(
            &mandatory,
            Some(&alice()),
            Some(&laptop()),
            &ctx("192.0.2.1")
        )
        .is_some()
    );
    let mut lax = laptop();
    lax.mandatory_auth = false;
    assert!(allowed_by(&mandatory, Some(&alice()), Some(&lax), &ctx("192.0.2.1")).is_none());

    let os = single(json!({"device": {"os": ["linux", "windows"]}}));
    assert!(allowed_by(&os, Some(&alice()), Some(&laptop()), &ctx("192.0.2.1")).is_none());
    let mut linux = laptop();
    linux.os = Some(Os::Linux);
    assert!(allowed_by(&os, Some(&alice()), Some(&linux), &ctx("192.0.2.1")).is_some());
}

#[test]
fn device_group() {
    let p = single(json!({"device_group": "engineering"}));
    assert!(allowed_by(&p, Some(&alice()), Some(&laptop()), &ctx("192.0.2.1")).is_some());
    assert!(allowed_by(&p, Some(&alice()), None, &ctx("192.0.2.1")).is_none());
}

#[test]
fn time_window_in_a_time_zone() {
    let p = single(
        json!({"time": {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "09:00", "to": "18:00", "time_zone": "Europe/Berlin"}}),
    );
    let at = |s: &str| {
        run(
            &p,
            Some(&alice()),
            None,
            &ctx("192.0.2.1"),
            s.parse().expect("ts"),
        )
        .kind()
    };
    assert_eq!(at("2026-11-25T10:00:00Z"), "allow"); // Wed 11:00 Berlin
    assert_eq!(at("2026-11-25T07:59:00Z"), "deny"); // Wed 08:59 Berlin
    assert_eq!(at("2026-11-25T08:00:00Z"), "allow"); // Wed 09:00 Berlin (inclusive)
    assert_eq!(at("2026-11-25T17:00:00Z"), "deny"); // Wed 18:00 Berlin (exclusive)
    assert_eq!(at("2026-11-28T10:00:00Z"), "deny"); // Saturday
    assert_eq!(at("2026-07-01T07:30:00Z"), "allow"); // summer time: 09:30 Berlin
}

#[test]
fn time_window_across_midnight() {
    let p = single(
        json!({"time": {"days": ["fri"], "from": "22:00", "to": "02:00", "time_zone": "UTC"}}),
    );
    let at = |s: &str| {
        run(
            &p,
            Some(&alice()),
            None,
            &ctx("192.0.2.1"),
            s.parse().expect("ts"),
        )
        .kind()
    };
    assert_eq!(at("2026-11-27T23:00:00Z"), "allow"); // Fri 23:00
    assert_eq!(at("2026-11-28T01:59:00Z"), "allow"); // Sat 01:59, window opened Friday
    assert_eq!(at("2026-11-28T02:00:00Z"), "deny");
    assert_eq!(at("2026-11-28T23:00:00Z"), "deny"); // Sat 23:00
}

#[test]
fn mfa_methods_and_age() {
    let p = compile(json!({
        "mfa": {"required": true, "methods": ["totp", "security_key", "platform"], "max_age": "1h"},
        "rules": [
            {"name": "keys-only", "decision": "allow", "include": [{"group": "dba"}], "require": [{"mfa": {"methods": ["security_key"], "max_age": "30m"}}]},
            {"name": "any-factor", "decision": "allow", "include": [{"group": "eng"}]}
        ]
    }));
    let c = ctx("192.0.2.1");
    // No MFA: challenged with the first rule that would match.
    match run(&p, Some(&alice()), None, &c, wed_10_utc()) {
        Decision::Challenge {
            rule: Some(r),
            challenge: Challenge::Mfa { methods, max_age },
        } => {
            assert_eq!(&*r.name, "keys-only");
            assert_eq!(methods, vec![MfaMethod::SecurityKey]);
            assert_eq!(max_age, Duration::from_secs(1800));
        }
        other => panic!("{other:?}"),
    }
    // TOTP does not satisfy keys-only, but the later rule accepts it.
    assert_eq!(
        allowed_by(&p, Some(&with_mfa(alice(), MfaMethod::Totp, 60)), None, &c).as_deref(),
        Some("any-factor")
    );
    // A security key satisfies the first.
    assert_eq!(
        allowed_by(
            &p,
            Some(&with_mfa(alice(), MfaMethod::SecurityKey, 60)),
            None,
            &c
        )
        .as_deref(),
        Some("keys-only")
    );
    // Too old for keys-only (30m), fine for the app default (1h).
    assert_eq!(
        allowed_by(
            &p,
            Some(&with_mfa(alice(), MfaMethod::SecurityKey, 2400)),
            None,
            &c
        )
        .as_deref(),
        Some("any-factor")
    );
    // Too old for both: challenge again.
    assert_eq!(
        run(
            &p,
            Some(&with_mfa(alice(), MfaMethod::SecurityKey, 7200)),
            None,
            &c,
            wed_10_utc()
        )
        .kind(),
        "challenge_mfa"
    );
    // A proof from the future beyond skew does not count.
    assert_eq!(
        run(
            &p,
            Some(&with_mfa(alice(), MfaMethod::SecurityKey, -3600)),
            None,
            &c,
            wed_10_utc()
        )
        .kind(),
        "challenge_mfa"
    );
}

#[test]
fn step_up_when_only_security_keys_are_accepted() {
    let p = compile(
        json!({"mfa": {"methods": ["security_key"]}, "rules": [{"name": "r", "decision": "allow", "include": [{"everyone": true}]}]}),
    );
    let d = run(
        &p,
        Some(&with_mfa(alice(), MfaMethod::Totp, 10)),
        None,
        &ctx("192.0.2.1"),
        wed_10_utc(),
    );
    assert!(
        matches!(d, Decision::Challenge { challenge: Challenge::Mfa { ref methods, .. }, .. } if methods == &vec![MfaMethod::SecurityKey]),
        "{d:?}"
    );
}

#[test]
fn order_bypass_then_deny_then_allow() {
    let p = rules(json!([
        {"name": "allow-all", "decision": "allow", "include": [{"everyone": true}]},
        {"name": "block-dba", "decision": "deny", "include": [{"group": "dba"}]},
        {"name": "monitoring", "decision": "bypass", "include": [{"ip": "10.99.0.0/16"}]}
    ]));
    let c = ctx("192.0.2.1");
    match run(&p, Some(&alice()), None, &c, wed_10_utc()) {
        Decision::Deny {
            rule: Some(r),
            reason: DenyReason::DenyRule,
        } => assert_eq!(&*r.name, "block-dba"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        run(&p, None, None, &ctx("10.99.1.1"), wed_10_utc()).kind(),
        "bypass"
    );
    assert_eq!(
        run(&p, None, None, &c, wed_10_utc()).kind(),
        "challenge_login"
    );
}

#[test]
fn anonymous_requests_meet_identity_free_deny_rules_before_login() {
    let p = rules(json!([
        {"name": "embargo", "decision": "deny", "include": [{"ip": "203.0.113.0/24"}]},
        {"name": "allow-all", "decision": "allow", "include": [{"everyone": true}]}
    ]));
    assert_eq!(
        run(&p, None, None, &ctx("203.0.113.9"), wed_10_utc()).kind(),
        "deny"
    );
    match run(&p, None, None, &ctx("192.0.2.1"), wed_10_utc()) {
        Decision::Challenge {
            challenge: Challenge::Login { providers },
            ..
        } => assert_eq!(providers, vec!["corp", "partners"]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn exclude_wins_and_require_is_all_of() {
    let p = rules(json!([{
        "name": "r", "decision": "allow",
        "include": [{"email_domain": "example.com"}, {"group": "eng"}],
        "require": [{"ip": "192.0.2.0/24"}, {"group": "dba"}],
        "exclude": [{"email": "alice@example.com"}]
    }]));
    assert!(allowed_by(&p, Some(&alice()), None, &ctx("192.0.2.1")).is_none());
    let mut bob = alice();
    bob.email = "bob@example.com".into();
    assert!(allowed_by(&p, Some(&bob), None, &ctx("192.0.2.1")).is_some());
    assert!(allowed_by(&p, Some(&bob), None, &ctx("198.51.100.1")).is_none());
    bob.groups = vec!["eng".into()];
    assert!(allowed_by(&p, Some(&bob), None, &ctx("192.0.2.1")).is_none());
}

#[test]
fn denial_explains_what_is_missing() {
    let p = rules(
        json!([{"name": "partners", "decision": "allow", "include": [{"email_domain": "acme.com"}], "require": [{"ip": "198.51.100.0/24"}]}]),
    );
    let d = run(&p, Some(&alice()), None, &ctx("192.0.2.1"), wed_10_utc());
    let text = d.explain();
    assert!(
        text.contains("rule \"partners\" includes only: an email at acme.com"),
        "{text}"
    );
    let mut partner = alice();
    partner.email = "p@acme.com".into();
    let text = run(&p, Some(&partner), None, &ctx("192.0.2.1"), wed_10_utc()).explain();
    assert!(
        text.contains("requires a source address in 198.51.100.0/24"),
        "{text}"
    );
}

#[test]
fn staleness_fail_closed_and_open() {
    let closed = compile(
        json!({"mfa": {"required": false}, "staleness": {"mode": "fail_closed", "max_staleness": "30s"}, "rules": [{"name": "r", "decision": "allow", "include": [{"everyone": true}]}]}),
    );
    let mut c = ctx("192.0.2.1");
    c.view_age = Duration::from_secs(30);
    assert_eq!(
        run(&closed, Some(&alice()), None, &c, wed_10_utc()).kind(),
        "allow"
    );
    c.view_age = Duration::from_secs(31);
    assert!(matches!(
        run(&closed, Some(&alice()), None, &c, wed_10_utc()),
        Decision::Deny {
            reason: DenyReason::StaleView { .. },
            ..
        }
    ));
    let open = compile(
        json!({"mfa": {"required": false}, "staleness": {"mode": "fail_open"}, "rules": [{"name": "r", "decision": "allow", "include": [{"everyone": true}]}]}),
    );
    c.view_age = Duration::from_secs(86_400 * 7);
    assert_eq!(
        run(&open, Some(&alice()), None, &c, wed_10_utc()).kind(),
        "allow"
    );
}

#[test]
fn protocol_must_be_accepted() {
    let p = compile(
        json!({"protocols": ["h3"], "mfa": {"required": false}, "rules": [{"name": "r", "decision": "allow", "include": [{"everyone": true}]}]}),
    );
    let c = ctx("192.0.2.1");
    assert!(matches!(
        run(&p, Some(&alice()), None, &c, wed_10_utc()),
        Decision::Deny {
            reason: DenyReason::ProtocolNotAllowed(Protocol::Http),
            ..
        }
    ));
}

#[test]
fn staged_rollout_by_group_and_percent() {
    let p = rules(json!([
        {"name": "old", "decision": "allow", "include": [{"group": "eng"}]},
        {"name": "new", "decision": "allow", "include": [{"group": "dba"}], "rollout": {"device_groups": ["canary"], "percent": 50, "replaces": "old"}}
    ]));
    let c = ctx("192.0.2.1");
    let mut canary = laptop();
    canary.groups = vec!["canary".into()];
    assert_eq!(
        allowed_by(&p, Some(&alice()), Some(&canary), &c).as_deref(),
        Some("new")
    );
    // Percent cohort: device ids whose bucket is below 5000 get the new rule.
    let mut in_cohort = 0;
    for i in 0..200 {
        let mut d = laptop();
        d.id = format!("dev-{i}");
        let got = allowed_by(&p, Some(&alice()), Some(&d), &c);
        let expected = if cohort_bucket("app", "new", &d.id) < 5000 {
            "new"
        } else {
            "old"
        };
        assert_eq!(got.as_deref(), Some(expected));
        in_cohort += usize::from(expected == "new");
    }
    assert!(
        (70..=130).contains(&in_cohort),
        "50% of 200 devices, got {in_cohort}"
    );
}

#[test]
fn routing_longest_prefix_exact_over_wildcard_and_segments() {
    let doc = json!({
        "schema_version": 1,
        "apps": [
            {"id": "site", "hosts": ["*.example.com"], "upstreams": ["http://127.0.0.1:1"], "rules": [{"name": "r", "decision": "bypass", "include": [{"everyone": true}]}]},
            {"id": "deep", "hosts": ["*.eu.example.com"], "upstreams": ["http://127.0.0.1:1"], "rules": [{"name": "r", "decision": "bypass", "include": [{"everyone": true}]}]},
            {"id": "app", "hosts": ["app.example.com"], "upstreams": ["http://127.0.0.1:1"], "rules": [{"name": "r", "decision": "bypass", "include": [{"everyone": true}]}]},
            {"id": "admin", "hosts": ["app.example.com"], "path_prefixes": ["/admin"], "upstreams": ["http://127.0.0.1:1"], "rules": [{"name": "r", "decision": "bypass", "include": [{"everyone": true}]}]}
        ]
    });
    let (_, p) = CompiledPolicy::from_json(&doc.to_string()).expect("valid");
    let route = |h: &str, path: &str| p.route(h, path).map(|a| a.id.to_string());
    assert_eq!(
        route("app.example.com", "/admin/users").as_deref(),
        Some("admin")
    );
    assert_eq!(route("app.example.com", "/admin").as_deref(), Some("admin"));
    assert_eq!(
        route("app.example.com", "/administrator").as_deref(),
        Some("app")
    );
    assert_eq!(route("APP.example.com:443", "/").as_deref(), Some("app"));
    assert_eq!(route("x.example.com", "/").as_deref(), Some("site"));
    assert_eq!(route("a.b.example.com", "/").as_deref(), Some("site"));
    assert_eq!(route("x.eu.example.com", "/").as_deref(), Some("deep"));
    assert_eq!(route("example.com", "/"), None);
    assert_eq!(route("example.org", "/"), None);
    // Normalisation happens before routing.
    let n = palisade_policy::path::normalize("/public/../admin").expect("normal");
    assert_eq!(route("app.example.com", &n).as_deref(), Some("admin"));
}

#[test]
fn user_verification_required_for_security_keys() {
    let p = compile(json!({
        "mfa": {"required": true, "methods": ["security_key", "platform"], "require_user_verification": true},
        "rules": [{"name": "all", "decision": "allow", "include": [{"everyone": true}]}]
    }));
    let c = ctx("192.0.2.1");
    // A key that only proved presence does not count...
    let mut touch_only = with_mfa(alice(), MfaMethod::SecurityKey, 60);
    if let Some(m) = touch_only.mfa.as_mut() {
        m.user_verified = false;
    }
    assert_eq!(
        run(&p, Some(&touch_only), None, &c, wed_10_utc()).kind(),
        "challenge_mfa"
    );
    // ...one that verified the user (PIN) does, and a platform authenticator always does.
    let mut with_pin = touch_only.clone();
    if let Some(m) = with_pin.mfa.as_mut() {
        m.user_verified = true;
    }
    assert_eq!(
        allowed_by(&p, Some(&with_pin), None, &c).as_deref(),
        Some("all")
    );
    assert_eq!(
        allowed_by(
            &p,
            Some(&with_mfa(alice(), MfaMethod::Platform, 60)),
            None,
            &c
        )
        .as_deref(),
        Some("all")
    );
}

/// A shared host: `portal` at `/` for staff, `admin` at `/admin` for admins only.
fn shared_host(paths: serde_json::Value) -> CompiledPolicy {
    let app = |id: &str, prefix: &str| {
        json!({"id": id, "hosts": ["app.example.com"], "path_prefixes": [prefix],
               "upstreams": ["http://127.0.0.1:9000"], "mfa": {"required": false},
               "rules": [{"name": "r", "decision": "allow", "include": [{"everyone": true}]}]})
    };
    let doc = json!({
        "schema_version": 1,
        "identity_providers": [
            {"id": "corp", "issuer": "https://login.example.com", "client_id": "edge", "client_secret_ref": "corp"}
        ],
        "request_paths": paths,
        "apps": [app("portal", "/"), app("admin", "/admin")]
    });
    match CompiledPolicy::from_json(&doc.to_string()) {
        Ok((_, p)) => p,
        Err(e) => panic!("test policy invalid: {e}"),
    }
}

/// Routing and a servlet container or a case-insensitive server must not disagree about which
/// application a path belongs to (review finding H3).
#[test]
fn paths_another_server_reads_differently_are_refused() {
    use palisade_policy::path::{PathError, SemicolonParameters, normalize, normalize_with};
    let p = shared_host(json!({}));
    let routed = |path: &str| -> Result<Option<String>, String> {
        let n = normalize(path).map_err(|e| e.to_string())?;
        p.route_request("app.example.com", &n)
            .map(|a| a.map(|a| a.id.to_string()))
            .map_err(|e| e.to_string())
    };
    // A servlet container serves these as /admin/users; they must not route to the portal.
    for path in [
        "/admin;x/users",
        "/portal/..;/admin/users",
        "/admin%3Bx/users",
    ] {
        assert!(
            routed(path) != Ok(Some("portal".to_string())),
            "{path} routes to the portal"
        );
    }
    assert_eq!(normalize("/admin;x/users"), Err(PathError::Semicolon));
    // Case: /ADMIN is the admin application to IIS; refused unless prefixes fold case.
    for path in ["/ADMIN/users", "/%41DMIN/users", "/Admin"] {
        assert!(routed(path).is_err(), "{path}: {:?}", routed(path));
    }
    assert_eq!(routed("/admin/users"), Ok(Some("admin".into())));
    assert_eq!(routed("/Help"), Ok(Some("portal".into())), "no other app");
    // Opting in: strip parameters, fold case.
    let p =
        shared_host(json!({"semicolon_parameters": "strip", "case_insensitive_prefixes": true}));
    let n = normalize_with("/portal/..;/admin;x/users", SemicolonParameters::Strip).expect("path");
    assert_eq!(n, "/admin/users");
    let route = |path: &str| {
        p.route_request("app.example.com", path)
            .expect("routed")
            .map(|a| a.id.to_string())
    };
    assert_eq!(route(&n).as_deref(), Some("admin"));
    assert_eq!(route("/ADMIN/users").as_deref(), Some("admin"));
}

/// A session is held to the lifetime and idle timeout of each application it is used for,
/// not only to the one it was issued for (review finding L1).
#[test]
fn each_application_holds_the_session_to_its_own_lifetime() {
    use palisade_policy::request::SessionTimes;
    let p = compile(json!({"mfa": {"required": false},
        "session": {"lifetime": "1h", "idle_timeout": "10m"},
        "rules": [{"name": "staff", "decision": "allow", "include": [{"email_domain": "example.com"}]}]}));
    let app = p.route("app.example.com", "/").expect("app");
    let now = wed_10_utc();
    let ago = |s: i64| now - jiff::SignedDuration::from_secs(s);
    let with = |issued: i64, active: i64| Identity {
        session: Some(SessionTimes {
            issued_at: ago(issued),
            last_active: ago(active),
        }),
        ..alice()
    };
    let d = |id: &Identity| decide(app, Some(id), None, &ctx("192.0.2.1"), now);
    assert!(matches!(d(&with(600, 60)), Decision::Allow { .. }));
    for (issued, active) in [(7200, 60), (1800, 1200)] {
        assert!(
            matches!(
                d(&with(issued, active)),
                Decision::Challenge {
                    challenge: Challenge::Login { .. },
                    ..
                }
            ),
            "issued {issued}s ago, active {active}s ago"
        );
    }
}

/// `Alt-Svc` names a whole origin: HTTP/3 is advertised for a host only when every
/// application there, at any path, accepts it.
#[test]
fn an_origin_accepts_http3_only_when_every_application_there_does() {
    let app = |id: &str, hosts: &[&str], prefix: &str, protocols: &[&str]| {
        json!({"id": id, "hosts": hosts, "path_prefixes": [prefix], "protocols": protocols,
               "upstreams": ["http://127.0.0.1:9000"], "mfa": {"required": false},
               "rules": [{"name": "all", "decision": "allow", "include": [{"everyone": true}]}]})
    };
    let doc = json!({
        "schema_version": 1,
        "identity_providers": [{"id": "corp", "issuer": "https://login.example.com", "client_id": "edge", "client_secret_ref": "corp"}],
        "apps": [
            app("wiki", &["wiki.example.com"], "/", &["http", "h3"]),
            app("mixed", &["mixed.example.com"], "/", &["http", "h3"]),
            app("mixed-admin", &["mixed.example.com"], "/admin", &["http"]),
            app("star", &["*.apps.example.com"], "/", &["h3", "http"]),
            app("one", &["one.apps.example.com"], "/x", &["http"]),
        ]
    });
    let (_, p) = CompiledPolicy::from_json(&doc.to_string()).expect("valid");
    assert!(p.origin_accepts_h3("wiki.example.com"));
    assert!(p.origin_accepts_h3("WIKI.example.com:8443"));
    assert!(
        !p.origin_accepts_h3("mixed.example.com"),
        "/admin is HTTP only"
    );
    assert!(p.origin_accepts_h3("two.apps.example.com"));
    assert!(
        !p.origin_accepts_h3("one.apps.example.com"),
        "an exact host under the wildcard takes /x"
    );
    assert!(!p.origin_accepts_h3("nowhere.example.com"));
}
