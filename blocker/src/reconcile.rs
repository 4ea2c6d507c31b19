//! The reconciler: make the firewall hold exactly the decided blocks, touching only entries it
//! owns.
//!
//! Each run (at most once per `reconcile.interval_ms`, so every change decided in between is
//! coalesced into one diff) reads the firewall's status and entries, computes the target set
//! from the decided blocks, and applies only the difference. Level-based: a failed run leaves
//! nothing to remember, the next run recomputes the same diff. Ownership is persisted *before*
//! an add (a crash between the two leaves an entry we own but never added: removing it later
//! is a no-op) and forgotten *after* a successful removal, so an entry the reconciler added is
//! never orphaned and an entry somebody else added is never removed.
//!
//! The room per family is what the provider's status reports free (capacity minus every entry
//! in the set, including foreign ones the provider cannot parse) plus the entries we own that
//! are in the set (we could free them). When it is short, blocks are ranked: manual first, then
//! by the number of distinct sensors behind them, then severity, then recency; those that do
//! not fit are left out (a newly decided critical block can displace an older low one, but a
//! burst from one sensor cannot displace a block several sensors agreed on). Blocks reported by
//! one sensor alone take at most `guardrails.max_sensor_share` of a family's room per sensor
//! while anything else competes for it (work-conserving: the share is filled up only with room
//! nothing else wants). A block is counted and logged as evicted when it becomes left out, not
//! again on every run while it stays out.
//!
//! Against a dry-run firewall ([`Firewall::is_dry_run`]) nothing is written, so nothing is
//! owned: each run computes the diff, and only a diff that differs from the last one is handed
//! to the provider (which checks and logs it) and logged.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use palisade_providers::{Applied, Diff, Family, Firewall, free_capacity};
use palisade_wire::Severity;
use tracing::{debug, info, instrument, warn};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::metrics::seconds_between;
use crate::state::BlockRecord;

/// When the report that decided `block` was observed: its earliest recorded reason (the record
/// is created with the deciding report alone; later reports are appended after it). `None` for
/// a block without reasons.
fn deciding_report_observed_at(block: &BlockRecord) -> Option<DateTime<Utc>> {
    block.reasons.iter().map(|r| r.observed_at).min()
}

/// Outcome of one successful run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub added: usize,
    pub removed: usize,
    pub evicted: usize,
}

/// A desired entry with its priority.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The blocked network.
    pub net: IpNet,
    /// Highest severity seen.
    pub severity: Severity,
    /// When it was decided.
    pub since: chrono::DateTime<Utc>,
    /// Distinct sensors behind it (at least 1).
    pub sensors: u32,
    /// Made by an operator through the admin API.
    pub manual: bool,
    /// The sensor whose report decided it.
    pub sensor: String,
}

impl Candidate {
    /// The sensor whose share this block counts against: `None` for manual blocks and blocks
    /// several sensors reported (they are no single sensor's doing).
    fn share_of(&self) -> Option<&str> {
        (!self.manual && self.sensors <= 1).then_some(self.sensor.as_str())
    }
}

/// Choose what fits: per family, the `room[family]` best candidates (manual, then distinct
/// sensors, then severity, then newest), a single sensor's blocks taking at most
/// `max(1, floor(sensor_share * room))` of the room while other candidates still fit; room
/// nobody else wants goes to the blocks held back, in the same order. Returns the chosen set
/// and the set left out.
pub fn choose(
    mut candidates: Vec<Candidate>,
    room: &HashMap<Family, usize>,
    sensor_share: f64,
) -> (BTreeSet<IpNet>, BTreeSet<IpNet>) {
    candidates.sort_by(|a, b| {
        b.manual
            .cmp(&a.manual)
            .then(b.sensors.cmp(&a.sensors))
            .then(b.severity.cmp(&a.severity))
            .then(b.since.cmp(&a.since))
            .then(a.net.cmp(&b.net))
    });
    let room_of = |f: Family| room.get(&f).copied().unwrap_or(0);
    let quota = |f: Family| ((sensor_share * room_of(f) as f64).floor() as usize).max(1);
    let mut used: HashMap<Family, usize> = HashMap::new();
    let mut per_sensor: HashMap<(Family, &str), usize> = HashMap::new();
    let mut chosen = BTreeSet::new();
    let mut held_back = Vec::new();
    for c in &candidates {
        let f = Family::of(&c.net);
        if let Some(s) = c.share_of() {
            let n = per_sensor.entry((f, s)).or_default();
            if *n >= quota(f) {
                held_back.push(c);
                continue;
            }
            *n += 1;
        }
        let u = used.entry(f).or_default();
        if *u < room_of(f) {
            *u += 1;
            chosen.insert(c.net);
        } else {
            held_back.push(c);
        }
    }
    let mut evicted = BTreeSet::new();
    for c in held_back {
        let f = Family::of(&c.net);
        let u = used.entry(f).or_default();
        if *u < room_of(f) {
            *u += 1;
            chosen.insert(c.net);
        } else {
            evicted.insert(c.net);
        }
    }
    (chosen, evicted)
}

/// The reconciler state: the persisted set of entries we own.
#[derive(Debug)]
pub struct Reconciler {
    engine: Arc<Engine>,
    firewall: Arc<dyn Firewall>,
    owned: BTreeSet<IpNet>,
    last_ok: Arc<AtomicBool>,
    /// Blocks left out for lack of room at the last run (to count each eviction once).
    evicted: BTreeSet<IpNet>,
    /// Dry run only: the last diff handed to the provider (to log each change once).
    dry_run_diff: Option<Diff>,
}

impl Reconciler {
    /// `owned` comes from the store (`Snapshot::owned`).
    pub fn new(
        engine: Arc<Engine>,
        firewall: Arc<dyn Firewall>,
        owned: BTreeSet<IpNet>,
        last_ok: Arc<AtomicBool>,
    ) -> Reconciler {
        engine
            .metrics()
            .firewall_owned
            .store(owned.len() as u64, Relaxed);
        Reconciler {
            engine,
            firewall,
            owned,
            last_ok,
            evicted: BTreeSet::new(),
            dry_run_diff: None,
        }
    }

    /// Entries this blocker owns.
    pub fn owned(&self) -> &BTreeSet<IpNet> {
        &self.owned
    }

    /// Blocks currently left out of the firewall for lack of room.
    pub fn evicted(&self) -> &BTreeSet<IpNet> {
        &self.evicted
    }

    async fn persist_owned(&self, add: BTreeSet<IpNet>, remove: BTreeSet<IpNet>) -> Result<()> {
        self.engine.store().set_owned(add, remove).await
    }

    /// One reconcile run.
    #[instrument(skip_all, fields(provider = self.firewall.name()))]
    pub async fn run_once(&mut self) -> Result<RunReport> {
        let started = Instant::now();
        let metrics = Arc::clone(self.engine.metrics());
        metrics.reconcile_runs.fetch_add(1, Relaxed);
        let res = self.run_inner().await;
        let elapsed = started.elapsed();
        metrics
            .timings
            .reconcile_duration
            .observe(elapsed.as_secs_f64());
        let micros = elapsed.as_micros() as u64;
        metrics
            .reconcile_last_duration_micros
            .store(micros, Relaxed);
        match &res {
            Ok(_) => {
                self.last_ok.store(true, Relaxed);
                let now = Utc::now().timestamp().max(0) as u64;
                metrics.reconcile_last_success_unix.store(now, Relaxed);
            }
            Err(err) => {
                self.last_ok.store(false, Relaxed);
                let kind = match err {
                    Error::Provider(p) => p.kind(),
                    _ => "internal",
                };
                metrics.reconcile_error(kind);
            }
        }
        res
    }

    async fn run_inner(&mut self) -> Result<RunReport> {
        let metrics = Arc::clone(self.engine.metrics());
        let status = self.firewall.status().await?;
        metrics.set_fill(status.clone());
        let actual = self.firewall.entries().await?;
        let now = Utc::now();
        // Push only durable decisions: a block in the firewall always has a record that
        // survives a crash (the commit is milliseconds behind the decision).
        // With, per block decided from reports and not in the firewall yet, when its deciding
        // report was observed (for `palisade_time_to_block_seconds` once it is written).
        let (candidates, observed): (Vec<Candidate>, HashMap<IpNet, DateTime<Utc>>) = self
            .engine
            .read_durable(|state| {
                let live = || {
                    state
                        .blocks
                        .values()
                        .filter(|b| !b.deferred && b.expires_at > now)
                };
                let candidates = live()
                    .map(|b| Candidate {
                        net: b.cidr,
                        severity: b.severity,
                        since: b.first_seen,
                        sensors: b.distinct_sensors(),
                        manual: b.manual,
                        sensor: b.decided_by().to_owned(),
                    })
                    .collect();
                let observed = live()
                    .filter(|b| !b.manual && !actual.contains(&b.cidr))
                    .filter_map(|b| Some((b.cidr, deciding_report_observed_at(b)?)))
                    .collect();
                (candidates, observed)
            })
            .await?;
        // Room: what is free by the provider's count (which includes entries it cannot
        // list, as the provider's own capacity check does), plus what we could free.
        let mut room = HashMap::new();
        for family in [Family::V4, Family::V6] {
            let ours = actual
                .iter()
                .filter(|n| Family::of(n) == family && self.owned.contains(n))
                .count();
            room.insert(family, free_capacity(&status, family) + ours);
        }
        let share = self.engine.config().guardrails.max_sensor_share;
        let (target, left_out) = choose(candidates, &room, share);
        let evicted = left_out.len();
        let newly = left_out.difference(&self.evicted).count();
        metrics.reconcile_evicted_now.store(evicted as u64, Relaxed);
        if newly > 0 {
            metrics.reconcile_evictions.fetch_add(newly as u64, Relaxed);
            warn!(
                newly_evicted = newly,
                evicted, "firewall capacity short: lowest-priority blocks left out"
            );
        }
        self.evicted = left_out;
        let add: BTreeSet<IpNet> = target.difference(&actual).copied().collect();
        let stale: BTreeSet<IpNet> = self.owned.difference(&target).copied().collect();
        let remove: BTreeSet<IpNet> = stale.intersection(&actual).copied().collect();
        let gone: BTreeSet<IpNet> = stale.difference(&actual).copied().collect();
        let dry_run = self.firewall.is_dry_run();
        if (add.is_empty() && remove.is_empty()) || dry_run {
            // Nothing is written: what we own that is gone anyway is forgotten now.
            if !gone.is_empty() {
                self.persist_owned(BTreeSet::new(), gone.clone()).await?;
                for n in &gone {
                    self.owned.remove(n);
                }
            }
            metrics
                .firewall_owned
                .store(self.owned.len() as u64, Relaxed);
            if add.is_empty() && remove.is_empty() {
                self.dry_run_diff = None;
                debug!("firewall in sync");
            } else {
                self.dry_run(Diff { add, remove }).await?;
            }
            return Ok(RunReport {
                evicted,
                ..RunReport::default()
            });
        }
        // Own before adding.
        self.persist_owned(add.clone(), BTreeSet::new()).await?;
        self.owned.extend(add.iter().copied());
        let diff = Diff {
            add: add.clone(),
            remove: remove.clone(),
        };
        // The last check before writing: a lease holder that was paused past its lease stops
        // here (its state writes are fenced by the server; the firewall has no such fence).
        if !self.engine.store().may_write() {
            return Err(Error::NotLeader);
        }
        let applied = self.firewall.apply(&diff).await?;
        if applied == Applied::Done {
            // Written and confirmed: the addresses are in the firewall now.
            let written = Utc::now();
            for net in &add {
                if let Some(at) = observed.get(net) {
                    metrics
                        .timings
                        .time_to_block
                        .observe(seconds_between(*at, written));
                }
            }
        }
        let forget: BTreeSet<IpNet> = remove.union(&gone).copied().collect();
        self.persist_owned(BTreeSet::new(), forget.clone()).await?;
        for n in &forget {
            self.owned.remove(n);
        }
        metrics.reconcile_added.fetch_add(add.len() as u64, Relaxed);
        metrics
            .reconcile_removed
            .fetch_add(remove.len() as u64, Relaxed);
        metrics
            .firewall_owned
            .store(self.owned.len() as u64, Relaxed);
        if let Ok(status) = self.firewall.status().await {
            metrics.set_fill(status);
        }
        info!(added = add.len(), removed = remove.len(), evicted, applied = ?applied, "firewall updated");
        Ok(RunReport {
            added: add.len(),
            removed: remove.len(),
            evicted,
        })
    }

    /// Dry run: hand a diff to the provider (it checks and logs it, writes nothing) and log it,
    /// once per change. Nothing is owned: none of it is in the firewall.
    async fn dry_run(&mut self, diff: Diff) -> Result<()> {
        if self.dry_run_diff.as_ref() == Some(&diff) {
            debug!(
                would_add = diff.add.len(),
                would_remove = diff.remove.len(),
                "dry run: diff unchanged"
            );
            return Ok(());
        }
        self.firewall.apply(&diff).await?;
        info!(
            would_add = diff.add.len(),
            would_remove = diff.remove.len(),
            "dry run: the firewall would be updated; nothing written"
        );
        debug!(add = ?diff.add, remove = ?diff.remove, "dry run: diff");
        self.dry_run_diff = Some(diff);
        Ok(())
    }

    /// Run until `shutdown` resolves: every interval, or after a backoff when the provider
    /// asks to slow down or is unavailable. Blocks stay in the firewall when this stops.
    pub async fn run(
        mut self,
        interval: Duration,
        backoff_max: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut delay = interval;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = match self.run_once().await {
                Ok(_) => interval,
                Err(Error::Provider(err)) if err.is_retriable() => {
                    let hint = match &err {
                        palisade_providers::Error::Throttled {
                            retry_after: Some(d),
                            ..
                        } => *d,
                        _ => Duration::ZERO,
                    };
                    let next = (delay * 2)
                        .max(hint)
                        .clamp(interval, backoff_max.max(interval));
                    warn!(cause = %err, kind = err.kind(), retry_in_ms = next.as_millis() as u64, "reconcile failed, retrying");
                    next
                }
                Err(err) => {
                    warn!(cause = %err, "reconcile failed");
                    interval
                        .max(Duration::from_secs(5))
                        .min(backoff_max.max(interval))
                }
            };
        }
        info!(
            owned = self.owned.len(),
            "reconciler stopped; blocks stay in place"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn c(net: &str, severity: Severity, secs: i64) -> Candidate {
        Candidate {
            net: net.parse().unwrap(),
            severity,
            since: Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
            sensors: 1,
            manual: false,
            sensor: format!("s-{net}"),
        }
    }

    fn from(sensor: &str, sensors: u32, mut c: Candidate) -> Candidate {
        c.sensor = sensor.into();
        c.sensors = sensors;
        c
    }

    fn nets(items: &[&str]) -> BTreeSet<IpNet> {
        items.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn a_burst_from_one_sensor_cannot_displace_corroborated_blocks() {
        // Two older high blocks that three sensors agreed on, and a burst of fresh criticals
        // from one sensor, for 4 slots.
        let mut cands = vec![
            from("a", 3, c("81.2.69.1/32", Severity::High, 0)),
            from("b", 3, c("81.2.69.2/32", Severity::High, 1)),
        ];
        for i in 0..10 {
            cands.push(from(
                "flood",
                1,
                c(&format!("81.2.70.{i}/32"), Severity::Critical, 100 + i),
            ));
        }
        let room = HashMap::from([(Family::V4, 4)]);
        let (chosen, evicted) = choose(cands, &room, 1.0);
        assert!(chosen.is_superset(&nets(&["81.2.69.1/32", "81.2.69.2/32"])));
        assert_eq!(chosen.len(), 4);
        assert_eq!(evicted.len(), 8);
    }

    #[test]
    fn one_sensor_takes_at_most_its_share_while_others_compete() {
        // One flooding sensor's fresh criticals and another sensor's older highs: with a 50%
        // share the flood keeps 2 of 4 slots, the other sensor gets the rest.
        let mut cands = Vec::new();
        for i in 0..10 {
            cands.push(from(
                "flood",
                1,
                c(&format!("81.2.70.{i}/32"), Severity::Critical, 100 + i),
            ));
        }
        for i in 0..3 {
            cands.push(from(
                "real",
                1,
                c(&format!("81.2.71.{i}/32"), Severity::High, i),
            ));
        }
        let room = HashMap::from([(Family::V4, 4)]);
        let (chosen, _) = choose(cands.clone(), &room, 0.5);
        assert_eq!(
            chosen
                .iter()
                .filter(|n| n.to_string().starts_with("81.2.71."))
                .count(),
            2
        );
        assert_eq!(
            chosen
                .iter()
                .filter(|n| n.to_string().starts_with("81.2.70."))
                .count(),
            2
        );
        // Work-conserving: room nobody else wants goes to the flood's held-back blocks.
        let room = HashMap::from([(Family::V4, 8)]);
        let (chosen, evicted) = choose(cands.clone(), &room, 0.5);
        assert_eq!(chosen.len(), 8);
        assert!(chosen.is_superset(&nets(&["81.2.71.0/32", "81.2.71.1/32", "81.2.71.2/32"])));
        assert_eq!(evicted.len(), 5);
        // Without the bound (share 1) the fresher criticals win every slot.
        let room = HashMap::from([(Family::V4, 4)]);
        let (chosen, _) = choose(cands, &room, 1.0);
        assert!(chosen.iter().all(|n| n.to_string().starts_with("81.2.70.")));
    }

    #[test]
    fn manual_blocks_rank_first() {
        let mut m = c("81.2.69.9/32", Severity::Low, 0);
        m.manual = true;
        let cands = vec![from("a", 5, c("81.2.69.1/32", Severity::Critical, 10)), m];
        let room = HashMap::from([(Family::V4, 1)]);
        let (chosen, _) = choose(cands, &room, 0.5);
        assert_eq!(chosen, nets(&["81.2.69.9/32"]));
    }

    #[test]
    fn choose_prefers_severity_then_recency() {
        let cands = vec![
            c("8.8.8.1/32", Severity::Low, 10),
            c("8.8.8.2/32", Severity::Critical, 0),
            c("8.8.8.3/32", Severity::Low, 20),
            c("8.8.8.4/32", Severity::High, 5),
            c("2606:4700::1/128", Severity::Low, 0),
        ];
        let room = HashMap::from([(Family::V4, 3), (Family::V6, 0)]);
        let (chosen, evicted) = choose(cands, &room, 1.0);
        assert_eq!(chosen, nets(&["8.8.8.2/32", "8.8.8.4/32", "8.8.8.3/32"]));
        assert_eq!(evicted, nets(&["8.8.8.1/32", "2606:4700::1/128"]));
    }

    #[test]
    fn choose_everything_when_room() {
        let cands = vec![c("8.8.8.1/32", Severity::Low, 0)];
        let room = HashMap::from([(Family::V4, 10)]);
        let (chosen, evicted) = choose(cands, &room, 0.5);
        assert_eq!(chosen.len(), 1);
        assert!(evicted.is_empty());
    }
}
