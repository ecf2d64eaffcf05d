//! `simulate()`: the same `decide()` over described requests against a draft document, so an
//! operator can preview a change before rolling it out.

use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;

use crate::compile::CompiledPolicy;
use crate::decide::{Challenge, Decision, decide};
use crate::document::{PolicyDocument, Protocol};
use crate::request::{Context, Device, Identity};
use crate::violation::Violations;

/// A described request.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// Label echoed in the outcome.
    pub label: String,
    /// Host.
    pub host: String,
    /// Path (normalised by `simulate`).
    pub path: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Source address.
    pub source_ip: IpAddr,
    /// When it happens.
    pub time: Timestamp,
    /// Identity, or none for an anonymous request.
    pub identity: Option<Identity>,
    /// Device, or none for an unmanaged one.
    pub device: Option<Device>,
    /// View age at the edge (zero for a current view).
    pub view_age: Duration,
}

/// The decision for one described request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimOutcome {
    /// The request's label.
    pub label: String,
    /// The application it routed to, if any.
    pub application: Option<String>,
    /// The decision, or `None` when no application serves the host and path (or the path is
    /// malformed).
    pub decision: Option<Decision>,
    /// One sentence explaining the outcome.
    pub explanation: String,
}

impl SimOutcome {
    /// Decision kind, or `no_application`.
    pub fn kind(&self) -> &'static str {
        self.decision
            .as_ref()
            .map(Decision::kind)
            .unwrap_or("no_application")
    }

    /// The MFA methods of an MFA challenge.
    pub fn mfa_methods(&self) -> Vec<&'static str> {
        match &self.decision {
            Some(Decision::Challenge {
                challenge: Challenge::Mfa { methods, .. },
                ..
            }) => methods.iter().map(|m| m.as_str()).collect(),
            _ => Vec::new(),
        }
    }
}

/// Compiles `doc` and decides each request against it. A document with violations yields them
/// all and no outcomes.
pub fn simulate(
    doc: &PolicyDocument,
    requests: &[SimRequest],
) -> Result<Vec<SimOutcome>, Violations> {
    let compiled = CompiledPolicy::compile(doc)?;
    Ok(requests
        .iter()
        .map(|r| simulate_one(&compiled, r))
        .collect())
}

/// Decides one described request against a compiled policy.
pub fn simulate_one(policy: &CompiledPolicy, r: &SimRequest) -> SimOutcome {
    let path = match crate::path::normalize(&r.path) {
        Ok(p) => p,
        Err(e) => {
            return SimOutcome {
                label: r.label.clone(),
                application: None,
                decision: None,
                explanation: format!("request refused before routing: {e}"),
            };
        }
    };
    let Some(app) = policy.route(&r.host, &path) else {
        return SimOutcome {
            label: r.label.clone(),
            application: None,
            decision: None,
            explanation: format!("no application serves {}{}", r.host, path),
        };
    };
    let ctx = Context {
        source_ip: r.source_ip,
        protocol: r.protocol,
        view_age: r.view_age,
    };
    let d = decide(app, r.identity.as_ref(), r.device.as_ref(), &ctx, r.time);
    SimOutcome {
        label: r.label.clone(),
        application: Some(app.id.to_string()),
        explanation: d.explain(),
        decision: Some(d),
    }
}
