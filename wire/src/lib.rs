//! Palisade wire contract, version 1.
//!
//! A *report* says "this client sent this malicious request". Sensors publish reports as UTF-8
//! JSON on the NATS subject `palisade.reports.<sensor_id>` (captured by the JetStream stream
//! [`STREAM_NAME`]) with the header `Nats-Msg-Id` set to the report id, so JetStream drops
//! re-sent duplicates. The blocker consumes them. The contract is public: third parties may
//! publish reports too, so [`Report::from_slice`] validates everything strictly and every
//! rejection has a stable [`WireError::reason`] label for metrics.
//!
//! See `docs/wire-contract.md` for the operator-facing description.

pub mod exposition;
#[cfg(feature = "nats")]
pub mod nats;
pub mod special;

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The only version of the contract this crate speaks.
pub const WIRE_VERSION: u64 = 1;
/// Largest accepted report body, in bytes.
pub const MAX_REPORT_BYTES: usize = 8 * 1024;
/// Largest accepted `evidence`, in bytes. Publishers truncate with [`truncate_evidence`].
pub const MAX_EVIDENCE_BYTES: usize = 256;
/// Longest accepted report id (it doubles as the `Nats-Msg-Id` header).
pub const MAX_ID_LEN: usize = 128;
/// Longest accepted sensor id (one NATS subject token).
pub const MAX_SENSOR_LEN: usize = 64;
/// Longest accepted rule id.
pub const MAX_RULE_LEN: usize = 64;
/// Longest accepted category.
pub const MAX_CATEGORY_LEN: usize = 32;
/// Most MITRE ATT&CK technique ids in one report.
pub const MAX_MITRE: usize = 16;
/// Longest accepted string inside `context`.
pub const MAX_CONTEXT_FIELD_LEN: usize = 256;

/// JetStream stream that captures every report subject.
pub const STREAM_NAME: &str = "PALISADE_REPORTS";
/// Subject prefix; a report from sensor `s` goes to `palisade.reports.s`.
pub const SUBJECT_PREFIX: &str = "palisade.reports";
/// Wildcard the stream captures.
pub const SUBJECT_WILDCARD: &str = "palisade.reports.>";
/// Header carrying the report id, used by JetStream for de-duplication.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";

/// Why a report was rejected. One variant per metric label (see [`WireError::reason`]).
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// The body is larger than [`MAX_REPORT_BYTES`].
    #[error("report is {size} bytes, more than the {max} allowed")]
    TooLarge { size: usize, max: usize },
    /// The body is not UTF-8.
    #[error("report is not UTF-8: {0}")]
    NotUtf8(String),
    /// The body is not a JSON object.
    #[error("report is not a JSON object: {0}")]
    BadJson(String),
    /// `v` is not [`WIRE_VERSION`].
    #[error("unsupported wire version {0} (this build speaks {WIRE_VERSION})")]
    UnsupportedVersion(String),
    /// A required field is absent or null.
    #[error("missing required field `{0}`")]
    MissingField(&'static str),
    /// A field is present but its value breaks the contract.
    #[error("invalid field `{field}`: {message}")]
    InvalidField {
        field: &'static str,
        message: String,
    },
}

impl WireError {
    /// Stable, low-cardinality label for the `reason` of a rejection counter.
    pub fn reason(&self) -> &'static str {
        match self {
            WireError::TooLarge { .. } => "too_large",
            WireError::NotUtf8(_) => "not_utf8",
            WireError::BadJson(_) => "bad_json",
            WireError::UnsupportedVersion(_) => "unsupported_version",
            WireError::MissingField(_) => "missing_field",
            WireError::InvalidField { .. } => "invalid_field",
        }
    }

    fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        WireError::InvalidField {
            field,
            message: message.into(),
        }
    }
}

/// How bad the detected request is. Ordered: `Low < Medium < High < Critical`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// All severities, lowest first.
    pub const ALL: [Severity; 4] = [
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    /// The lowercase wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = WireError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "low" => Ok(Severity::Low),
            "medium" => Ok(Severity::Medium),
            "high" => Ok(Severity::High),
            "critical" => Ok(Severity::Critical),
            other => Err(WireError::invalid(
                "severity",
                format!("`{other}` is not one of low, medium, high, critical"),
            )),
        }
    }
}

/// Attack category. The set is open (third parties may add their own), so this is a validated
/// lowercase token: `[a-z0-9_-]{1,32}`. The well-known ones are associated constants.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Category(String);

impl Category {
    pub const SQLI: &'static str = "sqli";
    pub const XSS: &'static str = "xss";
    pub const LFI: &'static str = "lfi";
    pub const RFI: &'static str = "rfi";
    pub const RCE: &'static str = "rce";
    pub const JAVA: &'static str = "java";
    pub const PHP: &'static str = "php";
    pub const SSRF: &'static str = "ssrf";
    pub const SCANNER: &'static str = "scanner";
    pub const PROTOCOL: &'static str = "protocol";

    /// Validate and wrap a category token.
    pub fn new(s: impl Into<String>) -> Result<Self, WireError> {
        let s = s.into();
        if s.is_empty() || s.len() > MAX_CATEGORY_LEN {
            return Err(WireError::invalid(
                "category",
                format!("must be 1 to {MAX_CATEGORY_LEN} characters"),
            ));
        }
        if !s
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        {
            return Err(WireError::invalid(
                "category",
                "only lowercase letters, digits, `_` and `-` are allowed",
            ));
        }
        Ok(Category(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Category {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Category {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Category::new(s).map_err(serde::de::Error::custom)
    }
}

/// Optional context about where the request was seen: which node, and on Kubernetes which
/// workload received it. Every field is optional and left out when unknown; unknown keys are
/// ignored, so receivers that predate a field accept reports that carry it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Context {
    /// Node (host) name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Pod name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// Pod namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Pod UID (`metadata.uid`), canonical form with dashes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    /// Container name within the pod (`spec.containers[].name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Container id as Kubernetes shows it in `status.containerStatuses[].containerID`:
    /// `containerd://<id>`, `cri-o://<id>` or `docker://<id>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
    /// Owning workload as `<Kind>/<name>` (`Deployment/web`, `StatefulSet/db`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Network interface the request arrived on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Destination (server) port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst_port: Option<u16>,
}

/// Longest accepted `context.pod_uid` (a UUID is 36; static pods use a 32-digit hash).
pub const MAX_POD_UID_LEN: usize = 64;
/// Longest accepted `context.container` (Kubernetes container names are DNS labels, 63).
pub const MAX_CONTAINER_NAME_LEN: usize = 63;

impl Context {
    fn is_empty(&self) -> bool {
        *self == Context::default()
    }

    /// Checks the bounds: every string at most [`MAX_CONTEXT_FIELD_LEN`] bytes; `pod_uid`,
    /// `container`, `container_id` and `workload` also by their shape (they name Kubernetes
    /// objects, so anything else is a publisher bug, and a receiver may put them in labels).
    pub fn validate(&self) -> Result<(), WireError> {
        for s in [
            &self.node,
            &self.pod,
            &self.namespace,
            &self.pod_uid,
            &self.container,
            &self.container_id,
            &self.workload,
            &self.interface,
        ]
        .into_iter()
        .flatten()
        {
            if s.len() > MAX_CONTEXT_FIELD_LEN {
                return Err(WireError::invalid(
                    "context",
                    format!("a value is longer than {MAX_CONTEXT_FIELD_LEN} bytes"),
                ));
            }
        }
        let bad = |field: &str, rule: &str| {
            Err(WireError::invalid(
                "context",
                format!("`{field}` must be {rule}"),
            ))
        };
        if let Some(uid) = &self.pod_uid
            && (uid.is_empty()
                || uid.len() > MAX_POD_UID_LEN
                || !uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
        {
            return bad("pod_uid", "1 to 64 hex digits and `-`");
        }
        if let Some(name) = &self.container
            && (name.is_empty() || name.len() > MAX_CONTAINER_NAME_LEN || !token_ok(name, b"."))
        {
            return bad("container", "1 to 63 of `[A-Za-z0-9_.-]`");
        }
        if let Some(id) = &self.container_id
            && !container_id_ok(id)
        {
            return bad(
                "container_id",
                "printable ASCII without spaces (`containerd://<id>`)",
            );
        }
        if let Some(w) = &self.workload
            && !workload_ok(w)
        {
            return bad("workload", "`<Kind>/<name>` like `Deployment/web`");
        }
        Ok(())
    }
}

/// Printable ASCII without spaces. Palisade's sensors write `<runtime>://<id>` as Kubernetes
/// does; a bare id (a third party that predates the field's documented form) still passes.
fn container_id_ok(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic())
}

/// `<Kind>/<name>`: kind `[A-Za-z0-9]+`, name a DNS subdomain `[a-z0-9.-]+` (upper case
/// tolerated).
fn workload_ok(s: &str) -> bool {
    let Some((kind, name)) = s.split_once('/') else {
        return false;
    };
    !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_alphanumeric())
        && !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// A validated report (wire contract v1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Contract version, always [`WIRE_VERSION`].
    pub v: u64,
    /// Unique id; also the `Nats-Msg-Id` header.
    pub id: String,
    /// Id of the sensor that saw the request (one NATS subject token).
    pub sensor: String,
    /// When the request was seen, UTC.
    #[serde(serialize_with = "ser_rfc3339")]
    pub observed_at: DateTime<Utc>,
    /// The address to block.
    pub client_ip: IpAddr,
    /// The address the packet came from (a load balancer, or the client itself).
    pub peer_ip: IpAddr,
    /// Id of the rule that matched.
    pub rule: String,
    /// Attack category.
    pub category: Category,
    /// Severity of the match.
    pub severity: Severity,
    /// MITRE ATT&CK technique ids (may be empty).
    pub mitre: Vec<String>,
    /// The matched fragment, at most [`MAX_EVIDENCE_BYTES`] bytes.
    pub evidence: String,
    /// Optional context.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Context>,
    /// What the OWASP Core Rule Set engine found, when it made or joined the detection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crs: Option<CrsDetail>,
}

/// Most CRS rule ids in one report.
pub const MAX_CRS_RULES: usize = 32;
/// Most CRS tags in one report.
pub const MAX_CRS_TAGS: usize = 24;
/// Longest CRS tag.
pub const MAX_CRS_TAG_LEN: usize = 64;

/// The Core Rule Set's verdict on the request behind a report: which rules matched and the
/// anomaly score they added up to.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrsDetail {
    /// CRS rule ids that matched (attack and protocol rules), at most [`MAX_CRS_RULES`].
    pub rules: Vec<u32>,
    /// Inbound anomaly score of every rule family.
    pub score: u32,
    /// Points from the attack-family rules alone (913, 921, 930-934, 941-944): what decides.
    pub attack_score: u32,
    /// CRS tags of the matched rules (`attack-sqli`, `paranoia-level/1`, `capec/...`), at most
    /// [`MAX_CRS_TAGS`].
    pub tags: Vec<String>,
}

fn ser_rfc3339<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

/// The shape on the wire before validation: every field optional and loosely typed, so a bad
/// report yields a precise reason instead of a generic serde message. String fields borrow from
/// the body where they can (no escapes); only `v`, `mitre` and `context` are parsed as values.
#[derive(Deserialize)]
struct RawReport<'a> {
    v: Option<serde_json::Value>,
    #[serde(borrow)]
    id: Option<Loose<'a>>,
    #[serde(borrow)]
    sensor: Option<Loose<'a>>,
    #[serde(borrow)]
    observed_at: Option<Loose<'a>>,
    #[serde(borrow)]
    client_ip: Option<Loose<'a>>,
    #[serde(borrow)]
    peer_ip: Option<Loose<'a>>,
    #[serde(borrow)]
    rule: Option<Loose<'a>>,
    #[serde(borrow)]
    category: Option<Loose<'a>>,
    #[serde(borrow)]
    severity: Option<Loose<'a>>,
    mitre: Option<serde_json::Value>,
    #[serde(borrow)]
    evidence: Option<Loose<'a>>,
    /// Kept raw and parsed straight into [`Context`]: no intermediate value.
    #[serde(borrow)]
    context: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow)]
    crs: Option<&'a serde_json::value::RawValue>,
}

/// A field expected to be a string: the string, or the kind of JSON value found instead
/// (skipped without building it).
enum Loose<'a> {
    Str(Cow<'a, str>),
    Null,
    Other(&'static str),
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Loose<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(Loose::Str(Cow::Owned(v)))
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(Loose::Null)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Loose::Null)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Loose::Other("a boolean"))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(Loose::Other("a number"))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(Loose::Other("a number"))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(Loose::Other("a number"))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(Loose::Other("an array"))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Loose::Other("an object"))
            }
        }
        d.deserialize_any(V)
    }
}

fn required(
    v: Option<serde_json::Value>,
    field: &'static str,
) -> Result<serde_json::Value, WireError> {
    match v {
        None | Some(serde_json::Value::Null) => Err(WireError::MissingField(field)),
        Some(v) => Ok(v),
    }
}

fn required_str<'a>(v: Option<Loose<'a>>, field: &'static str) -> Result<Cow<'a, str>, WireError> {
    match v {
        None | Some(Loose::Null) => Err(WireError::MissingField(field)),
        Some(Loose::Str(s)) => Ok(s),
        Some(Loose::Other(kind)) => Err(WireError::invalid(
            field,
            format!("expected a string, got {kind}"),
        )),
    }
}

fn json_kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// `[A-Za-z0-9_-]`, plus the extra bytes a field allows.
fn token_ok(s: &str, extra: &[u8]) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || extra.contains(&b))
}

fn check_len(field: &'static str, s: &str, max: usize) -> Result<(), WireError> {
    if s.is_empty() {
        return Err(WireError::invalid(field, "must not be empty"));
    }
    if s.len() > max {
        return Err(WireError::invalid(
            field,
            format!("{} bytes, more than the {max} allowed", s.len()),
        ));
    }
    Ok(())
}

/// Validate a sensor id: 1 to 64 of `[A-Za-z0-9_-]` (it is a NATS subject token).
pub fn validate_sensor_id(s: &str) -> Result<(), WireError> {
    check_len("sensor", s, MAX_SENSOR_LEN)?;
    if !token_ok(s, b"") {
        return Err(WireError::invalid(
            "sensor",
            "only letters, digits, `_` and `-` are allowed (it is a NATS subject token)",
        ));
    }
    Ok(())
}

/// Validate a report id: 1 to 128 printable ASCII characters without spaces.
pub fn validate_report_id(s: &str) -> Result<(), WireError> {
    check_len("id", s, MAX_ID_LEN)?;
    if !s.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(WireError::invalid(
            "id",
            "only printable ASCII without spaces is allowed (it is the Nats-Msg-Id header)",
        ));
    }
    Ok(())
}

/// Validate a rule id: 1 to 64 of `[A-Za-z0-9_.:-]`.
pub fn validate_rule_id(s: &str) -> Result<(), WireError> {
    check_len("rule", s, MAX_RULE_LEN)?;
    if !token_ok(s, b".:") {
        return Err(WireError::invalid(
            "rule",
            "only letters, digits, `_`, `-`, `.` and `:` are allowed",
        ));
    }
    Ok(())
}

/// Is `s` a MITRE ATT&CK technique id (`T1190` or `T1059.004`)?
pub fn mitre_ok(s: &str) -> bool {
    let b = s.as_bytes();
    let digits = |r: &[u8]| r.iter().all(u8::is_ascii_digit);
    match b.len() {
        5 => b[0] == b'T' && digits(&b[1..]),
        9 => b[0] == b'T' && digits(&b[1..5]) && b[5] == b'.' && digits(&b[6..]),
        _ => false,
    }
}

fn parse_ip(field: &'static str, s: &str) -> Result<IpAddr, WireError> {
    let ip: IpAddr = s.parse().map_err(|_| {
        WireError::invalid(
            field,
            format!("`{}` is not an IPv4 or IPv6 address", clip(s, 64)),
        )
    })?;
    if ip.is_unspecified() {
        return Err(WireError::invalid(
            field,
            "the unspecified address cannot be blocked",
        ));
    }
    Ok(ip)
}

fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Truncate `s` to at most [`MAX_EVIDENCE_BYTES`] bytes on a character boundary.
pub fn truncate_evidence(s: &str) -> &str {
    clip(s, MAX_EVIDENCE_BYTES)
}

fn parse_context(raw: &serde_json::value::RawValue) -> Result<Option<Context>, WireError> {
    let text = raw.get();
    if !text.starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| WireError::BadJson(e.to_string()))?;
        if v.is_null() {
            return Ok(None);
        }
        return Err(WireError::invalid(
            "context",
            format!("expected an object, got {}", json_kind(&v)),
        ));
    }
    let ctx: Context =
        serde_json::from_str(text).map_err(|e| WireError::invalid("context", e.to_string()))?;
    ctx.validate()?;
    Ok(if ctx.is_empty() { None } else { Some(ctx) })
}

fn parse_crs(raw: &serde_json::value::RawValue) -> Result<Option<CrsDetail>, WireError> {
    let text = raw.get();
    if text == "null" {
        return Ok(None);
    }
    let crs: CrsDetail =
        serde_json::from_str(text).map_err(|e| WireError::invalid("crs", e.to_string()))?;
    crs.validate()?;
    Ok(Some(crs))
}

impl CrsDetail {
    /// Checks the limits: rule and tag counts, tag length and characters.
    pub fn validate(&self) -> Result<(), WireError> {
        if self.rules.len() > MAX_CRS_RULES {
            return Err(WireError::invalid(
                "crs",
                format!("{} rules, more than {MAX_CRS_RULES}", self.rules.len()),
            ));
        }
        if self.tags.len() > MAX_CRS_TAGS {
            return Err(WireError::invalid(
                "crs",
                format!("{} tags, more than {MAX_CRS_TAGS}", self.tags.len()),
            ));
        }
        for t in &self.tags {
            if t.is_empty() || t.len() > MAX_CRS_TAG_LEN || !t.bytes().all(|b| b.is_ascii_graphic())
            {
                return Err(WireError::invalid(
                    "crs",
                    format!(
                        "tag `{}` is not 1 to {MAX_CRS_TAG_LEN} printable characters",
                        clip(t, 64)
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Report {
    /// Parse and validate a report body. Never panics, whatever the bytes.
    pub fn from_slice(body: &[u8]) -> Result<Report, WireError> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(WireError::TooLarge {
                size: body.len(),
                max: MAX_REPORT_BYTES,
            });
        }
        let text = std::str::from_utf8(body).map_err(|e| WireError::NotUtf8(e.to_string()))?;
        let raw: RawReport =
            serde_json::from_str(text).map_err(|e| WireError::BadJson(e.to_string()))?;
        Report::from_raw(raw)
    }

    fn from_raw(raw: RawReport) -> Result<Report, WireError> {
        let v = required(raw.v, "v")?;
        if v.as_u64() != Some(WIRE_VERSION) {
            return Err(WireError::UnsupportedVersion(
                clip(&v.to_string(), 32).to_owned(),
            ));
        }
        let id = required_str(raw.id, "id")?.into_owned();
        validate_report_id(&id)?;
        let sensor = required_str(raw.sensor, "sensor")?.into_owned();
        validate_sensor_id(&sensor)?;
        let observed_at = required_str(raw.observed_at, "observed_at")?;
        let observed_at = DateTime::parse_from_rfc3339(&observed_at)
            .map_err(|e| WireError::invalid("observed_at", format!("not RFC 3339: {e}")))?
            .with_timezone(&Utc);
        let client_ip = parse_ip("client_ip", &required_str(raw.client_ip, "client_ip")?)?;
        let peer_ip = parse_ip("peer_ip", &required_str(raw.peer_ip, "peer_ip")?)?;
        let rule = required_str(raw.rule, "rule")?.into_owned();
        validate_rule_id(&rule)?;
        let category = Category::new(required_str(raw.category, "category")?.into_owned())?;
        let severity: Severity = required_str(raw.severity, "severity")?.parse()?;
        let mitre = match raw.mitre {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => {
                if items.len() > MAX_MITRE {
                    return Err(WireError::invalid(
                        "mitre",
                        format!("{} ids, more than the {MAX_MITRE} allowed", items.len()),
                    ));
                }
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        serde_json::Value::String(s) if mitre_ok(&s) => out.push(s),
                        other => {
                            return Err(WireError::invalid(
                                "mitre",
                                format!(
                                    "`{}` is not an ATT&CK technique id like T1190 or T1059.004",
                                    clip(&other.to_string(), 32)
                                ),
                            ));
                        }
                    }
                }
                out
            }
            Some(other) => {
                return Err(WireError::invalid(
                    "mitre",
                    format!("expected an array, got {}", json_kind(&other)),
                ));
            }
        };
        let evidence = required_str(raw.evidence, "evidence")?.into_owned();
        if evidence.len() > MAX_EVIDENCE_BYTES {
            return Err(WireError::invalid(
                "evidence",
                format!(
                    "{} bytes, more than the {MAX_EVIDENCE_BYTES} allowed",
                    evidence.len()
                ),
            ));
        }
        let context = match raw.context {
            None => None,
            Some(v) => parse_context(v)?,
        };
        let crs = match raw.crs {
            None => None,
            Some(v) => parse_crs(v)?,
        };
        Ok(Report {
            v: WIRE_VERSION,
            id,
            sensor,
            observed_at,
            client_ip,
            peer_ip,
            rule,
            category,
            severity,
            mitre,
            evidence,
            context,
            crs,
        })
    }

    /// Check a report built in code (by a sensor) against the contract.
    pub fn validate(&self) -> Result<(), WireError> {
        let body = serde_json::to_vec(self).map_err(|e| WireError::BadJson(e.to_string()))?;
        Report::from_slice(&body).map(|_| ())
    }

    /// Serialize to the JSON body, refusing anything the contract would reject.
    pub fn to_vec(&self) -> Result<Vec<u8>, WireError> {
        let body = serde_json::to_vec(self).map_err(|e| WireError::BadJson(e.to_string()))?;
        Report::from_slice(&body)?;
        Ok(body)
    }

    /// The subject this report is published on.
    pub fn subject(&self) -> String {
        subject_for(&self.sensor)
    }
}

/// `palisade.reports.<sensor_id>`.
pub fn subject_for(sensor_id: &str) -> String {
    format!("{SUBJECT_PREFIX}.{sensor_id}")
}

/// The sensor id a subject names, if it is a report subject.
pub fn sensor_from_subject(subject: &str) -> Option<&str> {
    subject
        .strip_prefix(SUBJECT_PREFIX)?
        .strip_prefix('.')
        .filter(|s| !s.is_empty() && !s.contains('.'))
}

#[cfg(test)]
mod tests;
