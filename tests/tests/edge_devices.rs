//! The device at a live edge, end to end with real processes: a device enrolled with a
//! one-time token presents its certificate to the edge's ingress (requested, not required);
//! a device-only application lets it in and refuses a browser without it; a session signed in
//! on the device is bound to it (its cookie copied elsewhere is refused); revoking the device
//! refuses the next request on a keep-alive connection already open; a wiped device is
//! refused, and a new enrollment of the same hardware works; a certificate from another CA is
//! refused at the handshake; stale posture is refused with what the device lacks on the page;
//! a device its owner revokes in the portal is refused at its next request.
//! Devices are provisioned as an MDM would (`devices provision`) and enroll from that file.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::devices::{LINUX_1_0, enroll, report_posture, settle};
use support::{APP_HOST, Browser, KeepAlive, Stack, csrf, policy, session_claims};

const MANAGED: &str = "/managed/";

/// The stack's policy plus an application under `/managed` for enrolled Linux devices of the
/// `fleet` group.
fn device_policy(s: &Stack) -> Value {
    let mut p = policy(&s.idp.issuer, &s.forging.issuer, s.upstream.addr);
    let up = format!("http://{}", s.upstream.addr);
    p["apps"].as_array_mut().expect("apps").push(json!({
        "id": "managed", "name": "Managed-devices application", "hosts": [APP_HOST],
        "path_prefixes": ["/managed"], "upstreams": [up], "identity_providers": ["real"],
        "mfa": {"required": false},
        "rules": [{"name": "fleet-laptops", "decision": "allow",
                   "include": [{"email_domain": "example.com"}],
                   "require": [{"device": {"enrolled": true, "os": ["linux"]}},
                               {"device_group": "fleet"}]}]
    }));
    p["apps"].as_array_mut().expect("apps").push(json!({
        "id": "fresh", "name": "Fresh-posture application", "hosts": [APP_HOST],
        "path_prefixes": ["/fresh"], "upstreams": [up], "identity_providers": ["real"],
        "mfa": {"required": false},
        "rules": [{"name": "recently-checked", "decision": "allow",
                   "include": [{"email_domain": "example.com"}],
                   "require": [{"device": {"enrolled": true, "max_age": FRESH_FOR}}]}]
    }));
    p
}

/// How fresh `/fresh` wants posture: short, so that the test sees it go stale.
const FRESH_FOR: &str = "8s";

async fn status(b: &mut Browser, port: u16, path: &str) -> u16 {
    b.get(&format!("https://{APP_HOST}:{port}{path}"))
        .await
        .status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_device_is_on_every_decision() {
    let s = Stack::start().await;
    let rev = s
        .cluster
        .apply_policy(&device_policy(&s).to_string(), "devices")
        .await
        .expect("policy");
    s.cluster
        .wait_edges(rev, Duration::from_secs(20))
        .await
        .expect("policy applied");
    let tmp = tempfile::tempdir().expect("tmp");
    // A provisioning mistake is reported (all of it) and creates no device.
    let bad = tmp.path().join("bad.json").display().to_string();
    let (code, out) = s.palisadectl(&[
        "devices",
        "provision",
        "--owner",
        "alice@example.com",
        "--controller",
        "nowhere",
        "--edge",
        "127.0.0.1:443",
        "--dns",
        "resolver.local",
        "--out",
        &bad,
    ]);
    assert_eq!(code, 2, "{out}");
    let said = out.to_string();
    assert!(
        said.contains("controllers[0]") && said.contains("grace.dns[0]"),
        "{said}"
    );
    let (code, out) = s.palisadectl(&["devices", "list"]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out.as_array().map(Vec::len),
        Some(0),
        "nothing created: {out}"
    );
    let (id, pem) = enroll(
        &s,
        "alice@example.com",
        "SER-LAPTOP",
        "fleet",
        &tmp.path().join("laptop"),
        LINUX_1_0,
    )
    .await;
    settle(&s).await;
    let port = s.edge_port(0);

    // On the device: signed in, the managed application lets alice in; the session is bound.
    let mut laptop = Browser::on_device(&s.ca, &pem);
    laptop.login(port, "alice").await;
    assert_eq!(status(&mut laptop, port, MANAGED).await, 200);
    let cookie = laptop.session().expect("session");
    assert_eq!(
        session_claims(&cookie)["did"],
        id.as_str(),
        "bound to the device"
    );

    // Posture goes stale: refused, and the page says what the device lacks; a new report lets
    // it in again.
    let dir = tmp.path().join("laptop");
    report_posture(&s, &dir, LINUX_1_0);
    settle(&s).await;
    assert_eq!(
        status(&mut laptop, port, "/fresh/").await,
        200,
        "fresh posture"
    );
    tokio::time::sleep(Duration::from_secs(9)).await;
    let stale = laptop
        .get(&format!("https://{APP_HOST}:{port}/fresh/"))
        .await;
    assert_eq!(stale.status, 403, "stale posture");
    assert!(
        stale.body.contains("What your device is missing") && stale.body.contains("posture report"),
        "{}",
        stale.body
    );
    let (code, out) = s.palisadectl(&["devices", "list", "--stale-posture", FRESH_FOR]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out[0]["id"], id.as_str(), "listed as stale: {out}");
    report_posture(&s, &dir, LINUX_1_0);
    settle(&s).await;
    assert_eq!(
        status(&mut laptop, port, "/fresh/").await,
        200,
        "reported again"
    );
    let (_, out) = s.palisadectl(&["devices", "list", "--stale-posture", FRESH_FOR]);
    assert_eq!(out.as_array().map(Vec::len), Some(0), "fresh again: {out}");
    let (_, out) = s.palisadectl(&["devices", "list", "--state", "enrolled"]);
    assert_eq!(out[0]["state"], "enrolled", "{out}");
    assert!(out[0]["posture_age_secs"].as_u64().is_some(), "{out}");

    // The same cookie without the device: refused everywhere, not only on the managed app.
    let mut thief = s.browser();
    thief.edge = laptop.edge.clone();
    let r = thief.get(&format!("https://{APP_HOST}:{port}/")).await;
    assert_ne!(r.status, 200, "a copied bound cookie without the device");
    assert_ne!(status(&mut thief, port, MANAGED).await, 200);

    // An unmanaged browser, signed in: the ordinary app yes, the managed one no.
    let mut desk = s.browser();
    desk.login(port, "alice").await;
    assert_eq!(status(&mut desk, port, "/").await, 200);
    let denied = desk
        .get(&format!("https://{APP_HOST}:{port}{MANAGED}"))
        .await;
    assert_eq!(denied.status, 403, "{}", denied.body);

    // A certificate naming the device from another CA: the handshake refuses it.
    let other = palisade_link::pki::DevCa::named("not the device CA").expect("ca");
    let forged = other
        .issue_uri(&format!("urn:palisade:device:{id}"))
        .expect("forged");
    let forger = Browser::on_device(&s.ca, &format!("{}{}", forged.key_pem, forged.cert_pem));
    let refused = forger
        .http
        .get(format!("https://{APP_HOST}:{port}{MANAGED}"))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a foreign certificate is refused at the handshake"
    );

    // Revoked: the next request on a keep-alive connection already open is refused.
    let cert = std::fs::read_to_string(dir.join("device.pem")).expect("chain");
    let key = std::fs::read_to_string(dir.join("device.key")).expect("key");
    let mut conn = KeepAlive::open_as(&s.ca, port, Some((&cert, &key))).await;
    assert_eq!(conn.get(MANAGED, &cookie).await.0, 200);
    let (second, pem2) = enroll(
        &s,
        "alice@example.com",
        "SER-OTHER",
        "fleet",
        &tmp.path().join("other"),
        LINUX_1_0,
    )
    .await;
    let (code, out) = s.palisadectl(&["devices", "revoke", &id, "--reason", "lost"]);
    assert_eq!(code, 0, "{out}");
    settle(&s).await;
    let (st, _) = conn.get(MANAGED, &cookie).await;
    assert_ne!(st, 200, "a revoked device on an open connection");
    assert_ne!(status(&mut laptop, port, MANAGED).await, 200);

    // Wiped: refused; the same hardware enrolled anew with a new token gets in again.
    let mut other = Browser::on_device(&s.ca, &pem2);
    other.login(port, "alice").await;
    assert_eq!(status(&mut other, port, MANAGED).await, 200);
    let (code, out) = s.palisadectl(&["devices", "wipe", &second, "--reason", "reimaged"]);
    assert_eq!(code, 0, "{out}");
    settle(&s).await;
    assert_ne!(status(&mut other, port, MANAGED).await, 200, "wiped");
    let (_, pem3) = enroll(
        &s,
        "alice@example.com",
        "SER-OTHER",
        "fleet",
        &tmp.path().join("other-again"),
        LINUX_1_0,
    )
    .await;
    settle(&s).await;
    let mut again = Browser::on_device(&s.ca, &pem3);
    again.login(port, "alice").await;
    assert_eq!(status(&mut again, port, MANAGED).await, 200, "re-enrolled");

    // Revoked by its owner in the portal: refused at the next request, as a revoked device.
    let (third, pem4) = enroll(
        &s,
        "alice@example.com",
        "SER-TABLET",
        "fleet",
        &tmp.path().join("tablet"),
        LINUX_1_0,
    )
    .await;
    settle(&s).await;
    let mut tablet = Browser::on_device(&s.ca, &pem4);
    tablet.login(port, "alice").await;
    assert_eq!(status(&mut tablet, port, MANAGED).await, 200);
    let portal = tablet
        .get(&format!("https://{APP_HOST}:{port}/.palisade/portal"))
        .await;
    assert!(portal.body.contains(&third), "{}", portal.body);
    let r = tablet
        .post_form(
            &format!("https://{APP_HOST}:{port}/.palisade/portal/revoke"),
            &[("csrf", &csrf(&portal.body)), ("device_id", &third)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    settle(&s).await;
    let refused = tablet
        .get(&format!("https://{APP_HOST}:{port}{MANAGED}"))
        .await;
    assert_eq!(
        refused.status, 403,
        "revoked from the portal: {}",
        refused.body
    );
    assert!(
        refused.body.contains("this one was revoked"),
        "{}",
        refused.body
    );
}
