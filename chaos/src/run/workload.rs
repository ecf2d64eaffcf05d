//! The workload: revocations and policy changes written through the admin API on the
//! scenario's schedule, each measured until every edge enforces it, while the faults start and
//! heal on the same timeline.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use palisade_link::admin::IdempotencyKey;

use super::cpu::{Cpu, cpu_between, cpu_by_role};
use super::faults::Faulter;
use super::probes::{Probe, Target, marker_number};
use super::setup::Bed;
use super::{Counts, PHASE_GRACE_S, Sample, policy};
use crate::scenario::{FaultKind, Scenario, Schedule, ScheduledFault};

/// What the workload measured, and what its faults left to check.
pub(super) struct Outcome {
    /// Every measured change.
    pub(super) samples: Vec<Sample>,
    /// The ids of the revocations the admin API acknowledged.
    pub(super) acked: Vec<String>,
    /// Counters (the probes are counted by the probe).
    pub(super) counts: Counts,
    /// Where the CPU went meanwhile.
    pub(super) cpu: Cpu,
    /// The faults and the checks they left.
    pub(super) faults: Faulter,
}

/// Runs the scenario's timeline on `bed`, then waits for the last measurements.
pub(super) async fn drive(
    bed: &mut Bed,
    sc: &Scenario,
    schedule: &Schedule,
) -> anyhow::Result<Outcome> {
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let counts: Arc<Mutex<Counts>> = Arc::default();
    let mut workers = Vec::new();
    let start = Instant::now();
    let cpu_before = cpu_by_role(&bed.cluster);
    let mut faults = Faulter::new(start);
    let (issuer, client_id, upstream_addr) =
        (bed.issuer.clone(), bed.client_id.clone(), bed.upstream_addr);
    // Policy changes: written in order by their own task, so no write (however long its
    // answer takes) holds up the fault schedule.
    let (policy_tx, policy_rx) = tokio::sync::mpsc::channel::<()>(1);
    let policy_writer = tokio::spawn(
        PolicyWriter {
            admin: bed.admin.clone(),
            probe: bed.probe.clone(),
            samples: samples.clone(),
            counts: counts.clone(),
            faults: schedule.faults.clone(),
            doc: Arc::new(move |open| policy(&issuer, &client_id, upstream_addr, open)),
            marker: bed.marker,
            version: bed.policy_version,
            start,
        }
        .run(policy_rx),
    );

    for (t, action) in timeline(schedule, sc.controllers) {
        let due = start + Duration::from_secs_f64(t);
        tokio::time::sleep_until(due.into()).await;
        match action {
            Action::Revoke(i) => {
                let cookie = bed.cookies[i].clone();
                let (admin, probe, samples, acked, counts, faults) = (
                    bed.admin.clone(),
                    bed.probe.clone(),
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
            Action::Start(i) => faults.start(bed, i, &schedule.faults[i]).await?,
            Action::Heal(i) => faults.heal(bed, i, &schedule.faults[i]).await?,
            Action::RollKill(id) => bed.cluster.kill_controller(id),
            Action::RollStart(id) => bed.cluster.spawn_controller(id)?,
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
        &cpu_by_role(&bed.cluster),
        start.elapsed().as_secs_f64(),
    );
    let samples = std::mem::take(&mut *samples.lock().unwrap_or_else(|p| p.into_inner()));
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|p| p.into_inner()));
    let counts = counts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(Outcome {
        samples,
        acked,
        counts,
        cpu,
        faults,
    })
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
pub(super) struct PolicyWriter {
    pub(super) admin: Arc<palisade_link::admin::AdminClient>,
    pub(super) probe: Arc<Probe>,
    pub(super) samples: Arc<Mutex<Vec<Sample>>>,
    pub(super) counts: Arc<Mutex<Counts>>,
    pub(super) faults: Vec<ScheduledFault>,
    /// The document with marker rule `n`.
    pub(super) doc: Arc<dyn Fn(u64) -> String + Send + Sync>,
    /// The marker number in force (as last acknowledged or read).
    pub(super) marker: u64,
    pub(super) version: u64,
    pub(super) start: Instant,
}

impl PolicyWriter {
    /// Runs until `ticks` closes; returns the measurements still running.
    pub(super) async fn run(
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

pub(super) fn phase_of(t: f64, faults: &[ScheduledFault]) -> String {
    faults
        .iter()
        .find(|f| t >= f.start_s && t <= f.end_s + PHASE_GRACE_S)
        .map(|f| f.label())
        .unwrap_or_else(|| "steady".into())
}
