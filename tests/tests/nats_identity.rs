//! Sensor identity on NATS, against a real nats-server configured with the users that
//! `palisade-blocker credentials` mints (`palisade_blocker::identity`): one NKey user per
//! sensor that may publish only on its own report subject, and the blocker's user.
//!
//! - The server itself refuses sensor A publishing on sensor B's subject (and A's other
//!   attempts beyond its permissions: deleting the stream, reading the reports).
//! - A's reports, published by the real sensor publisher (`palisade_sensor::publish`) with the
//!   minted seed file, reach a blocker running with its own minted user and lead to a block.
//! - A report on A's subject claiming `sensor: B` is rejected (`sensor_mismatch`) and counted.
//! - A sensor that `accepted_sensors` does not list is rejected (`sensor_not_accepted`),
//!   counted, and acked: nothing is left pending or redelivered.
//! - Two blocker replicas on the `nats` state backend, sharing the one user minted for that
//!   backend, need nothing more: the holder takes the lease, loads and writes the bucket and
//!   blocks; the standby lists the blocks from the bucket and forwards a manual block to the
//!   holder; the server logs no permission violation.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::jetstream;
use palisade_blocker::identity::{self, Credentials};
use palisade_providers::memory::MemoryFirewall;
use palisade_tests::nats::NatsServer;
use palisade_wire::{Category, Report, Severity};
use tokio::sync::{mpsc, oneshot};

/// Generous hang guard; every wait below polls for a condition.
/// How often the waits below poll.
const POLL: Duration = Duration::from_millis(50);
const WAIT: Duration = Duration::from_secs(30);

fn seed_file(dir: &Path, name: &str, creds: &Credentials) -> PathBuf {
    let path = dir.join(format!("{name}.nk"));
    std::fs::write(&path, creds.seed_file()).expect("write seed file");
    path
}

fn report(id: &str, sensor: &str, client: &str) -> Report {
    let ip: IpAddr = client.parse().expect("client ip");
    Report {
        v: palisade_wire::WIRE_VERSION,
        id: id.into(),
        sensor: sensor.into(),
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

/// A client authenticated with `seed` whose server errors (permission violations) arrive on
/// the returned channel.
async fn client_as(
    server: &NatsServer,
    seed: &Path,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let opts = palisade_wire::nats::Auth {
        creds_file: Some(seed),
        ..Default::default()
    }
    .connect_options("palisade-identity-test")
    .await
    .expect("options from the seed file")
    .event_callback(move |event| {
        let tx = tx.clone();
        async move {
            if let async_nats::Event::ServerError(e) = event {
                let _ = tx.send(e.to_string());
            }
        }
    });
    let client = opts.connect(server.url()).await.expect("connect");
    (client, rx)
}

/// Wait for a server error mentioning `what`.
async fn violation(errors: &mut mpsc::UnboundedReceiver<String>, what: &str) -> String {
    let found = tokio::time::timeout(WAIT, async {
        while let Some(e) = errors.recv().await {
            if e.to_lowercase().contains("permissions violation") && e.contains(what) {
                return Some(e);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(e)) => e,
        other => panic!("no permissions violation for {what}: {other:?}"),
    }
}

async fn metrics(addr: SocketAddr) -> BTreeMap<String, f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("admin");
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .await
        .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("response");
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_sensor_speaks_only_for_itself() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = identity::mint_sensor("node-a").expect("mint A");
    let b = identity::mint_sensor("node-b").expect("mint B");
    let rogue = identity::mint_sensor("rogue-1").expect("mint rogue");
    let blocker_config = {
        let mut c = palisade_blocker::Config::default();
        c.nats.accepted_sensors =
            identity::AcceptedSensors::from_patterns(&["node-*"]).expect("patterns");
        c
    };
    let blocker = identity::mint_blocker(
        &blocker_config.nats.stream,
        &blocker_config.nats.consumer,
        &blocker_config.nats.inbox_prefix,
        None,
        None,
    )
    .expect("mint blocker");
    // The test's own unrestricted user, to look at the stream and the consumer.
    let inspector = nkeys::KeyPair::new_user();
    let users: String = [&a, &b, &rogue, &blocker]
        .iter()
        .map(|c| c.server_entry())
        .collect::<Vec<_>>()
        .join("");
    let conf = format!(
        "authorization {{\n users = [\n{users}\n {{ nkey: \"{}\" }}\n ]\n}}",
        inspector.public_key()
    );
    let server = NatsServer::start_with_config(&conf)
        .await
        .expect("nats-server with the minted users");
    let a_seed = seed_file(dir.path(), "node-a", &a);
    let rogue_seed = seed_file(dir.path(), "rogue-1", &rogue);
    let blocker_seed = seed_file(dir.path(), "blocker", &blocker);
    let inspector_seed = dir.path().join("inspector.nk");
    std::fs::write(&inspector_seed, inspector.seed().expect("seed")).expect("write");

    // Anonymous clients are refused: the users list is the only way in.
    assert!(
        async_nats::ConnectOptions::new()
            .connection_timeout(Duration::from_secs(5))
            .connect(server.url())
            .await
            .is_err(),
        "an anonymous client is refused"
    );

    // The blocker, with its own minted user (every JetStream call it makes must be allowed).
    let mut config = blocker_config;
    config.nats.url = server.url();
    config.nats.creds_file = Some(blocker_seed);
    config.state.dir = dir.path().join("state");
    config.admin.listen = "127.0.0.1:0".parse().expect("addr");
    config.reconcile.interval_ms = 100;
    config.guardrails.allow_special = vec!["203.0.113.0/24".parse().expect("net")];
    let firewall = Arc::new(MemoryFirewall::new());
    let palisade_blocker::Spawned {
        admin,
        stop: stop_tx,
        task: blocker_task,
    } = tokio::time::timeout(WAIT, palisade_blocker::spawn(config, firewall.clone()))
        .await
        .expect("blocker ready in time")
        .expect("blocker started with its minted user");

    // Sensor A through the real publisher, authenticated by its seed file.
    let sensor_metrics = Arc::new(palisade_sensor::metrics::Metrics::default());
    let sensor_config = palisade_sensor::config::NatsConfig {
        url: server.url(),
        creds_file: Some(a_seed.clone()),
        ..Default::default()
    };
    let (publisher, publisher_task) = palisade_sensor::publish::start(
        &sensor_config,
        Arc::clone(&sensor_metrics),
        Duration::from_secs(10),
    )
    .await
    .expect("sensor A's publisher starts");
    assert!(publisher.submit(report("a-1", "node-a", "203.0.113.10")));
    let blocked: ipnet::IpNet = "203.0.113.10/32".parse().expect("net");
    palisade_tests::wait_for("A's report to block 203.0.113.10", WAIT, POLL, || {
        let fw = firewall.clone();
        async move { fw.snapshot().contains(&blocked) }
    })
    .await;
    assert_eq!(sensor_metrics.reports_published.load(Relaxed), 1);
    assert_eq!(sensor_metrics.publish_failures.load(Relaxed), 0);

    // A speaking for B: the server refuses the publish itself; nothing reaches the stream.
    let (a_client, mut a_errors) = client_as(&server, &a_seed).await;
    let a_js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(2))
        .build(a_client.clone());
    let body = report("a-as-b", "node-b", "203.0.113.11")
        .to_vec()
        .expect("body");
    let ack = match a_js
        .publish(palisade_wire::subject_for("node-b"), body.into())
        .await
    {
        Ok(pending) => pending.await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(ack.is_err(), "no JetStream ack for a refused publish");
    violation(&mut a_errors, "palisade.reports.node-b").await;
    // Nor may A delete the stream or read the reports.
    assert!(
        a_js.delete_stream(palisade_wire::STREAM_NAME)
            .await
            .is_err(),
        "A cannot delete the stream"
    );
    violation(&mut a_errors, "STREAM.DELETE").await;
    let _sub = a_client
        .subscribe(palisade_wire::SUBJECT_WILDCARD)
        .await
        .expect("subscribe is sent");
    violation(&mut a_errors, "Subscription").await;

    // A's own subject, but the body claims B: rejected by the blocker, counted.
    let mismatch = report("a-claims-b", "node-b", "203.0.113.12")
        .to_vec()
        .expect("body");
    a_js.publish(palisade_wire::subject_for("node-a"), mismatch.into())
        .await
        .expect("publish")
        .await
        .expect("stored: A may publish on its own subject");

    // A sensor with valid credentials that accepted_sensors does not list.
    let (rogue_client, _rogue_errors) = client_as(&server, &rogue_seed).await;
    let rogue_js = jetstream::new(rogue_client);
    for i in 0..3 {
        let body = report(&format!("rogue-{i}"), "rogue-1", "203.0.113.13")
            .to_vec()
            .expect("body");
        rogue_js
            .publish(palisade_wire::subject_for("rogue-1"), body.into())
            .await
            .expect("publish")
            .await
            .expect("stored: rogue-1 may publish on its own subject");
    }

    palisade_tests::wait_for(
        "the mismatch and the rogue reports to be rejected",
        WAIT,
        POLL,
        || async {
            let m = metrics(admin).await;
            let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
            get("palisade_reports_rejected_total{reason=\"sensor_mismatch\"}") == 1.0
                && get("palisade_reports_rejected_total{reason=\"sensor_not_accepted\"}") == 3.0
        },
    )
    .await;
    let m = metrics(admin).await;
    assert_eq!(
        m.get("palisade_reports_received_total"),
        Some(&5.0),
        "{m:?}"
    );
    let snapshot = firewall.snapshot();
    for ip in ["203.0.113.11/32", "203.0.113.12/32", "203.0.113.13/32"] {
        let net: ipnet::IpNet = ip.parse().expect("net");
        assert!(!snapshot.contains(&net), "{ip} must not be blocked");
    }

    // Everything was acked (rejections terminated, not left for redelivery), and the stream
    // holds nothing on B's subject.
    let (inspector_client, _) = client_as(&server, &inspector_seed).await;
    let js = jetstream::new(inspector_client);
    let stream = js
        .get_stream(palisade_wire::STREAM_NAME)
        .await
        .expect("stream");
    palisade_tests::wait_for("the consumer to have nothing pending", WAIT, POLL, || {
        let stream = stream.clone();
        async move {
            match stream.consumer_info("palisade-blocker").await {
                Ok(info) => {
                    info.num_ack_pending == 0
                        && info.num_pending == 0
                        && info.delivered.stream_sequence == 5
                }
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(
        stream
            .get_last_raw_message_by_subject(&palisade_wire::subject_for("node-b"))
            .await
            .is_err(),
        "nothing was stored on node-b's subject"
    );

    drop(publisher);
    tokio::time::timeout(WAIT, publisher_task)
        .await
        .expect("publisher stops")
        .expect("publisher task");
    let _ = stop_tx.send(());
    tokio::time::timeout(WAIT, blocker_task)
        .await
        .expect("blocker stops")
        .expect("blocker task")
        .expect("blocker ran cleanly");
}

/// A blocker replica on the `nats` state backend, in this process, with its own firewall.
struct Replica {
    admin: SocketAddr,
    firewall: Arc<MemoryFirewall>,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<palisade_blocker::Result<()>>,
}

async fn start_replica(mut config: palisade_blocker::Config, id: &str) -> Replica {
    config.state.replica_id = Some(id.to_owned());
    let firewall = Arc::new(MemoryFirewall::new());
    let palisade_blocker::Spawned { admin, stop, task } =
        tokio::time::timeout(WAIT, palisade_blocker::spawn(config, firewall.clone()))
            .await
            .expect("replica ready in time")
            .expect("replica started with the minted user");
    Replica {
        admin,
        firewall,
        stop,
        task,
    }
}

/// One HTTP/1.0 request to an admin API with the read-write token.
async fn admin(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("admin");
    s.write_all(
        format!(
            "{method} {path} HTTP/1.0\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .expect("request");
    let mut out = String::new();
    s.read_to_string(&mut out).await.expect("response");
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (code, body.unwrap_or_default())
}

const ADMIN_TOKEN: &str = "identity-test-admin-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_the_nats_backend_need_only_their_minted_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = identity::mint_sensor("node-a").expect("mint A");
    let mut config = palisade_blocker::Config::default();
    config.state.backend = palisade_blocker::StateBackend::Nats;
    config.state.lease_secs = 2;
    let blocker = identity::mint_blocker(
        &config.nats.stream,
        &config.nats.consumer,
        &config.nats.inbox_prefix,
        Some(&config.state.bucket),
        None,
    )
    .expect("mint blocker");
    let users: String = [&a, &blocker]
        .iter()
        .map(|c| c.server_entry())
        .collect::<Vec<_>>()
        .join("");
    let server =
        NatsServer::start_with_config(&format!("authorization {{\n users = [\n{users}\n ]\n}}"))
            .await
            .expect("nats-server with the minted users");
    let a_seed = seed_file(dir.path(), "node-a", &a);
    let blocker_seed = seed_file(dir.path(), "blocker", &blocker);

    config.nats.url = server.url();
    config.nats.creds_file = Some(blocker_seed);
    config.admin.listen = "127.0.0.1:0".parse().expect("addr");
    config.admin.token = Some(ADMIN_TOKEN.into());
    config.reconcile.interval_ms = 100;
    config.guardrails.allow_special = vec!["203.0.113.0/24".parse().expect("net")];
    let first = start_replica(config.clone(), "replica-1").await;
    let second = start_replica(config, "replica-2").await;

    let sensor_metrics = Arc::new(palisade_sensor::metrics::Metrics::default());
    let sensor_config = palisade_sensor::config::NatsConfig {
        url: server.url(),
        creds_file: Some(a_seed),
        ..Default::default()
    };
    let (publisher, publisher_task) = palisade_sensor::publish::start(
        &sensor_config,
        Arc::clone(&sensor_metrics),
        Duration::from_secs(10),
    )
    .await
    .expect("sensor A's publisher starts");
    assert!(publisher.submit(report("ha-1", "node-a", "203.0.113.20")));
    let blocked: ipnet::IpNet = "203.0.113.20/32".parse().expect("net");
    let firewalls = [first.firewall.clone(), second.firewall.clone()];
    palisade_tests::wait_for("the holder to block 203.0.113.20", WAIT, POLL, || {
        let fws = firewalls.clone();
        async move { fws.iter().any(|fw| fw.snapshot().contains(&blocked)) }
    })
    .await;
    let (holder, standby) = if first.firewall.snapshot().contains(&blocked) {
        (&first, &second)
    } else {
        (&second, &first)
    };
    assert!(
        !standby.firewall.snapshot().contains(&blocked),
        "the standby wrote its firewall"
    );

    // The standby lists the holder's blocks from the bucket...
    let (code, body) = admin(standby.admin, "GET", "/v1/blocks", "").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("203.0.113.20/32"), "{body}");
    // ...and forwards a manual block to the holder, which applies it.
    let (code, body) = admin(
        standby.admin,
        "POST",
        "/v1/blocks",
        r#"{"cidr":"203.0.113.21/32","ttl_secs":600,"note":"through the standby"}"#,
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let manual: ipnet::IpNet = "203.0.113.21/32".parse().expect("net");
    let holder_fw = holder.firewall.clone();
    palisade_tests::wait_for(
        "the forwarded block in the holder's firewall",
        WAIT,
        POLL,
        || {
            let fw = holder_fw.clone();
            async move { fw.snapshot().contains(&manual) }
        },
    )
    .await;

    let log = server.log();
    assert!(
        !log.to_lowercase().contains("violation"),
        "the blocker's user lacks a permission:\n{}",
        log.lines()
            .filter(|l| l.to_lowercase().contains("violation"))
            .collect::<Vec<_>>()
            .join("\n")
    );

    drop(publisher);
    tokio::time::timeout(WAIT, publisher_task)
        .await
        .expect("publisher stops")
        .expect("publisher task");
    for r in [first, second] {
        let _ = r.stop.send(());
        tokio::time::timeout(WAIT, r.task)
            .await
            .expect("replica stops")
            .expect("replica task")
            .expect("replica ran cleanly");
    }
}
