//! Process roles: a harness binary re-executes itself as `<binary> controller ARGS...` or
//! `<binary> edge ARGS...`, which run exactly what `palisade-controller` and `palisade-node` run,
//! and serves `<binary> ctl ARGS...` as `palisadectl`. So `cargo run -p palisade-chaos -- up`
//! needs one build, the processes it starts are real, separate OS processes, and its
//! walkthrough's `palisadectl` is the binary already built.

use std::ffi::OsString;
use std::process::ExitCode;

use clap::Parser;

/// If `args` (without the program name) start with a role, runs it to completion and returns
/// its exit code; otherwise `None`.
pub fn run_role(args: &[OsString]) -> Option<ExitCode> {
    let role = args.first()?.to_str()?;
    let rest = args[1..].iter().cloned();
    if role == "ctl" {
        // palisadectl starts its own (single-threaded) runtime.
        let argv = std::iter::once(OsString::from("palisadectl")).chain(rest);
        return Some(palisadectl::main_from(argv));
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start a runtime: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    match role {
        "controller" => {
            let argv = std::iter::once(OsString::from("palisade-controller")).chain(rest);
            let cfg = palisade_controller::config::Config::parse_from(argv);
            Some(rt.block_on(palisade_controller::process::run(cfg)))
        }
        "edge" => {
            let argv = std::iter::once(OsString::from("palisade-node")).chain(rest);
            let cfg = palisade_node::config::Config::parse_from(argv);
            Some(rt.block_on(palisade_node::process::run(cfg)))
        }
        _ => None,
    }
}
