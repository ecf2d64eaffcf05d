//! `palisade-node`: parses and validates the configuration, then runs one edge until SIGINT or
//! SIGTERM. Today the edge keeps its replica of the catalog current and serves its operational
//! endpoints; the HTTPS ingress and enforcement arrive with the next issues.

use std::sync::Arc;

use clap::Parser;
use palisade_node::config::Config;
use palisade_node::sync::{Replica, SyncConfig};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cfg = Config::parse();
    let labels = match cfg.validate() {
        Ok(l) => l,
        Err(errors) => {
            eprintln!("palisade-node: invalid configuration:");
            for e in errors {
                eprintln!("  - {e}");
            }
            return std::process::ExitCode::from(2);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("PALISADE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if cfg.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    let read = |p: &std::path::Path| {
        std::fs::read_to_string(p).map_err(|e| format!("reading {}: {e}", p.display()))
    };
    let (cert_pem, key_pem, ca_pem) =
        match (read(&cfg.tls_cert), read(&cfg.tls_key), read(&cfg.tls_ca)) {
            (Ok(c), Ok(k), Ok(a)) => (c, k, a),
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                eprintln!("palisade-node: {e}");
                return std::process::ExitCode::from(2);
            }
        };
    let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("palisade-node: metrics: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let listener = match tokio::net::TcpListener::bind(cfg.ops_listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("palisade-node: binding {}: {e}", cfg.ops_listen);
            return std::process::ExitCode::from(2);
        }
    };
    let replica = Arc::new(Replica::default());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let sync = palisade_node::sync::spawn(
        SyncConfig {
            edge_id: cfg.edge_id.clone(),
            labels,
            controllers: cfg.controllers.clone(),
            cert_pem,
            key_pem,
            ca_pem,
            server_name: cfg.controller_name.clone(),
            silence_timeout: cfg.silence_timeout(),
            randomize_start: true,
        },
        replica.clone(),
        stop_rx,
    );
    let ops = tokio::spawn(palisade_node::ops::serve(listener, replica, metrics));
    tracing::info!(edge = %cfg.edge_id, ops = %cfg.ops_listen, "edge started");
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    let _ = sync.await;
    ops.abort();
    std::process::ExitCode::SUCCESS
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        let _ = ctrl_c.await;
        return;
    };
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}
