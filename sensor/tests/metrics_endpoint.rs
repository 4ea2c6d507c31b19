//! `GET /metrics` of a running sensor (log source, real nats-server), scraped as Prometheus does
//! (OpenMetrics) and as curl does (Prometheus text 0.0.4), each parsed strictly: every sample
//! belongs to a family declared by `# TYPE`, families are declared once, histograms are
//! cumulative and end in `+Inf` = `_count`. After a report was acknowledged, both latency
//! histograms hold observations.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use palisade_sensor::config::{Config, LogFormat, Source};
use palisade_sensor::metrics::Metrics;
use palisade_tests::nats::NatsServer;

/// The `Accept` header Prometheus scrapes with.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    OpenMetrics,
    Prometheus,
}

#[derive(Debug, Default)]
struct Family {
    kind: String,
    /// (series name, labels, value)
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':'))
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':'))
}

/// `{a="x",b="y"}` at the start of `s`: the labels and the rest of the line.
fn labels(s: &str) -> Result<(BTreeMap<String, String>, &str), String> {
    let mut out = BTreeMap::new();
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((out, s));
    };
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((out, r));
        }
        let eq = rest.find('=').ok_or("label without =")?;
        let name = &rest[..eq];
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, 'n')) => value.push('\n'),
                    other => return Err(format!("bad escape {other:?}")),
                },
                Some((_, '\n')) | None => return Err("unterminated label value".into()),
                Some((_, c)) => value.push(c),
            }
        };
        if out.insert(name.to_owned(), value).is_some() {
            return Err(format!("label {name} twice"));
        }
        rest = &rest[end + 1..];
        rest = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// Parse a whole exposition, refusing what Prometheus would refuse.
fn parse(text: &str, format: Format) -> Result<BTreeMap<String, Family>, String> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut closed: BTreeSet<String> = BTreeSet::new();
    let mut series: BTreeSet<String> = BTreeSet::new();
    let mut eof = false;
    for (n, line) in text.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if eof {
            return Err(at("text after # EOF".into()));
        }
        if line == "# EOF" {
            if format == Format::Prometheus {
                return Err(at("# EOF in the Prometheus text format".into()));
            }
            eof = true;
            continue;
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (Some(kw), Some(name)) = (parts.next(), parts.next()) else {
                return Err(at("short metadata line".into()));
            };
            let arg = parts.next().unwrap_or("");
            if !matches!(kw, "HELP" | "TYPE" | "UNIT") || !is_name(name, true) {
                return Err(at("bad metadata".into()));
            }
            if current.as_deref() != Some(name) {
                if closed.contains(name) || families.contains_key(name) {
                    return Err(at(format!("family {name} declared twice")));
                }
                if let Some(c) = current.take() {
                    closed.insert(c);
                }
                current = Some(name.to_owned());
            }
            match kw {
                "TYPE" => {
                    if !matches!(
                        arg,
                        "counter" | "gauge" | "histogram" | "summary" | "unknown" | "untyped"
                    ) {
                        return Err(at(format!("unknown type {arg}")));
                    }
                    if families.contains_key(name) {
                        return Err(at("TYPE twice".into()));
                    }
                    families.insert(
                        name.to_owned(),
                        Family {
                            kind: arg.to_owned(),
                            ..Family::default()
                        },
                    );
                }
                "UNIT" if format == Format::Prometheus => {
                    return Err(at("# UNIT in the Prometheus text format".into()));
                }
                "UNIT" if !name.ends_with(&format!("_{arg}")) => {
                    return Err(at("a unit must end the family's name".into()));
                }
                _ => {}
            }
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            return Err(at("neither metadata nor a sample".into()));
        }
        let end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..end];
        let (labels, rest) = labels(&line[end..]).map_err(at)?;
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().map_err(|_| at("bad value".into()))?,
        };
        let fam_name = current
            .as_deref()
            .ok_or_else(|| at("sample before any # TYPE".into()))?;
        let fam = families
            .get_mut(fam_name)
            .ok_or_else(|| at("family without # TYPE".into()))?;
        let suffix = name
            .strip_prefix(fam_name)
            .ok_or_else(|| at(format!("sample outside its family {fam_name}")))?;
        let ok = match (fam.kind.as_str(), format) {
            ("counter", Format::OpenMetrics) => matches!(suffix, "_total" | "_created"),
            ("counter", Format::Prometheus) => suffix.is_empty() && name.ends_with("_total"),
            ("gauge", _) => suffix.is_empty(),
            ("histogram", _) => {
                matches!(suffix, "_bucket" | "_sum" | "_count" | "_created")
                    && (suffix != "_bucket" || labels.contains_key("le"))
            }
            _ => false,
        };
        if !ok {
            return Err(at(format!("not a series of {} {fam_name}", fam.kind)));
        }
        if fam.kind == "counter" && value < 0.0 {
            return Err(at("negative counter".into()));
        }
        if !series.insert(format!("{name}{labels:?}")) {
            return Err(at("series twice".into()));
        }
        fam.samples.push((name.to_owned(), labels, value));
    }
    if format == Format::OpenMetrics && !eof {
        return Err("no # EOF".into());
    }
    for (name, fam) in &families {
        if fam.kind != "histogram" {
            continue;
        }
        let buckets: Vec<(f64, f64)> = fam
            .samples
            .iter()
            .filter(|s| s.0.ends_with("_bucket"))
            .map(|s| {
                let le = &s.1["le"];
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or(f64::NAN)
                };
                (le, s.2)
            })
            .collect();
        let count = fam.samples.iter().find(|s| s.0.ends_with("_count"));
        let ordered = buckets
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
        let last = buckets.last();
        if !ordered || last.is_none_or(|l| l.0 != f64::INFINITY || Some(l.1) != count.map(|c| c.2))
        {
            return Err(format!(
                "histogram {name}: buckets {buckets:?}, count {count:?}"
            ));
        }
    }
    Ok(families)
}

/// `GET path` with `accept`: the status line, the content type and the body.
async fn get(addr: SocketAddr, path: &str, accept: Option<&str>) -> (String, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let accept = accept
        .map(|a| format!("Accept: {a}\r\n"))
        .unwrap_or_default();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: t\r\n{accept}Connection: close\r\n\r\n").as_bytes(),
    )
    .await
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("response");
    let (head, body) = out.split_once("\r\n\r\n").expect("head and body");
    let status = head.lines().next().unwrap_or_default().to_owned();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_owned)
        })
        .expect("content-type");
    (status, ctype, body.to_owned())
}

/// `GET /metrics` with `accept`: the content type and the body (the answer must be a 200).
async fn scrape(addr: SocketAddr, accept: Option<&str>) -> (String, String) {
    let (status, ctype, body) = get(addr, "/metrics", accept).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    (ctype, body)
}

fn value(f: &BTreeMap<String, Family>, family: &str, series: &str) -> f64 {
    f.get(family)
        .and_then(|f| f.samples.iter().find(|s| s.0 == series))
        .map(|s| s.2)
        .unwrap_or_else(|| panic!("no {series} in {family}"))
}

#[tokio::test]
async fn scraped_metrics_parse_strictly_and_histograms_fill() {
    let nats = NatsServer::start().await.expect("nats-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let log = dir.path().join("access.log");
    let mut f = std::fs::File::create(&log).expect("log");
    for (i, line) in [
        r#"203.0.113.7 - - [03/Dec/2026:10:00:00 +0000] "GET /?id=1%27%20UNION%20SELECT%20password%20FROM%20users-- HTTP/1.1" 200 12 "-" "curl/8""#,
        r#"203.0.113.8 - - [03/Dec/2026:10:00:01 +0000] "GET /index.html HTTP/1.1" 200 12 "-" "curl/8""#,
    ]
    .iter()
    .enumerate()
    {
        writeln!(f, "{line}").unwrap_or_else(|e| panic!("line {i}: {e}"));
    }
    drop(f);
    let metrics_addr: SocketAddr =
        format!("127.0.0.1:{}", palisade_tests::free_port().expect("port"))
            .parse()
            .expect("addr");
    let mut config = Config {
        sensor_id: "scrape".into(),
        source: Source::Log,
        metrics_listen: Some(metrics_addr),
        report_special: vec!["203.0.113.0/24".parse().expect("net")],
        ..Default::default()
    };
    config.log.files = vec![log];
    config.log.format = LogFormat::Nginx;
    config.log.from_start = true;
    config.nats.url = nats.url();
    let metrics = Arc::new(Metrics::default());
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sensor = tokio::spawn(palisade_sensor::run(config, metrics.clone(), async move {
        let _ = stop_rx.await;
    }));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while metrics.reports_published.load(Ordering::Relaxed) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no report published"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (ctype, om) = scrape(metrics_addr, Some(PROMETHEUS_ACCEPT)).await;
    assert!(
        ctype.starts_with("application/openmetrics-text; version=1.0.0"),
        "{ctype}"
    );
    let om = parse(&om, Format::OpenMetrics).unwrap_or_else(|e| panic!("{e}\n{om}"));
    let (ctype, prom) = scrape(metrics_addr, None).await;
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    let prom = parse(&prom, Format::Prometheus).unwrap_or_else(|e| panic!("{e}\n{prom}"));

    // The same series in both formats.
    let series = |f: &BTreeMap<String, Family>| -> BTreeSet<String> {
        f.values()
            .flat_map(|f| f.samples.iter().map(|s| s.0.clone()))
            .collect()
    };
    assert_eq!(series(&om), series(&prom));
    assert!(om.len() >= 50, "{:?}", om.keys());

    // Names as they always were.
    assert_eq!(om["palisade_sensor_reports_published"].kind, "counter");
    assert_eq!(
        value(
            &om,
            "palisade_sensor_reports_published",
            "palisade_sensor_reports_published_total"
        ),
        1.0
    );
    assert_eq!(
        value(
            &prom,
            "palisade_sensor_requests_parsed_total",
            "palisade_sensor_requests_parsed_total"
        ),
        2.0
    );
    assert_eq!(om["palisade_sensor_flows"].kind, "gauge");
    assert_eq!(om["palisade_sensor_ring_drops"].kind, "counter");
    let detections = &om["palisade_sensor_detections"];
    assert_eq!(detections.kind, "counter");
    assert!(
        detections
            .samples
            .iter()
            .any(|s| s.1.contains_key("rule") && s.2 >= 1.0),
        "{detections:?}"
    );

    // The histograms filled.
    for fam in [
        "palisade_sensor_publish_latency_seconds",
        "palisade_sensor_inspect_duration_seconds",
    ] {
        for f in [&om, &prom] {
            assert_eq!(f[fam].kind, "histogram");
            let count = value(f, fam, &format!("{fam}_count"));
            assert!(count >= 1.0, "{fam}: {count}");
            assert!(value(f, fam, &format!("{fam}_sum")) > 0.0, "{fam}");
        }
    }
    let published = value(
        &om,
        "palisade_sensor_publish_latency_seconds",
        "palisade_sensor_publish_latency_seconds_count",
    );
    assert_eq!(published, 1.0, "one observation per acknowledged report");

    // the source captures: ready
    let (status, _, body) = get(metrics_addr, "/readyz", None).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "{\"ready\":true}\n");

    let _ = stop.send(());
    sensor.await.expect("join").expect("sensor stops cleanly");
}

/// `/readyz` is 503 while the endpoint is up but the source does not capture yet (the eBPF
/// program takes a moment to attach after the endpoint starts), 200 once it does.
#[tokio::test]
async fn readyz_is_503_until_the_source_captures() {
    let metrics = Arc::new(Metrics::default());
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let addr = palisade_sensor::metrics::serve(
        "127.0.0.1:0".parse().expect("addr"),
        metrics.clone(),
        async move {
            let _ = stop_rx.await;
        },
    )
    .await
    .expect("serve");
    let (status, ctype, body) = get(addr, "/readyz", None).await;
    assert!(status.starts_with("HTTP/1.1 503"), "{status}");
    assert_eq!(ctype, "application/json");
    assert_eq!(body, "{\"ready\":false}\n");
    // the metrics are served all the same
    let (status, _, _) = get(addr, "/metrics", None).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");

    metrics.set_ready();
    let (status, _, body) = get(addr, "/readyz", None).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert_eq!(body, "{\"ready\":true}\n");
    let _ = stop.send(());
}

#[test]
fn the_parser_refuses_what_prometheus_refuses() {
    let ok = "# HELP a_total x\n# TYPE a_total counter\na_total 1\n";
    assert!(parse(ok, Format::Prometheus).is_ok());
    for bad in [
        // a sample without a family
        "b 1\n",
        // a sample outside its family
        "# TYPE a_total counter\nb_total 1\n",
        // a family twice
        "# TYPE a_total counter\na_total 1\n# TYPE b gauge\nb 1\n# TYPE a_total counter\n",
        // a counter without _total
        "# TYPE a counter\na 1\n",
        // a series twice
        "# TYPE a_total counter\na_total 1\na_total 2\n",
        // a bad label
        "# TYPE a_total counter\na_total{x=1} 1\n",
        // buckets not cumulative
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
        // +Inf is not the count
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 1\n",
    ] {
        assert!(parse(bad, Format::Prometheus).is_err(), "{bad}");
    }
    assert!(parse("# TYPE a counter\na_total 1\n", Format::OpenMetrics).is_err());
    assert!(parse("# TYPE a counter\na_total 1\n# EOF\n", Format::OpenMetrics).is_ok());
    assert!(
        parse(
            "# TYPE a counter\na_total 1\n# EOF\n# EOF\n",
            Format::OpenMetrics
        )
        .is_err()
    );
}
