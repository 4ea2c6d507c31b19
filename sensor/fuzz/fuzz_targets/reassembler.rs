//! Feed arbitrary segments (sequence number, length, captured bytes, FIN) of a few flows to the
//! reassembler. Must never panic; the memory bounds must hold after every segment: flows,
//! buffered bytes, bytes reserved for body inspection, and the size of every body emitted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palisade_sensor::config::ReassemblyConfig;
use palisade_sensor::http::ParseLimits;
use palisade_sensor::reassembly::{FlowKey, Reassembler, Segment};

/// Heads the fuzzer can put in front of a segment's bytes, to reach the body states quickly.
const HEADS: &[&[u8]] = &[
    b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /a HTTP/1.1\r\nContent-Type: application/json\r\nContent-Length: 3000\r\n\r\n",
    b"POST /a HTTP/1.1\r\nContent-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"POST /a HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 5\r\nTransfer-Encoding: ChUnKeD\r\n\r\n",
    b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
    b"10\r\n",
    b"0\r\n\r\n",
];

fuzz_target!(|input: &[u8]| {
    let config = ReassemblyConfig {
        max_flows: 3,
        max_flow_bytes: 8 * 1024,
        max_total_bytes: 16 * 1024,
        max_out_of_order: 4,
        flow_idle_secs: 1,
        max_body_inspect: 6 * 1024,
        body_window: 1024,
        max_flow_body_bytes: 4 * 1024,
        max_body_bytes: 6 * 1024,
    };
    let limits = ParseLimits {
        max_head: 2048,
        max_body: 512,
    };
    let window = config.body_window;
    let mut r = Reassembler::new(config.clone(), limits);
    let mut next = [1000u32, u32::MAX - 50, 7];
    let mut data = input;
    let mut now = 0u64;
    let mut scratch = Vec::new();
    while data.len() >= 6 {
        let flags = data[0];
        let flow = usize::from(flags & 3) % 3;
        let delta = i16::from_le_bytes([data[1], data[2]]);
        let len = u16::from_le_bytes([data[3], data[4]]) % 6000;
        let captured = usize::from(data[5]).min(data.len() - 6);
        scratch.clear();
        if flags & 4 != 0 {
            scratch.extend_from_slice(HEADS[usize::from(flags >> 5) % HEADS.len()]);
        }
        scratch.extend_from_slice(&data[6..6 + captured]);
        data = &data[6 + captured..];
        let len = u32::from(len).max(scratch.len() as u32);
        // Mostly in order; the delta makes holes, overlaps and retransmits.
        let seq = if flags & 8 != 0 {
            next[flow].wrapping_add(delta as i32 as u32)
        } else {
            next[flow]
        };
        next[flow] = seq.wrapping_add(len);
        let key = FlowKey {
            src: "192.0.2.1".parse().expect("literal address"),
            src_port: 1000 + flow as u16,
            dst: "192.0.2.2".parse().expect("literal address"),
            dst_port: 80,
        };
        now += 100_000_000;
        let seg = Segment {
            seq,
            len,
            data: &scratch,
            end: flags & 16 != 0 && flags & 8 != 0,
            now_ns: now,
            established: true,
            stream_start: (flags & 128 != 0).then_some(seq),
        };
        r.push(key, seg, |_, request, _| {
            assert!(request.body.len() <= window, "{}", request.body.len());
            request.body_view().for_each_field(|_, _, _| {});
        });
        assert!(r.flow_count() <= config.max_flows);
        assert!(r.buffered_bytes() <= config.max_total_bytes);
        assert!(r.body_buffered_bytes() <= config.max_body_bytes);
        r.take_skip_hints(|_, _| {});
        if flags & 0x70 == 0x70 {
            r.expire(now);
        }
    }
});
