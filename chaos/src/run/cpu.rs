//! Where the machine's CPU went while the workload ran, from `/proc`.

use std::collections::HashMap;

use serde::Serialize;

use crate::cluster::LocalCluster;

/// CPU seconds so far: controllers and edges by pid, and this process.
pub(super) type CpuReading = (HashMap<u32, f64>, HashMap<u32, f64>, f64);

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
pub(super) fn cpu_by_role(c: &LocalCluster) -> CpuReading {
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
pub(super) fn cpu_between(before: &CpuReading, after: &CpuReading, workload_s: f64) -> Cpu {
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
