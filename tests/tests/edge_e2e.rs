//! End-to-end: real controller and edge processes, the certified `oidc-provider` as identity
//! provider, the sample upstream verifying the identity assertion against the edge's JWKS.
//!
//! - sign-in through the provider's interaction pages, access at both edges, the assertion
//!   verified upstream;
//! - revocation with palisadectl and sign-out: the next request at both edges is refused, also on
//!   keep-alive connections opened before;
//! - forged ID tokens (audience, issuer, expiry, `none`, HS256 keyed with the provider's RSA
//!   public key, a replayed nonce) and a callback without state, each refused with its reason;
//! - request smuggling (CL.TE, TE.CL, duplicate Content-Length) and dot-segment paths.

mod support;

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};
use support::*;

fn upstream_view(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|_| panic!("not the upstream's answer: {body}"))
}

async fn wait_all_edges(s: &Stack) {
    let rev = s.cluster.latest_revision().await.expect("status");
    assert!(rev > 0);
    s.cluster
        .wait_edges(rev, Duration::from_secs(10))
        .await
        .expect("edges catch up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_access_and_revocation_at_both_edges() {
    let s = Stack::start().await;
    let (p1, p2) = (s.edge_port(0), s.edge_port(1));

    // alice signs in at edge 1 through oidc-provider's interaction pages
    let mut alice = s.browser();
    let cb = alice.login(p1, "alice").await;
    assert_eq!(cb.status, 303, "callback: {}", cb.body);
    assert_eq!(
        cb.location.as_deref(),
        Some("/hello?x=1"),
        "back where she started"
    );
    let cookie = alice.session().expect("session cookie");
    let set = cb
        .set_cookies
        .iter()
        .find(|c| c.starts_with("__Host-palisade-session="))
        .expect("set-cookie");
    for attr in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(set.contains(attr), "{attr} missing in {set}");
    }
    let claims = session_claims(&cookie);
    let sid = claims["sid"].as_str().expect("sid").to_string();
    assert!(
        URL_SAFE_NO_PAD.decode(&sid).expect("b64").len() >= 16,
        "128+ bit session id"
    );
    assert_eq!(claims["email"], "alice@example.com");

    // access at both edges with the same cookie; the upstream verifies the assertion with the JWKS
    for port in [p1, p2] {
        let p = alice
            .get(&format!("https://{APP_HOST}:{port}/hello?x=1"))
            .await;
        assert_eq!(p.status, 200, "edge :{port}: {}", p.body);
        let v = upstream_view(&p.body);
        assert_eq!(v["identity"]["verified"], true, "{v}");
        assert_eq!(v["identity"]["claims"]["sub"], "alice");
        assert_eq!(v["identity"]["claims"]["aud"], "app");
        assert_eq!(v["headers"]["x-palisade-email"], "alice@example.com");
        assert!(
            v["headers"]["cookie"].is_null(),
            "session cookie leaked upstream: {v}"
        );
    }

    // a second sign-in gets a new session id
    let mut again = s.browser();
    again.login(p2, "alice").await;
    let sid2 = session_claims(&again.session().expect("cookie"))["sid"].clone();
    assert_ne!(sid2, json!(sid));

    // keep-alive connections opened before the revocation
    let mut k1 = KeepAlive::open(&s.ca, p1).await;
    let mut k2 = KeepAlive::open(&s.ca, p2).await;
    assert_eq!(k1.get("/hello", &cookie).await.0, 200);
    assert_eq!(k2.get("/hello", &cookie).await.0, 200);

    // revoke the session with palisadectl and wait until every edge enforces it
    let (code, out) = s.palisadectl(&["revoke", "session", &sid, "--reason", "e2e"]);
    assert_eq!(code, 0, "{out}");
    let rev = out["revision"]
        .as_u64()
        .or_else(|| out["write"]["revision"].as_u64())
        .or_else(|| out["revocation"]["revision"].as_u64())
        .unwrap_or_else(|| panic!("no revision in {out}"));
    let (code, out) = s.palisadectl(&["wait", &rev.to_string(), "--within", "5s"]);
    assert_eq!(code, 0, "{out}");
    for (name, k) in [("edge 1", &mut k1), ("edge 2", &mut k2)] {
        let (status, body) = k.get("/hello", &cookie).await;
        assert_eq!(status, 302, "{name} still served a revoked session: {body}");
    }
    // the other session of alice is untouched
    let p = again.get(&format!("https://{APP_HOST}:{p1}/hello")).await;
    assert_eq!(p.status, 200);

    // bob signs in at edge 2 and signs out there; both edges refuse his cookie next
    let mut bob = s.browser();
    bob.login(p2, "bob").await;
    let bob_cookie = bob.session().expect("bob's cookie");
    let mut b1 = KeepAlive::open(&s.ca, p1).await;
    let mut b2 = KeepAlive::open(&s.ca, p2).await;
    assert_eq!(b1.get("/hello", &bob_cookie).await.0, 200);
    assert_eq!(b2.get("/hello", &bob_cookie).await.0, 200);
    // sign-out is a form post with the session's anti-CSRF token (a GET only asks)
    let page = bob
        .get(&format!("https://{APP_HOST}:{p2}/.palisade/logout"))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let token = csrf(&page.body);
    let out = bob
        .post_form(
            &format!("https://{APP_HOST}:{p2}/.palisade/logout"),
            &[("csrf", &token)],
        )
        .await;
    assert_eq!(out.status, 200, "{}", out.body);
    assert!(out.body.contains("signed out"), "{}", out.body);
    assert!(bob.session().is_none(), "the cookie is cleared");
    wait_all_edges(&s).await;
    assert_eq!(
        b1.get("/hello", &bob_cookie).await.0,
        302,
        "edge 1 after sign-out"
    );
    assert_eq!(
        b2.get("/hello", &bob_cookie).await.0,
        302,
        "edge 2 after sign-out"
    );

    // the identity headers cannot be spoofed by a client
    let p = s
        .browser()
        .http
        .get(format!("https://{APP_HOST}:{p1}/hello"))
        .header(
            "cookie",
            format!("__Host-palisade-session={}", again.session().expect("c")),
        )
        .header("x-palisade-user", "mallory")
        .header("x-palisade-assertion", "forged")
        .send()
        .await
        .expect("request");
    let v = upstream_view(&p.text().await.expect("body"));
    assert_eq!(v["headers"]["x-palisade-user"], "alice");
    assert_eq!(v["identity"]["verified"], true);

    // denials say so with a request id, and do not list who else is allowed (the request id
    // finds the explanation in the edge's log; `palisadectl simulate` shows it to admins)
    let mut carol = s.browser();
    carol.login(p1, "carol").await;
    let p = carol.get(&format!("https://{APP_HOST}:{p1}/hello")).await;
    assert_eq!(p.status, 403);
    assert!(p.body.contains("Request id"), "{}", p.body);
    assert!(
        !p.body.contains("example.com"),
        "the deny page lists the allow-list: {}",
        p.body
    );
    // carol's portal does not list that sign-in as a session: it is a denied attempt.
    let portal = format!("https://{APP_HOST}:{p1}/.palisade/portal");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let page = loop {
        let page = carol.get(&portal).await;
        assert!(matches!(page.status, 200 | 429), "{}", page.body);
        if page.status == 200 && page.body.contains("<td>denied</td>") {
            break page;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the denied sign-in is not in carol's history: {}",
            page.body
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let sessions = page.body.split("id=sessions").nth(1).unwrap_or_default();
    let sessions = sessions.split("</table>").next().unwrap_or_default();
    assert!(
        !sessions.contains("<td>"),
        "a denied sign-in is listed as a session: {sessions}"
    );

    // `palisadectl simulate` gives admins what the deny page does not: the rule and reason. A
    // bad requests file is refused with the request's index before anything is sent.
    let reqs = s.dir.path().join("requests.json");
    let user = |sub: &str, email: &str| json!({"identity_provider": "real", "subject": sub, "email": email});
    let mut fresh_mfa = user("alice", "alice@example.com");
    fresh_mfa["mfa_method"] = json!("totp");
    fresh_mfa["mfa_age_seconds"] = json!(60);
    std::fs::write(
        &reqs,
        json!([
            {"label": "carol", "host": APP_HOST, "path": "/hello", "identity": user("carol", "carol@partner.example")},
            {"label": "alice-mfa", "host": APP_HOST, "path": "/mfa/x", "identity": fresh_mfa},
            {"label": "alice-no-mfa", "host": APP_HOST, "path": "/mfa/x", "identity": user("alice", "alice@example.com")},
            {"label": "anonymous", "host": APP_HOST, "path": "/hello"},
            {"label": "anonymous-h3", "host": APP_HOST, "path": "/hello", "protocol": "h3"}
        ])
        .to_string(),
    )
    .expect("write");
    let (code, out) = s.palisadectl(&["simulate", "-r", reqs.to_str().expect("utf-8")]);
    assert_eq!(code, 0, "{out}");
    let decisions: Vec<(&str, &str)> = out
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            (
                r["label"].as_str().unwrap_or(""),
                r["decision"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("carol", "deny"),
            ("alice-mfa", "allow"),
            ("alice-no-mfa", "challenge_mfa"),
            ("anonymous", "challenge_login"),
            // the policy does not list h3 for this application
            ("anonymous-h3", "deny")
        ],
        "{out}"
    );
    assert!(
        !out[0]["reason"].as_str().unwrap_or_default().is_empty(),
        "a denial carries its reason: {out}"
    );
    for bad in [
        json!([{"host": APP_HOST, "protocol": "h4"}]),
        json!([{"host": APP_HOST}, {"host": APP_HOST, "identity": {"subject": "a", "mfa_method": "sms"}}]),
        json!([{"host": APP_HOST, "device": {"os": "bsd"}}]),
        json!([{"host": APP_HOST, "sorce_ip": "10.0.0.1"}]),
        json!([{"host": APP_HOST, "source_ip": "10.0.0"}]),
    ] {
        std::fs::write(&reqs, bad.to_string()).expect("write");
        let (code, out) = s.palisadectl(&["simulate", "-r", reqs.to_str().expect("utf-8")]);
        assert!(matches!(code, 2 | 3), "{bad}: {code} {out}");
        let msg = out["error"].as_str().unwrap_or_default();
        assert!(
            msg.contains("requests") || msg.contains("unknown field"),
            "{bad}: {out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_id_tokens_are_refused_with_their_reason() {
    let s = Stack::start().await;
    let port = s.edge_port(0);
    let f = &s.forging;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let good = |nonce: &str| {
        json!({"iss": f.issuer, "aud": CLIENT_ID, "sub": "mallory", "nonce": nonce,
               "iat": now, "exp": now + 300, "email": "mallory@example.com"})
    };

    // control: a correctly signed token passes, so the refusals below are about the token alone
    let mut b = s.browser();
    let (state, nonce) = start_forged(&mut b, port).await;
    f.will_return(f.sign(&good(&nonce)));
    let p = finish_forged(&mut b, port, &state, &f.issuer).await;
    assert_eq!(p.status, 303, "a valid token is accepted: {}", p.body);
    let old_nonce = nonce;

    // the provider rotates to a key the edge has not cached: the edge refetches its JWKS (at
    // most every 2 s, so an attacker naming unknown keys cannot make it hammer the provider)
    let sign_rotated = f.rotate();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut b = s.browser();
    let (state, nonce) = start_forged(&mut b, port).await;
    f.will_return(sign_rotated(&good(&nonce)));
    let p = finish_forged(&mut b, port, &state, &f.issuer).await;
    assert_eq!(
        p.status, 303,
        "a token signed with the rotated key is accepted: {}",
        p.body
    );

    let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    type Forge<'a> = Box<dyn Fn(&str) -> String + 'a>;
    let cases: Vec<(&str, Forge, &str)> = vec![
        (
            "wrong audience",
            Box::new(|n: &str| {
                let mut c = good(n);
                c["aud"] = json!("someone-else");
                f.sign(&c)
            }),
            "meant for another client",
        ),
        (
            "wrong issuer",
            Box::new(|n: &str| {
                let mut c = good(n);
                c["iss"] = json!("http://evil.example");
                f.sign(&c)
            }),
            "another issuer",
        ),
        (
            "expired",
            Box::new(|n: &str| {
                let mut c = good(n);
                c["iat"] = json!(now - 1200);
                c["exp"] = json!(now - 600);
                f.sign(&c)
            }),
            "expired",
        ),
        (
            "alg none",
            Box::new(|n: &str| format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&good(n)))),
            "refused algorithm (none)",
        ),
        (
            "HS256 keyed with the provider's RSA public key",
            Box::new(|n: &str| {
                let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
                h.kid = Some("rsa-1".into());
                jsonwebtoken::encode(
                    &h,
                    &good(n),
                    &jsonwebtoken::EncodingKey::from_secret(f.public_pem.as_bytes()),
                )
                .expect("hs256")
            }),
            "refused algorithm (HS256)",
        ),
        (
            "replayed nonce",
            Box::new(|_: &str| f.sign(&good(&old_nonce))),
            "nonce does not match",
        ),
    ];
    for (name, forge, expect) in cases {
        let mut b = s.browser();
        let (state, nonce) = start_forged(&mut b, port).await;
        f.will_return(forge(&nonce));
        let p = finish_forged(&mut b, port, &state, &f.issuer).await;
        assert_eq!(p.status, 401, "{name}: {}", p.body);
        assert!(
            p.body.contains(expect),
            "{name}: expected {expect:?} in {}",
            p.body
        );
        assert!(b.session().is_none(), "{name}: no session may be issued");
    }

    // a callback without state, and one whose state belongs to no attempt here
    let mut b = s.browser();
    let (_, _) = start_forged(&mut b, port).await;
    let p = b
        .get(&format!(
            "https://{FORGED_HOST}:{port}/.palisade/callback?code=c"
        ))
        .await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("no state"), "{}", p.body);
    let p = finish_forged(&mut s.browser(), port, "made-up-state", &f.issuer).await;
    assert_eq!(p.status, 400);
    assert!(p.body.contains("unknown here or has expired"), "{}", p.body);
    // the same callback replayed is refused
    let mut b = s.browser();
    let (state, nonce) = start_forged(&mut b, port).await;
    f.will_return(f.sign(&good(&nonce)));
    let login_cookies = b.edge.clone();
    assert_eq!(
        finish_forged(&mut b, port, &state, &f.issuer).await.status,
        303
    );
    b.edge = login_cookies;
    let p = finish_forged(&mut b, port, &state, &f.issuer).await;
    assert_eq!(p.status, 400, "{}", p.body);
    assert!(p.body.contains("already used"), "{}", p.body);
    // a mix-up: the response claims another issuer (RFC 9207)
    let mut b = s.browser();
    let (state, nonce) = start_forged(&mut b, port).await;
    f.will_return(f.sign(&good(&nonce)));
    let p = finish_forged(&mut b, port, &state, &s.idp.issuer).await;
    assert_eq!(p.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_is_refused_and_dot_segments_cannot_dodge_a_rule() {
    let s = Stack::start().await;
    let port = s.edge_port(0);
    let mut bob = s.browser();
    bob.login(port, "bob").await;
    let bob_cookie = bob.session().expect("cookie");
    let mut alice = s.browser();
    alice.login(port, "alice").await;
    let alice_cookie = alice.session().expect("cookie");
    let host = format!("{APP_HOST}:{port}");

    let smuggling = [
        (
            "CL.TE",
            format!(
                "POST /hello HTTP/1.1\r\nHost: {host}\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nG"
            ),
        ),
        (
            "TE.CL",
            format!(
                "POST /hello HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n"
            ),
        ),
        (
            "duplicate Content-Length (equal)",
            format!(
                "POST /hello HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"
            ),
        ),
        (
            "duplicate Content-Length (different)",
            format!(
                "POST /hello HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"
            ),
        ),
        (
            "Content-Length list",
            format!("POST /hello HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5, 5\r\n\r\nhello"),
        ),
        (
            "obfuscated Transfer-Encoding",
            format!(
                "POST /hello HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n"
            ),
        ),
    ];
    for (name, req) in smuggling {
        let out = raw(&s.ca, port, APP_HOST, req.as_bytes()).await;
        let status = status_of(&out);
        assert!(
            (400..500).contains(&status) || status == 501,
            "{name}: expected a refusal, got {out:?}"
        );
        assert_eq!(
            out.matches("HTTP/1.1 ").count(),
            1,
            "{name}: exactly one response, no smuggled second request: {out:?}"
        );
    }

    // /admin is for admins only; dot segments and encodings are normalised before routing
    for path in [
        "/admin/",
        "/hello/../admin/",
        "/hello/%2e%2e/admin/",
        "/./admin/x",
        "//admin/x",
        "/hello/..%2fadmin/",
    ] {
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nCookie: __Host-palisade-session={bob_cookie}\r\nConnection: close\r\n\r\n"
        );
        let out = raw(&s.ca, port, APP_HOST, req.as_bytes()).await;
        let status = status_of(&out);
        assert!(
            status == 403 || status == 400,
            "bob reached {path:?}: {out}"
        );
    }
    let req = format!(
        "GET /hello/../admin/x HTTP/1.1\r\nHost: {host}\r\nCookie: __Host-palisade-session={alice_cookie}\r\nConnection: close\r\n\r\n"
    );
    let out = raw(&s.ca, port, APP_HOST, req.as_bytes()).await;
    assert_eq!(status_of(&out), 200, "{out}");
    assert!(
        out.contains("\"uri\": \"/admin/x\""),
        "the upstream sees the normalised path: {out}"
    );

    // HTTP/2 (ALPN h2) works the same way
    {
        let t = tls_alpn(&s.ca, port, APP_HOST, b"h2").await;
        let (mut h2, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(t),
        )
        .await
        .expect("h2 handshake");
        tokio::spawn(conn);
        let req = hyper::Request::get(format!("https://{host}/hello"))
            .header("cookie", format!("__Host-palisade-session={alice_cookie}"))
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .expect("request");
        let r = h2.send_request(req).await.expect("h2 request");
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), http::Version::HTTP_2);
        use http_body_util::BodyExt;
        let body = r.into_body().collect().await.expect("body").to_bytes();
        let v = upstream_view(&String::from_utf8_lossy(&body));
        assert_eq!(v["identity"]["claims"]["sub"], "alice");
    }

    // a request head larger than the limit gets 431
    let big = format!(
        "GET /hello HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(80 * 1024)
    );
    let out = raw(&s.ca, port, APP_HOST, big.as_bytes()).await;
    assert_eq!(status_of(&out), 431, "{}", &out[..out.len().min(200)]);

    // a body larger than the application allows is refused before it reaches the upstream
    let out = raw(
        &s.ca,
        port,
        APP_HOST,
        format!(
            "POST /hello HTTP/1.1\r\nHost: {host}\r\nCookie: __Host-palisade-session={alice_cookie}\r\nContent-Length: 2097152\r\n\r\n"
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(status_of(&out), 413, "{out}");
    // a streamed body within the limit arrives whole
    let body = vec![b'y'; 512 * 1024];
    let r = alice
        .http
        .post(format!("https://{APP_HOST}:{port}/hello"))
        .header("cookie", format!("__Host-palisade-session={alice_cookie}"))
        .body(body)
        .send()
        .await
        .expect("post");
    let v = upstream_view(&r.text().await.expect("body"));
    assert_eq!(v["body"]["bytes"], 512 * 1024);
    // a large response streams back
    let r = alice
        .http
        .get(format!("https://{APP_HOST}:{port}/stream?bytes=5000000"))
        .header("cookie", format!("__Host-palisade-session={alice_cookie}"))
        .send()
        .await
        .expect("get");
    assert_eq!(r.bytes().await.expect("body").len(), 5_000_000);

    // WebSocket upgrade through the edge: echo, then cut when the session is revoked
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut ws = tls(&s.ca, port, APP_HOST).await;
    ws.write_all(format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nCookie: __Host-palisade-session={alice_cookie}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    ).as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = ws.read(&mut buf).await.expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="), "{head}");
    ws.write_all(b"ping").await.expect("write");
    let n = ws.read(&mut buf).await.expect("read");
    assert_eq!(&buf[..n], b"ping");
    let sid = session_claims(&alice_cookie)["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    let (code, out) = s.palisadectl(&["revoke", "session", &sid, "--reason", "cut the socket"]);
    assert_eq!(code, 0, "{out}");
    let closed = tokio::time::timeout(Duration::from_secs(5), ws.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the upgraded connection is closed after the revocation: {closed:?}"
    );
}
