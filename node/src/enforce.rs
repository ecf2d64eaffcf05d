//! The HTTP adapter's side of enforcement: the request head the core decides on, and the same
//! verdict re-taken for as long as a connection it allowed stays open.
//!
//! The decision itself is `palisade_edge_core::enforce` (pure: the view, the request, `now`).
//! `Watch` keeps re-deciding a WebSocket or a streaming response on every replica change and on
//! a one-second tick: when the answer is no longer "forward" (a policy change, a revoked
//! session, user or factor, an expired or idle session, a view gone stale for a fail-closed
//! application) the connection is cut. `Watch::watch_connection` is the one loop that does it
//! for anything that lasts (the WebSocket splice now; HTTP/3 request streams and tunnel flows
//! next); `Watch::body` is the same check inside a streaming response body.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use palisade_edge_core::device::DeviceCredential;
use palisade_edge_core::enforce::{Credentials, Request, Transport, still_allowed};
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;

use crate::proxy::{Body, BoxError};
use crate::sync::Replica;

/// What the decision of one request depends on, as it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    /// Lowercase host, no port.
    pub(crate) host: String,
    /// Normalised path.
    pub(crate) path: String,
    /// The request method.
    pub(crate) method: http::Method,
    /// The client's address.
    pub(crate) peer: IpAddr,
    /// How it arrived.
    pub(crate) transport: Transport,
    /// The session cookie, if sent.
    pub(crate) session: Option<String>,
    /// The MFA assertion cookie, if sent.
    pub(crate) mfa: Option<String>,
    /// The device certificate the connection presented, if any.
    pub(crate) device: Option<Arc<palisade_link::device::PresentedDevice>>,
}

impl Head {
    /// The core's view of this head; `active_since` counts as the session's activity.
    pub(crate) fn request(&self, active_since: i64) -> Request<'_> {
        Request {
            host: &self.host,
            path: &self.path,
            method: self.method.as_str(),
            peer: self.peer,
            transport: self.transport,
            credentials: Credentials {
                session: self.session.as_deref(),
                mfa: self.mfa.as_deref(),
                device: self.device.as_deref().map(|d| DeviceCredential {
                    id: &d.id,
                    fingerprint: &d.fingerprint,
                }),
            },
            active_since,
        }
    }
}

/// Re-takes the decision of a request that was allowed, for as long as what it opened lasts.
#[derive(Debug, Clone)]
pub(crate) struct Watch {
    replica: Arc<Replica>,
    head: Head,
    /// Who was let in (`None` for a bypass): the answer must stay about the same session.
    sid: Option<String>,
    /// When the connection opened: it counts as the session's last activity.
    opened: i64,
}

impl Watch {
    /// A watch over `head`, allowed at `now` for the session `sid`.
    pub(crate) fn new(replica: Arc<Replica>, head: Head, sid: Option<String>, now: i64) -> Watch {
        Watch {
            replica,
            head,
            sid,
            opened: now,
        }
    }

    /// Whether the request would still be let through now.
    pub(crate) fn still_allowed(&self) -> bool {
        let view = self.replica.view();
        // The connection itself is activity: the idle timeout counts from when it opened (or
        // from the cookie's last activity, if later).
        still_allowed(
            view.as_deref(),
            &self.head.request(self.opened),
            self.sid.as_deref(),
            self.replica.staleness(),
            crate::http::now_secs(),
        )
    }

    /// Runs `work` (whatever the allowed request opened: a WebSocket splice today, an HTTP/3
    /// stream or a tunnel flow next) for as long as the answer stays "allow": the decision is
    /// re-taken on every replica change and every second. Returns `work`'s output, or `None`
    /// when access ended first (then `work` is dropped, which closes what it held).
    pub(crate) async fn watch_connection<F: Future>(&self, work: F) -> Option<F::Output> {
        let mut applied = self.replica.watch();
        tokio::pin!(work);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                changed = applied.changed() => {
                    if changed.is_err() || !self.still_allowed() {
                        return None;
                    }
                }
                _ = tick.tick() => {
                    if !self.still_allowed() {
                        return None;
                    }
                }
            }
        }
    }

    /// Copies an upgraded connection (WebSocket) until either side closes or the answer is no
    /// longer "allow".
    pub(crate) async fn splice(
        self,
        client: hyper::upgrade::OnUpgrade,
        upstream: hyper::upgrade::OnUpgrade,
    ) {
        let splice = crate::proxy::splice(client, upstream);
        if self.watch_connection(splice).await.is_none() {
            tracing::info!(host = %self.head.host, "closing an upgraded connection: access ended");
        }
    }

    /// `body`, cut (ended with an error, which closes the stream) once the answer is no longer
    /// "allow".
    pub(crate) fn body(self, body: Body) -> Body {
        let changes = WatchStream::from_changes(self.replica.watch());
        WatchedBody {
            inner: body,
            changes,
            tick: Box::pin(tokio::time::sleep(Duration::from_secs(1))),
            watch: self,
            cut: false,
        }
        .boxed_unsync()
    }
}

/// A response body that ends when access ends.
struct WatchedBody {
    inner: Body,
    changes: WatchStream<u64>,
    tick: Pin<Box<tokio::time::Sleep>>,
    watch: Watch,
    cut: bool,
}

/// Why a watched response ended early.
#[derive(Debug, thiserror::Error)]
#[error("access ended while the response was streaming")]
pub(crate) struct AccessEnded;

impl hyper::body::Body for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.cut {
            return Poll::Ready(None);
        }
        let mut recheck = false;
        loop {
            match Pin::new(&mut self.changes).poll_next(cx) {
                Poll::Ready(Some(_)) => recheck = true,
                Poll::Ready(None) => {
                    recheck = true;
                    break;
                }
                Poll::Pending => break,
            }
        }
        if self.tick.as_mut().poll(cx).is_ready() {
            recheck = true;
            let next = tokio::time::Instant::now() + Duration::from_secs(1);
            self.tick.as_mut().reset(next);
            let _ = self.tick.as_mut().poll(cx);
        }
        if recheck && !self.watch.still_allowed() {
            self.cut = true;
            tracing::info!(host = %self.watch.head.host, "cutting a streaming response: access ended");
            return Poll::Ready(Some(Err(Box::new(AccessEnded))));
        }
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future;
