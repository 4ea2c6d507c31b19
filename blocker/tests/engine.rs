//! The engine and the reconciler without NATS: global cap (deferred, then promoted), expiry,
//! escalation after expiry, capacity eviction by priority, retriable provider faults, and
//! ownership (foreign entries are never removed).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use common::report;
use palisade_blocker::engine::{Disposition, Engine, Incoming};
use palisade_blocker::metrics::Metrics;
use palisade_blocker::reconcile::Reconciler;
use palisade_providers::memory::{Fault, MemoryFirewall};
use palisade_providers::{Family, IpNet};

fn msg(id: &str, client: &str, severity: &str) -> Incoming {
    Incoming {
        subject: palisade_wire::subject_for("s1"),
        payload: report(id, "s1", client, &format!("rule-{id}"), severity).into(),
    }
}

fn engine(dir: &std::path::Path, cap: u32) -> Arc<Engine> {
    let mut c = common::config("nats://127.0.0.1:1", dir);
    c.guardrails.max_new_blocks_per_minute = cap;
    Arc::new(Engine::open(Arc::new(c), Arc::new(Metrics::default())).unwrap())
}

fn net(s: &str) -> IpNet {
    palisade_providers::parse_cidr(s).unwrap()
}

#[tokio::test]
async fn global_cap_defers_and_never_drops() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), 2);
    let msgs: Vec<Incoming> = (1..=5)
        .map(|i| msg(&format!("c{i}"), &format!("192.0.2.{i}"), "critical"))
        .collect();
    let out = e.process(&msgs).await;
    assert!(out.iter().all(|d| *d == Disposition::Ack));
    let m = e.metrics();
    let get = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(get(&m.blocks_added), 5);
    assert_eq!(get(&m.blocks_deferred_total), 3);
    assert_eq!(get(&m.blocks_deferred), 3);
    let blocks = e.blocks().await;
    assert_eq!(blocks.len(), 5);
    assert_eq!(blocks.iter().filter(|b| b.deferred).count(), 3);

    // Deferred blocks survive a restart. The committer task releases the store once the
    // engine is gone; give it the chance to run.
    drop(e);
    let mut reopened = None;
    for _ in 0..200 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        let mut c = common::config("nats://127.0.0.1:1", dir.path());
        c.guardrails.max_new_blocks_per_minute = 2;
        if let Ok(e) = Engine::open(Arc::new(c), Arc::new(Metrics::default())) {
            reopened = Some(Arc::new(e));
            break;
        }
    }
    let e = reopened.expect("store released");
    assert_eq!(e.blocks().await.iter().filter(|b| b.deferred).count(), 3);
    // The cap is per minute: nothing more is promoted right now.
    assert_eq!(
        e.promote_deferred().await,
        2,
        "a fresh process has a fresh minute"
    );
    assert_eq!(e.blocks().await.iter().filter(|b| b.deferred).count(), 1);
}

#[tokio::test]
async fn expiry_then_escalation() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), 100);
    e.process(&[msg("a1", "198.51.100.9", "critical")]).await;
    let first = e.blocks().await[0].clone();
    assert_eq!(first.offences, 1);
    let ttl1 = first.expires_at - first.first_seen;
    assert_eq!(ttl1.num_seconds(), 3600);
    // Nothing expires early; at the end of the TTL the sweeper removes it.
    assert_eq!(
        e.sweep(first.expires_at - chrono::Duration::seconds(1))
            .await,
        0
    );
    assert_eq!(e.sweep(first.expires_at).await, 1);
    assert!(e.blocks().await.is_empty());
    // A repeat offender gets the escalated TTL (4x by default).
    e.process(&[msg("a2", "198.51.100.9", "critical")]).await;
    let second = e.blocks().await[0].clone();
    assert_eq!(second.offences, 2);
    assert_eq!(
        (second.expires_at - second.first_seen).num_seconds(),
        4 * 3600
    );
}

#[tokio::test]
async fn reconciler_respects_capacity_ownership_and_faults() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), 100);
    // Room for 3 IPv4 entries, one taken by somebody else.
    let fw = MemoryFirewall::builder()
        .with_set("v4", Family::V4, 3)
        .with_set("v6", Family::V6, 10)
        .build();
    let foreign = net("81.2.69.0/24");
    fw.insert_foreign(foreign);
    e.process(&[
        msg("l1", "192.0.2.1", "high"),
        msg("l2", "192.0.2.1", "high"),
        msg("l3", "192.0.2.1", "high"),
        msg("h1", "192.0.2.2", "critical"),
        msg("h2", "192.0.2.3", "critical"),
    ])
    .await;
    assert_eq!(e.blocks().await.len(), 3);
    let ok = Arc::new(AtomicBool::new(false));
    let mut r = Reconciler::new(Arc::clone(&e), Arc::new(fw.clone()), BTreeSet::new(), ok);

    // A throttled write fails the run and changes nothing; the next run applies it all.
    fw.inject([Fault::Throttled]);
    let err = r.run_once().await.unwrap_err();
    assert!(err.to_string().contains("throttled"), "{err}");
    assert_eq!(fw.snapshot(), BTreeSet::from([foreign]));
    let report = r.run_once().await.unwrap();
    // Two criticals fit next to the foreign entry; the high one is evicted.
    assert_eq!(report.added, 2);
    assert_eq!(report.evicted, 1);
    assert_eq!(
        fw.snapshot(),
        BTreeSet::from([foreign, net("192.0.2.2"), net("192.0.2.3")])
    );

    // Releasing a critical makes room for the evicted one; the foreign entry stays.
    assert!(e.release(net("192.0.2.2")).await.unwrap());
    let report = r.run_once().await.unwrap();
    assert_eq!((report.added, report.removed, report.evicted), (1, 1, 0));
    assert_eq!(
        fw.snapshot(),
        BTreeSet::from([foreign, net("192.0.2.1"), net("192.0.2.3")])
    );
    assert_eq!(r.owned().len(), 2);

    // Ownership survives a restart: a new reconciler with the persisted set removes only ours.
    let owned = e.store().load().unwrap().owned;
    assert_eq!(owned, BTreeSet::from([net("192.0.2.1"), net("192.0.2.3")]));
    assert!(e.release(net("192.0.2.1")).await.unwrap());
    assert!(e.release(net("192.0.2.3")).await.unwrap());
    let mut r2 = Reconciler::new(
        Arc::clone(&e),
        Arc::new(fw.clone()),
        owned,
        Arc::new(AtomicBool::new(false)),
    );
    r2.run_once().await.unwrap();
    assert_eq!(fw.snapshot(), BTreeSet::from([foreign]));
}
