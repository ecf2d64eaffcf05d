//! One request's verdict, from what every protocol has.
//!
//! HTTP/1.1, HTTP/2, HTTP/3 and the device tunnel all describe what arrived as a [`Request`]
//! (host, path, method, peer, transport, presented credentials) and call [`enforce`] with the
//! replica's view and `now`. The answer is a [`Verdict`]; the adapter only renders it (a
//! proxied response, a redirect to sign-in, a page, a closed stream). A long-lived connection
//! is re-decided by calling `enforce` again with the same request whenever the view changes.

use std::net::IpAddr;
use std::time::Duration;

use palisade_policy::compile::RouteError;
use palisade_policy::decide::{Challenge, Decision, DenyReason, RuleRef};
use palisade_policy::document::{MfaMethod, Protocol};
use palisade_policy::request::{Context, Device};
use palisade_policy::{CompiledApp, decide};

use crate::device::{self, DeviceCredential, DeviceRefused};
use crate::session::{self, Caller, SessionRefused};
use crate::view::View;

/// How a request reached the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// HTTP/1.1 over TLS.
    H1,
    /// HTTP/2 over TLS.
    H2,
    /// HTTP/3 over QUIC.
    H3,
    /// A flow in the QUIC device tunnel.
    Tunnel,
}

impl Transport {
    /// The protocol a policy's `protocols` names for this transport.
    pub fn protocol(self) -> Protocol {
        match self {
            Transport::H1 | Transport::H2 => Protocol::Http,
            Transport::H3 => Protocol::H3,
            Transport::Tunnel => Protocol::Tunnel,
        }
    }
}

/// What the client presented, as it arrived (nothing verified yet).
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    /// The session token (the session cookie), if sent.
    pub session: Option<&'a str>,
    /// The MFA assertion token (the MFA cookie), if sent.
    pub mfa: Option<&'a str>,
    /// The device certificate the connection presented, if any.
    pub device: Option<DeviceCredential<'a>>,
}

/// What the verdict of one request depends on.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Lowercase host, no port.
    pub host: &'a str,
    /// Normalised path.
    pub path: &'a str,
    /// The request method (`GET`, `POST`, ...; `CONNECT` for a tunnel flow).
    pub method: &'a str,
    /// The client's address.
    pub peer: IpAddr,
    /// How it arrived.
    pub transport: Transport,
    /// What it presented.
    pub credentials: Credentials<'a>,
    /// When the connection carrying it was let through (unix seconds), 0 for a new request:
    /// an open connection counts as the session's activity.
    pub active_since: i64,
}

/// Why the edge cannot decide now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// No snapshot has been installed yet.
    NotReady,
    /// The view is older than a fail-closed application allows.
    Stale {
        /// The view's age.
        age: Duration,
        /// The application's limit.
        max: Duration,
    },
}

/// The answer for one request.
// `Forward` (with its caller) is the common answer: boxing it would cost an allocation on
// every request to make the rare ones smaller.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum Verdict<'v> {
    /// Let it through to the application, with the caller's identity (none on a public path
    /// without a session).
    Forward {
        /// The application.
        app: &'v CompiledApp,
        /// Who is let in.
        caller: Option<Caller>,
        /// The rule that let it in.
        rule: RuleRef,
        /// Whether that rule is a public (`bypass`) rule.
        public: bool,
    },
    /// Sign in first, with one of these providers.
    SignIn {
        /// The application.
        app: &'v CompiledApp,
        /// Identity provider ids it accepts.
        providers: Vec<String>,
    },
    /// Pass a second factor first.
    Mfa {
        /// The application.
        app: &'v CompiledApp,
        /// The rule that asks for it.
        rule: Option<RuleRef>,
        /// Methods that satisfy the rule.
        methods: Vec<MfaMethod>,
        /// How old the proof may be.
        max_age: Duration,
    },
    /// Refused by policy.
    Deny {
        /// The application.
        app: &'v CompiledApp,
        /// The rule that denied it, if one did.
        rule: Option<RuleRef>,
        /// Why.
        reason: DenyReason,
    },
    /// No application is served at this host and path.
    NotFound,
    /// The path is refused before routing (it could be read as another application's).
    BadPath(RouteError),
    /// The edge cannot decide now.
    Unavailable(Unavailable),
}

impl Verdict<'_> {
    /// Short name, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Verdict::Forward { public: false, .. } => "allow",
            Verdict::Forward { public: true, .. } => "bypass",
            Verdict::SignIn { .. } => "sign_in",
            Verdict::Mfa { .. } => "mfa",
            Verdict::Deny { .. } => "deny",
            Verdict::NotFound => "not_found",
            Verdict::BadPath(_) => "bad_path",
            Verdict::Unavailable(Unavailable::NotReady) => "not_ready",
            Verdict::Unavailable(Unavailable::Stale { .. }) => "stale",
        }
    }

    /// A sentence for the log and the audit trail saying why.
    pub fn explain(&self) -> String {
        let rule = |r: &Option<RuleRef>| {
            r.as_ref()
                .map(|r| format!(" by rule {:?}", &*r.name))
                .unwrap_or_default()
        };
        match self {
            Verdict::Forward {
                rule,
                public: false,
                ..
            } => format!("allowed by rule {:?}", &*rule.name),
            Verdict::Forward {
                rule, public: true, ..
            } => format!("public under rule {:?}", &*rule.name),
            Verdict::SignIn { .. } => "sign-in required".into(),
            Verdict::Mfa {
                rule: r, methods, ..
            } => format!(
                "a second factor is required{}: one of {}",
                rule(r),
                methods
                    .iter()
                    .map(|m| m.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Verdict::Deny {
                rule: r, reason, ..
            } => format!("denied{}: {reason}", rule(r)),
            Verdict::NotFound => "no application is served at this address".into(),
            Verdict::BadPath(e) => format!("the request path is refused: {e}"),
            Verdict::Unavailable(Unavailable::NotReady) => {
                "this edge has not received its configuration yet".into()
            }
            Verdict::Unavailable(Unavailable::Stale { age, max }) => DenyReason::StaleView {
                age: *age,
                max: *max,
            }
            .to_string(),
        }
    }

    /// The application the request was routed to, if any.
    pub fn app(&self) -> Option<&CompiledApp> {
        match self {
            Verdict::Forward { app, .. }
            | Verdict::SignIn { app, .. }
            | Verdict::Mfa { app, .. }
            | Verdict::Deny { app, .. } => Some(app),
            _ => None,
        }
    }
}

/// A verdict, with what the adapter must also do about the presented session.
#[derive(Debug, Clone)]
pub struct Enforced<'v> {
    /// The answer.
    pub verdict: Verdict<'v>,
    /// Why a presented session token was refused (the response clears the cookie), if it was.
    pub session_refused: Option<SessionRefused>,
    /// Why a presented device certificate did not count (the request is decided as from no
    /// device), if it did not.
    pub device_refused: Option<DeviceRefused>,
}

/// The verdict for `req` against `view` (`None` before the first snapshot) at `now` (unix
/// seconds), with the view `view_age` old.
pub fn enforce<'v>(
    view: Option<&'v View>,
    req: &Request<'_>,
    view_age: Duration,
    now: i64,
) -> Enforced<'v> {
    let done = |verdict| Enforced {
        verdict,
        session_refused: None,
        device_refused: None,
    };
    let Some(view) = view else {
        return done(Verdict::Unavailable(Unavailable::NotReady));
    };
    let Some(policy) = view.compiled_policy() else {
        return done(Verdict::NotFound);
    };
    let app = match policy.route_request(req.host, req.path) {
        Ok(Some(app)) => app,
        Ok(None) => return done(Verdict::NotFound),
        Err(e) => return done(Verdict::BadPath(e)),
    };
    let (device, device_refused) = match req.credentials.device {
        None => (None, None),
        Some(presented) => match device::resolve(view, presented, now) {
            Ok(d) => (Some(d), None),
            Err(e) => (None, Some(e)),
        },
    };
    let (caller, session_refused) = match session::verify(
        view,
        req.credentials.session,
        req.credentials.mfa,
        session::Presented {
            host: req.host,
            device: device.map(|d| d.id.as_str()),
        },
        now,
        req.active_since,
    ) {
        Ok(c) => (c, None),
        Err(e) => (None, Some(e)),
    };
    let device = device.map(|d| d.for_decision());
    Enforced {
        verdict: verdict(
            app,
            caller,
            device.as_ref(),
            req.peer,
            req.transport,
            view_age,
            now,
        ),
        session_refused,
        device_refused,
    }
}

/// The verdict for an already verified `caller` (or none) at `app`: what `enforce` answers
/// once the request is routed and its credentials are checked. The MFA prompt asks this to
/// know what an application still needs from the user.
pub fn verdict<'a>(
    app: &'a CompiledApp,
    caller: Option<Caller>,
    device: Option<&Device>,
    peer: IpAddr,
    transport: Transport,
    view_age: Duration,
    now: i64,
) -> Verdict<'a> {
    let ctx = Context {
        source_ip: peer,
        protocol: transport.protocol(),
        view_age,
    };
    let at = jiff::Timestamp::from_second(now).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let decision = decide(app, caller.as_ref().map(|c| &c.identity), device, &ctx, at);
    match decision {
        Decision::Allow { rule } => Verdict::Forward {
            app,
            caller,
            rule,
            public: false,
        },
        Decision::Bypass { rule } => Verdict::Forward {
            app,
            caller,
            rule,
            public: true,
        },
        Decision::Deny {
            reason: DenyReason::StaleView { age, max },
            ..
        } => Verdict::Unavailable(Unavailable::Stale { age, max }),
        Decision::Deny { rule, reason } => Verdict::Deny { app, rule, reason },
        Decision::Challenge {
            challenge: Challenge::Login { providers },
            ..
        } => Verdict::SignIn { app, providers },
        Decision::Challenge {
            rule,
            challenge: Challenge::Mfa { methods, max_age },
        } => Verdict::Mfa {
            app,
            rule,
            methods,
            max_age,
        },
    }
}

/// Whether a connection let through for the session `sid` (`None`: a public path) may stay
/// open: `req` still gets `Forward`, for the same session. What a long-lived connection (a
/// WebSocket, a streaming response, an HTTP/3 connection, a tunnel) asks on every view change.
pub fn still_allowed(
    view: Option<&View>,
    req: &Request<'_>,
    sid: Option<&str>,
    view_age: Duration,
    now: i64,
) -> bool {
    match enforce(view, req, view_age, now).verdict {
        Verdict::Forward {
            public: false,
            caller: Some(c),
            ..
        } => sid == Some(c.session.sid.as_str()),
        Verdict::Forward { public: true, .. } => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{NOW, mfa_token, session, session_token, view};
    use palisade_policy::catalog::RevocationTarget;
    use palisade_policy::token::TokenError;

    use crate::view::Change;

    /// What a table row expects.
    #[derive(Debug, PartialEq)]
    enum Want {
        Forward {
            who: Option<&'static str>,
            mfa: bool,
            public: bool,
        },
        SignIn(&'static [&'static str]),
        Mfa(&'static [MfaMethod]),
        Deny(Option<&'static str>),
        NotFound,
        BadPath,
        NotReady,
        Stale,
    }

    fn got(v: &Verdict<'_>) -> Want {
        match v {
            Verdict::Forward { caller, public, .. } => Want::Forward {
                who: caller.as_ref().map(|c| match c.session.sub.as_str() {
                    "alice" => "alice",
                    "carol" => "carol",
                    _ => "someone",
                }),
                mfa: caller.as_ref().is_some_and(|c| c.identity.mfa.is_some()),
                public: *public,
            },
            Verdict::SignIn { providers, .. } => Want::SignIn(match providers.as_slice() {
                [p] if p == "corp" => &["corp"],
                [] => &[],
                _ => &["corp", "partner"],
            }),
            Verdict::Mfa { methods, .. } => Want::Mfa(
                if methods.as_slice() == [MfaMethod::SecurityKey, MfaMethod::Platform] {
                    &[MfaMethod::SecurityKey, MfaMethod::Platform]
                } else {
                    &[]
                },
            ),
            Verdict::Deny { rule, .. } => Want::Deny(rule.as_ref().map(|r| match &*r.name {
                "no-contractors" => "no-contractors",
                _ => "other",
            })),
            Verdict::NotFound => Want::NotFound,
            Verdict::BadPath(_) => Want::BadPath,
            Verdict::Unavailable(Unavailable::NotReady) => Want::NotReady,
            Verdict::Unavailable(Unavailable::Stale { .. }) => Want::Stale,
        }
    }

    struct Row {
        name: &'static str,
        host: &'static str,
        path: &'static str,
        transport: Transport,
        /// Who is signed in (subject, groups), and for which host the session was issued.
        session: Option<(&'static str, &'static [&'static str], &'static str)>,
        /// The factor of an MFA assertion, and how long ago it was passed.
        mfa: Option<(&'static str, i64)>,
        view_age: Duration,
        want: Want,
        clears_session: bool,
    }

    const fn row(name: &'static str, host: &'static str, want: Want) -> Row {
        Row {
            name,
            host,
            path: "/",
            transport: Transport::H1,
            session: None,
            mfa: None,
            view_age: Duration::ZERO,
            want,
            clears_session: false,
        }
    }

    const STAFF: &[&str] = &["staff"];

    fn table() -> Vec<Row> {
        let alice = Some(("alice", STAFF, "wiki.test"));
        let alice_db = Some(("alice", STAFF, "db.test"));
        vec![
            row(
                "public app without a session",
                "public.test",
                Want::Forward {
                    who: None,
                    mfa: false,
                    public: true,
                },
            ),
            Row {
                session: Some(("alice", STAFF, "public.test")),
                ..row(
                    "public app keeps the caller",
                    "public.test",
                    Want::Forward {
                        who: Some("alice"),
                        mfa: false,
                        public: true,
                    },
                )
            },
            row("no application at the host", "nowhere.test", Want::NotFound),
            Row {
                path: "/api/x",
                ..row(
                    "a path whose case names another app",
                    "wiki.test",
                    Want::BadPath,
                )
            },
            row(
                "anonymous gets sign-in with the app's providers",
                "wiki.test",
                Want::SignIn(&["corp"]),
            ),
            Row {
                session: alice,
                ..row(
                    "staff are allowed",
                    "wiki.test",
                    Want::Forward {
                        who: Some("alice"),
                        mfa: false,
                        public: false,
                    },
                )
            },
            Row {
                session: Some(("carol", &["staff", "contractors"], "wiki.test")),
                ..row(
                    "a deny rule wins",
                    "wiki.test",
                    Want::Deny(Some("no-contractors")),
                )
            },
            Row {
                session: Some(("carol", &["sales"], "wiki.test")),
                ..row("no rule matches", "wiki.test", Want::Deny(None))
            },
            Row {
                session: Some(("alice", STAFF, "public.test")),
                clears_session: true,
                ..row(
                    "a session for another host is refused",
                    "wiki.test",
                    Want::SignIn(&["corp"]),
                )
            },
            Row {
                session: alice_db,
                ..row(
                    "MFA is asked for with the app's methods",
                    "db.test",
                    Want::Mfa(&[MfaMethod::SecurityKey, MfaMethod::Platform]),
                )
            },
            Row {
                session: alice_db,
                mfa: Some(("fac-key", 60)),
                ..row(
                    "a fresh security key passes",
                    "db.test",
                    Want::Forward {
                        who: Some("alice"),
                        mfa: true,
                        public: false,
                    },
                )
            },
            Row {
                session: alice_db,
                mfa: Some(("fac-key", 3600)),
                ..row(
                    "an MFA pass older than max_age is asked again",
                    "db.test",
                    Want::Mfa(&[MfaMethod::SecurityKey, MfaMethod::Platform]),
                )
            },
            Row {
                session: alice_db,
                mfa: Some(("fac-totp", 60)),
                ..row(
                    "a method the app does not accept is asked again",
                    "db.test",
                    Want::Mfa(&[MfaMethod::SecurityKey, MfaMethod::Platform]),
                )
            },
            Row {
                session: alice_db,
                mfa: Some(("fac-gone", 60)),
                ..row(
                    "an assertion for a factor that no longer exists does not count",
                    "db.test",
                    Want::Mfa(&[MfaMethod::SecurityKey, MfaMethod::Platform]),
                )
            },
            Row {
                session: alice_db,
                mfa: Some(("fac-revoked", 60)),
                ..row(
                    "an assertion for a revoked factor does not count",
                    "db.test",
                    Want::Mfa(&[MfaMethod::SecurityKey, MfaMethod::Platform]),
                )
            },
            Row {
                session: Some(("revoked", STAFF, "wiki.test")),
                clears_session: true,
                ..row(
                    "a revoked session signs in again",
                    "wiki.test",
                    Want::SignIn(&["corp"]),
                )
            },
            Row {
                session: Some(("bob", STAFF, "wiki.test")),
                clears_session: true,
                ..row(
                    "a revoked user signs in again",
                    "wiki.test",
                    Want::SignIn(&["corp"]),
                )
            },
            Row {
                session: Some(("alice", STAFF, "ops.test")),
                view_age: Duration::from_secs(31),
                ..row(
                    "a fail-closed app with a stale view",
                    "ops.test",
                    Want::Stale,
                )
            },
            Row {
                session: Some(("alice", STAFF, "ops.test")),
                view_age: Duration::from_secs(29),
                ..row(
                    "a fail-closed app with a fresh view",
                    "ops.test",
                    Want::Forward {
                        who: Some("alice"),
                        mfa: false,
                        public: false,
                    },
                )
            },
            Row {
                session: Some(("alice", STAFF, "quic.test")),
                ..row(
                    "an h3-only app over HTTP/1.1",
                    "quic.test",
                    Want::Deny(None),
                )
            },
            Row {
                session: Some(("alice", STAFF, "quic.test")),
                transport: Transport::H3,
                ..row(
                    "an h3-only app over HTTP/3",
                    "quic.test",
                    Want::Forward {
                        who: Some("alice"),
                        mfa: false,
                        public: false,
                    },
                )
            },
            Row {
                session: Some(("alice", STAFF, "quic.test")),
                transport: Transport::Tunnel,
                ..row(
                    "an h3-only app through the tunnel",
                    "quic.test",
                    Want::Deny(None),
                )
            },
        ]
    }

    fn fixture_view() -> View {
        view([
            Change::RevocationAdded {
                id: "rev-5".into(),
                revision: 5,
                target: RevocationTarget::Session("sid-revoked".into()),
            },
            Change::RevocationAdded {
                id: "rev-9".into(),
                revision: 11,
                target: RevocationTarget::User {
                    user: crate::fixtures::user("bob"),
                    issued_before: 0,
                },
            },
            Change::FactorUpserted(crate::fixtures::factor(
                "fac-revoked",
                "alice",
                palisade_policy::catalog::FactorKind::SecurityKey,
            )),
            Change::RevocationAdded {
                id: "rev-7".into(),
                revision: 7,
                target: RevocationTarget::Factor("fac-revoked".into()),
            },
        ])
    }

    #[test]
    fn every_verdict_from_the_table() {
        let v = fixture_view();
        for r in table() {
            let claims = r
                .session
                .map(|(who, groups, host)| session(who, groups, host));
            let token = claims.as_ref().map(|c| session_token(&v, c));
            let mfa = match (&claims, r.mfa) {
                (Some(c), Some((factor, ago))) => Some(mfa_token(
                    &v,
                    c,
                    if factor == "fac-totp" {
                        MfaMethod::Totp
                    } else {
                        MfaMethod::SecurityKey
                    },
                    factor,
                    NOW - ago,
                )),
                _ => None,
            };
            let req = Request {
                host: r.host,
                path: r.path,
                method: "GET",
                peer: "192.0.2.7".parse().expect("ip"),
                transport: r.transport,
                credentials: Credentials {
                    session: token.as_deref(),
                    mfa: mfa.as_deref(),
                    device: None,
                },
                active_since: 0,
            };
            let out = enforce(Some(&v), &req, r.view_age, NOW);
            assert_eq!(got(&out.verdict), r.want, "{}", r.name);
            assert_eq!(
                out.session_refused.is_some(),
                r.clears_session,
                "{}",
                r.name
            );
            assert!(!out.verdict.explain().is_empty());
        }
    }

    /// The device on every decision: only its current certificate counts, a wiped device is
    /// decided as wiped, and a session signed in from it is refused without it.
    #[test]
    fn the_device_and_its_certificate_decide_with_the_session() {
        use crate::device::{DeviceCredential, DeviceRefused};
        use crate::fixtures::device;
        use palisade_policy::catalog::DeviceState;
        let current = "ab".repeat(32);
        let old = "cd".repeat(32);
        let base = view([Change::DeviceUpserted(device())]);
        let mut wiped = device();
        wiped.state = DeviceState::Wiped;
        wiped.certificate = None;
        let wiped = base
            .apply(crate::view::Delta {
                revision: 11,
                prev_revision: 10,
                changes: vec![Change::DeviceUpserted(wiped)],
            })
            .expect("delta");
        let alice = session("alice", &["staff"], "laptops.test");
        let mut bound = alice.clone();
        bound.did = "dev-1".into();
        fn cred(fp: &str) -> Option<DeviceCredential<'_>> {
            Some(DeviceCredential {
                id: "dev-1",
                fingerprint: fp,
            })
        }
        // (what, view, session, device presented, allowed, device refused, session refused)
        type Case<'a> = (
            &'a str,
            &'a View,
            &'a palisade_policy::token::SessionClaims,
            Option<DeviceCredential<'a>>,
            bool,
            Option<DeviceRefused>,
            bool,
        );
        let not_current = Some(DeviceRefused::NotCurrent);
        let cases: Vec<Case<'_>> = vec![
            (
                "no device: the rule does not match",
                &base,
                &alice,
                None,
                false,
                None,
                false,
            ),
            (
                "the current certificate",
                &base,
                &alice,
                cred(&current),
                true,
                None,
                false,
            ),
            (
                "a replaced certificate",
                &base,
                &alice,
                cred(&old),
                false,
                not_current,
                false,
            ),
            (
                "a wiped device: that device, wiped",
                &wiped,
                &alice,
                cred(&current),
                false,
                None,
                false,
            ),
            (
                "bound session with its device",
                &base,
                &bound,
                cred(&current),
                true,
                None,
                false,
            ),
            (
                "bound session, copied without it",
                &base,
                &bound,
                None,
                false,
                None,
                true,
            ),
            (
                "bound session, its device wiped: denied, not signed out",
                &wiped,
                &bound,
                cred(&current),
                false,
                None,
                false,
            ),
        ];
        for (name, v, claims, device, allowed, device_refused, session_refused) in cases {
            let token = session_token(v, claims);
            let req = Request {
                host: "laptops.test",
                path: "/",
                method: "GET",
                peer: "192.0.2.7".parse().expect("ip"),
                transport: Transport::H2,
                credentials: Credentials {
                    session: Some(&token),
                    mfa: None,
                    device,
                },
                active_since: 0,
            };
            let out = enforce(Some(v), &req, Duration::ZERO, NOW);
            assert_eq!(
                matches!(out.verdict, Verdict::Forward { public: false, .. }),
                allowed,
                "{name}: {:?}",
                out.verdict.explain()
            );
            assert_eq!(out.device_refused, device_refused, "{name}");
            if std::ptr::eq(v, &wiped) {
                assert!(
                    matches!(out.verdict, Verdict::Deny { .. }),
                    "{name}: the wiped device is denied as such: {:?}",
                    out.verdict.explain()
                );
            }
            assert_eq!(
                out.session_refused == Some(SessionRefused::OtherDevice),
                session_refused,
                "{name}"
            );
        }
    }

    fn anonymous<'a>(host: &'a str) -> Request<'a> {
        Request {
            host,
            path: "/",
            method: "GET",
            peer: "192.0.2.7".parse().expect("ip"),
            transport: Transport::H2,
            credentials: Credentials::default(),
            active_since: 0,
        }
    }

    #[test]
    fn before_the_first_snapshot_nothing_is_decided() {
        let out = enforce(None, &anonymous("public.test"), Duration::ZERO, NOW);
        assert_eq!(got(&out.verdict), Want::NotReady);
        let empty = View::default();
        let out = enforce(Some(&empty), &anonymous("public.test"), Duration::ZERO, NOW);
        assert_eq!(got(&out.verdict), Want::NotFound, "no policy yet");
    }

    #[test]
    fn session_refusals_say_why() {
        let v = fixture_view();
        let expired = {
            let mut s = session("alice", STAFF, "wiki.test");
            s.exp = NOW - 600;
            session_token(&v, &s)
        };
        let idle = {
            let mut s = session("alice", STAFF, "wiki.test");
            s.last_active = NOW - 7200;
            session_token(&v, &s)
        };
        for (token, want) in [
            ("garbage", SessionRefused::Token(TokenError::Malformed)),
            (expired.as_str(), SessionRefused::Token(TokenError::Expired)),
            (
                idle.as_str(),
                SessionRefused::Token(TokenError::IdleTimeout),
            ),
        ] {
            let mut req = anonymous("wiki.test");
            req.credentials.session = Some(token);
            let out = enforce(Some(&v), &req, Duration::ZERO, NOW);
            assert_eq!(out.session_refused, Some(want));
            assert_eq!(got(&out.verdict), Want::SignIn(&["corp"]));
        }
    }

    #[test]
    fn an_open_connection_counts_as_activity() {
        let v = fixture_view();
        let mut s = session("alice", STAFF, "wiki.test");
        s.last_active = NOW - 7200;
        let token = session_token(&v, &s);
        let mut req = anonymous("wiki.test");
        req.credentials.session = Some(&token);
        assert!(!still_allowed(
            Some(&v),
            &req,
            Some("sid-alice"),
            Duration::ZERO,
            NOW
        ));
        req.active_since = NOW - 60;
        assert!(still_allowed(
            Some(&v),
            &req,
            Some("sid-alice"),
            Duration::ZERO,
            NOW
        ));
        assert!(
            !still_allowed(Some(&v), &req, Some("sid-other"), Duration::ZERO, NOW),
            "the connection stays about the session it was opened for"
        );
    }

    #[test]
    fn a_revocation_in_a_later_view_ends_an_open_connection() {
        let v = fixture_view();
        let s = session("alice", STAFF, "wiki.test");
        let token = session_token(&v, &s);
        let mut req = anonymous("wiki.test");
        req.credentials.session = Some(&token);
        assert!(still_allowed(
            Some(&v),
            &req,
            Some("sid-alice"),
            Duration::ZERO,
            NOW
        ));
        let later = v
            .apply(crate::view::Delta {
                revision: 11,
                prev_revision: 10,
                changes: vec![Change::RevocationAdded {
                    id: "rev-11".into(),
                    revision: 11,
                    target: RevocationTarget::Session("sid-alice".into()),
                }],
            })
            .expect("delta");
        assert!(!still_allowed(
            Some(&later),
            &req,
            Some("sid-alice"),
            Duration::ZERO,
            NOW
        ));
        assert!(!still_allowed(
            None,
            &req,
            Some("sid-alice"),
            Duration::ZERO,
            NOW
        ));
        let public = anonymous("public.test");
        assert!(still_allowed(
            Some(&later),
            &public,
            None,
            Duration::ZERO,
            NOW
        ));
    }
}
