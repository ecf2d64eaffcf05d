//! h3's view of a quinn connection, with the head of every request stream checked
//! ([`head::scan`]) before h3 reads it. The bytes are held until the first HEADERS frame is
//! complete, then handed to h3 unchanged; after that the stream passes straight through.
//!
//! A malformed head resets the stream both ways with `H3_MESSAGE_ERROR`; a head longer than
//! the limit (h3 itself would buffer any length) with `H3_EXCESSIVE_LOAD`. Either way h3 sees
//! the stream fail and drops the request; the connection goes on.

use std::net::SocketAddr;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use h3::error::Code;
use h3::quic::{self, ConnectionErrorIncoming, StreamErrorIncoming, StreamId, WriteBuf};

use super::head::{self, Malformed, Scan};

/// A connection (or its stream opener) whose request streams are checked.
pub struct Checking<C> {
    inner: C,
    limit: usize,
    peer: SocketAddr,
}

impl Checking<h3_quinn::Connection> {
    /// `conn` for h3, with request heads up to `limit` bytes (encoded).
    pub fn new(conn: quinn::Connection, limit: usize) -> Self {
        let peer = conn.remote_address();
        Self {
            inner: h3_quinn::Connection::new(conn),
            limit,
            peer,
        }
    }
}

impl<B: Buf> quic::Connection<B> for Checking<h3_quinn::Connection> {
    type RecvStream = h3_quinn::RecvStream;
    type OpenStreams = Checking<h3_quinn::OpenStreams>;

    fn poll_accept_recv(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::RecvStream, ConnectionErrorIncoming>> {
        quic::Connection::<B>::poll_accept_recv(&mut self.inner, cx)
    }

    fn poll_accept_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, ConnectionErrorIncoming>> {
        let (limit, peer) = (self.limit, self.peer);
        quic::Connection::<B>::poll_accept_bidi(&mut self.inner, cx)
            .map_ok(|s| Checked::new(s, Head::reading(limit), peer))
    }

    fn opener(&self) -> Self::OpenStreams {
        Checking {
            inner: quic::Connection::<B>::opener(&self.inner),
            limit: self.limit,
            peer: self.peer,
        }
    }
}

impl<B, O> quic::OpenStreams<B> for Checking<O>
where
    B: Buf,
    O: quic::OpenStreams<B, BidiStream = h3_quinn::BidiStream<B>>,
{
    type BidiStream = Checked<h3_quinn::BidiStream<B>>;
    type SendStream = O::SendStream;

    fn poll_open_bidi(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::BidiStream, StreamErrorIncoming>> {
        // streams the edge opens carry no request to check
        let peer = self.peer;
        self.inner
            .poll_open_bidi(cx)
            .map_ok(|s| Checked::new(s, Head::Through, peer))
    }

    fn poll_open_send(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::SendStream, StreamErrorIncoming>> {
        self.inner.poll_open_send(cx)
    }

    fn close(&mut self, code: Code, reason: &[u8]) {
        self.inner.close(code, reason)
    }
}

/// A stream (or its receiving half) whose head is checked.
pub struct Checked<S> {
    inner: S,
    head: Head,
    peer: SocketAddr,
}

/// Where a stream's head check stands.
enum Head {
    /// Collecting the head: the bytes so far, where scanning resumes, the most to collect.
    Reading {
        buf: BytesMut,
        from: usize,
        limit: usize,
    },
    /// Checked: these bytes go to h3 first (`ended`: and then the stream's end).
    Passed { bytes: Bytes, ended: bool },
    /// Nothing to check: straight through.
    Through,
}

impl Head {
    fn reading(limit: usize) -> Self {
        Head::Reading {
            buf: BytesMut::new(),
            from: 0,
            limit,
        }
    }
}

/// Why a head was refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("malformed request: {0}")]
    Malformed(Malformed),
    #[error("the request head is longer than the limit")]
    TooLong,
}

impl Refused {
    fn code(&self) -> u64 {
        match self {
            Refused::Malformed(_) => Code::H3_MESSAGE_ERROR.value(),
            Refused::TooLong => Code::H3_EXCESSIVE_LOAD.value(),
        }
    }
}

/// What polling the head gives: data for h3, the stream's own error, or a refusal.
enum Polled {
    Data(Option<Bytes>),
    Failed(StreamErrorIncoming),
    Refused(Refused),
}

impl<S> Checked<S> {
    fn new(inner: S, head: Head, peer: SocketAddr) -> Self {
        Self { inner, head, peer }
    }

    fn poll_head(&mut self, cx: &mut Context<'_>) -> Poll<Polled>
    where
        S: quic::RecvStream,
    {
        loop {
            match &mut self.head {
                Head::Through => {
                    return Poll::Ready(match ready!(self.inner.poll_data(cx)) {
                        Ok(data) => Polled::Data(data.map(|mut d| d.copy_to_bytes(d.remaining()))),
                        Err(e) => Polled::Failed(e),
                    });
                }
                Head::Passed { bytes, ended } => {
                    let bytes = std::mem::take(bytes);
                    if *ended {
                        if bytes.is_empty() {
                            return Poll::Ready(Polled::Data(None));
                        }
                    } else {
                        self.head = Head::Through;
                    }
                    if !bytes.is_empty() {
                        return Poll::Ready(Polled::Data(Some(bytes)));
                    }
                }
                Head::Reading { buf, from, limit } => {
                    let chunk = match ready!(self.inner.poll_data(cx)) {
                        Ok(Some(chunk)) => chunk,
                        // the stream ended before its head did: h3 says what that is
                        Ok(None) => {
                            self.head = Head::Passed {
                                bytes: buf.split().freeze(),
                                ended: true,
                            };
                            continue;
                        }
                        Err(e) => return Poll::Ready(Polled::Failed(e)),
                    };
                    buf.put(chunk);
                    match head::scan(buf, *from, *limit) {
                        Scan::More { from: f } => *from = f,
                        Scan::Headers {
                            verdict: Ok(()), ..
                        }
                        | Scan::NotHeaders => {
                            self.head = Head::Passed {
                                bytes: buf.split().freeze(),
                                ended: false,
                            };
                        }
                        Scan::Headers {
                            verdict: Err(m), ..
                        } => return Poll::Ready(Polled::Refused(Refused::Malformed(m))),
                        Scan::TooLong => return Poll::Ready(Polled::Refused(Refused::TooLong)),
                    }
                }
            }
        }
    }

    /// The refusal, logged and turned into the error h3 sees; `reset` ends the stream both
    /// ways with the refusal's code.
    fn refuse(&mut self, why: Refused, reset: impl FnOnce(&mut S, u64)) -> StreamErrorIncoming {
        tracing::info!(client = %self.peer, reason = %why, "refused an HTTP/3 request stream");
        reset(&mut self.inner, why.code());
        self.head = Head::Passed {
            bytes: Bytes::new(),
            ended: true,
        };
        StreamErrorIncoming::Unknown(Box::new(why))
    }
}

fn data(polled: Polled) -> Result<Option<Bytes>, Result<StreamErrorIncoming, Refused>> {
    match polled {
        Polled::Data(d) => Ok(d),
        Polled::Failed(e) => Err(Ok(e)),
        Polled::Refused(r) => Err(Err(r)),
    }
}

impl<B: Buf> quic::RecvStream for Checked<h3_quinn::BidiStream<B>> {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        let polled = ready!(self.poll_head(cx));
        Poll::Ready(data(polled).map_err(|e| {
            e.unwrap_or_else(|why| {
                self.refuse(why, |s, code| {
                    quic::RecvStream::stop_sending(s, code);
                    quic::SendStream::<B>::reset(s, code);
                })
            })
        }))
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.inner.stop_sending(error_code)
    }

    fn recv_id(&self) -> StreamId {
        self.inner.recv_id()
    }
}

impl quic::RecvStream for Checked<h3_quinn::RecvStream> {
    type Buf = Bytes;

    fn poll_data(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Option<Bytes>, StreamErrorIncoming>> {
        let polled = ready!(self.poll_head(cx));
        Poll::Ready(
            data(polled).map_err(|e| {
                e.unwrap_or_else(|why| self.refuse(why, |s, code| s.stop_sending(code)))
            }),
        )
    }

    fn stop_sending(&mut self, error_code: u64) {
        self.inner.stop_sending(error_code)
    }

    fn recv_id(&self) -> StreamId {
        self.inner.recv_id()
    }
}

impl<B: Buf> quic::SendStream<B> for Checked<h3_quinn::BidiStream<B>> {
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.inner.poll_ready(cx)
    }

    fn send_data<T: Into<WriteBuf<B>>>(&mut self, data: T) -> Result<(), StreamErrorIncoming> {
        self.inner.send_data(data)
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), StreamErrorIncoming>> {
        self.inner.poll_finish(cx)
    }

    fn reset(&mut self, reset_code: u64) {
        self.inner.reset(reset_code)
    }

    fn send_id(&self) -> StreamId {
        quic::SendStream::<B>::send_id(&self.inner)
    }
}

impl<B: Buf> quic::BidiStream<B> for Checked<h3_quinn::BidiStream<B>> {
    type SendStream = h3_quinn::SendStream<B>;
    type RecvStream = Checked<h3_quinn::RecvStream>;

    fn split(self) -> (Self::SendStream, Self::RecvStream) {
        let (send, recv) = self.inner.split();
        (send, Checked::new(recv, self.head, self.peer))
    }
}
