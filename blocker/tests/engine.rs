//! The engine and the reconciler without NATS: global cap (deferred, then promoted), expiry,
//! escalation after expiry, capacity eviction by priority (counted once per eviction),
//! retriable provider faults, ownership (foreign entries are never removed, unparsed ones still
//! take room) and dry runs (nothing owned, each change handed over once).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

use common::report;
use palisade_blocker::engine::{Disposition, Engine, Incoming};
use palisade_blocker::metrics::Metrics;
use palisade_blocker::reconcile::Reconciler;
use palisade_providers::memory::{Fault, MemoryFirewall};
use palisade_providers::{Family, Firewall, IpNet};

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
    assert_eq!(get(&m.blocks_added), 5);
    assert_eq!(get(&m.blocks_deferred_total), 3);
    assert_eq!(get(&m.blocks_deferred), 3);
    let blocks = e.blocks().await.unwrap();
    assert_eq!(blocks.len(), 5);
    assert_eq!(blocks.iter().filter(|b| b.deferred).count(), 3);

    // Deferred blocks survive a restart: closed, the engine has released the store.
    Arc::into_inner(e)
        .expect("the last reference")
        .close()
        .await;
    let e = engine(dir.path(), 2);
    assert_eq!(
        e.blocks()
            .await
            .unwrap()
            .iter()
            .filter(|b| b.deferred)
            .count(),
        3
    );
    // The cap is per minute: nothing more is promoted right now.
    assert_eq!(
        e.promote_deferred().await,
        2,
        "a fresh process has a fresh minute"
    );
    assert_eq!(
        e.blocks()
            .await
            .unwrap()
            .iter()
            .filter(|b| b.deferred)
            .count(),
        1
    );
}

#[tokio::test]
async fn expiry_then_escalation() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), 100);
    e.process(&[msg("a1", "198.51.100.9", "critical")]).await;
    let first = e.blocks().await.unwrap()[0].clone();
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
    assert!(e.blocks().await.unwrap().is_empty());
    // A repeat offender gets the escalated TTL (4x by default).
    e.process(&[msg("a2", "198.51.100.9", "critical")]).await;
    let second = e.blocks().await.unwrap()[0].clone();
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
    assert_eq!(e.blocks().await.unwrap().len(), 3);
    let mut r = reconciler(&e, &fw);

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
    assert!(e.release(net("192.0.2.2"), "test").await.unwrap());
    let report = r.run_once().await.unwrap();
    assert_eq!((report.added, report.removed, report.evicted), (1, 1, 0));
    assert_eq!(
        fw.snapshot(),
        BTreeSet::from([foreign, net("192.0.2.1"), net("192.0.2.3")])
    );
    assert_eq!(r.owned().len(), 2);

    // Ownership survives a restart: a new reconciler with the persisted set removes only ours.
    let owned = e.store().load().await.unwrap().owned;
    assert_eq!(owned, BTreeSet::from([net("192.0.2.1"), net("192.0.2.3")]));
    assert!(e.release(net("192.0.2.1"), "test").await.unwrap());
    assert!(e.release(net("192.0.2.3"), "test").await.unwrap());
    let mut r2 = Reconciler::new(
        Arc::clone(&e),
        Arc::new(fw.clone()),
        owned,
        Arc::new(AtomicBool::new(false)),
    );
    r2.run_once().await.unwrap();
    assert_eq!(fw.snapshot(), BTreeSet::from([foreign]));
}

fn get(a: &AtomicU64) -> u64 {
    a.load(Relaxed)
}

fn reconciler(e: &Arc<Engine>, fw: &MemoryFirewall) -> Reconciler {
    Reconciler::new(
        Arc::clone(e),
        Arc::new(fw.clone()),
        BTreeSet::new(),
        Arc::new(AtomicBool::new(false)),
    )
}

#[tokio::test]
async fn reconciler_counts_unparsed_foreign_entries_against_capacity() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), 100);
    // Room for 4 IPv4 entries: 3 are somebody else's, 2 of them not even CIDRs (the
    // provider keeps them verbatim, counts them in its status, cannot list them).
    let fw = MemoryFirewall::builder()
        .with_set("v4", Family::V4, 4)
        .build();
    let foreign = net("81.2.69.0/24");
    fw.insert_foreign(foreign);
    fw.insert_unparsed(Family::V4, "not-a-cidr");
    fw.insert_unparsed(Family::V4, "10.0.0.1/33");
    e.process(&[
        msg("h1", "192.0.2.1", "high"),
        msg("h2", "192.0.2.1", "high"),
        msg("h3", "192.0.2.1", "high"),
        msg("c1", "192.0.2.2", "critical"),
    ])
    .await;
    let mut r = reconciler(&e, &fw);

    // One slot left: the critical block gets it, the high one is left out, and the provider
    // is never asked for more than fits.
    let report = r.run_once().await.unwrap();
    assert_eq!((report.added, report.removed, report.evicted), (1, 0, 1));
    assert_eq!(fw.snapshot(), BTreeSet::from([foreign, net("192.0.2.2")]));
    assert_eq!(fw.status().await.unwrap()[0].entries, 4);
    let report = r.run_once().await.unwrap();
    assert_eq!((report.added, report.removed, report.evicted), (0, 0, 1));
    assert_eq!(fw.apply_calls(), 1, "in sync: nothing to write");

    // Releasing the critical frees our own slot: remove and add go through in one run.
    assert!(e.release(net("192.0.2.2"), "test").await.unwrap());
    let report = r.run_once().await.unwrap();
    assert_eq!((report.added, report.removed, report.evicted), (1, 1, 0));
    assert_eq!(fw.snapshot(), BTreeSet::from([foreign, net("192.0.2.1")]));
    assert_eq!(r.owned(), &BTreeSet::from([net("192.0.2.1")]));
    assert_eq!(get(&e.metrics().reconcile_added), 2);
    assert_eq!(get(&e.metrics().reconcile_removed), 1);
}

#[tokio::test]
async fn an_eviction_is_counted_once_while_it_lasts() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), 100);
    let fw = MemoryFirewall::builder()
        .with_set("v4", Family::V4, 1)
        .build();
    e.process(&[
        msg("c1", "192.0.2.1", "critical"),
        msg("h1", "192.0.2.2", "high"),
        msg("h2", "192.0.2.2", "high"),
        msg("h3", "192.0.2.2", "high"),
    ])
    .await;
    let mut r = reconciler(&e, &fw);
    let m = Arc::clone(e.metrics());
    for _ in 0..3 {
        assert_eq!(r.run_once().await.unwrap().evicted, 1);
        assert_eq!(get(&m.reconcile_evictions), 1, "the same eviction again");
        assert_eq!(get(&m.reconcile_evicted_now), 1);
    }
    assert_eq!(r.evicted(), &BTreeSet::from([net("192.0.2.2")]));

    // A newer critical displaces the older one: one new eviction.
    e.process(&[msg("c2", "192.0.2.3", "critical")]).await;
    for _ in 0..2 {
        assert_eq!(r.run_once().await.unwrap().evicted, 2);
        assert_eq!(get(&m.reconcile_evictions), 2);
        assert_eq!(get(&m.reconcile_evicted_now), 2);
    }
    assert_eq!(fw.snapshot(), BTreeSet::from([net("192.0.2.3")]));
    assert_eq!(
        r.evicted(),
        &BTreeSet::from([net("192.0.2.1"), net("192.0.2.2")])
    );

    // Releasing it brings the older critical back; nothing newly evicted.
    assert!(e.release(net("192.0.2.3"), "test").await.unwrap());
    assert_eq!(r.run_once().await.unwrap().evicted, 1);
    assert_eq!(fw.snapshot(), BTreeSet::from([net("192.0.2.1")]));
    assert_eq!(get(&m.reconcile_evictions), 2);
    assert_eq!(get(&m.reconcile_evicted_now), 1);

    // Evicted again after it was back in: counted again.
    e.process(&[msg("c3", "192.0.2.4", "critical")]).await;
    r.run_once().await.unwrap();
    assert_eq!(get(&m.reconcile_evictions), 3);
}

#[tokio::test]
async fn dry_run_owns_nothing_and_hands_each_change_over_once() {
    let dir = tempfile::tempdir().unwrap();
    let e = engine(dir.path(), 100);
    let fw = MemoryFirewall::builder()
        .with_set("v4", Family::V4, 10)
        .with_set("v6", Family::V6, 10)
        .with_dry_run(true)
        .build();
    e.process(&[
        msg("c1", "192.0.2.1", "critical"),
        msg("c2", "2001:db8::1", "critical"),
    ])
    .await;
    let mut r = reconciler(&e, &fw);
    let m = Arc::clone(e.metrics());
    for _ in 0..3 {
        let report = r.run_once().await.unwrap();
        assert_eq!((report.added, report.removed), (0, 0), "nothing written");
    }
    assert_eq!(fw.apply_calls(), 1, "an unchanged diff is handed over once");
    assert!(fw.snapshot().is_empty());
    assert!(r.owned().is_empty());
    assert!(e.store().load().await.unwrap().owned.is_empty());
    assert_eq!(get(&m.reconcile_added), 0);
    assert_eq!(get(&m.firewall_owned), 0);

    // A new decision changes the diff: handed over (and logged) once more.
    e.process(&[msg("c3", "192.0.2.3", "critical")]).await;
    r.run_once().await.unwrap();
    r.run_once().await.unwrap();
    assert_eq!(fw.apply_calls(), 2);
    // Back to nothing to do, then the same diff again: it is new once more.
    for n in ["192.0.2.1", "192.0.2.3", "2001:db8::/64"] {
        assert!(e.release(net(n), "test").await.unwrap());
    }
    r.run_once().await.unwrap();
    assert_eq!(fw.apply_calls(), 2);
    e.process(&[msg("c4", "192.0.2.1", "critical")]).await;
    r.run_once().await.unwrap();
    r.run_once().await.unwrap();
    assert_eq!(fw.apply_calls(), 3);
    assert!(r.owned().is_empty());
}
