//! The block: what a managed device may send before its user has signed in, held by the
//! platform's firewall in the kernel. [`Firewall`] is the one interface the agent's logic uses;
//! [`nftables::Nftables`] is the Linux implementation, and `docs/tunnel.md` maps macOS (pf
//! anchors) and Windows (WFP filters) onto the same operations.
//!
//! The block must outlive the agent. Nothing here keeps state in the process that the kernel
//! does not hold: whether the block is there, and whether it is lifted into a tunnel, is read
//! back from the kernel's ruleset ([`Firewall::inspect`]), never remembered. Nothing is removed
//! when the agent exits, crashes or is killed.

pub mod nftables;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use palisade_link::managed::ManagedConfig;
use serde::Serialize;

/// What the block lets out besides loopback: the grace set and the edges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Allowances {
    /// DHCP (v4 and v6) to any server.
    pub dhcp: bool,
    /// DNS resolvers (port 53, UDP and TCP).
    pub dns: Vec<IpAddr>,
    /// Controllers' device listeners (TCP): enrollment, renewal, posture.
    pub controllers: Vec<SocketAddr>,
    /// Edges: UDP to their port (QUIC: the tunnel, HTTP/3) and TCP (HTTPS: the sign-in page).
    pub edges: Vec<SocketAddr>,
}

impl Allowances {
    /// The strictest block: loopback and DHCP only. What a device gets while its managed
    /// configuration cannot be read: it knows no resolver and no edge.
    pub fn strictest() -> Self {
        Allowances {
            dhcp: true,
            ..Default::default()
        }
    }

    /// The allowances of a managed configuration. Addresses are taken as they are; names are
    /// resolved only with `resolve` (through the resolvers the block allows, so the first block
    /// never waits for DNS). A name that does not resolve is left out and named in the second
    /// value, to be tried again later.
    pub fn of(config: &ManagedConfig, resolve: bool) -> (Allowances, Vec<String>) {
        let mut unresolved = Vec::new();
        let edges = addresses(&config.edges, resolve, &mut unresolved);
        let controllers = addresses(&config.controllers, resolve, &mut unresolved);
        let allow = Allowances {
            dhcp: config.mandatory_auth.grace.dhcp,
            dns: config.grace_resolvers(),
            controllers,
            edges,
        };
        (allow, unresolved)
    }
}

/// `host:port` entries as socket addresses; names resolved only with `resolve`; what does
/// not resolve is pushed onto `unresolved`.
fn addresses(entries: &[String], resolve: bool, unresolved: &mut Vec<String>) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for e in entries {
        let found: Vec<SocketAddr> = match e.parse::<SocketAddr>() {
            Ok(a) => vec![a],
            Err(_) if resolve => e.to_socket_addrs().map(|a| a.collect()).unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        if found.is_empty() {
            unresolved.push(e.clone());
        }
        for a in found {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

/// The block as the kernel holds it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Inspection {
    /// No block: everything goes out.
    Absent,
    /// The block as installed: only loopback and the allowances go out.
    Blocking {
        /// Packets dropped since it was installed.
        dropped_packets: u64,
    },
    /// The block, lifted into the tunnel: traffic out of `tunnel` passes too.
    Lifted {
        /// The tunnel's interface.
        tunnel: String,
        /// Packets dropped since it was installed.
        dropped_packets: u64,
    },
    /// The agent's table is there, but not as the agent installed it (changed from outside):
    /// what differs.
    Altered {
        /// What differs.
        difference: String,
    },
}

impl Inspection {
    /// Whether the kernel holds the block whole (lifted or not).
    pub fn intact(&self) -> bool {
        matches!(
            self,
            Inspection::Blocking { .. } | Inspection::Lifted { .. }
        )
    }
}

/// A firewall operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The firewall tool could not be run (not installed, not allowed).
    #[error("running {tool}: {source}")]
    Tool {
        /// The tool.
        tool: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// The firewall refused the change or the query.
    #[error("{tool} failed: {message}")]
    Refused {
        /// The tool.
        tool: &'static str,
        /// What it said.
        message: String,
    },
    /// The firewall's answer could not be read.
    #[error("reading {tool}'s answer: {message}")]
    Unreadable {
        /// The tool.
        tool: &'static str,
        /// What was wrong.
        message: String,
    },
}

/// A platform firewall holding the block. Every change replaces the agent's rules as one
/// transaction: there is no moment where the device is half blocked.
pub trait Firewall {
    /// Installs the block (replacing any earlier one of the agent's): only loopback and
    /// `allow` go out, IPv4 and IPv6, sent or forwarded.
    fn install(&self, allow: &Allowances) -> Result<(), Error>;

    /// Lifts the block into the tunnel: traffic out of the `tunnel` interface passes too.
    fn lift(&self, allow: &Allowances, tunnel: &str) -> Result<(), Error>;

    /// Puts the block back whole: the tunnel's traffic is dropped again.
    fn reengage(&self, allow: &Allowances) -> Result<(), Error> {
        self.install(allow)
    }

    /// Reads the kernel's ruleset and compares it with what `allow` installs.
    fn inspect(&self, allow: &Allowances) -> Result<Inspection, Error>;

    /// Removes the block.
    fn remove(&self) -> Result<(), Error>;
}
