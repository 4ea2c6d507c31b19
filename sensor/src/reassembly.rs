//! Reassembles each TCP connection's client-to-server byte stream into HTTP requests.
//!
//! Input: captured segments (sequence number, payload length from the IP header, and the first
//! bytes of payload the kernel copied). With TSO/GRO one segment may carry tens of kilobytes, of
//! which only a prefix is captured, so the stream is tracked by sequence number, not by packet.
//!
//! Per flow, a state machine:
//! - `Head`: bytes of a request head are being collected; each time they grow, the parser runs.
//!   A complete request is emitted; when its length is known (`consumed`) the next request starts
//!   right after it (pipelining / keep-alive), even if that is past the captured bytes (`Skip`).
//! - `Skip`: the rest of a request body not worth keeping; the next request starts at `until`.
//! - `Resync`: the start of the next request is unknown (new flow joined mid-stream, lost bytes,
//!   garbage, unknown framing): wait for bytes that look like a request line.
//!
//! Retransmits are trimmed or dropped, out-of-order segments wait in a small per-flow window,
//! and a lost segment (hole) resynchronizes the flow. When a head can never complete because of
//! a hole, truncation or the size limit, what was collected is still inspected (closed with a
//! blank line) so an attack split across a lost segment is not silently missed.
//!
//! Memory is bounded per flow (`max_flow_bytes`) and in total (`max_total_bytes`, `max_flows`);
//! past the bounds the least recently used flows are evicted.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::config::ReassemblyConfig;
use crate::http::{self, ParseLimits, Parsed, Request};

/// Client-to-server direction of one TCP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// Client address (the packet's source).
    pub src: IpAddr,
    /// Client port.
    pub src_port: u16,
    /// Server address.
    pub dst: IpAddr,
    /// Server port.
    pub dst_port: u16,
}

/// One captured TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    /// Sequence number of the first payload byte.
    pub seq: u32,
    /// Payload length on the wire (may exceed `data.len()` when the capture was truncated).
    pub len: u32,
    /// The captured prefix of the payload.
    pub data: &'a [u8],
    /// FIN or RST: the client is done with this direction.
    pub end: bool,
    /// Capture time, nanoseconds (any monotonic clock), for idle expiry.
    pub now_ns: u64,
    /// The kernel saw this connection's handshake complete (the server's SYN-ACK acknowledged
    /// by the client), so the source address really sent it. A blind spoofer's segments are
    /// `false`: they are inspected but never reported under their source address.
    pub established: bool,
    /// Sequence number of the client's first data byte (its ISN + 1), when the kernel saw the
    /// handshake: a flow whose first segment starts there is parsed from a known boundary.
    pub stream_start: Option<u32>,
}

/// What the reassembler knows about where a request came from, beside the request itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RequestMeta {
    /// The connection's handshake was seen complete ([`Segment::established`]).
    pub established: bool,
    /// The request starts at a known request boundary: the flow was followed from its first
    /// byte (or from a boundary) without loss, resync or parse failure. When false, the bytes
    /// could be a request smuggled inside a body, so headers a proxy would have written
    /// (`X-Forwarded-For`, ...) are not believed.
    pub in_sync: bool,
}

impl RequestMeta {
    /// A request that arrived whole from a source that frames requests itself (an access-log
    /// line, a mirrored request): the connection exists and the boundary is known.
    pub const WHOLE: RequestMeta = RequestMeta {
        established: true,
        in_sync: true,
    };
}

/// Counters kept by the reassembler.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests emitted.
    pub requests: u64,
    /// Requests emitted from an incomplete head (hole, truncation, size limit, connection end).
    pub partial_requests: u64,
    /// Segments fully covered by bytes already seen.
    pub retransmits: u64,
    /// Segments that arrived ahead of a missing one and waited.
    pub out_of_order: u64,
    /// Holes (lost or uncaptured bytes) that forced a resync.
    pub gaps: u64,
    /// Byte runs the parser rejected.
    pub invalid: u64,
    /// Flows evicted to respect the memory bounds.
    pub evicted: u64,
    /// Flows forgotten after being idle.
    pub expired: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Head,
    Skip { until: u32 },
    Resync,
}

#[derive(Debug)]
struct Flow {
    mode: Mode,
    /// Sequence number of the byte after the last one accounted for.
    expected: u32,
    /// Collected bytes (`Head`: the request so far; `Resync`: a tail to search).
    buf: Vec<u8>,
    /// Sequence number of the byte after `buf`'s last (differs from `expected` after a
    /// truncated capture).
    buf_end: u32,
    /// Out-of-order segments: offset from `expected` at insert time is irrelevant; keyed by seq.
    ooo: BTreeMap<u32, (u32, Vec<u8>)>,
    /// LRU tick of the last touch.
    tick: u64,
    /// The kernel saw the handshake (sticky once seen).
    established: bool,
    /// No loss, resync or parse failure since a known boundary (sticky once lost).
    in_sync: bool,
    last_ns: u64,
}

impl Flow {
    fn meta(&self) -> RequestMeta {
        RequestMeta {
            established: self.established,
            in_sync: self.in_sync,
        }
    }

    fn bytes(&self) -> usize {
        self.buf.len() + self.ooo.values().map(|(_, d)| d.len()).sum::<usize>()
    }
}

/// Signed distance `a - b` in sequence space.
fn seq_diff(a: u32, b: u32) -> i64 {
    a.wrapping_sub(b) as i32 as i64
}

/// Out-of-order segments further ahead than this are treated as a hole right away.
const OOO_WINDOW: i64 = 1 << 20;
/// Bytes of a resync buffer kept when no request start was found (a method may span segments).
const RESYNC_TAIL: usize = 16;

/// Where a request line starts in `buf`. A buffer ending in the CR of an unfinished request
/// line is searched without that CR (the parser's resync check rejects control bytes in an
/// unfinished line).
fn find_start(buf: &[u8]) -> Option<usize> {
    match buf.split_last() {
        Some((b'\r', head)) => http::find_request_start(head),
        _ => http::find_request_start(buf),
    }
}

/// The reassembler: feed segments, get requests.
#[derive(Debug)]
pub struct Reassembler {
    config: ReassemblyConfig,
    limits: ParseLimits,
    /// Keyed by the 4-tuple with foldhash, seeded per process: looked up on every segment
    /// (SipHash was ~2 % of the sensor's samples under wrk).
    flows: HashMap<FlowKey, Flow, foldhash::fast::RandomState>,
    lru: BTreeMap<u64, FlowKey>,
    next_tick: u64,
    total_bytes: usize,
    stats: Stats,
}

impl Reassembler {
    /// A reassembler with these bounds; `limits` go to the HTTP parser.
    pub fn new(config: ReassemblyConfig, limits: ParseLimits) -> Self {
        Reassembler {
            config,
            limits,
            flows: HashMap::default(),
            lru: BTreeMap::new(),
            next_tick: 0,
            total_bytes: 0,
            stats: Stats::default(),
        }
    }

    /// Counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
    }

    /// Flows tracked now.
    pub fn flow_count(&self) -> usize {
        self.flows.len()
    }

    /// Bytes buffered now over all flows.
    pub fn buffered_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Feed one segment of `key`'s client-to-server stream; `emit` gets every request completed.
    pub fn push(
        &mut self,
        key: FlowKey,
        seg: Segment<'_>,
        mut emit: impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        let tick = self.next_tick;
        self.next_tick += 1;
        let mut flow = match self.flows.remove(&key) {
            Some(f) => {
                self.lru.remove(&f.tick);
                self.total_bytes -= f.bytes();
                f
            }
            None => {
                // A flow whose first segment starts at the client's first data byte is parsed
                // from a known boundary; any other joined mid-stream and must resync (its
                // requests are then never attributed through proxy headers).
                let at_start = seg.stream_start == Some(seg.seq);
                Flow {
                    mode: if at_start { Mode::Head } else { Mode::Resync },
                    expected: seg.seq,
                    buf: Vec::new(),
                    buf_end: seg.seq,
                    ooo: BTreeMap::new(),
                    tick,
                    established: false,
                    in_sync: at_start,
                    last_ns: seg.now_ns,
                }
            }
        };
        flow.established |= seg.established;
        flow.tick = tick;
        flow.last_ns = seg.now_ns;
        self.process(&key, &mut flow, seg, &mut emit);

        if seg.end {
            self.finish(&key, &mut flow, &mut emit);
            return;
        }
        // Per-flow bound: a head that outgrows it is inspected as it is and dropped.
        if flow.bytes() > self.config.max_flow_bytes {
            flow.ooo.clear();
            if flow.bytes() > self.config.max_flow_bytes {
                self.flush_partial(&key, &mut flow, &mut emit);
            }
        }
        self.total_bytes += flow.bytes();
        self.lru.insert(tick, key);
        self.flows.insert(key, flow);
        self.enforce_bounds();
    }

    /// Forget flows idle for longer than the configured time at `now_ns`.
    pub fn expire(&mut self, now_ns: u64) {
        let idle = self.config.flow_idle_secs.saturating_mul(1_000_000_000);
        let stale: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| now_ns.saturating_sub(f.last_ns) > idle)
            .map(|(k, _)| *k)
            .collect();
        for key in stale {
            self.remove(&key);
            self.stats.expired += 1;
        }
    }

    fn remove(&mut self, key: &FlowKey) -> Option<Flow> {
        let flow = self.flows.remove(key)?;
        self.lru.remove(&flow.tick);
        self.total_bytes -= flow.bytes();
        Some(flow)
    }

    fn enforce_bounds(&mut self) {
        while self.flows.len() > self.config.max_flows
            || self.total_bytes > self.config.max_total_bytes
        {
            let Some((_, key)) = self.lru.pop_first() else {
                break;
            };
            if let Some(flow) = self.flows.remove(&key) {
                self.total_bytes -= flow.bytes();
                self.stats.evicted += 1;
            }
        }
    }

    fn process(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        seg: Segment<'_>,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        let mut seq = seg.seq;
        let mut len = seg.len;
        let mut data = seg.data;
        let d = seq_diff(seq, flow.expected);
        if d < 0 {
            // Starts before what we have: retransmit, possibly with new bytes at its end.
            let overlap = (-d) as u64;
            if overlap >= len as u64 {
                if len > 0 {
                    self.stats.retransmits += 1;
                }
                return;
            }
            let cut = overlap as usize;
            if cut > data.len() {
                // The new part lies beyond what was captured: a hole.
                data = &[];
            } else {
                data = &data[cut..];
            }
            seq = flow.expected;
            len -= overlap as u32;
        } else if d > 0 {
            if d < OOO_WINDOW && flow.ooo.len() < self.config.max_out_of_order {
                self.stats.out_of_order += 1;
                flow.ooo.entry(seq).or_insert_with(|| (len, data.to_vec()));
                return;
            }
            // Too far ahead, or too many waiting: the missing bytes are lost.
            self.gap(key, flow, seq, emit);
        }
        self.append(key, flow, seq, len, data, emit);
        // Drain waiting segments that now fit.
        while let Some((&s, _)) = flow.ooo.first_key_value() {
            let d = seq_diff(s, flow.expected);
            if d > 0 {
                break;
            }
            let Some((s, (l, bytes))) = flow.ooo.pop_first() else {
                break;
            };
            let overlap = (-d) as u64;
            if overlap >= l as u64 {
                self.stats.retransmits += 1;
                continue;
            }
            let cut = overlap as usize;
            let rest: &[u8] = if cut > bytes.len() {
                &[]
            } else {
                &bytes[cut..]
            };
            let _ = s;
            let expected = flow.expected;
            self.append(key, flow, expected, l - overlap as u32, rest, emit);
        }
    }

    /// Bytes before `seq` are lost: inspect what was collected, then resync at `seq`.
    fn gap(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        seq: u32,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        self.stats.gaps += 1;
        match flow.mode {
            Mode::Skip { until } if seq_diff(until, seq) >= 0 => {
                // The lost bytes were inside a body we skip anyway.
                flow.expected = seq;
                return;
            }
            Mode::Skip { until } if until == seq => {
                flow.mode = Mode::Head;
                flow.expected = seq;
                return;
            }
            _ => {}
        }
        self.flush_partial(key, flow, emit);
        flow.expected = seq;
        // Keep waiting segments that are still ahead.
        flow.ooo.retain(|&s, _| seq_diff(s, seq) > 0);
    }

    /// Append `data` (the captured prefix of `len` bytes at `seq == flow.expected`).
    fn append(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        seq: u32,
        len: u32,
        data: &[u8],
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        let mut data = data;
        let mut len = len;
        let mut seq = seq;
        if let Mode::Skip { until } = flow.mode {
            let ahead = seq_diff(until, seq);
            if ahead >= len as i64 {
                flow.expected = seq.wrapping_add(len);
                if ahead == len as i64 {
                    flow.mode = Mode::Head;
                }
                return;
            }
            let cut = ahead.max(0) as usize;
            data = if cut > data.len() { &[] } else { &data[cut..] };
            len -= cut as u32;
            seq = seq.wrapping_add(cut as u32);
            flow.mode = Mode::Head;
            if data.is_empty() && len > 0 {
                // The next request starts inside bytes that were not captured.
                flow.expected = seq.wrapping_add(len);
                flow.mode = Mode::Resync;
                flow.in_sync = false;
                self.stats.gaps += 1;
                return;
            }
        }
        flow.buf.extend_from_slice(data);
        flow.buf_end = seq.wrapping_add(data.len() as u32);
        flow.expected = seq.wrapping_add(len);
        let hole = (data.len() as u32) < len;
        self.drive(key, flow, hole, emit);
    }

    /// Run the parser over the collected bytes as far as they go. `hole`: bytes after `buf`'s end
    /// were not captured, so `buf` cannot grow further.
    fn drive(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        hole: bool,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        loop {
            match flow.mode {
                Mode::Skip { .. } => return,
                Mode::Resync => match find_start(&flow.buf) {
                    Some(at) => {
                        flow.buf.drain(..at);
                        flow.mode = Mode::Head;
                    }
                    None => {
                        if hole {
                            flow.buf.clear();
                        } else if flow.buf.len() > RESYNC_TAIL {
                            let keep = flow.buf.len() - RESYNC_TAIL;
                            flow.buf.drain(..keep);
                        }
                        return;
                    }
                },
                Mode::Head => {
                    if flow.buf.is_empty() {
                        return;
                    }
                    let mut parsed = http::parse_request(&flow.buf, &self.limits);
                    if hole && parsed == Parsed::Partial {
                        // The head is complete but the body prefix the parser wants will never
                        // come (not captured): take the body bytes there are.
                        if let Some(h) = memchr::memmem::find(&flow.buf, b"\r\n\r\n") {
                            let limits = ParseLimits {
                                max_body: (flow.buf.len() - h - 4).min(self.limits.max_body),
                                ..self.limits
                            };
                            parsed = match http::parse_request(&flow.buf, &limits) {
                                Parsed::Complete {
                                    mut request,
                                    consumed,
                                } => {
                                    request.body_truncated = true;
                                    Parsed::Complete { request, consumed }
                                }
                                other => other,
                            };
                        }
                    }
                    match parsed {
                        Parsed::Complete { request, consumed } => {
                            self.stats.requests += 1;
                            emit(key, request, flow.meta());
                            if !self.after_request(flow, consumed) {
                                return;
                            }
                        }
                        Parsed::Partial => {
                            if hole {
                                self.flush_partial(key, flow, emit);
                            }
                            return;
                        }
                        Parsed::Invalid(_) => {
                            self.stats.invalid += 1;
                            flow.buf.drain(..1);
                            flow.mode = Mode::Resync;
                            flow.in_sync = false;
                        }
                    }
                }
            }
        }
    }

    /// Position the flow after a request of `consumed` bytes (from the start of `buf`).
    /// Returns whether collected bytes remain to be parsed.
    fn after_request(&mut self, flow: &mut Flow, consumed: Option<usize>) -> bool {
        match consumed {
            Some(c) if c <= flow.buf.len() => {
                flow.buf.drain(..c);
                true
            }
            Some(c) => {
                // The request goes on past the collected bytes.
                let until = flow.buf_end.wrapping_add((c - flow.buf.len()) as u32);
                flow.buf.clear();
                let d = seq_diff(until, flow.expected);
                flow.mode = if d > 0 {
                    Mode::Skip { until }
                } else if d == 0 {
                    Mode::Head
                } else {
                    // The next request starts inside uncaptured bytes.
                    self.stats.gaps += 1;
                    flow.in_sync = false;
                    Mode::Resync
                };
                false
            }
            None => {
                // Next request start unknown: skip this head, resync.
                let skip = memchr::memmem::find(&flow.buf, b"\r\n\r\n")
                    .map(|p| p + 4)
                    .unwrap_or(1);
                flow.buf.drain(..skip.min(flow.buf.len()));
                flow.mode = Mode::Resync;
                flow.in_sync = false;
                true
            }
        }
    }

    /// Inspect an incomplete head as it is (closed with a blank line), then resync.
    fn flush_partial(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        if flow.mode == Mode::Head && !flow.buf.is_empty() {
            let mut closed = std::mem::take(&mut flow.buf);
            if !closed.ends_with(b"\n") {
                closed.extend_from_slice(b"\r\n");
            }
            closed.extend_from_slice(b"\r\n");
            if let Parsed::Complete { mut request, .. } = http::parse_request(&closed, &self.limits)
            {
                request.body_truncated = true;
                self.stats.requests += 1;
                self.stats.partial_requests += 1;
                emit(key, request, flow.meta());
            }
        }
        flow.buf.clear();
        if !matches!(flow.mode, Mode::Skip { .. }) {
            flow.mode = Mode::Resync;
            flow.in_sync = false;
        }
    }

    /// The client ended the connection: inspect leftovers and forget the flow.
    fn finish(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        if flow.mode == Mode::Head && !flow.buf.is_empty() {
            self.flush_partial(key, flow, emit);
        }
    }
}
