//! The edge's operational HTTP listener: `/healthz` (the process is up), `/readyz` (200 only
//! once a snapshot is installed: an edge with no view serves nothing protected) and `/metrics`
//! (Prometheus).

use std::convert::Infallible;
use std::sync::Arc;

use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;

use crate::sync::Replica;

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Serves the operational endpoints until the listener fails.
pub async fn serve(listener: TcpListener, replica: Arc<Replica>, metrics: PrometheusHandle) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let replica = replica.clone();
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let replica = replica.clone();
                let metrics = metrics.clone();
                async move {
                    let resp = match req.uri().path() {
                        "/healthz" => text(StatusCode::OK, "ok\n".into()),
                        "/readyz" if let Some(why) = replica.halted() => text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            format!("not ready: sync stopped: {why}\n"),
                        ),
                        "/readyz" if replica.ready() => text(
                            StatusCode::OK,
                            format!("ready at revision {}\n", replica.revision()),
                        ),
                        "/readyz" => text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "not ready: no snapshot from the controllers yet\n".into(),
                        ),
                        "/metrics" => text(StatusCode::OK, metrics.render()),
                        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
