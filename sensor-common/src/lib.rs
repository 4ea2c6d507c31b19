#![no_std]
//! Types shared by the kernel programs (`palisade-sensor-ebpf`) and the sensor's userspace.
//!
//! Everything here is `#[repr(C)]`, `Copy`, with padding written out and `u32` flags instead of
//! `bool`, so both sides agree on the layout byte for byte. The `user` feature adds the
//! `aya::Pod` impls userspace needs to read events and write maps.

/// Largest number of payload bytes one ring-buffer record can carry (the record's payload
/// array). A segment with more payload is copied as several records of at most this many bytes.
/// The mask applied in the kernel (`CAPTURE_MASK`) relies on this being a power of two.
pub const MAX_CAPTURE: usize = 4096;
/// `MAX_CAPTURE - 1`, the mask the kernel applies to the copy length for the verifier.
pub const CAPTURE_MASK: u64 = (MAX_CAPTURE as u64) - 1;
/// Records one segment (one skb) may be split into: bounds the kernel's copy loop.
pub const MAX_CHUNKS: usize = 16;
/// Largest number of payload bytes copied per segment (`MAX_CHUNKS` records): with GSO/GRO one
/// skb carries up to ~64 KiB of payload, all of it copied by default.
pub const MAX_CAPTURE_BYTES: u32 = (MAX_CAPTURE * MAX_CHUNKS) as u32;
/// Default number of payload bytes copied per segment: all of it.
pub const DEFAULT_CAPTURE: u32 = MAX_CAPTURE_BYTES;
/// Default size of each flow-tracking map (`PENDING`, `ESTABLISHED`, `SKIP`, `NOT_HTTP`), in
/// entries.
pub const DEFAULT_TRACKED_FLOWS: u32 = 65_536;

/// The event describes an IPv6 packet (addresses use all 16 bytes); else IPv4 in the first 4.
pub const FLAG_IPV6: u32 = 1;
/// The segment carried more payload than was copied (`payload_len > captured`).
pub const FLAG_TRUNCATED: u32 = 1 << 1;
/// The segment has the FIN flag.
pub const FLAG_FIN: u32 = 1 << 2;
/// The segment has the RST flag.
pub const FLAG_RST: u32 = 1 << 3;
/// The kernel saw this connection's handshake complete (the server's SYN-ACK acknowledged by the
/// source address): `stream_start` is valid.
pub const FLAG_ESTABLISHED: u32 = 1 << 4;
/// The payload was not copied because userspace said the flow needs nothing before a later
/// sequence number (the `SKIP` map): `captured` is 0.
pub const FLAG_SKIPPED: u32 = 1 << 5;

/// Address family of a [`FlowTuple`]: IPv4.
pub const FAMILY_V4: u32 = 4;
/// Address family of a [`FlowTuple`]: IPv6.
pub const FAMILY_V6: u32 = 6;

/// Index of each slot in the `CONFIG` array map.
pub const CONFIG_CAPTURE_BYTES: u32 = 0;
/// Fill level of the ring buffer (bytes) past which the kernel forces a wakeup of the reader.
pub const CONFIG_WAKEUP_BYTES: u32 = 1;
/// Non-zero: every destination port is watched (`--port any`); a flow is inspected only when
/// its handshake was seen and its first bytes are an HTTP/1.x request method, and every other
/// flow is forgotten after its first data segment.
pub const CONFIG_ANY_PORT: u32 = 2;
/// Number of slots in `CONFIG`.
pub const CONFIG_SLOTS: u32 = 3;

/// Index of each counter in the per-CPU `COUNTERS` map.
pub const COUNTER_RING_FULL: u32 = 0;
/// Segments copied into the ring buffer.
pub const COUNTER_CAPTURED: u32 = 1;
/// Segments on watched ports whose headers could not be read (skipped, passed).
pub const COUNTER_ERRORS: u32 = 2;
/// SYN-ACKs from a watched port recorded in `PENDING` (egress).
pub const COUNTER_SYNACKS: u32 = 3;
/// Handshakes completed: flows moved from `PENDING` to `ESTABLISHED` (ingress).
pub const COUNTER_HANDSHAKES: u32 = 4;
/// Segments whose payload was not copied because of the `SKIP` map.
pub const COUNTER_SKIPPED: u32 = 5;
/// Segments copied only in part (their first record) because the ring buffer was more than half
/// full: under pressure request heads go first, body bytes are shed.
pub const COUNTER_SHED: u32 = 6;
/// Flows dropped under `CONFIG_ANY_PORT` because their first bytes are not an HTTP request.
pub const COUNTER_NOT_HTTP: u32 = 7;
/// Segments with payload on watched ports whose connection is not proven: TC saw no
/// handshake for it, or the cgroup source saw it delivered to a listening socket (data riding
/// on the handshake's last ACK). They are inspected but never attributed.
pub const COUNTER_UNPROVEN: u32 = 8;
/// Number of counters in `COUNTERS`.
pub const COUNTER_SLOTS: u32 = 9;

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
    /// TCP sequence number of the record's first payload byte, host byte order.
    pub seq: u32,
    /// Payload bytes on the wire from `seq` that this record stands for: `captured` for every
    /// record of a segment but the last, which stands for the rest of the segment (may exceed
    /// `captured` when the copy was limited).
    pub payload_len: u32,
    /// Payload bytes copied into the record.
    pub captured: u32,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Sequence number of the client's first data byte (the SYN-ACK's acknowledgment number);
    /// valid only with [`FLAG_ESTABLISHED`], else 0.
    pub stream_start: u32,
    /// Padding, always 0 (written out so the layout has no implicit holes).
    pub reserved: u32,
    /// cgroup v2 id (the inode number of its directory) of the socket the segment was
    /// delivered to: set by the cgroup source, which sees the receiving socket; 0 from TC,
    /// which runs before any socket is looked up.
    pub cgroup_id: u64,
}

/// Key of the flow-tracking maps: one TCP connection seen from the client's side.
/// Addresses use the [`SegmentHeader`] encoding; every byte is a named field so a key built on
/// the kernel's stack and one built in userspace compare equal byte for byte.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowTuple {
    /// Client address: IPv4 in the first 4 bytes (network order, rest 0) or IPv6 in all 16.
    pub client_addr: [u8; 16],
    /// Server address, same encoding.
    pub server_addr: [u8; 16],
    /// Client port, host byte order.
    pub client_port: u16,
    /// Server (watched) port, host byte order.
    pub server_port: u16,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u32,
}

/// Value of the `PENDING` map: what the server's SYN-ACK said.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The server's initial sequence number (the SYN-ACK's `seq`); the client's handshake ACK
    /// must acknowledge `server_isn + 1`.
    pub server_isn: u32,
    /// The client's first data sequence number (the SYN-ACK's `ack_seq`).
    pub client_seq: u32,
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
    // SAFETY: as above.
    unsafe impl aya::Pod for super::FlowTuple {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::Pending {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_has_no_implicit_padding() {
        // 8 + 16 + 16 + 2 + 2 + 4 * 7 + 8 = 80: every byte is a named field.
        assert_eq!(core::mem::size_of::<SegmentHeader>(), 80);
        assert_eq!(core::mem::align_of::<SegmentHeader>(), 8);
        assert_eq!(core::mem::size_of::<SegmentEvent>(), 80 + MAX_CAPTURE);
        assert!(MAX_CAPTURE.is_power_of_two());
        // 16 + 16 + 2 + 2 + 4 = 40, no hole: map keys are compared byte for byte.
        assert_eq!(core::mem::size_of::<FlowTuple>(), 40);
        assert_eq!(core::mem::align_of::<FlowTuple>(), 4);
        assert_eq!(core::mem::size_of::<Pending>(), 8);
        assert_eq!(MAX_CAPTURE_BYTES, 65_536);
        const { assert!(DEFAULT_CAPTURE <= MAX_CAPTURE_BYTES) };
    }
}
