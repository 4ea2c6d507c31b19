//! Every metric of the blocker, served by `GET /metrics` through the `prometheus-client` crate:
//! OpenMetrics text to scrapers that ask for it (Prometheus does), the Prometheus text format
//! 0.0.4 to the others. Both carry the same series under the same names.
//!
//! The pipeline's counters and gauges are atomics, read once per scrape (the admin API's status
//! reads them too); the latency histograms and the provider call counters are
//! `prometheus-client` metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use palisade_providers::{CallObserver, CallOutcome, SetStatus};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

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
    /// Latency histograms: time to decision, time to block, reconcile runs.
    pub timings: Timings,
    /// The firewall provider's API calls (report to it with [`Firewall::observe_calls`]).
    ///
    /// [`Firewall::observe_calls`]: palisade_providers::Firewall::observe_calls
    pub provider: ProviderCalls,
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

    /// The metrics page in `format`: every metric of the blocker, encoded by
    /// `prometheus-client`. Counters are registered without their `_total` suffix, which both
    /// encoders append, so the series keep the names they have always had.
    pub fn render(&self, format: Exposition) -> String {
        palisade_wire::exposition::encode(&self.registry(format), format, |err| {
            tracing::error!(cause = %err, "cannot encode the metrics");
        })
    }

    /// A registry of this moment's values: the blocker's counters and gauges are atomics
    /// (shared with the admin API's status), read once per scrape; histograms and the provider
    /// call counters are `prometheus-client` metrics, registered as they are.
    fn registry(&self, format: Exposition) -> Registry {
        let mut r = Registry::default();
        let counter = |r: &mut Registry, name: &str, help: &str, v: u64| {
            r.register(name, help, ConstCounter::new(v));
        };
        counter(
            &mut r,
            "palisade_reports_received",
            "Messages taken from the stream",
            self.reports_received.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_reports_accepted",
            "Valid reports counted by the policy",
            self.reports_accepted.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_reports_deduplicated",
            "Reports dropped as duplicates (same client, rule and sensor within the dedup window)",
            self.reports_deduplicated.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_reports_rate_limited",
            "Reports dropped by the per-sensor quota",
            self.reports_rate_limited.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_reports_already_counted",
            "Redelivered reports already recorded on their block (not counted twice)",
            self.reports_redelivered_seen.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_blocks_added",
            "Blocks decided (policy and manual)",
            self.blocks_added.load(Relaxed),
        );
        // OpenMetrics names a counter's family without `_total`: this one's would be
        // `palisade_blocks_deferred`, the gauge's name. It keeps its series name there as a
        // metric of unknown type (PromQL's rate() does not look at the type).
        let deferred_help =
            "Blocks decided while the global new-block cap was exhausted (queued, not dropped)";
        let deferred_total = self.blocks_deferred_total.load(Relaxed);
        match format {
            Exposition::OpenMetrics => r.register_collector(Box::new(Labelled {
                name: "palisade_blocks_deferred_total",
                help: deferred_help.to_owned(),
                kind: MetricType::Unknown,
                rows: vec![(Vec::new(), Num::U(deferred_total))],
            })),
            Exposition::Prometheus => counter(
                &mut r,
                "palisade_blocks_deferred",
                deferred_help,
                deferred_total,
            ),
        }
        counter(
            &mut r,
            "palisade_blocks_expired",
            "Blocks removed by the sweeper at the end of their TTL",
            self.blocks_expired.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_blocks_released",
            "Blocks released through the admin API",
            self.blocks_released.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_history_entries_written",
            "History entries appended",
            self.history_written.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_batches_decided",
            "Batches of messages decided (reports received / batches = mean batch size)",
            self.batches_decided.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_state_batches_committed",
            "Store transactions committed by the pipeline",
            self.batches_committed.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_state_errors",
            "Failed store transactions (the messages are redelivered)",
            self.store_errors.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_leader_terms",
            "Times this replica took the lease of the nats state backend",
            self.leader_changes.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_reconcile_runs",
            "Reconcile runs",
            self.reconcile_runs.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_reconcile_entries_added",
            "Entries the reconciler added to the firewall",
            self.reconcile_added.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_reconcile_entries_removed",
            "Entries the reconciler removed from the firewall",
            self.reconcile_removed.load(Relaxed),
        );
        counter(
            &mut r,
            "palisade_firewall_reads",
            "GetIPSet calls the AWS provider sent (cache refreshes, startup, lock conflicts); AWS allows about 5 per second per account and region",
            palisade_providers::aws::reads_total(),
        );
        counter(
            &mut r,
            "palisade_reconcile_evictions",
            "Blocks that became left out of the firewall for lack of capacity (lowest severity, then oldest, first); counted once while they stay out",
            self.reconcile_evictions.load(Relaxed),
        );
        let gauge = |r: &mut Registry, name: &str, help: &str, v: u64| {
            r.register(name, help, ConstGauge::new(v));
        };
        gauge(
            &mut r,
            "palisade_leader",
            "1 while this replica decides and writes (holds the lease), else 0",
            self.leader.load(Relaxed),
        );
        gauge(
            &mut r,
            "palisade_blocks_active",
            "Blocks in force (deferred ones included)",
            self.blocks_active.load(Relaxed),
        );
        gauge(
            &mut r,
            "palisade_blocks_deferred",
            "Blocks waiting for the global new-block cap",
            self.blocks_deferred.load(Relaxed),
        );
        gauge(
            &mut r,
            "palisade_policy_tracked_clients",
            "Clients with reports counted but not (yet) blocked",
            self.tracked_clients.load(Relaxed),
        );
        gauge(
            &mut r,
            "palisade_reconcile_last_duration_microseconds",
            "Duration of the last reconcile run",
            self.reconcile_last_duration_micros.load(Relaxed),
        );
        gauge(
            &mut r,
            "palisade_reconcile_last_success_timestamp_seconds",
            "Unix time of the last successful reconcile run (0: none yet)",
            self.reconcile_last_success_unix.load(Relaxed),
        );
        gauge(
            &mut r,
            "palisade_sensors_tracked",
            "Sensors whose reports this blocker has taken since it started (at most 1024 counted apart)",
            self.sensors.len() as u64,
        );
        gauge(
            &mut r,
            "palisade_reconcile_evicted",
            "Desired blocks left out of the firewall for lack of capacity at the last run",
            self.reconcile_evicted_now.load(Relaxed),
        );
        gauge(
            &mut r,
            "palisade_firewall_owned_entries",
            "Firewall entries owned by this blocker",
            self.firewall_owned.load(Relaxed),
        );
        gauge(
            &mut r,
            "palisade_history_entries",
            "Entries in the history (decisions, manual blocks and releases, expiries)",
            self.history_entries.load(Relaxed),
        );
        let by = |label: &'static str, map: BTreeMap<&'static str, u64>| -> Vec<Row> {
            map.into_iter()
                .map(|(k, v)| (vec![(label, k.to_owned())], Num::U(v)))
                .collect()
        };
        let labelled = |r: &mut Registry, name: &'static str, help: String, rows: Vec<Row>| {
            r.register_collector(Box::new(Labelled {
                name,
                help,
                kind: MetricType::Counter,
                rows,
            }));
        };
        labelled(
            &mut r,
            "palisade_history_pruned",
            "History entries pruned, oldest first: by age (history.max_age_secs) or size (history.max_entries)".into(),
            by(
                "reason",
                BTreeMap::from([
                    ("age", self.history_pruned_age.load(Relaxed)),
                    ("size", self.history_pruned_size.load(Relaxed)),
                ]),
            ),
        );
        labelled(
            &mut r,
            "palisade_reports_rejected",
            "Reports rejected by validation, by reason".into(),
            by("reason", self.rejections()),
        );
        labelled(
            &mut r,
            "palisade_falco_events",
            "Falco events taken from Falcosidekick's NATS output, by outcome".into(),
            by("outcome", self.falco_events()),
        );
        labelled(
            &mut r,
            "palisade_blocks_refused",
            "Reports whose client a guardrail protects, by reason".into(),
            by("reason", self.refusals()),
        );
        labelled(
            &mut r,
            "palisade_reconcile_errors",
            "Failed reconcile runs, by provider error kind".into(),
            by("kind", get(&self.reconcile_errors)),
        );
        labelled(
            &mut r,
            "palisade_detections",
            format!(
                "Accepted reports, by the namespace of the workload attacked (`_none`: no \
                 namespace in the report; `_other`: beyond the first {MAX_NAMESPACE_LABELS} \
                 namespaces, or malformed)"
            ),
            self.detections_by_namespace()
                .into_iter()
                .map(|(ns, v)| (vec![("namespace", ns)], Num::U(v)))
                .collect(),
        );
        let sets = self.sets();
        let per_set = |f: &dyn Fn(&SetStatus) -> Num| -> Vec<Row> {
            sets.iter()
                .map(|s| {
                    let labels = vec![("set", s.id.clone()), ("family", s.family.to_string())];
                    (labels, f(s))
                })
                .collect()
        };
        let gauges = |r: &mut Registry, name: &'static str, help: &str, rows: Vec<Row>| {
            r.register_collector(Box::new(Labelled {
                name,
                help: help.to_owned(),
                kind: MetricType::Gauge,
                rows,
            }));
        };
        gauges(
            &mut r,
            "palisade_firewall_entries",
            "Entries in each firewall set",
            per_set(&|s| Num::U(s.entries as u64)),
        );
        gauges(
            &mut r,
            "palisade_firewall_capacity",
            "Capacity of each firewall set",
            per_set(&|s| Num::U(s.capacity as u64)),
        );
        gauges(
            &mut r,
            "palisade_ipset_fill_ratio",
            "Entries over capacity of each firewall set (0 to 1), as of the last reconcile run",
            sets.iter()
                .map(|s| {
                    let ratio = if s.capacity == 0 {
                        1.0
                    } else {
                        s.entries as f64 / s.capacity as f64
                    };
                    (vec![("set", s.id.clone())], Num::F(ratio))
                })
                .collect(),
        );
        self.timings.register(&mut r);
        self.provider.register(&mut r);
        r
    }
}

pub use palisade_wire::exposition::Exposition;

/// A sample's value.
#[derive(Debug, Clone, Copy)]
enum Num {
    U(u64),
    F(f64),
}

/// One labelled sample: its labels and value.
type Row = (Vec<(&'static str, String)>, Num);

/// A family read at scrape time from the blocker's own maps (rejections by reason, fill per
/// set, ...).
#[derive(Debug)]
struct Labelled {
    name: &'static str,
    help: String,
    kind: MetricType,
    rows: Vec<Row>,
}

impl Collector for Labelled {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(self.name, &self.help, None, self.kind)?;
        for (labels, v) in &self.rows {
            let mut sample = family.encode_family(labels)?;
            match (self.kind, *v) {
                (MetricType::Counter, Num::U(v)) => {
                    sample.encode_counter::<NoLabelSet, _, u64>(&v, None)?
                }
                (MetricType::Counter, Num::F(v)) => {
                    sample.encode_counter::<NoLabelSet, _, f64>(&v, None)?
                }
                (_, Num::U(v)) => sample.encode_gauge(&v)?,
                (_, Num::F(v)) => sample.encode_gauge(&v)?,
            }
        }
        Ok(())
    }
}

/// Bucket bounds (seconds) of `palisade_time_to_decision_seconds`: a report is decided in
/// milliseconds when it alone crosses the threshold, minutes later when it takes several.
pub const TIME_TO_DECISION_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
/// Bucket bounds (seconds) of `palisade_time_to_block_seconds`: a reconcile interval and one
/// write slot (about 1 s against AWS) when all is well; minutes behind throttling, a deferred
/// queue or a full set.
pub const TIME_TO_BLOCK_BUCKETS: [f64; 17] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0,
];
/// Bucket bounds (seconds) of `palisade_reconcile_duration_seconds`: milliseconds with
/// nothing to write, seconds when the AWS writer waits for a write slot or backs off.
pub const RECONCILE_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Bucket bounds (seconds) of `palisade_provider_call_duration_seconds`: one API call.
pub const PROVIDER_CALL_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Latency histograms of the pipeline and the reconciler.
#[derive(Debug, Clone)]
pub struct Timings {
    /// From a deciding report's `observed_at` (the sensor's clock) to the decision.
    pub time_to_decision: Histogram,
    /// From a deciding report's `observed_at` to the reconciler's confirmed write of its
    /// address into the firewall.
    pub time_to_block: Histogram,
    /// Each reconcile run, failed ones included.
    pub reconcile_duration: Histogram,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            time_to_decision: Histogram::new(TIME_TO_DECISION_BUCKETS),
            time_to_block: Histogram::new(TIME_TO_BLOCK_BUCKETS),
            reconcile_duration: Histogram::new(RECONCILE_BUCKETS),
        }
    }
}

impl Timings {
    fn register(&self, r: &mut Registry) {
        r.register(
            "palisade_time_to_decision_seconds",
            "From a deciding report's observed_at (the sensor's clock) to the block decision",
            self.time_to_decision.clone(),
        );
        r.register(
            "palisade_time_to_block_seconds",
            "From a deciding report's observed_at (the sensor's clock) to its address written in the firewall, as the reconciler confirms it (manual blocks not included)",
            self.time_to_block.clone(),
        );
        r.register(
            "palisade_reconcile_duration_seconds",
            "Time spent per reconcile run (failed runs included)",
            self.reconcile_duration.clone(),
        );
    }
}

/// Seconds from `from` to `to`, 0 when `to` is earlier (a sensor clock ahead of ours).
pub fn seconds_between(
    from: chrono::DateTime<chrono::Utc>,
    to: chrono::DateTime<chrono::Utc>,
) -> f64 {
    (to - from).to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// Labels of `palisade_provider_calls_total`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub provider: &'static str,
    pub operation: &'static str,
    pub outcome: &'static str,
}

/// Labels of `palisade_provider_call_duration_seconds`.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabels {
    pub provider: &'static str,
    pub operation: &'static str,
}

type DurationFamily = Family<OperationLabels, Histogram, fn() -> Histogram>;

fn call_histogram() -> Histogram {
    Histogram::new(PROVIDER_CALL_BUCKETS)
}

/// Every call the firewall provider makes to its API, each retry included: the providers
/// crate reports them through [`CallObserver`]. Cloning shares the counters.
#[derive(Debug, Clone)]
pub struct ProviderCalls {
    pub calls: Family<CallLabels, Counter>,
    pub duration: DurationFamily,
}

impl Default for ProviderCalls {
    fn default() -> Self {
        ProviderCalls {
            calls: Family::default(),
            duration: Family::new_with_constructor(call_histogram as fn() -> Histogram),
        }
    }
}

impl ProviderCalls {
    fn register(&self, r: &mut Registry) {
        r.register(
            "palisade_provider_calls",
            "Calls the firewall provider made to its API (each retry counted), by operation and outcome: ok, throttled, lock_conflict, error",
            self.calls.clone(),
        );
        r.register(
            "palisade_provider_call_duration_seconds",
            "Latency of each call the firewall provider made to its API (each retry, not the rate-limit wait), by operation",
            self.duration.clone(),
        );
    }

    /// Calls counted so far with these labels.
    pub fn count(
        &self,
        provider: &'static str,
        operation: &'static str,
        outcome: CallOutcome,
    ) -> u64 {
        self.calls
            .get(&CallLabels {
                provider,
                operation,
                outcome: outcome.label(),
            })
            .map(|c| c.get())
            .unwrap_or(0)
    }
}

impl CallObserver for ProviderCalls {
    fn call(
        &self,
        provider: &'static str,
        operation: &'static str,
        outcome: CallOutcome,
        elapsed: Duration,
    ) {
        self.calls
            .get_or_create(&CallLabels {
                provider,
                operation,
                outcome: outcome.label(),
            })
            .inc();
        self.duration
            .get_or_create(&OperationLabels {
                provider,
                operation,
            })
            .observe(elapsed.as_secs_f64());
    }
}

/// A Kubernetes namespace name: an RFC 1123 label, `[a-z0-9-]{1,63}`.
fn dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
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
        let text = m.render(Exposition::Prometheus);
        assert!(
            text.contains("palisade_detections_total{namespace=\"shop\"} 3"),
            "{text}"
        );
        assert!(text.contains("# TYPE palisade_detections_total counter"));
        let text = m.render(Exposition::OpenMetrics);
        assert!(
            text.contains("palisade_detections_total{namespace=\"shop\"} 3"),
            "{text}"
        );
        assert!(text.contains("# TYPE palisade_detections counter"));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn series_keep_their_names_in_both_formats() {
        let m = Metrics::default();
        m.reports_received.store(7, Relaxed);
        m.blocks_active.store(3, Relaxed);
        m.rejected("bad_json");
        m.set_fill(vec![SetStatus {
            id: "arn:x".into(),
            family: palisade_providers::Family::V4,
            entries: 25,
            capacity: 100,
        }]);
        m.timings.time_to_block.observe(1.5);
        m.provider.call(
            "aws",
            "UpdateIPSet",
            CallOutcome::Throttled,
            Duration::from_millis(20),
        );
        for format in [Exposition::OpenMetrics, Exposition::Prometheus] {
            let text = m.render(format);
            for line in [
                "palisade_reports_received_total 7",
                "palisade_blocks_active 3",
                "palisade_reports_rejected_total{reason=\"bad_json\"} 1",
                "palisade_firewall_entries{set=\"arn:x\",family=\"v4\"} 25",
                "palisade_ipset_fill_ratio{set=\"arn:x\"} 0.25",
                "palisade_time_to_block_seconds_bucket{le=\"+Inf\"} 1",
                "palisade_time_to_block_seconds_count 1",
                "palisade_provider_calls_total{provider=\"aws\",operation=\"UpdateIPSet\",outcome=\"throttled\"} 1",
                "palisade_provider_call_duration_seconds_count{provider=\"aws\",operation=\"UpdateIPSet\"} 1",
            ] {
                assert!(
                    text.lines().any(|l| l == line),
                    "{format:?}: no `{line}` in\n{text}"
                );
            }
        }
        assert_eq!(
            m.provider
                .count("aws", "UpdateIPSet", CallOutcome::Throttled),
            1
        );
        // The counter whose OpenMetrics family would collide with the gauge of the same stem.
        m.blocks_deferred_total.store(4, Relaxed);
        let om = m.render(Exposition::OpenMetrics);
        assert!(om.contains("\n# TYPE palisade_blocks_deferred_total unknown\npalisade_blocks_deferred_total 4\n"), "{om}");
        assert!(
            om.contains("\n# TYPE palisade_blocks_deferred gauge\n"),
            "{om}"
        );
        let text = m.render(Exposition::Prometheus);
        assert!(text.contains("\n# TYPE palisade_blocks_deferred_total counter\npalisade_blocks_deferred_total 4\n"), "{text}");
    }
}
