//! The host binary of the end-to-end tests: `palisade-e2e-host controller ARGS...` runs a real
//! controller process and `palisade-e2e-host edge ARGS...` a real edge process, exactly as the
//! `palisade-controller` and `palisade-node` binaries do (see `palisade_chaos::host`).

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    palisade_chaos::host::run_role(&args).unwrap_or_else(|| {
        eprintln!("usage: palisade-e2e-host controller|edge ARGS...");
        ExitCode::from(2)
    })
}
