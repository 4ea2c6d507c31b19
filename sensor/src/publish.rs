//! Publishing reports to NATS JetStream.
//!
//! Reports go through a bounded buffer to one worker task that publishes them on
//! `palisade.reports.<sensor_id>` with the `Nats-Msg-Id` header set to the report id, awaiting
//! each JetStream ack (at most `max_in_flight` at once). A failed or unacknowledged publish is
//! retried with backoff; JetStream de-duplicates a report that was in fact stored. While NATS is
//! unreachable, reports wait in the buffer; when it is full, new reports are dropped and counted
//! (`buffer_drops`), never blocking the capture path.
//!
//! The sensor creates the `PALISADE_REPORTS` stream when it is missing (subjects
//! `palisade.reports.>`, file storage: the shared [`palisade_wire::nats::StreamSettings`] the
//! blocker uses, with `[nats] stream_replicas`, `stream_max_bytes` and `stream_discard`), so
//! reports are kept even when the sensor starts first. An existing stream is used as it is: a
//! replica count, size limit or discard policy that differs from the sensor's configuration is
//! logged, and left to the blocker, which manages the stream (sensors may only read its info).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use async_nats::{ConnectOptions, HeaderMap};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use palisade_wire::Report;
use palisade_wire::nats::StreamSettings;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, instrument, warn};

use crate::Error;
use crate::config::NatsConfig;
use crate::metrics::Metrics;

/// Handle to submit reports. Cloneable; the worker stops after every handle is dropped and the
/// buffer is drained.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
}

/// A report on its way to JetStream, with when its request was inspected (for
/// `palisade_sensor_publish_latency_seconds`).
#[derive(Debug)]
struct Queued {
    report: Report,
    inspected: Instant,
}

impl Publisher {
    /// Queue a report. Never waits: when the buffer is full the report is dropped and counted.
    pub fn submit(&self, report: Report) -> bool {
        self.submit_inspected(report, Instant::now())
    }

    /// Queue a report of a request inspected at `inspected`; its publish latency is measured
    /// from then to JetStream's ack.
    pub fn submit_inspected(&self, report: Report, inspected: Instant) -> bool {
        match self.tx.try_send(Queued { report, inspected }) {
            Ok(()) => true,
            Err(_) => {
                self.metrics.buffer_drops.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }
}

/// Connection options from the configuration (auth and TLS shared with the blocker).
pub async fn connect_options(config: &NatsConfig) -> Result<ConnectOptions, Error> {
    Ok(config
        .auth()
        .connect_options("palisade-sensor")
        .await
        .map_err(|e| Error::Nats(e.to_string()))?
        .retry_on_initial_connect()
        .connection_timeout(Duration::from_secs(5)))
}

/// Start the publishing worker. Returns the submit handle and the worker's task, which ends
/// once every [`Publisher`] is dropped and the buffer is drained (or `drain_timeout` passed).
#[instrument(skip(config, metrics), fields(url = %palisade_wire::nats::mask_passwords(&config.url)))]
pub async fn start(
    config: &NatsConfig,
    metrics: Arc<Metrics>,
    drain_timeout: Duration,
) -> Result<(Publisher, JoinHandle<()>), Error> {
    let opts = connect_options(config).await?;
    let servers = palisade_wire::nats::server_addrs(&config.url).map_err(Error::Nats)?;
    let client = opts.connect(servers).await.map_err(|e| {
        let url = palisade_wire::nats::mask_passwords(&config.url);
        Error::Nats(format!("connect to {url}: {e}"))
    })?;
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(config.ack_timeout_secs.max(1)))
        .build(client);
    let (tx, rx) = mpsc::channel(config.buffer);
    let worker = Worker {
        js,
        rx,
        metrics: metrics.clone(),
        max_in_flight: config.max_in_flight,
        create_stream: config.create_stream,
        stream: config.stream_settings(),
        drain_timeout,
    };
    let handle = tokio::spawn(worker.run());
    Ok((Publisher { tx, metrics }, handle))
}

/// The settings of `[nats]` the sensor configures for the stream; other drift is the
/// blocker's to report.
const SENSOR_STREAM_SETTINGS: [&str; 3] = ["replicas", "max_bytes", "discard"];

/// Log the settings of an existing stream that differ from the sensor's configuration. The
/// sensor leaves them: the blocker updates the stream (sensors may only read its info).
fn log_stream_drift(settings: &StreamSettings, actual: &jetstream::stream::Config) {
    for d in settings.drift(actual) {
        if SENSOR_STREAM_SETTINGS.contains(&d.setting) {
            warn!(
                stream = %settings.name,
                setting = d.setting,
                configured = %d.configured,
                actual = %d.actual,
                "stream setting differs from the sensor's [nats] configuration; left as it is \
                 (the blocker applies its own [nats] stream settings)"
            );
        }
    }
}

struct Worker {
    js: jetstream::Context,
    rx: mpsc::Receiver<Queued>,
    metrics: Arc<Metrics>,
    max_in_flight: usize,
    create_stream: bool,
    stream: StreamSettings,
    drain_timeout: Duration,
}

type Attempt =
    std::pin::Pin<Box<dyn std::future::Future<Output = (Queued, Result<(), String>)> + Send>>;

impl Worker {
    async fn run(mut self) {
        let mut backoff = Backoff::new();
        // Until the stream exists, reports wait in the channel. Shutdown (every handle
        // dropped) bounds the wait by the drain timeout.
        let mut stream_ready = !self.create_stream;
        let mut deadline: Option<tokio::time::Instant> = None;
        while !stream_ready {
            if self.rx.is_closed() && self.rx.is_empty() {
                // Stopping with nothing to publish.
                return;
            }
            if deadline.is_none() && self.rx.is_closed() {
                deadline = Some(tokio::time::Instant::now() + self.drain_timeout);
            }
            if deadline.is_some_and(|d| d <= tokio::time::Instant::now()) {
                self.give_up(0);
                return;
            }
            let wait = backoff.next();
            tokio::select! {
                result = self.js.get_or_create_stream(self.stream.config()) => match result {
                    Ok(stream) => {
                        log_stream_drift(&self.stream, &stream.cached_info().config);
                        stream_ready = true;
                    }
                    Err(err) => {
                        warn!(
                            cause = %format!("{err}{}", self.stream.failure_hint()),
                            "cannot ensure the JetStream stream yet; retrying"
                        );
                        tokio::time::sleep(wait).await;
                    }
                },
                _ = sleep_until(deadline) => {}
            }
        }
        backoff.reset();
        let mut in_flight: FuturesUnordered<Attempt> = FuturesUnordered::new();
        let mut retry: VecDeque<Queued> = VecDeque::new();
        let mut closed = false;
        let mut drain_deadline: Option<tokio::time::Instant> = deadline;
        let mut retry_at: Option<tokio::time::Instant> = None;
        loop {
            if closed && in_flight.is_empty() && retry.is_empty() {
                break;
            }
            if closed && drain_deadline.is_none() {
                drain_deadline = Some(tokio::time::Instant::now() + self.drain_timeout);
            }
            let retry_ready =
                !retry.is_empty() && retry_at.is_none_or(|t| t <= tokio::time::Instant::now());
            if retry_ready && in_flight.len() < self.max_in_flight {
                if let Some(report) = retry.pop_front() {
                    in_flight.push(self.attempt(report));
                }
                continue;
            }
            let can_take = !closed && retry.is_empty() && in_flight.len() < self.max_in_flight;
            tokio::select! {
                Some((queued, result)) = in_flight.next(), if !in_flight.is_empty() => {
                    match result {
                        Ok(()) => {
                            self.metrics.reports_published.fetch_add(1, Ordering::Relaxed);
                            self.metrics.timings.published(queued.inspected.elapsed());
                            backoff.reset();
                            retry_at = None;
                        }
                        Err(cause) => {
                            self.metrics.publish_failures.fetch_add(1, Ordering::Relaxed);
                            warn!(report = %queued.report.id, cause = %cause, "publish failed; will retry");
                            retry.push_back(queued);
                            retry_at = Some(tokio::time::Instant::now() + backoff.next());
                        }
                    }
                }
                msg = self.rx.recv(), if can_take => {
                    match msg {
                        Some(queued) => in_flight.push(self.attempt(queued)),
                        None => closed = true,
                    }
                }
                _ = sleep_until(retry_at), if !retry.is_empty() && in_flight.len() < self.max_in_flight => {}
                _ = sleep_until(drain_deadline), if drain_deadline.is_some() => {
                    self.give_up(retry.len() + in_flight.len());
                    break;
                }
            }
        }
        info!("publisher stopped");
    }

    /// Shutdown with NATS unreachable: count what could not be published.
    fn give_up(&mut self, held: usize) {
        let left = held + self.rx.len();
        warn!(
            reports = left,
            "giving up on unpublished reports at shutdown"
        );
        self.metrics
            .buffer_drops
            .fetch_add(left as u64, Ordering::Relaxed);
    }

    fn attempt(&self, queued: Queued) -> Attempt {
        let js = self.js.clone();
        Box::pin(async move {
            let result = publish_one(&js, &queued.report).await;
            (queued, result)
        })
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn publish_one(js: &jetstream::Context, report: &Report) -> Result<(), String> {
    let body = report.to_vec().map_err(|e| e.to_string())?;
    let mut headers = HeaderMap::new();
    headers.insert(palisade_wire::MSG_ID_HEADER, report.id.as_str());
    let ack = js
        .publish_with_headers(report.subject(), headers, body.into())
        .await
        .map_err(|e| e.to_string())?;
    let ack = ack.await.map_err(|e| e.to_string())?;
    debug!(report = %report.id, seq = ack.sequence, duplicate = ack.duplicate, "report stored");
    Ok(())
}

struct Backoff {
    current: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            current: Duration::from_millis(100),
        }
    }
    fn reset(&mut self) {
        self.current = Duration::from_millis(100);
    }
    fn next(&mut self) -> Duration {
        let d = self.current;
        self.current = (self.current * 2).min(Duration::from_secs(5));
        d
    }
}
