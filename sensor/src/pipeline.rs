//! From a parsed request to published reports: detect, choose the client address, suppress
//! repeats within the window, build and validate the wire report, hand it to the publisher.
//!
//! A detection is reported only under an address the client cannot choose (see
//! [`crate::clientip`]); the rest is counted by reason. Allowlists stay the blocker's job.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use moka::sync::Cache;
use palisade_wire::{Category, Context, Report, WIRE_VERSION};
use tracing::{error, info, warn};

use crate::clientip::{Attribution, Unattributed};
use crate::detect::{Detection, Detector};
use crate::http::Request;
use crate::metrics::Metrics;
use crate::publish::Publisher;
use crate::reassembly::RequestMeta;

/// Most (client, rule) pairs remembered for suppression.
const DEDUP_CAPACITY: u64 = 100_000;
/// Unattributed detections are logged at most once per reason per interval.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Where a request was seen (goes into the report's `context`).
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// Interface name (eBPF source).
    pub interface: Option<String>,
    /// Destination port (eBPF source).
    pub dst_port: Option<u16>,
    /// Node name (Downward API); absent = the host name.
    pub node: Option<String>,
    /// Pod name (Downward API; sidecar sources).
    pub pod: Option<String>,
    /// Pod namespace (Downward API; sidecar sources).
    pub namespace: Option<String>,
}

/// The shared detection-to-report stage.
pub struct Pipeline {
    detector: Detector,
    attribution: Attribution,
    /// When each unattributed reason was last logged (logged once per [`LOG_INTERVAL`]).
    unattributed_logged: Mutex<HashMap<&'static str, Instant>>,
    /// Warned that private peers arrive while no proxy is trusted.
    warned_private_peer: AtomicBool,
    sensor_id: String,
    node: Option<String>,
    seen: Cache<(IpAddr, String), ()>,
    metrics: Arc<Metrics>,
    publisher: Option<Publisher>,
    counter: AtomicU64,
    started_ns: i64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("sensor_id", &self.sensor_id)
            .field("rules", &self.detector.rule_count())
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline reporting as `sensor_id`; at most one report per client and rule per `window`.
    /// Without a publisher, reports are only returned (tests, dry runs).
    pub fn new(
        detector: Detector,
        attribution: Attribution,
        sensor_id: String,
        window: Duration,
        metrics: Arc<Metrics>,
        publisher: Option<Publisher>,
    ) -> Self {
        let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty() && s.len() <= palisade_wire::MAX_CONTEXT_FIELD_LEN);
        let started_ns = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        Pipeline {
            detector,
            attribution,
            unattributed_logged: Mutex::new(HashMap::new()),
            warned_private_peer: AtomicBool::new(false),
            sensor_id,
            node,
            seen: Cache::builder()
                .max_capacity(DEDUP_CAPACITY)
                .time_to_live(window.max(Duration::from_millis(1)))
                .build(),
            metrics,
            publisher,
            counter: AtomicU64::new(0),
            started_ns,
        }
    }

    /// Number of rules loaded.
    pub fn rule_count(&self) -> usize {
        self.detector.rule_count()
    }

    /// Inspect one request from `peer`; returns the reports submitted for publishing.
    pub fn handle(
        &self,
        peer: IpAddr,
        request: &Request,
        meta: RequestMeta,
        origin: &Origin,
        observed_at: DateTime<Utc>,
    ) -> Vec<Report> {
        self.metrics.requests_parsed.fetch_add(1, Ordering::Relaxed);
        if !self.attribution.trusts_any() && !self.warned_private_peer.load(Ordering::Relaxed) {
            self.warn_private_peer(peer);
        }
        if request.header_lines_skipped > 0 {
            self.metrics
                .header_lines_skipped
                .fetch_add(u64::from(request.header_lines_skipped), Ordering::Relaxed);
        }
        if request.head_truncated {
            self.metrics.heads_truncated.fetch_add(1, Ordering::Relaxed);
        }
        let detections = self.detector.inspect(request);
        if detections.is_empty() {
            return Vec::new();
        }
        let headers = request
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()));
        let client_ip = match self.attribution.client_ip(peer, headers, meta) {
            Ok(ip) => ip,
            Err(why) => {
                // Inspected (the detections are counted), never reported: the only address at
                // hand is one a client could have chosen, or one we must never block.
                for detection in &detections {
                    self.metrics.detection(&detection.rule_id);
                }
                self.unattributed(why, peer, &detections);
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for detection in detections {
            self.metrics.detection(&detection.rule_id);
            let key = (client_ip, detection.rule_id.clone());
            if self.seen.contains_key(&key) {
                self.metrics
                    .reports_suppressed
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
            self.seen.insert(key, ());
            let report = match self
                .report(client_ip, peer, &detection, origin, observed_at)
                .and_then(|r| r.validate().map(|()| r))
            {
                Ok(r) => r,
                Err(err) => {
                    self.metrics.reports_invalid.fetch_add(1, Ordering::Relaxed);
                    error!(cause = %err, rule = %detection.rule_id, "report breaks the wire contract; dropped");
                    continue;
                }
            };
            info!(
                client_ip = %client_ip,
                peer_ip = %peer,
                rule = %detection.rule_id,
                category = %detection.category,
                severity = %detection.severity,
                "detection"
            );
            if let Some(p) = &self.publisher {
                p.submit(report.clone());
            }
            out.push(report);
        }
        out
    }

    fn unattributed(&self, why: Unattributed, peer: IpAddr, detections: &[Detection]) {
        let reason = why.reason();
        self.metrics.unattributed(reason);
        let now = Instant::now();
        let Ok(mut logged) = self.unattributed_logged.lock() else {
            return;
        };
        let due = logged
            .get(reason)
            .is_none_or(|at| now.duration_since(*at) >= LOG_INTERVAL);
        if due {
            logged.insert(reason, now);
            warn!(
                reason,
                cause = %why,
                peer_ip = %peer,
                rule = %detections.first().map(|d| d.rule_id.as_str()).unwrap_or(""),
                "detection not reported: no client address can be trusted (logged once a minute per reason; palisade_sensor_unattributed_total counts all)"
            );
        }
    }

    /// Behind a load balancer, every peer is the balancer: without trusted proxies each report
    /// would name it. Warn once when a private peer shows up and no proxy is trusted.
    fn warn_private_peer(&self, peer: IpAddr) {
        let Some(range) = palisade_wire::special::special_addr(peer.to_canonical()) else {
            return;
        };
        if !self.warned_private_peer.swap(true, Ordering::Relaxed) {
            warn!(
                peer_ip = %peer,
                range,
                "traffic arrives from a special-purpose address while no proxy is trusted: if a \
                 load balancer or ingress is in front, set trusted_proxies (or trusted_hops) so the \
                 client address comes from its X-Forwarded-For; until then such peers are not reported"
            );
        }
    }

    fn report(
        &self,
        client_ip: IpAddr,
        peer_ip: IpAddr,
        d: &Detection,
        origin: &Origin,
        observed_at: DateTime<Utc>,
    ) -> Result<Report, palisade_wire::WireError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{:x}-{:x}", self.sensor_id, self.started_ns, n);
        let context = Context {
            node: origin.node.clone().or_else(|| self.node.clone()),
            pod: origin.pod.clone(),
            namespace: origin.namespace.clone(),
            interface: origin.interface.clone(),
            dst_port: origin.dst_port,
            ..Default::default()
        };
        Ok(Report {
            v: WIRE_VERSION,
            id,
            sensor: self.sensor_id.clone(),
            observed_at,
            client_ip,
            peer_ip,
            rule: d.rule_id.clone(),
            category: Category::new(d.category.clone())?,
            severity: d.severity,
            mitre: d.mitre.clone(),
            evidence: palisade_wire::truncate_evidence(&d.evidence).to_owned(),
            context: Some(context),
            crs: d.crs.clone(),
        })
    }
}
