//! Benchmark driver for `bench/ingest.sh` (`cargo bench -p palisade-blocker --bench ingest --
//! <ingest|rss> ...`).
//!
//! - `ingest`: pre-fill the stream with reports, then measure, on the same stream and in the
//!   same run, a bare async-nats pull consumer that only acks, and the blocker pipeline
//!   (`run_with`, memory firewall), each on its own fresh durable consumer. Rounds alternate
//!   bare/blocker; medians are reported.
//! - `rss`: push N distinct clients through the engine (validate, dedup, quota, policy, state)
//!   and report the peak RSS (VmHWM) next to the peak before the run.
//!
//! Results are printed as one JSON object on stdout.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer, message::PublishMessage};
use clap::{Parser, Subcommand};
use futures_util::StreamExt;
use palisade_blocker::Config;
use palisade_blocker::engine::{Engine, Incoming};
use palisade_blocker::metrics::Metrics;
use palisade_providers::memory::MemoryFirewall;
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Ingest rate: blocker vs a bare consumer on the same pre-filled stream.
    Ingest {
        #[arg(long)]
        nats_url: String,
        #[arg(long, default_value_t = 200_000)]
        reports: usize,
        #[arg(long, default_value_t = 3)]
        rounds: usize,
        #[arg(long, default_value_t = 512)]
        batch_size: usize,
    },
    /// Peak RSS with N distinct clients tracked by the pipeline.
    Rss {
        #[arg(long, default_value_t = 1_000_000)]
        clients: usize,
        /// `tracked`: reports below the threshold (policy counters); `blocked`: every client
        /// is blocked (persisted state).
        #[arg(long, default_value = "tracked")]
        mode: String,
    },
}

/// A report about client `i`: 1 in 10 is critical (decides a block), the rest high (counted).
/// Each client has its own /64: the blocker counts, deduplicates and blocks an IPv6 client by
/// its /64, so clients sharing one would be one client (and all but the first report of each
/// sensor deduplicated).
fn body(i: usize, critical_every: usize) -> (String, Vec<u8>) {
    let sensor = format!("sensor-{}", i % 8);
    let client = format!("2001:db8:{:x}:{:x}::1", (i >> 16) & 0xffff, i & 0xffff);
    let severity = if critical_every > 0 && i.is_multiple_of(critical_every) {
        "critical"
    } else {
        "high"
    };
    let b = serde_json::to_vec(&json!({
        "v": 1, "id": format!("bench-{i}"), "sensor": sensor,
        "observed_at": "2026-11-25T02:00:00Z", "client_ip": client, "peer_ip": "2001:db8::1",
        "rule": "sqli-union-1", "category": "sqli", "severity": severity, "mitre": ["T1190"],
        "evidence": "UNION SELECT password FROM users --",
        "context": {"node": "node-1", "pod": "shop-7d9f", "namespace": "prod", "dst_port": 443}
    }))
    .unwrap_or_default();
    (sensor, b)
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

async fn prefill(js: &jetstream::Context, n: usize) -> anyhow::Result<()> {
    let mut pending = Vec::with_capacity(4096);
    for i in 0..n {
        let (sensor, b) = body(i, 10);
        pending.push(
            js.send_publish(
                palisade_wire::subject_for(&sensor),
                PublishMessage::build()
                    .payload(b.into())
                    .message_id(format!("bench-{i}")),
            )
            .await?,
        );
        if pending.len() == 4096 {
            for p in pending.drain(..) {
                p.await?;
            }
        }
    }
    for p in pending {
        p.await?;
    }
    Ok(())
}

async fn bare(js: &jetstream::Context, name: &str, n: usize, batch: usize) -> anyhow::Result<f64> {
    let stream = js.get_stream(palisade_wire::STREAM_NAME).await?;
    let consumer: consumer::PullConsumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.to_string()),
            ack_policy: consumer::AckPolicy::Explicit,
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await?;
    let started = Instant::now();
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .messages()
        .await?;
    let mut seen = 0;
    while seen < n {
        let Some(m) = messages.next().await else {
            bail!("bare consumer stream ended at {seen}");
        };
        m.map_err(|e| anyhow::anyhow!("{e}"))?
            .ack()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        seen += 1;
    }
    js.get_stream(palisade_wire::STREAM_NAME)
        .await?
        .delete_consumer(name)
        .await?;
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

async fn blocker(url: &str, name: &str, n: usize, batch: usize) -> anyhow::Result<f64> {
    let state = tempfile::tempdir()?;
    let mut c = Config::default();
    c.nats.url = url.to_string();
    c.nats.consumer = name.to_string();
    c.state.dir = state.path().to_path_buf();
    c.admin.listen = "127.0.0.1:0".parse()?;
    c.pipeline.batch_size = batch;
    c.guardrails.allow_special = vec!["2001:db8::/32".parse()?];
    // Measure the pipeline, not the guardrail cap: 20k critical reports in the stream.
    c.guardrails.max_new_blocks_per_minute = 1_000_000;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(palisade_blocker::run_with(
        c,
        Arc::new(MemoryFirewall::new()),
        async {
            let _ = stop_rx.await;
        },
        move |addr| {
            let _ = ready_tx.send(addr);
        },
    ));
    let admin = ready_rx.await.context("blocker did not start")?;
    let started = Instant::now();
    loop {
        let received = scrape(admin, "palisade_reports_received_total").await?;
        if received as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    let batches = scrape(admin, "palisade_batches_decided_total").await?;
    let commits = scrape(admin, "palisade_state_batches_committed_total").await?;
    eprintln!(
        "blocker: mean batch {:.1} reports, {commits} store commits",
        n as f64 / batches.max(1.0)
    );
    let _ = stop_tx.send(());
    task.await??;
    let js = jetstream::new(async_nats::connect(url).await?);
    js.get_stream(palisade_wire::STREAM_NAME)
        .await?
        .delete_consumer(name)
        .await?;
    Ok(rate)
}

async fn scrape(addr: std::net::SocketAddr, name: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0))
}

async fn rss(clients: usize, mode: &str) -> anyhow::Result<serde_json::Value> {
    let state = tempfile::tempdir()?;
    let mut c = Config::default();
    c.state.dir = state.path().to_path_buf();
    c.guardrails.allow_special = vec!["2001:db8::/32".parse()?];
    c.guardrails.max_new_blocks_per_minute = u32::MAX;
    c.pipeline.sensor_rate_per_sec = u32::MAX;
    c.pipeline.sensor_burst = u32::MAX;
    let critical_every = match mode {
        "tracked" => 0,
        "blocked" => 1,
        other => bail!("unknown mode {other}"),
    };
    let engine = Engine::open(Arc::new(c), Arc::new(Metrics::default()))?;
    let baseline = vm_hwm_kib();
    let started = Instant::now();
    let mut batch = Vec::with_capacity(512);
    for i in 0..clients {
        let (sensor, b) = body(i, critical_every);
        batch.push(Incoming {
            subject: palisade_wire::subject_for(&sensor),
            payload: b.into(),
        });
        if batch.len() == 512 {
            engine.process(&batch).await;
            batch.clear();
        }
    }
    engine.process(&batch).await;
    let elapsed = started.elapsed().as_secs_f64();
    let tracked = engine.tracked_clients();
    let blocks = engine.state().await.blocks.len();
    let peak = vm_hwm_kib();
    Ok(json!({
        "mode": mode,
        "clients": clients,
        "tracked_clients": tracked,
        "blocks": blocks,
        "baseline_vmhwm_kib": baseline,
        "peak_vmhwm_kib": peak,
        "bytes_per_client": ((peak.saturating_sub(baseline)) as f64 * 1024.0 / clients as f64).round(),
        "seconds": elapsed,
        "reports_per_sec": (clients as f64 / elapsed).round(),
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` appends `--bench`; `cargo test --all-targets` runs bench targets without it
    // and without our arguments: that is a test run, not a benchmark.
    if !std::env::args().any(|a| a == "--bench") {
        println!("ingest: a benchmark; run it with bench/ingest.sh (skipped in test mode)");
        return Ok(());
    }
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    match args.cmd {
        Cmd::Ingest {
            nats_url,
            reports,
            rounds,
            batch_size,
        } => {
            let client = async_nats::connect(&nats_url).await?;
            let js = jetstream::new(client);
            let config = Config::default();
            palisade_blocker::nats::ensure_stream(&js, &config.nats).await?;
            let t = Instant::now();
            prefill(&js, reports).await?;
            let prefill_s = t.elapsed().as_secs_f64();
            let mut bare_rates = Vec::new();
            let mut blocker_rates = Vec::new();
            for r in 0..rounds {
                bare_rates.push(bare(&js, &format!("bare-{r}"), reports, batch_size).await?);
                blocker_rates
                    .push(blocker(&nats_url, &format!("blocker-{r}"), reports, batch_size).await?);
                eprintln!(
                    "round {r}: bare {:.0}/s, blocker {:.0}/s",
                    bare_rates[r], blocker_rates[r]
                );
            }
            let bare_m = median(bare_rates.clone());
            let blocker_m = median(blocker_rates.clone());
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "reports": reports,
                    "batch_size": batch_size,
                    "critical_share": 0.1,
                    "prefill_seconds": prefill_s,
                    "bare_consumer_reports_per_sec": bare_rates,
                    "blocker_reports_per_sec": blocker_rates,
                    "bare_median": bare_m.round(),
                    "blocker_median": blocker_m.round(),
                    "ratio": (blocker_m / bare_m * 1000.0).round() / 1000.0,
                    "target_ratio": 0.7,
                }))?
            );
        }
        Cmd::Rss { clients, mode } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&rss(clients, &mode).await?)?
            );
        }
    }
    Ok(())
}
