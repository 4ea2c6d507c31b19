//! Durable state: decided blocks, offence history and the firewall entries Palisade owns.
//!
//! Two backends keep it ([`Store`]):
//! - `embedded` ([`embedded`]): one redb file (`<state dir>/blocker.redb`) on a local disk, for a
//!   single blocker.
//! - `nats` ([`jetstream`]): a JetStream key-value bucket, replicated by the NATS cluster, for
//!   several blocker replicas of which one (the lease holder, [`crate::lease`]) decides and
//!   writes. Its writes are fenced: a replica that lost the lease cannot write afterwards.
//!
//! Either way every change is durable before the caller acknowledges anything; the pipeline
//! writes one commit per group of batches. Records are JSON, so they can be inspected and
//! migrated (`palisade-blocker` reads either backend the same way).

pub mod embedded;
pub mod history;
pub mod jetstream;
pub mod migrate;

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use palisade_wire::{Context, Severity};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Why a block exists: one report (or a manual action).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// Report id (`manual:<n>` for blocks made through the admin API).
    pub report_id: String,
    /// Sensor that sent the report (`admin` for manual blocks).
    pub sensor: String,
    /// Rule that matched.
    pub rule: String,
    /// Attack category.
    pub category: String,
    /// Severity of the report.
    pub severity: Severity,
    /// Matched fragment (at most 256 bytes).
    pub evidence: String,
    /// When the sensor saw the request.
    pub observed_at: DateTime<Utc>,
    /// MITRE ATT&CK technique ids of the report (absent in records that predate the field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mitre: Vec<String>,
    /// Where the request was received: node, namespace, pod, container (absent in records
    /// that predate the field, and for manual blocks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Context>,
    /// Who made a manual change: the name of the admin token (absent for reports, and in
    /// records that predate named tokens).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
}

/// A decided block.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRecord {
    /// The blocked network (a host route for clients).
    pub cidr: IpNet,
    /// When the block was decided.
    pub first_seen: DateTime<Utc>,
    /// Last report about this client.
    pub last_seen: DateTime<Utc>,
    /// When the block ends.
    pub expires_at: DateTime<Utc>,
    /// Reports counted for this block (deduplicated ones excluded).
    pub hits: u64,
    /// How many times this client has been blocked (this block included).
    pub offences: u32,
    /// Highest severity seen.
    pub severity: Severity,
    /// Decided while the global new-block cap was exhausted: waits to be enforced.
    #[serde(default)]
    pub deferred: bool,
    /// Made through the admin API.
    #[serde(default)]
    pub manual: bool,
    /// Distinct sensors whose reports are recorded on this block, the deciding one first (at
    /// most [`MAX_BLOCK_SENSORS`]; `admin` for manual blocks).
    #[serde(default)]
    pub sensors: Vec<String>,
    /// Distinct sensors behind the block: those whose reports crossed the threshold together,
    /// or the `sensors` recorded since, whichever is more (at most [`MAX_BLOCK_SENSORS`]).
    /// Ranks the block when the firewall is full.
    #[serde(default)]
    pub corroboration: u32,
    /// Most recent reasons, oldest first (bounded by `state.max_reasons`).
    pub reasons: VecDeque<Reason>,
}

/// Most sensors recorded per block: enough to rank corroboration, bounded under id rotation.
pub const MAX_BLOCK_SENSORS: usize = 16;

impl BlockRecord {
    /// Record that `sensor` reported this block (once per sensor, at most
    /// [`MAX_BLOCK_SENSORS`]).
    pub fn add_sensor(&mut self, sensor: &str) {
        if self.sensors.len() < MAX_BLOCK_SENSORS && !self.sensors.iter().any(|s| s == sensor) {
            self.sensors.push(sensor.to_owned());
        }
        self.corroboration = self.corroboration.max(self.sensors.len() as u32);
    }

    /// The sensor whose report decided the block (`""` for records older than the field).
    pub fn decided_by(&self) -> &str {
        self.sensors.first().map(String::as_str).unwrap_or("")
    }

    /// Distinct sensors behind the block (at least 1).
    pub fn distinct_sensors(&self) -> u32 {
        self.corroboration.max(self.sensors.len() as u32).max(1)
    }

    /// Has this report already been counted (a redelivery after a crash)?
    pub fn has_report(&self, id: &str) -> bool {
        self.reasons.iter().any(|r| r.report_id == id)
    }

    /// Append a reason, dropping the oldest beyond `max`.
    pub fn push_reason(&mut self, reason: Reason, max: usize) {
        self.reasons.push_back(reason);
        while self.reasons.len() > max {
            self.reasons.pop_front();
        }
    }
}

/// Offence history of a client, kept after its block expires (for escalation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Offence {
    /// Blocks so far.
    pub count: u32,
    /// When the last one was decided.
    pub last_at: DateTime<Utc>,
}

/// Changes committed together.
#[derive(Debug, Default)]
pub struct Batch {
    /// Blocks to write (insert or replace).
    pub upserts: Vec<BlockRecord>,
    /// Blocks to delete.
    pub removes: Vec<IpNet>,
    /// Offence records to write.
    pub offences: Vec<(IpNet, Offence)>,
    /// Offence records to forget (the in-memory bound `state.max_offences` was reached).
    pub forget_offences: Vec<IpNet>,
    /// Counted reports of clients not (yet) blocked, to write (`Some`) or forget (`None`).
    /// Filled only for the `nats` backend, so that a replica taking over counts on.
    pub pending: Vec<(IpNet, Option<crate::policy::Pending>)>,
    /// History entries to append ([`history`]).
    pub history: Vec<history::HistoryEntry>,
    /// History entries to prune (the oldest).
    pub history_prune: Option<history::HistoryPrune>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.history.is_empty()
            && self.history_prune.is_none()
            && self.upserts.is_empty()
            && self.removes.is_empty()
            && self.offences.is_empty()
            && self.forget_offences.is_empty()
            && self.pending.is_empty()
    }
}

/// Everything restored at start.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub blocks: HashMap<IpNet, BlockRecord>,
    pub offences: HashMap<IpNet, Offence>,
    pub owned: BTreeSet<IpNet>,
    /// Counted reports of clients not blocked (`nats` backend only).
    pub pending: HashMap<IpNet, crate::policy::Pending>,
    /// Every history entry's id, network and time, oldest first.
    pub history: Vec<history::HistoryKey>,
}

/// The state backend. Cheap to clone; every method is async (the embedded store runs its file
/// I/O on the blocking pool).
#[derive(Debug, Clone)]
pub enum Store {
    /// redb on a local disk.
    Embedded(embedded::EmbeddedStore),
    /// A JetStream key-value bucket, written only by the lease holder.
    Nats(jetstream::KvStore),
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Io {
            what: what.into(),
            source: std::io::Error::other(e.to_string()),
        })?
}

impl Store {
    /// Read everything (at start, or when a replica takes the lease).
    pub async fn load(&self) -> Result<Snapshot> {
        match self {
            Store::Embedded(s) => {
                let s = s.clone();
                blocking("loading the state", move || s.load()).await
            }
            Store::Nats(s) => s.load().await,
        }
    }

    /// Every decided block (the admin API of a replica that does not hold the lease).
    pub async fn blocks(&self) -> Result<Vec<BlockRecord>> {
        match self {
            Store::Embedded(_) => Ok(self.load().await?.blocks.into_values().collect()),
            Store::Nats(s) => s.blocks().await,
        }
    }

    /// The history entries a query asks for, newest first.
    pub async fn history(
        &self,
        query: history::HistoryQuery,
    ) -> Result<Vec<history::HistoryEntry>> {
        match self {
            Store::Embedded(s) => {
                let s = s.clone();
                blocking("reading the history", move || s.history(&query)).await
            }
            Store::Nats(s) => s.history(&query).await,
        }
    }

    /// Commit a batch durably.
    pub async fn commit(&self, batch: Batch) -> Result<()> {
        self.commit_all(Arc::new(vec![batch])).await
    }

    /// Commit several batches, applied in order, durably and at once (group commit).
    pub async fn commit_all(&self, batches: Arc<Vec<Batch>>) -> Result<()> {
        if batches.iter().all(Batch::is_empty) {
            return Ok(());
        }
        match self {
            Store::Embedded(s) => {
                let s = s.clone();
                blocking("store commit task", move || s.commit_all(&batches)).await
            }
            Store::Nats(s) => s.commit_all(&batches).await,
        }
    }

    /// Record firewall entries as ours (before they are added) or forget them (after removal).
    pub async fn set_owned(&self, add: BTreeSet<IpNet>, remove: BTreeSet<IpNet>) -> Result<()> {
        if add.is_empty() && remove.is_empty() {
            return Ok(());
        }
        match self {
            Store::Embedded(s) => {
                let s = s.clone();
                blocking("recording ownership", move || s.set_owned(&add, &remove)).await
            }
            Store::Nats(s) => s.set_owned(&add, &remove).await,
        }
    }

    /// May this replica write the firewall now? Always for the embedded store; for the `nats`
    /// backend only while it holds a lease that is valid by its own clock (checked right before
    /// every firewall write, so a replica paused past its lease writes nothing when it wakes).
    pub fn may_write(&self) -> bool {
        match self {
            Store::Embedded(_) => true,
            Store::Nats(s) => s.holds_lease(),
        }
    }

    /// Where the state lives, for logs.
    pub fn describe(&self) -> String {
        match self {
            Store::Embedded(s) => format!("redb file {}", s.path().display()),
            Store::Nats(s) => format!("JetStream bucket {}", s.bucket()),
        }
    }
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::Corrupt {
        key: "<encode>".into(),
        message: e.to_string(),
    })
}

pub(crate) fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|e| Error::Corrupt {
        key: key.into(),
        message: e.to_string(),
    })
}

pub(crate) fn parse_key(key: &str) -> Result<IpNet> {
    key.parse()
        .map_err(|e: ipnet::AddrParseError| Error::Corrupt {
            key: key.into(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::embedded::EmbeddedStore;
    use super::*;

    fn record(cidr: &str) -> BlockRecord {
        let now = Utc::now();
        BlockRecord {
            cidr: cidr.parse().unwrap(),
            first_seen: now,
            last_seen: now,
            expires_at: now + chrono::Duration::hours(1),
            hits: 1,
            offences: 1,
            severity: Severity::Critical,
            deferred: false,
            manual: false,
            sensors: vec!["s1".into()],
            corroboration: 1,
            reasons: VecDeque::from([Reason {
                report_id: "r1".into(),
                sensor: "s1".into(),
                rule: "rce-1".into(),
                category: "rce".into(),
                severity: Severity::Critical,
                evidence: "; cat /etc/passwd".into(),
                observed_at: now,
                mitre: vec!["T1190".into(), "T1059.004".into()],
                context: Some(Context {
                    namespace: Some("shop".into()),
                    pod: Some("web-1".into()),
                    container: Some("app".into()),
                    container_id: Some("containerd://4f1a2b".into()),
                    ..Context::default()
                }),
                actor: None,
            }]),
        }
    }

    #[test]
    fn everything_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        {
            let s = EmbeddedStore::open(dir.path()).unwrap();
            let a = record("8.8.8.8/32");
            let b = record("2606:4700::1/128");
            s.commit(&Batch {
                upserts: vec![a.clone(), b.clone()],
                removes: vec![],
                forget_offences: vec![],
                pending: vec![],
                history: vec![],
                history_prune: None,
                offences: vec![(
                    a.cidr,
                    Offence {
                        count: 2,
                        last_at: a.first_seen,
                    },
                )],
            })
            .unwrap();
            s.set_owned(&BTreeSet::from([a.cidr, b.cidr]), &BTreeSet::new())
                .unwrap();
            s.commit(&Batch {
                removes: vec![b.cidr],
                ..Batch::default()
            })
            .unwrap();
            s.set_owned(&BTreeSet::new(), &BTreeSet::from([b.cidr]))
                .unwrap();
        }
        let s = EmbeddedStore::open(dir.path()).unwrap();
        let snap = s.load().unwrap();
        assert_eq!(snap.blocks.len(), 1);
        let a = &snap.blocks[&"8.8.8.8/32".parse().unwrap()];
        assert_eq!(a.reasons[0].evidence, "; cat /etc/passwd");
        assert_eq!(snap.offences.len(), 1);
        assert_eq!(snap.owned, BTreeSet::from(["8.8.8.8/32".parse().unwrap()]));
    }

    #[test]
    fn sensors_are_distinct_bounded_and_old_records_still_load() {
        let mut r = record("8.8.8.8/32");
        for i in 0..40 {
            r.add_sensor(&format!("s{}", i % 20));
        }
        assert_eq!(r.sensors.len(), MAX_BLOCK_SENSORS);
        assert_eq!(r.decided_by(), "s1");
        assert_eq!(r.distinct_sensors(), MAX_BLOCK_SENSORS as u32);
        // A record written before the fields existed: one sensor behind it.
        let mut json: serde_json::Value = serde_json::to_value(record("8.8.4.4/32")).unwrap();
        let obj = json.as_object_mut().unwrap();
        obj.remove("sensors");
        obj.remove("corroboration");
        let old: BlockRecord = serde_json::from_value(json).unwrap();
        assert_eq!(old.decided_by(), "");
        assert_eq!(old.distinct_sensors(), 1);
    }

    #[test]
    fn reasons_keep_techniques_and_context_and_old_reasons_still_load() {
        let r = record("8.8.8.8/32");
        let json = serde_json::to_value(&r).unwrap();
        let back: BlockRecord = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, r);
        assert_eq!(json["reasons"][0]["mitre"][1], "T1059.004");
        assert_eq!(json["reasons"][0]["context"]["namespace"], "shop");
        // a reason written before the fields existed
        let mut old = json;
        let reason = old["reasons"][0].as_object_mut().unwrap();
        reason.remove("mitre");
        reason.remove("context");
        let old: BlockRecord = serde_json::from_value(old).unwrap();
        assert!(old.reasons[0].mitre.is_empty());
        assert_eq!(old.reasons[0].context, None);
        // and without them nothing extra is written
        let text = serde_json::to_string(&old).unwrap();
        assert!(
            !text.contains("mitre") && !text.contains("context"),
            "{text}"
        );
    }

    #[test]
    fn reasons_are_bounded() {
        let mut r = record("8.8.8.8/32");
        for i in 0..20 {
            let mut reason = r.reasons[0].clone();
            reason.report_id = format!("r{i}");
            r.push_reason(reason, 8);
        }
        assert_eq!(r.reasons.len(), 8);
        assert!(r.has_report("r19"));
        assert!(!r.has_report("r5"));
    }
}
