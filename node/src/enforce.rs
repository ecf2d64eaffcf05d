//! The access decision for one request, from what arrived and the replica's view, and the same
//! decision re-taken for as long as a connection it allowed stays open.
//!
//! `caller` reads the session and MFA tokens (verified with the catalog's keys, checked
//! against revocations and factors), `decide_request` routes the host and path and runs
//! `decide()`. `Watch` keeps re-deciding a WebSocket or a streaming response on every replica
//! change and on a one-second tick: when the answer is no longer "allow" (a policy change, a
//! revoked session, user or factor, an expired or idle session, a view gone stale for a
//! fail-closed application) the connection is cut. Nothing here does I/O beyond reading the
//! replica.

use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use palisade_policy::decide::Decision;
use palisade_policy::document::Protocol;
use palisade_policy::request::{Context, Identity, MfaProof, SessionTimes};
use palisade_policy::token::SessionClaims;
use tokio_stream::Stream;
use tokio_stream::wrappers::WatchStream;

use crate::proxy::{Body, BoxError};
use crate::replica::View;
use crate::sync::Replica;

/// An authenticated caller, after every check.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) session: SessionClaims,
    pub(crate) identity: Identity,
    /// The MFA assertion token as presented, when it verified.
    pub(crate) mfa_token: Option<String>,
}

/// What the decision of one request depends on, as it arrived.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    /// Lowercase host, no port.
    pub(crate) host: String,
    /// Normalised path.
    pub(crate) path: String,
    /// The client's address.
    pub(crate) peer: IpAddr,
    /// The session cookie, if sent.
    pub(crate) session: Option<String>,
    /// The MFA assertion cookie, if sent.
    pub(crate) mfa: Option<String>,
}

/// Reads and checks the session and MFA tokens. Returns the caller (if any) and whether a
/// session token was presented but is unusable (so the response clears the cookie).
pub(crate) fn caller(
    view: &View,
    session_token: Option<&str>,
    mfa_token: Option<&str>,
    host: &str,
    now: i64,
    active_since: i64,
) -> (Option<Caller>, bool) {
    let Some(token) = session_token else {
        return (None, false);
    };
    let session = match view.keyring.verify_session_active(token, now, active_since) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "session cookie refused");
            return (None, true);
        }
    };
    if session.aud != host {
        tracing::debug!("session cookie issued for another host");
        return (None, true);
    }
    if view.revocations.session_revoked(
        &session.sid,
        &session.idp,
        &session.sub,
        session.iat,
        session.rev,
    ) {
        tracing::debug!("session revoked");
        return (None, true);
    }
    // An assertion counts only while its factor exists, is usable and is not revoked:
    // removing or revoking a factor ends the assertions issued with it.
    let mut presented = None;
    let mfa = mfa_token
        .and_then(|t| {
            let m = view.keyring.verify_mfa(t, &session.sid, now).ok()?;
            presented = Some(t.to_string());
            Some(m)
        })
        .filter(|m| {
            m.sub == session.sub
                && !view.revocations.factor_revoked(&m.factor_id)
                && view.factors.get(&m.factor_id).is_some_and(|f| {
                    !f.pending && f.subject == session.sub && f.identity_provider == session.idp
                })
        })
        .and_then(|m| {
            Some(MfaProof {
                method: m.method,
                factor_id: m.factor_id,
                authenticated_at: jiff::Timestamp::from_second(m.auth_time).ok()?,
                user_verified: m.uv,
            })
        });
    if mfa.is_none() {
        presented = None;
    }
    let times = jiff::Timestamp::from_second(session.iat)
        .ok()
        .zip(jiff::Timestamp::from_second(session.last_active).ok())
        .map(|(issued_at, last_active)| SessionTimes {
            issued_at,
            last_active,
        });
    let identity = Identity {
        provider: session.idp.clone(),
        subject: session.sub.clone(),
        email: session.email.clone(),
        groups: session.groups.clone(),
        claims: session.claims.clone(),
        mfa,
        session: times,
    };
    (
        Some(Caller {
            session,
            identity,
            mfa_token: presented,
        }),
        false,
    )
}

/// The decision for `head` against `view`, the caller it was taken for, and whether the
/// session cookie must be cleared. `None` when no application is served at the address (or
/// the path is ambiguous; the request path refuses those before it gets here).
pub(crate) fn decide_request(
    view: &View,
    staleness: Duration,
    head: &Head,
    protocol: Protocol,
    now: i64,
    active_since: i64,
) -> Option<(Decision, Option<Caller>, bool)> {
    let (_, policy) = view.policy.as_ref()?;
    let app = policy.route_request(&head.host, &head.path).ok()??;
    let (caller, clear) = caller(
        view,
        head.session.as_deref(),
        head.mfa.as_deref(),
        &head.host,
        now,
        active_since,
    );
    let ctx = Context {
        source_ip: head.peer,
        protocol,
        view_age: staleness,
    };
    let at = jiff::Timestamp::from_second(now).unwrap_or_else(|_| jiff::Timestamp::now());
    let d = palisade_policy::decide(app, caller.as_ref().map(|c| &c.identity), None, &ctx, at);
    Some((d, caller, clear))
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
        let Some(view) = self.replica.view() else {
            return false;
        };
        let now = crate::gateway::now_secs();
        // The connection itself is activity: the idle timeout counts from when it opened (or
        // from the cookie's last activity, if later).
        match decide_request(
            &view,
            self.replica.staleness(),
            &self.head,
            Protocol::Http,
            now,
            self.opened,
        ) {
            Some((Decision::Allow { .. }, Some(c), _)) => {
                self.sid.as_deref() == Some(c.session.sid.as_str())
            }
            Some((Decision::Bypass { .. }, _, _)) => true,
            _ => false,
        }
    }

    /// Copies an upgraded connection (WebSocket) until either side closes or the answer is no
    /// longer "allow".
    pub(crate) async fn splice(
        self,
        client: hyper::upgrade::OnUpgrade,
        upstream: hyper::upgrade::OnUpgrade,
    ) {
        let mut applied = self.replica.watch();
        let splice = crate::proxy::splice(client, upstream);
        tokio::pin!(splice);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = &mut splice => return,
                changed = applied.changed() => {
                    if changed.is_err() || !self.still_allowed() {
                        tracing::info!(host = %self.head.host, "closing an upgraded connection: access ended");
                        return;
                    }
                }
                _ = tick.tick() => {
                    if !self.still_allowed() {
                        tracing::info!(host = %self.head.host, "closing an upgraded connection: access ended");
                        return;
                    }
                }
            }
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
