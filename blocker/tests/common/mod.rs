//! Helpers shared by the blocker's integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use palisade_blocker::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const TOKEN: &str = "test-admin-token-0123456789";

/// A valid report body.
pub fn report(id: &str, sensor: &str, client: &str, rule: &str, severity: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "v": 1,
        "id": id,
        "sensor": sensor,
        "observed_at": "2026-11-25T02:00:00Z",
        "client_ip": client,
        "peer_ip": client,
        "rule": rule,
        "category": "sqli",
        "severity": severity,
        "mitre": ["T1190"],
        "evidence": "' OR 1=1 --",
    }))
    .unwrap()
}

/// Test config: documentation ranges allowed, fast reconcile, admin on a free port.
pub fn config(nats_url: &str, state_dir: &Path) -> Config {
    let mut c = Config::default();
    c.nats.url = nats_url.to_string();
    c.state.dir = state_dir.to_path_buf();
    c.admin.listen = "127.0.0.1:0".parse().unwrap();
    c.admin.token = Some(TOKEN.into());
    c.reconcile.interval_ms = 100;
    c.guardrails.allow_special = [
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "2001:db8::/32",
    ]
    .iter()
    .map(|s| s.parse().unwrap())
    .collect();
    c
}

/// Publish and wait for the stream's ack. `true` when JetStream stored it (not a duplicate).
pub async fn publish(js: &jetstream::Context, sensor: &str, msg_id: &str, body: Vec<u8>) -> bool {
    let ack = js
        .send_publish(
            palisade_wire::subject_for(sensor),
            PublishMessage::build()
                .payload(body.into())
                .message_id(msg_id),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    !ack.duplicate
}

/// Publish many without waiting for each ack in turn.
pub async fn publish_all(js: &jetstream::Context, msgs: Vec<(String, String, Vec<u8>)>) -> usize {
    let mut futs = Vec::with_capacity(msgs.len());
    for (subject, msg_id, body) in msgs {
        futs.push(
            js.send_publish(
                subject,
                PublishMessage::build()
                    .payload(body.into())
                    .message_id(msg_id),
            )
            .await
            .unwrap(),
        );
    }
    let mut stored = 0;
    for f in futs {
        if !f.await.unwrap().duplicate {
            stored += 1;
        }
    }
    stored
}

/// Minimal HTTP/1.1 client: (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n");
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    let body = body.unwrap_or("");
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// All samples of the metrics page: "name{labels}" -> value.
pub async fn metrics(addr: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let (_, body) = http(addr, "GET", "/metrics", None, None).await;
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

pub async fn metric(addr: SocketAddr, name: &str) -> f64 {
    metrics(addr).await.get(name).copied().unwrap_or(0.0)
}

/// Poll until `f` holds (checks every 50 ms, fails after `secs`): the shared
/// [`palisade_tests::wait_for`] with this suite's poll interval.
pub async fn wait_until<F, Fut>(secs: u64, what: &str, f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    palisade_tests::wait_for(
        what,
        Duration::from_secs(secs),
        Duration::from_millis(50),
        f,
    )
    .await;
}

/// The block list from the admin API (read with the admin token).
pub async fn blocks(addr: SocketAddr) -> Vec<serde_json::Value> {
    let (status, body) = http(addr, "GET", "/v1/blocks", Some(TOKEN), None).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    v["blocks"].as_array().cloned().unwrap_or_default()
}

/// The `palisade-blocker` binary on `config`, once its admin port `admin` accepts connections;
/// killed if dropped.
pub async fn spawn_blocker(config: &Path, admin: SocketAddr) -> tokio::process::Child {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_palisade-blocker"))
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start palisade-blocker");
    wait_until(30, "blocker up", || async {
        tokio::net::TcpStream::connect(admin).await.is_ok()
    })
    .await;
    child
}
