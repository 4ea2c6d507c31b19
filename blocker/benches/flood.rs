//! Flood benchmark (`cargo bench -p palisade-blocker --bench flood`): one sensor sends
//! 1,000,000 fake critical reports about distinct clients straight into the engine (no NATS),
//! at the default configuration except the per-sensor quota (lifted: a sensor rotating ids
//! defeats it anyway). Every 10,000 flood reports a second sensor reports one real attacker;
//! the benchmark measures how long (wall clock) each real block waits before it is enforced,
//! and reports the engine's map sizes and the process's peak RSS (VmHWM). Prints JSON.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_blocker::Config;
use palisade_blocker::engine::{Engine, Incoming};
use palisade_blocker::metrics::Metrics;

fn body(id: &str, sensor: &str, client: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "v": 1, "id": id, "sensor": sensor, "observed_at": "2026-11-25T02:00:00Z",
        "client_ip": client, "peer_ip": client, "rule": "rce-1", "category": "rce",
        "severity": "critical", "mitre": ["T1190"], "evidence": "${jndi:ldap://x}",
    }))
    .unwrap_or_default()
}

fn vm_hwm_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: u32 = std::env::var("FLOOD_REPORTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let mut c = Config::default();
    c.state.dir = dir.path().to_path_buf();
    c.pipeline.sensor_rate_per_sec = u32::MAX;
    c.pipeline.sensor_burst = u32::MAX;
    c.validate()?;
    let e = Arc::new(Engine::open(Arc::new(c), Arc::new(Metrics::default()))?);
    let hwm_before = vm_hwm_kib();
    let started = Instant::now();
    let mut waiting: Vec<(palisade_providers::IpNet, Instant)> = Vec::new();
    let mut waits: Vec<Duration> = Vec::new();
    let mut real = 0u32;
    let batch = 512u32;
    let mut i = 0u32;
    while i < n {
        let end = (i + batch).min(n);
        let mut msgs: Vec<Incoming> = (i..end)
            .map(|k| {
                let client = Ipv4Addr::from(0x0B00_0000u32 + k).to_string();
                Incoming {
                    subject: palisade_wire::subject_for("flood"),
                    payload: body(&format!("f{k}"), "flood", &client).into(),
                }
            })
            .collect();
        if i / 10_000 != end / 10_000 {
            real += 1;
            let client = Ipv4Addr::from(0x5102_0000u32 + real).to_string();
            msgs.push(Incoming {
                subject: palisade_wire::subject_for("real"),
                payload: body(&format!("r{real}"), "real", &client).into(),
            });
            waiting.push((palisade_providers::parse_cidr(&client)?, Instant::now()));
        }
        e.process(&msgs).await;
        let state = e.state().await;
        waiting.retain(|(net, at)| match state.blocks.get(net) {
            Some(b) if !b.deferred => {
                waits.push(at.elapsed());
                false
            }
            _ => true,
        });
        drop(state);
        i = end;
    }
    let elapsed = started.elapsed();
    // What still waits when the flood ends: served by the sweeper's promotions.
    while !waiting.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        e.promote_deferred().await;
        let state = e.state().await;
        waiting.retain(|(net, at)| match state.blocks.get(net) {
            Some(b) if !b.deferred => {
                waits.push(at.elapsed());
                false
            }
            _ => true,
        });
    }
    waits.sort();
    let sizes = e.sizes().await;
    let m = e.metrics();
    let out = serde_json::json!({
        "flood_reports": n,
        "flood_seconds": elapsed.as_secs_f64(),
        "reports_per_second": f64::from(n) / elapsed.as_secs_f64(),
        "real_blocks": waits.len(),
        "real_wait_ms_median": waits.get(waits.len() / 2).map(|d| d.as_secs_f64() * 1e3),
        "real_wait_ms_max": waits.last().map(|d| d.as_secs_f64() * 1e3),
        "blocks": sizes.blocks,
        "deferred": sizes.deferred,
        "offences": sizes.offences,
        "sensor_keys": sizes.sensor_keys,
        "refused": m.refusals(),
        "vm_hwm_kib_before": hwm_before,
        "vm_hwm_kib_after": vm_hwm_kib(),
    });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
