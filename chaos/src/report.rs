//! Reports: the terminal table, the JSON file, and an SVG plot of enforcement latency over time
//! with the fault windows marked.

use std::fmt::Write as _;

use serde::Serialize;

use crate::run::Report;

/// A suite's reports together.
#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    /// `smoke` or `full`.
    pub suite: String,
    /// One report per scenario.
    pub scenarios: Vec<Report>,
    /// Whether every invariant of every scenario held.
    pub passed: bool,
}

/// The terminal summary of one scenario.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "\nscenario {:?} (seed {}, {} controllers, {} edges, {:.0} s, wall {:.0} s)",
        r.scenario.name,
        r.scenario.seed,
        r.scenario.controllers,
        r.scenario.edges,
        r.scenario.duration_s,
        r.wall_s
    );
    let _ = writeln!(
        s,
        "  {:<34} {:>6} {:>10} {:>10} {:>10}",
        "phase (ack -> every edge enforces)", "n", "p50 ms", "p99 ms", "max ms"
    );
    for p in &r.phases {
        let _ = writeln!(
            s,
            "  {:<34} {:>6} {:>10.1} {:>10.1} {:>10.1}",
            p.phase, p.count, p.p50_ms, p.p99_ms, p.max_ms
        );
    }
    let c = &r.counts;
    for b in &r.budgets {
        let verdict = match (b.met, &b.known_unmet) {
            (true, _) => "[ok]".to_string(),
            (false, None) => "[OVER BUDGET]".to_string(),
            (false, Some(why)) => format!("[known unmet: {why}]"),
        };
        let _ = writeln!(
            s,
            "  budget {:<22} {:>8.1} ms, measured {:>8.1} ms {verdict}",
            b.name, b.budget_ms, b.measured_ms
        );
    }
    let _ = writeln!(
        s,
        "  revocations acked {} (failed {}), policy changes acked {} (failed {}, skipped while one was in flight {}), probes {}",
        c.revocations_acked,
        c.revocations_failed,
        c.policy_changes_acked,
        c.policy_changes_failed,
        c.policy_changes_skipped,
        c.probes
    );
    for i in &r.invariants {
        let _ = writeln!(
            s,
            "  [{}] {}: {}",
            if i.ok { "ok" } else { "FAIL" },
            i.name,
            i.detail
        );
    }
    s
}

/// An SVG plot: one dot per measured change (x: when it was acknowledged, y: latency, log
/// scale), fault windows shaded and labelled.
pub fn svg(r: &Report) -> String {
    let (w, h, left, right, top, bottom) = (900.0, 360.0, 70.0, 20.0, 30.0, 50.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let tmax = r.scenario.duration_s.max(1.0);
    let lmax = r
        .samples
        .iter()
        .map(|s| s.latency_ms)
        .fold(1.0f64, f64::max);
    let (lo, hi) = (0.1f64.log10(), (lmax * 1.5).max(10.0).log10());
    let x = |t: f64| left + pw * (t / tmax).clamp(0.0, 1.0);
    let y = |ms: f64| top + ph * (1.0 - ((ms.max(0.1).log10() - lo) / (hi - lo)).clamp(0.0, 1.0));
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">"#
    );
    let _ = write!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = write!(
        s,
        r#"<text x="{left}" y="18" font-size="13">{}: enforcement latency (admin ack to every edge enforcing)</text>"#,
        crate::report::esc(&r.scenario.name)
    );
    for f in &r.schedule.faults {
        let (x0, x1) = (x(f.start_s), x(f.end_s));
        let _ = write!(
            s,
            r##"<rect x="{x0:.1}" y="{top}" width="{:.1}" height="{ph}" fill="#f5b7b1" opacity="0.5"/><text x="{:.1}" y="{:.1}" fill="#922b21">{}</text>"##,
            (x1 - x0).max(1.0),
            x0 + 2.0,
            top + 12.0,
            esc(f.kind.as_str())
        );
    }
    // axes and grid
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="#333"/><line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="#333"/>"##,
        top + ph,
        left + pw,
        top + ph,
        top + ph
    );
    let mut decade = 0.1f64;
    while decade.log10() <= hi + 1e-9 {
        let yy = y(decade);
        let _ = write!(
            s,
            r##"<line x1="{left}" y1="{yy:.1}" x2="{}" y2="{yy:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{} ms</text>"##,
            left + pw,
            left - 6.0,
            yy + 4.0,
            decade
        );
        decade *= 10.0;
    }
    let step = (tmax / 10.0).max(1.0).round();
    let mut t = 0.0;
    while t <= tmax + 1e-9 {
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{t:.0}s</text>"#,
            x(t),
            top + ph + 16.0
        );
        t += step;
    }
    let _ = write!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">time since the workload started</text>"#,
        left + pw / 2.0,
        h - 10.0
    );
    for p in &r.samples {
        let color = if p.kind == "policy" {
            "#1f618d"
        } else {
            "#117a65"
        };
        let _ = write!(
            s,
            r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"><title>{} at {:.2}s: {:.1} ms ({})</title></circle>"#,
            x(p.acked_at_s),
            y(p.latency_ms),
            p.kind,
            p.acked_at_s,
            p.latency_ms,
            esc(&p.phase)
        );
    }
    let _ = write!(
        s,
        r##"<circle cx="{}" cy="40" r="3" fill="#117a65"/><text x="{}" y="44">revocation</text><circle cx="{}" cy="56" r="3" fill="#1f618d"/><text x="{}" y="60">policy change</text>"##,
        w - 120.0,
        w - 112.0,
        w - 120.0,
        w - 112.0
    );
    s.push_str("</svg>\n");
    s
}

/// The SVG for a suite: the scenarios' plots stacked.
pub fn suite_svg(r: &SuiteReport) -> String {
    let mut s = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="900" height="{}">"#,
        360 * r.scenarios.len().max(1)
    );
    for (i, sc) in r.scenarios.iter().enumerate() {
        let _ = write!(
            s,
            r#"<g transform="translate(0,{})">{}</g>"#,
            360 * i,
            svg(sc)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
