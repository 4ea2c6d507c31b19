//! `palisade-sensor`: flags and environment over the configuration file, then
//! [`palisade_sensor::run`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use ipnet::IpNet;
use palisade_sensor::clientip::ClientHeader;
use palisade_sensor::config::{Config, LogFormat, Source};
use palisade_sensor::metrics::Metrics;
use tracing::error;

mod tools;

// jemalloc: the detector allocates per request; faster than glibc's malloc (Cargo.toml)
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Sees malicious HTTP requests (eBPF on network interfaces, requests mirrored by the pod's
/// proxy, an inline proxy, or access logs) and reports them to NATS JetStream for the
/// Palisade blocker.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (TOML); flags and environment variables override it.
    #[arg(long, env = "PALISADE_CONFIG")]
    config: Option<PathBuf>,
    /// Request source: cgroup (eBPF at the cgroup v2 root: every local socket), ebpf (TC on
    /// --interface), log, mirror or proxy. Default: cgroup, or ebpf when interfaces are given.
    #[arg(long, env = "PALISADE_SOURCE")]
    source: Option<Source>,
    /// Address the mirror source accepts the proxy's mirrored requests on (default
    /// 127.0.0.1:9099).
    #[arg(long, env = "PALISADE_MIRROR_LISTEN")]
    mirror_listen: Option<SocketAddr>,
    /// Header the pod's proxy sets to the address it received each request from (default
    /// x-palisade-peer).
    #[arg(long, env = "PALISADE_MIRROR_PEER_HEADER")]
    mirror_peer_header: Option<String>,
    /// Address the proxy source listens on (the service port, e.g. 0.0.0.0:8080).
    #[arg(long, env = "PALISADE_PROXY_LISTEN")]
    proxy_listen: Option<SocketAddr>,
    /// The application the proxy source forwards to (e.g. 127.0.0.1:8081).
    #[arg(long, env = "PALISADE_PROXY_UPSTREAM")]
    proxy_upstream: Option<SocketAddr>,
    /// Interface to capture on with TC (repeatable; env: comma separated). Not needed by the
    /// cgroup source.
    #[arg(long = "interface", env = "PALISADE_INTERFACE", value_delimiter = ',')]
    interfaces: Vec<String>,
    /// Destination port carrying plain HTTP (repeatable; env: comma separated), or `any`: every
    /// port, inspecting the connections whose first bytes are an HTTP request.
    #[arg(long = "port", env = "PALISADE_PORT", value_delimiter = ',', value_parser = parse_port)]
    ports: Vec<PortArg>,
    /// Payload bytes captured per segment (1-65536).
    #[arg(long, env = "PALISADE_CAPTURE_BYTES")]
    capture_bytes: Option<u32>,
    /// Entries of each kernel flow-tracking map (handshakes, established flows, skip hints).
    #[arg(long, env = "PALISADE_MAX_TRACKED_FLOWS")]
    max_tracked_flows: Option<u32>,
    /// NATS server URL, or the servers of a cluster comma separated.
    #[arg(long, env = "PALISADE_NATS_URL")]
    nats_url: Option<String>,
    /// NATS user (with --nats-password).
    #[arg(long, env = "PALISADE_NATS_USER")]
    nats_user: Option<String>,
    /// NATS password (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "PALISADE_NATS_PASSWORD", hide_env_values = true)]
    nats_password: Option<String>,
    /// NATS token (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "PALISADE_NATS_TOKEN", hide_env_values = true)]
    nats_token: Option<String>,
    /// NATS NKey seed (prefer the environment variable: flags show in `ps`).
    #[arg(long, env = "PALISADE_NATS_NKEY_SEED", hide_env_values = true)]
    nats_nkey_seed: Option<String>,
    /// NATS credentials file.
    #[arg(long, env = "PALISADE_NATS_CREDS")]
    nats_creds: Option<PathBuf>,
    /// This sensor's id (NATS subject token).
    #[arg(long, env = "PALISADE_SENSOR_ID")]
    sensor_id: Option<String>,
    /// CIDR of a proxy / load balancer in front of the servers whose client address header is
    /// believed (repeatable; env: comma separated).
    #[arg(
        long = "trusted-proxy",
        env = "PALISADE_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<IpNet>,
    /// Header the proxies append the client to: x-forwarded-for, forwarded, x-real-ip or none.
    #[arg(long, env = "PALISADE_CLIENT_IP_HEADER")]
    client_ip_header: Option<ClientHeader>,
    /// Number of proxies that append to the header (the client is the Nth entry from the right).
    #[arg(long, env = "PALISADE_TRUSTED_HOPS")]
    trusted_hops: Option<u8>,
    /// Special-purpose CIDR whose addresses may be reported anyway (repeatable; env: comma
    /// separated): internal clients, tests, demos.
    #[arg(
        long = "report-special",
        env = "PALISADE_REPORT_SPECIAL",
        value_delimiter = ','
    )]
    report_special: Vec<IpNet>,
    /// Rules directory (default: the built-in rules).
    #[arg(long, env = "PALISADE_RULES")]
    rules: Option<PathBuf>,
    /// Access-log file to follow (repeatable).
    #[arg(long = "log-file", env = "PALISADE_LOG_FILE", value_delimiter = ',')]
    log_files: Vec<PathBuf>,
    /// Access-log format: nginx, json or alb.
    #[arg(long, env = "PALISADE_LOG_FORMAT")]
    log_format: Option<LogFormat>,
    /// Read log files from their start instead of their end.
    #[arg(long, env = "PALISADE_LOG_FROM_START")]
    log_from_start: bool,
    /// Stop at the end of the log files and print a summary (one-shot).
    #[arg(long, env = "PALISADE_EXIT_AT_EOF")]
    exit_at_eof: bool,
    /// Address for the Prometheus /metrics endpoint (e.g. 127.0.0.1:9101).
    #[arg(long, env = "PALISADE_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Seconds within which a client+rule is reported once.
    #[arg(long, env = "PALISADE_REPORT_WINDOW_SECS")]
    report_window_secs: Option<u64>,
    /// Body bytes inspected per request, window by window (0 = bodies not inspected).
    #[arg(long, env = "PALISADE_MAX_BODY_INSPECT")]
    max_body_inspect: Option<usize>,
    /// Most bytes all flows together hold for body inspection (global budget).
    #[arg(long, env = "PALISADE_MAX_BODY_BYTES")]
    max_body_bytes: Option<usize>,
    /// Log as JSON lines.
    #[arg(long, env = "PALISADE_LOG_JSON")]
    log_json: bool,
    /// OWASP Core Rule Set tree to run beside the built-in rules (a CRS 4.x release directory,
    /// or Debian's /usr/share/modsecurity-crs).
    #[arg(long, env = "PALISADE_CRS_DIR")]
    crs_dir: Option<PathBuf>,
    /// crs-setup.conf when it is not inside --crs-dir.
    #[arg(long, env = "PALISADE_CRS_SETUP")]
    crs_setup: Option<PathBuf>,
    /// Extra SecLang file with the site's CRS exclusions (repeatable; env: comma separated).
    #[arg(
        long = "crs-exclusions",
        env = "PALISADE_CRS_EXCLUSIONS",
        value_delimiter = ','
    )]
    crs_exclusions: Vec<PathBuf>,
    /// CRS paranoia level (1-4).
    #[arg(long, env = "PALISADE_PARANOIA")]
    paranoia: Option<u8>,
    /// CRS inbound anomaly score from which a request is reported.
    #[arg(long, env = "PALISADE_ANOMALY_THRESHOLD")]
    anomaly_threshold: Option<i64>,
    /// Requests waiting for the CRS worker before more are shed to built-in rules only
    /// (0: CRS inline).
    #[arg(long = "crs-queue", env = "PALISADE_CRS_QUEUE", value_name = "N")]
    crs_queue: Option<usize>,
    /// Runtime context: `--cgroup-root`, `--pod-logs-dir`.
    #[command(flatten)]
    context: palisade_sensor::config::ContextArgs,
    /// Load the rules (built-in and CRS), print what was loaded and skipped, and exit.
    #[arg(long)]
    check_rules: bool,
    /// Read one raw HTTP request on stdin, print every rule that matched (variable,
    /// transformations, value) and the scores, and exit.
    #[arg(long)]
    explain: bool,
}

impl Cli {
    fn into_config(self) -> anyhow::Result<Config> {
        let mut c = match &self.config {
            Some(path) => Config::read_file(path)?,
            None => Config::default(),
        };
        if let Some(v) = self.source {
            c.source = v;
        }
        if let Some(v) = self.mirror_listen {
            c.mirror.listen = v;
        }
        if let Some(v) = self.mirror_peer_header {
            c.mirror.peer_header = v;
        }
        if let Some(v) = self.proxy_listen {
            c.proxy.listen = Some(v);
        }
        if let Some(v) = self.proxy_upstream {
            c.proxy.upstream = Some(v);
        }
        if !self.interfaces.is_empty() {
            c.ebpf.interfaces = self.interfaces;
        }
        if !self.ports.is_empty() {
            c.ebpf.any_port = self.ports.contains(&PortArg::Any);
            c.ebpf.ports = self
                .ports
                .iter()
                .filter_map(|p| match p {
                    PortArg::Port(n) => Some(*n),
                    PortArg::Any => None,
                })
                .collect();
        }
        if let Some(v) = self.capture_bytes {
            c.ebpf.capture_bytes = v;
        }
        if let Some(v) = self.max_tracked_flows {
            c.ebpf.max_tracked_flows = v;
        }
        if let Some(v) = self.nats_url {
            c.nats.url = v;
        }
        if let Some(v) = self.nats_user {
            c.nats.user = Some(v);
        }
        if let Some(v) = self.nats_password {
            c.nats.password = Some(v);
        }
        if let Some(v) = self.nats_token {
            c.nats.token = Some(v);
        }
        if let Some(v) = self.nats_nkey_seed {
            c.nats.nkey_seed = Some(v);
        }
        if let Some(v) = self.nats_creds {
            c.nats.creds_file = Some(v);
        }
        if let Some(v) = self.sensor_id {
            c.sensor_id = v;
        }
        if !self.trusted_proxies.is_empty() {
            c.trusted_proxies = self.trusted_proxies;
        }
        if let Some(v) = self.client_ip_header {
            c.client_ip_header = v;
        }
        if let Some(v) = self.trusted_hops {
            c.trusted_hops = v;
        }
        if !self.report_special.is_empty() {
            c.report_special = self.report_special;
        }
        if let Some(v) = self.rules {
            c.rules = Some(v);
        }
        if !self.log_files.is_empty() {
            c.log.files = self.log_files;
        }
        if let Some(v) = self.log_format {
            c.log.format = v;
        }
        c.log.from_start |= self.log_from_start;
        c.log.exit_at_eof |= self.exit_at_eof;
        if let Some(v) = self.metrics_listen {
            c.metrics_listen = Some(v);
        }
        if let Some(v) = self.report_window_secs {
            c.report_window_secs = v;
        }
        if let Some(v) = self.max_body_inspect {
            c.reassembly.max_body_inspect = v;
        }
        if let Some(v) = self.max_body_bytes {
            c.reassembly.max_body_bytes = v;
        }
        if let Some(v) = self.crs_dir {
            c.detect.crs_dir = Some(v);
        }
        if let Some(v) = self.crs_setup {
            c.detect.crs_setup = Some(v);
        }
        if !self.crs_exclusions.is_empty() {
            c.detect.crs_exclusions = self.crs_exclusions;
        }
        if let Some(v) = self.paranoia {
            c.detect.paranoia = v;
        }
        if let Some(v) = self.crs_queue {
            c.detect.crs_queue = v;
        }
        if let Some(v) = self.anomaly_threshold {
            c.detect.anomaly_threshold = v;
        }
        self.context.apply(&mut c.context);
        // the rule tools only load rules: no capture or NATS settings needed
        if !(self.check_rules || self.explain) {
            c.validate()?;
        }
        Ok(c)
    }
}

/// A `--port` value: a port number or `any`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PortArg {
    Port(u16),
    Any,
}

fn parse_port(s: &str) -> Result<PortArg, String> {
    if s.eq_ignore_ascii_case("any") {
        return Ok(PortArg::Any);
    }
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("`{s}` is not a TCP port (1-65535) or `any`")),
        Ok(n) => Ok(PortArg::Port(n)),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    if cli.log_json {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let (check_rules, explain) = (cli.check_rules, cli.explain);
    let config = cli.into_config().context("invalid configuration")?;
    if check_rules {
        return tools::check_rules(&config);
    }
    if explain {
        return tools::explain(&config);
    }
    let one_shot = config.source == Source::Log && config.log.exit_at_eof;
    let metrics = Arc::new(Metrics::default());
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(err) => {
                    error!(cause = %err, "cannot listen for SIGTERM");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let summary = palisade_sensor::run(config, metrics, shutdown)
        .await
        .context("sensor failed")?;
    if one_shot {
        println!("{}", serde_json::to_string(&summary)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensor.toml");
        std::fs::write(
            &path,
            "sensor_id = \"s1\"\n[ebpf]\ninterfaces = [\"lo\"]\n[nats]\n\
             url = \"nats://file:4222\"\nuser = \"file-user\"\npassword = \"file-pass\"\n\
             token = \"file-token\"\nnkey_seed = \"SUFILE\"\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();

        // Without flags the file's values stand.
        let c = Cli::try_parse_from(["palisade-sensor", "--config", config])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(c.nats.user.as_deref(), Some("file-user"));
        assert_eq!(c.nats.token.as_deref(), Some("file-token"));

        let c = Cli::try_parse_from([
            "palisade-sensor",
            "--config",
            config,
            "--nats-url",
            "nats://flag:4222",
            "--nats-user",
            "flag-user",
            "--nats-password",
            "flag-pass",
            "--nats-token",
            "flag-token",
            "--nats-nkey-seed",
            "SUFLAG",
            "--interface",
            "eth0",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(c.nats.url, "nats://flag:4222");
        assert_eq!(c.nats.user.as_deref(), Some("flag-user"));
        assert_eq!(c.nats.password.as_deref(), Some("flag-pass"));
        assert_eq!(c.nats.token.as_deref(), Some("flag-token"));
        assert_eq!(c.nats.nkey_seed.as_deref(), Some("SUFLAG"));
        assert_eq!(c.ebpf.interfaces, vec!["eth0".to_owned()]);
    }

    #[test]
    fn context_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensor.toml");
        std::fs::write(
            &path,
            "[ebpf]\ninterfaces = [\"lo\"]\n[context]\ncgroup_root = \"/file/cgroup\"\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        let c = Cli::try_parse_from(["palisade-sensor", "--config", config])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(c.context.cgroup_root, Some(PathBuf::from("/file/cgroup")));
        assert_eq!(c.context.pod_logs_dir, PathBuf::from("/var/log/pods"));
        let c = Cli::try_parse_from([
            "palisade-sensor",
            "--config",
            config,
            "--cgroup-root",
            "/host/sys/fs/cgroup",
            "--pod-logs-dir",
            "/host/var/log/pods",
            "--container-runtime",
            "cri-o",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(
            c.context.cgroup_root,
            Some(PathBuf::from("/host/sys/fs/cgroup"))
        );
        assert_eq!(c.context.pod_logs_dir, PathBuf::from("/host/var/log/pods"));
        assert_eq!(
            c.context.container_runtime,
            Some(palisade_sensor::context::Runtime::CriO)
        );
        assert!(
            Cli::try_parse_from(["palisade-sensor", "--container-runtime", "rkt"]).is_err(),
            "an unknown runtime is refused"
        );
    }

    #[test]
    fn body_inspection_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sensor.toml");
        std::fs::write(
            &path,
            "sensor_id = \"s1\"\n[ebpf]\ninterfaces = [\"lo\"]\n[reassembly]\nmax_body_inspect = 1000\n",
        )
        .unwrap();
        let config = path.to_str().unwrap();
        let c = Cli::try_parse_from(["palisade-sensor", "--config", config])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(c.reassembly.max_body_inspect, 1000);
        let c = Cli::try_parse_from([
            "palisade-sensor",
            "--config",
            config,
            "--max-body-inspect",
            "131072",
            "--max-body-bytes",
            "1048576",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(c.reassembly.max_body_inspect, 131_072);
        assert_eq!(c.reassembly.max_body_bytes, 1_048_576);
    }

    #[test]
    fn mirror_and_proxy_flags() {
        let c = Cli::try_parse_from(["palisade-sensor", "--sensor-id", "s1", "--source", "mirror"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(c.source, Source::Mirror);
        assert_eq!(c.mirror.listen, "127.0.0.1:9099".parse().unwrap());
        let c = Cli::try_parse_from([
            "palisade-sensor",
            "--sensor-id",
            "s1",
            "--source",
            "proxy",
            "--proxy-listen",
            "0.0.0.0:8080",
            "--proxy-upstream",
            "127.0.0.1:8081",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(c.proxy.upstream, Some("127.0.0.1:8081".parse().unwrap()));
        let missing =
            Cli::try_parse_from(["palisade-sensor", "--sensor-id", "s1", "--source", "proxy"])
                .unwrap()
                .into_config();
        assert!(format!("{:#}", missing.unwrap_err()).contains("--proxy-upstream"));
    }

    #[test]
    fn nats_user_without_password_is_rejected() {
        let cli = Cli::try_parse_from([
            "palisade-sensor",
            "--interface",
            "lo",
            "--sensor-id",
            "s1",
            "--nats-user",
            "u",
        ])
        .unwrap();
        let err = cli.into_config().unwrap_err();
        assert!(
            format!("{err:#}").contains("nats.user and nats.password"),
            "{err:#}"
        );
    }

    #[test]
    fn nats_auth_env_names_match_the_blocker_and_secrets_are_hidden() {
        use clap::CommandFactory;
        let cmd = Cli::command();
        for (id, env, secret) in [
            ("nats_user", "PALISADE_NATS_USER", false),
            ("nats_password", "PALISADE_NATS_PASSWORD", true),
            ("nats_token", "PALISADE_NATS_TOKEN", true),
            ("nats_nkey_seed", "PALISADE_NATS_NKEY_SEED", true),
        ] {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap_or_else(|| panic!("no argument {id}"));
            assert_eq!(arg.get_env(), Some(std::ffi::OsStr::new(env)), "{id}");
            assert_eq!(arg.is_hide_env_values_set(), secret, "{id}");
        }
    }
}
