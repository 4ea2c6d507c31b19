//! Sensor configuration: a TOML file (`--config`) whose values command-line flags and
//! `PALISADE_*` environment variables override (see `main.rs`). `config/sensor.example.toml`
//! documents every field.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::Error;
use crate::clientip::{Attribution, ClientHeader};

/// Where requests come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Not chosen: `cgroup`, or `ebpf` when interfaces are configured (the behaviour of
    /// sensors configured before the cgroup source existed). See [`Config::effective_source`].
    #[default]
    Auto,
    /// eBPF at the cgroup v2 root (`cgroup_skb/ingress`): every segment delivered to a local
    /// socket on the watched ports, whatever the interface or CNI, with the receiving
    /// socket's cgroup (and so its pod and container). Needs no interface list.
    Cgroup,
    /// TC ingress eBPF capture on network interfaces (`tc` is accepted too). Sees traffic
    /// that is forwarded through the host as well as traffic delivered to local sockets.
    #[serde(alias = "tc")]
    Ebpf,
    /// Access-log files (for places without eBPF, such as Fargate, and for TLS-terminating
    /// servers).
    Log,
    /// Whole requests mirrored by the pod's own proxy (nginx `mirror`, Envoy
    /// `request_mirror_policies`) to a local port: full analysis without privileges.
    Mirror,
    /// The sensor in the request path: listens on the service port, streams to the app on
    /// localhost and inspects a copy out of band (apps with no proxy in the pod).
    Proxy,
}

impl Source {
    /// The name `--source` takes.
    pub fn name(self) -> &'static str {
        match self {
            Source::Auto => "auto",
            Source::Cgroup => "cgroup",
            Source::Ebpf => "ebpf",
            Source::Log => "log",
            Source::Mirror => "mirror",
            Source::Proxy => "proxy",
        }
    }

    /// Is this one of the eBPF captures (`cgroup` or `ebpf`)?
    pub fn is_ebpf(self) -> bool {
        matches!(self, Source::Cgroup | Source::Ebpf)
    }
}

impl std::str::FromStr for Source {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Source::Auto),
            "cgroup" => Ok(Source::Cgroup),
            "ebpf" | "tc" => Ok(Source::Ebpf),
            "log" => Ok(Source::Log),
            "mirror" => Ok(Source::Mirror),
            "proxy" => Ok(Source::Proxy),
            other => Err(Error::Config(format!(
                "unknown source `{other}` (expected cgroup, ebpf, log, mirror, proxy or auto)"
            ))),
        }
    }
}

/// The whole sensor configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This sensor's id: one NATS subject token (`[A-Za-z0-9_-]{1,64}`). Defaults to the host
    /// name (sanitized).
    #[serde(default = "default_sensor_id")]
    pub sensor_id: String,
    /// Request source: `cgroup`, `ebpf` (TC on interfaces), `log`, `mirror` or `proxy`.
    /// Default: `cgroup`, or `ebpf` when `ebpf.interfaces` lists any.
    #[serde(default)]
    pub source: Source,
    /// CIDRs of the proxies / load balancers in front of the servers (ALB subnets,
    /// ingress-nginx pods, ...). Only a request whose peer is in them has its
    /// `client_ip_header` read, walked from the right past entries in these CIDRs. A trusted
    /// proxy is never reported.
    #[serde(default)]
    pub trusted_proxies: Vec<IpNet>,
    /// The header the proxies append the client address to: `x-forwarded-for` (ALB,
    /// CloudFront, ingress-nginx), `forwarded` or `x-real-ip` (only if the proxy writes it,
    /// never a client), or `none`. Every other header is the client's claim and is ignored.
    #[serde(default)]
    pub client_ip_header: ClientHeader,
    /// How many proxies append to the header (0 = not used). With a count `N` the client is
    /// the `N`th entry from the right; without `trusted_proxies` every peer is then taken as a
    /// proxy, so only use it alone when nothing but the proxy can reach the servers.
    #[serde(default)]
    pub trusted_hops: u8,
    /// Special-purpose ranges (private, documentation, ...) whose addresses may be reported
    /// anyway: internal clients, tests, demos. Any other special-purpose address is never
    /// reported (counted as `palisade_sensor_unattributed_total{reason="special_range"}`).
    #[serde(default)]
    pub report_special: Vec<IpNet>,
    /// Directory of YAML rule files; absent = the built-in rules.
    #[serde(default)]
    pub rules: Option<PathBuf>,
    /// At most one report per client IP and rule within this many seconds.
    #[serde(default = "default_report_window_secs")]
    pub report_window_secs: u64,
    /// Address of the Prometheus `/metrics` endpoint; absent = no endpoint.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// eBPF capture settings (`source = "ebpf"`).
    #[serde(default)]
    pub ebpf: EbpfConfig,
    /// Access-log settings (`source = "log"`).
    #[serde(default)]
    pub log: LogConfig,
    /// Mirror settings (`source = "mirror"`).
    #[serde(default)]
    pub mirror: MirrorConfig,
    /// Inline proxy settings (`source = "proxy"`).
    #[serde(default)]
    pub proxy: ProxyConfig,
    /// Reassembly bounds (eBPF, mirror and proxy sources; `max_body_inspect` bounds the body
    /// bytes inspected per request on every source).
    #[serde(default)]
    pub reassembly: ReassemblyConfig,
    /// NATS connection and publishing.
    #[serde(default)]
    pub nats: NatsConfig,
    /// Detection beside the built-in rules: the OWASP Core Rule Set.
    #[serde(default)]
    pub detect: DetectConfig,
    /// Where reports' runtime context (pod, namespace, container) comes from on a node.
    #[serde(default)]
    pub context: ContextConfig,
}

/// `[context]`: where a node-wide sensor finds which pod and container received a request.
/// Nothing here is read until a capture source names a receiving socket's cgroup.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ContextConfig {
    /// The cgroup v2 hierarchy whose directory inode numbers are the cgroup ids the kernel
    /// reports. Absent = the cgroup2 mount found in `/proc/mounts` (`/sys/fs/cgroup`, or
    /// `/sys/fs/cgroup/unified` on a hybrid host). In a container, mount the host's hierarchy
    /// and name it here.
    #[serde(default)]
    pub cgroup_root: Option<PathBuf>,
    /// The kubelet's pod log directory (`<namespace>_<pod>_<uid>/<container>/`), which names
    /// pods and containers without API access; its sibling `containers` directory
    /// (`/var/log/containers`) tells several containers of a pod apart.
    #[serde(default = "default_pod_logs_dir")]
    pub pod_logs_dir: PathBuf,
    /// The node's container runtime (`containerd`, `cri-o`, `docker`), for the cgroupfs
    /// driver, whose cgroup names a container by its bare id: reports then say
    /// `containerd://<id>`. Absent = the bare id. (systemd-driver paths name their runtime.)
    #[serde(default)]
    pub container_runtime: Option<crate::context::Runtime>,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig {
            cgroup_root: None,
            pod_logs_dir: default_pod_logs_dir(),
            container_runtime: None,
        }
    }
}

fn default_pod_logs_dir() -> PathBuf {
    PathBuf::from("/var/log/pods")
}

/// The `[context]` settings as flags (and `PALISADE_*` variables), flattened into the
/// binary's command line: each is defined once, here, beside its file setting.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ContextArgs {
    /// cgroup v2 hierarchy to resolve cgroup ids in (default: the cgroup2 mount in
    /// /proc/mounts; hybrid hosts: /sys/fs/cgroup/unified).
    #[arg(long, env = "PALISADE_CGROUP_ROOT", value_name = "DIR")]
    pub cgroup_root: Option<PathBuf>,
    /// The kubelet's pod log directory, to name pods and containers (default /var/log/pods).
    #[arg(long, env = "PALISADE_POD_LOGS_DIR", value_name = "DIR")]
    pub pod_logs_dir: Option<PathBuf>,
    /// The node's container runtime (containerd, cri-o, docker), naming the bare container ids
    /// of the cgroupfs driver.
    #[arg(long, env = "PALISADE_CONTAINER_RUNTIME", value_name = "RUNTIME")]
    pub container_runtime: Option<crate::context::Runtime>,
}

impl ContextArgs {
    /// Override the file's `[context]` with the flags that were given.
    pub fn apply(self, config: &mut ContextConfig) {
        if let Some(v) = self.cgroup_root {
            config.cgroup_root = Some(v);
        }
        if let Some(v) = self.pod_logs_dir {
            config.pod_logs_dir = v;
        }
        if let Some(v) = self.container_runtime {
            config.container_runtime = Some(v);
        }
    }
}

/// `[detect]`: the OWASP Core Rule Set engine (off unless `crs_dir` is set).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DetectConfig {
    /// A CRS tree: a 4.x release directory (with `crs-setup.conf` or `crs-setup.conf.example`,
    /// `rules/`, optional `plugins/`), or Debian's `/usr/share/modsecurity-crs`. Absent = CRS
    /// off, built-in rules only.
    #[serde(default)]
    pub crs_dir: Option<PathBuf>,
    /// `crs-setup.conf` when it is not inside `crs_dir` (Debian: `/etc/modsecurity/crs/
    /// crs-setup.conf`, found by itself).
    #[serde(default)]
    pub crs_setup: Option<PathBuf>,
    /// Extra SecLang files loaded after the tree: the site's exclusions
    /// (`SecRuleRemoveById`, `SecRuleUpdateTargetById`, rules with `ctl:ruleRemove*`).
    #[serde(default)]
    pub crs_exclusions: Vec<PathBuf>,
    /// Paranoia level, 1-4.
    #[serde(default = "default_paranoia")]
    pub paranoia: u8,
    /// Inbound anomaly score from which a request is reported (attack-family rules only).
    #[serde(default = "default_anomaly_threshold")]
    pub anomaly_threshold: i64,
    /// Requests waiting for the Core Rule Set worker (eBPF, mirror, proxy). CRS runs on its own
    /// thread so that it never delays the built-in rules; when this many requests wait, more
    /// are inspected by the built-in rules only and counted in
    /// `palisade_sensor_crs_shed_total`. 0 runs CRS inline, on the capture thread.
    #[serde(default = "default_crs_queue")]
    pub crs_queue: usize,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            crs_dir: None,
            crs_setup: None,
            crs_exclusions: Vec::new(),
            paranoia: default_paranoia(),
            anomaly_threshold: default_anomaly_threshold(),
            crs_queue: default_crs_queue(),
        }
    }
}

fn default_crs_queue() -> usize {
    4096
}

fn default_paranoia() -> u8 {
    1
}

fn default_anomaly_threshold() -> i64 {
    crate::detect::crs::DEFAULT_THRESHOLD
}

impl DetectConfig {
    /// The engine settings, when CRS is on.
    pub fn crs_settings(&self) -> Option<crate::detect::crs::CrsSettings> {
        let dir = self.crs_dir.clone()?;
        Some(crate::detect::crs::CrsSettings {
            dir,
            setup: self.crs_setup.clone(),
            paranoia: self.paranoia,
            threshold: self.anomaly_threshold,
            extra: self.crs_exclusions.clone(),
        })
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sensor_id: default_sensor_id(),
            source: Source::default(),
            trusted_proxies: Vec::new(),
            client_ip_header: ClientHeader::default(),
            trusted_hops: 0,
            report_special: Vec::new(),
            rules: None,
            report_window_secs: default_report_window_secs(),
            metrics_listen: None,
            ebpf: EbpfConfig::default(),
            log: LogConfig::default(),
            mirror: MirrorConfig::default(),
            proxy: ProxyConfig::default(),
            reassembly: ReassemblyConfig::default(),
            nats: NatsConfig::default(),
            detect: DetectConfig::default(),
            context: ContextConfig::default(),
        }
    }
}

/// Smallest accepted `ebpf.max_tracked_flows`.
const MIN_TRACKED_FLOWS: u32 = 64;
/// Largest accepted `ebpf.max_tracked_flows` (three LRU maps of ~100 bytes per entry each).
const MAX_TRACKED_FLOWS: u32 = 1 << 24;

/// eBPF capture settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EbpfConfig {
    /// Interfaces to attach the TC programs to (ingress capture, egress handshake tracking;
    /// e.g. `eth0`, or a veth of a pod). The server's replies must leave through them too.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Destination TCP ports carrying plain HTTP.
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
    /// Watch every destination port (`--port any`): a connection is inspected when its
    /// handshake was seen and its first bytes are an HTTP/1.x request method; any other flow
    /// costs one look at its first data segment. `ports` is then not needed.
    #[serde(default)]
    pub any_port: bool,
    /// Payload bytes copied per segment (one skb, up to ~64 KiB with GRO), 1 to 65536; the
    /// kernel splits them into ring-buffer records of at most 4096 bytes. Default 65536: whole
    /// requests, so an attack after kilobytes of padding is still seen.
    #[serde(default = "default_capture_bytes")]
    pub capture_bytes: u32,
    /// Entries of each kernel flow-tracking map (handshakes pending, connections established,
    /// skip hints; LRU). Flows beyond it evict the least recently used: an evicted established
    /// connection is no longer attributed (its reports are withheld, never misattributed).
    #[serde(default = "default_max_tracked_flows")]
    pub max_tracked_flows: u32,
    /// Ring-buffer size in bytes (a power of two multiple of the page size).
    #[serde(default = "default_ring_bytes")]
    pub ring_bytes: u32,
    /// Unread bytes in the ring past which the kernel wakes the reader early.
    #[serde(default = "default_wakeup_bytes")]
    pub wakeup_bytes: u32,
    /// How often the reader drains the ring without a wakeup, in milliseconds.
    #[serde(default = "default_poll_ms")]
    pub poll_ms: u64,
}

impl Default for EbpfConfig {
    fn default() -> Self {
        EbpfConfig {
            interfaces: Vec::new(),
            ports: default_ports(),
            any_port: false,
            capture_bytes: default_capture_bytes(),
            max_tracked_flows: default_max_tracked_flows(),
            ring_bytes: default_ring_bytes(),
            wakeup_bytes: default_wakeup_bytes(),
            poll_ms: default_poll_ms(),
        }
    }
}

/// Access-log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// nginx `combined` (optionally followed by a quoted `$http_x_forwarded_for`).
    #[default]
    Nginx,
    /// JSON lines, one object per request (envoy-style keys; see docs/sensor.md).
    Json,
    /// AWS Application Load Balancer access logs.
    Alb,
}

impl std::str::FromStr for LogFormat {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "nginx" | "combined" => Ok(LogFormat::Nginx),
            "json" | "envoy" => Ok(LogFormat::Json),
            "alb" => Ok(LogFormat::Alb),
            other => Err(Error::Config(format!(
                "unknown log format `{other}` (expected nginx, json or alb)"
            ))),
        }
    }
}

/// Access-log source settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Log files to follow.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Line format.
    #[serde(default)]
    pub format: LogFormat,
    /// Read each file from its beginning instead of its end.
    #[serde(default)]
    pub from_start: bool,
    /// Stop at the end of the files (one-shot mode) and print a summary.
    #[serde(default)]
    pub exit_at_eof: bool,
    /// How often files are checked for new lines and rotation, in milliseconds.
    #[serde(default = "default_log_poll_ms")]
    pub poll_ms: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            files: Vec::new(),
            format: LogFormat::default(),
            from_start: false,
            exit_at_eof: false,
            poll_ms: default_log_poll_ms(),
        }
    }
}

/// `[mirror]`: the local port the pod's proxy mirrors every request to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Address to accept mirrored requests on. Keep it on loopback: only the pod's own proxy
    /// may reach it (connections from other addresses are refused and counted).
    #[serde(default = "default_mirror_listen")]
    pub listen: SocketAddr,
    /// The header the proxy sets, overwriting any client value, to the address it received the
    /// request from (nginx `proxy_set_header X-Palisade-Peer $remote_addr;`). It stands for the
    /// TCP peer of the eBPF path: `trusted_proxies` / `trusted_hops` decide from there. A
    /// mirrored request without it (exactly once) is rejected and counted.
    #[serde(default = "default_peer_header")]
    pub peer_header: String,
    /// Mirrored requests waiting for inspection; past it (or past `queue_bytes`) new ones are
    /// dropped and counted, never waited for.
    #[serde(default = "default_mirror_queue")]
    pub queue: usize,
    /// Bytes of mirrored requests waiting for inspection.
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: usize,
    /// Connections from the proxy served at once; more are closed at once (counted).
    #[serde(default = "default_mirror_connections")]
    pub max_connections: usize,
    /// A connection with no complete request for this many seconds is closed.
    #[serde(default = "default_idle_secs")]
    pub idle_secs: u64,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig {
            listen: default_mirror_listen(),
            peer_header: default_peer_header(),
            queue: default_mirror_queue(),
            queue_bytes: default_queue_bytes(),
            max_connections: default_mirror_connections(),
            idle_secs: default_idle_secs(),
        }
    }
}

/// `[proxy]`: the sensor as a streaming TCP proxy in front of the app.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// Address the clients (the load balancer) connect to: the service port.
    #[serde(default)]
    pub listen: Option<SocketAddr>,
    /// The application, on localhost (`127.0.0.1:8081`).
    #[serde(default)]
    pub upstream: Option<SocketAddr>,
    /// Copies of client bytes waiting for inspection; past it (or `queue_bytes`) copies are
    /// dropped and counted while the bytes still flow to the app.
    #[serde(default = "default_proxy_queue")]
    pub queue: usize,
    /// Bytes of copies waiting for inspection.
    #[serde(default = "default_queue_bytes")]
    pub queue_bytes: usize,
    /// Client connections served at once; more wait in the listen backlog.
    #[serde(default = "default_proxy_connections")]
    pub max_connections: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            listen: None,
            upstream: None,
            queue: default_proxy_queue(),
            queue_bytes: default_queue_bytes(),
            max_connections: default_proxy_connections(),
        }
    }
}

/// Reassembly bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReassemblyConfig {
    /// Most flows tracked at once; the least recently used is evicted past it.
    #[serde(default = "default_max_flows")]
    pub max_flows: usize,
    /// Most buffered bytes per flow (request head being assembled + out-of-order segments).
    #[serde(default = "default_max_flow_bytes")]
    pub max_flow_bytes: usize,
    /// Most buffered bytes over all flows; least recently used flows are evicted past it.
    #[serde(default = "default_max_total_bytes")]
    pub max_total_bytes: usize,
    /// Out-of-order segments kept per flow while waiting for a missing one.
    #[serde(default = "default_max_out_of_order")]
    pub max_out_of_order: usize,
    /// Flows idle for this many seconds are forgotten.
    #[serde(default = "default_flow_idle_secs")]
    pub flow_idle_secs: u64,
    /// Bytes of each request body (de-chunked) inspected, window by window; the rest of a
    /// longer body is skipped by its framing (and counted). 0 = bodies are not inspected.
    #[serde(default = "default_max_body_inspect")]
    pub max_body_inspect: usize,
    /// Size of one body window handed to the detector, in bytes (1024 to 1 MiB). A field cut
    /// by a window's end is carried over to the next window whole (up to half a window).
    #[serde(default = "default_body_window")]
    pub body_window: usize,
    /// Per-flow budget: most bytes one flow holds for body inspection (the request head kept
    /// to label later windows, plus one window). A request whose head and window do not fit
    /// has its body skipped past what arrived with the head (counted).
    #[serde(default = "default_max_flow_body_bytes")]
    pub max_flow_body_bytes: usize,
    /// Global budget: most bytes all flows together hold for body inspection. Past it, bodies
    /// starting are skipped past what arrived with their head (counted); heads are always
    /// inspected.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
}

impl Default for ReassemblyConfig {
    fn default() -> Self {
        ReassemblyConfig {
            max_flows: default_max_flows(),
            max_flow_bytes: default_max_flow_bytes(),
            max_total_bytes: default_max_total_bytes(),
            max_out_of_order: default_max_out_of_order(),
            flow_idle_secs: default_flow_idle_secs(),
            max_body_inspect: default_max_body_inspect(),
            body_window: default_body_window(),
            max_flow_body_bytes: default_max_flow_body_bytes(),
            max_body_bytes: default_max_body_bytes(),
        }
    }
}

/// NATS connection (same options as the blocker) and publishing.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsConfig {
    /// Server URL(s), comma separated (`nats://host:4222`, `tls://host:4222`).
    #[serde(default = "default_nats_url")]
    pub url: String,
    /// User name (with `password`).
    #[serde(default)]
    pub user: Option<String>,
    /// Password (with `user`).
    #[serde(default)]
    pub password: Option<String>,
    /// Authentication token.
    #[serde(default)]
    pub token: Option<String>,
    /// NKey seed (`SU...`).
    #[serde(default)]
    pub nkey_seed: Option<String>,
    /// Credentials file (JWT + NKey seed, `.creds`).
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// CA certificate (PEM) to verify the server.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS (with `tls_client_key`). Same names as the
    /// blocker's `[nats]` table; the earlier `tls_cert` is still read.
    #[serde(default, alias = "tls_cert")]
    pub tls_client_cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS (with `tls_client_cert`; earlier `tls_key`).
    #[serde(default, alias = "tls_key")]
    pub tls_client_key: Option<PathBuf>,
    /// Refuse a connection without TLS (earlier `require_tls`).
    #[serde(default, alias = "require_tls")]
    pub tls_required: bool,
    /// Create the `PALISADE_REPORTS` stream if it does not exist (same settings as the blocker).
    #[serde(default = "default_true")]
    pub create_stream: bool,
    /// Copies of the stream on different servers of a NATS cluster (1 to 5), when the sensor
    /// creates it. Same name and default as the blocker's `[nats]`.
    #[serde(default = "default_stream_replicas")]
    pub stream_replicas: usize,
    /// Size limit of the stream in bytes, -1 for none, when the sensor creates it.
    #[serde(default = "default_stream_max_bytes")]
    pub stream_max_bytes: i64,
    /// At `stream_max_bytes`: `old` deletes the oldest reports, `new` refuses new ones.
    #[serde(default)]
    pub stream_discard: palisade_wire::nats::Discard,
    /// Reports waiting for NATS (unreachable or slow) before new ones are dropped and counted.
    #[serde(default = "default_buffer")]
    pub buffer: usize,
    /// Publishes awaiting their JetStream ack at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Seconds to wait for a publish ack before retrying.
    #[serde(default = "default_ack_timeout_secs")]
    pub ack_timeout_secs: u64,
}

impl NatsConfig {
    /// The stream the sensor creates when missing: the shared defaults (the blocker's) with
    /// this table's replicas, size limit and discard policy.
    pub fn stream_settings(&self) -> palisade_wire::nats::StreamSettings {
        palisade_wire::nats::StreamSettings {
            replicas: self.stream_replicas,
            max_bytes: self.stream_max_bytes,
            discard: self.stream_discard,
            ..palisade_wire::nats::StreamSettings::default()
        }
    }

    /// The authentication and TLS settings, as the shared connector takes them.
    pub fn auth(&self) -> palisade_wire::nats::Auth<'_> {
        palisade_wire::nats::Auth {
            user: self.user.as_deref(),
            password: self.password.as_deref(),
            token: self.token.as_deref(),
            nkey_seed: self.nkey_seed.as_deref(),
            creds_file: self.creds_file.as_deref(),
            tls_ca: self.tls_ca.as_deref(),
            tls_client_cert: self.tls_client_cert.as_deref(),
            tls_client_key: self.tls_client_key.as_deref(),
            tls_required: self.tls_required,
        }
    }
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            url: default_nats_url(),
            user: None,
            password: None,
            token: None,
            nkey_seed: None,
            creds_file: None,
            tls_ca: None,
            tls_client_cert: None,
            tls_client_key: None,
            tls_required: false,
            create_stream: true,
            stream_replicas: default_stream_replicas(),
            stream_max_bytes: default_stream_max_bytes(),
            stream_discard: palisade_wire::nats::Discard::default(),
            buffer: default_buffer(),
            max_in_flight: default_max_in_flight(),
            ack_timeout_secs: default_ack_timeout_secs(),
        }
    }
}

fn default_sensor_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    if id.is_empty() {
        "sensor".to_owned()
    } else {
        id
    }
}
fn default_mirror_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9099))
}
fn default_peer_header() -> String {
    "x-palisade-peer".to_owned()
}
fn default_mirror_queue() -> usize {
    1024
}
fn default_proxy_queue() -> usize {
    4096
}
fn default_queue_bytes() -> usize {
    32 * 1024 * 1024
}
fn default_mirror_connections() -> usize {
    256
}
fn default_proxy_connections() -> usize {
    4096
}
fn default_idle_secs() -> u64 {
    60
}
fn default_report_window_secs() -> u64 {
    60
}
fn default_ports() -> Vec<u16> {
    vec![80]
}
fn default_capture_bytes() -> u32 {
    palisade_sensor_common::DEFAULT_CAPTURE
}
fn default_max_tracked_flows() -> u32 {
    palisade_sensor_common::DEFAULT_TRACKED_FLOWS
}
fn default_ring_bytes() -> u32 {
    8 * 1024 * 1024
}
fn default_wakeup_bytes() -> u32 {
    256 * 1024
}
fn default_poll_ms() -> u64 {
    20
}
fn default_log_poll_ms() -> u64 {
    250
}
fn default_max_flows() -> usize {
    65_536
}
fn default_max_flow_bytes() -> usize {
    32 * 1024
}
fn default_max_total_bytes() -> usize {
    256 * 1024 * 1024
}
fn default_max_out_of_order() -> usize {
    8
}
fn default_flow_idle_secs() -> u64 {
    120
}
fn default_max_body_inspect() -> usize {
    64 * 1024
}
fn default_body_window() -> usize {
    8 * 1024
}
fn default_max_flow_body_bytes() -> usize {
    32 * 1024
}
fn default_max_body_bytes() -> usize {
    64 * 1024 * 1024
}
fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".to_owned()
}
fn default_stream_replicas() -> usize {
    palisade_wire::nats::DEFAULT_STREAM_REPLICAS
}
fn default_stream_max_bytes() -> i64 {
    palisade_wire::nats::DEFAULT_STREAM_MAX_BYTES
}
fn default_true() -> bool {
    true
}
fn default_buffer() -> usize {
    10_000
}
fn default_max_in_flight() -> usize {
    64
}
fn default_ack_timeout_secs() -> u64 {
    5
}

impl MirrorConfig {
    fn validate(&self) -> Result<(), Error> {
        let name = self.peer_header.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(Error::Config(format!(
                "mirror.peer_header must be a header name (letters, digits, '-'), got `{}`",
                self.peer_header
            )));
        }
        if self.queue == 0 || self.queue_bytes == 0 || self.max_connections == 0 {
            return Err(Error::Config(
                "mirror.queue, mirror.queue_bytes and mirror.max_connections must be at least 1"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

impl ProxyConfig {
    fn validate(&self) -> Result<(), Error> {
        if self.listen.is_none() || self.upstream.is_none() {
            return Err(Error::Config(
                "source proxy needs a listen address and an upstream (--proxy-listen, \
                 --proxy-upstream)"
                    .to_owned(),
            ));
        }
        if self.listen == self.upstream {
            return Err(Error::Config(
                "proxy.listen and proxy.upstream are the same address".to_owned(),
            ));
        }
        if self.queue == 0 || self.queue_bytes == 0 || self.max_connections == 0 {
            return Err(Error::Config(
                "proxy.queue, proxy.queue_bytes and proxy.max_connections must be at least 1"
                    .to_owned(),
            ));
        }
        Ok(())
    }
}

impl Config {
    /// Read and check a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, Error> {
        let config = Config::read_file(path)?;
        config
            .validate()
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    /// Read a TOML file without checking the values: flags and environment variables may
    /// still complete it (an interface given with `--interface`); call [`Config::validate`]
    /// once they are applied.
    pub fn read_file(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// Parse and check TOML text.
    pub fn from_toml(text: &str) -> Result<Config, Error> {
        let config: Config = toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// The source this configuration runs: `source`, with `auto` resolved to `ebpf` (TC) when
    /// interfaces are listed (so configurations written for TC keep their behaviour) and to
    /// `cgroup` otherwise.
    pub fn effective_source(&self) -> Source {
        match self.source {
            Source::Auto if self.ebpf.interfaces.is_empty() => Source::Cgroup,
            Source::Auto => Source::Ebpf,
            s => s,
        }
    }

    /// Check values that serde cannot.
    pub fn validate(&self) -> Result<(), Error> {
        palisade_wire::validate_sensor_id(&self.sensor_id)
            .map_err(|e| Error::Config(format!("sensor_id: {e}")))?;
        if self.trusted_hops > 0 && self.client_ip_header == ClientHeader::None {
            return Err(Error::Config(
                "trusted_hops needs a client_ip_header (x-forwarded-for, forwarded or x-real-ip)"
                    .into(),
            ));
        }
        if self.trusted_hops > 1 && self.client_ip_header == ClientHeader::XRealIp {
            return Err(Error::Config(
                "trusted_hops > 1 with client_ip_header = x-real-ip: that header holds one address"
                    .into(),
            ));
        }
        if !(1..=4).contains(&self.detect.paranoia) {
            return Err(Error::Config(format!(
                "detect.paranoia must be 1 to 4, got {}",
                self.detect.paranoia
            )));
        }
        if self.detect.anomaly_threshold < 1 {
            return Err(Error::Config(format!(
                "detect.anomaly_threshold must be at least 1, got {}",
                self.detect.anomaly_threshold
            )));
        }
        let cb = self.ebpf.capture_bytes;
        if cb == 0 || cb > palisade_sensor_common::MAX_CAPTURE_BYTES {
            return Err(Error::Config(format!(
                "ebpf.capture_bytes must be 1 to {}, got {cb}",
                palisade_sensor_common::MAX_CAPTURE_BYTES
            )));
        }
        let flows = self.ebpf.max_tracked_flows;
        if !(MIN_TRACKED_FLOWS..=MAX_TRACKED_FLOWS).contains(&flows) {
            return Err(Error::Config(format!(
                "ebpf.max_tracked_flows must be {MIN_TRACKED_FLOWS} to {MAX_TRACKED_FLOWS}, got {flows}"
            )));
        }
        if !self.ebpf.ring_bytes.is_power_of_two() || self.ebpf.ring_bytes < 4096 {
            return Err(Error::Config(format!(
                "ebpf.ring_bytes must be a power of two of at least 4096, got {}",
                self.ebpf.ring_bytes
            )));
        }
        let window = self.reassembly.body_window;
        if !(1024..=1024 * 1024).contains(&window) {
            return Err(Error::Config(format!(
                "reassembly.body_window must be 1024 to 1048576 bytes, got {window}"
            )));
        }
        if self.nats.buffer == 0 || self.nats.max_in_flight == 0 {
            return Err(Error::Config(
                "nats.buffer and nats.max_in_flight must be at least 1".to_owned(),
            ));
        }
        self.nats.auth().check().map_err(Error::Config)?;
        palisade_wire::nats::server_addrs(&self.nats.url).map_err(Error::Config)?;
        self.nats.stream_settings().check().map_err(Error::Config)?;
        match self.effective_source() {
            Source::Ebpf if self.ebpf.interfaces.is_empty() => Err(Error::Config(
                "source ebpf needs at least one interface (--interface); without one, \
                 --source cgroup sees every local socket"
                    .to_owned(),
            )),
            s @ (Source::Ebpf | Source::Cgroup)
                if self.ebpf.ports.is_empty() && !self.ebpf.any_port =>
            {
                Err(Error::Config(format!(
                    "source {} needs at least one port (--port, or --port any)",
                    s.name()
                )))
            }
            Source::Log if self.log.files.is_empty() => Err(Error::Config(
                "source log needs at least one file (--log-file)".to_owned(),
            )),
            Source::Mirror => self.mirror.validate(),
            Source::Proxy => self.proxy.validate(),
            _ => Ok(()),
        }
    }

    /// The report window as a duration.
    pub fn report_window(&self) -> Duration {
        Duration::from_secs(self.report_window_secs)
    }

    /// How the client address is found (`trusted_proxies`, `client_ip_header`, `trusted_hops`,
    /// `report_special`).
    pub fn attribution(&self) -> Attribution {
        Attribution::new(
            self.client_ip_header,
            self.trusted_proxies.clone(),
            self.trusted_hops,
            self.report_special.clone(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/sensor.example.toml");
        let config = Config::from_file(&path).unwrap();
        assert_eq!(config.source, Source::Ebpf);
        assert_eq!(config.ebpf.interfaces, vec!["eth0".to_owned()]);
        assert_eq!(config.ebpf.ports, vec![80, 8080]);
        assert_eq!(config.trusted_proxies.len(), 2);
        assert_eq!(config.log.format, LogFormat::Nginx);
        assert_eq!(config.context, ContextConfig::default());
    }

    #[test]
    fn kubernetes_configs_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/kubernetes");
        let node = Config::from_file(&dir.join("sensor.toml")).unwrap();
        assert_eq!(
            node.context.cgroup_root,
            Some(PathBuf::from("/host/sys/fs/cgroup")),
            "the host hierarchy the DaemonSet mounts"
        );
        assert_eq!(node.context.pod_logs_dir, PathBuf::from("/var/log/pods"));
        Config::from_file(&dir.join("fargate/sensor.toml")).unwrap();
    }

    #[test]
    fn shipped_deployment_configs_parse() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/kubernetes");
        for (file, source) in [
            ("sensor.toml", Source::Cgroup),
            ("fargate/sensor.toml", Source::Mirror),
        ] {
            let path = root.join(file);
            let config = Config::from_file(&path).unwrap();
            assert_eq!(config.source, source, "{file}");
        }
    }

    #[test]
    fn nats_tls_names_match_the_blocker_and_old_names_still_parse() {
        let base = "sensor_id = \"s1\"\n[ebpf]\ninterfaces = [\"lo\"]\n[nats]\n";
        let new = Config::from_toml(&format!(
            "{base}tls_client_cert = \"/c.pem\"\ntls_client_key = \"/k.pem\"\ntls_required = true\n"
        ))
        .unwrap();
        let old = Config::from_toml(&format!(
            "{base}tls_cert = \"/c.pem\"\ntls_key = \"/k.pem\"\nrequire_tls = true\n"
        ))
        .unwrap();
        assert_eq!(new.nats, old.nats);
        assert!(new.nats.tls_required);
        let half = Config::from_toml(&format!("{base}tls_client_cert = \"/c.pem\"\n"));
        assert!(half.unwrap_err().to_string().contains("tls_client_key"));
    }

    #[test]
    fn stream_settings_have_the_blockers_names_and_defaults() {
        let base = "sensor_id = \"s1\"\n[ebpf]\ninterfaces = [\"lo\"]\n[nats]\n";
        let c = Config::from_toml(base).unwrap();
        assert_eq!(
            c.nats.stream_settings(),
            palisade_wire::nats::StreamSettings::default()
        );
        let c = Config::from_toml(&format!(
            "{base}url = \"nats://a:4222, nats://b:4222\"\nstream_replicas = 3\n\
             stream_max_bytes = 1073741824\nstream_discard = \"new\"\n"
        ))
        .unwrap();
        let s = c.nats.stream_settings().config();
        assert_eq!((s.num_replicas, s.max_bytes), (3, 1 << 30), "{:?}", c.nats);
        assert_eq!(s.discard, async_nats::jetstream::stream::DiscardPolicy::New);
        let err = Config::from_toml(&format!("{base}stream_replicas = 7\n")).unwrap_err();
        assert!(err.to_string().contains("stream_replicas"), "{err}");
        let err = Config::from_toml(&format!("{base}url = \"nats://a:4222,,\"\n")).unwrap_err();
        assert!(err.to_string().contains("element 2 of 3"), "{err}");
    }

    #[test]
    fn a_partial_file_is_read_unchecked_for_flags_to_complete() {
        let dir = std::env::temp_dir().join(format!("palisade-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("partial.toml");
        std::fs::write(
            &path,
            "source = \"ebpf\"\n[reassembly]\nmax_flows = 20000\n",
        )
        .unwrap();
        // No interface yet: the flags add it, then the whole is checked.
        assert!(Config::from_file(&path).is_err());
        let mut c = Config::read_file(&path).unwrap();
        c.ebpf.interfaces = vec!["lo".into()];
        c.validate().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_default_source_is_cgroup_unless_interfaces_are_listed() {
        let c = Config::from_toml("sensor_id = \"s1\"\n").unwrap();
        assert_eq!(c.source, Source::Auto);
        assert_eq!(c.effective_source(), Source::Cgroup);
        let c = Config::from_toml("sensor_id = \"s1\"\n[ebpf]\ninterfaces = [\"eth0\"]\n").unwrap();
        assert_eq!(
            c.effective_source(),
            Source::Ebpf,
            "TC configurations keep TC"
        );
        let c = Config::from_toml("source = \"tc\"\n[ebpf]\ninterfaces = [\"eth0\"]\n").unwrap();
        assert_eq!(
            c.effective_source(),
            Source::Ebpf,
            "tc is ebpf's other name"
        );
        let c =
            Config::from_toml("source = \"cgroup\"\n[ebpf]\ninterfaces = [\"eth0\"]\n").unwrap();
        assert_eq!(
            c.effective_source(),
            Source::Cgroup,
            "an explicit source wins"
        );
        let err = Config::from_toml("source = \"cgroup\"\n[ebpf]\nports = []\n").unwrap_err();
        assert!(err.to_string().contains("port"), "{err}");
        assert_eq!("tc".parse::<Source>().unwrap(), Source::Ebpf);
        assert_eq!("cgroup".parse::<Source>().unwrap(), Source::Cgroup);
        assert!(
            "xdp"
                .parse::<Source>()
                .unwrap_err()
                .to_string()
                .contains("cgroup")
        );
    }

    #[test]
    fn unknown_field_is_rejected() {
        let err = Config::from_toml("source = \"log\"\nbogus = 1\n").unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn bad_values_are_rejected() {
        let base = "sensor_id = \"s1\"\n[ebpf]\ninterfaces = [\"lo\"]\n";
        assert!(Config::from_toml(base).is_ok());
        assert!(Config::from_toml(&format!("{base}capture_bytes = 0\n")).is_err());
        assert!(Config::from_toml(&format!("{base}capture_bytes = 9000\n")).is_ok());
        assert!(Config::from_toml(&format!("{base}capture_bytes = 65536\n")).is_ok());
        assert!(Config::from_toml(&format!("{base}capture_bytes = 65537\n")).is_err());
        assert!(Config::from_toml(&format!("{base}max_tracked_flows = 63\n")).is_err());
        assert!(Config::from_toml(&format!("{base}max_tracked_flows = 1000000\n")).is_ok());
        let c = Config::from_toml(base).unwrap();
        assert_eq!(c.ebpf.capture_bytes, 65_536, "whole segments by default");
        assert_eq!(c.ebpf.max_tracked_flows, 65_536);
        assert!(Config::from_toml(&format!("{base}ring_bytes = 5000\n")).is_err());
        assert!(Config::from_toml("sensor_id = \"a.b\"\n[ebpf]\ninterfaces = [\"lo\"]\n").is_err());
        assert!(Config::from_toml("source = \"log\"\n").is_err());
        assert!(Config::from_toml("trusted_proxies = [\"nope\"]\n").is_err());
    }
}
