//! `GET /metrics`: every sensor metric, encoded by `prometheus-client`.
//!
//! Each scrape reads the atomics once into a registry of constant counters and gauges, the
//! labelled counters through a collector, and registers the histograms as they are. Counter
//! families are registered without `_total`: the encoder appends it to their samples, so the
//! series keep the names they always had (`palisade_sensor_requests_parsed_total`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use tracing::{error, info};

use super::Metrics;
use crate::Error;

pub use palisade_wire::exposition::Exposition;

/// A counter family with one label, read from a [`super::CounterMap`] at scrape time.
#[derive(Debug)]
struct ByLabel {
    name: &'static str,
    help: &'static str,
    label: &'static str,
    rows: Vec<(String, u64)>,
}

impl Collector for ByLabel {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut family =
            encoder.encode_descriptor(self.name, self.help, None, MetricType::Counter)?;
        for (value, n) in &self.rows {
            let labels = [(self.label, value.as_str())];
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(n, None)?;
        }
        Ok(())
    }
}

impl Metrics {
    /// Every metric, in `format`.
    pub fn render(&self, format: Exposition) -> String {
        palisade_wire::exposition::encode(&self.registry(), format, |err| {
            error!(cause = %err, "cannot encode the metrics");
        })
    }

    /// A registry of this moment's values.
    fn registry(&self) -> Registry {
        let mut r = Registry::default();
        // `register` appends a period to the help text.
        let help = |h: &str| h.trim_end_matches('.').to_owned();
        for (name, h, v) in self.counters() {
            r.register(name, help(h), ConstCounter::new(v.load(Ordering::Relaxed)));
        }
        for (name, h, v) in self.gauges() {
            r.register(name, help(h), ConstGauge::new(v.load(Ordering::Relaxed)));
        }
        r.register_collector(Box::new(ByLabel {
            name: "palisade_sensor_detections",
            help: "Detections by rule.",
            label: "rule",
            rows: self.detections().into_iter().collect(),
        }));
        r.register_collector(Box::new(ByLabel {
            name: "palisade_sensor_unattributed",
            help: "Requests with detections that were not reported because no client address \
                   could be trusted, by reason.",
            label: "reason",
            rows: self
                .unattributed_by_reason()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }));
        r.register_collector(Box::new(ByLabel {
            name: "palisade_sensor_context",
            help: "Reports whose receiving socket's cgroup was looked up, by outcome: pod (named \
                   from the kubelet's logs), pod_uid (the logs did not name it), host (not a \
                   pod's cgroup), unknown_cgroup (the id is not in the cgroup hierarchy: check \
                   --cgroup-root).",
            label: "outcome",
            rows: self
                .context_by_outcome()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
        }));
        r.register_with_unit(
            "palisade_sensor_publish_latency",
            "Time from a request's inspection (right after parsing) to JetStream's ack of its \
             report, buffering and retries included",
            Unit::Seconds,
            self.timings.publish_latency.clone(),
        );
        r.register_with_unit(
            "palisade_sensor_inspect_duration",
            format!(
                "Detection time of one request in {} (sampled; the Core Rule Set's worker thread \
                 not included)",
                super::INSPECT_SAMPLE
            ),
            Unit::Seconds,
            self.timings.inspect_duration.clone(),
        );
        r
    }

    /// The counters, named without the `_total` that the encoder appends to their samples.
    fn counters(&self) -> [(&'static str, &'static str, &AtomicU64); 42] {
        [
            (
                "palisade_sensor_packets_captured",
                "Segments read from the ring buffer.",
                &self.packets_captured,
            ),
            (
                "palisade_sensor_ring_shed",
                "Segments copied only in their first 4 KiB because the ring buffer was over half full (body bytes shed, heads kept).",
                &self.ring_shed,
            ),
            (
                "palisade_sensor_ring_drops",
                "Segments dropped by the kernel because the ring buffer was full.",
                &self.ring_drops,
            ),
            (
                "palisade_sensor_kernel_errors",
                "Segments whose headers the kernel program could not read.",
                &self.kernel_errors,
            ),
            (
                "palisade_sensor_flows_not_http",
                "Flows forgotten after their first segment under --port any: not an HTTP request.",
                &self.flows_not_http,
            ),
            (
                "palisade_sensor_segments_unproven",
                "Segments with payload from connections whose handshake the kernel did not see \
                 complete: inspected, never attributed.",
                &self.segments_unproven,
            ),
            (
                "palisade_sensor_flows_evicted",
                "Flows evicted to respect memory bounds.",
                &self.flows_evicted,
            ),
            (
                "palisade_sensor_requests_parsed",
                "HTTP requests parsed.",
                &self.requests_parsed,
            ),
            (
                "palisade_sensor_header_lines_skipped",
                "HTTP header lines skipped because servers ignore them (name not a token).",
                &self.header_lines_skipped,
            ),
            (
                "palisade_sensor_heads_truncated",
                "HTTP requests whose head was over the limit, inspected up to it.",
                &self.heads_truncated,
            ),
            (
                "palisade_sensor_crs_inspected",
                "Requests the Core Rule Set worker evaluated.",
                &self.crs_inspected,
            ),
            (
                "palisade_sensor_crs_shed",
                "Requests not given to the Core Rule Set because its queue was full (the built-in rules still inspected them).",
                &self.crs_shed,
            ),
            (
                "palisade_sensor_log_lines",
                "Access-log lines read.",
                &self.log_lines,
            ),
            (
                "palisade_sensor_log_line_errors",
                "Access-log lines that could not be parsed.",
                &self.log_line_errors,
            ),
            (
                "palisade_sensor_log_read_errors",
                "Failed reads of an access-log file (retried at the next poll; the other files go on).",
                &self.log_read_errors,
            ),
            (
                "palisade_sensor_reports_suppressed",
                "Detections not reported again within the report window.",
                &self.reports_suppressed,
            ),
            (
                "palisade_sensor_reports_published",
                "Reports acknowledged by JetStream.",
                &self.reports_published,
            ),
            (
                "palisade_sensor_publish_failures",
                "Failed publish attempts (retried).",
                &self.publish_failures,
            ),
            (
                "palisade_sensor_buffer_drops",
                "Reports dropped because the buffer was full.",
                &self.buffer_drops,
            ),
            (
                "palisade_sensor_reports_invalid",
                "Reports that failed the wire contract.",
                &self.reports_invalid,
            ),
            (
                "palisade_sensor_body_windows",
                "Later body windows inspected (beyond each request's first).",
                &self.body_windows,
            ),
            (
                "palisade_sensor_body_bytes_inspected",
                "Body bytes (de-chunked) inspected in windows.",
                &self.body_bytes_inspected,
            ),
            (
                "palisade_sensor_bodies_cut",
                "Bodies longer than max_body_inspect; the rest was skipped.",
                &self.bodies_cut,
            ),
            (
                "palisade_sensor_body_skipped_flow_budget",
                "Bodies not followed past their head's segment: per-flow budget too small.",
                &self.body_skipped_flow_budget,
            ),
            (
                "palisade_sensor_body_skipped_global_budget",
                "Bodies not followed past their head's segment: global budget spent.",
                &self.body_skipped_global_budget,
            ),
            (
                "palisade_sensor_framing_errors",
                "Requests whose body framing was broken or unknown (the flow resynchronized).",
                &self.framing_errors,
            ),
            (
                "palisade_sensor_ambiguous_framing",
                "Requests with both Transfer-Encoding chunked and Content-Length.",
                &self.ambiguous_framing,
            ),
            (
                "palisade_sensor_desyncs",
                "Flows that lost track of request boundaries (later requests out of sync).",
                &self.desyncs,
            ),
            (
                "palisade_sensor_reassembly_gaps",
                "Lost segments (holes in a flow's sequence numbers).",
                &self.reassembly_gaps,
            ),
            (
                "palisade_sensor_skip_hints",
                "Body skips of known length offered to the kernel.",
                &self.skip_hints,
            ),
            (
                "palisade_sensor_mirror_requests",
                "Mirrored requests read whole from the proxy.",
                &self.mirror_requests,
            ),
            (
                "palisade_sensor_mirror_inspected",
                "Mirrored requests run through the detector.",
                &self.mirror_inspected,
            ),
            (
                "palisade_sensor_mirror_dropped",
                "Mirrored requests dropped because the inspection queue was full.",
                &self.mirror_dropped,
            ),
            (
                "palisade_sensor_mirror_rejected_no_peer",
                "Mirrored requests without exactly one valid peer header from the proxy.",
                &self.mirror_rejected_no_peer,
            ),
            (
                "palisade_sensor_mirror_rejected_malformed",
                "Mirrored requests whose head or body framing could not be read.",
                &self.mirror_rejected_malformed,
            ),
            (
                "palisade_sensor_mirror_connections_refused",
                "Mirror connections refused (not from loopback, or over max_connections).",
                &self.mirror_connections_refused,
            ),
            (
                "palisade_sensor_proxy_connections",
                "Client connections accepted by the proxy source.",
                &self.proxy_connections,
            ),
            (
                "palisade_sensor_proxy_upstream_errors",
                "Connections to the application that failed.",
                &self.proxy_upstream_errors,
            ),
            (
                "palisade_sensor_proxy_bytes_in",
                "Bytes forwarded from clients to the application.",
                &self.proxy_bytes_in,
            ),
            (
                "palisade_sensor_proxy_bytes_out",
                "Bytes forwarded from the application to clients.",
                &self.proxy_bytes_out,
            ),
            (
                "palisade_sensor_proxy_copies_dropped",
                "Copies of client bytes not inspected because the queue was full (bytes still forwarded).",
                &self.proxy_copies_dropped,
            ),
            (
                "palisade_sensor_proxy_bytes_not_copied",
                "Client bytes forwarded without a copy: body past the inspection bound.",
                &self.proxy_bytes_not_copied,
            ),
        ]
    }

    /// The gauges.
    fn gauges(&self) -> [(&'static str, &'static str, &AtomicU64); 3] {
        [
            (
                "palisade_sensor_flows",
                "Flows tracked by reassembly.",
                &self.flows,
            ),
            (
                "palisade_sensor_reassembly_bytes",
                "Bytes buffered by reassembly.",
                &self.reassembly_bytes,
            ),
            (
                "palisade_sensor_body_inspection_bytes",
                "Bytes reserved for body inspection (kept heads and windows).",
                &self.body_bytes,
            ),
        ]
    }
}

/// Serve `GET /metrics` and `GET /readyz` on `addr` until `shutdown` resolves. `/readyz`
/// answers 200 once the source captures ([`Metrics::set_ready`]) and 503 before: the endpoint
/// comes up first, and attaching the eBPF program can take a second more, during which
/// requests go unseen.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<SocketAddr, Error> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(Error::Metrics)?;
    let local = listener.local_addr().map_err(Error::Metrics)?;
    let scraped = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move |headers: HeaderMap| {
                let m = scraped.clone();
                async move {
                    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
                    let format = Exposition::negotiate(accept);
                    (
                        [(header::CONTENT_TYPE, format.content_type())],
                        m.render(format),
                    )
                        .into_response()
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let ready = metrics.is_ready();
                async move {
                    let status = if ready {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (
                        status,
                        [(header::CONTENT_TYPE, "application/json")],
                        format!("{{\"ready\":{ready}}}\n"),
                    )
                        .into_response()
                }
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
    fn series_keep_their_names_in_both_formats() {
        let m = Metrics::default();
        m.requests_parsed.fetch_add(2, Ordering::Relaxed);
        m.ring_drops.store(7, Ordering::Relaxed);
        m.flows.store(3, Ordering::Relaxed);
        m.detection("sqli-001");
        m.unattributed("no_header");
        m.context("pod");
        m.timings.published(std::time::Duration::from_millis(3));
        m.timings.inspected(std::time::Duration::from_micros(2));
        for format in [Exposition::OpenMetrics, Exposition::Prometheus] {
            let text = m.render(format);
            for line in [
                "palisade_sensor_requests_parsed_total 2\n",
                "palisade_sensor_ring_drops_total 7\n",
                "palisade_sensor_flows 3\n",
                "palisade_sensor_detections_total{rule=\"sqli-001\"} 1\n",
                "palisade_sensor_unattributed_total{reason=\"no_header\"} 1\n",
                "palisade_sensor_context_total{outcome=\"pod\"} 1\n",
                "palisade_sensor_publish_latency_seconds_count 1\n",
                "palisade_sensor_inspect_duration_seconds_count 1\n",
                "palisade_sensor_publish_latency_seconds_bucket{le=\"0.005\"} 1\n",
            ] {
                assert!(text.contains(line), "{format:?} lacks {line:?}:\n{text}");
            }
            assert!(!text.contains(".."), "{text}");
        }
        let om = m.render(Exposition::OpenMetrics);
        assert!(om.contains("# TYPE palisade_sensor_requests_parsed counter\n"));
        assert!(om.contains("# UNIT palisade_sensor_publish_latency_seconds seconds\n"));
        assert!(om.ends_with("# EOF\n"));
        let prom = m.render(Exposition::Prometheus);
        assert!(prom.contains("# TYPE palisade_sensor_requests_parsed_total counter\n"));
        assert!(!prom.contains("# EOF"));
    }

    #[test]
    fn every_name_is_unique_and_counters_have_no_suffix() {
        let m = Metrics::default();
        let mut names: Vec<&str> = m.counters().iter().map(|c| c.0).collect();
        assert!(names.iter().all(|n| !n.ends_with("_total")));
        names.extend(m.gauges().iter().map(|g| g.0));
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
