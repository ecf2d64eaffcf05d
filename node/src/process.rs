//! Running an edge process: what `palisade-node` does after parsing its flags (the sync client
//! keeping the replica current, the HTTPS and HTTP/3 ingress enforcing policy on every
//! request, the plain-HTTP redirector, the operational endpoints), as a library function so
//! that harnesses can start real edge processes from their own binaries.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use std::process::ExitCode;

use crate::assertion::AssertionSigner;
use crate::config::Config;
use crate::controllers::ControllerClient;
use crate::h3::{H3Health, H3Limits};
use crate::http::Gateway;
use crate::ingress::{self, Addresses, Limits};
use crate::oidc::RelyingParty;
use crate::proxy::{UpstreamConfig, Upstreams};
use crate::sync::{Replica, SyncConfig};

fn fail(code: u8, msg: impl std::fmt::Display) -> std::process::ExitCode {
    eprintln!("palisade-node: {msg}");
    std::process::ExitCode::from(code)
}

/// Validates `cfg` and runs one edge until SIGINT or SIGTERM.
pub async fn run(cfg: Config) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
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
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return fail(2, e),
        };
    let optional = |p: &Option<std::path::PathBuf>| p.as_deref().map(read).transpose();
    let (idp_ca, upstream_ca, assertion_pem) = match (
        optional(&cfg.idp_ca),
        optional(&cfg.upstream_ca),
        optional(&cfg.assertion_key),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return fail(2, e),
    };
    let resolver = match crate::tls::resolver(&cfg.certs) {
        Ok(r) => Arc::new(r),
        Err(e) => return fail(2, e),
    };
    let signer = match assertion_pem {
        Some(pem) => AssertionSigner::from_pem(&pem),
        None => {
            tracing::warn!(
                "no --assertion-key: generated one for this process; upstreams behind several edges need a shared key"
            );
            AssertionSigner::generate()
        }
    };
    let signer = match signer {
        Ok(s) => s,
        Err(e) => return fail(2, e),
    };
    let rp = match RelyingParty::new(idp_ca.as_deref()) {
        Ok(r) => r,
        Err(e) => return fail(2, e),
    };
    let upstreams = match Upstreams::new(&UpstreamConfig {
        connect_timeout: Duration::from_secs(5),
        response_timeout: Duration::from_millis(cfg.upstream_timeout_ms),
        pool_idle: Duration::from_secs(90),
        extra_roots: upstream_ca,
        body_idle_timeout: Duration::from_millis(cfg.body_timeout_ms),
    }) {
        Ok(u) => u,
        Err(e) => return fail(2, e),
    };
    let metrics = match metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() {
        Ok(h) => h,
        Err(e) => return fail(1, format!("metrics: {e}")),
    };
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("binding {addr}: {e}"))
    };
    let ops_listener = match bind(cfg.ops_listen).await {
        Ok(l) => l,
        Err(e) => return fail(2, e),
    };
    let https_listener = match bind(cfg.https_listen).await {
        Ok(l) => l,
        Err(e) => return fail(2, e),
    };
    let http_listener = match cfg.http_listen() {
        Some(a) => match bind(a).await {
            Ok(l) => Some(l),
            Err(e) => return fail(2, e),
        },
        None => None,
    };
    let local = |l: &tokio::net::TcpListener| l.local_addr().map_err(|e| e.to_string());
    let mut addresses = match (
        local(&https_listener),
        http_listener.as_ref().map(local).transpose(),
        local(&ops_listener),
    ) {
        (Ok(https), Ok(http), Ok(ops)) => Addresses {
            https,
            http,
            ops,
            h3: None,
        },
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return fail(1, e),
    };
    let devices = palisade_link::device::DeviceClientVerifier::new();
    let h3_limits = H3Limits {
        max_streams: cfg.h3_max_streams,
        idle_timeout: Duration::from_millis(cfg.h3_idle_timeout_ms),
        max_header_bytes: cfg.max_header_bytes,
        max_connections: cfg.max_connections,
        ..H3Limits::default()
    };
    let h3_endpoint = match cfg.h3_listen(addresses.https) {
        Some(addr) => {
            let tls = crate::tls::server_config(resolver.clone(), devices.clone(), &[b"h3"]);
            let bound = crate::h3::endpoint(addr, tls.clone(), h3_limits).or_else(|e| {
                // The HTTPS port picked by the system can be taken on UDP: another port then,
                // which Alt-Svc names.
                if cfg.h3_listen == "https" && cfg.https_listen.port() == 0 {
                    tracing::warn!(error = %e, "HTTP/3 on another UDP port than HTTPS");
                    crate::h3::endpoint(SocketAddr::new(addr.ip(), 0), tls, h3_limits)
                } else {
                    Err(e)
                }
            });
            match bound.and_then(|e| e.local_addr().map(|a| (e, a)).map_err(|e| e.to_string())) {
                Ok((e, a)) => {
                    addresses.h3 = Some(a);
                    Some(e)
                }
                Err(e) => return fail(2, e),
            }
        }
        None => None,
    };

    let replica = Arc::new(Replica::default());
    let (stop, stop_rx) = tokio::sync::watch::channel(false);
    let controllers = ControllerClient::new(
        cfg.controllers.clone(),
        &cert_pem,
        &key_pem,
        &ca_pem,
        &cfg.controller_name,
    );
    let sync = crate::sync::spawn(
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
        stop_rx.clone(),
    );
    let public_port = cfg.public_https_port.unwrap_or(addresses.https.port());
    let h3_port = cfg
        .public_https_port
        .or(addresses.h3.map(|a| a.port()))
        .unwrap_or(public_port);
    let h3_health = H3Health::default();
    let gateway = Arc::new(Gateway::new(
        cfg.edge_id.clone(),
        replica.clone(),
        rp,
        signer,
        upstreams,
        Some(controllers),
        crate::http::GatewayOptions {
            rates: cfg.rates(),
            hsts_max_age_secs: cfg.hsts_max_age,
            alt_svc: h3_endpoint
                .as_ref()
                .map(|_| (crate::h3::alt_svc(h3_port), h3_health.clone())),
        },
    ));
    let limits = Limits {
        max_header_bytes: cfg.max_header_bytes,
        max_connections: cfg.max_connections,
        ..Limits::default()
    };
    let ops = tokio::spawn(crate::ops::serve(ops_listener, replica, metrics));
    let h3 = h3_endpoint.map(|endpoint| {
        tokio::spawn(crate::h3::serve(
            endpoint,
            devices.clone(),
            gateway.clone(),
            h3_limits,
            h3_health,
            stop_rx.clone(),
        ))
    });
    let https = tokio::spawn(ingress::serve_https(
        https_listener,
        crate::tls::server_config(resolver.clone(), devices.clone(), &[b"h2", b"http/1.1"]),
        devices,
        gateway,
        limits,
        stop_rx.clone(),
    ));
    let http = http_listener
        .map(|l| tokio::spawn(ingress::serve_http(l, public_port, limits, stop_rx.clone())));
    if let Some(path) = &cfg.addresses_file {
        let json = serde_json::to_string(&addresses).unwrap_or_default();
        let tmp = path.with_extension("tmp");
        if let Err(e) = std::fs::write(&tmp, json).and_then(|_| std::fs::rename(&tmp, path)) {
            return fail(1, format!("writing {}: {e}", path.display()));
        }
    }
    tracing::info!(
        edge = %cfg.edge_id,
        https = %addresses.https,
        http = ?addresses.http,
        h3 = ?addresses.h3,
        ops = %addresses.ops,
        certificates = ?resolver.names(),
        "edge started"
    );
    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    let _ = sync.await;
    let _ = https.await;
    for h in [http, h3].into_iter().flatten() {
        let _ = h.await;
    }
    ops.abort();
    std::process::ExitCode::SUCCESS
}

/// Returns on SIGINT or SIGTERM.
pub async fn wait_for_signal() {
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
