//! GetIPSet calls per minute of an idle reconciler, with 1 and with 5 IP sets, before the read
//! cache (`refresh = 0`: every `status()` and `entries()` reads every set, which is what the
//! provider did before it cached) and after (the default 60 s refresh). The four cases run at
//! the same time, each against its own moto behind the limits proxy (5 reads/s, 1 write/s, as
//! AWS), each driving the provider as the blocker's reconciler does: sleep the interval (1 s,
//! the blocker's default), then `status()`, `entries()`, and nothing to apply.
//!
//! Run with `bench/aws_idle_reads.sh` (or `cargo bench -p palisade-providers --bench
//! aws_idle_reads`); `DURATION_SECS` (default 60) sets the window. Writes
//! `bench/results/aws_idle_reads.json`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_wafv2::types::IpAddressVersion;
use palisade_providers::Firewall;
use palisade_tests::moto::ProxyConfig;
use serde_json::json;

use common::Emulator;

const INTERVAL: Duration = Duration::from_secs(1);

async fn idle(
    sets: usize,
    refresh: Duration,
    window: Duration,
) -> anyhow::Result<serde_json::Value> {
    let emu = Emulator::start(ProxyConfig {
        read_rate: Some(5.0),
        ..ProxyConfig::default()
    })
    .await;
    let mut arns = Vec::with_capacity(sets);
    for i in 0..sets {
        let name = format!("idle-{sets}-{}-{i}", refresh.as_secs());
        arns.push(emu.create_set(&name, IpAddressVersion::Ipv4).await);
    }
    let fw = emu
        .builder(&arns)
        .with_refresh(refresh)
        .build()
        .await
        .context("build")?;
    let startup = emu.proxy.calls("GetIPSet");
    let started = Instant::now();
    let mut runs = 0u64;
    let mut run_ms = Vec::new();
    while started.elapsed() < window {
        tokio::time::sleep(INTERVAL).await;
        let t = Instant::now();
        fw.status().await.context("status")?;
        fw.entries().await.context("entries")?;
        run_ms.push(t.elapsed().as_secs_f64() * 1e3);
        runs += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let reads = emu.proxy.calls("GetIPSet") - startup;
    run_ms.sort_by(f64::total_cmp);
    let p50 = run_ms.get(run_ms.len() / 2).copied().unwrap_or(f64::NAN);
    Ok(json!({
        "sets": sets,
        "refresh_secs": refresh.as_secs(),
        "window_secs": (elapsed * 10.0).round() / 10.0,
        "runs": runs,
        "runs_per_minute": (runs as f64 * 60.0 / elapsed * 10.0).round() / 10.0,
        "startup_reads": startup,
        "reads": reads,
        "reads_per_minute": (reads as f64 * 60.0 / elapsed * 10.0).round() / 10.0,
        "reads_per_set_per_minute": (reads as f64 * 60.0 / elapsed / sets as f64 * 10.0).round() / 10.0,
        "read_budget_share": (reads as f64 / elapsed / 5.0 * 1000.0).round() / 1000.0,
        "run_ms_p50": (p50 * 10.0).round() / 10.0,
        "run_ms_max": run_ms.last().map(|m| (m * 10.0).round() / 10.0),
        "throttled": emu.proxy.errors("ThrottlingException"),
    }))
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; this driver takes no arguments.
    let window = Duration::from_secs(
        std::env::var("DURATION_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cases = rt.block_on(async {
        let before_1 = tokio::spawn(idle(1, Duration::ZERO, window));
        let before_5 = tokio::spawn(idle(5, Duration::ZERO, window));
        let after_1 = tokio::spawn(idle(1, Duration::from_secs(60), window));
        let after_5 = tokio::spawn(idle(5, Duration::from_secs(60), window));
        let mut out = Vec::new();
        for (label, task) in [
            ("before", before_1),
            ("before", before_5),
            ("after", after_1),
            ("after", after_5),
        ] {
            let mut v = task.await.context("case task")??;
            v["case"] = json!(label);
            out.push(v);
        }
        anyhow::Ok(out)
    })?;
    let out = json!({
        "what": "GetIPSet calls of an idle reconciler (status + entries every 1 s, nothing to apply); \
                 before = refresh 0 (read every time, the provider's behaviour before the cache), \
                 after = the default 60 s refresh; startup reads counted apart",
        "emulator": "moto 5.2.5 behind palisade-tests FaultProxy (5 reads/s, 1 write/s); provider read budget 5/s",
        "interval_ms": INTERVAL.as_millis() as u64,
        "cases": cases,
    });
    let dir = palisade_tests::workspace_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("aws_idle_reads.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
