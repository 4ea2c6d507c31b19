//! Integration: a real nats-server, the blocker library in-process with the memory firewall.
//! Thousands of reports: malformed ones, duplicates, a flood from one sensor, private and
//! allowlisted clients. Asserts the decisions, the counters, `/v1/blocks` and the firewall.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use palisade_providers::memory::MemoryFirewall;
use palisade_providers::{IpNet, parse_cidr};
use palisade_tests::nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_reports_end_to_end() {
    let nats = NatsServer::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut config = config(&nats.url(), state.path());
    config.guardrails.allowlist = vec!["203.0.113.10/32".parse().unwrap()];
    // Flood sensor: a burst of 1000, then 1 per second.
    config.pipeline.sensor_rate_per_sec = 1;
    config.pipeline.sensor_burst = 1000;

    let firewall = MemoryFirewall::new();
    let foreign: IpNet = "81.2.69.0/24".parse().unwrap();
    firewall.insert_foreign(foreign);

    let palisade_blocker::Spawned {
        admin,
        stop: stop_tx,
        task: blocker,
    } = palisade_blocker::spawn(config, Arc::new(firewall.clone()))
        .await
        .expect("blocker ready");
    assert_eq!(http(admin, "GET", "/healthz", None, None).await.0, 200);

    let js = nats.jetstream().await.unwrap();
    let subj = palisade_wire::subject_for;
    let mut msgs: Vec<(String, String, Vec<u8>)> = Vec::new();
    let mut expected: BTreeSet<IpNet> = BTreeSet::new();

    // 200 IPv4 and 50 IPv6 attackers, one critical report each: blocked on their own.
    for i in 1..=200u32 {
        let client = format!("192.0.2.{}", i % 256);
        let client = if i < 255 {
            client
        } else {
            format!("198.51.100.{}", i - 254)
        };
        let id = format!("crit-{i}");
        msgs.push((
            subj("s1"),
            id.clone(),
            report(&id, "s1", &client, "rce-1", "critical"),
        ));
        expected.insert(parse_cidr(&client).unwrap());
        // Bad input between good reports must not stop anything.
        if i % 4 == 0 {
            let bad: Vec<u8> = match i % 16 {
                0 => b"not json at all".to_vec(),
                4 => br#"{"v":2,"id":"x"}"#.to_vec(),
                8 => vec![0xff, 0xfe, 0x00],
                _ => report(&format!("bad-{i}"), "s1", "not-an-ip", "r", "high"),
            };
            msgs.push((subj("s1"), format!("bad-{i}"), bad));
        }
    }
    // IPv6 clients are blocked as their /64 (policy.ipv6_prefix_len).
    for i in 1..=50u32 {
        let client = format!("2001:db8:0:{i:x}::{i:x}");
        let id = format!("crit6-{i}");
        msgs.push((
            subj("s2"),
            id.clone(),
            report(&id, "s2", &client, "rce-1", "critical"),
        ));
        expected.insert(parse_cidr(&format!("2001:db8:0:{i:x}::/64")).unwrap());
    }
    // Too large, missing field, sensor not matching its subject.
    msgs.push((subj("s1"), "big".into(), vec![b' '; 9000]));
    msgs.push((
        subj("s1"),
        "missing".into(),
        br#"{"v":1,"id":"m"}"#.to_vec(),
    ));
    msgs.push((
        subj("s2"),
        "mismatch".into(),
        report("mismatch", "s1", "192.0.2.250", "r", "critical"),
    ));
    // Two high reports (distinct rules) block; one does not (default threshold: high = 2).
    for (n, client) in [(2, "198.51.100.7"), (1, "198.51.100.8")] {
        for k in 0..n {
            let id = format!("high-{client}-{k}");
            msgs.push((
                subj("s1"),
                id.clone(),
                report(&id, "s1", client, &format!("sqli-{k}"), "high"),
            ));
        }
    }
    expected.insert(parse_cidr("198.51.100.7").unwrap());
    // Private, loopback and allowlisted clients never get blocked.
    for (i, client) in ["10.1.2.3", "127.0.0.1", "fe80::1", "203.0.113.10"]
        .iter()
        .enumerate()
    {
        let id = format!("guard-{i}");
        msgs.push((
            subj("s1"),
            id.clone(),
            report(&id, "s1", client, "rce-1", "critical"),
        ));
    }
    // Same content under new message ids: the blocker's dedup counts them once.
    for k in 0..20 {
        msgs.push((
            subj("s1"),
            format!("same-content-{k}"),
            report("crit-1", "s1", "192.0.2.1", "rce-1", "critical"),
        ));
    }
    let sent_s1 = msgs.len();
    // A flood from one sensor: 3000 distinct low-severity clients.
    for i in 0..3000u32 {
        let id = format!("flood-{i}");
        let client = format!("2001:db8:f:{i:x}::1");
        msgs.push((
            subj("flood"),
            id.clone(),
            report(&id, "flood", &client, "scan-1", "low"),
        ));
    }
    let total = msgs.len();
    let stored = publish_all(&js, msgs).await;
    assert_eq!(stored, total);
    // The same Nats-Msg-Id again: JetStream drops every copy.
    for _ in 0..50 {
        assert!(
            !publish(
                &js,
                "s1",
                "crit-1",
                report("crit-1", "s1", "192.0.2.1", "rce-1", "critical")
            )
            .await
        );
    }

    wait_until(60, "every report processed", || async {
        metric(admin, "palisade_reports_received_total").await as usize == total
    })
    .await;
    let m = metrics(admin).await;
    let get = |k: &str| m.get(k).copied().unwrap_or(0.0) as usize;
    // i % 16 == 0, 4, 8, 12 for i in 4..=200 step 4: 12, 13, 13, 12 bad reports.
    assert_eq!(
        get("palisade_reports_rejected_total{reason=\"bad_json\"}"),
        12,
        "{m:?}"
    );
    assert_eq!(
        get("palisade_reports_rejected_total{reason=\"unsupported_version\"}"),
        13
    );
    assert_eq!(
        get("palisade_reports_rejected_total{reason=\"not_utf8\"}"),
        13
    );
    assert_eq!(
        get("palisade_reports_rejected_total{reason=\"invalid_field\"}"),
        12
    );
    assert_eq!(
        get("palisade_reports_rejected_total{reason=\"missing_field\"}"),
        1
    );
    assert_eq!(
        get("palisade_reports_rejected_total{reason=\"too_large\"}"),
        1
    );
    assert_eq!(
        get("palisade_reports_rejected_total{reason=\"sensor_mismatch\"}"),
        1
    );
    assert_eq!(get("palisade_reports_deduplicated_total"), 20);
    assert_eq!(
        get("palisade_blocks_refused_total{reason=\"special_range\"}"),
        3
    );
    assert_eq!(
        get("palisade_blocks_refused_total{reason=\"allowlisted\"}"),
        1
    );
    let limited = get("palisade_reports_rate_limited_total");
    assert!((1900..=2000).contains(&limited), "rate limited {limited}");
    assert_eq!(
        get("palisade_reports_accepted_total") + limited + 20 + 53,
        total,
        "every message is accounted for (sent by s1: {sent_s1})"
    );
    assert_eq!(get("palisade_blocks_added_total"), expected.len());
    assert_eq!(get("palisade_blocks_active"), expected.len());

    // The admin API lists exactly the decided blocks, with their reasons.
    let list = blocks(admin).await;
    let listed: BTreeSet<IpNet> = list
        .iter()
        .map(|b| b["cidr"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(listed, expected);
    let b7 = list
        .iter()
        .find(|b| b["cidr"] == "198.51.100.7/32")
        .unwrap();
    assert_eq!(b7["hits"], 2);
    assert_eq!(b7["reasons"].as_array().unwrap().len(), 1);
    assert_eq!(b7["severity"], "high");
    assert_eq!(b7["reasons"][0]["evidence"], "' OR 1=1 --");

    // The firewall converges: our blocks plus the foreign entry, which is never touched.
    let mut want = expected.clone();
    want.insert(foreign);
    wait_until(30, "firewall in sync", || async {
        firewall.snapshot() == want
    })
    .await;
    wait_until(10, "ready", || async {
        http(admin, "GET", "/readyz", None, None).await.0 == 200
    })
    .await;

    // Manual block and release.
    let post = |body: &'static str, token: Option<&'static str>| async move {
        http(admin, "POST", "/v1/blocks", token, Some(body)).await
    };
    assert_eq!(post(r#"{"cidr":"81.2.70.0/24"}"#, None).await.0, 401);
    assert_eq!(
        post(
            r#"{"cidr":"81.2.70.0/24"}"#,
            Some("wrong-token-wrong-token")
        )
        .await
        .0,
        401
    );
    assert_eq!(post(r#"{"cidr":"81.2.70.0/23"}"#, Some(TOKEN)).await.0, 422);
    assert_eq!(post(r#"{"cidr":"nonsense"}"#, Some(TOKEN)).await.0, 400);
    assert_eq!(
        post(r#"{"cidr":"2a00:1450::/47"}"#, Some(TOKEN)).await.0,
        422
    );
    let (code, body) = post(
        r#"{"cidr":"81.2.70.9/24","ttl_secs":60,"note":"ticket 42"}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    // An absurd TTL is capped at the policy's max_ttl_secs, never a crash.
    let (code, body) = post(
        r#"{"cidr":"81.2.71.1","ttl_secs":18446744073709551615}"#,
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 201, "{body}");
    let rec: serde_json::Value = serde_json::from_str(&body).unwrap();
    let expires = chrono::DateTime::parse_from_rfc3339(rec["expires_at"].as_str().unwrap())
        .unwrap()
        .with_timezone(&chrono::Utc);
    let max = chrono::Duration::seconds(7 * 24 * 3600 + 60);
    assert!(expires < chrono::Utc::now() + max, "{body}");
    let manual: IpNet = "81.2.70.0/24".parse().unwrap();
    wait_until(10, "manual block enforced", || async {
        firewall.snapshot().contains(&manual)
    })
    .await;
    assert_eq!(
        http(admin, "DELETE", "/v1/blocks/81.2.70.0_24", None, None)
            .await
            .0,
        401
    );
    assert_eq!(
        http(
            admin,
            "DELETE",
            "/v1/blocks/81.2.70.0_24",
            Some(TOKEN),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        http(
            admin,
            "DELETE",
            "/v1/blocks/81.2.70.0_24",
            Some(TOKEN),
            None
        )
        .await
        .0,
        404
    );
    let released: IpNet = "192.0.2.1/32".parse().unwrap();
    assert_eq!(
        http(
            admin,
            "DELETE",
            "/v1/blocks/192.0.2.1%2F32",
            Some(TOKEN),
            None
        )
        .await
        .0,
        204
    );
    wait_until(10, "released", || async {
        let s = firewall.snapshot();
        !s.contains(&manual) && !s.contains(&released) && s.contains(&foreign)
    })
    .await;

    // A good report after all the bad input is still processed.
    assert!(
        publish(
            &js,
            "s3",
            "late-1",
            report("late-1", "s3", "192.0.2.251", "rce-1", "critical")
        )
        .await
    );
    let late: IpNet = "192.0.2.251/32".parse().unwrap();
    wait_until(20, "late block enforced", || async {
        firewall.snapshot().contains(&late)
    })
    .await;

    stop_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(20), blocker)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // Fail-static: the blocks stay after the blocker stopped.
    assert!(firewall.snapshot().contains(&late));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_are_disabled_without_a_token() {
    let nats = NatsServer::start().await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut config = config(&nats.url(), state.path());
    config.admin.token = None;
    let palisade_blocker::Spawned {
        admin,
        stop: stop_tx,
        task: blocker,
    } = palisade_blocker::spawn(config, Arc::new(MemoryFirewall::new()))
        .await
        .expect("blocker ready");
    let (code, body) = http(
        admin,
        "POST",
        "/v1/blocks",
        Some(TOKEN),
        Some(r#"{"cidr":"81.2.70.1"}"#),
    )
    .await;
    assert_eq!(code, 403);
    assert!(body.contains("disabled"), "{body}");
    assert_eq!(
        http(admin, "DELETE", "/v1/blocks/81.2.70.1", Some(TOKEN), None)
            .await
            .0,
        403
    );
    assert_eq!(http(admin, "GET", "/v1/blocks", None, None).await.0, 200);
    stop_tx.send(()).unwrap();
    blocker.await.unwrap().unwrap();
}

/// `spawn` returns the error a run stops with before it is ready (here the configuration's),
/// instead of waiting for a listener that never comes.
#[tokio::test]
async fn spawn_returns_the_error_a_run_stops_with_before_it_is_ready() {
    let state = tempfile::tempdir().unwrap();
    let mut config = config("nats://127.0.0.1:4222", state.path());
    config.nats.pull_heartbeat_secs = config.nats.pull_expires_secs;
    let err = palisade_blocker::spawn(config, Arc::new(MemoryFirewall::new()))
        .await
        .expect_err("an invalid configuration stops the run");
    assert!(
        matches!(&err, palisade_blocker::Error::Config(m) if m.contains("pull_heartbeat_secs")),
        "{err}"
    );
}
