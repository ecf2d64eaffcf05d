//! HTTP/3 at the edge, end to end with real processes (3 controllers, 2 edges): QUIC on the
//! HTTPS port, advertised with `Alt-Svc` over TCP only while it serves and only for a host
//! whose applications all accept it; the same request path
//! as HTTP/1.1 (a public path, a sign-in challenge, the session cookie, the identity
//! assertion naming `h3`); a revocation refuses the next stream on QUIC connections already
//! open at both edges and cuts a long download running on one; a flood of 400 streams on one
//! connection is served within the stream limit while another connection is served too; aioquic, an independent QUIC
//! stack, gets the same answers, and its malformed requests (duplicate `:path`, `:authority`
//! ≠ `Host`, no `:path`, an oversized header section, uppercase names, connection headers)
//! are refused without stopping the edge; a request whose body does not match its `content-length` is refused; a QUIC connection presenting a device certificate
//! is closed with Palisade's error code when the device is revoked; `--h3-listen off` turns it
//! off and stops the advertisement.

mod support;

use std::time::Duration;

use bytes::Bytes;
use palisade_chaos::h3client::H3;
use serde_json::{Value, json};
use support::devices::{LINUX_1_0, enroll, settle};
use support::h3::aioquic;
use support::{APP_HOST, Stack, session_claims};

/// GET `path` at edge 0 over TCP (no session); its `Alt-Svc`, if any.
async fn alt_svc(s: &Stack, path: &str) -> Option<String> {
    let r = s
        .browser()
        .http
        .get(format!("https://{APP_HOST}:{}{path}", s.edge_port(0)))
        .send()
        .await
        .expect("request");
    r.headers()
        .get("alt-svc")
        .map(|v| v.to_str().expect("ascii").to_string())
}

async fn h3_to(s: &Stack, edge: usize) -> H3 {
    let addr = s.cluster.edges[edge].h3().expect("the edge serves HTTP/3");
    H3::connect(&s.ca, addr, APP_HOST, None)
        .await
        .expect("QUIC connection")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_serves_the_same_request_path_and_is_cut_on_revocation() {
    let s = Stack::start().await;
    let (p1, p2) = (s.edge_port(0), s.edge_port(1));
    let h3_port = s.cluster.edges[0].h3().expect("h3").port();

    // Not advertised while an application of the host does not accept HTTP/3 (the policy's
    // default); over QUIC, such an application refuses the request.
    assert_eq!(alt_svc(&s, "/").await, None);
    let mut q0 = h3_to(&s, 0).await;
    let r = q0.get("/hello", None).await.expect("answer");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("not served over H3"), "{}", r.body);
    s.accept_h3().await;
    assert_eq!(
        alt_svc(&s, "/").await.as_deref(),
        Some(format!("h3=\":{h3_port}\"; ma=86400").as_str())
    );

    // Over TCP, HTTP/3 is advertised on the port it serves.
    let mut alice = s.browser();
    alice.login(p1, "alice").await;
    let r = alice
        .http
        .get(format!("https://{APP_HOST}:{p1}/hello"))
        .header(
            "cookie",
            format!(
                "__Host-palisade-session={}",
                alice.session().expect("cookie")
            ),
        )
        .send()
        .await
        .expect("request");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["alt-svc"],
        format!("h3=\":{h3_port}\"; ma=86400").as_str()
    );
    let cookie = alice.session().expect("cookie");

    // Over QUIC: public, challenged, let in with the session, the upstream told it was h3.
    let mut q1 = h3_to(&s, 0).await;
    let jwks = q1
        .get("/.well-known/palisade/jwks.json", None)
        .await
        .expect("jwks");
    assert_eq!(jwks.status, 200, "{}", jwks.body);
    assert!(
        jwks.headers.get("alt-svc").is_none(),
        "no Alt-Svc over HTTP/3 itself"
    );
    let anonymous = q1.get("/hello", None).await.expect("anonymous");
    assert_eq!(anonymous.status, 302, "sign in first: {}", anonymous.body);
    let app = q1.get("/hello", Some(&cookie)).await.expect("signed in");
    assert_eq!(app.status, 200, "{}", app.body);
    let seen: Value = serde_json::from_str(&app.body).expect("upstream JSON");
    assert_eq!(seen["identity"]["verified"], true, "{seen}");
    assert_eq!(seen["identity"]["claims"]["proto"], "h3", "{seen}");
    assert_eq!(
        seen["identity"]["claims"]["rule"], "example-staff",
        "{seen}"
    );
    assert_eq!(seen["headers"]["x-palisade-protocol"], "h3", "{seen}");
    assert!(
        app.headers.get("connection").is_none() && app.headers.get("transfer-encoding").is_none()
    );

    // A flood of streams on one connection: the edge serves at most --h3-max-streams (100)
    // at a time, QUIC flow control holds the rest at the client, every one is answered, and
    // another connection is served meanwhile.
    let flooder = h3_to(&s, 0).await;
    let cookie_for_flood = cookie.clone();
    let flood = tokio::spawn(async move {
        let out = flooder.flood(400, "/hello", Some(&cookie_for_flood)).await;
        drop(flooder);
        out
    });
    let mut other = h3_to(&s, 0).await;
    let meanwhile =
        tokio::time::timeout(Duration::from_secs(5), other.get("/hello", Some(&cookie)))
            .await
            .expect("another connection is served during the flood")
            .expect("answer");
    assert_eq!(meanwhile.status, 200);
    let statuses = flood.await.expect("flood");
    let served = statuses.iter().filter(|r| matches!(r, Ok(200))).count();
    assert_eq!(
        served,
        400,
        "every stream answered: {:?}",
        statuses.iter().find(|r| !matches!(r, Ok(200)))
    );

    // An independent stack (aioquic) gets the same answers.
    let h3_addr = s.cluster.edges[0].h3().expect("h3");
    let answers = aioquic(
        &s.ca,
        h3_addr,
        APP_HOST,
        &json!([
            {"path": "/.well-known/palisade/jwks.json"},
            {"path": "/hello"},
            {"path": "/hello", "cookie": cookie},
        ]),
    );
    assert_eq!(answers[0]["status"], 200, "{answers:?}");
    assert_eq!(answers[1]["status"], 302, "{answers:?}");
    assert_eq!(answers[2]["status"], 200, "{answers:?}");
    let seen: Value =
        serde_json::from_str(answers[2]["body"].as_str().expect("body")).expect("upstream JSON");
    assert_eq!(seen["identity"]["claims"]["proto"], "h3", "{seen}");

    // Malformed requests, each on its own connection: a clear refusal (a 4xx or the stream
    // reset), never an answer from the application, and the edge keeps serving.
    let authority = format!("{APP_HOST}:{}", h3_addr.port());
    let pseudo = |path: &str| {
        json!([
            [":method", "GET"],
            [":scheme", "https"],
            [":authority", authority],
            [":path", path]
        ])
    };
    let mut twice = pseudo("/hello");
    twice
        .as_array_mut()
        .expect("pseudo")
        .push(json!([":path", "/admin"]));
    // h3 0.0.8 reads a repeated `:path` as its last value (RFC 9114 4.3 calls the request
    // malformed): the edge then decides and forwards that same path, never one for the
    // decision and another for the upstream.
    let a = &aioquic(
        &s.ca,
        h3_addr,
        APP_HOST,
        &json!([{"pseudo": twice, "cookie": cookie}]),
    )[0];
    if a["status"] == 200 {
        let seen: Value = serde_json::from_str(a["body"].as_str().expect("body")).expect("JSON");
        assert_eq!(seen["uri"], "/admin", "{seen}");
        assert_eq!(seen["identity"]["claims"]["rule"], "admins-only", "{seen}");
    }
    let malformed = [
        (
            ":authority and host differ",
            json!({"path": "/hello", "cookie": cookie, "headers": [["host", "other.palisade.localhost"]]}),
        ),
        (
            "no :path",
            json!({"pseudo": [[":method", "GET"], [":scheme", "https"], [":authority", authority]]}),
        ),
        (
            "a header section over the limit",
            json!({"path": "/hello", "headers": [["x-big", "a".repeat(70_000)]]}),
        ),
        (
            "an uppercase header name",
            json!({"path": "/hello", "cookie": cookie, "headers": [["X-Upper", "1"]]}),
        ),
        (
            "a connection header",
            json!({"path": "/hello", "cookie": cookie, "headers": [["connection", "close"]]}),
        ),
    ];
    for (what, req) in malformed {
        let a = &aioquic(&s.ca, h3_addr, APP_HOST, &json!([req]))[0];
        let refused = a.get("reset").is_some()
            || a.get("error").is_some()
            || a["status"]
                .as_u64()
                .is_some_and(|st| (400..500).contains(&st));
        assert!(refused, "{what}: {a}");
    }
    let again = aioquic(
        &s.ca,
        h3_addr,
        APP_HOST,
        &json!([{"path": "/hello", "cookie": cookie}]),
    );
    assert_eq!(again[0]["status"], 200, "still serving: {again:?}");

    // Malformed: a body longer than its content-length. (h3 itself refuses a request whose
    // :authority and Host differ, on both sides.)
    let mut q_bad = h3_to(&s, 0).await;
    let req = http::Request::post(format!("https://{APP_HOST}:{p1}/hello"))
        .header("content-length", "3")
        .header("cookie", format!("__Host-palisade-session={cookie}"))
        .body(())
        .expect("request");
    let r = q_bad.send(req, Some(Bytes::from_static(b"too long"))).await;
    assert!(
        r.as_ref().map(|a| a.status != 200).unwrap_or(true),
        "a body longer than its content-length went through: {r:?}"
    );

    // A revocation refuses the next stream on QUIC connections already open, at both edges.
    let mut q2 = h3_to(&s, 1).await;
    assert_eq!(
        q2.get("/hello", Some(&cookie))
            .await
            .expect("edge 2")
            .status,
        200
    );
    let sid = session_claims(&cookie)["sid"]
        .as_str()
        .expect("sid")
        .to_string();
    // ... and a long download already running on QUIC is cut.
    let (status, mut events) = q1.open("/events", Some(&cookie)).await.expect("events");
    assert_eq!(status, 200);
    assert!(events.recv_data().await.expect("an event").is_some());
    let (code, out) = s.palisadectl(&["revoke", "session", &sid, "--reason", "test"]);
    assert_eq!(code, 0, "{out}");
    let rev = s.cluster.latest_revision().await.expect("revision");
    s.cluster
        .wait_edges(rev, Duration::from_secs(20))
        .await
        .expect("edges apply");
    let cut = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.recv_data().await {
                Ok(Some(_)) => continue,
                Ok(None) => return "ended cleanly",
                Err(_) => return "cut",
            }
        }
    })
    .await
    .expect("the stream ends once the session is revoked");
    assert_eq!(cut, "cut", "a cut answer must not look complete");
    for (q, port) in [(&mut q1, p1), (&mut q2, p2)] {
        let r = q
            .get("/hello", Some(&cookie))
            .await
            .expect("same connection");
        assert_eq!(
            r.status, 302,
            "edge :{port} after the revocation: {}",
            r.body
        );
    }

    // A device certificate over QUIC: the connection is the device's; revoking the device
    // closes it with Palisade's application error code.
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("laptop");
    let (id, _) = enroll(&s, "alice@example.com", "SER-QUIC", "", &dir, LINUX_1_0).await;
    settle(&s).await;
    let chain = std::fs::read_to_string(dir.join("device.pem")).expect("chain");
    let key = std::fs::read_to_string(dir.join("device.key")).expect("key");
    let addr = s.cluster.edges[0].h3().expect("h3");
    let mut laptop = H3::connect(&s.ca, addr, APP_HOST, Some((&chain, &key)))
        .await
        .expect("QUIC with a device certificate");
    assert_eq!(
        laptop.get("/hello", None).await.expect("answer").status,
        302
    );
    let (code, out) = s.palisadectl(&["devices", "revoke", &id, "--reason", "lost"]);
    assert_eq!(code, 0, "{out}");
    let closed = tokio::time::timeout(Duration::from_secs(20), laptop.conn.closed())
        .await
        .expect("the connection is closed once the device is revoked");
    match closed {
        quinn::ConnectionError::ApplicationClosed(c) => {
            assert_eq!(
                c.error_code,
                quinn::VarInt::from_u32(palisade_node::h3::DEVICE_ENDED)
            );
        }
        other => panic!("closed otherwise: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_can_be_turned_off() {
    let s = Stack::start_with(&["--h3-listen", "off"]).await;
    assert!(s.cluster.edges[0].h3().is_none());
    s.accept_h3().await;
    let p = s
        .browser()
        .get(&format!("https://{APP_HOST}:{}/", s.edge_port(0)))
        .await;
    assert_eq!(p.status, 302);
    assert_eq!(alt_svc(&s, "/").await, None, "nothing to advertise");
}
