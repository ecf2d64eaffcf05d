//! The edge under attack, end to end (review findings H3, M2, M3, M4, M6, M7, M8, L1, L3, L4):
//! real controllers and edges, the certified `oidc-provider`, a forging provider, a software
//! authenticator, and a sample upstream that reads paths the way Java servlet containers and
//! IIS do.

mod support;

use std::time::Duration;

use palisade_chaos::softkey::SoftKey;
use serde_json::{Value, json};
use support::mfa::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

/// The Stack's policy with the MFA enrollment rule said out loud (these tests enrol first
/// factors without an admin-issued code).
fn policy_of(s: &Stack) -> Value {
    let mut p = policy(&s.idp.issuer, &s.forging.issuer, s.upstream.addr);
    p["mfa"] = json!({"enrollment_requires_code": false});
    p
}

async fn apply(s: &Stack, p: &Value) {
    let rev = s
        .cluster
        .apply_policy(&p.to_string(), "security test")
        .await
        .expect("policy");
    s.cluster
        .wait_edges(rev, Duration::from_secs(20))
        .await
        .expect("edges apply the policy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_and_override_headers_cannot_dodge_a_prefix_rule() {
    let s = Stack::start().await;
    apply(&s, &policy_of(&s)).await;
    let port = s.edge_port(0);
    // bob is staff (the / application lets him in) but not an admin (/admin does not).
    let mut bob = s.browser();
    bob.login(port, "bob").await;
    let control = bob.get(&url(port, "/admin/users")).await;
    assert_eq!(control.status, 403, "{}", control.body);
    for path in [
        "/admin;x/users",
        "/admin;jsessionid=1/users",
        "/hello/..;/admin/users",
        "/hello/.;/../admin/users",
        "/ADMIN/users",
        "/%41DMIN/users",
        "/Admin/users",
        "/admin%3Bx/users",
    ] {
        let p = bob.get(&url(port, path)).await;
        if p.status == 200 {
            let v = json_of(&p);
            let servlet = v["servlet_path"].as_str().unwrap_or("");
            let iis = v["iis_path"].as_str().unwrap_or("");
            assert!(
                !servlet.starts_with("/admin") && !iis.starts_with("/admin"),
                "{path} was decided by the / application but a servlet container serves {servlet} and IIS {iis}"
            );
        }
    }
    for header in ["x-original-url", "x-rewrite-url"] {
        let r = bob
            .http
            .get(url(port, "/hello"))
            .header(header, "/admin/users")
            .header(
                "cookie",
                format!(
                    "__Host-palisade-session={}",
                    bob.session().expect("session")
                ),
            )
            .send()
            .await
            .expect("request");
        assert_eq!(r.status(), 200);
        let v: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
        assert!(
            v["headers"].get(header).is_none(),
            "{header} reached the upstream: {}",
            v["headers"]
        );
        assert!(
            !v["iis_path"].as_str().unwrap_or("").starts_with("/admin"),
            "{v}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_cookies_and_sign_out() {
    let s = Stack::start().await;
    apply(&s, &policy_of(&s)).await;
    let port = s.edge_port(0);

    // L3: a denied user learns the rule's name, not who else is allowed.
    let mut bob = s.browser();
    bob.login(port, "bob").await;
    let denied = bob.get(&url(port, "/admin/users")).await;
    assert_eq!(denied.status, 403);
    assert!(
        denied.body.contains("no rule allows this request") && denied.body.contains("Request id"),
        "{}",
        denied.body
    );
    assert!(
        !denied.body.contains("group admins") && !denied.body.contains("What is missing"),
        "the deny page lists the allow-list: {}",
        denied.body
    );

    // L4: HSTS on every HTTPS answer, and an upstream cannot set Palisade's cookies.
    let mut alice = s.browser();
    alice.login(port, "alice").await;
    let cookie = format!(
        "__Host-palisade-session={}",
        alice.session().expect("session")
    );
    let r = alice
        .http
        .get(url(port, "/set-cookie"))
        .header("cookie", &cookie)
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()
            .get("strict-transport-security")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("max-age=")),
        "no HSTS: {:?}",
        r.headers()
    );
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(String::from))
        .collect();
    assert!(
        !set.iter().any(|c| c.starts_with("__Host-palisade-")),
        "the upstream set Palisade's cookie: {set:?}"
    );
    assert!(set.iter().any(|c| c.starts_with("app-pref=")), "{set:?}");

    // L4: a cross-site GET cannot sign anyone out; a POST with the anti-CSRF token does.
    let page = alice.get(&url(port, "/.palisade/logout")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let still = alice.get(&url(port, "/hello")).await;
    assert_eq!(
        still.status, 200,
        "GET /.palisade/logout signed alice out: {}",
        still.body
    );
    let token = csrf(&page.body);
    let out = alice
        .post_form(&url(port, "/.palisade/logout"), &[("csrf", &token)])
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    let mut fresh = s.browser();
    fresh.edge.insert(
        "__Host-palisade-session".into(),
        cookie.split_once('=').map(|x| x.1).unwrap_or("").into(),
    );
    let gone = fresh.get(&url(port, "/hello")).await;
    assert_eq!(gone.status, 302, "the session still works: {}", gone.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_a_provider_may_not_assert_are_dropped() {
    let s = Stack::start().await;
    apply(&s, &policy_of(&s)).await;
    let port = s.edge_port(0);
    let f = &s.forging;
    let token = |nonce: &str, email: &str, verified: bool| {
        f.sign(
            &json!({"iss": f.issuer, "aud": CLIENT_ID, "sub": "mallory", "nonce": nonce,
                       "iat": now(), "exp": now() + 300, "email": email,
                       "email_verified": verified, "groups": ["eng,admins", "x"]}),
        )
    };
    let upstream_headers = |b: &Browser| {
        let cookie = format!("__Host-palisade-session={}", b.session().expect("session"));
        let http = b.http.clone();
        async move {
            let r = http
                .get(format!("https://{FORGED_HOST}:{port}/"))
                .header("cookie", cookie)
                .send()
                .await
                .expect("request");
            assert_eq!(r.status(), 200);
            let v: Value = serde_json::from_str(&r.text().await.expect("body")).expect("json");
            v["headers"].clone()
        }
    };

    // M4: an unverified email is not an identity.
    let mut b = s.browser();
    let (state, nonce) = start_forged(&mut b, port).await;
    f.will_return(token(&nonce, "ceo@example.com", false));
    let p = finish_forged(&mut b, port, &state, &f.issuer).await;
    assert_eq!(p.status, 303, "{}", p.body);
    let h = upstream_headers(&b).await;
    assert!(
        h.get("x-palisade-email").is_none(),
        "an unverified email reached the upstream: {h}"
    );
    // L4: a group with a comma cannot read as two groups.
    assert_eq!(
        h["x-palisade-groups"], "eng%2Cadmins,x",
        "groups are not encoded: {h}"
    );

    // M4: a provider limited to its own domains cannot assert another's, even verified.
    let mut p = policy_of(&s);
    p["identity_providers"][1]["email_domains"] = json!(["partner.test"]);
    apply(&s, &p).await;
    let mut b = s.browser();
    let (state, nonce) = start_forged(&mut b, port).await;
    f.will_return(token(&nonce, "ceo@example.com", true));
    let r = finish_forged(&mut b, port, &state, &f.issuer).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let h = upstream_headers(&b).await;
    assert!(
        h.get("x-palisade-email").is_none(),
        "the partner provider asserted a corp address: {h}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_is_held_to_each_application_lifetime() {
    use palisade_policy::token::{SessionClaims, TokenKind};
    let s = Stack::start().await;
    apply(&s, &policy_of(&s)).await;
    let port = s.edge_port(0);
    // The catalog's signing key, as any edge holds it.
    let edge = s.cluster.edges[0].id.clone();
    let read = |f: &str| std::fs::read_to_string(s.cluster.pki().join(f)).expect("pki");
    let replica = std::sync::Arc::new(palisade_node::sync::Replica::default());
    let (_stop, rx) = tokio::sync::watch::channel(false);
    palisade_node::sync::spawn(
        palisade_node::sync::SyncConfig {
            edge_id: edge.clone(),
            labels: Default::default(),
            controllers: s.cluster.controller_addrs(),
            cert_pem: read(&format!("edge-{edge}.pem")),
            key_pem: read(&format!("edge-{edge}.key")),
            ca_pem: read("ca.pem"),
            server_name: "localhost".into(),
            silence_timeout: Duration::from_secs(2),
            randomize_start: false,
        },
        replica.clone(),
        rx,
    );
    let view = loop {
        if let Some(v) = replica.view().filter(|v| v.keyring.active().is_some()) {
            break v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // A session issued two hours ago for a 30-day application on the same host; the / app
    // allows sessions of one hour.
    let claims = SessionClaims {
        sid: "lifetime-test-session".into(),
        idp: "real".into(),
        sub: "alice".into(),
        email: "alice@example.com".into(),
        name: String::new(),
        groups: vec![],
        claims: Default::default(),
        aud: APP_HOST.into(),
        iat: now() - 7200,
        exp: now() + 30 * 86_400,
        last_active: now(),
        idle_secs: 30 * 86_400,
        ..serde_json::from_value(
            json!({"sid":"","idp":"","sub":"","iat":0,"exp":0,"last_active":0,"idle_secs":0}),
        )
        .expect("defaults")
    };
    let token = view
        .keyring
        .sign(TokenKind::Session, &claims)
        .expect("sign");
    let mut b = s.browser();
    b.edge.insert("__Host-palisade-session".into(), token);
    let p = b.get(&url(port, "/hello")).await;
    assert_ne!(
        p.status, 200,
        "a two-hour-old session reached an application whose sessions last an hour"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn factor_enrollment_cannot_be_hijacked_or_downgraded() {
    let s = Stack::start().await;
    apply(&s, &policy_of(&s)).await;
    let port = s.edge_port(0);
    let origin = format!("https://{APP_HOST}:{port}");
    let mut a = s.browser();
    a.login(port, "alice").await;

    // A security key first (the first factor needs no earlier one), then pass it.
    let mut key = SoftKey::new();
    let key_factor = register_key(&mut a, port, &key, "Key").await;
    pass_key(&mut a, port, &mut key, "/keys/vault").await;

    // M2: begin a TOTP enrollment; a second client holding only alice's session cookie
    // cannot confirm it, even with the right code.
    let portal = a.get(&url(port, "/.palisade/portal")).await;
    let token = csrf(&portal.body);
    let begin = a
        .post_form(
            &url(port, "/.palisade/portal/totp/begin"),
            &[("csrf", &token), ("name", "Phone")],
        )
        .await;
    assert_eq!(begin.status, 200, "{}", begin.body);
    let secret = field(&begin.body, "totp-secret").expect("key shown");
    let factor_id = field(&begin.body, "factor_id").expect("factor id");
    let uri = field(&begin.body, "uri").unwrap_or_default();
    let totp = totp_for(&secret);
    let mut thief = s.browser();
    thief.edge.insert(
        "__Host-palisade-session".into(),
        a.session().expect("session"),
    );
    let code = totp.generate(now() as u64).to_string();
    let stolen = thief
        .post_form(
            &url(port, "/.palisade/portal/totp/confirm"),
            &[
                ("csrf", &token),
                ("factor_id", &factor_id),
                ("uri", &uri),
                ("code", &code),
            ],
        )
        .await;
    assert!(
        stolen.status != 303 && !mfa_cookie_set(&stolen),
        "a client with only the session cookie confirmed the enrollment: {} {:?}",
        stolen.status,
        stolen.set_cookies
    );
    // The browser that began it can, but confirming is not passing a factor.
    let confirmed = a
        .post_form(
            &url(port, "/.palisade/portal/totp/confirm"),
            &[
                ("csrf", &token),
                ("factor_id", &factor_id),
                ("uri", &uri),
                ("code", &code),
            ],
        )
        .await;
    assert_eq!(confirmed.status, 303, "{}", confirmed.body);
    assert!(
        !mfa_cookie_set(&confirmed),
        "confirming an enrollment issued an MFA assertion"
    );

    // M3: a new session that passed only TOTP cannot add or remove a security key.
    let step = now() / 30;
    while now() / 30 == step {
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let mut c = s.browser();
    c.login(port, "alice").await;
    let prompt = c
        .get(&url(port, "/.palisade/mfa?rd=%2F.palisade%2Fportal"))
        .await;
    let t = csrf(&prompt.body);
    let code = totp.generate(now() as u64).to_string();
    let passed = c
        .post_form(
            &url(port, "/.palisade/mfa/totp"),
            &[("csrf", &t), ("rd", "/.palisade/portal"), ("code", &code)],
        )
        .await;
    assert_eq!(passed.status, 303, "{}", passed.body);
    let portal = c.get(&url(port, "/.palisade/portal")).await;
    let t = csrf(&portal.body);
    let phisher = SoftKey::new();
    let begin = c
        .post_json(
            &url(port, "/.palisade/portal/webauthn/begin"),
            &t,
            &json!({"kind": "security_key", "name": "Phisher"}),
        )
        .await;
    if begin.status == 200 {
        let answer = phisher.register(&json_of(&begin), &origin);
        let done = c
            .post_json(&url(port, "/.palisade/portal/webauthn/finish"), &t, &answer)
            .await;
        assert_ne!(
            done.status, 200,
            "a TOTP pass added a security key: {}",
            done.body
        );
    }
    let removed = c
        .post_form(
            &url(port, "/.palisade/portal/factor/remove"),
            &[("csrf", &t), ("factor_id", &key_factor)],
        )
        .await;
    assert_ne!(
        removed.status, 303,
        "a TOTP pass removed the security key: {}",
        removed.body
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webauthn_ceremony_is_used_once() {
    let s = Stack::start().await;
    apply(&s, &policy_of(&s)).await;
    let port = s.edge_port(0);
    let origin = format!("https://{APP_HOST}:{port}");
    let mut a = s.browser();
    a.login(port, "alice").await;
    let mut key = SoftKey::new();
    register_key(&mut a, port, &key, "Key").await;
    let (t, options) = begin_auth(&mut a, port, "/keys/vault").await;
    let mut answer = key.assert(&options, APP_HOST, &origin);
    // A wrong signature, replayed with the same ceremony cookie.
    answer["credential"]["response"]["signature"] =
        json!("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    let before = s.cluster.latest_revision().await.expect("revision");
    for _ in 0..10 {
        let r = a
            .post_json(&url(port, "/.palisade/mfa/webauthn/finish"), &t, &answer)
            .await;
        assert_ne!(r.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = s.cluster.latest_revision().await.expect("revision");
    // One failure and its history entry; at most one housekeeping write (once a minute) may
    // fall in the window. Ten replays must add nothing.
    assert!(
        after - before <= 3,
        "one ceremony produced {} Raft writes",
        after - before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_and_account_pages_are_rate_limited() {
    let s = Stack::start().await;
    apply(&s, &policy_of(&s)).await;
    let port = s.edge_port(0);
    let b = s.browser();
    let mut limited = None;
    for _ in 0..200 {
        let r = b
            .http
            .get(url(port, "/.palisade/login?idp=real&rd=/"))
            .send()
            .await
            .expect("request");
        if r.status() == 429 {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("200 sign-in starts from one client in a burst were all served");
    assert!(r.headers().contains_key("retry-after"), "{:?}", r.headers());

    let mut b = s.browser();
    b.login(s.edge_port(1), "alice").await;
    let mut portal_limited = false;
    for _ in 0..300 {
        let p = b.get(&url(s.edge_port(1), "/.palisade/portal")).await;
        if p.status == 429 {
            portal_limited = true;
            break;
        }
    }
    assert!(
        portal_limited,
        "300 portal loads by one user were all served"
    );
}

/// Opens a WebSocket through the edge as the holder of `cookie`; returns the stream after the
/// 101.
async fn websocket(
    s: &Stack,
    port: u16,
    cookie: &str,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let mut t = tls(&s.ca, port, APP_HOST).await;
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {APP_HOST}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: __Host-palisade-session={cookie}\r\n\r\n"
    );
    t.write_all(req.as_bytes()).await.expect("write");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        t.read_exact(&mut byte).await.expect("read head");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    t
}

/// A client for long streams: no overall timeout (the test browser's 10 s would end a stream
/// by itself and hide whether the edge cut it).
fn stream_client(s: &Stack) -> reqwest::Client {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(s.ca.as_bytes()).expect("ca"))
        .resolve(APP_HOST, "127.0.0.1:0".parse().expect("addr"))
        .build()
        .expect("client")
}

/// Whether the upgraded stream still echoes, within `wait`.
async fn echoes(t: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> bool {
    if t.write_all(b"ping").await.is_err() {
        return false;
    }
    let mut buf = [0u8; 4];
    matches!(
        tokio::time::timeout(Duration::from_secs(2), t.read_exact(&mut buf)).await,
        Ok(Ok(_)) if &buf == b"ping"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lived_connections_are_cut_when_the_answer_changes() {
    let s = Stack::start().await;
    let mut p = policy_of(&s);
    apply(&s, &p).await;
    let port = s.edge_port(0);
    let mut alice = s.browser();
    alice.login(port, "alice").await;
    let cookie = alice.session().expect("session");

    // A WebSocket and an event stream, both cut by a policy change that denies alice.
    let mut ws = websocket(&s, port, &cookie).await;
    assert!(echoes(&mut ws).await, "the WebSocket works");
    let mut events = stream_client(&s)
        .get(url(port, "/events"))
        .header("cookie", format!("__Host-palisade-session={cookie}"))
        .send()
        .await
        .expect("events");
    assert!(
        events.chunk().await.expect("chunk").is_some(),
        "events flow"
    );
    p["apps"][0]["rules"] = json!([{"name": "bob-only", "decision": "allow", "include": [{"email": "bob@example.com"}]}]);
    apply(&s, &p).await;
    let mut cut = false;
    for _ in 0..10 {
        if !echoes(&mut ws).await {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        cut,
        "the WebSocket still echoes after the policy denied alice"
    );
    let ended = tokio::time::timeout(Duration::from_secs(8), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the event stream kept flowing after the policy denied alice"
    );

    // A server-sent event stream cut by revoking the session.
    let p = policy_of(&s);
    apply(&s, &p).await;
    let mut ws = websocket(&s, port, &cookie).await;
    let mut events = stream_client(&s)
        .get(url(port, "/events"))
        .header("cookie", format!("__Host-palisade-session={cookie}"))
        .send()
        .await
        .expect("events");
    assert_eq!(events.status(), 200);
    assert!(
        events.chunk().await.expect("chunk").is_some(),
        "events flow"
    );
    let sid = session_claims(&cookie)["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    let (code, out) = s.palisadectl(&["revoke", "session", &sid, "--reason", "test"]);
    assert_eq!(code, 0, "{out}");
    let ended = tokio::time::timeout(Duration::from_secs(8), async {
        while let Ok(Some(_)) = events.chunk().await {}
    })
    .await;
    assert!(
        ended.is_ok(),
        "the event stream kept flowing after the session was revoked"
    );
    let mut cut = false;
    for _ in 0..10 {
        if !echoes(&mut ws).await {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(
        cut,
        "the WebSocket still echoes after the session was revoked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_and_too_many_connections_are_bounded() {
    let s = Stack::start_with(&["--body-timeout-ms", "1000", "--max-connections", "8"]).await;
    apply(&s, &policy_of(&s)).await;
    let port = s.edge_port(0);
    let mut alice = s.browser();
    alice.login(port, "alice").await;
    let cookie = alice.session().expect("session");

    // A body that stalls after 10 of 100 bytes.
    let mut t = tls(&s.ca, port, APP_HOST).await;
    let head = format!(
        "POST /hello HTTP/1.1\r\nHost: {APP_HOST}:{port}\r\nContent-Length: 100\r\nCookie: __Host-palisade-session={cookie}\r\n\r\n0123456789"
    );
    t.write_all(head.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(8), t.read_to_end(&mut out)).await;
    assert!(
        r.is_ok(),
        "a stalled request body held the connection for 8 s"
    );

    // At most 8 connections at once: a ninth waits until one closes.
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(tls(&s.ca, port, APP_HOST).await);
    }
    let ninth = tokio::time::timeout(Duration::from_secs(2), tls(&s.ca, port, APP_HOST)).await;
    assert!(ninth.is_err(), "a ninth connection was served over the cap");
    drop(open.pop());
    let ninth = tokio::time::timeout(Duration::from_secs(5), tls(&s.ca, port, APP_HOST)).await;
    assert!(
        ninth.is_ok(),
        "a connection was refused after another closed"
    );
}
