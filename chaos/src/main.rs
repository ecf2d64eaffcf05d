//! `palisade-chaos`: `up` starts a complete local cluster. The same binary runs the cluster's
//! processes (`palisade-chaos controller ...`, `palisade-chaos edge ...`).

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
    let result = match cli.cmd {
        Cmd::Up {
            controllers,
            edges,
            dir,
            https_ports,
        } => rt.block_on(palisade_chaos::up::up(
            palisade_chaos::up::UpOptions {
                controllers,
                edges,
                dir,
                https_ports,
            },
            host,
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("palisade-chaos: {e:#}");
            ExitCode::FAILURE
        }
    }
}
