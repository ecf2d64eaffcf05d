//! The device block, real, in network namespaces (root): a device namespace running
//! `palisade-agent`, a "corporate" namespace with a DNS and DHCP server (dnsmasq) and a web
//! application (busybox httpd), and the harness's namespace standing in for an edge.
//!
//! From its start the agent lets out only loopback, DHCP, DNS to the configured resolver and
//! the edge: a lease is obtained and names resolve, but TCP to the application fails. Killed
//! with SIGKILL, the device stays blocked; restarted, it stays blocked. A block deleted from
//! outside is put back. A device outside the rollout is not blocked; a configuration that
//! cannot be read gets every problem reported and the strictest block.
//!
//! With a real cluster in namespaces, the blocked agent enrolls through the controller's device
//! listener with the token `palisadectl devices provision` wrote, reports its posture (the
//! block read from the kernel), gives its certificate up when the device is wiped, and enrolls
//! again from a newly provisioned configuration.

mod support;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use palisade_chaos::cluster::{ClusterSpec, LocalCluster, Network};
use palisade_chaos::netns::Lab;
use serde_json::{Value, json};
use support::palisadectl;

const AGENT: &str = env!("CARGO_BIN_EXE_palisade-agent-e2e");

/// Children killed (by PID) when the test ends, pass or fail, before the lab goes.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn need(bin: &str, package: &str) {
    let ok = Command::new(bin)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "`{bin}` is not installed: apt-get install {package} (bash .ci/run does)"
    );
}

/// Runs `args` in host `name`'s namespace.
fn exec(lab: &Lab, name: &str, args: &[&str]) -> Output {
    lab.command(name, Path::new(args[0]))
        .expect("host")
        .args(&args[1..])
        .output()
        .expect("ip netns exec")
}

/// Whether an HTTP GET of `url` from host `name` succeeds within 2 s.
fn http_ok(lab: &Lab, name: &str, url: &str) -> bool {
    exec(
        lab,
        name,
        &["curl", "-s", "-o", "/dev/null", "-m", "2", url],
    )
    .status
    .success()
}

/// Writes `managed_json` as the device's configuration and runs `palisade-agent block` with it.
fn block_with(lab: &Lab, config: &Path, managed_json: &Value) -> Output {
    std::fs::write(config, managed_json.to_string()).expect("config");
    exec(
        lab,
        "device",
        &[
            AGENT,
            "block",
            "--config",
            config.to_str().expect("a UTF-8 path"),
        ],
    )
}

/// Looks `app.corp.test` up from the device, asking `server`.
fn lookup(lab: &Lab, server: Ipv4Addr) -> Output {
    exec(
        lab,
        "device",
        &[
            "busybox",
            "nslookup",
            "-type=a",
            "app.corp.test",
            &server.to_string(),
        ],
    )
}

fn status(lab: &Lab, config: &Path) -> Value {
    let state = config.with_file_name("state");
    let out = exec(
        lab,
        "device",
        &[
            AGENT,
            "status",
            "--json",
            "--config",
            config.to_str().expect("a UTF-8 path"),
            "--state-dir",
            state.to_str().expect("a UTF-8 path"),
        ],
    );
    assert!(out.status.success(), "{out:?}");
    serde_json::from_slice(&out.stdout).expect("status JSON")
}

/// Waits (up to 10 s) until the device's status says `state` with the block whole.
fn wait_state(lab: &Lab, config: &Path, state: &str) -> Value {
    wait_status(lab, config, Duration::from_secs(10), |s| {
        s["state"] == state
    })
}

/// Waits (up to `within`) until the device's status satisfies `done`.
fn wait_status(lab: &Lab, config: &Path, within: Duration, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let s = status(lab, config);
        if done(&s) {
            return s;
        }
        if Instant::now() >= deadline {
            let log =
                std::fs::read_to_string(config.with_file_name("agent.log")).unwrap_or_default();
            let files: Vec<_> = std::fs::read_dir(config.with_file_name("state"))
                .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
                .unwrap_or_default();
            panic!("not reached within {within:?}: {s}\nstate: {files:?}\nagent log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn agent(lab: &Lab, config: &Path) -> Child {
    lab.command("device", Path::new(AGENT))
        .expect("host")
        .args([
            "run",
            "--recheck-secs",
            "1",
            "--posture-secs",
            "2",
            "--config",
        ])
        .arg(config)
        .arg("--state-dir")
        .arg(config.with_file_name("state"))
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(config.with_file_name("agent.log"))
                .expect("agent log"),
        )
        .spawn()
        .expect("agent")
}

fn managed(ca: &str, edge: &str, dns: Ipv4Addr, enabled: bool) -> Value {
    json!({
        "version": 1,
        "device_id": "dev-laptop1",
        "controllers": [edge],
        "controller_ca_pem": ca,
        "edges": [edge],
        "enrollment": {"token": "one-time", "expires_at": "2030-01-01T00:00:00Z"},
        "mandatory_auth": {"enabled": enabled, "grace": {"dhcp": true, "dns": [dns.to_string()]}}
    })
}

#[test]
fn the_block_holds_from_the_start_through_a_kill_and_a_restart() {
    if let Err(e) = palisade_chaos::netns::available() {
        panic!("this test needs network namespaces: {e} (bash .ci/run runs it as root)");
    }
    need("dnsmasq", "dnsmasq-base");
    need("busybox", "busybox");
    need("curl", "curl");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lab = Lab::create().expect("lab");
    let corp = lab.add_host("corp", 3).expect("corp");
    let device = lab.add_host("device", 2).expect("device");
    let net = corp.ip.octets();
    let pool = |last| Ipv4Addr::new(net[0], net[1], net[2], last).to_string();
    let mut procs = Procs(Vec::new());

    // The corporate network: DNS and DHCP, and a web application.
    let www = dir.path().join("www");
    std::fs::create_dir(&www).expect("www");
    std::fs::write(www.join("index.html"), "corporate app").expect("page");
    procs.0.push(
        lab.command("corp", Path::new("dnsmasq"))
            .expect("corp")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
                "--pid-file",
                "--bind-interfaces",
                &format!("--listen-address={}", corp.ip),
                &format!("--address=/corp.test/{}", corp.ip),
                &format!("--dhcp-range={},{},255.255.255.0,1h", pool(100), pool(150)),
                &format!("--dhcp-leasefile={}", dir.path().join("leases").display()),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq"),
    );
    procs.0.push(
        lab.command("corp", Path::new("busybox"))
            .expect("corp")
            .args(["httpd", "-f", "-p", &format!("{}:8080", corp.ip), "-h"])
            .arg(&www)
            .spawn()
            .expect("httpd"),
    );
    let app = format!("http://{}:8080/", corp.ip);

    // The edge's address: a listener in the harness's namespace answering one line of HTTP.
    let edge = TcpListener::bind((lab.gateway(), 0)).expect("edge listener");
    let edge_addr = edge.local_addr().expect("addr");
    std::thread::spawn(move || {
        for mut c in edge.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = c.read(&mut buf);
            let _ = c.write_all(b"HTTP/1.0 200 OK\r\ncontent-length: 4\r\n\r\nedge");
        }
    });
    let edge_url = format!("http://{edge_addr}/");

    // Before the agent: the application answers (so a failure later is the block's doing).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !http_ok(&lab, "device", &app) {
        assert!(Instant::now() < deadline, "the application never answered");
        std::thread::sleep(Duration::from_millis(200));
    }

    let ca = rcgen::generate_simple_self_signed(vec!["ca.test".into()]).expect("ca");
    let config = dir.path().join("managed.json");
    std::fs::write(
        &config,
        managed(&ca.cert.pem(), &edge_addr.to_string(), corp.ip, true).to_string(),
    )
    .expect("config");

    // 1. Agent started: DHCP and DNS work, the edge is reachable, the application is not.
    // held by `procs` from the start, so that a failing test still ends it
    procs.0.push(agent(&lab, &config));
    let s = wait_state(&lab, &config, "blocked");
    assert_eq!(s["posture"]["block_present"], true, "{s}");
    assert_eq!(s["posture"]["mandatory_active"], true, "{s}");
    assert_eq!(s["device_id"], "dev-laptop1", "{s}");
    let lease = exec(
        &lab,
        "device",
        &[
            "busybox",
            "udhcpc",
            "-i",
            &device.iface,
            "-n",
            "-q",
            "-t",
            "5",
            "-T",
            "1",
            "-s",
            "/bin/true",
        ],
    );
    assert!(lease.status.success(), "no DHCP lease: {lease:?}");
    let dns = lookup(&lab, corp.ip);
    assert!(
        dns.status.success() && String::from_utf8_lossy(&dns.stdout).contains(&corp.ip.to_string()),
        "DNS: {dns:?}"
    );
    assert!(http_ok(&lab, "device", &edge_url), "the edge is reachable");
    assert!(!http_ok(&lab, "device", &app), "the application is blocked");
    let other_port = format!("http://{}:9/", lab.gateway());
    assert!(
        !http_ok(&lab, "device", &other_port),
        "anything else is blocked"
    );

    // 2. Killed with SIGKILL: still blocked. Restarted: still blocked.
    let mut a = procs.0.pop().expect("the agent");
    a.kill().expect("kill -9");
    a.wait().expect("reaped");
    assert_eq!(status(&lab, &config)["state"], "blocked");
    assert!(
        !http_ok(&lab, "device", &app),
        "blocked after the agent died"
    );
    let a = agent(&lab, &config);
    procs.0.push(a);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(wait_state(&lab, &config, "blocked")["state"], "blocked");
    assert!(!http_ok(&lab, "device", &app), "blocked after a restart");

    // Deleted from outside: put back within a round or two.
    let out = exec(
        &lab,
        "device",
        &["nft", "delete", "table", "inet", "palisade_agent"],
    );
    assert!(out.status.success(), "{out:?}");
    wait_state(&lab, &config, "blocked");
    assert!(!http_ok(&lab, "device", &app), "blocked again");
    let s = status(&lab, &config);
    assert!(
        s["block"]["dropped_packets"].as_u64().unwrap_or(0) > 0,
        "the refused packets were counted: {s}"
    );
    if let Some(mut a) = procs.0.pop() {
        let _ = a.kill();
        let _ = a.wait();
    }

    // A configuration that cannot be read: every problem reported, the strictest block
    // (no DNS, no edge).
    let mut bad = managed(&ca.cert.pem(), "no-port", corp.ip, true);
    bad["device_id"] = json!("laptop");
    bad["mandatory_auth"]["grace"]["dns"] = json!(["not-an-ip"]);
    let out = block_with(&lab, &config, &bad);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    for field in ["device_id", "edges", "mandatory_auth.grace.dns"] {
        assert!(said.contains(field), "{field} not reported: {said}");
    }
    assert_eq!(status(&lab, &config)["state"], "blocked");
    assert!(
        !http_ok(&lab, "device", &edge_url),
        "no edge in the strictest block"
    );
    let dns = lookup(&lab, corp.ip);
    assert!(!dns.status.success(), "no DNS in the strictest block");

    // 7 (staged rollout, by configuration): a device outside it is not blocked.
    let off = managed(&ca.cert.pem(), &edge_addr.to_string(), corp.ip, false);
    let out = block_with(&lab, &config, &off);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(status(&lab, &config)["state"], "not_enforced");
    assert!(
        http_ok(&lab, "device", &app),
        "not blocked outside the rollout"
    );

    // Fail mode open: blocked while an edge answers; lifted while none does (an edge address
    // where nothing listens); blocked again once one answers.
    let mut open = managed(&ca.cert.pem(), &edge_addr.to_string(), corp.ip, true);
    open["mandatory_auth"]["fail_mode"] = json!("open");
    let out = block_with(&lab, &config, &open);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(status(&lab, &config)["state"], "blocked");
    assert!(!http_ok(&lab, "device", &app), "an edge answers: blocked");
    let mut no_edge = open.clone();
    no_edge["edges"] = json!([format!("{}:1", lab.gateway())]);
    let out = block_with(&lab, &config, &no_edge);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).contains("no edge answers"),
        "{out:?}"
    );
    let s = status(&lab, &config);
    assert_eq!(s["state"], "failed_open", "{s}");
    assert_eq!(s["posture"]["mandatory_active"], true, "{s}");
    assert_eq!(s["posture"]["block_present"], false, "{s}");
    assert!(
        http_ok(&lab, "device", &app),
        "no edge answers: not blocked"
    );
    let out = block_with(&lab, &config, &open);
    assert!(out.status.success(), "{out:?}");
    assert!(
        !http_ok(&lab, "device", &app),
        "an edge answers again: blocked"
    );
    drop(procs);
}

/// `palisadectl devices provision` for the device listener of `cluster`'s controller and its
/// edge: the managed configuration at `out`, and the new device's id.
fn provision(cluster: &LocalCluster, serial: &str, out: &Path) -> String {
    let controller = cluster.controllers.values().next().expect("a controller");
    let edge = cluster.edges[0].https().to_string();
    let (code, said) = palisadectl(
        cluster,
        &[
            "devices",
            "provision",
            "--owner",
            "alice@example.com",
            "--serial",
            serial,
            "--controller",
            &controller.device_addr(),
            "--edge",
            &edge,
            "--out",
            out.to_str().expect("a UTF-8 path"),
        ],
    );
    assert_eq!(code, 0, "{said}");
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(out).expect("config")).expect("JSON");
    config["device_id"].as_str().expect("device id").to_string()
}

fn device(cluster: &LocalCluster, id: &str) -> Value {
    let (code, out) = palisadectl(cluster, &["devices", "list"]);
    assert_eq!(code, 0, "{out}");
    out.as_array()
        .and_then(|a| a.iter().find(|d| d["id"] == id).cloned())
        .unwrap_or_else(|| panic!("no device {id}: {out}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocked_agent_enrolls_reports_and_gives_up_a_wiped_identity() {
    if let Err(e) = palisade_chaos::netns::available() {
        panic!("this test needs network namespaces: {e} (bash .ci/run runs it as root)");
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut spec = ClusterSpec::new(
        1,
        1,
        env!("CARGO_BIN_EXE_palisade-e2e-host").into(),
        dir.path().join("cluster"),
    );
    spec.network = Network::Namespaces;
    let mut cluster = LocalCluster::start(spec).await.expect("cluster");
    let lab = cluster.lab.as_mut().expect("namespaces");
    lab.add_host("device", 50).expect("device");
    let mut procs = Procs(Vec::new());

    let device_dir = dir.path().join("device");
    std::fs::create_dir(&device_dir).expect("dir");
    let config = device_dir.join("managed.json");
    let id = provision(&cluster, "SER-AGENT-1", &config);
    let lab = cluster.lab.as_ref().expect("namespaces");
    procs.0.push(agent(lab, &config));

    // Blocked, and enrolled through the block (the controller's device listener is allowed).
    let s = wait_status(lab, &config, Duration::from_secs(30), |s| {
        s["enrollment"]["state"] == "enrolled"
    });
    assert_eq!(s["state"], "blocked", "{s}");
    assert_eq!(s["enrollment"]["device_id"], id.as_str(), "{s}");
    let key = config.with_file_name("state").join("device.key");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&key).expect("key").permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "the key is the agent's only");
    let d = device(&cluster, &id);
    assert_eq!(d["state"], "enrolled", "{d}");

    // Posture: reported with the block read from the kernel.
    let deadline = Instant::now() + Duration::from_secs(20);
    let d = loop {
        let d = device(&cluster, &id);
        if d["posture"]["mandatory_auth"] == true {
            break d;
        }
        assert!(Instant::now() < deadline, "no posture with the block: {d}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(d["posture"]["firewall"], true, "{d}");
    assert_eq!(
        d["posture"]["client_version"],
        env!("CARGO_PKG_VERSION"),
        "{d}"
    );

    // Wiped: the agent gives its certificate up at its next posture report, stays blocked,
    // and says it needs a new token (the old one is used).
    let (code, out) = palisadectl(&cluster, &["devices", "wipe", &id, "--reason", "lost"]);
    assert_eq!(code, 0, "{out}");
    let s = wait_status(lab, &config, Duration::from_secs(20), |s| {
        s["enrollment"]["state"] == "not_enrolled"
            && s["problems"].as_array().is_some_and(|p| {
                p.iter().any(|p| {
                    p.as_str()
                        .is_some_and(|p| p.contains("new enrollment token"))
                })
            })
    });
    assert_eq!(s["state"], "blocked", "{s}");
    assert!(!key.exists(), "the wiped key is gone");

    // Provisioned again (a new device record, a new token): it enrolls as the new device.
    let id2 = provision(&cluster, "SER-AGENT-1", &config);
    assert_ne!(id, id2);
    let s = wait_status(lab, &config, Duration::from_secs(30), |s| {
        s["enrollment"]["device_id"] == id2.as_str()
    });
    assert_eq!(s["state"], "blocked", "{s}");
    assert_eq!(device(&cluster, &id2)["state"], "enrolled");
    drop(procs);
}
