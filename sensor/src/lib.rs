//! Palisade sensor library.
//!
//! - [`http`]: HTTP/1.x request-head parser (method, target, headers, cookies, body prefix).
//! - [`detect`]: normalization and the rule engine (rules are data, `sensor/rules/*.yaml`).
//! - [`capture`]: loads the TC ingress eBPF program and reads captured segments.
//! - [`reassembly`]: per-connection request reassembly by TCP sequence number.
//! - [`clientip`]: the client address behind trusted proxies (`X-Forwarded-For`, `Forwarded`).
//! - [`logsource`]: access-log tailing (nginx combined, JSON lines, AWS ALB).
//! - [`context`]: reports' runtime context: a sidecar's pod (Downward API), or on a node the
//!   pod and container behind a socket's cgroup (cgroup v2 path, kubelet's `/var/log/pods`).
//! - [`mirror`]: requests mirrored by the pod's proxy (nginx, Envoy) to a local port.
//! - [`proxy`]: the sensor as a streaming proxy in front of an app, inspecting a copy.
//! - [`tap`]: the bounded queue and worker that inspect what the mirror and the proxy copy.
//! - [`pipeline`]: request -> detections -> de-duplicated wire reports.
//! - [`publish`]: JetStream publishing with a bounded buffer and awaited acks.
//! - [`metrics`]: counters and the Prometheus `/metrics` endpoint.
//! - [`config`]: the configuration file.
//!
//! The binary (`src/main.rs`) only parses flags and calls [`run`].

pub mod capture;
pub mod clientip;
pub mod config;
pub mod context;
pub mod detect;
pub mod http;
pub mod logsource;
pub mod metrics;
pub mod mirror;
pub mod pipeline;
pub mod proxy;
pub mod publish;
pub mod reassembly;
mod run;
pub mod tap;

pub use run::{RunSummary, load_detector, run};

/// Everything that can go wrong in the sensor runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration is invalid.
    #[error("configuration: {0}")]
    Config(String),
    /// The rules could not be loaded.
    #[error("rules: {0}")]
    Rules(String),
    /// Loading or attaching the eBPF programs failed.
    #[error("eBPF: {message}{hint}")]
    Ebpf {
        /// What failed.
        message: String,
        /// What the operator can try (may be empty).
        hint: &'static str,
    },
    /// Connecting to NATS or setting up JetStream failed.
    #[error("NATS: {0}")]
    Nats(String),
    /// A log file could not be read.
    #[error("log source {path}: {source}")]
    Log {
        /// The file.
        path: std::path::PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The mirror or proxy source could not listen.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A source's worker task failed.
    #[error("{what} task failed: {source}")]
    Task {
        /// Which task.
        what: &'static str,
        /// Why.
        #[source]
        source: tokio::task::JoinError,
    },
    /// The metrics endpoint could not listen.
    #[error("metrics endpoint: {0}")]
    Metrics(std::io::Error),
    /// A report did not pass the wire contract.
    #[error("report: {0}")]
    Wire(#[from] palisade_wire::WireError),
}
