//! UpdateIPSet calls per 10,000 new attackers with Palisade's coalescing, next to the naive
//! one-call-per-IP client (measured for real on a sample through the same proxy, then
//! extrapolated), and the time from `apply()` to visible in GetIPSet at 1 write/s.
//!
//! Run with `bench/aws_calls.sh` (or `cargo bench -p palisade-providers --bench aws_calls`);
//! writes `bench/results/aws_calls.json`.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use aws_sdk_wafv2::error::ProvideErrorMetadata;
use aws_sdk_wafv2::types::{IpAddressVersion, Scope};
use palisade_providers::{Firewall, IpNet};
use palisade_tests::moto::ProxyConfig;
use serde_json::json;
use tokio::task::JoinSet;

use common::{Emulator, adds, v4_hosts};

const ATTACKERS: u32 = 10_000;
const BATCHES: u32 = 500;
const WINDOW: Duration = Duration::from_secs(10);
const NAIVE_SAMPLE: u32 = 30;
const POLL: Duration = Duration::from_millis(50);

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(mut ms: Vec<f64>) -> serde_json::Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "p50": percentile(&ms, 0.50),
        "p99": percentile(&ms, 0.99),
        "max": ms.last().copied().unwrap_or(f64::NAN),
        "samples": ms.len(),
    })
}

async fn coalesced() -> anyhow::Result<serde_json::Value> {
    let emu = Arc::new(Emulator::start(ProxyConfig::default()).await);
    let arn = emu
        .create_set("bench-coalesced", IpAddressVersion::Ipv4)
        .await;
    let fw = emu
        .builder(std::slice::from_ref(&arn))
        .with_write_rate(1.0)
        .build()
        .await?;
    let nets = v4_hosts(0, ATTACKERS);
    let per = (ATTACKERS / BATCHES) as usize;
    // First entry of each batch -> when apply() was called.
    let called: Arc<Mutex<HashMap<IpNet, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<IpNet, Instant>>> = Arc::default();

    // Visibility poller: GetIPSet straight from moto (not through the budget) every 50 ms.
    let poller = {
        let (emu, arn, called, seen) = (emu.clone(), arn.clone(), called.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let got = emu.addresses(&arn).await;
                let now = Instant::now();
                let watch: Vec<IpNet> = called
                    .lock()
                    .map(|c| c.keys().copied().collect())
                    .unwrap_or_default();
                if let Ok(mut s) = seen.lock() {
                    for n in watch {
                        if got.contains(&n) {
                            s.entry(n).or_insert(now);
                        }
                    }
                    if s.len() == BATCHES as usize {
                        return;
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        })
    };

    let started = Instant::now();
    let step = WINDOW / BATCHES;
    let mut tasks = JoinSet::new();
    for b in 0..BATCHES as usize {
        let batch: Vec<IpNet> = nets[b * per..(b + 1) * per].to_vec();
        let (fw, called) = (fw.clone(), called.clone());
        let at = started + step * b as u32;
        tasks.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let t0 = Instant::now();
            if let Ok(mut c) = called.lock() {
                c.insert(batch[0], t0);
            }
            fw.apply(&adds(&batch)).await.map(|_| t0.elapsed())
        });
    }
    let mut returned = Vec::new();
    while let Some(r) = tasks.join_next().await {
        returned.push(r?.context("apply")?.as_secs_f64() * 1000.0);
    }
    let elapsed = started.elapsed();
    tokio::time::timeout(Duration::from_secs(30), poller).await??;
    let visible: Vec<f64> = {
        let c = called.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        let s = seen.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
        c.iter()
            .filter_map(|(n, t0)| {
                s.get(n)
                    .map(|t| t.duration_since(*t0).as_secs_f64() * 1000.0)
            })
            .collect()
    };
    let total = fw.entries().await?.len();
    anyhow::ensure!(total == ATTACKERS as usize, "{total} entries landed");
    Ok(json!({
        "attackers": ATTACKERS,
        "apply_calls": BATCHES,
        "arrival_window_s": WINDOW.as_secs_f64(),
        "write_rate_per_s": 1.0,
        "update_ipset_calls": emu.proxy.calls("UpdateIPSet"),
        "get_ipset_calls": emu.proxy.calls("GetIPSet"),
        "throttled_by_proxy": emu.proxy.errors("ThrottlingException"),
        "elapsed_s": elapsed.as_secs_f64(),
        "apply_to_return_ms": summary(returned),
        "apply_to_visible_ms": summary(visible),
        "visibility_poll_interval_ms": POLL.as_millis() as u64,
    }))
}

/// The way peers do it: for every new IP, GetIPSet then UpdateIPSet with that one IP added,
/// as fast as the API lets them, retrying throttles and conflicts after 100 ms.
async fn naive() -> anyhow::Result<serde_json::Value> {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let arn = emu.create_set("bench-naive", IpAddressVersion::Ipv4).await;
    let mut parts = arn.rsplit('/');
    let id = parts.next().context("id")?.to_string();
    let name = parts.next().context("name")?.to_string();
    let client = aws_sdk_wafv2::Client::from_conf(
        aws_sdk_wafv2::config::Builder::from(&emu.sdk)
            .endpoint_url(emu.proxy.endpoint())
            .retry_config(aws_sdk_wafv2::config::retry::RetryConfig::disabled())
            .build(),
    );
    let started = Instant::now();
    for net in v4_hosts(0, NAIVE_SAMPLE) {
        loop {
            let got = match client
                .get_ip_set()
                .name(&name)
                .id(&id)
                .scope(Scope::Regional)
                .send()
                .await
            {
                Ok(g) => g,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let set = got.ip_set.context("IPSet")?;
            let mut list = set.addresses().to_vec();
            list.push(net.to_string());
            let res = client
                .update_ip_set()
                .name(&name)
                .id(&id)
                .scope(Scope::Regional)
                .set_addresses(Some(list))
                .lock_token(got.lock_token.context("LockToken")?)
                .send()
                .await;
            match res {
                Ok(_) => break,
                Err(e) if e.code().is_some() => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let updates = emu.proxy.calls("UpdateIPSet");
    let per_ip = updates as f64 / NAIVE_SAMPLE as f64;
    Ok(json!({
        "sample_ips": NAIVE_SAMPLE,
        "update_ipset_calls": updates,
        "successful_update_ipset_calls": updates - emu.proxy.errors("ThrottlingException"),
        "get_ipset_calls": emu.proxy.calls("GetIPSet"),
        "throttled_by_proxy": emu.proxy.errors("ThrottlingException"),
        "elapsed_s": elapsed,
        // Even perfectly paced at 1 write/s, one call per IP needs 10,000 successful calls.
        "paced_minimum_update_ipset_calls_per_10k": ATTACKERS,
        "extrapolated": true,
        "extrapolated_update_ipset_calls_per_10k": (per_ip * ATTACKERS as f64).round(),
        "extrapolated_hours_per_10k": elapsed / NAIVE_SAMPLE as f64 * ATTACKERS as f64 / 3600.0,
    }))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs bench targets without it,
    // and a benchmark does not belong in the test run (it takes about a minute at 1 write/s).
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("aws_calls: a benchmark; run it with bench/aws_calls.sh (skipped in test mode)");
        return Ok(());
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    if !filters.is_empty() && !filters.iter().any(|f| "aws_calls".contains(f.as_str())) {
        return Ok(());
    }
    let coalesced = coalesced().await?;
    let naive = naive().await?;
    let ratio = naive["extrapolated_update_ipset_calls_per_10k"]
        .as_f64()
        .unwrap_or(f64::NAN)
        / coalesced["update_ipset_calls"].as_f64().unwrap_or(f64::NAN);
    let out = json!({
        "benchmark": "aws_calls",
        "emulator": "moto 5.2.5 behind palisade-tests FaultProxy (1 write/s, 10,000 entries/set)",
        "coalesced": coalesced,
        "naive_one_call_per_ip": naive,
        "update_calls_ratio_naive_over_coalesced": ratio,
    });
    let dir = palisade_tests::workspace_root().join("bench/results");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("aws_calls.json");
    std::fs::write(&path, serde_json::to_string_pretty(&out)? + "\n")?;
    println!("{}", serde_json::to_string_pretty(&out)?);
    println!("wrote {}", path.display());
    Ok(())
}
