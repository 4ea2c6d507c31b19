//! A foreign writer (an operator's script, another tool) keeps editing the same IP set while
//! the provider writes: its entries survive, ours converge, lock conflicts are retried.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use aws_sdk_wafv2::types::IpAddressVersion;
use palisade_providers::{Firewall, IpNet};
use palisade_tests::moto::ProxyConfig;
use tokio::task::JoinSet;

use common::{Emulator, adds, removes, v4_hosts};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_edits_survive_and_ours_converge() {
    let emu = Emulator::start(ProxyConfig::default()).await;
    let arn = emu.create_set("shared", IpAddressVersion::Ipv4).await;
    // Fast budget: this scenario is about interleaving, not rate.
    let fw = emu
        .builder(std::slice::from_ref(&arn))
        .with_write_rate(20.0)
        .with_read_rate(50.0)
        .build()
        .await
        .expect("build");
    // 30 ms per call widens the window between a read and its write: more real conflicts.
    emu.proxy.set_latency(Duration::from_millis(30));
    let emu = std::sync::Arc::new(emu);

    // The foreign writer adds an entry every 20 ms and takes back every third of its own.
    let foreign = {
        let emu = emu.clone();
        let arn = arn.clone();
        tokio::spawn(async move {
            let mut kept = BTreeSet::new();
            let mut conflicts = 0;
            for i in 0..60u32 {
                let net = format!("198.18.{}.{}/32", i / 250, i % 250);
                let remove = if i % 3 == 2 {
                    let prev = format!("198.18.{}.{}/32", (i - 1) / 250, (i - 1) % 250);
                    kept.remove(&prev);
                    vec![prev]
                } else {
                    Vec::new()
                };
                conflicts += emu
                    .foreign_edit(&arn, std::slice::from_ref(&net), &remove)
                    .await;
                kept.insert(net);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (kept, conflicts)
        })
    };

    // Meanwhile we add 40 batches and then take back the first 10 batches.
    let ours = v4_hosts(0, 800);
    let mut tasks = JoinSet::new();
    for chunk in ours.chunks(20) {
        let fw = fw.clone();
        let nets = chunk.to_vec();
        tasks.spawn(async move {
            tokio::time::sleep(Duration::from_millis(fastrand_ms(&nets))).await;
            fw.apply(&adds(&nets)).await
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("task").expect("apply");
    }
    fw.apply(&removes(&ours[..200])).await.expect("remove ours");
    let (foreign_kept, foreign_conflicts) = foreign.await.expect("foreign writer");

    let got = emu.addresses(&arn).await;
    let theirs: BTreeSet<IpNet> = foreign_kept.iter().map(|s| s.parse().unwrap()).collect();
    let want_ours: BTreeSet<IpNet> = ours[200..].iter().copied().collect();
    let want: BTreeSet<IpNet> = theirs.union(&want_ours).copied().collect();
    assert_eq!(got, want, "exactly their entries plus ours");
    eprintln!(
        "foreign writer: {} UpdateIPSet calls by the provider, {} lock conflicts seen at the \
         proxy, {foreign_conflicts} by the foreign writer",
        emu.proxy.calls("UpdateIPSet"),
        emu.proxy.errors("WAFOptimisticLockException"),
    );
}

/// A deterministic spread of start times over about 1.2 s.
fn fastrand_ms(nets: &[IpNet]) -> u64 {
    nets.first()
        .map(|n| match n {
            IpNet::V4(v4) => u64::from(u32::from(v4.addr()) >> 8) % 1200,
            IpNet::V6(_) => 0,
        })
        .unwrap_or(0)
}
