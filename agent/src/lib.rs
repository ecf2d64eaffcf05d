//! `palisade-agent`, the device client of mandatory authentication: no traffic leaves a
//! managed device until its user has signed in.
//!
//! Built so far: the managed configuration an MDM pushes (`palisade_link::managed`), the block
//! ([`firewall`]: a kernel firewall ruleset that lets out only loopback, DHCP, DNS to the
//! configured resolvers and the edges, and that outlives the agent), the agent's loop that
//! installs the block first and keeps it in place ([`agent`]), and the status an MDM's health
//! check reads ([`status`]). Enrollment, the user's sign-in and the QUIC tunnel that lifts the
//! block come next (docs/tunnel.md).
//!
//! What it must never do: lift the block for anything but an authenticated tunnel, or leave
//! the device unblocked because something failed. Every failure keeps the block, or puts the
//! strictest one in place.
#![forbid(unsafe_code)]

pub mod agent;
pub mod cli;
pub mod device;
pub mod firewall;
pub mod status;
