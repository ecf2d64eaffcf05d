//! WebAuthn at the edge with a software authenticator, through real edges and controllers:
//! registration and use of a security key, then the negative cases (another origin, a reused
//! challenge, a counter that goes backwards, another user's credential), each refused without
//! an MFA assertion. Chromium's virtual authenticators cover the browser path
//! (`webauthn_browser.rs`).

mod support;

use palisade_chaos::softkey::SoftKey;
use serde_json::json;
use support::mfa::*;
use support::*;

/// Registers `key` for the signed-in browser (first factor: no recent MFA needed).
async fn register(b: &mut Browser, port: u16, key: &SoftKey) -> String {
    register_key(b, port, key, "Soft key").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_key_registration_use_and_refusals() {
    let s = Stack::start().await;
    let (p1, p2) = (s.edge_port(0), s.edge_port(1));
    let origin1 = format!("https://{APP_HOST}:{p1}");

    let mut alice = s.browser();
    alice.login(p1, "alice").await;
    let mut key = SoftKey::new();
    let factor = register(&mut alice, p1, &key).await;
    assert!(factor.starts_with("fac-"), "{factor}");

    // The keys-only application: pass the key, get in, at both edges.
    let (token, options) = begin_auth(&mut alice, p1, "/keys/vault").await;
    let allowed = options["publicKey"]["allowCredentials"]
        .as_array()
        .expect("allow list");
    assert_eq!(allowed.len(), 1);
    let answer = key.assert(&options, APP_HOST, &origin1);
    let ok = alice
        .post_json(&url(p1, "/.palisade/mfa/webauthn/finish"), &token, &answer)
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    assert_eq!(json_of(&ok)["redirect"], "/keys/vault");
    assert!(mfa_cookie_set(&ok));
    for port in [p1, p2] {
        let app = alice.get(&url(port, "/keys/vault")).await;
        assert_eq!(app.status, 200, "edge :{port}: {}", app.body);
    }

    // A key whose counter drops to 0 after counting is refused (0 is only fine for
    // authenticators that never count).
    let mut second = s.browser();
    second.login(p1, "alice").await;
    let (token, options) = begin_auth(&mut second, p1, "/keys/vault").await;
    key.counter = 0;
    let answer = key.assert(&options, APP_HOST, &origin1);
    let r = second
        .post_json(&url(p1, "/.palisade/mfa/webauthn/finish"), &token, &answer)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        json_of(&r)["error"]
            .as_str()
            .unwrap_or("")
            .contains("counter"),
        "{}",
        r.body
    );

    // A reused challenge, with an authenticator that has no counter (so only the challenge
    // protects): register it from the session that passed MFA (a recent factor).
    let mut counterless = SoftKey::new();
    counterless.fixed_counter = true;
    counterless.counter = 0;
    let portal = alice.get(&url(p1, "/.palisade/portal")).await;
    let atoken = csrf(&portal.body);
    let begin = alice
        .post_json(
            &url(p1, "/.palisade/portal/webauthn/begin"),
            &atoken,
            &json!({"kind": "security_key", "name": "No counter"}),
        )
        .await;
    assert_eq!(begin.status, 200, "{}", begin.body);
    let answer = counterless.register(&json_of(&begin), &origin1);
    let done = alice
        .post_json(
            &url(p1, "/.palisade/portal/webauthn/finish"),
            &atoken,
            &answer,
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);

    let mut carol = s.browser();
    carol.login(p1, "alice").await;
    let (token, options) = begin_auth(&mut carol, p1, "/keys/vault").await;
    let ceremony = carol
        .edge
        .get("__Host-palisade-webauthn")
        .cloned()
        .expect("ceremony cookie");
    let answer = counterless.assert(&options, APP_HOST, &origin1);
    let first = carol
        .post_json(&url(p1, "/.palisade/mfa/webauthn/finish"), &token, &answer)
        .await;
    assert_eq!(first.status, 200, "{}", first.body);
    // replay at the other edge, in a fresh session, with the old ceremony cookie
    let mut mallory = s.browser();
    mallory.login(p2, "alice").await;
    let _ = begin_auth(&mut mallory, p2, "/keys/vault").await;
    let mtoken = {
        let portal = mallory.get(&url(p2, "/.palisade/portal")).await;
        csrf(&portal.body)
    };
    // the ceremony is bound to carol's session: in mallory's session it does not open
    mallory
        .edge
        .insert("__Host-palisade-webauthn".into(), ceremony.clone());
    let replay = mallory
        .post_json(&url(p2, "/.palisade/mfa/webauthn/finish"), &mtoken, &answer)
        .await;
    assert_eq!(replay.status, 400, "{}", replay.body);
    assert!(!mfa_cookie_set(&replay));
    // in carol's own session: the challenge was already answered (recorded through Raft, so
    // any edge serving this origin refuses it; these two edges listen on different ports,
    // which are different origins, so the replay goes to the same edge)
    carol
        .edge
        .insert("__Host-palisade-webauthn".into(), ceremony);
    let replay = carol
        .post_json(&url(p1, "/.palisade/mfa/webauthn/finish"), &token, &answer)
        .await;
    assert_eq!(replay.status, 401, "{}", replay.body);
    assert!(
        json_of(&replay)["error"]
            .as_str()
            .unwrap_or("")
            .contains("already answered"),
        "{}",
        replay.body
    );
    assert!(!mfa_cookie_set(&replay));

    // Another origin: a page at another host name got the user to answer this challenge.
    let mut dave = s.browser();
    dave.login(p1, "alice").await;
    let (token, options) = begin_auth(&mut dave, p1, "/keys/vault").await;
    key.counter = 100;
    let answer = key.assert(&options, APP_HOST, "https://evil.palisade.localhost");
    let r = dave
        .post_json(&url(p1, "/.palisade/mfa/webauthn/finish"), &token, &answer)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!mfa_cookie_set(&r));
    // ...or signed for another relying party id
    let (token, options) = begin_auth(&mut dave, p1, "/keys/vault").await;
    let answer = key.assert(&options, "evil.palisade.localhost", &origin1);
    let r = dave
        .post_json(&url(p1, "/.palisade/mfa/webauthn/finish"), &token, &answer)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);

    // Another user's credential: bob registers his key; alice's ceremony answered with it.
    let mut bobs = s.browser();
    bobs.login(p1, "bob").await;
    let mut bob_key = SoftKey::new();
    register(&mut bobs, p1, &bob_key).await;
    let (token, options) = begin_auth(&mut dave, p1, "/keys/vault").await;
    let answer = bob_key.assert(&options, APP_HOST, &origin1);
    let r = dave
        .post_json(&url(p1, "/.palisade/mfa/webauthn/finish"), &token, &answer)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(!mfa_cookie_set(&r));

    // A counter that goes backwards (a cloned authenticator) is refused.
    let (token, options) = begin_auth(&mut dave, p1, "/keys/vault").await;
    key.counter = 50; // the last accepted counter is 1 (the refused answers recorded nothing)
    let good = key.assert(&options, APP_HOST, &origin1);
    let r = dave
        .post_json(&url(p1, "/.palisade/mfa/webauthn/finish"), &token, &good)
        .await;
    assert_eq!(r.status, 200, "counter 50 after 1: {}", r.body);
    let mut eve = s.browser();
    eve.login(p1, "alice").await;
    let (token, options) = begin_auth(&mut eve, p1, "/keys/vault").await;
    key.counter = 7;
    let cloned = key.assert(&options, APP_HOST, &origin1);
    let r = eve
        .post_json(&url(p1, "/.palisade/mfa/webauthn/finish"), &token, &cloned)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert!(
        json_of(&r)["error"]
            .as_str()
            .unwrap_or("")
            .contains("counter"),
        "{}",
        r.body
    );
    assert!(!mfa_cookie_set(&r));
    let app = eve.get(&url(p1, "/keys/vault")).await;
    assert_eq!(app.status, 303, "still challenged");
}
