//! Request heads as a client sends them, through the edge's framing checks and path
//! normalisation: never a panic, and a path that normalises is stable (normalising it again
//! changes nothing) and never climbs above the root or keeps a dot segment.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_policy::path::{SemicolonParameters, normalize_with};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("");
    let mut parts = first.split(' ');
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return;
    };
    let mut b = http::Request::builder();
    if let Ok(m) = http::Method::from_bytes(method.as_bytes()) {
        b = b.method(m);
    }
    if let Ok(u) = http::Uri::try_from(target) {
        b = b.uri(u);
    }
    for l in lines {
        if let Some((k, v)) = l.split_once(':')
            && let (Ok(k), Ok(v)) = (
                http::HeaderName::from_bytes(k.trim().as_bytes()),
                http::HeaderValue::from_str(v.trim()),
            )
        {
            b = b.header(k, v);
        }
    }
    let Ok(req) = b.body(()) else {
        return;
    };
    let _ = palisade_node::http::framing_problem(&req);
    let _ = palisade_node::http::authority(&req);
    for mode in [SemicolonParameters::Refuse, SemicolonParameters::Strip] {
        if let Ok(p) = normalize_with(req.uri().path(), mode) {
            assert!(p.starts_with('/'));
            assert!(!p.split('/').any(|s| s == ".." || s == "."), "{p}");
            assert!(!p.contains(';'), "{p}");
            assert_eq!(normalize_with(&p, mode).as_deref(), Ok(p.as_str()));
        }
    }
});
