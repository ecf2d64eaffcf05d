use super::*;

fn allow() -> Allowances {
    Allowances {
        dhcp: true,
        dns: vec!["10.0.0.53".parse().unwrap(), "fd00::53".parse().unwrap()],
        controllers: vec!["10.0.0.7:7401".parse().unwrap()],
        edges: vec!["10.0.0.9:8443".parse().unwrap()],
    }
}

/// What `nft -j list table` shows after `rules` were installed: the same expressions, with
/// handles, and counters with their counts.
fn kernel(rules: &[Rule], chains: &[(&str, &str)], dropped: u64) -> Value {
    let mut items = vec![json!({"metainfo": {"version": "1.0.6"}})];
    items.push(json!({"table": {"family": FAMILY, "name": TABLE, "handle": 1}}));
    for (name, policy) in chains {
        items.push(
            json!({"chain": {"family": FAMILY, "table": TABLE, "name": name,
            "handle": 2, "type": "filter", "hook": name, "prio": 0, "policy": policy}}),
        );
    }
    for (i, r) in rules.iter().enumerate() {
        let expr: Vec<Value> = r
            .expr
            .iter()
            .map(|e| {
                if e.get("counter").is_some() {
                    json!({"counter": {"packets": dropped, "bytes": dropped * 60}})
                } else {
                    e.clone()
                }
            })
            .collect();
        items.push(
            json!({"rule": {"family": FAMILY, "table": TABLE, "chain": r.chain,
            "handle": 10 + i, "comment": r.comment, "expr": expr}}),
        );
    }
    json!({"nftables": items})
}

const CHAINS_DROP: [(&str, &str); 2] = [("output", "drop"), ("forward", "drop")];

fn inspect(v: &Value) -> Inspection {
    compare(&parse_listing(v).expect("listing"), &allow())
}

#[test]
fn the_transaction_replaces_the_table_whole() {
    let batch = transaction(&rules(&allow(), None));
    let items = batch["nftables"].as_array().unwrap();
    assert_eq!(
        items[0],
        json!({"add": {"table": {"family": "inet", "name": TABLE}}})
    );
    assert_eq!(
        items[1],
        json!({"delete": {"table": {"family": "inet", "name": TABLE}}})
    );
    assert_eq!(
        items[2],
        json!({"add": {"table": {"family": "inet", "name": TABLE}}})
    );
    for chain in ["output", "forward"] {
        assert!(
            items.iter().any(|i| i["add"]["chain"]["name"] == chain
                && i["add"]["chain"]["hook"] == chain
                && i["add"]["chain"]["policy"] == "drop"),
            "{chain}"
        );
    }
}

#[test]
fn rules_allow_only_loopback_the_grace_set_and_the_edges() {
    let comments: Vec<String> = rules(&allow(), None)
        .into_iter()
        .map(|r| format!("{} {}", r.chain, r.comment))
        .collect();
    assert_eq!(
        comments,
        [
            "output loopback",
            "output dhcp",
            "output dhcpv6",
            "output neighbour discovery",
            "output dns 10.0.0.53 udp",
            "output dns 10.0.0.53 tcp",
            "output dns fd00::53 udp",
            "output dns fd00::53 tcp",
            "output controller 10.0.0.7:7401",
            "output edge 10.0.0.9:8443 quic",
            "output edge 10.0.0.9:8443 https",
            "output everything else",
            "forward everything else",
        ]
    );
    let v6 = &rules(&allow(), None)[6];
    assert_eq!(v6.expr[0]["match"]["left"]["payload"]["protocol"], "ip6");
    let edge = &rules(&allow(), None)[9];
    assert_eq!(edge.expr[1]["match"]["left"]["payload"]["protocol"], "udp");
    assert_eq!(edge.expr[1]["match"]["right"], 8443);
    // no DHCP in the grace set: no DHCP rule
    let none = Allowances {
        dhcp: false,
        ..allow()
    };
    assert!(
        !rules(&none, None)
            .iter()
            .any(|r| r.comment.starts_with("dhcp"))
    );
}

#[test]
fn the_kernel_listing_is_compared_rule_by_rule() {
    let installed = rules(&allow(), None);
    assert_eq!(
        inspect(&kernel(&installed, &CHAINS_DROP, 7)),
        Inspection::Blocking {
            dropped_packets: 14
        }
    );
    let lifted = rules(&allow(), Some("palisade0"));
    assert_eq!(
        inspect(&kernel(&lifted, &CHAINS_DROP, 0)),
        Inspection::Lifted {
            tunnel: "palisade0".into(),
            dropped_packets: 0
        }
    );

    // a rule deleted from outside
    let mut missing = installed.clone();
    missing.remove(5);
    let Inspection::Altered { difference } = inspect(&kernel(&missing, &CHAINS_DROP, 0)) else {
        panic!("not seen")
    };
    assert!(difference.contains("dns 10.0.0.53 tcp"), "{difference}");

    // a rule added from outside
    let mut extra = installed.clone();
    extra.insert(
        1,
        Rule {
            chain: "output",
            comment: "loopback".into(),
            expr: vec![accept()],
        },
    );
    assert!(matches!(
        inspect(&kernel(&extra, &CHAINS_DROP, 0)),
        Inspection::Altered { .. }
    ));

    // a rule changed but its comment kept
    let mut changed = installed.clone();
    changed[9].expr[0] = daddr("10.0.0.10".parse().unwrap());
    assert!(matches!(
        inspect(&kernel(&changed, &CHAINS_DROP, 0)),
        Inspection::Altered { .. }
    ));

    // a policy turned to accept, a chain gone
    let Inspection::Altered { difference } = inspect(&kernel(
        &installed,
        &[("output", "accept"), ("forward", "drop")],
        0,
    )) else {
        panic!("not seen")
    };
    assert!(difference.contains("policy \"accept\""), "{difference}");
    assert!(matches!(
        inspect(&kernel(&installed, &[("output", "drop")], 0)),
        Inspection::Altered { .. }
    ));
}

#[test]
fn a_listing_that_is_not_nft_json_is_unreadable() {
    assert!(parse_listing(&json!({"tables": []})).is_err());
    assert!(
        parse_listing(&json!({"nftables": [{"rule": {"chain": "input", "expr": []}}]})).is_err()
    );
}
