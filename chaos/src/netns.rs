//! Hosts in network namespaces, so partitions are real (root only).
//!
//! Each process of the cluster runs in its own namespace (`ip netns exec`), with a veth pair
//! whose other end is on a bridge in the harness's namespace; the bridge has the subnet's `.1`
//! (the harness, the identity provider and the sample upstream listen there), hosts get their own
//! address. Faults are applied the way an operator would see them on a network:
//!
//! - **partitions** are nftables rules inside a host's namespace dropping packets from (and, when
//!   symmetric, to) other hosts' addresses; a one-way partition drops only one direction;
//! - **link down** sets the host's veth down (`ip link set ... down`).
//!
//! Everything created (namespaces, bridge, veths) is named with this run's tag and removed on
//! drop, also when the run fails or is interrupted; namespaces left by a run that was killed
//! outright are removed by the next run (their owner process no longer exists).

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, bail};

const PREFIX: &str = "pchaos";

/// Whether this process can build a lab: root, `ip` and `nft` present.
pub fn available() -> Result<(), String> {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string());
    if uid.as_deref() != Some("0") {
        return Err("network namespaces need root".into());
    }
    for (bin, pkg) in [("ip", "iproute2"), ("nft", "nftables")] {
        let ok = Command::new(bin)
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err(format!("`{bin}` is missing (Debian package {pkg})"));
        }
    }
    Ok(())
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("ip").args(args))
}

/// One host: a namespace with one address.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// The veth end on the bridge (in the harness's namespace).
    pub veth: String,
    /// The host's own interface (the veth end inside its namespace).
    pub iface: String,
    /// Its address.
    pub ip: Ipv4Addr,
}

/// A lab: a bridge and the hosts on it.
#[derive(Debug)]
pub struct Lab {
    tag: String,
    bridge: String,
    net: [u8; 3],
    /// Hosts by name.
    pub hosts: std::collections::BTreeMap<String, Host>,
}

impl Lab {
    /// Creates the bridge (`10.a.b.1/24`, a and b from this process id and the lab's number in
    /// it) after removing labs whose owner process is gone. A process may hold several labs at
    /// once (tests running side by side): each has its own tag and subnet.
    pub fn create() -> anyhow::Result<Lab> {
        static LABS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        available().map_err(|e| anyhow::anyhow!(e))?;
        cleanup_orphans();
        let pid = std::process::id();
        let seq = LABS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 16;
        // 4 hex digits of the pid and one of the lab's number: link names stay within 15 bytes
        let tag = format!("{:04x}{seq:x}", pid % 0x10000);
        let key = pid.wrapping_mul(16).wrapping_add(seq);
        let net = [10, 200 + ((key >> 8) % 50) as u8, (key % 250) as u8];
        let bridge = format!("{PREFIX}{tag}x");
        ip(&["link", "add", &bridge, "type", "bridge"])?;
        let lab = Lab {
            tag,
            bridge,
            net,
            hosts: Default::default(),
        };
        ip(&[
            "addr",
            "add",
            &format!("{}/24", lab.gateway()),
            "dev",
            &lab.bridge,
        ])?;
        ip(&["link", "set", &lab.bridge, "up"])?;
        Ok(lab)
    }

    /// The harness's address on the bridge (`.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(self.net[0], self.net[1], self.net[2], 1)
    }

    /// Adds host `name` with address `.last` (2..=254).
    pub fn add_host(&mut self, name: &str, last: u8) -> anyhow::Result<Host> {
        let ns = format!("{PREFIX}{}-{name}", self.tag);
        let veth = format!("{PREFIX}{}h{last}", self.tag);
        let peer = format!("{PREFIX}{}n{last}", self.tag);
        let addr = Ipv4Addr::new(self.net[0], self.net[1], self.net[2], last);
        ip(&["netns", "add", &ns])?;
        ip(&["link", "add", &veth, "type", "veth", "peer", "name", &peer])?;
        ip(&["link", "set", &peer, "netns", &ns])?;
        ip(&["link", "set", &veth, "master", &self.bridge])?;
        ip(&["link", "set", &veth, "up"])?;
        let in_ns = |args: &[&str]| {
            let mut v = vec!["netns", "exec", &ns, "ip"];
            v.extend_from_slice(args);
            ip(&v)
        };
        in_ns(&["addr", "add", &format!("{addr}/24"), "dev", &peer])?;
        in_ns(&["link", "set", &peer, "up"])?;
        in_ns(&["link", "set", "lo", "up"])?;
        in_ns(&[
            "route",
            "add",
            "default",
            "via",
            &self.gateway().to_string(),
        ])?;
        let h = Host {
            ns,
            veth,
            iface: peer,
            ip: addr,
        };
        self.hosts.insert(name.to_string(), h.clone());
        Ok(h)
    }

    /// A command that runs `program` inside host `name`'s namespace. `ip netns exec` execs the
    /// program, so the child's PID is the program's (signals reach it directly).
    pub fn command(&self, name: &str, program: &std::path::Path) -> anyhow::Result<Command> {
        let h = self.hosts.get(name).context("no such host")?;
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &h.ns]).arg(program);
        Ok(c)
    }

    /// Drops traffic between host `name` and `others`: packets from them (and, unless
    /// `one_way`, to them) are dropped inside `name`'s namespace. With `one_way`, `name` still
    /// sends, but hears nothing back from `others`.
    pub fn partition(&self, name: &str, others: &[Ipv4Addr], one_way: bool) -> anyhow::Result<()> {
        let h = self.hosts.get(name).context("no such host")?;
        if others.is_empty() {
            return Ok(());
        }
        let set = others
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut rules = format!(
            "table inet chaos {{\n chain input {{ type filter hook input priority 0; ip saddr {{ {set} }} drop; }}\n"
        );
        if !one_way {
            rules.push_str(&format!(
                " chain output {{ type filter hook output priority 0; ip daddr {{ {set} }} drop; }}\n"
            ));
        }
        rules.push_str("}\n");
        self.nft(h, &rules)
    }

    /// Removes host `name`'s partition rules.
    pub fn heal(&self, name: &str) -> anyhow::Result<()> {
        let h = self.hosts.get(name).context("no such host")?;
        let _ = run(Command::new("ip").args([
            "netns", "exec", &h.ns, "nft", "delete", "table", "inet", "chaos",
        ]));
        Ok(())
    }

    /// Sets host `name`'s link down or up.
    pub fn link(&self, name: &str, up: bool) -> anyhow::Result<()> {
        let h = self.hosts.get(name).context("no such host")?;
        ip(&["link", "set", &h.veth, if up { "up" } else { "down" }])
    }

    fn nft(&self, h: &Host, rules: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let _ = self.heal_quiet(h);
        let mut child = Command::new("ip")
            .args(["netns", "exec", &h.ns, "nft", "-f", "-"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .context("starting nft")?;
        child
            .stdin
            .take()
            .context("nft stdin")?
            .write_all(rules.as_bytes())?;
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "nft refused the rules: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    fn heal_quiet(&self, h: &Host) -> anyhow::Result<()> {
        run(Command::new("ip").args([
            "netns", "exec", &h.ns, "nft", "delete", "table", "inet", "chaos",
        ]))
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for h in self.hosts.values() {
            let _ = ip(&["netns", "del", &h.ns]);
            let _ = ip(&["link", "del", &h.veth]);
        }
        let _ = ip(&["link", "del", &self.bridge]);
    }
}

/// Removes namespaces, veths and bridges of labs whose owner process no longer exists.
fn cleanup_orphans() {
    let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() else {
        return;
    };
    let links = String::from_utf8_lossy(&out.stdout).to_string();
    let nss = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    // the tag is the pid modulo 0x10000 (4 hex digits) and the lab's number (1): a live
    // process whose pid matches keeps it
    let live: std::collections::HashSet<u32> = std::fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
                .map(|pid| pid % 0x10000)
                .collect()
        })
        .unwrap_or_default();
    let alive = |tag: &str| {
        tag.get(..4)
            .and_then(|t| u32::from_str_radix(t, 16).ok())
            .is_some_and(|p| tag.len() == 5 && live.contains(&p))
    };
    for line in nss.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(rest) = name.strip_prefix(PREFIX)
            && let Some((tag, _)) = rest.split_once('-')
            && !alive(tag)
        {
            let _ = ip(&["netns", "del", name]);
        }
    }
    for line in links.lines() {
        // "12: pchaos1a2bx: <...>" or "13: pchaos1a2bh11@if12: <...>": the tag (hex) is
        // followed by 'x' (bridge), 'h' or 'n' (veth ends)
        let Some(name) = line.split(':').nth(1).map(str::trim) else {
            continue;
        };
        let name = name.split('@').next().unwrap_or(name);
        if let Some(rest) = name.strip_prefix(PREFIX) {
            let tag: String = rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect();
            if !tag.is_empty() && !alive(&tag) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}
