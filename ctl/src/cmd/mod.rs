//! One module per command: its arguments (clap) and what it asks the admin API.

pub(crate) mod as_device;
pub(crate) mod audit;
pub(crate) mod cluster;
pub(crate) mod device;
pub(crate) mod factor;
pub(crate) mod key;
pub(crate) mod member;
pub(crate) mod pki;
pub(crate) mod policy;
pub(crate) mod revoke;
pub(crate) mod secret;
