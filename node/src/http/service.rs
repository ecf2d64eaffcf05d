//! Enforcement as a tower `Service`: what every protocol adapter mounts. One `EdgeService` per
//! connection carries what the connection knows (the peer's address; the device certificate
//! once devices present one), and every request on it goes through `Gateway::serve`, the one
//! request path. hyper's HTTP/1.1 and HTTP/2 connections mount it through
//! `hyper_util::service::TowerToHyperService`; HTTP/3 calls the same service per stream.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;

use palisade_link::device::PresentedDevice;

use super::Gateway;
use crate::proxy::{Body, BoxError};

/// The enforced request path, bound to one connection.
#[derive(Debug, Clone)]
pub struct EdgeService {
    gateway: Arc<Gateway>,
    peer: SocketAddr,
    device: Option<Arc<PresentedDevice>>,
}

impl EdgeService {
    /// The service for one connection from `peer`, which presented `device`'s certificate
    /// (verified by TLS against the device CA) or none.
    pub fn new(
        gateway: Arc<Gateway>,
        peer: SocketAddr,
        device: Option<Arc<PresentedDevice>>,
    ) -> Self {
        Self {
            gateway,
            peer,
            device,
        }
    }
}

impl<B> tower::Service<Request<B>> for EdgeService
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // the edge sheds load per client and per user inside (rate limits), and bounds
        // connections at accept: no back-pressure to apply here
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let gateway = self.gateway.clone();
        let conn = super::Connection {
            peer: self.peer,
            device: self.device.clone(),
        };
        let transport = super::transport_of(&req);
        // Upgrades (WebSocket) travel in the request's extensions, which `map` keeps.
        let req = req.map(|b| b.map_err(Into::into).boxed_unsync());
        Box::pin(async move { Ok(gateway.serve(req, &conn, transport).await) })
    }
}
