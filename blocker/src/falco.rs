//! Falco as a report source: Falco events, as Falcosidekick publishes them on NATS
//! (`falco.<priority>.<rule slug>`, one JSON event each), become Palisade reports on the reports
//! stream, so that they go through exactly what a sensor's report goes through (validation,
//! `accepted_sensors`, per-sensor quota, deduplication, policy, guardrails, HA).
//!
//! Only events that the configuration maps are turned into reports: a rule-name pattern
//! and/or a tag, giving the category and severity, and the output field that holds the remote
//! address (`fd.rip` for the peer of a server's connection). Everything else is counted by
//! outcome in `palisade_falco_events_total` and dropped, never a crash.
//!
//! Every replica runs the bridge in one NATS queue group, so that each event is handled once;
//! the report id is derived from the event (its `uuid`, or a digest of its body), and the
//! stream's `Nats-Msg-Id` deduplication drops a re-sent event.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use palisade_wire::{Category, Context, Report, Severity, WIRE_VERSION};
use serde::Deserialize;
use tracing::{debug, info, warn};

use crate::config::{FalcoConfig, FalcoMapping};
use crate::metrics::Metrics;

/// Falco's priorities, lowest first (`priority` of an event, case-insensitive).
const PRIORITIES: [&str; 8] = [
    "debug",
    "informational",
    "notice",
    "warning",
    "error",
    "critical",
    "alert",
    "emergency",
];

/// The rank of a Falco priority name (`info` is Falco's short form of `informational`).
pub fn priority_rank(p: &str) -> Option<usize> {
    let p = p.to_ascii_lowercase();
    let p = if p == "info" {
        "informational".into()
    } else {
        p
    };
    PRIORITIES.iter().position(|x| *x == p)
}

/// An event as Falcosidekick publishes it (`types.FalcoPayload`); unknown keys are ignored.
#[derive(Debug, Deserialize)]
pub struct FalcoEvent {
    #[serde(default)]
    pub uuid: Option<String>,
    #[serde(default)]
    pub output: String,
    pub priority: String,
    pub rule: String,
    pub time: DateTime<Utc>,
    #[serde(default)]
    pub output_fields: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub hostname: Option<String>,
}

/// What became of one event (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Turned into a report and stored in the stream.
    Published,
    /// Not JSON, or not a Falco event.
    Malformed,
    /// Below `falco.min_priority`.
    BelowPriority,
    /// No mapping matches its rule or tags.
    Unmapped,
    /// Mapped, but the address field is missing or not an IP address.
    NoAddress,
    /// The report it made does not pass the wire contract.
    Invalid,
    /// The stream did not store it.
    PublishFailed,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Published => "published",
            Outcome::Malformed => "malformed",
            Outcome::BelowPriority => "below_priority",
            Outcome::Unmapped => "unmapped",
            Outcome::NoAddress => "no_address",
            Outcome::Invalid => "invalid",
            Outcome::PublishFailed => "publish_failed",
        }
    }
}

/// Case-insensitive glob (`*` any run, `?` one character) on a Falco rule name.
fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let t: Vec<char> = text.to_lowercase().chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

impl FalcoMapping {
    /// Does this mapping take `event`? Its rule pattern (when set) must match the rule name,
    /// and one of its tags (when set) must be among the event's tags.
    fn matches(&self, event: &FalcoEvent) -> bool {
        let rule_ok = self.rule.as_deref().is_none_or(|p| glob(p, &event.rule));
        let tag_ok = self.tags.is_empty()
            || self
                .tags
                .iter()
                .any(|t| event.tags.iter().any(|e| e.eq_ignore_ascii_case(t)));
        rule_ok && tag_ok
    }
}

/// `[A-Za-z0-9_.:-]` of the rule name, lower case, runs of anything else as `_`.
fn slug(rule: &str) -> String {
    let mut out = String::with_capacity(rule.len());
    for c in rule.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_owned()
}

/// The report for `event`, or why there is none.
pub fn to_report(config: &FalcoConfig, body: &[u8]) -> Result<Report, Outcome> {
    let event: FalcoEvent = serde_json::from_slice(body).map_err(|_| Outcome::Malformed)?;
    let rank = priority_rank(&event.priority).ok_or(Outcome::Malformed)?;
    if rank < priority_rank(&config.min_priority).unwrap_or(0) {
        return Err(Outcome::BelowPriority);
    }
    let mapping = config
        .rules
        .iter()
        .find(|m| m.matches(&event))
        .ok_or(Outcome::Unmapped)?;
    let field = mapping
        .address_field
        .as_deref()
        .unwrap_or(&config.address_field);
    let ip: IpAddr = match event.output_fields.get(field) {
        Some(serde_json::Value::String(s)) => s.trim().parse().map_err(|_| Outcome::NoAddress)?,
        _ => return Err(Outcome::NoAddress),
    };
    let category = Category::new(mapping.category.clone()).map_err(|_| Outcome::Invalid)?;
    let severity = match mapping.severity {
        Some(s) => s,
        None => severity_of(rank),
    };
    let id = match &event.uuid {
        Some(u) if !u.is_empty() && u.len() <= 100 && u.bytes().all(|b| b.is_ascii_graphic()) => {
            format!("falco-{u}")
        }
        _ => {
            use sha2::Digest as _;
            let digest = sha2::Sha256::digest(body);
            let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
            format!("falco-{hex}")
        }
    };
    let mut rule = format!("falco.{}", slug(&event.rule));
    rule.truncate(palisade_wire::MAX_RULE_LEN);
    let text = |k: &str| {
        event
            .output_fields
            .get(k)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty() && *s != "<NA>")
            .map(str::to_owned)
    };
    let context = Context {
        node: event.hostname.clone().filter(|h| !h.is_empty()),
        namespace: text("k8s.ns.name"),
        pod: text("k8s.pod.name"),
        container: None,
        ..Default::default()
    };
    let mut report = Report {
        v: WIRE_VERSION,
        id,
        sensor: config.sensor_id.clone(),
        observed_at: event.time,
        client_ip: ip,
        peer_ip: ip,
        rule,
        category,
        severity,
        mitre: event
            .tags
            .iter()
            .filter(|t| palisade_wire::mitre_ok(t))
            .take(8)
            .cloned()
            .collect(),
        evidence: palisade_wire::truncate_evidence(&event.output).to_owned(),
        context: Some(context),
        crs: None,
    };
    if report.validate().is_err() {
        // A context the contract refuses (an odd pod name) must not lose the detection.
        report.context = None;
        report.validate().map_err(|_| Outcome::Invalid)?;
    }
    Ok(report)
}

/// Severity from Falco's priority when the mapping sets none.
fn severity_of(rank: usize) -> Severity {
    match PRIORITIES[rank] {
        "emergency" | "alert" | "critical" => Severity::Critical,
        "error" => Severity::High,
        "warning" => Severity::Medium,
        _ => Severity::Low,
    }
}

/// Take Falcosidekick's events until `stop` resolves: each mapped one is stored in the
/// reports stream as a report of `falco.sensor_id`.
pub async fn bridge(
    client: async_nats::Client,
    js: async_nats::jetstream::Context,
    config: Arc<FalcoConfig>,
    metrics: Arc<Metrics>,
    stop: impl std::future::Future<Output = ()>,
) {
    let mut sub = match client
        .queue_subscribe(config.subject.clone(), config.queue_group.clone())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            warn!(cause = %e, subject = %config.subject, "cannot take Falco events");
            return;
        }
    };
    info!(subject = %config.subject, sensor = %config.sensor_id, mappings = config.rules.len(), "taking Falco events");
    tokio::pin!(stop);
    loop {
        let msg = tokio::select! {
            _ = &mut stop => break,
            m = sub.next() => match m { Some(m) => m, None => break },
        };
        let outcome = match to_report(&config, &msg.payload) {
            Ok(report) => publish(&js, &report).await,
            Err(o) => o,
        };
        if outcome != Outcome::Published {
            debug!(subject = %msg.subject, outcome = outcome.label(), "Falco event not turned into a report");
        }
        metrics.falco_event(outcome.label());
    }
    let _ = sub.unsubscribe().await;
}

async fn publish(js: &async_nats::jetstream::Context, report: &Report) -> Outcome {
    let Ok(body) = report.to_vec() else {
        return Outcome::Invalid;
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(palisade_wire::MSG_ID_HEADER, report.id.as_str());
    let ack = match js
        .publish_with_headers(report.subject(), headers, body.into())
        .await
    {
        Ok(pending) => pending.await,
        Err(e) => {
            warn!(cause = %e, "cannot publish a Falco report");
            return Outcome::PublishFailed;
        }
    };
    match ack {
        Ok(_) => Outcome::Published,
        Err(e) => {
            warn!(cause = %e, "the stream did not store a Falco report");
            Outcome::PublishFailed
        }
    }
}

#[cfg(test)]
mod tests;
