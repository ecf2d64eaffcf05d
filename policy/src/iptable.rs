//! A CIDR table: merged, sorted address ranges with binary search, so a rule with thousands of
//! networks is matched in O(log n).

use std::net::IpAddr;

use ipnet::IpNet;

/// A set of IPv4 and IPv6 networks.
#[derive(Debug, Clone, Default)]
pub struct IpTable {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl IpTable {
    /// Builds the table from networks.
    pub fn new(nets: impl IntoIterator<Item = IpNet>) -> Self {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for net in nets {
            match net {
                IpNet::V4(n) => v4.push((u32::from(n.network()), u32::from(n.broadcast()))),
                IpNet::V6(n) => v6.push((u128::from(n.network()), u128::from(n.broadcast()))),
            }
        }
        Self {
            v4: merge(v4),
            v6: merge(v6),
        }
    }

    /// True when the table holds no network.
    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Whether `ip` is in any network. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip.to_canonical() {
            IpAddr::V4(a) => find(&self.v4, u32::from(a)),
            IpAddr::V6(a) => find(&self.v6, u128::from(a)),
        }
    }
}

fn merge<T: Ord + Copy + num_like::Succ>(mut ranges: Vec<(T, T)>) -> Vec<(T, T)> {
    ranges.sort_unstable();
    let mut out: Vec<(T, T)> = Vec::with_capacity(ranges.len());
    for (lo, hi) in ranges {
        match out.last_mut() {
            Some(last) if lo <= last.1.succ() => {
                if hi > last.1 {
                    last.1 = hi;
                }
            }
            _ => out.push((lo, hi)),
        }
    }
    out
}

fn find<T: Ord + Copy>(ranges: &[(T, T)], x: T) -> bool {
    let i = ranges.partition_point(|r| r.0 <= x);
    i > 0 && ranges[i - 1].1 >= x
}

mod num_like {
    /// Saturating successor, to merge adjacent ranges.
    pub trait Succ {
        fn succ(self) -> Self;
    }
    impl Succ for u32 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
    impl Succ for u128 {
        fn succ(self) -> Self {
            self.saturating_add(1)
        }
    }
}

/// Parses a CIDR (`10.0.0.0/8`) or a single address (`10.1.2.3`, taken as /32 or /128).
pub fn parse_net(s: &str) -> Option<IpNet> {
    if let Ok(net) = s.parse::<IpNet>() {
        return Some(net);
    }
    s.parse::<IpAddr>().ok().map(IpNet::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[test]
    fn matches_v4_v6_and_mapped() {
        let t = IpTable::new(
            ["10.0.0.0/8", "192.168.1.7", "2001:db8::/32"]
                .iter()
                .filter_map(|s| parse_net(s)),
        );
        assert!(t.contains(ip("10.200.3.4")));
        assert!(t.contains(ip("192.168.1.7")));
        assert!(!t.contains(ip("192.168.1.8")));
        assert!(t.contains(ip("2001:db8::1")));
        assert!(!t.contains(ip("2001:db9::1")));
        assert!(t.contains(ip("::ffff:10.1.1.1")));
        assert!(!t.contains(ip("11.0.0.0")));
    }

    #[test]
    fn merges_overlaps_and_adjacent() {
        let t = IpTable::new(
            ["10.0.0.0/25", "10.0.0.128/25", "10.0.0.0/24", "0.0.0.0/0"]
                .iter()
                .filter_map(|s| parse_net(s)),
        );
        assert_eq!(t.v4.len(), 1);
        assert!(t.contains(ip("255.255.255.255")));
    }

    #[test]
    fn rejects_bad_cidrs() {
        assert!(parse_net("10.0.0.300/8").is_none());
        assert!(parse_net("10.0.0.0/33").is_none());
        assert!(parse_net("example.com").is_none());
    }
}
