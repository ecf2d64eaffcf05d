//! The `palisade-node` binary against a real controller: not ready (503) until the first
//! snapshot, ready afterwards, reports what it enforces so `WaitForRevision` completes, and
//! exports its sync metrics.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use palisade_link::admin::AdminClient;
use palisade_proto::v1 as pb;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get(port: u16, path: &str) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).await.ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, out))
}

async fn until<T, F: FnMut() -> Fut, Fut: std::future::Future<Output = Option<T>>>(
    what: &str,
    mut f: F,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_is_ready_only_with_a_snapshot_and_reports_what_it_enforces() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = dir.path().join("pki");
    palisade_link::pki::init_dir(&pki, &[1], &["edge-a".to_string()]).expect("pki");
    let ports = palisade_controller::process::loopback_ports(2).expect("ports");
    let (ctl_port, ops_port) = (ports[0], ports[1]);
    let p = |f: &str| pki.join(f).display().to_string();

    let node = Kill(
        Command::new(env!("CARGO_BIN_EXE_palisade-node"))
            .args([
                "--edge-id",
                "edge-a",
                "--controllers",
                &format!("localhost:{ctl_port}"),
                "--labels",
                "zone=a",
            ])
            .args([
                "--tls-cert",
                &p("edge-edge-a.pem"),
                "--tls-key",
                &p("edge-edge-a.key"),
                "--tls-ca",
                &p("ca.pem"),
            ])
            .args(["--ops-listen", &format!("127.0.0.1:{ops_port}")])
            .args(["--https-listen", "127.0.0.1:0", "--http-listen", "off"])
            .args([
                "--cert",
                &format!("{}:{}", p("ingress.pem"), p("ingress.key")),
            ])
            .args(["--assertion-key", &p("assertion.key")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn palisade-node"),
    );
    let (code, body) = until("the ops listener", || get(ops_port, "/readyz")).await;
    assert_eq!(code, 503, "no controller yet: {body}");
    assert_eq!(get(ops_port, "/healthz").await.map(|r| r.0), Some(200));

    let cfg = palisade_controller::config::Config::try_parse_from([
        "palisade-controller",
        "--node-id",
        "1",
        "--init",
        "--listen",
        &format!("127.0.0.1:{ctl_port}"),
        "--data-dir",
        &dir.path().join("data").display().to_string(),
        "--tls-cert",
        &p("controller-1.pem"),
        "--tls-key",
        &p("controller-1.key"),
        "--tls-ca",
        &p("ca.pem"),
        "--data-key-file",
        &p("data.key"),
    ])
    .expect("controller config");
    let members = cfg.validate().expect("valid config");
    let controller = palisade_controller::server::start(cfg, members)
        .await
        .expect("controller");

    until("ready", || async {
        get(ops_port, "/readyz").await.filter(|(c, _)| *c == 200)
    })
    .await;
    let read = |f: &str| std::fs::read_to_string(pki.join(f)).expect("pki file");
    let admin = AdminClient::new(
        vec![format!("127.0.0.1:{ctl_port}")],
        &read("admin-admin.pem"),
        &read("admin-admin.key"),
        &read("ca.pem"),
    );
    let req = pb::RevokeRequest {
        target: Some(pb::RevocationTarget {
            target: Some(pb::revocation_target::Target::SessionId("s1".into())),
        }),
        reason: "test".into(),
        ttl: None,
    };
    let rev = admin
        .call(|ch| {
            let req = req.clone();
            async move {
                pb::revocation_service_client::RevocationServiceClient::new(ch)
                    .revoke(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .expect("revoke")
        .write
        .unwrap_or_default()
        .revision;
    let waited = admin
        .call(|ch| async move {
            pb::cluster_service_client::ClusterServiceClient::new(ch)
                .wait_for_revision(pb::WaitForRevisionRequest {
                    revision: rev,
                    scope: Some(pb::LabelSelector {
                        match_labels: [("zone".to_string(), "a".to_string())].into(),
                    }),
                    timeout: Some(prost_types::Duration {
                        seconds: 10,
                        nanos: 0,
                    }),
                })
                .await
                .map(|r| r.into_inner())
        })
        .await
        .expect("wait");
    assert!(
        waited.complete && waited.applied == vec!["edge-a".to_string()],
        "{waited:?}"
    );
    let (_, metrics) = get(ops_port, "/metrics").await.expect("metrics");
    for m in [
        "palisade_edge_revision",
        "palisade_edge_staleness_seconds",
        "palisade_propagation_seconds",
        "palisade_edge_snapshots_total",
    ] {
        assert!(metrics.contains(m), "{m} missing");
    }
    drop(node);
    controller.stop().await.expect("stop");
}
