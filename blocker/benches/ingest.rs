//! Benchmark driver for `bench/ingest.sh` (`cargo bench -p palisade-blocker --bench ingest --
//! <ingest|rss> ...`).
//!
//! - `ingest`: pre-fill the stream with reports, then measure, on the same stream and in the
//!   same run, a bare async-nats pull consumer that only acks, and the blocker pipeline
//!   (`run_with`, memory firewall), each on its own fresh durable consumer. Rounds alternate
//!   bare/blocker; medians are reported.
//! - `ha`: the same pre-filled stream, per round: the bare consumer, one blocker on the
//!   embedded backend, one on the `nats` backend and three `nats` replicas in this process
//!   (distinct replica ids, one bucket; only the lease holder consumes). Each blocker case gets
//!   a fresh durable consumer and a fresh bucket, deleted afterwards.
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
use palisade_blocker::engine::{Engine, Incoming};
use palisade_blocker::metrics::Metrics;
use palisade_blocker::{Config, StateBackend};
use palisade_providers::Firewall;
use palisade_providers::memory::MemoryFirewall;
use serde_json::json;
use tokio::sync::watch;

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
    /// Ingest rate of the `nats` state backend, one and three replicas, next to a bare
    /// consumer and the embedded backend on the same pre-filled stream.
    Ha {
        #[arg(long)]
        nats_url: String,
        #[arg(long, default_value_t = 50_000)]
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

/// One blocker case of a round: how many replicas, on which state backend.
#[derive(Clone, Copy)]
struct Case {
    backend: StateBackend,
    replicas: usize,
}

/// What one blocker case measured.
struct Measured {
    /// Reports per second, from the first replica's admin listener being up (before any replica
    /// can consume) until `palisade_reports_received_total`, summed over the replicas, reaches
    /// the number of pre-filled reports. With the `nats` backend this includes the election.
    rate: f64,
    /// From the same start until a replica reported `palisade_leader 1` (polled every 5 ms).
    leader_after_ms: f64,
    /// Replicas that held the lease at the end, and terms started over the run (1 and 1 when
    /// no takeover happened).
    leaders_at_end: u64,
    leader_terms: u64,
}

/// Run `case.replicas` blockers in this process (`run_with`, one shared memory firewall), each
/// on the same fresh durable consumer `name` and, with the `nats` backend, the same fresh
/// bucket `bench-<name>`; time them until every pre-filled report was received.
async fn blockers(
    url: &str,
    name: &str,
    case: Case,
    n: usize,
    batch: usize,
) -> anyhow::Result<Measured> {
    let state = tempfile::tempdir()?;
    let mut c = Config::default();
    c.nats.url = url.to_string();
    c.nats.consumer = name.to_string();
    c.state.backend = case.backend;
    c.state.dir = state.path().to_path_buf();
    c.state.bucket = format!("bench-{name}");
    c.admin.listen = "127.0.0.1:0".parse()?;
    c.pipeline.batch_size = batch;
    c.guardrails.allow_special = vec!["2001:db8::/32".parse()?];
    // Measure the pipeline, not the guardrail cap: 20k critical reports in the stream.
    c.guardrails.max_new_blocks_per_minute = 1_000_000;
    let firewall: Arc<dyn Firewall> = Arc::new(MemoryFirewall::new());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut readies = Vec::new();
    for i in 0..case.replicas {
        let mut c = c.clone();
        c.state.replica_id = Some(format!("{name}-{i}"));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(palisade_blocker::run_with(
            c,
            Arc::clone(&firewall),
            async move {
                let _ = stop.wait_for(|v| *v).await;
            },
            move |addr| {
                let _ = ready_tx.send((addr, Instant::now()));
            },
        )));
        readies.push(ready_rx);
    }
    let mut admins = Vec::new();
    let mut started: Option<Instant> = None;
    for ready in readies {
        match ready.await {
            Ok((addr, at)) => {
                admins.push(addr);
                started = Some(started.map_or(at, |s| s.min(at)));
            }
            Err(_) => {
                // A replica ended before it listened: stop the others and report its error.
                let _ = stop_tx.send(true);
                for task in tasks {
                    task.await??;
                }
                bail!("a blocker replica ended before it was ready");
            }
        }
    }
    let started = started.context("no replica")?;
    let mut leader_at = None;
    let finished = loop {
        let mut received = 0.0;
        for admin in &admins {
            let text = scrape(*admin).await?;
            received += metric(&text, "palisade_reports_received_total");
            if leader_at.is_none() && metric(&text, "palisade_leader") >= 1.0 {
                leader_at = Some(Instant::now());
            }
        }
        if received as usize >= n {
            break Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let rate = n as f64 / (finished - started).as_secs_f64();
    let (mut batches, mut commits, mut leaders_at_end, mut leader_terms) = (0.0, 0.0, 0.0, 0.0);
    let (mut accepted, mut blocks) = (0.0, 0.0);
    for admin in &admins {
        let text = scrape(*admin).await?;
        batches += metric(&text, "palisade_batches_decided_total");
        commits += metric(&text, "palisade_state_batches_committed_total");
        accepted += metric(&text, "palisade_reports_accepted_total");
        blocks += metric(&text, "palisade_blocks_added_total");
        leaders_at_end += metric(&text, "palisade_leader");
        leader_terms += metric(&text, "palisade_leader_terms_total");
    }
    eprintln!(
        "{name}: {accepted} reports accepted, {blocks} blocks, mean batch {:.1} reports, \
         {commits} store commits",
        n as f64 / batches.max(1.0)
    );
    let _ = stop_tx.send(true);
    for task in tasks {
        task.await??;
    }
    let js = jetstream::new(async_nats::connect(url).await?);
    js.get_stream(palisade_wire::STREAM_NAME)
        .await?
        .delete_consumer(name)
        .await?;
    if case.backend == StateBackend::Nats {
        js.delete_stream(format!("KV_{}", c.state.bucket)).await?;
    }
    Ok(Measured {
        rate,
        leader_after_ms: leader_at.map_or(f64::NAN, |t| (t - started).as_secs_f64() * 1000.0),
        leaders_at_end: leaders_at_end as u64,
        leader_terms: leader_terms as u64,
    })
}

/// The admin listener's `/metrics` text.
async fn scrape(addr: std::net::SocketAddr) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// The value of an unlabelled metric `name` in Prometheus text; 0 when absent.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            if k == name {
                v.trim().parse().ok()
            } else {
                None
            }
        })
        .unwrap_or(0.0)
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

/// The `ha` command: four cases per round on one pre-filled stream.
async fn ha(
    url: &str,
    reports: usize,
    rounds: usize,
    batch: usize,
) -> anyhow::Result<serde_json::Value> {
    let js = jetstream::new(async_nats::connect(url).await?);
    palisade_blocker::nats::ensure_stream(&js, &Config::default().nats).await?;
    let t = Instant::now();
    prefill(&js, reports).await?;
    let prefill_s = t.elapsed().as_secs_f64();
    let cases = [
        ("embedded", StateBackend::Embedded, 1),
        ("nats1", StateBackend::Nats, 1),
        ("nats3", StateBackend::Nats, 3),
    ];
    let mut bare_rates = Vec::new();
    let mut rates = vec![Vec::new(); cases.len()];
    let mut leader_ms = vec![Vec::new(); cases.len()];
    let mut takeovers = 0;
    for r in 0..rounds {
        bare_rates.push(bare(&js, &format!("bare-{r}"), reports, batch).await?);
        let mut line = format!("round {r}: bare {:.0}/s", bare_rates[r]);
        for (i, (label, backend, replicas)) in cases.iter().enumerate() {
            let case = Case {
                backend: *backend,
                replicas: *replicas,
            };
            let m = blockers(url, &format!("{label}-{r}"), case, reports, batch).await?;
            // One term, one holder at the end: otherwise a takeover happened mid-run and the
            // round measured something else.
            if m.leader_terms > 1 || m.leaders_at_end != 1 {
                eprintln!(
                    "{label}-{r}: {} terms, {} holders at the end",
                    m.leader_terms, m.leaders_at_end
                );
                takeovers += 1;
            }
            rates[i].push(m.rate);
            leader_ms[i].push(m.leader_after_ms);
            line += &format!(", {label} {:.0}/s", m.rate);
        }
        eprintln!("{line}");
    }
    let bare_m = median(bare_rates.clone());
    let mut out = json!({
        "reports": reports,
        "batch_size": batch,
        "critical_share": 0.1,
        "prefill_seconds": prefill_s,
        "timing": "from the first replica's admin listener up (before any replica consumes; \
                   with `nats` the election is included) until palisade_reports_received_total, \
                   summed over the replicas, reaches `reports`",
        "rounds_with_a_takeover": takeovers,
        "bare_consumer_reports_per_sec": bare_rates,
        "bare_median": bare_m.round(),
    });
    for (i, (label, _, replicas)) in cases.iter().enumerate() {
        let m = median(rates[i].clone());
        out[*label] = json!({
            "replicas": replicas,
            "reports_per_sec": rates[i],
            "median": m.round(),
            "ratio_to_bare": (m / bare_m * 1000.0).round() / 1000.0,
            "leader_after_ms": leader_ms[i],
        });
    }
    Ok(out)
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
                let embedded = Case {
                    backend: StateBackend::Embedded,
                    replicas: 1,
                };
                let name = format!("blocker-{r}");
                blocker_rates.push(
                    blockers(&nats_url, &name, embedded, reports, batch_size)
                        .await?
                        .rate,
                );
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
        Cmd::Ha {
            nats_url,
            reports,
            rounds,
            batch_size,
        } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&ha(&nats_url, reports, rounds, batch_size).await?)?
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
