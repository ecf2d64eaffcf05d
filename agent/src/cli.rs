//! The command line: `run` (the service), `block` (once, for a boot unit ordered before the
//! network) and `status`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::agent::{self, Round};
use crate::firewall::nftables::Nftables;
use crate::status;

/// palisade-agent: no traffic leaves this device until its user has signed in.
#[derive(Debug, Parser)]
#[command(name = "palisade-agent", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Installs the block first, then keeps it in place until stopped (re-reading the managed
    /// configuration and the kernel's ruleset every round). Stopping the agent, or killing it,
    /// leaves the block in the kernel.
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Seconds between rounds.
        #[arg(long, env = "PALISADE_AGENT_RECHECK_SECS", default_value_t = 5)]
        recheck_secs: u64,
        /// Seconds between posture reports.
        #[arg(long, env = "PALISADE_AGENT_POSTURE_SECS", default_value_t = 300)]
        posture_secs: u64,
        #[command(flatten)]
        state: StateArg,
    },
    /// Installs the block once and exits: 0 when the configuration was read, 2 when it could
    /// not be (every problem printed; the strictest block is installed then).
    Block {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// The device's state: the block as the kernel holds it, the posture, the configuration's
    /// problems.
    Status {
        #[command(flatten)]
        config: ConfigArg,
        #[command(flatten)]
        state: StateArg,
        /// JSON, for an MDM's health check.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, clap::Args)]
struct StateArg {
    /// The agent's state directory: the device's key (mode 0600) and certificate, and what the
    /// controllers said.
    #[arg(
        long,
        env = "PALISADE_AGENT_STATE_DIR",
        default_value = "/var/lib/palisade-agent"
    )]
    state_dir: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ConfigArg {
    /// The managed configuration file (written by the MDM; `palisadectl devices provision`).
    #[arg(
        long,
        env = "PALISADE_AGENT_CONFIG",
        default_value = "/etc/palisade/managed.json"
    )]
    config: PathBuf,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let firewall = Nftables::default();
    match cli.command {
        Command::Run {
            config,
            recheck_secs,
            posture_secs,
            state,
        } => agent::run(
            &agent::Settings {
                config: config.config,
                state_dir: state.state_dir,
                every: Duration::from_secs(recheck_secs.max(1)),
                posture_every: Duration::from_secs(posture_secs.max(1)),
            },
            &firewall,
        ),
        Command::Block { config } => match agent::round(&config.config, &firewall, false) {
            Ok((round, problems)) => {
                match round {
                    // not a problem of the configuration: what it asks for
                    Round::FailedOpen { .. } => {
                        println!(
                            "no edge answers and the fail mode is open: not blocking until one does"
                        );
                        return ExitCode::SUCCESS;
                    }
                    Round::NotEnforced { .. } => {
                        println!("mandatory authentication is off for this device: not blocking")
                    }
                    _ => println!("block in place"),
                }
                if problems.is_empty() {
                    return ExitCode::SUCCESS;
                }
                eprintln!(
                    "the managed configuration {} cannot be used; the strictest block is in place:",
                    config.config.display()
                );
                for p in problems {
                    eprintln!("  {p}");
                }
                ExitCode::from(2)
            }
            Err(e) => {
                eprintln!("the block could not be installed: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Status {
            config,
            state,
            json,
        } => {
            let s = status::read(&config.config, &state.state_dir, &firewall);
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&s).expect("a status is JSON")
                );
            } else {
                print!("{s}");
            }
            ExitCode::SUCCESS
        }
    }
}
