//! Configuration: a TOML file (`--config`) overlaid with command-line flags and environment
//! variables (see [`Cli`]). Every field is documented in `docs/blocker.md` and
//! `config/blocker.example.toml`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use palisade_wire::Severity;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole blocker configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// NATS connection, stream and consumer.
    #[serde(default)]
    pub nats: NatsConfig,
    /// Ingest pipeline: batching, dedup, per-sensor quota.
    #[serde(default)]
    pub pipeline: PipelineConfig,
    /// When a client gets blocked and for how long.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// What must never be blocked, and the global cap on new blocks.
    #[serde(default)]
    pub guardrails: GuardrailConfig,
    /// Embedded state store.
    #[serde(default)]
    pub state: StateConfig,
    /// Reconciler that pushes the decided blocks to the firewall.
    #[serde(default)]
    pub reconcile: ReconcileConfig,
    /// Admin HTTP listener.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Firewall provider.
    #[serde(default)]
    pub provider: ProviderConfig,
    /// Falco events (Falcosidekick's NATS output) as a report source.
    #[serde(default)]
    pub falco: FalcoConfig,
    /// The history of decisions, manual actions and expiries, kept after blocks end.
    #[serde(default)]
    pub history: HistoryConfig,
}

impl Config {
    /// Parse a TOML document.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config> {
        toml::from_str(text).map_err(|e| Error::ConfigParse {
            path: path.to_path_buf(),
            source: Box::new(e),
        })
    }

    /// Read and parse a TOML file.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml(&text, path)
    }

    /// Check ranges and consistency. Called by [`crate::run`] before anything starts.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.nats.url.trim().is_empty() {
            return bad("nats.url must not be empty".into());
        }
        if self.nats.stream.is_empty() || self.nats.consumer.is_empty() {
            return bad("nats.stream and nats.consumer must not be empty".into());
        }
        let auth = [
            self.nats.user.is_some(),
            self.nats.token.is_some(),
            self.nats.nkey_seed.is_some(),
            self.nats.creds_file.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if auth > 1 {
            return bad(
                "choose at most one NATS authentication: user/password, token, nkey_seed or creds_file"
                    .into(),
            );
        }
        self.nats.auth().check().map_err(Error::Config)?;
        crate::identity::check_inbox_prefix(&self.nats.inbox_prefix)?;
        if !matches!(
            self.nats.retention.as_str(),
            "limits" | "interest" | "workqueue"
        ) {
            return bad(format!(
                "nats.retention `{}` is not one of limits, interest, workqueue",
                self.nats.retention
            ));
        }
        palisade_wire::nats::server_addrs(&self.nats.url).map_err(Error::Config)?;
        self.nats.stream_settings().check().map_err(Error::Config)?;
        if self.nats.max_ack_pending == 0 || self.nats.ack_wait_secs == 0 {
            return bad("nats.max_ack_pending and nats.ack_wait_secs must be > 0".into());
        }
        if self.nats.pull_heartbeat_secs == 0
            || self.nats.pull_heartbeat_secs * 2 > self.nats.pull_expires_secs
        {
            return bad(format!(
                "nats.pull_heartbeat_secs ({}) must be at least 1 and at most half of \
                 nats.pull_expires_secs ({})",
                self.nats.pull_heartbeat_secs, self.nats.pull_expires_secs
            ));
        }
        if self.pipeline.batch_size == 0 || self.pipeline.batch_size > 10_000 {
            return bad("pipeline.batch_size must be 1..=10000".into());
        }
        if self.pipeline.sensor_rate_per_sec == 0 || self.pipeline.sensor_burst == 0 {
            return bad(
                "pipeline.sensor_rate_per_sec and pipeline.sensor_burst must be > 0".into(),
            );
        }
        // Durations beyond ten years are typos, and the caches refuse them (moka: 1,000 years).
        const TEN_YEARS: u64 = 10 * 365 * 24 * 3600;
        for (name, secs) in [
            (
                "pipeline.dedup_window_secs",
                self.pipeline.dedup_window_secs,
            ),
            ("policy.window_secs", self.policy.window_secs),
            ("policy.block_ttl_secs", self.policy.block_ttl_secs),
            ("policy.max_ttl_secs", self.policy.max_ttl_secs),
            ("state.offence_memory_secs", self.state.offence_memory_secs),
            ("state.sweep_interval_secs", self.state.sweep_interval_secs),
        ] {
            if secs > TEN_YEARS {
                return bad(format!(
                    "{name} = {secs} is longer than ten years ({TEN_YEARS} s)"
                ));
            }
        }
        let p = &self.policy;
        if p.window_secs == 0 || p.block_ttl_secs == 0 {
            return bad("policy.window_secs and policy.block_ttl_secs must be > 0".into());
        }
        if p.max_ttl_secs < p.block_ttl_secs {
            return bad("policy.max_ttl_secs must be >= policy.block_ttl_secs".into());
        }
        if !(p.escalation_factor >= 1.0 && p.escalation_factor.is_finite()) {
            return bad("policy.escalation_factor must be a finite number >= 1".into());
        }
        if p.min_distinct_sensors == 0 {
            return bad("policy.min_distinct_sensors must be >= 1".into());
        }
        for (name, t) in std::iter::once(("policy.thresholds".to_string(), &p.thresholds)).chain(
            p.categories
                .iter()
                .map(|(c, t)| (format!("policy.categories.{c}"), t)),
        ) {
            for sev in Severity::ALL {
                if t.get(sev) == Some(0) {
                    return bad(format!("{name}.{sev} must be >= 1 (omit it to disable)"));
                }
            }
        }
        if self.guardrails.max_new_blocks_per_minute == 0 {
            return bad("guardrails.max_new_blocks_per_minute must be > 0".into());
        }
        if !(1..=32).contains(&self.guardrails.max_prefix_v4_len)
            || !(1..=128).contains(&self.guardrails.max_prefix_v6_len)
        {
            return bad("guardrails prefix limits out of range".into());
        }
        let g = &self.guardrails;
        if g.max_deferred == 0 || g.max_deferred_per_sensor == 0 {
            return bad(
                "guardrails.max_deferred and guardrails.max_deferred_per_sensor must be > 0".into(),
            );
        }
        if !(g.max_sensor_share > 0.0 && g.max_sensor_share <= 1.0) {
            return bad("guardrails.max_sensor_share must be in (0, 1]".into());
        }
        if !(g.max_prefix_v6_len..=128).contains(&p.ipv6_prefix_len) || p.ipv6_prefix_len < 48 {
            return bad(format!(
                "policy.ipv6_prefix_len = {} must be within /{}..=/128 (guardrails.max_prefix_v6_len) and never broader than /48",
                p.ipv6_prefix_len,
                g.max_prefix_v6_len.max(48)
            ));
        }
        if !(g.max_prefix_v4_len..=32).contains(&p.ipv4_prefix_len) || p.ipv4_prefix_len < 24 {
            return bad(format!(
                "policy.ipv4_prefix_len = {} must be within /{}..=/32 (guardrails.max_prefix_v4_len) and never broader than /24",
                p.ipv4_prefix_len,
                g.max_prefix_v4_len.max(24)
            ));
        }
        if self.state.max_offences == 0 {
            return bad("state.max_offences must be > 0".into());
        }
        if self.state.max_reasons == 0 {
            return bad("state.max_reasons must be >= 1".into());
        }
        let st = &self.state;
        if st.bucket.is_empty()
            || !st
                .bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return bad(format!(
                "state.bucket = {:?} must be letters, digits, '-' and '_'",
                st.bucket
            ));
        }
        if !(1..=5).contains(&st.replicas) {
            return bad("state.replicas must be 1..=5".into());
        }
        if !(2..=120).contains(&st.lease_secs) {
            return bad("state.lease_secs must be 2..=120".into());
        }
        if st.max_age_secs > 0
            && st.max_age_secs < self.policy.max_ttl_secs.max(st.offence_memory_secs)
        {
            return bad(format!(
                "state.max_age_secs = {} would drop blocks or offences the policy still needs: \
                 0 (keep) or at least policy.max_ttl_secs and state.offence_memory_secs ({})",
                st.max_age_secs,
                self.policy.max_ttl_secs.max(st.offence_memory_secs)
            ));
        }
        if let Some(id) = &st.replica_id
            && (id.is_empty() || id.len() > 128 || id.contains(char::is_whitespace))
        {
            return bad("state.replica_id must be 1..=128 characters without spaces".into());
        }
        if self.reconcile.interval_ms == 0 {
            return bad("reconcile.interval_ms must be > 0".into());
        }
        // Reads the token files too: a missing file stops the start here, with its path.
        self.admin.resolve_tokens()?;
        if self.history.max_age_secs == 0 || self.history.max_age_secs > TEN_YEARS {
            return bad(format!(
                "history.max_age_secs = {} must be 1..={TEN_YEARS} (ten years)",
                self.history.max_age_secs
            ));
        }
        if self.history.max_entries > 100_000_000 {
            return bad(format!(
                "history.max_entries = {} must be at most 100000000 (0 turns history off)",
                self.history.max_entries
            ));
        }
        self.provider.validate()?;
        self.falco.validate()?;
        Ok(())
    }
}

fn default_nats_url() -> String {
    "nats://127.0.0.1:4222".into()
}
fn default_stream() -> String {
    palisade_wire::STREAM_NAME.into()
}
fn default_consumer() -> String {
    "palisade-blocker".into()
}
fn default_retention() -> String {
    "limits".into()
}
fn default_max_age_secs() -> u64 {
    palisade_wire::nats::DEFAULT_STREAM_MAX_AGE.as_secs()
}
fn default_duplicate_window_secs() -> u64 {
    palisade_wire::nats::DEFAULT_STREAM_DUPLICATE_WINDOW.as_secs()
}
fn default_stream_replicas() -> usize {
    palisade_wire::nats::DEFAULT_STREAM_REPLICAS
}
fn default_stream_max_bytes() -> i64 {
    palisade_wire::nats::DEFAULT_STREAM_MAX_BYTES
}
fn default_ack_wait_secs() -> u64 {
    30
}
fn default_max_ack_pending() -> i64 {
    20_000
}
fn default_max_deliver() -> i64 {
    -1
}
fn default_pull_expires_secs() -> u64 {
    30
}
fn default_pull_heartbeat_secs() -> u64 {
    3
}
fn default_reconnect_max_secs() -> u64 {
    30
}
fn default_inbox_prefix() -> String {
    "_INBOX_palisade_blocker".into()
}

/// NATS connection, JetStream stream and durable consumer.
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
    /// Path of a `.creds` file (JWT + NKey seed).
    #[serde(default)]
    pub creds_file: Option<PathBuf>,
    /// PEM file of CA certificates to trust for TLS.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (with `tls_client_key`).
    #[serde(default)]
    pub tls_client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate.
    #[serde(default)]
    pub tls_client_key: Option<PathBuf>,
    /// Require TLS even for `nats://` URLs.
    #[serde(default)]
    pub tls_required: bool,
    /// JetStream stream name.
    #[serde(default = "default_stream")]
    pub stream: String,
    /// Stream retention: `limits`, `interest` or `workqueue`.
    #[serde(default = "default_retention")]
    pub retention: String,
    /// Oldest report the stream keeps, in seconds.
    #[serde(default = "default_max_age_secs")]
    pub max_age_secs: u64,
    /// Window in which JetStream drops a re-sent report with the same `Nats-Msg-Id`, seconds.
    #[serde(default = "default_duplicate_window_secs")]
    pub duplicate_window_secs: u64,
    /// Copies of the stream on different servers of a NATS cluster (1 to 5; 3 on a 3-node
    /// cluster survives the loss of one server). Same name and default in the sensor's `[nats]`.
    #[serde(default = "default_stream_replicas")]
    pub stream_replicas: usize,
    /// Size limit of the stream in bytes, -1 for none (`max_age_secs` still bounds it).
    #[serde(default = "default_stream_max_bytes")]
    pub stream_max_bytes: i64,
    /// At `stream_max_bytes`: `old` deletes the oldest reports, `new` refuses new ones (the
    /// sensors buffer and retry).
    #[serde(default)]
    pub stream_discard: palisade_wire::nats::Discard,
    /// Durable pull consumer name; blocker replicas sharing it split the work.
    #[serde(default = "default_consumer")]
    pub consumer: String,
    /// Seconds JetStream waits for an ack before redelivering.
    #[serde(default = "default_ack_wait_secs")]
    pub ack_wait_secs: u64,
    /// Most unacknowledged messages in flight over all replicas.
    #[serde(default = "default_max_ack_pending")]
    pub max_ack_pending: i64,
    /// Most delivery attempts per message (-1 = unlimited).
    #[serde(default = "default_max_deliver")]
    pub max_deliver: i64,
    /// Seconds each pull request waits at the server for reports before it expires and the
    /// next one is sent.
    #[serde(default = "default_pull_expires_secs")]
    pub pull_expires_secs: u64,
    /// Seconds between the idle heartbeats the server sends on a waiting pull request (at
    /// most half of `pull_expires_secs`). Two missed in a row mean the request is gone (a
    /// consumer's leader changed, or it was re-created while the request waited; the server
    /// says nothing then), and the blocker pulls again instead of waiting for the expiry.
    #[serde(default = "default_pull_heartbeat_secs")]
    pub pull_heartbeat_secs: u64,
    /// Longest pause between reconnect attempts, seconds (the backoff doubles up to it).
    #[serde(default = "default_reconnect_max_secs")]
    pub reconnect_max_secs: u64,
    /// Sensor ids (or `*`/`?` patterns) whose reports are taken; reports on the subject of any
    /// other sensor are rejected (`sensor_not_accepted`) without being parsed. Default: every
    /// sensor.
    #[serde(default)]
    pub accepted_sensors: crate::identity::AcceptedSensors,
    /// Subject prefix of the blocker's reply inboxes (JetStream API replies and pulled
    /// messages). Its own prefix, so that the sensors' permission to receive their publish acks
    /// on `_INBOX.>` does not let them read what the blocker receives.
    #[serde(default = "default_inbox_prefix")]
    pub inbox_prefix: String,
}

impl NatsConfig {
    /// The stream as the shared [`palisade_wire::nats::StreamSettings`] describes it. An
    /// unknown `retention` reads as `limits` here; [`Config::validate`] refuses it first.
    pub fn stream_settings(&self) -> palisade_wire::nats::StreamSettings {
        palisade_wire::nats::StreamSettings {
            name: self.stream.clone(),
            retention: palisade_wire::nats::retention_policy(&self.retention).unwrap_or_default(),
            max_age: Duration::from_secs(self.max_age_secs),
            duplicate_window: Duration::from_secs(self.duplicate_window_secs),
            replicas: self.stream_replicas,
            max_bytes: self.stream_max_bytes,
            discard: self.stream_discard,
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
            stream: default_stream(),
            retention: default_retention(),
            max_age_secs: default_max_age_secs(),
            duplicate_window_secs: default_duplicate_window_secs(),
            stream_replicas: default_stream_replicas(),
            stream_max_bytes: default_stream_max_bytes(),
            stream_discard: palisade_wire::nats::Discard::default(),
            consumer: default_consumer(),
            ack_wait_secs: default_ack_wait_secs(),
            max_ack_pending: default_max_ack_pending(),
            max_deliver: default_max_deliver(),
            pull_expires_secs: default_pull_expires_secs(),
            pull_heartbeat_secs: default_pull_heartbeat_secs(),
            reconnect_max_secs: default_reconnect_max_secs(),
            accepted_sensors: crate::identity::AcceptedSensors::default(),
            inbox_prefix: default_inbox_prefix(),
        }
    }
}

fn default_batch_size() -> usize {
    512
}
fn default_dedup_window_secs() -> u64 {
    10
}
fn default_dedup_capacity() -> u64 {
    1_000_000
}
fn default_sensor_rate() -> u32 {
    1_000
}
fn default_sensor_burst() -> u32 {
    5_000
}

/// Ingest pipeline.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Most messages processed, persisted (one store transaction) and acked together.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Identical reports (same client, rule and sensor) inside this window count once, seconds.
    #[serde(default = "default_dedup_window_secs")]
    pub dedup_window_secs: u64,
    /// Most entries the dedup cache holds.
    #[serde(default = "default_dedup_capacity")]
    pub dedup_capacity: u64,
    /// Reports per second one sensor may send before its reports are dropped (and counted).
    #[serde(default = "default_sensor_rate")]
    pub sensor_rate_per_sec: u32,
    /// Burst above the per-sensor rate.
    #[serde(default = "default_sensor_burst")]
    pub sensor_burst: u32,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            batch_size: default_batch_size(),
            dedup_window_secs: default_dedup_window_secs(),
            dedup_capacity: default_dedup_capacity(),
            sensor_rate_per_sec: default_sensor_rate(),
            sensor_burst: default_sensor_burst(),
        }
    }
}

/// Reports needed within the window, per severity. An absent severity never blocks.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    /// Reports of severity `low` (or higher) needed.
    #[serde(default)]
    pub low: Option<u32>,
    /// Reports of severity `medium` (or higher) needed.
    #[serde(default)]
    pub medium: Option<u32>,
    /// Reports of severity `high` (or higher) needed.
    #[serde(default)]
    pub high: Option<u32>,
    /// Reports of severity `critical` needed.
    #[serde(default)]
    pub critical: Option<u32>,
}

impl Thresholds {
    /// The threshold for one severity.
    pub fn get(&self, s: Severity) -> Option<u32> {
        match s {
            Severity::Low => self.low,
            Severity::Medium => self.medium,
            Severity::High => self.high,
            Severity::Critical => self.critical,
        }
    }
}

fn default_thresholds() -> Thresholds {
    Thresholds {
        low: Some(8),
        medium: Some(3),
        high: Some(2),
        critical: Some(1),
    }
}
fn default_window_secs() -> u64 {
    300
}
fn default_min_distinct_sensors() -> u32 {
    1
}
fn default_block_ttl_secs() -> u64 {
    3600
}
fn default_escalation_factor() -> f64 {
    4.0
}
fn default_max_ttl_secs() -> u64 {
    7 * 24 * 3600
}
fn default_tracked_clients() -> u64 {
    2_000_000
}
fn default_ipv6_prefix_len() -> u8 {
    64
}
fn default_ipv4_prefix_len() -> u8 {
    32
}

/// When a client gets blocked, and for how long.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// Sliding window in which reports about one client are counted, seconds.
    #[serde(default = "default_window_secs")]
    pub window_secs: u64,
    /// Default thresholds per severity.
    #[serde(default = "default_thresholds")]
    pub thresholds: Thresholds,
    /// Per-category overrides (`[policy.categories.scanner] low = 100`); a severity left out
    /// falls back to `thresholds`.
    #[serde(default)]
    pub categories: BTreeMap<String, Thresholds>,
    /// Distinct sensors that must have reported the client (critical reports included).
    #[serde(default = "default_min_distinct_sensors")]
    pub min_distinct_sensors: u32,
    /// TTL of a first block, seconds.
    #[serde(default = "default_block_ttl_secs")]
    pub block_ttl_secs: u64,
    /// Each repeat offence multiplies the TTL by this factor.
    #[serde(default = "default_escalation_factor")]
    pub escalation_factor: f64,
    /// Longest TTL, seconds.
    #[serde(default = "default_max_ttl_secs")]
    pub max_ttl_secs: u64,
    /// Most not-yet-blocked clients whose recent reports are counted in memory.
    #[serde(default = "default_tracked_clients")]
    pub max_tracked_clients: u64,
    /// Prefix an IPv6 client is counted and blocked as (64: its /64; 128: the address alone).
    /// At least `guardrails.max_prefix_v6_len` (never broader than /48).
    #[serde(default = "default_ipv6_prefix_len")]
    pub ipv6_prefix_len: u8,
    /// Prefix an IPv4 client is counted and blocked as (32: the address alone). At least
    /// `guardrails.max_prefix_v4_len` (never broader than /24).
    #[serde(default = "default_ipv4_prefix_len")]
    pub ipv4_prefix_len: u8,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            window_secs: default_window_secs(),
            thresholds: default_thresholds(),
            categories: BTreeMap::new(),
            min_distinct_sensors: default_min_distinct_sensors(),
            block_ttl_secs: default_block_ttl_secs(),
            escalation_factor: default_escalation_factor(),
            max_ttl_secs: default_max_ttl_secs(),
            max_tracked_clients: default_tracked_clients(),
            ipv6_prefix_len: default_ipv6_prefix_len(),
            ipv4_prefix_len: default_ipv4_prefix_len(),
        }
    }
}

impl PolicyConfig {
    /// The threshold for a category and severity (`None`: this combination never blocks).
    pub fn threshold(&self, category: &str, severity: Severity) -> Option<u32> {
        self.categories
            .get(category)
            .and_then(|t| t.get(severity))
            .or_else(|| self.thresholds.get(severity))
    }

    pub(crate) fn window(&self) -> Duration {
        Duration::from_secs(self.window_secs)
    }
}

fn default_max_new_blocks() -> u32 {
    10_000
}
fn default_v4_len() -> u8 {
    24
}
fn default_v6_len() -> u8 {
    48
}
fn default_max_deferred() -> usize {
    20_000
}
fn default_max_deferred_per_sensor() -> usize {
    2_000
}
fn default_max_sensor_share() -> f64 {
    0.5
}

/// Guardrails. See `docs/blocker.md` for the special-purpose ranges refused by default.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailConfig {
    /// CIDRs that are never blocked (load balancers, NAT gateways, health checkers, sensors).
    #[serde(default)]
    pub allowlist: Vec<IpNet>,
    /// Special-purpose ranges that may be blocked anyway (e.g. documentation ranges in tests).
    #[serde(default)]
    pub allow_special: Vec<IpNet>,
    /// Broadest IPv4 prefix that may be blocked (24 means /24 or narrower).
    #[serde(default = "default_v4_len")]
    pub max_prefix_v4_len: u8,
    /// Broadest IPv6 prefix that may be blocked.
    #[serde(default = "default_v6_len")]
    pub max_prefix_v6_len: u8,
    /// Most new blocks enforced per minute; blocks decided above it wait in the deferred queue,
    /// served one sensor at a time in turn.
    #[serde(default = "default_max_new_blocks")]
    pub max_new_blocks_per_minute: u32,
    /// Most deferred blocks over all sensors; a block that would be deferred beyond it is
    /// refused (not decided, counted as `deferred_full`).
    #[serde(default = "default_max_deferred")]
    pub max_deferred: usize,
    /// Most deferred blocks decided on one sensor's report; beyond it that sensor's would-be
    /// blocks are refused (counted as `deferred_sensor_full`).
    #[serde(default = "default_max_deferred_per_sensor")]
    pub max_deferred_per_sensor: usize,
    /// Share (0 < share <= 1) of a family's firewall room that blocks reported by one sensor
    /// alone may take while other blocks compete for it; 1 disables the bound.
    #[serde(default = "default_max_sensor_share")]
    pub max_sensor_share: f64,
}

impl Default for GuardrailConfig {
    fn default() -> Self {
        GuardrailConfig {
            allowlist: Vec::new(),
            allow_special: Vec::new(),
            max_prefix_v4_len: default_v4_len(),
            max_prefix_v6_len: default_v6_len(),
            max_new_blocks_per_minute: default_max_new_blocks(),
            max_deferred: default_max_deferred(),
            max_deferred_per_sensor: default_max_deferred_per_sensor(),
            max_sensor_share: default_max_sensor_share(),
        }
    }
}

/// Where the blocker keeps its state (`[state] backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum StateBackend {
    /// A redb file on a local disk: one blocker.
    #[default]
    Embedded,
    /// A JetStream key-value bucket: several replicas, one lease holder decides and writes.
    Nats,
}

fn default_bucket() -> String {
    "palisade-blocker".to_owned()
}
fn default_bucket_replicas() -> usize {
    1
}
fn default_lease_secs() -> u64 {
    5
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/palisade-blocker")
}
fn default_max_reasons() -> usize {
    8
}
fn default_offence_memory_secs() -> u64 {
    30 * 24 * 3600
}
fn default_sweep_interval_secs() -> u64 {
    10
}
fn default_max_offences() -> usize {
    1_000_000
}

/// Embedded state store (redb).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateConfig {
    /// Where the state lives: `embedded` (a redb file in `dir`; one blocker) or `nats` (a
    /// JetStream key-value bucket; several replicas, of which the lease holder decides).
    #[serde(default)]
    pub backend: StateBackend,
    /// Directory of the store file `blocker.redb` (`embedded`).
    #[serde(default = "default_state_dir")]
    pub dir: PathBuf,
    /// Key-value bucket of the state (`nats`).
    #[serde(default = "default_bucket")]
    pub bucket: String,
    /// Replicas of the bucket on the NATS cluster (`nats`; 1, 3 or 5).
    #[serde(default = "default_bucket_replicas")]
    pub replicas: usize,
    /// Oldest value the bucket keeps, seconds; 0 keeps values until they are deleted (`nats`).
    /// When set, at least `policy.max_ttl_secs` and `state.offence_memory_secs`.
    #[serde(default)]
    pub max_age_secs: u64,
    /// Lease time, seconds (`nats`): the holder renews it every third of it; a standby takes
    /// over when it has not changed for this long (after a crash of the holder: within about
    /// this time plus one poll).
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// This replica's name in the lease and the logs (`nats`). Default: the host name.
    #[serde(default)]
    pub replica_id: Option<String>,
    /// Most recent reasons kept per block.
    #[serde(default = "default_max_reasons")]
    pub max_reasons: usize,
    /// How long the offence count of a released client is kept for escalation, seconds.
    #[serde(default = "default_offence_memory_secs")]
    pub offence_memory_secs: u64,
    /// How often expired blocks are removed, seconds.
    #[serde(default = "default_sweep_interval_secs")]
    pub sweep_interval_secs: u64,
    /// Most offence records kept (memory and store); the oldest are forgotten first.
    #[serde(default = "default_max_offences")]
    pub max_offences: usize,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            backend: StateBackend::default(),
            dir: default_state_dir(),
            bucket: default_bucket(),
            replicas: default_bucket_replicas(),
            max_age_secs: 0,
            lease_secs: default_lease_secs(),
            replica_id: None,
            max_reasons: default_max_reasons(),
            offence_memory_secs: default_offence_memory_secs(),
            sweep_interval_secs: default_sweep_interval_secs(),
            max_offences: default_max_offences(),
        }
    }
}

fn default_interval_ms() -> u64 {
    1000
}
fn default_backoff_max_secs() -> u64 {
    60
}

/// Reconciler.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReconcileConfig {
    /// Changes are coalesced and applied at most once per interval, milliseconds.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Longest pause after retriable provider errors (the backoff doubles up to it), seconds.
    #[serde(default = "default_backoff_max_secs")]
    pub backoff_max_secs: u64,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        ReconcileConfig {
            interval_ms: default_interval_ms(),
            backoff_max_secs: default_backoff_max_secs(),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9460))
}

/// Admin HTTP listener.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin listener (`/healthz`, `/readyz`, `/metrics`, `/v1/blocks`).
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Bearer token for `POST`/`DELETE /v1/blocks` (it also reads); without it manual changes
    /// are disabled. The write token named `admin`.
    #[serde(default)]
    pub token: Option<String>,
    /// Bearer token for `GET /v1/blocks` only (read-only dashboards). The read token named
    /// `read`.
    #[serde(default)]
    pub read_token: Option<String>,
    /// Serve `GET /v1/blocks` without a token. Unset: open only when no token is configured.
    #[serde(default)]
    pub open_reads: Option<bool>,
    /// Named tokens (`[[admin.tokens]]`): the name of the one that made a manual change is
    /// recorded as who made it.
    #[serde(default)]
    pub tokens: Vec<NamedTokenConfig>,
}

/// Longest token name.
pub const MAX_TOKEN_NAME: usize = 64;
/// Shortest token.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenAccess {
    /// `GET /v1/...` only.
    Read,
    /// Reads, and manual blocks and releases.
    Write,
}

/// One `[[admin.tokens]]` entry.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedTokenConfig {
    /// Who holds it (recorded as the actor of manual changes): 1 to 64 of
    /// `[A-Za-z0-9._@-]`, unique.
    pub name: String,
    /// The token itself (at least 16 characters); or `token_file`.
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (read at start, surrounding whitespace ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// `read` or `write`.
    pub access: TokenAccess,
}

impl std::fmt::Debug for NamedTokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedTokenConfig")
            .field("name", &self.name)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("token_file", &self.token_file)
            .field("access", &self.access)
            .finish()
    }
}

/// A configured token, its secret read: what [`AdminConfig::resolve_tokens`] gives.
#[derive(Clone)]
pub struct ResolvedToken {
    pub name: String,
    pub secret: String,
    pub access: TokenAccess,
}

impl std::fmt::Debug for ResolvedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResolvedToken")
            .field("name", &self.name)
            .field("access", &self.access)
            .finish_non_exhaustive()
    }
}

/// Is `name` a valid token name?
fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_TOKEN_NAME
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
}

impl AdminConfig {
    /// Does `GET /v1/blocks` answer without a token?
    pub fn reads_open(&self) -> bool {
        self.open_reads
            .unwrap_or(self.token.is_none() && self.read_token.is_none() && self.tokens.is_empty())
    }

    /// Every configured token with its name and access: `token` as `admin` (write),
    /// `read_token` as `read` (read), then `[[admin.tokens]]` in order, their files read.
    /// Checks names (valid, unique), lengths, and that no two names share a token.
    pub fn resolve_tokens(&self) -> Result<Vec<ResolvedToken>> {
        let bad = |m: String| Err(Error::Config(m));
        let mut out: Vec<ResolvedToken> = Vec::new();
        if let Some(t) = &self.token {
            if t.len() < MIN_TOKEN_LEN {
                return bad("admin.token must be at least 16 characters".into());
            }
            out.push(ResolvedToken {
                name: "admin".into(),
                secret: t.clone(),
                access: TokenAccess::Write,
            });
        }
        if let Some(t) = &self.read_token {
            if t.len() < MIN_TOKEN_LEN {
                return bad("admin.read_token must be at least 16 characters".into());
            }
            out.push(ResolvedToken {
                name: "read".into(),
                secret: t.clone(),
                access: TokenAccess::Read,
            });
        }
        for (i, nt) in self.tokens.iter().enumerate() {
            let at = format!("admin.tokens[{i}]");
            if !valid_token_name(&nt.name) {
                return bad(format!(
                    "{at}.name = {:?} must be 1 to {MAX_TOKEN_NAME} characters of A-Z a-z 0-9 . _ @ -",
                    nt.name
                ));
            }
            let at = format!("{at} (`{}`)", nt.name);
            if let Some(prev) = out.iter().find(|t| t.name == nt.name) {
                let taken_by = match prev.name.as_str() {
                    "admin" if self.token.is_some() => " (the name of admin.token)",
                    "read" if self.read_token.is_some() => " (the name of admin.read_token)",
                    _ => "",
                };
                return bad(format!(
                    "{at}: the name `{}` is used twice{taken_by}; token names must be unique",
                    nt.name
                ));
            }
            let secret = match (&nt.token, &nt.token_file) {
                (Some(t), None) => t.clone(),
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map_err(|e| {
                        Error::Config(format!(
                            "{at}: cannot read token_file {}: {e}",
                            path.display()
                        ))
                    })?
                    .trim()
                    .to_owned(),
                (Some(_), Some(_)) => {
                    return bad(format!("{at}: set token or token_file, not both"));
                }
                (None, None) => return bad(format!("{at}: set token or token_file")),
            };
            if secret.len() < MIN_TOKEN_LEN {
                return bad(format!(
                    "{at}: the token must be at least {MIN_TOKEN_LEN} characters{}",
                    match &nt.token_file {
                        Some(p) => format!(" (token_file {})", p.display()),
                        None => String::new(),
                    }
                ));
            }
            if let Some(prev) = out.iter().find(|t| t.secret == secret) {
                return bad(format!(
                    "{at}: the same token as `{}`; each name needs its own token, or who made a change is unknown",
                    prev.name
                ));
            }
            out.push(ResolvedToken {
                name: nt.name.clone(),
                secret,
                access: nt.access,
            });
        }
        Ok(out)
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            token: None,
            read_token: None,
            open_reads: None,
            tokens: Vec::new(),
        }
    }
}

fn default_history_max_age_secs() -> u64 {
    30 * 24 * 3600
}
fn default_history_max_entries() -> usize {
    100_000
}

/// The history (`[history]`): decisions, manual blocks and releases, expiries.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryConfig {
    /// Oldest entry kept, seconds (default 30 days).
    #[serde(default = "default_history_max_age_secs")]
    pub max_age_secs: u64,
    /// Most entries kept; the oldest go first. 0 keeps no history.
    #[serde(default = "default_history_max_entries")]
    pub max_entries: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            max_age_secs: default_history_max_age_secs(),
            max_entries: default_history_max_entries(),
        }
    }
}

/// Which firewall backend enforces the blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// In-process memory backend (demo and tests; nothing is enforced outside the process).
    Memory,
    /// AWS WAFv2 IP sets.
    Aws,
}

fn default_provider_kind() -> ProviderKind {
    ProviderKind::Memory
}

/// Firewall provider.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// `memory` or `aws`.
    #[serde(default = "default_provider_kind")]
    pub kind: ProviderKind,
    /// AWS WAFv2 settings (used when `kind = "aws"`).
    #[serde(default)]
    pub aws: AwsProviderConfig,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            kind: default_provider_kind(),
            aws: AwsProviderConfig::default(),
        }
    }
}

impl ProviderConfig {
    fn validate(&self) -> Result<()> {
        if self.kind == ProviderKind::Aws {
            if self.aws.ipset_arns.is_empty() {
                return Err(Error::Config(
                    "provider.aws.ipset_arns must list at least one IP set ARN".into(),
                ));
            }
            for (i, arn) in self.aws.ipset_arns.iter().enumerate() {
                palisade_providers::aws::check_ipset_arn(arn).map_err(|reason| {
                    Error::Config(format!(
                        "provider.aws.ipset_arns[{i}] (--ipset-arn) `{arn}` is not a WAFv2 IP set ARN: {reason}"
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// AWS WAFv2 provider settings.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsProviderConfig {
    /// ARNs of the IP sets to manage (IPv4 and IPv6 sets; several per family spill over).
    #[serde(default)]
    pub ipset_arns: Vec<String>,
    /// Override the WAFv2 endpoint (an emulator in tests).
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Log the changes instead of writing them.
    #[serde(default)]
    pub dry_run: bool,
    /// UpdateIPSet calls per second, shared by every set of one account and region (AWS
    /// allows about 1).
    #[serde(default = "default_aws_write_rate")]
    pub write_rate: f64,
    /// GetIPSet calls per second, shared likewise (AWS allows about 5).
    #[serde(default = "default_aws_read_rate")]
    pub read_rate: f64,
    /// Seconds the provider answers the reconciler's reads from its cache of each set (our
    /// last GetIPSet or our own last write) before it reads the set again. Bounds how late a
    /// change somebody else made is seen while the blocker writes nothing (a write planned on
    /// stale contents fails on its lock token and reads again, so nothing is lost). 0 reads
    /// every set on every run: two GetIPSet per set per interval.
    #[serde(default = "default_aws_refresh_secs")]
    pub refresh_secs: u64,
}

impl AwsProviderConfig {
    /// `refresh_secs` for [`palisade_providers::aws::AwsFirewallBuilder::with_refresh`].
    pub fn refresh(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.refresh_secs)
    }
}

fn default_aws_write_rate() -> f64 {
    1.0
}

fn default_aws_read_rate() -> f64 {
    5.0
}

fn default_aws_refresh_secs() -> u64 {
    palisade_providers::aws::DEFAULT_REFRESH.as_secs()
}

impl Default for AwsProviderConfig {
    fn default() -> Self {
        AwsProviderConfig {
            ipset_arns: Vec::new(),
            endpoint_url: None,
            dry_run: false,
            write_rate: default_aws_write_rate(),
            read_rate: default_aws_read_rate(),
            refresh_secs: default_aws_refresh_secs(),
        }
    }
}

/// Command line; every flag also reads an environment variable and overrides the file.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "palisade-blocker", version, about)]
pub struct Cli {
    /// TOML configuration file (defaults apply to everything it leaves out).
    #[arg(long, env = "PALISADE_BLOCKER_CONFIG")]
    pub config: Option<PathBuf>,
    /// NATS server URL, or the servers of a cluster comma separated.
    #[arg(long, env = "PALISADE_NATS_URL")]
    pub nats_url: Option<String>,
    /// NATS user (with --nats-password).
    #[arg(long, env = "PALISADE_NATS_USER")]
    pub nats_user: Option<String>,
    /// NATS password.
    #[arg(long, env = "PALISADE_NATS_PASSWORD", hide_env_values = true)]
    pub nats_password: Option<String>,
    /// NATS token.
    #[arg(long, env = "PALISADE_NATS_TOKEN", hide_env_values = true)]
    pub nats_token: Option<String>,
    /// NATS NKey seed.
    #[arg(long, env = "PALISADE_NATS_NKEY_SEED", hide_env_values = true)]
    pub nats_nkey_seed: Option<String>,
    /// NATS `.creds` file.
    #[arg(long, env = "PALISADE_NATS_CREDS")]
    pub nats_creds: Option<PathBuf>,
    /// CA certificates (PEM) for NATS TLS.
    #[arg(long, env = "PALISADE_NATS_TLS_CA")]
    pub nats_tls_ca: Option<PathBuf>,
    /// Client certificate (PEM) for NATS mutual TLS.
    #[arg(long, env = "PALISADE_NATS_TLS_CERT")]
    pub nats_tls_cert: Option<PathBuf>,
    /// Client key (PEM) for NATS mutual TLS.
    #[arg(long, env = "PALISADE_NATS_TLS_KEY")]
    pub nats_tls_key: Option<PathBuf>,
    /// Durable consumer name.
    #[arg(long, env = "PALISADE_NATS_CONSUMER")]
    pub nats_consumer: Option<String>,
    /// Admin listener address.
    #[arg(long, env = "PALISADE_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Bearer token for manual block/release.
    #[arg(long, env = "PALISADE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Bearer token for reading the block list only.
    #[arg(long, env = "PALISADE_ADMIN_READ_TOKEN", hide_env_values = true)]
    pub admin_read_token: Option<String>,
    /// State directory (embedded backend).
    #[arg(long, env = "PALISADE_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Where the state lives: `embedded` (one blocker) or `nats` (several replicas).
    #[arg(long, env = "PALISADE_STATE_BACKEND", value_enum)]
    pub state_backend: Option<StateBackend>,
    /// This replica's name in the lease (nats backend; default: the host name).
    #[arg(long, env = "PALISADE_REPLICA_ID")]
    pub replica_id: Option<String>,
    /// Firewall provider.
    #[arg(long, env = "PALISADE_PROVIDER", value_enum)]
    pub provider: Option<ProviderKind>,
    /// AWS WAFv2 IP set ARN (repeatable; replaces the file's list).
    #[arg(long = "ipset-arn", env = "PALISADE_IPSET_ARNS", value_delimiter = ',')]
    pub ipset_arns: Vec<String>,
    /// WAFv2 endpoint override.
    #[arg(long, env = "PALISADE_AWS_ENDPOINT_URL")]
    pub aws_endpoint_url: Option<String>,
    /// Compute and log changes without writing them to AWS.
    #[arg(long, env = "PALISADE_DRY_RUN")]
    pub dry_run: bool,
    /// Special-purpose range that may be blocked anyway (repeatable, adds to the file's list).
    #[arg(
        long = "allow-special",
        env = "PALISADE_ALLOW_SPECIAL",
        value_delimiter = ','
    )]
    pub allow_special: Vec<IpNet>,
}

impl Cli {
    /// Load the file (or defaults) and apply the flags over it.
    pub fn load(&self) -> Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path)?,
            None => Config::default(),
        };
        self.apply(&mut config);
        config.validate()?;
        Ok(config)
    }

    /// Overlay the flags that were given.
    pub fn apply(&self, c: &mut Config) {
        fn set<T: Clone>(dst: &mut T, src: &Option<T>) {
            if let Some(v) = src {
                *dst = v.clone();
            }
        }
        fn set_opt<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
            if src.is_some() {
                *dst = src.clone();
            }
        }
        set(&mut c.nats.url, &self.nats_url);
        set_opt(&mut c.nats.user, &self.nats_user);
        set_opt(&mut c.nats.password, &self.nats_password);
        set_opt(&mut c.nats.token, &self.nats_token);
        set_opt(&mut c.nats.nkey_seed, &self.nats_nkey_seed);
        set_opt(&mut c.nats.creds_file, &self.nats_creds);
        set_opt(&mut c.nats.tls_ca, &self.nats_tls_ca);
        set_opt(&mut c.nats.tls_client_cert, &self.nats_tls_cert);
        set_opt(&mut c.nats.tls_client_key, &self.nats_tls_key);
        set(&mut c.nats.consumer, &self.nats_consumer);
        set(&mut c.admin.listen, &self.admin_listen);
        set_opt(&mut c.admin.token, &self.admin_token);
        set_opt(&mut c.admin.read_token, &self.admin_read_token);
        set(&mut c.state.dir, &self.state_dir);
        set(&mut c.state.backend, &self.state_backend);
        set_opt(&mut c.state.replica_id, &self.replica_id);
        set(&mut c.provider.kind, &self.provider);
        if !self.ipset_arns.is_empty() {
            c.provider.aws.ipset_arns = self.ipset_arns.clone();
        }
        set_opt(&mut c.provider.aws.endpoint_url, &self.aws_endpoint_url);
        if self.dry_run {
            c.provider.aws.dry_run = true;
        }
        c.guardrails
            .allow_special
            .extend(self.allow_special.iter().copied());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn example() -> Config {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/blocker.example.toml");
        Config::load(&path).unwrap()
    }

    #[test]
    fn example_config_parses_and_equals_the_defaults() {
        // The example documents every field with its default value, except the values it marks
        // as examples (allowlist, categories); everything else must match `Config::default()`.
        let mut ex = example();
        ex.validate().unwrap();
        assert!(!ex.guardrails.allowlist.is_empty());
        assert!(ex.policy.categories.contains_key("scanner"));
        ex.guardrails.allowlist.clear();
        ex.policy.categories.clear();
        assert_eq!(ex, Config::default());
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = Config::from_toml("[nats]\nurll = \"x\"\n", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("urll"), "{err}");
        let err = Config::from_toml("bogus = 1\n", Path::new("t.toml")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
    }

    #[test]
    fn named_tokens_resolve_with_the_legacy_ones_and_bad_ones_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("carol.token");
        std::fs::write(&file, "\n  carol-token-0123456789  \n").unwrap();
        let text = format!(
            r#"
[admin]
token = "admin-token-0123456789"
read_token = "read-token-0123456789"
[[admin.tokens]]
name = "alice"
token = "alice-token-0123456789"
access = "write"
[[admin.tokens]]
name = "carol@ops"
token_file = "{}"
access = "read"
"#,
            file.display()
        );
        let c = Config::from_toml(&text, Path::new("t.toml")).unwrap();
        c.validate().unwrap();
        let t = c.admin.resolve_tokens().unwrap();
        let names: Vec<(&str, TokenAccess)> =
            t.iter().map(|t| (t.name.as_str(), t.access)).collect();
        assert_eq!(
            names,
            [
                ("admin", TokenAccess::Write),
                ("read", TokenAccess::Read),
                ("alice", TokenAccess::Write),
                ("carol@ops", TokenAccess::Read),
            ]
        );
        assert_eq!(t[3].secret, "carol-token-0123456789", "trimmed");
        assert!(
            !format!("{t:?}").contains("0123456789"),
            "no secret in Debug"
        );
        assert!(!c.admin.reads_open());

        // Named tokens alone close reads too.
        let only = AdminConfig {
            tokens: c.admin.tokens.clone(),
            ..AdminConfig::default()
        };
        assert!(!only.reads_open());

        let err = |f: &dyn Fn(&mut AdminConfig)| {
            let mut c = c.clone();
            f(&mut c.admin);
            c.validate().unwrap_err().to_string()
        };
        let e = err(&|a| a.tokens[0].name = String::new());
        assert!(e.contains("admin.tokens[0].name"), "{e}");
        let e = err(&|a| a.tokens[0].name = "a".repeat(MAX_TOKEN_NAME + 1));
        assert!(e.contains("1 to 64"), "{e}");
        let e = err(&|a| a.tokens[0].name = "has space".into());
        assert!(e.contains("admin.tokens[0].name"), "{e}");
        let e = err(&|a| a.tokens[1].name = "alice".into());
        assert!(e.contains("`alice` is used twice"), "{e}");
        let e = err(&|a| a.tokens[0].name = "read".into());
        assert!(e.contains("(the name of admin.read_token)"), "{e}");
        let e = err(&|a| a.tokens[0].token = Some("short".into()));
        assert!(
            e.contains("admin.tokens[0] (`alice`)") && e.contains("16"),
            "{e}"
        );
        let e = err(&|a| a.tokens[0].token_file = Some("/x".into()));
        assert!(e.contains("not both"), "{e}");
        let e = err(&|a| a.tokens[0].token = None);
        assert!(e.contains("set token or token_file"), "{e}");
        let e = err(&|a| a.tokens[0].token = Some("admin-token-0123456789".into()));
        assert!(e.contains("the same token as `admin`"), "{e}");
        let e = err(&|a| a.tokens[1].token_file = Some(Path::new("/nonexistent/t").into()));
        assert!(
            e.contains("admin.tokens[1] (`carol@ops`): cannot read token_file /nonexistent/t"),
            "{e}"
        );
        let e = Config::from_toml(
            "[[admin.tokens]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\n",
            Path::new("t.toml"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("access"), "{e}");
    }

    #[test]
    fn the_pull_heartbeat_is_at_most_half_the_expiry() {
        let mut c = Config::default();
        assert_eq!(
            (c.nats.pull_expires_secs, c.nats.pull_heartbeat_secs),
            (30, 3)
        );
        c.validate().unwrap();
        c.nats.pull_heartbeat_secs = 16;
        let err = c.validate().unwrap_err().to_string();
        assert!(
            err.contains("pull_heartbeat_secs (16)") && err.contains("pull_expires_secs (30)"),
            "{err}"
        );
        c.nats.pull_heartbeat_secs = 0;
        assert!(c.validate().is_err());
        c.nats.pull_heartbeat_secs = 15;
        c.validate().unwrap();
    }

    #[test]
    fn history_bounds_are_checked() {
        let mut c = Config::default();
        assert_eq!(c.history.max_age_secs, 30 * 24 * 3600);
        assert_eq!(c.history.max_entries, 100_000);
        c.history.max_entries = 0;
        c.validate().unwrap();
        c.history.max_age_secs = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn validation_catches_inconsistent_values() {
        let mut c = Config::default();
        c.nats.user = Some("u".into());
        assert!(c.validate().is_err());
        c.nats.password = Some("p".into());
        c.validate().unwrap();
        c.nats.token = Some("t".into());
        assert!(c.validate().is_err());

        let mut c = Config::default();
        c.policy.max_ttl_secs = 1;
        assert!(c.validate().is_err());

        let mut c = Config::default();
        c.policy.thresholds.high = Some(0);
        assert!(c.validate().is_err());

        let mut c = Config::default();
        c.state.offence_memory_secs = u64::MAX;
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("state.offence_memory_secs"), "{err}");
        let mut c = Config::default();
        c.policy.max_ttl_secs = u64::MAX;
        assert!(c.validate().is_err());

        let mut c = Config::default();
        c.admin.token = Some("short".into());
        assert!(c.validate().is_err());

        let mut c = Config::default();
        c.provider.kind = ProviderKind::Aws;
        assert!(c.validate().is_err(), "aws needs ARNs");
        c.provider.aws.ipset_arns = vec!["nope".into()];
        assert!(c.validate().is_err());
        c.provider.aws.ipset_arns = vec![
            "arn:aws:wafv2:eu-west-1:123456789012:regional/ipset/p/abc".into(),
            "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/p/abc".into(),
        ];
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("provider.aws.ipset_arns[1]"), "{err}");
        assert!(err.contains("webacl"), "the reason is given: {err}");
        c.provider.aws.ipset_arns =
            vec!["arn:aws:wafv2:eu-west-1:123456789012:regional/ipset/p/abc".into()];
        c.validate().unwrap();
    }

    #[test]
    fn flags_override_the_file() {
        let cli = Cli::try_parse_from([
            "palisade-blocker",
            "--nats-url",
            "nats://127.0.0.1:1",
            "--state-dir",
            "/tmp/x",
            "--admin-listen",
            "127.0.0.1:1234",
            "--provider",
            "aws",
            "--ipset-arn",
            "arn:aws:wafv2:us-east-1:123456789012:regional/ipset/a/1",
            "--ipset-arn",
            "arn:aws:wafv2:us-east-1:123456789012:regional/ipset/b/2",
            "--dry-run",
            "--allow-special",
            "192.0.2.0/24",
        ])
        .unwrap();
        let c = cli.load().unwrap();
        assert_eq!(c.nats.url, "nats://127.0.0.1:1");
        assert_eq!(c.state.dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.admin.listen.port(), 1234);
        assert_eq!(c.provider.kind, ProviderKind::Aws);
        assert_eq!(c.provider.aws.ipset_arns.len(), 2);
        assert!(c.provider.aws.dry_run);
        assert_eq!(c.guardrails.allow_special.len(), 1);
    }

    #[test]
    fn category_threshold_falls_back_to_defaults() {
        let mut p = PolicyConfig::default();
        p.categories.insert(
            "scanner".into(),
            Thresholds {
                low: Some(100),
                medium: None,
                high: None,
                critical: None,
            },
        );
        assert_eq!(p.threshold("scanner", Severity::Low), Some(100));
        assert_eq!(p.threshold("scanner", Severity::High), Some(2));
        assert_eq!(p.threshold("sqli", Severity::Low), Some(8));
        assert_eq!(p.threshold("sqli", Severity::Critical), Some(1));
    }
}

/// `[falco]`: Falco events, as Falcosidekick publishes them on NATS, turned into reports.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FalcoConfig {
    /// Take Falco events at all.
    #[serde(default)]
    pub enabled: bool,
    /// Subject of the events (Falcosidekick publishes on `falco.<priority>.<rule slug>`).
    #[serde(default = "default_falco_subject")]
    pub subject: String,
    /// Queue group of the replicas: each event is handled by one of them.
    #[serde(default = "default_falco_queue_group")]
    pub queue_group: String,
    /// The sensor id the reports are published under (`palisade.reports.<id>`): list it in
    /// `nats.accepted_sensors` when that is set; its quota and dedup apply as to any sensor.
    #[serde(default = "default_falco_sensor_id")]
    pub sensor_id: String,
    /// Events of a lower Falco priority are dropped (debug … emergency).
    #[serde(default = "default_falco_min_priority")]
    pub min_priority: String,
    /// Output field that holds the address to block, unless a mapping names another
    /// (`fd.rip`: the remote end of the process's connection, the client for a server).
    #[serde(default = "default_falco_address_field")]
    pub address_field: String,
    /// Which events become reports, first match wins; an event no mapping takes is dropped.
    #[serde(default)]
    pub rules: Vec<FalcoMapping>,
}

/// One `[[falco.rules]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FalcoMapping {
    /// Falco rule name pattern, case-insensitive, `*` and `?` wildcards.
    #[serde(default)]
    pub rule: Option<String>,
    /// Any of these Falco tags (case-insensitive).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Palisade category of the report (`rce`, `sqli`, ...; see the wire contract).
    pub category: String,
    /// Severity; default from the event's priority (critical and above: critical; error:
    /// high; warning: medium; lower: low).
    #[serde(default)]
    pub severity: Option<Severity>,
    /// Output field holding the address, instead of `falco.address_field`.
    #[serde(default)]
    pub address_field: Option<String>,
}

impl Default for FalcoConfig {
    fn default() -> Self {
        FalcoConfig {
            enabled: false,
            subject: default_falco_subject(),
            queue_group: default_falco_queue_group(),
            sensor_id: default_falco_sensor_id(),
            min_priority: default_falco_min_priority(),
            address_field: default_falco_address_field(),
            rules: Vec::new(),
        }
    }
}

impl FalcoConfig {
    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if !self.enabled {
            return Ok(());
        }
        if let Err(e) = palisade_wire::validate_sensor_id(&self.sensor_id) {
            return bad(format!("falco.sensor_id: {e}"));
        }
        if crate::falco::priority_rank(&self.min_priority).is_none() {
            return bad(format!(
                "falco.min_priority `{}` is not a Falco priority (debug, informational, notice, \
                 warning, error, critical, alert, emergency)",
                self.min_priority
            ));
        }
        if self.subject.is_empty() || self.subject.contains(char::is_whitespace) {
            return bad("falco.subject must be a NATS subject".into());
        }
        if self.rules.is_empty() {
            return bad(
                "falco.enabled without any [[falco.rules]]: no event would become a report".into(),
            );
        }
        for (i, m) in self.rules.iter().enumerate() {
            if m.rule.is_none() && m.tags.is_empty() {
                return bad(format!(
                    "falco.rules[{i}] needs `rule` or `tags` (it would take every event)"
                ));
            }
            if let Err(e) = palisade_wire::Category::new(m.category.clone()) {
                return bad(format!("falco.rules[{i}].category: {e}"));
            }
        }
        Ok(())
    }
}

fn default_falco_subject() -> String {
    "falco.>".into()
}
fn default_falco_queue_group() -> String {
    "palisade-falco".into()
}
fn default_falco_sensor_id() -> String {
    "falco".into()
}
fn default_falco_min_priority() -> String {
    "warning".into()
}
fn default_falco_address_field() -> String {
    "fd.rip".into()
}
