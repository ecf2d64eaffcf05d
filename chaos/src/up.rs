//! `palisade-chaos up`: a complete local cluster for development and demos — 3 controllers,
//! 2 edges, the sample upstream, and the development identity provider (local use only) — with an
//! example policy applied. It prints what to open and what to try, and stops everything on
//! Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use crate::cluster::{ClusterSpec, LocalCluster};
use crate::devidp::{self, DevIdp};
use crate::upstream::Upstream;

/// Options of `up`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Controllers.
    pub controllers: u64,
    /// Edges.
    pub edges: usize,
    /// Keep state here instead of a temporary directory (kept after exit).
    pub dir: Option<PathBuf>,
    /// HTTPS ports of the edges (0 = any free port).
    pub https_ports: Vec<u16>,
}

/// The client secret's name in the catalog.
pub const SECRET_NAME: &str = "dev-oidc";
/// The identity provider id in the example policy.
pub const IDP_ID: &str = "dev";

/// The example policy: a sample app for everyone at example.com, an admin console for the
/// `admins` group that fails closed when the edge is stale, and a public status page.
pub fn example_policy(issuer: &str, client_id: &str, upstream: SocketAddr) -> serde_json::Value {
    let up = format!("http://{upstream}");
    json!({
        "schema_version": 1,
        "identity_providers": [{
            "id": IDP_ID,
            "display_name": "Development sign-in (local use only)",
            "issuer": issuer,
            "client_id": client_id,
            "client_secret_ref": SECRET_NAME,
            "scopes": ["openid", "email", "profile", "groups"],
            "claims": {"email": "email", "groups": "groups", "name": "name"}
        }],
        "apps": [
            {
                "id": "hello",
                "name": "Hello (sample application)",
                "hosts": ["hello.palisade.localhost"],
                "upstreams": [up],
                "session": {"lifetime": "8h", "idle_timeout": "1h"},
                "mfa": {"required": false},
                "rules": [
                    {"name": "example-staff", "decision": "allow", "include": [{"email_domain": "example.com"}]}
                ]
            },
            {
                "id": "admin",
                "name": "Admin console (sample)",
                "hosts": ["admin.palisade.localhost"],
                "upstreams": [up],
                "session": {"lifetime": "1h", "idle_timeout": "15m"},
                "mfa": {"required": true, "methods": ["totp", "security_key", "platform"], "max_age": "8h"},
                "staleness": {"mode": "fail_closed", "max_staleness": "30s"},
                "max_body_bytes": 1048576,
                "rules": [
                    {"name": "admins-only", "decision": "allow", "include": [{"group": "admins"}]}
                ]
            },
            {
                "id": "status",
                "name": "Public status page (sample)",
                "hosts": ["status.palisade.localhost"],
                "upstreams": [up],
                "mfa": {"required": false},
                "rules": [
                    {"name": "public", "decision": "bypass", "include": [{"everyone": true}]}
                ]
            }
        ]
    })
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() -> std::io::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}

/// Runs the local cluster until Ctrl-C (or SIGTERM). `host` is the binary that runs the process roles.
pub async fn up(opts: UpOptions, host: PathBuf) -> anyhow::Result<()> {
    let (dir, _tmp) = match &opts.dir {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("palisade-local-")
                .tempdir()?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    println!(
        "Starting {} controllers and {} edges in {} ...",
        opts.controllers,
        opts.edges,
        dir.display()
    );
    let mut spec = ClusterSpec::new(opts.controllers, opts.edges, host.clone(), dir.clone());
    spec.edge_https_ports = opts.https_ports.clone();
    let cluster = LocalCluster::start(spec).await?;
    let edge1 = cluster.edges[0].https();
    let ca = cluster.pki_file("ingress-ca.pem")?;
    let upstream = Upstream::start(
        "127.0.0.1:0".parse()?,
        format!(
            "https://localhost:{}/.well-known/palisade/jwks.json",
            edge1.port()
        ),
        Some(&ca),
        None,
    )
    .await?;
    let idp = DevIdp::start("127.0.0.1:0".parse()?, "palisade-local").await?;
    cluster
        .put_secret(SECRET_NAME, idp.client_secret.as_bytes())
        .await?;
    let policy = example_policy(&idp.issuer, &idp.client_id, upstream.addr);
    let revision = cluster
        .apply_policy(
            &serde_json::to_string_pretty(&policy)?,
            "palisade-chaos up: example policy",
        )
        .await?;
    std::fs::write(
        dir.join("policy.json"),
        serde_json::to_string_pretty(&policy)?,
    )?;
    cluster
        .wait_edges(revision, Duration::from_secs(20))
        .await
        .context("waiting for the edges to apply the example policy")?;
    // A first factor needs an enrollment code from an admin (the policy default): issue one
    // for each demo user, as an admin would hand them out.
    let admin = cluster.admin()?;
    let mut codes = Vec::new();
    for u in devidp::USERS {
        let req = palisade_proto::v1::IssueFactorEnrollmentCodeRequest {
            subject: u.login.into(),
            identity_provider: IDP_ID.into(),
            ttl: None,
        };
        let r = admin
            .call(|ch| {
                let req = req.clone();
                async move {
                    palisade_proto::v1::factor_service_client::FactorServiceClient::new(ch)
                        .issue_factor_enrollment_code(req)
                        .await
                        .map(|r| r.into_inner())
                }
            })
            .await
            .context("issuing enrollment codes")?;
        codes.push((u.login, r.code));
    }
    let ctl = write_palisadectl(&cluster, &host, &dir)?;
    print_guide(&cluster, &idp, &upstream, &dir, &codes, &ctl);
    shutdown_signal().await?;
    println!("\nStopping ...");
    drop(cluster);
    Ok(())
}

/// Writes `DIR/palisadectl`: a script that runs the harness binary already built as
/// `palisadectl` (its `ctl` role), with this cluster's controllers and admin identity, so the
/// walkthrough needs no second build and no exports.
fn write_palisadectl(
    c: &LocalCluster,
    host: &std::path::Path,
    dir: &std::path::Path,
) -> anyhow::Result<PathBuf> {
    let quote =
        |p: &std::path::Path| format!("'{}'", p.display().to_string().replace('\'', r"'\''"));
    let pki = c.pki();
    let script = format!(
        "#!/bin/sh\n# palisadectl for the cluster `palisade-chaos up` started in this directory.\n\
         export PALISADE_SERVER='{servers}'\n\
         export PALISADE_CERT={cert} PALISADE_KEY={key} PALISADE_CA={ca}\n\
         exec {host} ctl \"$@\"\n",
        servers = c.controller_addrs().join(","),
        cert = quote(&pki.join("admin-admin.pem")),
        key = quote(&pki.join("admin-admin.key")),
        ca = quote(&pki.join("ca.pem")),
        host = quote(host),
    );
    let path = dir.join("palisadectl");
    std::fs::write(&path, script)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

fn print_guide(
    c: &LocalCluster,
    idp: &DevIdp,
    upstream: &Upstream,
    dir: &std::path::Path,
    codes: &[(&str, String)],
    ctl: &std::path::Path,
) {
    let pki = c.pki();
    let servers = c.controller_addrs().join(",");
    let mut s = String::new();
    s.push_str("\nPalisade is running.\n\n");
    for e in &c.edges {
        let p = e.https().port();
        s.push_str(&format!(
            "  {:<8} https://hello.palisade.localhost:{p}/   https://admin.palisade.localhost:{p}/   https://status.palisade.localhost:{p}/\n",
            e.id
        ));
    }
    s.push_str(&format!(
        "\n  Controllers      {servers}\n  Sample upstream  http://{}\n  Identity provider {} (development only: never use it in production)\n",
        upstream.addr, idp.issuer
    ));
    s.push_str(&format!("  Files            {}\n", dir.display()));
    s.push_str("\nUsers (password for all: ");
    s.push_str(devidp::PASSWORD);
    s.push_str(")\n");
    for u in devidp::USERS {
        let code = codes
            .iter()
            .find(|(l, _)| *l == u.login)
            .map(|(_, c)| c.as_str())
            .unwrap_or("-");
        s.push_str(&format!(
            "  {:<6} {:<24} groups: {:<22} first-factor enrollment code: {code}\n",
            u.login,
            u.email,
            u.groups.join(", ")
        ));
    }
    let p1 = c.edges[0].https().port();
    let ca = pki.join("ingress-ca.pem");
    s.push_str(&format!(
        r#"
The edges' certificate comes from a development CA: accept the browser warning, or trust
  {ca}

Try:
  1. Open https://hello.palisade.localhost:{p1}/ and sign in as alice: the sample app shows the
     identity headers and the verified assertion. bob gets in too; carol (partner.example) is
     denied, and the page names the rule.
  2. https://admin.palisade.localhost:{p1}/ admits alice (group admins) after a second factor,
     and denies bob. Palisade asks alice to set one up in her portal
     (https://admin.palisade.localhost:{p1}/.palisade/portal) with her enrollment code above:
     scan the QR code with an authenticator app, or add a security key / this device (browsers
     allow WebAuthn only when they trust the certificate: import the CA below first). The portal also lists sign-ins,
     sessions and factors; `{ctl} factors list {IDP_ID}/alice` shows them to admins.
  3. Revoke alice everywhere, then reload the page on either edge (this palisadectl is
     already set up for this cluster; it runs the binary that started it):

       {ctl} revoke user {IDP_ID}/alice --reason demo
       {ctl} edges

  4. Sign out at https://hello.palisade.localhost:{p1}/.palisade/logout (a revocation too).
  5. From a terminal: curl --cacert {ca} -i https://status.palisade.localhost:{p1}/

Ctrl-C stops everything.
"#,
        ca = ca.display(),
        ctl = ctl.display(),
    ));
    println!("{s}");
}
