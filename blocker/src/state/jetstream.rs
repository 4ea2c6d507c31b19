//! The `nats` backend: the state in one JetStream key-value bucket, written only by the replica
//! that holds the lease, with every write fenced.
//!
//! # Layout
//!
//! | key | value |
//! | --- | --- |
//! | `block.<cidr>` | a [`BlockRecord`] (JSON) |
//! | `offence.<cidr>` | an [`Offence`] (JSON) |
//! | `owned.<cidr>` | when the firewall entry became ours (Unix ms) |
//! | `pending.<cidr>` | the counted reports of a client not (yet) blocked ([`crate::policy::Pending`]) |
//! | `history.<net tokens>.<id>` | a [`HistoryEntry`] (JSON); `<net tokens>` as [`history::subject_tokens`] |
//! | `lease` | the [`Lease`]: which replica decides and writes |
//!
//! A CIDR's `:` is written `_` (key names allow `[-/_=.a-zA-Z0-9]`). Deletes are purges (a
//! rollup marker replaces the key's history), so the bucket does not grow with expired blocks.
//!
//! # Fencing
//!
//! A bucket is a stream; every message of it has a sequence. The lease holder writes every
//! message with `Nats-Expected-Last-Sequence` set to the last sequence it knows (its own last
//! write), so a write lands only if nothing else was written since. Taking the lease is itself
//! a write (compare-and-set on the `lease` key's revision), so once another replica has taken
//! it, every later write of the previous holder is refused by the server
//! ([`Error::Fenced`]), whatever that holder believes. The holder also stops writing on its
//! own when its lease is older than the lease time minus a margin (a paused process notices
//! before sending anything), and it sends the first message of every commit alone, so a
//! failed message can never leave a gap that another writer's message fills. See
//! `docs/blocker.md` ("High availability") for the argument.
//!
//! History entries are written with the commit that records what they describe, fenced like
//! every other write. They are pruned (oldest first) with one stream purge of the history
//! subjects below the sequence of the oldest entry kept, made under the writer lock while the
//! lease is valid: a purge leaves no marker behind, so pruned entries take no room at all.
//!
//! A write whose acknowledgement is lost (a NATS node died) is checked against the stream: if
//! every message after the last known sequence carries this holder's writer id, they are its
//! own and the commit is retried (writes are idempotent); otherwise the holder is fenced.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, context::PublishErrorKind, kv};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{info, warn};

use super::history::{self, HistoryEntry, HistoryKey, HistoryPrune, HistoryQuery};
use super::{Batch, BlockRecord, Offence, Snapshot, decode, encode, parse_key};
use crate::error::{Error, Result};

/// Header naming the writer (replica id, incarnation and lease epoch) on every message.
const WRITER_HEADER: &str = "Palisade-Writer";
const KV_OPERATION: &str = "KV-Operation";
const ROLLUP: &str = "Nats-Rollup";

const BLOCK: &str = "block.";
const OFFENCE: &str = "offence.";
const OWNED: &str = "owned.";
const PENDING: &str = "pending.";
const HISTORY: &str = "history.";
/// Most messages written under the writer lock at once (see [`KvStore::write`]).
const WRITE_CHUNK: usize = 256;
/// The key of the lease.
pub const LEASE_KEY: &str = "lease";

/// The lease: which replica decides and writes, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// Replica id of the holder; empty when the holder released it (a standby may take it at
    /// once).
    pub holder: String,
    /// Random id of the holder's process (a restarted replica with the same id is a new
    /// incarnation).
    pub incarnation: String,
    /// Incremented by every takeover.
    pub epoch: u64,
    /// How long the lease holds without a renewal, milliseconds. Standbys use the holder's
    /// value, so replicas configured differently still agree.
    pub ttl_ms: u64,
    /// Wall-clock time of the last renewal (for people; expiry is measured on each replica's
    /// monotonic clock, never by comparing clocks).
    pub renewed_at: DateTime<Utc>,
}

/// Bucket settings (`[state]`).
#[derive(Debug, Clone)]
pub struct BucketSettings {
    /// Bucket name.
    pub bucket: String,
    /// Replicas of the bucket (1, 3 or 5 on a cluster).
    pub replicas: usize,
    /// Oldest value kept (0: forever).
    pub max_age: Duration,
}

impl BucketSettings {
    /// The bucket of `[state]`.
    pub fn of(state: &crate::config::StateConfig) -> BucketSettings {
        BucketSettings {
            bucket: state.bucket.clone(),
            replicas: state.replicas,
            max_age: Duration::from_secs(state.max_age_secs),
        }
    }
}

/// The JetStream key-value state. Cheap to clone.
#[derive(Debug, Clone)]
pub struct KvStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    js: jetstream::Context,
    kv: kv::Store,
    /// `$KV.<bucket>.`
    prefix: String,
    writer: Mutex<Writer>,
    /// Set once the server refused a write of ours because another replica wrote: the lease
    /// is lost for good in this incarnation.
    fenced: AtomicBool,
    /// Until when the held lease lets this replica write (no write is started after it
    /// without a renewal), as milliseconds after `epoch` (0: no lease held). Outside the
    /// writer lock: `/readyz`, the keeper and the firewall writes must see a lease run out
    /// even while a slow commit holds that lock.
    valid_until_ms: AtomicU64,
    /// The instant `valid_until_ms` counts from.
    epoch: Instant,
}

/// The holder's side of the lease.
#[derive(Debug, Default)]
struct Writer {
    /// Holding the lease (set by [`KvStore::acquire`]).
    lease: Option<Held>,
}

#[derive(Debug)]
struct Held {
    /// Last stream sequence of the bucket, written by us.
    last_seq: u64,
    /// `<replica>/<incarnation>/<epoch>`: the value of [`WRITER_HEADER`].
    writer_id: String,
    lease: Lease,
}

fn key_of(net: &IpNet) -> String {
    net.to_string().replace(':', "_")
}

fn net_of(key: &str) -> Result<IpNet> {
    parse_key(&key.replace('_', ":"))
}

/// What a failure to create a reading consumer on the bucket is called (see [`KvStore::load`]).
const CREATE_READER: &str = "create a reader on the state bucket";

/// How [`KvStore::load_via`] reads the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Ordered consumers, one per kind of key: the messages flow as fast as they can.
    Consumer,
    /// One request per message to the bucket's leader: no consumer is created.
    Leader,
}

fn js_err(what: &'static str) -> impl Fn(String) -> Error {
    move |message| Error::JetStream { what, message }
}

/// One write.
enum Op {
    Put(String, Bytes),
    Purge(String),
}

impl KvStore {
    /// Create the bucket, or check an existing one (its replicas and max age are updated to
    /// the configuration, with a log line).
    pub async fn open(js: &jetstream::Context, settings: &BucketSettings) -> Result<KvStore> {
        let kv = match js.get_key_value(&settings.bucket).await {
            Ok(kv) => {
                let mut stream = kv.stream.clone();
                let info = stream
                    .info()
                    .await
                    .map_err(|e| js_err("check state bucket")(e.to_string()))?;
                let mut config = info.config.clone();
                let want_age = settings.max_age;
                if config.num_replicas != settings.replicas || config.max_age != want_age {
                    warn!(
                        bucket = %settings.bucket,
                        replicas = config.num_replicas,
                        configured_replicas = settings.replicas,
                        max_age_secs = config.max_age.as_secs(),
                        configured_max_age_secs = want_age.as_secs(),
                        "state bucket settings differ from the configuration; updating them"
                    );
                    config.num_replicas = settings.replicas;
                    config.max_age = want_age;
                    js.update_stream(&config)
                        .await
                        .map_err(|e| js_err("update state bucket")(e.to_string()))?;
                }
                kv
            }
            Err(_) => {
                // The bucket's stream, as a key-value bucket is defined (ADR-8). Created
                // directly: the client's `create_key_value` first asks for the account's
                // limits in a shape that nats-server 2.9 does not answer.
                let created = js
                    .create_stream(jetstream::stream::Config {
                        name: format!("KV_{}", settings.bucket),
                        description: Some(
                            "Palisade blocker state: blocks, offences, owned entries, lease".into(),
                        ),
                        subjects: vec![format!("$KV.{}.>", settings.bucket)],
                        max_messages_per_subject: 1,
                        max_age: settings.max_age,
                        storage: jetstream::stream::StorageType::File,
                        allow_rollup: true,
                        deny_delete: true,
                        deny_purge: false,
                        allow_direct: true,
                        num_replicas: settings.replicas,
                        discard: jetstream::stream::DiscardPolicy::New,
                        ..Default::default()
                    })
                    .await;
                if let Err(err) = created {
                    // Another replica may have created it at the same moment.
                    warn!(cause = %err, "creating the state bucket failed; looking it up");
                }
                js.get_key_value(&settings.bucket)
                    .await
                    .map_err(|e| js_err("create state bucket")(e.to_string()))?
            }
        };
        info!(bucket = %settings.bucket, replicas = settings.replicas, "state bucket ready");
        Ok(KvStore {
            inner: Arc::new(Inner {
                js: js.clone(),
                prefix: format!("$KV.{}.", settings.bucket),
                kv,
                writer: Mutex::new(Writer::default()),
                fenced: AtomicBool::new(false),
                valid_until_ms: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        })
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.inner.kv.name
    }

    /// Has the server refused a write of ours because another replica took the lease?
    pub fn is_fenced(&self) -> bool {
        self.inner.fenced.load(Relaxed)
    }

    /// Record until when the held lease is valid (`None`: none held).
    fn publish_validity(&self, until: Option<Instant>) {
        let ms = until.map_or(0, |t| {
            (t.saturating_duration_since(self.inner.epoch).as_millis() as u64).max(1)
        });
        self.inner.valid_until_ms.store(ms, Relaxed);
    }

    /// When the held lease stops being valid by this replica's clock (`None`: none held).
    pub fn lease_valid_until(&self) -> Option<Instant> {
        match self.inner.valid_until_ms.load(Relaxed) {
            0 => None,
            ms => Some(self.inner.epoch + Duration::from_millis(ms)),
        }
    }

    /// Does this replica hold a lease that is still valid by its own clock? Without the
    /// writer lock, so a commit in flight never makes a replica whose lease ran out still
    /// claim it.
    pub fn holds_lease(&self) -> bool {
        !self.is_fenced() && self.lease_valid_until().is_some_and(|t| Instant::now() < t)
    }

    /// The current lease as stored, with its revision (`None`: nobody ever took it).
    pub async fn read_lease(&self) -> Result<Option<(Lease, u64)>> {
        let entry = self
            .inner
            .kv
            .entry(LEASE_KEY)
            .await
            .map_err(|e| js_err("read lease")(e.to_string()))?;
        match entry {
            Some(e) if e.operation == kv::Operation::Put => {
                Ok(Some((decode(LEASE_KEY, &e.value)?, e.revision)))
            }
            // A purged or deleted lease: as good as released.
            Some(e) => Ok(Some((
                Lease {
                    holder: String::new(),
                    incarnation: String::new(),
                    epoch: 0,
                    ttl_ms: 0,
                    renewed_at: Utc::now(),
                },
                e.revision,
            ))),
            None => Ok(None),
        }
    }

    /// Try to take the lease: create it when there is none, or replace the lease seen at
    /// `revision` (which the caller found expired or released). `Ok(false)`: another replica
    /// was faster.
    pub async fn acquire(
        &self,
        replica: &str,
        incarnation: &str,
        ttl: Duration,
        previous: Option<(&Lease, u64)>,
    ) -> Result<bool> {
        let lease = Lease {
            holder: replica.to_owned(),
            incarnation: incarnation.to_owned(),
            epoch: previous.map_or(1, |(l, _)| l.epoch + 1),
            ttl_ms: ttl.as_millis() as u64,
            renewed_at: Utc::now(),
        };
        let value: Bytes = encode(&lease)?.into();
        let sent = Instant::now();
        let res = match previous {
            None => self
                .inner
                .kv
                .create(LEASE_KEY, value)
                .await
                .map_err(|e| e.to_string()),
            Some((_, revision)) => self
                .inner
                .kv
                .update(LEASE_KEY, value, revision)
                .await
                .map_err(|e| e.to_string()),
        };
        let revision = match res {
            Ok(r) => r,
            Err(message)
                if message.contains("wrong last sequence") || message.contains("exists") =>
            {
                return Ok(false);
            }
            Err(message) => return Err(js_err("take lease")(message)),
        };
        let mut w = self.inner.writer.lock().await;
        w.lease = Some(Held {
            last_seq: revision,
            writer_id: format!("{replica}/{incarnation}/{}", lease.epoch),
            lease,
        });
        self.inner.fenced.store(false, Relaxed);
        self.publish_validity(Some(sent + validity(ttl)));
        Ok(true)
    }

    /// Renew the lease (a fenced write of the `lease` key). On success the lease is valid for
    /// another lease time, counted from before the write was sent.
    pub async fn renew(&self) -> Result<()> {
        let mut w = self.inner.writer.lock().await;
        let Some(held) = w.lease.as_mut() else {
            return Err(Error::NotLeader);
        };
        let mut lease = held.lease.clone();
        lease.renewed_at = Utc::now();
        let ttl = Duration::from_millis(lease.ttl_ms);
        let sent = Instant::now();
        let ops = vec![Op::Put(LEASE_KEY.to_owned(), encode(&lease)?.into())];
        self.write_locked(&mut w, ops).await?;
        if let Some(held) = w.lease.as_mut() {
            held.lease = lease;
            self.publish_validity(Some(sent + validity(ttl)));
        }
        Ok(())
    }

    /// Give the lease up (clean shutdown): a standby takes it at once instead of waiting for it
    /// to expire. Writes nothing when the lease is no longer ours.
    pub async fn release(&self) -> Result<()> {
        let mut w = self.inner.writer.lock().await;
        let Some(held) = w.lease.as_ref() else {
            return Ok(());
        };
        let lease = Lease {
            holder: String::new(),
            renewed_at: Utc::now(),
            ..held.lease.clone()
        };
        let ops = vec![Op::Put(LEASE_KEY.to_owned(), encode(&lease)?.into())];
        let res = self.write_locked(&mut w, ops).await;
        w.lease = None;
        self.publish_validity(None);
        res
    }

    /// Forget the lease without writing (after it was lost).
    pub async fn step_down(&self) {
        self.publish_validity(None);
        self.inner.writer.lock().await.lease = None;
    }

    /// Read everything (the new holder, right after taking the lease).
    pub async fn load(&self) -> Result<Snapshot> {
        self.any_via(|via| self.load_via(via)).await
    }

    /// `read` through consumers, or from the bucket's leader when no consumer can be created.
    /// Creating one needs the cluster's JetStream meta leader (it places consumers); after a
    /// NATS node is lost that can stay unanswered for a while, when the bucket's own leader
    /// answers reads. Without this a replica taking the lease would give it back again and
    /// again, and no replica would decide.
    async fn any_via<T, F, Fut>(&self, read: F) -> Result<T>
    where
        F: Fn(Via) -> Fut,
        Fut: std::future::Future<Output = Result<T>>,
    {
        match read(Via::Consumer).await {
            Err(Error::JetStream {
                what: CREATE_READER,
                message,
            }) => {
                warn!(
                    cause = %message,
                    "cannot create a reader on the state bucket; reading it one message at a \
                     time from the bucket's leader"
                );
                read(Via::Leader).await
            }
            other => other,
        }
    }

    /// [`KvStore::load`] through one way of reading.
    pub async fn load_via(&self, via: Via) -> Result<Snapshot> {
        let mut snap = Snapshot::default();
        // Everything but the history (read by its keys only, below).
        let mut all = Vec::new();
        for prefix in [BLOCK, OFFENCE, OWNED, PENDING] {
            all.extend(self.read_all(prefix, via).await?);
        }
        snap.history = self.history_keys(via).await?;
        for (key, value) in all {
            if let Some(k) = key.strip_prefix(BLOCK) {
                let rec: BlockRecord = decode(&key, &value)?;
                if rec.cidr != net_of(k)? {
                    return Err(Error::Corrupt {
                        key,
                        message: format!("holds the record of {}", rec.cidr),
                    });
                }
                snap.blocks.insert(rec.cidr, rec);
            } else if let Some(k) = key.strip_prefix(OFFENCE) {
                snap.offences
                    .insert(net_of(k)?, decode::<Offence>(&key, &value)?);
            } else if let Some(k) = key.strip_prefix(OWNED) {
                snap.owned.insert(net_of(k)?);
            } else if let Some(k) = key.strip_prefix(PENDING) {
                snap.pending.insert(net_of(k)?, decode(&key, &value)?);
            }
        }
        Ok(snap)
    }

    /// The key of every history entry, oldest first: the subjects of a headers-only read.
    /// An entry's time is taken from its id (microseconds since the epoch, or a little more).
    async fn history_keys(&self, via: Via) -> Result<Vec<HistoryKey>> {
        let err = js_err("read state bucket");
        let mut keys = Vec::new();
        let mut add = |subject: &str| {
            let key = subject
                .strip_prefix(self.inner.prefix.as_str())
                .and_then(|k| k.strip_prefix(HISTORY));
            match key.and_then(history::parse_subject) {
                Some((cidr, id)) => keys.push(HistoryKey {
                    id,
                    cidr,
                    at: DateTime::from_timestamp_micros(i64::try_from(id).unwrap_or(i64::MAX))
                        .unwrap_or_default(),
                }),
                None => warn!(%subject, "not a history entry's subject; ignored"),
            }
        };
        match via {
            Via::Leader => {
                for (subject, _, _) in self.read_from_leader(HISTORY).await? {
                    add(&subject);
                }
            }
            Via::Consumer => {
                let consumer = self.reader(HISTORY, "palisade history keys", true).await?;
                if consumer.cached_info().num_pending > 0 {
                    let mut messages = consumer.messages().await.map_err(|e| err(e.to_string()))?;
                    while let Some(msg) = messages.next().await {
                        let msg = msg.map_err(|e| err(e.to_string()))?;
                        let pending = msg.info().map_err(|e| err(e.to_string()))?.pending;
                        add(&msg.subject);
                        if pending == 0 {
                            break;
                        }
                    }
                }
            }
        }
        keys.sort_unstable_by_key(|k| k.id);
        keys.dedup_by_key(|k| k.id);
        Ok(keys)
    }

    /// The history entries `query` asks for, newest first (any replica; the admin API).
    pub async fn history(&self, query: &HistoryQuery) -> Result<Vec<HistoryEntry>> {
        let prefix = format!("{HISTORY}{}", history::subject_scope(&query.scope()));
        let mut out: Vec<HistoryEntry> = Vec::new();
        for (key, value) in self.any_via(|via| self.read_all(&prefix, via)).await? {
            let e: HistoryEntry = decode(&key, &value)?;
            if query.wants(&e.cidr, e.id) {
                out.push(e);
            }
        }
        out.sort_unstable_by_key(|e| std::cmp::Reverse(e.id));
        out.truncate(query.limit);
        Ok(out)
    }

    /// The subject key of a history entry.
    fn history_key(cidr: &IpNet, id: u64) -> String {
        format!("{HISTORY}{}.{id}", history::subject_tokens(cidr))
    }

    /// Prune the history: purge every history message below the oldest entry kept (all of
    /// them when none is kept, up to what this holder has written). Under the writer lock and
    /// only with a valid lease, like a write; before the writes of the commit that carries it,
    /// so that an entry of that commit is never purged.
    async fn prune_history(&self, prune: &HistoryPrune) -> Result<()> {
        let err = js_err("prune history");
        let w = self.inner.writer.lock().await;
        if self.is_fenced() {
            return Err(Error::Fenced("a newer lease holder wrote the state".into()));
        }
        let Some(held) = w.lease.as_ref() else {
            return Err(Error::NotLeader);
        };
        if self.lease_valid_until().is_none_or(|t| Instant::now() >= t) {
            return Err(Error::Fenced(format!(
                "the lease was not renewed within {} ms; not pruning",
                held.lease.ttl_ms
            )));
        }
        // The stream sequence of the oldest entry kept; an entry not written yet (it is in
        // this commit) is newer than everything written: purge all written so far.
        let kept = match &prune.keep_from {
            Some(k) => self
                .inner
                .kv
                .entry(Self::history_key(&k.cidr, k.id))
                .await
                .map_err(|e| err(e.to_string()))?
                .map(|e| e.revision),
            None => None,
        };
        let below = kept.unwrap_or(held.last_seq + 1);
        self.inner
            .kv
            .stream
            .purge()
            .filter(format!("{}{HISTORY}>", self.inner.prefix))
            .sequence(below)
            .await
            .map_err(|e| err(e.to_string()))?;
        drop(w);
        Ok(())
    }

    /// Every decided block (any replica; the admin API).
    pub async fn blocks(&self) -> Result<Vec<BlockRecord>> {
        self.any_via(|via| self.read_all(BLOCK, via))
            .await?
            .into_iter()
            .map(|(key, value)| decode(&key, &value))
            .collect()
    }

    /// An ordered consumer over every stored message whose key starts with `prefix`, from the
    /// first, as fast as it can deliver; `headers_only` leaves the values out.
    async fn reader(
        &self,
        prefix: &str,
        description: &str,
        headers_only: bool,
    ) -> Result<jetstream::consumer::Consumer<jetstream::consumer::pull::OrderedConfig>> {
        self.inner
            .kv
            .stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                description: Some(description.into()),
                filter_subject: format!("{}{prefix}>", self.inner.prefix),
                replay_policy: jetstream::consumer::ReplayPolicy::Instant,
                deliver_policy: jetstream::consumer::DeliverPolicy::All,
                headers_only,
                ..Default::default()
            })
            .await
            .map_err(|e| js_err(CREATE_READER)(e.to_string()))
    }

    /// Every stored message whose key starts with `prefix`, in order, read one at a time from
    /// the bucket's leader (`STREAM.MSG.GET`, next by subject): no consumer to create, so no
    /// need of the JetStream meta leader; one request per message. The subject, whether it is
    /// a delete or purge marker, and the value.
    async fn read_from_leader(&self, prefix: &str) -> Result<Vec<(String, bool, Bytes)>> {
        let subject = format!("{}{prefix}>", self.inner.prefix);
        let mut out = Vec::new();
        let mut seq = 1;
        loop {
            let got = self
                .inner
                .kv
                .stream
                .raw_message_builder()
                .sequence(seq)
                .next_by_subject(subject.clone())
                .send()
                .await;
            match got {
                Ok(m) => {
                    let deleted = m
                        .headers
                        .get(KV_OPERATION)
                        .is_some_and(|op| op.as_str() != "PUT");
                    seq = m.sequence + 1;
                    out.push((m.subject.to_string(), deleted, m.payload));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        jetstream::stream::RawMessageErrorKind::NoMessageFound
                    ) =>
                {
                    return Ok(out);
                }
                Err(e) => return Err(js_err("read state bucket")(e.to_string())),
            }
        }
    }

    /// The latest value of every key starting with `prefix` (deleted keys left out). The
    /// bucket keeps one message per key (its history is 1), so reading every stored message
    /// in order reads every key's latest value.
    async fn read_all(&self, prefix: &str, via: Via) -> Result<Vec<(String, Bytes)>> {
        let err = js_err("read state bucket");
        let mut latest: HashMap<String, Option<Bytes>> = HashMap::new();
        if via == Via::Leader {
            for (subject, deleted, value) in self.read_from_leader(prefix).await? {
                if let Some(key) = subject.strip_prefix(self.inner.prefix.as_str()) {
                    latest.insert(key.to_owned(), (!deleted).then_some(value));
                }
            }
            return Ok(latest
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect());
        }
        let consumer = self.reader(prefix, "palisade state read", false).await?;
        if consumer.cached_info().num_pending == 0 {
            return Ok(Vec::new());
        }
        let mut messages = consumer.messages().await.map_err(|e| err(e.to_string()))?;
        while let Some(msg) = messages.next().await {
            let msg = msg.map_err(|e| err(e.to_string()))?;
            let pending = msg.info().map_err(|e| err(e.to_string()))?.pending;
            let deleted = msg
                .headers
                .as_ref()
                .and_then(|h| h.get(KV_OPERATION))
                .is_some_and(|op| op.as_str() != "PUT");
            if let Some(key) = msg.subject.strip_prefix(self.inner.prefix.as_str()) {
                latest.insert(key.to_owned(), (!deleted).then(|| msg.payload.clone()));
            }
            if pending == 0 {
                break;
            }
        }
        Ok(latest
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect())
    }

    /// Commit batches (in order) as fenced writes.
    pub async fn commit_all(&self, batches: &[Batch]) -> Result<()> {
        // The last prune says all: it keeps fewer entries than any before it.
        if let Some(prune) = batches.iter().rev().find_map(|b| b.history_prune.as_ref()) {
            self.prune_history(prune).await?;
        }
        // Later batches win: one write per key.
        let mut last: HashMap<String, Option<Bytes>> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut set = |key: String, value: Option<Bytes>| {
            if last.insert(key.clone(), value).is_none() {
                order.push(key);
            }
        };
        for batch in batches {
            for rec in &batch.upserts {
                set(
                    format!("{BLOCK}{}", key_of(&rec.cidr)),
                    Some(encode(rec)?.into()),
                );
            }
            for net in &batch.removes {
                set(format!("{BLOCK}{}", key_of(net)), None);
            }
            for (net, o) in &batch.offences {
                set(format!("{OFFENCE}{}", key_of(net)), Some(encode(o)?.into()));
            }
            for net in &batch.forget_offences {
                set(format!("{OFFENCE}{}", key_of(net)), None);
            }
            for (net, hits) in &batch.pending {
                let value = match hits {
                    Some(h) => Some(encode(h)?.into()),
                    None => None,
                };
                set(format!("{PENDING}{}", key_of(net)), value);
            }
            for e in &batch.history {
                set(Self::history_key(&e.cidr, e.id), Some(encode(e)?.into()));
            }
        }
        let ops = order
            .into_iter()
            .map(|k| match last.remove(&k).flatten() {
                Some(v) => Op::Put(k, v),
                None => Op::Purge(k),
            })
            .collect();
        self.write(ops).await
    }

    /// Record firewall entries as ours (before they are added) or forget them (after removal).
    pub async fn set_owned(&self, add: &BTreeSet<IpNet>, remove: &BTreeSet<IpNet>) -> Result<()> {
        let now = Bytes::from(Utc::now().timestamp_millis().to_string());
        let ops = add
            .iter()
            .map(|n| Op::Put(format!("{OWNED}{}", key_of(n)), now.clone()))
            .chain(
                remove
                    .iter()
                    .map(|n| Op::Purge(format!("{OWNED}{}", key_of(n)))),
            )
            .collect();
        self.write(ops).await
    }

    /// Write `ops` in pieces of at most [`WRITE_CHUNK`], taking the writer lock for each: a
    /// renewal waiting for the lock (it is fair) goes between two pieces, so a commit of
    /// thousands of keys on a loaded cluster cannot hold the lease past its validity. A
    /// commit was never atomic across messages (a holder killed mid-commit leaves a prefix
    /// of it, which the next holder's reconcile takes from there), so the pieces add no new
    /// outcome.
    async fn write(&self, mut ops: Vec<Op>) -> Result<()> {
        while !ops.is_empty() {
            let rest = ops.split_off(ops.len().min(WRITE_CHUNK));
            let mut w = self.inner.writer.lock().await;
            self.write_locked(&mut w, ops).await?;
            drop(w);
            ops = rest;
        }
        Ok(())
    }

    /// The fenced write: refuses without a valid lease; sends the first message alone, the
    /// rest pipelined, each expecting the sequence of the one before; on an error, checks the
    /// stream for whose messages landed and either retries (ours) or fences (someone else's).
    async fn write_locked(&self, w: &mut Writer, ops: Vec<Op>) -> Result<()> {
        let mut attempt = 0;
        loop {
            if self.is_fenced() {
                return Err(Error::Fenced("a newer lease holder wrote the state".into()));
            }
            let Some(held) = w.lease.as_mut() else {
                return Err(Error::NotLeader);
            };
            if self.lease_valid_until().is_none_or(|t| Instant::now() >= t) {
                return Err(Error::Fenced(format!(
                    "the lease was not renewed within {} ms; not writing",
                    held.lease.ttl_ms
                )));
            }
            match self.send(held, &ops).await {
                Ok(()) => return Ok(()),
                Err(message) => {
                    attempt += 1;
                    match self.resync(held).await {
                        Ok(()) if attempt < 5 => {
                            warn!(cause = %message, attempt, "state write failed; retrying");
                            tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
                        }
                        Ok(()) => return Err(js_err("write state")(message)),
                        Err(err @ Error::Fenced(_)) => {
                            self.inner.fenced.store(true, Relaxed);
                            return Err(err);
                        }
                        Err(err) => return Err(err),
                    }
                }
            }
        }
    }

    /// Send `ops` after `held.last_seq`; on success `held.last_seq` is the last one's sequence.
    async fn send(&self, held: &mut Held, ops: &[Op]) -> std::result::Result<(), String> {
        let publish = |op: &Op, expect: u64| {
            let (key, msg) = match op {
                Op::Put(k, v) => (k, PublishMessage::build().payload(v.clone())),
                Op::Purge(k) => (
                    k,
                    PublishMessage::build()
                        .header(KV_OPERATION, "PURGE")
                        .header(ROLLUP, "sub"),
                ),
            };
            let msg = msg
                .expected_last_sequence(expect)
                .header(WRITER_HEADER, held.writer_id.as_str());
            (format!("{}{key}", self.inner.prefix), msg)
        };
        let Some((first, rest)) = ops.split_first() else {
            return Ok(());
        };
        let (subject, msg) = publish(first, held.last_seq);
        let ack = self
            .inner
            .js
            .send_publish(subject, msg)
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| describe(&e))?;
        held.last_seq = ack.sequence;
        let mut acks = Vec::with_capacity(rest.len());
        for (i, op) in rest.iter().enumerate() {
            let (subject, msg) = publish(op, held.last_seq + i as u64);
            acks.push(
                self.inner
                    .js
                    .send_publish(subject, msg)
                    .await
                    .map_err(|e| e.to_string())?,
            );
        }
        for ack in acks {
            let ack = ack.await.map_err(|e| describe(&e))?;
            held.last_seq = ack.sequence;
        }
        Ok(())
    }

    /// After a failed write: find out whose messages follow our last known sequence.
    async fn resync(&self, held: &mut Held) -> Result<()> {
        let err = js_err("check state bucket");
        let mut stream = self.inner.kv.stream.clone();
        let last = stream
            .info()
            .await
            .map_err(|e| err(e.to_string()))?
            .state
            .last_sequence;
        if last < held.last_seq {
            return Err(Error::Fenced(format!(
                "the bucket's last sequence {last} is behind ours {}",
                held.last_seq
            )));
        }
        for seq in held.last_seq + 1..=last {
            let writer = match stream.get_raw_message(seq).await {
                Ok(m) => m
                    .headers
                    .get(WRITER_HEADER)
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default(),
                // Purged by a later rollup of the same key: a later message tells.
                Err(e) if e.to_string().contains("no message found") => continue,
                Err(e) => return Err(err(e.to_string())),
            };
            if writer != held.writer_id {
                return Err(Error::Fenced(format!(
                    "message {seq} of the state bucket was written by {}",
                    if writer.is_empty() {
                        "another client"
                    } else {
                        &writer
                    }
                )));
            }
        }
        held.last_seq = last;
        Ok(())
    }
}

/// How long a renewal sent at some instant lets the holder write: the lease time minus a
/// margin (a fifth, at least 500 ms), so the holder stops before any standby can see the
/// lease expire.
pub fn validity(ttl: Duration) -> Duration {
    ttl.saturating_sub((ttl / 5).max(Duration::from_millis(500)))
}

fn describe(e: &async_nats::jetstream::context::PublishError) -> String {
    match e.kind() {
        PublishErrorKind::WrongLastSequence => format!("fenced: {e}"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_for_both_families() {
        for s in ["8.8.8.8/32", "2606:4700::1/128", "10.0.0.0/24", "::/0"] {
            let net: IpNet = s.parse().unwrap();
            let key = key_of(&net);
            assert!(
                key.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-/_=.".contains(c)),
                "{key}"
            );
            assert_eq!(net_of(&key).unwrap(), net);
        }
    }

    #[test]
    fn validity_leaves_a_margin() {
        assert_eq!(validity(Duration::from_secs(5)), Duration::from_secs(4));
        assert_eq!(validity(Duration::from_secs(1)), Duration::from_millis(500));
        assert_eq!(validity(Duration::from_millis(300)), Duration::ZERO);
    }
}
