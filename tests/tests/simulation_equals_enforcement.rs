//! Simulation equals enforcement: every example policy in `docs/examples/` runs at a live edge
//! (3 controllers, 2 edges, real processes), and a table of requests goes both through that
//! edge, with real sessions, real second factors and real device certificates, and through
//! `palisadectl simulate` against the same document. Each must get the same decision and the
//! same rule.
//!
//! Per case, the simulated request is described from what the live one carries: the identity
//! the provider asserted, the factor passed and how long ago, and the device record exactly
//! as the controller holds it at that moment (`devices get`: state, groups, posture and its
//! time). The simulation decides at the instant the live request was made.
//!
//! What the edge reveals: an allowed request reaches the upstream with the identity assertion,
//! which names the rule that let it in; a denial page names the deciding rule, if one decided;
//! a sign-in or MFA challenge is a redirect. A public (`bypass`) request without a session
//! carries no assertion, so only its decision is compared.
//!
//! What changes so that the examples run on this machine ([`localise`]): every provider is
//! the test's provider, hosts are names under `*.palisade.localhost`, upstreams are the sample
//! upstream; the partner network is loopback; the database console's working hours are in a
//! fixed-offset zone where it is midday now, every day; its posture freshness limit is
//! shortened so that posture can go stale during the test.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use palisade_chaos::softkey::SoftKey;
use palisade_policy::decide::cohort_bucket;
use serde_json::{Value, json};
use support::devices::{enroll, report_posture, settle};
use support::mfa::{pass_key_at, register_key_at, totp_for, url_at};
use support::{Browser, CLIENT_ID, Stack, csrf, field, finish_forged_at, start_forged_at};

const WIKI: &str = "wiki.palisade.localhost";
const PARTNERS: &str = "partners.palisade.localhost";
const DB: &str = "db-console.palisade.localhost";
const HOSTS: &[&str] = &[WIKI, PARTNERS, DB];

/// How fresh the database console wants posture here (the example says 1h).
const FRESH_FOR_SECS: u64 = 20;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn example(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/examples")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("example")).expect("json")
}

/// The example `doc` as it can run here: see the module documentation. `hosts` maps the
/// example's hosts to local ones (others are dropped).
fn localise(mut doc: Value, s: &Stack, hosts: &[(&str, &str)]) -> Value {
    for p in doc["identity_providers"].as_array_mut().expect("providers") {
        p["issuer"] = json!(s.forging.issuer);
        p["client_id"] = json!(CLIENT_ID);
        p["client_secret_ref"] = json!("forged-oidc");
    }
    doc["mfa"] = json!({"enrollment_requires_code": false});
    let upstream = format!("http://{}", s.upstream.addr);
    for app in doc["apps"].as_array_mut().expect("apps") {
        let local: Vec<&str> = app["hosts"]
            .as_array()
            .expect("hosts")
            .iter()
            .filter_map(|h| hosts.iter().find(|(from, _)| h == from).map(|(_, to)| *to))
            .collect();
        app["hosts"] = json!(local);
        app["upstreams"] = json!([upstream]);
    }
    doc
}

/// `Etc/GMT±N` (POSIX signs: `Etc/GMT-2` is UTC+2) where the local hour is now 12.
fn zone_where_it_is_midday() -> String {
    let utc_hour = now() / 3600 % 24;
    match 12 - utc_hour {
        0 => "Etc/GMT".into(),
        ahead if ahead > 0 => format!("Etc/GMT-{ahead}"),
        behind => format!("Etc/GMT+{}", -behind),
    }
}

/// What one live request got: (decision, rule).
async fn live(b: &mut Browser, host: &str, port: u16, path: &str) -> (String, String) {
    let p = b.get(&url_at(host, port, path)).await;
    let outcome = |d: &str, r: &str| (d.to_string(), r.to_string());
    match p.status {
        200 => {
            let v: Value = serde_json::from_str(&p.body).unwrap_or_else(|_| panic!("{}", p.body));
            let rule = v["identity"]["claims"]["rule"].as_str().unwrap_or_default();
            outcome("let_through", rule)
        }
        302 => outcome("challenge_login", ""),
        303 if p
            .location
            .as_deref()
            .is_some_and(|l| l.starts_with("/.palisade/mfa?")) =>
        {
            outcome("challenge_mfa", "")
        }
        403 => {
            let rule = p
                .body
                .split("Decided by rule <code>")
                .nth(1)
                .and_then(|r| r.split("</code>").next())
                .unwrap_or_default();
            outcome("deny", rule)
        }
        _ => panic!("{host}{path}: {} {:?} {}", p.status, p.location, p.body),
    }
}

/// A signed-in user: the browser and the identity as a simulated request describes it.
struct User {
    b: Browser,
    identity: Value,
    /// When the user passed a second factor (unix seconds), and which.
    mfa: Option<(i64, &'static str)>,
    /// The device the browser presents, if any.
    device: Option<String>,
}

/// Signs `claims` in at `host` through the test's provider (the sign-in starts at `path`,
/// asked anonymously, which must be a sign-in challenge), on `device` if given: (id, PEM).
#[allow(clippy::too_many_arguments)]
async fn sign_in(
    s: &Stack,
    host: &str,
    path: &str,
    idp: &str,
    claims: Value,
    groups_claim: &str,
    device: Option<(&str, &str)>,
) -> User {
    let port = s.edge_port(0);
    let mut b = Browser::for_hosts(&s.ca, device.map(|(_, pem)| pem), HOSTS);
    let (state, nonce) = start_forged_at(&mut b, host, port, path).await;
    let mut token = claims.clone();
    token["iss"] = json!(s.forging.issuer);
    token["aud"] = json!(CLIENT_ID);
    token["nonce"] = json!(nonce);
    token["iat"] = json!(now());
    token["exp"] = json!(now() + 600);
    token["email_verified"] = json!(true);
    s.forging.will_return(s.forging.sign(&token));
    let done = finish_forged_at(&mut b, host, port, &state, &s.forging.issuer).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let mut other = BTreeMap::new();
    for (k, v) in claims.as_object().expect("claims") {
        if !["sub", "email", "name", groups_claim].contains(&k.as_str()) {
            other.insert(k.clone(), v.as_str().expect("a string claim").to_string());
        }
    }
    User {
        b,
        identity: json!({
            "identity_provider": idp,
            "subject": claims["sub"],
            "email": claims["email"],
            "groups": claims.get(groups_claim).cloned().unwrap_or(json!([])),
            "claims": other,
        }),
        mfa: None,
        device: device.map(|(id, _)| id.to_string()),
    }
}

/// A device record as `palisadectl simulate` describes a device.
fn device_spec(s: &Stack, id: &str) -> Value {
    let (code, d) = s.palisadectl(&["devices", "get", id]);
    assert_eq!(code, 0, "{d}");
    let p = &d["posture"];
    json!({
        "id": d["id"], "state": d["state"], "groups": d["groups"],
        "os": p["os"], "client_version": p["client_version"],
        "mandatory_auth": p["mandatory_auth"], "disk_encrypted": p["disk_encrypted"],
        "firewall": p["firewall"], "screen_lock": p["screen_lock"],
        "mdm_compliant": p["mdm_compliant"], "posture_reported_at": p["reported_at"],
    })
}

/// An enrolled device: its id, key and chain (PEM), where its files are, what it reports.
struct Managed {
    id: String,
    pem: String,
    dir: PathBuf,
    posture: &'static [&'static str],
}

/// One row of the table: what was asked, under which document, and what the edge answered.
struct Case {
    policy: PathBuf,
    spec: Value,
    live: (String, String),
}

/// One case's outcome: (decision, rule) simulated and at the edge, and simulate's reason.
struct Row {
    label: String,
    simulated: (String, String),
    live: (String, String),
    reason: String,
}

/// The cases, with the document they run under.
struct Table {
    policy: PathBuf,
    cases: Vec<Case>,
}

impl Table {
    /// Asks the live edge as `user` (anonymously when `None`) and describes the same request;
    /// returns the edge's decision.
    async fn ask(
        &mut self,
        s: &Stack,
        label: &str,
        host: &str,
        path: &str,
        user: Option<&mut User>,
    ) -> String {
        let port = s.edge_port(0);
        let mut anonymous;
        let (b, identity, device) = match user {
            Some(u) => {
                let mut identity = u.identity.clone();
                if let Some((at, method)) = u.mfa {
                    identity["mfa_method"] = json!(method);
                    identity["mfa_age_seconds"] = json!(now() - at);
                }
                (&mut u.b, Some(identity), u.device.clone())
            }
            None => {
                anonymous = Browser::for_hosts(&s.ca, None, HOSTS);
                (&mut anonymous, None, None)
            }
        };
        let time = jiff::Timestamp::now().to_string();
        let live = live(b, host, port, path).await;
        let mut spec = json!({"label": label, "host": host, "path": path,
                              "source_ip": "127.0.0.1", "time": time});
        if let Some(i) = identity {
            spec["identity"] = i;
        }
        if let Some(d) = device {
            spec["device"] = device_spec(s, &d);
        }
        let decision = live.0.clone();
        self.cases.push(Case {
            policy: self.policy.clone(),
            spec,
            live,
        });
        decision
    }

    /// [`Table::ask`] on `device`, which reports its posture first (the posture limit here is
    /// short).
    async fn ask_fresh(
        &mut self,
        s: &Stack,
        label: &str,
        host: &str,
        path: &str,
        user: &mut User,
        device: &Managed,
    ) -> String {
        report_posture(s, &device.dir, device.posture);
        settle(s).await;
        self.ask(s, label, host, path, Some(user)).await
    }

    /// Applies `doc` (written to `file` for `simulate -f`) and waits for both edges.
    async fn apply(&mut self, s: &Stack, doc: &Value, file: PathBuf) {
        std::fs::write(&file, doc.to_string()).expect("write");
        let rev = s
            .cluster
            .apply_policy(&doc.to_string(), "examples")
            .await
            .expect("the example applies");
        s.cluster
            .wait_edges(rev, Duration::from_secs(20))
            .await
            .expect("edges apply");
        self.policy = file;
    }

    /// Simulates every case against its document; returns (label, simulated, live) per case.
    fn simulate(&self, s: &Stack, dir: &Path) -> Vec<Row> {
        let mut out = Vec::new();
        let mut policies: Vec<&PathBuf> = self.cases.iter().map(|c| &c.policy).collect();
        policies.dedup();
        for policy in policies {
            let cases: Vec<&Case> = self.cases.iter().filter(|c| &c.policy == policy).collect();
            let reqs = dir.join("requests.json");
            let specs: Vec<&Value> = cases.iter().map(|c| &c.spec).collect();
            std::fs::write(&reqs, json!(specs).to_string()).expect("write");
            let (code, results) = s.palisadectl(&[
                "simulate",
                "-r",
                reqs.to_str().expect("utf-8"),
                "-f",
                policy.to_str().expect("utf-8"),
            ]);
            assert_eq!(code, 0, "{results}");
            let results = results.as_array().expect("results");
            assert_eq!(results.len(), cases.len());
            for (c, r) in cases.iter().zip(results) {
                let decision = r["decision"].as_str().expect("decision");
                let rule = r["rule"].as_str().unwrap_or_default();
                let anonymous = c.spec.get("identity").is_none();
                let simulated = match decision {
                    "allow" => ("let_through", rule),
                    // without a session there is no assertion to name the rule
                    "bypass" if anonymous => ("let_through", ""),
                    "bypass" => ("let_through", rule),
                    "deny" => ("deny", rule),
                    challenge => (challenge, ""),
                };
                out.push(Row {
                    label: c.spec["label"].as_str().expect("label").to_string(),
                    simulated: (simulated.0.to_string(), simulated.1.to_string()),
                    live: c.live.clone(),
                    reason: r["reason"].as_str().unwrap_or_default().to_string(),
                });
            }
        }
        out
    }
}

/// Enrols a TOTP factor for the signed-in `u` at `host` and passes it for `rd`.
async fn pass_totp(s: &Stack, u: &mut User, host: &str, rd: &str) {
    let port = s.edge_port(0);
    let url = |path: &str| url_at(host, port, path);
    let portal = u.b.get(&url("/.palisade/portal")).await;
    assert_eq!(portal.status, 200, "{}", portal.body);
    let token = csrf(&portal.body);
    let begin =
        u.b.post_form(
            &url("/.palisade/portal/totp/begin"),
            &[("csrf", &token), ("name", "Phone")],
        )
        .await;
    let secret = field(&begin.body, "totp-secret").expect("key shown");
    let uri = field(&begin.body, "uri").expect("uri");
    let factor_id = field(&begin.body, "factor_id").expect("factor id");
    let totp = totp_for(&secret);
    let t = now() as u64;
    let confirmed =
        u.b.post_form(
            &url("/.palisade/portal/totp/confirm"),
            &[
                ("csrf", &token),
                ("factor_id", &factor_id),
                ("uri", &uri),
                ("code", &totp.generate(t).to_string()),
            ],
        )
        .await;
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    let asked = u.b.get(&url(rd)).await;
    assert_eq!(asked.status, 303, "{}", asked.body);
    let prompt = u.b.get(&url(asked.location.as_deref().expect("loc"))).await;
    let token = csrf(&prompt.body);
    // The confirming code's step is spent: the next step's code (within the accepted skew).
    let passed =
        u.b.post_form(
            &url("/.palisade/mfa/totp"),
            &[
                ("csrf", &token),
                ("rd", rd),
                ("code", &totp.generate(t + 30).to_string()),
            ],
        )
        .await;
    assert_eq!(passed.status, 303, "{}", passed.body);
    u.mfa = Some((now(), "totp"));
}

/// Passes `key` for `rd` at `host`.
async fn pass_key(s: &Stack, u: &mut User, host: &str, key: &mut SoftKey, rd: &str) {
    pass_key_at(&mut u.b, host, s.edge_port(0), key, rd).await;
    u.mfa = Some((now(), "security_key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_example_decides_at_the_edge_as_simulate_says() {
    let s = Stack::start().await;
    let tmp = tempfile::tempdir().expect("tmp");
    let port = s.edge_port(0);
    let mut t = Table {
        policy: PathBuf::new(),
        cases: Vec::new(),
    };

    // The wiki: employees with a TOTP code; the health endpoint is for the monitoring network.
    let wiki = localise(example("wiki.json"), &s, &[("wiki.example.com", WIKI)]);
    t.apply(&s, &wiki, tmp.path().join("wiki.json")).await;
    t.ask(&s, "wiki: anonymous", WIKI, "/", None).await;
    t.ask(
        &s,
        "wiki: health, not the monitoring network",
        WIKI,
        "/healthz",
        None,
    )
    .await;
    let staff = json!({"sub": "alice", "email": "alice@example.com", "groups": ["staff"]});
    let mut alice = sign_in(&s, WIKI, "/", "corp", staff, "groups", None).await;
    t.ask(
        &s,
        "wiki: employee, no code yet",
        WIKI,
        "/",
        Some(&mut alice),
    )
    .await;
    pass_totp(&s, &mut alice, WIKI, "/").await;
    t.ask(&s, "wiki: employee with TOTP", WIKI, "/", Some(&mut alice))
        .await;
    let outsider = json!({"sub": "mallory", "email": "mallory@evil.example"});
    let mut mallory = sign_in(&s, WIKI, "/", "corp", outsider, "groups", None).await;
    t.ask(&s, "wiki: another domain", WIKI, "/", Some(&mut mallory))
        .await;

    // The partner portal: gold-tier partner staff from the partner network (loopback here),
    // one contractor excluded; static assets public. Groups come from the `roles` claim.
    let mut partners = localise(
        example("partner-portal.json"),
        &s,
        &[("partners.example.com", PARTNERS)],
    );
    partners["apps"][0]["rules"][0]["require"][0] = json!({"ip": "127.0.0.0/8"});
    t.apply(&s, &partners, tmp.path().join("partner-portal.json"))
        .await;
    t.ask(
        &s,
        "partners: public asset",
        PARTNERS,
        "/static/app.css",
        None,
    )
    .await;
    t.ask(&s, "partners: anonymous", PARTNERS, "/orders", None)
        .await;
    let gold = |sub: &str, email: &str| json!({"sub": sub, "email": email, "roles": ["buyer"], "partner_tier": "gold"});
    let mut bob = sign_in(
        &s,
        PARTNERS,
        "/orders",
        "partners",
        gold("bob", "bob@acme-logistics.com"),
        "roles",
        None,
    )
    .await;
    t.ask(
        &s,
        "partners: gold, no factor yet",
        PARTNERS,
        "/orders",
        Some(&mut bob),
    )
    .await;
    let mut key = SoftKey::new();
    register_key_at(&mut bob.b, PARTNERS, port, &key, "key").await;
    pass_key(&s, &mut bob, PARTNERS, &mut key, "/orders").await;
    t.ask(
        &s,
        "partners: gold with a key",
        PARTNERS,
        "/orders",
        Some(&mut bob),
    )
    .await;
    let mut jane = sign_in(
        &s,
        PARTNERS,
        "/orders",
        "partners",
        gold("jane", "contractor.jane@acme-logistics.com"),
        "roles",
        None,
    )
    .await;
    t.ask(
        &s,
        "partners: the excluded contractor",
        PARTNERS,
        "/orders",
        Some(&mut jane),
    )
    .await;
    let mut silver = gold("carl", "carl@northwind.example");
    silver["partner_tier"] = json!("silver");
    let mut carl = sign_in(&s, PARTNERS, "/orders", "partners", silver, "roles", None).await;
    t.ask(
        &s,
        "partners: silver tier",
        PARTNERS,
        "/orders",
        Some(&mut carl),
    )
    .await;

    // The production database console: on-call DBAs with a security key, on an enrolled,
    // compliant device, in working hours; a canary cohort on the stricter v2 rule; loaners
    // excluded; offboarding frozen.
    let mut db = localise(
        example("prod-db-console.json"),
        &s,
        &[("db-console.prod.example.com", DB)],
    );
    let zone = zone_where_it_is_midday();
    let every_day = json!(["mon", "tue", "wed", "thu", "fri", "sat", "sun"]);
    for rule in db["apps"][0]["rules"].as_array_mut().expect("rules") {
        for r in rule
            .get_mut("require")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(time) = r.get_mut("time") {
                time["time_zone"] = json!(zone);
                time["days"] = every_day.clone();
            }
            if let Some(device) = r.get_mut("device") {
                assert!(
                    device.get("max_age").is_some(),
                    "the example asks for fresh posture"
                );
                device["max_age"] = json!(format!("{FRESH_FOR_SECS}s"));
            }
        }
    }
    t.apply(&s, &db, tmp.path().join("prod-db-console.json"))
        .await;
    let compliant: &[&str] = &[
        "--os",
        "linux",
        "--client-version",
        "2.6.0",
        "--mandatory-auth",
    ];
    let older: &[&str] = &[
        "--os",
        "linux",
        "--client-version",
        "2.4.0",
        "--mandatory-auth",
    ];
    let dba = "dave@example.com";
    let mut devices = BTreeMap::new();
    for (name, groups, posture) in [
        ("canary", "canary", compliant),
        ("plain", "", older),
        ("loaner", "loaner", compliant),
        ("wiped", "canary", compliant),
        ("revoked", "canary", compliant),
        ("stale", "canary", compliant),
    ] {
        // Outside the canary group, a device's id puts it in the 10% cohort of the v2 rule
        // or not; "plain" is enrolled until one is outside, on the rule v2 replaces.
        let mut attempt = 0;
        let (id, pem, dir) = loop {
            let dir = tmp.path().join(format!("{name}-{attempt}"));
            let serial = format!("SER-{name}-{attempt}");
            let (id, pem) = enroll(&s, dba, &serial, groups, &dir, posture).await;
            let bucket = cohort_bucket("prod-db-console", "dba-on-call-v2", &id);
            if name != "plain" || bucket >= 1000 {
                break (id, pem, dir);
            }
            attempt += 1;
            assert!(attempt < 20, "every device id falls in a 10% cohort");
        };
        devices.insert(
            name,
            Managed {
                id,
                pem,
                dir,
                posture,
            },
        );
    }
    settle(&s).await;
    let dave_claims = json!({"sub": "dave", "email": dba, "groups": ["dba"]});
    let mut on = BTreeMap::new();
    let mut key = SoftKey::new();
    for (name, d) in &devices {
        let device = Some((d.id.as_str(), d.pem.as_str()));
        let mut u = sign_in(&s, DB, "/", "corp", dave_claims.clone(), "groups", device).await;
        if on.is_empty() {
            register_key_at(&mut u.b, DB, port, &key, "yubikey").await;
        }
        let label = format!("db: DBA on {name} device, no key yet");
        if t.ask_fresh(&s, &label, DB, "/", &mut u, d).await == "challenge_mfa" {
            pass_key(&s, &mut u, DB, &mut key, "/").await;
        }
        on.insert(*name, u);
    }
    for name in ["canary", "plain", "loaner"] {
        let u = on.get_mut(name).expect("user");
        t.ask_fresh(
            &s,
            &format!("db: DBA on {name} device"),
            DB,
            "/",
            u,
            &devices[name],
        )
        .await;
    }
    let mut desk = sign_in(&s, DB, "/", "corp", dave_claims.clone(), "groups", None).await;
    t.ask(&s, "db: DBA without a device", DB, "/", Some(&mut desk))
        .await;
    let leaving =
        json!({"sub": "olga", "email": "olga@example.com", "groups": ["dba", "offboarding"]});
    let mut olga = sign_in(&s, DB, "/", "corp", leaving, "groups", None).await;
    t.ask(&s, "db: DBA being offboarded", DB, "/", Some(&mut olga))
        .await;

    // Wiped and revoked: refused at the next request, as that device.
    for (verb, name) in [("wipe", "wiped"), ("revoke", "revoked")] {
        let d = &devices[name];
        let u = on.get_mut(name).expect("user");
        t.ask_fresh(
            &s,
            &format!("db: DBA on the {name} device, before"),
            DB,
            "/",
            u,
            d,
        )
        .await;
        let (code, out) = s.palisadectl(&["devices", verb, &d.id, "--reason", "test"]);
        assert_eq!(code, 0, "{out}");
        settle(&s).await;
        t.ask(
            &s,
            &format!("db: DBA on the {name} device"),
            DB,
            "/",
            Some(&mut *u),
        )
        .await;
        // The user is told which device problem to fix.
        let page = u.b.get(&url_at(DB, port, "/")).await;
        assert!(
            page.body.contains(&format!("this one was {name}")),
            "{}",
            page.body
        );
    }

    // Posture goes stale, then is reported again.
    let stale = &devices["stale"];
    let u = on.get_mut("stale").expect("user");
    t.ask_fresh(
        &s,
        "db: DBA on a device with fresh posture",
        DB,
        "/",
        u,
        stale,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(FRESH_FOR_SECS + 2)).await;
    t.ask(
        &s,
        "db: DBA on a device with stale posture",
        DB,
        "/",
        Some(&mut *u),
    )
    .await;
    t.ask_fresh(
        &s,
        "db: DBA on a device with posture reported again",
        DB,
        "/",
        u,
        stale,
    )
    .await;

    let results = t.simulate(&s, tmp.path());
    let mut report = String::new();
    for r in &results {
        report.push_str(&format!(
            "{:<50} simulate {:<15} {:<15} edge {:<15} {:<15} {}\n",
            r.label, r.simulated.0, r.simulated.1, r.live.0, r.live.1, r.reason
        ));
    }
    eprintln!("{report}");
    let differ: Vec<_> = results.iter().filter(|r| r.simulated != r.live).collect();
    assert!(
        differ.is_empty(),
        "simulate and the edge disagree:\n{report}"
    );

    // And the table says what the examples promise (so that agreeing on nothing fails).
    let outcome = |label: &str| {
        results
            .iter()
            .find(|r| r.label == label)
            .map(|r| (r.live.0.as_str(), r.live.1.as_str()))
            .unwrap_or_else(|| panic!("no case {label}"))
    };
    let expect = [
        ("wiki: anonymous", ("challenge_login", "")),
        ("wiki: employee, no code yet", ("challenge_mfa", "")),
        ("wiki: employee with TOTP", ("let_through", "employees")),
        ("wiki: another domain", ("deny", "")),
        ("partners: public asset", ("let_through", "")),
        (
            "partners: gold with a key",
            ("let_through", "partner-staff"),
        ),
        ("partners: silver tier", ("deny", "")),
        (
            "db: DBA on canary device",
            ("let_through", "dba-on-call-v2"),
        ),
        (
            "db: DBA on the wiped device, before",
            ("let_through", "dba-on-call-v2"),
        ),
        (
            "db: DBA on a device with fresh posture",
            ("let_through", "dba-on-call-v2"),
        ),
        ("db: DBA on the wiped device", ("deny", "")),
        ("db: DBA on the revoked device", ("deny", "")),
        ("db: DBA without a device", ("deny", "")),
        ("db: DBA being offboarded", ("deny", "offboarding-freeze")),
        ("db: DBA on a device with stale posture", ("deny", "")),
        (
            "db: DBA on a device with posture reported again",
            ("let_through", "dba-on-call-v2"),
        ),
    ];
    for (label, want) in expect {
        assert_eq!(outcome(label), want, "{label}\n{report}");
    }
    // Out of the rollout cohort, client 2.4.0 is enough under the rule v2 replaces; a loaner
    // is never let in.
    assert_eq!(
        outcome("db: DBA on plain device"),
        ("let_through", "dba-on-call")
    );
    assert_eq!(outcome("db: DBA on loaner device").0, "deny");
}
