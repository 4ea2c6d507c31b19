//! A block keeps where its reports were received (the report's `context`: node, namespace,
//! pod, container) and their ATT&CK techniques; `/v1/blocks` shows them and `/metrics` counts
//! detections by namespace.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use common::{TOKEN, http};
use palisade_blocker::admin::{AdminState, Tokens, router};
use palisade_blocker::engine::{Disposition, Engine, Incoming};
use palisade_blocker::metrics::Metrics;

fn with_context(id: &str, client: &str, namespace: Option<&str>) -> Incoming {
    let mut v: serde_json::Value =
        serde_json::from_slice(&common::report(id, "s1", client, "sqli-1", "critical")).unwrap();
    v["mitre"] = serde_json::json!(["T1190", "T1059.004"]);
    if let Some(ns) = namespace {
        v["context"] = serde_json::json!({
            "node": "node-a",
            "namespace": ns,
            "pod": "web-7d9f8-x2k4q",
            "pod_uid": "0f5e7c3a-1b2c-4d5e-8f90-123456789abc",
            "container": "app",
            "container_id": "containerd://4f1a2b3c",
            "workload": "Deployment/web",
            "dst_port": 8080
        });
    }
    Incoming {
        subject: palisade_wire::subject_for("s1"),
        payload: serde_json::to_vec(&v).unwrap().into(),
    }
}

#[tokio::test]
async fn blocks_show_context_and_techniques_and_metrics_count_namespaces() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::config("nats://127.0.0.1:1", dir.path());
    let tokens = Tokens::new(&c.admin).unwrap();
    let metrics = Arc::new(Metrics::default());
    let engine = Arc::new(Engine::open(Arc::new(c), metrics.clone()).unwrap());
    let out = engine
        .process(&[
            with_context("r1", "192.0.2.10", Some("shop")),
            with_context("r2", "192.0.2.11", Some("shop")),
            with_context("r3", "192.0.2.12", None),
        ])
        .await;
    assert!(out.iter().all(|d| *d == Disposition::Ack), "{out:?}");

    let state = AdminState::single(
        engine,
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
        tokens,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await });

    let (status, body) = http(addr, "GET", "/v1/blocks", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let blocks = v["blocks"].as_array().unwrap();
    let by_cidr = |cidr: &str| {
        blocks
            .iter()
            .find(|b| b["cidr"] == cidr)
            .unwrap_or_else(|| panic!("{cidr} in {body}"))
    };
    let reason = &by_cidr("192.0.2.10/32")["reasons"][0];
    assert_eq!(reason["mitre"], serde_json::json!(["T1190", "T1059.004"]));
    let ctx = &reason["context"];
    assert_eq!(ctx["namespace"], "shop");
    assert_eq!(ctx["pod"], "web-7d9f8-x2k4q");
    assert_eq!(ctx["container"], "app");
    assert_eq!(ctx["container_id"], "containerd://4f1a2b3c");
    assert_eq!(ctx["workload"], "Deployment/web");
    assert_eq!(ctx["dst_port"], 8080);
    // no context in the report: none in the reason, techniques still kept
    let bare = &by_cidr("192.0.2.12/32")["reasons"][0];
    assert!(bare.get("context").is_none(), "{bare}");
    assert_eq!(bare["mitre"][0], "T1190");

    let m = common::metrics(addr).await;
    assert_eq!(
        m.get(r#"palisade_detections_total{namespace="shop"}"#),
        Some(&2.0)
    );
    assert_eq!(
        m.get(r#"palisade_detections_total{namespace="_none"}"#),
        Some(&1.0)
    );
}
