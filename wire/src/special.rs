//! The IANA special-purpose address ranges (RFC 6890 and the IANA registries): addresses that
//! are private, loopback, link-local, CGNAT, multicast, documentation, benchmarking or reserved.
//!
//! Sensors never report such an address as a client unless the operator opts in, and the
//! blocker never blocks one unless the operator opts in: both judge by this one table.
//! IPv4-mapped (`::ffff:0:0/96`) and NAT64 (`64:ff9b::/96`) IPv6 networks are judged by the
//! IPv4 network they carry.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

const V4_SPECIAL: &[(&str, [u8; 4], u8)] = &[
    ("0.0.0.0/8 (this network)", [0, 0, 0, 0], 8),
    ("10.0.0.0/8 (private)", [10, 0, 0, 0], 8),
    ("100.64.0.0/10 (CGNAT)", [100, 64, 0, 0], 10),
    ("127.0.0.0/8 (loopback)", [127, 0, 0, 0], 8),
    ("169.254.0.0/16 (link-local)", [169, 254, 0, 0], 16),
    ("172.16.0.0/12 (private)", [172, 16, 0, 0], 12),
    (
        "192.0.0.0/24 (IETF protocol assignments)",
        [192, 0, 0, 0],
        24,
    ),
    ("192.0.2.0/24 (documentation)", [192, 0, 2, 0], 24),
    ("192.88.99.0/24 (6to4 relay anycast)", [192, 88, 99, 0], 24),
    ("192.168.0.0/16 (private)", [192, 168, 0, 0], 16),
    ("198.18.0.0/15 (benchmarking)", [198, 18, 0, 0], 15),
    ("198.51.100.0/24 (documentation)", [198, 51, 100, 0], 24),
    ("203.0.113.0/24 (documentation)", [203, 0, 113, 0], 24),
    ("224.0.0.0/4 (multicast)", [224, 0, 0, 0], 4),
    ("240.0.0.0/4 (reserved, broadcast)", [240, 0, 0, 0], 4),
];

const V6_SPECIAL: &[(&str, [u16; 8], u8)] = &[
    ("::/128 (unspecified)", [0; 8], 128),
    ("::1/128 (loopback)", [0, 0, 0, 0, 0, 0, 0, 1], 128),
    ("100::/64 (discard-only)", [0x100, 0, 0, 0, 0, 0, 0, 0], 64),
    (
        "2001::/23 (IETF protocol assignments)",
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
    ),
    (
        "2001:db8::/32 (documentation)",
        [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
        32,
    ),
    (
        "3fff::/20 (documentation)",
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
    ),
    ("fc00::/7 (unique local)", [0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
    ("fe80::/10 (link-local)", [0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
    ("ff00::/8 (multicast)", [0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
];

/// 2001::/23 is special, but parts of it are globally reachable (RFC 6890 and the IANA
/// registry): TEREDO 2001::/32 is special; 2001:1::1/128, 2001:1::2/128, 2001:3::/32 (AMT),
/// 2001:4:112::/48 (AS112) and 2001:20::/28 (ORCHIDv2) are global.
const V6_GLOBAL_IN_2001_23: &[([u16; 8], u8)] = &[
    ([0x2001, 1, 0, 0, 0, 0, 0, 1], 128),
    ([0x2001, 1, 0, 0, 0, 0, 0, 2], 128),
    ([0x2001, 3, 0, 0, 0, 0, 0, 0], 32),
    ([0x2001, 4, 0x112, 0, 0, 0, 0, 0], 48),
    ([0x2001, 0x20, 0, 0, 0, 0, 0, 0], 28),
];

fn v4net(a: [u8; 4], len: u8) -> Ipv4Net {
    // The tables above are static and valid; `new` only fails for len > 32.
    Ipv4Net::new(Ipv4Addr::from(a), len.min(32)).unwrap_or_default()
}

fn v6net(a: [u16; 8], len: u8) -> Ipv6Net {
    let [a0, a1, a2, a3, a4, a5, a6, a7] = a;
    Ipv6Net::new(Ipv6Addr::new(a0, a1, a2, a3, a4, a5, a6, a7), len.min(128)).unwrap_or_default()
}

/// Do two networks overlap (one contains the other)?
fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

/// The IPv4 network an IPv6 network stands for (IPv4-mapped or NAT64), if any.
pub fn embedded_v4(net: &Ipv6Net) -> Option<Ipv4Net> {
    let seg = net.addr().segments();
    let mapped = seg[..5].iter().all(|s| *s == 0) && seg[5] == 0xffff;
    let nat64 = seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6].iter().all(|s| *s == 0);
    if (mapped || nat64) && net.prefix_len() >= 96 {
        let o = net.addr().octets();
        let v4 = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
        return Ipv4Net::new(v4, net.prefix_len() - 96).ok();
    }
    None
}

/// The special-purpose range `net` overlaps, named (`"10.0.0.0/8 (private)"`), if any.
pub fn special_range(net: &IpNet) -> Option<&'static str> {
    match net {
        IpNet::V4(v4) => special_v4(v4),
        IpNet::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return special_v4(&v4);
            }
            for (name, a, len) in V6_SPECIAL {
                let range = IpNet::V6(v6net(*a, *len));
                if !overlaps(&range, net) {
                    continue;
                }
                if *len == 23 {
                    let global = V6_GLOBAL_IN_2001_23
                        .iter()
                        .any(|(g, l)| IpNet::V6(v6net(*g, *l)).contains(net));
                    if global {
                        continue;
                    }
                }
                return Some(name);
            }
            None
        }
    }
}

/// The special-purpose range `ip` is in, if any.
pub fn special_addr(ip: IpAddr) -> Option<&'static str> {
    special_range(&IpNet::from(ip))
}

fn special_v4(v4: &Ipv4Net) -> Option<&'static str> {
    if v4.contains(&Ipv4Addr::BROADCAST) {
        return Some("255.255.255.255/32 (broadcast)");
    }
    let net = IpNet::V4(*v4);
    V4_SPECIAL
        .iter()
        .find(|(_, a, len)| overlaps(&IpNet::V4(v4net(*a, *len)), &net))
        .map(|(name, _, _)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn special(s: &str) -> Option<&'static str> {
        special_addr(s.parse().unwrap())
    }

    #[test]
    fn special_and_global_addresses() {
        for s in [
            "10.1.2.3",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "192.168.1.1",
            "172.31.255.255",
            "198.51.100.7",
            "203.0.113.1",
            "192.0.2.1",
            "255.255.255.255",
            "224.0.0.1",
            "0.0.0.0",
            "::",
            "::1",
            "fe80::1",
            "fd00::1",
            "2001:db8::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001::1",
        ] {
            assert!(special(s).is_some(), "{s} should be special");
        }
        for s in [
            "8.8.8.8",
            "81.2.69.160",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "2001:4:112::1",
            "172.32.0.1",
        ] {
            assert_eq!(special(s), None, "{s} should be global");
        }
        assert_eq!(special("10.9.9.9"), Some("10.0.0.0/8 (private)"));
    }
}
