//! The decision engine: validate -> dedup -> per-sensor quota -> policy -> guardrails -> state.
//!
//! [`Engine::process`] takes a batch of raw messages, decides, commits every resulting state
//! change in one store transaction and only then returns the per-message dispositions (the
//! caller acks after that). The engine knows nothing about NATS, so tests and the benchmark
//! drive it directly too.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use chrono::{DateTime, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use ipnet::IpNet;
use moka::sync::Cache;
use palisade_wire::{Report, Severity, sensor_from_subject};
use tokio::sync::{Mutex, mpsc, oneshot};
use tracing::{error, info, instrument, warn};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::guardrails::{Guardrails, client_net};
use crate::hash::FastHash;
use crate::loglimit::LogLimiter;
use crate::metrics::Metrics;
use crate::policy::{Policy, sensor_hash};
use crate::state::embedded::EmbeddedStore;
use crate::state::history::{HistoryEntry, HistoryEvent, HistoryKey, HistoryPrune, HistoryQuery};
use crate::state::{Batch, BlockRecord, MAX_BLOCK_SENSORS, Offence, Reason, Snapshot, Store};

/// What to tell JetStream about one message, once the batch is durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Processed (counted, deduplicated, rate-limited, refused or blocked): ack.
    Ack,
    /// Malformed: terminate, so it is never redelivered.
    Reject(&'static str),
}

/// One message to process.
#[derive(Debug, Clone)]
pub struct Incoming {
    /// The NATS subject (`palisade.reports.<sensor>`).
    pub subject: String,
    /// The body.
    pub payload: bytes::Bytes,
}

/// Decided blocks and offence history, mirrored from the store, with the new-block cap and
/// the deferred queue (both guarded by the state lock).
#[derive(Debug)]
pub struct BlockState {
    /// Active (and deferred) blocks.
    pub blocks: HashMap<IpNet, BlockRecord>,
    /// Offence history, kept after blocks end.
    pub offences: HashMap<IpNet, Offence>,
    /// Deferred blocks, one FIFO per deciding sensor, served in turn.
    queue: DeferredQueue,
    /// The global cap on new blocks (`guardrails.max_new_blocks_per_minute`).
    cap: TokenBucket,
    /// Clients whose counted reports are persisted (`nats` backend), with their last report:
    /// forgotten in the store once blocked or once their window has passed.
    pending_keys: HashMap<IpNet, DateTime<Utc>>,
    /// Every history entry (id, network, time), oldest first: what pruning needs.
    history: VecDeque<HistoryKey>,
    /// The id of the last history entry.
    history_last_id: u64,
}

impl BlockState {
    /// Insert or replace a block.
    fn put(&mut self, rec: BlockRecord) {
        let was_deferred = self.blocks.get(&rec.cidr).is_some_and(|b| b.deferred);
        match (was_deferred, rec.deferred) {
            (false, true) => self.queue.push(rec.decided_by(), rec.cidr),
            (true, false) => self.queue.forget(rec.decided_by()),
            _ => {}
        }
        self.blocks.insert(rec.cidr, rec);
    }

    /// Remove a block.
    fn take(&mut self, net: &IpNet) -> Option<BlockRecord> {
        let old = self.blocks.remove(net);
        if let Some(b) = old.as_ref().filter(|b| b.deferred) {
            self.queue.forget(b.decided_by());
        }
        old
    }

    /// Deferred blocks in the state.
    pub fn deferred(&self) -> usize {
        self.queue.len
    }

    /// Deferred blocks decided on `sensor`'s reports.
    pub fn deferred_of(&self, sensor: &str) -> usize {
        self.queue.count.get(sensor).copied().unwrap_or(0)
    }

    /// Take the next deferred block to enforce: sensors in turn, each its oldest first.
    fn next_deferred(&mut self) -> Option<BlockRecord> {
        while let Some(sensor) = self.queue.ring.pop_front() {
            let Some(fifo) = self.queue.fifos.get_mut(&sensor) else {
                continue;
            };
            // Entries of blocks released or replaced meanwhile are skipped (lazy deletion).
            let mut found = None;
            while let Some(net) = fifo.pop_front() {
                if let Some(b) = self.blocks.get(&net).filter(|b| b.deferred) {
                    found = Some(b.clone());
                    break;
                }
            }
            let more = !fifo.is_empty();
            if more {
                self.queue.ring.push_back(sensor);
            } else {
                self.queue.fifos.remove(&sensor);
            }
            if found.is_some() {
                return found;
            }
        }
        None
    }
}

/// The deferred queue: per sensor, the CIDRs of its deferred blocks in decision order; the ring
/// of sensors with something queued is served one block per sensor per turn (round robin), so
/// a sensor that floods waits behind its own blocks, not in front of everyone else's.
#[derive(Debug, Default)]
struct DeferredQueue {
    fifos: HashMap<String, VecDeque<IpNet>>,
    ring: VecDeque<String>,
    /// Deferred blocks per deciding sensor (exact; the FIFOs may hold stale entries).
    count: HashMap<String, usize>,
    /// Deferred blocks in all.
    len: usize,
}

impl DeferredQueue {
    fn push(&mut self, sensor: &str, net: IpNet) {
        match self.fifos.get_mut(sensor) {
            Some(fifo) => fifo.push_back(net),
            None => {
                self.fifos.insert(sensor.to_owned(), VecDeque::from([net]));
                self.ring.push_back(sensor.to_owned());
            }
        }
        *self.count.entry(sensor.to_owned()).or_default() += 1;
        self.len += 1;
    }

    /// One of `sensor`'s deferred blocks stopped being deferred (its FIFO entry is skipped
    /// later; dropped with the FIFO when the sensor has none left).
    fn forget(&mut self, sensor: &str) {
        self.len = self.len.saturating_sub(1);
        if let Some(c) = self.count.get_mut(sensor) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.count.remove(sensor);
                self.fifos.remove(sensor);
                self.ring.retain(|s| s != sensor);
            }
        }
    }
}

/// A token bucket on Tokio's clock (so tests can pause time): `capacity` tokens, refilled at
/// `capacity` per minute.
#[derive(Debug)]
struct TokenBucket {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: tokio::time::Instant,
}

impl TokenBucket {
    fn per_minute(n: u32) -> TokenBucket {
        let capacity = f64::from(n.max(1));
        TokenBucket {
            capacity,
            per_sec: capacity / 60.0,
            tokens: capacity,
            last: tokio::time::Instant::now(),
        }
    }

    fn try_take(&mut self, now: tokio::time::Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now.max(self.last);
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        // Refills are summed in floating point: allow for rounding below a whole token.
        if self.tokens >= 1.0 - 1e-9 {
            self.tokens = (self.tokens - 1.0).max(0.0);
            true
        } else {
            false
        }
    }
}

/// Sizes of the engine's in-memory maps ([`Engine::sizes`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Block records (enforced and deferred).
    pub blocks: usize,
    /// Deferred blocks.
    pub deferred: usize,
    /// Sensors with a deferred-queue FIFO.
    pub deferred_sensors: usize,
    /// Entries of those FIFOs (live and not yet skipped).
    pub deferred_fifo_entries: usize,
    /// Offence records.
    pub offences: usize,
    /// Sensor keys of the per-sensor quota.
    pub sensor_keys: usize,
    /// Clients counted by the policy, not blocked.
    pub tracked_clients: u64,
}

/// Key of the dedup cache: a 64-bit hash of (client, rule, sensor), seeded per process. A
/// collision (odds 2^-64 per pair) would count one report as a duplicate of another; no
/// allocation per report.
type DedupKey = u64;

/// The decision engine. Shared (`Arc`) by the consumer, the reconciler, the sweeper and the
/// admin API.
#[derive(Debug)]
pub struct Engine {
    config: Arc<Config>,
    policy: Policy,
    guardrails: Guardrails,
    dedup: Cache<DedupKey, (), FastHash>,
    dedup_hasher: FastHash,
    /// Per-sensor quota. Behind a lock only so that it can be replaced when a flood of distinct
    /// sensor ids outgrows [`MAX_SENSOR_KEYS`] (checks take the read side).
    sensors: std::sync::RwLock<DefaultKeyedRateLimiter<u64>>,
    store: Store,
    state: Mutex<BlockState>,
    metrics: Arc<Metrics>,
    manual_seq: std::sync::atomic::AtomicU64,
    committer: mpsc::UnboundedSender<(Batch, oneshot::Sender<()>)>,
    /// The committer task (it holds a handle on the store): [`Engine::close`] waits for it.
    committer_task: Option<tokio::task::JoinHandle<()>>,
    log_limit: LogLimiter,
    /// Persist the counted reports of clients not yet blocked (the `nats` backend: a replica
    /// that takes over counts on from them).
    persist_pending: bool,
}

/// Per-sensor problems (rejected reports, guardrail refusals) are logged at most once per key
/// per this interval; the metrics count every one.
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// How long a reader waits for the commit of what it read before it reports the store stalled.
pub const COMMIT_WAIT: Duration = Duration::from_secs(10);

/// Resolves when a submitted batch is durable.
#[derive(Debug)]
pub struct Durable(oneshot::Receiver<()>);

impl Durable {
    fn ready() -> Durable {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(());
        Durable(rx)
    }

    /// Wait until durable. Returns `false` if the committer stopped first (then the change
    /// may not be durable and the caller must not ack).
    pub async fn wait(self) -> bool {
        self.0.await.is_ok()
    }

    /// Wait until durable. `Err` when the committer stopped first (the lease of the `nats`
    /// backend was lost): the change is not durable and must not be reported done.
    pub async fn done(self) -> Result<()> {
        if self.wait().await {
            Ok(())
        } else {
            Err(Error::committer_stopped())
        }
    }

    /// Wait until durable, at most [`COMMIT_WAIT`]: for readers (admin API, reconciler) that
    /// must report a stalled store instead of hanging with it.
    pub async fn wait_bounded(self) -> Result<()> {
        match tokio::time::timeout(COMMIT_WAIT, self.done()).await {
            Ok(done) => done,
            Err(_) => Err(Error::Io {
                what: "store committer".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "no commit within {} s (is the disk failing?)",
                        COMMIT_WAIT.as_secs()
                    ),
                ),
            }),
        }
    }
}

/// The committer: takes every queued batch, commits them in order in one transaction
/// (retrying with backoff until it succeeds: a decided block is never dropped and nothing is
/// acked before it is durable; store failures are disk failures, so the pipeline stalls and
/// JetStream keeps the messages until they clear), then tells the waiters.
async fn committer(
    store: Store,
    metrics: Arc<Metrics>,
    mut rx: mpsc::UnboundedReceiver<(Batch, oneshot::Sender<()>)>,
) {
    let mut items = Vec::new();
    while rx.recv_many(&mut items, 256).await > 0 {
        let (batches, waiters): (Vec<Batch>, Vec<oneshot::Sender<()>>) = items.drain(..).unzip();
        let batches = Arc::new(batches);
        let mut delay = Duration::from_millis(100);
        loop {
            match store.commit_all(Arc::clone(&batches)).await {
                Ok(()) => {
                    metrics.batches_committed.fetch_add(1, Relaxed);
                    metrics.store_failing.store(false, Relaxed);
                    break;
                }
                // The lease is gone: nothing of this term may be written or acked any more.
                // Dropping the waiters tells them so; the replica steps down.
                Err(err @ (Error::Fenced(_) | Error::NotLeader)) => {
                    metrics.store_failing.store(true, Relaxed);
                    error!(cause = %err, "state not written: this replica no longer decides");
                    return;
                }
                Err(err) => {
                    metrics.store_errors.fetch_add(1, Relaxed);
                    metrics.store_failing.store(true, Relaxed);
                    error!(cause = %err, retry_in_ms = delay.as_millis() as u64, "store commit failed");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        for w in waiters {
            let _ = w.send(());
        }
    }
}

fn nz(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// `now + d`, saturating at the latest representable time instead of panicking.
fn after(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now.checked_add_signed(chrono_dur(d))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// `now - d`, saturating at the earliest representable time instead of panicking.
fn before(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now.checked_sub_signed(chrono_dur(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// The in-memory state from a snapshot: the deferred queue rebuilt in decision order.
fn restore(
    blocks: HashMap<IpNet, BlockRecord>,
    offences: HashMap<IpNet, Offence>,
    history: Vec<HistoryKey>,
    cap_per_minute: u32,
) -> BlockState {
    let mut deferred: Vec<BlockRecord> = blocks.values().filter(|b| b.deferred).cloned().collect();
    deferred.sort_by(|a, b| a.first_seen.cmp(&b.first_seen).then(a.cidr.cmp(&b.cidr)));
    let mut state = BlockState {
        blocks: blocks.into_iter().filter(|(_, b)| !b.deferred).collect(),
        offences,
        queue: DeferredQueue::default(),
        cap: TokenBucket::per_minute(cap_per_minute),
        pending_keys: HashMap::new(),
        history_last_id: history.last().map_or(0, |k| k.id),
        history: history.into(),
    };
    for b in deferred {
        state.put(b);
    }
    state
}

fn sensor_quota(p: &crate::config::PipelineConfig) -> DefaultKeyedRateLimiter<u64> {
    RateLimiter::keyed(Quota::per_second(nz(p.sensor_rate_per_sec)).allow_burst(nz(p.sensor_burst)))
}

/// Sensor keys the per-sensor quota remembers before idle ones are pruned (and, if they are
/// all busy, forgotten: a flood of distinct sensor ids must not grow memory without bound).
const MAX_SENSOR_KEYS: usize = 100_000;

impl Engine {
    /// Open the embedded store (`state.dir`) and restore everything it holds. Must run inside
    /// a Tokio runtime (it starts the committer task).
    pub fn open(config: Arc<Config>, metrics: Arc<Metrics>) -> Result<Engine> {
        let store = EmbeddedStore::open(&config.state.dir)?;
        let snap = store.load()?;
        Ok(Engine::with_store(
            config,
            metrics,
            Store::Embedded(store),
            snap,
        ))
    }

    /// An engine over `store`, restored from `snap` (read from it). Must run inside a Tokio
    /// runtime (it starts the committer task).
    pub fn with_store(
        config: Arc<Config>,
        metrics: Arc<Metrics>,
        store: Store,
        snap: Snapshot,
    ) -> Engine {
        let active = snap.blocks.len() as u64;
        let deferred = snap.blocks.values().filter(|b| b.deferred).count() as u64;
        metrics.blocks_active.store(active, Relaxed);
        metrics.blocks_deferred.store(deferred, Relaxed);
        info!(
            blocks = active,
            deferred,
            offences = snap.offences.len(),
            store = %store.describe(),
            "state restored"
        );
        let p = &config.pipeline;
        let (committer_tx, committer_rx) = mpsc::unbounded_channel();
        let committer_task =
            tokio::spawn(committer(store.clone(), Arc::clone(&metrics), committer_rx));
        let persist_pending = matches!(store, Store::Nats(_));
        let policy = Policy::new(config.policy.clone());
        metrics
            .history_entries
            .store(snap.history.len() as u64, Relaxed);
        let mut state = restore(
            snap.blocks,
            snap.offences,
            snap.history,
            config.guardrails.max_new_blocks_per_minute,
        );
        let (instant, wall) = (tokio::time::Instant::now(), Utc::now());
        let mut stale = Vec::new();
        for (net, hits) in snap.pending {
            let last = hits.iter().map(|h| h.at).max();
            match last {
                Some(last) if policy.restore(net, &hits, instant, wall) => {
                    state.pending_keys.insert(net, last);
                }
                _ => stale.push((net, None)),
            }
        }
        if !state.pending_keys.is_empty() || !stale.is_empty() {
            info!(
                clients = state.pending_keys.len(),
                expired = stale.len(),
                "counted reports restored"
            );
        }
        if !stale.is_empty() {
            // Queued first: the committer writes it before anything this engine decides.
            let (tx, _rx) = oneshot::channel();
            let _ = committer_tx.send((
                Batch {
                    pending: stale,
                    ..Batch::default()
                },
                tx,
            ));
        }
        Engine {
            committer: committer_tx,
            committer_task: Some(committer_task),
            log_limit: LogLimiter::new(LOG_INTERVAL),
            persist_pending,
            policy,
            guardrails: Guardrails::new(&config.guardrails),
            dedup: Cache::builder()
                .max_capacity(p.dedup_capacity)
                .time_to_live(Duration::from_secs(p.dedup_window_secs.max(1)))
                .build_with_hasher(FastHash::default()),
            dedup_hasher: FastHash::default(),
            sensors: std::sync::RwLock::new(sensor_quota(p)),
            store,
            state: Mutex::new(state),
            metrics,
            manual_seq: Default::default(),
            config,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Stops the engine: every change submitted so far is committed, then the store is
    /// released (the committer task holds it too), so that the same state can be opened again
    /// at once. Dropping the engine does the same in the background; this waits for it. Takes
    /// the last reference (`Arc::into_inner`).
    pub async fn close(mut self) {
        let task = self.committer_task.take();
        // the engine's sender and store handle go first: the committer drains its queue
        // and ends when no sender is left
        drop(self);
        if let Some(task) = task
            && let Err(err) = task.await
        {
            error!(cause = %err, "the store committer ended abnormally");
        }
    }

    /// The configuration the engine runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    pub fn guardrails(&self) -> &Guardrails {
        &self.guardrails
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Lock the block state (the reconciler and the admin API read it).
    pub async fn state(&self) -> tokio::sync::MutexGuard<'_, BlockState> {
        self.state.lock().await
    }

    /// Queue a batch for the committer; the receiver resolves once it is durable. Batches are
    /// committed in submission order (one FIFO for every writer), several at a time.
    fn submit(&self, batch: Batch) -> Durable {
        let (tx, rx) = oneshot::channel();
        if batch.is_empty() {
            let _ = tx.send(());
        } else if self.committer.send((batch, tx)).is_err() {
            error!("store committer is gone; the change is not durable");
        }
        Durable(rx)
    }

    /// A barrier in the commit FIFO: resolves once every batch submitted before it is durable.
    /// Taken under the state lock, it makes what was read under that lock durable before use.
    fn barrier(&self) -> Durable {
        let (tx, rx) = oneshot::channel();
        if self.committer.send((Batch::default(), tx)).is_err() {
            error!("store committer is gone; the change is not durable");
        }
        Durable(rx)
    }

    /// Process a batch; every state change is durable when this returns.
    pub async fn process(&self, msgs: &[Incoming]) -> Vec<Disposition> {
        let (out, durable) = self.decide(msgs).await;
        durable.wait().await;
        out
    }

    /// Process a batch: decide, apply to the in-memory state and queue the state changes for
    /// the committer. Acknowledge the messages only after the returned [`Durable`] resolves.
    /// The next batch can be decided meanwhile (the commit's fsync overlaps it).
    #[instrument(skip_all, fields(n = msgs.len()))]
    pub async fn decide(&self, msgs: &[Incoming]) -> (Vec<Disposition>, Durable) {
        let mut out = Vec::with_capacity(msgs.len());
        let now = Utc::now();
        let instant = tokio::time::Instant::now();
        let max_reasons = self.config.state.max_reasons;
        let g = &self.config.guardrails;
        let (v4_len, v6_len) = (
            self.config.policy.ipv4_prefix_len,
            self.config.policy.ipv6_prefix_len,
        );
        self.metrics.batches_decided.fetch_add(1, Relaxed);
        let mut state = self.state.lock().await;
        // Working copies of the records this batch changes; folded into `state` after commit.
        let mut dirty: HashMap<IpNet, BlockRecord> = HashMap::new();
        let mut offences: HashMap<IpNet, Offence> = HashMap::new();
        // Deferred blocks decided in this batch, in all and per deciding sensor (not yet in
        // `state`'s queue).
        let mut new_deferred = 0usize;
        let mut new_deferred_of: HashMap<u64, usize> = HashMap::new();
        // Clients whose counted reports changed (`true`) or that got blocked (`false`).
        let mut pending: HashMap<IpNet, bool> = HashMap::new();
        // Per sensor (as its subject names it): reports, rejected; recorded once per batch.
        let mut by_sensor: HashMap<&str, (u64, u64)> = HashMap::new();
        // History entries of the decisions, committed with them.
        let mut history: Vec<HistoryEntry> = Vec::new();
        for msg in msgs {
            self.metrics.reports_received.fetch_add(1, Relaxed);
            // The subject names the sensor its credentials pin: count activity against it.
            let by = sensor_from_subject(&msg.subject);
            if let Some(by) = by {
                by_sensor.entry(by).or_default().0 += 1;
            }
            let report = match Report::from_slice(&msg.payload) {
                Ok(r) => r,
                Err(e) => {
                    if let Some(by) = by {
                        by_sensor.entry(by).or_default().1 += 1;
                    }
                    self.metrics.rejected(e.reason());
                    if self.log_limit.allow(e.reason(), &msg.subject) {
                        warn!(subject = %msg.subject, reason = e.reason(), cause = %e, "report rejected (logged once per subject and reason per minute; palisade_reports_rejected_total counts all)");
                    }
                    out.push(Disposition::Reject(e.reason()));
                    continue;
                }
            };
            if by != Some(report.sensor.as_str()) {
                if let Some(by) = by {
                    by_sensor.entry(by).or_default().1 += 1;
                }
                self.metrics.rejected("sensor_mismatch");
                if self.log_limit.allow("sensor_mismatch", &msg.subject) {
                    warn!(subject = %msg.subject, sensor = %report.sensor, "report sensor does not match its subject (logged once per subject per minute)");
                }
                out.push(Disposition::Reject("sensor_mismatch"));
                continue;
            }
            out.push(Disposition::Ack);
            // Counted, deduplicated and blocked per prefix (an IPv6 client owns its /64).
            let net = client_net(report.client_ip, v4_len, v6_len);
            let key: DedupKey =
                self.dedup_hasher
                    .hash_one((net, report.rule.as_str(), report.sensor.as_str()));
            if self.dedup.contains_key(&key) {
                self.metrics.reports_deduplicated.fetch_add(1, Relaxed);
                continue;
            }
            self.dedup.insert(key, ());
            let sensor = sensor_hash(&report.sensor);
            let limited = self
                .sensors
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .check_key(&sensor)
                .is_err();
            if limited {
                self.metrics.reports_rate_limited.fetch_add(1, Relaxed);
                continue;
            }
            self.metrics.reports_accepted.fetch_add(1, Relaxed);
            self.metrics
                .detection(report.context.as_ref().and_then(|c| c.namespace.as_deref()));
            let reason = || Reason {
                report_id: report.id.clone(),
                sensor: report.sensor.clone(),
                rule: report.rule.clone(),
                category: report.category.as_str().to_owned(),
                severity: report.severity,
                evidence: report.evidence.clone(),
                observed_at: report.observed_at,
                mitre: report.mitre.clone(),
                context: report.context.clone(),
                actor: None,
            };
            // Already blocked: record the hit on the block (once per report id).
            let existing = dirty
                .get(&net)
                .or_else(|| state.blocks.get(&net))
                .filter(|b| b.expires_at > now)
                .cloned();
            if let Some(mut rec) = existing {
                if rec.has_report(&report.id) {
                    self.metrics.reports_redelivered_seen.fetch_add(1, Relaxed);
                    continue;
                }
                rec.hits += 1;
                rec.last_seen = now;
                rec.severity = rec.severity.max(report.severity);
                rec.add_sensor(&report.sensor);
                rec.push_reason(reason(), max_reasons);
                dirty.insert(net, rec);
                continue;
            }
            let Some(decision) = self.policy.observe_report(
                net,
                report.category.as_str(),
                report.severity,
                sensor,
                sensor_hash(&report.id),
                instant,
            ) else {
                if self.persist_pending {
                    pending.insert(net, true);
                }
                continue;
            };
            if self.persist_pending {
                pending.insert(net, false);
            }
            if let Err(refusal) = self.guardrails.check(&net) {
                self.refuse(refusal.reason(), &net, &report.sensor, &refusal);
                continue;
            }
            // The cap is shared fairly: while anything waits, new blocks queue behind it (and
            // are served in turn per sensor), so a flood cannot take every fresh token.
            let deferred = state.deferred() + new_deferred > 0 || !state.cap.try_take(instant);
            if deferred {
                let mine = state.deferred_of(&report.sensor)
                    + new_deferred_of.get(&sensor).copied().unwrap_or(0);
                // Refused at the queue's door: not decided (no record, no offence). The
                // client's next report can decide again once there is room.
                if state.deferred() + new_deferred >= g.max_deferred {
                    self.refuse(
                        "deferred_full",
                        &net,
                        &report.sensor,
                        &"the deferred queue is full",
                    );
                    continue;
                }
                if mine >= g.max_deferred_per_sensor {
                    self.refuse(
                        "deferred_sensor_full",
                        &net,
                        &report.sensor,
                        &"this sensor's share of the deferred queue is full",
                    );
                    continue;
                }
                new_deferred += 1;
                *new_deferred_of.entry(sensor).or_default() += 1;
            }
            let prior = offences
                .get(&net)
                .or_else(|| state.offences.get(&net))
                .map(|o| o.count)
                .unwrap_or(0);
            let offence = Offence {
                count: prior.saturating_add(1),
                last_at: now,
            };
            let ttl = self.policy.ttl(offence.count);
            let mut rec = BlockRecord {
                cidr: net,
                first_seen: now,
                last_seen: now,
                expires_at: after(now, ttl),
                hits: u64::from(decision.hits),
                offences: offence.count,
                severity: decision.severity.max(report.severity),
                deferred,
                manual: false,
                sensors: Vec::new(),
                corroboration: decision.sensors.min(MAX_BLOCK_SENSORS as u32),
                reasons: Default::default(),
            };
            rec.add_sensor(&report.sensor);
            rec.push_reason(reason(), max_reasons);
            self.metrics.blocks_added.fetch_add(1, Relaxed);
            self.metrics
                .timings
                .time_to_decision
                .observe(crate::metrics::seconds_between(report.observed_at, now));
            if deferred {
                self.metrics.blocks_deferred_total.fetch_add(1, Relaxed);
            }
            // which workload was probed: the first question of an incident
            let ctx = report.context.as_ref();
            let field = |f: fn(&palisade_wire::Context) -> Option<&String>| {
                ctx.and_then(f).map(String::as_str).unwrap_or("")
            };
            info!(
                cidr = %net,
                severity = %rec.severity,
                offence = offence.count,
                ttl_secs = ttl.as_secs(),
                deferred,
                rule = %report.rule,
                sensor = %report.sensor,
                namespace = field(|c| c.namespace.as_ref()),
                pod = field(|c| c.pod.as_ref()),
                container = field(|c| c.container.as_ref()),
                "block decided"
            );
            offences.insert(net, offence);
            if let Some(e) =
                self.history_entry(&mut state, now, HistoryEvent::Decided, &rec, None, None)
            {
                history.push(e);
            }
            dirty.insert(net, rec);
        }
        self.metrics
            .sensors
            .record(by_sensor.into_iter().map(|(s, (n, rej))| (s, n, rej)));
        let mut upserts: Vec<BlockRecord> = dirty.values().cloned().collect();
        let new_offences: Vec<(IpNet, Offence)> = offences.iter().map(|(k, v)| (*k, *v)).collect();
        state.offences.extend(offences);
        for rec in dirty.into_values() {
            state.put(rec);
        }
        // Serve the queue now, in the same commit: under a flood this runs every batch, so a
        // waiting block is enforced as soon as a token and its turn come.
        let promoted = self.promote_locked(&mut state, now, instant);
        let n_promoted = promoted.len();
        upserts.extend(promoted);
        let forget_offences = self.bound_offences(&mut state);
        let mut pending_writes = Vec::with_capacity(pending.len());
        for (net, counted) in pending {
            let hits = if counted {
                self.policy.pending(&net, instant, now)
            } else {
                None
            };
            match hits {
                Some(h) => {
                    state.pending_keys.insert(net, now);
                    pending_writes.push((net, Some(h)));
                }
                None => {
                    if state.pending_keys.remove(&net).is_some() {
                        pending_writes.push((net, None));
                    }
                }
            }
        }
        // Over the bound by a margin: prune here (the sweeper prunes to it exactly), so a
        // flood of decisions cannot grow the history between sweeps.
        let max = self.config.history.max_entries;
        let history_prune = if state.history.len() > max.saturating_add((max / 100).max(16)) {
            self.prune_history(&mut state, now)
        } else {
            None
        };
        let batch = Batch {
            upserts,
            removes: Vec::new(),
            offences: new_offences,
            forget_offences,
            pending: pending_writes,
            history,
            history_prune,
        };
        if n_promoted > 0 {
            info!(promoted = n_promoted, "deferred blocks enforced");
        }
        self.prune_sensor_keys();
        self.metrics
            .tracked_clients
            .store(self.policy.tracked_clients_cheap(), Relaxed);
        if batch.is_empty() {
            return (out, Durable::ready());
        }
        self.refresh_gauges(&state);
        // Submitted under the state lock: the commit order is the order of the changes.
        let durable = self.submit(batch);
        drop(state);
        (out, durable)
    }

    /// A history entry for `event` on `rec` (`None` when history is off), its key recorded in
    /// `state` for pruning. Call under the state lock, in commit order.
    fn history_entry(
        &self,
        state: &mut BlockState,
        now: DateTime<Utc>,
        event: HistoryEvent,
        rec: &BlockRecord,
        actor: Option<&str>,
        note: Option<&str>,
    ) -> Option<HistoryEntry> {
        if self.config.history.max_entries == 0 {
            return None;
        }
        let micros = u64::try_from(now.timestamp_micros()).unwrap_or(0);
        let id = micros.max(state.history_last_id.saturating_add(1));
        state.history_last_id = id;
        let e = HistoryEntry::of(id, now, event, rec, actor, note);
        state.history.push_back(e.key());
        self.metrics.history_written.fetch_add(1, Relaxed);
        self.metrics
            .history_entries
            .store(state.history.len() as u64, Relaxed);
        Some(e)
    }

    /// Take the oldest history entries off `state`: older than `history.max_age_secs`, and
    /// beyond `history.max_entries`. `None` when nothing is pruned. Counted and logged.
    fn prune_history(&self, state: &mut BlockState, now: DateTime<Utc>) -> Option<HistoryPrune> {
        let h = &self.config.history;
        let cutoff = before(now, Duration::from_secs(h.max_age_secs));
        let mut remove = Vec::new();
        let mut by_age = 0u64;
        while let Some(k) = state.history.front().copied() {
            if k.at < cutoff {
                by_age += 1;
            } else if state.history.len() <= h.max_entries {
                break;
            }
            state.history.pop_front();
            remove.push(k);
        }
        if remove.is_empty() {
            return None;
        }
        let by_size = remove.len() as u64 - by_age;
        self.metrics.history_pruned_age.fetch_add(by_age, Relaxed);
        self.metrics.history_pruned_size.fetch_add(by_size, Relaxed);
        self.metrics
            .history_entries
            .store(state.history.len() as u64, Relaxed);
        if self.log_limit.allow("history_pruned", "") {
            info!(
                by_age,
                by_size,
                kept = state.history.len(),
                max_age_secs = h.max_age_secs,
                max_entries = h.max_entries,
                "oldest history entries pruned (logged once per minute; palisade_history_pruned_total counts all)"
            );
        }
        Some(HistoryPrune {
            remove,
            keep_from: state.history.front().copied(),
        })
    }

    /// The history entries `query` asks for, newest first; every entry decided before the
    /// call is durable and included.
    pub async fn history(&self, query: HistoryQuery) -> Result<Vec<HistoryEntry>> {
        self.read_durable(|_| ()).await?;
        self.store.history(query).await
    }

    /// A history query for `net` with this engine's scope (the broadest block prefix).
    pub fn history_query(&self, net: IpNet, before: Option<u64>, limit: usize) -> HistoryQuery {
        history_query(&self.config, net, before, limit)
    }

    /// Count a would-be block refused (a guardrail, or no room to defer it), logging once per
    /// sensor and reason per minute.
    fn refuse(
        &self,
        reason: &'static str,
        net: &IpNet,
        sensor: &str,
        detail: &dyn std::fmt::Display,
    ) {
        self.metrics.refused(reason);
        if self.log_limit.allow(reason, sensor) {
            info!(cidr = %net, sensor = %sensor, reason, detail = %detail, "block refused (logged once per sensor and reason per minute; palisade_blocks_refused_total counts all)");
        }
    }

    fn refresh_gauges(&self, state: &BlockState) {
        self.metrics
            .blocks_active
            .store(state.blocks.len() as u64, Relaxed);
        self.metrics
            .blocks_deferred
            .store(state.deferred() as u64, Relaxed);
    }

    /// Take deferred blocks off the queue as the cap allows, one sensor at a time in turn
    /// (each sensor's oldest first), mark them enforced in `state` and return them (to commit).
    /// The TTL of a promoted block starts when it is enforced.
    fn promote_locked(
        &self,
        state: &mut BlockState,
        now: DateTime<Utc>,
        instant: tokio::time::Instant,
    ) -> Vec<BlockRecord> {
        let mut promoted = Vec::new();
        while state.deferred() > 0 && state.cap.try_take(instant) {
            let Some(mut b) = state.next_deferred() else {
                break;
            };
            b.expires_at = now + (b.expires_at - b.first_seen);
            b.deferred = false;
            state.put(b.clone());
            promoted.push(b);
        }
        promoted
    }

    /// Enforce deferred blocks as the global cap allows, sensors served in turn. The pipeline
    /// does this after every batch; the sweeper calls it when no reports arrive.
    pub async fn promote_deferred(&self) -> usize {
        let mut state = self.state.lock().await;
        if state.deferred() == 0 {
            return 0;
        }
        let promoted = self.promote_locked(&mut state, Utc::now(), tokio::time::Instant::now());
        let n = promoted.len();
        if n > 0 {
            self.refresh_gauges(&state);
            // Committed under the lock, in order with every other change; waited for after.
            let durable = self.submit(Batch {
                upserts: promoted,
                ..Batch::default()
            });
            drop(state);
            durable.wait().await;
            info!(promoted = n, "deferred blocks enforced");
        }
        n
    }

    /// Keep at most `state.max_offences` offence records, forgetting the oldest (whose
    /// client is not blocked now); returns what to delete from the store.
    fn bound_offences(&self, state: &mut BlockState) -> Vec<IpNet> {
        let max = self.config.state.max_offences;
        if state.offences.len() <= max {
            return Vec::new();
        }
        // Prune to 90% of the bound so the sort is amortized over many inserts.
        let target = max - max / 10;
        let mut by_age: Vec<(DateTime<Utc>, IpNet)> = state
            .offences
            .iter()
            .filter(|(net, _)| !state.blocks.contains_key(net))
            .map(|(net, o)| (o.last_at, *net))
            .collect();
        by_age.sort_unstable();
        let excess = state.offences.len().saturating_sub(target);
        let forget: Vec<IpNet> = by_age.into_iter().take(excess).map(|(_, n)| n).collect();
        for net in &forget {
            state.offences.remove(net);
        }
        if !forget.is_empty() && self.log_limit.allow("offences_pruned", "") {
            warn!(
                forgotten = forget.len(),
                max,
                "offence history over state.max_offences: oldest forgotten (logged once per minute)"
            );
        }
        forget
    }

    /// Bound the per-sensor quota's keys: idle sensors are pruned; if every key is busy (a
    /// flood of distinct sensor ids), the quota state is reset rather than grow.
    fn prune_sensor_keys(&self) {
        let len = self.sensors.read().unwrap_or_else(|p| p.into_inner()).len();
        if len <= MAX_SENSOR_KEYS {
            return;
        }
        let mut quota = self.sensors.write().unwrap_or_else(|p| p.into_inner());
        quota.retain_recent();
        if quota.len() > MAX_SENSOR_KEYS {
            *quota = sensor_quota(&self.config.pipeline);
            if self.log_limit.allow("sensor_keys_reset", "") {
                warn!(
                    max = MAX_SENSOR_KEYS,
                    "more distinct sensor ids than the quota remembers: quota state reset (logged once per minute)"
                );
            }
        }
        quota.shrink_to_fit();
    }

    /// Sizes of the engine's in-memory maps (for tests and the flood benchmark).
    pub async fn sizes(&self) -> Sizes {
        let state = self.state.lock().await;
        Sizes {
            blocks: state.blocks.len(),
            deferred: state.deferred(),
            deferred_sensors: state.queue.fifos.len(),
            deferred_fifo_entries: state.queue.fifos.values().map(VecDeque::len).sum(),
            offences: state.offences.len(),
            sensor_keys: self.sensors.read().unwrap_or_else(|p| p.into_inner()).len(),
            tracked_clients: self.policy.tracked_clients(),
        }
    }

    /// Remove blocks that ended by `now` and forget offences older than the configured memory.
    pub async fn sweep(&self, now: DateTime<Utc>) -> usize {
        let mut state = self.state.lock().await;
        let expired: Vec<BlockRecord> = state
            .blocks
            .values()
            .filter(|b| b.expires_at <= now && !b.deferred)
            .cloned()
            .collect();
        let mut history = Vec::with_capacity(expired.len());
        for rec in &expired {
            if let Some(e) =
                self.history_entry(&mut state, now, HistoryEvent::Expired, rec, None, None)
            {
                history.push(e);
            }
        }
        let history_prune = self.prune_history(&mut state, now);
        let expired: Vec<IpNet> = expired.iter().map(|b| b.cidr).collect();
        // the removal is submitted under the lock and waited for after it (at the end), so
        // that ingest and the admin API do not wait on its fsync
        let mut removal = None;
        if !expired.is_empty() {
            for net in &expired {
                state.take(net);
            }
            self.metrics
                .blocks_expired
                .fetch_add(expired.len() as u64, Relaxed);
            self.refresh_gauges(&state);
            removal = Some(self.submit(Batch {
                removes: expired.clone(),
                history,
                history_prune,
                ..Batch::default()
            }));
        } else if history_prune.is_some() {
            // Queued, not awaited, like forgetting offences.
            drop(self.submit(Batch {
                history_prune,
                ..Batch::default()
            }));
        }
        let cutoff = before(
            now,
            Duration::from_secs(self.config.state.offence_memory_secs),
        );
        let window_start = before(now, self.config.policy.window());
        let expired_pending: Vec<(IpNet, Option<crate::policy::Pending>)> = state
            .pending_keys
            .iter()
            .filter(|(_, last)| **last < window_start)
            .map(|(net, _)| (*net, None))
            .collect();
        if !expired_pending.is_empty() {
            for (net, _) in &expired_pending {
                state.pending_keys.remove(net);
            }
            drop(self.submit(Batch {
                pending: expired_pending,
                ..Batch::default()
            }));
        }
        let forgotten: Vec<IpNet> = state
            .offences
            .iter()
            .filter(|(_, o)| o.last_at < cutoff)
            .map(|(net, _)| *net)
            .collect();
        if !forgotten.is_empty() {
            for net in &forgotten {
                state.offences.remove(net);
            }
            // Queued, not awaited: forgetting is not a decision, and the next batch's commit
            // carries it anyway.
            drop(self.submit(Batch {
                forget_offences: forgotten,
                ..Batch::default()
            }));
        }
        state.offences.shrink_to_fit();
        drop(state);
        {
            let quota = self.sensors.read().unwrap_or_else(|p| p.into_inner());
            quota.retain_recent();
            quota.shrink_to_fit();
        }
        if let Some(durable) = removal {
            if !durable.wait().await {
                // the committer stopped: this term is over, and its state with it
                error!("expired blocks not removed: the store committer stopped");
                return 0;
            }
            info!(expired = expired.len(), "expired blocks removed");
        }
        expired.len()
    }

    /// Block a CIDR by hand (admin API). The operator is explicit, so the CIDR is blocked as
    /// given (no prefix widening) and the deferred queue is skipped; an allowlisted or
    /// special-purpose CIDR is refused unless `force` is set, and the breadth limit (/24, /48
    /// by default) applies always. Returns the record.
    pub async fn manual_block(
        &self,
        net: IpNet,
        ttl: Option<Duration>,
        note: Option<String>,
        force: bool,
        actor: &str,
    ) -> Result<BlockRecord> {
        let net = palisade_providers::normalize(net)?;
        let refused = |r: crate::guardrails::Refusal| Error::Refused {
            cidr: net.to_string(),
            reason: if force {
                r.to_string()
            } else {
                format!("{r} (set \"force\": true to block it anyway)")
            },
        };
        self.guardrails.check_breadth(&net).map_err(refused)?;
        if !force {
            self.guardrails.check(&net).map_err(refused)?;
        }
        let now = Utc::now();
        let mut state = self.state.lock().await;
        let prior = state.offences.get(&net).map(|o| o.count).unwrap_or(0);
        let offence = Offence {
            count: prior.saturating_add(1),
            last_at: now,
        };
        // An explicit TTL is capped like the policy's: at `policy.max_ttl_secs`.
        let max_ttl = Duration::from_secs(self.config.policy.max_ttl_secs);
        let ttl = ttl.map_or_else(|| self.policy.ttl(offence.count), |t| t.min(max_ttl));
        let seq = self.manual_seq.fetch_add(1, Relaxed);
        let mut rec = state.blocks.get(&net).cloned().unwrap_or(BlockRecord {
            cidr: net,
            first_seen: now,
            last_seen: now,
            expires_at: now,
            hits: 0,
            offences: offence.count,
            severity: Severity::Critical,
            deferred: false,
            manual: true,
            sensors: Vec::new(),
            corroboration: 0,
            reasons: Default::default(),
        });
        rec.add_sensor("admin");
        rec.manual = true;
        rec.deferred = false;
        rec.last_seen = now;
        rec.expires_at = after(now, ttl);
        rec.push_reason(
            Reason {
                report_id: format!("manual:{}:{seq}", now.timestamp_millis()),
                sensor: "admin".into(),
                rule: "manual".into(),
                category: "manual".into(),
                severity: Severity::Critical,
                evidence: note
                    .as_deref()
                    .map(|n| palisade_wire::truncate_evidence(n).to_owned())
                    .unwrap_or_default(),
                observed_at: now,
                mitre: Vec::new(),
                context: None,
                actor: Some(actor.to_owned()),
            },
            self.config.state.max_reasons,
        );
        let note = note.as_deref().map(palisade_wire::truncate_evidence);
        let history = self
            .history_entry(
                &mut state,
                now,
                HistoryEvent::ManualBlock,
                &rec,
                Some(actor),
                note,
            )
            .into_iter()
            .collect();
        state.offences.insert(net, offence);
        state.put(rec.clone());
        self.metrics.blocks_added.fetch_add(1, Relaxed);
        self.refresh_gauges(&state);
        // Submitted under the state lock, in order with every other change; waited for after
        // it, so that ingest and the admin API do not wait on this commit's fsync. Readers
        // that push or show blocks see it only once it is durable (`read_durable`).
        let durable = self.submit(Batch {
            upserts: vec![rec.clone()],
            offences: vec![(net, offence)],
            history,
            ..Batch::default()
        });
        drop(state);
        durable.done().await?;
        info!(cidr = %net, ttl_secs = ttl.as_secs(), actor, "manual block");
        Ok(rec)
    }

    /// Release a block by hand. `false` when there was none.
    pub async fn release(&self, net: IpNet, actor: &str) -> Result<bool> {
        let net = palisade_providers::normalize(net)?;
        let mut state = self.state.lock().await;
        let Some(rec) = state.blocks.get(&net).cloned() else {
            return Ok(false);
        };
        let history = self
            .history_entry(
                &mut state,
                Utc::now(),
                HistoryEvent::Released,
                &rec,
                Some(actor),
                None,
            )
            .into_iter()
            .collect();
        state.take(&net);
        self.metrics.blocks_released.fetch_add(1, Relaxed);
        self.refresh_gauges(&state);
        // as in `manual_block`: submitted under the lock, waited for after it
        let durable = self.submit(Batch {
            removes: vec![net],
            history,
            ..Batch::default()
        });
        drop(state);
        durable.done().await?;
        info!(cidr = %net, actor, "manual release");
        Ok(true)
    }

    /// Read the block state with `read`, and return what it read once all of it is durable:
    /// a barrier in the commit FIFO is taken under the same lock, and waited for (at most
    /// [`COMMIT_WAIT`]). A decision is milliseconds ahead of its commit; readers that show or
    /// push decisions (admin API, reconciler) use only what a crash cannot take back.
    pub async fn read_durable<T>(&self, read: impl FnOnce(&BlockState) -> T) -> Result<T> {
        let (value, durable) = {
            let state = self.state.lock().await;
            (read(&state), self.barrier())
        };
        durable.wait_bounded().await?;
        Ok(value)
    }

    /// Every block, newest first, each durable ([`Engine::read_durable`]).
    pub async fn blocks(&self) -> Result<Vec<BlockRecord>> {
        let mut v: Vec<BlockRecord> = self
            .read_durable(|state| state.blocks.values().cloned().collect())
            .await?;
        v.sort_by(|a, b| b.first_seen.cmp(&a.first_seen).then(a.cidr.cmp(&b.cidr)));
        Ok(v)
    }

    /// How many clients the policy tracks (runs moka's pending maintenance; for tests/bench).
    pub fn tracked_clients(&self) -> u64 {
        self.policy.tracked_clients()
    }
}

/// A history query for `net` with the scope of `config` (the broadest prefix a block can have).
pub fn history_query(
    config: &Config,
    net: IpNet,
    before: Option<u64>,
    limit: usize,
) -> HistoryQuery {
    HistoryQuery {
        net,
        before,
        limit,
        scope_v4: config.guardrails.max_prefix_v4_len,
        scope_v6: config.guardrails.max_prefix_v6_len,
    }
}
