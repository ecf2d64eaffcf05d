//! One error type for the edge's own pages and endpoints, and the one place that turns it into
//! a response: a page for browsers, JSON for the WebAuthn script. Handlers return
//! `Result<Response<Body>, EdgeError>`; nothing else picks a page for a refusal. Texts are
//! written for users and never carry internals (the request id links to the log line).

use std::borrow::Cow;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use serde_json::json;

use crate::pages;
use crate::proxy::{Body, full};

/// How a refusal is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// An HTML page.
    Html,
    /// `{"error": "..."}`.
    Json,
}

/// Why one of the edge's own pages or endpoints refused a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EdgeError {
    /// The request is malformed or not acceptable here.
    BadRequest(Cow<'static, str>),
    /// No such Palisade page.
    NotFound,
    /// No application is served at this host and path.
    NoApplication,
    /// The page does not answer this method.
    MethodNotAllowed(&'static str),
    /// The form or JSON body is larger than the edge reads.
    TooLarge,
    /// A state-changing request from another origin.
    CrossSite,
    /// A state-changing request without the session's anti-CSRF token.
    Csrf,
    /// Too many requests from this client or user.
    RateLimited(Duration),
    /// The edge has no configuration yet.
    Starting,
    /// Anything else, with its status, page title and text.
    Refused {
        /// The status.
        status: StatusCode,
        /// The page title.
        title: &'static str,
        /// What happened and what to do, for the user.
        text: Cow<'static, str>,
    },
}

impl EdgeError {
    /// A refusal with its own status, title and text.
    pub(crate) fn refused(
        status: StatusCode,
        title: &'static str,
        text: impl Into<Cow<'static, str>>,
    ) -> EdgeError {
        EdgeError::Refused {
            status,
            title,
            text: text.into(),
        }
    }

    /// The status, page title and text.
    fn parts(&self) -> (StatusCode, &'static str, Cow<'_, str>) {
        use EdgeError as E;
        let s = |t: &'static str| Cow::Borrowed(t);
        match self {
            E::BadRequest(t) => (StatusCode::BAD_REQUEST, "Bad request", Cow::Borrowed(t)),
            E::NotFound => (
                StatusCode::NOT_FOUND,
                "Not found",
                s("there is no such Palisade page"),
            ),
            E::NoApplication => (
                StatusCode::NOT_FOUND,
                "Not found",
                s("no application is served at this address"),
            ),
            E::MethodNotAllowed(t) => (StatusCode::METHOD_NOT_ALLOWED, "Not allowed", s(t)),
            E::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Too large",
                s("the form is too large"),
            ),
            E::CrossSite => (
                StatusCode::FORBIDDEN,
                "Refused",
                s("this request came from another site"),
            ),
            E::Csrf => (
                StatusCode::FORBIDDEN,
                "Refused",
                s(
                    "this form expired or did not come from this page; go back, reload and try again",
                ),
            ),
            E::RateLimited(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                "Slow down",
                s("too many requests; try again in a moment"),
            ),
            E::Starting => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Starting up",
                s("this edge has not received its configuration yet; try again in a moment"),
            ),
            E::Refused {
                status,
                title,
                text,
            } => (*status, title, Cow::Borrowed(text)),
        }
    }

    /// The response: the only place a refusal becomes a page or a JSON error.
    pub(crate) fn into_response(self, format: Format, rid: &str) -> Response<Body> {
        let (status, title, text) = self.parts();
        let mut r = match format {
            Format::Html => pages::message(status, title, &text, rid),
            Format::Json => {
                let mut r = Response::new(full(json!({ "error": text }).to_string()));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                r.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                r
            }
        };
        if let EdgeError::RateLimited(wait) = self
            && let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string())
        {
            r.headers_mut().insert(header::RETRY_AFTER, v);
        }
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_picks_page_or_json() {
        let page = EdgeError::TooLarge.into_response(Format::Html, "rid-1");
        assert_eq!(page.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert!(
            page.headers()[header::CONTENT_TYPE]
                .to_str()
                .is_ok_and(|v| v.starts_with("text/html"))
        );
        let json = EdgeError::Csrf.into_response(Format::Json, "rid-1");
        assert_eq!(json.status(), StatusCode::FORBIDDEN);
        assert_eq!(json.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn rate_limits_say_when_to_retry() {
        let r = EdgeError::RateLimited(Duration::from_millis(200)).into_response(Format::Html, "r");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
    }
}
