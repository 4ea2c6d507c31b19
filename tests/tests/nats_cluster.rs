//! NATS itself clustered: both services take `[nats] url` as a comma-separated server list,
//! and a 3-node cluster with the reports stream at 3 replicas loses nothing when a node dies.
//!
//! - `a_node_dies_mid_stream_and_no_report_or_block_is_lost`: the real sensor publisher and
//!   the blocker (library, memory firewall) both get the cluster's URL list; the stream is
//!   created with `stream_replicas = 3`. Reports trickle in while the blocker decides them;
//!   a quarter of the way in, the node the blocker is connected to is killed (SIGKILL). Every
//!   report is stored, and the blocker's decided set is exactly the set of attackers, on the
//!   firewall too. The killed node is restarted and rejoins.
//! - `both_services_connect_with_a_server_list`: with a list whose first server is down, the
//!   sensor publishes and the blocker connects; a list with a bad element is refused by both
//!   configurations with an error that names the element.
//! - `replicas_starting_together_never_leave_the_pull_stalled`: rounds of a fresh cluster, a
//!   blocker and two more starters creating the stream and consumer beside it; a report
//!   published once the blocker is ready is decided in every round, although a pull request
//!   can vanish in such a start and the pull's expiry is set to ten minutes (idle heartbeats
//!   notice the loss). `PULL_HEARTBEAT_SECS=300` shows the baseline: it stalls and fails.
//!
//! These tests need Debian's `nats-server` (`scripts/setup.sh`); without it they fail.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use palisade_providers::memory::MemoryFirewall;
use palisade_tests::nats::{NatsCluster, NatsServer};
use palisade_wire::{Category, Report, Severity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Hang guard for each wait below (each polls for a condition). A failover takes seconds:
/// RAFT elections, the clients' reconnect backoff, and redelivery after `ack_wait_secs`.
/// How often the waits below poll.
const POLL: Duration = Duration::from_millis(100);
const WAIT: Duration = Duration::from_secs(90);
/// Reports, one attacker each.
const TOTAL: usize = 400;
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Attacker `i`: one per IPv6 /64, the prefix the blocker blocks an IPv6 client as.
fn attacker(i: usize) -> (IpAddr, IpNet) {
    let ip: IpAddr = format!("2001:db8:c:{i:x}::1").parse().expect("ip");
    let net: IpNet = format!("2001:db8:c:{i:x}::/64").parse().expect("net");
    (ip, net)
}

fn report(i: usize) -> Report {
    let (ip, _) = attacker(i);
    Report {
        v: palisade_wire::WIRE_VERSION,
        id: format!("cluster-{i}"),
        sensor: "node-a".into(),
        observed_at: chrono::Utc::now(),
        client_ip: ip,
        peer_ip: ip,
        rule: "sqli.union-select".into(),
        category: Category::new(Category::SQLI).expect("category"),
        severity: Severity::Critical,
        mitre: vec!["T1190".into()],
        evidence: "' UNION SELECT".into(),
        context: None,
        crs: None,
    }
}

/// GET `path` from the blocker's admin listener with the admin token: the body.
async fn admin_get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("admin");
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("response");
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The blocker's decided blocks (`/v1/blocks`).
async fn decided(addr: SocketAddr) -> BTreeSet<IpNet> {
    let body = admin_get(addr, "/v1/blocks").await;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    v["blocks"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["cidr"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

async fn metric(addr: SocketAddr, name: &str) -> f64 {
    admin_get(addr, "/metrics")
        .await
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            (k == name).then(|| v.parse().ok())?
        })
        .unwrap_or(0.0)
}

/// The blocker on `urls` with the memory firewall, documentation ranges allowed.
fn blocker_config(urls: &str, state: &std::path::Path) -> palisade_blocker::Config {
    let mut c = palisade_blocker::Config::default();
    c.nats.url = urls.to_owned();
    c.nats.stream_replicas = 3;
    // Messages in flight on the killed node come back after this (the default is 30 s).
    c.nats.ack_wait_secs = 5;
    c.nats.reconnect_max_secs = 2;
    c.state.dir = state.to_path_buf();
    c.admin.listen = "127.0.0.1:0".parse().expect("addr");
    c.admin.token = Some(ADMIN_TOKEN.into());
    c.reconcile.interval_ms = 100;
    c.guardrails.allow_special = vec!["2001:db8::/32".parse().expect("net")];
    c
}

/// The blocker library on `config` with `firewall`, once its admin listener is up.
async fn start_blocker(
    config: palisade_blocker::Config,
    firewall: Arc<MemoryFirewall>,
) -> palisade_blocker::Spawned {
    tokio::time::timeout(WAIT, palisade_blocker::spawn(config, firewall))
        .await
        .expect("blocker ready in time")
        .expect("blocker started on the cluster")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dies_mid_stream_and_no_report_or_block_is_lost() {
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3)
        .await
        .expect("a 3-node nats-server cluster (scripts/setup.sh installs nats-server)");
    eprintln!(
        "cluster ready in {:?}: {}",
        started.elapsed(),
        cluster.urls()
    );
    let dir = tempfile::tempdir().expect("tempdir");

    // The blocker creates the stream at 3 replicas.
    let firewall = Arc::new(MemoryFirewall::new());
    let palisade_blocker::Spawned {
        admin,
        stop: stop_tx,
        task: blocker,
    } = start_blocker(
        blocker_config(&cluster.urls(), &dir.path().join("state")),
        firewall.clone(),
    )
    .await;
    let js = cluster.jetstream().await.expect("jetstream");
    let mut stream = js
        .get_stream(palisade_wire::STREAM_NAME)
        .await
        .expect("the blocker created the stream");
    let info = stream.info().await.expect("stream info");
    assert_eq!(info.config.num_replicas, 3, "{:?}", info.config);
    let replicas = info.cluster.as_ref().map_or(0, |c| c.replicas.len());
    assert_eq!(
        replicas, 2,
        "a leader and two followers: {:?}",
        info.cluster
    );
    // The durable consumer takes the stream's replica count (docs/deployment.md says so).
    let consumer = stream
        .consumer_info("palisade-blocker")
        .await
        .expect("the blocker created its consumer");
    let consumer_replicas = consumer.cluster.as_ref().map_or(0, |c| c.replicas.len());
    assert_eq!(consumer_replicas, 2, "{:?}", consumer.cluster);

    // The sensor's publisher on the same list.
    let sensor_metrics = Arc::new(palisade_sensor::metrics::Metrics::default());
    let sensor_config = palisade_sensor::config::NatsConfig {
        url: cluster.urls(),
        stream_replicas: 3,
        ..Default::default()
    };
    let (publisher, publisher_task) = palisade_sensor::publish::start(
        &sensor_config,
        Arc::clone(&sensor_metrics),
        Duration::from_secs(30),
    )
    .await
    .expect("the sensor's publisher connects with the URL list");

    // Reports trickle in (one every 5 ms) while the blocker decides them; the node dies a
    // quarter of the way in, with publishes, pulls and acks in flight.
    let submitted = Arc::new(AtomicUsize::new(0));
    let feeder = {
        let publisher = publisher.clone();
        let submitted = Arc::clone(&submitted);
        tokio::spawn(async move {
            for i in 0..TOTAL {
                assert!(publisher.submit(report(i)), "report {i} buffered");
                submitted.store(i + 1, Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    palisade_tests::wait_for(
        "the blocker to decide a quarter of the reports",
        WAIT,
        POLL,
        || async { decided(admin).await.len() >= TOTAL / 4 },
    )
    .await;

    // Kill the node the blocker is connected to (if /connz can tell; else the first).
    let on = cluster
        .nodes_with_client("palisade-blocker")
        .await
        .expect("connz");
    let victim = on.first().copied().unwrap_or(0);
    let sensor_on = cluster
        .nodes_with_client("palisade-sensor")
        .await
        .expect("connz");
    let killed_at = Instant::now();
    cluster.kill(victim).await.expect("kill");
    let (sent, before) = (submitted.load(Relaxed), decided(admin).await.len());
    eprintln!(
        "killed {} (blocker on {on:?}, sensor on {sensor_on:?}) with {sent} of {TOTAL} reports \
         submitted and {before} decided",
        cluster.server_name(victim)
    );
    assert!(
        sent < TOTAL,
        "the node died before the last report was submitted"
    );
    feeder.await.expect("every report submitted");

    let expected: BTreeSet<IpNet> = (0..TOTAL).map(|i| attacker(i).1).collect();
    palisade_tests::wait_for(
        "every report to be decided after the kill",
        WAIT,
        POLL,
        || async { decided(admin).await.len() >= expected.len() },
    )
    .await;
    eprintln!(
        "all {} decided {:?} after the kill",
        expected.len(),
        killed_at.elapsed()
    );
    assert_eq!(decided(admin).await, expected, "the decided set");
    palisade_tests::wait_for("the firewall to hold every block", WAIT, POLL, || {
        let fw = firewall.clone();
        let expected = expected.clone();
        async move { fw.snapshot() == expected }
    })
    .await;

    // Nothing was lost on the way in: every report was acknowledged by JetStream once and is
    // stored in the stream (read through the surviving nodes).
    assert_eq!(sensor_metrics.reports_published.load(Relaxed), TOTAL as u64);
    assert_eq!(sensor_metrics.buffer_drops.load(Relaxed), 0);
    let messages = stream.info().await.expect("stream info").state.messages;
    assert_eq!(messages, TOTAL as u64, "reports in the stream");
    let received = metric(admin, "palisade_reports_received_total").await;
    assert!(
        received >= TOTAL as f64,
        "received {received} (redeliveries may add)"
    );

    // The killed node comes back and the cluster is whole again.
    cluster
        .restart(victim)
        .await
        .expect("restart the killed node");

    drop(publisher);
    tokio::time::timeout(WAIT, publisher_task)
        .await
        .expect("publisher stops")
        .expect("publisher task");
    let _ = stop_tx.send(());
    tokio::time::timeout(WAIT, blocker)
        .await
        .expect("blocker stops")
        .expect("blocker task")
        .expect("blocker ran cleanly");
    eprintln!("test took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_services_connect_with_a_server_list() {
    let server = NatsServer::start()
        .await
        .expect("nats-server (scripts/setup.sh installs it)");
    // Nothing listens on the first server of the list.
    let dead = palisade_tests::free_port().expect("port");
    let urls = format!("nats://127.0.0.1:{dead} , {}", server.url());

    let sensor_metrics = Arc::new(palisade_sensor::metrics::Metrics::default());
    let sensor_config = palisade_sensor::config::NatsConfig {
        url: urls.clone(),
        ..Default::default()
    };
    let (publisher, publisher_task) = palisade_sensor::publish::start(
        &sensor_config,
        Arc::clone(&sensor_metrics),
        Duration::from_secs(10),
    )
    .await
    .expect("the sensor connects with a list");
    assert!(publisher.submit(report(0)));
    palisade_tests::wait_for("the report to be stored", WAIT, POLL, || async {
        server
            .stored_messages(palisade_wire::STREAM_NAME)
            .await
            .is_ok_and(|m| m.len() == 1)
    })
    .await;
    drop(publisher);
    tokio::time::timeout(WAIT, publisher_task)
        .await
        .expect("publisher stops")
        .expect("publisher task");

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = blocker_config(&urls, dir.path());
    config.nats.stream_replicas = 1;
    config.validate().expect("a list is a valid nats.url");
    let connected = Arc::new(AtomicBool::new(false));
    let client = tokio::time::timeout(
        WAIT,
        palisade_blocker::nats::connect(&config.nats, Arc::clone(&connected)),
    )
    .await
    .expect("blocker connects in time")
    .expect("the blocker connects with a list");
    palisade_tests::wait_for(
        "the blocker's client to be connected",
        WAIT,
        POLL,
        || async { connected.load(Relaxed) },
    )
    .await;
    assert_eq!(client.server_info().port, server.port());

    // A bad element is named, in both configurations.
    let bad = format!("{},http://127.0.0.1:1", server.url());
    config.nats.url = bad.clone();
    let err = config.validate().expect_err("a bad element").to_string();
    assert!(err.contains("element 2 of 2"), "{err}");
    let toml =
        format!("sensor_id = \"s1\"\n[ebpf]\ninterfaces = [\"lo\"]\n[nats]\nurl = \"{bad}\"\n");
    let err = palisade_sensor::config::Config::from_toml(&toml)
        .expect_err("a bad element")
        .to_string();
    assert!(err.contains("element 2 of 2"), "{err}");
}

/// Replicas that start together all create the stream and the durable consumer; a pull
/// request that one of them sent while another's create was being applied can vanish without
/// a word from the server (seen on nats-server 2.9 in about three starts in ten), and the
/// pulling replica would then sit idle until the request expired. The blocker asks for idle
/// heartbeats on its pulls, so two missed ones make it pull again. Here each round starts a
/// fresh cluster, a blocker and two more starters a little apart, with the pull's expiry at
/// ten minutes: a report published once the blocker is ready must be decided long before
/// that, in every round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_together_never_leave_the_pull_stalled() {
    const ROUNDS: u64 = 6;
    let heartbeat = std::env::var("PULL_HEARTBEAT_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2);
    for round in 0..ROUNDS {
        let cluster = NatsCluster::start(3)
            .await
            .expect("a 3-node nats-server cluster (scripts/setup.sh installs nats-server)");
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = blocker_config(&cluster.urls(), &dir.path().join("state"));
        config.nats.pull_expires_secs = 600;
        config.nats.pull_heartbeat_secs = heartbeat;
        // Two more replicas' worth of startup: connect, ensure the stream and the consumer.
        let starters: Vec<_> = (0..2u64)
            .map(|k| {
                let nats = config.nats.clone();
                tokio::spawn(async move {
                    let pause = (round * 197 + k * 331) % 900;
                    tokio::time::sleep(Duration::from_millis(pause)).await;
                    let connected = Arc::new(AtomicBool::new(false));
                    let client = palisade_blocker::nats::connect(&nats, connected).await?;
                    let js = async_nats::jetstream::new(client);
                    // Retried as the blocker retries them: on a loaded machine a JetStream
                    // request can time out while the cluster is busy.
                    let deadline = Instant::now() + WAIT;
                    loop {
                        let done = match palisade_blocker::nats::ensure_stream(&js, &nats).await {
                            Ok(stream) => {
                                palisade_blocker::nats::ensure_consumer(&stream, &nats).await
                            }
                            Err(err) => Err(err),
                        };
                        match done {
                            Ok(_) => break,
                            Err(err) if Instant::now() < deadline => {
                                eprintln!("round {round}, starter {k}: {err}; retrying");
                                tokio::time::sleep(Duration::from_millis(500)).await;
                            }
                            Err(err) => return Err(err),
                        }
                    }
                    Ok::<_, palisade_blocker::Error>(())
                })
            })
            .collect();
        let palisade_blocker::Spawned {
            admin,
            stop: stop_tx,
            task: blocker,
        } = start_blocker(config, Arc::new(MemoryFirewall::new())).await;
        for s in starters {
            s.await
                .expect("starter task")
                .expect("a starter ensured the stream and the consumer");
        }
        let js = cluster.jetstream().await.expect("jetstream");
        let r = report(0);
        let published = Instant::now();
        js.publish(
            palisade_wire::subject_for(&r.sensor),
            r.to_vec().expect("report").into(),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
        palisade_tests::wait_for(
            "the report to be decided (its pull expires in ten minutes)",
            WAIT,
            POLL,
            || async { !decided(admin).await.is_empty() },
        )
        .await;
        eprintln!(
            "round {round}: decided {:.1} s after it was published",
            published.elapsed().as_secs_f64()
        );
        let _ = stop_tx.send(());
        tokio::time::timeout(WAIT, blocker)
            .await
            .expect("blocker stops")
            .expect("blocker task")
            .expect("blocker ran cleanly");
    }
}
