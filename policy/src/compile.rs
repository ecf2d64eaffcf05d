//! Validation and compilation of a policy document, in one walk: every problem is collected with
//! its JSON path, and when there is none the document becomes a `CompiledPolicy`, an evaluation
//! structure with no linear scans on the request path: host maps, segment tries for path
//! prefixes, hash sets for emails/domains/groups/claims, and CIDR tables for networks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::tz::TimeZone;

use crate::document::{
    Application, Condition, Day, IdentityProvider, MfaMethod, MfaPolicy, Os, PolicyDocument,
    Protocol, RuleDecision, SCHEMA_VERSION, StalenessMode,
};
use crate::duration::parse_duration;
use crate::iptable::{IpTable, parse_net};
use crate::violation::{Collector, Violation, Violations, quote};

/// Largest policy document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 64 * 1024 * 1024;

/// The longest session lifetime a policy may set.
pub const MAX_SESSION_LIFETIME: Duration = Duration::from_secs(30 * 86_400);
const MIN_SESSION: Duration = Duration::from_secs(60);
const MAX_STALENESS: Duration = Duration::from_secs(86_400);
const DEFAULT_STALENESS: Duration = Duration::from_secs(300);

/// A set of MFA methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct MethodSet(u8);

impl MethodSet {
    fn bit(m: MfaMethod) -> u8 {
        match m {
            MfaMethod::Totp => 1,
            MfaMethod::SecurityKey => 2,
            MfaMethod::Platform => 4,
        }
    }

    /// Builds a set from methods.
    pub fn from_methods(methods: &[MfaMethod]) -> Self {
        MethodSet(methods.iter().fold(0, |acc, m| acc | Self::bit(*m)))
    }

    /// Whether the set holds `m`.
    pub fn contains(self, m: MfaMethod) -> bool {
        self.0 & Self::bit(m) != 0
    }

    /// The methods in display order.
    pub fn methods(self) -> Vec<MfaMethod> {
        MfaMethod::ALL
            .into_iter()
            .filter(|m| self.contains(*m))
            .collect()
    }
}

/// What MFA a rule needs: one of `methods`, passed within `max_age`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MfaRequirement {
    /// Methods that satisfy it.
    pub methods: MethodSet,
    /// Maximum age of the MFA proof.
    pub max_age: Duration,
    /// A security key proof counts only when the key verified the user.
    pub user_verification: bool,
}

/// Staleness behaviour of an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Staleness {
    /// Deny once the view is older than this.
    FailClosed(Duration),
    /// Enforce the last view however old.
    FailOpen,
}

/// A compiled single condition (kinds that are not folded into sets).
#[derive(Debug, Clone)]
pub(crate) enum Cond {
    Everyone,
    Email(Box<str>),
    EmailDomain(Box<str>),
    Group(Box<str>),
    Claim(Box<str>, Box<str>),
    Provider(Box<str>),
    Ip(ipnet::IpNet),
    Device(DeviceReq),
    DeviceGroup(Box<str>),
    Time(TimeReq),
}

/// Device posture requirement.
#[derive(Debug, Clone)]
pub(crate) struct DeviceReq {
    pub(crate) enrolled: Option<bool>,
    pub(crate) min_version: Option<semver::Version>,
    pub(crate) mandatory_auth: Option<bool>,
    pub(crate) os: Option<Vec<Os>>,
    pub(crate) disk_encrypted: Option<bool>,
    pub(crate) firewall: Option<bool>,
    pub(crate) screen_lock: Option<bool>,
    pub(crate) mdm_compliant: Option<bool>,
    pub(crate) max_age: Option<std::time::Duration>,
}

impl DeviceReq {
    /// Whether anything beyond enrollment is asked of the device's posture.
    pub(crate) fn checks_posture(&self) -> bool {
        self.min_version.is_some()
            || self.mandatory_auth.is_some()
            || self.os.is_some()
            || self.disk_encrypted.is_some()
            || self.firewall.is_some()
            || self.screen_lock.is_some()
            || self.mdm_compliant.is_some()
            || self.max_age.is_some()
    }
}

/// Weekly time window.
#[derive(Debug, Clone)]
pub(crate) struct TimeReq {
    /// Bit i set for day i (Monday = 0).
    pub(crate) days: u8,
    pub(crate) from_min: u16,
    pub(crate) to_min: u16,
    pub(crate) tz: TimeZone,
}

/// "Any of" a list of conditions, folded into sets per kind.
#[derive(Debug, Clone, Default)]
pub(crate) struct AnySet {
    pub(crate) everyone: bool,
    pub(crate) emails: HashSet<Box<str>>,
    pub(crate) domains: HashSet<Box<str>>,
    pub(crate) groups: HashSet<Box<str>>,
    pub(crate) providers: HashSet<Box<str>>,
    pub(crate) claims: HashMap<Box<str>, HashSet<Box<str>>>,
    pub(crate) ips: IpTable,
    pub(crate) device_groups: HashSet<Box<str>>,
    /// Device and time conditions, checked one by one (few per rule).
    pub(crate) others: Vec<Cond>,
}

impl AnySet {
    /// Adds a condition; networks go to `nets`, folded into the CIDR table by the caller.
    fn add(&mut self, c: Cond, nets: &mut Vec<ipnet::IpNet>) {
        match c {
            Cond::Everyone => self.everyone = true,
            Cond::Email(e) => {
                self.emails.insert(e);
            }
            Cond::EmailDomain(d) => {
                self.domains.insert(d);
            }
            Cond::Group(g) => {
                self.groups.insert(g);
            }
            Cond::Provider(p) => {
                self.providers.insert(p);
            }
            Cond::Claim(n, v) => {
                self.claims.entry(n).or_default().insert(v);
            }
            Cond::DeviceGroup(g) => {
                self.device_groups.insert(g);
            }
            Cond::Ip(net) => nets.push(net),
            other @ (Cond::Device(_) | Cond::Time(_)) => self.others.push(other),
        }
    }
}

/// Staged rollout of a rule.
#[derive(Debug, Clone)]
pub(crate) struct RolloutReq {
    /// Cohort size in basis points (0..=10000).
    pub(crate) basis_points: u32,
    pub(crate) device_groups: HashSet<Box<str>>,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// Index of the rule in the application's `rules` array.
    pub index: usize,
    /// The rule's name.
    pub name: Arc<str>,
    /// What it decides.
    pub decision: RuleDecision,
    pub(crate) include: AnySet,
    pub(crate) require: Vec<Cond>,
    pub(crate) exclude: AnySet,
    pub(crate) mfa: Option<MfaRequirement>,
    pub(crate) rollout: Option<RolloutReq>,
    /// Index (into the app's rules) of the rollout rule that replaces this one for its cohort.
    pub(crate) replaced_by: Option<usize>,
    /// Whether any condition needs a signed-in identity.
    pub(crate) needs_identity: bool,
    /// The source conditions, for explanations.
    pub(crate) source: crate::document::Rule,
}

/// A compiled application.
#[derive(Debug, Clone)]
pub struct CompiledApp {
    /// Position in the document's `apps` array.
    pub index: usize,
    /// Application id.
    pub id: Arc<str>,
    /// Display name (the id when none was given).
    pub name: Arc<str>,
    /// Upstream base URLs.
    pub upstreams: Vec<String>,
    /// Accepted protocols.
    pub protocols: Vec<Protocol>,
    /// Identity providers users may sign in with (all configured ones when the document named
    /// none).
    pub identity_providers: Vec<String>,
    /// Absolute session lifetime.
    pub session_lifetime: Duration,
    /// Session idle timeout.
    pub idle_timeout: Duration,
    /// Whether every allow rule requires MFA.
    pub mfa_required: bool,
    /// The application's default MFA requirement.
    pub mfa: MfaRequirement,
    /// Staleness behaviour.
    pub staleness: Staleness,
    /// Largest request body, if limited.
    pub max_body_bytes: Option<u64>,
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) bypass: Vec<usize>,
    pub(crate) deny: Vec<usize>,
    pub(crate) allow: Vec<usize>,
}

impl CompiledApp {
    /// The application's rules in document order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }
}

/// Path prefixes on segment boundaries.
#[derive(Debug, Clone, Default)]
struct PathTrie {
    app: Option<usize>,
    children: HashMap<Box<str>, PathTrie>,
}

impl PathTrie {
    fn insert(&mut self, segments: &[&str], app: usize) -> Result<(), usize> {
        let mut node = self;
        for s in segments {
            node = node.children.entry((*s).into()).or_default();
        }
        match node.app {
            Some(existing) => Err(existing),
            None => {
                node.app = Some(app);
                Ok(())
            }
        }
    }

    /// The same routes with every segment in lowercase (the first of prefixes that differ
    /// only in case wins).
    fn folded(&self) -> PathTrie {
        let mut out = PathTrie {
            app: self.app,
            children: HashMap::new(),
        };
        for (seg, child) in &self.children {
            let key: Box<str> = seg.to_ascii_lowercase().into();
            let folded = child.folded();
            match out.children.get_mut(&key) {
                Some(existing) => existing.merge(folded),
                None => {
                    out.children.insert(key, folded);
                }
            }
        }
        out
    }

    fn merge(&mut self, other: PathTrie) {
        if self.app.is_none() {
            self.app = other.app;
        }
        for (k, v) in other.children {
            match self.children.get_mut(&k) {
                Some(existing) => existing.merge(v),
                None => {
                    self.children.insert(k, v);
                }
            }
        }
    }

    fn has_upper(&self) -> bool {
        self.children
            .iter()
            .any(|(k, v)| k.bytes().any(|b| b.is_ascii_uppercase()) || v.has_upper())
    }

    fn lookup(&self, path: &str) -> Option<usize> {
        let mut node = self;
        let mut best = node.app;
        for seg in path.split('/').filter(|s| !s.is_empty()) {
            match node.children.get(seg) {
                Some(child) => {
                    node = child;
                    if node.app.is_some() {
                        best = node.app;
                    }
                }
                None => break,
            }
        }
        best
    }
}

/// The routes of one host: exact, and case-folded for case checks.
#[derive(Debug, Clone, Default)]
struct HostRoutes {
    exact: PathTrie,
    /// Only when some prefix has an uppercase letter; otherwise `exact` serves folded lookups
    /// of a lowercased path.
    folded: Option<PathTrie>,
    /// Every application under this host accepts HTTP/3.
    h3: bool,
}

impl HostRoutes {
    fn new(exact: PathTrie, h3: bool) -> HostRoutes {
        let folded = exact.has_upper().then(|| exact.folded());
        HostRoutes { exact, folded, h3 }
    }

    fn lookup(&self, path: &str, folded: bool) -> Option<usize> {
        if !folded {
            return self.exact.lookup(path);
        }
        let lower = path.to_ascii_lowercase();
        self.folded.as_ref().unwrap_or(&self.exact).lookup(&lower)
    }

    /// Whether a folded lookup of `path` can differ from the exact one.
    fn case_matters(&self, path: &str) -> bool {
        self.folded.is_some() || path.bytes().any(|b| b.is_ascii_uppercase())
    }
}

/// Why a request path was not routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Ignoring letter case, the path belongs to another application than it does exactly:
    /// a case-insensitive server would serve it as that other application.
    #[error("the path's letter case makes it ambiguous which application it belongs to")]
    AmbiguousCase,
}

/// A validated, compiled policy document, ready for `decide()`.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    apps: Vec<CompiledApp>,
    app_index: HashMap<Arc<str>, usize>,
    exact_hosts: HashMap<Box<str>, HostRoutes>,
    wildcard_hosts: HashMap<Box<str>, HostRoutes>,
    paths: crate::document::RequestPaths,
    providers: Vec<IdentityProvider>,
    mfa: MfaPolicy,
}

impl CompiledPolicy {
    /// Parses, validates and compiles a JSON document.
    pub fn from_json(json: &str) -> Result<(PolicyDocument, CompiledPolicy), Violations> {
        let doc = parse_document(json)?;
        let compiled = Self::compile(&doc)?;
        Ok((doc, compiled))
    }

    /// Validates and compiles a parsed document, reporting every violation at once.
    pub fn compile(doc: &PolicyDocument) -> Result<CompiledPolicy, Violations> {
        let mut c = Collector::default();
        let compiled = compile_document(doc, &mut c);
        if c.violations.is_empty() {
            Ok(compiled)
        } else {
            Err(Violations(c.violations))
        }
    }

    /// The application serving `host` and `path`. `host` may carry a port and any case; `path`
    /// must already be normalised (see `crate::path::normalize`).
    pub fn route(&self, host: &str, path: &str) -> Option<&CompiledApp> {
        let folded = self.paths.case_insensitive_prefixes;
        self.route_with(host, path, folded).map(|(a, _)| a)
    }

    /// Routes a request: like `route`, but refuses a path that another server could read as
    /// another application's. Unless prefixes are case-insensitive by policy, a path whose
    /// case-folded form routes elsewhere (`/ADMIN/x` next to an `/admin` application) is
    /// refused.
    pub fn route_request(
        &self,
        host: &str,
        path: &str,
    ) -> Result<Option<&CompiledApp>, RouteError> {
        if self.paths.case_insensitive_prefixes {
            return Ok(self.route_with(host, path, true).map(|(a, _)| a));
        }
        let Some((app, routes)) = self.route_with(host, path, false) else {
            // The exact routes have nothing here; a case-folded match elsewhere is still an
            // application a case-insensitive upstream could serve.
            return match self.route_with(host, path, true) {
                Some(_) => Err(RouteError::AmbiguousCase),
                None => Ok(None),
            };
        };
        if routes.case_matters(path) {
            let exact = routes.lookup(path, false);
            if routes.lookup(path, true) != exact {
                return Err(RouteError::AmbiguousCase);
            }
        }
        Ok(Some(app))
    }

    /// Whether every application `host` serves, at any path, accepts HTTP/3: what an edge may
    /// advertise with `Alt-Svc`, which names a whole origin (a browser that moved to HTTP/3 uses
    /// it for every path of that host). False for a host the policy does not serve.
    pub fn origin_accepts_h3(&self, host: &str) -> bool {
        let host = host_only(host).to_ascii_lowercase();
        let mut any = false;
        if let Some(r) = self.exact_hosts.get(host.as_str()) {
            if !r.h3 {
                return false;
            }
            any = true;
        }
        let mut rest = host.as_str();
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(r) = self.wildcard_hosts.get(rest) {
                if !r.h3 {
                    return false;
                }
                any = true;
            }
        }
        any
    }

    /// How request paths are read (`;` parameters).
    pub fn request_paths(&self) -> &crate::document::RequestPaths {
        &self.paths
    }

    fn route_with(
        &self,
        host: &str,
        path: &str,
        folded: bool,
    ) -> Option<(&CompiledApp, &HostRoutes)> {
        let host = host_only(host);
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            lower.as_str()
        } else {
            host
        };
        if let Some(r) = self.exact_hosts.get(host)
            && let Some(i) = r.lookup(path, folded)
        {
            return self.apps.get(i).map(|a| (a, r));
        }
        let mut rest = host;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if let Some(r) = self.wildcard_hosts.get(rest)
                && let Some(i) = r.lookup(path, folded)
            {
                return self.apps.get(i).map(|a| (a, r));
            }
        }
        None
    }

    /// An application by id.
    pub fn app(&self, id: &str) -> Option<&CompiledApp> {
        self.app_index.get(id).and_then(|i| self.apps.get(*i))
    }

    /// All applications, in document order.
    pub fn apps(&self) -> &[CompiledApp] {
        &self.apps
    }

    /// An identity provider by id.
    pub fn identity_provider(&self, id: &str) -> Option<&IdentityProvider> {
        self.providers.iter().find(|p| p.id == id)
    }

    /// The deployment-wide MFA settings.
    pub fn mfa_policy(&self) -> &MfaPolicy {
        &self.mfa
    }

    /// Configured identity providers.
    pub fn identity_providers(&self) -> &[IdentityProvider] {
        &self.providers
    }

    /// Every host name the document routes (exact and wildcard, as written).
    pub fn hosts(&self) -> impl Iterator<Item = String> + '_ {
        self.exact_hosts
            .keys()
            .map(|h| h.to_string())
            .chain(self.wildcard_hosts.keys().map(|h| format!("*.{h}")))
    }

    /// The longest session lifetime of any application (the longest a revocation must last).
    pub fn longest_session_lifetime(&self) -> Duration {
        self.apps
            .iter()
            .map(|a| a.session_lifetime)
            .max()
            .unwrap_or(MIN_SESSION)
    }
}

fn host_only(host: &str) -> &str {
    let h = if let Some(rest) = host.strip_prefix('[') {
        // IPv6 literal: keep the brackets' content.
        rest.split(']').next().unwrap_or(rest)
    } else {
        match host.rfind(':') {
            Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
            _ => host,
        }
    };
    h.strip_suffix('.').unwrap_or(h)
}

/// Parses a document's JSON. Syntax errors, wrong types and unknown condition kinds stop the
/// parse with one violation at their path; everything else is found by `compile`.
pub fn parse_document(json: &str) -> Result<PolicyDocument, Violations> {
    if json.len() > MAX_DOCUMENT_BYTES {
        return Err(Violations(vec![Violation {
            path: "$".into(),
            reason: format!(
                "document is {} bytes; the limit is {} bytes",
                json.len(),
                MAX_DOCUMENT_BYTES
            ),
        }]));
    }
    let de = &mut serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let syntax = inner.is_syntax() || inner.is_eof();
        let path = if syntax || path == "." || path.is_empty() {
            "$".to_string()
        } else {
            path
        };
        // serde_json appends " at line L column C"; keep it, it helps in editors.
        let reason = if syntax {
            format!("invalid JSON: {inner}")
        } else {
            inner.to_string()
        };
        Violations(vec![Violation { path, reason }])
    })
}

fn is_slug(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && !s.starts_with('-')
}

fn valid_dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn compile_document(doc: &PolicyDocument, c: &mut Collector) -> CompiledPolicy {
    c.unknown_fields("$", &doc.extra);
    if doc.schema_version != SCHEMA_VERSION {
        c.push(
            "schema_version",
            format!(
                "unsupported schema version {}; this build supports {SCHEMA_VERSION}",
                doc.schema_version
            ),
        );
    }

    let mut provider_ids = HashSet::new();
    for (i, p) in doc.identity_providers.iter().enumerate() {
        let path = format!("identity_providers[{i}]");
        validate_provider(p, &path, c);
        if !provider_ids.insert(p.id.as_str()) {
            c.push(
                format!("{path}.id"),
                format!("duplicate identity provider id {}", quote(&p.id)),
            );
        }
    }
    let all_providers: Vec<String> = doc
        .identity_providers
        .iter()
        .map(|p| p.id.clone())
        .collect();

    let mut apps = Vec::with_capacity(doc.apps.len());
    let mut app_index: HashMap<Arc<str>, usize> = HashMap::with_capacity(doc.apps.len());
    let mut exact_hosts: HashMap<Box<str>, PathTrie> = HashMap::new();
    let mut wildcard_hosts: HashMap<Box<str>, PathTrie> = HashMap::new();
    // (wildcard, host) → every application there accepts HTTP/3
    let mut h3_hosts: HashMap<(bool, Box<str>), bool> = HashMap::new();

    for (ai, app) in doc.apps.iter().enumerate() {
        let path = format!("apps[{ai}]");

        // Routing table, with conflict detection on (host, path prefix).
        let prefixes: Vec<(usize, Vec<&str>)> = app
            .path_prefixes
            .iter()
            .enumerate()
            .filter_map(|(pi, p)| {
                check_prefix(p, &format!("{path}.path_prefixes[{pi}]"), c).map(|s| (pi, s))
            })
            .collect();
        if app.hosts.is_empty() {
            c.push(
                format!("{path}.hosts"),
                "an application needs at least one host",
            );
        }
        if app.path_prefixes.is_empty() {
            c.push(
                format!("{path}.path_prefixes"),
                "an application needs at least one path prefix (use \"/\" for all)",
            );
        }
        for (hi, host) in app.hosts.iter().enumerate() {
            let hpath = format!("{path}.hosts[{hi}]");
            let lower = host.to_ascii_lowercase();
            let (table, key) = if let Some(rest) = lower.strip_prefix("*.") {
                (&mut wildcard_hosts, rest.to_string())
            } else {
                (&mut exact_hosts, lower.clone())
            };
            if !valid_dns_name(&key) {
                c.push(
                    hpath,
                    format!(
                        "{} is not a host name (use e.g. \"app.example.com\" or \"*.example.com\")",
                        quote(host)
                    ),
                );
                continue;
            }
            let app_h3 = app.protocols.contains(&Protocol::H3);
            h3_hosts
                .entry((lower.starts_with("*."), key.clone().into_boxed_str()))
                .and_modify(|all| *all &= app_h3)
                .or_insert(app_h3);
            let trie = table.entry(key.into_boxed_str()).or_default();
            for (pi, segs) in &prefixes {
                if let Err(other) = trie.insert(segs, ai) {
                    let other_id = doc.apps.get(other).map(|a| a.id.as_str()).unwrap_or("?");
                    c.push(
                        format!("{path}.path_prefixes[{pi}]"),
                        format!(
                            "host {} path {} is already claimed by application {} (apps[{other}])",
                            quote(&lower),
                            quote(&app.path_prefixes[*pi]),
                            quote(other_id)
                        ),
                    );
                }
            }
        }
        let compiled = compile_app(app, ai, &path, &provider_ids, &all_providers, c);
        if app_index.insert(compiled.id.clone(), ai).is_some() {
            c.push(
                format!("{path}.id"),
                format!("duplicate application id {}", quote(&app.id)),
            );
        }
        apps.push(compiled);
    }

    validate_mfa_policy(doc, c);
    c.unknown_fields("request_paths", &doc.request_paths.extra);
    CompiledPolicy {
        apps,
        app_index,
        exact_hosts: exact_hosts
            .into_iter()
            .map(|(h, t)| {
                let h3 = h3_hosts.get(&(false, h.clone())).copied().unwrap_or(false);
                (h, HostRoutes::new(t, h3))
            })
            .collect(),
        wildcard_hosts: wildcard_hosts
            .into_iter()
            .map(|(h, t)| {
                let h3 = h3_hosts.get(&(true, h.clone())).copied().unwrap_or(false);
                (h, HostRoutes::new(t, h3))
            })
            .collect(),
        paths: doc.request_paths.clone(),
        providers: doc.identity_providers.clone(),
        mfa: doc.mfa.clone(),
    }
}

/// The relying party id must be a DNS name every application host is within.
fn validate_mfa_policy(doc: &PolicyDocument, c: &mut Collector) {
    c.unknown_fields("mfa", &doc.mfa.extra);
    let Some(rp) = &doc.mfa.webauthn_rp_id else {
        return;
    };
    let valid = !rp.is_empty()
        && rp.len() <= 253
        && rp.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if !valid {
        c.push(
            "mfa.webauthn_rp_id",
            format!(
                "{} is not a lowercase DNS name (e.g. \"example.com\")",
                quote(rp)
            ),
        );
        return;
    }
    for (ai, app) in doc.apps.iter().enumerate() {
        for (hi, h) in app.hosts.iter().enumerate() {
            let h = h.trim_start_matches("*.").to_ascii_lowercase();
            if h != *rp && !h.ends_with(&format!(".{rp}")) {
                c.push(
                    format!("apps[{ai}].hosts[{hi}]"),
                    format!(
                        "host {} is not within mfa.webauthn_rp_id {}: security keys could not be used there",
                        quote(&h),
                        quote(rp)
                    ),
                );
            }
        }
    }
}

fn check_prefix<'a>(p: &'a str, path: &str, c: &mut Collector) -> Option<Vec<&'a str>> {
    if !p.starts_with('/') {
        c.push(path, format!("{} must start with \"/\"", quote(p)));
        return None;
    }
    if p.contains(['?', '#', '%', '\\']) || p.chars().any(|ch| ch.is_control() || ch == ' ') {
        c.push(
            path,
            format!(
                "{} must be a plain path (no query, fragment, escapes or spaces)",
                quote(p)
            ),
        );
        return None;
    }
    let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    if segs.iter().any(|s| *s == "." || *s == "..") || p.contains("//") {
        c.push(
            path,
            format!(
                "{} must be normalised (no \".\", \"..\" or \"//\")",
                quote(p)
            ),
        );
        return None;
    }
    Some(segs)
}

fn validate_provider(p: &IdentityProvider, path: &str, c: &mut Collector) {
    c.unknown_fields(path, &p.extra);
    c.unknown_fields(&format!("{path}.claims"), &p.claims.extra);
    if !is_slug(&p.id) {
        c.push(
            format!("{path}.id"),
            format!(
                "{} is not an id (lowercase letters, digits, '-', '_')",
                quote(&p.id)
            ),
        );
    }
    let dev = ["http://localhost", "http://127.0.0.1", "http://[::1]"];
    let ok_scheme = p.issuer.starts_with("https://")
        || dev.iter().any(|d| {
            p.issuer
                .strip_prefix(d)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with([':', '/']))
        });
    let host = p
        .issuer
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    if !ok_scheme || host.is_empty() || p.issuer.contains(['?', '#']) {
        c.push(
            format!("{path}.issuer"),
            format!("{} is not an issuer URL (https://, or http://localhost for development; no query or fragment)", quote(&p.issuer)),
        );
    }
    if p.client_id.trim().is_empty() {
        c.push(format!("{path}.client_id"), "must not be empty");
    }
    if !is_slug(&p.client_secret_ref) {
        c.push(
            format!("{path}.client_secret_ref"),
            format!(
                "{} is not a secret name (lowercase letters, digits, '-', '_')",
                quote(&p.client_secret_ref)
            ),
        );
    }
    for (i, s) in p.scopes.iter().enumerate() {
        if s.is_empty() || s.contains(char::is_whitespace) {
            c.push(
                format!("{path}.scopes[{i}]"),
                format!("{} is not a scope", quote(s)),
            );
        }
    }
    for (field, v) in [
        ("email", &p.claims.email),
        ("groups", &p.claims.groups),
        ("name", &p.claims.name),
    ] {
        if v.trim().is_empty() {
            c.push(format!("{path}.claims.{field}"), "must not be empty");
        }
    }
    for (i, d) in p.email_domains.iter().enumerate() {
        if !valid_dns_name(&d.to_ascii_lowercase()) || d.starts_with("*.") {
            c.push(
                format!("{path}.email_domains[{i}]"),
                format!("{} is not a domain (e.g. \"example.com\")", quote(d)),
            );
        }
    }
}

fn duration_in(
    s: &str,
    path: &str,
    min: Duration,
    max: Duration,
    c: &mut Collector,
) -> Option<Duration> {
    match parse_duration(s) {
        Ok(d) if d < min || d > max => {
            c.push(
                path,
                format!(
                    "{} is out of range ({} to {})",
                    quote(s),
                    crate::duration::format_duration(min),
                    crate::duration::format_duration(max)
                ),
            );
            None
        }
        Ok(d) => Some(d),
        Err(e) => {
            c.push(path, e);
            None
        }
    }
}

fn validate_upstream(u: &str, path: &str, c: &mut Collector) {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    let Some(rest) = rest else {
        c.push(
            path,
            format!("{} is not an upstream URL (http:// or https://)", quote(u)),
        );
        return;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, Some(p)),
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && (valid_dns_name(host)
            || host.parse::<std::net::IpAddr>().is_ok()
            || (host.starts_with('[') && host.ends_with(']')));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|n| n > 0));
    if !host_ok || !port_ok || authority.contains('@') || rest.contains(['?', '#']) {
        c.push(path, format!("{} is not an upstream URL (scheme://host[:port][/path], no credentials, query or fragment)", quote(u)));
    }
}

fn compile_app(
    app: &Application,
    ai: usize,
    path: &str,
    provider_ids: &HashSet<&str>,
    all_providers: &[String],
    c: &mut Collector,
) -> CompiledApp {
    c.unknown_fields(path, &app.extra);
    c.unknown_fields(&format!("{path}.session"), &app.session.extra);
    c.unknown_fields(&format!("{path}.mfa"), &app.mfa.extra);
    c.unknown_fields(&format!("{path}.staleness"), &app.staleness.extra);
    if !is_slug(&app.id) {
        c.push(
            format!("{path}.id"),
            format!(
                "{} is not an id (lowercase letters, digits, '-', '_')",
                quote(&app.id)
            ),
        );
    }
    if app.protocols.is_empty() {
        c.push(
            format!("{path}.protocols"),
            "an application needs at least one protocol",
        );
    }
    let mut seen = HashSet::new();
    for (i, p) in app.protocols.iter().enumerate() {
        if !seen.insert(*p) {
            c.push(format!("{path}.protocols[{i}]"), "duplicate protocol");
        }
    }
    let needs_upstream = app
        .protocols
        .iter()
        .any(|p| matches!(p, Protocol::Http | Protocol::H3));
    if needs_upstream && app.upstreams.is_empty() {
        c.push(
            format!("{path}.upstreams"),
            "an http or h3 application needs at least one upstream",
        );
    }
    for (i, u) in app.upstreams.iter().enumerate() {
        validate_upstream(u, &format!("{path}.upstreams[{i}]"), c);
    }
    for (i, p) in app.identity_providers.iter().enumerate() {
        if !provider_ids.contains(p.as_str()) {
            c.push(
                format!("{path}.identity_providers[{i}]"),
                format!("unknown identity provider {}", quote(p)),
            );
        }
    }
    let identity_providers = if app.identity_providers.is_empty() {
        all_providers.to_vec()
    } else {
        app.identity_providers.clone()
    };

    let lifetime = duration_in(
        &app.session.lifetime,
        &format!("{path}.session.lifetime"),
        MIN_SESSION,
        MAX_SESSION_LIFETIME,
        c,
    )
    .unwrap_or(MIN_SESSION);
    let idle = duration_in(
        &app.session.idle_timeout,
        &format!("{path}.session.idle_timeout"),
        MIN_SESSION,
        MAX_SESSION_LIFETIME,
        c,
    )
    .unwrap_or(MIN_SESSION);
    if idle > lifetime {
        c.push(
            format!("{path}.session.idle_timeout"),
            format!(
                "{} is longer than the session lifetime {}",
                quote(&app.session.idle_timeout),
                quote(&app.session.lifetime)
            ),
        );
    }

    if app.mfa.methods.is_empty() {
        c.push(
            format!("{path}.mfa.methods"),
            "at least one method is needed",
        );
    }
    check_unique_methods(&app.mfa.methods, &format!("{path}.mfa.methods"), c);
    let mfa_max_age = duration_in(
        &app.mfa.max_age,
        &format!("{path}.mfa.max_age"),
        MIN_SESSION,
        MAX_SESSION_LIFETIME,
        c,
    )
    .unwrap_or(MIN_SESSION);
    let app_methods = MethodSet::from_methods(&app.mfa.methods);
    let app_mfa = MfaRequirement {
        methods: app_methods,
        max_age: mfa_max_age,
        user_verification: app.mfa.require_user_verification,
    };

    let staleness = match (app.staleness.mode, &app.staleness.max_staleness) {
        (StalenessMode::FailOpen, Some(_)) => {
            c.push(
                format!("{path}.staleness.max_staleness"),
                "only applies to \"fail_closed\"; remove it or set mode to \"fail_closed\"",
            );
            Staleness::FailOpen
        }
        (StalenessMode::FailOpen, None) => Staleness::FailOpen,
        (StalenessMode::FailClosed, None) => Staleness::FailClosed(DEFAULT_STALENESS),
        (StalenessMode::FailClosed, Some(s)) => Staleness::FailClosed(
            duration_in(
                s,
                &format!("{path}.staleness.max_staleness"),
                Duration::from_secs(1),
                MAX_STALENESS,
                c,
            )
            .unwrap_or(DEFAULT_STALENESS),
        ),
    };
    if app.max_body_bytes == Some(0) {
        c.push(
            format!("{path}.max_body_bytes"),
            "must be greater than 0 (leave it out for no limit)",
        );
    }

    // Rules.
    if app.rules.is_empty() {
        c.push(
            format!("{path}.rules"),
            "an application needs at least one rule (with none, every request is denied)",
        );
    }
    let mut names: HashMap<&str, usize> = HashMap::new();
    let mut rules: Vec<CompiledRule> = Vec::with_capacity(app.rules.len());
    for (ri, r) in app.rules.iter().enumerate() {
        let rpath = format!("{path}.rules[{ri}]");
        if names.insert(r.name.as_str(), ri).is_some() {
            c.push(
                format!("{rpath}.name"),
                format!("duplicate rule name {}", quote(&r.name)),
            );
        }
        rules.push(compile_rule(
            r,
            ri,
            &rpath,
            provider_ids,
            app_mfa,
            app.mfa.required,
            c,
        ));
    }
    // Rollout replacements.
    let mut replaced: HashMap<usize, usize> = HashMap::new();
    for (ri, r) in app.rules.iter().enumerate() {
        let Some(target) = r.rollout.as_ref().and_then(|ro| ro.replaces.as_deref()) else {
            continue;
        };
        let rpath = format!("{path}.rules[{ri}].rollout.replaces");
        match names.get(target) {
            None => c.push(
                rpath,
                format!("no rule named {} in this application", quote(target)),
            ),
            Some(&t) if t == ri => c.push(rpath, "a rule cannot replace itself"),
            Some(&t) if app.rules[t].rollout.is_some() => c.push(
                rpath,
                format!(
                    "rule {} is itself in a rollout; finish that rollout first",
                    quote(target)
                ),
            ),
            Some(&t) => {
                if let Some(prev) = replaced.insert(t, ri) {
                    c.push(
                        rpath,
                        format!(
                            "rule {} is already replaced by rule {}",
                            quote(target),
                            quote(&app.rules[prev].name)
                        ),
                    );
                } else if let Some(rule) = rules.get_mut(t) {
                    rule.replaced_by = Some(ri);
                }
            }
        }
    }
    if app.rules.iter().any(|r| r.decision == RuleDecision::Allow) && identity_providers.is_empty()
    {
        c.push(
            format!("{path}.rules"),
            "allow rules need a sign-in, but no identity provider is configured",
        );
    }

    let mut bypass = Vec::new();
    let mut deny = Vec::new();
    let mut allow = Vec::new();
    for r in &rules {
        match r.decision {
            RuleDecision::Bypass => bypass.push(r.index),
            RuleDecision::Deny => deny.push(r.index),
            RuleDecision::Allow => allow.push(r.index),
        }
    }

    CompiledApp {
        index: ai,
        id: app.id.as_str().into(),
        name: app.name.as_deref().unwrap_or(&app.id).into(),
        upstreams: app.upstreams.clone(),
        protocols: app.protocols.clone(),
        identity_providers,
        session_lifetime: lifetime,
        idle_timeout: idle,
        mfa_required: app.mfa.required,
        mfa: app_mfa,
        staleness,
        max_body_bytes: app.max_body_bytes,
        rules: std::mem::take(&mut rules),
        bypass,
        deny,
        allow,
    }
}

fn check_unique_methods(methods: &[MfaMethod], path: &str, c: &mut Collector) {
    let mut seen = HashSet::new();
    for (i, m) in methods.iter().enumerate() {
        if !seen.insert(*m) {
            c.push(
                format!("{path}[{i}]"),
                format!("duplicate method \"{}\"", m.as_str()),
            );
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Include,
    Require,
    Exclude,
}

impl Slot {
    fn name(self) -> &'static str {
        match self {
            Slot::Include => "include",
            Slot::Require => "require",
            Slot::Exclude => "exclude",
        }
    }
}

fn compile_rule(
    r: &crate::document::Rule,
    ri: usize,
    path: &str,
    provider_ids: &HashSet<&str>,
    app_mfa: MfaRequirement,
    app_mfa_required: bool,
    c: &mut Collector,
) -> CompiledRule {
    c.unknown_fields(path, &r.extra);
    if r.name.trim().is_empty() || r.name.len() > 100 {
        c.push(format!("{path}.name"), "must be 1 to 100 characters");
    }
    if r.include.is_empty() {
        c.push(
            format!("{path}.include"),
            "at least one condition is needed (use {\"everyone\": true} to match all)",
        );
    }
    let mut needs_identity = false;
    let mut mfa: Option<MfaRequirement> = None;
    let mut include = AnySet::default();
    let mut exclude = AnySet::default();
    let mut require = Vec::new();
    for (slot, list) in [
        (Slot::Include, &r.include),
        (Slot::Require, &r.require),
        (Slot::Exclude, &r.exclude),
    ] {
        let mut nets = Vec::new();
        for (ci, cond) in list.iter().enumerate() {
            let cpath = format!("{path}.{}[{ci}]", slot.name());
            needs_identity |= cond_needs_identity(cond);
            if r.decision == RuleDecision::Bypass
                && !matches!(
                    cond,
                    Condition::Everyone(_) | Condition::Ip(_) | Condition::Time(_)
                )
            {
                c.push(&cpath, "bypass rules let requests through without sign-in, so they may only use everyone, ip and time conditions");
                continue;
            }
            if let Condition::Mfa(m) = cond {
                if slot != Slot::Require || r.decision != RuleDecision::Allow {
                    c.push(
                        format!("{cpath}.mfa"),
                        "mfa is only allowed in the require list of an allow rule",
                    );
                    continue;
                }
                if mfa.is_some() {
                    c.push(format!("{cpath}.mfa"), "only one mfa condition per rule");
                    continue;
                }
                mfa = Some(compile_mfa(m, &format!("{cpath}.mfa"), app_mfa, c));
                continue;
            }
            let Some(compiled) = compile_condition(cond, &cpath, provider_ids, c) else {
                continue;
            };
            match (slot, compiled) {
                (Slot::Require, cc) => require.push(cc),
                (Slot::Include, cc) => include.add(cc, &mut nets),
                (Slot::Exclude, cc) => exclude.add(cc, &mut nets),
            }
        }
        if !nets.is_empty() {
            match slot {
                Slot::Include => include.ips = IpTable::new(nets),
                Slot::Exclude => exclude.ips = IpTable::new(nets),
                Slot::Require => {}
            }
        }
    }
    if r.decision == RuleDecision::Allow && mfa.is_none() && app_mfa_required {
        mfa = Some(app_mfa);
    }
    let rollout = r.rollout.as_ref().map(|ro| {
        let rpath = format!("{path}.rollout");
        c.unknown_fields(&rpath, &ro.extra);
        let basis_points = match ro.percent {
            Some(p) if !(0.0..=100.0).contains(&p) || p.is_nan() => {
                c.push(
                    format!("{rpath}.percent"),
                    format!("{p} is not a percentage (0 to 100)"),
                );
                0
            }
            // In range, so the cast cannot truncate meaningfully.
            Some(p) => (p * 100.0).round() as u32,
            None => 0,
        };
        if ro.percent.is_none() && ro.device_groups.is_empty() {
            c.push(&rpath, "a rollout needs a percent, device groups, or both");
        }
        for (gi, g) in ro.device_groups.iter().enumerate() {
            if g.trim().is_empty() {
                c.push(format!("{rpath}.device_groups[{gi}]"), "must not be empty");
            }
        }
        RolloutReq {
            basis_points,
            device_groups: ro.device_groups.iter().map(|g| g.as_str().into()).collect(),
        }
    });
    CompiledRule {
        index: ri,
        name: r.name.as_str().into(),
        decision: r.decision,
        include,
        require,
        exclude,
        mfa,
        rollout,
        replaced_by: None,
        needs_identity,
        source: r.clone(),
    }
}

pub(crate) fn cond_needs_identity(c: &Condition) -> bool {
    matches!(
        c,
        Condition::Email(_)
            | Condition::EmailDomain(_)
            | Condition::Group(_)
            | Condition::Claim(_)
            | Condition::IdentityProvider(_)
            | Condition::Mfa(_)
    )
}

fn compile_mfa(
    m: &crate::document::MfaCondition,
    path: &str,
    app: MfaRequirement,
    c: &mut Collector,
) -> MfaRequirement {
    c.unknown_fields(path, &m.extra);
    let methods = match &m.methods {
        Some(ms) => {
            if ms.is_empty() {
                c.push(
                    format!("{path}.methods"),
                    "at least one method is needed (leave it out for the application's)",
                );
            }
            check_unique_methods(ms, &format!("{path}.methods"), c);
            for (i, method) in ms.iter().enumerate() {
                if !app.methods.contains(*method) {
                    c.push(
                        format!("{path}.methods[{i}]"),
                        format!("method \"{}\" is not accepted by the application (add it to the application's mfa.methods)", method.as_str()),
                    );
                }
            }
            MethodSet::from_methods(ms)
        }
        None => app.methods,
    };
    let max_age = match &m.max_age {
        Some(s) => duration_in(
            s,
            &format!("{path}.max_age"),
            MIN_SESSION,
            MAX_SESSION_LIFETIME,
            c,
        )
        .unwrap_or(app.max_age),
        None => app.max_age,
    };
    MfaRequirement {
        methods,
        max_age,
        user_verification: app.user_verification,
    }
}

fn parse_hhmm(s: &str) -> Option<u16> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let h: u16 = h.parse().ok()?;
    let m: u16 = m.parse().ok()?;
    (h < 24 && m < 60).then_some(h * 60 + m)
}

pub(crate) fn day_bit(d: Day) -> u8 {
    1 << match d {
        Day::Mon => 0,
        Day::Tue => 1,
        Day::Wed => 2,
        Day::Thu => 3,
        Day::Fri => 4,
        Day::Sat => 5,
        Day::Sun => 6,
    }
}

fn compile_condition(
    cond: &Condition,
    path: &str,
    provider_ids: &HashSet<&str>,
    c: &mut Collector,
) -> Option<Cond> {
    let start = c.violations.len();
    let out = match cond {
        Condition::Everyone(true) => Some(Cond::Everyone),
        Condition::Everyone(false) => {
            c.push(
                format!("{path}.everyone"),
                "false matches nothing; remove the condition instead",
            );
            None
        }
        Condition::Email(e) => {
            let e = e.trim().to_ascii_lowercase();
            match e.split_once('@') {
                Some((l, d)) if !l.is_empty() && valid_dns_name(d) && !d.contains('@') => {
                    Some(Cond::Email(e.into()))
                }
                _ => {
                    c.push(
                        format!("{path}.email"),
                        format!("{} is not an email address", quote(&e)),
                    );
                    None
                }
            }
        }
        Condition::EmailDomain(d) => {
            let d = d.trim().to_ascii_lowercase();
            if valid_dns_name(&d) {
                Some(Cond::EmailDomain(d.into()))
            } else {
                c.push(
                    format!("{path}.email_domain"),
                    format!(
                        "{} is not a domain (write \"example.com\", without \"@\")",
                        quote(&d)
                    ),
                );
                None
            }
        }
        Condition::Group(g) => {
            if g.is_empty() {
                c.push(format!("{path}.group"), "must not be empty");
                None
            } else {
                Some(Cond::Group(g.as_str().into()))
            }
        }
        Condition::Claim(cl) => {
            c.unknown_fields(&format!("{path}.claim"), &cl.extra);
            if cl.name.trim().is_empty() {
                c.push(format!("{path}.claim.name"), "must not be empty");
                None
            } else {
                Some(Cond::Claim(
                    cl.name.as_str().into(),
                    cl.value.as_str().into(),
                ))
            }
        }
        Condition::IdentityProvider(p) => {
            if provider_ids.contains(p.as_str()) {
                Some(Cond::Provider(p.as_str().into()))
            } else {
                c.push(
                    format!("{path}.identity_provider"),
                    format!("unknown identity provider {}", quote(p)),
                );
                None
            }
        }
        Condition::Ip(s) => match parse_net(s) {
            Some(net) => Some(Cond::Ip(net)),
            None => {
                c.push(format!("{path}.ip"), format!("{} is not a CIDR", quote(s)));
                None
            }
        },
        Condition::Device(d) => {
            let dpath = format!("{path}.device");
            c.unknown_fields(&dpath, &d.extra);
            if d.enrolled.is_none()
                && d.min_client_version.is_none()
                && d.mandatory_auth.is_none()
                && d.os.is_none()
                && d.disk_encrypted.is_none()
                && d.firewall.is_none()
                && d.screen_lock.is_none()
                && d.mdm_compliant.is_none()
                && d.max_age.is_none()
            {
                c.push(
                    &dpath,
                    "at least one of enrolled, min_client_version, mandatory_auth, os, disk_encrypted, firewall, screen_lock, mdm_compliant, max_age is needed",
                );
            }
            let min_version =
                d.min_client_version
                    .as_ref()
                    .and_then(|v| match semver::Version::parse(v) {
                        Ok(v) => Some(v),
                        Err(e) => {
                            c.push(
                                format!("{dpath}.min_client_version"),
                                format!(
                                    "{} is not a version (semver, e.g. \"2.4.0\"): {e}",
                                    quote(v)
                                ),
                            );
                            None
                        }
                    });
            if d.os.as_ref().is_some_and(|o| o.is_empty()) {
                c.push(
                    format!("{dpath}.os"),
                    "at least one operating system is needed (leave it out for any)",
                );
            }
            let max_age =
                d.max_age
                    .as_ref()
                    .and_then(|v| match crate::duration::parse_duration(v) {
                        Ok(a) if !a.is_zero() => Some(a),
                        Ok(_) => {
                            c.push(format!("{dpath}.max_age"), "must be longer than 0s");
                            None
                        }
                        Err(e) => {
                            c.push(format!("{dpath}.max_age"), e);
                            None
                        }
                    });
            let req = DeviceReq {
                enrolled: d.enrolled,
                min_version,
                mandatory_auth: d.mandatory_auth,
                os: d.os.clone(),
                disk_encrypted: d.disk_encrypted,
                firewall: d.firewall,
                screen_lock: d.screen_lock,
                mdm_compliant: d.mdm_compliant,
                max_age,
            };
            let asks_posture =
                d.min_client_version.is_some() || d.max_age.is_some() || req.checks_posture();
            if d.enrolled == Some(false) && asks_posture {
                c.push(&dpath, "enrolled: false cannot be combined with posture checks (an unmanaged device reports none)");
            }
            Some(Cond::Device(req))
        }
        Condition::DeviceGroup(g) => {
            if g.is_empty() {
                c.push(format!("{path}.device_group"), "must not be empty");
                None
            } else {
                Some(Cond::DeviceGroup(g.as_str().into()))
            }
        }
        Condition::Time(t) => {
            let tpath = format!("{path}.time");
            c.unknown_fields(&tpath, &t.extra);
            if t.days.is_empty() {
                c.push(format!("{tpath}.days"), "at least one day is needed");
            }
            let from = parse_hhmm(&t.from);
            if from.is_none() {
                c.push(
                    format!("{tpath}.from"),
                    format!("{} is not a time of day (HH:MM, 24-hour)", quote(&t.from)),
                );
            }
            let to = parse_hhmm(&t.to);
            if to.is_none() {
                c.push(
                    format!("{tpath}.to"),
                    format!("{} is not a time of day (HH:MM, 24-hour)", quote(&t.to)),
                );
            }
            if from.is_some() && from == to {
                c.push(
                    format!("{tpath}.to"),
                    "equals from: the window would be empty",
                );
            }
            let tz = match TimeZone::get(&t.time_zone) {
                Ok(tz) => Some(tz),
                Err(_) => {
                    c.push(
                        format!("{tpath}.time_zone"),
                        format!(
                            "{} is not an IANA time zone (e.g. \"Europe/Berlin\")",
                            quote(&t.time_zone)
                        ),
                    );
                    None
                }
            };
            match (from, to, tz) {
                (Some(from_min), Some(to_min), Some(tz)) => Some(Cond::Time(TimeReq {
                    days: t.days.iter().fold(0, |acc, d| acc | day_bit(*d)),
                    from_min,
                    to_min,
                    tz,
                })),
                _ => None,
            }
        }
        // Handled by the caller.
        Condition::Mfa(_) => None,
    };
    if c.violations.len() > start {
        None
    } else {
        out
    }
}
