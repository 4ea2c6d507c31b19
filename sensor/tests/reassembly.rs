//! Reassembly: segments split at awkward places, out of order, retransmitted, pipelined,
//! garbage, truncated captures, and the memory bounds.

use std::net::IpAddr;

use palisade_sensor::config::ReassemblyConfig;
use palisade_sensor::http::{ParseLimits, Request};
use palisade_sensor::reassembly::{FlowKey, Reassembler, Segment};

fn key(port: u16) -> FlowKey {
    FlowKey {
        src: "198.51.100.7".parse::<IpAddr>().unwrap(),
        src_port: port,
        dst: "10.0.0.1".parse::<IpAddr>().unwrap(),
        dst_port: 80,
    }
}

fn reasm() -> Reassembler {
    Reassembler::new(ReassemblyConfig::default(), ParseLimits::default())
}

/// Feed `(seq, bytes)` segments (full capture) and collect request targets.
fn feed(r: &mut Reassembler, k: FlowKey, segs: &[(u32, &[u8])]) -> Vec<Request> {
    let mut out = Vec::new();
    for (seq, data) in segs {
        r.push(
            k,
            Segment {
                seq: *seq,
                len: data.len() as u32,
                data,
                end: false,
                now_ns: 0,
                established: true,
                stream_start: None,
            },
            |_, req, _| {
                // Later windows of a body repeat their request's head: not a new request.
                if req.body_window.is_none() {
                    out.push(req)
                }
            },
        );
    }
    out
}

fn targets(reqs: &[Request]) -> Vec<&str> {
    reqs.iter().map(|r| r.target.as_str()).collect()
}

/// Split `stream` (starting at `isn`) at the given offsets.
fn split(isn: u32, stream: &[u8], cuts: &[usize]) -> Vec<(u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&stream.len())) {
        out.push((isn.wrapping_add(start as u32), stream[start..c].to_vec()));
        start = c;
    }
    out
}

fn as_refs(v: &[(u32, Vec<u8>)]) -> Vec<(u32, &[u8])> {
    v.iter().map(|(s, d)| (*s, d.as_slice())).collect()
}

const REQ: &[u8] = b"GET /a?id=1%27%20OR%201=1 HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\n\r\n";

#[test]
fn split_at_every_offset() {
    for cut in 1..REQ.len() {
        let mut r = reasm();
        let segs = split(1000, REQ, &[cut]);
        let got = feed(&mut r, key(1), &as_refs(&segs));
        assert_eq!(targets(&got), vec!["/a?id=1%27%20OR%201=1"], "cut at {cut}");
        assert_eq!(got[0].header("user-agent"), Some("t"));
    }
}

#[test]
fn one_byte_segments_across_sequence_wrap() {
    let mut r = reasm();
    let cuts: Vec<usize> = (1..REQ.len()).collect();
    let segs = split(u32::MAX - 10, REQ, &cuts);
    let got = feed(&mut r, key(1), &as_refs(&segs));
    assert_eq!(got.len(), 1);
}

#[test]
fn out_of_order_segments_wait_for_the_missing_one() {
    let mut r = reasm();
    let segs = split(5, REQ, &[10, 25, 40]);
    let order = [0usize, 2, 3, 1];
    let shuffled: Vec<(u32, &[u8])> = order
        .iter()
        .map(|&i| (segs[i].0, segs[i].1.as_slice()))
        .collect();
    let got = feed(&mut r, key(1), &shuffled);
    assert_eq!(targets(&got), vec!["/a?id=1%27%20OR%201=1"]);
    assert!(r.stats().out_of_order >= 2);
}

#[test]
fn retransmits_are_ignored_or_trimmed() {
    let mut r = reasm();
    let segs = split(100, REQ, &[20, 40]);
    let mut list = as_refs(&segs);
    // exact duplicate of the first segment, and an overlapping one (bytes 10..30)
    list.insert(1, (100, &REQ[..20]));
    list.insert(3, (110, &REQ[10..30]));
    let got = feed(&mut r, key(1), &list);
    assert_eq!(targets(&got), vec!["/a?id=1%27%20OR%201=1"]);
    assert!(r.stats().retransmits >= 1);
    // retransmitting the whole request after it was parsed emits nothing new
    let again = feed(&mut r, key(1), &[(100, REQ)]);
    assert!(again.is_empty());
}

#[test]
fn pipelined_and_keep_alive_requests() {
    let mut stream = Vec::new();
    stream.extend_from_slice(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n");
    stream.extend_from_slice(b"POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    stream.extend_from_slice(b"GET /three HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut r = reasm();
    let got = feed(&mut r, key(1), &[(1, stream.as_slice())]);
    assert_eq!(targets(&got), vec!["/one", "/two", "/three"]);
    assert_eq!(got[1].body, b"hello");
    // the same stream split badly
    let mut r = reasm();
    let segs = split(1, &stream, &[3, 31, 60, 85, 90]);
    let got = feed(&mut r, key(1), &as_refs(&segs));
    assert_eq!(targets(&got), vec!["/one", "/two", "/three"]);
    // a later request on the same connection
    let next = b"GET /four HTTP/1.1\r\n\r\n";
    let got = feed(
        &mut r,
        key(1),
        &[(1 + stream.len() as u32, next.as_slice())],
    );
    assert_eq!(targets(&got), vec!["/four"]);
}

#[test]
fn garbage_then_request_resyncs() {
    let mut r = reasm();
    let mut stream = b"\x16\x03\x01\x02\x00garbage\r\n\r\nmore junk ".to_vec();
    stream.extend_from_slice(REQ);
    let got = feed(&mut r, key(1), &[(1, stream.as_slice())]);
    assert_eq!(targets(&got), vec!["/a?id=1%27%20OR%201=1"]);
    // pure garbage never emits and stays bounded
    let mut r = reasm();
    let junk = vec![0xffu8; 4000];
    for i in 0..50u32 {
        let got = feed(&mut r, key(2), &[(i * 4000, junk.as_slice())]);
        assert!(got.is_empty());
    }
    assert!(r.buffered_bytes() <= 64, "{}", r.buffered_bytes());
}

#[test]
fn joined_mid_stream_finds_the_next_request() {
    let mut r = reasm();
    // the flow's first captured bytes are the middle of a body
    let got = feed(
        &mut r,
        key(1),
        &[(777, b"dy-bytes-of-an-earlier-post".as_slice()), (804, REQ)],
    );
    assert_eq!(targets(&got), vec!["/a?id=1%27%20OR%201=1"]);
}

#[test]
fn large_body_beyond_capture_is_skipped_by_sequence_number() {
    // One GSO segment: head + 10000-byte body, of which only 2048 bytes were captured,
    // then the next request in its own segment.
    let head = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10000\r\n\r\n";
    let total = head.len() + 10000;
    let mut captured = head.to_vec();
    captured.resize(2048, b'a');
    let mut r = reasm();
    let mut out = Vec::new();
    r.push(
        key(1),
        Segment {
            seq: 50,
            len: total as u32,
            data: &captured,
            end: false,
            now_ns: 0,
            established: true,
            stream_start: None,
        },
        |_, q, _| out.push(q),
    );
    let next = b"GET /next?x=<script>alert(1)</script> HTTP/1.1\r\n\r\n";
    r.push(
        key(1),
        Segment {
            seq: 50 + total as u32,
            len: next.len() as u32,
            data: next,
            end: false,
            now_ns: 0,
            established: true,
            stream_start: None,
        },
        |_, q, _| out.push(q),
    );
    assert_eq!(
        targets(&out),
        vec!["/upload", "/next?x=<script>alert(1)</script>"]
    );
    // body spread over later segments is skipped too
    let mut r = reasm();
    let mut stream = b"POST /p HTTP/1.1\r\nContent-Length: 6000\r\n\r\n".to_vec();
    stream.resize(stream.len() + 6000, b'z');
    stream.extend_from_slice(b"GET /after HTTP/1.1\r\n\r\n");
    let cuts: Vec<usize> = (1..stream.len() / 1400 + 1).map(|i| i * 1400).collect();
    let segs = split(9, &stream, &cuts);
    let got = feed(&mut r, key(3), &as_refs(&segs));
    assert_eq!(targets(&got), vec!["/p", "/after"]);
}

#[test]
fn lost_segment_inspects_what_was_seen_and_resyncs() {
    let mut r = Reassembler::new(
        ReassemblyConfig {
            max_out_of_order: 1,
            ..Default::default()
        },
        ParseLimits::default(),
    );
    let head = b"GET /etc/passwd?../../x HTTP/1.1\r\nHost: x\r\nX-A: ";
    // bytes 0..head.len() arrive, the rest of the head never does, two later segments do
    let mut out = Vec::new();
    for (seq, data) in [
        (0u32, head.as_slice()),
        (500, b"zzzz".as_slice()),
        (600, b"GET /later HTTP/1.1\r\n\r\n".as_slice()),
    ] {
        r.push(
            key(1),
            Segment {
                seq,
                len: data.len() as u32,
                data,
                end: false,
                now_ns: 0,
                established: true,
                stream_start: None,
            },
            |_, q, _| out.push(q),
        );
    }
    assert_eq!(targets(&out), vec!["/etc/passwd?../../x", "/later"]);
    assert!(out[0].body_truncated, "inspected from an incomplete head");
    assert!(r.stats().gaps >= 1);
}

#[test]
fn connection_end_inspects_an_unfinished_head() {
    let mut r = reasm();
    let mut out = Vec::new();
    let data = b"GET /?q=union%20select HTTP/1.1\r\nHost: x\r\n";
    r.push(
        key(1),
        Segment {
            seq: 1,
            len: data.len() as u32,
            data,
            end: true,
            now_ns: 0,
            established: true,
            stream_start: None,
        },
        |_, q, _| out.push(q),
    );
    assert_eq!(targets(&out), vec!["/?q=union%20select"]);
    assert_eq!(r.flow_count(), 0, "flow forgotten at FIN/RST");
}

#[test]
fn flows_are_independent() {
    let mut r = reasm();
    let a = split(1, REQ, &[7]);
    let b = split(90, b"GET /b HTTP/1.1\r\n\r\n", &[5]);
    let mut got = Vec::new();
    for (k, (s, d)) in [
        (key(1), &a[0]),
        (key(2), &b[0]),
        (key(1), &a[1]),
        (key(2), &b[1]),
    ] {
        got.extend(feed(&mut r, k, &[(*s, d.as_slice())]));
    }
    assert_eq!(targets(&got), vec!["/a?id=1%27%20OR%201=1", "/b"]);
}

#[test]
fn memory_bounds_evict_least_recently_used() {
    let cfg = ReassemblyConfig {
        max_flows: 3,
        max_total_bytes: 1000,
        max_flow_bytes: 600,
        ..Default::default()
    };
    let mut r = Reassembler::new(cfg, ParseLimits::default());
    // four flows with half a head each: the oldest is evicted by the flow-count bound
    for p in 1..=4u16 {
        feed(
            &mut r,
            key(p),
            &[(1, b"GET /x HTTP/1.1\r\nHost: ".as_slice())],
        );
    }
    assert_eq!(r.flow_count(), 3);
    assert_eq!(r.stats().evicted, 1);
    // flow 2 is touched, so flow 3 is now the least recently used
    feed(&mut r, key(2), &[(24, b"a".as_slice())]);
    let mut big = b"GET /y HTTP/1.1\r\nX: ".to_vec();
    big.resize(500, b'b');
    feed(&mut r, key(9), &[(1, big.as_slice())]);
    assert!(r.buffered_bytes() <= 1000, "{}", r.buffered_bytes());
    // flow 2 survived; finishing its head still works
    let got = feed(&mut r, key(2), &[(25, b"\r\n\r\n".as_slice())]);
    assert_eq!(targets(&got), vec!["/x"]);
    // a single flow cannot hold more than max_flow_bytes
    let mut r = Reassembler::new(
        ReassemblyConfig {
            max_flow_bytes: 600,
            ..Default::default()
        },
        ParseLimits::default(),
    );
    for i in 0..20u32 {
        let chunk = if i == 0 {
            b"GET /z HTTP/1.1\r\nX: ".to_vec()
        } else {
            vec![b'c'; 100]
        };
        let seq = if i == 0 { 0 } else { 20 + (i - 1) * 100 };
        feed(&mut r, key(5), &[(seq, chunk.as_slice())]);
        assert!(r.buffered_bytes() <= 600, "{}", r.buffered_bytes());
    }
}

#[test]
fn idle_flows_expire() {
    let mut r = Reassembler::new(
        ReassemblyConfig {
            flow_idle_secs: 1,
            ..Default::default()
        },
        ParseLimits::default(),
    );
    feed(&mut r, key(1), &[(1, b"GET /x HT".as_slice())]);
    assert_eq!(r.flow_count(), 1);
    r.expire(500_000_000);
    assert_eq!(r.flow_count(), 1);
    r.expire(2_000_000_000);
    assert_eq!(r.flow_count(), 0);
    assert_eq!(r.buffered_bytes(), 0);
}
