//! aioquic, an independent HTTP/3 stack, for the end-to-end tests (through
//! `tests/peers/aioquic/fetch.py`); the quinn + h3 client is `palisade_chaos::h3client`.

use std::net::SocketAddr;

/// Runs `requests` (see `tests/peers/aioquic/fetch.py`) with aioquic, an independent QUIC and
/// HTTP/3 stack, on one connection to `addr` for `host`; returns its answers.
pub fn aioquic(
    ca: &str,
    addr: SocketAddr,
    host: &str,
    requests: &serde_json::Value,
) -> Vec<serde_json::Value> {
    let peer = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers/aioquic");
    let python = peer.join(".venv/bin/python");
    assert!(
        python.is_file(),
        "aioquic is not installed: run `python3 -m venv .venv && .venv/bin/pip install -r requirements.txt` in {} (bash .ci/run does)",
        peer.display()
    );
    let ca_file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(ca_file.path(), ca).expect("write the CA");
    let out = std::process::Command::new(python)
        .arg(peer.join("fetch.py"))
        .args(["--addr", &addr.to_string(), "--host", host, "--ca"])
        .arg(ca_file.path())
        .arg(requests.to_string())
        .output()
        .expect("aioquic");
    assert!(
        out.status.success(),
        "aioquic failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "aioquic printed {} / {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
