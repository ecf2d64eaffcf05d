//! `palisade-chaos`: `up` starts a complete local cluster; `run` and `suite` run fault scenarios
//! and report enforcement latency and invariants. The same binary runs the cluster's processes
//! (`palisade-chaos controller ...`, `palisade-chaos edge ...`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "palisade-chaos", version, about = "Palisade's cluster harness")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a local cluster (controllers, edges, sample upstream, development identity
    /// provider) with an example policy, and keep it running until Ctrl-C.
    Up {
        /// Number of controllers.
        #[arg(long, default_value_t = 3)]
        controllers: u64,
        /// Number of edges.
        #[arg(long, default_value_t = 2)]
        edges: usize,
        /// Keep the cluster's files here (default: a temporary directory, removed on exit).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// HTTPS ports for the edges, comma-separated (default: 8443,8444; 0 for any).
        #[arg(long, value_delimiter = ',', default_value = "8443,8444")]
        https_ports: Vec<u16>,
    },
    /// Run one scenario file; exit 1 when an invariant fails.
    Run {
        /// The scenario (JSON; see chaos/README.md).
        scenario: PathBuf,
        /// Write the JSON report here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write the SVG plot here (default: next to the report).
        #[arg(long)]
        plot: Option<PathBuf>,
        /// Keep the cluster's files (logs, data) here.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run a built-in suite: `smoke` (under 3 minutes) or `full` (under 30); exit 1 when an
    /// invariant fails.
    Suite {
        /// `smoke` or `full`.
        name: String,
        /// Write the JSON report here.
        #[arg(long)]
        report: Option<PathBuf>,
        /// Write the SVG plot here (default: next to the report).
        #[arg(long)]
        plot: Option<PathBuf>,
    },
    /// Measure how propagation latency grows with the number of edges and the policy-change
    /// rate, at a constant revocation rate, with its parts (write, edge apply, CPU by role).
    /// One fresh fault-free cluster per point.
    Sweep {
        /// What to sweep.
        #[command(flatten)]
        spec: palisade_chaos::sweep::SweepSpec,
        /// Write the JSON report here.
        #[arg(long)]
        report: Option<PathBuf>,
    },
}

fn write(path: &std::path::Path, text: &str) -> anyhow::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

fn plot_path(plot: Option<PathBuf>, report: &Option<PathBuf>) -> Option<PathBuf> {
    plot.or_else(|| report.as_ref().map(|r| r.with_extension("svg")))
}

async fn run_one(
    file: PathBuf,
    report: Option<PathBuf>,
    plot: Option<PathBuf>,
    dir: Option<PathBuf>,
    host: PathBuf,
) -> anyhow::Result<bool> {
    let text = std::fs::read_to_string(&file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", file.display()))?;
    let sc = palisade_chaos::scenario::Scenario::from_json(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let r = palisade_chaos::run::run(&sc, host, dir).await?;
    print!("{}", palisade_chaos::report::table(&r));
    if let Some(p) = &report {
        write(p, &serde_json::to_string_pretty(&r)?)?;
    }
    if let Some(p) = plot_path(plot, &report) {
        write(&p, &palisade_chaos::report::svg(&r))?;
    }
    Ok(r.passed)
}

async fn run_suite(
    name: String,
    report: Option<PathBuf>,
    plot: Option<PathBuf>,
    host: PathBuf,
) -> anyhow::Result<bool> {
    let scenarios = palisade_chaos::suite::scenarios(&name)?;
    let mut out = Vec::new();
    for sc in &scenarios {
        println!("running {:?} ...", sc.name);
        let r = palisade_chaos::run::run(sc, host.clone(), None).await?;
        print!("{}", palisade_chaos::report::table(&r));
        out.push(r);
    }
    let passed = out.iter().all(|r| r.passed);
    let suite = palisade_chaos::report::SuiteReport {
        suite: name.clone(),
        scenarios: out,
        passed,
    };
    println!(
        "
suite {name}: {}",
        if passed {
            "every invariant held, every budget met or declared not met yet"
        } else {
            "FAILED (an invariant, or a budget not met and not declared)"
        }
    );
    if let Some(p) = &report {
        write(p, &serde_json::to_string_pretty(&suite)?)?;
    }
    if let Some(p) = plot_path(plot, &report) {
        write(&p, &palisade_chaos::report::suite_svg(&suite))?;
    }
    Ok(passed)
}

/// Runs `work` until it ends or SIGINT/SIGTERM arrives. On a signal the work is dropped, which
/// ends every process it started (by PID) and removes its temporary directory.
async fn until_signal(
    work: impl std::future::Future<Output = anyhow::Result<bool>>,
) -> anyhow::Result<bool> {
    tokio::select! {
        r = work => r,
        s = palisade_chaos::up::shutdown_signal() => {
            s?;
            anyhow::bail!("interrupted; everything started was stopped")
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    if let Some(code) = palisade_chaos::host::run_role(&args) {
        return code;
    }
    let cli = Cli::parse();
    let host = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("palisade-chaos: cannot find my own executable: {e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("palisade-chaos: {e}");
            return ExitCode::FAILURE;
        }
    };
    let filter = std::env::var("PALISADE_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .try_init();
    let result = match cli.cmd {
        Cmd::Run {
            scenario,
            report,
            plot,
            dir,
        } => rt.block_on(until_signal(run_one(scenario, report, plot, dir, host))),
        Cmd::Suite { name, report, plot } => {
            rt.block_on(until_signal(run_suite(name, report, plot, host)))
        }
        Cmd::Sweep { spec, report } => rt.block_on(until_signal(async move {
            let r = palisade_chaos::sweep::sweep(spec, host).await?;
            if let Some(p) = &report {
                write(p, &serde_json::to_string_pretty(&r)?)?;
            }
            Ok(r.points.iter().all(|p| p.passed))
        })),
        Cmd::Up {
            controllers,
            edges,
            dir,
            https_ports,
        } => rt
            .block_on(palisade_chaos::up::up(
                palisade_chaos::up::UpOptions {
                    controllers,
                    edges,
                    dir,
                    https_ports,
                },
                host,
            ))
            .map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("palisade-chaos: {e:#}");
            ExitCode::from(2)
        }
    }
}
