//! `palisade-controller`: parses and validates the configuration, then runs one controller until
//! SIGINT or SIGTERM.

use clap::Parser;
use palisade_controller::config::Config;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = Config::parse();
    let members = match cfg.validate() {
        Ok(m) => m,
        Err(errors) => {
            eprintln!("palisade-controller: invalid configuration:");
            for e in errors {
                eprintln!("  - {e}");
            }
            return std::process::ExitCode::from(2);
        }
    };
    init_tracing(&cfg.log_format);
    if let Some(addr) = cfg.metrics_listen
        && let Err(e) = metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
    {
        eprintln!("palisade-controller: metrics listener {addr}: {e}");
        return std::process::ExitCode::from(2);
    }
    let running = match palisade_controller::server::start(cfg, members).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("palisade-controller: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    wait_for_signal().await;
    tracing::info!("shutting down");
    if let Err(e) = running.stop().await {
        eprintln!("palisade-controller: shutdown: {e:#}");
        return std::process::ExitCode::FAILURE;
    }
    std::process::ExitCode::SUCCESS
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

async fn wait_for_signal() {
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
