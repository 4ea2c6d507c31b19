//! Wiring: rules, publisher, metrics endpoint, systemd notification, then the chosen source.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tracing::{info, warn};

use crate::Error;
use crate::capture::{Capture, Hook};
use crate::config::{Config, Source};
use crate::context::ContextResolver;
use crate::detect::Detector;
use crate::http::ParseLimits;
use crate::logsource::{self, LogSummary};
use crate::metrics::Metrics;
use crate::pipeline::Pipeline;
use crate::publish;
use crate::reassembly::Reassembler;
use crate::tap::{self, PeerFrom};

/// What a run did, for the one-shot log mode's summary.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RunSummary {
    /// Log-source counts (zero for the other sources).
    pub log: LogSummary,
    /// Detections by rule.
    pub detections: std::collections::BTreeMap<String, u64>,
    /// Reports acknowledged by JetStream.
    pub reports_published: u64,
    /// Reports dropped (buffer full or not published at shutdown).
    pub buffer_drops: u64,
    /// Seconds the run took.
    pub elapsed_secs: f64,
}

/// The built-in (or configured YAML) rules, plus the Core Rule Set when `[detect] crs_dir` is
/// set. Logs what CRS loading skipped.
pub fn load_detector(config: &Config) -> Result<Detector, Error> {
    let detector = match &config.rules {
        Some(dir) => Detector::from_dir(dir),
        None => Detector::builtin(),
    }
    .map_err(|e| Error::Rules(e.to_string()))?;
    let Some(settings) = config.detect.crs_settings() else {
        return Ok(detector);
    };
    let crs = crate::detect::crs::Crs::load(&settings)
        .map_err(|e| Error::Rules(format!("CRS ({}): {e}", settings.dir.display())))?;
    let r = crs.report();
    for w in &r.warnings {
        tracing::warn!(dir = %settings.dir.display(), "{w}");
    }
    tracing::info!(
        dir = %settings.dir.display(),
        paranoia = settings.paranoia,
        threshold = settings.threshold,
        rules = r.rules,
        response_rules_skipped = r.skipped_response,
        never_match = r.never_match.len(),
        "OWASP Core Rule Set loaded"
    );
    Ok(detector.with_crs(Arc::new(crs)))
}

/// How long unpublished reports may take to flush at shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Run the sensor until `shutdown` resolves (or, in one-shot log mode, the files end).
pub async fn run(
    config: Config,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<RunSummary, Error> {
    config.validate()?;
    let started = std::time::Instant::now();
    let detector = load_detector(&config)?;
    let rules = detector.rule_count();

    let source = config.effective_source();
    let context = ContextResolver::from_config(&config.context);
    // The cgroup source attaches at the hierarchy whose ids the resolver names.
    let cgroup_root = context.cgroup_root().map(std::path::Path::to_path_buf);
    if source.is_ebpf() {
        info!(
            cgroup_root = ?context.cgroup_root(),
            pod_logs_dir = %config.context.pod_logs_dir.display(),
            container_runtime = ?config.context.container_runtime,
            "runtime context: where cgroup ids resolve and pods are named"
        );
    }
    let (publisher, worker) = publish::start(&config.nats, metrics.clone(), DRAIN_TIMEOUT).await?;
    let pipeline = Arc::new(
        Pipeline::new(
            detector,
            config.attribution(),
            config.sensor_id.clone(),
            config.report_window(),
            metrics.clone(),
            Some(publisher),
        )
        .with_context(context),
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    if let Some(addr) = config.metrics_listen {
        crate::metrics::serve(addr, metrics.clone(), stopped()).await?;
    }

    let mut summary = RunSummary::default();
    // CRS on its own thread beside the capture or the inspection queue; the log source keeps
    // it inline (a backlog of lines just waits, and one-shot runs count every report)
    if source != Source::Log {
        pipeline
            .start_crs_worker(config.detect.crs_queue)
            .map_err(|e| Error::Config(format!("cannot start the CRS worker thread: {e}")))?;
    }
    match source {
        // `effective_source` never answers `Auto`; it would mean the cgroup source.
        Source::Ebpf | Source::Cgroup | Source::Auto => {
            let hook = if source != Source::Ebpf {
                Hook::Cgroup {
                    root: cgroup_root.ok_or_else(|| {
                        Error::Config(
                            "source cgroup: no cgroup2 hierarchy found in /proc/mounts; mount \
                             one, name it with --cgroup-root, or capture with TC \
                             (--source ebpf --interface ...)"
                                .to_owned(),
                        )
                    })?,
                }
            } else {
                Hook::Tc
            };
            let capture = Capture::attach(&config.ebpf, &hook)?;
            info!(
                source = source.name(),
                attached = ?capture.interfaces(),
                ports = ?config.ebpf.ports,
                capture_bytes = config.ebpf.capture_bytes,
                rules,
                sensor = %config.sensor_id,
                nats = %config.nats.url,
                "sensor started"
            );
            notify_ready(&metrics, stopped());
            let reassembler = Reassembler::new(config.reassembly.clone(), ParseLimits::default());
            capture
                .run(
                    reassembler,
                    pipeline.clone(),
                    metrics.clone(),
                    Duration::from_millis(config.ebpf.poll_ms.max(1)),
                    stopped(),
                )
                .await?;
        }
        Source::Log => {
            // open the files before saying started and ready: a line written after that is read
            let followers = logsource::open(
                &config.log.files,
                config.log.from_start,
                config.log.exit_at_eof,
            )?;
            info!(
                source = "log",
                files = ?config.log.files,
                format = ?config.log.format,
                rules,
                sensor = %config.sensor_id,
                nats = %config.nats.url,
                "sensor started"
            );
            notify_ready(&metrics, stopped());
            let stop = Arc::new(AtomicBool::new(false));
            {
                let stop = stop.clone();
                let wait = stopped();
                tokio::spawn(async move {
                    wait.await;
                    stop.store(true, Ordering::Relaxed);
                });
            }
            let log = config.log.clone();
            let p = pipeline.clone();
            let m = metrics.clone();
            summary.log = tokio::task::spawn_blocking(move || {
                logsource::run(
                    followers,
                    log.format,
                    log.exit_at_eof,
                    Duration::from_millis(log.poll_ms.max(1)),
                    &p,
                    &m,
                    &stop,
                )
            })
            .await
            .map_err(|source| Error::Task {
                what: "log source",
                source,
            })??;
        }
        Source::Mirror => {
            let listener = tap::bind(config.mirror.listen).await?;
            let (tap, worker) = tap::channel(
                config.mirror.queue,
                config.mirror.queue_bytes,
                config.reassembly.clone(),
                PeerFrom::Header(config.mirror.peer_header.trim().to_owned()),
                crate::context::downward_api(),
            );
            info!(
                source = "mirror",
                listen = %listener.local_addr().unwrap_or(config.mirror.listen),
                peer_header = %config.mirror.peer_header,
                rules,
                sensor = %config.sensor_id,
                nats = %config.nats.url,
                "sensor started"
            );
            let serve = crate::mirror::serve(
                listener,
                config.mirror.clone(),
                config.reassembly.max_body_inspect,
                tap,
                metrics.clone(),
                stopped(),
            );
            run_tapped(
                worker,
                &pipeline,
                &metrics,
                "mirror inspection",
                serve,
                stopped(),
            )
            .await?;
        }
        Source::Proxy => {
            let (Some(listen), Some(upstream)) = (config.proxy.listen, config.proxy.upstream)
            else {
                return Err(Error::Config(
                    "source proxy needs proxy.listen and proxy.upstream".to_owned(),
                ));
            };
            let listener = tap::bind(listen).await?;
            let (tap, worker) = tap::channel(
                config.proxy.queue,
                config.proxy.queue_bytes,
                config.reassembly.clone(),
                PeerFrom::Connection,
                crate::context::downward_api(),
            );
            info!(
                source = "proxy",
                listen = %listener.local_addr().unwrap_or(listen),
                upstream = %upstream,
                rules,
                sensor = %config.sensor_id,
                nats = %config.nats.url,
                "sensor started"
            );
            let serve = crate::proxy::serve(
                listener,
                upstream,
                config.proxy.max_connections,
                tap,
                metrics.clone(),
                stopped(),
            );
            run_tapped(
                worker,
                &pipeline,
                &metrics,
                "proxy inspection",
                serve,
                stopped(),
            )
            .await?;
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    // The CRS worker evaluates what is queued and lets go of its publisher handle.
    pipeline.finish_crs();
    // Dropping the last publisher handle lets the worker drain and stop.
    drop(pipeline);
    // The worker bounds its own drain; this bound only guards against a stuck client.
    match tokio::time::timeout(DRAIN_TIMEOUT + Duration::from_secs(5), worker).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) => warn!("publisher task ended abnormally"),
        Err(_) => warn!("publisher did not stop in time"),
    }
    summary.detections = metrics.detections();
    summary.reports_published = metrics.reports_published.load(Ordering::Relaxed);
    summary.buffer_drops = metrics.buffer_drops.load(Ordering::Relaxed);
    summary.elapsed_secs = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// A source that copies requests into a tap (mirror, proxy): its inspection worker drains the
/// tap on a blocking thread while `serve` runs; once `serve` returns (shutdown) and has dropped
/// its queue senders, waits until the worker has inspected what was queued.
async fn run_tapped(
    worker: tap::Worker,
    pipeline: &Arc<Pipeline>,
    metrics: &Arc<Metrics>,
    what: &'static str,
    serve: impl std::future::Future<Output = ()>,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let (pipeline, inspected) = (pipeline.clone(), metrics.clone());
    let inspect = tokio::task::spawn_blocking(move || worker.run(&pipeline, &inspected));
    notify_ready(metrics, stopped);
    serve.await;
    inspect.await.map_err(|source| Error::Task { what, source })
}

/// The source captures: `GET /readyz` says so from now on; tell systemd we are up, and keep
/// its watchdog fed while the sensor runs.
fn notify_ready(
    metrics: &Metrics,
    stopped: impl std::future::Future<Output = ()> + Send + 'static,
) {
    metrics.set_ready();
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    let mut usec = 0u64;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        let period = Duration::from_micros(usec / 2);
        tokio::spawn(async move {
            let stop = stopped;
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(period);
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tick.tick() => {
                        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]);
                    }
                }
            }
        });
    }
}
