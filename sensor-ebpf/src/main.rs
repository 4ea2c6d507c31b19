#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
//! Palisade's kernel program: a passive TC ingress tap.
//!
//! For every TCP segment with payload that arrives for a watched destination port (IPv4 or
//! IPv6), it copies the 5-tuple, interface, timestamp, sequence number and the first
//! `capture_bytes` of payload into the `EVENTS` ring buffer. It never drops or changes a packet
//! and always returns `TC_ACT_UNSPEC` ("next program"), so other programs on the same hook (a
//! CNI's, for example) still run. Any error fails open: the packet passes, a counter moves.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP, TC_ACT_UNSPEC},
    helpers::{bpf_ktime_get_ns, generated::bpf_skb_load_bytes},
    macros::{classifier, map},
    maps::{Array, PerCpuArray, RingBuf},
    programs::TcContext,
};
use palisade_sensor_common::{
    CAPTURE_MASK, CONFIG_CAPTURE_BYTES, CONFIG_SLOTS, CONFIG_WAKEUP_BYTES, COUNTER_CAPTURED,
    COUNTER_ERRORS, COUNTER_RING_FULL, COUNTER_SLOTS, DEFAULT_CAPTURE, FLAG_FIN, FLAG_IPV6,
    FLAG_RST, FLAG_TRUNCATED, MAX_CAPTURE, SegmentEvent, SegmentHeader,
};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPPROTO_TCP: u8 = 6;
const HEADER_LEN: usize = core::mem::size_of::<SegmentHeader>();
/// Wakeup threshold when userspace did not configure one: 256 KiB of unread data.
const DEFAULT_WAKEUP_BYTES: u64 = 256 * 1024;

/// Captured segments for userspace. Its size is set by the loader (default 8 MiB). Records are
/// variable-sized: the header and the bytes captured, not the whole `SegmentEvent`.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(8 * 1024 * 1024, 0);

/// Per-CPU scratch record: the segment is assembled here, then only `header + captured` bytes
/// are copied into `EVENTS`. (Reserving a fixed `SegmentEvent` in the ring would take 4 KiB per
/// segment: a ~150-byte request then used 25x the ring space and forced 25x the reader wakeups.)
#[map]
static SCRATCH: PerCpuArray<SegmentEvent> = PerCpuArray::with_max_entries(1, 0);

/// Watched destination ports: index = port, value 1 = watched. Written by userspace.
#[map]
static PORTS: Array<u8> = Array::with_max_entries(65536, 0);

/// Runtime settings written by userspace (`CONFIG_*` slots).
#[map]
static CONFIG: Array<u32> = Array::with_max_entries(CONFIG_SLOTS, 0);

/// Per-CPU counters (`COUNTER_*` slots): ring-buffer-full drops, captures, header errors.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

#[classifier]
pub fn palisade_ingress(ctx: TcContext) -> i32 {
    if try_ingress(&ctx).is_err() {
        bump(COUNTER_ERRORS);
    }
    // Always "next program": a tap never decides a packet's fate.
    TC_ACT_UNSPEC
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

/// Parsed L3/L4 facts of one packet.
struct Seg {
    l4_off: usize,
    /// L4 length (TCP header + payload) according to the IP header.
    l4_len: usize,
    ipv6: bool,
    src: [u8; 16],
    dst: [u8; 16],
}

#[inline(always)]
fn try_ingress(ctx: &TcContext) -> Result<(), i64> {
    let proto = u16::from_be(ctx.load::<u16>(12).map_err(|_| 1i64)?);
    let seg = match proto {
        ETH_P_IP => {
            let ip: [u8; 20] = ctx.load(ETH_HLEN).map_err(|_| 1i64)?;
            if ip[9] != IPPROTO_TCP {
                return Ok(());
            }
            // Fragments (MF set or offset != 0) cannot be reassembled here: skip them.
            if be16(&ip, 6) & 0x3fff != 0 {
                return Ok(());
            }
            let ihl = ((ip[0] & 0x0f) as usize) * 4;
            if ihl < 20 {
                return Err(2);
            }
            let mut total = be16(&ip, 2) as usize;
            if total == 0 {
                // BIG TCP / GSO beyond 64 KiB: the IP header carries 0; use the skb length.
                total = (ctx.len() as usize).saturating_sub(ETH_HLEN);
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src[..4].copy_from_slice(&ip[12..16]);
            dst[..4].copy_from_slice(&ip[16..20]);
            Seg {
                l4_off: ETH_HLEN + ihl,
                l4_len: total.saturating_sub(ihl),
                ipv6: false,
                src,
                dst,
            }
        }
        ETH_P_IPV6 => {
            let ip: [u8; 40] = ctx.load(ETH_HLEN).map_err(|_| 1i64)?;
            // Only TCP directly after the fixed header (no extension-header walk).
            if ip[6] != IPPROTO_TCP {
                return Ok(());
            }
            let mut plen = be16(&ip, 4) as usize;
            if plen == 0 {
                plen = (ctx.len() as usize).saturating_sub(ETH_HLEN + 40);
            }
            let mut src = [0u8; 16];
            let mut dst = [0u8; 16];
            src.copy_from_slice(&ip[8..24]);
            dst.copy_from_slice(&ip[24..40]);
            Seg {
                l4_off: ETH_HLEN + 40,
                l4_len: plen,
                ipv6: true,
                src,
                dst,
            }
        }
        _ => return Ok(()),
    };

    let tcp: [u8; 16] = ctx.load(seg.l4_off).map_err(|_| 1i64)?;
    let dst_port = be16(&tcp, 2);
    match PORTS.get(dst_port as u32) {
        Some(1) => {}
        _ => return Ok(()),
    }
    let doff = ((tcp[12] >> 4) as usize) * 4;
    if doff < 20 {
        return Err(3);
    }
    let payload_len = seg.l4_len.saturating_sub(doff);
    let tcp_flags = tcp[13];
    let fin_rst = tcp_flags & 0x05 != 0;
    if payload_len == 0 && !fin_rst {
        // Pure ACKs and handshakes carry nothing to inspect.
        return Ok(());
    }

    let capture = match CONFIG.get(CONFIG_CAPTURE_BYTES) {
        Some(&n) if n > 0 => n as usize,
        _ => DEFAULT_CAPTURE as usize,
    };

    let Some(ev) = SCRATCH.get_ptr_mut(0) else {
        return Err(5);
    };
    let payload_off = seg.l4_off + doff;
    let n = core::cmp::min(core::cmp::min(payload_len, capture), MAX_CAPTURE) as u64;
    let mut copied = 0u32;
    // Bytes handed to the ring: the header, plus the payload copied.
    let mut record = HEADER_LEN as u64;
    if n > 0 {
        let mut m = n - 1;
        // The verifier must see a bounded, non-zero length on the very register handed to the
        // helper; LLVM folds ordinary checks away, so the mask is applied in asm.
        // SAFETY: pure register arithmetic.
        unsafe {
            core::arch::asm!("{0} &= {mask}", inout(reg) m, mask = const CAPTURE_MASK, options(pure, nomem, nostack))
        };
        // SAFETY: `ev` points at this CPU's scratch record of `size_of::<SegmentEvent>()` bytes
        // and `m + 1 <= MAX_CAPTURE` is the payload array's length.
        let ret = unsafe {
            bpf_skb_load_bytes(
                ctx.skb.skb as *const _,
                payload_off as u32,
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
    let mut flags = 0u32;
    if seg.ipv6 {
        flags |= FLAG_IPV6;
    }
    if (copied as usize) < payload_len {
        flags |= FLAG_TRUNCATED;
    }
    if tcp_flags & 0x01 != 0 {
        flags |= FLAG_FIN;
    }
    if tcp_flags & 0x04 != 0 {
        flags |= FLAG_RST;
    }
    // SAFETY: writing plain fields of this CPU's scratch record.
    unsafe {
        let h = &raw mut (*ev).header;
        (*h).timestamp_ns = bpf_ktime_get_ns();
        (*h).src_addr = seg.src;
        (*h).dst_addr = seg.dst;
        (*h).src_port = be16(&tcp, 0);
        (*h).dst_port = dst_port;
        (*h).ifindex = (*ctx.skb.skb).ifindex;
        (*h).seq = be32(&tcp, 4);
        (*h).payload_len = payload_len as u32;
        (*h).captured = copied;
        (*h).flags = flags;
    }

    // Wake the reader only when enough data waits; it also polls on a timer.
    let wakeup = match CONFIG.get(CONFIG_WAKEUP_BYTES) {
        Some(&n) if n > 0 => n as u64,
        _ => DEFAULT_WAKEUP_BYTES,
    };
    let wake = if EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= wakeup {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    // SAFETY: `ev` is valid for `size_of::<SegmentEvent>()` bytes and `record` never exceeds it.
    let bytes = unsafe { core::slice::from_raw_parts(ev.cast::<u8>(), record as usize) };
    if EVENTS.output::<[u8]>(bytes, wake as u64).is_err() {
        bump(COUNTER_RING_FULL);
        return Ok(());
    }
    bump(COUNTER_CAPTURED);
    Ok(())
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
