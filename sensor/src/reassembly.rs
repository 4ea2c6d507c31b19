//! Reassembles each TCP connection's client-to-server byte stream into HTTP requests.
//!
//! Input: captured segments (sequence number, payload length from the IP header, and the first
//! bytes of payload the kernel copied). With TSO/GRO one segment may carry tens of kilobytes, of
//! which only a prefix is captured, so the stream is tracked by sequence number, not by packet.
//!
//! Per flow, a state machine:
//! - `Head`: bytes of a request head are being collected; each time they grow, the head parser
//!   runs. A complete head starts the body its framing announces (`Content-Length`, or chunked:
//!   `Transfer-Encoding` wins, as in nginx), or the next request when there is none.
//! - `Body`: the body is walked by its framing, byte-exact across segments (chunk-size lines,
//!   extensions, data, CRLFs, last chunk, trailers), so the next request starts exactly where
//!   the server sees it start: bytes inside a body are never parsed as a request. Up to
//!   `max_body_inspect` de-chunked bytes are cut into windows ([`crate::http::BodyStream`]) for
//!   the detector; the request itself is emitted once its head's segment is processed (with
//!   the body bytes that came with it), each later window as the same head with
//!   [`Request::body_window`] set.
//! - `Skip`: body bytes that are neither inspected nor needed for framing (the rest of a
//!   `Content-Length` body, or of a chunk's data, past the inspection bound): skipped by count,
//!   captured or not. [`Reassembler::take_skip_hints`] tells where such a skip ends, so the
//!   kernel can stop copying the payload until then.
//! - `Resync`: the start of the next request is unknown (new flow joined mid-stream, lost bytes,
//!   garbage, broken or unknown framing): wait for bytes that look like a request line. A flow
//!   that resynchronized is out of sync for good ([`RequestMeta::in_sync`] false): what looks
//!   like a request there may be one smuggled inside a body.
//!
//! Retransmits are trimmed or dropped, out-of-order segments wait in a small per-flow window.
//! Lost or uncaptured bytes inside a body of known framing (all of a `Content-Length` body, the
//! data of a chunk) are passed over by count and the flow stays in sync; anywhere else they
//! resynchronize it. When a head can never complete because of a hole, truncation or the size
//! limit, what was collected is still inspected (closed with a blank line) so an attack split
//! across a lost segment is not silently missed.
//!
//! Memory is bounded per flow (`max_flow_bytes`) and in total (`max_total_bytes`, `max_flows`);
//! past the bounds the least recently used flows are evicted. Body inspection has its own
//! budgets (`max_flow_body_bytes`, `max_body_bytes`), reserved when a body starts and released
//! when it ends: a body that does not fit is skipped past what came with its head, and counted.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use crate::config::ReassemblyConfig;
use crate::http::{self, BodyStream, BodyWindow, ChunkedDecoder, Framing, ParseLimits, Request};

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
    /// Holes in a flow's sequence numbers (lost segments); inside a body of known framing they
    /// are passed over, elsewhere they resync the flow.
    pub gaps: u64,
    /// Byte runs the parser rejected.
    pub invalid: u64,
    /// Flows evicted to respect the memory bounds.
    pub evicted: u64,
    /// Flows forgotten after being idle.
    pub expired: u64,
    /// Later body windows emitted (a request's head again, with the next window of its body).
    pub body_windows: u64,
    /// Body bytes (de-chunked) handed to the detector in windows.
    pub body_bytes_inspected: u64,
    /// Bodies longer than `max_body_inspect`: the rest was skipped by its framing.
    pub bodies_cut: u64,
    /// Bodies not followed past what came with their head: the per-flow budget was too small
    /// for the head and one window.
    pub body_skipped_flow_budget: u64,
    /// Bodies not followed past what came with their head: the global budget was spent.
    pub body_skipped_global_budget: u64,
    /// Requests whose body framing was broken or unknown (bad chunk, bad `Content-Length`,
    /// unsupported `Transfer-Encoding`): the flow resynchronized after them.
    pub bad_framing: u64,
    /// Requests with both `Transfer-Encoding: chunked` and `Content-Length`: framed by chunked,
    /// and the flow is out of sync after them (a proxy in front may have framed them by length).
    pub ambiguous_framing: u64,
    /// Flows that lost sync (loss, garbage, bad framing, joined mid-stream excluded).
    pub desyncs: u64,
    /// Skip hints handed out by [`Reassembler::take_skip_hints`].
    pub skip_hints: u64,
    /// Skip hints dropped because too many were waiting to be taken.
    pub skip_hints_dropped: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Head,
    Body,
    Skip { left: u64 },
    Resync,
}

/// How far the body of the current request goes.
#[derive(Debug)]
enum BodyFraming {
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    /// Where the chunked framing is.
    Chunked(ChunkedDecoder),
}

#[derive(Debug)]
struct BodyState {
    framing: BodyFraming,
    /// The body is inspected (until `max_body_inspect`, the end of the body or a loss).
    inspect: Option<Inspect>,
    /// The flow is out of sync once this body ends (ambiguous framing).
    desync_after: bool,
}

#[derive(Debug)]
struct Inspect {
    /// The head, emitted again with every later window.
    request: Request,
    /// Facts of the request, as they were at its start.
    meta: RequestMeta,
    stream: BodyStream,
    /// The request itself was emitted (later windows follow it).
    emitted: bool,
    /// Body bytes still to inspect.
    left: usize,
    /// Bytes reserved against the body budgets.
    reserved: usize,
}

impl Inspect {
    /// The body will not grow any more: hand out what is held, moving the head instead of
    /// copying it (the common small body ends in its head's segment: no copy at all).
    fn finish(
        mut self,
        more: bool,
        key: &FlowKey,
        stats: &mut Stats,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        let taken = self.stream.take(true);
        let mut request = self.request;
        request.body_truncated = more;
        match (self.emitted, taken) {
            (false, taken) => {
                if let Some((window, _, _)) = taken {
                    request.body = window;
                }
                stats.requests += 1;
                emit(key, request, self.meta);
            }
            (true, Some((window, offset, kind))) if !window.is_empty() => {
                request.body = window;
                request.body_window = Some(BodyWindow { offset, kind });
                stats.body_windows += 1;
                emit(key, request, self.meta);
            }
            (true, _) => {}
        }
    }

    /// Hand the next window to `emit`: the request itself the first time, then windows.
    fn flush(
        &mut self,
        last: bool,
        more: bool,
        key: &FlowKey,
        stats: &mut Stats,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        let taken = self.stream.take(last);
        if self.emitted {
            let Some((window, offset, kind)) = taken else {
                return;
            };
            if window.is_empty() {
                return;
            }
            let mut request = self.request.clone();
            request.body = window;
            request.body_truncated = more;
            request.body_window = Some(BodyWindow { offset, kind });
            stats.body_windows += 1;
            emit(key, request, self.meta);
        } else {
            let mut request = self.request.clone();
            if let Some((window, _, _)) = taken {
                request.body = window;
            }
            request.body_truncated = more;
            self.emitted = true;
            stats.requests += 1;
            emit(key, request, self.meta);
        }
    }
}

/// Give de-chunked body bytes to the inspection (if any), emitting windows as they fill.
fn inspect_bytes(
    slot: &mut Option<Inspect>,
    data: &[u8],
    key: &FlowKey,
    stats: &mut Stats,
    emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
) {
    let Some(ins) = slot.as_mut() else {
        return;
    };
    let mut data = &data[..data.len().min(ins.left)];
    ins.left -= data.len();
    stats.body_bytes_inspected += data.len() as u64;
    while !data.is_empty() {
        let n = ins.stream.room().min(data.len());
        ins.stream.push(&data[..n]);
        data = &data[n..];
        if ins.stream.room() == 0 {
            ins.flush(false, true, key, stats, emit);
        }
    }
}

#[derive(Debug)]
struct Flow {
    mode: Mode,
    /// Sequence number of the byte after the last one accounted for.
    expected: u32,
    /// Collected bytes (`Head`: the request so far; `Resync`: a tail to search).
    buf: Vec<u8>,
    /// Out-of-order segments, keyed by sequence number: (length on the wire, captured bytes).
    ooo: BTreeMap<u32, (u32, Vec<u8>)>,
    /// The body being walked (`Body`, or `Skip` inside chunk data).
    body: Option<Box<BodyState>>,
    /// A skip hint was given up to this sequence number.
    hinted: Option<u32>,
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

    /// Bytes reserved against the body budgets.
    fn body_reserved(&self) -> usize {
        self.body
            .as_ref()
            .and_then(|b| b.inspect.as_ref())
            .map_or(0, |i| i.reserved)
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
/// Skips shorter than this are not worth a hint (the kernel map update costs more).
const MIN_SKIP_HINT: u64 = 4096;
/// A hint covers at most this many bytes (sequence numbers wrap at 4 GiB); a longer skip is
/// hinted again when the flow gets there.
const MAX_SKIP_HINT: u64 = 1 << 30;
/// Most skip hints waiting to be taken.
const MAX_PENDING_HINTS: usize = 4096;

/// Where a request line starts in `buf`. A buffer ending in the CR of an unfinished request
/// line is searched without that CR (the parser's resync check rejects control bytes in an
/// unfinished line).
fn find_start(buf: &[u8]) -> Option<usize> {
    match buf.split_last() {
        Some((b'\r', head)) => http::find_request_start(head),
        _ => http::find_request_start(buf),
    }
}

/// Bytes a kept request head takes (its strings and their bookkeeping).
fn head_size(r: &Request) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|(n, v)| n.len() + v.len() + 2 * std::mem::size_of::<String>())
        .sum();
    std::mem::size_of::<Request>() + r.method.len() + r.target.len() + headers
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
    /// Bytes reserved for body inspection over all flows.
    body_bytes: usize,
    hints: Vec<(FlowKey, u32)>,
    stats: Stats,
}

impl Reassembler {
    /// A reassembler with these bounds; `limits.max_head` goes to the head parser (bodies are
    /// followed as `config` says).
    pub fn new(config: ReassemblyConfig, limits: ParseLimits) -> Self {
        Reassembler {
            config,
            limits,
            flows: HashMap::default(),
            lru: BTreeMap::new(),
            next_tick: 0,
            total_bytes: 0,
            body_bytes: 0,
            hints: Vec::new(),
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

    /// Bytes buffered now over all flows (heads, resync tails, out-of-order segments).
    pub fn buffered_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Bytes reserved now for body inspection over all flows (kept heads and windows); never
    /// more than `max_body_bytes`.
    pub fn body_buffered_bytes(&self) -> usize {
        self.body_bytes
    }

    /// Hand out `(flow, seq)` for every flow that entered a skip known to last until `seq`
    /// (body bytes past the inspection bound, of known length): the kernel may stop copying
    /// that flow's payload before `seq`. Segments that then arrive without payload are
    /// accounted for by their length. At most one hint per flow and skip (a skip longer than
    /// 1 GiB is hinted again when the flow gets there).
    pub fn take_skip_hints(&mut self, mut f: impl FnMut(FlowKey, u32)) {
        for (key, seq) in self.hints.drain(..) {
            f(key, seq);
        }
    }

    /// Feed one segment of `key`'s client-to-server stream; `emit` gets every request completed
    /// and every later window of a body.
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
                    ooo: BTreeMap::new(),
                    body: None,
                    hinted: None,
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
        self.after_segment(&key, &mut flow, &mut emit);

        if seg.end {
            self.finish(&key, &mut flow, &mut emit);
            self.discard(flow);
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
            if let Some(flow) = self.flows.remove(&key) {
                self.lru.remove(&flow.tick);
                self.total_bytes -= flow.bytes();
                self.discard(flow);
                self.stats.expired += 1;
            }
        }
    }

    /// Forget a flow that is no longer in the map: release its body budget.
    fn discard(&mut self, flow: Flow) {
        self.body_bytes -= flow.body_reserved();
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
                self.discard(flow);
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
        let seq = seg.seq;
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
            data = data.get(cut..).unwrap_or_default();
            len -= overlap as u32;
        } else if d > 0 {
            if d < OOO_WINDOW && flow.ooo.len() < self.config.max_out_of_order {
                self.stats.out_of_order += 1;
                flow.ooo.entry(seq).or_insert_with(|| (len, data.to_vec()));
                return;
            }
            // Too far ahead, or too many waiting: the missing bytes are lost.
            self.stats.gaps += 1;
            self.lost(key, flow, d as u64, emit);
            flow.expected = seq;
            // Keep waiting segments that are still ahead.
            flow.ooo.retain(|&s, _| seq_diff(s, seq) > 0);
        }
        self.append(key, flow, len, data, emit);
        // Drain waiting segments that now fit.
        while let Some((&s, _)) = flow.ooo.first_key_value() {
            let d = seq_diff(s, flow.expected);
            if d > 0 {
                break;
            }
            let Some((_, (l, bytes))) = flow.ooo.pop_first() else {
                break;
            };
            let overlap = (-d) as u64;
            if overlap >= l as u64 {
                self.stats.retransmits += 1;
                continue;
            }
            let rest = bytes.get(overlap as usize..).unwrap_or_default();
            self.append(key, flow, l - overlap as u32, rest, emit);
        }
    }

    /// Account for `len` bytes at `flow.expected`, of which `data` (a prefix) was captured.
    fn append(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        len: u32,
        data: &[u8],
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        let data = &data[..data.len().min(len as usize)];
        flow.expected = flow.expected.wrapping_add(len);
        self.consume(key, flow, data, emit);
        let hole = u64::from(len) - data.len() as u64;
        if hole > 0 {
            self.lost(key, flow, hole, emit);
        }
    }

    /// Run captured bytes through the flow's state machine.
    fn consume(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        mut data: &[u8],
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        while !data.is_empty() {
            match flow.mode {
                Mode::Skip { left } => {
                    let n = left.min(data.len() as u64);
                    data = &data[n as usize..];
                    Self::skip_to(flow, left - n);
                }
                Mode::Body => {
                    let n = self.body_data(key, flow, data, emit);
                    data = &data[n..];
                }
                Mode::Head | Mode::Resync => {
                    flow.buf.extend_from_slice(data);
                    self.drive(key, flow, emit);
                    return;
                }
            }
        }
    }

    /// `left` bytes remain to skip; at 0 the flow goes back to its body or to the next head.
    fn skip_to(flow: &mut Flow, left: u64) {
        if left > 0 {
            flow.mode = Mode::Skip { left };
        } else {
            flow.mode = if flow.body.is_some() {
                Mode::Body
            } else {
                Mode::Head
            };
            flow.hinted = None;
        }
    }

    /// `n` bytes at the current position were lost (a hole in the sequence, or not captured).
    fn lost(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        n: u64,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        match flow.mode {
            Mode::Skip { left } => {
                Self::skip_to(flow, left.saturating_sub(n));
                if n > left {
                    // The loss runs past the skipped bytes.
                    self.lost(key, flow, n - left, emit);
                }
            }
            Mode::Body => {
                let Some(body) = flow.body.as_mut() else {
                    flow.mode = Mode::Head;
                    return self.lost(key, flow, n, emit);
                };
                // What follows cannot join what is held: inspect it as it is.
                if let Some(ins) = body.inspect.as_mut() {
                    ins.flush(true, true, key, &mut self.stats, emit);
                }
                match &mut body.framing {
                    BodyFraming::Length(rem) if n < *rem => *rem -= n,
                    BodyFraming::Length(rem) => {
                        // The loss reaches the end of the body, or beyond.
                        let over = n - *rem;
                        self.end_body(key, flow, emit);
                        if over > 0 {
                            self.lost(key, flow, over, emit);
                        }
                        return;
                    }
                    BodyFraming::Chunked(dec) => {
                        if dec.skip(n).is_err() {
                            // Lost bytes held framing: where the body ends is unknown.
                            self.abandon_body(key, flow, emit);
                            self.desync(flow);
                            return;
                        }
                    }
                }
                self.maybe_skip(key, flow, emit);
            }
            Mode::Head => self.flush_partial(key, flow, emit),
            Mode::Resync => flow.buf.clear(),
        }
    }

    /// Run the head parser and the body walker over the collected bytes as far as they go.
    fn drive(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        loop {
            if flow.buf.is_empty() {
                return;
            }
            match flow.mode {
                Mode::Skip { left } => {
                    let n = left.min(flow.buf.len() as u64);
                    flow.buf.drain(..n as usize);
                    Self::skip_to(flow, left - n);
                }
                Mode::Body => {
                    let rest = std::mem::take(&mut flow.buf);
                    let n = self.body_data(key, flow, &rest, emit);
                    flow.buf = rest;
                    flow.buf.drain(..n);
                }
                Mode::Resync => match find_start(&flow.buf) {
                    Some(at) => {
                        flow.buf.drain(..at);
                        flow.mode = Mode::Head;
                    }
                    None => {
                        if flow.buf.len() > RESYNC_TAIL {
                            let keep = flow.buf.len() - RESYNC_TAIL;
                            flow.buf.drain(..keep);
                        }
                        return;
                    }
                },
                Mode::Head => match http::parse_head(&flow.buf, &self.limits) {
                    Ok(Some((request, Some(head_len)))) => {
                        flow.buf.drain(..head_len.min(flow.buf.len()));
                        self.start_body(key, flow, request, emit);
                    }
                    Ok(Some((request, None))) => {
                        // A head was parsed but where it ends is not known: inspect it, then
                        // look for the next request.
                        self.stats.requests += 1;
                        emit(key, request, flow.meta());
                        flow.buf.drain(..1);
                        self.desync(flow);
                    }
                    Ok(None) => return,
                    Err(_) => {
                        self.stats.invalid += 1;
                        flow.buf.drain(..1);
                        self.desync(flow);
                    }
                },
            }
        }
    }

    /// A head is complete (its bytes are gone from `buf`; its body's first bytes, if any, are
    /// at the start of `buf`): start walking its body, or emit it when it has none.
    fn start_body(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        mut request: Request,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        let meta = flow.meta();
        let framing = match http::body_framing(&request) {
            Ok(Framing::None) => {
                self.stats.requests += 1;
                emit(key, request, meta);
                return;
            }
            Ok(Framing::Length(n)) => BodyFraming::Length(n),
            Ok(Framing::Chunked) => BodyFraming::Chunked(ChunkedDecoder::new()),
            Err(_) => {
                // Where the body ends is unknown: inspect the head with what follows it, then
                // look for the next request (which may well be inside this body).
                self.stats.bad_framing += 1;
                let n = flow.buf.len().min(self.config.body_window);
                request.body = flow.buf[..n.min(self.config.max_body_inspect)].to_vec();
                request.body_truncated = true;
                self.stats.requests += 1;
                emit(key, request, meta);
                self.desync(flow);
                return;
            }
        };
        let desync_after = matches!(framing, BodyFraming::Chunked(_))
            && request.header("content-length").is_some();
        if desync_after {
            self.stats.ambiguous_framing += 1;
        }
        let inspect = match self.reserve(&request) {
            Some(reserved) => Some(Inspect {
                stream: BodyStream::new(request.header("content-type"), self.config.body_window),
                request,
                meta,
                emitted: false,
                left: self.config.max_body_inspect,
                reserved,
            }),
            None => {
                // Not followed: inspect the head now, with the body bytes that came with it.
                let (body, complete) = self.transient_body(&framing, &flow.buf);
                request.body = body;
                request.body_truncated = !complete;
                self.stats.requests += 1;
                emit(key, request, meta);
                None
            }
        };
        flow.body = Some(Box::new(BodyState {
            framing,
            inspect,
            desync_after,
        }));
        flow.mode = Mode::Body;
        self.maybe_skip(key, flow, emit);
    }

    /// Reserve the budgets for inspecting the body of `request`; `None` when they do not allow
    /// it (counted) or bodies are not inspected.
    fn reserve(&mut self, request: &Request) -> Option<usize> {
        if self.config.max_body_inspect == 0 {
            return None;
        }
        let need = head_size(request) + self.config.body_window;
        if need > self.config.max_flow_body_bytes {
            self.stats.body_skipped_flow_budget += 1;
            return None;
        }
        if self.body_bytes + need > self.config.max_body_bytes {
            self.stats.body_skipped_global_budget += 1;
            return None;
        }
        self.body_bytes += need;
        Some(need)
    }

    /// The body bytes available in `buf` (up to one window), for a head emitted without
    /// following its body; and whether that is the whole body.
    fn transient_body(&self, framing: &BodyFraming, buf: &[u8]) -> (Vec<u8>, bool) {
        let max = self.config.body_window.min(self.config.max_body_inspect);
        match framing {
            BodyFraming::Length(n) => {
                let k = buf.len().min(max);
                (buf[..k].to_vec(), *n <= k as u64)
            }
            BodyFraming::Chunked(dec) => {
                let mut dec = *dec;
                let mut out = Vec::new();
                let mut total = 0usize;
                let done = dec.feed(buf, |d| {
                    total += d.len();
                    let room = max.saturating_sub(out.len());
                    out.extend_from_slice(&d[..d.len().min(room)]);
                });
                (out, matches!(done, Ok(Some(_))) && total <= max)
            }
        }
    }

    /// Walk `data` as body bytes; returns how many belong to the body (all of them unless the
    /// body ends, or its framing breaks, inside `data`).
    fn body_data(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        data: &[u8],
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) -> usize {
        let Some(body) = flow.body.as_mut() else {
            flow.mode = Mode::Head;
            return 0;
        };
        let BodyState {
            framing, inspect, ..
        } = &mut **body;
        let stats = &mut self.stats;
        let (n, end) = match framing {
            BodyFraming::Length(rem) => {
                let n = usize::try_from(*rem).unwrap_or(usize::MAX).min(data.len());
                inspect_bytes(inspect, &data[..n], key, stats, emit);
                *rem -= n as u64;
                (n, (*rem == 0).then_some(true))
            }
            BodyFraming::Chunked(dec) => {
                match dec.feed(data, |d| inspect_bytes(inspect, d, key, stats, emit)) {
                    Ok(Some(n)) => (n, Some(true)),
                    Ok(None) => (data.len(), None),
                    Err(bad) => (bad.at, Some(false)),
                }
            }
        };
        match end {
            Some(true) => self.end_body(key, flow, emit),
            Some(false) => {
                self.stats.bad_framing += 1;
                self.abandon_body(key, flow, emit);
                self.desync(flow);
            }
            None => self.maybe_skip(key, flow, emit),
        }
        n
    }

    /// Stop inspecting once the bound is reached; then skip body bytes by count where the
    /// framing allows (the rest of a `Content-Length` body, the rest of a chunk's data).
    fn maybe_skip(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        let Some(body) = flow.body.as_mut() else {
            return;
        };
        if body.inspect.as_ref().is_some_and(|i| i.left == 0)
            && let Some(ins) = body.inspect.take()
        {
            self.body_bytes -= ins.reserved;
            self.stats.bodies_cut += 1;
            ins.finish(true, key, &mut self.stats, emit);
        }
        if body.inspect.is_some() {
            return;
        }
        match &mut body.framing {
            BodyFraming::Length(rem) => {
                let left = *rem;
                flow.body = None;
                Self::skip_to(flow, left);
            }
            BodyFraming::Chunked(dec) => {
                let left = dec.data_left();
                if left > 0 && dec.skip(left).is_ok() {
                    flow.mode = Mode::Skip { left };
                }
            }
        }
    }

    /// The body ended where its framing says: inspect what is held, release the budget, and
    /// expect the next request.
    fn end_body(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        let desync = flow.body.as_ref().is_some_and(|b| b.desync_after);
        self.close_body(key, flow, false, emit);
        flow.mode = Mode::Head;
        if desync {
            self.desync(flow);
            // The next request's boundary is disputed, not unknown: it is parsed (out of sync)
            // from where chunked framing puts it.
            flow.mode = Mode::Head;
        }
    }

    /// The body will not be followed to its end (connection end, lost framing): inspect what
    /// is held and release the budget.
    fn abandon_body(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        self.close_body(key, flow, true, emit);
    }

    fn close_body(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        more: bool,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        if let Some(body) = flow.body.take()
            && let Some(ins) = body.inspect
        {
            self.body_bytes -= ins.reserved;
            ins.finish(more, key, &mut self.stats, emit);
        }
    }

    /// The flow lost track of request boundaries: resync, out of sync for good.
    fn desync(&mut self, flow: &mut Flow) {
        if flow.in_sync {
            self.stats.desyncs += 1;
        }
        flow.in_sync = false;
        if let Some(body) = flow.body.take()
            && let Some(ins) = body.inspect
        {
            self.body_bytes -= ins.reserved;
        }
        flow.mode = Mode::Resync;
        flow.hinted = None;
    }

    /// After a segment: the request whose head came in it is emitted now (with the body bytes
    /// that came along), and a skip that goes on is hinted.
    fn after_segment(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        if let Some(body) = flow.body.as_mut()
            && let Some(ins) = body.inspect.as_mut()
            && !ins.emitted
        {
            ins.flush(false, true, key, &mut self.stats, emit);
        }
        if let Mode::Skip { left } = flow.mode {
            let due = flow.hinted.is_none_or(|h| seq_diff(flow.expected, h) >= 0);
            if due && left >= MIN_SKIP_HINT {
                let until = flow.expected.wrapping_add(left.min(MAX_SKIP_HINT) as u32);
                if self.hints.len() < MAX_PENDING_HINTS {
                    self.hints.push((*key, until));
                    self.stats.skip_hints += 1;
                } else {
                    self.stats.skip_hints_dropped += 1;
                }
                flow.hinted = Some(until);
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
            if let Ok(Some((mut request, _))) = http::parse_head(&closed, &self.limits) {
                request.body_truncated = true;
                self.stats.requests += 1;
                self.stats.partial_requests += 1;
                emit(key, request, flow.meta());
            }
        }
        flow.buf.clear();
        self.desync(flow);
    }

    /// The client ended the connection: inspect leftovers.
    fn finish(
        &mut self,
        key: &FlowKey,
        flow: &mut Flow,
        emit: &mut impl FnMut(&FlowKey, Request, RequestMeta),
    ) {
        match flow.mode {
            Mode::Head if !flow.buf.is_empty() => self.flush_partial(key, flow, emit),
            Mode::Body | Mode::Skip { .. } => self.abandon_body(key, flow, emit),
            _ => {}
        }
    }
}
