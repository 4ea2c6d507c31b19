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
//! When the capacity left (capacity minus foreign entries, per family) is short, blocks are
//! ranked by severity, then recency; those that do not fit are left out and counted as
//! evictions (a newly decided critical block can thus displace an older low one).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use chrono::Utc;
use ipnet::IpNet;
use palisade_providers::{Diff, Family, Firewall};
use palisade_wire::Severity;
use tracing::{debug, info, instrument, warn};

use crate::engine::Engine;
use crate::error::{Error, Result};

/// Outcome of one successful run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    pub added: usize,
    pub removed: usize,
    pub evicted: usize,
}

/// A desired entry with its priority.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    pub net: IpNet,
    pub severity: Severity,
    pub since: chrono::DateTime<Utc>,
}

/// Choose what fits: per family, the `room[family]` best candidates (severity, then newest).
/// Returns the chosen set and how many were left out.
pub fn choose(
    mut candidates: Vec<Candidate>,
    room: &HashMap<Family, usize>,
) -> (BTreeSet<IpNet>, usize) {
    candidates.sort_by(|a, b| {
        b.severity
            .cmp(&a.severity)
            .then(b.since.cmp(&a.since))
            .then(a.net.cmp(&b.net))
    });
    let mut used: HashMap<Family, usize> = HashMap::new();
    let mut chosen = BTreeSet::new();
    let mut evicted = 0;
    for c in candidates {
        let f = Family::of(&c.net);
        let u = used.entry(f).or_default();
        if *u < room.get(&f).copied().unwrap_or(0) {
            *u += 1;
            chosen.insert(c.net);
        } else {
            evicted += 1;
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
        }
    }

    /// Entries this blocker owns.
    pub fn owned(&self) -> &BTreeSet<IpNet> {
        &self.owned
    }

    async fn persist_owned(&self, add: BTreeSet<IpNet>, remove: BTreeSet<IpNet>) -> Result<()> {
        let store = self.engine.store().clone();
        tokio::task::spawn_blocking(move || store.set_owned(&add, &remove))
            .await
            .map_err(|e| Error::Io {
                what: "ownership commit task".into(),
                source: std::io::Error::other(e.to_string()),
            })?
    }

    /// One reconcile run.
    #[instrument(skip_all, fields(provider = self.firewall.name()))]
    pub async fn run_once(&mut self) -> Result<RunReport> {
        let started = Instant::now();
        let metrics = Arc::clone(self.engine.metrics());
        metrics.reconcile_runs.fetch_add(1, Relaxed);
        let res = self.run_inner().await;
        let micros = started.elapsed().as_micros() as u64;
        metrics
            .reconcile_duration_micros_sum
            .fetch_add(micros, Relaxed);
        metrics
            .reconcile_last_duration_micros
            .store(micros, Relaxed);
        match &res {
            Ok(_) => self.last_ok.store(true, Relaxed),
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
        let (candidates, durable) = {
            let state = self.engine.state().await;
            let candidates: Vec<Candidate> = state
                .blocks
                .values()
                .filter(|b| !b.deferred && b.expires_at > now)
                .map(|b| Candidate {
                    net: b.cidr,
                    severity: b.severity,
                    since: b.first_seen,
                })
                .collect();
            (candidates, self.engine.barrier())
        };
        // Push only durable decisions: a block in the firewall always has a record that
        // survives a crash (the commit is milliseconds behind the decision).
        if !durable.wait().await {
            return Err(Error::Io {
                what: "store committer".into(),
                source: std::io::Error::other("the committer stopped"),
            });
        }
        let mut room = HashMap::new();
        for family in [Family::V4, Family::V6] {
            let capacity: usize = status
                .iter()
                .filter(|s| s.family == family)
                .map(|s| s.capacity)
                .sum();
            let foreign = actual
                .iter()
                .filter(|n| Family::of(n) == family && !self.owned.contains(n))
                .count();
            room.insert(family, capacity.saturating_sub(foreign));
        }
        let (target, evicted) = choose(candidates, &room);
        metrics.reconcile_evicted_now.store(evicted as u64, Relaxed);
        if evicted > 0 {
            metrics
                .reconcile_evictions
                .fetch_add(evicted as u64, Relaxed);
            warn!(
                evicted,
                "firewall capacity short: lowest-priority blocks left out"
            );
        }
        let add: BTreeSet<IpNet> = target.difference(&actual).copied().collect();
        let stale: BTreeSet<IpNet> = self.owned.difference(&target).copied().collect();
        let remove: BTreeSet<IpNet> = stale.intersection(&actual).copied().collect();
        let gone: BTreeSet<IpNet> = stale.difference(&actual).copied().collect();
        if add.is_empty() && remove.is_empty() {
            if !gone.is_empty() {
                self.persist_owned(BTreeSet::new(), gone.clone()).await?;
                for n in &gone {
                    self.owned.remove(n);
                }
            }
            metrics
                .firewall_owned
                .store(self.owned.len() as u64, Relaxed);
            debug!("firewall in sync");
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
        let applied = self.firewall.apply(&diff).await?;
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
        }
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
        let (chosen, evicted) = choose(cands, &room);
        let want: BTreeSet<IpNet> = ["8.8.8.2/32", "8.8.8.4/32", "8.8.8.3/32"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(chosen, want);
        assert_eq!(evicted, 2);
    }

    #[test]
    fn choose_everything_when_room() {
        let cands = vec![c("8.8.8.1/32", Severity::Low, 0)];
        let room = HashMap::from([(Family::V4, 10)]);
        let (chosen, evicted) = choose(cands, &room);
        assert_eq!(chosen.len(), 1);
        assert_eq!(evicted, 0);
    }
}
