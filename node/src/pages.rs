//! Server-rendered pages the edge shows users: sign-in choices, denials, errors, sign-out. Plain
//! HTML with inline CSS, no external assets. Everything interpolated is escaped, and nothing
//! internal (upstream addresses, stack traces, provider errors) is ever shown: a request id
//! links the page to the edge's log line instead.

use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use http::{Response, StatusCode};

use crate::proxy::{Body, full};

/// Escapes text for HTML bodies and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;background:#f4f5f7;color:#1d2433;margin:0}\
main{max-width:34rem;margin:8vh auto;background:#fff;border-radius:10px;box-shadow:0 2px 12px #0002;padding:2rem 2.2rem}\
h1{font-size:1.35rem;margin:0 0 1rem}p{line-height:1.5}.muted{color:#667085;font-size:.85rem}\
ul{padding-left:1.2rem}a.button,button{display:inline-block;background:#2f5bea;color:#fff;border:0;border-radius:6px;padding:.6rem 1rem;text-decoration:none;font-size:1rem;cursor:pointer;margin:.25rem 0}\
code{background:#f0f1f4;padding:.1rem .3rem;border-radius:4px}.brand{font-weight:600;color:#2f5bea;letter-spacing:.02em;margin-bottom:1.2rem}\
h2{font-size:1.05rem;margin:1.6rem 0 .6rem}table{border-collapse:collapse;width:100%;font-size:.9rem}td,th{text-align:left;padding:.35rem .3rem;border-bottom:1px solid #e6e8ec;vertical-align:middle}\
input{font-size:1rem;padding:.45rem .5rem;border:1px solid #c8ccd4;border-radius:6px;margin:.2rem 0}label{display:inline-block;margin:.3rem 0}\
[hidden]{display:none!important}form.inline{display:inline}button.small{font-size:.8rem;padding:.3rem .55rem}button.danger{background:#c4314b}\
.error{color:#b42318;background:#fef3f2;border-radius:6px;padding:.5rem .7rem}.ok{color:#05603a;background:#ecfdf3;border-radius:6px;padding:.5rem .7rem}.qr{margin:1rem 0}";

/// A complete page. `body_html` must already be escaped.
pub fn page(status: StatusCode, title: &str, body_html: &str, request_id: &str) -> Response<Body> {
    render(status, title, body_html, request_id, None)
}

/// A page that runs the edge's own WebAuthn script (`/.palisade/webauthn.js`, same origin);
/// `csrf` is the session's anti-CSRF token the script sends with each call.
pub fn interactive(
    status: StatusCode,
    title: &str,
    body_html: &str,
    csrf: &str,
    request_id: &str,
) -> Response<Body> {
    render(status, title, body_html, request_id, Some(csrf))
}

fn render(
    status: StatusCode,
    title: &str,
    body_html: &str,
    request_id: &str,
    script_csrf: Option<&str>,
) -> Response<Body> {
    let (body_attr, script) = match script_csrf {
        Some(csrf) => (
            format!(" data-csrf=\"{}\"", escape(csrf)),
            "<script src=\"/.palisade/webauthn.js\" defer></script>",
        ),
        None => (String::new(), ""),
    };
    let html = format!(
        "<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\">\
<title>{t}</title><style>{STYLE}</style>{script}</head><body{body_attr}><main><div class=brand>Palisade</div><h1>{t}</h1>{body_html}\
<p class=muted>Request id: <code>{rid}</code></p></main></body></html>",
        t = escape(title),
        rid = escape(request_id),
    );
    let mut r = Response::new(full(html));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(if script_csrf.is_some() {
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; script-src 'self'; connect-src 'self'"
        } else {
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'"
        }),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        "x-request-id",
        HeaderValue::from_str(request_id).unwrap_or(HeaderValue::from_static("-")),
    );
    r
}

/// A short message page.
pub fn message(status: StatusCode, title: &str, text: &str, request_id: &str) -> Response<Body> {
    page(
        status,
        title,
        &format!("<p>{}</p>", escape(text)),
        request_id,
    )
}

/// The access-denied page: which application, which rule decided, what the caller's device is
/// missing.
pub fn denied(
    app: &str,
    rule: Option<&str>,
    explanation: &str,
    missing: &[String],
    request_id: &str,
) -> Response<Body> {
    let mut body = format!(
        "<p>You do not have access to <strong>{}</strong>.</p>",
        escape(app)
    );
    match rule {
        Some(r) => body.push_str(&format!(
            "<p>Decided by rule <code>{}</code>: {}</p>",
            escape(r),
            escape(explanation)
        )),
        None => body.push_str(&format!("<p>{}</p>", escape(explanation))),
    }
    if !missing.is_empty() {
        body.push_str("<p>What your device is missing:</p><ul>");
        for m in missing {
            body.push_str(&format!("<li>{}</li>", escape(m)));
        }
        body.push_str("</ul>");
    }
    body.push_str("<p class=muted>If you think you should have access, send the request id below to your administrator.</p>");
    page(StatusCode::FORBIDDEN, "Access denied", &body, request_id)
}

/// The sign-in choice when an application accepts several identity providers.
pub fn choose_provider(
    app: &str,
    providers: &[(String, String)],
    return_to: &str,
    request_id: &str,
) -> Response<Body> {
    let mut body = format!(
        "<p>Sign in to continue to <strong>{}</strong>.</p>",
        escape(app)
    );
    for (id, name) in providers {
        let href = format!(
            "/.palisade/login?idp={}&rd={}",
            url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>(),
            url::form_urlencoded::byte_serialize(return_to.as_bytes()).collect::<String>()
        );
        body.push_str(&format!(
            "<p><a class=button href=\"{}\">Sign in with {}</a></p>",
            escape(&href),
            escape(name)
        ));
    }
    page(StatusCode::UNAUTHORIZED, "Sign in", &body, request_id)
}
