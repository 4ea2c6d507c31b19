//! The proxy source, for applications with no proxy in the pod (a Go, Java or Node server
//! behind the load balancer): the sensor listens on the service port and forwards each
//! connection to the application on localhost, byte for byte in both directions, as the bytes
//! come (no request is buffered before it is forwarded, nothing is rewritten).
//!
//! Every run of client bytes is forwarded first, then offered as a copy to the
//! [`crate::tap`] worker, which reassembles and inspects it as the eBPF path does, with the TCP
//! peer (the load balancer) as the peer for attribution. When inspection falls behind, copies
//! are dropped and counted and the bytes still flow: the sensor fails open.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::reassembly::FlowKey;
use crate::tap::{Copy, SkipUntil, Tap, flow_key};

/// Bytes read from a client per read (one copy at most this long).
const READ_CHUNK: usize = 16 * 1024;

/// Forward connections from `listener` to `upstream` until `shutdown` resolves; at most
/// `max_connections` at once (the rest wait in the listen backlog).
pub async fn serve(
    listener: TcpListener,
    upstream: SocketAddr,
    max_connections: usize,
    tap: Tap,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (client, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    warn!(cause = %err, "proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        metrics.proxy_connections.fetch_add(1, Ordering::Relaxed);
        let Ok(local) = client.local_addr() else {
            continue;
        };
        let tap = tap.clone();
        let metrics = metrics.clone();
        conns.spawn(async move {
            let _slot = slot;
            if let Err(err) = forward(client, flow_key(peer, local), upstream, tap, &metrics).await
            {
                debug!(cause = %err, peer = %peer, "proxied connection ended with an error");
            }
        });
    }
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    info!("proxy source stopped");
}

/// Pump one client connection to the application and back.
async fn forward(
    client: TcpStream,
    key: FlowKey,
    upstream: SocketAddr,
    tap: Tap,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let app = match TcpStream::connect(upstream).await {
        Ok(s) => s,
        Err(err) => {
            metrics
                .proxy_upstream_errors
                .fetch_add(1, Ordering::Relaxed);
            warn!(cause = %err, upstream = %upstream, "application unreachable; client connection closed");
            return Err(err);
        }
    };
    let _ = client.set_nodelay(true);
    let _ = app.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (app_read, app_write) = app.into_split();
    let up = client_to_app(client_read, app_write, key, tap, metrics);
    let down = app_to_client(app_read, client_write, metrics);
    let (up, down) = tokio::join!(up, down);
    up.and(down)
}

/// Client bytes to the application, each run then offered for inspection; at the client's end
/// of stream the application's side is half-closed (it may still answer).
async fn client_to_app(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    key: FlowKey,
    tap: Tap,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let mut seq = 0u32;
    let skip = Arc::new(SkipUntil::default());
    let result = pump(&mut from, &mut to, |chunk| {
        let n = chunk.len();
        metrics
            .proxy_bytes_in
            .fetch_add(n as u64, Ordering::Relaxed);
        let len = u32::try_from(n).unwrap_or(u32::MAX);
        // Bytes the reassembler said it will not need (a body past the inspection bound) go
        // as their length alone, the rest of the run as bytes.
        let skipped = skip.skippable(seq).min(len);
        let mut offered = true;
        if skipped > 0 {
            metrics
                .proxy_bytes_not_copied
                .fetch_add(u64::from(skipped), Ordering::Relaxed);
            offered &= tap.offer(Copy {
                key,
                seq,
                len: skipped,
                data: Bytes::new(),
                end: false,
                skip: Some(skip.clone()),
            });
        }
        if skipped < len {
            offered &= tap.offer(Copy {
                key,
                seq: seq.wrapping_add(skipped),
                len: len - skipped,
                data: Bytes::copy_from_slice(&chunk[skipped as usize..]),
                end: false,
                skip: Some(skip.clone()),
            });
        }
        if !offered {
            metrics.proxy_copies_dropped.fetch_add(1, Ordering::Relaxed);
        }
        seq = seq.wrapping_add(len);
    })
    .await;
    // The flow ends for the reassembler either way (if this is dropped, it expires idle).
    let _ = tap.offer(Copy {
        key,
        seq,
        len: 0,
        data: Bytes::new(),
        end: true,
        skip: None,
    });
    let _ = to.shutdown().await;
    result
}

async fn app_to_client(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    metrics: &Metrics,
) -> std::io::Result<()> {
    let result = pump(&mut from, &mut to, |chunk| {
        metrics
            .proxy_bytes_out
            .fetch_add(chunk.len() as u64, Ordering::Relaxed);
    })
    .await;
    let _ = to.shutdown().await;
    result
}

/// Copies `from` to `to` until end of stream or an error, reads of at most [`READ_CHUNK`]
/// bytes; `forwarded` sees each run once it is written.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    mut forwarded: impl FnMut(&[u8]),
) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = match from.read(&mut buf).await? {
            0 => return Ok(()),
            n => n,
        };
        to.write_all(&buf[..n]).await?;
        forwarded(&buf[..n]);
    }
}
