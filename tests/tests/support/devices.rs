//! Managed devices in the end-to-end tests: provisioned as an MDM would (`palisadectl devices
//! provision` writes the managed configuration file), enrolled from that file and reporting
//! posture as a device would (`palisadectl as-device`).

use std::path::Path;
use std::time::Duration;

use super::Stack;

/// A Linux device running client 1.0.0 (posture flags for `as-device`).
pub const LINUX_1_0: &[&str] = &["--os", "linux", "--client-version", "1.0.0"];

/// A controller's device listener.
pub fn device_endpoint(s: &Stack) -> String {
    s.cluster
        .controllers
        .values()
        .next()
        .expect("controller")
        .device_addr()
}

/// Reports `posture` (flags for `as-device posture`) as the device enrolled in `dir`, with a
/// fresh nonce.
pub fn report_posture(s: &Stack, dir: &Path, posture: &[&str]) {
    let endpoint = device_endpoint(s);
    let dir_s = dir.display().to_string();
    let mut args = vec![
        "as-device",
        "posture",
        "--endpoint",
        &endpoint,
        "--dir",
        &dir_s,
    ];
    args.extend_from_slice(posture);
    let (code, out) = s.palisadectl(&args);
    assert_eq!(code, 0, "{out}");
}

/// Provisions a device for `owner` in `groups` (comma-separated, may be empty) as an MDM would
/// and enrolls it from that file into `dir` with `posture`, retrying while the first leader
/// has not created the device CA yet; returns the device id and the key + chain PEM.
pub async fn enroll(
    s: &Stack,
    owner: &str,
    serial: &str,
    groups: &str,
    dir: &Path,
    posture: &[&str],
) -> (String, String) {
    let endpoint = device_endpoint(s);
    let managed = dir.with_extension("managed.json");
    let managed_s = managed.display().to_string();
    let edge = format!("127.0.0.1:{}", s.edge_port(0));
    let mut args = vec![
        "devices",
        "provision",
        "--owner",
        owner,
        "--serial",
        serial,
        "--controller",
        &endpoint,
        "--edge",
        &edge,
        "--dns",
        "127.0.0.53",
        "--out",
        &managed_s,
    ];
    if !groups.is_empty() {
        args.extend(["--groups", groups]);
    }
    let (code, out) = s.palisadectl(&args);
    assert_eq!(code, 0, "{out}");
    let id = out["device"]["id"].as_str().expect("id").to_string();
    let file = std::fs::read_to_string(&managed).expect("managed configuration");
    assert!(
        !out.to_string().contains("token\":\""),
        "the token stays in the file"
    );
    let config = palisade_link::managed::ManagedConfig::from_json(&file).expect("valid");
    assert_eq!(config.device_id, id);
    assert_eq!(config.edges, [edge]);
    assert!(config.mandatory_auth.enabled);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&managed)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "only its owner reads the token");
    let dir_s = dir.display().to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut args = vec![
            "as-device",
            "enroll",
            "--config",
            &managed_s,
            "--dir",
            &dir_s,
        ];
        args.extend_from_slice(posture);
        let (code, out) = s.palisadectl(&args);
        if code == 0 {
            assert_eq!(out["device"], id.as_str());
            break;
        }
        assert!(std::time::Instant::now() < deadline, "enrollment: {out}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let pem = format!(
        "{}{}",
        std::fs::read_to_string(dir.join("device.key")).expect("key"),
        std::fs::read_to_string(dir.join("device.pem")).expect("chain")
    );
    (id, pem)
}

/// Waits until every edge applied everything committed.
pub async fn settle(s: &Stack) {
    let rev = s.cluster.latest_revision().await.expect("revision");
    s.cluster
        .wait_edges(rev, Duration::from_secs(20))
        .await
        .expect("edges apply");
}
