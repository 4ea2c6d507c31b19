//! From a parsed request to published reports: detect, choose the client address, suppress
//! repeats within the window, build and validate the wire report, hand it to the publisher.
//!
//! A detection is reported only under an address the client cannot choose (see
//! [`crate::clientip`]); the rest is counted by reason. Allowlists stay the blocker's job.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use moka::sync::Cache;
use palisade_wire::{Category, Context, Report, WIRE_VERSION};
use tracing::{error, info, warn};

use crate::clientip::{Attribution, Unattributed};
use crate::context::{CgroupRef, ContextResolver};
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
    /// Pod UID (Downward API `POD_UID`; sidecar sources).
    pub pod_uid: Option<String>,
    /// Container name (`CONTAINER_NAME`; sidecar sources).
    pub container: Option<String>,
    /// The receiving socket's cgroup, when the capture source knows it: the pipeline's
    /// [`ContextResolver`] names the pod and container behind it.
    pub cgroup: Option<CgroupRef>,
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
    /// Fills each report's context from its origin.
    context: ContextResolver,
    seen: Cache<(IpAddr, String), ()>,
    metrics: Arc<Metrics>,
    publisher: Option<Publisher>,
    counter: AtomicU64,
    started_ns: i64,
    /// The Core Rule Set's own thread, when started ([`Pipeline::start_crs_worker`]).
    crs: OnceLock<CrsWorker>,
}

/// CRS on its own thread: requests the built-in rules passed wait in a bounded queue.
struct CrsWorker {
    queue: Mutex<Option<SyncSender<CrsJob>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A request waiting for CRS, with what its report needs.
struct CrsJob {
    peer: IpAddr,
    request: Request,
    meta: RequestMeta,
    origin: Origin,
    seen: Seen,
}

/// When a request was seen: the time its reports carry, and the instant its publish latency
/// (`palisade_sensor_publish_latency_seconds`) is measured from.
#[derive(Debug, Clone, Copy)]
struct Seen {
    observed_at: DateTime<Utc>,
    inspected: Instant,
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
        let started_ns = Utc::now().timestamp_nanos_opt().unwrap_or_default();
        Pipeline {
            detector,
            attribution,
            unattributed_logged: Mutex::new(HashMap::new()),
            warned_private_peer: AtomicBool::new(false),
            sensor_id,
            context: ContextResolver::host(),
            seen: Cache::builder()
                .max_capacity(DEDUP_CAPACITY)
                .time_to_live(window.max(Duration::from_millis(1)))
                .build(),
            metrics,
            publisher,
            counter: AtomicU64::new(0),
            started_ns,
            crs: OnceLock::new(),
        }
    }

    /// Fill reports' context with `context` (by default: the origin's values and the host
    /// name as the node).
    pub fn with_context(mut self, context: ContextResolver) -> Self {
        self.context = context;
        self
    }

    /// Runs the Core Rule Set (when loaded) on a thread of its own, fed by a queue of `queue`
    /// requests, so that CRS, at hundreds of microseconds a request, never delays the built-in
    /// rules: when the queue is full, a request is inspected by the built-in rules only and
    /// counted in `palisade_sensor_crs_shed_total`. A request the built-in rules reported is
    /// not queued. Call [`Pipeline::finish_crs`] before dropping the pipeline. Without CRS, or
    /// with `queue` 0, CRS stays inline.
    pub fn start_crs_worker(self: &Arc<Self>, queue: usize) -> Result<(), std::io::Error> {
        if queue == 0 || self.detector.crs().is_none() || self.crs.get().is_some() {
            return Ok(());
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(queue);
        let me = self.clone();
        let thread = std::thread::Builder::new()
            .name("palisade-crs".into())
            .spawn(move || me.crs_loop(rx))?;
        let _ = self.crs.set(CrsWorker {
            queue: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        });
        Ok(())
    }

    /// Closes the CRS queue and waits until the requests in it are evaluated (and reported).
    pub fn finish_crs(&self) {
        let Some(w) = self.crs.get() else { return };
        if let Ok(mut q) = w.queue.lock() {
            q.take();
        }
        let thread = w.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = thread
            && t.join().is_err()
        {
            error!("the CRS worker thread panicked");
        }
    }

    fn crs_loop(&self, rx: Receiver<CrsJob>) {
        while let Ok(job) = rx.recv() {
            let Some(verdict) = self.detector.crs_verdict(&job.request) else {
                continue;
            };
            self.metrics.crs_inspected.fetch_add(1, Ordering::Relaxed);
            if let Some(d) = self.detector.crs_detection(&verdict) {
                self.report_detections(
                    job.peer,
                    &job.request,
                    job.meta,
                    &job.origin,
                    job.seen,
                    vec![d],
                );
            }
        }
    }

    /// Queues a request for the CRS worker, or counts it as shed when the queue is full (or
    /// the worker is gone). Nothing is queued once [`Pipeline::finish_crs`] ran.
    fn queue_crs(&self, w: &CrsWorker, job: CrsJob) {
        let Ok(q) = w.queue.lock() else {
            return;
        };
        if let Some(tx) = q.as_ref()
            && tx.try_send(job).is_err()
        {
            self.metrics.crs_shed.fetch_add(1, Ordering::Relaxed);
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
        let n = self.metrics.requests_parsed.fetch_add(1, Ordering::Relaxed);
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
        // One request in INSPECT_SAMPLE is timed: a clock read costs a fair part of a whole
        // inspection on the built-in rules.
        let timed = n
            .is_multiple_of(crate::metrics::INSPECT_SAMPLE)
            .then(Instant::now);
        let crs = self.crs.get();
        let detections = if crs.is_some() {
            self.detector.inspect_builtin(request)
        } else {
            self.detector.inspect(request)
        };
        // Unless timed, the clock is read only for a request that goes on (reported or queued
        // for CRS), not for the benign majority.
        let inspected = || match timed {
            Some(start) => {
                self.metrics.timings.inspected(start.elapsed());
                start
            }
            None => Instant::now(),
        };
        if let Some(worker) = crs
            && detections.is_empty()
            && request.body_window.is_none()
        {
            let job = CrsJob {
                peer,
                request: request.clone(),
                meta,
                origin: origin.clone(),
                seen: Seen {
                    observed_at,
                    inspected: inspected(),
                },
            };
            self.queue_crs(worker, job);
            return Vec::new();
        }
        if detections.is_empty() {
            if let Some(start) = timed {
                self.metrics.timings.inspected(start.elapsed());
            }
            return Vec::new();
        }
        let seen = Seen {
            observed_at,
            inspected: inspected(),
        };
        self.report_detections(peer, request, meta, origin, seen, detections)
    }

    /// Attribution, suppression and publishing of one request's detections.
    fn report_detections(
        &self,
        peer: IpAddr,
        request: &Request,
        meta: RequestMeta,
        origin: &Origin,
        seen: Seen,
        detections: Vec<Detection>,
    ) -> Vec<Report> {
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
                .report(client_ip, peer, &detection, origin, seen.observed_at)
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
                p.submit_inspected(report.clone(), seen.inspected);
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
        let (context, outcome): (Context, _) = self.context.resolve_outcome(origin);
        if let Some(o) = outcome {
            self.metrics.context(o.label());
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::crs::{Crs, CrsSettings};
    use crate::http::{ParseLimits, Parsed, parse_request};

    /// A public address (no proxy is trusted, so the peer is the client).
    const CLIENT: &str = "81.2.69.160";

    /// Built-in rules plus a one-rule CRS tree that scores the header `X-Probe: 1` as SQLi
    /// (which the built-in rules do not see).
    fn detector() -> Detector {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join("crs-setup.conf"),
            "SecAction \"id:900000,phase:1,pass,nolog,setvar:tx.paranoia_level=1\"\n",
        )
        .expect("setup");
        std::fs::create_dir(dir.path().join("rules")).expect("rules dir");
        std::fs::write(
            dir.path().join("rules/REQUEST-942-TEST.conf"),
            "SecRule REQUEST_HEADERS:X-Probe \"@streq 1\" \"id:942999,phase:1,block,\
             setvar:'tx.anomaly_score_pl1=+5',setvar:'tx.anomaly_score=+5'\"\n",
        )
        .expect("rules");
        let crs = Crs::load(&CrsSettings::new(dir.path())).expect("CRS tree loads");
        Detector::builtin()
            .expect("built-in rules")
            .with_crs(Arc::new(crs))
    }

    fn pipeline(metrics: &Arc<Metrics>) -> Arc<Pipeline> {
        Arc::new(Pipeline::new(
            detector(),
            Attribution::default(),
            "t".into(),
            Duration::from_secs(60),
            metrics.clone(),
            None,
        ))
    }

    fn request(text: &str) -> Request {
        match parse_request(text.as_bytes(), &ParseLimits::default()) {
            Parsed::Complete { request, .. } => request,
            other => panic!("test request does not parse: {other:?}"),
        }
    }

    fn handle(p: &Pipeline, req: &Request) -> Vec<Report> {
        let peer: IpAddr = CLIENT.parse().expect("address");
        p.handle(
            peer,
            req,
            RequestMeta::WHOLE,
            &Origin::default(),
            Utc::now(),
        )
    }

    const CRS_ONLY: &str = "GET / HTTP/1.1\r\nHost: a\r\nX-Probe: 1\r\n\r\n";
    const BUILTIN: &str = "GET /?q=%3Cscript%3Ealert(1)%3C/script%3E HTTP/1.1\r\nHost: a\r\n\r\n";

    #[test]
    fn inline_crs_reports_in_the_call() {
        let metrics = Arc::new(Metrics::default());
        let p = pipeline(&metrics);
        let reports = handle(&p, &request(CRS_ONLY));
        assert_eq!(reports.len(), 1, "{reports:?}");
        assert!(
            reports[0].crs.is_some(),
            "a CRS detection carries its detail"
        );
        assert_eq!(
            metrics.crs_inspected.load(Ordering::Relaxed),
            0,
            "no worker"
        );
    }

    #[test]
    fn the_worker_reports_what_only_crs_sees_and_builtin_stays_synchronous() {
        let metrics = Arc::new(Metrics::default());
        let p = pipeline(&metrics);
        p.start_crs_worker(16).expect("worker starts");
        // the built-in rules answer in the call; such a request is not queued for CRS
        let builtin = handle(&p, &request(BUILTIN)).len() as u64;
        assert!(builtin >= 1);
        // what only CRS sees is reported by the worker, not in the call
        assert!(handle(&p, &request(CRS_ONLY)).is_empty());
        p.finish_crs();
        assert_eq!(metrics.crs_inspected.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.crs_shed.load(Ordering::Relaxed), 0);
        let detections = metrics.detections();
        assert_eq!(
            detections.values().sum::<u64>(),
            builtin + 1,
            "{detections:?}"
        );
        assert!(
            detections.keys().any(|k| k.contains("942")),
            "the CRS detection is counted: {detections:?}"
        );
        // after finishing, requests are still inspected by the built-in rules
        assert_eq!(handle(&p, &request(BUILTIN)).len(), 0, "suppressed repeat");
        assert_eq!(metrics.crs_inspected.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_full_queue_sheds_crs_and_counts_it() {
        let metrics = Arc::new(Metrics::default());
        let p = pipeline(&metrics);
        // a queue nobody drains: two requests fit, the rest are shed
        let (tx, rx) = std::sync::mpsc::sync_channel(2);
        assert!(
            p.crs
                .set(CrsWorker {
                    queue: Mutex::new(Some(tx)),
                    thread: Mutex::new(None),
                })
                .is_ok()
        );
        for _ in 0..5 {
            assert!(handle(&p, &request(CRS_ONLY)).is_empty());
        }
        assert_eq!(metrics.crs_shed.load(Ordering::Relaxed), 3);
        assert_eq!(rx.try_iter().count(), 2);
        // the built-in rules still see every request
        assert_eq!(metrics.requests_parsed.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn reports_name_the_pod_and_container_behind_the_receiving_cgroup() {
        const UID: &str = "0f5e7c3a-1b2c-4d5e-8f90-123456789abc";
        const ID: &str = "4f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join(format!("pods/shop_web-1_{UID}/app")))
            .expect("pod dir");
        let context = ContextResolver::new(Some("node-a".into()))
            .with_pod_logs(crate::context::PodLogs::new(dir.path().join("pods")));
        let metrics = Arc::new(Metrics::default());
        let p = Pipeline::new(
            Detector::builtin().expect("built-in rules"),
            Attribution::default(),
            "t".into(),
            Duration::from_secs(60),
            metrics.clone(),
            None,
        )
        .with_context(context);
        let origin = Origin {
            interface: Some("eth0".into()),
            dst_port: Some(8080),
            cgroup: Some(CgroupRef::Path(format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/\
                 crio-{ID}.scope",
                UID.replace('-', "_")
            ))),
            ..Origin::default()
        };
        let reports = p.handle(
            CLIENT.parse().expect("address"),
            &request(BUILTIN),
            RequestMeta::WHOLE,
            &origin,
            Utc::now(),
        );
        assert!(!reports.is_empty());
        let ctx = reports[0].context.clone().expect("context");
        assert_eq!(ctx.node.as_deref(), Some("node-a"));
        assert_eq!(ctx.namespace.as_deref(), Some("shop"));
        assert_eq!(ctx.pod.as_deref(), Some("web-1"));
        assert_eq!(ctx.pod_uid.as_deref(), Some(UID));
        assert_eq!(ctx.container.as_deref(), Some("app"));
        assert_eq!(ctx.container_id, Some(format!("cri-o://{ID}")));
        assert_eq!(ctx.dst_port, Some(8080));
        // and it survives the wire: what the blocker receives
        let body = reports[0].to_vec().expect("valid report");
        let back = Report::from_slice(&body).expect("parses");
        assert_eq!(back.context, Some(ctx));
        assert_eq!(
            metrics.context_by_outcome().get("pod").copied(),
            Some(reports.len() as u64),
            "each report's lookup is counted"
        );
        assert!(
            metrics
                .render(crate::metrics::Exposition::OpenMetrics)
                .contains("palisade_sensor_context_total{outcome=\"pod\"}")
        );
    }
}
