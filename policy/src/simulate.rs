//! `simulate()`: the same `decide()` over described requests against a draft document, so an
//! operator can preview a change before rolling it out.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::Duration;

use jiff::Timestamp;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::compile::CompiledPolicy;
use crate::decide::{Challenge, Decision, decide};
use crate::document::{MfaMethod, Os};
use crate::document::{PolicyDocument, Protocol};
use crate::request::{Context, Device, DeviceState, Identity, MfaProof};
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

/// A described request as people write it: one element of `palisadectl simulate -r FILE`
/// (`docs/controller.md`), and the admin API's `SimulatedRequest` copied field by field. Names,
/// addresses and times stay text here; [`SimRequestSpec::into_request`] is the one parser both
/// sides use, so the CLI refuses a bad file with the same words the API would.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimRequestSpec {
    /// Label echoed in the outcome.
    pub label: String,
    /// Host.
    pub host: String,
    /// Path; `/` when empty.
    pub path: String,
    /// `http` (also when empty), `h3` or `tunnel`.
    pub protocol: String,
    /// Source address; `0.0.0.0` when empty.
    pub source_ip: String,
    /// RFC 3339 time; now when empty.
    pub time: String,
    /// The signed-in user; anonymous when absent.
    pub identity: Option<SimIdentitySpec>,
    /// The device; unmanaged when absent.
    pub device: Option<SimDeviceSpec>,
}

/// The signed-in user of a described request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimIdentitySpec {
    /// Identity provider id.
    pub identity_provider: String,
    /// OIDC subject.
    pub subject: String,
    /// Email.
    pub email: String,
    /// Groups.
    pub groups: Vec<String>,
    /// Other claims.
    pub claims: BTreeMap<String, String>,
    /// `totp`, `security_key` or `platform`; no MFA when empty.
    pub mfa_method: String,
    /// How long ago the factor was passed.
    pub mfa_age_seconds: i64,
}

/// The device of a described request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimDeviceSpec {
    /// Device id (the rollout cohort key).
    pub id: String,
    /// `enrolled` (also when empty), `pending`, `wiped` or `revoked`.
    pub state: String,
    /// `macos`, `windows`, `linux`, `ios`, `android`, `chromeos`; unknown when empty.
    pub os: String,
    /// Palisade client version (semver).
    pub client_version: String,
    /// Whether the client enforces mandatory authentication.
    pub mandatory_auth: bool,
    /// Device groups.
    pub groups: Vec<String>,
    /// Reported: full-disk encryption on.
    pub disk_encrypted: bool,
    /// Reported: host firewall on.
    pub firewall: bool,
    /// Reported: screen lock configured.
    pub screen_lock: bool,
    /// Reported by an MDM: compliant.
    pub mdm_compliant: bool,
    /// When the posture was reported (RFC 3339); never when empty.
    pub posture_reported_at: String,
}

/// A snake_case name of one of the policy's enums (`h3`, `security_key`, `macos`), or why not.
fn named<T: DeserializeOwned>(field: &str, value: &str) -> Result<T, String> {
    serde_json::from_value(serde_json::Value::String(value.to_string()))
        .map_err(|e| format!("{field}: {e}"))
}

impl SimRequestSpec {
    /// The request `decide()` sees, or the first problem (named by its field). `now` stands in
    /// for an absent time.
    pub fn into_request(self, now: Timestamp) -> Result<SimRequest, String> {
        let protocol = match self.protocol.as_str() {
            "" => Protocol::Http,
            p => named("protocol", p)?,
        };
        let source_ip = match self.source_ip.as_str() {
            "" => IpAddr::from([0, 0, 0, 0]),
            ip => ip
                .parse()
                .map_err(|_| format!("source_ip: {ip:?} is not an IP address"))?,
        };
        let time = match self.time.as_str() {
            "" => now,
            t => t.parse().map_err(|e| format!("time: {t:?}: {e}"))?,
        };
        let identity = self.identity.map(|i| i.into_identity(time)).transpose()?;
        let device = self.device.map(SimDeviceSpec::into_device).transpose()?;
        Ok(SimRequest {
            label: self.label,
            host: self.host,
            path: if self.path.is_empty() {
                "/".into()
            } else {
                self.path
            },
            protocol,
            source_ip,
            time,
            identity,
            device,
            view_age: Duration::ZERO,
        })
    }
}

impl SimIdentitySpec {
    fn into_identity(self, time: Timestamp) -> Result<Identity, String> {
        let mfa = match self.mfa_method.as_str() {
            "" => None,
            m => Some(MfaProof {
                method: named::<MfaMethod>("identity.mfa_method", m)?,
                factor_id: "simulated".into(),
                authenticated_at: time
                    .checked_sub(jiff::SignedDuration::from_secs(self.mfa_age_seconds))
                    .map_err(|e| format!("identity.mfa_age_seconds: {e}"))?,
                // A simulated proof is taken as the strongest the method allows.
                user_verified: true,
            }),
        };
        Ok(Identity {
            provider: self.identity_provider,
            subject: self.subject,
            email: self.email,
            groups: self.groups,
            claims: self.claims.into_iter().map(|(k, v)| (k, vec![v])).collect(),
            mfa,
            session: None,
        })
    }
}

impl SimDeviceSpec {
    fn into_device(self) -> Result<Device, String> {
        let state = match self.state.as_str() {
            "" | "enrolled" => DeviceState::Enrolled,
            "pending" => DeviceState::Pending,
            "wiped" => DeviceState::Wiped,
            "revoked" => DeviceState::Revoked,
            other => {
                return Err(format!(
                    "device.state: {other:?} is not enrolled, pending, wiped or revoked"
                ));
            }
        };
        let client_version = match self.client_version.as_str() {
            "" => None,
            v => Some(
                semver::Version::parse(v)
                    .map_err(|e| format!("device.client_version: {v:?}: {e}"))?,
            ),
        };
        let os = match self.os.as_str() {
            "" => None,
            os => Some(named::<Os>("device.os", os)?),
        };
        let posture_reported_at = match self.posture_reported_at.as_str() {
            "" => None,
            t => Some(t.parse::<Timestamp>().map_err(|e| {
                format!("device.posture_reported_at: {t:?} is not an RFC 3339 time: {e}")
            })?),
        };
        Ok(Device {
            id: self.id,
            state,
            client_version,
            mandatory_auth: self.mandatory_auth,
            os,
            groups: self.groups,
            disk_encrypted: self.disk_encrypted,
            firewall: self.firewall,
            screen_lock: self.screen_lock,
            mdm_compliant: self.mdm_compliant,
            posture_reported_at,
        })
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(v: serde_json::Value) -> Result<SimRequest, String> {
        let s: SimRequestSpec = serde_json::from_value(v).map_err(|e| e.to_string())?;
        s.into_request(Timestamp::UNIX_EPOCH)
    }

    #[test]
    fn an_empty_request_takes_the_documented_defaults() {
        let r = spec(serde_json::json!({"host": "a.example"})).expect("valid");
        assert_eq!(r.path, "/");
        assert_eq!(r.protocol, Protocol::Http);
        assert_eq!(r.source_ip, IpAddr::from([0, 0, 0, 0]));
        assert_eq!(r.time, Timestamp::UNIX_EPOCH);
        assert!(r.identity.is_none() && r.device.is_none());
    }

    #[test]
    fn every_field_is_parsed() {
        let r = spec(serde_json::json!({
            "label": "l", "host": "a.example", "path": "/x", "protocol": "tunnel",
            "source_ip": "2001:db8::1", "time": "2026-11-25T10:00:00Z",
            "identity": {"identity_provider": "corp", "subject": "alice", "email": "a@example.com",
                         "groups": ["dba"], "claims": {"dept": "ops"}, "mfa_method": "security_key",
                         "mfa_age_seconds": 120},
            "device": {"id": "d1", "state": "wiped", "os": "chromeos", "client_version": "2.6.1",
                       "mandatory_auth": true, "groups": ["eng"]}
        }))
        .expect("valid");
        assert_eq!(r.protocol, Protocol::Tunnel);
        let t: Timestamp = "2026-11-25T10:00:00Z".parse().expect("time");
        assert_eq!(r.time, t);
        let i = r.identity.expect("identity");
        assert_eq!(i.claims["dept"], ["ops"]);
        let mfa = i.mfa.expect("mfa");
        assert_eq!(mfa.method, MfaMethod::SecurityKey);
        assert_eq!(
            mfa.authenticated_at,
            t - jiff::SignedDuration::from_secs(120)
        );
        let d = r.device.expect("device");
        assert_eq!(d.state, DeviceState::Wiped);
        assert_eq!(d.os, Some(Os::Chromeos));
        assert_eq!(d.client_version, Some(semver::Version::new(2, 6, 1)));
    }

    #[test]
    fn bad_values_are_refused_by_field() {
        for (v, field) in [
            (serde_json::json!({"protocol": "h4"}), "protocol"),
            (serde_json::json!({"source_ip": "10.0.0"}), "source_ip"),
            (serde_json::json!({"time": "yesterday"}), "time"),
            (
                serde_json::json!({"identity": {"mfa_method": "sms"}}),
                "identity.mfa_method",
            ),
            (
                serde_json::json!({"device": {"state": "lost"}}),
                "device.state",
            ),
            (serde_json::json!({"device": {"os": "bsd"}}), "device.os"),
            (
                serde_json::json!({"device": {"client_version": "two"}}),
                "device.client_version",
            ),
            (serde_json::json!({"sorce_ip": "10.0.0.1"}), "unknown field"),
        ] {
            let e = spec(v.clone()).expect_err("refused");
            assert!(e.contains(field), "{v}: {e}");
        }
    }
}
