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
