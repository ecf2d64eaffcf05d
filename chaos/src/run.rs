//! Running a scenario: a cluster of real processes, the workload, the faults, and the
//! measurements a user would make from outside.
//!
//! **Enforcement latency** of a revocation is measured with real HTTPS requests carrying a real
//! session (signed in through the development identity provider): from the moment the admin API
//! acknowledges the revocation until every edge refuses the session (a non-200 answer; an edge
//! that is down refuses by not answering). Each edge keeps being probed for a second after that:
//! a later 200 is a violation. A policy change is measured the same way, until every edge serves
//! the new marker status.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use serde_json::json;

use crate::cluster::{ClusterSpec, LocalCluster, ops_get_at, ops_status_at};
use crate::devidp::DevIdp;
use crate::faultproxy::Faults;
use crate::scenario::{FaultKind, Scenario, Schedule, ScheduledFault};
use crate::upstream::Upstream;
use palisade_link::admin::IdempotencyKey;

const PROBE_HOST: &str = "probe.palisade.localhost";
const GUARDED_HOST: &str = "guarded.palisade.localhost";
const MARKER_HOST: &str = "marker.palisade.localhost";
/// A revocation not enforced by every edge within this bound is a violation.
pub const ENFORCEMENT_BOUND: Duration = Duration::from_secs(30);
/// The fail-closed application's limit in the scenario policy.
const GUARDED_MAX_STALENESS: Duration = Duration::from_secs(2);
/// Time after a heal still counted as part of the fault's phase.
const PHASE_GRACE_S: f64 = 2.0;

/// One measured change.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// `revocation` or `policy`.
    pub kind: &'static str,
    /// When the change was acknowledged, seconds since the workload started.
    pub acked_at_s: f64,
    /// Acknowledgement to enforcement at every edge, milliseconds.
    pub latency_ms: f64,
    /// The write itself: first attempt sent to acknowledgement, milliseconds.
    pub write_ms: f64,
    /// Acknowledgement to enforcement at each edge (in the cluster's edge order), milliseconds;
    /// the latency is the largest.
    pub edges_ms: Vec<f64>,
    /// The phase (`steady`, or a fault label).
    pub phase: String,
}

/// One invariant and whether it held.
#[derive(Debug, Clone, Serialize)]
pub struct Invariant {
    /// Name.
    pub name: &'static str,
    /// Held?
    pub ok: bool,
    /// What was checked, or what broke.
    pub detail: String,
}

/// Latency statistics of one phase.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseStats {
    /// Phase.
    pub phase: String,
    /// Changes measured.
    pub count: usize,
    /// Milliseconds.
    pub p50_ms: f64,
    /// Milliseconds.
    pub p99_ms: f64,
    /// Milliseconds.
    pub max_ms: f64,
}

/// One latency budget against what was measured.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetCheck {
    /// `steady_p99_ms`, `leader_fault_max_ms` or `edge_failover_max_ms`.
    pub name: &'static str,
    /// The phases it covers.
    pub phases: Vec<String>,
    /// The budget, milliseconds.
    pub budget_ms: f64,
    /// Measured (p99 or max), milliseconds.
    pub measured_ms: f64,
    /// Within budget?
    pub met: bool,
    /// Why the scenario file says it is not met yet, if it does.
    pub known_unmet: Option<String>,
}

impl BudgetCheck {
    /// Whether it fails the run: over budget and not declared.
    pub fn fails(&self) -> bool {
        !self.met && self.known_unmet.is_none()
    }
}

/// The budgets of `sc` against the phases measured.
fn check_budgets(sc: &Scenario, schedule: &Schedule, phases: &[PhaseStats]) -> Vec<BudgetCheck> {
    let b = &sc.budgets;
    let mut out = Vec::new();
    let mut push = |name: &'static str, budget: f64, covered: Vec<&PhaseStats>, p99: bool| {
        let covered: Vec<&PhaseStats> = covered.into_iter().filter(|p| p.count > 0).collect();
        if covered.is_empty() {
            return;
        }
        let measured = covered
            .iter()
            .map(|p| if p99 { p.p99_ms } else { p.max_ms })
            .fold(0.0, f64::max);
        out.push(BudgetCheck {
            name,
            phases: covered.iter().map(|p| p.phase.clone()).collect(),
            budget_ms: budget,
            measured_ms: measured,
            met: measured <= budget,
            known_unmet: b.known_unmet.get(name).cloned(),
        });
    };
    let of_kind = |kinds: &[FaultKind]| -> Vec<&PhaseStats> {
        schedule
            .faults
            .iter()
            .filter(|f| kinds.contains(&f.kind))
            .filter_map(|f| phases.iter().find(|p| p.phase == f.label()))
            .collect()
    };
    push(
        "steady_p99_ms",
        b.steady_p99_ms,
        phases.iter().filter(|p| p.phase == "steady").collect(),
        true,
    );
    push(
        "leader_fault_max_ms",
        b.leader_fault_max_ms,
        // a rolling restart kills the leader too, when its turn comes
        of_kind(&[
            FaultKind::KillLeader,
            FaultKind::PauseLeader,
            FaultKind::RollingRestart,
        ]),
        false,
    );
    push(
        "edge_failover_max_ms",
        b.edge_failover_max_ms,
        of_kind(&[FaultKind::PartitionEdge]),
        false,
    );
    out
}

/// Counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Counts {
    /// Revocations acknowledged.
    pub revocations_acked: usize,
    /// Revocations the admin API refused or failed (retried writes count once).
    pub revocations_failed: usize,
    /// Policy changes acknowledged.
    pub policy_changes_acked: usize,
    /// Policy changes failed (not acknowledged after retrying with their key for 10 s).
    pub policy_changes_failed: usize,
    /// Policy changes not started because the previous one was still in flight.
    pub policy_changes_skipped: usize,
    /// Probe requests sent.
    pub probes: u64,
}

/// The report of one scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The scenario as given.
    pub scenario: Scenario,
    /// What was scheduled from the seed.
    pub schedule: Schedule,
    /// Where it ran.
    pub environment: serde_json::Value,
    /// Latency by phase (all kinds together, and by kind).
    pub phases: Vec<PhaseStats>,
    /// Every measurement.
    pub samples: Vec<Sample>,
    /// Counters.
    pub counts: Counts,
    /// Invariants.
    pub invariants: Vec<Invariant>,
    /// Latency budgets against what was measured.
    pub budgets: Vec<BudgetCheck>,
    /// Each edge's own figures, as exported: commit to applied (`palisade_propagation_seconds`)
    /// and the time to apply one update (`palisade_edge_apply_seconds`).
    pub edge_propagation: BTreeMap<String, Vec<String>>,
    /// Where the machine's CPU went while the workload ran.
    pub cpu: Cpu,
    /// The leader when the workload ended, and the controller each edge was subscribed to
    /// then (0: none), in the cluster's edge order.
    pub subscriptions: Subscriptions,
    /// Wall time of the run, seconds.
    pub wall_s: f64,
    /// Whether every invariant held.
    pub passed: bool,
}

/// CPU time spent while the workload ran, by role, seconds (from `/proc`; a process restarted
/// during the run counts from its restart). On a 2-core machine, a sum near twice
/// `workload_s` means latency is measuring contention.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Cpu {
    /// Wall time of the workload.
    pub workload_s: f64,
    /// Every controller process.
    pub controllers_s: f64,
    /// Every edge process.
    pub edges_s: f64,
    /// This process: the probes, the identity provider, the upstream and the writers.
    pub harness_s: f64,
}

/// Who each edge followed when the workload ended.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Subscriptions {
    /// The leader's id (0: unknown).
    pub leader: u64,
    /// Each edge's controller.
    pub edges: Vec<u64>,
}

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: &str) -> f64 {
    // USER_HZ is 100 on every Linux architecture this runs on.
    const TICKS: f64 = 100.0;
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // the fields after the command name, which may itself contain spaces and parentheses
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / TICKS
}

/// CPU seconds by role so far, keyed by pid so a restarted process is counted afresh.
fn cpu_by_role(c: &LocalCluster) -> (HashMap<u32, f64>, HashMap<u32, f64>, f64) {
    let of = |children: Vec<&Option<std::process::Child>>| {
        children
            .into_iter()
            .flatten()
            .map(|ch| (ch.id(), cpu_seconds(&ch.id().to_string())))
            .collect::<HashMap<u32, f64>>()
    };
    (
        of(c.controllers.values().map(|p| &p.child).collect()),
        of(c.edges.iter().map(|e| &e.child).collect()),
        cpu_seconds("self"),
    )
}

/// The CPU used between two readings of `cpu_by_role`.
fn cpu_between(
    before: &(HashMap<u32, f64>, HashMap<u32, f64>, f64),
    after: &(HashMap<u32, f64>, HashMap<u32, f64>, f64),
    workload_s: f64,
) -> Cpu {
    let used = |b: &HashMap<u32, f64>, a: &HashMap<u32, f64>| -> f64 {
        a.iter()
            .map(|(pid, t)| t - b.get(pid).copied().unwrap_or(0.0))
            .sum()
    };
    Cpu {
        workload_s,
        controllers_s: used(&before.0, &after.0),
        edges_s: used(&before.1, &after.1),
        harness_s: after.2 - before.2,
    }
}

/// Everything the probers share.
struct Probe {
    /// One client per edge, resolving the probed names to that edge (edges keep their address
    /// across restarts).
    clients: Vec<(reqwest::Client, u16)>,
    /// Edges the runner killed (not answering counts as refusing only for them; a running
    /// edge that does not answer in time has not refused anything).
    down: Vec<std::sync::atomic::AtomicBool>,
    probes: std::sync::atomic::AtomicU64,
    violations: Mutex<Vec<String>>,
}

impl Probe {
    async fn status(&self, host: &str, edge: usize, cookie: Option<&str>) -> Option<u16> {
        self.probes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (http, port) = &self.clients[edge];
        let mut r = http.get(format!("https://{host}:{port}/"));
        if let Some(c) = cookie {
            r = r.header("cookie", format!("__Host-palisade-session={c}"));
        }
        match r.send().await {
            Ok(resp) => {
                let s = resp.status().as_u16();
                let _ = resp.bytes().await;
                Some(s)
            }
            Err(_) => None,
        }
    }

    /// The marker rule an edge decides `marker` by (`marker-<n>`: its number), `None` when
    /// the edge does not answer.
    async fn marker(&self, edge: usize) -> Option<u64> {
        self.probes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (http, port) = &self.clients[edge];
        let resp = http
            .get(format!("https://{MARKER_HOST}:{port}/"))
            .header("accept", "text/html")
            .send()
            .await
            .ok()?;
        let body = resp.text().await.ok()?;
        marker_number(&body)
    }

    /// Whether `edge` answered, and whether its answer shows `target` in force.
    async fn observe(&self, edge: usize, target: &Target) -> (bool, bool) {
        match target {
            Target::Revoked(cookie) => {
                let s = self.status(PROBE_HOST, edge, Some(cookie)).await;
                (s.is_some(), refused(s))
            }
            Target::Marker(n) => {
                let m = self.marker(edge).await;
                (m.is_some(), m.is_some_and(|m| m >= *n))
            }
        }
    }

    fn violation(&self, v: String) {
        self.violations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(v);
    }

    /// Probes every edge until its answers show `target` in force; returns when each edge did
    /// (the last is the enforcement time), or `None` past the bound. Keeps checking each edge for a
    /// second after: an answer showing `target` not in force is a violation.
    async fn until_all(
        self: &Arc<Self>,
        target: Target,
        what: String,
        current: Option<(Arc<std::sync::atomic::AtomicU64>, u64)>,
    ) -> Option<Vec<Instant>> {
        let mut tasks = Vec::new();
        for edge in 0..self.clients.len() {
            let p = self.clone();
            let target = target.clone();
            let what = what.clone();
            let current = current.clone();
            tasks.push(tokio::spawn(async move {
                let start = Instant::now();
                let at = loop {
                    let (answered, done) = p.observe(edge, &target).await;
                    let down = p.down[edge].load(std::sync::atomic::Ordering::SeqCst);
                    if (answered || down) && done {
                        break Instant::now();
                    }
                    let superseded = current.as_ref().is_some_and(|(g, mine)| {
                        g.load(std::sync::atomic::Ordering::SeqCst) != *mine
                    });
                    if superseded {
                        return None;
                    }
                    if start.elapsed() > ENFORCEMENT_BOUND {
                        p.violation(format!(
                            "edge {edge}: {what} not enforced within {ENFORCEMENT_BOUND:?}"
                        ));
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                };
                // Once enforced, it stays enforced. A newer policy change carries a higher
                // marker number, so it keeps this one in force: no race with it to exclude.
                let until = Instant::now() + Duration::from_secs(1);
                while Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    let (answered, done) = p.observe(edge, &target).await;
                    // no answer (the edge is down) serves nothing: not a regression
                    if answered && !done {
                        p.violation(format!("edge {edge}: {what} was enforced, then not"));
                        break;
                    }
                }
                Some(at)
            }));
        }
        let mut each = Vec::with_capacity(tasks.len());
        for t in tasks {
            each.push(t.await.ok().flatten()?);
        }
        Some(each)
    }
}

/// What a measurement waits for.
#[derive(Debug, Clone)]
enum Target {
    /// The session (this cookie) refused.
    Revoked(String),
    /// The marker application decided by marker rule `n` or a newer one.
    Marker(u64),
}

fn refused(s: Option<u16>) -> bool {
    s != Some(200)
}

/// The number of the marker rule a denial page names (`marker-<n>`).
fn marker_number(body: &str) -> Option<u64> {
    let at = body.find("marker-")? + "marker-".len();
    let digits: String = body[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// The scenario's policy. The marker application denies everyone by a rule named
/// `marker-<marker>`, which its denial page shows: each policy change numbers it anew, so a
/// probe sees which change an edge enforces (a marker that only flipped between two states
/// could not tell a change from the one before the last, at an edge that lags).
pub fn policy(
    issuer: &str,
    client_id: &str,
    upstream: std::net::SocketAddr,
    marker: u64,
) -> String {
    let up = format!("http://{upstream}");
    json!({
        "schema_version": 1,
        "identity_providers": [{"id": "dev", "issuer": issuer, "client_id": client_id,
            "client_secret_ref": "dev-oidc", "scopes": ["openid", "email", "profile", "groups"],
            "claims": {"email": "email", "groups": "groups", "name": "name"}}],
        "apps": [
            {"id": "probe", "hosts": [PROBE_HOST], "upstreams": [up], "mfa": {"required": false},
             "session": {"lifetime": "2h", "idle_timeout": "1h"},
             "rules": [{"name": "staff", "decision": "allow", "include": [{"email_domain": "example.com"}]}]},
            {"id": "guarded", "hosts": [GUARDED_HOST], "upstreams": [up], "mfa": {"required": false},
             "staleness": {"mode": "fail_closed", "max_staleness": "2s"},
             "rules": [{"name": "public", "decision": "bypass", "include": [{"everyone": true}]}]},
            {"id": "marker", "hosts": [MARKER_HOST], "upstreams": [up], "mfa": {"required": false},
             "rules": [{"name": format!("marker-{marker}"),
                        "decision": "deny",
                        "include": [{"everyone": true}]}]}
        ]
    })
    .to_string()
}

fn session_id(cookie: &str) -> Option<String> {
    use base64::Engine;
    let payload = cookie.split('.').nth(2)?;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&raw).ok()?;
    v["sid"].as_str().map(String::from)
}

/// Revokes a session, retrying (as any client would) while there is no leader, for up to 15 s.
/// Every attempt carries the same idempotency key, so the revocation is written once however
/// many answers are lost.
async fn revoke(admin: &palisade_link::admin::AdminClient, sid: &str) -> Result<String, String> {
    let deadline = Instant::now() + Duration::from_secs(15);
    let key = IdempotencyKey::random();
    loop {
        match revoke_once(admin, &key, sid).await {
            Ok(id) => return Ok(id),
            Err((code, msg)) => {
                let transient = matches!(
                    code,
                    tonic::Code::Unavailable
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                        | tonic::Code::DeadlineExceeded
                );
                if !transient || Instant::now() > deadline {
                    return Err(msg);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn revoke_once(
    admin: &palisade_link::admin::AdminClient,
    key: &IdempotencyKey,
    sid: &str,
) -> Result<String, (tonic::Code, String)> {
    crate::cluster::revoke_session_keyed(admin, key, sid, "chaos")
        .await
        .map(|(_, id)| id)
        .map_err(|s| (s.code(), s.message().to_string()))
}

/// How long the policy writer retries one change (with its key) before counting it failed.
const POLICY_WRITE_FOR: Duration = Duration::from_secs(10);

/// Writes the workload's policy changes one at a time, each conditional on the version last
/// seen and named by one idempotency key for all its retries, and starts the measurement of
/// each acknowledged one.
struct PolicyWriter {
    admin: Arc<palisade_link::admin::AdminClient>,
    probe: Arc<Probe>,
    samples: Arc<Mutex<Vec<Sample>>>,
    counts: Arc<Mutex<Counts>>,
    faults: Vec<ScheduledFault>,
    /// The document with marker rule `n`.
    doc: Arc<dyn Fn(u64) -> String + Send + Sync>,
    /// The marker number in force (as last acknowledged or read).
    marker: u64,
    version: u64,
    start: Instant,
}

impl PolicyWriter {
    /// Runs until `ticks` closes; returns the measurements still running.
    async fn run(
        mut self,
        mut ticks: tokio::sync::mpsc::Receiver<()>,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut workers = Vec::new();
        // Bumped for each change: the measurement of the previous one stops (the newer one is
        // measured on its own).
        let generation = Arc::new(std::sync::atomic::AtomicU64::new(0));
        while ticks.recv().await.is_some() {
            let marker = self.marker + 1;
            let doc = (self.doc)(marker);
            let mine = generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let key = IdempotencyKey::random();
            let sent = Instant::now();
            let until = sent + POLICY_WRITE_FOR;
            let written = loop {
                let attempt = tokio::time::timeout(
                    POLICY_WRITE_FOR,
                    crate::cluster::apply_policy_keyed(
                        &self.admin,
                        &key,
                        &doc,
                        "chaos: flip the marker",
                        self.version,
                    ),
                )
                .await;
                match attempt {
                    Ok(Ok(w)) => break Ok(w),
                    Ok(Err(s))
                        if matches!(
                            s.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Unknown
                                | tonic::Code::Cancelled
                                | tonic::Code::DeadlineExceeded
                        ) && Instant::now() < until =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                    Ok(Err(s)) => break Err(s.message().to_string()),
                    Err(_) => break Err("no answer within 10 s".to_string()),
                }
            };
            let ack = Instant::now();
            let (_, version) = match written {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "policy change not acknowledged");
                    self.counts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .policy_changes_failed += 1;
                    // Its outcome is unknown: learn what is current (a later retry of it
                    // under its key can no longer apply: its version is no longer current).
                    if let Ok(Ok((v, doc))) = tokio::time::timeout(
                        Duration::from_secs(5),
                        crate::cluster::current_policy(&self.admin),
                    )
                    .await
                    {
                        self.version = v;
                        self.marker = marker_number(&doc).unwrap_or(self.marker);
                    }
                    continue;
                }
            };
            self.version = version;
            self.marker = marker;
            self.counts
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .policy_changes_acked += 1;
            let current = Some((generation.clone(), mine));
            let (probe, samples, faults, start) = (
                self.probe.clone(),
                self.samples.clone(),
                self.faults.clone(),
                self.start,
            );
            workers.push(tokio::spawn(async move {
                let done = probe
                    .until_all(
                        Target::Marker(marker),
                        format!("policy change to v{version} (rule marker-{marker})"),
                        current,
                    )
                    .await;
                if let Some(done) = done {
                    record(&samples, "policy", start, (sent, ack, done), &faults);
                }
            }));
        }
        workers
    }
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Revoke(usize),
    Policy,
    Start(usize),
    Heal(usize),
    RollKill(u64),
    RollStart(u64),
}

fn timeline(s: &Schedule, controllers: u64) -> Vec<(f64, Action)> {
    let mut out: Vec<(f64, Action)> = Vec::new();
    out.extend(
        s.revocations_s
            .iter()
            .enumerate()
            .map(|(i, t)| (*t, Action::Revoke(i))),
    );
    out.extend(s.policy_changes_s.iter().map(|t| (*t, Action::Policy)));
    for (i, f) in s.faults.iter().enumerate() {
        if f.kind == FaultKind::RollingRestart {
            let step = (f.end_s - f.start_s) / controllers as f64;
            for k in 0..controllers {
                let t = f.start_s + step * k as f64;
                out.push((t, Action::RollKill(k + 1)));
                out.push((t + step / 2.0, Action::RollStart(k + 1)));
            }
        } else {
            out.push((f.start_s, Action::Start(i)));
            out.push((f.end_s, Action::Heal(i)));
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

/// The `n`-th follower (modulo their number) at this moment.
async fn nth_follower(c: &LocalCluster, n: usize) -> u64 {
    let l = c.leader().await;
    let followers: Vec<u64> = c
        .controllers
        .keys()
        .copied()
        .filter(|id| *id != l)
        .collect();
    followers[n % followers.len()]
}

/// The addresses of every controller but `except` (namespaces only).
fn controller_ips(c: &LocalCluster, except: u64) -> Vec<std::net::Ipv4Addr> {
    c.controllers
        .values()
        .filter(|p| p.id != except)
        .filter_map(|p| match p.ip {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })
        .collect()
}

/// Records one measured change: sent at `sent`, acknowledged at `ack`, enforced at each edge
/// at `done`.
fn record(
    samples: &Mutex<Vec<Sample>>,
    kind: &'static str,
    start: Instant,
    (sent, ack, done): (Instant, Instant, Vec<Instant>),
    faults: &[ScheduledFault],
) {
    let t = ack.duration_since(start).as_secs_f64();
    let ms = |at: Instant| at.saturating_duration_since(ack).as_secs_f64() * 1e3;
    let edges_ms: Vec<f64> = done.iter().map(|at| ms(*at)).collect();
    samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Sample {
            kind,
            acked_at_s: t,
            latency_ms: edges_ms.iter().copied().fold(0.0, f64::max),
            write_ms: ack.duration_since(sent).as_secs_f64() * 1e3,
            edges_ms,
            phase: phase_of(t, faults),
        });
}

fn phase_of(t: f64, faults: &[ScheduledFault]) -> String {
    faults
        .iter()
        .find(|f| t >= f.start_s && t <= f.end_s + PHASE_GRACE_S)
        .map(|f| f.label())
        .unwrap_or_else(|| "steady".into())
}

/// p50, p99 and max of `v`, labelled `phase`.
pub fn stats(phase: &str, mut v: Vec<f64>) -> PhaseStats {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| {
        if v.is_empty() {
            0.0
        } else {
            v[((v.len() - 1) as f64 * q).round() as usize]
        }
    };
    PhaseStats {
        phase: phase.to_string(),
        count: v.len(),
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: v.last().copied().unwrap_or(0.0),
    }
}

fn environment() -> serde_json::Value {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "os": std::env::consts::OS,
        "kernel": kernel,
        "palisade": env!("CARGO_PKG_VERSION"),
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "network": "loopback",
    })
}

async fn scrape(addr: std::net::SocketAddr) -> Option<String> {
    ops_get_at(addr, "/metrics").await
}

/// Runs one scenario. `host` is the binary that runs the process roles; `dir` keeps the
/// cluster's files when given.
pub async fn run(sc: &Scenario, host: PathBuf, dir: Option<PathBuf>) -> anyhow::Result<Report> {
    let wall = Instant::now();
    let schedule = sc.schedule();
    let tmp = tempfile::Builder::new()
        .prefix("palisade-chaos-")
        .tempdir()?;
    // A kept directory must start empty: controllers would otherwise start from an earlier
    // run's data, whose members sat at other addresses, and never elect a leader.
    if let Some(d) = &dir
        && std::fs::read_dir(d).is_ok_and(|mut entries| entries.next().is_some())
    {
        anyhow::bail!(
            "{} is not empty; --dir keeps one run's files and needs an empty or new directory",
            d.display()
        );
    }
    let dir = dir.unwrap_or_else(|| tmp.path().to_path_buf());
    let mut spec = ClusterSpec::new(sc.controllers, sc.edges, host, dir.clone());
    // The workload signs in one session per scheduled revocation from this one address (two
    // `/.palisade/` requests each): a load generator, not a client the per-address limits are
    // for. A release build signs in faster than the reserved-path limit allows.
    spec.edge_args = ["--rate-sign-in", "0/0", "--rate-reserved", "0/0"]
        .map(String::from)
        .to_vec();
    // Every revision each edge applies is logged (`applied.rs`), and checked afterwards.
    spec.log_filter = format!("info,openraft=warn,{}", crate::applied::FILTER);
    spec.network = sc.network;
    // In namespaces the edges reach the identity provider by the bridge's address, so it
    // serves HTTPS with a certificate from its own CA, which the edges are told to trust.
    let idp_ca = match sc.network {
        crate::cluster::Network::Namespaces => {
            let ca = palisade_link::pki::DevCa::new()?;
            std::fs::create_dir_all(&dir)?;
            let path = dir.join("idp-ca.pem");
            std::fs::write(&path, &ca.ca_pem)?;
            spec.idp_ca = Some(path);
            Some(ca)
        }
        _ => None,
    };
    let mut cluster = LocalCluster::start(spec).await?;
    let ca = cluster.pki_file("ingress-ca.pem")?;
    let harness = cluster.harness_ip();
    let upstream = Upstream::start(
        std::net::SocketAddr::new(harness, 0),
        format!(
            "https://localhost:{}/.well-known/palisade/jwks.json",
            cluster.edges[0].https().port()
        ),
        Some(&ca),
        None,
    )
    .await?;
    let idp_addr = std::net::SocketAddr::new(harness, 0);
    let idp = match &idp_ca {
        Some(ca) => DevIdp::start_tls(idp_addr, "palisade-chaos", ca).await?,
        None => DevIdp::start(idp_addr, "palisade-chaos").await?,
    };
    cluster
        .put_secret("dev-oidc", idp.client_secret.as_bytes())
        .await?;
    let marker = 0;
    let (rev, policy_version) = cluster
        .apply_policy_if(
            &policy(&idp.issuer, &idp.client_id, upstream.addr, marker),
            "chaos: initial",
            0,
        )
        .await?;
    cluster.wait_edges(rev, Duration::from_secs(20)).await?;

    let client_for = |edge: std::net::SocketAddr| -> anyhow::Result<reqwest::Client> {
        let at = std::net::SocketAddr::new(edge.ip(), 0);
        let mut b = reqwest::Client::builder();
        if let Some(idp) = &idp_ca {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(idp.ca_pem.as_bytes())?);
        }
        Ok(b.redirect(reqwest::redirect::Policy::none())
            .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes())?)
            .resolve(PROBE_HOST, at)
            .resolve(GUARDED_HOST, at)
            .resolve(MARKER_HOST, at)
            .timeout(Duration::from_secs(2))
            .connect_timeout(Duration::from_millis(500))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()?)
    };
    let mut clients = Vec::new();
    for e in &cluster.edges {
        clients.push((client_for(e.https())?, e.https().port()));
    }
    // one session per revocation, plus a canary that is never revoked
    let port0 = cluster.edges[0].https().port();
    let mut cookies = Vec::new();
    for _ in 0..=schedule.revocations_s.len() {
        cookies.push(
            crate::devidp::sign_in(&clients[0].0, PROBE_HOST, port0, "alice")
                .await
                .context("signing in for the workload")?,
        );
    }
    let canary = cookies.pop().context("canary")?;
    let probe = Arc::new(Probe {
        down: clients
            .iter()
            .map(|_| std::sync::atomic::AtomicBool::new(false))
            .collect(),
        clients,
        probes: Default::default(),
        violations: Mutex::new(Vec::new()),
    });
    let unknown = std::net::SocketAddr::from(([127, 0, 0, 1], 9));
    let ops_ports: Arc<Mutex<Vec<(u64, std::net::SocketAddr)>>> = Arc::new(Mutex::new(
        cluster
            .edges
            .iter()
            .map(|e| (0u64, e.addrs.as_ref().map(|a| a.ops).unwrap_or(unknown)))
            .collect(),
    ));
    let admin = Arc::new(cluster.admin()?);
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let counts: Arc<Mutex<Counts>> = Arc::default();
    let mut stale_checks = Vec::new();
    let mut snapshot_checks = Vec::new();
    let mut faulted: HashMap<usize, Vec<u64>> = HashMap::new();
    let mut workers = Vec::new();
    let start = Instant::now();
    let cpu_before = cpu_by_role(&cluster);
    let mut incarnation = 0u64;
    let (issuer, client_id, upstream_addr) =
        (idp.issuer.clone(), idp.client_id.clone(), upstream.addr);
    // Policy changes: written in order by their own task, so no write (however long its
    // answer takes) holds up the fault schedule.
    let (policy_tx, policy_rx) = tokio::sync::mpsc::channel::<()>(1);
    let policy_writer = tokio::spawn(
        PolicyWriter {
            admin: admin.clone(),
            probe: probe.clone(),
            samples: samples.clone(),
            counts: counts.clone(),
            faults: schedule.faults.clone(),
            doc: Arc::new(move |open| policy(&issuer, &client_id, upstream_addr, open)),
            marker,
            version: policy_version,
            start,
        }
        .run(policy_rx),
    );

    for (t, action) in timeline(&schedule, sc.controllers) {
        let due = start + Duration::from_secs_f64(t);
        tokio::time::sleep_until(due.into()).await;
        match action {
            Action::Revoke(i) => {
                let cookie = cookies[i].clone();
                let (admin, probe, samples, acked, counts, faults) = (
                    admin.clone(),
                    probe.clone(),
                    samples.clone(),
                    acked.clone(),
                    counts.clone(),
                    schedule.faults.clone(),
                );
                workers.push(tokio::spawn(async move {
                    let Some(sid) = session_id(&cookie) else {
                        return;
                    };
                    let sent = Instant::now();
                    let id = match revoke(&admin, &sid).await {
                        Ok(id) => id,
                        Err(e) => {
                            tracing::warn!(error = %e, "revocation not acknowledged");
                            counts
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .revocations_failed += 1;
                            return;
                        }
                    };
                    let ack = Instant::now();
                    acked.lock().unwrap_or_else(|p| p.into_inner()).push(id);
                    counts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .revocations_acked += 1;
                    if let Some(done) = probe
                        .until_all(
                            Target::Revoked(cookie),
                            format!("revocation of session {sid}"),
                            None,
                        )
                        .await
                    {
                        record(&samples, "revocation", start, (sent, ack, done), &faults);
                    }
                }));
            }
            Action::Policy => {
                // The writer takes one change at a time; while one is still in flight (a
                // frozen leader, a lost answer being retried), a due change is skipped and
                // counted, and the fault schedule goes on regardless.
                if policy_tx.try_send(()).is_err() {
                    counts
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .policy_changes_skipped += 1;
                }
            }
            Action::Start(i) => {
                let f = &schedule.faults[i];
                tracing::info!(fault = %f.label(), "fault starts");
                match f.kind {
                    FaultKind::KillLeader => {
                        let l = cluster.leader().await;
                        cluster.kill_controller(l);
                        faulted.insert(i, vec![l]);
                    }
                    FaultKind::PauseLeader => {
                        let l = cluster.leader().await;
                        cluster.pause_controller(l)?;
                        faulted.insert(i, vec![l]);
                    }
                    FaultKind::KillFollower => {
                        let victim = nth_follower(&cluster, f.follower).await;
                        cluster.kill_controller(victim);
                        faulted.insert(i, vec![victim]);
                    }
                    FaultKind::KillEdge => {
                        probe.down[f.edge].store(true, std::sync::atomic::Ordering::SeqCst);
                        cluster.kill_edge(f.edge);
                    }
                    FaultKind::PauseAllControllers => {
                        let ids: Vec<u64> = cluster.controllers.keys().copied().collect();
                        for id in &ids {
                            cluster.pause_controller(*id)?;
                        }
                        faulted.insert(i, ids);
                        // once the view is older than the limit (plus the time to notice), the
                        // fail-closed application must be refused at every edge
                        let check_at =
                            Instant::now() + GUARDED_MAX_STALENESS + Duration::from_millis(1500);
                        if check_at < start + Duration::from_secs_f64(f.end_s) {
                            let probe = probe.clone();
                            let edges = cluster.edges.len();
                            let label = f.label();
                            stale_checks.push(tokio::spawn(async move {
                                tokio::time::sleep_until(check_at.into()).await;
                                let mut bad = Vec::new();
                                for e in 0..edges {
                                    let s = probe.status(GUARDED_HOST, e, None).await;
                                    if s == Some(200) {
                                        bad.push(e);
                                    }
                                }
                                (label, bad)
                            }));
                        }
                    }
                    FaultKind::RollingRestart => {}
                    FaultKind::PartitionLeader | FaultKind::OneWayPartition => {
                        let l = cluster.leader().await;
                        let others = controller_ips(&cluster, l);
                        if let Some(lab) = &cluster.lab {
                            lab.partition(
                                &format!("c{l}"),
                                &others,
                                f.kind == FaultKind::OneWayPartition,
                            )?;
                        }
                        faulted.insert(i, vec![l]);
                    }
                    FaultKind::PartitionEdge => {
                        let edge_id = cluster.edges[f.edge].id.clone();
                        let to = cluster.edge_controller(&edge_id).await.unwrap_or(0);
                        if let (Some(lab), Some(c)) = (&cluster.lab, cluster.controllers.get(&to)) {
                            let ip = match c.ip {
                                std::net::IpAddr::V4(v4) => vec![v4],
                                std::net::IpAddr::V6(_) => Vec::new(),
                            };
                            lab.partition(&edge_id, &ip, false)?;
                        }
                        tracing::info!(edge = %edge_id, controller = to, "edge cut off from its controller");
                    }
                    FaultKind::LinkDown => {
                        let l = cluster.leader().await;
                        if let Some(lab) = &cluster.lab {
                            lab.link(&format!("c{l}"), false)?;
                        }
                        faulted.insert(i, vec![l]);
                    }
                    FaultKind::LinkDelay | FaultKind::LinkLoss => {
                        let faults = if f.kind == FaultKind::LinkDelay {
                            Faults {
                                delay: Duration::from_millis(f.delay_ms),
                                jitter: Duration::from_millis(f.jitter_ms),
                                ..Faults::none()
                            }
                        } else {
                            Faults {
                                loss: f.loss,
                                ..Faults::none()
                            }
                        };
                        for p in cluster.proxies.values() {
                            p.set(faults);
                        }
                    }
                    FaultKind::StallLeader => {
                        let l = cluster.leader().await;
                        if let Some(p) = cluster.proxies.get(&l) {
                            p.set(Faults {
                                stalled: true,
                                ..Faults::none()
                            });
                        }
                        faulted.insert(i, vec![l]);
                    }
                    FaultKind::MembershipChange => {
                        let victim = nth_follower(&cluster, f.follower).await;
                        let current: Vec<u64> = cluster.controllers.keys().copied().collect();
                        let t = Instant::now();
                        // Bounded like every other call here: the heals must come on time.
                        let changed = tokio::time::timeout(
                            Duration::from_secs(30),
                            cluster.add_controller(|new| {
                                current
                                    .iter()
                                    .copied()
                                    .filter(|c| *c != victim)
                                    .chain([new])
                                    .collect()
                            }),
                        )
                        .await
                        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within 30 s")));
                        match changed {
                            Ok(new) => {
                                tracing::info!(added = new, removed = victim, took = ?t.elapsed(), "membership changed");
                                cluster.retire_controller(victim);
                            }
                            Err(e) => probe.violation(format!("membership change failed: {e:#}")),
                        }
                    }
                }
            }
            Action::Heal(i) => {
                let f = &schedule.faults[i];
                tracing::info!(fault = %f.label(), "fault heals");
                match f.kind {
                    FaultKind::KillLeader | FaultKind::KillFollower => {
                        for id in faulted.remove(&i).unwrap_or_default() {
                            cluster.spawn_controller(id)?;
                        }
                    }
                    FaultKind::PauseLeader | FaultKind::PauseAllControllers => {
                        for id in faulted.remove(&i).unwrap_or_default() {
                            cluster.resume_controller(id)?;
                        }
                    }
                    FaultKind::KillEdge => {
                        cluster.spawn_edge(f.edge).await?;
                        probe.down[f.edge].store(false, std::sync::atomic::Ordering::SeqCst);
                        incarnation += 1;
                        let e = &cluster.edges[f.edge];
                        let ops = e.addrs.as_ref().map(|a| a.ops).unwrap_or(unknown);
                        ops_ports.lock().unwrap_or_else(|p| p.into_inner())[f.edge] =
                            (incarnation, ops);
                        // while it has no snapshot, it must serve nothing
                        let (probe, canary, edge) = (probe.clone(), canary.clone(), f.edge);
                        snapshot_checks.push(tokio::spawn(async move {
                            let until = Instant::now() + Duration::from_secs(3);
                            let mut served_unready = 0;
                            while Instant::now() < until {
                                let s = probe.status(PROBE_HOST, edge, Some(&canary)).await;
                                // readiness only ever turns true, so a 200 followed by a
                                // not-ready answer was served without a snapshot
                                if s == Some(200)
                                    && ops_status_at(ops, "/readyz").await != Some(200)
                                {
                                    served_unready += 1;
                                }
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            (edge, served_unready)
                        }));
                    }
                    FaultKind::RollingRestart | FaultKind::MembershipChange => {}
                    FaultKind::PartitionLeader
                    | FaultKind::OneWayPartition
                    | FaultKind::PartitionEdge => {
                        if let Some(lab) = &cluster.lab {
                            let names: Vec<String> = lab.hosts.keys().cloned().collect();
                            for n in names {
                                lab.heal(&n)?;
                            }
                        }
                        faulted.remove(&i);
                    }
                    FaultKind::LinkDown => {
                        for id in faulted.remove(&i).unwrap_or_default() {
                            if let Some(lab) = &cluster.lab {
                                lab.link(&format!("c{id}"), true)?;
                            }
                        }
                    }
                    FaultKind::LinkDelay | FaultKind::LinkLoss | FaultKind::StallLeader => {
                        for p in cluster.proxies.values() {
                            p.set(Faults::none());
                        }
                        faulted.remove(&i);
                    }
                }
            }
            Action::RollKill(id) => cluster.kill_controller(id),
            Action::RollStart(id) => cluster.spawn_controller(id)?,
        }
    }
    // the workload is over: let the last measurements finish
    drop(policy_tx);
    if let Ok(policy_workers) = policy_writer.await {
        workers.extend(policy_workers);
    }
    for w in workers {
        let _ = w.await;
    }
    let cpu = cpu_between(
        &cpu_before,
        &cpu_by_role(&cluster),
        start.elapsed().as_secs_f64(),
    );
    let mut subscriptions = Subscriptions {
        leader: tokio::time::timeout(Duration::from_secs(5), cluster.leader())
            .await
            .unwrap_or(0),
        edges: Vec::new(),
    };
    for e in &cluster.edges {
        let to = tokio::time::timeout(Duration::from_secs(5), cluster.edge_controller(&e.id))
            .await
            .ok()
            .flatten();
        subscriptions.edges.push(to.unwrap_or(0));
    }
    let mut invariants = Vec::new();

    // convergence: every edge applies the cluster's latest revision
    let converged = match cluster.latest_revision().await {
        Ok(rev) => cluster
            .wait_edges(rev, Duration::from_secs(30))
            .await
            .map(|_| format!("every edge applied revision {rev}"))
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    // no acknowledged write lost
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    // Every page: the admin API caps a page at 1,000.
    match crate::cluster::list_revocations(&admin).await {
        Ok(all) => {
            let listed: std::collections::HashSet<String> = all.into_iter().map(|r| r.id).collect();
            let lost: Vec<&String> = acked.iter().filter(|id| !listed.contains(*id)).collect();
            invariants.push(Invariant {
                name: "no acknowledged write is lost",
                ok: lost.is_empty(),
                detail: if lost.is_empty() {
                    format!("{} acknowledged revocations all present", acked.len())
                } else {
                    format!("missing {} of {}: {lost:?}", lost.len(), acked.len())
                },
            });
        }
        Err(e) => invariants.push(Invariant {
            name: "no acknowledged write is lost",
            ok: false,
            detail: format!("the revocations could not be listed: {e}"),
        }),
    }
    let violations = probe
        .violations
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // Every install at every edge, from the edges' own logs.
    let mut regressions = Vec::new();
    let mut refused_updates = Vec::new();
    let mut installs = 0;
    for e in &cluster.edges {
        let log = std::fs::read_to_string(&e.log).unwrap_or_default();
        let history = crate::applied::parse(&log);
        installs += history.installs();
        regressions.extend(
            history
                .violations()
                .into_iter()
                .map(|v| format!("{}: {v}", e.id)),
        );
        let n = log.matches("refused an update").count();
        if n > 0 {
            refused_updates.push(format!(
                "{}: {n} refused updates (gap or invalid delta)",
                e.id
            ));
        }
    }
    invariants.push(Invariant {
        name: "revisions at each edge: no gap, no duplicate, no regression",
        ok: installs > 0 && regressions.is_empty() && refused_updates.is_empty(),
        detail: if installs == 0 {
            "no install was logged: the check saw nothing".into()
        } else if regressions.is_empty() && refused_updates.is_empty() {
            format!(
                "{installs} installs at {} edges, each after the one before, policy versions never going back; no edge refused a delta",
                cluster.edges.len()
            )
        } else {
            format!("{regressions:?} {refused_updates:?}")
        },
    });
    let served: Vec<&String> = violations
        .iter()
        .filter(|v| v.contains("revocation"))
        .collect();
    invariants.push(Invariant {
        name: "no request served to a revoked session after the bound",
        ok: served.is_empty(),
        detail: if served.is_empty() {
            format!(
                "every revoked session refused at every edge within {ENFORCEMENT_BOUND:?} and after"
            )
        } else {
            format!("{served:?}")
        },
    });
    let policy_bad: Vec<&String> = violations
        .iter()
        .filter(|v| v.contains("policy change"))
        .collect();
    if schedule.policy_changes_s.is_empty() {
        // nothing to check
    } else {
        invariants.push(Invariant {
            name: "every policy change is applied by every edge",
            ok: policy_bad.is_empty(),
            detail: if policy_bad.is_empty() {
                "all applied".into()
            } else {
                format!("{policy_bad:?}")
            },
        });
    }
    let mut unready = Vec::new();
    let mut checked = 0;
    for c in snapshot_checks {
        if let Ok((edge, n)) = c.await {
            checked += 1;
            if n > 0 {
                unready.push(format!(
                    "edge {edge}: {n} requests served without a snapshot"
                ));
            }
        }
    }
    invariants.push(Invariant {
        name: "no protected request is served by an edge without a snapshot",
        ok: unready.is_empty(),
        detail: if unready.is_empty() {
            format!("{checked} edge restarts probed from their first second")
        } else {
            format!("{unready:?}")
        },
    });
    let mut stale_bad = Vec::new();
    let mut stale_n = 0;
    for c in stale_checks {
        if let Ok((label, bad)) = c.await {
            stale_n += 1;
            if !bad.is_empty() {
                stale_bad.push(format!(
                    "{label}: edges {bad:?} still served the fail-closed app"
                ));
            }
        }
    }
    invariants.push(Invariant {
        name: "fail-closed applications are denied when stale",
        ok: stale_bad.is_empty(),
        detail: if stale_bad.is_empty() {
            format!("{stale_n} stale windows checked")
        } else {
            format!("{stale_bad:?}")
        },
    });
    let converged_ok = converged.is_ok();
    invariants.push(Invariant {
        name: "all edges converge after the heal",
        ok: converged_ok,
        detail: converged.unwrap_or_else(|e| e),
    });
    // after convergence, the fail-closed app is served again everywhere
    if stale_n > 0 {
        let mut back = true;
        for e in 0..cluster.edges.len() {
            let mut ok = false;
            for _ in 0..100 {
                if probe.status(GUARDED_HOST, e, None).await == Some(200) {
                    ok = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            back &= ok;
        }
        invariants.push(Invariant {
            name: "fail-closed applications are served again after the heal",
            ok: back,
            detail: if back {
                "served at every edge".into()
            } else {
                "still refused somewhere".into()
            },
        });
    }

    let mut edge_propagation = BTreeMap::new();
    for e in &cluster.edges {
        if let Some(addr) = e.addrs.as_ref().map(|a| a.ops)
            && let Some(text) = scrape(addr).await
        {
            edge_propagation.insert(
                e.id.clone(),
                text.lines()
                    .filter(|l| {
                        l.starts_with("palisade_propagation_seconds")
                            || l.starts_with("palisade_edge_apply_seconds")
                    })
                    .map(String::from)
                    .collect(),
            );
        }
    }
    let samples = samples.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut phases = Vec::new();
    let mut names: Vec<String> = vec!["steady".into()];
    names.extend(schedule.faults.iter().map(|f| f.label()));
    for name in names {
        let v: Vec<f64> = samples
            .iter()
            .filter(|s| s.phase == name)
            .map(|s| s.latency_ms)
            .collect();
        phases.push(stats(&name, v));
    }
    phases.push(stats("all", samples.iter().map(|s| s.latency_ms).collect()));
    let mut counts = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    counts.probes = probe.probes.load(std::sync::atomic::Ordering::Relaxed);
    let budgets = check_budgets(sc, &schedule, &phases);
    let passed = invariants.iter().all(|i| i.ok) && !budgets.iter().any(BudgetCheck::fails);
    drop(cluster);
    Ok(Report {
        scenario: sc.clone(),
        schedule,
        environment: environment(),
        phases,
        samples,
        counts,
        invariants,
        budgets,
        edge_propagation,
        cpu,
        subscriptions,
        wall_s: wall.elapsed().as_secs_f64(),
        passed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str, p99: f64, max: f64) -> PhaseStats {
        PhaseStats {
            phase: name.into(),
            count: 10,
            p50_ms: 1.0,
            p99_ms: p99,
            max_ms: max,
        }
    }

    #[test]
    fn the_marker_number_is_read_from_a_denial_page_and_a_policy() {
        let page = "<p>Decided by rule <code>marker-17</code>: denied to everyone</p>";
        assert_eq!(marker_number(page), Some(17));
        let doc = policy(
            "https://idp.example",
            "c",
            std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            42,
        );
        assert_eq!(marker_number(&doc), Some(42));
        assert_eq!(marker_number("<p>Sign in</p>"), None);
    }

    #[test]
    fn budgets_fail_a_run_unless_declared_not_met_yet() {
        let file = r#"{"name": "t", "seed": 1, "duration_s": 30,
            "faults": [{"at_s": 5, "kind": "pause_leader", "duration_s": 5}]}"#;
        let sc = Scenario::from_json(file).unwrap();
        let schedule = sc.schedule();
        let label = schedule.faults[0].label();
        let phases = [phase("steady", 25.0, 40.0), phase(&label, 900.0, 1_250.0)];
        let checks = check_budgets(&sc, &schedule, &phases);
        assert_eq!(checks.len(), 2, "{checks:?}");
        let steady = &checks[0];
        assert_eq!(steady.name, "steady_p99_ms");
        assert!(!steady.met && steady.fails(), "25 ms p99 is over 10 ms");
        assert!(checks[1].met, "1,250 ms is within the leader budget");
        // Declared with its figure: reported, not failed.
        let mut declared = sc.clone();
        declared
            .budgets
            .known_unmet
            .insert("steady_p99_ms".into(), "measured 25 ms".into());
        let checks = check_budgets(&declared, &schedule, &phases);
        assert!(!checks[0].met && !checks[0].fails());
        // A phase with nothing measured checks nothing.
        let empty = [PhaseStats {
            count: 0,
            ..phase("steady", 0.0, 0.0)
        }];
        assert!(check_budgets(&sc, &schedule, &empty).is_empty());
    }
}
