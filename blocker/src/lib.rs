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
pub mod falco;
pub mod guardrails;
mod hash;
pub mod identity;
pub mod lease;
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
use tracing::{error, info, warn};

pub use config::{Cli, Config, ProviderConfig, ProviderKind, StateBackend};
pub use error::{Error, Result};
use state::Store;
use state::jetstream::{BucketSettings, KvStore};

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
                .with_refresh(aws.refresh())
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

/// A blocker running on a task of its own (see [`spawn`]).
#[derive(Debug)]
pub struct Spawned {
    /// Where its admin API listens.
    pub admin: SocketAddr,
    /// Sending (or dropping) it stops the blocker as [`run`]'s `shutdown` does.
    pub stop: tokio::sync::oneshot::Sender<()>,
    /// The run: what [`run_with`] returned.
    pub task: tokio::task::JoinHandle<Result<()>>,
}

/// [`run_with`] on a task of the current tokio runtime, returned once its admin listener is up
/// (for embedding the blocker in another program, and for tests). An error is the one the run
/// stopped with before it was ready.
pub async fn spawn(config: Config, firewall: Arc<dyn Firewall>) -> Result<Spawned> {
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(run_with(
        config,
        firewall,
        async {
            let _ = stop_rx.await;
        },
        move |addr| {
            let _ = ready_tx.send(addr);
        },
    ));
    match ready_rx.await {
        Ok(admin) => Ok(Spawned { admin, stop, task }),
        Err(_) => match task.await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => Err(Error::Stopped),
            Err(join) => Err(Error::Task(join)),
        },
    }
}

/// How long `migrate-state` waits for NATS.
const MIGRATE_CONNECT_WAIT: Duration = Duration::from_secs(20);

/// Copy the embedded backend's state in `from` (a directory holding `blocker.redb`) into the
/// `nats` backend's bucket of `config` (`palisade-blocker migrate-state`): see
/// [`state::migrate`]. Stop the old blocker first; start the replicas after.
pub async fn migrate_state(
    config: &Config,
    from: &std::path::Path,
) -> Result<state::migrate::Migrated> {
    state::migrate::check_source(from)?;
    // A one-off command: give up on an unreachable server instead of retrying for ever.
    let connected = Arc::new(AtomicBool::new(false));
    let client = nats::connect(&config.nats, Arc::clone(&connected)).await?;
    let deadline = tokio::time::Instant::now() + MIGRATE_CONNECT_WAIT;
    while !connected.load(std::sync::atomic::Ordering::Relaxed) {
        if tokio::time::Instant::now() > deadline {
            return Err(Error::NatsUnreachable {
                url: config.nats.url.clone(),
                waited: MIGRATE_CONNECT_WAIT,
            });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let js = async_nats::jetstream::new(client.clone());
    let settings = BucketSettings::of(&config.state);
    let lease_time = Duration::from_secs(config.state.lease_secs);
    let migrated = state::migrate::embedded_to_nats(from, &js, &settings, lease_time).await;
    // Every write was acknowledged; flush the release of the lease before leaving.
    let _ = client.flush().await;
    migrated
}

/// [`run`], calling `on_ready` with the admin address once NATS, the store and the admin
/// listener are up (the binary sends systemd `READY=1` from it).
///
/// With the embedded backend this replica decides from the start. With the `nats` backend it
/// stands by (answering the admin API from the state bucket) until it takes the lease, decides
/// while it holds it, and stands by again if it loses it.
pub async fn run_with(
    config: Config,
    firewall: Arc<dyn Firewall>,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(SocketAddr),
) -> Result<()> {
    config.validate()?;
    let config = Arc::new(config);
    let metrics = Arc::new(metrics::Metrics::default());
    // Every call the provider makes to its API from now on, each retry included.
    firewall.observe_calls(Arc::new(metrics.provider.clone()));

    let nats_connected = Arc::new(AtomicBool::new(false));
    let client = nats::connect(&config.nats, Arc::clone(&nats_connected)).await?;
    let js = async_nats::jetstream::new(client.clone());
    let stream = with_retries("stream", || nats::ensure_stream(&js, &config.nats)).await?;
    let consumer =
        with_retries("consumer", || nats::ensure_consumer(&stream, &config.nats)).await?;
    info!(stream = %config.nats.stream, consumer = %config.nats.consumer, "JetStream ready");

    let kv = match config.state.backend {
        StateBackend::Embedded => None,
        StateBackend::Nats => {
            let settings = BucketSettings::of(&config.state);
            Some(with_retries("state bucket", || KvStore::open(&js, &settings)).await?)
        }
    };
    // The embedded store is opened before anything listens: a locked or corrupt file stops
    // the blocker at start.
    let embedded = match kv {
        None => Some(Arc::new(engine::Engine::open(
            Arc::clone(&config),
            Arc::clone(&metrics),
        )?)),
        Some(_) => None,
    };

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
    let (leader_tx, leader_rx) = watch::channel(embedded.clone());
    let reconcile_ok = Arc::new(AtomicBool::new(false));
    let subject = admin::command_subject(&config.state.bucket);
    let admin_state = admin::AdminState {
        leader: leader_rx,
        cluster: kv.as_ref().map(|store| admin::Cluster {
            store: store.clone(),
            client: client.clone(),
            subject: subject.clone(),
            history_scope: (
                config.guardrails.max_prefix_v4_len,
                config.guardrails.max_prefix_v6_len,
            ),
        }),
        metrics: Arc::clone(&metrics),
        nats_connected: Arc::clone(&nats_connected),
        reconcile_ok: Arc::clone(&reconcile_ok),
        tokens: admin::Tokens::new(&config.admin)?,
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
    // Every replica takes Falco events (one queue group): they become reports on the stream,
    // which only the lease holder decides.
    let falco_task = config.falco.enabled.then(|| {
        tokio::spawn(falco::bridge(
            client.clone(),
            js.clone(),
            Arc::new(config.falco.clone()),
            Arc::clone(&metrics),
            stopped(stop_rx.clone()),
        ))
    });
    on_ready(admin_addr);

    let term = Term {
        config: &config,
        firewall: &firewall,
        client: &client,
        consumer: &consumer,
        stream: &stream,
        reconcile_ok: &reconcile_ok,
    };
    tokio::pin!(shutdown);
    match (embedded, kv) {
        (Some(engine), _) => {
            metrics
                .leader
                .store(1, std::sync::atomic::Ordering::Relaxed);
            let owned = engine.store().load().await?.owned;
            info!("blocker ready");
            term.lead(engine, owned, None, &mut shutdown).await;
        }
        (None, Some(kv)) => {
            let replica = config.state.replica_id.clone().unwrap_or_else(hostname);
            let incarnation = incarnation();
            let ttl = Duration::from_secs(config.state.lease_secs);
            info!(%replica, bucket = %kv.bucket(), lease_secs = ttl.as_secs(), "blocker ready; standing by for the lease");
            loop {
                if !lease::campaign(&kv, &replica, &incarnation, ttl, &mut shutdown).await? {
                    break;
                }
                // Renewed from this moment: loading the state and the first reconcile can take
                // longer than the lease.
                let (lost_tx, lost_rx) = watch::channel(false);
                let keeper = tokio::spawn({
                    let kv = kv.clone();
                    async move {
                        lease::keep(&kv, ttl).await;
                        let _ = lost_tx.send(true);
                    }
                });
                let snap = match kv.load().await {
                    Ok(snap) => snap,
                    Err(err) => {
                        // Without the state this replica cannot decide: give the lease back
                        // (a standby, or this one, takes it again) instead of exiting.
                        error!(cause = %err, "cannot read the state after taking the lease; releasing it");
                        keeper.abort();
                        if let Err(err) = kv.release().await {
                            warn!(cause = %err, "could not release the lease");
                        }
                        kv.step_down().await;
                        tokio::select! {
                            _ = shutdown.as_mut() => break,
                            _ = tokio::time::sleep(ttl) => continue,
                        }
                    }
                };
                metrics
                    .leader
                    .store(1, std::sync::atomic::Ordering::Relaxed);
                metrics
                    .leader_changes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let owned = snap.owned.clone();
                let engine = Arc::new(engine::Engine::with_store(
                    Arc::clone(&config),
                    Arc::clone(&metrics),
                    Store::Nats(kv.clone()),
                    snap,
                ));
                let _ = leader_tx.send(Some(Arc::clone(&engine)));
                info!(%replica, "this replica now decides and writes the firewall");
                let serve = tokio::spawn({
                    let rx = stop_rx.clone();
                    let (engine, client, subject) =
                        (Arc::clone(&engine), client.clone(), subject.clone());
                    async move { admin::serve_commands(engine, client, subject, stopped(rx)).await }
                });
                let ended = term.lead(engine, owned, Some(lost_rx), &mut shutdown).await;
                keeper.abort();
                serve.abort();
                let _ = leader_tx.send(None);
                metrics
                    .leader
                    .store(0, std::sync::atomic::Ordering::Relaxed);
                match ended {
                    Ended::Shutdown => {
                        if let Err(err) = kv.release().await {
                            warn!(cause = %err, "could not release the lease; a standby takes it when it expires");
                        } else {
                            info!("lease released");
                        }
                        break;
                    }
                    Ended::LeaseLost => {
                        kv.step_down().await;
                        warn!(%replica, "lease lost; standing by");
                    }
                }
            }
        }
        (None, None) => unreachable!("one backend is always chosen"),
    }

    info!("shutting down");
    let _ = stop_tx.send(true);
    if let Err(err) = admin_task.await {
        error!(task = "admin", cause = %err, "task failed");
    }
    if let Some(task) = falco_task
        && let Err(err) = task.await
    {
        error!(task = "falco", cause = %err, "task failed");
    }
    drop(client);
    info!("stopped");
    Ok(())
}

/// Attempts at a JetStream set-up call at start before giving up (backoff 0.5 s doubling to
/// 8 s: about 40 s in all). A NATS cluster that is still electing its leaders, or a stream
/// whose replicas are being placed, answers with timeouts for a while.
const SETUP_ATTEMPTS: u32 = 7;

async fn with_retries<T, F, Fut>(what: &'static str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(500);
    let mut attempt = 1;
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            // Only JetStream answers (timeouts, no leader yet) are worth another try; a
            // configuration problem is reported at once.
            Err(err @ Error::JetStream { .. }) if attempt < SETUP_ATTEMPTS => {
                warn!(cause = %err, attempt, retry_in_ms = delay.as_millis() as u64, "JetStream {what} not ready; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}

async fn stopped(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// This process among all that ran as the replica: process id and start time.
fn incarnation() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}-{nanos:x}", std::process::id())
}

/// The host name (the default replica id).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "blocker".to_owned())
}

/// Why a term of deciding ended.
enum Ended {
    Shutdown,
    LeaseLost,
}

/// What every term of deciding uses.
struct Term<'a> {
    config: &'a Arc<Config>,
    firewall: &'a Arc<dyn Firewall>,
    client: &'a async_nats::Client,
    consumer: &'a async_nats::jetstream::consumer::PullConsumer,
    stream: &'a async_nats::jetstream::stream::Stream,
    reconcile_ok: &'a Arc<AtomicBool>,
}

impl Term<'_> {
    /// Decide: consume reports, reconcile, sweep until shutdown or, with the `nats` backend,
    /// until `lease` says the lease is lost (its keeper runs from the moment it was taken).
    async fn lead(
        &self,
        engine: Arc<engine::Engine>,
        owned: std::collections::BTreeSet<ipnet::IpNet>,
        lease: Option<watch::Receiver<bool>>,
        shutdown: &mut std::pin::Pin<&mut impl Future<Output = ()>>,
    ) -> Ended {
        let config = self.config;
        let (stop_tx, stop_rx) = watch::channel(false);
        // Another replica may have written the firewall since this one last looked.
        self.firewall.forget_cached();
        self.reconcile_ok
            .store(false, std::sync::atomic::Ordering::Relaxed);
        let mut reconciler = reconcile::Reconciler::new(
            Arc::clone(&engine),
            Arc::clone(self.firewall),
            owned,
            Arc::clone(self.reconcile_ok),
        );
        if let Err(err) = reconciler.run_once().await {
            error!(cause = %err, "first reconcile failed; retrying in the background");
        }
        let reconcile_task = {
            let interval = Duration::from_millis(config.reconcile.interval_ms);
            let backoff = Duration::from_secs(config.reconcile.backoff_max_secs);
            tokio::spawn(reconciler.run(interval, backoff, stopped(stop_rx.clone())))
        };
        let sweep_task = {
            let rx = stop_rx.clone();
            let engine = Arc::clone(&engine);
            let every = Duration::from_secs(config.state.sweep_interval_secs.max(1));
            tokio::spawn(async move {
                let stop = stopped(rx);
                tokio::pin!(stop);
                // Deferred blocks are promoted after every batch, and here every second when
                // no reports arrive (so a waiting block never waits for the next sweep).
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

        let mut shut = false;
        let lost = |rx: Option<watch::Receiver<bool>>| async move {
            match rx {
                Some(rx) => stopped(rx).await,
                None => std::future::pending().await,
            }
        };
        let renew = lost(lease.clone());
        {
            let lost_too = lost(lease);
            let stop = async {
                tokio::select! {
                    _ = shutdown.as_mut() => shut = true,
                    _ = lost_too => {}
                }
            };
            let consume = nats::consume(
                self.consumer.clone(),
                self.stream,
                config,
                self.client.clone(),
                Arc::clone(&engine),
                stop,
            );
            tokio::pin!(renew);
            tokio::pin!(consume);
            tokio::select! {
                _ = &mut consume => {}
                _ = &mut renew => {
                    // The lease is gone: stop consuming (what is in hand is not acked: its
                    // commit is refused) and let the next holder redeliver it.
                    consume.await;
                }
            }
        }
        let _ = stop_tx.send(true);
        for (name, task) in [("reconciler", reconcile_task), ("sweeper", sweep_task)] {
            if let Err(err) = task.await {
                error!(task = name, cause = %err, "task failed");
            }
        }
        if shut {
            Ended::Shutdown
        } else {
            Ended::LeaseLost
        }
    }
}
