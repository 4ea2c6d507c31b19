//! `GET /v1/sensors` and `GET /v1/status` (read by the `palisade` CLI): per-sensor activity
//! counted against the sensor its subject names, read access required.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use common::{TOKEN, http};
use palisade_blocker::admin::{AdminState, Tokens, router};
use palisade_blocker::engine::{Engine, Incoming};
use palisade_blocker::metrics::Metrics;

fn on(subject_sensor: &str, body: Vec<u8>) -> Incoming {
    Incoming {
        subject: palisade_wire::subject_for(subject_sensor),
        payload: body.into(),
    }
}

#[tokio::test]
async fn sensors_and_status_need_a_token_and_count_per_subject() {
    let dir = tempfile::tempdir().unwrap();
    let c = common::config("nats://127.0.0.1:1", dir.path());
    let tokens = Tokens::new(&c.admin).unwrap();
    let engine = Arc::new(Engine::open(Arc::new(c), Arc::new(Metrics::default())).unwrap());
    engine
        .process(&[
            on(
                "s1",
                common::report("r1", "s1", "192.0.2.10", "sqli-1", "low"),
            ),
            on(
                "s1",
                common::report("r2", "s1", "192.0.2.11", "sqli-1", "low"),
            ),
            // claims to be s1 on s2's subject: rejected, counted against s2
            on(
                "s2",
                common::report("r3", "s1", "192.0.2.12", "sqli-1", "low"),
            ),
            on("s2", b"not json".to_vec()),
        ])
        .await;
    let state = AdminState::single(
        engine,
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
        tokens,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await });

    for path in ["/v1/sensors", "/v1/status"] {
        let (status, _) = http(addr, "GET", path, None, None).await;
        assert_eq!(status, 401, "{path} without a token");
    }
    let (status, body) = http(addr, "GET", "/v1/sensors", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["count"], 2, "{v}");
    let s = &v["sensors"];
    assert_eq!(
        (&s[0]["sensor"], &s[0]["reports"], &s[0]["rejected"]),
        (&"s1".into(), &2.into(), &0.into()),
        "{v}"
    );
    assert_eq!(
        (&s[1]["sensor"], &s[1]["reports"], &s[1]["rejected"]),
        (&"s2".into(), &2.into(), &2.into()),
        "{v}"
    );

    let (status, body) = http(addr, "GET", "/v1/status", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["ready"], true, "{v}");
    assert_eq!(v["leader"], true, "{v}");
    assert_eq!(v["sensors_seen"], 2, "{v}");
    assert!(
        v["reconcile"]["last_success"].is_null(),
        "no reconcile ran: {v}"
    );
    let m = common::metrics(addr).await;
    assert_eq!(m.get("palisade_sensors_tracked"), Some(&2.0));
}
