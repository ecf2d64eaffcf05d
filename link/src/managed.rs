//! The managed configuration file: what an MDM pushes to a device so that its agent can enroll
//! and enforce mandatory authentication. `palisadectl devices provision` writes it (the
//! development stand-in for an MDM); the device agent reads it. The format is JSON, described
//! by `docs/managed-config.schema.json` and `docs/devices.md`.
//!
//! Reading never stops at the first mistake: [`ManagedConfig::from_json`] reports every problem
//! it finds at once, so whoever wrote the file (an MDM profile, a person) fixes it in one pass.

use std::net::IpAddr;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The one format version this build reads and writes.
pub const VERSION: u32 = 1;

/// The managed configuration of one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManagedConfig {
    /// Format version: 1.
    pub version: u32,
    /// The device id the controller assigned when the device was created (`dev-...`).
    pub device_id: String,
    /// The device's owner (email or OIDC subject), for display.
    #[serde(default)]
    pub owner: String,
    /// Controllers' device listeners, `host:port`; the agent tries them in order.
    pub controllers: Vec<String>,
    /// PEM certificate(s) of the CA that signs the controllers (the internal CA).
    pub controller_ca_pem: String,
    /// Edges, `host:port`: HTTPS on TCP and HTTP/3 and the device tunnel on UDP, same port.
    pub edges: Vec<String>,
    /// PEM certificate(s) of the CA that signs the edges' ingress certificates; absent when
    /// they chain to a public root the device already trusts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edge_ca_pem: Option<String>,
    /// The one-time enrollment token.
    pub enrollment: Enrollment,
    /// Mandatory authentication: no traffic leaves the device until its user signed in.
    pub mandatory_auth: MandatoryAuth,
}

/// The one-time enrollment token and its expiry. Its `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Enrollment {
    /// The token, redeemed once by `DeviceEnrollment.Enroll`. A secret: the file must be
    /// readable by the agent only.
    pub token: String,
    /// When it stops being accepted (RFC 3339).
    pub expires_at: String,
}

impl std::fmt::Debug for Enrollment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrollment")
            .field("token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What the device allows before its user signed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MandatoryAuth {
    /// Whether the agent blocks all traffic until sign-in (and again when the session ends).
    pub enabled: bool,
    /// What the block lets through besides loopback and the edges.
    #[serde(default)]
    pub grace: Grace,
    /// What happens when no edge can be reached.
    #[serde(default)]
    pub fail_mode: FailMode,
}

/// Traffic allowed through the block before sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Grace {
    /// DHCP (UDP 67/68, and DHCPv6 546/547), so the device can get an address.
    #[serde(default = "yes")]
    pub dhcp: bool,
    /// DNS resolvers (IP addresses) the device may query on port 53, UDP and TCP.
    #[serde(default)]
    pub dns: Vec<String>,
}

impl Default for Grace {
    fn default() -> Self {
        Grace {
            dhcp: true,
            dns: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// What the device does while it cannot reach any edge.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Stay blocked: no edge, no traffic. The default, and the only mode that keeps the promise
    /// that nothing leaves the device before its user signed in.
    #[default]
    Closed,
    /// Lift the block while no edge answers (for fleets that prefer availability over the
    /// guarantee); it is put back as soon as an edge answers again.
    Open,
}

/// Every problem found in a managed configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub Vec<String>);

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid managed configuration: {}", self.0.join("; "))
    }
}

impl std::error::Error for Invalid {}

impl ManagedConfig {
    /// Parses and checks a managed configuration, reporting every problem at once.
    pub fn from_json(text: &str) -> Result<ManagedConfig, Invalid> {
        let config: ManagedConfig =
            serde_json::from_str(text).map_err(|e| Invalid(vec![e.to_string()]))?;
        config.check()?;
        Ok(config)
    }

    /// Checks the values (the shape is the type's): every problem at once.
    pub fn check(&self) -> Result<(), Invalid> {
        let mut errors = Vec::new();
        if self.version != VERSION {
            errors.push(format!(
                "version: {} is not supported (this build reads {VERSION})",
                self.version
            ));
        }
        if !self.device_id.starts_with("dev-") || self.device_id.len() <= 4 {
            errors.push(format!(
                "device_id: {:?} is not a device id (dev-...)",
                self.device_id
            ));
        }
        check_addresses("controllers", &self.controllers, &mut errors);
        check_addresses("edges", &self.edges, &mut errors);
        check_ca("controller_ca_pem", &self.controller_ca_pem, &mut errors);
        if let Some(pem) = &self.edge_ca_pem {
            check_ca("edge_ca_pem", pem, &mut errors);
        }
        if self.enrollment.token.trim().is_empty() {
            errors.push("enrollment.token: empty".into());
        }
        if self
            .enrollment
            .expires_at
            .parse::<jiff::Timestamp>()
            .is_err()
        {
            errors.push(format!(
                "enrollment.expires_at: {:?} is not an RFC 3339 time",
                self.enrollment.expires_at
            ));
        }
        for (i, dns) in self.mandatory_auth.grace.dns.iter().enumerate() {
            if dns.parse::<IpAddr>().is_err() {
                errors.push(format!(
                    "mandatory_auth.grace.dns[{i}]: {dns:?} is not an IP address"
                ));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Invalid(errors))
        }
    }

    /// The DNS resolvers of the grace set (checked by [`ManagedConfig::check`]).
    pub fn grace_resolvers(&self) -> Vec<IpAddr> {
        self.mandatory_auth
            .grace
            .dns
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect()
    }
}

fn check_addresses(field: &str, addresses: &[String], errors: &mut Vec<String>) {
    if addresses.is_empty() {
        errors.push(format!("{field}: at least one host:port is required"));
    }
    for (i, a) in addresses.iter().enumerate() {
        if !is_host_port(a) {
            errors.push(format!("{field}[{i}]: {a:?} is not host:port"));
        }
    }
}

/// `host:port`, `[v6]:port`: a non-empty host without spaces and a port 1–65535.
fn is_host_port(a: &str) -> bool {
    let Some((host, port)) = a.rsplit_once(':') else {
        return false;
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6
            .strip_suffix(']')
            .is_some_and(|v6| v6.parse::<std::net::Ipv6Addr>().is_ok()),
        None => {
            !host.is_empty()
                && !host.contains(':')
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
    };
    host_ok && port.parse::<u16>().is_ok_and(|p| p != 0)
}

fn check_ca(field: &str, pem: &str, errors: &mut Vec<String>) {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(pem.as_bytes()).collect();
    match certs {
        Ok(certs) if certs.is_empty() => errors.push(format!("{field}: no PEM certificate")),
        Ok(certs) => {
            for (i, c) in certs.iter().enumerate() {
                if x509_parser::parse_x509_certificate(c).is_err() {
                    errors.push(format!("{field}: certificate {i} does not parse"));
                }
            }
        }
        Err(e) => errors.push(format!("{field}: {e}")),
    }
}

/// The JSON Schema of the managed configuration, as published in
/// `docs/managed-config.schema.json`.
pub fn json_schema() -> serde_json::Value {
    schemars::schema_for!(ManagedConfig).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("ca").pem()
    }

    fn good() -> ManagedConfig {
        ManagedConfig {
            version: VERSION,
            device_id: "dev-0123".into(),
            owner: "alice@example.com".into(),
            controllers: vec!["ctl-1.example.com:7443".into(), "[::1]:7443".into()],
            controller_ca_pem: ca_pem(),
            edges: vec!["edge.example.com:443".into()],
            edge_ca_pem: None,
            enrollment: Enrollment {
                token: "secret".into(),
                expires_at: "2026-12-03T00:00:00Z".into(),
            },
            mandatory_auth: MandatoryAuth {
                enabled: true,
                grace: Grace {
                    dhcp: true,
                    dns: vec!["192.0.2.53".into()],
                },
                fail_mode: FailMode::Closed,
            },
        }
    }

    #[test]
    fn a_written_file_reads_back() {
        let c = good();
        let text = serde_json::to_string_pretty(&c).expect("json");
        assert_eq!(ManagedConfig::from_json(&text), Ok(c));
    }

    #[test]
    fn defaults_are_the_safe_ones() {
        let mut v = serde_json::to_value(good()).expect("json");
        v["mandatory_auth"] = serde_json::json!({"enabled": true});
        let c = ManagedConfig::from_json(&v.to_string()).expect("valid");
        assert_eq!(c.mandatory_auth.fail_mode, FailMode::Closed);
        assert!(c.mandatory_auth.grace.dhcp);
        assert!(c.mandatory_auth.grace.dns.is_empty());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut c = good();
        c.version = 2;
        c.device_id = "laptop".into();
        c.controllers = vec!["no-port".into()];
        c.edges = vec![];
        c.controller_ca_pem = "not pem".into();
        c.enrollment.token = " ".into();
        c.enrollment.expires_at = "tomorrow".into();
        c.mandatory_auth.grace.dns = vec!["resolver.local".into()];
        let text = serde_json::to_string(&c).expect("json");
        let Invalid(errors) = ManagedConfig::from_json(&text).expect_err("invalid");
        for field in [
            "version",
            "device_id",
            "controllers[0]",
            "edges:",
            "controller_ca_pem",
            "enrollment.token",
            "enrollment.expires_at",
            "mandatory_auth.grace.dns[0]",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(field)),
                "{field} in {errors:?}"
            );
        }
        assert_eq!(errors.len(), 8, "{errors:?}");
    }

    #[test]
    fn unknown_fields_and_modes_are_refused() {
        let mut v = serde_json::to_value(good()).expect("json");
        v["edge"] = serde_json::json!("typo");
        assert!(ManagedConfig::from_json(&v.to_string()).is_err());
        let mut v = serde_json::to_value(good()).expect("json");
        v["mandatory_auth"]["fail_mode"] = serde_json::json!("sometimes");
        assert!(ManagedConfig::from_json(&v.to_string()).is_err());
    }

    /// `docs/managed-config.schema.json` is what this type accepts; `PALISADE_BLESS=1` rewrites it.
    #[test]
    fn published_schema_is_current() {
        let generated = serde_json::to_string_pretty(&json_schema()).expect("schema") + "\n";
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/managed-config.schema.json");
        if std::env::var_os("PALISADE_BLESS").is_some() {
            std::fs::write(&path, &generated).expect("bless schema");
        }
        let published = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            published == generated,
            "docs/managed-config.schema.json is out of date; run `PALISADE_BLESS=1 cargo test -p palisade-link managed`"
        );
    }

    #[test]
    fn debug_never_shows_the_token() {
        assert!(!format!("{:?}", good()).contains("secret"));
    }

    #[test]
    fn host_port() {
        for ok in [
            "a:1",
            "edge.example.com:443",
            "[::1]:7443",
            "10.0.0.1:65535",
        ] {
            assert!(is_host_port(ok), "{ok}");
        }
        for bad in ["", "a", ":1", "a:0", "a:65536", "::1:443", "a b:1", "[x]:1"] {
            assert!(!is_host_port(bad), "{bad}");
        }
    }
}
