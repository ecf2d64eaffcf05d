//! What every handler of one request needs, read once: the request id, the client, the host it
//! addressed, the replica's view and policy at the time the request
//! arrived, `now`, and how refusals are rendered.

use std::net::SocketAddr;
use std::sync::Arc;

use palisade_edge_core::View;
use palisade_edge_core::enforce::Transport;
use palisade_policy::CompiledPolicy;

use crate::http::error::Format;
use palisade_link::device::PresentedDevice;
use palisade_policy::catalog::DeviceRecord;

/// One request's context. Handlers take `&RequestCtx` instead of positional arguments.
#[derive(Debug, Clone)]
pub(crate) struct RequestCtx {
    /// Request id, in the `x-request-id` header, the log and every page.
    pub(crate) rid: String,
    /// The client's address.
    pub(crate) peer: SocketAddr,
    /// The device certificate the connection presented (verified by TLS), if any.
    pub(crate) device: Option<Arc<PresentedDevice>>,
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

impl RequestCtx {
    /// The enrolled device whose current certificate the connection presented, if any.
    pub(crate) fn device_record(&self) -> Option<&DeviceRecord> {
        let d = self.device.as_deref()?;
        palisade_edge_core::device::resolve(
            &self.view,
            palisade_edge_core::device::DeviceCredential {
                id: &d.id,
                fingerprint: &d.fingerprint,
            },
            self.now,
        )
        .ok()
    }

    /// That device as `decide()` sees it.
    pub(crate) fn device_for_decision(&self) -> Option<palisade_policy::request::Device> {
        self.device_record().map(DeviceRecord::for_decision)
    }
}
