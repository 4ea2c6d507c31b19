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

// ---- bodies: framing, windows, budgets, hints ----

use palisade_sensor::detect::Detector;
use palisade_sensor::reassembly::RequestMeta;

/// Everything emitted: requests and later body windows, with their facts.
#[derive(Default)]
struct Seen {
    all: Vec<(Request, RequestMeta)>,
}

impl Seen {
    /// The requests themselves (not later windows of a body).
    fn requests(&self) -> Vec<(&Request, RequestMeta)> {
        self.all
            .iter()
            .filter(|(r, _)| r.body_window.is_none())
            .map(|(r, m)| (r, *m))
            .collect()
    }

    fn targets(&self) -> Vec<&str> {
        self.requests()
            .iter()
            .map(|(r, _)| r.target.as_str())
            .collect()
    }

    /// Rule ids the real detector fires on everything emitted.
    fn detections(&self, d: &Detector) -> Vec<String> {
        self.all
            .iter()
            .flat_map(|(r, _)| d.inspect(r))
            .map(|x| x.rule_id)
            .collect()
    }
}

/// Feed a stream that starts at the client's first byte (`isn`), cut at `cuts`, fully captured.
fn feed_stream(r: &mut Reassembler, k: FlowKey, isn: u32, stream: &[u8], cuts: &[usize]) -> Seen {
    let mut seen = Seen::default();
    for (seq, data) in split(isn, stream, cuts) {
        r.push(
            k,
            Segment {
                seq,
                len: data.len() as u32,
                data: &data,
                end: false,
                now_ns: 0,
                established: true,
                stream_start: Some(isn),
            },
            |_, q, m| seen.all.push((q, m)),
        );
    }
    seen
}

/// Chunked encoding of `body` in chunks of `size`, with an extension on each size line.
fn chunked(body: &[u8], size: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(size) {
        out.extend_from_slice(format!("{:X};ext=1\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
    out
}

const FAKE: &[u8] =
    b"GET /admin?cmd=cat+/etc/passwd HTTP/1.1\r\nHost: x\r\nX-Forwarded-For: 203.0.113.66\r\n\r\n";

/// A chunked POST whose body (longer than any prefix) holds a complete fake request, then a
/// real request.
fn smuggling_stream() -> (Vec<u8>, usize) {
    let mut body = vec![b'a'; 2500];
    body.extend_from_slice(FAKE);
    body.extend_from_slice(&[b'b'; 3000]);
    body.extend_from_slice(FAKE);
    let mut stream =
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    stream.extend_from_slice(&chunked(&body, 1000));
    let after = stream.len();
    stream.extend_from_slice(b"GET /after?q=1 HTTP/1.1\r\nHost: x\r\n\r\n");
    (stream, after)
}

fn assert_not_smuggled(seen: &Seen, what: &str) {
    assert_eq!(seen.targets(), vec!["/upload", "/after?q=1"], "{what}");
    for (r, m) in seen.requests() {
        assert!(m.in_sync, "{what}: {} out of sync", r.target);
        assert_eq!(r.header("x-forwarded-for"), None, "{what}");
    }
}

#[test]
fn request_inside_a_chunked_body_is_never_a_request() {
    let (stream, after) = smuggling_stream();
    // Split everywhere around the chunk-size lines and the fake requests.
    for step in [1usize, 7, 100, 1000, 1448, 4096] {
        let cuts: Vec<usize> = (1..stream.len().div_ceil(step)).map(|i| i * step).collect();
        let mut r = reasm();
        let seen = feed_stream(&mut r, key(1), 7, &stream, &cuts);
        assert_not_smuggled(&seen, &format!("step {step}"));
        assert_eq!(r.stats().desyncs, 0, "step {step}");
    }
    // Cut at every offset around the boundary between the body and the next request.
    for cut in after - 30..after + 10 {
        let mut r = reasm();
        let seen = feed_stream(&mut r, key(2), 1, &stream, &[cut]);
        assert_not_smuggled(&seen, &format!("cut {cut}"));
    }
}

#[test]
fn chunked_body_with_uncaptured_data_stays_in_sync() {
    // GSO-sized segments of which only the first 600 bytes are captured: chunk data that was
    // not captured is passed over by count, chunk-size lines are all captured.
    let (stream, _) = smuggling_stream();
    let mut body = Vec::new();
    let mut head = b"POST /big HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    body.extend_from_slice(&[b'x'; 5000]);
    head.extend_from_slice(b"1388\r\n");
    let mut r = reasm();
    let mut seen = Seen::default();
    let mut push = |r: &mut Reassembler, seq: u32, len: usize, data: &[u8]| {
        r.push(
            key(3),
            Segment {
                seq,
                len: len as u32,
                data,
                end: false,
                now_ns: 0,
                established: true,
                stream_start: Some(1),
            },
            |_, q, m| seen.all.push((q, m)),
        );
    };
    // head + size line + 5000 data bytes in one segment, 600 captured
    let mut seg = head.clone();
    seg.extend_from_slice(&body);
    push(&mut r, 1, seg.len(), &seg[..600]);
    let mut seq = 1 + seg.len() as u32;
    let rest = b"\r\n0\r\n\r\n";
    push(&mut r, seq, rest.len(), rest);
    seq += rest.len() as u32;
    let next = b"GET /next HTTP/1.1\r\n\r\n";
    push(&mut r, seq, next.len(), next);
    seq += next.len() as u32;
    // A chunked body whose size lines were not captured: its end is unknown.
    push(&mut r, seq, stream.len(), &stream[..600]);
    assert_eq!(seen.targets(), vec!["/big", "/next", "/upload"]);
    assert!(seen.requests().iter().all(|(_, m)| m.in_sync));
    assert_eq!(
        r.stats().desyncs,
        1,
        "only the last body's framing was lost"
    );
}

#[test]
fn transfer_encoding_in_any_case_wins_over_content_length() {
    let body = chunked(b"hello world", 4);
    for te in ["chunked", "ChUnKeD", "CHUNKED", "gzip, chunked"] {
        // TE alone: framed by chunked, the next request is in sync.
        let mut stream =
            format!("POST /a HTTP/1.1\r\nTransfer-Encoding: {te}\r\n\r\n").into_bytes();
        stream.extend_from_slice(&body);
        stream.extend_from_slice(b"GET /b HTTP/1.1\r\n\r\n");
        let mut r = reasm();
        let seen = feed_stream(&mut r, key(1), 1, &stream, &[20]);
        assert_eq!(seen.targets(), vec!["/a", "/b"], "{te}");
        assert_eq!(seen.requests()[0].0.body, b"hello world", "{te}");
        assert!(seen.requests()[1].1.in_sync, "{te}");
    }
    // TE and CL together: chunked frames it (a CL framing would put `/b` inside the body and
    // `/c` after `hello`), and what follows is out of sync: a proxy in front may have framed
    // it by length.
    let mut stream =
        b"POST /a HTTP/1.1\r\nContent-Length: 5\r\ntransfer-encoding: Chunked\r\n\r\n".to_vec();
    stream.extend_from_slice(&body);
    stream.extend_from_slice(b"GET /b HTTP/1.1\r\n\r\n");
    let mut r = reasm();
    let seen = feed_stream(&mut r, key(1), 1, &stream, &[]);
    assert_eq!(seen.targets(), vec!["/a", "/b"]);
    assert!(seen.requests()[0].1.in_sync);
    assert!(!seen.requests()[1].1.in_sync);
    assert_eq!(r.stats().ambiguous_framing, 1);
}

#[test]
fn unknown_or_broken_framing_resyncs_out_of_sync() {
    for (what, head_and_body) in [
        (
            "unsupported coding",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nxyz".to_vec(),
        ),
        (
            "chunked not last",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nxyz".to_vec(),
        ),
        (
            "bad chunk size",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nxyz\r\n".to_vec(),
        ),
        (
            "missing CRLF after data",
            b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyzQ".to_vec(),
        ),
        (
            "bad Content-Length",
            b"POST /a HTTP/1.1\r\nContent-Length: 5, 6\r\n\r\nxyz".to_vec(),
        ),
    ] {
        let mut stream = head_and_body;
        stream.extend_from_slice(FAKE);
        let mut r = reasm();
        let seen = feed_stream(&mut r, key(1), 1, &stream, &[]);
        // The head is still inspected; the request found by resync is not believed.
        assert_eq!(seen.targets()[0], "/a", "{what}");
        assert!(seen.requests()[0].1.in_sync, "{what}");
        assert_eq!(seen.targets().len(), 2, "{what}");
        assert!(!seen.requests()[1].1.in_sync, "{what}");
        assert_eq!(r.stats().bad_framing, 1, "{what}");
        assert_eq!(r.stats().desyncs, 1, "{what}");
    }
}

#[test]
fn lost_chunk_framing_desyncs_lost_chunk_data_does_not() {
    let mut body = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let size_line = body.len();
    body.extend_from_slice(b"100\r\n");
    let data = body.len();
    body.extend_from_slice(&[b'd'; 256]);
    body.extend_from_slice(b"\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    let run = |lose: std::ops::Range<usize>| {
        let mut r = Reassembler::new(
            ReassemblyConfig {
                max_out_of_order: 0,
                ..Default::default()
            },
            ParseLimits::default(),
        );
        let mut seen = Seen::default();
        for (from, to) in [(0, lose.start), (lose.end, body.len())] {
            r.push(
                key(1),
                Segment {
                    seq: 1 + from as u32,
                    len: (to - from) as u32,
                    data: &body[from..to],
                    end: false,
                    now_ns: 0,
                    established: true,
                    stream_start: Some(1),
                },
                |_, q, m| seen.all.push((q, m)),
            );
        }
        (seen, r.stats())
    };
    // 100 bytes of chunk data lost: the framing is known, the next request in sync.
    let (seen, stats) = run(data + 50..data + 150);
    assert_eq!(seen.targets(), vec!["/a", "/b"]);
    assert!(seen.requests()[1].1.in_sync);
    assert_eq!(stats.desyncs, 0);
    assert_eq!(stats.gaps, 1);
    // The chunk-size line lost: where the body ends is unknown.
    let (seen, stats) = run(size_line..size_line + 3);
    assert_eq!(seen.targets(), vec!["/a", "/b"]);
    assert!(!seen.requests()[1].1.in_sync);
    assert_eq!(stats.desyncs, 1);
}

fn json_with_padding(pad: usize) -> Vec<u8> {
    let mut body = b"{\"pad\":\"".to_vec();
    body.resize(body.len() + pad, b'a');
    body.extend_from_slice(b"\",\"q\":\"1' UNION SELECT password FROM users--\"}");
    body
}

fn post(content_type: &str, body: &[u8], chunk: Option<usize>) -> Vec<u8> {
    let mut stream =
        format!("POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n").into_bytes();
    match chunk {
        Some(size) => {
            stream.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            stream.extend_from_slice(&chunked(body, size));
        }
        None => {
            stream.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
            stream.extend_from_slice(body);
        }
    }
    stream.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
    stream
}

fn mss_cuts(len: usize) -> Vec<usize> {
    (1..len.div_ceil(1448)).map(|i| i * 1448).collect()
}

#[test]
fn payload_after_json_padding_is_inspected() {
    let detector = Detector::builtin().unwrap();
    for pad in [2200usize, 40_000] {
        for chunk in [None, Some(1000), Some(65536)] {
            let stream = post("application/json", &json_with_padding(pad), chunk);
            let mut r = reasm();
            let seen = feed_stream(&mut r, key(1), 1, &stream, &mss_cuts(stream.len()));
            let what = format!("pad {pad} chunk {chunk:?}");
            assert_eq!(seen.targets(), vec!["/api", "/next"], "{what}");
            let fired = seen.detections(&detector);
            assert!(
                fired.iter().any(|id| id.starts_with("sqli")),
                "{what}: {fired:?}"
            );
            assert!(r.stats().body_windows >= 1, "{what}");
            assert!(seen.requests().iter().all(|(_, m)| m.in_sync), "{what}");
        }
    }
    // Past the inspection bound the body is skipped (and counted), the next request still found.
    let stream = post("application/json", &json_with_padding(70_000), None);
    let mut r = reasm();
    let seen = feed_stream(&mut r, key(1), 1, &stream, &mss_cuts(stream.len()));
    assert_eq!(seen.targets(), vec!["/api", "/next"]);
    assert!(
        !seen
            .detections(&detector)
            .iter()
            .any(|id| id.starts_with("sqli"))
    );
    assert_eq!(r.stats().bodies_cut, 1);
    assert_eq!(r.stats().body_bytes_inspected, 64 * 1024);
}

/// Bodies whose attack field straddles the first window's end (8 KiB), for each way fields are
/// carried over.
#[test]
fn a_field_split_across_windows_is_seen_whole() {
    let detector = Detector::builtin().unwrap();
    let window = ReassemblyConfig::default().body_window;
    let attack = "<script>alert(document.cookie)</script>";
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("application/x-www-form-urlencoded", {
            let mut b = b"pad=".to_vec();
            b.resize(window - 20, b'a');
            b.extend_from_slice(format!("&comment={attack}&x=1").as_bytes());
            b
        }),
        ("application/json", {
            let mut b = b"{\"pad\":\"".to_vec();
            b.resize(window - 20, b'a');
            b.extend_from_slice(format!("\",\"comment\":\"{attack}\"}}").as_bytes());
            b
        }),
        ("application/json", {
            // escapes right at the cut: the string state survives the window boundary
            let mut b = b"{\"pad\":\"".to_vec();
            while b.len() < window - 16 {
                b.extend_from_slice(br#"\"\\\u0041"#);
            }
            b.extend_from_slice(format!("\",\"comment\":\"{attack}\"}}").as_bytes());
            b
        }),
        ("multipart/form-data; boundary=XyZ", {
            let mut b = b"--XyZ\r\nContent-Disposition: form-data; name=\"pad\"\r\n\r\n".to_vec();
            b.resize(window - 60, b'a');
            b.extend_from_slice(
                format!("\r\n--XyZ\r\nContent-Disposition: form-data; name=\"c\"\r\n\r\n{attack}\r\n--XyZ--\r\n")
                    .as_bytes(),
            );
            b
        }),
    ];
    for (ct, body) in cases {
        // Sanity: the attack does straddle the window end.
        let at = memchr::memmem::find(&body, attack.as_bytes()).unwrap();
        assert!(at < window && at + attack.len() > window, "{ct}: {at}");
        for cuts in [vec![], mss_cuts(body.len() + 200)] {
            let stream = post(ct, &body, None);
            let mut r = reasm();
            let seen = feed_stream(&mut r, key(1), 1, &stream, &cuts);
            assert!(
                seen.all
                    .iter()
                    .any(|(q, _)| memchr::memmem::find(&q.body, attack.as_bytes()).is_some()),
                "{ct}: no window holds the whole field"
            );
            let fired = seen.detections(&detector);
            assert!(
                fired.iter().any(|id| id.starts_with("xss")),
                "{ct}: {fired:?}"
            );
        }
    }
}

#[test]
fn a_long_field_is_seen_with_overlap() {
    // One 20 KB form value with the attack across the first window's end: no `&` to cut at,
    // the overlap still shows it whole, under the value's name.
    let detector = Detector::builtin().unwrap();
    let window = ReassemblyConfig::default().body_window;
    let mut body = b"comment=".to_vec();
    body.resize(window - 10, b'a');
    body.extend_from_slice(b"<script>alert(1)</script>");
    body.resize(20_000, b'b');
    let stream = post("application/x-www-form-urlencoded", &body, Some(3000));
    let mut r = reasm();
    let seen = feed_stream(&mut r, key(1), 1, &stream, &mss_cuts(stream.len()));
    let fired: Vec<_> = seen
        .all
        .iter()
        .flat_map(|(q, _)| detector.inspect(q))
        .collect();
    assert!(
        fired
            .iter()
            .any(|d| d.category == "xss" && d.location == "body:comment"),
        "{fired:?}"
    );
}

#[test]
fn body_budgets_bound_memory() {
    // 1,000 concurrent flows, each mid-way through a 1 MB body, interleaved segment by segment.
    let cfg = ReassemblyConfig {
        max_body_bytes: 1024 * 1024,
        max_body_inspect: 2 * 1024 * 1024,
        ..Default::default()
    };
    let budget = cfg.max_body_bytes;
    let mut r = Reassembler::new(cfg, ParseLimits::default());
    let head = b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n";
    let flows = 1000u16;
    let mut requests = 0usize;
    let mut seq = vec![1u32; flows as usize];
    let payload = vec![b'z'; 1448];
    for round in 0..40 {
        for p in 0..flows {
            let data: &[u8] = if round == 0 { head } else { &payload };
            let i = p as usize;
            r.push(
                key(p + 1),
                Segment {
                    seq: seq[i],
                    len: data.len() as u32,
                    data,
                    end: false,
                    now_ns: 0,
                    established: true,
                    stream_start: Some(1),
                },
                |_, q, _| requests += usize::from(q.body_window.is_none()),
            );
            seq[i] += data.len() as u32;
            assert!(
                r.body_buffered_bytes() <= budget,
                "{}",
                r.body_buffered_bytes()
            );
        }
    }
    let stats = r.stats();
    // Every head was inspected; bodies that did not fit the budget were skipped and counted.
    assert_eq!(requests, flows as usize);
    assert!(stats.body_skipped_global_budget > 0);
    assert!(
        stats.body_skipped_global_budget < flows as u64,
        "some bodies were followed"
    );
    assert!(r.body_buffered_bytes() > budget / 2);
    // Flows ending give their budget back.
    for p in 0..flows {
        r.push(
            key(p + 1),
            Segment {
                seq: seq[p as usize],
                len: 0,
                data: &[],
                end: true,
                now_ns: 0,
                established: true,
                stream_start: Some(1),
            },
            |_, _, _| {},
        );
    }
    assert_eq!(r.body_buffered_bytes(), 0);

    // Per-flow budget: a head too large for it has its body skipped, the head inspected.
    let mut r = Reassembler::new(
        ReassemblyConfig {
            max_flow_body_bytes: 9 * 1024,
            ..Default::default()
        },
        ParseLimits::default(),
    );
    let mut stream = b"POST /big-head HTTP/1.1\r\nX-Pad: ".to_vec();
    stream.resize(stream.len() + 2000, b'p');
    stream.extend_from_slice(b"\r\nContent-Length: 20000\r\n\r\nq=<script>alert(1)</script>");
    stream.resize(stream.len() + 20000 - 27, b'q');
    stream.extend_from_slice(b"GET /next HTTP/1.1\r\n\r\n");
    let seen = feed_stream(&mut r, key(1), 1, &stream, &mss_cuts(stream.len()));
    assert_eq!(seen.targets(), vec!["/big-head", "/next"]);
    assert_eq!(r.stats().body_skipped_flow_budget, 1);
    assert_eq!(r.stats().body_windows, 0);
    // The body bytes that came with the head were still looked at.
    assert!(
        Detector::builtin()
            .unwrap()
            .inspect(seen.requests()[0].0)
            .iter()
            .any(|d| d.category == "xss")
    );
}

#[test]
fn skips_of_known_length_are_hinted_to_the_kernel() {
    let mut r = reasm();
    let k = key(1);
    let head = b"POST /up HTTP/1.1\r\nContent-Length: 1000000\r\n\r\n";
    let body_end = 1 + head.len() as u32 + 1_000_000;
    let mut seq = 1u32;
    let mut hints = Vec::new();
    let chunk = vec![b'x'; 8192];
    let push = |r: &mut Reassembler, seq: u32, len: u32, data: &[u8]| {
        r.push(
            k,
            Segment {
                seq,
                len,
                data,
                end: false,
                now_ns: 0,
                established: true,
                stream_start: Some(1),
            },
            |_, _, _| {},
        )
    };
    push(&mut r, seq, head.len() as u32, head);
    seq += head.len() as u32;
    // Nothing to hint while the body is inspected.
    r.take_skip_hints(|k, s| hints.push((k, s)));
    assert!(hints.is_empty());
    for _ in 0..9 {
        push(&mut r, seq, chunk.len() as u32, &chunk);
        seq += chunk.len() as u32;
    }
    r.take_skip_hints(|k, s| hints.push((k, s)));
    assert_eq!(hints, vec![(k, body_end)]);
    // Taken once; the kernel then sends lengths without payload: the flow stays in sync.
    hints.clear();
    r.take_skip_hints(|k, s| hints.push((k, s)));
    assert!(hints.is_empty());
    while seq != body_end {
        let n = (body_end - seq).min(60_000);
        push(&mut r, seq, n, &[]);
        seq += n;
    }
    let next = b"GET /next HTTP/1.1\r\n\r\n";
    let mut got = Vec::new();
    r.push(
        k,
        Segment {
            seq,
            len: next.len() as u32,
            data: next,
            end: false,
            now_ns: 0,
            established: true,
            stream_start: Some(1),
        },
        |_, q, m| got.push((q.target, m.in_sync)),
    );
    assert_eq!(got, vec![("/next".to_owned(), true)]);

    // Chunked: a big chunk past the bound is skipped to its data's end.
    let mut r = reasm();
    let head = b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n";
    let data_end = 1 + head.len() as u32 + 0x100000;
    push(&mut r, 1, head.len() as u32, head);
    let mut seq = 1 + head.len() as u32;
    for _ in 0..9 {
        push(&mut r, seq, chunk.len() as u32, &chunk);
        seq += chunk.len() as u32;
    }
    let mut hints = Vec::new();
    r.take_skip_hints(|k, s| hints.push((k, s)));
    assert_eq!(hints, vec![(k, data_end)]);
    assert_eq!(r.stats().skip_hints, 1);
}

/// The fuzz target's checks on pseudo-random segments, so that CI runs them too: arbitrary
/// splits, holes, overlaps, truncated captures and FINs over three flows of chunked and
/// length-framed bodies never break the memory bounds or the window size.
#[test]
fn random_segments_keep_the_bounds() {
    let cfg = ReassemblyConfig {
        max_flows: 3,
        max_flow_bytes: 8 * 1024,
        max_total_bytes: 16 * 1024,
        max_out_of_order: 4,
        flow_idle_secs: 1,
        max_body_inspect: 3 * 1024,
        body_window: 1024,
        max_flow_body_bytes: 4 * 1024,
        max_body_bytes: 3 * 1024,
    };
    let mut state: u64 = 0x2545_F491_4F6C_DD1D;
    let mut rnd = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n.max(1)
    };
    // A stream of pipelined requests with every kind of body, chunked and not.
    let mut stream = Vec::new();
    for i in 0..200 {
        let body = json_with_padding((i * 37) % 5000);
        let ct = [
            "application/json",
            "application/x-www-form-urlencoded",
            "text/plain",
        ][i % 3];
        let chunk = [None, Some(1 + i % 700), Some(4096)][i % 3];
        stream.extend_from_slice(&post(ct, &body, chunk));
    }
    let mut r = Reassembler::new(cfg.clone(), ParseLimits::default());
    let mut pos = [0usize; 3];
    let mut emitted = 0usize;
    for step in 0..30_000u64 {
        let f = rnd(3) as usize;
        let len = 1 + rnd(3000) as usize;
        let mut at = pos[f];
        match rnd(20) {
            0 => at += rnd(2000) as usize,                  // hole
            1 => at = at.saturating_sub(rnd(500) as usize), // overlap / retransmit
            _ => {}
        }
        let at = at % stream.len();
        let end = (at + len).min(stream.len());
        let captured = if rnd(10) == 0 {
            rnd((end - at) as u64) as usize
        } else {
            end - at
        };
        pos[f] = end % stream.len();
        let mut data = stream[at..at + captured].to_vec();
        if rnd(30) == 0 && !data.is_empty() {
            // a corrupted byte: broken framing or a head that does not parse
            let i = rnd(data.len() as u64) as usize;
            data[i] = b"\x00zZ:\r\n;"[rnd(7) as usize];
        }
        r.push(
            key(f as u16 + 1),
            Segment {
                seq: 1 + at as u32,
                len: (end - at) as u32,
                data: &data,
                end: rnd(500) == 0,
                now_ns: step * 1000,
                established: true,
                stream_start: Some(1),
            },
            |_, q, _| {
                emitted += 1;
                assert!(q.body.len() <= cfg.body_window, "{}", q.body.len());
            },
        );
        assert!(r.flow_count() <= cfg.max_flows);
        assert!(r.buffered_bytes() <= cfg.max_total_bytes);
        assert!(r.body_buffered_bytes() <= cfg.max_body_bytes);
        r.take_skip_hints(|_, _| {});
    }
    assert!(emitted > 1000, "{emitted}");
    let s = r.stats();
    assert!(
        s.body_windows > 0 && s.desyncs > 0 && s.bad_framing > 0,
        "{s:?}"
    );
    assert!(
        s.bodies_cut > 0 && s.body_skipped_global_budget > 0,
        "{s:?}"
    );
}
