//! Which address to report: the peer, or a hop of `Forwarded` / `X-Forwarded-For` chosen by
//! the configured trusted proxies.
//!
//! The rule: a header is only believed when the peer itself is a trusted proxy. Then the hops
//! are walked from the right (the hop appended last, by the proxy nearest to us); trusted hops
//! are skipped and the first untrusted one is the client. A malformed or obfuscated entry stops
//! the walk: the last address known good (a trusted proxy) is returned, never something an
//! attacker could have written further left. `Forwarded` (RFC 7239) wins over
//! `X-Forwarded-For` when both are present.

use std::net::IpAddr;

use ipnet::IpNet;

/// The trusted proxy CIDRs.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Vec<IpNet>,
}

impl TrustedProxies {
    /// Trust these networks.
    pub fn new(nets: Vec<IpNet>) -> Self {
        TrustedProxies { nets }
    }

    /// Is `ip` a trusted proxy? IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.nets.iter().any(|n| n.contains(&ip))
    }

    /// The client address for a request from `peer` carrying `headers`.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        headers: impl IntoIterator<Item = (&'a str, &'a str)> + Clone,
    ) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.contains(peer) {
            return peer;
        }
        let forwarded: Vec<&str> = headers
            .clone()
            .into_iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("forwarded"))
            .map(|(_, v)| v)
            .collect();
        let hops: Vec<Option<IpAddr>> = if !forwarded.is_empty() {
            forwarded.iter().flat_map(|v| forwarded_hops(v)).collect()
        } else {
            headers
                .into_iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("x-forwarded-for"))
                .flat_map(|(_, v)| v.split(','))
                .map(parse_hop)
                .collect()
        };
        let mut current = peer;
        for hop in hops.iter().rev() {
            match hop {
                None => return current,
                Some(ip) => {
                    current = *ip;
                    if !self.contains(*ip) {
                        return *ip;
                    }
                }
            }
        }
        current
    }
}

/// The `for=` value of each element of a `Forwarded` header; `None` for an element without a
/// usable address (missing, `unknown`, obfuscated `_x`, malformed).
fn forwarded_hops(value: &str) -> impl Iterator<Item = Option<IpAddr>> + '_ {
    split_outside_quotes(value, ',').into_iter().map(|element| {
        split_outside_quotes(element, ';')
            .into_iter()
            .filter_map(|pair| {
                let (k, v) = pair.split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then_some(v.trim())
            })
            .next()
            .and_then(|v| parse_hop(v.trim_matches('"')))
    })
}

fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        if c == '"' {
            in_quotes = !in_quotes;
        } else if c == sep && !in_quotes {
            out.push(&s[start..i]);
            start = i + 1;
        }
    }
    out.push(&s[start..]);
    out
}

/// One hop: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, tail) = rest.split_once(']')?;
        if !(tail.is_empty() || valid_port(tail.strip_prefix(':')?)) {
            return None;
        }
        return inner
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|ip| IpAddr::V6(ip).to_canonical());
    }
    let (host, port) = s.rsplit_once(':')?;
    if !valid_port(port) {
        return None;
    }
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u16>().is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusted() -> TrustedProxies {
        TrustedProxies::new(vec![
            "10.0.0.0/8".parse().unwrap(),
            "fd00::/8".parse().unwrap(),
        ])
    }

    fn client(peer: &str, headers: &[(&str, &str)]) -> IpAddr {
        trusted().client_ip(ip(peer), headers.iter().copied())
    }

    #[test]
    fn untrusted_peer_header_is_never_believed() {
        assert_eq!(
            client("203.0.113.9", &[("X-Forwarded-For", "198.51.100.1")]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client("203.0.113.9", &[("Forwarded", "for=198.51.100.1")]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn no_header_gives_the_peer() {
        assert_eq!(client("10.1.1.1", &[]), ip("10.1.1.1"));
        assert_eq!(client("10.1.1.1", &[("Host", "x")]), ip("10.1.1.1"));
    }

    #[test]
    fn walks_from_the_right_skipping_trusted_hops() {
        // spoofed left-most entry, real client, then an inner trusted proxy
        let h = [("X-Forwarded-For", "1.1.1.1, 198.51.100.7, 10.2.3.4")];
        assert_eq!(client("10.0.0.5", &h), ip("198.51.100.7"));
    }

    #[test]
    fn several_header_lines_are_one_list() {
        let h = [
            ("X-Forwarded-For", "1.1.1.1"),
            ("x-forwarded-for", "198.51.100.7, 10.9.9.9"),
        ];
        assert_eq!(client("10.0.0.5", &h), ip("198.51.100.7"));
    }

    #[test]
    fn all_trusted_gives_the_leftmost() {
        let h = [("X-Forwarded-For", "10.3.3.3, 10.2.2.2")];
        assert_eq!(client("10.0.0.5", &h), ip("10.3.3.3"));
    }

    #[test]
    fn garbage_stops_the_walk_at_the_last_trusted_hop() {
        let h = [("X-Forwarded-For", "198.51.100.7, not-an-ip, 10.2.2.2")];
        assert_eq!(client("10.0.0.5", &h), ip("10.2.2.2"));
        let h = [("X-Forwarded-For", "198.51.100.7,,")];
        assert_eq!(client("10.0.0.5", &h), ip("10.0.0.5"));
        let h = [("X-Forwarded-For", "\u{0}\u{ff}zz")];
        assert_eq!(client("10.0.0.5", &h), ip("10.0.0.5"));
        // garbage to the left of the real client does not matter
        let h = [("X-Forwarded-For", "evil, 198.51.100.7")];
        assert_eq!(client("10.0.0.5", &h), ip("198.51.100.7"));
    }

    #[test]
    fn ports_in_values() {
        let h = [("X-Forwarded-For", "198.51.100.7:4711")];
        assert_eq!(client("10.0.0.5", &h), ip("198.51.100.7"));
        let h = [("X-Forwarded-For", "[2001:db8::7]:4711")];
        assert_eq!(client("10.0.0.5", &h), ip("2001:db8::7"));
        let h = [("X-Forwarded-For", "198.51.100.7:99999")];
        assert_eq!(client("10.0.0.5", &h), ip("10.0.0.5"));
    }

    #[test]
    fn ipv6_peers_and_hops() {
        let h = [("X-Forwarded-For", "2001:db8::1, fd00::2")];
        assert_eq!(client("fd00::1", &h), ip("2001:db8::1"));
        // IPv4-mapped peer counts as its IPv4 address
        let h = [("X-Forwarded-For", "198.51.100.7")];
        assert_eq!(client("::ffff:10.0.0.5", &h), ip("198.51.100.7"));
        assert_eq!(client("::ffff:203.0.113.1", &h), ip("203.0.113.1"));
    }

    #[test]
    fn forwarded_header_forms() {
        let h = [(
            "Forwarded",
            "for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2001:db8:cafe::17]:4711\", for=10.1.1.1",
        )];
        assert_eq!(client("10.0.0.5", &h), ip("2001:db8:cafe::17"));
        let h = [("Forwarded", "for=\"192.0.2.43:47011\"")];
        assert_eq!(client("10.0.0.5", &h), ip("192.0.2.43"));
        // obfuscated / unknown identifiers stop the walk
        let h = [("Forwarded", "for=192.0.2.60, for=_hidden")];
        assert_eq!(client("10.0.0.5", &h), ip("10.0.0.5"));
        let h = [("Forwarded", "for=192.0.2.60, for=unknown, for=10.4.4.4")];
        assert_eq!(client("10.0.0.5", &h), ip("10.4.4.4"));
        // Forwarded wins over X-Forwarded-For
        let h = [
            ("X-Forwarded-For", "198.51.100.99"),
            ("Forwarded", "for=192.0.2.60"),
        ];
        assert_eq!(client("10.0.0.5", &h), ip("192.0.2.60"));
        // quoted separators do not split
        let h = [("Forwarded", "for=\"[2001:db8::1]:80\";by=\"a,b\"")];
        assert_eq!(client("10.0.0.5", &h), ip("2001:db8::1"));
    }
}
