//! The history: an append-only record of what happened to each address, kept after its block
//! ends. Decisions of the policy (with the report that decided), manual blocks and releases
//! (with who made them: the name of the admin token), and expiries (with the reasons the
//! block had at its end) are appended in the same commit as the change they record. The
//! oldest entries are pruned first, by age (`history.max_age_secs`) and by number
//! (`history.max_entries`).
//!
//! Entries have an id that grows with time (microseconds since the epoch, or one more than the
//! last id when that is larger), used as the paging cursor of `GET /v1/history/{ip}`.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use palisade_wire::Severity;
use serde::{Deserialize, Serialize};

use super::{BlockRecord, Reason};

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HistoryEvent {
    /// The policy decided a block (from reports).
    Decided,
    /// A block made (or renewed) through the admin API.
    ManualBlock,
    /// A block ended through the admin API.
    Released,
    /// A block ended at the end of its TTL.
    Expired,
}

impl HistoryEvent {
    pub fn as_str(self) -> &'static str {
        match self {
            HistoryEvent::Decided => "decided",
            HistoryEvent::ManualBlock => "manual_block",
            HistoryEvent::Released => "released",
            HistoryEvent::Expired => "expired",
        }
    }
}

/// One entry of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// Unique, growing with time: the paging cursor (`?before=`).
    pub id: u64,
    /// When it happened.
    pub at: DateTime<Utc>,
    /// The blocked network.
    pub cidr: IpNet,
    pub event: HistoryEvent,
    /// Who did it: the name of the admin token (manual blocks and releases).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    /// The note given with a manual block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// When the block was to end (as of this entry).
    pub expires_at: DateTime<Utc>,
    /// When the block was decided.
    pub first_seen: DateTime<Utc>,
    pub severity: Severity,
    pub hits: u64,
    pub offences: u32,
    #[serde(default)]
    pub manual: bool,
    #[serde(default)]
    pub deferred: bool,
    /// Sensors that reported it, the deciding one first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sensors: Vec<String>,
    /// The reasons the block had: the deciding report for a decision, the latest reasons
    /// (`state.max_reasons`) when it ended.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<Reason>,
}

impl HistoryEntry {
    /// An entry for `event` on `rec`, at `at`.
    pub fn of(
        id: u64,
        at: DateTime<Utc>,
        event: HistoryEvent,
        rec: &BlockRecord,
        actor: Option<&str>,
        note: Option<&str>,
    ) -> HistoryEntry {
        HistoryEntry {
            id,
            at,
            cidr: rec.cidr,
            event,
            actor: actor.map(str::to_owned),
            note: note.filter(|n| !n.is_empty()).map(str::to_owned),
            expires_at: rec.expires_at,
            first_seen: rec.first_seen,
            severity: rec.severity,
            hits: rec.hits,
            offences: rec.offences,
            manual: rec.manual,
            deferred: rec.deferred,
            sensors: rec.sensors.clone(),
            reasons: match event {
                // The reason just added is the one that decided (or the manual action).
                HistoryEvent::Decided | HistoryEvent::ManualBlock => {
                    rec.reasons.back().cloned().into_iter().collect()
                }
                HistoryEvent::Released | HistoryEvent::Expired => {
                    rec.reasons.iter().cloned().collect()
                }
            },
        }
    }

    pub fn key(&self) -> HistoryKey {
        HistoryKey {
            id: self.id,
            cidr: self.cidr,
            at: self.at,
        }
    }
}

/// What the pruning needs of an entry (kept in memory for every entry of the history).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryKey {
    pub id: u64,
    pub cidr: IpNet,
    pub at: DateTime<Utc>,
}

/// Entries to remove, oldest first; `keep_from` is the oldest entry kept (`None`: none is).
#[derive(Debug, Clone, Default)]
pub struct HistoryPrune {
    pub remove: Vec<HistoryKey>,
    pub keep_from: Option<HistoryKey>,
}

/// A query of the history: the entries of every network that overlaps `net` (contains it or
/// lies inside it), newest first, with an id below `before`, at most `limit`.
#[derive(Debug, Clone, Copy)]
pub struct HistoryQuery {
    pub net: IpNet,
    pub before: Option<u64>,
    pub limit: usize,
    /// The broadest prefix any block can have (`guardrails.max_prefix_v4_len`, `_v6_len`):
    /// the entries of `net` lie under `net` truncated to it.
    pub scope_v4: u8,
    pub scope_v6: u8,
}

impl HistoryQuery {
    /// The network under which every entry overlapping `net` lies.
    pub fn scope(&self) -> IpNet {
        let len = match self.net {
            IpNet::V4(_) => self.scope_v4,
            IpNet::V6(_) => self.scope_v6,
        };
        truncate(self.net, self.net.prefix_len().min(len))
    }

    /// Does the entry of `cidr` with `id` answer the query?
    pub fn wants(&self, cidr: &IpNet, id: u64) -> bool {
        overlaps(&self.net, cidr) && self.before.is_none_or(|b| id < b)
    }
}

/// `net` truncated to `len` bits.
pub fn truncate(net: IpNet, len: u8) -> IpNet {
    IpNet::new(net.addr(), len.min(net.max_prefix_len()))
        .map(|n| n.trunc())
        .unwrap_or(net)
}

/// Do `a` and `b` overlap (one contains the other)?
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The bytes of an address, IPv4 as 4 and IPv6 as 16, after a family byte.
fn addr_bytes(addr: IpAddr) -> Vec<u8> {
    match addr {
        IpAddr::V4(a) => [&[4u8][..], &a.octets()].concat(),
        IpAddr::V6(a) => [&[6u8][..], &a.octets()].concat(),
    }
}

/// Key of the embedded store's index: family, network address, prefix length, id (big
/// endian), so that the entries of the networks inside a network are one key range.
pub fn index_key(cidr: &IpNet, id: u64) -> Vec<u8> {
    let mut k = addr_bytes(cidr.network());
    k.push(cidr.prefix_len());
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The network and id of an index key.
pub fn parse_index_key(k: &[u8]) -> Option<(IpNet, u64)> {
    let (addr, rest) = match k.first()? {
        4 if k.len() == 1 + 4 + 1 + 8 => {
            let o: [u8; 4] = k.get(1..5)?.try_into().ok()?;
            (IpAddr::from(o), k.get(5..)?)
        }
        6 if k.len() == 1 + 16 + 1 + 8 => {
            let o: [u8; 16] = k.get(1..17)?.try_into().ok()?;
            (IpAddr::from(o), k.get(17..)?)
        }
        _ => return None,
    };
    let len = *rest.first()?;
    let id = u64::from_be_bytes(rest.get(1..9)?.try_into().ok()?);
    Some((IpNet::new(addr, len).ok()?, id))
}

/// The key range of the index that holds every network inside `scope`.
pub fn index_range(scope: &IpNet) -> (Vec<u8>, Vec<u8>) {
    let mut lo = addr_bytes(scope.network());
    lo.push(0);
    lo.extend_from_slice(&0u64.to_be_bytes());
    let mut hi = addr_bytes(scope.broadcast());
    hi.push(u8::MAX);
    hi.extend_from_slice(&u64::MAX.to_be_bytes());
    (lo, hi)
}

/// The subject tokens of a network in the `nats` bucket: `4.a.b.c.d.<len>` or
/// `6.<8 groups of 4 hex digits>.<len>`, so that a wildcard on the leading tokens selects the
/// entries under a network.
pub fn subject_tokens(cidr: &IpNet) -> String {
    match cidr.network() {
        IpAddr::V4(a) => {
            let [a1, a2, a3, a4] = a.octets();
            format!("4.{a1}.{a2}.{a3}.{a4}.{}", cidr.prefix_len())
        }
        IpAddr::V6(a) => {
            let g: Vec<String> = a.segments().iter().map(|s| format!("{s:04x}")).collect();
            format!("6.{}.{}", g.join("."), cidr.prefix_len())
        }
    }
}

/// The leading subject tokens shared by every network under `scope` (whole octets or groups
/// only), followed by `.`; `4.` or `6.` for a scope broader than one octet or group.
pub fn subject_scope(scope: &IpNet) -> String {
    let tokens = subject_tokens(scope);
    let mut parts = tokens.split('.');
    let family = parts.next().unwrap_or_default();
    let whole = match scope {
        IpNet::V4(_) => scope.prefix_len() / 8,
        IpNet::V6(_) => scope.prefix_len() / 16,
    } as usize;
    let mut out = format!("{family}.");
    for p in parts.take(whole) {
        out.push_str(p);
        out.push('.');
    }
    out
}

/// The network and id of a subject's tokens (after `history.`): the inverse of
/// [`subject_tokens`] followed by `.<id>`.
pub fn parse_subject(s: &str) -> Option<(IpNet, u64)> {
    let parts: Vec<&str> = s.split('.').collect();
    let (addr, len, id) = match parts.as_slice() {
        ["4", a, b, c, d, len, id] => (
            IpAddr::from([
                a.parse().ok()?,
                b.parse().ok()?,
                c.parse().ok()?,
                d.parse().ok()?,
            ]),
            len,
            id,
        ),
        ["6", g @ .., len, id] if g.len() == 8 => {
            let mut seg = [0u16; 8];
            for (s, t) in seg.iter_mut().zip(g) {
                *s = u16::from_str_radix(t, 16).ok()?;
            }
            (IpAddr::from(seg), len, id)
        }
        _ => return None,
    };
    Some((IpNet::new(addr, len.parse().ok()?).ok()?, id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn keys_and_subjects_round_trip() {
        for s in [
            "203.0.113.7/32",
            "81.2.69.0/24",
            "2001:db8:bad::/64",
            "::1/128",
        ] {
            let n = net(s);
            assert_eq!(parse_index_key(&index_key(&n, 42)), Some((n, 42)));
            let subj = format!("{}.{}", subject_tokens(&n), 42);
            assert!(
                subj.chars().all(|c| c.is_ascii_alphanumeric() || c == '.'),
                "{subj}"
            );
            assert_eq!(parse_subject(&subj), Some((n, 42)));
        }
    }

    #[test]
    fn scopes_select_the_networks_under_them() {
        let q = HistoryQuery {
            net: net("203.0.113.7/32"),
            before: None,
            limit: 10,
            scope_v4: 24,
            scope_v6: 48,
        };
        assert_eq!(q.scope(), net("203.0.113.0/24"));
        assert_eq!(subject_scope(&q.scope()), "4.203.0.113.");
        let (lo, hi) = index_range(&q.scope());
        for inside in ["203.0.113.0/24", "203.0.113.7/32", "203.0.113.255/32"] {
            let k = index_key(&net(inside), 7);
            assert!(lo <= k && k <= hi, "{inside}");
        }
        let k = index_key(&net("203.0.114.0/32"), 7);
        assert!(k > hi);
        assert!(q.wants(&net("203.0.113.0/24"), 1));
        assert!(q.wants(&net("203.0.113.7/32"), 1));
        assert!(!q.wants(&net("203.0.113.8/32"), 1));
        let v6 = HistoryQuery {
            net: net("2001:db8:bad::1/128"),
            ..q
        };
        assert_eq!(v6.scope(), net("2001:db8:bad::/48"));
        assert_eq!(subject_scope(&v6.scope()), "6.2001.0db8.0bad.");
        assert!(v6.wants(&net("2001:db8:bad::/64"), 1));
        assert_eq!(subject_scope(&net("10.0.0.0/20")), "4.10.0.");
        assert_eq!(subject_scope(&net("0.0.0.0/0")), "4.");
    }
}
