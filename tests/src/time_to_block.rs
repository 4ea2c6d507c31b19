//! Time to block: a report published to JetStream -> its address visible in the WAF IP set
//! (GetIPSet), through the real blocker with the AWS provider, against moto behind the proxy
//! that enforces AWS's write budget (1 UpdateIPSet per second per account and region).
//!
//! For each case (1, 100, 10,000 new attackers by default) a fresh stack is started: nats-server,
//! moto + proxy with an IPv4 and an IPv6 set, and `palisade-blocker`. All reports (one critical
//! report per attacker, 90% IPv4, 10% IPv6, spread over [`SENSORS`] sensors as a fleet would
//! send them: one sensor alone is held to its quota of 1,000 reports/s, burst 5,000) are
//! published as fast as JetStream acks them, then
//! the sets are polled straight from moto (not counted, not throttled) every 50 ms. Latency is
//! measured per address from its own publish. `bench/time_to_block.sh` drives this.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;

use crate::demo::{HttpGet, Service, Waf, blocker_command, host_prefix, wait_http_ok};
use crate::nats::NatsServer;

/// How long one case may take before it is reported incomplete.
const CASE_DEADLINE: Duration = Duration::from_secs(180);
/// Sensors the reports come from.
pub const SENSORS: usize = 10;
/// Poll interval of GetIPSet.
const POLL: Duration = Duration::from_millis(50);

/// One case's result.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub attackers: usize,
    /// Addresses that became visible before the deadline.
    pub visible: usize,
    /// Publish -> visible in GetIPSet, milliseconds.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Seconds to publish every report (JetStream acks awaited).
    pub publish_s: f64,
    /// UpdateIPSet calls the blocker made (through the proxy).
    pub update_ipset_calls: u64,
    /// ThrottlingException answers the blocker got (its own budget should keep this at 0).
    pub throttled: u64,
}

/// The special-purpose ranges [`attackers`] come from, as the blocker's `--allow-special` value.
pub(crate) const ATTACKER_RANGES: &str = "198.18.0.0/15,2001:db8::/32";

/// The attackers of one case: 90% IPv4 in 198.18.0.0/15 (RFC 2544 benchmarking), 10% IPv6 in
/// 2001:db8::/32 (documentation). The blocker is told to allow both special ranges.
pub(crate) fn attackers(n: usize) -> Vec<IpAddr> {
    (0..n)
        .map(|i| {
            if i % 10 == 9 {
                IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xbe, 0, 0, 0, 0, i as u16 + 1))
            } else {
                let k = i as u32 + 1;
                IpAddr::V4(Ipv4Addr::new(
                    198,
                    18 + (k >> 16) as u8,
                    (k >> 8) as u8,
                    k as u8,
                ))
            }
        })
        .collect()
}

/// Publish one critical report per address, spread over [`SENSORS`] sensors, as fast as
/// JetStream acks them (at most 256 in flight). Returns each address's host prefix with the
/// instant its report was published.
pub(crate) async fn publish_critical(
    js: &async_nats::jetstream::Context,
    ips: &[IpAddr],
    id_prefix: &str,
) -> anyhow::Result<BTreeMap<String, Instant>> {
    let mut published: BTreeMap<String, Instant> = BTreeMap::new();
    let mut acks = Vec::with_capacity(ips.len().min(256));
    for (i, ip) in ips.iter().enumerate() {
        let id = format!("{id_prefix}-{i}");
        let sensor = format!("bench-{}", i % SENSORS);
        let body = json!({
            "v": 1, "id": id, "sensor": sensor, "observed_at": crate::demo::chrono_like_now(),
            "client_ip": ip.to_string(), "peer_ip": "10.0.0.1", "rule": "java.log4shell.jndi",
            "category": "java", "severity": "critical", "mitre": ["T1190"],
            "evidence": "${jndi:ldap://x}",
        });
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(palisade_wire::MSG_ID_HEADER, id.as_str());
        published.insert(host_prefix(*ip), Instant::now());
        let subject = palisade_wire::subject_for(&sensor);
        let payload: bytes::Bytes = serde_json::to_vec(&body)?.into();
        let ack = js
            .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
            .await
            .context("publishing a report")?;
        acks.push((ack, subject, headers, payload));
        if acks.len() >= 256 {
            settle(js, &mut acks).await?;
        }
    }
    settle(js, &mut acks).await?;
    Ok(published)
}

pub(crate) type Pending = (
    async_nats::jetstream::context::PublishAckFuture,
    String,
    async_nats::HeaderMap,
    bytes::Bytes,
);

/// How long [`settle`] keeps sending a report whose publish failed.
const SETTLE_DEADLINE: Duration = Duration::from_secs(30);

/// Wait for every ack; a publish that failed (a JetStream cluster electing a stream leader
/// under load answers "no responders" for a moment) is sent again, as a sensor does, with
/// the same `Nats-Msg-Id` (JetStream drops a copy that did land).
pub(crate) async fn settle(
    js: &async_nats::jetstream::Context,
    acks: &mut Vec<Pending>,
) -> anyhow::Result<()> {
    for (ack, subject, headers, payload) in acks.drain(..) {
        let mut result = ack.await.map(|_| ());
        let mut attempt = 0;
        // A leader election after a node is lost takes a few seconds, longer on a loaded
        // machine: retry for up to SETTLE_DEADLINE, as a sensor's publisher would.
        let deadline = std::time::Instant::now() + SETTLE_DEADLINE;
        while let Err(err) = result {
            attempt += 1;
            if std::time::Instant::now() > deadline {
                return Err(err).context(format!(
                    "JetStream publish ack ({attempt} attempts in {SETTLE_DEADLINE:?})"
                ));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
            result = match js
                .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
                .await
            {
                Ok(a) => a.await.map(|_| ()),
                Err(e) => Err(e),
            };
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Run one case on a fresh stack.
pub async fn run_case(bin_dir: &std::path::Path, n: usize) -> anyhow::Result<CaseResult> {
    let blocker_bin = bin_dir.join("palisade-blocker");
    if !blocker_bin.exists() {
        bail!("{blocker_bin:?} is missing: cargo build --release -p palisade-blocker");
    }
    let work = tempfile::Builder::new().prefix("palisade-ttb-").tempdir()?;
    let nats = NatsServer::start().await?;
    let waf = Waf::start().await?;
    let admin_port = crate::free_port()?;
    let cmd = blocker_command(
        &blocker_bin,
        &nats.url(),
        admin_port,
        &work.path().join("state"),
        &waf.arns(),
        ATTACKER_RANGES,
        "warn",
    );
    let mut blocker = Service::spawn("blocker", cmd, work.path()).await?;
    wait_http_ok(
        &mut blocker,
        &HttpGet,
        &format!("http://127.0.0.1:{admin_port}/readyz"),
    )
    .await?;

    let js = nats.jetstream().await?;
    let ips = attackers(n);
    let started = Instant::now();
    let published = publish_critical(&js, &ips, &format!("ttb-{n}")).await?;
    let publish_s = started.elapsed().as_secs_f64();

    let mut seen: BTreeMap<String, Duration> = BTreeMap::new();
    let deadline = Instant::now() + CASE_DEADLINE;
    while seen.len() < n && Instant::now() < deadline {
        blocker.check_running()?;
        let present = waf.entries().await?;
        let now = Instant::now();
        for (cidr, at) in &published {
            if !seen.contains_key(cidr) && present.contains(cidr) {
                seen.insert(cidr.clone(), now.saturating_duration_since(*at));
            }
        }
        tokio::time::sleep(POLL).await;
    }
    let mut ms: Vec<f64> = seen.values().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let result = CaseResult {
        attackers: n,
        visible: seen.len(),
        p50_ms: percentile(&ms, 50.0),
        p99_ms: percentile(&ms, 99.0),
        max_ms: ms.last().copied().unwrap_or(f64::NAN),
        publish_s,
        update_ipset_calls: waf.proxy.calls("UpdateIPSet"),
        throttled: waf.proxy.errors("ThrottlingException"),
    };
    blocker.stop().await?;
    Ok(result)
}

/// The default cases.
pub const DEFAULT_CASES: [usize; 3] = [1, 100, 10_000];

/// Where `bench/time_to_block.sh` writes by default.
pub fn default_output() -> PathBuf {
    crate::workspace_root().join("bench/results/time_to_block.json")
}
