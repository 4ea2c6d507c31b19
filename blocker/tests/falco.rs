//! Falco as a report source against a real nats-server: events published exactly as
//! Falcosidekick's NATS output does (core NATS, subject `falco.<priority>.<rule slug>`, the
//! JSON of its `FalcoPayload`) reach the blocker, the mapped ones become reports on the stream
//! and blocks in the firewall; malformed, unmapped and low-priority events are counted and
//! dropped; a re-sent event is one report; a private address is refused by the guardrails.

mod common;

use std::sync::Arc;
use std::time::Duration;

use palisade_blocker::config::{FalcoConfig, FalcoMapping};
use palisade_blocker::identity;
use palisade_providers::memory::MemoryFirewall;
use palisade_tests::nats::NatsServer;

const WAIT: Duration = Duration::from_secs(30);

/// Falcosidekick's subject: `falco.` + lower-case priority + `.` + the rule's slug.
fn subject(priority: &str, rule: &str) -> String {
    let mut slug = String::new();
    for c in rule.to_lowercase().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.ends_with('_') {
            slug.push('_');
        }
    }
    format!(
        "falco.{}.{}",
        priority.to_lowercase(),
        slug.trim_matches('_')
    )
}

fn event(uuid: &str, priority: &str, rule: &str, rip: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "uuid": uuid,
        "output": format!("12:00:00.000000000: {priority} {rule} (connection=10.0.0.5:8080->{rip}:40000 k8s.ns=shop)"),
        "priority": priority,
        "rule": rule,
        "time": chrono::Utc::now().to_rfc3339(),
        "output_fields": {
            "evt.time": 1_796_301_116_746_609_046_u64,
            "fd.rip": rip,
            "fd.cip": "10.0.0.5",
            "proc.cmdline": "java -jar app.jar",
            "k8s.ns.name": "shop",
            "k8s.pod.name": "web-0"
        },
        "source": "syscall",
        "tags": ["container", "mitre_initial_access", "T1190"],
        "hostname": "node-a"
    }))
    .expect("event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falcosidekick_events_become_blocks_and_the_rest_is_counted() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::config("nats://127.0.0.1:1", dir.path());
    config.falco = FalcoConfig {
        enabled: true,
        rules: vec![FalcoMapping {
            rule: Some("Java Process Class File Download".into()),
            tags: vec![],
            category: "rce".into(),
            severity: None,
            address_field: None,
        }],
        ..FalcoConfig::default()
    };
    // The blocker runs as the user `credentials blocker` mints for this configuration;
    // Falcosidekick as a user that may only publish its events.
    let blocker = identity::mint_blocker(
        &config.nats.stream,
        &config.nats.consumer,
        &config.nats.inbox_prefix,
        None,
        Some((&config.falco.subject, &config.falco.sensor_id)),
    )
    .expect("mint");
    let sidekick = nkeys::KeyPair::new_user();
    let nats = NatsServer::start_with_config(&format!(
        "authorization {{ users = [\n{}\n {{ nkey: \"{}\", permissions: {{ publish: {{ allow: [\"falco.>\"] }} }} }}\n] }}",
        blocker.server_entry(),
        sidekick.public_key()
    ))
    .await
    .expect("nats-server");
    let seed = dir.path().join("blocker.nk");
    std::fs::write(&seed, blocker.seed_file()).expect("seed");
    config.nats.url = nats.url();
    config.nats.creds_file = Some(seed);
    let firewall = Arc::new(MemoryFirewall::new());
    let palisade_blocker::Spawned { admin, stop, task } =
        tokio::time::timeout(WAIT, palisade_blocker::spawn(config, firewall.clone()))
            .await
            .expect("ready in time")
            .expect("blocker started");

    // Falcosidekick's side: a plain NATS client publishing each event once.
    let falcosidekick = async_nats::ConnectOptions::with_nkey(sidekick.seed().expect("seed"))
        .connect(nats.url())
        .await
        .expect("Falcosidekick's client");
    let rule = "Java Process Class File Download";
    let sends: Vec<(String, Vec<u8>)> = vec![
        (
            subject("Critical", rule),
            event("e-1", "Critical", rule, "203.0.113.50"),
        ),
        // The same event re-sent: one report.
        (
            subject("Critical", rule),
            event("e-1", "Critical", rule, "203.0.113.50"),
        ),
        (
            subject("Alert", rule),
            event("e-2", "Alert", rule, "203.0.113.51"),
        ),
        // A private address: the report is made, the guardrails refuse the block.
        (
            subject("Critical", rule),
            event("e-3", "Critical", rule, "10.1.2.3"),
        ),
        (
            subject("Notice", rule),
            event("e-4", "Notice", rule, "203.0.113.52"),
        ),
        (
            subject("Warning", "Terminal shell in container"),
            event(
                "e-5",
                "Warning",
                "Terminal shell in container",
                "203.0.113.53",
            ),
        ),
        (
            subject("Critical", "garbage"),
            b"{\"not\": \"falco\"}".to_vec(),
        ),
        (subject("Critical", "garbage"), b"\xff\xfe".to_vec()),
    ];
    for (subject, body) in sends {
        falcosidekick
            .publish(subject, body.into())
            .await
            .expect("publish");
    }
    falcosidekick.flush().await.expect("flush");

    let blocked = |ip: &str| -> ipnet::IpNet { format!("{ip}/32").parse().expect("net") };
    let fw = firewall.clone();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let snap = fw.snapshot();
        if snap.contains(&blocked("203.0.113.50")) && snap.contains(&blocked("203.0.113.51")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "Falco events did not become blocks: {snap:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every event handled; the counters settle.
    let deadline = tokio::time::Instant::now() + WAIT;
    let m = loop {
        let m = common::metrics(admin).await;
        let total: f64 = m
            .iter()
            .filter(|(k, _)| k.starts_with("palisade_falco_events_total"))
            .map(|(_, v)| v)
            .sum();
        if total >= 8.0 && m.get("palisade_reports_received_total") >= Some(&3.0) {
            break m;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let falco = |o: &str| {
        m.get(&format!(r#"palisade_falco_events_total{{outcome="{o}"}}"#))
            .copied()
            .unwrap_or(0.0)
    };
    assert_eq!(falco("published"), 4.0, "{m:?}");
    assert_eq!(falco("below_priority"), 1.0);
    assert_eq!(falco("unmapped"), 1.0);
    assert_eq!(falco("malformed"), 2.0);
    // The re-sent event was stored once: three reports reached the blocker.
    assert_eq!(
        m.get("palisade_reports_received_total"),
        Some(&3.0),
        "{m:?}"
    );
    let snap = firewall.snapshot();
    assert!(
        !snap.contains(&blocked("10.1.2.3")),
        "a private address was blocked"
    );
    assert!(!snap.contains(&blocked("203.0.113.52")));
    assert!(!snap.contains(&blocked("203.0.113.53")));
    let refused: f64 = m
        .iter()
        .filter(|(k, _)| k.starts_with("palisade_blocks_refused_total"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(refused, 1.0, "{m:?}");

    let log = nats.log();
    assert!(
        !log.to_lowercase().contains("violation"),
        "the minted user lacks a permission: {log}"
    );

    let _ = stop.send(());
    tokio::time::timeout(WAIT, task)
        .await
        .expect("stops")
        .expect("task")
        .expect("ran cleanly");
}
