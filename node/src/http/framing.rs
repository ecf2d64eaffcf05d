//! What the HTTP adapter checks and reads before anything is decided: framing that two
//! servers could read differently, the authority the client addressed, query parameters,
//! return paths, and bounded form bodies. Generic over the body type, so the HTTP/3 adapter
//! (which gets `http::Request<()>` from h3) uses the same checks.

use std::collections::BTreeMap;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;

use crate::proxy::{Body, full};

/// Largest form or JSON body the edge's own endpoints read.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Reasons a request is refused before any application is involved.
pub fn framing_problem<B>(req: &Request<B>) -> Option<&'static str> {
    let h = req.headers();
    let cl = h.get_all(header::CONTENT_LENGTH).iter().count();
    if cl > 1
        || h.get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains(','))
    {
        return Some("the request carries more than one Content-Length");
    }
    if h.contains_key(header::TRANSFER_ENCODING) && cl > 0 {
        return Some("the request carries both Transfer-Encoding and Content-Length");
    }
    if h.get_all(header::HOST).iter().count() > 1 {
        return Some("the request carries more than one Host");
    }
    // HTTP/2 and HTTP/3 carry the authority as a pseudo-header (and HTTP/1.1 in an
    // absolute-form target): a Host that names another is two answers to one question.
    if let (Some(a), Some(host)) = (req.uri().authority(), h.get(header::HOST)) {
        let default = if req.uri().scheme_str() == Some("http") {
            80
        } else {
            443
        };
        let same = host
            .to_str()
            .ok()
            .and_then(|v| v.parse::<http::uri::Authority>().ok())
            .is_some_and(|h| {
                h.host().eq_ignore_ascii_case(a.host())
                    && h.port_u16().unwrap_or(default) == a.port_u16().unwrap_or(default)
            });
        if !same {
            return Some("the request's :authority and Host name different hosts");
        }
    }
    None
}

/// The authority the client addressed (`host[:port]`) and the lowercase host without port.
pub fn authority<B>(req: &Request<B>) -> Option<(String, String)> {
    let raw = match req.uri().authority() {
        Some(a) => a.as_str().to_string(),
        None => req.headers().get(header::HOST)?.to_str().ok()?.to_string(),
    };
    let a: http::uri::Authority = raw.parse().ok()?;
    if a.as_str().contains('@') {
        return None;
    }
    let host = a.host().trim_end_matches('.').to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some((a.as_str().to_ascii_lowercase(), host))
}

pub(crate) fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// A return path is only ever a local absolute path: never `//evil`, `/\evil` or a URL.
pub(crate) fn safe_return_to(rd: &str) -> String {
    let ok = rd.starts_with('/')
        && !rd.starts_with("//")
        && !rd.starts_with("/\\")
        && !rd.chars().any(|c| c.is_control())
        && rd.len() <= 2048;
    if ok { rd.to_string() } else { "/".into() }
}

pub(crate) fn redirect(status: StatusCode, to: &str) -> Response<Body> {
    let mut r = Response::new(full(""));
    *r.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(to) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// Whether the client is a browser navigating (it gets pages and redirects, not 401s).
pub(crate) fn wants_html(req: &http::request::Parts) -> bool {
    matches!(req.method, Method::GET | Method::HEAD)
}

/// Reads a form or JSON body: at most `MAX_FORM_BYTES`, within ten seconds.
pub(crate) async fn read_body(mut body: Body) -> Option<Vec<u8>> {
    const BODY_SECS: u64 = 10;
    let read = async {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.ok()?.into_data() {
                if out.len() + data.len() > MAX_FORM_BYTES {
                    return None;
                }
                out.extend_from_slice(&data);
            }
        }
        Some(out)
    };
    tokio::time::timeout(Duration::from_secs(BODY_SECS), read)
        .await
        .ok()?
}

/// A form body's fields.
pub(crate) fn form(body: &[u8]) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// `s` encoded for a query string.
pub(crate) fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderName;

    use crate::cookie;

    #[test]
    fn return_paths_stay_local() {
        assert_eq!(safe_return_to("/a?b=1"), "/a?b=1");
        for bad in [
            "//evil.test/x",
            "/\\evil.test",
            "https://evil.test",
            "",
            "x",
            "/a\r\nSet-Cookie: x",
        ] {
            assert_eq!(safe_return_to(bad), "/", "{bad:?}");
        }
    }

    proptest::proptest! {
        /// Header handling never panics, whatever the client sends.
        #[test]
        fn header_handling_never_panics(
            headers in proptest::collection::vec(("[a-zA-Z0-9-]{1,20}", proptest::collection::vec(proptest::prelude::any::<u8>(), 0..60)), 0..12),
            host in ".{0,40}",
            path in "/.{0,60}",
        ) {
            let mut b = Request::builder().uri(
                http::Uri::try_from(path.as_str()).unwrap_or_else(|_| http::Uri::from_static("/")),
            );
            if let Ok(v) = HeaderValue::from_str(&host) {
                b = b.header(header::HOST, v);
            }
            let mut req = b.body(()).unwrap();
            for (k, v) in &headers {
                if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k.as_bytes()), HeaderValue::from_bytes(v)) {
                    req.headers_mut().append(k, v);
                }
            }
            let _ = framing_problem(&req);
            let _ = authority(&req);
            let _ = palisade_policy::path::normalize(req.uri().path());
            let fwd = crate::proxy::Forwarding {
                client_ip: "127.0.0.1".parse().unwrap(),
                authority: "a.test".into(),
                path_and_query: "/".into(),
                identity: Vec::new(),
                request_id: "r".into(),
                max_body: None,
            };
            let mut h = req.headers().clone();
            crate::proxy::prepare_request_headers(&mut h, &fwd, false);
            for k in h.keys() {
                proptest::prop_assert!(!k.as_str().starts_with("x-palisade-"), "{k} survived");
            }
            let _ = cookie::get(req.headers(), cookie::SESSION);
        }
    }

    #[test]
    fn framing_refuses_ambiguous_lengths() {
        let r = |hs: &[(&str, &str)]| {
            let mut b = Request::post("/");
            for (k, v) in hs {
                b = b.header(*k, *v);
            }
            framing_problem(&b.body(()).unwrap())
        };
        assert!(r(&[("content-length", "5")]).is_none());
        assert!(r(&[("transfer-encoding", "chunked")]).is_none());
        assert!(r(&[("content-length", "5"), ("transfer-encoding", "chunked")]).is_some());
        assert!(r(&[("content-length", "5"), ("content-length", "5")]).is_some());
        assert!(r(&[("content-length", "5, 5")]).is_some());
        assert!(r(&[("host", "a"), ("host", "b")]).is_some());
    }

    #[test]
    fn an_authority_and_a_host_must_agree() {
        let r = |uri: &str, host: Option<&str>| {
            let mut b = Request::get(uri);
            if let Some(h) = host {
                b = b.header("host", h);
            }
            framing_problem(&b.body(()).unwrap())
        };
        assert!(r("https://a.test:8443/x", None).is_none());
        assert!(r("https://a.test:8443/x", Some("a.test:8443")).is_none());
        assert!(r("https://a.test:8443/x", Some("A.Test:8443")).is_none());
        assert!(r("https://a.test:8443/x", Some("b.test:8443")).is_some());
        assert!(r("https://a.test:8443/x", Some("a.test")).is_some());
        assert!(r("/x", Some("b.test")).is_none());
        assert!(r("https://a.test/x", Some("a.test:443")).is_none());
        assert!(r("https://a.test/x", Some("a.test:8443")).is_some());
    }
}
