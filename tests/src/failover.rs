//! Several blocker replicas on the `nats` state backend, one AWS account: the lease holder
//! decides and writes, the others stand by. Scenarios:
//!
//! - [`leader_killed_mid_stream`]: SIGKILL of the replica doing the work in the middle of a
//!   stream of attackers, repeated; another replica takes over, and the IP sets converge to
//!   exactly the decided blocks plus the entries somebody else put there, with no throttle.
//! - [`paused_leader_writes_nothing`]: the holder is paused (SIGSTOP) past its lease, another
//!   takes over and releases a block; the paused one is resumed and writes nothing: the
//!   released entry stays out of the IP set and no message of the state bucket after the
//!   takeover is the old holder's.
//! - [`threshold_counted_across_takeover`]: a threshold of 2 reports, the first counted by
//!   one holder, the second by the next after a SIGKILL: every client is blocked.
//!
//! Real processes (`palisade-blocker`), a real 3-node nats-server cluster (the reports stream
//! and the state bucket at 3 replicas), moto behind the AWS-limits proxy.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::Command;

use crate::demo::{HttpGet, Service, Waf, blocker_command, foreign_edit, get_ip_set};
use crate::nats::NatsCluster;
use crate::time_to_block::{ATTACKER_RANGES, attackers, publish_critical};

/// How long the replicas may take to converge after the last kill.
const CONVERGE_DEADLINE: Duration = Duration::from_secs(120);
/// Lease time given to the replicas (`--` the default: 5 s).
const LEASE_SECS: u64 = 5;
/// How long two replicas may both answer that they hold the lease before it counts as two
/// holders: well under the 1 s a holder stops before a standby may take over, plus one
/// round of answers from loaded processes.
const OVERLAP_TOLERATED: Duration = Duration::from_millis(1500);
const BUCKET: &str = "palisade-blocker";

/// One replica: its process (None while down) and admin port.
struct Replica {
    name: &'static str,
    service: Option<Service>,
    admin_port: u16,
    command: Box<dyn Fn() -> Command + Send>,
}

impl Replica {
    fn log_tail(&self, lines: usize) -> String {
        self.service
            .as_ref()
            .map(|s| s.log_tail(lines))
            .unwrap_or_default()
    }

    async fn start(&mut self, dir: &Path) -> anyhow::Result<()> {
        self.service = Some(Service::spawn(self.name, (self.command)(), dir).await?);
        Ok(())
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin_port)
    }

    /// `Some(true)` when it answers `/readyz` as the lease holder, `Some(false)` as a standby.
    async fn is_leader(&self) -> Option<bool> {
        let (_, body) = HttpGet.get(&self.url("/readyz")).await.ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["leader"].as_bool()
    }

    async fn metric(&self, name: &str) -> Option<f64> {
        let (_, body) = HttpGet.get(&self.url("/metrics")).await.ok()?;
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    }
}

struct Cluster {
    work: tempfile::TempDir,
    nats: NatsCluster,
    waf: Waf,
    replicas: Vec<Replica>,
}

/// The replicas' configuration file: everything replicated 3 times on the 3-node cluster.
const CONFIG: &str = "[nats]\nstream_replicas = 3\n[state]\nreplicas = 3\n";

impl Cluster {
    async fn start(bin_dir: &Path, n: usize) -> anyhow::Result<Cluster> {
        Cluster::start_with(bin_dir, n, "").await
    }

    /// `n` replicas with [`CONFIG`] plus `extra` (more TOML tables).
    async fn start_with(bin_dir: &Path, n: usize, extra: &str) -> anyhow::Result<Cluster> {
        const NAMES: [&str; 5] = [
            "replica-0",
            "replica-1",
            "replica-2",
            "replica-3",
            "replica-4",
        ];
        let blocker_bin = bin_dir.join("palisade-blocker");
        if !blocker_bin.exists() {
            bail!("{blocker_bin:?} is missing: cargo build -p palisade-blocker");
        }
        let work = tempfile::Builder::new()
            .prefix("palisade-failover-")
            .tempdir()?;
        let nats = NatsCluster::start(3).await?;
        let waf = Waf::start().await?;
        let config = work.path().join("blocker.toml");
        std::fs::write(&config, format!("{CONFIG}{extra}"))?;
        let mut replicas = Vec::new();
        for name in NAMES.iter().take(n) {
            let admin_port = crate::free_port()?;
            let (bin, url, state, config) = (
                blocker_bin.clone(),
                nats.urls(),
                work.path().join(format!("{name}-state")),
                config.clone(),
            );
            let arns = waf.arns();
            let command = move || {
                let mut cmd = blocker_command(
                    &bin,
                    &url,
                    admin_port,
                    &state,
                    &arns,
                    ATTACKER_RANGES,
                    "info",
                );
                cmd.arg("--config")
                    .arg(&config)
                    .env("PALISADE_STATE_BACKEND", "nats")
                    .env("PALISADE_REPLICA_ID", name)
                    .env("PALISADE_ADMIN_TOKEN", ADMIN_TOKEN);
                cmd
            };
            replicas.push(Replica {
                name,
                service: None,
                admin_port,
                command: Box::new(command),
            });
        }
        let mut c = Cluster {
            work,
            nats,
            waf,
            replicas,
        };
        for i in 0..n {
            let dir = c.work.path().to_path_buf();
            c.replicas[i].start(&dir).await?;
        }
        Ok(c)
    }

    fn check_running(&mut self) -> anyhow::Result<()> {
        for r in &mut self.replicas {
            if let Some(s) = r.service.as_mut() {
                s.check_running()?;
            }
        }
        Ok(())
    }

    /// Wait until exactly one running replica says it holds the lease; its index.
    ///
    /// The replicas are asked at once, but their answers are not one instant: a holder that
    /// answered just before its lease ran out and a standby that answered just after taking
    /// it over may both say yes. A holder stops claiming the lease at least a fifth of the
    /// lease time (1 s here) before any standby may take it, so two claims that last longer
    /// than [`OVERLAP_TOLERATED`] are two holders.
    async fn leader(&mut self, within: Duration) -> anyhow::Result<usize> {
        let start = Instant::now();
        let mut overlap_since: Option<Instant> = None;
        loop {
            self.check_running()?;
            let asked = futures_util::future::join_all(
                self.replicas
                    .iter()
                    .map(|r| async { r.service.is_some() && r.is_leader().await == Some(true) }),
            )
            .await;
            let leaders: Vec<usize> = (0..asked.len()).filter(|&i| asked[i]).collect();
            match leaders.as_slice() {
                [one] => return Ok(*one),
                [] => overlap_since = None,
                many => {
                    let since = *overlap_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > OVERLAP_TOLERATED {
                        bail!(
                            "several replicas hold the lease at once for {:?}: {many:?}\n{}",
                            since.elapsed(),
                            self.lease_logs()
                        );
                    }
                }
            }
            if start.elapsed() > within {
                bail!(
                    "no replica took the lease within {within:?}:\n{}",
                    self.lease_logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The last `lines` log lines of every replica, for error messages.
    fn log_tails(&self, lines: usize) -> String {
        self.replicas
            .iter()
            .map(|r| format!("--- {}:\n{}", r.name, r.log_tail(lines)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Every running replica's log lines about the lease and the state, for error messages.
    fn lease_logs(&self) -> String {
        self.replicas
            .iter()
            .filter(|r| r.service.is_some())
            .map(|r| {
                let lines: Vec<String> = r
                    .log_tail(100_000)
                    .lines()
                    .filter(|l| {
                        ["lease", "restored", "decides", "state", "ERROR", "WARN"]
                            .iter()
                            .any(|k| l.contains(k))
                    })
                    .map(|l| l.chars().take(240).collect())
                    .collect();
                format!(
                    "{}:\n{}",
                    r.name,
                    lines[lines.len().saturating_sub(25)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    async fn kill(&mut self, i: usize) -> anyhow::Result<()> {
        if let Some(mut s) = self.replicas[i].service.take() {
            s.kill().await?;
        }
        Ok(())
    }

    fn pid(&self, i: usize) -> anyhow::Result<u32> {
        self.replicas[i]
            .service
            .as_ref()
            .and_then(Service::pid)
            .context("replica not running")
    }
}

/// What [`leader_killed_mid_stream`] saw.
#[derive(Debug)]
pub struct FailoverOutcome {
    pub replicas: usize,
    pub attackers: usize,
    /// Seconds from each SIGKILL of the holder to another replica answering as holder.
    pub takeovers: Vec<f64>,
    pub foreign: BTreeSet<String>,
    pub final_entries: BTreeSet<String>,
    pub expected: BTreeSet<String>,
    /// The block list as a standby answers it at the end.
    pub standby_blocks: usize,
    /// ThrottlingException answers (the account's write budget kept: 0).
    pub throttled: u64,
    /// Entries that were in the IP sets at one read and gone at a later one, while the holder
    /// was killed and replaced (the IP sets read every 100 ms, straight from the emulator).
    pub flapped: BTreeSet<String>,
}

/// Read both IP sets every 100 ms (from the emulator, outside the account's budget) until the
/// returned sender is dropped or sent to; the task's result is every entry seen and later gone.
fn watch_for_flaps(
    waf: &Waf,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<BTreeSet<String>>>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let admin = waf.admin.clone();
    let arns = [waf.v4_arn.clone(), waf.v6_arn.clone()];
    let task = tokio::spawn(async move {
        let mut seen = BTreeSet::new();
        let mut flapped = BTreeSet::new();
        loop {
            let mut now = BTreeSet::new();
            for arn in &arns {
                now.extend(get_ip_set(&admin, arn).await?.1);
            }
            flapped.extend(seen.difference(&now).cloned());
            seen.extend(now);
            tokio::select! {
                _ = &mut stopped => return Ok(flapped),
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    });
    (stop, task)
}

/// `replicas` blocker replicas; `n` attackers published in `kills + 1` waves, the lease holder
/// SIGKILLed after each of the first `kills` waves (mid-sync) and restarted as a standby.
pub async fn leader_killed_mid_stream(
    bin_dir: &Path,
    replicas: usize,
    n: usize,
    kills: usize,
) -> anyhow::Result<FailoverOutcome> {
    let mut c = Cluster::start(bin_dir, replicas).await?;
    let mut leader = c.leader(Duration::from_secs(30)).await?;
    let foreign = ["192.0.2.77/32".to_string(), "192.0.2.78/32".to_string()];
    foreign_edit(&c.waf.admin, &c.waf.v4_arn, &foreign, &[]).await?;
    let (stop_watching, watcher) = watch_for_flaps(&c.waf);
    let js = c.nats.jetstream().await?;
    let ips = attackers(n);
    let waves: Vec<&[std::net::IpAddr]> = ips.chunks(n.div_ceil(kills + 1)).collect();
    let mut ours = BTreeSet::new();
    let mut takeovers = Vec::new();
    for (w, wave) in waves.iter().enumerate() {
        let published: BTreeSet<String> = publish_critical(&js, wave, &format!("failover-{w}"))
            .await?
            .into_keys()
            .collect();
        ours.extend(published.iter().cloned());
        if w >= kills {
            break;
        }
        // Mid-sync: some of this wave is in the sets, not all of it.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            c.check_running()?;
            if c.waf.entries().await?.iter().any(|e| published.contains(e)) {
                eprintln!(
                    "wave {w}: {} attackers published; the first in the WAF {:.1} s later",
                    published.len(),
                    (Instant::now() + Duration::from_secs(30) - deadline).as_secs_f64()
                );
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "no block of wave {w} reached the WAF within 30 s (holder: replica {leader}); \
                     the replicas' last log lines:\n{}",
                    c.log_tails(25)
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        c.kill(leader).await?;
        let killed = Instant::now();
        let next = c.leader(Duration::from_secs(60)).await?;
        let took = killed.elapsed();
        takeovers.push(took.as_secs_f64());
        // Slow is not wrong (the machine may be loaded), but say why it was slow.
        if took > Duration::from_secs(2 * LEASE_SECS) {
            eprintln!(
                "takeover {w} took {:.1} s (lease {LEASE_SECS} s); the replicas' lease log lines:\n{}",
                took.as_secs_f64(),
                c.lease_logs()
            );
        }
        if next == leader {
            bail!("the killed replica still answers as holder");
        }
        let dir = c.work.path().to_path_buf();
        c.replicas[leader].start(&dir).await?;
        leader = next;
    }
    let expected: BTreeSet<String> = ours
        .union(&foreign.iter().cloned().collect())
        .cloned()
        .collect();
    let deadline = Instant::now() + CONVERGE_DEADLINE;
    let final_entries = loop {
        c.check_running()?;
        let now = c.waf.entries().await?;
        if now == expected || Instant::now() > deadline {
            break now;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The manual release below removes an entry on purpose: stop watching before it.
    let _ = stop_watching.send(());
    let flapped = watcher.await.context("the IP-set watcher")??;
    let standby = (0..replicas)
        .find(|i| *i != leader && c.replicas[*i].service.is_some())
        .context("no standby")?;
    let (code, body) = admin_request("GET", &c.replicas[standby].url("/v1/blocks")).await?;
    if code != 200 {
        bail!("a standby answered {code} to GET /v1/blocks: {body}");
    }
    let standby_blocks = serde_json::from_str::<serde_json::Value>(&body)?["count"]
        .as_u64()
        .unwrap_or(0) as usize;
    // A manual block and a release through the standby reach the holder and the IP sets.
    let manual = "198.19.200.9/32";
    admin_change(
        "POST",
        &c.replicas[standby].url("/v1/blocks"),
        &format!(r#"{{"cidr":"{manual}","ttl_secs":600,"note":"failover test"}}"#),
        201,
    )
    .await?;
    wait_for_entry(&c, manual, true).await?;
    admin_change(
        "DELETE",
        &c.replicas[standby].url("/v1/blocks/198.19.200.9_32"),
        "",
        204,
    )
    .await?;
    wait_for_entry(&c, manual, false).await?;
    Ok(FailoverOutcome {
        replicas,
        attackers: n,
        takeovers,
        foreign: foreign.into_iter().collect(),
        final_entries,
        expected,
        standby_blocks,
        throttled: c.waf.proxy.errors("ThrottlingException"),
        flapped,
    })
}

/// What [`paused_leader_writes_nothing`] saw.
#[derive(Debug)]
pub struct PauseOutcome {
    /// The entry released through the new holder while the old one was paused.
    pub released: String,
    /// Was it back in the IP set at any point in the seconds after the old holder resumed?
    pub released_came_back: bool,
    /// Messages of the state bucket written by the old holder after the takeover.
    pub writes_after_takeover: usize,
    /// Did the old holder answer as a standby after it resumed?
    pub old_stood_down: bool,
    /// Firewall entries the old holder added or removed after it resumed.
    pub old_firewall_writes: f64,
}

/// Pause the holder (SIGSTOP) past its lease, let another take over and release a block
/// through it, resume the old one: it must write nothing.
pub async fn paused_leader_writes_nothing(bin_dir: &Path) -> anyhow::Result<PauseOutcome> {
    let mut c = Cluster::start(bin_dir, 2).await?;
    let old = c.leader(Duration::from_secs(30)).await?;
    let js = c.nats.jetstream().await?;
    let ips = attackers(20);
    let ours: BTreeSet<String> = publish_critical(&js, &ips, "pause")
        .await?
        .into_keys()
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ours.is_subset(&c.waf.entries().await?) {
        c.check_running()?;
        if Instant::now() > deadline {
            bail!("the first holder did not push its blocks within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pid = c.pid(old)?;
    let signal = |sig: &str| crate::signal(pid, sig);
    let writes_before = firewall_writes(&c.replicas[old]).await;
    signal("-STOP")?;
    let paused = Instant::now();
    let new = async {
        loop {
            for (i, r) in c.replicas.iter().enumerate() {
                if i != old && r.is_leader().await == Some(true) {
                    return Ok(i);
                }
            }
            if paused.elapsed() > Duration::from_secs(60) {
                bail!("no replica took over from the paused holder within 60 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    .await;
    let new = match new {
        Ok(n) => n,
        Err(e) => {
            let _ = signal("-CONT");
            return Err(e);
        }
    };
    let takeover_seq = bucket_last_sequence(&js).await?;
    // Release one block through the new holder: the paused one still has it in memory.
    let released = ours.iter().next().cloned().context("no block")?;
    let url = c.replicas[new].url(&format!("/v1/blocks/{}", released.replace('/', "_")));
    let (code, _) = admin_request("DELETE", &url).await?;
    if code != 204 {
        let _ = signal("-CONT");
        bail!("release through the new holder answered {code}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.waf.entries().await?.contains(&released) {
        if Instant::now() > deadline {
            let _ = signal("-CONT");
            bail!(
                "the new holder did not remove {released} within 30 s; the sets hold {:?}\n\
                 new holder:\n{}\nold holder:\n{}",
                c.waf.entries().await?,
                c.replicas[new].log_tail(15),
                c.replicas[old].log_tail(15)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    signal("-CONT")?;
    // Give the old holder time to act on what it believed before the pause.
    let mut released_came_back = false;
    let watch_until = Instant::now() + Duration::from_secs(3 * LEASE_SECS);
    while Instant::now() < watch_until {
        c.check_running()?;
        if c.waf.entries().await?.contains(&released) {
            released_came_back = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let old_stood_down = c.replicas[old].is_leader().await == Some(false);
    let writes_after = firewall_writes(&c.replicas[old]).await - writes_before;
    let old_writer = format!("{}/", c.replicas[old].name);
    let writes_after_takeover = bucket_writers_after(&js, takeover_seq)
        .await?
        .iter()
        .filter(|w| w.starts_with(&old_writer))
        .count();
    Ok(PauseOutcome {
        released,
        released_came_back,
        writes_after_takeover,
        old_stood_down,
        old_firewall_writes: writes_after,
    })
}

async fn firewall_writes(r: &Replica) -> f64 {
    r.metric("palisade_reconcile_entries_added_total")
        .await
        .unwrap_or(0.0)
        + r.metric("palisade_reconcile_entries_removed_total")
            .await
            .unwrap_or(0.0)
}

async fn bucket_last_sequence(js: &async_nats::jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(format!("KV_{BUCKET}")).await?;
    Ok(stream.info().await?.state.last_sequence)
}

/// The `Palisade-Writer` header of every message of the state bucket after `seq`.
async fn bucket_writers_after(
    js: &async_nats::jetstream::Context,
    seq: u64,
) -> anyhow::Result<Vec<String>> {
    let stream = js.get_stream(format!("KV_{BUCKET}")).await?;
    let last = bucket_last_sequence(js).await?;
    let mut out = Vec::new();
    for s in seq + 1..=last {
        if let Ok(m) = stream.get_raw_message(s).await {
            out.push(
                m.headers
                    .get("Palisade-Writer")
                    .map(|v| v.as_str().to_owned())
                    .unwrap_or_default(),
            );
        }
    }
    Ok(out)
}

/// Wait until `entry` is (or is no longer) in the IP sets, at most 30 s.
async fn wait_for_entry(c: &Cluster, entry: &str, present: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.waf.entries().await?.contains(entry) != present {
        if Instant::now() > deadline {
            bail!(
                "{entry} did not become {} within 30 s",
                if present { "present" } else { "absent" }
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// A request with the admin token to a loopback admin endpoint; status and body. HTTP/1.0,
/// so the body comes whole (no chunking).
/// A change through the admin API, retried as its documentation says: a 503 (no holder yet) or
/// 504 (the holder did not answer in time: busy, the change may still be applied) is tried
/// again, up to three times; after such an answer, "already done" (a DELETE's 404) counts as
/// done.
async fn admin_change(method: &str, url: &str, body: &str, want: u16) -> anyhow::Result<()> {
    let mut retried = false;
    for _ in 0..3 {
        let (code, text) = admin_request_body(method, url, body).await?;
        if code == want || (retried && method == "DELETE" && code == 404) {
            return Ok(());
        }
        if code != 503 && code != 504 {
            bail!("{method} {url} answered {code}: {text}");
        }
        eprintln!("{method} {url} answered {code} ({text}); retrying");
        retried = true;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    bail!("{method} {url}: no success after three attempts")
}

async fn admin_request(method: &str, url: &str) -> anyhow::Result<(u16, String)> {
    admin_request_body(method, url, "").await
}

/// [`admin_request`] with a JSON body.
async fn admin_request_body(method: &str, url: &str, body: &str) -> anyhow::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").context("http URL")?;
    let (host, path) = rest.split_once('/').context("URL path")?;
    let mut sock = tokio::net::TcpStream::connect(host).await?;
    sock.write_all(
        format!(
            "{method} /{path} HTTP/1.0\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    sock.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status line")?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

/// The admin token given to the replicas.
pub(crate) const ADMIN_TOKEN: &str = "failover-admin-token-0123456789";

/// What [`threshold_counted_across_takeover`] saw.
#[derive(Debug)]
pub struct ThresholdOutcome {
    /// Clients that each got one report before the kill and one after.
    pub clients: usize,
    /// Of them, in the IP sets at the end.
    pub blocked: usize,
    /// Seconds from the SIGKILL to the takeover.
    pub takeover: f64,
    /// The new holder's log lines about the lease.
    pub log: String,
}

/// `policy.thresholds.high = 2`: every client gets one `high` report counted by the first
/// holder, which is then SIGKILLed; the second report goes to the next holder. Counted as by
/// one blocker, every client is blocked.
pub async fn threshold_counted_across_takeover(
    bin_dir: &Path,
    clients: usize,
) -> anyhow::Result<ThresholdOutcome> {
    let mut c = Cluster::start_with(bin_dir, 2, "[policy.thresholds]\nhigh = 2\n").await?;
    c.leader(Duration::from_secs(30)).await?;
    let js = c.nats.jetstream().await?;
    let ips: Vec<std::net::IpAddr> = attackers(clients * 2)
        .into_iter()
        .filter(std::net::IpAddr::is_ipv4)
        .take(clients)
        .collect();
    publish_high(&js, &ips, "first", "sensor-a").await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        c.check_running()?;
        let mut accepted = 0.0;
        for r in &c.replicas {
            accepted += r
                .metric("palisade_reports_accepted_total")
                .await
                .unwrap_or(0.0);
        }
        if accepted >= ips.len() as f64 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "the first reports were not counted within 60 s ({accepted} of {}):\n{}",
                ips.len(),
                c.replicas
                    .iter()
                    .map(|r| r.log_tail(10))
                    .collect::<Vec<_>>()
                    .join("\n---\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = c.leader(Duration::from_secs(30)).await?;
    if !c.waf.entries().await?.is_empty() {
        bail!("one report blocked a client: the threshold of 2 is not in force");
    }
    // The counts are committed with the batch that counted them, before its ack; give the
    // acks a moment so that the kill tests the store, not a redelivery.
    tokio::time::sleep(Duration::from_millis(500)).await;
    c.kill(first).await?;
    let killed = Instant::now();
    let next = c.leader(Duration::from_secs(60)).await?;
    let takeover = killed.elapsed().as_secs_f64();
    publish_high(&js, &ips, "second", "sensor-b").await?;
    let expected: BTreeSet<String> = ips.iter().map(|ip| format!("{ip}/32")).collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let blocked = loop {
        c.check_running()?;
        let now = c.waf.entries().await?;
        let blocked = expected.intersection(&now).count();
        if blocked == expected.len() || Instant::now() > deadline {
            break blocked;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    Ok(ThresholdOutcome {
        clients: expected.len(),
        blocked,
        takeover,
        log: c.replicas[next]
            .log_tail(100_000)
            .lines()
            .filter(|l| l.contains("lease") || l.contains("restored") || l.contains("decides"))
            .collect::<Vec<_>>()
            .join("\n"),
    })
}

/// One `high` report per address from `sensor`.
async fn publish_high(
    js: &async_nats::jetstream::Context,
    ips: &[std::net::IpAddr],
    id_prefix: &str,
    sensor: &str,
) -> anyhow::Result<()> {
    let mut acks = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let id = format!("{id_prefix}-{i}");
        let body = serde_json::json!({
            "v": 1, "id": id, "sensor": sensor, "observed_at": crate::demo::chrono_like_now(),
            "client_ip": ip.to_string(), "peer_ip": "10.0.0.1", "rule": "sqli.union",
            "category": "sqli", "severity": "high", "mitre": ["T1190"],
            "evidence": "' union select 1--",
        });
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(palisade_wire::MSG_ID_HEADER, id.as_str());
        let subject = palisade_wire::subject_for(sensor);
        let payload: bytes::Bytes = serde_json::to_vec(&body)?.into();
        let ack = js
            .publish_with_headers(subject.clone(), headers.clone(), payload.clone())
            .await
            .context("publishing a report")?;
        acks.push((ack, subject, headers, payload));
    }
    crate::time_to_block::settle(js, &mut acks).await
}

/// What [`nats_node_killed_mid_stream`] saw.
#[derive(Debug)]
pub struct NodeLossOutcome {
    pub attackers: usize,
    /// The NATS node killed (it led the state bucket's stream).
    pub killed_node: usize,
    pub final_entries: BTreeSet<String>,
    pub expected: BTreeSet<String>,
    /// ThrottlingException answers.
    pub throttled: u64,
}

/// Two replicas on a 3-node cluster; `n` attackers published in two halves, and between them
/// the NATS node that leads the state bucket is SIGKILLed. Nothing may be lost: the IP sets
/// converge to every attacker.
pub async fn nats_node_killed_mid_stream(
    bin_dir: &Path,
    n: usize,
) -> anyhow::Result<NodeLossOutcome> {
    let mut c = Cluster::start(bin_dir, 2).await?;
    c.leader(Duration::from_secs(30)).await?;
    let js = c.nats.jetstream().await?;
    let ips = attackers(n);
    let (head, tail) = ips.split_at(n / 2);
    let mut ours: BTreeSet<String> = publish_critical(&js, head, "node-a")
        .await?
        .into_keys()
        .collect();
    let killed_node = c
        .nats
        .stream_leader(&format!("KV_{BUCKET}"))
        .await?
        .context("the state bucket has no leader")?;
    c.nats.kill(killed_node).await?;
    // The publisher's own connection may have been to the killed node: it reconnects.
    ours.extend(publish_critical(&js, tail, "node-b").await?.into_keys());
    let deadline = Instant::now() + CONVERGE_DEADLINE;
    let final_entries = loop {
        c.check_running()?;
        let now = c.waf.entries().await?;
        if now == ours {
            break now;
        }
        if Instant::now() > deadline {
            bail!(
                "{} of {} attackers not in the WAF {CONVERGE_DEADLINE:?} after NATS node {killed_node} \
                 was killed (e.g. {:?}; JetStream meta leader now: node {:?}); the replicas' \
                 warnings:\n{}\nthe NATS nodes' logs:\n{}",
                ours.difference(&now).count(),
                ours.len(),
                ours.difference(&now).take(3).collect::<Vec<_>>(),
                c.nats.meta_leader().await.ok().flatten(),
                c.lease_logs(),
                c.nats.log_tails()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    Ok(NodeLossOutcome {
        attackers: n,
        killed_node,
        final_entries,
        expected: ours,
        throttled: c.waf.proxy.errors("ThrottlingException"),
    })
}
