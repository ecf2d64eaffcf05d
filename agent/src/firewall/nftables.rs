//! The block on Linux: an nftables table of the agent's own (`inet palisade_agent`), driven
//! through `nft`'s JSON interface (`nft -j`). Two base chains, `output` (what the device sends)
//! and `forward` (what it routes: containers, VMs), each with policy `drop`; a drop in any base
//! chain is final, so no other table's `accept` lets traffic past it.
//!
//! A change is one `nft -f` transaction that adds, deletes and re-adds the table with all its
//! rules: the kernel swaps the whole ruleset atomically. Every rule carries a comment, and
//! [`Nftables::inspect`] compares the kernel's listing with the rules the allowances produce,
//! expression by expression.

use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use super::{Allowances, Error, Firewall, Inspection};

const TOOL: &str = "nft";
const FAMILY: &str = "inet";
/// The agent's table.
pub const TABLE: &str = "palisade_agent";
/// The comment on the rule that lets the tunnel's traffic out.
const TUNNEL: &str = "tunnel";
const CHAINS: [&str; 2] = ["output", "forward"];

/// The Linux firewall: nftables through `nft -j`.
#[derive(Debug, Clone)]
pub struct Nftables {
    program: String,
}

impl Default for Nftables {
    fn default() -> Self {
        Nftables {
            program: TOOL.into(),
        }
    }
}

/// One rule: its chain, its comment, its expressions (as `nft -j` lists them).
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    chain: &'static str,
    comment: String,
    expr: Vec<Value>,
}

fn eq(left: Value, right: Value) -> Value {
    json!({"match": {"op": "==", "left": left, "right": right}})
}

fn payload(protocol: &str, field: &str) -> Value {
    json!({"payload": {"protocol": protocol, "field": field}})
}

fn oifname(name: &str) -> Value {
    eq(json!({"meta": {"key": "oifname"}}), json!(name))
}

fn daddr(ip: IpAddr) -> Value {
    let family = if ip.is_ipv4() { "ip" } else { "ip6" };
    eq(payload(family, "daddr"), json!(ip.to_string()))
}

fn port(protocol: &str, field: &str, port: u16) -> Value {
    eq(payload(protocol, field), json!(port))
}

fn accept() -> Value {
    json!({"accept": null})
}

/// The rules for `allow`, lifted into `tunnel` if given, in chain order.
fn rules(allow: &Allowances, tunnel: Option<&str>) -> Vec<Rule> {
    let mut out = Vec::new();
    let mut rule = |chain, comment: String, expr: Vec<Value>| {
        out.push(Rule {
            chain,
            comment,
            expr,
        })
    };
    rule("output", "loopback".into(), vec![oifname("lo"), accept()]);
    if let Some(t) = tunnel {
        rule("output", TUNNEL.into(), vec![oifname(t), accept()]);
    }
    if allow.dhcp {
        rule(
            "output",
            "dhcp".into(),
            vec![port("udp", "sport", 68), port("udp", "dport", 67), accept()],
        );
        rule(
            "output",
            "dhcpv6".into(),
            vec![
                port("udp", "sport", 546),
                port("udp", "dport", 547),
                accept(),
            ],
        );
    }
    // IPv6 does not work on a link without neighbour discovery; it carries no data
    rule(
        "output",
        "neighbour discovery".into(),
        vec![
            eq(
                payload("icmpv6", "type"),
                json!({"set": ["nd-router-solicit", "nd-neighbor-solicit", "nd-neighbor-advert"]}),
            ),
            accept(),
        ],
    );
    for dns in &allow.dns {
        for proto in ["udp", "tcp"] {
            rule(
                "output",
                format!("dns {dns} {proto}"),
                vec![daddr(*dns), port(proto, "dport", 53), accept()],
            );
        }
    }
    for c in &allow.controllers {
        rule(
            "output",
            format!("controller {c}"),
            vec![daddr(c.ip()), port("tcp", "dport", c.port()), accept()],
        );
    }
    for edge in &allow.edges {
        for (proto, what) in [("udp", "quic"), ("tcp", "https")] {
            rule(
                "output",
                format!("edge {edge} {what}"),
                vec![
                    daddr(edge.ip()),
                    port(proto, "dport", edge.port()),
                    accept(),
                ],
            );
        }
    }
    rule(
        "output",
        "everything else".into(),
        vec![json!({"counter": null}), json!({"drop": null})],
    );
    if let Some(t) = tunnel {
        rule("forward", TUNNEL.into(), vec![oifname(t), accept()]);
    }
    rule(
        "forward",
        "everything else".into(),
        vec![json!({"counter": null}), json!({"drop": null})],
    );
    out
}

/// The transaction that replaces the agent's table with `rules`.
fn transaction(rules: &[Rule]) -> Value {
    let table = json!({"family": FAMILY, "name": TABLE});
    let mut batch = vec![
        // add-then-delete removes an earlier table without failing when there is none
        json!({"add": {"table": table}}),
        json!({"delete": {"table": table}}),
        json!({"add": {"table": table}}),
    ];
    for chain in CHAINS {
        batch.push(json!({"add": {"chain": {
            "family": FAMILY, "table": TABLE, "name": chain,
            "type": "filter", "hook": chain, "prio": 0, "policy": "drop",
        }}}));
    }
    for r in rules {
        batch.push(json!({"add": {"rule": {
            "family": FAMILY, "table": TABLE, "chain": r.chain,
            "comment": r.comment, "expr": r.expr,
        }}}));
    }
    json!({"nftables": batch})
}

/// What a listing of the agent's table holds.
#[derive(Debug, Default, PartialEq)]
struct Listing {
    /// Base chains: name, hook, policy.
    chains: Vec<(String, String, String)>,
    rules: Vec<Rule>,
    /// Packets counted by the rules' counters.
    dropped: u64,
}

/// Reads `nft -j list table` output. Counters come back with their counts; they are compared
/// as plain `counter` expressions and their packets summed.
fn parse_listing(v: &Value) -> Result<Listing, String> {
    let items = v["nftables"].as_array().ok_or("no \"nftables\" array")?;
    let mut listing = Listing::default();
    for item in items {
        if let Some(c) = item.get("chain") {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
            listing.chains.push((s("name"), s("hook"), s("policy")));
        } else if let Some(r) = item.get("rule") {
            let chain_name = r["chain"].as_str().unwrap_or_default();
            let Some(chain) = CHAINS.into_iter().find(|c| *c == chain_name) else {
                return Err(format!("a rule in an unknown chain {chain_name:?}"));
            };
            let mut expr = r["expr"].as_array().cloned().unwrap_or_default();
            for e in &mut expr {
                if let Some(counter) = e.get("counter") {
                    listing.dropped += counter["packets"].as_u64().unwrap_or(0);
                    *e = json!({"counter": null});
                }
            }
            listing.rules.push(Rule {
                chain,
                comment: r["comment"].as_str().unwrap_or_default().to_string(),
                expr,
            });
        }
    }
    Ok(listing)
}

/// Compares a listing with what `allow` installs; the tunnel's interface is read from the
/// listing itself.
fn compare(listing: &Listing, allow: &Allowances) -> Inspection {
    for chain in CHAINS {
        let found = listing.chains.iter().find(|(n, ..)| n == chain);
        match found {
            Some((_, hook, policy)) if hook == chain && policy == "drop" => {}
            Some((_, hook, policy)) => {
                return Inspection::Altered {
                    difference: format!("chain {chain}: hook {hook:?}, policy {policy:?}"),
                };
            }
            None => {
                return Inspection::Altered {
                    difference: format!("chain {chain} is missing"),
                };
            }
        }
    }
    let tunnel = listing
        .rules
        .iter()
        .find(|r| r.comment == TUNNEL)
        .and_then(|r| r.expr.first())
        .and_then(|m| m["match"]["right"].as_str())
        .map(str::to_string);
    let expected = rules(allow, tunnel.as_deref());
    if let Some(i) = (0..expected.len().max(listing.rules.len()))
        .find(|&i| expected.get(i) != listing.rules.get(i))
    {
        let what = |r: Option<&Rule>| {
            r.map_or("nothing".to_string(), |r| {
                format!("{} rule {:?}", r.chain, r.comment)
            })
        };
        return Inspection::Altered {
            difference: format!(
                "rule {}: {} where {} was installed",
                i + 1,
                what(listing.rules.get(i)),
                what(expected.get(i))
            ),
        };
    }
    match tunnel {
        Some(tunnel) => Inspection::Lifted {
            tunnel,
            dropped_packets: listing.dropped,
        },
        None => Inspection::Blocking {
            dropped_packets: listing.dropped,
        },
    }
}

impl Nftables {
    /// Runs `nft` with `args`, `stdin` fed to it; its standard output.
    fn nft(&self, args: &[&str], stdin: Option<&[u8]>) -> Result<std::process::Output, Error> {
        let tool = |source| Error::Tool { tool: TOOL, source };
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(tool)?;
        if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(input).map_err(tool)?;
        }
        child.wait_with_output().map_err(tool)
    }

    fn apply(&self, rules: &[Rule]) -> Result<(), Error> {
        let batch = transaction(rules).to_string();
        let out = self.nft(&["-j", "-f", "-"], Some(batch.as_bytes()))?;
        if !out.status.success() {
            return Err(Error::Refused {
                tool: TOOL,
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

impl Firewall for Nftables {
    fn install(&self, allow: &Allowances) -> Result<(), Error> {
        self.apply(&rules(allow, None))
    }

    fn lift(&self, allow: &Allowances, tunnel: &str) -> Result<(), Error> {
        self.apply(&rules(allow, Some(tunnel)))
    }

    fn inspect(&self, allow: &Allowances) -> Result<Inspection, Error> {
        let out = self.nft(&["-j", "list", "table", FAMILY, TABLE], None)?;
        if !out.status.success() {
            let message = String::from_utf8_lossy(&out.stderr).trim().to_string();
            if message.contains("No such file or directory") {
                return Ok(Inspection::Absent);
            }
            return Err(Error::Refused {
                tool: TOOL,
                message,
            });
        }
        let listing = serde_json::from_slice(&out.stdout)
            .map_err(|e| e.to_string())
            .and_then(|v| parse_listing(&v))
            .map_err(|message| Error::Unreadable {
                tool: TOOL,
                message,
            })?;
        Ok(compare(&listing, allow))
    }

    fn remove(&self) -> Result<(), Error> {
        let table = json!({"family": FAMILY, "name": TABLE});
        let batch = json!({"nftables": [
            {"add": {"table": table}},
            {"delete": {"table": table}},
        ]});
        let out = self.nft(&["-j", "-f", "-"], Some(batch.to_string().as_bytes()))?;
        if !out.status.success() {
            return Err(Error::Refused {
                tool: TOOL,
                message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
