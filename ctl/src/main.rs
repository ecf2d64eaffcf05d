//! `palisadectl`: see the library's documentation for commands and exit codes.

fn main() -> std::process::ExitCode {
    palisadectl::main_from(std::env::args_os())
}
