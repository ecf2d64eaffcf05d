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
//! off and stops the advertisement. Frames written by hand on raw QUIC streams (malformed
//! frames, heads h3 would misread, a HEADERS frame claiming a gigabyte) get RFC 9114's error
//! codes.

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
    // h3 0.0.8 would read a repeated `:path` as its last value; the edge refuses the request
    // before h3 reads it (RFC 9114 4.3: malformed), resetting the stream with H3_MESSAGE_ERROR.
    let a = &aioquic(
        &s.ca,
        h3_addr,
        APP_HOST,
        &json!([{"pseudo": twice, "cookie": cookie}]),
    )[0];
    assert_eq!(a["reset"], 0x10e, "{a}");
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

/// HTTP/3 written by hand on a raw QUIC connection, for what no HTTP/3 client library sends.
mod raw {
    use std::net::SocketAddr;
    use std::time::Duration;

    use palisade_node::h3::head::encode::{Line, frame, section, varint};

    pub const DATA: u64 = 0x0;
    pub const HEADERS: u64 = 0x1;
    pub const H2_PRIORITY: u64 = 0x2;
    pub const SETTINGS: u64 = 0x4;
    /// A reserved (GREASE) frame type, which a receiver must ignore.
    pub const GREASE: u64 = 0x1f * 7 + 0x21;

    pub const H3_FRAME_UNEXPECTED: u64 = 0x105;
    pub const H3_FRAME_ERROR: u64 = 0x106;
    pub const H3_EXCESSIVE_LOAD: u64 = 0x107;
    pub const H3_MISSING_SETTINGS: u64 = 0x10a;
    pub const H3_MESSAGE_ERROR: u64 = 0x10e;
    pub const QPACK_DECOMPRESSION_FAILED: u64 = 0x200;

    /// How a request stream ended.
    #[derive(Debug, PartialEq)]
    pub enum Outcome {
        /// The stream ended cleanly without an answer.
        Nothing,
        /// An answer with this status.
        Status(u16),
        /// The edge reset the stream with this code.
        Reset(u64),
        /// The edge closed the whole connection with this code.
        Closed(u64),
    }

    pub struct Conn {
        pub conn: quinn::Connection,
        _endpoint: quinn::Endpoint,
        _control: quinn::SendStream,
    }

    /// A QUIC connection with the client's control stream opened; `settings` is what that
    /// stream carries first (a well-behaved client sends an empty SETTINGS frame).
    pub async fn connect(ca: &str, addr: SocketAddr, host: &str, settings: &[u8]) -> Conn {
        let (endpoint, conn) = palisade_chaos::h3client::quic(ca, addr, host, None)
            .await
            .expect("QUIC connection");
        let mut control = conn.open_uni().await.expect("control stream");
        let mut first = vec![0x00];
        first.extend_from_slice(settings);
        control.write_all(&first).await.expect("control stream");
        Conn {
            conn,
            _endpoint: endpoint,
            _control: control,
        }
    }

    pub fn settings() -> Vec<u8> {
        frame(SETTINGS, &[])
    }

    /// A request head: a GET of `path` for `authority`, with `extra` lines after the four
    /// pseudo-headers.
    pub fn get(authority: &[u8], path: &[u8], extra: &[(Line, &[u8], &[u8])]) -> Vec<u8> {
        let mut lines: Vec<(Line, &[u8], &[u8])> = vec![
            (Line::Indexed(17), b":method", b"GET"),
            (Line::Indexed(23), b":scheme", b"https"),
            (Line::NameRef(0), b":authority", authority),
            (Line::NameRef(1), b":path", path),
        ];
        lines.extend_from_slice(extra);
        frame(HEADERS, &section(&lines))
    }

    /// A HEADERS frame header claiming `len` bytes.
    pub fn claim(len: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(&mut out, HEADERS);
        varint(&mut out, len);
        out
    }

    impl Conn {
        /// The application error code the edge closes the connection with (within 10 s).
        pub async fn closed(&self) -> u64 {
            let closed = tokio::time::timeout(Duration::from_secs(10), self.conn.closed())
                .await
                .expect("closed within 10 s");
            match closed {
                quinn::ConnectionError::ApplicationClosed(e) => e.error_code.into_inner(),
                other => panic!("closed otherwise: {other}"),
            }
        }

        /// Sends `bytes` on a new request stream (then its end, if `finish`), and says how the
        /// stream, or the connection, ended.
        pub async fn request(&self, bytes: &[u8], finish: bool) -> Outcome {
            let (mut send, mut recv) = self.conn.open_bi().await.expect("request stream");
            // the edge may refuse before it has read it all: a write error is not the outcome
            let _ = send.write_all(bytes).await;
            if finish {
                let _ = send.finish();
            }
            let read = tokio::time::timeout(Duration::from_secs(10), recv.read_to_end(1 << 20));
            match read.await.expect("an answer within 10 s") {
                Ok(answer) if answer.is_empty() => Outcome::Nothing,
                Ok(answer) => Outcome::Status(status(&answer)),
                Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(code))) => {
                    Outcome::Reset(code.into_inner())
                }
                Err(quinn::ReadToEndError::Read(quinn::ReadError::ConnectionLost(
                    quinn::ConnectionError::ApplicationClosed(c),
                ))) => Outcome::Closed(c.error_code.into_inner()),
                Err(e) => panic!("the stream ended otherwise: {e}"),
            }
        }
    }

    /// The status of a raw answer: its first frame is HEADERS, whose first line is `:status`
    /// (an indexed static entry, or a static name with a plain literal value).
    fn status(answer: &[u8]) -> u16 {
        let statuses: [(u8, u16); 14] = [
            (24, 103),
            (25, 200),
            (26, 304),
            (27, 404),
            (28, 503),
            (63, 100),
            (64, 204),
            (65, 206),
            (66, 302),
            (67, 400),
            (68, 403),
            (69, 421),
            (70, 425),
            (71, 500),
        ];
        assert_eq!(answer.first(), Some(&(HEADERS as u8)), "{answer:?}");
        // type, a length up to 16383, the section prefix (two zero bytes)
        let len_bytes = if answer[1] & 0x40 != 0 { 2 } else { 1 };
        let line = &answer[1 + len_bytes + 2..];
        match line[0] {
            b if b & 0xc0 == 0xc0 => {
                // a 6-bit prefix: 63 and above take a second byte
                let i = match b & 0x3f {
                    63 => 63 + line[1],
                    i => i,
                };
                statuses
                    .iter()
                    .find(|(e, _)| *e == i)
                    .map(|(_, s)| *s)
                    .unwrap_or_else(|| panic!("entry {i}"))
            }
            // `01N1 1111` 24-15 = 9: `:status` by name, then a plain value
            0x5f if line[1] == 9 && line[2] == 3 => std::str::from_utf8(&line[3..6])
                .expect("digits")
                .parse()
                .expect("a status"),
            _ => panic!("an answer this reader does not know: {answer:?}"),
        }
    }
}

/// What no HTTP/3 library sends, written by hand on raw QUIC streams: malformed frames on
/// request and control streams, heads h3 would misread or buffer without end. Each gets a
/// clear error (the stream reset or the connection closed, with RFC 9114's code), and the edge
/// keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_written_frames_get_clear_errors() {
    use palisade_node::h3::head::encode::{Line, frame};
    use raw::Outcome::{Closed, Nothing, Reset, Status};
    use raw::*;

    let s = Stack::start().await;
    s.accept_h3().await;
    let addr = s.cluster.edges[0].h3().expect("h3");
    let authority = format!("{APP_HOST}:{}", addr.port());
    let a = authority.as_bytes();
    let jwks = b"/.well-known/palisade/jwks.json";
    let c = connect(&s.ca, addr, APP_HOST, &settings()).await;

    // Well formed, with GREASE frames before the HEADERS frame, and its name Huffman-coded:
    // the head check reads past them and passes it on.
    let mut ok = frame(GREASE, b"ignore me");
    ok.extend(frame(GREASE, b""));
    ok.extend(get(a, jwks, &[(Line::HuffmanName, b"x-trace", b"1")]));
    assert_eq!(c.request(&ok, true).await, Status(200));

    // Heads h3 would read one way and RFC 9114 4.3 calls malformed: the stream is reset with
    // H3_MESSAGE_ERROR, and the connection serves on.
    let malformed: [(&str, Vec<u8>); 5] = [
        (
            "a second :path, its name Huffman-coded",
            get(a, jwks, &[(Line::HuffmanName, b":path", b"/admin")]),
        ),
        (
            "a second :path by static name",
            get(a, jwks, &[(Line::NameRef(1), b":path", b"/admin")]),
        ),
        (
            ":status in a request",
            get(a, jwks, &[(Line::Indexed(25), b":status", b"200")]),
        ),
        (
            "a pseudo-header after a regular field",
            get(
                a,
                jwks,
                &[
                    (Line::Literal, b"x-trace", b"1"),
                    (Line::Literal, b":protocol", b"websocket"),
                ],
            ),
        ),
        (
            "an uppercase name",
            get(a, jwks, &[(Line::Literal, b"X-Trace", b"1")]),
        ),
    ];
    for (what, head) in &malformed {
        assert_eq!(
            c.request(head, true).await,
            Reset(H3_MESSAGE_ERROR),
            "{what}"
        );
    }
    assert_eq!(c.request(&ok, true).await, Status(200), "still serving");

    // A HEADERS frame claiming a gigabyte: refused once the claim is read, with
    // H3_EXCESSIVE_LOAD, not buffered while it arrives.
    let mut huge = claim(1 << 30);
    huge.extend(vec![0u8; 64 * 1024]);
    assert_eq!(c.request(&huge, false).await, Reset(H3_EXCESSIVE_LOAD));
    // GREASE frames piling up before any HEADERS frame count against the same limit.
    let mut pile = Vec::new();
    while pile.len() < 400 * 1024 {
        pile.extend(frame(GREASE, &[0u8; 1000]));
    }
    assert_eq!(c.request(&pile, false).await, Reset(H3_EXCESSIVE_LOAD));
    assert_eq!(c.request(&ok, true).await, Status(200), "still serving");

    // Frames that break HTTP/3 itself: h3 closes the connection with RFC 9114's code. Each on
    // a connection of its own.
    let broken: [(&str, Vec<u8>, u64); 4] = [
        (
            "DATA before HEADERS",
            frame(DATA, b"hello"),
            H3_FRAME_UNEXPECTED,
        ),
        (
            "HTTP/2's PRIORITY frame",
            frame(H2_PRIORITY, b"\x00"),
            H3_FRAME_UNEXPECTED,
        ),
        (
            "a field section naming the dynamic table",
            frame(HEADERS, &[0x02, 0x00, 0x80]),
            QPACK_DECOMPRESSION_FAILED,
        ),
        (
            "a HEADERS frame cut short by the stream's end",
            {
                let mut cut = claim(100);
                cut.extend([0u8; 10]);
                cut
            },
            H3_FRAME_ERROR,
        ),
    ];
    for (what, bytes, code) in &broken {
        let c = connect(&s.ca, addr, APP_HOST, &settings()).await;
        // the request stream may end before the connection's close arrives
        let stream = c.request(bytes, true).await;
        assert!(matches!(stream, Closed(_) | Nothing), "{what}: {stream:?}");
        assert_eq!(c.closed().await, *code, "{what}");
    }

    // A control stream that does not begin with SETTINGS.
    let c = connect(&s.ca, addr, APP_HOST, &frame(DATA, b"x")).await;
    assert_eq!(c.closed().await, H3_MISSING_SETTINGS);

    // After all of that, the edge serves a new connection.
    let c = connect(&s.ca, addr, APP_HOST, &settings()).await;
    assert_eq!(c.request(&ok, true).await, Status(200));
}
