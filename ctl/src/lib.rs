//! `palisadectl`: the operator's command line for the admin API.
//!
//! One module per command under `cmd/`: each declares its arguments and turns them into admin
//! API calls and a [`Report`], which `report` renders as text or JSON (`-o json`) in one place.
//!
//! Exit codes: 0 success; 1 other error; 2 usage or local configuration error; 3 invalid input
//! (validation failed: nothing was written); 4 not found; 5 not authenticated or not allowed;
//! 6 cluster unavailable (no leader, unreachable); 7 precondition failed (version conflict,
//! state does not allow it).

#![forbid(unsafe_code)]

#[macro_use]
mod connect;
mod cmd;
mod input;
mod report;

use std::ffi::OsString;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::connect::Conn;
use crate::report::{Failure, Output, Report};

#[derive(Debug, Parser)]
#[command(
    name = "palisadectl",
    version,
    about = "Operate a Palisade cluster through its admin API"
)]
struct Cli {
    #[command(flatten)]
    conn: Conn,
    /// Output format.
    #[arg(long, short = 'o', global = true, default_value = "human")]
    output: Output,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    #[command(flatten)]
    Policy(cmd::policy::PolicyCmd),
    /// Revoke a session, a user's sessions, a device or a factor.
    Revoke(cmd::revoke::RevokeArgs),
    /// List revocations in force.
    Revocations,
    /// Managed devices.
    Devices {
        #[command(subcommand)]
        cmd: cmd::device::DeviceCmd,
    },
    /// Users' MFA factors.
    Factors {
        #[command(subcommand)]
        cmd: cmd::factor::FactorCmd,
    },
    /// Session signing keys.
    Keys {
        #[command(subcommand)]
        cmd: cmd::key::KeyCmd,
    },
    /// Named secrets (identity-provider client secrets).
    Secrets {
        #[command(subcommand)]
        cmd: cmd::secret::SecretCmd,
    },
    #[command(flatten)]
    Cluster(cmd::cluster::ClusterCmd),
    /// Change cluster membership.
    Members {
        #[command(subcommand)]
        cmd: cmd::member::MemberCmd,
    },
    /// The audit trail of writes.
    Audit(cmd::audit::AuditArgs),
    /// Act as a managed device against a controller's device listener (development and
    /// tests; `palisade-agent` does this on real devices).
    AsDevice {
        #[command(subcommand)]
        cmd: cmd::as_device::AsDeviceCmd,
    },
    /// Development PKI for a local cluster.
    Pki {
        #[command(subcommand)]
        cmd: cmd::pki::PkiCmd,
    },
}

/// Parses `args` (program name first), runs the command and prints its result; the exit code
/// says how it went (see the crate documentation). What the `palisadectl` binary runs, and what
/// the chaos harness runs as its `ctl` role.
pub fn main_from<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::parse_from(args);
    let output = cli.output;
    let result = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(cli)),
        Err(e) => Err(input::local(format!("cannot start a runtime: {e}"))),
    };
    report::render(output, result)
}

async fn run(cli: Cli) -> Result<Report, Failure> {
    // Connects only for commands that talk to the cluster (`pki init` works without one).
    let c = || connect::client(&cli.conn);
    match cli.cmd {
        Cmd::Pki { cmd } => cmd::pki::run(cmd),
        Cmd::AsDevice { cmd } => cmd::as_device::run(cli.conn.ca(), cmd).await,
        Cmd::Policy(cmd) => cmd::policy::run(&c()?, cmd).await,
        Cmd::Revoke(args) => cmd::revoke::revoke(&c()?, args).await,
        Cmd::Revocations => cmd::revoke::list(&c()?).await,
        Cmd::Devices { cmd } => cmd::device::run(&c()?, cli.conn.ca(), cmd).await,
        Cmd::Factors { cmd } => cmd::factor::run(&c()?, cmd).await,
        Cmd::Keys { cmd } => cmd::key::run(&c()?, cmd).await,
        Cmd::Secrets { cmd } => cmd::secret::run(&c()?, cmd).await,
        Cmd::Cluster(cmd) => cmd::cluster::run(&c()?, cmd).await,
        Cmd::Members { cmd } => cmd::member::run(&c()?, cmd).await,
        Cmd::Audit(args) => cmd::audit::run(&c()?, args).await,
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        // Catches clashing argument names and types between global and subcommand flags.
        super::Cli::command().debug_assert();
    }

    /// Session ids are base64url: one in 64 starts with `-`, and was taken for a flag (seen as
    /// an intermittent end-to-end failure: `revoke session` printed its usage).
    #[test]
    fn an_id_that_starts_with_a_dash_is_an_id() {
        use clap::Parser;
        for args in [
            &[
                "palisadectl",
                "revoke",
                "session",
                "-AbC_x",
                "--reason",
                "r",
            ][..],
            &[
                "palisadectl",
                "revoke",
                "session",
                "--reason",
                "r",
                "-AbC_x",
            ][..],
            &[
                "palisadectl",
                "factors",
                "remove",
                "-AbC_x",
                "--reason",
                "r",
            ][..],
            &["palisadectl", "devices", "wipe", "-AbC_x", "--reason", "r"][..],
        ] {
            let cli = super::Cli::try_parse_from(args).map_err(|e| e.to_string());
            assert!(
                format!("{cli:?}").contains("\"-AbC_x\""),
                "{args:?}: {cli:?}"
            );
        }
    }
}
