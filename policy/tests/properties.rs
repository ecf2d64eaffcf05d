//! Property tests: `decide()` never panics, `exclude` always wins, and compile-then-decide agrees
//! with a naive reference evaluator that walks the document directly (no sets, tries or tables,
//! re-parsing every value on every call).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use palisade_policy::decide::cohort_bucket;
use palisade_policy::document::{
    Application, Condition, Day, PolicyDocument, RuleDecision, StalenessMode,
};
use palisade_policy::duration::parse_duration;
use palisade_policy::request::{
    Context, Device, DeviceState, Identity, MfaMethod, MfaProof, Os, Protocol,
};
use palisade_policy::{CompiledPolicy, decide};
use proptest::prelude::*;
use serde_json::{Value, json};

// ---------- generators ----------

fn cond_value(bypass: bool) -> BoxedStrategy<Value> {
    let identity_free = prop_oneof![
        Just(json!({"everyone": true})),
        prop::sample::select(vec!["10.0.0.0/8", "10.1.0.0/16", "192.168.0.0/16", "192.168.1.7", "2001:db8::/32"]).prop_map(|s| json!({"ip": s})),
        (prop::sample::subsequence(vec!["mon", "tue", "wed", "thu", "fri", "sat", "sun"], 1..=7), 0u32..24, 0u32..24)
            .prop_filter("non-empty window", |(_, f, t)| f != t)
            .prop_map(|(days, f, t)| json!({"time": {"days": days, "from": format!("{f:02}:00"), "to": format!("{t:02}:30"), "time_zone": "Europe/Berlin"}})),
    ];
    if bypass {
        return identity_free.boxed();
    }
    prop_oneof![
        identity_free,
        prop::sample::select(vec!["a@x.com", "b@y.com", "c@x.com"])
            .prop_map(|s| json!({"email": s})),
        prop::sample::select(vec!["x.com", "y.com"]).prop_map(|s| json!({"email_domain": s})),
        prop::sample::select(vec!["g1", "g2", "g3"]).prop_map(|s| json!({"group": s})),
        prop::sample::select(vec!["r", "s"])
            .prop_map(|s| json!({"claim": {"name": "dept", "value": s}})),
        prop::sample::select(vec!["corp", "partners"])
            .prop_map(|s| json!({"identity_provider": s})),
        prop::sample::select(vec!["dg1", "dg2"]).prop_map(|s| json!({"device_group": s})),
        (
            prop::option::of(any::<bool>()),
            prop::option::of(prop::sample::select(vec!["1.0.0", "2.0.0"])),
            prop::option::of(any::<bool>()),
            prop::option::of(prop::sample::subsequence(
                vec!["macos", "linux", "windows"],
                1..=2
            ))
        )
            .prop_filter_map("valid device condition", |(enrolled, v, m, os)| {
                if enrolled.is_none() && v.is_none() && m.is_none() && os.is_none() {
                    return None;
                }
                if enrolled == Some(false) && (v.is_some() || m.is_some() || os.is_some()) {
                    return None;
                }
                let mut d = serde_json::Map::new();
                if let Some(e) = enrolled {
                    d.insert("enrolled".into(), json!(e));
                }
                if let Some(v) = v {
                    d.insert("min_client_version".into(), json!(v));
                }
                if let Some(m) = m {
                    d.insert("mandatory_auth".into(), json!(m));
                }
                if let Some(os) = os {
                    d.insert("os".into(), json!(os));
                }
                Some(json!({"device": d}))
            }),
    ]
    .boxed()
}

fn rule_value(i: usize) -> impl Strategy<Value = Value> {
    prop::sample::select(vec!["allow", "allow", "deny", "bypass"]).prop_flat_map(move |decision| {
        let bypass = decision == "bypass";
        let mfa = if decision == "allow" {
            prop::option::of(prop_oneof![
                Just(json!({"mfa": {}})),
                prop::sample::subsequence(vec!["totp", "security_key", "platform"], 1..=3).prop_map(|m| json!({"mfa": {"methods": m, "max_age": "30m"}})),
            ])
            .boxed()
        } else {
            Just(None).boxed()
        };
        (
            prop::collection::vec(cond_value(bypass), 1..4),
            prop::collection::vec(cond_value(bypass), 0..3),
            prop::collection::vec(cond_value(bypass), 0..3),
            mfa,
            prop::option::of((0u32..=100, prop::option::of(0usize..6))),
        )
            .prop_map(move |(include, mut require, exclude, mfa, rollout)| {
                if let Some(m) = mfa {
                    require.push(m);
                }
                let mut r = json!({"name": format!("r{i}"), "decision": decision, "include": include, "require": require, "exclude": exclude});
                if let Some((pct, replaces)) = rollout {
                    let mut ro = json!({"percent": pct, "device_groups": ["dg2"]});
                    if let Some(j) = replaces.filter(|j| *j != i) {
                        ro["replaces"] = json!(format!("r{j}"));
                    }
                    r["rollout"] = ro;
                }
                r
            })
    })
}

fn doc_value() -> impl Strategy<Value = Value> {
    (
        (1usize..6).prop_flat_map(|n| (0..n).map(rule_value).collect::<Vec<_>>()),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["fail_closed", "fail_open"])),
        prop::sample::subsequence(vec!["http", "h3", "tunnel"], 1..=3),
        prop::option::of(Just(vec!["corp"])),
    )
        .prop_map(|(mut rules, mfa_required, mode, protocols, providers)| {
            // Keep only rollout replacements that are valid: an existing target without a rollout
            // of its own, replaced at most once.
            let n = rules.len();
            let has_rollout: Vec<bool> = rules.iter().map(|r| r.get("rollout").is_some()).collect();
            let mut taken = std::collections::HashSet::new();
            for r in rules.iter_mut() {
                let Some(ro) = r.get_mut("rollout").and_then(Value::as_object_mut) else { continue };
                let target = ro.get("replaces").and_then(Value::as_str).and_then(|t| t[1..].parse::<usize>().ok());
                if let Some(t) = target
                    && (t >= n || has_rollout[t] || !taken.insert(t))
                {
                    ro.remove("replaces");
                }
            }
            let mut app = json!({
                "id": "app", "hosts": ["app.example.com"], "upstreams": ["http://127.0.0.1:1"],
                "protocols": protocols,
                "mfa": {"required": mfa_required, "max_age": "1h"},
                "rules": rules
            });
            if let Some(p) = providers {
                app["identity_providers"] = json!(p);
            }
            match mode {
                Some("fail_closed") => app["staleness"] = json!({"mode": "fail_closed", "max_staleness": "30s"}),
                Some(_) => app["staleness"] = json!({"mode": "fail_open"}),
                None => {}
            }
            json!({
                "schema_version": 1,
                "identity_providers": [
                    {"id": "corp", "issuer": "https://login.example.com", "client_id": "e", "client_secret_ref": "corp"},
                    {"id": "partners", "issuer": "https://p.example.net", "client_id": "e", "client_secret_ref": "partners"}
                ],
                "apps": [app]
            })
        })
}

fn identity() -> impl Strategy<Value = Identity> {
    (
        prop::sample::select(vec!["a@x.com", "B@Y.com", "c@x.com", "d@z.org"]),
        prop::sample::subsequence(vec!["g1", "g2", "g3"], 0..=3),
        prop::sample::select(vec!["corp", "partners"]),
        prop::option::of(prop::sample::select(vec!["r", "s"])),
        prop::option::of((prop::sample::select(MfaMethod::ALL.to_vec()), 0i64..7200)),
        "[a-z]{1,8}",
    )
        .prop_map(|(email, groups, provider, dept, mfa, subject)| Identity {
            provider: provider.into(),
            subject,
            email: email.into(),
            groups: groups.into_iter().map(String::from).collect(),
            claims: dept
                .map(|d| BTreeMap::from([("dept".to_string(), vec![d.to_string()])]))
                .unwrap_or_default(),
            mfa: mfa.map(|(method, ago)| MfaProof {
                method,
                factor_id: "f".into(),
                authenticated_at: base_time() - jiff::SignedDuration::from_secs(ago),
                user_verified: method == MfaMethod::Platform,
            }),
            session: None,
        })
}

fn device() -> impl Strategy<Value = Device> {
    (
        prop::sample::select(vec![
            DeviceState::Enrolled,
            DeviceState::Enrolled,
            DeviceState::Wiped,
            DeviceState::Revoked,
            DeviceState::Pending,
        ]),
        prop::option::of(prop::sample::select(vec![
            "0.9.0", "1.0.0", "1.5.3", "2.0.0", "3.1.0",
        ])),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec![
            Os::Macos,
            Os::Linux,
            Os::Windows,
            Os::Ios,
        ])),
        prop::sample::subsequence(vec!["dg1", "dg2"], 0..=2),
        "dev-[a-z0-9]{1,8}",
    )
        .prop_map(|(state, v, m, os, groups, id)| Device {
            id,
            state,
            client_version: v.and_then(|v| semver::Version::parse(v).ok()),
            mandatory_auth: m,
            os,
            groups: groups.into_iter().map(String::from).collect(),
            disk_encrypted: false,
            firewall: false,
            screen_lock: false,
            mdm_compliant: false,
            posture_reported_at: None,
        })
}

fn base_time() -> Timestamp {
    "2026-11-23T00:00:00Z".parse().expect("ts")
}

fn request() -> impl Strategy<Value = (Option<Identity>, Option<Device>, Context, Timestamp)> {
    (
        prop::option::of(identity()),
        prop::option::of(device()),
        prop::sample::select(vec![
            "10.1.2.3",
            "10.200.0.1",
            "192.168.1.7",
            "192.168.9.9",
            "8.8.8.8",
            "2001:db8::1",
            "::ffff:10.1.2.3",
        ]),
        prop::sample::select(vec![Protocol::Http, Protocol::H3, Protocol::Tunnel]),
        0u64..60,
        0i64..(7 * 86_400),
    )
        .prop_map(|(id, dev, ip, protocol, age, offset)| {
            let ctx = Context {
                source_ip: ip.parse().expect("ip"),
                protocol,
                view_age: Duration::from_secs(age),
            };
            (
                id,
                dev,
                ctx,
                base_time() + jiff::SignedDuration::from_secs(offset),
            )
        })
}

// ---------- the naive reference evaluator ----------

struct Req<'a> {
    id: Option<&'a Identity>,
    dev: Option<&'a Device>,
    ctx: &'a Context,
    now: Timestamp,
}

fn day_index(d: Day) -> i8 {
    match d {
        Day::Mon => 1,
        Day::Tue => 2,
        Day::Wed => 3,
        Day::Thu => 4,
        Day::Fri => 5,
        Day::Sat => 6,
        Day::Sun => 7,
    }
}

fn ref_cond(c: &Condition, r: &Req<'_>) -> bool {
    let email = r.id.map(|i| i.email.to_lowercase()).unwrap_or_default();
    match c {
        Condition::Everyone(b) => *b,
        Condition::Email(e) => r.id.is_some() && email == e.to_lowercase(),
        Condition::EmailDomain(d) => {
            r.id.is_some() && email.split('@').nth(1) == Some(d.to_lowercase().as_str())
        }
        Condition::Group(g) => r.id.is_some_and(|i| i.groups.contains(g)),
        Condition::Claim(cl) => r.id.is_some_and(|i| {
            i.claims
                .get(&cl.name)
                .is_some_and(|v| v.contains(&cl.value))
        }),
        Condition::IdentityProvider(p) => r.id.is_some_and(|i| &i.provider == p),
        Condition::Ip(s) => {
            let ip = match r.ctx.source_ip {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6)),
                v4 => v4,
            };
            match s.parse::<ipnet::IpNet>() {
                Ok(net) => net.contains(&ip),
                Err(_) => s.parse::<IpAddr>().is_ok_and(|a| a == ip),
            }
        }
        Condition::Device(d) => {
            let enrolled = r.dev.filter(|x| x.state == DeviceState::Enrolled);
            if let Some(want) = d.enrolled
                && want != enrolled.is_some()
            {
                return false;
            }
            let needs_posture =
                d.min_client_version.is_some() || d.mandatory_auth.is_some() || d.os.is_some();
            if !needs_posture {
                return true;
            }
            let Some(dev) = enrolled else { return false };
            if let Some(v) = &d.min_client_version {
                let min = semver::Version::parse(v).expect("valid version");
                if dev.client_version.as_ref().is_none_or(|cv| *cv < min) {
                    return false;
                }
            }
            if d.mandatory_auth.is_some_and(|m| m != dev.mandatory_auth) {
                return false;
            }
            if let Some(oses) = &d.os
                && !dev.os.is_some_and(|o| oses.contains(&o))
            {
                return false;
            }
            true
        }
        Condition::DeviceGroup(g) => r.dev.is_some_and(|d| d.groups.contains(g)),
        Condition::Time(t) => {
            let z = r.now.in_tz(&t.time_zone).expect("tz");
            let minutes = |s: &str| {
                let (h, m) = s.split_once(':').expect("hh:mm");
                h.parse::<i32>().expect("h") * 60 + m.parse::<i32>().expect("m")
            };
            let (from, to) = (minutes(&t.from), minutes(&t.to));
            let now_min = i32::from(z.hour()) * 60 + i32::from(z.minute());
            let today = z.weekday().to_monday_one_offset();
            let yesterday = if today == 1 { 7 } else { today - 1 };
            let on = |d: i8| t.days.iter().any(|x| day_index(*x) == d);
            if from < to {
                on(today) && now_min >= from && now_min < to
            } else {
                (on(today) && now_min >= from) || (on(yesterday) && now_min < to)
            }
        }
        Condition::Mfa(_) => true,
    }
}

enum RefOutcome {
    Match,
    NoMatch,
    NeedsMfa,
}

fn ref_rule(app: &Application, rule: &palisade_policy::document::Rule, r: &Req<'_>) -> RefOutcome {
    let plain = |c: &&Condition| !matches!(c, Condition::Mfa(_));
    if !rule.include.iter().filter(plain).any(|c| ref_cond(c, r)) {
        return RefOutcome::NoMatch;
    }
    if rule.exclude.iter().filter(plain).any(|c| ref_cond(c, r)) {
        return RefOutcome::NoMatch;
    }
    if !rule.require.iter().filter(plain).all(|c| ref_cond(c, r)) {
        return RefOutcome::NoMatch;
    }
    if rule.decision != RuleDecision::Allow {
        return RefOutcome::Match;
    }
    let own = rule.require.iter().find_map(|c| {
        if let Condition::Mfa(m) = c {
            Some(m)
        } else {
            None
        }
    });
    let (methods, max_age) = match own {
        Some(m) => (
            m.methods.clone().unwrap_or_else(|| app.mfa.methods.clone()),
            parse_duration(m.max_age.as_deref().unwrap_or(&app.mfa.max_age)).expect("duration"),
        ),
        None if app.mfa.required => (
            app.mfa.methods.clone(),
            parse_duration(&app.mfa.max_age).expect("duration"),
        ),
        None => return RefOutcome::Match,
    };
    let ok = r.id.and_then(|i| i.mfa.as_ref()).is_some_and(|p| {
        let age = r.now.as_second() - p.authenticated_at.as_second();
        methods.contains(&p.method) && age >= -60 && age <= max_age.as_secs() as i64
    });
    if ok {
        RefOutcome::Match
    } else {
        RefOutcome::NeedsMfa
    }
}

fn ref_in_cohort(app: &Application, rule: &palisade_policy::document::Rule, r: &Req<'_>) -> bool {
    let Some(ro) = &rule.rollout else { return true };
    if r.dev
        .is_some_and(|d| d.groups.iter().any(|g| ro.device_groups.contains(g)))
    {
        return true;
    }
    let key = r
        .dev
        .map(|d| d.id.clone())
        .or(r.id.map(|i| i.subject.clone()));
    let bp = (ro.percent.unwrap_or(0.0) * 100.0).round() as u32;
    key.is_some_and(|k| cohort_bucket(&app.id, &rule.name, &k) < bp)
}

fn ref_active(app: &Application, i: usize, r: &Req<'_>) -> bool {
    let rule = &app.rules[i];
    if let Some(replacer) = app.rules.iter().find(|q| {
        q.rollout.as_ref().and_then(|ro| ro.replaces.as_deref()) == Some(rule.name.as_str())
    }) {
        return !ref_in_cohort(app, replacer, r);
    }
    ref_in_cohort(app, rule, r)
}

fn needs_identity(rule: &palisade_policy::document::Rule) -> bool {
    rule.include
        .iter()
        .chain(&rule.require)
        .chain(&rule.exclude)
        .any(|c| {
            matches!(
                c,
                Condition::Email(_)
                    | Condition::EmailDomain(_)
                    | Condition::Group(_)
                    | Condition::Claim(_)
                    | Condition::IdentityProvider(_)
                    | Condition::Mfa(_)
            )
        })
}

/// The reference: (decision kind, deciding rule index).
fn reference(doc: &PolicyDocument, r: &Req<'_>) -> (&'static str, Option<usize>) {
    let app = &doc.apps[0];
    if app.staleness.mode == StalenessMode::FailClosed {
        let max =
            parse_duration(app.staleness.max_staleness.as_deref().unwrap_or("5m")).expect("dur");
        if r.ctx.view_age > max {
            return ("deny", None);
        }
    }
    if !app.protocols.contains(&r.ctx.protocol) {
        return ("deny", None);
    }
    let of = |d: RuleDecision| {
        app.rules
            .iter()
            .enumerate()
            .filter(move |(_, x)| x.decision == d)
            .map(|(i, _)| i)
    };
    for i in of(RuleDecision::Bypass) {
        if ref_active(app, i, r) && matches!(ref_rule(app, &app.rules[i], r), RefOutcome::Match) {
            return ("bypass", Some(i));
        }
    }
    let Some(id) = r.id else {
        for i in of(RuleDecision::Deny) {
            if !needs_identity(&app.rules[i])
                && ref_active(app, i, r)
                && matches!(ref_rule(app, &app.rules[i], r), RefOutcome::Match)
            {
                return ("deny", Some(i));
            }
        }
        return ("challenge_login", None);
    };
    let providers: Vec<&str> = if app.identity_providers.is_empty() {
        doc.identity_providers
            .iter()
            .map(|p| p.id.as_str())
            .collect()
    } else {
        app.identity_providers.iter().map(String::as_str).collect()
    };
    if !providers.contains(&id.provider.as_str()) {
        return ("deny", None);
    }
    for i in of(RuleDecision::Deny) {
        if ref_active(app, i, r) && matches!(ref_rule(app, &app.rules[i], r), RefOutcome::Match) {
            return ("deny", Some(i));
        }
    }
    let mut mfa = None;
    for i in of(RuleDecision::Allow) {
        if !ref_active(app, i, r) {
            continue;
        }
        match ref_rule(app, &app.rules[i], r) {
            RefOutcome::Match => return ("allow", Some(i)),
            RefOutcome::NeedsMfa if mfa.is_none() => mfa = Some(i),
            _ => {}
        }
    }
    match mfa {
        Some(i) => ("challenge_mfa", Some(i)),
        None => ("deny", None),
    }
}

fn compiled(doc: &Value) -> Option<(PolicyDocument, CompiledPolicy)> {
    CompiledPolicy::from_json(&doc.to_string()).ok()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, max_global_rejects: 20_000, ..ProptestConfig::default() })]

    #[test]
    fn compiled_decisions_agree_with_the_reference(doc in doc_value(), reqs in prop::collection::vec(request(), 1..8)) {
        let Some((parsed, policy)) = compiled(&doc) else { return Err(TestCaseError::reject("invalid document")) };
        let app = policy.app("app").expect("app");
        for (id, dev, ctx, now) in &reqs {
            let got = decide(app, id.as_ref(), dev.as_ref(), ctx, *now);
            let want = reference(&parsed, &Req { id: id.as_ref(), dev: dev.as_ref(), ctx, now: *now });
            prop_assert_eq!((got.kind(), got.rule().map(|r| r.index)), want, "decision {:?}", got);
        }
    }

    #[test]
    fn exclude_always_wins(doc in doc_value(), reqs in prop::collection::vec(request(), 1..8)) {
        let Some((parsed, policy)) = compiled(&doc) else { return Err(TestCaseError::reject("invalid document")) };
        let app = policy.app("app").expect("app");
        for (id, dev, ctx, now) in &reqs {
            let d = decide(app, id.as_ref(), dev.as_ref(), ctx, *now);
            if let Some(rule) = d.rule() {
                let r = Req { id: id.as_ref(), dev: dev.as_ref(), ctx, now: *now };
                let excluded = parsed.apps[0].rules[rule.index].exclude.iter().any(|c| ref_cond(c, &r));
                prop_assert!(!excluded, "rule {} decided {:?} although an exclude condition matched", rule.name, d.kind());
            }
        }
    }

    #[test]
    fn adding_a_matching_exclude_removes_the_rule_from_play(doc in doc_value(), req in request()) {
        let Some((parsed, policy)) = compiled(&doc) else { return Err(TestCaseError::reject("invalid document")) };
        let (id, dev, ctx, now) = &req;
        let d = decide(policy.app("app").expect("app"), id.as_ref(), dev.as_ref(), ctx, *now);
        let Some(rule) = d.rule() else { return Ok(()) };
        // Exclude exactly this request's source address from the deciding rule.
        let mut doc2 = doc.clone();
        doc2["apps"][0]["rules"][rule.index]["exclude"].as_array_mut().expect("exclude array").push(json!({"ip": ctx.source_ip.to_canonical().to_string()}));
        let Some((_, policy2)) = compiled(&doc2) else { return Ok(()) };
        let d2 = decide(policy2.app("app").expect("app"), id.as_ref(), dev.as_ref(), ctx, *now);
        prop_assert_ne!(d2.rule().map(|r| r.index), Some(rule.index), "{:?} then {:?} ({:?})", d, d2, parsed.apps[0].rules[rule.index].name);
    }

    #[test]
    fn decide_never_panics_on_any_request(doc in doc_value(), req in request(), junk_email in ".{0,40}", junk_group in ".{0,20}") {
        let Some((_, policy)) = compiled(&doc) else { return Err(TestCaseError::reject("invalid document")) };
        let (id, dev, ctx, now) = req;
        let id = id.map(|mut i| { i.email = junk_email; i.groups.push(junk_group); i });
        let _ = decide(policy.app("app").expect("app"), id.as_ref(), dev.as_ref(), &ctx, now);
        let _ = decide(policy.app("app").expect("app"), id.as_ref(), dev.as_ref(), &ctx, Timestamp::MIN);
        let _ = decide(policy.app("app").expect("app"), id.as_ref(), dev.as_ref(), &ctx, Timestamp::MAX);
        prop_assert!(true);
    }

    #[test]
    fn validation_never_panics_on_arbitrary_input(s in ".{0,300}") {
        let _ = palisade_policy::validate_json(&s);
    }

    #[test]
    fn validation_never_panics_on_mutated_documents(doc in doc_value(), path in prop::collection::vec(0usize..8, 1..6), replacement in prop_oneof![Just(json!(null)), Just(json!(-1)), Just(json!("")), Just(json!([])), Just(json!({})), ".{0,12}".prop_map(Value::from)]) {
        let mut doc = doc;
        // Walk immutably to build a JSON pointer, then replace what it points at.
        let mut pointer = String::new();
        let mut node = &doc;
        for step in path {
            let next = match node {
                Value::Object(m) if !m.is_empty() => m.iter().nth(step % m.len()).map(|(k, v)| (k.replace('~', "~0").replace('/', "~1"), v)),
                Value::Array(a) if !a.is_empty() => Some(((step % a.len()).to_string(), &a[step % a.len()])),
                _ => None,
            };
            match next {
                Some((k, v)) => { pointer.push('/'); pointer.push_str(&k); node = v; }
                None => break,
            }
        }
        if let Some(target) = doc.pointer_mut(&pointer) {
            *target = replacement;
        }
        let _ = palisade_policy::validate_json(&doc.to_string());
    }
}
