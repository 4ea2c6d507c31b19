//! End to end with the real eBPF program (root only): a network namespace plays the load
//! balancer, a veth pair carries its requests to a small HTTP server outside it, the sensor
//! is attached to the server-side veth end, and the reports must arrive on a real nats-server:
//! exactly the expected client IPs, rules and categories, nothing for benign requests.
//!
//! Skipped with a printed message when not root or eBPF is unavailable.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ipnet::IpNet;
use palisade_sensor::config::{Config, Source};
use palisade_sensor::detect::Detector;
use palisade_sensor::http::{ParseLimits, Parsed, parse_request};
use palisade_sensor::metrics::Metrics;
use palisade_tests::nats::NatsServer;
use palisade_tests::netns::{VethNamespace, skip_reason};
use palisade_wire::Report;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends each argument (hex-encoded raw bytes) on its own connection and reads the response.
const CLIENT: &str = r#"
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
for raw in sys.argv[3:]:
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(bytes.fromhex(raw))
    try:
        while s.recv(65536):
            pass
    except socket.timeout:
        pass
    s.close()
"#;

/// A tiny HTTP server: answers every request head with `200 ok`, keep-alive.
async fn http_server(addr: SocketAddr) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    // answer each complete request (pipelining included)
                    while let Parsed::Complete {
                        consumed: Some(c), ..
                    } = parse_request(&buf, &ParseLimits::default())
                    {
                        if c > buf.len() {
                            break;
                        }
                        buf.drain(..c);
                        let last = buf.is_empty();
                        let resp = if last {
                            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                        } else {
                            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
                        };
                        if sock.write_all(resp.as_bytes()).await.is_err() {
                            return;
                        }
                        if last {
                            return;
                        }
                    }
                }
            });
        }
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn send(ns: &VethNamespace, host: IpAddr, port: u16, requests: &[Vec<u8>]) {
    let host = host.to_string();
    let port = port.to_string();
    let hexes: Vec<String> = requests.iter().map(|r| hex(r)).collect();
    let mut args = vec!["python3", "-c", CLIENT, host.as_str(), port.as_str()];
    args.extend(hexes.iter().map(String::as_str));
    ns.exec(&args).unwrap();
}

async fn stored_reports(server: &NatsServer) -> Vec<Report> {
    let js = server.jetstream().await.unwrap();
    let Ok(mut stream) = js.get_stream(palisade_wire::STREAM_NAME).await else {
        return Vec::new();
    };
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut out = Vec::new();
    for seq in 1..=last {
        if let Ok(msg) = stream.get_raw_message(seq).await {
            out.push(Report::from_slice(&msg.payload).unwrap());
        }
    }
    out
}

/// (request bytes, the client IP the report must carry when the namespace is / is not trusted,
/// rules (id, category) that must be among its reports: written out, not computed)
struct Case {
    raw: Vec<u8>,
    trusted_client: Option<IpAddr>,
    must: &'static [(&'static str, &'static str)],
}

async fn scenario(trust_namespace: bool, ipv6: bool) {
    if let Some(reason) = skip_reason() {
        eprintln!("SKIPPED ebpf_e2e: {reason}");
        return;
    }
    let server = NatsServer::start().await.unwrap();
    let ns = VethNamespace::create().unwrap();
    let port = 8080;
    // IPv6 runs the kernel program's other branch (fixed 40-byte header, payload length).
    let (host, peer): (IpAddr, IpAddr) = if ipv6 {
        (ns.host_addr6.into(), ns.ns_addr6.into())
    } else {
        (ns.host_addr.into(), ns.ns_addr.into())
    };
    let http = http_server(SocketAddr::new(host, port)).await;

    let cases = [
        Case {
            raw: b"GET /item?id=1%20UNION%20SELECT%20username,password%20FROM%20users-- HTTP/1.1\r\nHost: shop\r\nUser-Agent: Mozilla/5.0\r\n\r\n".to_vec(),
            trusted_client: None,
            must: &[("sqli.union", "sqli")],
        },
        Case {
            raw: b"GET /download?file=../../../../etc/passwd HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 198.51.100.40\r\nUser-Agent: Mozilla/5.0\r\n\r\n".to_vec(),
            trusted_client: Some("198.51.100.40".parse().unwrap()),
            must: &[("lfi.traversal", "lfi"), ("lfi.sensitive_file", "lfi")],
        },
        Case {
            raw: b"GET /products?page=2 HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 198.51.100.41\r\nUser-Agent: Mozilla/5.0\r\n\r\n".to_vec(),
            trusted_client: Some("198.51.100.41".parse().unwrap()),
            must: &[],
        },
        // keep-alive: a benign request, then an attack on the same connection
        Case {
            raw: b"GET /a.css HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 2001:db8::42\r\n\r\nGET /search?q=%3Cscript%3Ealert(document.cookie)%3C/script%3E HTTP/1.1\r\nHost: shop\r\nX-Forwarded-For: 2001:db8::42\r\n\r\n".to_vec(),
            trusted_client: Some("2001:db8::42".parse().unwrap()),
            must: &[("xss.script_tag", "xss")],
        },
    ];

    // Expected reports: what the detector finds in each request, at the right client IP.
    let detector = Detector::builtin().unwrap();
    let mut want = BTreeSet::new();
    for case in &cases {
        let client = match (trust_namespace, case.trusted_client) {
            (true, Some(ip)) => ip,
            _ => peer,
        };
        let mut buf = case.raw.as_slice();
        while let Parsed::Complete {
            request,
            consumed: Some(c),
        } = parse_request(buf, &ParseLimits::default())
        {
            for d in detector.inspect(&request) {
                want.insert((client, d.rule_id, d.category));
            }
            buf = &buf[c..];
        }
        for (rule, category) in case.must {
            assert!(
                want.contains(&(client, rule.to_string(), category.to_string())),
                "{rule} ({category}) expected for {client}: {want:?}"
            );
        }
    }
    let benign = &cases[2].raw;
    let Parsed::Complete { request, .. } = parse_request(benign, &ParseLimits::default()) else {
        panic!("benign request parses");
    };
    assert!(
        detector.inspect(&request).is_empty(),
        "benign request is benign"
    );

    let mut config = Config {
        sensor_id: format!(
            "e2e-{}{}",
            if trust_namespace {
                "trusted"
            } else {
                "untrusted"
            },
            if ipv6 { "-v6" } else { "" }
        ),
        source: Source::Ebpf,
        ..Default::default()
    };
    config.ebpf.interfaces = vec![ns.host_if.clone()];
    config.ebpf.ports = vec![port];
    config.nats.url = server.url();
    if trust_namespace {
        config.trusted_proxies = vec![IpNet::from(peer)];
    }
    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sensor = tokio::spawn(palisade_sensor::run(config, metrics.clone(), async move {
        let _ = stop_rx.await;
    }));

    // Wait until the sensor sees traffic (attached and reading), using benign requests.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metrics.requests_parsed.load(Ordering::Relaxed) == 0 {
        if sensor.is_finished() {
            let result = sensor.await.unwrap();
            panic!("sensor stopped early: {result:?}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sensor never saw a request"
        );
        send(
            &ns,
            host,
            port,
            &[b"GET /warmup HTTP/1.1\r\nHost: shop\r\n\r\n".to_vec()],
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(metrics.detections_total(), 0, "warm-up requests are benign");

    let raws: Vec<Vec<u8>> = cases.iter().map(|c| c.raw.clone()).collect();
    send(&ns, host, port, &raws);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metrics.reports_published.load(Ordering::Relaxed) < want.len() as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "published {} of {} reports; detections {:?}",
            metrics.reports_published.load(Ordering::Relaxed),
            want.len(),
            metrics.detections()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    sensor.await.unwrap().unwrap();
    http.abort();

    let stored = stored_reports(&server).await;
    let got: BTreeSet<(IpAddr, String, String)> = stored
        .iter()
        .map(|r| (r.client_ip, r.rule.clone(), r.category.as_str().to_owned()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        stored.len(),
        want.len(),
        "exactly one report per client and rule"
    );
    for r in &stored {
        assert_eq!(r.peer_ip, peer, "peer_ip is the namespace side of the veth");
        let ctx = r.context.as_ref().expect("context");
        assert_eq!(ctx.interface.as_deref(), Some(ns.host_if.as_str()));
        assert_eq!(ctx.dst_port, Some(port));
    }
    assert_eq!(metrics.ring_drops.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebpf_reports_peer_when_proxy_not_trusted() {
    scenario(false, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebpf_sees_ipv6_traffic() {
    scenario(true, true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ebpf_reports_forwarded_client_when_proxy_trusted() {
    scenario(true, false).await;
}
