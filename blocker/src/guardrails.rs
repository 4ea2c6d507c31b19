//! Guardrails: what must never be blocked.
//!
//! Refused unless the operator opts in with `guardrails.allow_special`: the IANA
//! special-purpose ranges (private, loopback, link-local, CGNAT, multicast, documentation,
//! benchmarking, reserved). IPv4-mapped (`::ffff:0:0/96`) and NAT64 (`64:ff9b::/96`) IPv6
//! addresses are judged by the IPv4 address they carry. Allowlisted CIDRs are refused always,
//! and so is anything broader than the configured prefix limits (/24 and /48 by default).

use std::net::IpAddr;

use ipnet::IpNet;
use palisade_wire::special::{embedded_v4, special_range};

use crate::config::GuardrailConfig;

/// Why a CIDR was refused. [`Refusal::reason`] is the metric label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The CIDR falls in a special-purpose range (named).
    Special(&'static str),
    /// The CIDR overlaps an allowlisted CIDR.
    Allowlisted(IpNet),
    /// The CIDR is broader than the configured limit.
    TooBroad { max_len: u8 },
}

impl Refusal {
    /// Low-cardinality label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::Special(_) => "special_range",
            Refusal::Allowlisted(_) => "allowlisted",
            Refusal::TooBroad { .. } => "too_broad",
        }
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Special(name) => write!(f, "inside the special-purpose range {name}"),
            Refusal::Allowlisted(net) => write!(f, "overlaps the allowlisted {net}"),
            Refusal::TooBroad { max_len } => {
                write!(f, "broader than the /{max_len} limit")
            }
        }
    }
}

/// Do two networks overlap (one contains the other)?
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// The configured guardrails, ready to check CIDRs.
#[derive(Debug, Clone)]
pub struct Guardrails {
    allowlist: Vec<IpNet>,
    allow_special: Vec<IpNet>,
    max_v4: u8,
    max_v6: u8,
}

impl Guardrails {
    pub fn new(config: &GuardrailConfig) -> Guardrails {
        Guardrails {
            allowlist: config.allowlist.iter().map(IpNet::trunc).collect(),
            allow_special: config.allow_special.iter().map(IpNet::trunc).collect(),
            max_v4: config.max_prefix_v4_len,
            max_v6: config.max_prefix_v6_len,
        }
    }

    /// Only the breadth limit (manual blocks from the admin API are checked with this).
    pub fn check_breadth(&self, net: &IpNet) -> Result<(), Refusal> {
        match net {
            IpNet::V4(n) if n.prefix_len() < self.max_v4 => Err(Refusal::TooBroad {
                max_len: self.max_v4,
            }),
            IpNet::V6(n) if n.prefix_len() < self.max_v6 => Err(Refusal::TooBroad {
                max_len: self.max_v6,
            }),
            _ => Ok(()),
        }
    }

    /// Every guardrail. `net` must be normalized (see `palisade_providers::normalize`).
    pub fn check(&self, net: &IpNet) -> Result<(), Refusal> {
        self.check_breadth(net)?;
        if let Some(a) = self.allowlist.iter().find(|a| overlaps(a, net)) {
            return Err(Refusal::Allowlisted(*a));
        }
        if let Some(name) = self.special(net) {
            return Err(Refusal::Special(name));
        }
        Ok(())
    }

    /// The special-purpose range `net` touches (one table, shared with the sensor:
    /// `palisade_wire::special`), unless the operator allowed it. An IPv4-mapped or NAT64
    /// network is judged, and allowed, by the IPv4 network it carries.
    fn special(&self, net: &IpNet) -> Option<&'static str> {
        let judged = match net {
            IpNet::V6(v6) => embedded_v4(v6).map_or(*net, IpNet::V4),
            IpNet::V4(_) => *net,
        };
        if self.allow_special.iter().any(|a| a.contains(&judged)) {
            return None;
        }
        special_range(&judged)
    }
}

/// The CIDR a client address is counted and blocked as: its `/v6_len` (IPv6) or `/v4_len`
/// (IPv4) prefix. IPv4-mapped addresses are IPv4; a NAT64 address (`64:ff9b::/96`) stands for
/// the IPv4 client it carries, so it is blocked as `/96 + v4_len`, never as a prefix covering
/// every NAT64 client.
pub fn client_net(ip: IpAddr, v4_len: u8, v6_len: u8) -> IpNet {
    let host = host_net(ip);
    let len = match &host {
        IpNet::V4(_) => v4_len.min(32),
        IpNet::V6(v6) if embedded_v4(v6).is_some() => 96 + v4_len.min(32),
        IpNet::V6(_) => v6_len.min(128),
    };
    IpNet::new(host.addr(), len)
        .map(|n| n.trunc())
        .unwrap_or(host)
}

/// The CIDR a client address is blocked as (a host route, IPv4-mapped turned into IPv4).
pub fn host_net(ip: IpAddr) -> IpNet {
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    IpNet::from(ip)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(allow_special: &[&str], allowlist: &[&str]) -> Guardrails {
        Guardrails::new(&GuardrailConfig {
            allowlist: allowlist.iter().map(|s| s.parse().unwrap()).collect(),
            allow_special: allow_special.iter().map(|s| s.parse().unwrap()).collect(),
            ..GuardrailConfig::default()
        })
    }

    fn net(s: &str) -> IpNet {
        palisade_providers::parse_cidr(s).unwrap()
    }

    #[test]
    fn special_ranges_are_refused_by_default() {
        let g = g(&[], &[]);
        for s in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "0.1.2.3",
            "192.0.0.8",
            "192.0.2.7",
            "198.51.100.1",
            "203.0.113.9",
            "198.18.0.1",
            "198.19.255.1",
            "192.88.99.1",
            "::1",
            "fe80::1",
            "fd00::1",
            "fc00::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "100::1",
            "2001::1",
            "2001:2::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::c0a8:101",
        ] {
            let r = g.check(&net(s));
            assert!(matches!(r, Err(Refusal::Special(_))), "{s}: {r:?}");
        }
    }

    #[test]
    fn global_addresses_pass() {
        let g = g(&[], &[]);
        for s in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.3.1",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "2001:3::1",
            "2001:20::1",
            "64:ff9b::808:808",
            "::ffff:8.8.8.8",
            "81.2.69.0/24",
            "2a00:1450:4001::/48",
        ] {
            assert_eq!(g.check(&net(s)), Ok(()), "{s}");
        }
    }

    #[test]
    fn breadth_limits() {
        let g = g(&[], &[]);
        assert_eq!(
            g.check(&net("81.2.68.0/23")),
            Err(Refusal::TooBroad { max_len: 24 })
        );
        assert_eq!(g.check(&net("81.2.69.0/24")), Ok(()));
        assert_eq!(
            g.check(&net("2a00:1450::/47")),
            Err(Refusal::TooBroad { max_len: 48 })
        );
        assert_eq!(g.check(&net("2a00:1450:4001::/48")), Ok(()));
        // A range that contains a special range is refused too.
        assert!(matches!(
            g.check(&net("10.0.0.0/24")),
            Err(Refusal::Special(_))
        ));
    }

    #[test]
    fn opt_in_allows_documentation_ranges_only() {
        let g = g(
            &[
                "192.0.2.0/24",
                "198.51.100.0/24",
                "203.0.113.0/24",
                "2001:db8::/32",
            ],
            &[],
        );
        for s in [
            "192.0.2.1",
            "198.51.100.200",
            "203.0.113.0/24",
            "2001:db8:1::/48",
        ] {
            assert_eq!(g.check(&net(s)), Ok(()), "{s}");
        }
        for s in ["10.0.0.1", "127.0.0.1", "fe80::1"] {
            assert!(g.check(&net(s)).is_err(), "{s}");
        }
    }

    #[test]
    fn allowlist_always_wins() {
        let g = g(&["203.0.113.0/24"], &["203.0.113.64/26", "2606:4700::/32"]);
        assert_eq!(g.check(&net("203.0.113.1")), Ok(()));
        assert!(matches!(
            g.check(&net("203.0.113.70")),
            Err(Refusal::Allowlisted(_))
        ));
        // A block that would cover an allowlisted range is refused as well.
        assert!(matches!(
            g.check(&net("203.0.113.0/24")),
            Err(Refusal::Allowlisted(_))
        ));
        assert!(matches!(
            g.check(&net("2606:4700::1111")),
            Err(Refusal::Allowlisted(_))
        ));
    }

    #[test]
    fn clients_are_counted_as_their_prefix() {
        let c = |s: &str, v4: u8, v6: u8| client_net(s.parse().unwrap(), v4, v6).to_string();
        assert_eq!(
            c("2a00:1450:4001:81c::200e", 32, 64),
            "2a00:1450:4001:81c::/64"
        );
        assert_eq!(
            c("2a00:1450:4001:81c::200e", 32, 56),
            "2a00:1450:4001:800::/56"
        );
        assert_eq!(
            c("2a00:1450:4001:81c::200e", 32, 128),
            "2a00:1450:4001:81c::200e/128"
        );
        assert_eq!(c("81.2.69.160", 32, 64), "81.2.69.160/32");
        assert_eq!(c("81.2.69.160", 24, 64), "81.2.69.0/24");
        assert_eq!(c("::ffff:81.2.69.160", 32, 64), "81.2.69.160/32");
        // NAT64: the IPv4 client it carries, never the /64 holding every NAT64 client.
        assert_eq!(c("64:ff9b::5102:45a0", 32, 64), "64:ff9b::5102:45a0/128");
        assert_eq!(c("64:ff9b::5102:45a0", 24, 64), "64:ff9b::5102:4500/120");
    }

    #[test]
    fn an_allowlisted_address_makes_its_prefix_unblockable() {
        let g = g(&[], &["2a00:1450:4001:81c::53/128"]);
        let prefix = client_net("2a00:1450:4001:81c::bad".parse().unwrap(), 32, 64);
        assert!(matches!(g.check(&prefix), Err(Refusal::Allowlisted(_))));
        // The neighbouring /64 is blockable.
        let other = client_net("2a00:1450:4001:81d::bad".parse().unwrap(), 32, 64);
        assert_eq!(g.check(&other), Ok(()));
        // A prefix touching a special range is refused as the range.
        let g = super::Guardrails::new(&GuardrailConfig::default());
        let ula = client_net("fd00::1".parse().unwrap(), 32, 64);
        assert!(matches!(g.check(&ula), Err(Refusal::Special(_))));
        // The NAT64 prefix of a private IPv4 client is judged by that IPv4 address.
        let nat64 = client_net("64:ff9b::a00:1".parse().unwrap(), 32, 64);
        assert!(matches!(g.check(&nat64), Err(Refusal::Special(_))));
    }

    #[test]
    fn host_net_unmaps_ipv4() {
        assert_eq!(
            host_net("::ffff:8.8.8.8".parse().unwrap()).to_string(),
            "8.8.8.8/32"
        );
        assert_eq!(
            host_net("2001:db8::1".parse().unwrap()).to_string(),
            "2001:db8::1/128"
        );
    }
}
