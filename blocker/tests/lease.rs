//! The `nats` state backend against a real nats-server: the lease is taken by exactly one
//! replica, a holder whose lease was taken over is fenced by the server, and the state and
//! the counted reports survive into the next holder.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use palisade_blocker::Error;
use palisade_blocker::state::jetstream::{BucketSettings, KvStore};
use palisade_blocker::state::{Batch, Offence};
use palisade_tests::nats::NatsServer;

const TTL: Duration = Duration::from_secs(5);

async fn store(js: &async_nats::jetstream::Context) -> KvStore {
    KvStore::open(
        js,
        &BucketSettings {
            bucket: "lease-test".into(),
            replicas: 1,
            max_age: Duration::ZERO,
        },
    )
    .await
    .expect("bucket")
}

fn offence_batch(cidr: &str) -> Batch {
    Batch {
        offences: vec![(
            cidr.parse().unwrap(),
            Offence {
                count: 1,
                last_at: Utc::now(),
            },
        )],
        ..Batch::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_whose_lease_was_taken_is_fenced_by_the_server() {
    let nats = NatsServer::start().await.unwrap();
    let js = nats.jetstream().await.unwrap();
    let (a, b) = (store(&js).await, store(&js).await);

    assert!(a.acquire("a", "1", TTL, None).await.unwrap());
    a.commit_all(&[offence_batch("192.0.2.1/32")])
        .await
        .unwrap();
    a.renew().await.unwrap();

    // B takes the lease over (as a standby does once it saw it expire) while A still
    // believes it holds it: A's clock says its lease is valid.
    let (lease, rev) = b.read_lease().await.unwrap().expect("a lease");
    assert_eq!(lease.holder, "a");
    assert!(b.acquire("b", "2", TTL, Some((&lease, rev))).await.unwrap());
    assert!(
        a.holds_lease(),
        "A's own clock still says it holds the lease"
    );

    // The server refuses A's next write, whatever A believes.
    let err = a
        .commit_all(&[offence_batch("192.0.2.2/32")])
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Fenced(_)), "{err}");
    assert!(a.is_fenced());
    assert!(!a.holds_lease());
    assert!(matches!(a.renew().await.unwrap_err(), Error::Fenced(_)));
    let owned = BTreeSet::from(["192.0.2.3/32".parse().unwrap()]);
    assert!(a.set_owned(&owned, &BTreeSet::new()).await.is_err());

    // B writes; the state holds A's write from before the takeover and B's, nothing after.
    b.commit_all(&[offence_batch("192.0.2.4/32")])
        .await
        .unwrap();
    let snap = b.load().await.unwrap();
    let got: BTreeSet<String> = snap.offences.keys().map(|n| n.to_string()).collect();
    assert_eq!(
        got,
        BTreeSet::from(["192.0.2.1/32".to_string(), "192.0.2.4/32".to_string()])
    );
    assert!(snap.owned.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn of_two_standbys_taking_the_same_expired_lease_one_wins() {
    let nats = NatsServer::start().await.unwrap();
    let js = nats.jetstream().await.unwrap();
    let (a, b, c) = (store(&js).await, store(&js).await, store(&js).await);
    assert!(a.acquire("a", "1", TTL, None).await.unwrap());
    // Nobody else creates a lease that exists.
    assert!(!b.acquire("b", "2", TTL, None).await.unwrap());
    let (lease, rev) = b.read_lease().await.unwrap().expect("a lease");
    let (won_b, won_c) = tokio::join!(
        b.acquire("b", "2", TTL, Some((&lease, rev))),
        c.acquire("c", "3", TTL, Some((&lease, rev))),
    );
    let (won_b, won_c) = (won_b.unwrap(), won_c.unwrap());
    assert!(won_b ^ won_c, "exactly one wins: b={won_b} c={won_c}");
    let (now, _) = a.read_lease().await.unwrap().expect("a lease");
    assert_eq!(now.epoch, 2);
    assert_eq!(now.holder, if won_b { "b" } else { "c" });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_released_lease_is_taken_at_once_and_a_non_holder_cannot_write() {
    let nats = NatsServer::start().await.unwrap();
    let js = nats.jetstream().await.unwrap();
    let (a, b) = (store(&js).await, store(&js).await);
    assert!(matches!(
        b.commit_all(&[offence_batch("192.0.2.9/32")])
            .await
            .unwrap_err(),
        Error::NotLeader
    ));
    assert!(a.acquire("a", "1", TTL, None).await.unwrap());
    a.release().await.unwrap();
    let (lease, rev) = b.read_lease().await.unwrap().expect("a lease");
    assert!(lease.holder.is_empty(), "released: {lease:?}");
    assert!(b.acquire("b", "2", TTL, Some((&lease, rev))).await.unwrap());
    b.commit_all(&[offence_batch("192.0.2.9/32")])
        .await
        .unwrap();
    assert!(matches!(
        a.commit_all(&[offence_batch("192.0.2.10/32")])
            .await
            .unwrap_err(),
        Error::NotLeader
    ));
}

/// A write by hand (admin API) is decided under the state lock and committed after it: while
/// its commit waits on a stalled store, the lock is free for ingest and the other admin calls,
/// and the call returns only once the block is durable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manual_block_waiting_on_the_store_leaves_the_state_lock_free() {
    use std::sync::Arc;

    use palisade_blocker::Config;
    use palisade_blocker::engine::Engine;
    use palisade_blocker::metrics::Metrics;
    use palisade_blocker::state::Store;

    let nats = NatsServer::start().await.unwrap();
    let js = nats.jetstream().await.unwrap();
    let kv = store(&js).await;
    // a lease far longer than the stall: the holder's own clock never gives it up here
    assert!(
        kv.acquire("a", "1", Duration::from_secs(120), None)
            .await
            .unwrap()
    );
    let snap = kv.load().await.unwrap();
    let engine = Arc::new(Engine::with_store(
        Arc::new(Config::default()),
        Arc::new(Metrics::default()),
        Store::Nats(kv),
        snap,
    ));
    let net: ipnet::IpNet = "192.0.2.7/32".parse().unwrap();

    nats.pause().unwrap();
    let block = tokio::spawn({
        let engine = Arc::clone(&engine);
        async move { engine.manual_block(net, None, None, true, "test").await }
    });
    // decided: in the state, the commit under way
    palisade_tests::wait_for(
        "the manual block in the state",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let engine = Arc::clone(&engine);
            async move {
                tokio::time::timeout(Duration::from_millis(500), engine.sizes())
                    .await
                    .is_ok_and(|s| s.blocks == 1)
            }
        },
    )
    .await;
    // the lock is taken and released again while the commit still waits on the server
    for _ in 0..3 {
        let sizes = tokio::time::timeout(Duration::from_secs(2), engine.sizes())
            .await
            .expect("the state lock is free while the commit waits");
        assert_eq!(sizes.blocks, 1);
    }
    assert!(
        !block.is_finished(),
        "the commit waits for the stopped server"
    );

    nats.resume().unwrap();
    let rec = tokio::time::timeout(Duration::from_secs(30), block)
        .await
        .expect("the commit completes once the server runs")
        .unwrap()
        .unwrap();
    assert_eq!(rec.cidr, net);
    // durable: in the bucket, as the next holder would load it
    let snap = store(&js).await.load().await.unwrap();
    assert!(snap.blocks.contains_key(&net), "{:?}", snap.blocks.keys());
}
