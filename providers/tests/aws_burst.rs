//! 25,000 attacker addresses arrive within 10 s as many concurrent `apply` calls: they land in
//! the right sets, spilled across sets, no throttling error reaches a caller, and the number of
//! UpdateIPSet calls stays within the 1 write/s budget.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_wafv2::types::IpAddressVersion;
use palisade_providers::{Firewall, IpNet};
use palisade_tests::moto::ProxyConfig;
use tokio::task::JoinSet;

use common::{Emulator, adds, v4_hosts, v6_hosts};

const V4: u32 = 21_000;
const V6: u32 = 4_000;
const BATCHES: u32 = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_of_25k_lands_spilled_within_the_write_budget() {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let mut arns = Vec::new();
    for i in 0..3 {
        arns.push(
            emu.create_set(&format!("burst-v4-{i}"), IpAddressVersion::Ipv4)
                .await,
        );
    }
    for i in 0..2 {
        arns.push(
            emu.create_set(&format!("burst-v6-{i}"), IpAddressVersion::Ipv6)
                .await,
        );
    }
    let fw = emu.builder(&arns).build().await.expect("build");

    let v4 = v4_hosts(0, V4);
    let v6 = v6_hosts(0, V6);
    let (per4, per6) = ((V4 / BATCHES) as usize, (V6 / BATCHES) as usize);
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for b in 0..BATCHES as usize {
        let mut nets: Vec<IpNet> = v4[b * per4..(b + 1) * per4].to_vec();
        nets.extend_from_slice(&v6[b * per6..(b + 1) * per6]);
        let fw = fw.clone();
        // Spread the arrivals over 10 s.
        let at = started + Duration::from_millis(20 * b as u64);
        tasks.spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            fw.apply(&adds(&nets)).await
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        if let Err(e) = joined.expect("task") {
            failures.push(e.to_string());
        }
    }
    let elapsed = started.elapsed();
    assert!(failures.is_empty(), "errors reached callers: {failures:?}");

    // Every address landed, in the right family, spilled in configuration order.
    let mut fill = Vec::new();
    let mut seen = BTreeSet::new();
    for arn in &arns {
        let got = emu.addresses(arn).await;
        fill.push(got.len());
        seen.extend(got);
    }
    let want: BTreeSet<IpNet> = v4.iter().chain(&v6).copied().collect();
    assert_eq!(seen, want);
    assert_eq!(fill, vec![10_000, 10_000, 1_000, 4_000, 0]);
    for arn in &arns[..3] {
        assert!(
            emu.addresses(arn)
                .await
                .iter()
                .all(|n| matches!(n, IpNet::V4(_)))
        );
    }

    // One UpdateIPSet per changed set per write slot: bounded by the 1/s budget over the run
    // (the budget starts with one token), never one call per address.
    let updates = emu.proxy.calls("UpdateIPSet");
    let budget = elapsed.as_secs_f64().ceil() as u64 + 1;
    let throttled = emu.proxy.errors("ThrottlingException");
    eprintln!(
        "burst: {updates} UpdateIPSet calls ({throttled} throttled by the proxy) in {:.1}s, \
         {} GetIPSet; fill {fill:?}",
        elapsed.as_secs_f64(),
        emu.proxy.calls("GetIPSet")
    );
    assert!(updates <= budget, "{updates} updates in {elapsed:?}");
    let status = fw.status().await.expect("status");
    assert_eq!(
        status.iter().map(|s| s.entries).collect::<Vec<_>>(),
        vec![10_000, 10_000, 1_000, 4_000, 0]
    );
}
