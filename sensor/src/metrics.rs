//! Sensor counters and the Prometheus text endpoint.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::routing::get;
use tracing::{error, info};

use crate::Error;

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
    detections: Mutex<BTreeMap<String, u64>>,
    unattributed: Mutex<BTreeMap<&'static str, u64>>,
    context: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
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
        if let Ok(mut map) = self.detections.lock() {
            *map.entry(rule.to_owned()).or_insert(0) += 1;
        }
    }

    /// Count one request whose detections were not reported because no client address could
    /// be trusted, by `reason`.
    pub fn unattributed(&self, reason: &'static str) {
        if let Ok(mut map) = self.unattributed.lock() {
            *map.entry(reason).or_insert(0) += 1;
        }
    }

    /// Count one report whose receiving cgroup was looked up, by `outcome`
    /// ([`crate::context::Outcome::label`]).
    pub fn context(&self, outcome: &'static str) {
        if let Ok(mut map) = self.context.lock() {
            *map.entry(outcome).or_insert(0) += 1;
        }
    }

    /// Reports whose receiving cgroup was looked up so far, by outcome.
    pub fn context_by_outcome(&self) -> BTreeMap<&'static str, u64> {
        self.context.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Unattributed requests so far, by reason.
    pub fn unattributed_by_reason(&self) -> BTreeMap<&'static str, u64> {
        self.unattributed
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Detections so far, by rule id.
    pub fn detections(&self) -> BTreeMap<String, u64> {
        self.detections
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Total detections.
    pub fn detections_total(&self) -> u64 {
        self.detections().values().sum()
    }

    /// The Prometheus text exposition of every counter.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &str, &str, &AtomicU64); 45] = [
            (
                "palisade_sensor_packets_captured_total",
                "counter",
                "Segments read from the ring buffer.",
                &self.packets_captured,
            ),
            (
                "palisade_sensor_ring_shed_total",
                "counter",
                "Segments copied only in their first 4 KiB because the ring buffer was over half full (body bytes shed, heads kept).",
                &self.ring_shed,
            ),
            (
                "palisade_sensor_ring_drops_total",
                "counter",
                "Segments dropped by the kernel because the ring buffer was full.",
                &self.ring_drops,
            ),
            (
                "palisade_sensor_kernel_errors_total",
                "counter",
                "Segments whose headers the kernel program could not read.",
                &self.kernel_errors,
            ),
            (
                "palisade_sensor_flows_not_http_total",
                "counter",
                "Flows forgotten after their first segment under --port any: not an HTTP request.",
                &self.flows_not_http,
            ),
            (
                "palisade_sensor_segments_unproven_total",
                "counter",
                "Segments with payload from connections whose handshake the kernel did not see \
                 complete: inspected, never attributed.",
                &self.segments_unproven,
            ),
            (
                "palisade_sensor_flows",
                "gauge",
                "Flows tracked by reassembly.",
                &self.flows,
            ),
            (
                "palisade_sensor_flows_evicted_total",
                "counter",
                "Flows evicted to respect memory bounds.",
                &self.flows_evicted,
            ),
            (
                "palisade_sensor_reassembly_bytes",
                "gauge",
                "Bytes buffered by reassembly.",
                &self.reassembly_bytes,
            ),
            (
                "palisade_sensor_requests_parsed_total",
                "counter",
                "HTTP requests parsed.",
                &self.requests_parsed,
            ),
            (
                "palisade_sensor_header_lines_skipped_total",
                "counter",
                "HTTP header lines skipped because servers ignore them (name not a token).",
                &self.header_lines_skipped,
            ),
            (
                "palisade_sensor_heads_truncated_total",
                "counter",
                "HTTP requests whose head was over the limit, inspected up to it.",
                &self.heads_truncated,
            ),
            (
                "palisade_sensor_crs_inspected_total",
                "counter",
                "Requests the Core Rule Set worker evaluated.",
                &self.crs_inspected,
            ),
            (
                "palisade_sensor_crs_shed_total",
                "counter",
                "Requests not given to the Core Rule Set because its queue was full (the built-in rules still inspected them).",
                &self.crs_shed,
            ),
            (
                "palisade_sensor_log_lines_total",
                "counter",
                "Access-log lines read.",
                &self.log_lines,
            ),
            (
                "palisade_sensor_log_line_errors_total",
                "counter",
                "Access-log lines that could not be parsed.",
                &self.log_line_errors,
            ),
            (
                "palisade_sensor_log_read_errors_total",
                "counter",
                "Failed reads of an access-log file (retried at the next poll; the other files go on).",
                &self.log_read_errors,
            ),
            (
                "palisade_sensor_reports_suppressed_total",
                "counter",
                "Detections not reported again within the report window.",
                &self.reports_suppressed,
            ),
            (
                "palisade_sensor_reports_published_total",
                "counter",
                "Reports acknowledged by JetStream.",
                &self.reports_published,
            ),
            (
                "palisade_sensor_publish_failures_total",
                "counter",
                "Failed publish attempts (retried).",
                &self.publish_failures,
            ),
            (
                "palisade_sensor_buffer_drops_total",
                "counter",
                "Reports dropped because the buffer was full.",
                &self.buffer_drops,
            ),
            (
                "palisade_sensor_reports_invalid_total",
                "counter",
                "Reports that failed the wire contract.",
                &self.reports_invalid,
            ),
            (
                "palisade_sensor_body_inspection_bytes",
                "gauge",
                "Bytes reserved for body inspection (kept heads and windows).",
                &self.body_bytes,
            ),
            (
                "palisade_sensor_body_windows_total",
                "counter",
                "Later body windows inspected (beyond each request's first).",
                &self.body_windows,
            ),
            (
                "palisade_sensor_body_bytes_inspected_total",
                "counter",
                "Body bytes (de-chunked) inspected in windows.",
                &self.body_bytes_inspected,
            ),
            (
                "palisade_sensor_bodies_cut_total",
                "counter",
                "Bodies longer than max_body_inspect; the rest was skipped.",
                &self.bodies_cut,
            ),
            (
                "palisade_sensor_body_skipped_flow_budget_total",
                "counter",
                "Bodies not followed past their head's segment: per-flow budget too small.",
                &self.body_skipped_flow_budget,
            ),
            (
                "palisade_sensor_body_skipped_global_budget_total",
                "counter",
                "Bodies not followed past their head's segment: global budget spent.",
                &self.body_skipped_global_budget,
            ),
            (
                "palisade_sensor_framing_errors_total",
                "counter",
                "Requests whose body framing was broken or unknown (the flow resynchronized).",
                &self.framing_errors,
            ),
            (
                "palisade_sensor_ambiguous_framing_total",
                "counter",
                "Requests with both Transfer-Encoding chunked and Content-Length.",
                &self.ambiguous_framing,
            ),
            (
                "palisade_sensor_desyncs_total",
                "counter",
                "Flows that lost track of request boundaries (later requests out of sync).",
                &self.desyncs,
            ),
            (
                "palisade_sensor_reassembly_gaps_total",
                "counter",
                "Lost segments (holes in a flow's sequence numbers).",
                &self.reassembly_gaps,
            ),
            (
                "palisade_sensor_skip_hints_total",
                "counter",
                "Body skips of known length offered to the kernel.",
                &self.skip_hints,
            ),
            (
                "palisade_sensor_mirror_requests_total",
                "counter",
                "Mirrored requests read whole from the proxy.",
                &self.mirror_requests,
            ),
            (
                "palisade_sensor_mirror_inspected_total",
                "counter",
                "Mirrored requests run through the detector.",
                &self.mirror_inspected,
            ),
            (
                "palisade_sensor_mirror_dropped_total",
                "counter",
                "Mirrored requests dropped because the inspection queue was full.",
                &self.mirror_dropped,
            ),
            (
                "palisade_sensor_mirror_rejected_no_peer_total",
                "counter",
                "Mirrored requests without exactly one valid peer header from the proxy.",
                &self.mirror_rejected_no_peer,
            ),
            (
                "palisade_sensor_mirror_rejected_malformed_total",
                "counter",
                "Mirrored requests whose head or body framing could not be read.",
                &self.mirror_rejected_malformed,
            ),
            (
                "palisade_sensor_mirror_connections_refused_total",
                "counter",
                "Mirror connections refused (not from loopback, or over max_connections).",
                &self.mirror_connections_refused,
            ),
            (
                "palisade_sensor_proxy_connections_total",
                "counter",
                "Client connections accepted by the proxy source.",
                &self.proxy_connections,
            ),
            (
                "palisade_sensor_proxy_upstream_errors_total",
                "counter",
                "Connections to the application that failed.",
                &self.proxy_upstream_errors,
            ),
            (
                "palisade_sensor_proxy_bytes_in_total",
                "counter",
                "Bytes forwarded from clients to the application.",
                &self.proxy_bytes_in,
            ),
            (
                "palisade_sensor_proxy_bytes_out_total",
                "counter",
                "Bytes forwarded from the application to clients.",
                &self.proxy_bytes_out,
            ),
            (
                "palisade_sensor_proxy_copies_dropped_total",
                "counter",
                "Copies of client bytes not inspected because the queue was full (bytes still forwarded).",
                &self.proxy_copies_dropped,
            ),
            (
                "palisade_sensor_proxy_bytes_not_copied_total",
                "counter",
                "Client bytes forwarded without a copy: body past the inspection bound.",
                &self.proxy_bytes_not_copied,
            ),
        ];
        for (name, kind, help, value) in counters {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} {kind}");
            let _ = writeln!(out, "{name} {}", value.load(Ordering::Relaxed));
        }
        let _ = writeln!(
            out,
            "# HELP palisade_sensor_detections_total Detections by rule."
        );
        let _ = writeln!(out, "# TYPE palisade_sensor_detections_total counter");
        for (rule, n) in self.detections() {
            let _ = writeln!(
                out,
                "palisade_sensor_detections_total{{rule=\"{}\"}} {n}",
                rule.replace('\\', "\\\\").replace('"', "\\\"")
            );
        }
        let _ = writeln!(
            out,
            "# HELP palisade_sensor_unattributed_total Requests with detections that were not reported because no client address could be trusted, by reason."
        );
        let _ = writeln!(out, "# TYPE palisade_sensor_unattributed_total counter");
        for (reason, n) in self.unattributed_by_reason() {
            let _ = writeln!(
                out,
                "palisade_sensor_unattributed_total{{reason=\"{reason}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP palisade_sensor_context_total Reports whose receiving socket's cgroup was looked up, by outcome: pod (named from the kubelet's logs), pod_uid (the logs did not name it), host (not a pod's cgroup), unknown_cgroup (the id is not in the cgroup hierarchy: check --cgroup-root)."
        );
        let _ = writeln!(out, "# TYPE palisade_sensor_context_total counter");
        for (outcome, n) in self.context_by_outcome() {
            let _ = writeln!(
                out,
                "palisade_sensor_context_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        out
    }
}

/// Serve `GET /metrics` on `addr` until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    metrics: std::sync::Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(Error::Metrics)?;
    let local = listener.local_addr().map_err(Error::Metrics)?;
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let m = metrics.clone();
            async move { m.render() }
        }),
    );
    info!(listen = %local, "metrics endpoint up");
    tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            error!(cause = %err, "metrics endpoint failed");
        }
    });
    Ok(local)
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
        let text = m.render();
        assert!(text.contains("palisade_sensor_requests_parsed_total 3\n"));
        m.header_lines_skipped.fetch_add(2, Ordering::Relaxed);
        m.heads_truncated.fetch_add(1, Ordering::Relaxed);
        let text = m.render();
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
        let text = m.render();
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
