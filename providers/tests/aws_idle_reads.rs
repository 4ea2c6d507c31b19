//! An idle reconciler does not spend the read budget: `status()` and `entries()` answer from
//! the cached contents and read (GetIPSet) only when they are older than the refresh interval;
//! a change somebody else made is found at the next refresh or at our next write (a lock
//! conflict), and kept. Against moto behind the limits proxy (5 reads/s, 1 write/s, as AWS).
//!
//! Bounds are generous and machine speed only changes how many runs fit in the window, never
//! whether a bound holds: reads follow the clock (the refresh interval), not the run count.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use aws_sdk_wafv2::types::IpAddressVersion;
use palisade_providers::aws::AwsFirewall;
use palisade_providers::{Diff, Firewall, IpNet};
use palisade_tests::moto::ProxyConfig;

use common::{Emulator, adds, removes, v4_hosts};

const TICK: Duration = Duration::from_millis(200);

fn limits() -> ProxyConfig {
    ProxyConfig {
        read_rate: Some(5.0),
        ..ProxyConfig::default()
    }
}

/// One run as the blocker's reconciler makes it: status, entries, apply what `desired` lacks,
/// status again after a write. Returns the entries it saw.
async fn run_once(fw: &AwsFirewall, desired: &BTreeSet<IpNet>) -> BTreeSet<IpNet> {
    fw.status().await.expect("status");
    let actual = fw.entries().await.expect("entries");
    let add: BTreeSet<IpNet> = desired.difference(&actual).copied().collect();
    if !add.is_empty() {
        fw.apply(&Diff {
            add,
            remove: BTreeSet::new(),
        })
        .await
        .expect("apply");
        fw.status().await.expect("status after the write");
    }
    actual
}

async fn sets(emu: &Emulator, prefix: &str, n: usize) -> Vec<String> {
    let mut arns = Vec::with_capacity(n);
    for i in 0..n {
        arns.push(
            emu.create_set(&format!("{prefix}-{i}"), IpAddressVersion::Ipv4)
                .await,
        );
    }
    arns
}

/// Reconcile every 200 ms for 5 s with a 1 s refresh: one write at the start, then idle; a
/// foreign entry added to the last set after 1 s shows up by a refresh, without a write.
async fn idle_reads_follow_the_refresh_timer(n: usize) {
    let emu = Emulator::start(limits()).await;
    let arns = sets(&emu, &format!("idle{n}"), n).await;
    let refresh = Duration::from_secs(1);
    let fw = emu
        .builder(&arns)
        .with_refresh(refresh)
        .build()
        .await
        .expect("build");
    let startup = emu.proxy.calls("GetIPSet");
    assert_eq!(startup, n as u64, "one read per set at startup");

    let desired: BTreeSet<IpNet> = v4_hosts(0, 5).into_iter().collect();
    let foreign: IpNet = "203.0.113.7/32".parse().expect("cidr");
    let window = Duration::from_secs(5);
    let started = Instant::now();
    let mut runs = 0u64;
    let mut foreign_added_at = None;
    let mut foreign_seen_at = None;
    while started.elapsed() < window {
        let seen = run_once(&fw, &desired).await;
        runs += 1;
        if foreign_seen_at.is_none() && seen.contains(&foreign) {
            foreign_seen_at = Some(started.elapsed());
        }
        if foreign_added_at.is_none() && started.elapsed() >= refresh {
            emu.foreign_edit(&arns[n - 1], &[foreign.to_string()], &[])
                .await;
            foreign_added_at = Some(started.elapsed());
        }
        tokio::time::sleep(TICK).await;
    }
    let elapsed = started.elapsed();
    let reads = emu.proxy.calls("GetIPSet") - startup;
    let per_set = elapsed.as_secs_f64() / refresh.as_secs_f64();
    // At most one refresh per set per started interval, plus one for rounding at the edges.
    let bound = n as u64 * (per_set.ceil() as u64 + 1);
    eprintln!(
        "{n} set(s): {runs} runs in {elapsed:.1?}, {reads} GetIPSet after startup \
         (bound {bound}; two per set per run without the cache: {}), foreign entry added at {foreign_added_at:?}, \
         seen at {foreign_seen_at:?}",
        2 * n as u64 * runs
    );
    assert!(reads <= bound, "{reads} reads > {bound}");
    assert!(
        reads >= n as u64,
        "the cache is refreshed at least once per set"
    );
    assert_eq!(
        fw.reads(),
        startup + reads,
        "the firewall counts what it sends"
    );
    assert_eq!(emu.proxy.calls("UpdateIPSet"), 1, "one write, then idle");
    assert_eq!(emu.proxy.errors("ThrottlingException"), 0);

    // The foreign entry was found by a refresh and is kept; ours are there.
    let seen = fw.entries().await.expect("entries");
    assert!(seen.contains(&foreign), "refresh found the foreign entry");
    assert!(foreign_seen_at.is_some(), "seen during the idle runs");
    assert!(seen.is_superset(&desired));
    let mut held = BTreeSet::new();
    for arn in &arns {
        held.extend(emu.addresses(arn).await);
    }
    let want: BTreeSet<IpNet> = desired.iter().copied().chain([foreign]).collect();
    assert_eq!(held, want);
}

#[tokio::test]
async fn idle_reconciler_with_one_set_reads_on_the_refresh_timer_only() {
    idle_reads_follow_the_refresh_timer(1).await;
}

#[tokio::test]
async fn idle_reconciler_with_five_sets_reads_on_the_refresh_timer_only() {
    idle_reads_follow_the_refresh_timer(5).await;
}

/// The baseline switch: a zero refresh reads every set on every `status()` and `entries()`,
/// as the provider did before it cached (two GetIPSet per set per idle run).
#[tokio::test]
async fn zero_refresh_reads_every_time() {
    let emu = Emulator::start(limits()).await;
    let arns = sets(&emu, "always", 1).await;
    let fw = emu
        .builder(&arns)
        .with_refresh(Duration::ZERO)
        .build()
        .await
        .expect("build");
    let nothing = BTreeSet::new();
    for _ in 0..4 {
        run_once(&fw, &nothing).await;
    }
    assert_eq!(emu.proxy.calls("GetIPSet"), 1 + 4 * 2);
    assert_eq!(fw.reads(), 1 + 4 * 2);
}

/// A foreign write the cache has not seen yet: the next UpdateIPSet, planned on the cached
/// contents, fails on its stale lock token; the writer reads again and keeps the entry.
#[tokio::test]
async fn a_foreign_write_behind_the_cache_is_kept_on_conflict() {
    let emu = Emulator::start(limits()).await;
    let arns = sets(&emu, "conflict", 1).await;
    let arn = &arns[0];
    let fw = emu
        .builder(&arns)
        .with_refresh(Duration::from_secs(600))
        .build()
        .await
        .expect("build");
    let ours = v4_hosts(0, 2);
    run_once(&fw, &ours[..1].iter().copied().collect()).await;
    let reads = emu.proxy.calls("GetIPSet");
    assert_eq!(
        reads, 1,
        "only the startup read: the write kept the cache current"
    );

    let foreign: IpNet = "203.0.113.9/32".parse().expect("cidr");
    emu.foreign_edit(arn, &[foreign.to_string()], &[]).await;
    // Within the refresh interval the cache answers and does not know yet...
    let seen = fw.entries().await.expect("entries");
    assert!(!seen.contains(&foreign));
    assert_eq!(emu.proxy.calls("GetIPSet"), reads);

    // ...and our next write conflicts, reads again, and writes their entry back with ours.
    fw.apply(&adds(&ours[1..])).await.expect("apply");
    assert_eq!(emu.proxy.errors("WAFOptimisticLockException"), 1);
    assert_eq!(
        emu.proxy.calls("GetIPSet"),
        reads + 1,
        "one read on the conflict"
    );
    let want: BTreeSet<IpNet> = ours.iter().copied().chain([foreign]).collect();
    assert_eq!(emu.addresses(arn).await, want);
    assert_eq!(fw.entries().await.expect("entries"), want);
    assert_eq!(
        emu.proxy.calls("GetIPSet"),
        reads + 1,
        "then the cache again"
    );

    // Taking ours back leaves theirs.
    fw.apply(&removes(&ours)).await.expect("remove ours");
    assert_eq!(emu.addresses(arn).await, BTreeSet::from([foreign]));
    assert_eq!(
        fw.status().await.expect("status")[0].entries,
        1,
        "status from the cache after our write"
    );
    assert_eq!(emu.proxy.calls("GetIPSet"), reads + 1);
}
