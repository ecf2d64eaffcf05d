//! WebAuthn in a real browser: Debian's Chromium driven by playwright-core
//! (`tests/peers/browser/webauthn.mjs`) with CDP virtual authenticators, against real edges and
//! controllers and the certified `oidc-provider`. Registers a security key (usb) and a platform
//! authenticator (internal) in the portal, signs in with each and reaches the application,
//! removes one and is refused where it was required. Screenshots of the portal and the MFA
//! prompt go to `artifacts/webauthn/`. The same over HTTP/3: Chromium forced onto QUIC for the
//! edge's origin signs in, registers and passes a key, and reaches the application, with the
//! page and the upstream both on `h3` (`tests/peers/browser/quic.mjs`). `bash .ci/run`
//! installs Chromium, certutil and playwright-core.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// Runs the browser script `name` (under `tests/peers/browser`) with Chromium against edge 0
/// of `s`, with `env` besides `APP`, `CA` and `CHROMIUM`; fails the test unless it says `ok`.
async fn run_browser(s: &Stack, name: &str, env: Vec<(&'static str, std::path::PathBuf)>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    assert!(
        root.join("tests/peers/browser/node_modules/playwright-core")
            .is_dir(),
        "playwright-core is not installed: run `npm ci` in tests/peers/browser (bash .ci/run does)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "Chromium is not installed at {chromium}: apt-get install chromium libnss3-tools (bash .ci/run does)"
    );
    let mut cmd = Command::new("node");
    cmd.arg(root.join("tests/peers/browser").join(name))
        .env("APP", format!("https://{APP_HOST}:{}", s.edge_port(0)))
        .env("CA", s.cluster.pki().join("ingress-ca.pem"))
        .env("CHROMIUM", chromium)
        .envs(env);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("node"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}");
    assert!(
        out.status.success() && stdout.lines().any(|l| l == "ok"),
        "{name} failed:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webauthn_over_http3_in_chromium() {
    let s = Stack::start().await;
    s.accept_h3().await;
    assert_eq!(
        s.cluster.edges[0].h3().map(|a| a.port()),
        Some(s.edge_port(0)),
        "HTTP/3 on the HTTPS port"
    );
    let leaf = s.cluster.pki().join("ingress.pem");
    run_browser(&s, "quic.mjs", vec![("LEAF", leaf)]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_key_and_platform_authenticator_in_chromium() {
    let s = Stack::start().await;
    let out_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../artifacts/webauthn");
    run_browser(&s, "webauthn.mjs", vec![("OUT", out_dir.clone())]).await;
    for shot in ["portal.png", "mfa-prompt.png"] {
        assert!(out_dir.join(shot).is_file(), "{shot} saved");
    }
}
