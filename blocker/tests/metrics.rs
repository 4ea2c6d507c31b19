//! `/metrics` of a running blocker (real nats-server, the AWS provider against moto behind the
//! limits proxy), parsed strictly: OpenMetrics for a scraper that asks for it as Prometheus
//! does, the 0.0.4 text format otherwise. After reports were decided and written to the IP
//! sets, the latency histograms have observations, and the throttle and lock conflict the
//! proxy answered (retried inside the provider) are counted per provider call.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use palisade_providers::aws::AwsFirewall;
use palisade_tests::moto::{Fault, FaultProxy, MotoServer, ProxyConfig, sdk_config};
use palisade_tests::nats::NatsServer;
use palisade_tests::openmetrics::{self, Exposition, Format};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What Prometheus sends when it scrapes.
const PROMETHEUS_ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// GET /metrics: (content type, body).
async fn scrape(addr: SocketAddr, accept: Option<&str>) -> (String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = "GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n".to_string();
    if let Some(a) = accept {
        req.push_str(&format!("Accept: {a}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let (head, body) = out.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let content_type = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-type")
                .then(|| v.trim().to_string())
        })
        .expect("a content type");
    (content_type, body.to_string())
}

async fn openmetrics(addr: SocketAddr) -> Exposition {
    let (content_type, body) = scrape(addr, Some(PROMETHEUS_ACCEPT)).await;
    assert_eq!(
        content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    openmetrics::parse(&body, Format::OpenMetrics)
        .unwrap_or_else(|e| panic!("not OpenMetrics: {e:#}\n{body}"))
}

/// A report observed now.
fn fresh_report(id: &str, client: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "v": 1,
        "id": id,
        "sensor": "s1",
        "observed_at": chrono::Utc::now().to_rfc3339(),
        "client_ip": client,
        "peer_ip": client,
        "rule": "rce-1",
        "category": "rce",
        "severity": "critical",
        "evidence": "${jndi:ldap://x}",
    }))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn histograms_and_provider_calls_after_blocks_are_written() {
    let nats = NatsServer::start().await.unwrap();
    let moto = MotoServer::start()
        .await
        .expect("moto_server (scripts/setup.sh)");
    let proxy = FaultProxy::start(moto.endpoint(), ProxyConfig::default())
        .await
        .unwrap();
    let v4 = moto.create_ip_set("metrics-v4", false).await.unwrap();
    let v6 = moto.create_ip_set("metrics-v6", true).await.unwrap();
    let firewall = AwsFirewall::builder()
        .with_ipset_arns([v4.clone(), v6])
        .with_endpoint_url(Some(proxy.endpoint()))
        .with_sdk_config(sdk_config().await)
        .build()
        .await
        .unwrap();
    let startup_reads = proxy.calls("GetIPSet");
    // The first write is throttled, the next one meets a lock conflict: both retried inside
    // the provider, invisible to the reconciler.
    proxy.inject("UpdateIPSet", [Fault::Throttle, Fault::LockConflict]);

    let state = tempfile::tempdir().unwrap();
    let palisade_blocker::Spawned {
        admin,
        stop: stop_tx,
        task: blocker,
    } = palisade_blocker::spawn(config(&nats.url(), state.path()), Arc::new(firewall))
        .await
        .expect("blocker ready");

    let js = nats.jetstream().await.unwrap();
    const N: usize = 5;
    let msgs = (1..=N)
        .map(|i| {
            let id = format!("r-{i}");
            let body = fresh_report(&id, &format!("192.0.2.{i}"));
            (palisade_wire::subject_for("s1"), id, body)
        })
        .collect();
    assert_eq!(publish_all(&js, msgs).await, N);

    wait_until(60, "every address written to the IP set", || async {
        let m = openmetrics(admin).await;
        m.value("palisade_time_to_block_seconds_count", &[]) == Some(N as f64)
    })
    .await;
    let m = openmetrics(admin).await;
    let one = |name: &str| m.value(name, &[]).unwrap_or_else(|| panic!("no {name}"));

    // Every existing series keeps its name (a counter's family without `_total`).
    m.family("palisade_reports_received", "counter").unwrap();
    assert_eq!(one("palisade_reports_received_total"), N as f64);
    assert_eq!(one("palisade_blocks_added_total"), N as f64);
    assert_eq!(one("palisade_reconcile_entries_added_total"), N as f64);
    m.family("palisade_blocks_active", "gauge").unwrap();

    // Time to decision and to block: one observation per decided and written address, in
    // seconds, short here (the reports were observed moments ago).
    m.family("palisade_time_to_decision_seconds", "histogram")
        .unwrap();
    assert_eq!(one("palisade_time_to_decision_seconds_count"), N as f64);
    let ttb = one("palisade_time_to_block_seconds_sum") / N as f64;
    assert!(ttb > 0.0 && ttb < 30.0, "mean time to block {ttb} s");
    // Reconcile runs: each one observed.
    assert!(one("palisade_reconcile_duration_seconds_count") >= 1.0);
    assert!(
        one("palisade_reconcile_duration_seconds_count") <= one("palisade_reconcile_runs_total")
    );

    // Provider calls, each attempt where it happened.
    let calls = |op: &str, outcome: &str| {
        m.value(
            "palisade_provider_calls_total",
            &[("provider", "aws"), ("operation", op), ("outcome", outcome)],
        )
        .unwrap_or(0.0)
    };
    assert_eq!(calls("UpdateIPSet", "throttled"), 1.0);
    assert_eq!(calls("UpdateIPSet", "lock_conflict"), 1.0);
    assert_eq!(
        calls("UpdateIPSet", "throttled"),
        proxy.errors("ThrottlingException") as f64
    );
    assert_eq!(
        calls("UpdateIPSet", "lock_conflict"),
        proxy.errors("WAFOptimisticLockException") as f64
    );
    let updates = m.sum(
        "palisade_provider_calls_total",
        &[("operation", "UpdateIPSet")],
    );
    assert_eq!(updates, proxy.calls("UpdateIPSet") as f64);
    assert!(calls("UpdateIPSet", "ok") >= 1.0);
    // GetIPSet after the lock conflict; the startup reads came before the blocker started.
    assert_eq!(
        m.sum(
            "palisade_provider_calls_total",
            &[("operation", "GetIPSet")]
        ),
        (proxy.calls("GetIPSet") - startup_reads) as f64
    );
    assert!(calls("GetIPSet", "ok") >= 1.0);
    assert_eq!(
        m.value(
            "palisade_provider_call_duration_seconds_count",
            &[("provider", "aws"), ("operation", "UpdateIPSet")]
        ),
        Some(updates)
    );

    // Fill per set.
    let fill = m
        .value("palisade_ipset_fill_ratio", &[("set", &v4)])
        .expect("fill of the IPv4 set");
    assert_eq!(fill, N as f64 / 10_000.0);

    // Without an Accept header (curl, older agents): the 0.0.4 text format, same series.
    let (content_type, body) = scrape(admin, None).await;
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let text = openmetrics::parse(&body, Format::Prometheus)
        .unwrap_or_else(|e| panic!("not Prometheus text: {e:#}\n{body}"));
    text.family("palisade_reports_received_total", "counter")
        .unwrap();
    assert_eq!(
        text.value("palisade_reports_received_total", &[]),
        Some(N as f64)
    );
    assert_eq!(
        text.value("palisade_time_to_block_seconds_count", &[]),
        Some(N as f64)
    );

    stop_tx.send(()).unwrap();
    blocker.await.unwrap().unwrap();
}
