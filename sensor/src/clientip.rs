//! Which address to report: the client behind the deployment's trusted proxies, or nobody.
//!
//! Palisade blocks what it reports, so the address must be one the client cannot choose:
//!
//! - Only the header the deployment's proxy *appends* is read ([`ClientHeader`]:
//!   `X-Forwarded-For` by default; `Forwarded` or `X-Real-IP` only when configured). ALB,
//!   CloudFront, ingress-nginx and nginx's realip append the address they received from to
//!   `X-Forwarded-For` and pass a client's own `Forwarded` header through untouched, so any
//!   other header is the client's claim, never evidence.
//! - The header is believed only when the peer is a trusted proxy (`trusted_proxies` CIDRs, or
//!   any peer when only `trusted_hops` is set), and only for a request that starts at a known
//!   boundary of its connection ([`RequestMeta::in_sync`]): after lost bytes or a parse failure
//!   the "request" could be bytes smuggled inside a body.
//! - The hops are walked from the right (the entry appended last, by the proxy nearest to us):
//!   with CIDRs, trusted entries are skipped and the first untrusted one is the client; with a
//!   hop count `N`, the client is the `N`th entry from the right.
//! - What comes out is never a trusted proxy, an unparsable entry, or a special-purpose
//!   address (private, loopback, documentation, ...; unless the operator listed it in
//!   `report_special`), and never comes from a connection whose handshake was not seen
//!   ([`RequestMeta::established`]): such requests are inspected and counted as
//!   [`Unattributed`], never reported.

use std::net::{IpAddr, Ipv6Addr};

use ipnet::IpNet;
use serde::Deserialize;

use crate::reassembly::RequestMeta;

/// The header the deployment's proxy appends the client address to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum ClientHeader {
    /// `X-Forwarded-For`: ALB, CloudFront, ingress-nginx, nginx `proxy_add_x_forwarded_for`.
    #[default]
    XForwardedFor,
    /// `Forwarded` (RFC 7239) `for=` parameters: only for proxies that append to it.
    Forwarded,
    /// `X-Real-IP`: one address, set (not appended) by the proxy; a request with several such
    /// lines is not attributed.
    XRealIp,
    /// No header: a trusted peer is never looked through.
    None,
}

impl ClientHeader {
    /// The header's name as sent.
    pub fn name(self) -> &'static str {
        match self {
            ClientHeader::XForwardedFor => "X-Forwarded-For",
            ClientHeader::Forwarded => "Forwarded",
            ClientHeader::XRealIp => "X-Real-IP",
            ClientHeader::None => "none",
        }
    }
}

impl std::str::FromStr for ClientHeader {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ClientHeader::XForwardedFor),
            "forwarded" => Ok(ClientHeader::Forwarded),
            "x-real-ip" => Ok(ClientHeader::XRealIp),
            "none" => Ok(ClientHeader::None),
            other => Err(format!(
                "unknown client address header `{other}` (expected x-forwarded-for, forwarded, \
                 x-real-ip or none)"
            )),
        }
    }
}

/// Why a request's detections were not reported. [`Unattributed::reason`] is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unattributed {
    /// The connection's handshake was not seen: the source address may be forged.
    NoHandshake,
    /// The request came from a trusted proxy but not from a known request boundary (after
    /// lost bytes, a resync or a parse failure), so its headers may be a smuggled request's.
    Desync,
    /// The address found is a trusted proxy (every hop trusted, or the hop count lands on one).
    TrustedProxy,
    /// The peer is a trusted proxy and the configured header is missing.
    NoHeader,
    /// The header has fewer entries than `trusted_hops` says the proxies append.
    MissingHops,
    /// The entry where the walk stopped is not an address (`unknown`, obfuscated, garbage), or
    /// `X-Real-IP` came more than once.
    Unparsable,
    /// The address is in a special-purpose range (named) that `report_special` does not list.
    Special(&'static str),
}

impl Unattributed {
    /// Low-cardinality label for `palisade_sensor_unattributed_total{reason}`.
    pub fn reason(self) -> &'static str {
        match self {
            Unattributed::NoHandshake => "no_handshake",
            Unattributed::Desync => "desync",
            Unattributed::TrustedProxy => "trusted_proxy",
            Unattributed::NoHeader => "no_header",
            Unattributed::MissingHops => "missing_hops",
            Unattributed::Unparsable => "unparsable",
            Unattributed::Special(_) => "special_range",
        }
    }
}

impl std::fmt::Display for Unattributed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unattributed::NoHandshake => write!(f, "the connection's handshake was not seen"),
            Unattributed::Desync => write!(
                f,
                "a trusted proxy's request that does not start at a known request boundary"
            ),
            Unattributed::TrustedProxy => write!(f, "the address found is a trusted proxy"),
            Unattributed::NoHeader => {
                write!(f, "the trusted proxy sent no client address header")
            }
            Unattributed::MissingHops => write!(
                f,
                "the client address header has fewer entries than trusted_hops"
            ),
            Unattributed::Unparsable => write!(f, "the client address entry is not an address"),
            Unattributed::Special(range) => {
                write!(f, "the address is in the special-purpose range {range}")
            }
        }
    }
}

/// How the client address is found: the deployment's proxies and the header they append.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    header: ClientHeader,
    proxies: Vec<IpNet>,
    hops: u8,
    report_special: Vec<IpNet>,
}

impl Attribution {
    /// Believe `header` from peers in `proxies` (or from any peer when `proxies` is empty and
    /// `hops > 0`), taking the `hops`th entry from the right when `hops > 0`, else the first
    /// entry from the right that is not in `proxies`. Addresses in `report_special` are
    /// reported although they are special-purpose (tests, demos, internal networks).
    pub fn new(
        header: ClientHeader,
        proxies: Vec<IpNet>,
        hops: u8,
        report_special: Vec<IpNet>,
    ) -> Self {
        Attribution {
            header,
            proxies: proxies.iter().map(IpNet::trunc).collect(),
            hops,
            report_special: report_special.iter().map(IpNet::trunc).collect(),
        }
    }

    /// Trust these proxies' `X-Forwarded-For`, walking past trusted entries; report any address.
    /// (Tests and tools; the sensor builds its attribution from the configuration.)
    pub fn with_proxies(proxies: Vec<IpNet>) -> Self {
        Attribution::new(ClientHeader::XForwardedFor, proxies, 0, Vec::new())
    }

    /// Does any setting make a peer a proxy? (Without one, every peer is taken as the client.)
    pub fn trusts_any(&self) -> bool {
        !self.proxies.is_empty() || self.hops > 0
    }

    /// Is `ip` in a trusted proxy CIDR? IPv4-mapped IPv6 addresses count as IPv4.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.proxies.iter().any(|n| n.contains(&ip))
    }

    fn peer_is_proxy(&self, peer: IpAddr) -> bool {
        if self.proxies.is_empty() {
            self.hops > 0
        } else {
            self.is_trusted_proxy(peer)
        }
    }

    /// The address to report for a request from `peer` carrying `headers`, or why there is none.
    pub fn client_ip<'a>(
        &self,
        peer: IpAddr,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
        meta: RequestMeta,
    ) -> Result<IpAddr, Unattributed> {
        if !meta.established {
            return Err(Unattributed::NoHandshake);
        }
        let peer = peer.to_canonical();
        let client = if self.peer_is_proxy(peer) {
            if !meta.in_sync {
                return Err(Unattributed::Desync);
            }
            self.walk(headers)?
        } else {
            peer
        };
        if self.is_trusted_proxy(client) {
            return Err(Unattributed::TrustedProxy);
        }
        if let Some(range) = palisade_wire::special::special_addr(client)
            && !self.report_special.iter().any(|n| n.contains(&client))
        {
            return Err(Unattributed::Special(range));
        }
        Ok(client)
    }

    /// The client behind a trusted peer, from the configured header.
    fn walk<'a>(
        &self,
        headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<IpAddr, Unattributed> {
        let name = self.header.name();
        let values = headers
            .into_iter()
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v);
        let hops: Vec<Option<IpAddr>> = match self.header {
            ClientHeader::None => return Err(Unattributed::NoHeader),
            ClientHeader::XForwardedFor => {
                values.flat_map(|v| v.split(',')).map(parse_hop).collect()
            }
            ClientHeader::Forwarded => values.flat_map(forwarded_hops).collect(),
            ClientHeader::XRealIp => {
                let all: Vec<&str> = values.collect();
                if all.len() > 1 {
                    return Err(Unattributed::Unparsable);
                }
                all.into_iter().map(parse_hop).collect()
            }
        };
        if hops.is_empty() {
            return Err(Unattributed::NoHeader);
        }
        if self.hops > 0 {
            let n = usize::from(self.hops);
            if hops.len() < n {
                return Err(Unattributed::MissingHops);
            }
            return hops[hops.len() - n].ok_or(Unattributed::Unparsable);
        }
        for hop in hops.iter().rev() {
            match hop {
                None => return Err(Unattributed::Unparsable),
                Some(ip) if self.is_trusted_proxy(*ip) => continue,
                Some(ip) => return Ok(*ip),
            }
        }
        Err(Unattributed::TrustedProxy)
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
            .and_then(|v| parse_hop(v.trim().trim_matches('"')))
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

/// One hop as the big proxies write them: `1.2.3.4`, `1.2.3.4:80` (Azure Application Gateway
/// appends the port), `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:80`, with spaces or tabs
/// around. Anything else (`unknown`, zone ids, leading zeros, hostnames) is `None`.
fn parse_hop(s: &str) -> Option<IpAddr> {
    let s = s.trim_matches([' ', '\t']);
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (inner, tail) = rest.split_once(']')?;
        if !(tail.is_empty() || valid_port(tail.strip_prefix(':')?)) {
            return None;
        }
        return inner
            .parse::<Ipv6Addr>()
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

    fn nets(list: &[&str]) -> Vec<IpNet> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    const OK: RequestMeta = RequestMeta::WHOLE;

    /// Trusts 10/8 and fd00::/8 as proxies, reads X-Forwarded-For.
    fn xff() -> Attribution {
        Attribution::new(
            ClientHeader::XForwardedFor,
            nets(&["10.0.0.0/8", "fd00::/8"]),
            0,
            Vec::new(),
        )
    }

    fn client(
        a: &Attribution,
        peer: &str,
        headers: &[(&str, &str)],
    ) -> Result<IpAddr, Unattributed> {
        a.client_ip(ip(peer), headers.iter().copied(), OK)
    }

    #[test]
    fn untrusted_peer_is_the_client_whatever_it_claims() {
        let a = xff();
        assert_eq!(
            client(&a, "81.2.69.160", &[("X-Forwarded-For", "8.8.8.8")]),
            Ok(ip("81.2.69.160"))
        );
        assert_eq!(
            client(&a, "81.2.69.160", &[("Forwarded", "for=8.8.8.8")]),
            Ok(ip("81.2.69.160"))
        );
    }

    #[test]
    fn a_client_written_forwarded_header_is_never_believed() {
        // The proxy appended the real client to X-Forwarded-For; the client wrote Forwarded.
        let h = [
            ("Forwarded", "for=8.8.8.8"),
            ("X-Forwarded-For", "81.2.69.160"),
        ];
        assert_eq!(client(&xff(), "10.0.0.5", &h), Ok(ip("81.2.69.160")));
        let h = [
            ("Forwarded", "for=unknown"),
            ("X-Forwarded-For", "81.2.69.160"),
        ];
        assert_eq!(client(&xff(), "10.0.0.5", &h), Ok(ip("81.2.69.160")));
        // Without the appended header, the proxy itself is never reported.
        let h = [("Forwarded", "for=8.8.8.8")];
        assert_eq!(client(&xff(), "10.0.0.5", &h), Err(Unattributed::NoHeader));
        let h = [("Forwarded", "for=unknown")];
        assert_eq!(client(&xff(), "10.0.0.5", &h), Err(Unattributed::NoHeader));
    }

    #[test]
    fn walks_from_the_right_skipping_trusted_hops() {
        // spoofed left-most entry, real client, then an inner trusted proxy
        let h = [("X-Forwarded-For", "1.1.1.1, 81.2.69.160, 10.2.3.4")];
        assert_eq!(client(&xff(), "10.0.0.5", &h), Ok(ip("81.2.69.160")));
        // several header lines are one list, in order
        let h = [
            ("X-Forwarded-For", "1.1.1.1"),
            ("x-forwarded-for", "81.2.69.160, 10.9.9.9"),
        ];
        assert_eq!(client(&xff(), "10.0.0.5", &h), Ok(ip("81.2.69.160")));
    }

    #[test]
    fn never_a_trusted_proxy_or_the_peer_behind_a_proxy() {
        let h = [("X-Forwarded-For", "10.3.3.3, 10.2.2.2")];
        assert_eq!(
            client(&xff(), "10.0.0.5", &h),
            Err(Unattributed::TrustedProxy)
        );
        assert_eq!(client(&xff(), "10.1.1.1", &[]), Err(Unattributed::NoHeader));
        assert_eq!(
            client(&xff(), "10.1.1.1", &[("Host", "x")]),
            Err(Unattributed::NoHeader)
        );
    }

    #[test]
    fn garbage_where_the_walk_stops_is_unparsable() {
        for v in [
            "81.2.69.160, not-an-ip, 10.2.2.2",
            "81.2.69.160,,",
            "\u{0}\u{ff}zz",
            "unknown",
        ] {
            let h = [("X-Forwarded-For", v)];
            assert_eq!(
                client(&xff(), "10.0.0.5", &h),
                Err(Unattributed::Unparsable),
                "{v}"
            );
        }
        // garbage to the left of the real client does not matter
        let h = [("X-Forwarded-For", "evil, 81.2.69.160")];
        assert_eq!(client(&xff(), "10.0.0.5", &h), Ok(ip("81.2.69.160")));
        // leading zeros, zone ids and bad ports are not addresses
        for v in [
            "081.2.69.160",
            "fe80::1%eth0",
            "81.2.69.160:99999",
            "[2a00::1]x",
        ] {
            let h = [("X-Forwarded-For", v)];
            assert_eq!(
                client(&xff(), "10.0.0.5", &h),
                Err(Unattributed::Unparsable),
                "{v}"
            );
        }
    }

    #[test]
    fn the_forms_big_proxies_write() {
        for (v, want) in [
            ("81.2.69.160:4711", "81.2.69.160"),
            ("[2a00:1450::7]:4711", "2a00:1450::7"),
            ("[2a00:1450::7]", "2a00:1450::7"),
            ("2a00:1450::7", "2a00:1450::7"),
            (" \t81.2.69.160\t ", "81.2.69.160"),
            ("1.1.1.1,81.2.69.160", "81.2.69.160"),
            ("::ffff:81.2.69.160", "81.2.69.160"),
        ] {
            let h = [("X-Forwarded-For", v)];
            assert_eq!(client(&xff(), "10.0.0.5", &h), Ok(ip(want)), "{v}");
        }
        // an IPv4-mapped peer counts as its IPv4 address
        let h = [("X-Forwarded-For", "81.2.69.160")];
        assert_eq!(client(&xff(), "::ffff:10.0.0.5", &h), Ok(ip("81.2.69.160")));
        assert_eq!(client(&xff(), "::ffff:81.2.69.1", &h), Ok(ip("81.2.69.1")));
        let h = [("X-Forwarded-For", "2a00:1450::1, fd00::2")];
        assert_eq!(client(&xff(), "fd00::1", &h), Ok(ip("2a00:1450::1")));
    }

    #[test]
    fn hop_count_takes_the_nth_from_the_right() {
        // CloudFront + ALB: CloudFront appends the viewer, the ALB appends CloudFront's edge.
        let a = Attribution::new(ClientHeader::XForwardedFor, Vec::new(), 2, Vec::new());
        let h = [("X-Forwarded-For", "8.8.8.8, 81.2.69.160, 130.176.1.1")];
        assert_eq!(client(&a, "172.31.5.5", &h), Ok(ip("81.2.69.160")));
        let h = [("X-Forwarded-For", "130.176.1.1")];
        assert_eq!(client(&a, "172.31.5.5", &h), Err(Unattributed::MissingHops));
        // with CIDRs too, a peer outside them is the client
        let a = Attribution::new(
            ClientHeader::XForwardedFor,
            nets(&["172.31.0.0/16"]),
            1,
            Vec::new(),
        );
        let h = [("X-Forwarded-For", "8.8.8.8, 81.2.69.160")];
        assert_eq!(client(&a, "172.31.5.5", &h), Ok(ip("81.2.69.160")));
        assert_eq!(client(&a, "81.2.69.9", &h), Ok(ip("81.2.69.9")));
        // a count that lands on a trusted proxy reports nobody
        let h = [("X-Forwarded-For", "172.31.9.9")];
        assert_eq!(
            client(&a, "172.31.5.5", &h),
            Err(Unattributed::TrustedProxy)
        );
    }

    #[test]
    fn forwarded_only_when_configured() {
        let a = Attribution::new(
            ClientHeader::Forwarded,
            nets(&["10.0.0.0/8"]),
            0,
            Vec::new(),
        );
        let h = [(
            "Forwarded",
            "for=192.0.2.60;proto=http;by=203.0.113.43, For=\"[2a00:1450:cafe::17]:4711\", for=10.1.1.1",
        )];
        assert_eq!(client(&a, "10.0.0.5", &h), Ok(ip("2a00:1450:cafe::17")));
        let h = [("Forwarded", "for=\"81.2.69.43:47011\"")];
        assert_eq!(client(&a, "10.0.0.5", &h), Ok(ip("81.2.69.43")));
        for v in [
            "for=81.2.69.60, for=_hidden",
            "for=81.2.69.60, for=unknown, for=10.4.4.4",
        ] {
            let h = [("Forwarded", v)];
            assert_eq!(
                client(&a, "10.0.0.5", &h),
                Err(Unattributed::Unparsable),
                "{v}"
            );
        }
        // X-Forwarded-For is then the client's claim
        let h = [("X-Forwarded-For", "8.8.8.8")];
        assert_eq!(client(&a, "10.0.0.5", &h), Err(Unattributed::NoHeader));
        // quoted separators do not split
        let h = [("Forwarded", "for=\"[2a00:1450::1]:80\";by=\"a,b\"")];
        assert_eq!(client(&a, "10.0.0.5", &h), Ok(ip("2a00:1450::1")));
    }

    #[test]
    fn x_real_ip_is_one_address() {
        let a = Attribution::new(ClientHeader::XRealIp, nets(&["10.0.0.0/8"]), 0, Vec::new());
        let h = [("X-Real-IP", "81.2.69.160"), ("X-Forwarded-For", "8.8.8.8")];
        assert_eq!(client(&a, "10.0.0.5", &h), Ok(ip("81.2.69.160")));
        let h = [("X-Real-IP", "8.8.8.8"), ("X-Real-IP", "81.2.69.160")];
        assert_eq!(client(&a, "10.0.0.5", &h), Err(Unattributed::Unparsable));
        let a = Attribution::new(ClientHeader::None, nets(&["10.0.0.0/8"]), 0, Vec::new());
        let h = [("X-Forwarded-For", "81.2.69.160")];
        assert_eq!(client(&a, "10.0.0.5", &h), Err(Unattributed::NoHeader));
    }

    #[test]
    fn special_ranges_are_reported_only_when_listed() {
        let h = [("X-Forwarded-For", "127.0.0.1")];
        assert_eq!(
            client(&xff(), "10.0.0.5", &h),
            Err(Unattributed::Special("127.0.0.0/8 (loopback)"))
        );
        assert!(matches!(
            client(&xff(), "192.168.1.1", &[]),
            Err(Unattributed::Special(_))
        ));
        let a = Attribution::new(
            ClientHeader::XForwardedFor,
            nets(&["10.0.0.0/8"]),
            0,
            nets(&["198.51.100.0/24"]),
        );
        let h = [("X-Forwarded-For", "198.51.100.7")];
        assert_eq!(client(&a, "10.0.0.5", &h), Ok(ip("198.51.100.7")));
        let h = [("X-Forwarded-For", "192.0.2.7")];
        assert!(matches!(
            client(&a, "10.0.0.5", &h),
            Err(Unattributed::Special(_))
        ));
    }

    #[test]
    fn no_handshake_or_lost_sync() {
        let h = [("X-Forwarded-For", "81.2.69.160")];
        let forged = RequestMeta {
            established: false,
            in_sync: true,
        };
        assert_eq!(
            xff().client_ip(ip("81.2.69.9"), h.iter().copied(), forged),
            Err(Unattributed::NoHandshake)
        );
        let lost = RequestMeta {
            established: true,
            in_sync: false,
        };
        // behind a proxy: its headers are not believed after a resync
        assert_eq!(
            xff().client_ip(ip("10.0.0.5"), h.iter().copied(), lost),
            Err(Unattributed::Desync)
        );
        // a direct client is still its own peer
        assert_eq!(
            xff().client_ip(ip("81.2.69.9"), h.iter().copied(), lost),
            Ok(ip("81.2.69.9"))
        );
    }
}
