//! `palisade-controller`: parses the configuration and runs one controller until SIGINT or
//! SIGTERM (see `palisade_controller::process`).

use clap::Parser;
use palisade_controller::config::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    palisade_controller::process::run(Config::parse()).await
}
