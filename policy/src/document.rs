//! The declarative policy document: the JSON that operators keep in git and apply with
//! `palisadectl apply -f`. These types only describe the shape; `validate` and `compile` give it
//! meaning. Leaf values that can be wrong in interesting ways (addresses, durations, versions,
//! times) stay strings here so that validation can report every problem at once with its path.
//!
//! Unknown fields are collected in `extra` (never serialized) and reported by validation, so a
//! typo anywhere in the document is an error rather than silently ignored.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The only schema version this build understands.
pub const SCHEMA_VERSION: u32 = 1;

/// Unknown fields found while parsing; reported by validation as errors.
pub type Extra = BTreeMap<String, Value>;

/// A complete policy document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct PolicyDocument {
    /// Schema version of this document; must be 1.
    pub schema_version: u32,
    /// OpenID Connect providers users can sign in with.
    #[serde(default)]
    pub identity_providers: Vec<IdentityProvider>,
    /// Protected applications.
    #[serde(default)]
    pub apps: Vec<Application>,
    /// Settings of Palisade's own second factor that hold for every application.
    #[serde(default)]
    pub mfa: MfaPolicy,
    /// How request paths are read before routing, so that routing and the application agree
    /// on which application a path belongs to.
    #[serde(default)]
    pub request_paths: RequestPaths,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// What the edge does with `;` path parameters (`/app;jsessionid=1/x`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SemicolonParameters {
    /// Answer 400: servers disagree about them (Java servlet containers drop them and read
    /// `..;` as `..`), so a path with them could be routed to one application and served by
    /// another.
    #[default]
    Refuse,
    /// Remove them from every segment before routing, and forward the path without them.
    Strip,
}

/// Request path handling.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RequestPaths {
    /// `refuse` (default) or `strip`.
    #[serde(default)]
    pub semicolon_parameters: SemicolonParameters,
    /// Match path prefixes without regard to letter case, for applications served by
    /// case-insensitive servers (IIS). Default `false`: prefixes match exactly, and a path that
    /// would route to another application if case were ignored (`/ADMIN` next to an `/admin`
    /// application) is refused with 400.
    #[serde(default)]
    pub case_insensitive_prefixes: bool,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Deployment-wide MFA settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MfaPolicy {
    /// WebAuthn relying party id: a domain every application host is within, e.g.
    /// `example.com`, so one security key registration works for every application under it.
    /// Left out, each application host is its own relying party (a key registered at
    /// `wiki.example.com` only works there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn_rp_id: Option<String>,
    /// Whether a user's first factor needs a one-time enrollment code issued by an admin
    /// (`palisadectl factors enrollment-code`). Default `true`: otherwise a stolen SSO session
    /// alone could enrol the attacker's factor for a user who has none yet, and pass MFA with
    /// it. Set `false` only while rolling out, knowing that.
    #[serde(default = "default_true")]
    pub enrollment_requires_code: bool,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl Default for MfaPolicy {
    fn default() -> Self {
        Self {
            webauthn_rp_id: None,
            enrollment_requires_code: true,
            extra: Extra::new(),
        }
    }
}

/// An OpenID Connect identity provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct IdentityProvider {
    /// Short id referenced by applications and rules, e.g. `corp`.
    pub id: String,
    /// Name shown on the login page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Issuer URL; discovery is at `<issuer>/.well-known/openid-configuration`. Must be
    /// `https://`, except `http://localhost` / `http://127.0.0.1` for development.
    pub issuer: String,
    /// OAuth client id registered at the provider.
    pub client_id: String,
    /// Name of the controller-held secret with the client secret (`palisadectl secrets put`).
    pub client_secret_ref: String,
    /// Scopes to request; `openid` is always included.
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// Which ID-token or userinfo claims carry the email, groups and display name.
    #[serde(default)]
    pub claims: ClaimMapping,
    /// Whether an email counts only when the provider also says `email_verified: true`.
    /// Default `true`: providers that let users set their own address (self-registration,
    /// social logins, multi-tenant directories) would otherwise let them claim anyone's.
    #[serde(default = "default_true")]
    pub require_verified_email: bool,
    /// The email domains this provider may assert addresses in (`example.com` also covers
    /// subdomains); an address at another domain is ignored. Empty (default): any domain.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub email_domains: Vec<String>,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl IdentityProvider {
    /// The email this provider asserts for a user, if it counts: verified (when required) and
    /// in one of the provider's domains (when limited). Lowercase.
    pub fn accepted_email(&self, email: &str, verified: bool) -> Option<String> {
        let email = email.trim().to_ascii_lowercase();
        if email.is_empty() || (self.require_verified_email && !verified) {
            return None;
        }
        let (_, domain) = email.rsplit_once('@')?;
        let allowed = self.email_domains.is_empty()
            || self.email_domains.iter().any(|d| {
                let d = d.trim_start_matches('.').to_ascii_lowercase();
                domain == d || domain.ends_with(&format!(".{d}"))
            });
        allowed.then_some(email)
    }
}

fn default_scopes() -> Vec<String> {
    vec!["openid".into(), "email".into(), "profile".into()]
}

/// Names of the claims Palisade reads from the provider.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ClaimMapping {
    /// Claim holding the email address.
    #[serde(default = "default_email_claim")]
    pub email: String,
    /// Claim holding the list of groups.
    #[serde(default = "default_groups_claim")]
    pub groups: String,
    /// Claim holding the display name.
    #[serde(default = "default_name_claim")]
    pub name: String,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl Default for ClaimMapping {
    fn default() -> Self {
        Self {
            email: default_email_claim(),
            groups: default_groups_claim(),
            name: default_name_claim(),
            extra: Extra::new(),
        }
    }
}

fn default_email_claim() -> String {
    "email".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_name_claim() -> String {
    "name".into()
}

/// Transport protocols an application is reachable over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// HTTPS over HTTP/1.1 or HTTP/2.
    Http,
    /// HTTP/3 over QUIC.
    H3,
    /// The QUIC device tunnel (managed devices with mandatory authentication).
    Tunnel,
}

/// A protected application.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Application {
    /// Short unique id, lowercase letters, digits and `-`, e.g. `wiki`.
    pub id: String,
    /// Human name shown on login, MFA and deny pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Host names, exact (`wiki.example.com`) or one leading wildcard (`*.example.com`, any
    /// subdomain depth; the exact name and the longest wildcard win).
    pub hosts: Vec<String>,
    /// Path prefixes, matched on whole segments (`/app` matches `/app` and `/app/x`, not
    /// `/apple`); the longest prefix wins. Defaults to `/`.
    #[serde(default = "default_paths")]
    pub path_prefixes: Vec<String>,
    /// Upstream base URLs (`http://` or `https://`), load-balanced.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Protocols the application accepts. Defaults to `http`.
    #[serde(default = "default_protocols")]
    pub protocols: Vec<Protocol>,
    /// Identity providers users may sign in with; empty means any configured provider.
    #[serde(default)]
    pub identity_providers: Vec<String>,
    /// Session lifetime and idle timeout.
    #[serde(default)]
    pub session: SessionSettings,
    /// MFA requirements for every `allow` rule.
    #[serde(default)]
    pub mfa: MfaSettings,
    /// What the edge does when its view of the catalog is stale.
    #[serde(default)]
    pub staleness: StalenessSettings,
    /// Largest request body accepted, in bytes; unset means no limit beyond the edge's own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Access rules. Evaluation: `bypass` rules first, then `deny`, then `allow`, each in
    /// document order; the first that matches decides; no match is a deny.
    pub rules: Vec<Rule>,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

fn default_paths() -> Vec<String> {
    vec!["/".into()]
}

fn default_protocols() -> Vec<Protocol> {
    vec![Protocol::Http]
}

/// Session lifetime settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct SessionSettings {
    /// Absolute lifetime of an SSO session, e.g. `12h`. Default `12h`.
    #[serde(default = "default_lifetime")]
    pub lifetime: String,
    /// A session unused for this long ends, e.g. `1h`. Default `1h`.
    #[serde(default = "default_idle")]
    pub idle_timeout: String,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            lifetime: default_lifetime(),
            idle_timeout: default_idle(),
            extra: Extra::new(),
        }
    }
}

fn default_lifetime() -> String {
    "12h".into()
}
fn default_idle() -> String {
    "1h".into()
}

/// A second-factor method Palisade owns.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum MfaMethod {
    /// RFC 6238 TOTP code from an authenticator app.
    Totp,
    /// A roaming WebAuthn security key (USB/NFC/BLE).
    SecurityKey,
    /// A platform WebAuthn authenticator with user verification (Touch ID, Windows Hello).
    Platform,
}

impl MfaMethod {
    /// All methods, in display order.
    pub const ALL: [MfaMethod; 3] = [MfaMethod::Totp, MfaMethod::SecurityKey, MfaMethod::Platform];

    /// The method's name as written in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            MfaMethod::Totp => "totp",
            MfaMethod::SecurityKey => "security_key",
            MfaMethod::Platform => "platform",
        }
    }
}

/// Per-application MFA settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MfaSettings {
    /// Whether every `allow` rule also requires MFA. Default `true`.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Methods that satisfy the application. Default: all.
    #[serde(default = "default_methods")]
    pub methods: Vec<MfaMethod>,
    /// How long a passed MFA challenge counts, e.g. `12h`. Default `12h`.
    #[serde(default = "default_lifetime")]
    pub max_age: String,
    /// Whether a security key must also verify the user (PIN or biometric). Platform
    /// authenticators always do. Default `false`.
    #[serde(default)]
    pub require_user_verification: bool,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl Default for MfaSettings {
    fn default() -> Self {
        Self {
            required: true,
            methods: default_methods(),
            max_age: default_lifetime(),
            require_user_verification: false,
            extra: Extra::new(),
        }
    }
}

fn default_true() -> bool {
    true
}
fn default_methods() -> Vec<MfaMethod> {
    MfaMethod::ALL.to_vec()
}

/// What to do when the edge's view of the catalog is stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum StalenessMode {
    /// Deny every request once the view is older than `max_staleness`.
    FailClosed,
    /// Keep enforcing the last known view, however old.
    FailOpen,
}

/// Staleness behaviour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct StalenessSettings {
    /// Fail closed (default) or open.
    #[serde(default = "default_mode")]
    pub mode: StalenessMode,
    /// For `fail_closed`: the oldest view still enforced, e.g. `30s`. Default `5m`. Not allowed
    /// with `fail_open`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_staleness: Option<String>,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

impl Default for StalenessSettings {
    fn default() -> Self {
        Self {
            mode: StalenessMode::FailClosed,
            max_staleness: None,
            extra: Extra::new(),
        }
    }
}

fn default_mode() -> StalenessMode {
    StalenessMode::FailClosed
}

/// What a matching rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RuleDecision {
    /// Let the request through after SSO (and MFA as the application requires).
    Allow,
    /// Refuse the request.
    Deny,
    /// Let the request through with no sign-in at all (health checks, public assets). Only
    /// conditions that need no identity are allowed: `everyone`, `ip`, `time`.
    Bypass,
}

/// An access rule. It matches when any `include` matches, every `require` matches and no
/// `exclude` matches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Rule {
    /// Name, unique within the application; shown on deny pages and in audit logs.
    pub name: String,
    /// What the rule decides when it matches.
    pub decision: RuleDecision,
    /// Any of these (at least one entry).
    pub include: Vec<Condition>,
    /// All of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub require: Vec<Condition>,
    /// None of these. Always wins over `include` and `require`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Condition>,
    /// Staged rollout: the rule applies only to this cohort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Staged rollout of a rule to a cohort of devices. The cohort key is the device id, or the
/// user's subject for requests without a managed device. A request is in the cohort when its
/// device is in one of `device_groups` or its key hashes into the first `percent` of buckets.
/// While a rule is in rollout, the rule named by `replaces` is skipped for the cohort and the
/// rollout rule is skipped for everyone else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct Rollout {
    /// Fraction of cohort keys, 0 to 100 (two decimals of precision).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent: Option<f64>,
    /// Device groups that are always in the cohort.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub device_groups: Vec<String>,
    /// Name of the rule (same application) this one replaces for the cohort.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replaces: Option<String>,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// A condition over the request's identity, device and context. Written as an object with
/// exactly one key, e.g. `{"email_domain": "example.com"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Matches every request (`{"everyone": true}`).
    Everyone(bool),
    /// The user's email, case-insensitive.
    Email(String),
    /// The domain of the user's email, case-insensitive, e.g. `example.com`.
    EmailDomain(String),
    /// A group from the identity provider's groups claim.
    Group(String),
    /// Any other claim from the identity provider, compared as a string (or any element of a
    /// list claim).
    Claim(ClaimCondition),
    /// The identity provider the user signed in with (its `id`).
    IdentityProvider(String),
    /// The source address is in this CIDR (or equals this address).
    Ip(String),
    /// Device posture; every field given must hold.
    Device(DeviceCondition),
    /// The device is in this device group.
    DeviceGroup(String),
    /// The request happens within a weekly time window.
    Time(TimeWindow),
    /// MFA passed with one of these methods within `max_age`. Only in `require` of `allow`
    /// rules; fields left out take the application's `mfa` settings.
    Mfa(MfaCondition),
}

/// A claim condition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct ClaimCondition {
    /// Claim name.
    pub name: String,
    /// Expected value.
    pub value: String,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Operating system families, as reported by the Palisade client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Os {
    /// macOS.
    Macos,
    /// Windows.
    Windows,
    /// Linux.
    Linux,
    /// iOS / iPadOS.
    Ios,
    /// Android.
    Android,
    /// ChromeOS.
    Chromeos,
}

impl Os {
    /// The family named `s` as the client reports it (`macos`, `windows`, ...).
    pub fn parse(s: &str) -> Option<Os> {
        Some(match s {
            "macos" => Os::Macos,
            "windows" => Os::Windows,
            "linux" => Os::Linux,
            "ios" => Os::Ios,
            "android" => Os::Android,
            "chromeos" => Os::Chromeos,
            _ => return None,
        })
    }
}

/// Device posture requirements.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct DeviceCondition {
    /// The request comes from an enrolled (not wiped, not revoked) managed device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled: Option<bool>,
    /// The Palisade client version is at least this (semver), e.g. `2.4.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_client_version: Option<String>,
    /// The client enforces mandatory authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mandatory_auth: Option<bool>,
    /// The device runs one of these operating systems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<Vec<Os>>,
    /// The device reports full-disk encryption on (or off, with `false`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_encrypted: Option<bool>,
    /// The device reports its host firewall on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firewall: Option<bool>,
    /// The device reports a screen lock configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_lock: Option<bool>,
    /// The device's MDM reports it compliant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mdm_compliant: Option<bool>,
    /// The device's posture was reported at most this long ago (`15m`, `1h`): older posture
    /// proves nothing. A device that never reported fails it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// Days of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Day {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

/// A weekly time window in an IANA time zone. `from` is inclusive and `to` exclusive; a window
/// whose `to` is earlier than `from` runs past midnight into the next day.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct TimeWindow {
    /// Days on which the window opens.
    pub days: Vec<Day>,
    /// Opening time, `HH:MM`.
    pub from: String,
    /// Closing time, `HH:MM`.
    pub to: String,
    /// IANA time zone, e.g. `Europe/Berlin`.
    pub time_zone: String,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}

/// An MFA requirement inside a rule.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct MfaCondition {
    /// Methods that satisfy this rule; defaults to the application's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<MfaMethod>>,
    /// Maximum MFA age for this rule; defaults to the application's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// Unknown fields (always rejected).
    #[serde(flatten, skip_serializing)]
    #[schemars(skip)]
    pub extra: Extra,
}
