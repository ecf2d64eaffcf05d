//! `palisade-agent`: see the library's documentation.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    palisade_agent::cli::main()
}
