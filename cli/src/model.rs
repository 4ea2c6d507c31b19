//! What the admin API answers, as far as the CLI reads it. Fields the CLI does not know are
//! kept (`rest`) so `-o json` passes them through.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// `GET /v1/blocks`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BlockList {
    pub count: usize,
    pub blocks: Vec<Block>,
}

/// One block with its reasons.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Block {
    pub cidr: IpNet,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    #[serde(default)]
    pub hits: u64,
    #[serde(default)]
    pub offences: u32,
    pub severity: String,
    #[serde(default)]
    pub deferred: bool,
    #[serde(default)]
    pub manual: bool,
    #[serde(default)]
    pub sensors: Vec<String>,
    #[serde(default)]
    pub reasons: Vec<Reason>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// Why a block exists: one report, or a manual action (`sensor` = `admin`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reason {
    pub report_id: String,
    pub sensor: String,
    pub rule: String,
    pub category: String,
    pub severity: String,
    #[serde(default)]
    pub evidence: String,
    pub observed_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mitre: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    /// Who made a manual change (the admin token's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

impl Reason {
    /// Who made a manual change: the token's name, or the sensor field of records written
    /// before tokens had names (`admin`).
    pub fn who(&self) -> &str {
        self.actor.as_deref().unwrap_or(&self.sensor)
    }

    /// A block made through the admin API.
    pub fn is_manual(&self) -> bool {
        self.report_id.starts_with("manual:")
    }

    /// A string field of the report's context (`namespace`, `pod`, ...).
    pub fn context_str(&self, key: &str) -> Option<&str> {
        self.context.as_ref()?.get(key)?.as_str()
    }
}

impl Block {
    /// The sensor whose report decided the block.
    pub fn decided_by(&self) -> &str {
        self.sensors
            .first()
            .or_else(|| self.reasons.first().map(|r| &r.sensor))
            .map(String::as_str)
            .unwrap_or("")
    }

    /// Distinct values of `f` over the reasons, in order of first appearance.
    pub fn distinct<'a>(&'a self, f: impl Fn(&'a Reason) -> Option<&'a str>) -> Vec<&'a str> {
        let mut out: Vec<&str> = Vec::new();
        for v in self.reasons.iter().filter_map(f) {
            if !out.contains(&v) {
                out.push(v);
            }
        }
        out
    }
}

/// `GET /v1/history/{ip}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryPage {
    pub query: IpNet,
    pub count: usize,
    /// Newest first.
    pub entries: Vec<HistoryEntry>,
    /// The `?before=` of the next (older) page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// One entry of the history: a decision, a manual block or release, an expiry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub id: u64,
    pub at: DateTime<Utc>,
    pub cidr: IpNet,
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub expires_at: DateTime<Utc>,
    pub severity: String,
    #[serde(default)]
    pub hits: u64,
    #[serde(default)]
    pub sensors: Vec<String>,
    #[serde(default)]
    pub reasons: Vec<Reason>,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

/// Where to look: an address (the block that contains it) or a network (the blocks inside
/// it, and the block that contains it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Addr(IpAddr),
    Net(IpNet),
}

impl Target {
    /// An address or a CIDR.
    pub fn parse(s: &str) -> Option<Target> {
        let s = s.trim();
        if s.contains('/') {
            s.parse().ok().map(|n: IpNet| Target::Net(n.trunc()))
        } else {
            s.parse().ok().map(Target::Addr)
        }
    }

    /// Does `block` fall under this target?
    pub fn matches(&self, block: &IpNet) -> bool {
        match self {
            Target::Addr(a) => block.contains(a),
            Target::Net(n) => n.contains(block) || block.contains(n),
        }
    }
}

/// `blocks list` filters; every given one must hold.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub cidr: Option<Target>,
    pub rule: Option<String>,
    pub category: Option<String>,
    pub sensor: Option<String>,
    pub namespace: Option<String>,
}

impl Filter {
    /// Does `b` pass every filter?
    pub fn matches(&self, b: &Block) -> bool {
        let any = |f: &dyn Fn(&Reason) -> bool| b.reasons.iter().any(f);
        self.cidr.is_none_or(|t| t.matches(&b.cidr))
            && self.rule.as_ref().is_none_or(|r| any(&|x| &x.rule == r))
            && self
                .category
                .as_ref()
                .is_none_or(|c| any(&|x| x.category.eq_ignore_ascii_case(c)))
            && self
                .sensor
                .as_ref()
                .is_none_or(|s| b.sensors.contains(s) || any(&|x| &x.sensor == s))
            && self
                .namespace
                .as_ref()
                .is_none_or(|n| any(&|x| x.context_str("namespace") == Some(n.as_str())))
    }
}

/// `GET /v1/status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub ready: bool,
    pub leader: bool,
    pub nats_connected: bool,
    pub store_open: bool,
    pub last_reconcile_ok: bool,
    pub reconcile: ReconcileStatus,
    #[serde(default)]
    pub sets: Vec<SetStatus>,
    #[serde(default)]
    pub blocks_active: u64,
    #[serde(default)]
    pub blocks_deferred: u64,
    #[serde(default)]
    pub sensors_seen: usize,
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReconcileStatus {
    pub runs: u64,
    pub last_success: Option<DateTime<Utc>>,
    pub last_duration_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SetStatus {
    pub id: String,
    pub family: String,
    pub entries: usize,
    pub capacity: usize,
}

/// `GET /v1/sensors`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SensorList {
    pub count: usize,
    pub sensors: Vec<Sensor>,
    #[serde(default)]
    pub untracked_reports: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sensor {
    pub sensor: String,
    pub first_report: DateTime<Utc>,
    pub last_report: DateTime<Utc>,
    pub reports: u64,
    pub reports_per_min: f64,
    pub rejected: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(cidr: &str, ns: Option<&str>) -> Block {
        serde_json::from_value(serde_json::json!({
            "cidr": cidr,
            "first_seen": "2026-12-01T00:00:00Z",
            "last_seen": "2026-12-01T00:00:00Z",
            "expires_at": "2026-12-01T01:00:00Z",
            "severity": "high",
            "sensors": ["s1"],
            "reasons": [{
                "report_id": "r1", "sensor": "s1", "rule": "sqli-1", "category": "sqli",
                "severity": "high", "evidence": "x", "observed_at": "2026-12-01T00:00:00Z",
                "context": ns.map(|n| serde_json::json!({"namespace": n})),
            }],
            "a_field_from_a_newer_blocker": 1
        }))
        .expect("block")
    }

    #[test]
    fn targets_contain_and_are_contained() {
        let host = block("203.0.113.10/32", None).cidr;
        let wide = block("192.0.2.0/24", None).cidr;
        let t = |s: &str| Target::parse(s).expect("target");
        assert!(t("203.0.113.10").matches(&host));
        assert!(!t("203.0.113.11").matches(&host));
        assert!(t("203.0.113.0/24").matches(&host));
        assert!(t("192.0.2.7").matches(&wide));
        assert!(
            t("192.0.2.7/32").matches(&wide),
            "a block containing the network"
        );
        assert!(!t("198.51.100.0/24").matches(&host));
        assert_eq!(Target::parse("nonsense"), None);
        assert_eq!(Target::parse("10.0.0.1/33"), None);
    }

    #[test]
    fn filters_all_hold() {
        let b = block("203.0.113.10/32", Some("shop"));
        let f = |f: Filter| f.matches(&b);
        assert!(f(Filter::default()));
        assert!(f(Filter {
            namespace: Some("shop".into()),
            category: Some("SQLI".into()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            namespace: Some("shop".into()),
            sensor: Some("s2".into()),
            ..Filter::default()
        }));
        assert!(!f(Filter {
            rule: Some("xss-1".into()),
            ..Filter::default()
        }));
        assert!(!block("203.0.113.10/32", None).reasons[0].is_manual());
        // unknown fields pass through to `-o json`
        let v = serde_json::to_value(&b).expect("json");
        assert_eq!(v["a_field_from_a_newer_blocker"], 1);
    }
}
