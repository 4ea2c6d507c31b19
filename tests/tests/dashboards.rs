//! The shipped dashboard (`config/grafana/palisade.json`) and alerting rules
//! (`config/prometheus/alerts.yaml`) name only metrics that the services really export: both
//! services run here (the blocker on a real nats-server, the sensor on an access log with an
//! attack in it), both `/metrics` endpoints are scraped, and every `palisade_*` name in every
//! expression must be among the scraped families.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use palisade_providers::memory::MemoryFirewall;
use palisade_tests::nats::NatsServer;
use tokio::sync::oneshot;

const WAIT: Duration = Duration::from_secs(30);

/// The `Accept` header Prometheus scrapes with.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

async fn scrape(addr: SocketAddr) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // As Prometheus asks: OpenMetrics first (the blocker serves it; the same series as the
    // 0.0.4 text it gives to clients that do not ask).
    s.write_all(
        format!(
            "GET /metrics HTTP/1.1\r\nHost: t\r\nAccept: {PROMETHEUS_ACCEPT}\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("response");
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

/// Every series name a scrape can contain: the families of the `# TYPE` lines (with the
/// `_total` of OpenMetrics counters and the `_bucket`, `_sum` and `_count` series of
/// histograms and summaries) and the sample names.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split_whitespace();
            let (Some(name), Some(kind)) = (it.next(), it.next()) else {
                continue;
            };
            out.insert(name.to_owned());
            // An OpenMetrics counter family is named without the `_total` of its samples.
            if kind == "counter" && !name.ends_with("_total") {
                out.insert(format!("{name}_total"));
            }
            if kind == "histogram" || kind == "summary" {
                for s in ["_bucket", "_sum", "_count"] {
                    out.insert(format!("{name}{s}"));
                }
            }
        } else if line.starts_with("palisade_") {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            out.insert(line[..end].to_owned());
        }
    }
    out
}

/// The `palisade_*` identifiers in a PromQL expression.
fn referenced(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("palisade_") {
        let start = i + pos;
        let boundary =
            start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if boundary {
            out.push(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

fn grafana_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                if k == "expr" {
                    out.push(v.as_str().expect("expr is a string").to_owned());
                } else {
                    grafana_exprs(v, out);
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|v| grafana_exprs(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_alerts_name_only_exported_metrics() {
    let nats = NatsServer::start().await.expect("nats-server");
    let dir = tempfile::tempdir().expect("tempdir");

    // The blocker.
    let mut config = palisade_blocker::Config::default();
    config.nats.url = nats.url();
    config.state.dir = dir.path().join("state");
    config.admin.listen = "127.0.0.1:0".parse().expect("addr");
    config.reconcile.interval_ms = 100;
    let palisade_blocker::Spawned {
        admin: blocker_addr,
        stop: stop_blocker,
        task: blocker,
    } = tokio::time::timeout(
        WAIT,
        palisade_blocker::spawn(config, Arc::new(MemoryFirewall::new())),
    )
    .await
    .expect("blocker ready")
    .expect("blocker started");

    // The sensor, following an access log with an attack in it.
    let log = dir.path().join("access.log");
    let mut f = std::fs::File::create(&log).expect("log");
    writeln!(
        f,
        r#"203.0.113.7 - - [03/Dec/2026:10:00:00 +0000] "GET /?id=1%27%20UNION%20SELECT%20password%20FROM%20users-- HTTP/1.1" 200 12 "-" "curl/8""#
    )
    .expect("line");
    drop(f);
    let metrics_addr: SocketAddr =
        format!("127.0.0.1:{}", palisade_tests::free_port().expect("port"))
            .parse()
            .expect("addr");
    let mut sensor_config = palisade_sensor::config::Config {
        sensor_id: "dash".into(),
        source: palisade_sensor::config::Source::Log,
        metrics_listen: Some(metrics_addr),
        report_special: vec!["203.0.113.0/24".parse().expect("net")],
        ..Default::default()
    };
    sensor_config.log.files = vec![log];
    sensor_config.log.from_start = true;
    sensor_config.nats.url = nats.url();
    let sensor_metrics = Arc::new(palisade_sensor::metrics::Metrics::default());
    let (stop_sensor, sensor_stop_rx) = oneshot::channel::<()>();
    let sensor = tokio::spawn(palisade_sensor::run(
        sensor_config,
        Arc::clone(&sensor_metrics),
        async move {
            let _ = sensor_stop_rx.await;
        },
    ));
    // Wait until the attack went all the way: the sensor published, the blocker received.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (blocker_text, sensor_text) = loop {
        let b = scrape(blocker_addr).await;
        let s = match tokio::net::TcpStream::connect(metrics_addr).await {
            Ok(_) => scrape(metrics_addr).await,
            Err(_) => String::new(),
        };
        if b.contains("palisade_reports_received_total 1")
            && s.contains("palisade_sensor_reports_published_total 1")
        {
            break (b, s);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the attack did not reach the blocker:\n{b}\n{s}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exported: BTreeSet<String> = names(&blocker_text)
        .union(&names(&sensor_text))
        .cloned()
        .collect();
    assert!(exported.len() > 60, "{exported:?}");

    let root = palisade_tests::workspace_root();
    let alerts: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("config/prometheus/alerts.yaml")).expect("alerts"),
    )
    .expect("alerts.yaml is YAML");
    let mut exprs = Vec::new();
    let mut alert_names = BTreeSet::new();
    for group in alerts["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            assert!(alert_names.insert(name.to_owned()), "alert {name} twice");
            assert!(
                rule["labels"]["severity"].as_str().is_some(),
                "{name}: severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name}: summary"
            );
            exprs.push((
                format!("alert {name}"),
                rule["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("config/grafana/palisade.json")).expect("dashboard"),
    )
    .expect("palisade.json is JSON");
    let mut panel_exprs = Vec::new();
    grafana_exprs(&dashboard, &mut panel_exprs);
    assert!(panel_exprs.len() >= 10, "{panel_exprs:?}");
    exprs.extend(panel_exprs.into_iter().map(|e| ("dashboard".to_owned(), e)));

    let mut unknown = Vec::new();
    let mut checked = 0;
    for (what, expr) in &exprs {
        for name in referenced(expr) {
            checked += 1;
            if !exported.contains(&name) {
                unknown.push(format!("{what}: {name} in `{expr}`"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "expressions name metrics nobody exports:\n{}",
        unknown.join("\n")
    );
    assert!(checked > 30, "only {checked} metric references found");
    eprintln!(
        "{} alerts and dashboard expressions, {checked} metric references, all among {} exported series names",
        exprs.len(),
        exported.len()
    );

    let _ = stop_sensor.send(());
    let _ = tokio::time::timeout(WAIT, sensor)
        .await
        .expect("sensor stops");
    let _ = stop_blocker.send(());
    tokio::time::timeout(WAIT, blocker)
        .await
        .expect("blocker stops")
        .expect("task")
        .expect("blocker ran cleanly");
}

#[test]
fn references_are_found_whole() {
    assert_eq!(
        referenced("sum(rate(palisade_a_total[5m])) / x_palisade_b + palisade_c{k=\"v\"}"),
        ["palisade_a_total", "palisade_c"]
    );
}
