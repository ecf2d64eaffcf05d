//! `palisade-chaos sweep`: where propagation time goes as a cluster grows. It runs the same
//! fault-free workload (a constant revocation rate, each one measured) at several numbers of
//! edges and several policy-change rates, one fresh cluster per point, and reports for each
//! point the acknowledgement → every-edge latency beside its parts: the write itself, the
//! edges' own time to apply an update (policy compilation included) and commit → applied as the
//! edges measure it, and the CPU each role used. On a 2-core machine the last column is often
//! the answer.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::run::{Cpu, PhaseStats, Report, stats};
use crate::scenario::Scenario;

/// What to sweep (also the `sweep` command's flags).
#[derive(Debug, Clone, Serialize, clap::Args)]
pub struct SweepSpec {
    /// Edge counts (at --base-policy-rate).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    pub edges: Vec<usize>,
    /// Policy changes per second (at --base-edges).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,4")]
    pub policy_rates: Vec<f64>,
    /// The edge count of the policy-rate axis.
    #[arg(long, default_value_t = 2)]
    pub base_edges: usize,
    /// The policy-change rate of the edge axis.
    #[arg(long, default_value_t = 1.0)]
    pub base_policy_rate: f64,
    /// Revocations per second at every point.
    #[arg(long, default_value_t = 10.0)]
    pub revocations_per_s: f64,
    /// Workload seconds per point.
    #[arg(long, default_value_t = 20.0)]
    pub duration_s: f64,
    /// Controllers.
    #[arg(long, default_value_t = 3)]
    pub controllers: u64,
    /// Seed of each point's schedule.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl SweepSpec {
    /// The (edges, policy rate) points, each once, edge axis first.
    pub fn points(&self) -> Vec<(usize, f64)> {
        let mut out: Vec<(usize, f64)> = self
            .edges
            .iter()
            .map(|e| (*e, self.base_policy_rate))
            .collect();
        for r in &self.policy_rates {
            if !out.contains(&(self.base_edges, *r)) {
                out.push((self.base_edges, *r));
            }
        }
        out
    }

    /// Checks the ranges; every error at once.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut errors = Vec::new();
        if self.edges.is_empty() || self.edges.iter().any(|e| *e == 0 || *e > 16) {
            errors.push("--edges: 1 to 16 each, at least one".to_string());
        }
        let rate_ok = |r: &f64| r.is_finite() && (0.0..=20.0).contains(r);
        if self.policy_rates.is_empty() || !self.policy_rates.iter().all(rate_ok) {
            errors.push("--policy-rates: 0 to 20 per second each, at least one".to_string());
        }
        if self.base_edges == 0 || self.base_edges > 16 {
            errors.push("--base-edges: 1 to 16".to_string());
        }
        if !rate_ok(&self.base_policy_rate) {
            errors.push("--base-policy-rate: 0 to 20 per second".to_string());
        }
        if !(self.revocations_per_s.is_finite()
            && self.revocations_per_s > 0.0
            && self.revocations_per_s <= 100.0)
        {
            errors.push("--revocations-per-s: above 0, at most 100".to_string());
        }
        if !(self.duration_s.is_finite() && (5.0..=600.0).contains(&self.duration_s)) {
            errors.push("--duration-s: 5 to 600".to_string());
        }
        if !(1..=7).contains(&self.controllers) {
            errors.push("--controllers: 1 to 7".to_string());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn scenario(&self, edges: usize, policy_rate: f64) -> Scenario {
        Scenario {
            name: format!("sweep: {edges} edges, {policy_rate} policy changes/s"),
            description: String::new(),
            seed: self.seed,
            duration_s: self.duration_s,
            controllers: self.controllers,
            edges,
            network: Default::default(),
            probe: Default::default(),
            workload: crate::scenario::Workload {
                revocations_per_s: self.revocations_per_s,
                policy_changes_per_s: policy_rate,
            },
            faults: Vec::new(),
            budgets: Default::default(),
        }
    }
}

/// One point of the sweep.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    /// Edges.
    pub edges: usize,
    /// Policy changes per second asked for.
    pub policy_changes_per_s: f64,
    /// Revocations: acknowledgement → every edge refuses the session.
    pub revocation: PhaseStats,
    /// Policy changes: acknowledgement → every edge serves the new marker.
    pub policy: PhaseStats,
    /// Revocations at the edges subscribed to the leader: acknowledgement → that edge refuses.
    pub revocation_at_leader_edges: PhaseStats,
    /// Revocations at the edges subscribed to a follower.
    pub revocation_at_follower_edges: PhaseStats,
    /// The revocation writes themselves: sent → acknowledged.
    pub revocation_write: PhaseStats,
    /// The policy writes themselves: sent → acknowledged.
    pub policy_write: PhaseStats,
    /// The slowest edge's p99 time to apply a delta (its own summary), milliseconds.
    pub edge_apply_p99_ms: Option<f64>,
    /// The slowest edge's p99 commit → applied (its own summary), milliseconds.
    pub edge_commit_to_applied_p99_ms: Option<f64>,
    /// Policy changes acknowledged, and skipped because the previous one was in flight.
    pub policy_changes_acked: usize,
    /// See `policy_changes_acked`.
    pub policy_changes_skipped: usize,
    /// CPU by role.
    pub cpu: Cpu,
    /// Every invariant held (budgets are what the sweep measures, not pass/fail here).
    pub passed: bool,
    /// The invariants that did not hold.
    pub failed: Vec<String>,
}

/// The slowest edge's `quantile` of a summary metric exported by the edges, in milliseconds;
/// `with` must appear in the line's labels (`update="delta"`).
pub fn edge_quantile_ms(
    exported: &std::collections::BTreeMap<String, Vec<String>>,
    metric: &str,
    with: &str,
    quantile: &str,
) -> Option<f64> {
    let q = format!("quantile=\"{quantile}\"");
    exported
        .values()
        .flatten()
        .filter(|l| l.starts_with(metric) && l.contains(&q) && l.contains(with))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .filter(|v| v.is_finite())
        .map(|v| v * 1e3)
        .reduce(f64::max)
}

impl Point {
    /// The point `r` measured.
    pub fn of(r: &Report) -> Point {
        let of_kind = |kind: &str, f: fn(&crate::run::Sample) -> f64| {
            stats(
                kind,
                r.samples.iter().filter(|s| s.kind == kind).map(f).collect(),
            )
        };
        let subs = &r.subscriptions;
        let at_edges = |label: &str, on_leader: bool| {
            let v = r
                .samples
                .iter()
                .filter(|s| s.kind == "revocation")
                .flat_map(|s| s.edges_ms.iter().enumerate())
                .filter(|(i, _)| {
                    let to = subs.edges.get(*i).copied().unwrap_or(0);
                    to != 0 && (to == subs.leader) == on_leader
                })
                .map(|(_, ms)| *ms)
                .collect();
            stats(label, v)
        };
        Point {
            revocation_at_leader_edges: at_edges("on the leader", true),
            revocation_at_follower_edges: at_edges("on a follower", false),
            edges: r.scenario.edges,
            policy_changes_per_s: r.scenario.workload.policy_changes_per_s,
            revocation: of_kind("revocation", |s| s.latency_ms),
            policy: of_kind("policy", |s| s.latency_ms),
            revocation_write: of_kind("revocation", |s| s.write_ms),
            policy_write: of_kind("policy", |s| s.write_ms),
            edge_apply_p99_ms: edge_quantile_ms(
                &r.edge_propagation,
                "palisade_edge_apply_seconds",
                "update=\"delta\"",
                "0.99",
            ),
            edge_commit_to_applied_p99_ms: edge_quantile_ms(
                &r.edge_propagation,
                "palisade_propagation_seconds",
                "",
                "0.99",
            ),
            policy_changes_acked: r.counts.policy_changes_acked,
            policy_changes_skipped: r.counts.policy_changes_skipped,
            cpu: r.cpu.clone(),
            passed: r.invariants.iter().all(|i| i.ok),
            failed: r
                .invariants
                .iter()
                .filter(|i| !i.ok)
                .map(|i| format!("{}: {}", i.name, i.detail))
                .collect(),
        }
    }
}

/// The sweep's report.
#[derive(Debug, Clone, Serialize)]
pub struct SweepReport {
    /// What was swept.
    pub spec: SweepSpec,
    /// One entry per point, in the order run.
    pub points: Vec<Point>,
    /// Where it ran.
    pub environment: serde_json::Value,
}

/// Runs every point, printing each row as it completes.
pub async fn sweep(spec: SweepSpec, host: PathBuf) -> anyhow::Result<SweepReport> {
    if let Err(errors) = spec.validate() {
        anyhow::bail!("invalid sweep: {}", errors.join("; "));
    }
    let mut points = Vec::new();
    let mut environment = serde_json::Value::Null;
    print!("{}", header());
    for (edges, rate) in spec.points() {
        let r = crate::run::run(&spec.scenario(edges, rate), host.clone(), None).await?;
        environment = r.environment.clone();
        let p = Point::of(&r);
        print!("{}", row(&p));
        for f in &p.failed {
            println!("      invariant failed: {f}");
        }
        points.push(p);
    }
    Ok(SweepReport {
        spec,
        points,
        environment,
    })
}

fn header() -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:>5} {:>8} | {:>8} {:>8} | {:>9} {:>9} | {:>8} {:>8} | {:>9} {:>9} | {:>9} {:>11} | {:>5} {:>5} {:>5} | ok",
        "edges",
        "policy/s",
        "rev p50",
        "rev p99",
        "leader",
        "follower",
        "pol p50",
        "pol p99",
        "rev write",
        "pol write",
        "apply p99",
        "commit->app",
        "ctl%",
        "edge%",
        "hns%",
    );
    let _ = writeln!(
        s,
        "{:>5} {:>8} | {:>17} | {:>19} | {:>17} | {:>19} | {:>21} | {:>17} |",
        "",
        "",
        "ack -> all, ms",
        "rev p99 at edges on",
        "ack -> all, ms",
        "sent -> ack p99",
        "at the edge, ms",
        "cpu, % of a core"
    );
    s
}

fn edges_p99(s: &PhaseStats) -> String {
    if s.count == 0 {
        "-".into()
    } else {
        format!("{:.1}", s.p99_ms)
    }
}

/// One row of the terminal table.
pub fn row(p: &Point) -> String {
    let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.2}"));
    let pct = |cpu_s: f64| {
        if p.cpu.workload_s > 0.0 {
            cpu_s / p.cpu.workload_s * 100.0
        } else {
            0.0
        }
    };
    format!(
        "{:>5} {:>8} | {:>8.1} {:>8.1} | {:>9} {:>9} | {:>8.1} {:>8.1} | {:>9.1} {:>9.1} | {:>9} {:>11} | {:>5.0} {:>5.0} {:>5.0} | {}\n",
        p.edges,
        p.policy_changes_per_s,
        p.revocation.p50_ms,
        p.revocation.p99_ms,
        edges_p99(&p.revocation_at_leader_edges),
        edges_p99(&p.revocation_at_follower_edges),
        p.policy.p50_ms,
        p.policy.p99_ms,
        p.revocation_write.p99_ms,
        p.policy_write.p99_ms,
        opt(p.edge_apply_p99_ms),
        opt(p.edge_commit_to_applied_p99_ms),
        pct(p.cpu.controllers_s),
        pct(p.cpu.edges_s),
        pct(p.cpu.harness_s),
        if p.passed { "yes" } else { "NO" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> SweepSpec {
        SweepSpec {
            edges: vec![1, 2, 4],
            policy_rates: vec![0.0, 1.0, 2.0],
            base_edges: 2,
            base_policy_rate: 1.0,
            revocations_per_s: 10.0,
            duration_s: 20.0,
            controllers: 3,
            seed: 1,
        }
    }

    #[test]
    fn the_shared_point_runs_once_and_bad_ranges_are_all_reported() {
        assert_eq!(
            spec().points(),
            vec![(1, 1.0), (2, 1.0), (4, 1.0), (2, 0.0), (2, 2.0)]
        );
        let bad = SweepSpec {
            edges: vec![0],
            duration_s: 1.0,
            revocations_per_s: f64::NAN,
            ..spec()
        };
        assert_eq!(bad.validate().unwrap_err().len(), 3);
        assert!(spec().validate().is_ok());
    }

    #[test]
    fn the_slowest_edge_quantile_is_read_from_the_exported_summaries() {
        let lines = |v: &str| {
            vec![
                format!("palisade_edge_apply_seconds{{update=\"delta\",quantile=\"0.99\"}} {v}"),
                format!("palisade_edge_apply_seconds{{update=\"delta\",quantile=\"0.5\"}} 7"),
                "palisade_edge_apply_seconds{update=\"snapshot\",quantile=\"0.99\"} 9".to_string(),
                format!("palisade_propagation_seconds{{quantile=\"0.99\"}} {v}"),
                "palisade_propagation_seconds_count 12".to_string(),
            ]
        };
        let mut exported = std::collections::BTreeMap::new();
        exported.insert("e1".to_string(), lines("0.002"));
        exported.insert("e2".to_string(), lines("0.005"));
        let apply = edge_quantile_ms(
            &exported,
            "palisade_edge_apply_seconds",
            "update=\"delta\"",
            "0.99",
        );
        assert!((apply.unwrap() - 5.0).abs() < 1e-9, "{apply:?}");
        let commit = edge_quantile_ms(&exported, "palisade_propagation_seconds", "", "0.99");
        assert!((commit.unwrap() - 5.0).abs() < 1e-9, "{commit:?}");
        assert_eq!(
            edge_quantile_ms(&exported, "palisade_nothing", "", "0.99"),
            None
        );
    }
}
