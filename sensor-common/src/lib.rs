#![no_std]
//! Types shared by the kernel programs (`palisade-sensor-ebpf`) and the sensor's userspace.
//!
//! Everything here is `#[repr(C)]`, `Copy`, with padding written out and `u32` flags instead of
//! `bool`, so both sides agree on the layout byte for byte. The `user` feature adds the
//! `aya::Pod` impls userspace needs to read events and write maps.

/// Largest number of payload bytes one event can carry (the ring-buffer record's payload array).
/// The mask applied in the kernel (`CAPTURE_MASK`) relies on this being a power of two.
pub const MAX_CAPTURE: usize = 4096;
/// `MAX_CAPTURE - 1`, the mask the kernel applies to the copy length for the verifier.
pub const CAPTURE_MASK: u64 = (MAX_CAPTURE as u64) - 1;
/// Default number of payload bytes copied per segment.
pub const DEFAULT_CAPTURE: u32 = 2048;

/// The event describes an IPv6 packet (addresses use all 16 bytes); else IPv4 in the first 4.
pub const FLAG_IPV6: u32 = 1;
/// The segment carried more payload than was copied (`payload_len > captured`).
pub const FLAG_TRUNCATED: u32 = 1 << 1;
/// The segment has the FIN flag.
pub const FLAG_FIN: u32 = 1 << 2;
/// The segment has the RST flag.
pub const FLAG_RST: u32 = 1 << 3;

/// Index of each slot in the `CONFIG` array map.
pub const CONFIG_CAPTURE_BYTES: u32 = 0;
/// Fill level of the ring buffer (bytes) past which the kernel forces a wakeup of the reader.
pub const CONFIG_WAKEUP_BYTES: u32 = 1;
/// Number of slots in `CONFIG`.
pub const CONFIG_SLOTS: u32 = 2;

/// Index of each counter in the per-CPU `COUNTERS` map.
pub const COUNTER_RING_FULL: u32 = 0;
/// Segments copied into the ring buffer.
pub const COUNTER_CAPTURED: u32 = 1;
/// Segments on watched ports whose headers could not be read (skipped, passed).
pub const COUNTER_ERRORS: u32 = 2;
/// Number of counters in `COUNTERS`.
pub const COUNTER_SLOTS: u32 = 3;

/// Fixed-size header of a captured TCP segment. A ring-buffer record is this header followed by
/// exactly `captured` payload bytes (the kernel assembles a [`SegmentEvent`] in per-CPU scratch
/// space and copies only that much into the ring).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// `bpf_ktime_get_ns()` when the program saw the segment (monotonic, boot-based).
    pub timestamp_ns: u64,
    /// Source address: IPv4 in the first 4 bytes (network order) or IPv6 in all 16.
    pub src_addr: [u8; 16],
    /// Destination address, same encoding as `src_addr`.
    pub dst_addr: [u8; 16],
    /// Source port, host byte order.
    pub src_port: u16,
    /// Destination port, host byte order.
    pub dst_port: u16,
    /// `ifindex` of the interface the packet arrived on.
    pub ifindex: u32,
    /// TCP sequence number of the first payload byte, host byte order.
    pub seq: u32,
    /// TCP payload length of the packet (from the IP header; may exceed `captured`).
    pub payload_len: u32,
    /// Payload bytes copied into the record.
    pub captured: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
}

/// The kernel's scratch record: a header and room for [`MAX_CAPTURE`] payload bytes.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SegmentEvent {
    /// What and where.
    pub header: SegmentHeader,
    /// Payload; only the first `header.captured` bytes are meaningful.
    pub payload: [u8; MAX_CAPTURE],
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays with explicit padding-free layout.
    unsafe impl aya::Pod for super::SegmentHeader {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_no_implicit_padding() {
        // 8 + 16 + 16 + 2 + 2 + 4 * 5 = 64: every byte is a named field.
        assert_eq!(core::mem::size_of::<SegmentHeader>(), 64);
        assert_eq!(core::mem::align_of::<SegmentHeader>(), 8);
        assert_eq!(core::mem::size_of::<SegmentEvent>(), 64 + MAX_CAPTURE);
        assert!(MAX_CAPTURE.is_power_of_two());
    }
}
