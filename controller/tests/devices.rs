//! Device enrollment against real controller processes: a one-time token and a CSR buy a
//! short-lived certificate from the device CA (through a follower too); a used or expired token,
//! a foreign key type and a certificate from another CA are refused and change nothing;
//! renewal needs the current certificate; a wipe refuses it at once; the same hardware enrolled
//! again under a new record supersedes the old one.

mod support;

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use palisade_link::{Expect, LinkOptions, LinkTls};
use palisade_proto::v1 as pb;
use support::{Cluster, Options, eventually};
use tonic::Code;

const T: Duration = Duration::from_secs(30);

async fn create(c: &Cluster, serial: &str, ttl: Option<Duration>) -> (String, String) {
    let r = c
        .client()
        .call(|ch| {
            let serial = serial.to_string();
            async move {
                pb::device_service_client::DeviceServiceClient::new(ch)
                    .enroll_device(pb::EnrollDeviceRequest {
                        owner: "alice@example.com".into(),
                        serial,
                        display_name: "laptop".into(),
                        groups: vec!["staff".into()],
                        token_ttl: ttl.map(|t| t.try_into().expect("duration")),
                    })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .expect("create a device");
    (r.device.expect("device").id, r.enrollment_token)
}

async fn get(c: &Cluster, id: &str) -> pb::Device {
    c.client()
        .call(|ch| {
            let id = id.to_string();
            async move {
                pb::device_service_client::DeviceServiceClient::new(ch)
                    .get_device(pb::GetDeviceRequest { id, consistency: 0 })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .expect("get")
        .device
        .expect("device")
}

async fn action(c: &Cluster, id: &str) {
    c.client()
        .call(|ch| {
            let id = id.to_string();
            async move {
                pb::device_service_client::DeviceServiceClient::new(ch)
                    .mark_device_wiped(pb::DeviceActionRequest {
                        id,
                        reason: "test".into(),
                    })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .expect("wipe");
}

/// `palisadectl --ca <internal CA> as-device ARGS`, in this process.
async fn as_device(c: &Cluster, args: &[&str]) -> ExitCode {
    let mut all = vec![
        "palisadectl".to_string(),
        "--ca".into(),
        c.pki().join("ca.pem").display().to_string(),
        "as-device".into(),
    ];
    all.extend(args.iter().map(|s| s.to_string()));
    tokio::task::spawn_blocking(move || palisadectl::main_from(all))
        .await
        .expect("join")
}

/// `as-device enroll` through `endpoint` into `dir`, with `extra` arguments, until it succeeds
/// (the first leader creates the device CA within a second).
async fn enroll_eventually(c: &Cluster, endpoint: &str, token: &str, dir: &str, extra: &[&str]) {
    eventually("the device CA, and an enrollment", T, || async {
        let mut args = vec![
            "enroll",
            "--endpoint",
            endpoint,
            "--token",
            token,
            "--dir",
            dir,
        ];
        args.extend_from_slice(extra);
        let code = as_device(c, &args).await;
        (code == ExitCode::SUCCESS).then_some(())
    })
    .await;
}

/// The fingerprint of the leaf in `dir/device.pem`.
fn leaf_fingerprint(dir: &Path) -> String {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let pem = std::fs::read(dir.join("device.pem")).expect("device.pem");
    let leaf = CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a certificate")
        .expect("pem");
    palisade_link::device::fingerprint(leaf.as_ref())
}

/// A device-listener client presenting no certificate.
async fn anonymous(
    c: &Cluster,
    id: u64,
) -> pb::device_enrollment_client::DeviceEnrollmentClient<tonic::transport::Channel> {
    let ca = std::fs::read_to_string(c.pki().join("ca.pem")).expect("ca");
    let ch = LinkTls::anonymous(&ca)
        .expect("tls")
        .connect(
            &c.members[&id].device_addr(),
            Expect::AnyController,
            &LinkOptions::default(),
        )
        .await
        .expect("connect");
    pb::device_enrollment_client::DeviceEnrollmentClient::new(ch)
}

/// A device-listener client presenting the device certificate in `dir`.
async fn device_client(
    c: &Cluster,
    id: u64,
    dir: &Path,
) -> pb::device_enrollment_client::DeviceEnrollmentClient<tonic::transport::Channel> {
    let ca = std::fs::read_to_string(c.pki().join("ca.pem")).expect("ca");
    let cert = std::fs::read_to_string(dir.join("device.pem")).expect("cert");
    let key = std::fs::read_to_string(dir.join("device.key")).expect("key");
    let ch = LinkTls::new(&cert, &key, &ca)
        .expect("tls")
        .connect(
            &c.members[&id].device_addr(),
            Expect::AnyController,
            &LinkOptions::default(),
        )
        .await
        .expect("connect");
    pb::device_enrollment_client::DeviceEnrollmentClient::new(ch)
}

fn csr(alg: &'static rcgen::SignatureAlgorithm) -> Vec<u8> {
    let key = rcgen::KeyPair::generate_for(alg).expect("key");
    rcgen::CertificateParams::new(Vec::<String>::new())
        .expect("params")
        .serialize_request(&key)
        .expect("csr")
        .der()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn devices_enroll_renew_and_lose_their_certificate_when_wiped() {
    let c = Cluster::start(3, 0, Options::default()).await;
    let leader = c.wait_leader(T).await;
    let follower = [1u64, 2, 3]
        .into_iter()
        .find(|i| *i != leader)
        .expect("follower");
    let endpoint = c.members[&follower].device_addr();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("laptop");
    let dir_s = dir.display().to_string();

    // Enroll through a follower (the first leader creates the device CA within a second).
    let (id, token) = create(&c, "SER-1", None).await;
    enroll_eventually(
        &c,
        &endpoint,
        &token,
        &dir_s,
        &[
            "--os",
            "linux",
            "--client-version",
            "1.2.0",
            "--disk-encrypted",
            "--firewall",
        ],
    )
    .await;
    let d = get(&c, &id).await;
    assert_eq!(d.state, pb::DeviceState::Enrolled as i32);
    assert_eq!(d.certificate_fingerprint, leaf_fingerprint(&dir));
    let p = d.posture.expect("posture");
    assert!(p.disk_encrypted && p.firewall_enabled && !p.screen_lock);
    assert_eq!(p.client_version, "1.2.0");
    let key_mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.join("device.key"))
            .expect("key")
            .permissions(),
    );
    assert_eq!(key_mode & 0o077, 0, "the device key is the owner's only");

    // The token worked once.
    let again = tmp.path().join("again");
    let code = as_device(
        &c,
        &[
            "enroll",
            "--endpoint",
            &endpoint,
            "--token",
            &token,
            "--dir",
            &again.display().to_string(),
        ],
    )
    .await;
    assert_eq!(
        code,
        ExitCode::from(5),
        "a used token is refused as unauthenticated"
    );
    assert!(!again.join("device.pem").exists());

    // A foreign key type and garbage: refused, and the token still works afterwards.
    let (id2, token2) = create(&c, "SER-2", None).await;
    let mut anon = anonymous(&c, leader).await;
    let rsa = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/devices/testdata/rsa-2048.csr.der"
    ))
    .expect("rsa csr");
    for (bad, want) in [
        (
            rsa,
            "a device key must be ECDSA P-256, ECDSA P-384 or Ed25519",
        ),
        (
            b"garbage".to_vec(),
            "the certificate signing request does not parse",
        ),
    ] {
        let e = anon
            .enroll(pb::EnrollRequest {
                enrollment_token: token2.clone(),
                csr_der: bad,
                posture: None,
            })
            .await
            .expect_err("refused");
        assert_eq!((e.code(), e.message()), (Code::InvalidArgument, want));
    }
    assert_eq!(get(&c, &id2).await.state, pb::DeviceState::Pending as i32);
    let e = anon
        .enroll(pb::EnrollRequest {
            enrollment_token: "not-a-token".into(),
            csr_der: csr(&rcgen::PKCS_ECDSA_P256_SHA256),
            posture: None,
        })
        .await
        .expect_err("unknown token");
    assert_eq!(e.code(), Code::Unauthenticated);
    let ok = anon
        .enroll(pb::EnrollRequest {
            enrollment_token: token2,
            csr_der: csr(&rcgen::PKCS_ED25519),
            posture: None,
        })
        .await
        .expect("the token survived the refusals");
    assert!(
        ok.into_inner()
            .certificate_chain_pem
            .contains("BEGIN CERTIFICATE")
    );

    // An expired token.
    let (id3, token3) = create(&c, "SER-3", Some(Duration::from_secs(1))).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let e = anon
        .enroll(pb::EnrollRequest {
            enrollment_token: token3,
            csr_der: csr(&rcgen::PKCS_ECDSA_P256_SHA256),
            posture: None,
        })
        .await
        .expect_err("expired");
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "the enrollment token has expired")
    );
    assert_eq!(get(&c, &id3).await.state, pb::DeviceState::Pending as i32);

    // Posture reports: authenticated by the certificate, bound to a nonce used once.
    assert_eq!(
        as_device(
            &c,
            &[
                "posture",
                "--endpoint",
                &endpoint,
                "--dir",
                &dir_s,
                "--os",
                "linux",
                "--client-version",
                "1.3.0",
                "--disk-encrypted",
                "--firewall",
                "--screen-lock",
                "--mdm-provider",
                "intune",
                "--mdm-compliant"
            ],
        )
        .await,
        ExitCode::SUCCESS
    );
    let p = get(&c, &id).await.posture.expect("posture");
    assert!(p.screen_lock && p.mdm_compliant && p.firewall_enabled && p.disk_encrypted);
    assert_eq!(
        (p.client_version.as_str(), p.mdm_provider.as_str()),
        ("1.3.0", "intune")
    );
    let mut device = device_client(&c, follower, &dir).await;
    let nonce = device
        .posture_nonce(pb::PostureNonceRequest {})
        .await
        .expect("nonce")
        .into_inner()
        .nonce;
    let report = |nonce: String, screen_lock: bool| pb::ReportPostureRequest {
        posture: Some(pb::DevicePosture {
            os: pb::OsFamily::Linux as i32,
            screen_lock,
            ..Default::default()
        }),
        nonce,
    };
    device
        .report_posture(report(nonce.clone(), false))
        .await
        .expect("the first use of a nonce");
    let e = device
        .report_posture(report(nonce, true))
        .await
        .expect_err("a replayed nonce");
    assert_eq!(
        (e.code(), e.message()),
        (Code::InvalidArgument, "this posture nonce was already used")
    );
    let e = device
        .report_posture(report("bm90LWEtbm9uY2U".into(), true))
        .await
        .expect_err("a forged nonce");
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        !get(&c, &id).await.posture.expect("posture").screen_lock,
        "neither was recorded"
    );
    let e = anon
        .posture_nonce(pb::PostureNonceRequest {})
        .await
        .expect_err("no certificate, no nonce");
    assert_eq!(e.code(), Code::Unauthenticated);

    // Renewal with the current certificate; the old one stops counting.
    let old = tmp.path().join("old");
    std::fs::create_dir_all(&old).expect("mkdir");
    for f in ["device.pem", "device.key"] {
        std::fs::copy(dir.join(f), old.join(f)).expect("copy");
    }
    let before = leaf_fingerprint(&dir);
    assert_eq!(
        as_device(&c, &["renew", "--endpoint", &endpoint, "--dir", &dir_s]).await,
        ExitCode::SUCCESS
    );
    let after = leaf_fingerprint(&dir);
    assert_ne!(before, after);
    assert_eq!(get(&c, &id).await.certificate_fingerprint, after);
    let old_s = old.display().to_string();
    assert_eq!(
        as_device(&c, &["renew", "--endpoint", &endpoint, "--dir", &old_s]).await,
        ExitCode::from(5),
        "a replaced certificate renews nothing"
    );

    // A certificate naming the device, from another CA: the handshake refuses it.
    let other = palisade_link::pki::DevCa::named("not the device CA").expect("ca");
    let forged = other
        .issue_uri(&format!("urn:palisade:device:{id}"))
        .expect("forged");
    let forged_dir = tmp.path().join("forged");
    std::fs::create_dir_all(&forged_dir).expect("mkdir");
    std::fs::write(forged_dir.join("device.pem"), &forged.cert_pem).expect("write");
    std::fs::write(forged_dir.join("device.key"), &forged.key_pem).expect("write");
    let code = as_device(
        &c,
        &[
            "renew",
            "--endpoint",
            &endpoint,
            "--dir",
            &forged_dir.display().to_string(),
        ],
    )
    .await;
    assert_ne!(
        code,
        ExitCode::SUCCESS,
        "a certificate from another CA is refused"
    );
    assert_eq!(
        get(&c, &id).await.certificate_fingerprint,
        after,
        "and changes nothing"
    );

    // Wiped: the certificate is refused at once; a new record for the same hardware enrolls.
    action(&c, &id).await;
    assert_eq!(
        as_device(&c, &["renew", "--endpoint", &endpoint, "--dir", &dir_s]).await,
        ExitCode::from(5)
    );
    let (new_id, new_token) = create(&c, "SER-1", None).await;
    assert_eq!(
        as_device(
            &c,
            &[
                "enroll",
                "--endpoint",
                &endpoint,
                "--token",
                &new_token,
                "--dir",
                &dir_s
            ]
        )
        .await,
        ExitCode::SUCCESS
    );
    assert_eq!(
        get(&c, &new_id).await.state,
        pb::DeviceState::Enrolled as i32
    );
    assert_eq!(get(&c, &id).await.state, pb::DeviceState::Wiped as i32);

    // The same hardware again while enrolled: the earlier record is superseded.
    let (newer, newer_token) = create(&c, "SER-1", None).await;
    let newer_dir = tmp.path().join("newer").display().to_string();
    assert_eq!(
        as_device(
            &c,
            &[
                "enroll",
                "--endpoint",
                &endpoint,
                "--token",
                &newer_token,
                "--dir",
                &newer_dir
            ]
        )
        .await,
        ExitCode::SUCCESS
    );
    assert_eq!(get(&c, &new_id).await.state, pb::DeviceState::Wiped as i32);
    assert_eq!(
        get(&c, &newer).await.state,
        pb::DeviceState::Enrolled as i32
    );
    assert_eq!(
        as_device(&c, &["renew", "--endpoint", &endpoint, "--dir", &dir_s]).await,
        ExitCode::from(5),
        "the superseded record's certificate renews nothing"
    );
}

fn alice(sid: &str) -> pb::UserRef {
    pb::UserRef {
        identity_provider: "corp".into(),
        subject: "alice-sub".into(),
        session_id: sid.into(),
        email: "alice@example.com".into(),
        ..Default::default()
    }
}

fn open(user: pb::UserRef, device: &str) -> pb::OpenTunnelSessionRequest {
    let expires = std::time::SystemTime::now() + Duration::from_secs(3600);
    pb::OpenTunnelSessionRequest {
        user: Some(user),
        device_id: device.into(),
        edge_id: String::new(),
        expires_at: Some(expires.into()),
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Tunnel sessions through `EdgeAuth`, against real controller processes and a real edge
/// replica: opened only for an enrolled device's owner, they reach the edge and count there
/// until a revocation of the SSO session ends them; a close removes them everywhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tunnel_sessions_reach_edges_and_end_on_revocation() {
    let c = Cluster::start(3, 0, Options::default()).await;
    let leader = c.wait_leader(T).await;
    let endpoint = c.members[&leader].device_addr();
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("laptop");
    let dir_s = dir.display().to_string();
    let (id, token) = create(&c, "SER-T", None).await;
    enroll_eventually(&c, &endpoint, &token, &dir_s, &[]).await;
    let (replica, _stop) = support::replica(&c, "e2");
    let mut ea = support::edge_auth(&c, "e1").await;

    // Someone else's device, an unknown device, no expiry, another edge's name: refused.
    let mallory = pb::UserRef {
        subject: "mallory".into(),
        email: "mallory@example.com".into(),
        ..alice("sid-m")
    };
    let refused = ea.open_tunnel_session(open(mallory, &id)).await;
    assert!(refused.is_err(), "{refused:?}");
    let refused = ea
        .open_tunnel_session(open(alice("sid-1"), "dev-999"))
        .await;
    assert!(refused.is_err(), "{refused:?}");
    let mut no_expiry = open(alice("sid-1"), &id);
    no_expiry.expires_at = None;
    let refused = ea.open_tunnel_session(no_expiry).await;
    assert_eq!(
        refused.expect_err("no expiry").code(),
        Code::InvalidArgument
    );
    let mut other_edge = open(alice("sid-1"), &id);
    other_edge.edge_id = "e3".into();
    let refused = ea.open_tunnel_session(other_edge).await;
    assert_eq!(
        refused.expect_err("another edge").code(),
        Code::InvalidArgument
    );

    // The owner: opened, held by the calling edge, and live at another edge.
    let t = ea
        .open_tunnel_session(open(alice("sid-1"), &id))
        .await
        .expect("opened")
        .into_inner()
        .session
        .expect("session");
    assert_eq!(
        (t.device_id.as_str(), t.edge_id.as_str()),
        (id.as_str(), "e1")
    );
    assert_eq!(t.identity_provider, "corp");
    let tid = t.id.clone();
    eventually("the tunnel session at the edge", T, || async {
        replica
            .view()
            .filter(|v| v.live_tunnel(&tid, now_ms()).is_ok())
            .map(|_| ())
    })
    .await;

    // Operators see it (role viewer).
    let listed = c
        .client()
        .call(|ch| {
            let device_id = id.clone();
            async move {
                pb::device_service_client::DeviceServiceClient::new(ch)
                    .list_tunnel_sessions(pb::ListTunnelSessionsRequest {
                        device_id,
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
        .expect("list");
    assert_eq!(listed.sessions, vec![t.clone()]);

    // Its SSO session revoked: it no longer counts at the edge.
    Cluster::revoke(&c.client(), "sid-1").await.expect("revoke");
    eventually("the tunnel session ended by the revocation", T, || async {
        replica
            .view()
            .filter(|v| {
                v.live_tunnel(&tid, now_ms())
                    == Err(palisade_edge_core::view::TunnelRefusal::Revoked)
            })
            .map(|_| ())
    })
    .await;

    // A new sign-in opens another; closing it removes it at the edge.
    let t2 = ea
        .open_tunnel_session(open(alice("sid-2"), &id))
        .await
        .expect("opened")
        .into_inner()
        .session
        .expect("session");
    ea.close_tunnel_session(pb::CloseTunnelSessionRequest {
        id: t2.id.clone(),
        reason: "the device disconnected".into(),
    })
    .await
    .expect("closed");
    eventually("the tunnel session gone at the edge", T, || async {
        replica
            .view()
            .filter(|v| {
                v.live_tunnel(&t2.id, now_ms())
                    == Err(palisade_edge_core::view::TunnelRefusal::Unknown)
                    && v.live_tunnel(&tid, now_ms())
                        == Err(palisade_edge_core::view::TunnelRefusal::Unknown)
            })
            .map(|_| ())
    })
    .await;
}
