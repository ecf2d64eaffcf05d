//! `cargo bench -p palisade-policy`: `decide()` on a compiled document of 10,000 applications and
//! 100,000 rules (median and p99 per decision), compile time for that document, and session / MFA
//! token verification.
//!
//! Criterion reports means and medians with confidence intervals; the percentile report printed
//! first times single calls with `Instant` (including ~20-30 ns of timer overhead per sample).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion};
use jiff::Timestamp;
use palisade_policy::request::{
    Context, Device, DeviceState, Identity, MfaMethod, MfaProof, Os, Protocol,
};
use palisade_policy::token::{KeyRing, MfaClaims, SessionClaims, SigningKey, TokenKind};
use palisade_policy::{CompiledPolicy, PolicyDocument, decide};
use serde_json::{Value, json};

const APPS: usize = 10_000;
const RULES_PER_APP: usize = 10;

/// A deterministic xorshift generator, so every run benchmarks the same document and requests.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn big_document() -> Value {
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    let apps: Vec<Value> = (0..APPS)
        .map(|a| {
            let rules: Vec<Value> = (0..RULES_PER_APP)
                .map(|r| {
                    let include = match r % 5 {
                        0 => json!([{"email": format!("user{}@example.com", rng.below(5000))}, {"email": format!("user{}@example.com", rng.below(5000))}]),
                        1 => json!([{"email_domain": format!("team{}.example.com", rng.below(50))}]),
                        2 => json!([{"group": format!("group-{}", rng.below(200))}, {"group": format!("group-{}", rng.below(200))}]),
                        3 => json!([{"ip": format!("10.{}.0.0/16", rng.below(256))}, {"claim": {"name": "dept", "value": format!("d{}", rng.below(30))}}]),
                        _ => json!([{"everyone": true}]),
                    };
                    let decision = if r == 9 { "deny" } else { "allow" };
                    let mut rule = json!({"name": format!("rule-{r}"), "decision": decision, "include": include});
                    if r % 5 == 4 {
                        rule["require"] = json!([
                            {"device": {"enrolled": true, "min_client_version": "2.0.0"}},
                            {"time": {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "07:00", "to": "20:00", "time_zone": "Europe/Berlin"}}
                        ]);
                        rule["exclude"] = json!([{"device_group": "loaner"}]);
                    }
                    if r == 9 {
                        rule["include"] = json!([{"group": "offboarding"}]);
                    }
                    rule
                })
                .collect();
            json!({
                "id": format!("app-{a}"),
                "hosts": [format!("app-{a}.example.com")],
                "path_prefixes": ["/", "/admin", "/api/v1"],
                "upstreams": [format!("http://10.0.{}.{}:8080", a / 250, a % 250)],
                "mfa": {"methods": ["totp", "security_key", "platform"], "max_age": "12h"},
                "rules": rules
            })
        })
        .collect();
    json!({
        "schema_version": 1,
        "identity_providers": [{"id": "corp", "issuer": "https://login.example.com", "client_id": "edge", "client_secret_ref": "corp"}],
        "apps": apps
    })
}

struct Req {
    host: String,
    path: &'static str,
    identity: Identity,
    device: Device,
    ctx: Context,
}

fn requests(n: usize, now: Timestamp) -> Vec<Req> {
    let mut rng = Rng(42);
    (0..n)
        .map(|_| Req {
            host: format!("app-{}.example.com", rng.below(APPS)),
            path: ["/", "/admin/users", "/api/v1/items/7", "/static/app.js"][rng.below(4)],
            identity: Identity {
                provider: "corp".into(),
                subject: format!("sub-{}", rng.below(100_000)),
                email: format!("user{}@team{}.example.com", rng.below(5000), rng.below(60)),
                groups: {
                    let mut g: Vec<String> = (0..5)
                        .map(|_| format!("group-{}", rng.below(250)))
                        .collect();
                    if rng.below(20) == 0 {
                        g.push("offboarding".into());
                    }
                    g
                },
                claims: BTreeMap::from([("dept".to_string(), vec![format!("d{}", rng.below(40))])]),
                // One in ten requests has no MFA yet (challenge), the rest passed TOTP.
                mfa: (rng.below(10) != 0).then(|| MfaProof {
                    method: MfaMethod::Totp,
                    factor_id: "fac-1".into(),
                    authenticated_at: now - jiff::SignedDuration::from_secs(600),
                    user_verified: false,
                }),
                session: None,
            },
            device: Device {
                id: format!("dev-{}", rng.below(100_000)),
                state: DeviceState::Enrolled,
                // Some clients are too old for the posture rule, some devices are loaners.
                client_version: Some(semver::Version::new(
                    1 + rng.below(2) as u64,
                    rng.below(10) as u64,
                    0,
                )),
                mandatory_auth: true,
                os: Some(Os::Macos),
                disk_encrypted: true,
                firewall: true,
                screen_lock: true,
                mdm_compliant: true,
                posture_reported_at: None,
                groups: if rng.below(10) == 0 {
                    vec!["loaner".into()]
                } else {
                    vec!["engineering".into()]
                },
            },
            ctx: Context {
                source_ip: format!(
                    "10.{}.{}.{}",
                    rng.below(300) % 256,
                    rng.below(256),
                    rng.below(256)
                )
                .parse()
                .expect("ip"),
                protocol: Protocol::Http,
                view_age: Duration::from_millis(200),
            },
        })
        .collect()
}

fn route_and_decide(policy: &CompiledPolicy, r: &Req, now: Timestamp) -> Option<&'static str> {
    let app = policy.route(&r.host, r.path)?;
    Some(decide(app, Some(&r.identity), Some(&r.device), &r.ctx, now).kind())
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn percentile_report(policy: &CompiledPolicy, reqs: &[Req], now: Timestamp) {
    // Warm up caches and branch predictors.
    for r in reqs.iter().take(50_000) {
        black_box(route_and_decide(policy, r, now));
    }
    let mut samples: Vec<u64> = Vec::with_capacity(reqs.len());
    let mut kinds: BTreeMap<&'static str, usize> = BTreeMap::new();
    for r in reqs {
        let t = Instant::now();
        let k = black_box(route_and_decide(policy, black_box(r), now));
        samples.push(t.elapsed().as_nanos() as u64);
        *kinds.entry(k.unwrap_or("no_application")).or_default() += 1;
    }
    samples.sort_unstable();
    println!(
        "route+decide over {} requests on {APPS} apps / {} rules: p50 {} ns, p90 {} ns, p99 {} ns, p99.9 {} ns, max {} ns",
        samples.len(),
        APPS * RULES_PER_APP,
        percentile(&samples, 0.5),
        percentile(&samples, 0.9),
        percentile(&samples, 0.99),
        percentile(&samples, 0.999),
        samples[samples.len() - 1]
    );
    println!("decision mix: {kinds:?}");
}

fn main() {
    let now: Timestamp = "2026-11-25T10:00:00Z".parse().expect("ts");
    let doc_json = big_document().to_string();
    let doc: PolicyDocument = palisade_policy::parse_document(&doc_json).expect("parses");
    let t = Instant::now();
    let policy = CompiledPolicy::compile(&doc).expect("valid big document");
    println!(
        "document: {} bytes, {} apps, {} rules; one compile took {:?}",
        doc_json.len(),
        APPS,
        APPS * RULES_PER_APP,
        t.elapsed()
    );
    let reqs = requests(200_000, now);
    percentile_report(&policy, &reqs, now);

    let mut c = Criterion::default().configure_from_args();
    {
        let mut g = c.benchmark_group("decide");
        let mut i = 0usize;
        g.bench_function("route_and_decide_10k_apps_100k_rules", |b| {
            b.iter(|| {
                i = (i + 1) % reqs.len();
                black_box(route_and_decide(&policy, &reqs[i], now))
            })
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("compile");
        g.sample_size(10).measurement_time(Duration::from_secs(30));
        g.bench_function("compile_10k_apps_100k_rules", |b| {
            b.iter(|| black_box(CompiledPolicy::compile(&doc).expect("valid")))
        });
        g.bench_function("parse_and_compile_10k_apps_100k_rules", |b| {
            b.iter_batched(
                || doc_json.clone(),
                |j| black_box(CompiledPolicy::from_json(&j).expect("valid")),
                BatchSize::LargeInput,
            )
        });
        g.finish();
    }
    {
        let ring = KeyRing::new([
            SigningKey {
                kid: "k-41".into(),
                secret: vec![3; 32],
                active: false,
            },
            SigningKey {
                kid: "k-42".into(),
                secret: vec![7; 32],
                active: true,
            },
        ]);
        let t = now.as_second();
        let session = SessionClaims {
            sid: "q1w2e3r4t5y6u7i8o9p0aa".into(),
            idp: "corp".into(),
            sub: "248289761001".into(),
            email: "alice@example.com".into(),
            name: "Alice Example".into(),
            groups: vec!["eng".into(), "dba".into(), "sre-oncall".into()],
            claims: BTreeMap::new(),
            aud: String::new(),
            iat: t - 600,
            exp: t + 3600,
            last_active: t - 30,
            idle_secs: 3600,
            rev: 0,
            did: String::new(),
        };
        let mfa = MfaClaims {
            sid: session.sid.clone(),
            sub: session.sub.clone(),
            method: MfaMethod::SecurityKey,
            factor_id: "fac-17".into(),
            auth_time: t - 60,
            exp: t + 3600,
            uv: true,
        };
        let st = ring.sign(TokenKind::Session, &session).expect("sign");
        let mt = ring.sign(TokenKind::Mfa, &mfa).expect("sign");
        let mut g = c.benchmark_group("token");
        g.bench_function("verify_session", |b| {
            b.iter(|| black_box(ring.verify_session(black_box(&st), t).expect("valid")))
        });
        g.bench_function("verify_mfa", |b| {
            b.iter(|| {
                black_box(
                    ring.verify_mfa(black_box(&mt), &session.sid, t)
                        .expect("valid"),
                )
            })
        });
        g.bench_function("sign_session", |b| {
            b.iter(|| {
                black_box(
                    ring.sign(TokenKind::Session, black_box(&session))
                        .expect("sign"),
                )
            })
        });
        g.finish();
    }
    c.final_summary();
}
