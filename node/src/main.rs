//! `palisade-node`: parses the configuration and runs one edge until SIGINT or SIGTERM (see
//! `palisade_node::process`).

use clap::Parser;
use palisade_node::config::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    palisade_node::process::run(Config::parse()).await
}
