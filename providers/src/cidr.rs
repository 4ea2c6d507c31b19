use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Address family of a set or an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    V4,
    V6,
}

impl Family {
    /// The family of a network.
    pub fn of(net: &IpNet) -> Family {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Normalize an entry before it reaches a provider: host bits cleared, IPv4-mapped IPv6
/// addresses turned into IPv4, and `/0` refused (it would block the whole internet).
pub fn normalize(net: IpNet) -> Result<IpNet> {
    let net = match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
            Some(v4) => {
                IpNet::new(IpAddr::V4(v4), v6.prefix_len() - 96).map_err(|e| Error::Invalid {
                    provider: "cidr",
                    message: format!("{net}: {e}"),
                })?
            }
            None => net,
        },
        other => other,
    };
    if net.prefix_len() == 0 {
        return Err(Error::Invalid {
            provider: "cidr",
            message: format!("{net} covers every address; refusing a /0"),
        });
    }
    Ok(net.trunc())
}

/// Parse `a.b.c.d`, `a.b.c.d/n`, `x::y` or `x::y/n` and normalize it. A bare address becomes a
/// host route (`/32` or `/128`).
pub fn parse_cidr(s: &str) -> Result<IpNet> {
    let s = s.trim();
    let net = if s.contains('/') {
        s.parse::<IpNet>().map_err(|e| Error::Invalid {
            provider: "cidr",
            message: format!("`{s}` is not a CIDR: {e}"),
        })?
    } else {
        let ip: IpAddr = s.parse().map_err(|e| Error::Invalid {
            provider: "cidr",
            message: format!("`{s}` is not an IP address: {e}"),
        })?;
        IpNet::from(ip)
    };
    normalize(net)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_addresses_become_host_routes() {
        assert_eq!(
            parse_cidr("203.0.113.7").unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            parse_cidr("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
    }

    #[test]
    fn host_bits_are_cleared() {
        assert_eq!(
            parse_cidr("203.0.113.7/24").unwrap().to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            parse_cidr("2001:db8::1/48").unwrap().to_string(),
            "2001:db8::/48"
        );
    }

    #[test]
    fn mapped_ipv6_becomes_ipv4() {
        assert_eq!(
            parse_cidr("::ffff:203.0.113.7").unwrap().to_string(),
            "203.0.113.7/32"
        );
        assert_eq!(
            parse_cidr("::ffff:203.0.113.0/120").unwrap().to_string(),
            "203.0.113.0/24"
        );
    }

    #[test]
    fn rejects_zero_prefix_and_garbage() {
        for s in [
            "0.0.0.0/0",
            "::/0",
            "1.2.3.4/33",
            "1.2.3",
            "x",
            "",
            "1.2.3.4/",
            "::1/129",
        ] {
            assert!(parse_cidr(s).is_err(), "{s}");
        }
    }
}
