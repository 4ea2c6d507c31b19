//! The blocker killed with SIGKILL in the middle of pushing its blocks to the WAF, then
//! restarted on the same state directory: the IP sets converge to exactly its blocks plus the
//! entries somebody else put there (before the crash and while it was down), and nothing it
//! does not own is removed.
//!
//! Runs the real `palisade-blocker` with the AWS provider against moto behind the AWS-limits
//! proxy (1 UpdateIPSet per second), so a burst of decisions takes several write slots to land
//! and the kill really comes mid-sync.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::demo::{HttpGet, Service, Waf, blocker_command, foreign_edit, wait_http_ok};
use crate::nats::NatsServer;
use crate::time_to_block::{ATTACKER_RANGES, attackers, publish_critical};

/// How long the restarted blocker may take to converge.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(90);

/// What the scenario saw.
#[derive(Debug)]
pub struct RestartOutcome {
    /// Blocks decided (one critical report per attacker).
    pub attackers: usize,
    /// Of ours, in the sets when the first process was killed.
    pub ours_at_kill: usize,
    /// Entries written by the "operator" (before the crash and while the blocker was down).
    pub foreign: BTreeSet<String>,
    /// Everything in the sets at the end.
    pub final_entries: BTreeSet<String>,
    /// What the sets should hold at the end: every attacker and every foreign entry.
    pub expected: BTreeSet<String>,
    /// ThrottlingException answers the blocker got.
    pub throttled: u64,
}

/// Run the scenario with `n` attackers (90 % IPv4, 10 % IPv6).
pub async fn blocker_killed_mid_sync(bin_dir: &Path, n: usize) -> anyhow::Result<RestartOutcome> {
    let blocker_bin = bin_dir.join("palisade-blocker");
    if !blocker_bin.exists() {
        bail!("{blocker_bin:?} is missing: cargo build -p palisade-blocker");
    }
    let work = tempfile::Builder::new()
        .prefix("palisade-restart-")
        .tempdir()?;
    let nats = NatsServer::start().await?;
    let waf = Waf::start().await?;
    let before_crash = ["192.0.2.77/32".to_string(), "192.0.2.78/32".to_string()];
    foreign_edit(&waf.admin, &waf.v4_arn, &before_crash, &[]).await?;
    let admin_port = crate::free_port()?;
    let command = || {
        blocker_command(
            &blocker_bin,
            &nats.url(),
            admin_port,
            &work.path().join("state"),
            &waf.arns(),
            ATTACKER_RANGES,
            "warn",
        )
    };
    let ready = format!("http://127.0.0.1:{admin_port}/readyz");

    // First life: a burst of decisions, killed once the first of them reached the WAF.
    let mut first = Service::spawn("blocker-1", command(), work.path()).await?;
    wait_http_ok(&mut first, &HttpGet, &ready).await?;
    let ips = attackers(n);
    let js = nats.jetstream().await?;
    let (head, tail) = ips.split_at(n / 2);
    let ours: BTreeSet<String> = publish_critical(&js, head, "restart-a")
        .await?
        .into_keys()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        first.check_running()?;
        if waf.entries().await?.iter().any(|e| ours.contains(e)) {
            break;
        }
        if Instant::now() > deadline {
            bail!("no block reached the WAF within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ours_tail: BTreeSet<String> = publish_critical(&js, tail, "restart-b")
        .await?
        .into_keys()
        .collect();
    first.kill().await?;
    let at_kill = waf.entries().await?;
    let all_ours: BTreeSet<String> = ours.union(&ours_tail).cloned().collect();
    let ours_at_kill = at_kill.intersection(&all_ours).count();

    // While it is down, the operator adds entries of their own.
    let while_down = ["192.0.2.79/32".to_string()];
    foreign_edit(&waf.admin, &waf.v4_arn, &while_down, &[]).await?;

    // Second life, same state directory.
    let mut second = Service::spawn("blocker-2", command(), work.path()).await?;
    wait_http_ok(&mut second, &HttpGet, &ready).await?;
    let foreign: BTreeSet<String> = before_crash.iter().chain(&while_down).cloned().collect();
    let expected: BTreeSet<String> = all_ours.union(&foreign).cloned().collect();
    let deadline = Instant::now() + CONVERGE_DEADLINE;
    let final_entries = loop {
        second.check_running()?;
        let now = waf.entries().await?;
        if now == expected || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    second.stop().await?;
    Ok(RestartOutcome {
        attackers: n,
        ours_at_kill,
        foreign,
        final_entries,
        expected,
        throttled: waf.proxy.errors("ThrottlingException"),
    })
}
