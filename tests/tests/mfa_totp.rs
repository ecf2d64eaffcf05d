//! End-to-end MFA with TOTP: real controllers and edges, the certified `oidc-provider` for
//! sign-in, codes computed in the test from the seed the portal shows.
//!
//! - enrollment in the portal right after sign-in (QR code and key), confirmed with a code;
//! - a protected application asks for the factor and lets the user through after it;
//! - the code accepted at one edge is refused at the other (the step is recorded through Raft);
//! - wrong codes are counted across edges, the user is locked out, an admin unlocks;
//! - an application that accepts only security keys asks a TOTP-only user to step up;
//! - removing the factor ends the assertions issued with it.

mod support;

use std::time::Duration;

use support::mfa::{totp_for, url};
use support::*;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Sleeps into the next 30-second step (codes of used steps are refused).
async fn next_step() {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock");
    let into = t.as_millis() % 30_000;
    tokio::time::sleep(Duration::from_millis((30_000 - into) as u64 + 300)).await;
}

/// Signs in and opens the MFA prompt for `path`; returns the prompt page.
async fn prompt_for(b: &mut Browser, port: u16, path: &str) -> Page {
    let p = b.get(&url(port, path)).await;
    assert_eq!(p.status, 303, "MFA challenge expected: {}", p.body);
    let loc = p.location.expect("location");
    assert!(loc.starts_with("/.palisade/mfa?rd="), "{loc}");
    b.get(&url(port, &loc)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn totp_enrollment_use_replay_lockout_and_step_up() {
    let s = Stack::start().await;
    let (p1, p2) = (s.edge_port(0), s.edge_port(1));

    // Sign in; the MFA application sends alice to the prompt, which offers enrollment.
    let mut alice = s.browser();
    let cb = alice.login(p1, "alice").await;
    assert_eq!(cb.status, 303, "{}", cb.body);
    let prompt = prompt_for(&mut alice, p1, "/mfa/reports").await;
    assert_eq!(prompt.status, 401, "{}", prompt.body);
    assert!(
        prompt.body.contains("no second factor yet"),
        "{}",
        prompt.body
    );

    // Enroll TOTP in the portal: QR code plus the key as text.
    let portal = alice.get(&url(p1, "/.palisade/portal")).await;
    assert_eq!(portal.status, 200, "{}", portal.body);
    let token = csrf(&portal.body);
    let begin = alice
        .post_form(
            &url(p1, "/.palisade/portal/totp/begin"),
            &[("csrf", &token), ("name", "Phone")],
        )
        .await;
    assert_eq!(begin.status, 200, "{}", begin.body);
    assert!(begin.body.contains("<svg"), "QR code shown");
    let secret = field(&begin.body, "totp-secret").expect("key shown");
    let uri = field(&begin.body, "uri").expect("otpauth uri");
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let factor_id = field(&begin.body, "factor_id").expect("factor id");
    let totp = totp_for(&secret);

    // A wrong first code keeps the factor pending.
    let wrong = alice
        .post_form(
            &url(p1, "/.palisade/portal/totp/confirm"),
            &[
                ("csrf", &token),
                ("factor_id", &factor_id),
                ("uri", &uri),
                ("code", "12345x"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 200);
    assert!(wrong.body.contains("not accepted"), "{}", wrong.body);

    let code = totp.generate(now()).to_string();
    let confirmed = alice
        .post_form(
            &url(p1, "/.palisade/portal/totp/confirm"),
            &[
                ("csrf", &token),
                ("factor_id", &factor_id),
                ("uri", &uri),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    assert_eq!(
        confirmed.location.as_deref(),
        Some("/.palisade/portal?done=added")
    );
    // Confirming the new factor is not passing it: the application still asks for it.
    assert!(
        !confirmed
            .set_cookies
            .iter()
            .any(|c| c.starts_with("__Host-palisade-mfa=") && !c.contains("Max-Age=0")),
        "confirming issued an MFA assertion"
    );
    let app = alice.get(&url(p1, "/mfa/reports")).await;
    assert_eq!(app.status, 303, "{}", app.body);
    // The history is written in the background: it shows up within a moment.
    let mut portal = alice.get(&url(p1, "/.palisade/portal")).await;
    for _ in 0..20 {
        if portal.body.contains("factor.add") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        portal = alice.get(&url(p1, "/.palisade/portal")).await;
    }
    assert!(portal.body.contains("Phone"), "{}", portal.body);
    assert!(
        portal.body.contains("factor.add"),
        "history lists the enrollment"
    );

    // A new session (another browser) must pass the factor again, with a code of a new step.
    next_step().await;
    let mut second = s.browser();
    second.login(p1, "alice").await;
    let prompt = prompt_for(&mut second, p1, "/mfa/reports").await;
    assert_eq!(prompt.status, 401);
    assert!(prompt.body.contains("name=code"), "{}", prompt.body);
    let token2 = csrf(&prompt.body);
    let code = totp.generate(now()).to_string();
    let passed = second
        .post_form(
            &url(p1, "/.palisade/mfa/totp"),
            &[("csrf", &token2), ("rd", "/mfa/reports"), ("code", &code)],
        )
        .await;
    assert_eq!(passed.status, 303, "{}", passed.body);
    assert_eq!(passed.location.as_deref(), Some("/mfa/reports"));
    assert!(
        passed
            .set_cookies
            .iter()
            .any(|c| c.starts_with("__Host-palisade-mfa=") && c.contains("HttpOnly")),
        "MFA assertion cookie"
    );
    let app = second.get(&url(p1, "/mfa/reports")).await;
    assert_eq!(app.status, 200, "{}", app.body);
    // ...and at the other edge too: the assertion is verified there with the catalog keys.
    let app = second.get(&url(p2, "/mfa/reports")).await;
    assert_eq!(app.status, 200, "{}", app.body);

    // The same code replayed at the second edge, by a third session: refused.
    let mut third = s.browser();
    third.login(p2, "alice").await;
    let prompt = prompt_for(&mut third, p2, "/mfa/reports").await;
    let token3 = csrf(&prompt.body);
    let replay = third
        .post_form(
            &url(p2, "/.palisade/mfa/totp"),
            &[("csrf", &token3), ("rd", "/mfa/reports"), ("code", &code)],
        )
        .await;
    assert_eq!(replay.status, 401, "{}", replay.body);
    assert!(replay.body.contains("already used"), "{}", replay.body);
    assert!(
        !replay
            .set_cookies
            .iter()
            .any(|c| c.starts_with("__Host-palisade-mfa=")),
        "no assertion for a replayed code"
    );

    // Wrong codes are counted (across edges) and lock the user out.
    let current = totp.generate(now()).to_string();
    let bad = if current == "000000" {
        "111111"
    } else {
        "000000"
    };
    let mut locked = false;
    for i in 0..8 {
        // The same session at both edges: the counter is the cluster's, not an edge's.
        let port = if i % 2 == 0 { p1 } else { p2 };
        let r = third
            .post_form(
                &url(port, "/.palisade/mfa/totp"),
                &[("csrf", &token3), ("rd", "/mfa/reports"), ("code", bad)],
            )
            .await;
        if r.status == 429 {
            assert!(r.body.contains("Too many failed attempts"), "{}", r.body);
            locked = true;
            break;
        }
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(r.body.contains("Failed attempts in a row"), "{}", r.body);
    }
    assert!(locked, "locked out after repeated wrong codes");
    // While locked, even the right code is not checked.
    let right = totp.generate(now() + 30).to_string();
    let r = third
        .post_form(
            &url(p2, "/.palisade/mfa/totp"),
            &[("csrf", &token3), ("rd", "/mfa/reports"), ("code", &right)],
        )
        .await;
    assert_eq!(r.status, 429, "{}", r.body);

    // An admin unlocks; the right code works again.
    let (rc, out) = s.palisadectl(&["factors", "unlock", "real/alice"]);
    assert_eq!(rc, 0, "{out}");
    let rev = s.cluster.latest_revision().await.expect("status");
    s.cluster
        .wait_edges(rev, Duration::from_secs(10))
        .await
        .expect("edges");
    let r = third
        .post_form(
            &url(p2, "/.palisade/mfa/totp"),
            &[("csrf", &token3), ("rd", "/mfa/reports"), ("code", &right)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);

    // Step-up: the keys-only application does not accept a TOTP-only session.
    let keys = third.get(&url(p2, "/keys/vault")).await;
    assert_eq!(keys.status, 303, "{}", keys.body);
    let prompt = third
        .get(&url(p2, keys.location.as_deref().expect("location")))
        .await;
    assert_eq!(prompt.status, 403, "{}", prompt.body);
    assert!(prompt.body.contains("id=step-up"), "{}", prompt.body);
    assert!(prompt.body.contains("a security key"), "{}", prompt.body);

    // Removing the factor (with a recent factor: third just passed it) ends its assertions.
    let portal = third.get(&url(p2, "/.palisade/portal")).await;
    let token = csrf(&portal.body);
    let removed = third
        .post_form(
            &url(p2, "/.palisade/portal/factor/remove"),
            &[("csrf", &token), ("factor_id", &factor_id)],
        )
        .await;
    assert_eq!(removed.status, 303, "{}", removed.body);
    let rev = s.cluster.latest_revision().await.expect("status");
    s.cluster
        .wait_edges(rev, Duration::from_secs(10))
        .await
        .expect("edges");
    for (b, port) in [(&mut second, p1), (&mut third, p2)] {
        let r = b.get(&url(port, "/mfa/reports")).await;
        assert_eq!(r.status, 303, "assertion of a removed factor: {}", r.body);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factor_changes_need_a_recent_factor_and_bad_forms_change_nothing() {
    let s = Stack::start().await;
    let p1 = s.edge_port(0);
    let mut alice = s.browser();
    alice.login(p1, "bob").await;

    // No anti-CSRF token: refused, nothing created.
    let r = alice
        .post_form(&url(p1, "/.palisade/portal/totp/begin"), &[("name", "x")])
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    // From another origin: refused.
    let portal = alice.get(&url(p1, "/.palisade/portal")).await;
    let token = csrf(&portal.body);
    let cookie = alice
        .edge
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let r = alice
        .http
        .post(url(p1, "/.palisade/portal/totp/begin"))
        .header("origin", "https://evil.example")
        .header("cookie", cookie)
        .form(&[("csrf", token.as_str()), ("name", "x")])
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 403);
    let (_, list) = s.palisadectl(&["factors", "list", "real/bob"]);
    assert!(
        list["factors"].as_array().is_none_or(|f| f.is_empty()),
        "{list}"
    );

    // First factor: right after sign-in.
    let begin = alice
        .post_form(
            &url(p1, "/.palisade/portal/totp/begin"),
            &[("csrf", &token), ("name", "First")],
        )
        .await;
    let secret = field(&begin.body, "totp-secret").expect("key");
    let factor_id = field(&begin.body, "factor_id").expect("id");
    let uri = field(&begin.body, "uri").expect("uri");
    let code = totp_for(&secret).generate(now()).to_string();
    let r = alice
        .post_form(
            &url(p1, "/.palisade/portal/totp/confirm"),
            &[
                ("csrf", &token),
                ("factor_id", &factor_id),
                ("uri", &uri),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);

    // A second session without a recent factor cannot add or remove factors.
    let mut other = s.browser();
    other.login(p1, "bob").await;
    let portal = other.get(&url(p1, "/.palisade/portal")).await;
    assert!(
        portal.body.contains("verify with an existing factor"),
        "{}",
        portal.body
    );
    let token = csrf(&portal.body);
    let r = other
        .post_form(
            &url(p1, "/.palisade/portal/totp/begin"),
            &[("csrf", &token), ("name", "Sneaky")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("within the last 10 minutes"), "{}", r.body);
    let r = other
        .post_form(
            &url(p1, "/.palisade/portal/factor/remove"),
            &[("csrf", &token), ("factor_id", &factor_id)],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("within the last 10 minutes"), "{}", r.body);
    // Another user's factor is not found for bob's sessions either way; a malformed id is refused.
    let r = other
        .post_form(
            &url(p1, "/.palisade/portal/factor/rename"),
            &[("csrf", &token), ("factor_id", "fac-999999"), ("name", "x")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    let (_, list) = s.palisadectl(&["factors", "list", "real/bob"]);
    let factors = list["factors"].as_array().cloned().unwrap_or_default();
    assert_eq!(factors.len(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_sessions_devices_and_enrollment_codes() {
    let s = Stack::start().await;
    let (p1, p2) = (s.edge_port(0), s.edge_port(1));

    // Policy: a first factor needs an admin-issued enrollment code.
    let mut doc = policy(&s.idp.issuer, &s.forging.issuer, s.upstream.addr);
    doc["mfa"] = serde_json::json!({"enrollment_requires_code": true});
    let rev = s
        .cluster
        .apply_policy(&doc.to_string(), "codes")
        .await
        .expect("policy");
    s.cluster
        .wait_edges(rev, Duration::from_secs(10))
        .await
        .expect("edges");

    // A device of alice's, to see and revoke in the portal.
    let (rc, out) = s.palisadectl(&[
        "devices",
        "enroll",
        "--owner",
        "alice@example.com",
        "--serial",
        "SN-42",
        "--name",
        "Alice's laptop",
    ]);
    assert_eq!(rc, 0, "{out}");
    let device = out["device"]["id"].as_str().expect("device id").to_string();

    // Two sessions of alice's, at two edges.
    let mut laptop = s.browser();
    laptop.login(p1, "alice").await;
    let mut phone = s.browser();
    phone.login(p2, "alice").await;
    let phone_app = phone.get(&url(p2, "/hello")).await;
    assert_eq!(phone_app.status, 200);

    let rev = s.cluster.latest_revision().await.expect("status");
    s.cluster
        .wait_edges(rev, Duration::from_secs(10))
        .await
        .expect("edges");
    let portal = laptop.get(&url(p1, "/.palisade/portal")).await;
    assert_eq!(portal.status, 200, "{}", portal.body);
    assert!(
        portal.body.contains("Alice&#39;s laptop"),
        "{}",
        portal.body
    );
    assert!(
        portal.body.contains("id=enrollment_code"),
        "code field shown"
    );
    assert!(portal.body.contains("login.oidc"), "history shows sign-ins");
    let token = csrf(&portal.body);

    // The other session is listed with a sign-out button; signing it out bites at once.
    let phone_sid = session_claims(&phone.session().expect("cookie"))["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    assert!(portal.body.contains(&phone_sid), "{}", portal.body);
    let r = laptop
        .post_form(
            &url(p1, "/.palisade/portal/revoke"),
            &[("csrf", &token), ("session_id", &phone_sid)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let rev = s.cluster.latest_revision().await.expect("status");
    s.cluster
        .wait_edges(rev, Duration::from_secs(10))
        .await
        .expect("edges");
    let phone_app = phone.get(&url(p2, "/hello")).await;
    assert_eq!(phone_app.status, 302, "the revoked session signs in again");
    // The laptop's own session is untouched.
    assert_eq!(laptop.get(&url(p1, "/hello")).await.status, 200);
    // A session that is not alice's (made up) cannot be revoked through her portal.
    let r = laptop
        .post_form(
            &url(p1, "/.palisade/portal/revoke"),
            &[("csrf", &token), ("session_id", "not-a-session-of-alice")],
        )
        .await;
    assert_eq!(r.status, 400, "{}", r.body);

    // Her device: revoked from the portal.
    let r = laptop
        .post_form(
            &url(p1, "/.palisade/portal/revoke"),
            &[("csrf", &token), ("device_id", &device)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let portal = laptop.get(&url(p1, "/.palisade/portal?done=revoked")).await;
    assert!(portal.body.contains(">revoked<"), "{}", portal.body);

    // No code: refused, nothing created. A wrong code: refused. The issued code: accepted once.
    let r = laptop
        .post_form(
            &url(p1, "/.palisade/portal/totp/begin"),
            &[("csrf", &token), ("name", "Phone")],
        )
        .await;
    assert!(r.body.contains("enrollment code"), "{}", r.body);
    let r = laptop
        .post_form(
            &url(p1, "/.palisade/portal/totp/begin"),
            &[
                ("csrf", &token),
                ("name", "Phone"),
                ("enrollment_code", "guess"),
            ],
        )
        .await;
    assert!(r.body.contains("wrong or has expired"), "{}", r.body);
    let (rc, out) = s.palisadectl(&["factors", "enrollment-code", "real/alice"]);
    assert_eq!(rc, 0, "{out}");
    let code = out["code"].as_str().expect("code").to_string();
    let r = laptop
        .post_form(
            &url(p1, "/.palisade/portal/totp/begin"),
            &[
                ("csrf", &token),
                ("name", "Phone"),
                ("enrollment_code", &code),
            ],
        )
        .await;
    assert!(field(&r.body, "totp-secret").is_some(), "{}", r.body);
    let r = laptop
        .post_form(
            &url(p1, "/.palisade/portal/totp/begin"),
            &[
                ("csrf", &token),
                ("name", "Again"),
                ("enrollment_code", &code),
            ],
        )
        .await;
    assert!(
        r.body.contains("wrong or has expired"),
        "used once: {}",
        r.body
    );
}
