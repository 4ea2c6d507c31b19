//! The mirror source: a small HTTP/1.1 server on a local port that the pod's own proxy (nginx
//! `mirror`, Envoy `request_mirror_policies`) sends a copy of every request to.
//!
//! Each mirrored request is read whole (head, and body by its framing: `Content-Length` or
//! chunked), answered `204` at once with an empty body (the proxy ignores mirror responses and
//! keeps the connection alive), and its bytes, up to the inspection bound of the body, are
//! queued for the [`crate::tap`] worker as a connection of their own: the same reassembler,
//! parser, detector and attribution as the eBPF path, off the accept loop. A full queue drops
//! the request (counted); nothing here ever waits on detection, so the proxy is never slowed.
//!
//! The proxy is the only peer: connections from addresses other than loopback are refused.
//! The address to attribute comes from the header the proxy sets ([`crate::tap::PeerFrom`]).
//! Limits keep a misbehaving peer from exhausting memory: at most `max_connections` at once,
//! a head of at most [`ParseLimits::max_head`] bytes, the body kept only up to the bound (the
//! rest is read and discarded), and an idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::config::MirrorConfig;
use crate::http::{self, ChunkedDecoder, Framing, ParseLimits, Request};
use crate::metrics::Metrics;
use crate::reassembly::FlowKey;
use crate::tap::{Copy, Tap};

const NO_CONTENT: &[u8] = b"HTTP/1.1 204 No Content\r\n\r\n";
const NO_CONTENT_CLOSE: &[u8] = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
const BAD_REQUEST: &[u8] =
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 * 1024;
/// Raw body bytes kept beyond the inspection bound, for chunked framing's size lines.
const FRAMING_SLACK: usize = 4 * 1024;

/// Accept mirrored requests on `listener` until `shutdown` resolves; `max_body` raw body bytes
/// of each request are kept for inspection.
pub async fn serve(
    listener: TcpListener,
    config: MirrorConfig,
    max_body: usize,
    tap: Tap,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let limits = Limits {
        head: ParseLimits::default(),
        keep_body: max_body.saturating_add(FRAMING_SLACK),
        idle: Duration::from_secs(config.idle_secs.max(1)),
    };
    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let ids = Arc::new(AtomicU16::new(0));
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(err) => {
                    // Out of descriptors and the like: pause rather than spin.
                    warn!(cause = %err, "mirror accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        if !peer.ip().to_canonical().is_loopback() {
            metrics
                .mirror_connections_refused
                .fetch_add(1, Ordering::Relaxed);
            debug!(peer = %peer, "mirror connection from outside the pod refused");
            continue;
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics
                .mirror_connections_refused
                .fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let local = stream.local_addr().unwrap_or(config.listen);
        let conn = Conn {
            stream,
            buf: BytesMut::with_capacity(READ_CHUNK),
            limits,
            peer,
            local,
            ids: ids.clone(),
            tap: tap.clone(),
            metrics: metrics.clone(),
        };
        conns.spawn(async move {
            let _slot = slot;
            if let Err(err) = conn.run().await {
                debug!(cause = %err, "mirror connection ended");
            }
        });
    }
    // Connections hold queue senders: end them so the worker can drain and stop.
    conns.abort_all();
    while conns.join_next().await.is_some() {}
    info!("mirror source stopped");
}

#[derive(Debug, Clone, Copy)]
struct Limits {
    head: ParseLimits,
    keep_body: usize,
    idle: Duration,
}

struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    limits: Limits,
    peer: SocketAddr,
    local: SocketAddr,
    ids: Arc<AtomicU16>,
    tap: Tap,
    metrics: Arc<Metrics>,
}

impl Conn {
    /// Serve requests until the proxy closes, a request is malformed or the idle time passes.
    async fn run(mut self) -> std::io::Result<()> {
        loop {
            let Some((request, head_len)) = self.read_head().await? else {
                return Ok(());
            };
            let Ok(framing) = http::body_framing(&request) else {
                return self.malformed().await;
            };
            let keep_alive = keep_alive(&request);
            let mut kept = Vec::with_capacity(head_len);
            kept.extend_from_slice(&self.buf[..head_len]);
            self.buf.advance(head_len);
            let mut total = head_len as u64;
            let complete = match framing {
                Framing::None => true,
                Framing::Length(n) => self.read_length(n, &mut kept, &mut total).await?,
                Framing::Chunked => match self.read_chunked(&mut kept, &mut total).await? {
                    Some(complete) => complete,
                    None => return self.malformed().await,
                },
            };
            if !complete {
                // The proxy closed mid-body: nothing to answer, nothing whole to inspect.
                return Ok(());
            }
            self.stream
                .write_all(if keep_alive {
                    NO_CONTENT
                } else {
                    NO_CONTENT_CLOSE
                })
                .await?;
            self.metrics.mirror_requests.fetch_add(1, Ordering::Relaxed);
            let copy = Copy {
                key: self.request_key(),
                seq: 0,
                len: u32::try_from(total).unwrap_or(u32::MAX),
                data: kept.into(),
                end: true,
                skip: None,
            };
            if !self.tap.offer(copy) {
                self.metrics.mirror_dropped.fetch_add(1, Ordering::Relaxed);
            }
            if !keep_alive {
                return Ok(());
            }
        }
    }

    /// Every mirrored request is a connection of its own to the reassembler (it ends with the
    /// request), so a dropped one never puts the next out of sync.
    fn request_key(&self) -> FlowKey {
        FlowKey {
            src: self.peer.ip().to_canonical(),
            src_port: self.ids.fetch_add(1, Ordering::Relaxed),
            dst: self.local.ip().to_canonical(),
            dst_port: self.local.port(),
        }
    }

    /// The next request head and its length; `None` when the proxy closed between requests.
    async fn read_head(&mut self) -> std::io::Result<Option<(Request, usize)>> {
        loop {
            if !self.buf.is_empty() {
                match http::parse_head(&self.buf, &self.limits.head) {
                    Ok(Some((request, Some(len)))) => return Ok(Some((request, len))),
                    // Over the head limit, or not HTTP: where it ends is unknown.
                    Ok(Some((_, None))) | Err(_) => {
                        self.malformed().await?;
                        return Ok(None);
                    }
                    Ok(None) => {}
                }
            }
            if !self.read_more().await? {
                return Ok(None);
            }
        }
    }

    /// Read a `Content-Length` body; `false` when the connection ended first.
    async fn read_length(
        &mut self,
        mut left: u64,
        kept: &mut Vec<u8>,
        total: &mut u64,
    ) -> std::io::Result<bool> {
        while left > 0 {
            if self.buf.is_empty() && !self.read_more().await? {
                return Ok(false);
            }
            let n = usize::try_from(left)
                .unwrap_or(usize::MAX)
                .min(self.buf.len());
            self.keep(kept, n);
            left -= n as u64;
            *total += n as u64;
        }
        Ok(true)
    }

    /// Read a chunked body to its end; `Some(false)` when the connection ended first, `None`
    /// when the framing is broken.
    async fn read_chunked(
        &mut self,
        kept: &mut Vec<u8>,
        total: &mut u64,
    ) -> std::io::Result<Option<bool>> {
        let mut decoder = ChunkedDecoder::new();
        loop {
            if self.buf.is_empty() && !self.read_more().await? {
                return Ok(Some(false));
            }
            match decoder.feed(&self.buf, |_| {}) {
                Ok(Some(n)) => {
                    self.keep(kept, n);
                    *total += n as u64;
                    return Ok(Some(true));
                }
                Ok(None) => {
                    let n = self.buf.len();
                    self.keep(kept, n);
                    *total += n as u64;
                }
                Err(_) => return Ok(None),
            }
        }
    }

    /// Move `n` buffered body bytes out, keeping them while under the bound.
    fn keep(&mut self, kept: &mut Vec<u8>, n: usize) {
        let take = self.limits.keep_body.saturating_sub(kept.len()).min(n);
        kept.extend_from_slice(&self.buf[..take]);
        self.buf.advance(n);
    }

    /// Read more bytes; `false` at the end of the stream. An idle connection is an error.
    async fn read_more(&mut self) -> std::io::Result<bool> {
        if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
            self.buf.reserve(READ_CHUNK);
        }
        match tokio::time::timeout(self.limits.idle, self.stream.read_buf(&mut self.buf)).await {
            Ok(Ok(n)) => Ok(n > 0),
            Ok(Err(err)) => Err(err),
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "mirror connection idle",
            )),
        }
    }

    async fn malformed(&mut self) -> std::io::Result<()> {
        self.metrics
            .mirror_rejected_malformed
            .fetch_add(1, Ordering::Relaxed);
        self.stream.write_all(BAD_REQUEST).await?;
        self.stream.shutdown().await
    }
}

/// HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 only with
/// `Connection: keep-alive`.
fn keep_alive(request: &Request) -> bool {
    if request.versionless {
        return false;
    }
    let tokens = request
        .headers_all("connection")
        .flat_map(|v| v.split(','))
        .map(str::trim);
    let mut keep = request.major == 1 && request.version >= 1;
    for token in tokens {
        if token.eq_ignore_ascii_case("close") {
            return false;
        }
        keep |= token.eq_ignore_ascii_case("keep-alive");
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ReassemblyConfig;
    use crate::pipeline::Origin;
    use crate::tap::PeerFrom;

    async fn server(
        config: MirrorConfig,
        max_body: usize,
    ) -> (
        SocketAddr,
        crate::tap::Worker,
        Arc<Metrics>,
        tokio::sync::oneshot::Sender<()>,
    ) {
        let metrics = Arc::new(Metrics::default());
        let (tap, worker) = crate::tap::channel(
            16,
            1 << 20,
            ReassemblyConfig::default(),
            PeerFrom::Header(config.peer_header.clone()),
            Origin::default(),
        );
        let listener = crate::tap::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        tokio::spawn(serve(
            listener,
            config,
            max_body,
            tap,
            metrics.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        (addr, worker, metrics, stop)
    }

    async fn exchange(stream: &mut TcpStream, send: &[u8], want: &[u8]) {
        stream.write_all(send).await.unwrap();
        let mut got = vec![0; want.len()];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(want));
    }

    #[tokio::test]
    async fn answers_each_request_at_once_on_one_connection() {
        let (addr, _worker, metrics, _stop) = server(MirrorConfig::default(), 1024).await;
        let mut s = TcpStream::connect(addr).await.unwrap();
        exchange(&mut s, b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", NO_CONTENT).await;
        exchange(
            &mut s,
            b"POST /b HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            NO_CONTENT,
        )
        .await;
        exchange(
            &mut s,
            b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            NO_CONTENT,
        )
        .await;
        // A body far over the bound is read through, not kept.
        let mut big = b"POST /d HTTP/1.1\r\nContent-Length: 100000\r\n\r\n".to_vec();
        big.resize(big.len() + 100_000, b'a');
        exchange(&mut s, &big, NO_CONTENT).await;
        exchange(
            &mut s,
            b"GET /e HTTP/1.1\r\nConnection: close\r\n\r\n",
            NO_CONTENT_CLOSE,
        )
        .await;
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "closed after Connection: close");
        assert_eq!(metrics.mirror_requests.load(Ordering::Relaxed), 5);
    }

    #[tokio::test]
    async fn malformed_requests_close_the_connection() {
        let (addr, _worker, metrics, _stop) = server(MirrorConfig::default(), 1024).await;
        for bad in [
            &b"\x16\x03\x01garbage\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(bad).await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, BAD_REQUEST);
        }
        // A head over the limit is refused, not buffered without end.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.resize(64 * 1024, b'a');
        let _ = s.write_all(&huge).await;
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got).await;
        assert!(got.starts_with(b"HTTP/1.1 400"));
        assert_eq!(metrics.mirror_rejected_malformed.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn connections_over_the_limit_are_refused() {
        let config = MirrorConfig {
            max_connections: 1,
            ..MirrorConfig::default()
        };
        let (addr, _worker, metrics, _stop) = server(config, 1024).await;
        let mut first = TcpStream::connect(addr).await.unwrap();
        exchange(&mut first, b"GET / HTTP/1.1\r\n\r\n", NO_CONTENT).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        let mut got = Vec::new();
        let _ = second.read_to_end(&mut got).await;
        assert!(got.is_empty());
        assert_eq!(
            metrics.mirror_connections_refused.load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let req = |major, version, conn: Option<&str>| Request {
            major,
            version,
            headers: conn
                .map(|c| vec![("Connection".to_owned(), c.to_owned())])
                .unwrap_or_default(),
            ..Request::default()
        };
        assert!(keep_alive(&req(1, 1, None)));
        assert!(!keep_alive(&req(1, 1, Some("close"))));
        assert!(!keep_alive(&req(1, 0, None)));
        assert!(keep_alive(&req(1, 0, Some("Keep-Alive"))));
        assert!(!keep_alive(&req(1, 1, Some("keep-alive, close"))));
    }
}
