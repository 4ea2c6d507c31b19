//! Crash safety: kill -9 the real binary in the middle of a stream of reports, restart it.
//! Every block decided before the kill is still there, nothing is decided twice, and the
//! durable consumer resumes where it stopped.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use palisade_tests::nats::NatsServer;

const TOTAL: usize = 5000;

fn write_config(dir: &Path, nats_url: &str, admin: SocketAddr) -> std::path::PathBuf {
    let path = dir.join("blocker.toml");
    let text = format!(
        r#"
[nats]
url = "{nats_url}"
# Redeliver what the killed process had in flight quickly.
ack_wait_secs = 3
[pipeline]
batch_size = 64
[guardrails]
allow_special = ["2001:db8::/32"]
[state]
dir = "{state}"
[reconcile]
interval_ms = 100
[admin]
listen = "{admin}"
token = "{token}"
"#,
        state = dir.join("state").display(),
        token = TOKEN,
    );
    std::fs::write(&path, text).unwrap();
    path
}

async fn block_map(admin: SocketAddr) -> BTreeMap<String, serde_json::Value> {
    blocks(admin)
        .await
        .into_iter()
        .map(|b| (b["cidr"].as_str().unwrap().to_string(), b))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_and_decides_nothing_twice() {
    let nats = NatsServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let admin: SocketAddr = format!("127.0.0.1:{}", palisade_tests::free_port().unwrap())
        .parse()
        .unwrap();
    let config = write_config(dir.path(), &nats.url(), admin);
    let mut first = spawn_blocker(&config, admin).await;

    // Publish a steady stream of critical reports, each about a distinct client.
    let js = nats.jetstream().await.unwrap();
    let publisher = tokio::spawn(async move {
        for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(250) {
            let msgs = chunk
                .iter()
                .map(|i| {
                    let id = format!("c-{i}");
                    // One client per /64: IPv6 clients are blocked as their /64.
                    let client = format!("2001:db8:c:{i:x}::1");
                    (
                        palisade_wire::subject_for("s1"),
                        id.clone(),
                        report(&id, "s1", &client, "rce-1", "critical"),
                    )
                })
                .collect();
            publish_all(&js, msgs).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    // Kill -9 in the middle of the stream.
    wait_until(60, "some blocks decided", || async {
        metric(admin, "palisade_blocks_added_total").await >= 1000.0
    })
    .await;
    // `/v1/blocks` answers once every block it lists is durable, so "before" is exactly what a
    // crash must not lose.
    let before = block_map(admin).await;
    first.kill().await.unwrap();
    assert!(before.len() < TOTAL, "the kill must come mid-stream");
    publisher.await.unwrap();

    let mut second = spawn_blocker(&config, admin).await;
    // Restored at start: every block seen before the kill.
    let restored = block_map(admin).await;
    for cidr in before.keys() {
        assert!(restored.contains_key(cidr), "{cidr} lost in the crash");
    }
    wait_until(60, "every client blocked", || async {
        metric(admin, "palisade_blocks_active").await as usize == TOTAL
    })
    .await;
    let after = block_map(admin).await;
    assert_eq!(after.len(), TOTAL);
    let want: BTreeSet<String> = (0..TOTAL)
        .map(|i| {
            palisade_providers::parse_cidr(&format!("2001:db8:c:{i:x}::/64"))
                .unwrap()
                .to_string()
        })
        .collect();
    let got: BTreeSet<String> = after.keys().cloned().collect();
    let missing: Vec<_> = want.difference(&got).take(5).collect();
    assert!(missing.is_empty(), "missing blocks, e.g. {missing:?}");
    for (cidr, b) in &after {
        // Decided once: one offence, one hit, one reason, even for redelivered reports.
        assert_eq!(b["offences"], 1, "{cidr} decided twice: {b}");
        assert_eq!(b["hits"], 1, "{cidr} counted twice: {b}");
        assert_eq!(b["reasons"].as_array().unwrap().len(), 1, "{cidr}: {b}");
        if let Some(old) = before.get(cidr) {
            assert_eq!(old["first_seen"], b["first_seen"], "{cidr} re-decided");
        }
    }
    // The consumer resumed: the second process did not start over from the first report.
    // Every report it received either decided a new block, or was a redelivery: of a report
    // recorded before the kill (persisted, not yet acked), or of one this process had not yet
    // acked when the stream's ack wait ran out (a slow start), which the dedup window drops.
    // None decided twice (checked above). A redelivery can still be in flight after the last
    // block appears, so the counters are compared once they settle, from one scrape.
    let counts = |m: &BTreeMap<String, f64>| {
        let get = |name: &str| m.get(name).copied().unwrap_or(0.0) as usize;
        (
            get("palisade_reports_received_total"),
            get("palisade_blocks_added_total"),
            get("palisade_reports_already_counted_total"),
            get("palisade_reports_deduplicated_total"),
        )
    };
    let settled = tokio::time::Instant::now() + Duration::from_secs(30);
    let (received, added) = loop {
        let (received, added, seen, deduplicated) = counts(&metrics(admin).await);
        if received == added + seen + deduplicated {
            break (received, added);
        }
        assert!(
            tokio::time::Instant::now() < settled,
            "received {received}, added {added}, already counted {seen}, deduplicated {deduplicated}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(received < TOTAL, "second process received {received}");
    assert!(added <= TOTAL - before.len());

    // SIGTERM: the process finishes its work and exits 0.
    palisade_tests::signal(second.id().expect("running"), "-TERM").unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), second.wait())
        .await
        .expect("exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
