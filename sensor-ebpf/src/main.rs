#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
//! Palisade's kernel programs: a passive TC tap at ingress with a handshake tracker at egress,
//! and a cgroup socket-buffer tap that sees what is delivered to local sockets.
//!
//! - `palisade_egress` records, for every SYN-ACK the server sends from a watched port, the
//!   server's ISN and the client's first data sequence number in `PENDING`.
//! - `palisade_ingress` moves a flow from `PENDING` to `ESTABLISHED` when the client's ACK
//!   acknowledges `server_isn + 1` (a blind spoofer never saw the ISN), and for every TCP segment
//!   with payload for a watched destination port (IPv4 or IPv6) copies the 5-tuple, interface,
//!   timestamp, sequence number, handshake facts and up to `capture_bytes` of payload into the
//!   `EVENTS` ring buffer, as records of at most `MAX_CAPTURE` bytes each. A flow listed in
//!   `SKIP` gets header-only records until the sequence number userspace gave.
//!
//! - `palisade_cgroup_ingress` (attached at the cgroup v2 root) sees every segment the kernel
//!   delivers to a local socket, whatever the interface or CNI. The receiving socket answers
//!   what the TC pair has to track: a segment delivered to a connected TCP socket belongs to a
//!   handshake the kernel completed, and the socket's `rcv_nxt - bytes_received` is the
//!   client's first data sequence number. Records carry the socket's cgroup id, from which
//!   userspace names the pod and container.
//!
//! No program drops or changes a packet: the TC programs always return `TC_ACT_UNSPEC` ("next
//! program"), so other programs on the same hook (a CNI's, for example) still run, and the
//! cgroup program always returns 1 ("pass"). Any error fails open: the packet passes, a
//! counter moves. Pure ACKs and handshake packets only update maps; they never reach the ring.

use aya_ebpf::{
    bindings::{
        BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, BPF_RB_RING_SIZE, TC_ACT_UNSPEC,
    },
    helpers::{
        bpf_ktime_get_ns,
        generated::{bpf_sk_fullsock, bpf_skb_cgroup_id, bpf_skb_load_bytes, bpf_tcp_sock},
    },
    macros::{cgroup_skb, classifier, map},
    maps::{Array, LruHashMap, PerCpuArray, RingBuf},
    programs::{SkBuffContext, TcContext, sk_buff::SkBuff},
};
use palisade_sensor_common::{
    CAPTURE_MASK, CONFIG_ANY_PORT, CONFIG_CAPTURE_BYTES, CONFIG_SLOTS, CONFIG_WAKEUP_BYTES,
    COUNTER_CAPTURED, COUNTER_ERRORS, COUNTER_HANDSHAKES, COUNTER_NOT_HTTP, COUNTER_RING_FULL,
    COUNTER_SHED, COUNTER_SKIPPED, COUNTER_SLOTS, COUNTER_SYNACKS, COUNTER_UNPROVEN,
    DEFAULT_CAPTURE, DEFAULT_TRACKED_FLOWS, FAMILY_V4, FAMILY_V6, FLAG_ESTABLISHED, FLAG_FIN,
    FLAG_IPV6, FLAG_RST, FLAG_SKIPPED, FLAG_TRUNCATED, FlowTuple, MAX_CAPTURE, MAX_CAPTURE_BYTES,
    MAX_CHUNKS, Pending, SegmentEvent, SegmentHeader,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
/// `BPF_TCP_*` socket states (`struct bpf_sock.state`) in which a server-side socket has
/// completed its handshake and still reads: ESTABLISHED, FIN_WAIT1, FIN_WAIT2, CLOSE_WAIT,
/// LAST_ACK, CLOSING.
const BPF_TCP_ESTABLISHED: u32 = 1;
const BPF_TCP_FIN_WAIT1: u32 = 4;
const BPF_TCP_FIN_WAIT2: u32 = 5;
const BPF_TCP_CLOSE_WAIT: u32 = 8;
const BPF_TCP_LAST_ACK: u32 = 9;
const BPF_TCP_CLOSING: u32 = 11;
/// cgroup_skb verdict: let the packet through.
const CGROUP_PASS: i32 = 1;
const HEADER_LEN: usize = core::mem::size_of::<SegmentHeader>();
/// Wakeup threshold when userspace did not configure one: 256 KiB of unread data.
const DEFAULT_WAKEUP_BYTES: u64 = 256 * 1024;

/// Captured segments for userspace. Its size is set by the loader (default 8 MiB). Records are
/// variable-sized: the header and the bytes captured, not the whole `SegmentEvent`.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Per-CPU scratch record: each record is assembled here, then only `header + captured` bytes
/// are copied into `EVENTS`. (Reserving a fixed `SegmentEvent` in the ring would take 4 KiB per
/// record: a ~150-byte request then used 25x the ring space and forced 25x the reader wakeups.)
#[map]
static SCRATCH: PerCpuArray<SegmentEvent> = PerCpuArray::with_max_entries(1, 0);

/// Watched server ports: index = port, value 1 = watched. Written by userspace.
#[map]
static PORTS: Array<u8> = Array::with_max_entries(65536, 0);

/// Runtime settings written by userspace (`CONFIG_*` slots).
#[map]
static CONFIG: Array<u32> = Array::with_max_entries(CONFIG_SLOTS, 0);

/// Per-CPU counters (`COUNTER_*` slots).
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Handshakes the server answered (SYN-ACK sent) but the client has not acknowledged yet. A SYN
/// flood (spoofed or not) churns only this map. Sized by the loader.
#[map]
static PENDING: LruHashMap<FlowTuple, Pending> =
    LruHashMap::with_max_entries(DEFAULT_TRACKED_FLOWS, 0);

/// Flows whose handshake completed: value = the client's first data sequence number. Sized by
/// the loader.
#[map]
static ESTABLISHED: LruHashMap<FlowTuple, u32> =
    LruHashMap::with_max_entries(DEFAULT_TRACKED_FLOWS, 0);

/// Flows userspace needs no payload of before a sequence number (value): written by userspace,
/// entries removed here once the flow passes it. Sized by the loader.
#[map]
static SKIP: LruHashMap<FlowTuple, u32> = LruHashMap::with_max_entries(DEFAULT_TRACKED_FLOWS, 0);

/// cgroup source, `--port any`: connections whose first bytes were not an HTTP request
/// (value: the connection's first data sequence number, so a new connection on the same
/// 4-tuple is not mistaken for the old one). Sized by the loader.
#[map]
static NOT_HTTP: LruHashMap<FlowTuple, u32> =
    LruHashMap::with_max_entries(DEFAULT_TRACKED_FLOWS, 0);

#[classifier]
pub fn palisade_ingress(ctx: TcContext) -> i32 {
    if try_ingress(&ctx).is_err() {
        bump(COUNTER_ERRORS);
    }
    // Always "next program": a tap never decides a packet's fate.
    TC_ACT_UNSPEC
}

#[classifier]
pub fn palisade_egress(ctx: TcContext) -> i32 {
    if try_egress(&ctx).is_err() {
        bump(COUNTER_ERRORS);
    }
    TC_ACT_UNSPEC
}

#[cgroup_skb(ingress)]
pub fn palisade_cgroup_ingress(ctx: SkBuffContext) -> i32 {
    if try_cgroup_ingress(&ctx).is_err() {
        bump(COUNTER_ERRORS);
    }
    // Always "pass": a tap never decides a packet's fate.
    CGROUP_PASS
}

#[inline(always)]
fn bump(slot: u32) {
    if let Some(c) = COUNTERS.get_ptr_mut(slot) {
        // SAFETY: per-CPU slot, only this CPU's program instance writes it.
        unsafe { *c += 1 };
    }
}

#[inline(always)]
fn be16(b: &[u8], i: usize) -> u16 {
    u16::from_be_bytes([b[i], b[i + 1]])
}

#[inline(always)]
fn be32(b: &[u8], i: usize) -> u32 {
    u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

#[inline(always)]
fn any_port() -> bool {
    matches!(CONFIG.get(CONFIG_ANY_PORT), Some(&n) if n != 0)
}

#[inline(always)]
fn watched(port: u16) -> bool {
    any_port() || matches!(PORTS.get(port as u32), Some(1))
}

/// Do the first four bytes of a stream start an HTTP/1.x request (a method and its space, or
/// the first four letters of a longer method)?
#[inline(always)]
fn http_method(h: &[u8; 4]) -> bool {
    matches!(
        h,
        b"GET " | b"POST" | b"PUT " | b"HEAD" | b"DELE" | b"OPTI" | b"PATC" | b"CONN" | b"TRAC"
    )
}

/// Parsed L3/L4 facts of one TCP packet.
struct Seg {
    l4_off: usize,
    /// L4 length (TCP header + payload) according to the IP header.
    l4_len: usize,
    ipv6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    /// The first 16 bytes of the TCP header (ports, seq, ack, offset, flags).
    tcp: [u8; 16],
}

/// Parse an Ethernet frame (TC): the EtherType, then [`parse_ip`].
#[inline(always)]
fn parse(ctx: &TcContext) -> Result<Option<Seg>, i64> {
    let proto = u16::from_be(ctx.load::<u16>(12).map_err(|_| 1i64)?);
    parse_ip(&ctx.skb, ETH_HLEN, proto)
}

/// Parse IPv4/IPv6 at `l3` (EtherType `proto`) and the TCP header; `None` for anything that is
/// not unfragmented TCP directly after the IP header.
#[inline(always)]
fn parse_ip(skb: &SkBuff, l3: usize, proto: u16) -> Result<Option<Seg>, i64> {
    let (l4_off, l4_len, ipv6, src, dst) = match proto {
        ETH_P_IP => {
            let ip: [u8; 20] = skb.load(l3).map_err(|_| 1i64)?;
            if ip[9] != IPPROTO_TCP {
                return Ok(None);
            }
            // Fragments (MF set or offset != 0) cannot be reassembled here: skip them.
            if be16(&ip, 6) & 0x3fff != 0 {
                return Ok(None);
            }
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Err(2);
            }
            let mut total = be16(&ip, 2) as usize;
            if total == 0 {
                // BIG TCP / GSO beyond 64 KiB: the IP header carries 0; use the skb length.
                total = (skb.len() as usize).saturating_sub(l3);
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&ip[12..16]);
            dst[..4].copy_from_slice(&ip[16..20]);
            (l3 + ihl, total.saturating_sub(ihl), false, src, dst)
        }
        ETH_P_IPV6 => {
            let ip: [u8; 40] = skb.load(l3).map_err(|_| 1i64)?;
            // Only TCP directly after the fixed header (no extension-header walk).
            if ip[6] != IPPROTO_TCP {
                return Ok(None);
            }
            let mut plen = be16(&ip, 4) as usize;
            if plen == 0 {
                plen = (skb.len() as usize).saturating_sub(l3 + 40);
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            dst.copy_from_slice(&ip[24..40]);
            (l3 + 40, plen, true, src, dst)
        }
        _ => return Ok(None),
    };
    let tcp: [u8; 16] = skb.load(l4_off).map_err(|_| 1i64)?;
    Ok(Some(Seg {
        l4_off,
        l4_len,
        ipv6,
        src,
        dst,
        tcp,
    }))
}

#[inline(always)]
fn family(ipv6: bool) -> u32 {
    if ipv6 { FAMILY_V6 } else { FAMILY_V4 }
}

/// Egress: remember the server's half of each handshake on a watched port.
#[inline(always)]
fn try_egress(ctx: &TcContext) -> Result<(), i64> {
    let Some(seg) = parse(ctx)? else {
        return Ok(());
    };
    let tcp = &seg.tcp;
    // Exactly SYN+ACK (no RST/FIN): the server accepting a connection.
    if tcp[13] & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) != TCP_SYN | TCP_ACK {
        return Ok(());
    }
    let server_port = be16(tcp, 0);
    if !watched(server_port) {
        return Ok(());
    }
    let key = FlowTuple {
        client_addr: seg.dst,
        server_addr: seg.src,
        client_port: be16(tcp, 2),
        server_port,
        family: family(seg.ipv6),
    };
    let pending = Pending {
        server_isn: be32(tcp, 4),
        client_seq: be32(tcp, 8),
    };
    // A new handshake on this 4-tuple ends whatever connection used it before: until the
    // client acknowledges this SYN-ACK, the flow is not established.
    let _ = ESTABLISHED.remove(&key);
    PENDING.insert(&key, &pending, 0).map_err(|_| 6i64)?;
    bump(COUNTER_SYNACKS);
    Ok(())
}

/// TCP facts of a segment on a watched port, shared by both sources.
struct Tcp {
    key: FlowTuple,
    seq: u32,
    flags: u8,
    /// Offset of the payload in the packet.
    payload_off: usize,
    payload_len: usize,
}

/// The segment's [`Tcp`] facts when its destination port is watched.
#[inline(always)]
fn tcp_facts(seg: &Seg) -> Result<Option<Tcp>, i64> {
    let tcp = &seg.tcp;
    let dst_port = be16(tcp, 2);
    if !watched(dst_port) {
        return Ok(None);
    }
    let doff = ((tcp[12] >> 4) as usize) * 4;
    if doff < 20 {
        return Err(3);
    }
    Ok(Some(Tcp {
        key: FlowTuple {
            client_addr: seg.src,
            server_addr: seg.dst,
            client_port: be16(tcp, 0),
            server_port: dst_port,
            family: family(seg.ipv6),
        },
        seq: be32(tcp, 4),
        flags: tcp[13],
        payload_off: seg.l4_off + doff,
        payload_len: seg.l4_len.saturating_sub(doff),
    }))
}

/// TC ingress: complete handshakes, then capture payload.
#[inline(always)]
fn try_ingress(ctx: &TcContext) -> Result<(), i64> {
    let Some(seg) = parse(ctx)? else {
        return Ok(());
    };
    let Some(t) = tcp_facts(&seg)? else {
        return Ok(());
    };
    let tcp = &seg.tcp;
    let key = t.key;

    // Handshake: only a segment that acknowledges the server's ISN + 1 proves the source
    // address received the SYN-ACK. The handshake's own ACK usually does it; a data segment
    // sent before any server data carries the same ack_seq, so a lost ACK is recovered.
    let mut stream_start: Option<u32> = None;
    if t.flags & TCP_ACK != 0 {
        // SAFETY: the value is copied out at once; LRU entries may be replaced concurrently,
        // which at worst yields another valid u32.
        stream_start = unsafe { ESTABLISHED.get(&key) }.copied();
        if stream_start.is_none() {
            // SAFETY: as above.
            if let Some(p) = unsafe { PENDING.get(&key) }.copied() {
                if be32(tcp, 8) == p.server_isn.wrapping_add(1) {
                    if ESTABLISHED.insert(&key, &p.client_seq, 0).is_ok() {
                        bump(COUNTER_HANDSHAKES);
                    }
                    let _ = PENDING.remove(&key);
                    stream_start = Some(p.client_seq);
                }
            }
        }
    }

    if any_port() {
        // Any port: only flows whose handshake was seen, and only while their first bytes
        // look like HTTP. A first segment shorter than a method is let through (the flow is
        // then inspected in full, as on a listed port): splitting the method costs an
        // attacker nothing but keeps it inspected.
        let Some(start) = stream_start else {
            return Ok(());
        };
        if t.payload_len >= 4 && t.seq == start {
            let head: [u8; 4] = ctx.load(t.payload_off).map_err(|_| 7i64)?;
            if !http_method(&head) {
                let _ = ESTABLISHED.remove(&key);
                bump(COUNTER_NOT_HTTP);
                return Ok(());
            }
        }
    }
    // SAFETY: reading a plain field of the context.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    capture(&ctx.skb, &seg, &t, stream_start, ifindex, 0)
}

/// Is a socket in this `BPF_TCP_*` state the server side of a completed handshake?
#[inline(always)]
fn connected(state: u32) -> bool {
    matches!(
        state,
        BPF_TCP_ESTABLISHED
            | BPF_TCP_FIN_WAIT1
            | BPF_TCP_FIN_WAIT2
            | BPF_TCP_CLOSE_WAIT
            | BPF_TCP_LAST_ACK
            | BPF_TCP_CLOSING
    )
}

/// cgroup ingress: the segment is being delivered to a local socket. The socket says whether
/// the handshake completed and where the client's stream starts; its cgroup says who
/// receives it.
#[inline(always)]
fn try_cgroup_ingress(ctx: &SkBuffContext) -> Result<(), i64> {
    let skb = &ctx.skb;
    // Here the packet starts at its network header; `protocol` is the EtherType.
    let proto = u16::from_be(skb.protocol() as u16);
    let Some(seg) = parse_ip(skb, 0, proto)? else {
        return Ok(());
    };
    let Some(t) = tcp_facts(&seg)? else {
        return Ok(());
    };

    // SAFETY: reading plain fields of the context; the socket pointers are checked for null
    // (the verifier insists) before use.
    let (ifindex, stream_start) = unsafe {
        let raw = skb.skb;
        let ifindex = (*raw).ifindex;
        let sk = (*raw).__bindgen_anon_2.sk;
        let mut start = None;
        if !sk.is_null() {
            let full = bpf_sk_fullsock(sk);
            if !full.is_null() && connected((*full).state) {
                let tp = bpf_tcp_sock(full);
                if !tp.is_null() {
                    // rcv_nxt advanced by exactly the bytes received (and a FIN) since the
                    // handshake: what is left is the client's ISN + 1.
                    start = Some((*tp).rcv_nxt.wrapping_sub((*tp).bytes_received as u32));
                }
            }
        }
        (ifindex, start)
    };

    if any_port() {
        // As on TC: only proven connections, and only while they look like HTTP. A
        // connection is judged once, on the segment that starts its stream.
        let Some(start) = stream_start else {
            return Ok(());
        };
        // SAFETY: copied out at once.
        if let Some(judged) = unsafe { NOT_HTTP.get(&t.key) }.copied() {
            if judged == start {
                return Ok(());
            }
            // A new connection on the 4-tuple: judge it afresh.
            let _ = NOT_HTTP.remove(&t.key);
        }
        if t.payload_len >= 4 && t.seq == start {
            let head: [u8; 4] = skb.load(t.payload_off).map_err(|_| 7i64)?;
            if !http_method(&head) {
                let _ = NOT_HTTP.insert(&t.key, &start, 0);
                bump(COUNTER_NOT_HTTP);
                return Ok(());
            }
        }
    }
    // SAFETY: `skb_cgroup_id` reads the cgroup of the socket the skb is being delivered to.
    let cgroup_id = unsafe { bpf_skb_cgroup_id(skb.skb) };
    capture(skb, &seg, &t, stream_start, ifindex, cgroup_id)
}

/// Copy a segment on a watched port into the ring: records of at most `MAX_CAPTURE` bytes,
/// header-only for FIN/RST and skipped payload. `stream_start` is set when the connection is
/// proven.
#[inline(always)]
fn capture(
    skb: &SkBuff,
    seg: &Seg,
    t: &Tcp,
    stream_start: Option<u32>,
    ifindex: u32,
    cgroup_id: u64,
) -> Result<(), i64> {
    let key = &t.key;
    let seq = t.seq;
    let payload_len = t.payload_len;
    let tcp_flags = t.flags;
    let fin_rst = tcp_flags & (TCP_FIN | TCP_RST) != 0;
    if payload_len == 0 && !fin_rst {
        // Pure ACKs and handshakes carry nothing to inspect: map updates only.
        return Ok(());
    }
    if payload_len > 0 && stream_start.is_none() {
        bump(COUNTER_UNPROVEN);
    }
    // Skip map: a segment that ends at or before `until` is reported without payload.
    let mut skipped = false;
    if payload_len > 0 {
        // SAFETY: copied out at once.
        if let Some(until) = unsafe { SKIP.get(key) }.copied() {
            let end = seq.wrapping_add(payload_len as u32);
            if until.wrapping_sub(end) as i32 >= 0 {
                skipped = true;
                bump(COUNTER_SKIPPED);
            } else if seq.wrapping_sub(until) as i32 >= 0 {
                // The flow is past `until`: the entry has done its job.
                let _ = SKIP.remove(key);
            }
        }
    }

    let capture = match CONFIG.get(CONFIG_CAPTURE_BYTES) {
        Some(&n) if n > 0 => n,
        _ => DEFAULT_CAPTURE,
    };
    let capture = core::cmp::min(capture, MAX_CAPTURE_BYTES) as usize;
    let total = if skipped {
        0
    } else {
        core::cmp::min(payload_len, capture)
    };

    let Some(ev) = SCRATCH.get_ptr_mut(0) else {
        return Err(5);
    };
    let mut base_flags = 0u32;
    if seg.ipv6 {
        base_flags |= FLAG_IPV6;
    }
    if stream_start.is_some() {
        base_flags |= FLAG_ESTABLISHED;
    }
    if skipped {
        base_flags |= FLAG_SKIPPED;
    }
    let mut end_flags = 0u32;
    if tcp_flags & TCP_FIN != 0 {
        end_flags |= FLAG_FIN;
    }
    if tcp_flags & TCP_RST != 0 {
        end_flags |= FLAG_RST;
    }
    // SAFETY: writing plain fields of this CPU's scratch record.
    unsafe {
        let h = &raw mut (*ev).header;
        (*h).timestamp_ns = bpf_ktime_get_ns();
        (*h).src_addr = seg.src;
        (*h).dst_addr = seg.dst;
        (*h).src_port = key.client_port;
        (*h).dst_port = key.server_port;
        (*h).ifindex = ifindex;
        (*h).stream_start = stream_start.unwrap_or(0);
        (*h).reserved = 0;
        (*h).cgroup_id = cgroup_id;
    }

    // Wake the reader only when enough data waits; it also polls on a timer.
    let wakeup = match CONFIG.get(CONFIG_WAKEUP_BYTES) {
        Some(&n) if n > 0 => n as u64,
        _ => DEFAULT_WAKEUP_BYTES,
    };
    let waiting = EVENTS.query(BPF_RB_AVAIL_DATA as u64);
    let wake = if waiting >= wakeup {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    // Under pressure (the ring more than half full, the reader behind), copy only the first
    // record of a segment: request heads keep arriving whole, body bytes past the first 4 KiB
    // are shed (userspace sees a truncated segment, a hole inside a body it can pass over).
    let pressured = waiting.saturating_mul(2) > EVENTS.query(BPF_RB_RING_SIZE as u64);

    let payload_off = t.payload_off;
    // Records of at most MAX_CAPTURE bytes, each with its own seq; the last one stands for the
    // rest of the segment (and carries FIN/RST). A segment with nothing to copy (FIN, RST,
    // skipped) is one header-only record.
    let mut chunks = if total == 0 {
        1
    } else {
        total.div_ceil(MAX_CAPTURE)
    };
    if pressured && chunks > 1 {
        chunks = 1;
        bump(COUNTER_SHED);
    }
    for i in 0..MAX_CHUNKS {
        if i >= chunks {
            break;
        }
        let off = i * MAX_CAPTURE;
        let last = i + 1 == chunks;
        let n = core::cmp::min(total.saturating_sub(off), MAX_CAPTURE) as u64;
        // Bytes handed to the ring: the header, plus the payload copied.
        let mut record = HEADER_LEN as u64;
        let mut copied = 0u32;
        if n > 0 {
            let mut m = n - 1;
            // The verifier must see a bounded, non-zero length on the very register handed to
            // the helper; LLVM folds ordinary checks away, so the mask is applied in asm.
            // SAFETY: pure register arithmetic.
            unsafe {
                core::arch::asm!("{0} &= {mask}", inout(reg) m, mask = const CAPTURE_MASK, options(pure, nomem, nostack))
            };
            // SAFETY: `ev` points at this CPU's scratch record of `size_of::<SegmentEvent>()`
            // bytes and `m + 1 <= MAX_CAPTURE` is the payload array's length.
            let ret = unsafe {
                bpf_skb_load_bytes(
                    skb.skb as *const _,
                    (payload_off + off) as u32,
                    (&raw mut (*ev).payload).cast(),
                    (m + 1) as u32,
                )
            };
            if ret < 0 {
                return Err(4);
            }
            copied = (m + 1) as u32;
            // Bounded by the masked register: HEADER_LEN + 1 ..= size_of::<SegmentEvent>().
            record += m + 1;
        }
        let stands_for = if last {
            payload_len.saturating_sub(off) as u32
        } else {
            copied
        };
        let mut flags = base_flags;
        if last {
            flags |= end_flags;
            if copied < stands_for {
                flags |= FLAG_TRUNCATED;
            }
        }
        // SAFETY: writing plain fields of this CPU's scratch record.
        unsafe {
            let h = &raw mut (*ev).header;
            (*h).seq = seq.wrapping_add(off as u32);
            (*h).payload_len = stands_for;
            (*h).captured = copied;
            (*h).flags = flags;
        }
        // SAFETY: `ev` is valid for `size_of::<SegmentEvent>()` bytes and `record` never
        // exceeds it.
        let bytes = unsafe { core::slice::from_raw_parts(ev.cast::<u8>(), record as usize) };
        let flag = if last { wake } else { BPF_RB_NO_WAKEUP };
        if EVENTS.output::<[u8]>(bytes, flag as u64).is_err() {
            // The rest would not fit either; userspace sees a hole and resyncs.
            bump(COUNTER_RING_FULL);
            return Ok(());
        }
        bump(COUNTER_CAPTURED);
    }
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
