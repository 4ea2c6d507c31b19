//! Out-of-band inspection for the sources that sit beside or in the request path (mirror,
//! proxy): the network side copies request bytes into a bounded queue and never waits on it;
//! one blocking worker drains the queue through the same [`Reassembler`] and
//! [`Pipeline::handle`] as the eBPF capture, so detection never runs on an accept loop and a
//! slow detector costs inspected requests (counted), never the application's latency.
//!
//! A copy is a run of one connection's client-to-server bytes at a stream offset, exactly
//! what a captured segment is to the reassembler: the proxy hands over each read as it
//! forwards it, the mirror each mirrored request as one connection of its own. A dropped copy
//! is a hole in the stream; the reassembler passes over it inside a body of known length and
//! otherwise resynchronizes, after which proxy headers of that connection are not believed.
//!
//! The reassembler's skip hints (body bytes past the inspection bound, of known length) go back
//! to the proxy through a [`SkipUntil`] per connection, as they go to the kernel on the eBPF
//! path: the proxy then forwards those bytes without copying them, so a large upload neither
//! costs the copy nor fills the queue that other connections' heads need.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::Utc;

use crate::config::ReassemblyConfig;
use crate::http::{ParseLimits, Request};
use crate::metrics::Metrics;
use crate::pipeline::{Origin, Pipeline};
use crate::reassembly::{FlowKey, Reassembler, RequestMeta, Segment};

/// Bind a source's listening port (apart from serving, so that a taken port fails the start).
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, crate::Error> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| crate::Error::Listen { addr, source })
}

/// How often the worker expires idle flows and copies the reassembler's counters to metrics.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// One run of a connection's client-to-server bytes.
#[derive(Debug)]
pub struct Copy {
    /// The connection (client address and port, local address and port).
    pub key: FlowKey,
    /// Offset of `data` in the connection's stream (wrapping, as a TCP sequence number).
    pub seq: u32,
    /// Bytes this run covers in the stream; more than `data.len()` when only a prefix was
    /// kept (the rest of a mirrored body past the inspection bound).
    pub len: u32,
    /// The bytes kept.
    pub data: Bytes,
    /// The client finished sending: the connection's flow ends after this run.
    pub end: bool,
    /// Where the worker tells the connection which bytes it may stop copying (proxy source).
    pub skip: Option<Arc<SkipUntil>>,
}

/// A connection's skip hint: the stream offset up to which the reassembler needs no bytes.
#[derive(Debug, Default)]
pub struct SkipUntil(AtomicU64);

/// Marks a stored offset (offsets are 32-bit, like TCP sequence numbers).
const SKIP_SET: u64 = 1 << 32;

impl SkipUntil {
    /// How many of the bytes at `seq` need not be copied (0 when no skip is pending). A skip
    /// that `seq` has reached is cleared.
    pub fn skippable(&self, seq: u32) -> u32 {
        let v = self.0.load(Ordering::Acquire);
        if v & SKIP_SET == 0 {
            return 0;
        }
        let ahead = (v as u32).wrapping_sub(seq);
        if ahead == 0 || ahead > u32::MAX / 2 {
            // Reached, or behind: done with this hint.
            let _ = self
                .0
                .compare_exchange(v, 0, Ordering::AcqRel, Ordering::Relaxed);
            return 0;
        }
        ahead
    }

    fn set(&self, until: u32) {
        self.0.store(SKIP_SET | u64::from(until), Ordering::Release);
    }
}

/// Where the address handed to attribution as the request's peer comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerFrom {
    /// The TCP peer of the connection (proxy source: the load balancer, or the client).
    Connection,
    /// A header the pod's proxy sets to the address it received the request from (mirror
    /// source). The header is removed before detection; a request without exactly one valid
    /// value is rejected and counted.
    Header(String),
}

/// The sending side: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct Tap {
    tx: SyncSender<Copy>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

impl Tap {
    /// Queue `copy` for inspection; `false` (the copy is dropped) when the queue is full in
    /// count or bytes, or the worker is gone. The caller counts the drop.
    pub fn offer(&self, copy: Copy) -> bool {
        let n = copy.data.len();
        let before = self.queued_bytes.fetch_add(n, Ordering::AcqRel);
        if before.saturating_add(n) > self.max_bytes {
            self.queued_bytes.fetch_sub(n, Ordering::AcqRel);
            return false;
        }
        match self.tx.try_send(copy) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(n, Ordering::AcqRel);
                false
            }
        }
    }
}

/// The inspecting side, run on a blocking thread by [`Worker::run`].
#[derive(Debug)]
pub struct Worker {
    rx: Receiver<Copy>,
    queued_bytes: Arc<AtomicUsize>,
    reassembler: Reassembler,
    peer_from: PeerFrom,
    origin: Origin,
    /// The skip slot of each connection that has one, to hand the reassembler's hints back.
    skips: HashMap<FlowKey, Arc<SkipUntil>>,
}

/// A queue of at most `queue` copies and `queue_bytes` bytes, and the worker that drains it.
pub fn channel(
    queue: usize,
    queue_bytes: usize,
    reassembly: ReassemblyConfig,
    peer_from: PeerFrom,
    origin: Origin,
) -> (Tap, Worker) {
    let (tx, rx) = std::sync::mpsc::sync_channel(queue.max(1));
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        Tap {
            tx,
            queued_bytes: queued_bytes.clone(),
            max_bytes: queue_bytes.max(1),
        },
        Worker {
            rx,
            queued_bytes,
            reassembler: Reassembler::new(reassembly, ParseLimits::default()),
            peer_from,
            origin,
            skips: HashMap::new(),
        },
    )
}

impl Worker {
    /// Drain the queue until every [`Tap`] is dropped.
    pub fn run(mut self, pipeline: &Pipeline, metrics: &Metrics) {
        let started = Instant::now();
        let mut last_housekeeping = Instant::now();
        loop {
            match self.rx.recv_timeout(HOUSEKEEPING) {
                Ok(copy) => {
                    self.queued_bytes
                        .fetch_sub(copy.data.len(), Ordering::AcqRel);
                    self.inspect(copy, started, pipeline, metrics);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_housekeeping.elapsed() >= HOUSEKEEPING {
                last_housekeeping = Instant::now();
                // Connections gone without their end copy (dropped) hold no slot any more.
                self.skips.retain(|_, slot| Arc::strong_count(slot) > 1);
                self.reassembler.expire(elapsed_ns(started));
                metrics.store_reassembly(&self.reassembler);
            }
        }
        metrics.store_reassembly(&self.reassembler);
    }

    fn inspect(&mut self, copy: Copy, started: Instant, pipeline: &Pipeline, metrics: &Metrics) {
        if let Some(slot) = &copy.skip
            && !copy.end
        {
            self.skips.entry(copy.key).or_insert_with(|| slot.clone());
        }
        let seg = Segment {
            seq: copy.seq,
            len: copy.len,
            data: &copy.data,
            end: copy.end,
            now_ns: elapsed_ns(started),
            // The connection was accepted: its handshake completed and the peer is real.
            established: true,
            // Every connection's stream starts at offset 0.
            stream_start: Some(0),
        };
        let peer_from = &self.peer_from;
        let origin = &self.origin;
        self.reassembler
            .push(copy.key, seg, |key, mut request, meta| {
                let peer = match peer_from {
                    PeerFrom::Connection => key.src,
                    PeerFrom::Header(name) => match take_peer(&mut request, name) {
                        Some(peer) => {
                            if request.body_window.is_none() {
                                metrics.mirror_inspected.fetch_add(1, Ordering::Relaxed);
                            }
                            peer
                        }
                        None => {
                            // Later windows of a rejected request's body are not counted again.
                            if request.body_window.is_none() {
                                metrics
                                    .mirror_rejected_no_peer
                                    .fetch_add(1, Ordering::Relaxed);
                            }
                            return;
                        }
                    },
                };
                // The mirror's local port says nothing about the application: left out.
                let dst_port = (*peer_from == PeerFrom::Connection).then_some(key.dst_port);
                handle(pipeline, peer, &request, meta, origin, dst_port);
            });
        if copy.end {
            self.skips.remove(&copy.key);
        }
        let skips = &self.skips;
        self.reassembler.take_skip_hints(|key, until| {
            if let Some(slot) = skips.get(&key) {
                slot.set(until);
            }
        });
    }
}

fn handle(
    pipeline: &Pipeline,
    peer: IpAddr,
    request: &Request,
    meta: RequestMeta,
    origin: &Origin,
    dst_port: Option<u16>,
) {
    let origin = Origin {
        dst_port,
        ..origin.clone()
    };
    pipeline.handle(peer, request, meta, &origin, Utc::now());
}

/// The proxy's peer header: exactly one line holding one address (`$remote_addr`), removed
/// from the request so the detector sees what the client sent. `None` when missing, repeated
/// or not an address: a client-written value can then not have slipped through.
pub fn take_peer(request: &mut Request, name: &str) -> Option<IpAddr> {
    let mut found = request
        .headers
        .iter()
        .filter(|(n, _)| n.trim().eq_ignore_ascii_case(name));
    let value = found.next()?.1.trim();
    if found.next().is_some() {
        return None;
    }
    let peer = value.parse::<IpAddr>().ok()?.to_canonical();
    request
        .headers
        .retain(|(n, _)| !n.trim().eq_ignore_ascii_case(name));
    Some(peer)
}

/// The reassembler's flow key of a connection accepted on `local` from `peer`.
pub fn flow_key(peer: SocketAddr, local: SocketAddr) -> FlowKey {
    FlowKey {
        src: peer.ip().to_canonical(),
        src_port: peer.port(),
        dst: local.ip().to_canonical(),
        dst_port: local.port(),
    }
}

fn elapsed_ns(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request {
        Request {
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            ..Request::default()
        }
    }

    #[test]
    fn the_peer_header_must_be_one_address() {
        let mut r = request(&[("Host", "a"), ("X-Palisade-Peer", "10.0.3.4")]);
        assert_eq!(
            take_peer(&mut r, "x-palisade-peer"),
            Some("10.0.3.4".parse().unwrap())
        );
        assert_eq!(r.headers.len(), 1, "removed before detection");
        let mut r = request(&[("x-palisade-peer", "::ffff:10.0.3.4")]);
        assert_eq!(
            take_peer(&mut r, "x-palisade-peer"),
            Some("10.0.3.4".parse().unwrap())
        );
        for bad in [
            vec![],
            vec![
                ("X-Palisade-Peer", "10.0.0.1"),
                ("X-Palisade-Peer", "8.8.8.8"),
            ],
            vec![("X-Palisade-Peer", "10.0.0.1, 8.8.8.8")],
            vec![("X-Palisade-Peer", "unknown")],
            vec![("X-Palisade-Peer", "")],
        ] {
            let mut r = request(&bad);
            assert_eq!(take_peer(&mut r, "x-palisade-peer"), None, "{bad:?}");
        }
    }

    #[test]
    fn a_skip_hint_counts_down_and_clears() {
        let slot = SkipUntil::default();
        assert_eq!(slot.skippable(10), 0, "no hint");
        slot.set(100);
        assert_eq!(slot.skippable(10), 90);
        assert_eq!(slot.skippable(60), 40);
        assert_eq!(slot.skippable(100), 0, "reached");
        assert_eq!(slot.skippable(50), 0, "cleared once reached");
        // Offsets wrap like sequence numbers.
        slot.set(5);
        assert_eq!(slot.skippable(u32::MAX - 4), 10);
        assert_eq!(slot.skippable(9), 0, "past it");
    }

    #[test]
    fn a_full_queue_drops_and_never_blocks() {
        let (tap, worker) = channel(
            2,
            1 << 20,
            ReassemblyConfig::default(),
            PeerFrom::Connection,
            Origin::default(),
        );
        let key = flow_key(
            "192.0.2.1:1000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        let copy = |seq| Copy {
            key,
            seq,
            len: 1,
            data: Bytes::from_static(b"x"),
            end: false,
            skip: None,
        };
        assert!(tap.offer(copy(0)));
        assert!(tap.offer(copy(1)));
        assert!(!tap.offer(copy(2)), "full in count");
        drop(worker);
        assert!(!tap.offer(copy(3)), "worker gone");
        let (tap, _worker) = channel(
            100,
            4,
            ReassemblyConfig::default(),
            PeerFrom::Connection,
            Origin::default(),
        );
        let big = Copy {
            key,
            seq: 0,
            len: 5,
            data: Bytes::from_static(b"hello"),
            end: false,
            skip: None,
        };
        assert!(!tap.offer(big), "full in bytes");
    }
}
