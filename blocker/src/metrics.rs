//! Counters and gauges, rendered in the Prometheus text format by `GET /metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use palisade_providers::SetStatus;

pub mod sensors;

/// Every metric of the blocker.
#[derive(Debug, Default)]
pub struct Metrics {
    pub reports_received: AtomicU64,
    pub reports_accepted: AtomicU64,
    pub reports_deduplicated: AtomicU64,
    pub reports_rate_limited: AtomicU64,
    pub reports_redelivered_seen: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
    refused: Mutex<BTreeMap<&'static str, u64>>,
    pub blocks_active: AtomicU64,
    pub blocks_deferred: AtomicU64,
    pub blocks_added: AtomicU64,
    pub blocks_deferred_total: AtomicU64,
    pub blocks_expired: AtomicU64,
    pub blocks_released: AtomicU64,
    pub batches_committed: AtomicU64,
    pub batches_decided: AtomicU64,
    pub store_errors: AtomicU64,
    /// False while the store committer is failing (set by the committer; read by `/readyz`).
    pub store_failing: std::sync::atomic::AtomicBool,
    pub tracked_clients: AtomicU64,
    pub reconcile_runs: AtomicU64,
    reconcile_errors: Mutex<BTreeMap<&'static str, u64>>,
    pub reconcile_duration_micros_sum: AtomicU64,
    pub reconcile_last_duration_micros: AtomicU64,
    pub reconcile_added: AtomicU64,
    pub reconcile_removed: AtomicU64,
    pub reconcile_evictions: AtomicU64,
    pub reconcile_evicted_now: AtomicU64,
    pub firewall_owned: AtomicU64,
    /// 1 while this replica decides (holds the lease; always with the embedded backend).
    pub leader: AtomicU64,
    /// Times this replica took the lease.
    pub leader_changes: AtomicU64,
    sets: Mutex<Vec<SetStatus>>,
    detections_by_namespace: Mutex<BTreeMap<String, u64>>,
    falco_events: Mutex<BTreeMap<&'static str, u64>>,
    /// Unix time of the last successful reconcile run (0: none yet).
    pub reconcile_last_success_unix: AtomicU64,
    /// Per-sensor activity (`GET /v1/sensors`).
    pub sensors: sensors::SensorTracker,
    /// History entries kept (as this replica knows them).
    pub history_entries: AtomicU64,
    /// History entries appended.
    pub history_written: AtomicU64,
    /// History entries pruned for their age (`history.max_age_secs`).
    pub history_pruned_age: AtomicU64,
    /// History entries pruned for the size bound (`history.max_entries`).
    pub history_pruned_size: AtomicU64,
}

/// Most distinct namespaces counted apart in `palisade_detections_total`; the rest share
/// [`OTHER_NAMESPACE`]. Reports come from any publisher, so the label set is bounded here.
pub const MAX_NAMESPACE_LABELS: usize = 256;
/// Label of the namespaces beyond [`MAX_NAMESPACE_LABELS`] and of malformed ones. Not a valid
/// namespace name (`_`), so it never collides with a real one.
pub const OTHER_NAMESPACE: &str = "_other";
/// Label of reports without a namespace in their context (not from a Kubernetes pod).
pub const NO_NAMESPACE: &str = "_none";

fn bump(map: &Mutex<BTreeMap<&'static str, u64>>, key: &'static str) {
    *map.lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(key)
        .or_default() += 1;
}

fn get(map: &Mutex<BTreeMap<&'static str, u64>>) -> BTreeMap<&'static str, u64> {
    map.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

impl Metrics {
    /// A report was rejected by validation (`reason` from `WireError::reason`, or
    /// `sensor_mismatch`).
    pub fn rejected(&self, reason: &'static str) {
        bump(&self.rejected, reason);
    }

    /// A would-be block was refused by a guardrail.
    pub fn refused(&self, reason: &'static str) {
        bump(&self.refused, reason);
    }

    /// A Falco event was handled (`outcome` from `falco::Outcome::label`).
    pub fn falco_event(&self, outcome: &'static str) {
        bump(&self.falco_events, outcome);
    }

    /// Falco events so far, by outcome.
    pub fn falco_events(&self) -> BTreeMap<&'static str, u64> {
        get(&self.falco_events)
    }

    /// A reconcile run failed (`kind` from the provider error).
    pub fn reconcile_error(&self, kind: &'static str) {
        bump(&self.reconcile_errors, kind);
    }

    /// An accepted report (`namespace` from its context). Namespaces are counted apart up to
    /// [`MAX_NAMESPACE_LABELS`]; later ones and names that are not DNS labels count as
    /// [`OTHER_NAMESPACE`].
    pub fn detection(&self, namespace: Option<&str>) {
        let mut map = self
            .detections_by_namespace
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let label = match namespace {
            None => NO_NAMESPACE,
            Some(ns) if dns_label(ns) => ns,
            Some(_) => OTHER_NAMESPACE,
        };
        if let Some(n) = map.get_mut(label) {
            *n += 1;
            return;
        }
        let label = if map.len() < MAX_NAMESPACE_LABELS {
            label
        } else {
            OTHER_NAMESPACE
        };
        *map.entry(label.to_owned()).or_default() += 1;
    }

    /// Accepted reports so far, by namespace label.
    pub fn detections_by_namespace(&self) -> BTreeMap<String, u64> {
        self.detections_by_namespace
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rejections so far, by reason.
    pub fn rejections(&self) -> BTreeMap<&'static str, u64> {
        get(&self.rejected)
    }

    /// Guardrail refusals so far, by reason.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        get(&self.refused)
    }

    /// Latest fill of the firewall's sets (as of the last reconcile run).
    pub fn sets(&self) -> Vec<SetStatus> {
        self.sets.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Latest fill of the firewall's sets.
    pub fn set_fill(&self, sets: Vec<SetStatus>) {
        *self.sets.lock().unwrap_or_else(|p| p.into_inner()) = sets;
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let mut counter = |name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        counter(
            "palisade_reports_received_total",
            "Messages taken from the stream.",
            self.reports_received.load(Relaxed),
        );
        counter(
            "palisade_reports_accepted_total",
            "Valid reports counted by the policy.",
            self.reports_accepted.load(Relaxed),
        );
        counter(
            "palisade_reports_deduplicated_total",
            "Reports dropped as duplicates (same client, rule and sensor within the dedup window).",
            self.reports_deduplicated.load(Relaxed),
        );
        counter(
            "palisade_reports_rate_limited_total",
            "Reports dropped by the per-sensor quota.",
            self.reports_rate_limited.load(Relaxed),
        );
        counter(
            "palisade_reports_already_counted_total",
            "Redelivered reports already recorded on their block (not counted twice).",
            self.reports_redelivered_seen.load(Relaxed),
        );
        counter(
            "palisade_blocks_added_total",
            "Blocks decided (policy and manual).",
            self.blocks_added.load(Relaxed),
        );
        counter(
            "palisade_blocks_deferred_total",
            "Blocks decided while the global new-block cap was exhausted (queued, not dropped).",
            self.blocks_deferred_total.load(Relaxed),
        );
        counter(
            "palisade_blocks_expired_total",
            "Blocks removed by the sweeper at the end of their TTL.",
            self.blocks_expired.load(Relaxed),
        );
        counter(
            "palisade_blocks_released_total",
            "Blocks released through the admin API.",
            self.blocks_released.load(Relaxed),
        );
        counter(
            "palisade_history_entries_written_total",
            "History entries appended.",
            self.history_written.load(Relaxed),
        );
        counter(
            "palisade_batches_decided_total",
            "Batches of messages decided (reports received / batches = mean batch size).",
            self.batches_decided.load(Relaxed),
        );
        counter(
            "palisade_state_batches_committed_total",
            "Store transactions committed by the pipeline.",
            self.batches_committed.load(Relaxed),
        );
        counter(
            "palisade_state_errors_total",
            "Failed store transactions (the messages are redelivered).",
            self.store_errors.load(Relaxed),
        );
        counter(
            "palisade_leader_terms_total",
            "Times this replica took the lease of the nats state backend.",
            self.leader_changes.load(Relaxed),
        );
        counter(
            "palisade_reconcile_runs_total",
            "Reconcile runs.",
            self.reconcile_runs.load(Relaxed),
        );
        counter(
            "palisade_reconcile_entries_added_total",
            "Entries the reconciler added to the firewall.",
            self.reconcile_added.load(Relaxed),
        );
        counter(
            "palisade_reconcile_entries_removed_total",
            "Entries the reconciler removed from the firewall.",
            self.reconcile_removed.load(Relaxed),
        );
        counter(
            "palisade_firewall_reads_total",
            "GetIPSet calls the AWS provider sent (cache refreshes, startup, lock conflicts); AWS allows about 5 per second per account and region.",
            palisade_providers::aws::reads_total(),
        );
        counter(
            "palisade_reconcile_evictions_total",
            "Blocks that became left out of the firewall for lack of capacity (lowest severity, then oldest, first); counted once while they stay out.",
            self.reconcile_evictions.load(Relaxed),
        );
        let runs = self.reconcile_runs.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP palisade_reconcile_duration_seconds Time spent per reconcile run.\n\
             # TYPE palisade_reconcile_duration_seconds summary\n\
             palisade_reconcile_duration_seconds_sum {:.6}\n\
             palisade_reconcile_duration_seconds_count {runs}",
            self.reconcile_duration_micros_sum.load(Relaxed) as f64 / 1e6
        );
        let mut gauge = |name: &str, help: &str, v: u64| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
        };
        gauge(
            "palisade_leader",
            "1 while this replica decides and writes (holds the lease), else 0.",
            self.leader.load(Relaxed),
        );
        gauge(
            "palisade_blocks_active",
            "Blocks in force (deferred ones included).",
            self.blocks_active.load(Relaxed),
        );
        gauge(
            "palisade_blocks_deferred",
            "Blocks waiting for the global new-block cap.",
            self.blocks_deferred.load(Relaxed),
        );
        gauge(
            "palisade_policy_tracked_clients",
            "Clients with reports counted but not (yet) blocked.",
            self.tracked_clients.load(Relaxed),
        );
        gauge(
            "palisade_reconcile_last_duration_microseconds",
            "Duration of the last reconcile run.",
            self.reconcile_last_duration_micros.load(Relaxed),
        );
        gauge(
            "palisade_reconcile_last_success_timestamp_seconds",
            "Unix time of the last successful reconcile run (0: none yet).",
            self.reconcile_last_success_unix.load(Relaxed),
        );
        gauge(
            "palisade_sensors_tracked",
            "Sensors whose reports this blocker has taken since it started (at most 1024 counted apart).",
            self.sensors.len() as u64,
        );
        gauge(
            "palisade_reconcile_evicted",
            "Desired blocks left out of the firewall for lack of capacity at the last run.",
            self.reconcile_evicted_now.load(Relaxed),
        );
        gauge(
            "palisade_firewall_owned_entries",
            "Firewall entries owned by this blocker.",
            self.firewall_owned.load(Relaxed),
        );
        gauge(
            "palisade_history_entries",
            "Entries in the history (decisions, manual blocks and releases, expiries).",
            self.history_entries.load(Relaxed),
        );
        let labelled = |out: &mut String,
                        name: &str,
                        help: &str,
                        label: &str,
                        map: BTreeMap<&'static str, u64>| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (k, v) in map {
                let _ = writeln!(out, "{name}{{{label}=\"{k}\"}} {v}");
            }
        };
        labelled(
            &mut out,
            "palisade_history_pruned_total",
            "History entries pruned, oldest first: by age (history.max_age_secs) or size (history.max_entries).",
            "reason",
            BTreeMap::from([
                ("age", self.history_pruned_age.load(Relaxed)),
                ("size", self.history_pruned_size.load(Relaxed)),
            ]),
        );
        labelled(
            &mut out,
            "palisade_reports_rejected_total",
            "Reports rejected by validation, by reason.",
            "reason",
            self.rejections(),
        );
        labelled(
            &mut out,
            "palisade_falco_events_total",
            "Falco events taken from Falcosidekick's NATS output, by outcome.",
            "outcome",
            self.falco_events(),
        );
        labelled(
            &mut out,
            "palisade_blocks_refused_total",
            "Reports whose client a guardrail protects, by reason.",
            "reason",
            self.refusals(),
        );
        labelled(
            &mut out,
            "palisade_reconcile_errors_total",
            "Failed reconcile runs, by provider error kind.",
            "kind",
            get(&self.reconcile_errors),
        );
        let _ = writeln!(
            out,
            "# HELP palisade_detections_total Accepted reports, by the namespace of the workload \
             attacked (`_none`: no namespace in the report; `_other`: beyond the first \
             {MAX_NAMESPACE_LABELS} namespaces, or malformed).\n\
             # TYPE palisade_detections_total counter"
        );
        for (ns, v) in self.detections_by_namespace() {
            let _ = writeln!(
                out,
                "palisade_detections_total{{namespace=\"{}\"}} {v}",
                escape(&ns)
            );
        }
        let sets = self.sets.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let _ = writeln!(
            out,
            "# HELP palisade_firewall_entries Entries in each firewall set.\n# TYPE palisade_firewall_entries gauge"
        );
        for s in &sets {
            let _ = writeln!(
                out,
                "palisade_firewall_entries{{set=\"{}\",family=\"{}\"}} {}",
                escape(&s.id),
                s.family,
                s.entries
            );
        }
        let _ = writeln!(
            out,
            "# HELP palisade_firewall_capacity Capacity of each firewall set.\n# TYPE palisade_firewall_capacity gauge"
        );
        for s in &sets {
            let _ = writeln!(
                out,
                "palisade_firewall_capacity{{set=\"{}\",family=\"{}\"}} {}",
                escape(&s.id),
                s.family,
                s.capacity
            );
        }
        out
    }
}

/// A Kubernetes namespace name: an RFC 1123 label, `[a-z0-9-]{1,63}`.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detections_by_namespace_are_bounded() {
        let m = Metrics::default();
        m.detection(Some("shop"));
        m.detection(Some("shop"));
        m.detection(None);
        m.detection(Some("Not A Label\""));
        for i in 0..MAX_NAMESPACE_LABELS + 10 {
            m.detection(Some(&format!("ns-{i}")));
        }
        let by = m.detections_by_namespace();
        assert_eq!(by.len(), MAX_NAMESPACE_LABELS, "the cap, `_other` included");
        assert_eq!(by["shop"], 2);
        assert_eq!(by[NO_NAMESPACE], 1);
        // the malformed one, and the namespaces beyond the cap
        let counted_apart = MAX_NAMESPACE_LABELS - 3;
        assert_eq!(
            by[OTHER_NAMESPACE],
            1 + (MAX_NAMESPACE_LABELS + 10 - counted_apart) as u64
        );
        // a namespace counted apart keeps counting apart once the cap is reached
        m.detection(Some("shop"));
        assert_eq!(m.detections_by_namespace()["shop"], 3);
        let text = m.render();
        assert!(
            text.contains("palisade_detections_total{namespace=\"shop\"} 3"),
            "{text}"
        );
        assert!(text.contains("# TYPE palisade_detections_total counter"));
    }
}
