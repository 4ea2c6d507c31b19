//! The admin API over real HTTP (the router served on a loopback port, the engine behind it):
//! who may read `/v1/blocks` (read token, write token, open reads, the default), and manual
//! blocks of allowlisted or special-range CIDRs (refused unless forced, never broader than the
//! breadth limit).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use common::{TOKEN, http};
use palisade_blocker::Config;
use palisade_blocker::admin::{AdminState, Tokens, router};
use palisade_blocker::engine::Engine;
use palisade_blocker::metrics::Metrics;

const READ: &str = "read-only-token-0123456789";

/// Serve the admin router for an engine with `f` applied to the test config.
async fn serve(dir: &std::path::Path, f: impl FnOnce(&mut Config)) -> SocketAddr {
    let mut c = common::config("nats://127.0.0.1:1", dir);
    f(&mut c);
    c.validate().unwrap();
    let tokens = Tokens::new(&c.admin).unwrap();
    let engine = Arc::new(Engine::open(Arc::new(c), Arc::new(Metrics::default())).unwrap());
    let state = AdminState::single(
        engine,
        Arc::new(AtomicBool::new(true)),
        Arc::new(AtomicBool::new(true)),
        tokens,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    addr
}

async fn get(addr: SocketAddr, token: Option<&str>) -> u16 {
    http(addr, "GET", "/v1/blocks", token, None).await.0
}

#[tokio::test]
async fn reads_need_a_token_once_any_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(dir.path(), |c| c.admin.read_token = Some(READ.into())).await;
    assert_eq!(get(addr, None).await, 401);
    assert_eq!(get(addr, Some("wrong")).await, 401);
    // A prefix or an extension of a token is wrong too (digests are compared, not bytes).
    assert_eq!(get(addr, Some(&READ[..READ.len() - 1])).await, 401);
    assert_eq!(get(addr, Some(&format!("{READ}x"))).await, 401);
    assert_eq!(get(addr, Some(READ)).await, 200);
    assert_eq!(
        get(addr, Some(TOKEN)).await,
        200,
        "the write token reads too"
    );
    // The read token cannot write.
    let body = r#"{"cidr":"81.2.69.0/24"}"#;
    assert_eq!(
        http(addr, "POST", "/v1/blocks", Some(READ), Some(body))
            .await
            .0,
        401
    );
    assert_eq!(
        http(addr, "POST", "/v1/blocks", Some(TOKEN), Some(body))
            .await
            .0,
        201
    );
    // Health, readiness and metrics stay open (probes and scrapers carry no token).
    assert_eq!(http(addr, "GET", "/healthz", None, None).await.0, 200);
    assert_eq!(http(addr, "GET", "/metrics", None, None).await.0, 200);

    // Only the write token configured: reads need it.
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(dir.path(), |_| {}).await;
    assert_eq!(get(addr, None).await, 401);
    assert_eq!(get(addr, Some(TOKEN)).await, 200);

    // Opened explicitly.
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(dir.path(), |c| c.admin.open_reads = Some(true)).await;
    assert_eq!(get(addr, None).await, 200);

    // No token at all: reads are open (as before), changes disabled.
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(dir.path(), |c| c.admin.token = None).await;
    assert_eq!(get(addr, None).await, 200);
    assert_eq!(
        http(addr, "POST", "/v1/blocks", Some(TOKEN), Some(body))
            .await
            .0,
        403
    );

    // No token, reads closed explicitly: nobody can read.
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(dir.path(), |c| {
        c.admin.token = None;
        c.admin.open_reads = Some(false);
    })
    .await;
    assert_eq!(get(addr, None).await, 401);
}

#[tokio::test]
async fn manual_blocks_of_protected_ranges_need_force() {
    let dir = tempfile::tempdir().unwrap();
    let addr = serve(dir.path(), |c| {
        c.guardrails.allowlist = vec!["81.2.69.10/32".parse().unwrap()];
    })
    .await;
    let post = |body: &'static str| async move {
        http(addr, "POST", "/v1/blocks", Some(TOKEN), Some(body)).await
    };
    let (code, body) = post(r#"{"cidr":"81.2.69.10"}"#).await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body.contains("allowlisted") && body.contains("force"),
        "{body}"
    );
    let (code, body) = post(r#"{"cidr":"10.0.0.0/24"}"#).await;
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("private"), "{body}");
    let (code, body) = post(r#"{"cidr":"10.0.0.0/24","force":true,"note":"incident"}"#).await;
    assert_eq!(code, 201, "{body}");
    let (code, body) = post(r#"{"cidr":"81.2.69.10","force":true}"#).await;
    assert_eq!(code, 201, "{body}");
    // Even forced, never broader than /24 or /48.
    let (code, body) = post(r#"{"cidr":"10.0.0.0/8","force":true}"#).await;
    assert_eq!(code, 422, "{body}");
    let (code, body) = post(r#"{"cidr":"fd00::/32","force":true}"#).await;
    assert_eq!(code, 422, "{body}");
    // An unknown field is a bad request, not a silent no-op.
    let (code, _) = post(r#"{"cidr":"81.2.70.1","forse":true}"#).await;
    assert_eq!(code, 400);
    let (_, list) = http(addr, "GET", "/v1/blocks", Some(TOKEN), None).await;
    let v: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(v["count"], 2, "{list}");
}
