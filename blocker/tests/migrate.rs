//! `palisade-blocker migrate-state` (the real binary) against a real nats-server: the embedded
//! backend's blocks, offence counts and owned IP-set entries land in the bucket as the `nats`
//! backend reads them; a bucket that already holds a state is refused; a live lease holder
//! makes it refuse instead of writing beside it.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use palisade_blocker::state::embedded::EmbeddedStore;
use palisade_blocker::state::jetstream::{BucketSettings, KvStore};
use palisade_blocker::state::{Batch, BlockRecord, Offence, Reason};
use palisade_tests::nats::NatsServer;
use palisade_wire::Severity;

const BUCKET: &str = "migrate-test";

fn record(cidr: &str, deferred: bool) -> BlockRecord {
    let now = Utc::now();
    BlockRecord {
        cidr: cidr.parse().expect("cidr"),
        first_seen: now,
        last_seen: now,
        expires_at: now + chrono::Duration::hours(1),
        hits: 2,
        offences: 1,
        severity: Severity::Critical,
        deferred,
        manual: false,
        sensors: vec!["node-a".into()],
        corroboration: 1,
        reasons: VecDeque::from([Reason {
            report_id: format!("r-{cidr}"),
            sensor: "node-a".into(),
            rule: "sqli.union-select".into(),
            category: "sqli".into(),
            severity: Severity::Critical,
            evidence: "' UNION SELECT".into(),
            observed_at: now,
            mitre: vec!["T1190".into()],
            context: Some(palisade_wire::Context {
                namespace: Some("shop".into()),
                pod: Some("web-0".into()),
                ..Default::default()
            }),
            actor: None,
        }]),
    }
}

/// The old blocker's state: three blocks (one deferred), two offence records, and the IP-set
/// entries it owns (one of them a block that expired since: owned, not blocked).
fn old_state(
    dir: &Path,
) -> (
    Vec<BlockRecord>,
    Vec<(ipnet::IpNet, Offence)>,
    BTreeSet<ipnet::IpNet>,
) {
    let blocks = vec![
        record("198.51.100.1/32", false),
        record("2001:db8:1::/64", false),
        record("198.51.100.3/32", true),
    ];
    let offences = vec![
        (
            "198.51.100.1/32".parse().expect("net"),
            Offence {
                count: 2,
                last_at: Utc::now(),
            },
        ),
        (
            "198.51.100.9/32".parse().expect("net"),
            Offence {
                count: 1,
                last_at: Utc::now(),
            },
        ),
    ];
    let owned: BTreeSet<ipnet::IpNet> = ["198.51.100.1/32", "2001:db8:1::/64", "198.51.100.8/32"]
        .iter()
        .map(|c| c.parse().expect("net"))
        .collect();
    let store = EmbeddedStore::open(dir).expect("embedded store");
    store
        .commit(&Batch {
            upserts: blocks.clone(),
            offences: offences.clone(),
            ..Batch::default()
        })
        .expect("commit");
    store.set_owned(&owned, &BTreeSet::new()).expect("owned");
    (blocks, offences, owned)
}

async fn migrate(config: &Path, from: &Path) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade-blocker"))
        .arg("--config")
        .arg(config)
        .arg("migrate-state")
        .arg("--from")
        .arg(from)
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .expect("run palisade-blocker");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_state_moves_into_the_bucket_once() {
    let nats = NatsServer::start().await.expect("nats-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("old");
    let (blocks, offences, owned) = old_state(&old);
    let config = dir.path().join("blocker.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\n[state]\nbucket = \"{BUCKET}\"\nlease_secs = 2\n",
            nats.url()
        ),
    )
    .expect("config");

    let (ok, text) = migrate(&config, &old).await;
    assert!(ok, "migrate-state failed: {text}");
    assert!(
        text.contains("migrated 3 blocks, 2 offence records and 3 owned IP-set entries"),
        "{text}"
    );

    // What a replica taking the lease loads.
    let js = nats.jetstream().await.expect("jetstream");
    let kv = KvStore::open(
        &js,
        &BucketSettings {
            bucket: BUCKET.into(),
            replicas: 1,
            max_age: Duration::ZERO,
        },
    )
    .await
    .expect("bucket");
    let snap = kv.load().await.expect("load");
    assert_eq!(snap.blocks.len(), blocks.len());
    for b in &blocks {
        assert_eq!(snap.blocks.get(&b.cidr), Some(b), "{}", b.cidr);
    }
    for (net, o) in &offences {
        assert_eq!(snap.offences.get(net), Some(o), "{net}");
    }
    assert_eq!(snap.owned, owned);

    // The lease was given back: the first replica takes it at once.
    let (lease, _) = kv
        .read_lease()
        .await
        .expect("lease")
        .expect("a lease record");
    assert!(
        lease.holder.is_empty(),
        "the lease is still held by {}",
        lease.holder
    );

    // Again: the bucket holds a state now, nothing is overwritten.
    let (ok, text) = migrate(&config, &old).await;
    assert!(
        !ok,
        "a second migration into a filled bucket succeeded: {text}"
    );
    assert!(text.contains("already holds 3 blocks"), "{text}");

    // A missing source is named.
    let (ok, text) = migrate(&config, &dir.path().join("nowhere")).await;
    assert!(!ok);
    assert!(text.contains("blocker.redb does not exist"), "{text}");

    // Read one message at a time from the bucket's leader (what a replica does when no consumer
    // can be created on it): the same state. With a deleted block and two history entries
    // written beside it.
    let gone = blocks[0].cidr;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("KV-Operation", "DEL");
    let subject = format!("$KV.{BUCKET}.block.{}", gone.to_string().replace(':', "_"));
    js.publish_with_headers(subject, headers, bytes::Bytes::new())
        .await
        .expect("publish")
        .await
        .expect("stored");
    for (i, b) in blocks.iter().take(2).enumerate() {
        let tokens = palisade_blocker::state::history::subject_tokens(&b.cidr);
        let subject = format!(
            "$KV.{BUCKET}.history.{tokens}.{}",
            1_700_000_000_000_000u64 + i as u64
        );
        js.publish(subject, bytes::Bytes::from_static(b"{}"))
            .await
            .expect("publish")
            .await
            .expect("stored");
    }
    use palisade_blocker::state::jetstream::Via;
    let by_consumer = kv.load_via(Via::Consumer).await.expect("load by consumer");
    let by_leader = kv
        .load_via(Via::Leader)
        .await
        .expect("load from the leader");
    assert_eq!(by_consumer.blocks.len(), blocks.len() - 1);
    assert!(!by_consumer.blocks.contains_key(&gone));
    assert_eq!(by_leader.blocks, by_consumer.blocks);
    assert_eq!(by_leader.offences, by_consumer.offences);
    assert_eq!(by_leader.owned, by_consumer.owned);
    assert_eq!(by_leader.pending.len(), by_consumer.pending.len());
    assert_eq!(by_consumer.history.len(), 2);
    assert_eq!(by_leader.history, by_consumer.history);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_lease_holder_makes_it_refuse() {
    let nats = NatsServer::start().await.expect("nats-server");
    let dir = tempfile::tempdir().expect("tempdir");
    let old = dir.path().join("old");
    old_state(&old);
    let config = dir.path().join("blocker.toml");
    std::fs::write(
        &config,
        format!(
            "[nats]\nurl = \"{}\"\n[state]\nbucket = \"{BUCKET}\"\nlease_secs = 2\n",
            nats.url()
        ),
    )
    .expect("config");
    let js = nats.jetstream().await.expect("jetstream");
    let kv = KvStore::open(
        &js,
        &BucketSettings {
            bucket: BUCKET.into(),
            replicas: 1,
            max_age: Duration::ZERO,
        },
    )
    .await
    .expect("bucket");
    assert!(
        kv.acquire("replica-1", "1", Duration::from_secs(2), None)
            .await
            .expect("acquire")
    );
    let keeper = tokio::spawn({
        let kv = kv.clone();
        async move { palisade_blocker::lease::keep(&kv, Duration::from_secs(2)).await }
    });
    let (ok, text) = migrate(&config, &old).await;
    assert!(!ok, "migrated beside a live holder: {text}");
    assert!(
        text.contains("replica `replica-1` holds the lease"),
        "{text}"
    );
    assert!(
        !keeper.is_finished(),
        "the holder lost its lease to the migration"
    );
    keeper.abort();
    assert!(
        kv.load().await.expect("load").blocks.is_empty(),
        "something was written"
    );
}
