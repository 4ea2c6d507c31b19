//! NATS side: connect, create or check the stream and the durable pull consumer, and the
//! consume loop (fetch a batch, process it, persist, then ack).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures_util::StreamExt;
use tracing::{error, info, instrument, warn};

use crate::config::NatsConfig;
use crate::engine::{Disposition, Engine, Incoming};
use crate::error::{Error, Result};

/// Connect with the configured authentication and TLS. `connected` follows the connection
/// state (for `/readyz`). The client reconnects by itself with a capped backoff.
#[instrument(skip_all, fields(url = %config.url))]
pub async fn connect(
    config: &NatsConfig,
    connected: Arc<AtomicBool>,
) -> Result<async_nats::Client> {
    let mut opts = config
        .auth()
        .connect_options("palisade-blocker")
        .await
        .map_err(|e| Error::NatsConnect(e.to_string()))?;
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
    let client = opts
        .connect(config.url.as_str())
        .await
        .map_err(|e| Error::NatsConnect(e.to_string()))?;
    if client.connection_state() == async_nats::connection::State::Connected {
        connected.store(true, Relaxed);
    }
    Ok(client)
}

fn retention(s: &str) -> stream::RetentionPolicy {
    match s {
        "interest" => stream::RetentionPolicy::Interest,
        "workqueue" => stream::RetentionPolicy::WorkQueue,
        _ => stream::RetentionPolicy::Limits,
    }
}

/// Create the stream if missing; check an existing one captures the report subjects.
pub async fn ensure_stream(
    js: &jetstream::Context,
    config: &NatsConfig,
) -> Result<jetstream::stream::Stream> {
    let mut stream = js
        .get_or_create_stream(stream::Config {
            name: config.stream.clone(),
            subjects: vec![palisade_wire::SUBJECT_WILDCARD.to_string()],
            retention: retention(&config.retention),
            max_age: Duration::from_secs(config.max_age_secs),
            duplicate_window: Duration::from_secs(config.duplicate_window_secs),
            storage: stream::StorageType::File,
            max_message_size: palisade_wire::MAX_REPORT_BYTES as i32 * 2,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::JetStream {
            what: "create stream",
            message: e.to_string(),
        })?;
    let info = stream.info().await.map_err(|e| Error::JetStream {
        what: "stream info",
        message: e.to_string(),
    })?;
    let subjects = &info.config.subjects;
    let covers = subjects
        .iter()
        .any(|s| s == palisade_wire::SUBJECT_WILDCARD || s == ">");
    if !covers {
        return Err(Error::JetStream {
            what: "check stream",
            message: format!(
                "stream {} exists but captures {subjects:?}, not {}",
                config.stream,
                palisade_wire::SUBJECT_WILDCARD
            ),
        });
    }
    Ok(stream)
}

/// Create or bind the durable pull consumer shared by all replicas.
pub async fn ensure_consumer(
    stream: &jetstream::stream::Stream,
    config: &NatsConfig,
) -> Result<consumer::PullConsumer> {
    stream
        .get_or_create_consumer(
            &config.consumer,
            consumer::pull::Config {
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
        })
}

/// Consume until `shutdown` resolves. A batch in hand when it does is processed, persisted
/// and acked before this returns; messages fetched but not yet processed are nak'ed so that
/// JetStream redelivers them at once (to another replica, or after a restart).
///
/// A reader task keeps polling the pull subscription (which is what issues the next pull
/// requests) while the engine processes and commits the previous batch, so fetching overlaps
/// processing. Stream errors (server restart, missed heartbeats) restart the pull subscription
/// after a capped backoff; unacked messages come back after `ack_wait`.
pub async fn consume(
    consumer: consumer::PullConsumer,
    client: async_nats::Client,
    engine: Arc<Engine>,
    batch_size: usize,
    backoff_max: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let mut delay = Duration::from_millis(100);
    let mut pending: Vec<jetstream::Message> = Vec::new();
    // Acks wait for durability in their own task, so the next batch is decided meanwhile.
    // Batches decided but not yet durable: enough to keep deciding through a commit (an
    // fsync of a few ms covers several batches; the committer takes them in one transaction).
    // JetStream bounds the whole with max_ack_pending.
    let (ack_tx, ack_rx) = tokio::sync::mpsc::channel(64);
    let acker = tokio::spawn(acker(ack_rx));
    'outer: loop {
        let messages = tokio::select! {
            _ = &mut shutdown => break,
            m = consumer.stream().max_messages_per_batch(batch_size).messages() => m,
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
        let reader = tokio::spawn(async move {
            while let Some(item) = messages.next().await {
                let failed = item.is_err();
                if tx.send(item.map_err(|e| e.to_string())).await.is_err() || failed {
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
            if !msgs.is_empty() {
                delay = Duration::from_millis(100);
                handle(&engine, msgs, &ack_tx).await;
            }
            if let Some(err) = failed {
                reader.abort();
                warn!(cause = %err, retry_in_ms = delay.as_millis() as u64, "pull subscription failed, restarting");
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

async fn handle(
    engine: &Engine,
    msgs: Vec<jetstream::Message>,
    acks: &tokio::sync::mpsc::Sender<Decided>,
) {
    let incoming: Vec<Incoming> = msgs
        .iter()
        .map(|m| Incoming {
            subject: m.subject.to_string(),
            payload: m.payload.clone(),
        })
        .collect();
    let (dispositions, durable) = engine.decide(&incoming).await;
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
