//! Blast radius of one noisy sensor, fed to the engine directly (no NATS): the new-block cap is
//! shared fairly between sensors (a second sensor's block waits for its turn, not behind the
//! flood), the deferred queue is bounded per sensor and in all (refusals counted, decided
//! blocks never lost), memory stays bounded under a flood of fake critical reports, IPv6
//! clients are counted and blocked as their /64, and manual blocks respect the allowlist and
//! special ranges unless forced. Time-dependent tests run on Tokio's paused clock.

mod common;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use common::report;
use palisade_blocker::Config;
use palisade_blocker::engine::{Engine, Incoming};
use palisade_blocker::metrics::Metrics;
use palisade_providers::IpNet;

fn msg(id: &str, sensor: &str, client: &str, severity: &str) -> Incoming {
    Incoming {
        subject: palisade_wire::subject_for(sensor),
        payload: report(id, sensor, client, &format!("rule-{id}"), severity).into(),
    }
}

/// A global (blockable) IPv4 client for index `i`: 11.0.0.0 + i.
fn client(i: u32) -> String {
    Ipv4Addr::from(0x0B00_0000u32 + i).to_string()
}

fn config(dir: &std::path::Path, f: impl FnOnce(&mut Config)) -> Config {
    let mut c = common::config("nats://127.0.0.1:1", dir);
    // A sensor that rotates ids defeats the per-sensor quota anyway: let the flood through, so
    // the cap and the deferred queue are what is tested.
    c.pipeline.sensor_rate_per_sec = u32::MAX;
    c.pipeline.sensor_burst = u32::MAX;
    f(&mut c);
    c.validate().unwrap();
    c
}

fn engine(c: Config) -> Arc<Engine> {
    Arc::new(Engine::open(Arc::new(c), Arc::new(Metrics::default())).unwrap())
}

fn net(s: &str) -> IpNet {
    palisade_providers::parse_cidr(s).unwrap()
}

/// Flood `n` critical reports about distinct clients from `sensor`, `batch` at a time.
async fn flood(e: &Engine, sensor: &str, from: u32, n: u32, batch: u32) {
    let mut i = from;
    while i < from + n {
        let end = (i + batch).min(from + n);
        let msgs: Vec<Incoming> = (i..end)
            .map(|k| msg(&format!("{sensor}-{k}"), sensor, &client(k), "critical"))
            .collect();
        e.process(&msgs).await;
        i = end;
    }
}

async fn is_deferred(e: &Engine, n: &IpNet) -> Option<bool> {
    e.state().await.blocks.get(n).map(|b| b.deferred)
}

#[tokio::test(start_paused = true)]
async fn a_flood_from_one_sensor_does_not_delay_another_sensors_block() {
    let dir = tempfile::tempdir().unwrap();
    // One new block per second; the flooding sensor may queue 1000.
    let e = engine(config(dir.path(), |c| {
        c.guardrails.max_new_blocks_per_minute = 60;
        c.guardrails.max_deferred_per_sensor = 1000;
    }));
    // The flood takes the minute's 60 tokens and fills its share of the queue.
    flood(&e, "flood", 0, 5000, 500).await;
    let m = Arc::clone(e.metrics());
    assert_eq!(m.blocks_added.load(Relaxed), 1060);
    assert_eq!(m.blocks_deferred.load(Relaxed), 1000);
    assert_eq!(m.refusals().get("deferred_sensor_full"), Some(&3940));

    // Another sensor reports a real attacker while the flood goes on.
    let real = net("81.2.69.7");
    e.process(&[msg("real-1", "real", "81.2.69.7", "critical")])
        .await;
    assert_eq!(
        is_deferred(&e, &real).await,
        Some(true),
        "queued behind the cap"
    );
    let started = tokio::time::Instant::now();
    let mut next = 5000;
    while is_deferred(&e, &real).await != Some(false) {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "never enforced"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        // The flood keeps coming (every report refused now: its share is full) and the
        // sweeper promotes as the cap allows.
        flood(&e, "flood", next, 50, 50).await;
        next += 50;
        e.promote_deferred().await;
    }
    let waited = started.elapsed();
    // Served in turn: at most one flood block before it, one token a second (2 s, plus the
    // 100 ms steps of this loop). Oldest-first would have kept it waiting behind 1000 flood
    // blocks (1000 s at this cap).
    assert!(waited <= Duration::from_secs(3), "waited {waited:?}");
    println!("second sensor's block waited {waited:?} (paused clock, cap 60/min)");
    // The flood's share of the queue refills as its blocks are enforced: it stays at its
    // bound, never more.
    assert_eq!(e.state().await.deferred_of("flood"), 1000);
    assert_eq!(m.blocks_deferred.load(Relaxed), 1000);
}

#[tokio::test(start_paused = true)]
async fn the_deferred_queue_is_bounded_and_refuses_at_the_door() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(config(dir.path(), |c| {
        c.guardrails.max_new_blocks_per_minute = 10;
        c.guardrails.max_deferred = 25;
        c.guardrails.max_deferred_per_sensor = 20;
    }));
    flood(&e, "a", 0, 100, 100).await;
    let m = Arc::clone(e.metrics());
    // 10 enforced, 20 deferred (a's share), 70 refused.
    assert_eq!(m.blocks_added.load(Relaxed), 30);
    assert_eq!(m.refusals().get("deferred_sensor_full"), Some(&70));
    // Another sensor still finds room, up to the global bound.
    flood(&e, "b", 1000, 10, 10).await;
    assert_eq!(m.blocks_deferred.load(Relaxed), 25);
    assert_eq!(m.refusals().get("deferred_full"), Some(&5));
    // Refused means not decided: no record and no offence for those clients.
    {
        let s = e.state().await;
        assert_eq!(s.blocks.len(), 35);
        assert_eq!(s.offences.len(), 35);
        assert_eq!(s.deferred(), 25);
        assert_eq!(s.deferred_of("a"), 20);
        assert_eq!(s.deferred_of("b"), 5);
        assert!(!s.blocks.contains_key(&net(&client(99))));
    }
    // A refused client reporting again after room frees is decided then.
    tokio::time::advance(Duration::from_secs(60)).await;
    assert_eq!(e.promote_deferred().await, 10);
    // Served in turn: 5 of b's and 5 of a's.
    {
        let s = e.state().await;
        assert_eq!(s.deferred_of("b"), 0);
        assert_eq!(s.deferred_of("a"), 15);
    }
    e.process(&[msg("again", "b", &client(1009), "critical")])
        .await;
    assert_eq!(is_deferred(&e, &net(&client(1009))).await, Some(true));

    // Deferred blocks are decided: they survive a restart, queue order and bounds included.
    // Closed, the engine has released the store.
    Arc::into_inner(e)
        .expect("the last reference")
        .close()
        .await;
    let e = engine(config(dir.path(), |c| {
        c.guardrails.max_new_blocks_per_minute = 10;
        c.guardrails.max_deferred = 25;
        c.guardrails.max_deferred_per_sensor = 20;
    }));
    let s = e.state().await;
    assert_eq!(s.deferred(), 16);
    assert_eq!(s.deferred_of("a"), 15);
    assert_eq!(s.deferred_of("b"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_flood_of_fake_critical_reports_keeps_memory_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(config(dir.path(), |c| {
        c.pipeline.dedup_capacity = 100_000;
        c.state.max_offences = 50_000;
    }));
    let before = vm_hwm_kib();
    // Past the first 12,000 reports every map stays at its bound, so 250,000 show it in a
    // debug build; `cargo bench -p palisade-blocker --bench flood` runs the full million and
    // reports peak RSS.
    const N: u32 = 250_000;
    flood(&e, "flood", 0, N, 512).await;
    let m = Arc::clone(e.metrics());
    let sizes = e.sizes().await;
    let after = vm_hwm_kib();
    println!("{N} critical reports: {sizes:?}; VmHWM {before} -> {after} KiB");
    // The defaults: 10,000 enforced (the minute's cap), 2,000 deferred (one sensor's share of
    // the queue), every other would-be block refused and counted.
    assert_eq!(sizes.blocks, 12_000);
    assert_eq!(sizes.deferred, 2_000);
    assert_eq!(sizes.deferred_sensors, 1);
    assert_eq!(sizes.deferred_fifo_entries, 2_000);
    assert_eq!(sizes.offences, 12_000);
    assert_eq!(sizes.sensor_keys, 1);
    assert_eq!(sizes.tracked_clients, 0, "criticals need no counters");
    assert_eq!(
        m.refusals().get("deferred_sensor_full").copied(),
        Some(u64::from(N) - 12_000)
    );
    assert_eq!(m.reports_accepted.load(Relaxed), u64::from(N));
}

#[tokio::test(start_paused = true)]
async fn offences_are_bounded_oldest_forgotten_first() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(config(dir.path(), |c| {
        c.state.max_offences = 100;
    }));
    flood(&e, "s", 0, 100, 100).await;
    // Their blocks end: the offences stay (for escalation), then 50 newer clients push the
    // count over the bound and the oldest offences of unblocked clients are forgotten.
    let end = e
        .state()
        .await
        .blocks
        .values()
        .map(|b| b.expires_at)
        .max()
        .unwrap();
    assert_eq!(e.sweep(end).await, 100);
    tokio::time::advance(Duration::from_secs(1)).await;
    flood(&e, "s", 1000, 50, 50).await;
    let s = e.state().await;
    assert!(s.offences.len() <= 100, "{}", s.offences.len());
    for k in 1000..1050 {
        assert!(s.offences.contains_key(&net(&client(k))), "newest kept");
    }
    drop(s);
    // The store forgets them too.
    let stored = e.store().load().await.unwrap().offences.len();
    assert!(stored <= 100, "{stored} offences in the store");
}

#[tokio::test(start_paused = true)]
async fn ipv6_clients_are_counted_and_blocked_as_their_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(config(dir.path(), |c| {
        c.guardrails.allowlist = vec!["2a00:1450:4001:81d::53/128".parse().unwrap()];
    }));
    // Two high reports (threshold 2) from two addresses of one /64 block the /64.
    e.process(&[
        msg("h1", "s1", "2a00:1450:4001:81c::1", "high"),
        msg("h2", "s1", "2a00:1450:4001:81c:ffff::2", "high"),
    ])
    .await;
    let prefix = net("2a00:1450:4001:81c::/64");
    let blocks = e.blocks().await.unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].cidr, prefix);
    assert_eq!(blocks[0].hits, 2);
    // Another address of the prefix adds to the block; the offence is the prefix's.
    e.process(&[msg("h3", "s2", "2a00:1450:4001:81c::3", "critical")])
        .await;
    let blocks = e.blocks().await.unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].sensors, vec!["s1".to_string(), "s2".to_string()]);
    assert_eq!(blocks[0].distinct_sensors(), 2);
    assert_eq!(e.state().await.offences.get(&prefix).unwrap().count, 1);
    // An allowlisted address makes its whole /64 unblockable.
    e.process(&[msg("a1", "s1", "2a00:1450:4001:81d::bad", "critical")])
        .await;
    assert_eq!(e.blocks().await.unwrap().len(), 1);
    assert_eq!(e.metrics().refusals().get("allowlisted"), Some(&1));
    // IPv4 stays a host route.
    e.process(&[msg("v4", "s1", "81.2.69.160", "critical")])
        .await;
    assert!(
        e.blocks()
            .await
            .unwrap()
            .iter()
            .any(|b| b.cidr == net("81.2.69.160/32"))
    );
}

#[tokio::test(start_paused = true)]
async fn the_prefix_lengths_are_configurable() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(config(dir.path(), |c| {
        c.policy.ipv6_prefix_len = 56;
        c.policy.ipv4_prefix_len = 24;
    }));
    e.process(&[
        msg("a", "s1", "2a00:1450:4001:81c::1", "critical"),
        msg("b", "s1", "81.2.69.160", "critical"),
    ])
    .await;
    let got: Vec<IpNet> = e.blocks().await.unwrap().iter().map(|b| b.cidr).collect();
    assert!(got.contains(&net("2a00:1450:4001:800::/56")), "{got:?}");
    assert!(got.contains(&net("81.2.69.0/24")), "{got:?}");
    // Never broader than the guardrails' limits (/48, /24).
    let mut c = Config::default();
    c.policy.ipv6_prefix_len = 47;
    assert!(c.validate().is_err());
    c.policy.ipv6_prefix_len = 64;
    c.policy.ipv4_prefix_len = 23;
    assert!(c.validate().is_err());
    c.policy.ipv4_prefix_len = 32;
    c.guardrails.max_prefix_v6_len = 64;
    c.policy.ipv6_prefix_len = 56;
    assert!(
        c.validate().is_err(),
        "broader than the configured guardrail"
    );
}

#[tokio::test]
async fn manual_blocks_of_protected_addresses_need_force() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(config(dir.path(), |c| {
        c.guardrails.allowlist = vec!["81.2.69.10/32".parse().unwrap()];
    }));
    let refused = |r: palisade_blocker::Result<_>| match r {
        Err(palisade_blocker::Error::Refused { reason, .. }) => reason,
        other => panic!("expected a refusal, got {other:?}"),
    };
    let reason = refused(
        e.manual_block(net("81.2.69.10"), None, None, false, "test")
            .await,
    );
    assert!(
        reason.contains("allowlisted") && reason.contains("force"),
        "{reason}"
    );
    let reason = refused(
        e.manual_block(net("10.1.2.3"), None, None, false, "test")
            .await,
    );
    assert!(reason.contains("private"), "{reason}");
    // A /24 holding an allowlisted address is refused as well.
    refused(
        e.manual_block(net("81.2.69.0/24"), None, None, false, "test")
            .await,
    );
    // Forced: blocked, but never broader than the breadth limit.
    let rec = e
        .manual_block(
            net("10.1.2.3"),
            None,
            Some("incident 7".into()),
            true,
            "test",
        )
        .await
        .unwrap();
    assert!(rec.manual);
    e.manual_block(net("81.2.69.0/24"), None, None, true, "test")
        .await
        .unwrap();
    let reason = refused(
        e.manual_block(net("10.0.0.0/8"), None, None, true, "test")
            .await,
    );
    assert!(reason.contains("/24"), "{reason}");
    let reason = refused(
        e.manual_block(net("fd00::/16"), None, None, true, "test")
            .await,
    );
    assert!(reason.contains("/48"), "{reason}");
    assert_eq!(e.blocks().await.unwrap().len(), 2);
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
