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
    #[serde(flatten)]
    pub rest: serde_json::Map<String, serde_json::Value>,
}

impl Reason {
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
