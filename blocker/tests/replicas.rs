//! Two blocker instances sharing the durable consumer split the work; nothing is processed
//! twice.

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_providers::memory::MemoryFirewall;
use palisade_tests::nats::NatsServer;

const TOTAL: usize = 4000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_split_the_work() {
    let nats = NatsServer::start().await.unwrap();
    let mut stops = Vec::new();
    let mut tasks = Vec::new();
    let mut admins: Vec<SocketAddr> = Vec::new();
    let mut dirs = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(&nats.url(), dir.path());
        c.pipeline.batch_size = 32;
        let blocker = palisade_blocker::spawn(c, Arc::new(MemoryFirewall::new()))
            .await
            .unwrap();
        tasks.push(blocker.task);
        admins.push(blocker.admin);
        stops.push(blocker.stop);
        dirs.push(dir);
    }

    let js = nats.jetstream().await.unwrap();
    for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(500) {
        let msgs = chunk
            .iter()
            .map(|i| {
                let id = format!("r-{i}");
                // One client per /64: IPv6 clients are blocked as their /64.
                let client = format!("2001:db8:a:{i:x}::1");
                (
                    palisade_wire::subject_for("s1"),
                    id.clone(),
                    report(&id, "s1", &client, "rce-1", "critical"),
                )
            })
            .collect();
        publish_all(&js, msgs).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let received = || async {
        let mut sum = 0.0;
        for a in &admins {
            sum += metric(*a, "palisade_reports_received_total").await;
        }
        sum as usize
    };
    wait_until(60, "all processed", || async { received().await >= TOTAL }).await;
    // Give a wrongly redelivered message the chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(received().await, TOTAL, "a message was processed twice");

    let mut sets = Vec::new();
    for a in &admins {
        let n = metric(*a, "palisade_reports_received_total").await as usize;
        assert!(n > 0, "one replica did no work");
        let s: BTreeSet<String> = blocks(*a)
            .await
            .into_iter()
            .map(|b| b["cidr"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(s.len(), n);
        sets.push(s);
    }
    assert!(
        sets[0].is_disjoint(&sets[1]),
        "a report was decided by both replicas"
    );
    assert_eq!(sets[0].len() + sets[1].len(), TOTAL);

    for s in stops {
        s.send(()).unwrap();
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}
