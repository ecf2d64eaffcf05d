//! Palisade's pure domain: the policy document and its JSON Schema, validation with precise
//! errors, compilation into an evaluation structure, `decide()`, `simulate()`, path
//! normalisation, and the session and MFA token formats.
//!
//! This crate does no I/O and never reads a clock: `now` is always an argument. It must stay
//! that way, so that every decision is reproducible in a test and the same code runs at the
//! controller (validation, simulation) and at every edge (enforcement).
//!
//! ```
//! use palisade_policy::{CompiledPolicy, decide, request::{Context, Protocol}};
//! let json = r#"{
//!   "schema_version": 1,
//!   "apps": [{
//!     "id": "status", "hosts": ["status.example.com"], "upstreams": ["http://127.0.0.1:9000"],
//!     "rules": [{"name": "public", "decision": "bypass", "include": [{"everyone": true}]}]
//!   }]
//! }"#;
//! let (_doc, policy) = CompiledPolicy::from_json(json).expect("valid");
//! let app = policy.route("status.example.com", "/").expect("routed");
//! let ctx = Context { source_ip: "192.0.2.1".parse().unwrap(), protocol: Protocol::Http, view_age: Default::default() };
//! let d = decide(app, None, None, &ctx, jiff::Timestamp::UNIX_EPOCH);
//! assert_eq!(d.kind(), "bypass");
//! ```

#![forbid(unsafe_code)]

pub mod catalog;
pub mod compile;
pub mod decide;
pub mod diff;
pub mod document;
pub mod duration;
pub mod iptable;
pub mod path;
pub mod request;
pub mod simulate;
pub mod token;
pub mod violation;

pub use compile::{CompiledApp, CompiledPolicy, MAX_DOCUMENT_BYTES, parse_document};
pub use decide::{Challenge, Decision, DenyReason, RuleRef, decide};
pub use document::PolicyDocument;
pub use simulate::{SimOutcome, SimRequest, SimRequestSpec, simulate};
pub use violation::{Violation, Violations};

/// The JSON Schema of the policy document (draft 2020-12), as published in
/// `docs/policy.schema.json`.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(PolicyDocument);
    schema.to_value()
}

/// Validates a JSON document, returning every violation (empty when valid).
pub fn validate_json(json: &str) -> Vec<Violation> {
    match CompiledPolicy::from_json(json) {
        Ok(_) => Vec::new(),
        Err(Violations(v)) => v,
    }
}
