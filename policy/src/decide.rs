//! `decide()`: the access decision for one request, pure and allocation-free on the allow path.
//!
//! Order of evaluation, for the application the request was routed to:
//! 1. a fail-closed application whose view is too stale is denied;
//! 2. a protocol the application does not accept is denied;
//! 3. `bypass` rules, in order: the first match lets the request through without sign-in;
//! 4. without an identity: `deny` rules that need no identity are checked, then the user is asked
//!    to sign in;
//! 5. an identity from a provider the application does not accept is denied; a session older
//!    than the application's session lifetime, or idle longer than its idle timeout, must sign
//!    in again (sessions are per host, and one host may serve applications with different
//!    lifetimes);
//! 6. `deny` rules, in order: the first match denies;
//! 7. `allow` rules, in order: the first match allows; a rule that matches except for MFA makes
//!    the answer an MFA challenge (unless a later rule allows outright);
//! 8. otherwise deny, saying what the closest rule was missing.
//!
//! A rule matches when any `include`, every `require` and no `exclude` condition holds; `exclude`
//! always wins. Rules in a staged rollout apply only to their cohort, and the rule they replace
//! applies only outside it.

use std::borrow::Cow;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;

use crate::compile::{
    AnySet, CompiledApp, CompiledRule, Cond, DeviceReq, MfaRequirement, Staleness, TimeReq,
};
use crate::document::{MfaMethod, Protocol, RuleDecision};
use crate::request::{Context, Device, DeviceState, Identity};

/// Names the rule that decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRef {
    /// Index in the application's `rules` array.
    pub index: usize,
    /// The rule's name.
    pub name: Arc<str>,
}

/// What the user must do before access can be granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// Sign in with one of these identity providers.
    Login {
        /// Identity provider ids the application accepts.
        providers: Vec<String>,
    },
    /// Pass a second factor with one of these methods.
    Mfa {
        /// Methods that satisfy the rule.
        methods: Vec<MfaMethod>,
        /// How old the proof may be.
        max_age: Duration,
    },
}

/// Why a request was denied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DenyReason {
    /// A `deny` rule matched.
    DenyRule,
    /// No `allow` rule matched; lists what the closest one was missing.
    NoRuleMatched {
        /// Plain-language requirements that were not met (for operators: they can name who
        /// else the rule lets in).
        missing: Vec<String>,
        /// What the caller's device lacks for the closest rule whose audience includes the
        /// caller: safe to show the caller, who can fix it (report posture, turn on the
        /// firewall). Empty when the device is not what stood in the way.
        device: Vec<String>,
    },
    /// The edge's view is older than the application allows.
    StaleView {
        /// Age of the view.
        age: Duration,
        /// The application's limit.
        max: Duration,
    },
    /// The request came over a protocol the application does not accept.
    ProtocolNotAllowed(Protocol),
    /// The user signed in with a provider the application does not accept.
    IdentityProviderNotAllowed {
        /// The provider used.
        provider: String,
    },
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::DenyRule => write!(f, "a deny rule matched this request"),
            DenyReason::NoRuleMatched { missing, .. } if missing.is_empty() => {
                write!(f, "no rule allows this request")
            }
            DenyReason::NoRuleMatched { missing, .. } => write!(
                f,
                "no rule allows this request; missing: {}",
                missing.join("; ")
            ),
            DenyReason::StaleView { age, max } => write!(
                f,
                "this edge has not heard from the controllers for {}s and the application allows at most {}s",
                age.as_secs(),
                max.as_secs()
            ),
            DenyReason::ProtocolNotAllowed(p) => {
                write!(f, "the application is not served over {p:?}")
            }
            DenyReason::IdentityProviderNotAllowed { provider } => {
                write!(
                    f,
                    "the application does not accept sign-in through {provider:?}"
                )
            }
        }
    }
}

/// The outcome of `decide()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the request through (the identity is forwarded upstream).
    Allow {
        /// The rule that allowed it.
        rule: RuleRef,
    },
    /// Let the request through without sign-in.
    Bypass {
        /// The rule that bypassed it.
        rule: RuleRef,
    },
    /// Refuse it.
    Deny {
        /// The rule that denied it, if one did.
        rule: Option<RuleRef>,
        /// Why.
        reason: DenyReason,
    },
    /// Ask the user to do something first.
    Challenge {
        /// The rule that would allow the request once the challenge is passed.
        rule: Option<RuleRef>,
        /// What to do.
        challenge: Challenge,
    },
}

impl Decision {
    /// Short name: `allow`, `bypass`, `deny`, `challenge_login` or `challenge_mfa`.
    pub fn kind(&self) -> &'static str {
        match self {
            Decision::Allow { .. } => "allow",
            Decision::Bypass { .. } => "bypass",
            Decision::Deny { .. } => "deny",
            Decision::Challenge {
                challenge: Challenge::Login { .. },
                ..
            } => "challenge_login",
            Decision::Challenge {
                challenge: Challenge::Mfa { .. },
                ..
            } => "challenge_mfa",
        }
    }

    /// The rule that decided, if any.
    pub fn rule(&self) -> Option<&RuleRef> {
        match self {
            Decision::Allow { rule } | Decision::Bypass { rule } => Some(rule),
            Decision::Deny { rule, .. } | Decision::Challenge { rule, .. } => rule.as_ref(),
        }
    }

    /// A sentence for the user (and the audit log) saying why.
    pub fn explain(&self) -> String {
        match self {
            Decision::Allow { rule } => format!("allowed by rule {:?}", &*rule.name),
            Decision::Bypass { rule } => format!("public under rule {:?}", &*rule.name),
            Decision::Deny {
                rule: Some(rule),
                reason,
            } => format!("denied by rule {:?}: {reason}", &*rule.name),
            Decision::Deny { rule: None, reason } => format!("denied: {reason}"),
            Decision::Challenge {
                challenge: Challenge::Login { .. },
                ..
            } => "sign-in required".into(),
            Decision::Challenge {
                challenge: Challenge::Mfa { methods, .. },
                rule,
            } => format!(
                "a second factor is required{}: one of {}",
                rule.as_ref()
                    .map(|r| format!(" by rule {:?}", &*r.name))
                    .unwrap_or_default(),
                methods
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

/// The facts one decision looks at, with the identity's email normalised once.
struct Facts<'a> {
    identity: Option<&'a Identity>,
    email: Cow<'a, str>,
    device: Option<&'a Device>,
    ctx: &'a Context,
    now: Timestamp,
    cohort: Option<&'a str>,
}

enum Outcome {
    Match,
    NoMatch,
    NeedsMfa(MfaRequirement),
}

/// Decides one request to `app`. `identity` is `None` for a request without a valid session;
/// `device` is `None` for an unmanaged client. Never panics.
pub fn decide(
    app: &CompiledApp,
    identity: Option<&Identity>,
    device: Option<&Device>,
    ctx: &Context,
    now: Timestamp,
) -> Decision {
    if let Staleness::FailClosed(max) = app.staleness
        && ctx.view_age > max
    {
        return Decision::Deny {
            rule: None,
            reason: DenyReason::StaleView {
                age: ctx.view_age,
                max,
            },
        };
    }
    if !app.protocols.contains(&ctx.protocol) {
        return Decision::Deny {
            rule: None,
            reason: DenyReason::ProtocolNotAllowed(ctx.protocol),
        };
    }
    let email = match identity {
        Some(id) if id.email.bytes().any(|b| b.is_ascii_uppercase()) => {
            Cow::Owned(id.email.to_ascii_lowercase())
        }
        Some(id) => Cow::Borrowed(id.email.as_str()),
        None => Cow::Borrowed(""),
    };
    let cohort = device
        .map(|d| d.id.as_str())
        .or(identity.map(|i| i.subject.as_str()));
    let f = Facts {
        identity,
        email,
        device,
        ctx,
        now,
        cohort,
    };

    for &i in &app.bypass {
        if let Some(rule) = app.rules.get(i)
            && active(app, rule, &f)
            && matches!(eval_rule(rule, &f), Outcome::Match)
        {
            return Decision::Bypass {
                rule: rule_ref(rule),
            };
        }
    }

    let Some(id) = identity else {
        for &i in &app.deny {
            if let Some(rule) = app.rules.get(i)
                && !rule.needs_identity
                && active(app, rule, &f)
                && matches!(eval_rule(rule, &f), Outcome::Match)
            {
                return Decision::Deny {
                    rule: Some(rule_ref(rule)),
                    reason: DenyReason::DenyRule,
                };
            }
        }
        return Decision::Challenge {
            rule: None,
            challenge: Challenge::Login {
                providers: app.identity_providers.clone(),
            },
        };
    };

    if !app.identity_providers.contains(&id.provider) {
        return Decision::Deny {
            rule: None,
            reason: DenyReason::IdentityProviderNotAllowed {
                provider: id.provider.clone(),
            },
        };
    }

    if let Some(t) = &id.session {
        let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
        let age = now.as_second().saturating_sub(t.issued_at.as_second());
        let idle = now.as_second().saturating_sub(t.last_active.as_second());
        if age > secs(app.session_lifetime) || idle > secs(app.idle_timeout) {
            return Decision::Challenge {
                rule: None,
                challenge: Challenge::Login {
                    providers: app.identity_providers.clone(),
                },
            };
        }
    }

    for &i in &app.deny {
        if let Some(rule) = app.rules.get(i)
            && active(app, rule, &f)
            && matches!(eval_rule(rule, &f), Outcome::Match)
        {
            return Decision::Deny {
                rule: Some(rule_ref(rule)),
                reason: DenyReason::DenyRule,
            };
        }
    }

    let mut mfa_challenge: Option<(&CompiledRule, MfaRequirement)> = None;
    for &i in &app.allow {
        let Some(rule) = app.rules.get(i) else {
            continue;
        };
        if !active(app, rule, &f) {
            continue;
        }
        match eval_rule(rule, &f) {
            Outcome::Match => {
                return Decision::Allow {
                    rule: rule_ref(rule),
                };
            }
            Outcome::NeedsMfa(req) => {
                if mfa_challenge.is_none() {
                    mfa_challenge = Some((rule, req));
                }
            }
            Outcome::NoMatch => {}
        }
    }
    if let Some((rule, req)) = mfa_challenge {
        return Decision::Challenge {
            rule: Some(rule_ref(rule)),
            challenge: Challenge::Mfa {
                methods: req.methods.methods(),
                max_age: req.max_age,
            },
        };
    }
    Decision::Deny {
        rule: None,
        reason: explain_missing(app, &f),
    }
}

fn rule_ref(rule: &CompiledRule) -> RuleRef {
    RuleRef {
        index: rule.index,
        name: rule.name.clone(),
    }
}

/// Whether a rule applies to this request, given staged rollouts.
fn active(app: &CompiledApp, rule: &CompiledRule, f: &Facts<'_>) -> bool {
    if let Some(replacer) = rule.replaced_by.and_then(|i| app.rules.get(i)) {
        return !in_cohort(app, replacer, f);
    }
    rule.rollout.is_none() || in_cohort(app, rule, f)
}

fn in_cohort(app: &CompiledApp, rule: &CompiledRule, f: &Facts<'_>) -> bool {
    let Some(ro) = &rule.rollout else { return true };
    if let Some(d) = f.device
        && d.groups
            .iter()
            .any(|g| ro.device_groups.contains(g.as_str()))
    {
        return true;
    }
    match f.cohort {
        Some(key) => cohort_bucket(&app.id, &rule.name, key) < ro.basis_points,
        None => false,
    }
}

/// The rollout bucket (0..10000) of a cohort key for one rule: FNV-1a over
/// `app id \0 rule name \0 key`. Stable across edges, versions and restarts; documented so a
/// rollout's cohort can be computed outside Palisade.
pub fn cohort_bucket(app_id: &str, rule_name: &str, key: &str) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [
        app_id.as_bytes(),
        b"\0",
        rule_name.as_bytes(),
        b"\0",
        key.as_bytes(),
    ] {
        for &b in part {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    (h % 10_000) as u32
}

fn eval_rule(rule: &CompiledRule, f: &Facts<'_>) -> Outcome {
    if !any_matches(&rule.include, f) {
        return Outcome::NoMatch;
    }
    if any_matches(&rule.exclude, f) {
        return Outcome::NoMatch;
    }
    if !rule.require.iter().all(|c| cond_matches(c, f)) {
        return Outcome::NoMatch;
    }
    match rule.mfa {
        Some(req) if !mfa_satisfied(req, f) => Outcome::NeedsMfa(req),
        _ => Outcome::Match,
    }
}

fn mfa_satisfied(req: MfaRequirement, f: &Facts<'_>) -> bool {
    let Some(proof) = f.identity.and_then(|i| i.mfa.as_ref()) else {
        return false;
    };
    if !req.methods.contains(proof.method) {
        return false;
    }
    if req.user_verification && !proof.user_verified {
        return false;
    }
    let age = f.now.duration_since(proof.authenticated_at);
    // A proof from the future (clock skew beyond a minute) does not count.
    let age_secs = age.as_secs();
    age_secs >= -60 && u64::try_from(age_secs.max(0)).is_ok_and(|s| s <= req.max_age.as_secs())
}

fn email_domain<'a>(f: &'a Facts<'_>) -> Option<&'a str> {
    f.email.rsplit_once('@').map(|(_, d)| d)
}

fn any_matches(set: &AnySet, f: &Facts<'_>) -> bool {
    if set.everyone {
        return true;
    }
    if !set.ips.is_empty() && set.ips.contains(f.ctx.source_ip) {
        return true;
    }
    if let Some(id) = f.identity {
        if !set.emails.is_empty() && !f.email.is_empty() && set.emails.contains(&*f.email) {
            return true;
        }
        if !set.domains.is_empty() && email_domain(f).is_some_and(|d| set.domains.contains(d)) {
            return true;
        }
        if !set.groups.is_empty() && id.groups.iter().any(|g| set.groups.contains(g.as_str())) {
            return true;
        }
        if !set.providers.is_empty() && set.providers.contains(id.provider.as_str()) {
            return true;
        }
        if !set.claims.is_empty()
            && id.claims.iter().any(|(k, vs)| {
                set.claims
                    .get(k.as_str())
                    .is_some_and(|want| vs.iter().any(|v| want.contains(v.as_str())))
            })
        {
            return true;
        }
    }
    if !set.device_groups.is_empty()
        && f.device.is_some_and(|d| {
            d.groups
                .iter()
                .any(|g| set.device_groups.contains(g.as_str()))
        })
    {
        return true;
    }
    set.others.iter().any(|c| cond_matches(c, f))
}

fn cond_matches(c: &Cond, f: &Facts<'_>) -> bool {
    match c {
        Cond::Everyone => true,
        Cond::Email(e) => f.identity.is_some() && *f.email == **e,
        Cond::EmailDomain(d) => email_domain(f).is_some_and(|x| x == &**d),
        Cond::Group(g) => f
            .identity
            .is_some_and(|i| i.groups.iter().any(|x| x == &**g)),
        Cond::Claim(n, v) => f.identity.is_some_and(|i| {
            i.claims
                .get(&**n)
                .is_some_and(|vs| vs.iter().any(|x| x == &**v))
        }),
        Cond::Provider(p) => f.identity.is_some_and(|i| i.provider == **p),
        Cond::Ip(net) => net.contains(&f.ctx.source_ip.to_canonical()),
        Cond::Device(req) => device_matches(req, f.device, f.now),
        Cond::DeviceGroup(g) => f.device.is_some_and(|d| d.groups.iter().any(|x| x == &**g)),
        Cond::Time(t) => time_matches(t, f.now),
    }
}

fn device_matches(req: &DeviceReq, device: Option<&Device>, now: Timestamp) -> bool {
    device_check(req, device, now, |_| ControlFlow::Break(())).is_continue()
}

/// One thing a device condition asked of the device that it lacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lack<'a> {
    /// An enrolled device (`true`), or an unmanaged one (`false`).
    Enrolled(bool),
    /// An enrolled device, where the one presented is known but in this other state.
    NotEnrolled(DeviceState),
    /// A Palisade client at least this version.
    ClientVersion(&'a semver::Version),
    /// Mandatory authentication on (`true`) or off.
    MandatoryAuth(bool),
    /// One of these operating systems.
    Os,
    /// A posture flag with the wanted value.
    Flag(&'static str, bool),
    /// A posture report no older than this.
    Fresh(Duration),
}

impl fmt::Display for Lack<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let on = |b: bool| if b { "on" } else { "off" };
        match self {
            Lack::Enrolled(true) => write!(f, "an enrolled device presenting its certificate"),
            Lack::Enrolled(false) => write!(f, "an unmanaged device"),
            Lack::NotEnrolled(DeviceState::Wiped) => {
                write!(
                    f,
                    "an enrolled device (this one was wiped: it must enroll again)"
                )
            }
            Lack::NotEnrolled(DeviceState::Revoked) => {
                write!(f, "an enrolled device (this one was revoked)")
            }
            Lack::NotEnrolled(_) => {
                write!(
                    f,
                    "an enrolled device (this one has not finished enrolling)"
                )
            }
            Lack::ClientVersion(v) => write!(f, "Palisade client {v} or later"),
            Lack::MandatoryAuth(m) => write!(f, "mandatory authentication {}", on(*m)),
            Lack::Os => write!(f, "a device running an allowed operating system"),
            Lack::Flag(what, want) => write!(f, "{what} {}", on(*want)),
            Lack::Fresh(max) => write!(
                f,
                "a posture report from the device within the last {}s (its last one is older, or there is none)",
                max.as_secs()
            ),
        }
    }
}

/// Checks a device condition, calling `lacks` for each requirement the device does not meet
/// until it says to stop: one definition for the decision (stop at the first) and for the
/// denial page (say all).
fn device_check<'r>(
    req: &'r DeviceReq,
    device: Option<&Device>,
    now: Timestamp,
    mut lacks: impl FnMut(Lack<'r>) -> ControlFlow<()>,
) -> ControlFlow<()> {
    let enrolled = device.filter(|d| d.state == DeviceState::Enrolled);
    // What an enrolled device is missing: a device, or the known device's enrollment.
    let not_enrolled = || match device {
        Some(d) if d.state != DeviceState::Enrolled => Lack::NotEnrolled(d.state),
        _ => Lack::Enrolled(true),
    };
    if let Some(want) = req.enrolled
        && want != enrolled.is_some()
    {
        lacks(if want {
            not_enrolled()
        } else {
            Lack::Enrolled(false)
        })?;
    }
    if !req.checks_posture() {
        return ControlFlow::Continue(());
    }
    // Posture only counts for an enrolled device.
    let Some(d) = enrolled else {
        if req.enrolled != Some(true) {
            lacks(not_enrolled())?;
        }
        return ControlFlow::Continue(());
    };
    if let Some(min) = &req.min_version
        && d.client_version.as_ref().is_none_or(|v| v < min)
    {
        lacks(Lack::ClientVersion(min))?;
    }
    if let Some(want) = req.mandatory_auth
        && want != d.mandatory_auth
    {
        lacks(Lack::MandatoryAuth(want))?;
    }
    if let Some(oses) = &req.os
        && d.os.is_none_or(|os| !oses.contains(&os))
    {
        lacks(Lack::Os)?;
    }
    for (what, want, have) in [
        ("disk encryption", req.disk_encrypted, d.disk_encrypted),
        ("the host firewall", req.firewall, d.firewall),
        ("a screen lock", req.screen_lock, d.screen_lock),
        ("MDM compliance", req.mdm_compliant, d.mdm_compliant),
    ] {
        if let Some(w) = want
            && w != have
        {
            lacks(Lack::Flag(what, w))?;
        }
    }
    if let Some(max) = req.max_age {
        let fresh = d
            .posture_reported_at
            .is_some_and(|at| now.duration_since(at).as_secs_f64() <= max.as_secs_f64());
        if !fresh {
            lacks(Lack::Fresh(max))?;
        }
    }
    ControlFlow::Continue(())
}

pub(crate) fn weekday_index(w: jiff::civil::Weekday) -> u8 {
    // Monday = 0.
    (w.to_monday_zero_offset() as u8) % 7
}

fn time_matches(t: &TimeReq, now: Timestamp) -> bool {
    let z = t.tz.to_datetime(now);
    let minute = (z.hour() as u16) * 60 + z.minute() as u16;
    let today = weekday_index(z.weekday());
    let yesterday = (today + 6) % 7;
    let day_on = |d: u8| t.days & (1 << d) != 0;
    if t.from_min < t.to_min {
        day_on(today) && minute >= t.from_min && minute < t.to_min
    } else {
        (day_on(today) && minute >= t.from_min) || (day_on(yesterday) && minute < t.to_min)
    }
}

/// Says, in plain words, what the first allow rule whose include matched (or else the first
/// allow rule) was missing; and, when the caller is in that rule's audience, what their device
/// lacks.
fn explain_missing(app: &CompiledApp, f: &Facts<'_>) -> DenyReason {
    let candidates: Vec<&CompiledRule> = app
        .allow
        .iter()
        .filter_map(|&i| app.rules.get(i))
        .filter(|r| active(app, r, f))
        .collect();
    let Some(rule) = candidates
        .iter()
        .find(|r| any_matches(&r.include, f))
        .or(candidates.first())
    else {
        return DenyReason::NoRuleMatched {
            missing: vec!["the application has no allow rule".into()],
            device: Vec::new(),
        };
    };
    let mut missing = Vec::new();
    let included = any_matches(&rule.include, f);
    if !included {
        missing.push(format!(
            "rule {:?} includes only: {}",
            &*rule.name,
            rule.source
                .include
                .iter()
                .map(describe)
                .collect::<Vec<_>>()
                .join(" or ")
        ));
    }
    let excluded = any_matches(&rule.exclude, f);
    if excluded {
        missing.push(format!("rule {:?} excludes this request", &*rule.name));
    }
    let mut device = Vec::new();
    for (c, src) in rule.require.iter().zip(
        rule.source
            .require
            .iter()
            .filter(|c| !matches!(c, crate::document::Condition::Mfa(_))),
    ) {
        if cond_matches(c, f) {
            continue;
        }
        missing.push(format!("rule {:?} requires {}", &*rule.name, describe(src)));
        if !included || excluded {
            continue;
        }
        match c {
            Cond::Device(req) => {
                let _ = device_check(req, f.device, f.now, |lack| {
                    device.push(lack.to_string());
                    ControlFlow::Continue(())
                });
            }
            Cond::DeviceGroup(_) if f.device.is_none() => {
                device.push(Lack::Enrolled(true).to_string());
            }
            _ => {}
        }
    }
    device.dedup();
    DenyReason::NoRuleMatched { missing, device }
}

/// A condition in plain words.
pub fn describe(c: &crate::document::Condition) -> String {
    use crate::document::Condition as C;
    match c {
        C::Everyone(_) => "everyone".into(),
        C::Email(e) => format!("email {e}"),
        C::EmailDomain(d) => format!("an email at {d}"),
        C::Group(g) => format!("group {g}"),
        C::Claim(cl) => format!("claim {} = {}", cl.name, cl.value),
        C::IdentityProvider(p) => format!("sign-in through {p}"),
        C::Ip(n) => format!("a source address in {n}"),
        C::Device(d) => {
            let mut parts = Vec::new();
            if let Some(e) = d.enrolled {
                parts.push(if e {
                    "an enrolled device".to_string()
                } else {
                    "an unmanaged device".to_string()
                });
            }
            if let Some(v) = &d.min_client_version {
                parts.push(format!("Palisade client {v} or later"));
            }
            if let Some(m) = d.mandatory_auth {
                parts.push(format!(
                    "mandatory authentication {}",
                    if m { "on" } else { "off" }
                ));
            }
            if let Some(os) = &d.os {
                parts.push(format!("one of {os:?}"));
            }
            for (want, what) in [
                (d.disk_encrypted, "disk encryption"),
                (d.firewall, "the host firewall"),
                (d.screen_lock, "a screen lock"),
            ] {
                if let Some(w) = want {
                    parts.push(format!("{what} {}", if w { "on" } else { "off" }));
                }
            }
            if let Some(m) = d.mdm_compliant {
                parts.push(
                    if m {
                        "MDM-compliant"
                    } else {
                        "not MDM-compliant"
                    }
                    .to_string(),
                );
            }
            if let Some(a) = &d.max_age {
                parts.push(format!("posture reported within {a}"));
            }
            parts.join(", ")
        }
        C::DeviceGroup(g) => format!("device group {g}"),
        C::Time(t) => format!("{:?} {}-{} ({})", t.days, t.from, t.to, t.time_zone),
        C::Mfa(_) => "a second factor".into(),
    }
}

/// The decision kind of a rule, as a string.
pub fn decision_name(d: RuleDecision) -> &'static str {
    match d {
        RuleDecision::Allow => "allow",
        RuleDecision::Deny => "deny",
        RuleDecision::Bypass => "bypass",
    }
}
