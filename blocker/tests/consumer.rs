//! The durable consumer's lifecycle under a running blocker (real nats-server, the blocker
//! library with the memory firewall).
//!
//! - `a_deleted_consumer_is_created_again_and_reports_still_decided`: docs/blocker.md tells
//!   operators to delete the consumer to change its settings. The running blocker's next pull
//!   is answered "consumer deleted" (or "no responders"); it binds the consumer again, with
//!   the configured settings, starting after the last report it pulled (the first is not
//!   delivered again), and a report published afterwards is decided. Without that it would
//!   keep pulling from nothing until restarted.

mod common;

use std::sync::Arc;

use common::*;
use palisade_providers::memory::MemoryFirewall;
use palisade_tests::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_consumer_is_created_again_and_reports_still_decided() {
    let nats = NatsServer::start()
        .await
        .expect("nats-server (scripts/setup.sh installs it)");
    let state = tempfile::tempdir().expect("tempdir");
    let mut config = config(&nats.url(), state.path());
    config.nats.max_ack_pending = 777;
    let firewall = MemoryFirewall::new();
    let palisade_blocker::Spawned {
        admin,
        stop: stop_tx,
        task: blocker,
    } = palisade_blocker::spawn(config, Arc::new(firewall.clone()))
        .await
        .expect("blocker ready");
    let js = nats.jetstream().await.expect("jetstream");
    let body = report("before", "s1", "192.0.2.1", "rce-1", "critical");
    assert!(publish(&js, "s1", "before", body).await);
    wait_until(30, "the first report to be decided", || async {
        blocks(admin).await.len() == 1
    })
    .await;

    let stream = js
        .get_stream(palisade_wire::STREAM_NAME)
        .await
        .expect("stream");
    // nats-server 2.9 can refuse a delete while the consumer writes its state ("unlinkat ...:
    // directory not empty"); an operator would try again, and so does the test.
    let mut attempts = 0;
    loop {
        attempts += 1;
        match stream.delete_consumer("palisade-blocker").await {
            Ok(_) => break,
            Err(err) if attempts < 20 => {
                eprintln!("delete attempt {attempts}: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            Err(err) => panic!("cannot delete the consumer: {err}"),
        }
    }
    let body = report("after", "s1", "192.0.2.2", "rce-1", "critical");
    assert!(publish(&js, "s1", "after", body).await);
    wait_until(
        60,
        "the report published after the deletion to be decided",
        || async { blocks(admin).await.len() == 2 },
    )
    .await;

    let info = stream
        .consumer_info("palisade-blocker")
        .await
        .expect("the consumer exists again");
    assert_eq!(
        info.config.max_ack_pending, 777,
        "created from the configuration"
    );
    assert_eq!(
        info.config.ack_policy,
        async_nats::jetstream::consumer::AckPolicy::Explicit
    );
    // It starts after the last report pulled: the first report is not delivered again.
    assert!(
        matches!(
            info.config.deliver_policy,
            async_nats::jetstream::consumer::DeliverPolicy::ByStartSequence { start_sequence: 2 }
        ),
        "{:?}",
        info.config.deliver_policy
    );
    assert_eq!(metric(admin, "palisade_reports_received_total").await, 2.0);
    wait_until(30, "both blocks in the firewall", || async {
        firewall.snapshot().len() == 2
    })
    .await;

    let _ = stop_tx.send(());
    blocker
        .await
        .expect("blocker task")
        .expect("blocker ran cleanly");
}
