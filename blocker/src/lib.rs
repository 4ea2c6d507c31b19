//! Palisade blocker: consumes attack reports from NATS JetStream, decides blocks (policy and
//! guardrails), persists them, and keeps a firewall in sync.
//!
//! ```text
//! JetStream pull consumer ─► Engine::process (validate ─► dedup ─► per-sensor quota ─► policy
//!   ─► guardrails ─► state: one redb transaction per batch) ─► ack
//! Reconciler (every interval): decided blocks vs firewall entries ─► one coalesced diff
//! Sweeper: expired blocks out, deferred blocks in (global cap), old offences forgotten
//! Admin HTTP: /healthz /readyz /metrics /v1/blocks
//! ```
//!
//! The binary is thin: it parses [`config::Cli`], sets up tracing and signals, and calls
//! [`run`].

pub mod admin;
pub mod config;
pub mod engine;
mod error;
pub mod guardrails;
pub mod identity;
mod loglimit;
pub mod metrics;
pub mod nats;
pub mod policy;
pub mod reconcile;
pub mod state;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use palisade_providers::Firewall;
use palisade_providers::aws::AwsFirewall;
use palisade_providers::memory::MemoryFirewall;
use tokio::sync::watch;
use tracing::{error, info};

pub use config::{Cli, Config, ProviderConfig, ProviderKind};
pub use error::{Error, Result};

/// How often the sweeper task offers deferred blocks to the new-block cap when no reports
/// arrive (the pipeline does it after every batch).
const PROMOTE_EVERY: Duration = Duration::from_secs(1);

/// Build the configured firewall. For `aws` this reads every configured IP set once (its
/// family and current fill), so a wrong ARN, missing credentials or a missing permission stop
/// the blocker at start with an error naming the set, not at the first block.
pub async fn build_firewall(config: &ProviderConfig) -> Result<Arc<dyn Firewall>> {
    match config.kind {
        ProviderKind::Memory => Ok(Arc::new(MemoryFirewall::new())),
        ProviderKind::Aws => {
            let aws = &config.aws;
            let firewall = AwsFirewall::builder()
                .with_ipset_arns(aws.ipset_arns.iter().cloned())
                .with_endpoint_url(aws.endpoint_url.clone())
                .with_dry_run(aws.dry_run)
                .with_write_rate(aws.write_rate)
                .with_read_rate(aws.read_rate)
                .build()
                .await?;
            Ok(Arc::new(firewall))
        }
    }
}

/// Run the blocker until `shutdown` resolves, then stop taking messages, finish and persist
/// the batch in hand, ack it and return. Blocks stay in the firewall (fail-static).
pub async fn run(
    config: Config,
    firewall: Arc<dyn Firewall>,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    run_with(config, firewall, shutdown, |_| {}).await
}

/// [`run`], calling `on_ready` with the admin address once NATS, the store and the admin
/// listener are up (the binary sends systemd `READY=1` from it).
pub async fn run_with(
    config: Config,
    firewall: Arc<dyn Firewall>,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    config.validate()?;
    let config = Arc::new(config);
    let metrics = Arc::new(metrics::Metrics::default());
    let engine = Arc::new(engine::Engine::open(Arc::clone(&config), metrics)?);
    let owned = {
        let store = engine.store().clone();
        tokio::task::spawn_blocking(move || store.load().map(|s| s.owned))
            .await
            .map_err(|e| Error::Io {
                what: "loading ownership".into(),
                source: std::io::Error::other(e.to_string()),
            })??
    };

    let nats_connected = Arc::new(AtomicBool::new(false));
    let client = nats::connect(&config.nats, Arc::clone(&nats_connected)).await?;
    let js = async_nats::jetstream::new(client.clone());
    let stream = nats::ensure_stream(&js, &config.nats).await?;
    let consumer = nats::ensure_consumer(&stream, &config.nats).await?;
    info!(stream = %config.nats.stream, consumer = %config.nats.consumer, "JetStream ready");

    let listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .map_err(|source| Error::Io {
            what: format!("cannot bind admin listener {}", config.admin.listen),
            source,
        })?;
    let admin_addr = listener.local_addr().map_err(|source| Error::Io {
        what: "admin listener address".into(),
        source,
    })?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    let reconcile_ok = Arc::new(AtomicBool::new(false));
    let admin_state = admin::AdminState {
        engine: Arc::clone(&engine),
        nats_connected: Arc::clone(&nats_connected),
        reconcile_ok: Arc::clone(&reconcile_ok),
        tokens: admin::Tokens::new(&config.admin),
    };
    let admin_task = {
        let rx = stop_rx.clone();
        tokio::spawn(async move {
            let res = axum::serve(listener, admin::router(admin_state))
                .with_graceful_shutdown(stopped(rx))
                .await;
            if let Err(err) = res {
                error!(cause = %err, "admin listener failed");
            }
        })
    };
    info!(addr = %admin_addr, "admin listener up");

    let mut reconciler =
        reconcile::Reconciler::new(Arc::clone(&engine), firewall, owned, reconcile_ok);
    if let Err(err) = reconciler.run_once().await {
        error!(cause = %err, "first reconcile failed; retrying in the background");
    }
    let reconcile_task = {
        let rx = stop_rx.clone();
        let interval = Duration::from_millis(config.reconcile.interval_ms);
        let backoff = Duration::from_secs(config.reconcile.backoff_max_secs);
        tokio::spawn(reconciler.run(interval, backoff, stopped(rx)))
    };
    let sweep_task = {
        let rx = stop_rx.clone();
        let engine = Arc::clone(&engine);
        let every = Duration::from_secs(config.state.sweep_interval_secs.max(1));
        tokio::spawn(async move {
            let stop = stopped(rx);
            tokio::pin!(stop);
            // Deferred blocks are promoted after every batch, and here every second when no
            // reports arrive (so a waiting block never waits for the next sweep).
            let mut last_sweep = tokio::time::Instant::now();
            loop {
                tokio::select! {
                    _ = &mut stop => break,
                    _ = tokio::time::sleep(PROMOTE_EVERY.min(every)) => {}
                }
                if last_sweep.elapsed() >= every {
                    last_sweep = tokio::time::Instant::now();
                    engine.sweep(chrono::Utc::now()).await;
                }
                engine.promote_deferred().await;
            }
        })
    };

    on_ready(admin_addr);
    info!("blocker ready");

    nats::consume(
        consumer,
        client.clone(),
        Arc::clone(&engine),
        config.nats.accepted_sensors.clone(),
        config.pipeline.batch_size,
        Duration::from_secs(config.nats.reconnect_max_secs.max(1)),
        shutdown,
    )
    .await;

    info!("shutting down");
    let _ = stop_tx.send(true);
    for (name, task) in [
        ("reconciler", reconcile_task),
        ("sweeper", sweep_task),
        ("admin", admin_task),
    ] {
        if let Err(err) = task.await {
            error!(task = name, cause = %err, "task failed");
        }
    }
    drop(client);
    info!("stopped");
    Ok(())
}
