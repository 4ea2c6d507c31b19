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
    /// Segments on watched ports whose headers the kernel could not read.
    pub kernel_errors: AtomicU64,
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
    detections: Mutex<BTreeMap<String, u64>>,
    unattributed: Mutex<BTreeMap<&'static str, u64>>,
}

impl Metrics {
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
        let counters: [(&str, &str, &str, &AtomicU64); 17] = [
            (
                "palisade_sensor_packets_captured_total",
                "counter",
                "Segments read from the ring buffer.",
                &self.packets_captured,
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
}
