//! Running a controller process: what `palisade-controller` does after parsing its flags, as a
//! library function so that harnesses (`palisade-chaos`, the end-to-end tests) can start real
//! controller processes from their own binaries.

use std::process::ExitCode;

use crate::config::Config;

/// Validates `cfg`, sets up logging and metrics, and runs one controller until SIGINT or
/// SIGTERM.
pub async fn run(cfg: Config) -> ExitCode {
    let members = match cfg.validate() {
        Ok(m) => m,
        Err(errors) => {
            eprintln!("palisade-controller: invalid configuration:");
            for e in errors {
                eprintln!("  - {e}");
            }
            return ExitCode::from(2);
        }
    };
    init_tracing(&cfg.log_format);
    if let Some(addr) = cfg.metrics_listen
        && let Err(e) = metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
    {
        eprintln!("palisade-controller: metrics listener {addr}: {e}");
        return ExitCode::from(2);
    }
    let running = match crate::server::start(cfg, members).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("palisade-controller: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    wait_for_signal().await;
    tracing::info!("shutting down");
    if let Err(e) = running.stop().await {
        eprintln!("palisade-controller: shutdown: {e:#}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// Returns on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

/// Loopback TCP ports for processes a harness starts, which must know each other's addresses
/// before any of them binds (Raft members, an edge and its controller).
///
/// Asking the OS for port 0 and closing the socket races twice: the next such request may get
/// the same port back (one member's metrics listener on another's Raft port), and any outgoing
/// connection may be given it as its local port. So ports come from below the kernel's
/// ephemeral range, which the OS never hands out on its own; each one is checked free by binding
/// it, all of them stay bound until the whole set is chosen, and a port is never handed out
/// twice by one process.
pub fn loopback_ports(n: usize) -> std::io::Result<Vec<u16>> {
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};
    const LOW: u16 = 20_000;
    const HIGH: u16 = 32_000; // Linux's ephemeral range starts at 32768 by default
    static HANDED_OUT: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    let mut handed = HANDED_OUT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    let mut held = Vec::with_capacity(n);
    let mut port = rand::random_range(LOW..HIGH);
    for _ in LOW..HIGH {
        if held.len() == n {
            break;
        }
        port = if port + 1 >= HIGH { LOW } else { port + 1 };
        if handed.contains(&port) {
            continue;
        }
        if let Ok(l) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            held.push(l);
            handed.insert(port);
        }
    }
    if held.len() < n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AddrNotAvailable,
            format!("only {} free loopback ports below {HIGH}", held.len()),
        ));
    }
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}
