//! The log source end to end: access-log lines in every format -> detector -> reports on a
//! real nats-server (JetStream), with the client-IP rules applied; and reports waiting in the
//! buffer while NATS is down, then flowing again.

use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use palisade_sensor::config::{Config, LogFormat, Source};
use palisade_sensor::detect::Detector;
use palisade_sensor::logsource::parse_line;
use palisade_sensor::metrics::Metrics;
use palisade_tests::nats::NatsServer;
use palisade_wire::Report;

/// Every report stored in the stream, with its `Nats-Msg-Id` header.
async fn stored_reports(server: &NatsServer) -> Vec<(Report, String)> {
    let mut out = Vec::new();
    for msg in server
        .stored_messages(palisade_wire::STREAM_NAME)
        .await
        .unwrap()
    {
        let report = Report::from_slice(&msg.payload).expect("stored report follows the contract");
        assert_eq!(msg.subject.as_str(), report.subject());
        let id = msg
            .headers
            .get(palisade_wire::MSG_ID_HEADER)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push((report, id));
    }
    out
}

fn config(server: &NatsServer, file: &Path, format: LogFormat, sensor: &str) -> Config {
    let mut c = Config {
        sensor_id: sensor.to_owned(),
        source: Source::Log,
        trusted_proxies: vec!["10.0.0.0/8".parse().unwrap()],
        // The clients of these lines live in the documentation ranges.
        report_special: [
            "192.0.2.0/24",
            "198.51.100.0/24",
            "203.0.113.0/24",
            "2001:db8::/32",
        ]
        .iter()
        .map(|n| n.parse().unwrap())
        .collect(),
        ..Default::default()
    };
    c.log.files = vec![file.to_owned()];
    c.log.format = format;
    c.log.from_start = true;
    c.log.exit_at_eof = true;
    c.nats.url = server.url();
    c
}

/// What the pipeline must report for `lines`: (client ip, rule, category) per line, deduped.
fn expected(
    format: LogFormat,
    lines: &[&str],
    client_ips: &[&str],
) -> BTreeSet<(IpAddr, String, String)> {
    let detector = Detector::builtin().unwrap();
    let mut out = BTreeSet::new();
    for (line, ip) in lines.iter().zip(client_ips) {
        let Ok(entry) = parse_line(format, line) else {
            continue;
        };
        for d in detector.inspect(&entry.request) {
            out.insert((ip.parse().unwrap(), d.rule_id, d.category));
        }
    }
    out
}

fn write_lines(path: &Path, lines: &[&str]) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    for l in lines {
        writeln!(f, "{l}").unwrap();
    }
}

#[tokio::test]
async fn every_format_reports_with_the_right_client_ip() {
    let server = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cases: [(LogFormat, Vec<&str>, Vec<&str>); 3] = [
        (
            LogFormat::Nginx,
            vec![
                // untrusted peer: its X-Forwarded-For is not believed
                r#"203.0.113.50 - - [25/Nov/2026:02:10:00 +0000] "GET /item?id=1%20UNION%20SELECT%20password%20FROM%20users-- HTTP/1.1" 200 5 "-" "curl/8" "1.2.3.4""#,
                // trusted proxy: the client is the XFF hop
                r#"10.0.0.2 - - [25/Nov/2026:02:10:01 +0000] "GET /download?file=../../../../etc/passwd HTTP/1.1" 200 5 "-" "Mozilla/5.0" "198.51.100.23, 10.0.0.9""#,
                // benign
                r#"10.0.0.2 - - [25/Nov/2026:02:10:02 +0000] "GET /index.html HTTP/1.1" 200 5 "https://shop.example/" "Mozilla/5.0" "198.51.100.24""#,
                // garbage
                "this is not a log line",
                // repeat of the first: suppressed within the window
                r#"203.0.113.50 - - [25/Nov/2026:02:10:03 +0000] "GET /item?id=1%20UNION%20SELECT%20password%20FROM%20users-- HTTP/1.1" 200 5 "-" "curl/8" "1.2.3.4""#,
            ],
            vec![
                "203.0.113.50",
                "198.51.100.23",
                "198.51.100.24",
                "0.0.0.0",
                "203.0.113.50",
            ],
        ),
        (
            LogFormat::Json,
            vec![
                r#"{"start_time":"2026-11-25T02:10:00Z","method":"GET","path":"/?q=<script>alert(document.cookie)</script>","downstream_remote_address":"10.1.2.3:5555","x_forwarded_for":"2001:db8::77","user_agent":"Mozilla/5.0"}"#,
                r#"{"start_time":"2026-11-25T02:10:00Z","method":"GET","path":"/health","downstream_remote_address":"10.1.2.3:5555","user_agent":"kube-probe/1.30"}"#,
                r#"{"broken json"#,
            ],
            vec!["2001:db8::77", "10.1.2.3", "0.0.0.0"],
        ),
        (
            LogFormat::Alb,
            vec![
                r#"http 2026-11-25T02:10:00.186641Z app/my-lb/50dc6c495c0c9188 192.0.2.44:2817 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 "GET http://www.example.com:80/cgi-bin/run?cmd=;cat%20/etc/passwd HTTP/1.1" "curl/8.0" - - arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/t/73e2d6bc24d8a067 "Root=1-58337262-36d228ad5d99923122bbe354" "-" "-" 0 2026-11-25T02:09:59.364000Z "forward" "-" "-" "10.0.0.1:80" "200" "-" "-""#,
                r#"http 2026-11-25T02:10:01.186641Z app/my-lb/50dc6c495c0c9188 192.0.2.45:2817 10.0.0.1:80 0.000 0.001 0.000 200 200 34 366 "GET http://www.example.com:80/products?page=2 HTTP/1.1" "Mozilla/5.0" - - arn:aws:elasticloadbalancing:us-east-2:123456789012:targetgroup/t/73e2d6bc24d8a067 "Root=1-58337262-36d228ad5d99923122bbe355" "-" "-" 0 2026-11-25T02:09:59.364000Z "forward" "-" "-" "10.0.0.1:80" "200" "-" "-""#,
            ],
            vec!["192.0.2.44", "192.0.2.45"],
        ),
    ];
    let mut all_expected = BTreeSet::new();
    for (i, (format, lines, ips)) in cases.iter().enumerate() {
        let want = expected(*format, lines, ips);
        assert!(
            !want.is_empty(),
            "{format:?}: the attack lines must be detected"
        );
        // the benign lines are really benign for the detector
        let detector = Detector::builtin().unwrap();
        for line in lines
            .iter()
            .filter(|l| l.contains("index.html") || l.contains("/health") || l.contains("page=2"))
        {
            let entry = parse_line(*format, line).unwrap();
            assert!(detector.inspect(&entry.request).is_empty(), "{line}");
        }
        let garbage = lines
            .iter()
            .filter(|l| parse_line(*format, l).is_err())
            .count() as u64;
        let file = dir.path().join(format!("access-{i}.log"));
        write_lines(&file, lines);
        let metrics = Arc::new(Metrics::default());
        let summary = palisade_sensor::run(
            config(&server, &file, *format, &format!("logtest-{i}")),
            metrics.clone(),
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(summary.log.lines, lines.len() as u64);
        assert_eq!(summary.log.line_errors, garbage);
        assert_eq!(summary.log.requests, lines.len() as u64 - garbage);
        assert_eq!(summary.reports_published, want.len() as u64, "{format:?}");
        assert_eq!(summary.buffer_drops, 0);
        all_expected.extend(want.into_iter().map(|w| (format!("logtest-{i}"), w)));
    }
    let stored = stored_reports(&server).await;
    let got: BTreeSet<(String, (IpAddr, String, String))> = stored
        .iter()
        .map(|(r, _)| {
            (
                r.sensor.clone(),
                (r.client_ip, r.rule.clone(), r.category.as_str().to_owned()),
            )
        })
        .collect();
    assert_eq!(got, all_expected);
    assert_eq!(stored.len(), all_expected.len(), "no duplicates stored");
    for (r, msg_id) in &stored {
        assert_eq!(&r.id, msg_id, "Nats-Msg-Id is the report id");
        assert!(r.evidence.len() <= palisade_wire::MAX_EVIDENCE_BYTES);
    }
    // peer_ip is the log's remote address
    let lfi = stored
        .iter()
        .find(|(r, _)| r.client_ip.to_string() == "198.51.100.23")
        .expect("the XFF client was reported");
    assert_eq!(lfi.0.peer_ip.to_string(), "10.0.0.2");
    let sqli = stored
        .iter()
        .find(|(r, _)| r.client_ip.to_string() == "203.0.113.50")
        .expect("the untrusted peer was reported");
    assert_eq!(sqli.0.peer_ip, sqli.0.client_ip);
}

#[tokio::test]
async fn reports_wait_while_nats_is_down_then_flow() {
    let mut server = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access.log");
    std::fs::write(&file, "").unwrap();
    let mut cfg = config(&server, &file, LogFormat::Nginx, "buffered");
    cfg.log.exit_at_eof = false;
    cfg.log.poll_ms = 20;
    cfg.nats.ack_timeout_secs = 1;
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    server.stop().await.unwrap();

    let metrics = Arc::new(Metrics::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(palisade_sensor::run(cfg, metrics.clone(), async move {
        let _ = stop_rx.await;
    }));
    write_lines(
        &file,
        &[
            r#"203.0.113.77 - - [25/Nov/2026:02:10:00 +0000] "GET /?q=1%27%20OR%20%271%27=%271 HTTP/1.1" 200 5 "-" "Mozilla/5.0""#,
        ],
    );
    // The detection happens while NATS is down.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metrics.detections_total() == 0 {
        assert!(tokio::time::Instant::now() < deadline, "no detection");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metrics
            .reports_published
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
    server.restart().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metrics
        .reports_published
        .load(std::sync::atomic::Ordering::Relaxed)
        == 0
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "report never published after NATS came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    run.await.unwrap().unwrap();
    let stored = stored_reports(&server).await;
    assert!(!stored.is_empty());
    assert!(
        stored
            .iter()
            .all(|(r, _)| r.client_ip.to_string() == "203.0.113.77")
    );
    assert_eq!(
        metrics
            .buffer_drops
            .load(std::sync::atomic::Ordering::Relaxed),
        0
    );
}
