//! NATS side: connect, create or check the stream and the durable pull consumer, and the
//! consume loop (fetch a batch, process it, persist, then ack).
//!
//! An existing stream or consumer keeps its settings; those that differ from the configuration
//! are logged (`setting`, `configured`, `actual`). The stream's `max_age`, `duplicate_window`,
//! `replicas`, `max_bytes` and `discard` are updated to the configured values; its retention
//! cannot change on an existing stream, and the consumer is left as it is.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;
use tracing::{debug, error, info, instrument, warn};

use palisade_wire::nats::StreamSettings;

use crate::config::NatsConfig;
use crate::engine::{Disposition, Engine, Incoming};
use crate::error::{Error, Result};
use crate::identity::SensorGate;

/// Connect with the configured authentication and TLS. `connected` follows the connection
/// state (for `/readyz`). The client reconnects by itself with a capped backoff.
#[instrument(skip_all, fields(url = %palisade_wire::nats::mask_passwords(&config.url)))]
pub async fn connect(
    config: &NatsConfig,
    connected: Arc<AtomicBool>,
) -> Result<async_nats::Client> {
    let mut opts = config
        .auth()
        .connect_options("palisade-blocker")
        .await
        .map_err(|e| connect_error(config, e))?
        .custom_inbox_prefix(&config.inbox_prefix);
    let max = Duration::from_secs(config.reconnect_max_secs.max(1));
    let flag = Arc::clone(&connected);
    opts = opts
        .retry_on_initial_connect()
        .reconnect_delay_callback(move |attempts| {
            let exp = attempts.min(16) as u32;
            Duration::from_millis(100u64.saturating_mul(1 << exp.min(10))).min(max)
        })
        .event_callback(move |event| {
            let flag = Arc::clone(&flag);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        flag.store(true, Relaxed);
                        info!("NATS connected");
                    }
                    async_nats::Event::Disconnected | async_nats::Event::Closed => {
                        flag.store(false, Relaxed);
                        warn!(event = %event, "NATS connection lost");
                    }
                    other => warn!(event = %other, "NATS event"),
                }
            }
        });
    let servers =
        palisade_wire::nats::server_addrs(&config.url).map_err(|e| connect_error(config, e))?;
    let client = opts
        .connect(servers)
        .await
        .map_err(|e| connect_error(config, e))?;
    if client.connection_state() == async_nats::connection::State::Connected {
        connected.store(true, Relaxed);
    }
    Ok(client)
}

/// [`Error::NatsConnect`] for the configured URL list (passwords masked), keeping the cause
/// as its source.
fn connect_error(
    config: &NatsConfig,
    source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> Error {
    Error::NatsConnect {
        url: palisade_wire::nats::mask_passwords(&config.url),
        source: source.into(),
    }
}

/// A setting of an existing consumer that differs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Drift {
    setting: &'static str,
    configured: String,
    actual: String,
}

fn drift<T: PartialEq + std::fmt::Debug>(
    out: &mut Vec<Drift>,
    setting: &'static str,
    configured: T,
    actual: T,
) {
    if configured != actual {
        out.push(Drift {
            setting,
            configured: format!("{configured:?}"),
            actual: format!("{actual:?}"),
        });
    }
}

/// The consumer settings we configure that `actual` does not have.
fn consumer_drift(config: &NatsConfig, actual: &consumer::Config) -> Vec<Drift> {
    let mut out = Vec::new();
    drift(
        &mut out,
        "ack_wait",
        Duration::from_secs(config.ack_wait_secs),
        actual.ack_wait,
    );
    drift(
        &mut out,
        "max_ack_pending",
        config.max_ack_pending,
        actual.max_ack_pending,
    );
    drift(
        &mut out,
        "max_deliver",
        config.max_deliver,
        actual.max_deliver,
    );
    out
}

/// Bring an existing stream's updatable settings (`max_age`, `duplicate_window`, `replicas`,
/// `max_bytes`, `discard`) to the configured values in one UpdateStream; warn about each
/// setting that still differs. Never fails: the stream works either way (a replica count the
/// cluster cannot place is refused by NATS, and logged with a hint).
async fn reconcile_stream(
    js: &jetstream::Context,
    settings: &StreamSettings,
    actual: &stream::Config,
) {
    let drifts = settings.drift(actual);
    let updated = match settings.updated(actual) {
        Some(want) => match js.update_stream(&want).await {
            Ok(_) => true,
            Err(err) => {
                warn!(
                    cause = %format!("{err}{}", settings.failure_hint()),
                    stream = %settings.name,
                    "cannot update the stream"
                );
                false
            }
        },
        None => false,
    };
    for d in &drifts {
        if d.updatable && updated {
            info!(
                stream = %settings.name,
                setting = d.setting,
                configured = %d.configured,
                was = %d.actual,
                "stream setting updated to the configured value"
            );
        } else if d.updatable {
            warn!(
                stream = %settings.name,
                setting = d.setting,
                configured = %d.configured,
                actual = %d.actual,
                "stream setting differs from the configuration; left as it is"
            );
        } else {
            warn!(
                stream = %settings.name,
                setting = d.setting,
                configured = %d.configured,
                actual = %d.actual,
                "stream setting differs from the configuration; NATS cannot change it on an \
                 existing stream (recreate the stream to apply it)"
            );
        }
    }
}

/// Create the stream if missing (the settings of [`NatsConfig::stream_settings`], shared with
/// the sensor); check an existing one captures the report subjects, bring its updatable
/// settings to the configured values and warn about a different retention.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<jetstream::stream::Stream> {
    let settings = config.stream_settings();
    let mut stream = js
        .get_or_create_stream(settings.config())
        .await
        .map_err(|e| Error::JetStream {
            what: "create stream",
            message: format!("{e}{}", settings.failure_hint()),
        })?;
    let info = stream.info().await.map_err(|e| Error::JetStream {
        what: "stream info",
        message: e.to_string(),
    })?;
    if !StreamSettings::covers_reports(&info.config) {
        // A configuration problem, not a passing one: reported at once, never retried.
        return Err(Error::Config(format!(
            "stream {} exists but captures {:?}, not {}",
            config.stream,
            info.config.subjects,
            palisade_wire::SUBJECT_WILDCARD
        )));
    }
    let actual = info.config.clone();
    reconcile_stream(js, &settings, &actual).await;
    Ok(stream)
}

/// Create or bind the durable pull consumer shared by all replicas. An existing consumer is
/// used as it is; each setting that differs from the configuration is logged.
pub async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    config: &NatsConfig,
) -> Result<consumer::PullConsumer> {
    ensure_consumer_from(stream, config, None).await
}

/// [`ensure_consumer`]; a consumer it has to create starts at stream sequence `start` when
/// given (else at the stream's first report).
async fn ensure_consumer_from(
    stream: &jetstream::stream::Stream,
    config: &NatsConfig,
    start: Option<u64>,
) -> Result<consumer::PullConsumer> {
    let deliver_policy = match start {
        Some(start_sequence) => consumer::DeliverPolicy::ByStartSequence { start_sequence },
        None => consumer::DeliverPolicy::All,
    };
    let consumer = stream
        .get_or_create_consumer(
            &config.consumer,
            consumer::pull::Config {
                deliver_policy,
                durable_name: Some(config.consumer.clone()),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(config.ack_wait_secs),
                max_ack_pending: config.max_ack_pending,
                max_deliver: config.max_deliver,
                filter_subject: palisade_wire::SUBJECT_WILDCARD.to_string(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| Error::JetStream {
            what: "create consumer",
            message: e.to_string(),
        })?;
    for d in consumer_drift(config, &consumer.cached_info().config) {
        warn!(
            consumer = %config.consumer,
            setting = d.setting,
            configured = %d.configured,
            actual = %d.actual,
            "consumer setting differs from the configuration; left as it is (edit or delete \
             the consumer to apply it)"
        );
    }
    Ok(consumer)
}

/// Consume until `shutdown` resolves. Reports on the subject of a sensor that `accepted` does
/// not list are rejected (and terminated) without reaching the engine. A batch in hand when it does is processed, persisted
/// and acked before this returns; messages fetched but not yet processed are nak'ed so that
/// JetStream redelivers them at once (to another replica, or after a restart).
///
/// A reader task keeps polling the pull subscription (which is what issues the next pull
/// requests) while the engine processes and commits the previous batch, so fetching overlaps
/// processing. Stream errors (server restart, two missed idle heartbeats) restart the pull subscription
/// after a capped backoff; unacked messages come back after `ack_wait`.
///
/// A consumer that is gone (deleted by an operator to change its settings, or lost with the
/// stream's state) answers a pull with "consumer deleted", "no responders" or silence: after
/// any of them the consumer is bound again from `nats`, created if missing (starting after
/// the last report pulled, so that nothing is decided twice), and pulling goes on.
pub async fn consume(
    mut consumer: consumer::PullConsumer,
    stream: &jetstream::stream::Stream,
    config: &crate::Config,
    client: async_nats::Client,
    engine: Arc<Engine>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let nats = &config.nats;
    let accepted = nats.accepted_sensors.clone();
    let batch_size = config.pipeline.batch_size;
    // Each pull waits `expires` at the server and asks for an idle heartbeat: a pull request
    // can vanish without a word (its consumer's leader changed, or the consumer was re-created
    // by a replica starting beside this one while the request waited); two missed heartbeats
    // end the subscription and it is pulled again, where without them nothing would be pulled
    // until the request expired.
    let expires = Duration::from_secs(nats.pull_expires_secs);
    let heartbeat = Duration::from_secs(nats.pull_heartbeat_secs);
    let backoff_max = Duration::from_secs(nats.reconnect_max_secs.max(1));
    tokio::pin!(shutdown);
    let mut delay = Duration::from_millis(100);
    // The highest stream sequence pulled: where a re-created consumer starts (after it).
    let mut last_seq = 0u64;
    let mut pending: Vec<jetstream::Message> = Vec::new();
    // Acks wait for durability in their own task, so the next batch is decided meanwhile.
    // Batches decided but not yet durable: enough to keep deciding through a commit (an
    // fsync of a few ms covers several batches; the committer takes them in one transaction).
    // JetStream bounds the whole with max_ack_pending.
    let (ack_tx, ack_rx) = tokio::sync::mpsc::channel(64);
    let acker = tokio::spawn(acker(ack_rx));
    let gate = SensorGate::new(accepted, Arc::clone(engine.metrics()));
    'outer: loop {
        let messages = tokio::select! {
            _ = &mut shutdown => break,
            m = consumer
                .stream()
                .max_messages_per_batch(batch_size)
                .expires(expires)
                .heartbeat(heartbeat)
                .messages() => m,
        };
        let mut messages = match messages {
            Ok(m) => m,
            Err(err) => {
                warn!(cause = %err, retry_in_ms = delay.as_millis() as u64, "cannot start pulling");
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(backoff_max);
                continue;
            }
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(batch_size * 2);
        let state = client.clone();
        let reader = tokio::spawn(async move {
            while let Some(item) = messages.next().await {
                // While the connection is down no heartbeat can arrive; the subscription (and
                // its inbox, where the pulled reports are on their way) survives the
                // reconnect, and the client pulls again once connected. Only silence on a
                // live connection means the pull request is gone.
                if let Err(err) = &item
                    && err.kind() == consumer::pull::MessagesErrorKind::MissingHeartbeat
                    && state.connection_state() != async_nats::connection::State::Connected
                {
                    debug!("idle heartbeat missed while disconnected; waiting for the reconnect");
                    continue;
                }
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
        let mut buf = Vec::with_capacity(batch_size);
        loop {
            let n = tokio::select! {
                biased;
                _ = &mut shutdown => {
                    reader.abort();
                    rx.close();
                    while let Some(Ok(m)) = rx.recv().await {
                        pending.push(m);
                    }
                    break 'outer;
                }
                n = rx.recv_many(&mut buf, batch_size) => n,
            };
            if n == 0 {
                warn!("pull subscription ended, restarting");
                continue 'outer;
            }
            let mut msgs = Vec::with_capacity(buf.len());
            let mut failed = None;
            for item in buf.drain(..) {
                match item {
                    Ok(m) => msgs.push(m),
                    Err(err) => failed = Some(err),
                }
            }
            if let Some(seq) = msgs
                .iter()
                .filter_map(|m| m.info().ok().map(|i| i.stream_sequence))
                .max()
            {
                last_seq = last_seq.max(seq);
            }
            if !msgs.is_empty() {
                delay = Duration::from_millis(100);
                handle(&engine, &gate, msgs, &ack_tx).await;
            }
            if let Some(err) = failed {
                reader.abort();
                warn!(cause = %err, retry_in_ms = delay.as_millis() as u64, "pull subscription failed, restarting");
                if matches!(
                    err.kind(),
                    consumer::pull::MessagesErrorKind::ConsumerDeleted
                        | consumer::pull::MessagesErrorKind::NoResponders
                        | consumer::pull::MessagesErrorKind::MissingHeartbeat
                ) {
                    // A consumer created now starts after the last report this one saw,
                    // not at the stream's first (which would decide a day of reports again).
                    let start = consumer
                        .cached_info()
                        .ack_floor
                        .stream_sequence
                        .max(last_seq)
                        + 1;
                    match ensure_consumer_from(stream, nats, Some(start)).await {
                        Ok(c) => {
                            warn!(
                                consumer = %nats.consumer,
                                "pulled again on the consumer, bound afresh (created if it was gone)"
                            );
                            consumer = c;
                        }
                        Err(e) => warn!(cause = %e, "cannot bind the consumer again"),
                    }
                }
                tokio::select! {
                    _ = &mut shutdown => break 'outer,
                    _ = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(backoff_max);
                continue 'outer;
            }
        }
    }
    // Every decided batch is acked once durable.
    drop(ack_tx);
    if let Err(err) = acker.await {
        error!(cause = %err, "ack task failed");
    }
    // Fetched but never processed: hand them back for immediate redelivery.
    for m in &pending {
        if let Err(err) = m.ack_with(AckKind::Nak(None)).await {
            warn!(cause = %err, "nak on shutdown failed");
        }
    }
    // Make sure the last acks leave the client buffer.
    if let Err(err) = client.flush().await {
        error!(cause = %err, "flushing acks on shutdown failed");
    }
    info!(returned = pending.len(), "consumer stopped");
}

type Decided = (
    Vec<jetstream::Message>,
    Vec<Disposition>,
    crate::engine::Durable,
);

/// Decide a batch and queue it for acking. Messages on the subject of a sensor that
/// `accepted_sensors` does not list are rejected by the gate without reaching the engine.
async fn handle(
    engine: &Engine,
    gate: &SensorGate,
    msgs: Vec<jetstream::Message>,
    acks: &tokio::sync::mpsc::Sender<Decided>,
) {
    let admitted: Vec<bool> = if gate.open() {
        vec![true; msgs.len()]
    } else {
        msgs.iter()
            .map(|m| gate.admit(m.subject.as_str()))
            .collect()
    };
    let incoming: Vec<Incoming> = msgs
        .iter()
        .zip(&admitted)
        .filter(|(_, ok)| **ok)
        .map(|(m, _)| Incoming {
            subject: m.subject.to_string(),
            payload: m.payload.clone(),
        })
        .collect();
    let (decided, durable) = engine.decide(&incoming).await;
    let mut decided = decided.into_iter();
    let dispositions = admitted
        .iter()
        .map(|ok| match ok {
            // The engine decides exactly one disposition per message it is given.
            true => decided.next().unwrap_or(Disposition::Ack),
            false => Disposition::Reject(crate::identity::NOT_ACCEPTED),
        })
        .collect();
    if acks.send((msgs, dispositions, durable)).await.is_err() {
        error!("ack task is gone; the batch will be redelivered");
    }
}

async fn acker(mut rx: tokio::sync::mpsc::Receiver<Decided>) {
    while let Some((msgs, dispositions, durable)) = rx.recv().await {
        if !durable.wait().await {
            // Not durable: leave the messages unacked, JetStream redelivers them.
            error!(n = msgs.len(), "batch not persisted; not acking");
            continue;
        }
        for (m, d) in msgs.iter().zip(dispositions) {
            let res = match d {
                Disposition::Ack => m.ack().await,
                Disposition::Reject(_) => m.ack_with(AckKind::Term).await,
            };
            if let Err(err) = res {
                // The message comes back after ack_wait; its effect is already recorded and
                // idempotent (report ids are kept on the block).
                warn!(cause = %err, "ack failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_settings_follow_the_config() {
        let mut config = NatsConfig {
            retention: "workqueue".into(),
            max_age_secs: 60,
            stream_replicas: 3,
            stream_max_bytes: 1 << 30,
            stream_discard: palisade_wire::nats::Discard::New,
            ..NatsConfig::default()
        };
        let c = config.stream_settings().config();
        assert_eq!(c.name, config.stream);
        assert_eq!(c.retention, stream::RetentionPolicy::WorkQueue);
        assert_eq!(c.max_age, Duration::from_secs(60));
        assert_eq!(c.num_replicas, 3);
        assert_eq!(c.max_bytes, 1 << 30);
        assert_eq!(c.discard, stream::DiscardPolicy::New);
        // The defaults are the shared ones the sensor creates the stream with.
        config = NatsConfig::default();
        assert_eq!(
            config.stream_settings(),
            palisade_wire::nats::StreamSettings::default()
        );
    }

    /// A connection that cannot start says which URL list it was for and keeps its cause as
    /// the error's source (not flattened into a string).
    #[tokio::test]
    async fn a_connection_error_keeps_its_cause() {
        for url in ["", "nats://127.0.0.1:4222,,nats://127.0.0.1:4223"] {
            let config = NatsConfig {
                url: url.into(),
                ..NatsConfig::default()
            };
            let err = connect(&config, Arc::new(AtomicBool::new(false)))
                .await
                .expect_err("a malformed URL list does not connect");
            assert!(
                matches!(&err, Error::NatsConnect { url: u, .. } if u == url),
                "{err}"
            );
            let cause = std::error::Error::source(&err).map(ToString::to_string);
            assert!(
                cause.as_deref().is_some_and(|c| c.contains("nats.url")),
                "{err}: source {cause:?}"
            );
        }
        // a password in the URL list is not repeated in the error
        let config = NatsConfig {
            url: "nats://palisade:hunter2@127.0.0.1:4222,".into(),
            ..NatsConfig::default()
        };
        let err = connect(&config, Arc::new(AtomicBool::new(false)))
            .await
            .expect_err("a malformed URL list does not connect");
        assert!(matches!(&err, Error::NatsConnect { .. }), "{err}");
        assert!(!err.to_string().contains("hunter2"), "{err}");
        assert!(err.to_string().contains("palisade:***@"), "{err}");
    }

    #[test]
    fn consumer_drift_names_each_differing_setting() {
        let config = NatsConfig::default();
        let mut actual = consumer::Config {
            ack_wait: Duration::from_secs(config.ack_wait_secs),
            max_ack_pending: config.max_ack_pending,
            max_deliver: config.max_deliver,
            ..Default::default()
        };
        assert_eq!(consumer_drift(&config, &actual), vec![]);
        actual.ack_wait = Duration::from_secs(config.ack_wait_secs + 1);
        actual.max_ack_pending = config.max_ack_pending + 1;
        let d = consumer_drift(&config, &actual);
        let settings: Vec<&str> = d.iter().map(|d| d.setting).collect();
        assert_eq!(settings, ["ack_wait", "max_ack_pending"]);
        assert_eq!(d[1].configured, config.max_ack_pending.to_string());
        assert_eq!(d[1].actual, (config.max_ack_pending + 1).to_string());
    }

    /// Against a real nats-server: an existing stream gets the configured age and size
    /// limits, keeps its retention; an existing consumer is bound as it is.
    #[tokio::test]
    async fn existing_stream_is_updated_and_consumer_kept() {
        let server = palisade_tests::nats::NatsServer::start().await.unwrap();
        let js = server.jetstream().await.unwrap();
        let config = NatsConfig::default();
        let mut old = config.stream_settings().config();
        old.retention = stream::RetentionPolicy::Interest;
        old.max_age = Duration::from_secs(60);
        old.duplicate_window = Duration::from_secs(10);
        old.max_bytes = 1 << 20;
        old.discard = stream::DiscardPolicy::New;
        js.create_stream(old).await.unwrap();
        let created = js.get_stream(&config.stream).await.unwrap();
        created
            .create_consumer(consumer::pull::Config {
                durable_name: Some(config.consumer.clone()),
                ack_wait: Duration::from_secs(5),
                ..Default::default()
            })
            .await
            .unwrap();

        let mut stream = ensure_stream(&js, &config).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(
            info.config.max_age,
            Duration::from_secs(config.max_age_secs)
        );
        assert_eq!(
            info.config.duplicate_window,
            Duration::from_secs(config.duplicate_window_secs)
        );
        assert_eq!(info.config.max_bytes, -1);
        assert_eq!(info.config.discard, stream::DiscardPolicy::Old);
        assert_eq!(info.config.retention, stream::RetentionPolicy::Interest);
        assert_eq!(info.config.subjects, [palisade_wire::SUBJECT_WILDCARD]);

        let mut consumer = ensure_consumer(&stream, &config).await.unwrap();
        let info = consumer.info().await.unwrap();
        assert_eq!(info.config.ack_wait, Duration::from_secs(5));
    }
}
