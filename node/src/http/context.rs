//! What every handler of one request needs, read once: the request id, the client, the host it
//! addressed, the replica's view and policy at the time the request
//! arrived, `now`, and how refusals are rendered.

use std::net::SocketAddr;
use std::sync::Arc;

use palisade_edge_core::View;
use palisade_edge_core::enforce::Transport;
use palisade_policy::CompiledPolicy;

use crate::http::error::Format;

/// One request's context. Handlers take `&RequestCtx` instead of positional arguments.
#[derive(Debug, Clone)]
pub(crate) struct RequestCtx {
    /// Request id, in the `x-request-id` header, the log and every page.
    pub(crate) rid: String,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The protocol the request came over (decisions may depend on it).
    pub(crate) transport: Transport,
    /// The authority the client addressed (`host[:port]`, lowercase).
    pub(crate) authority: String,
    /// The lowercase host without port.
    pub(crate) host: String,
    /// The replica's view when the request arrived.
    pub(crate) view: Arc<View>,
    /// Its policy.
    pub(crate) policy: Arc<CompiledPolicy>,
    /// When the request arrived (unix seconds), read once.
    pub(crate) now: i64,
    /// How refusals are rendered (a page for browsers, JSON for the WebAuthn script).
    pub(crate) format: Format,
}
