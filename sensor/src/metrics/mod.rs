//! The sensor's metrics, served on `GET /metrics` through the `prometheus-client` crate
//! ([`exposition`]): OpenMetrics text to scrapers that ask for it (Prometheus does), the
//! Prometheus text format 0.0.4 to the others, the same series under the same names.
//!
//! The pipeline bumps its counters per request on a hot loop, so they stay plain atomics (one
//! relaxed add, no lock, no allocation) read once per scrape. Some counters are copied from
//! elsewhere rather than bumped here (the kernel program's per-CPU counters, the reassembler's
//! statistics): they are stored, and exposed as counters all the same, since their sources
//! only grow. Counters by label (rule, reason, outcome) move per detection or report, not per
//! request: a read lock and an atomic add once the label is known. The two latency
//! histograms ([`Timings`]) are `prometheus-client` histograms: one lock per observation, so
//! the per-request one is sampled ([`INSPECT_SAMPLE`]).

use std::borrow::Borrow;
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::histogram::Histogram;

pub mod exposition;

pub use exposition::{Exposition, serve};

/// Counters shared by every part of the sensor. Cheap to bump from any thread.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Segments read from the ring buffer.
    pub packets_captured: AtomicU64,
    /// Segments the kernel could not put in the ring buffer (full), summed over CPUs.
    pub ring_drops: AtomicU64,
    /// Segments of which the kernel copied only the first 4 KiB because the ring buffer was
    /// more than half full (summed over CPUs).
    pub ring_shed: AtomicU64,
    /// Segments on watched ports whose headers the kernel could not read.
    pub kernel_errors: AtomicU64,
    /// Flows the kernel forgot under `--port any` because they do not start with an HTTP
    /// request (summed over CPUs).
    pub flows_not_http: AtomicU64,
    /// Kernel: segments with payload from connections not proven (inspected, not attributed).
    pub segments_unproven: AtomicU64,
    /// Flows tracked by reassembly now (gauge).
    pub flows: AtomicU64,
    /// Flows evicted to respect memory bounds.
    pub flows_evicted: AtomicU64,
    /// Bytes buffered by reassembly now (gauge).
    pub reassembly_bytes: AtomicU64,
    /// Requests parsed (packets or log lines).
    pub requests_parsed: AtomicU64,
    /// Header lines skipped by the HTTP parser because servers ignore them (invalid names).
    pub header_lines_skipped: AtomicU64,
    /// Requests whose head was over the parser's limit (inspected up to the limit).
    pub heads_truncated: AtomicU64,
    /// Requests the Core Rule Set worker evaluated.
    pub crs_inspected: AtomicU64,
    /// Requests not given to the Core Rule Set because its queue was full (built-in rules
    /// still inspected them).
    pub crs_shed: AtomicU64,
    /// Access-log lines read.
    pub log_lines: AtomicU64,
    /// Access-log lines that could not be parsed (skipped).
    pub log_line_errors: AtomicU64,
    /// Failed reads of an access-log file (the file is retried at the next poll).
    pub log_read_errors: AtomicU64,
    /// Detections suppressed because the same client+rule was reported within the window.
    pub reports_suppressed: AtomicU64,
    /// Reports acknowledged by JetStream.
    pub reports_published: AtomicU64,
    /// Publish attempts that failed (each is retried).
    pub publish_failures: AtomicU64,
    /// Reports dropped because the buffer was full (NATS unreachable or slow).
    pub buffer_drops: AtomicU64,
    /// Reports that failed the wire contract (a bug; logged).
    pub reports_invalid: AtomicU64,
    /// Bytes reserved by reassembly for body inspection now (gauge).
    pub body_bytes: AtomicU64,
    /// Later body windows inspected (beyond each request's first).
    pub body_windows: AtomicU64,
    /// Body bytes (de-chunked) inspected in windows.
    pub body_bytes_inspected: AtomicU64,
    /// Bodies longer than `max_body_inspect` (the rest skipped by its framing).
    pub bodies_cut: AtomicU64,
    /// Bodies not followed past their head's segment: per-flow budget too small.
    pub body_skipped_flow_budget: AtomicU64,
    /// Bodies not followed past their head's segment: global budget spent.
    pub body_skipped_global_budget: AtomicU64,
    /// Requests whose body framing was broken or unknown.
    pub framing_errors: AtomicU64,
    /// Requests with both `Transfer-Encoding: chunked` and `Content-Length`.
    pub ambiguous_framing: AtomicU64,
    /// Flows that lost track of request boundaries (their later requests are out of sync).
    pub desyncs: AtomicU64,
    /// Holes in flows' sequence numbers (lost segments).
    pub reassembly_gaps: AtomicU64,
    /// Skip hints handed to the kernel side.
    pub skip_hints: AtomicU64,
    /// Mirrored requests read whole from the proxy (mirror source).
    pub mirror_requests: AtomicU64,
    /// Mirrored requests run through the detector.
    pub mirror_inspected: AtomicU64,
    /// Mirrored requests dropped because the inspection queue was full.
    pub mirror_dropped: AtomicU64,
    /// Mirrored requests rejected: the proxy's peer header missing, repeated or not an address.
    pub mirror_rejected_no_peer: AtomicU64,
    /// Mirrored requests rejected as malformed (head or framing); the connection is closed.
    pub mirror_rejected_malformed: AtomicU64,
    /// Mirror connections refused: not from loopback, or over `max_connections`.
    pub mirror_connections_refused: AtomicU64,
    /// Client connections accepted (proxy source).
    pub proxy_connections: AtomicU64,
    /// Connections to the application that failed (the client's connection is closed).
    pub proxy_upstream_errors: AtomicU64,
    /// Bytes forwarded from clients to the application.
    pub proxy_bytes_in: AtomicU64,
    /// Bytes forwarded from the application to clients.
    pub proxy_bytes_out: AtomicU64,
    /// Copies of client bytes not inspected because the inspection queue was full (the bytes
    /// were forwarded all the same).
    pub proxy_copies_dropped: AtomicU64,
    /// Client bytes forwarded without a copy because inspection needed none of them (body
    /// bytes past the inspection bound).
    pub proxy_bytes_not_copied: AtomicU64,
    /// Latency histograms.
    pub timings: Timings,
    /// Set once the source captures: the eBPF program attached, the log source's files open
    /// (every line written from then on is read), the mirror or proxy listener bound.
    /// `GET /readyz` answers 200 from then on, 503 before.
    ready: AtomicBool,
    detections: CounterMap<String>,
    unattributed: CounterMap<&'static str>,
    context: CounterMap<&'static str>,
}

/// One request in this many has its detection timed in
/// `palisade_sensor_inspect_duration_seconds`: two clock reads and a histogram update (a lock)
/// cost about as much as a tenth of a whole request's inspection on the built-in rules.
pub const INSPECT_SAMPLE: u64 = 64;

/// Bucket bounds (seconds) of `palisade_sensor_inspect_duration_seconds`: a microsecond or two
/// on the built-in rules, hundreds of microseconds when the Core Rule Set runs inline.
pub const INSPECT_BUCKETS: [f64; 14] = [
    1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 5e-2,
];

/// Bucket bounds (seconds) of `palisade_sensor_publish_latency_seconds`: a JetStream ack in a
/// millisecond or so on a healthy cluster; seconds to minutes while NATS is unreachable or
/// re-electing and the report waits in the buffer.
pub const PUBLISH_BUCKETS: [f64; 16] = [
    5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// The sensor's latency histograms.
#[derive(Debug, Clone)]
pub struct Timings {
    /// From a request's inspection (right after it was parsed) to JetStream's ack of a report
    /// of it: buffering, retries and the round trip to NATS.
    pub publish_latency: Histogram,
    /// Detection time of one request in [`INSPECT_SAMPLE`] (the rules run inline: built-in
    /// rules, and the Core Rule Set when it has no worker thread).
    pub inspect_duration: Histogram,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            publish_latency: Histogram::new(PUBLISH_BUCKETS),
            inspect_duration: Histogram::new(INSPECT_BUCKETS),
        }
    }
}

impl Timings {
    /// Observe one report's time from inspection to ack.
    pub fn published(&self, since_inspection: Duration) {
        self.publish_latency.observe(since_inspection.as_secs_f64());
    }

    /// Observe one sampled request's detection time.
    pub fn inspected(&self, took: Duration) {
        self.inspect_duration.observe(took.as_secs_f64());
    }
}

/// Counters by one label whose values appear at run time: a read lock and an atomic add for a
/// label seen before, a write lock the first time.
#[derive(Debug)]
struct CounterMap<K>(RwLock<BTreeMap<K, AtomicU64>>);

impl<K: Ord> Default for CounterMap<K> {
    fn default() -> Self {
        CounterMap(RwLock::new(BTreeMap::new()))
    }
}

impl<K: Ord + Clone> CounterMap<K> {
    fn inc<Q>(&self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized + ToOwned<Owned = K>,
    {
        if let Ok(map) = self.0.read()
            && let Some(n) = map.get(key)
        {
            n.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Ok(mut map) = self.0.write() {
            map.entry(key.to_owned())
                .or_default()
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    fn snapshot(&self) -> BTreeMap<K, u64> {
        self.0
            .read()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Metrics {
    /// The source captures from now on (see `GET /readyz`).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::Release);
    }

    /// Whether the source captures yet.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Copy the reassembler's gauges and counters (called periodically by the capture loop).
    pub fn store_reassembly(&self, r: &crate::reassembly::Reassembler) {
        let s = r.stats();
        let set = |m: &AtomicU64, v: u64| m.store(v, Ordering::Relaxed);
        set(&self.flows, r.flow_count() as u64);
        set(&self.reassembly_bytes, r.buffered_bytes() as u64);
        set(&self.body_bytes, r.body_buffered_bytes() as u64);
        set(&self.flows_evicted, s.evicted);
        set(&self.body_windows, s.body_windows);
        set(&self.body_bytes_inspected, s.body_bytes_inspected);
        set(&self.bodies_cut, s.bodies_cut);
        set(&self.body_skipped_flow_budget, s.body_skipped_flow_budget);
        set(
            &self.body_skipped_global_budget,
            s.body_skipped_global_budget,
        );
        set(&self.framing_errors, s.bad_framing);
        set(&self.ambiguous_framing, s.ambiguous_framing);
        set(&self.desyncs, s.desyncs);
        set(&self.reassembly_gaps, s.gaps);
        set(&self.skip_hints, s.skip_hints);
    }

    /// Count one detection of `rule`.
    pub fn detection(&self, rule: &str) {
        self.detections.inc(rule);
    }

    /// Count one request whose detections were not reported because no client address could
    /// be trusted, by `reason`.
    pub fn unattributed(&self, reason: &'static str) {
        self.unattributed.inc(&reason);
    }

    /// Count one report whose receiving cgroup was looked up, by `outcome`
    /// ([`crate::context::Outcome::label`]).
    pub fn context(&self, outcome: &'static str) {
        self.context.inc(&outcome);
    }

    /// Reports whose receiving cgroup was looked up so far, by outcome.
    pub fn context_by_outcome(&self) -> BTreeMap<&'static str, u64> {
        self.context.snapshot()
    }

    /// Unattributed requests so far, by reason.
    pub fn unattributed_by_reason(&self) -> BTreeMap<&'static str, u64> {
        self.unattributed.snapshot()
    }

    /// Detections so far, by rule id.
    pub fn detections(&self) -> BTreeMap<String, u64> {
        self.detections.snapshot()
    }

    /// Total detections.
    pub fn detections_total(&self) -> u64 {
        self.detections().values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_every_counter_and_rules() {
        let m = Metrics::default();
        m.requests_parsed.fetch_add(3, Ordering::Relaxed);
        m.detection("sqli-001");
        m.detection("sqli-001");
        let text = m.render(Exposition::OpenMetrics);
        assert!(text.contains("palisade_sensor_requests_parsed_total 3\n"));
        m.header_lines_skipped.fetch_add(2, Ordering::Relaxed);
        m.heads_truncated.fetch_add(1, Ordering::Relaxed);
        let text = m.render(Exposition::OpenMetrics);
        assert!(text.contains("palisade_sensor_header_lines_skipped_total 2\n"));
        assert!(text.contains("palisade_sensor_heads_truncated_total 1\n"));
        assert!(text.contains("palisade_sensor_detections_total{rule=\"sqli-001\"} 2\n"));
        assert!(text.contains("palisade_sensor_buffer_drops_total 0\n"));
        assert_eq!(m.detections_total(), 2);
    }

    #[test]
    fn reassembly_body_counters_are_surfaced() {
        use crate::config::ReassemblyConfig;
        use crate::http::ParseLimits;
        use crate::reassembly::{FlowKey, Reassembler, Segment};
        let mut r = Reassembler::new(ReassemblyConfig::default(), ParseLimits::default());
        let key = FlowKey {
            src: "192.0.2.1".parse().unwrap(),
            src_port: 1,
            dst: "192.0.2.2".parse().unwrap(),
            dst_port: 80,
        };
        let data =
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc";
        r.push(
            key,
            Segment {
                seq: 1,
                len: data.len() as u32,
                data,
                end: false,
                now_ns: 0,
                established: true,
                stream_start: Some(1),
            },
            |_, _, _| {},
        );
        let m = Metrics::default();
        m.store_reassembly(&r);
        let text = m.render(Exposition::OpenMetrics);
        assert!(text.contains("palisade_sensor_flows 1\n"), "{text}");
        assert!(text.contains("palisade_sensor_ambiguous_framing_total 1\n"));
        assert!(text.contains("palisade_sensor_body_bytes_inspected_total 3\n"));
        assert_eq!(
            m.body_bytes.load(Ordering::Relaxed),
            r.body_buffered_bytes() as u64
        );
        assert!(r.body_buffered_bytes() > 0);
    }
}
