//! Sign-in: OpenID Connect against the policy's identity providers, the session the edge
//! issues, and sign-out.

pub(crate) mod claims;
pub(crate) mod login;
