//! Sensor identity on NATS.
//!
//! A sensor is who NATS says it is: each sensor connects as its own NATS user (an NKey) that
//! may publish only on `palisade.reports.<its id>`, so the subject a report arrives on names
//! the sensor that sent it, whatever the body claims. The engine rejects a report whose body
//! `sensor` differs from its subject (`sensor_mismatch`); this module adds
//!
//! - [`AcceptedSensors`]: which sensor ids (exact ids and `*`/`?` patterns) the blocker takes
//!   reports from at all (`[nats] accepted_sensors`, default: every sensor). Others are
//!   rejected by subject, before their body is parsed, counted
//!   (`palisade_reports_rejected_total{reason="sensor_not_accepted"}`) and terminated so that
//!   JetStream does not redeliver them.
//! - [`mint_sensor`] and [`mint_blocker`]: a fresh NKey user with exactly the permissions
//!   that service needs, rendered as a seed file and as a `nats-server` `authorization`
//!   user entry (`palisade-blocker credentials ...`).

use std::collections::HashSet;
use std::fmt::{self, Write as _};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Deserializer};
use tracing::warn;

use crate::error::{Error, Result};
use crate::loglimit::LogLimiter;
use crate::metrics::Metrics;

/// Rejection label of a report whose subject names a sensor that is not accepted.
pub const NOT_ACCEPTED: &str = "sensor_not_accepted";

/// A turned-away sensor is logged at most once per this interval (the metric counts all).
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Longest accepted pattern in `accepted_sensors`.
const MAX_PATTERN_LEN: usize = 128;

/// The sensors whose reports the blocker takes: every sensor (the default), or those whose id
/// equals one of the listed ids or matches one of the listed patterns (`*` = any run of
/// characters, possibly none; `?` = exactly one).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AcceptedSensors {
    /// `None` = every sensor.
    list: Option<Compiled>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Compiled {
    /// The configured entries, in order (for messages and equality).
    source: Vec<String>,
    exact: HashSet<String>,
    globs: Vec<Vec<u8>>,
    /// A bare `*` was listed.
    any: bool,
}

impl AcceptedSensors {
    /// Every sensor.
    pub fn all() -> AcceptedSensors {
        AcceptedSensors { list: None }
    }

    /// Only the sensors matching one of `patterns` (sensor ids, or ids with `*` and `?`).
    /// An empty list, an empty pattern or a character that cannot be in a sensor id is an
    /// error naming the entry.
    pub fn from_patterns<S: AsRef<str>>(patterns: &[S]) -> Result<AcceptedSensors> {
        if patterns.is_empty() {
            return Err(Error::Config(
                "nats.accepted_sensors must list at least one sensor id or pattern (leave it \
                 out to accept every sensor)"
                    .into(),
            ));
        }
        let mut c = Compiled {
            source: Vec::with_capacity(patterns.len()),
            exact: HashSet::new(),
            globs: Vec::new(),
            any: false,
        };
        for (i, p) in patterns.iter().enumerate() {
            let p = p.as_ref();
            check_pattern(p)
                .map_err(|why| Error::Config(format!("nats.accepted_sensors[{i}] `{p}`: {why}")))?;
            c.source.push(p.to_owned());
            if p.bytes().all(|b| b == b'*') {
                c.any = true;
            } else if p.contains(['*', '?']) {
                c.globs.push(p.as_bytes().to_vec());
            } else {
                c.exact.insert(p.to_owned());
            }
        }
        Ok(AcceptedSensors { list: Some(c) })
    }

    /// True when every sensor is accepted (no filtering at all).
    pub fn accepts_all(&self) -> bool {
        self.list.as_ref().is_none_or(|c| c.any)
    }

    /// Is a report from sensor `id` accepted?
    pub fn accepts(&self, id: &str) -> bool {
        match &self.list {
            None => true,
            Some(c) => {
                c.any
                    || c.exact.contains(id)
                    || c.globs.iter().any(|g| glob_match(g, id.as_bytes()))
            }
        }
    }

    /// The configured entries (empty for "every sensor").
    pub fn patterns(&self) -> &[String] {
        self.list.as_ref().map_or(&[], |c| &c.source)
    }
}

impl fmt::Display for AcceptedSensors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.list {
            None => f.write_str("every sensor"),
            Some(c) => f.write_str(&c.source.join(", ")),
        }
    }
}

impl<'de> Deserialize<'de> for AcceptedSensors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let patterns = Vec::<String>::deserialize(d)?;
        AcceptedSensors::from_patterns(&patterns).map_err(serde::de::Error::custom)
    }
}

/// A pattern is what a sensor id may contain (`[A-Za-z0-9_-]`) plus `*` and `?`.
fn check_pattern(p: &str) -> std::result::Result<(), String> {
    if p.is_empty() {
        return Err("must not be empty".into());
    }
    if p.len() > MAX_PATTERN_LEN {
        return Err(format!("longer than {MAX_PATTERN_LEN} characters"));
    }
    if let Some(c) = p
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '*' | '?')))
    {
        return Err(format!(
            "`{c}` cannot be in a sensor id (letters, digits, `_`, `-`; `*` and `?` as wildcards)"
        ));
    }
    Ok(())
}

/// `*` matches any run of bytes (possibly empty), `?` exactly one, anything else itself.
/// Linear backtracking on the last `*`: O(len(pattern) * len(text)) at worst.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // Position of the last `*` seen and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// Applies [`AcceptedSensors`] to incoming messages by their subject: counts and logs (once
/// per sensor per interval) what it turns away.
#[derive(Debug)]
pub(crate) struct SensorGate {
    accepted: AcceptedSensors,
    metrics: Arc<Metrics>,
    log_limit: LogLimiter,
}

impl SensorGate {
    /// A gate logging each turned-away sensor at most once per [`LOG_INTERVAL`].
    pub(crate) fn new(accepted: AcceptedSensors, metrics: Arc<Metrics>) -> SensorGate {
        SensorGate {
            accepted,
            metrics,
            log_limit: LogLimiter::new(LOG_INTERVAL),
        }
    }

    /// True when nothing is filtered (the caller can skip [`SensorGate::admit`]).
    pub(crate) fn open(&self) -> bool {
        self.accepted.accepts_all()
    }

    /// Should the message on `subject` reach the engine? When not, it has been counted as
    /// received and rejected (`sensor_not_accepted`).
    pub(crate) fn admit(&self, subject: &str) -> bool {
        let sensor = palisade_wire::sensor_from_subject(subject);
        if sensor.is_some_and(|s| self.accepted.accepts(s)) {
            return true;
        }
        self.metrics
            .reports_received
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.metrics.rejected(NOT_ACCEPTED);
        if self.log_limit.allow(NOT_ACCEPTED, subject) {
            warn!(
                subject = %subject,
                accepted = %self.accepted,
                "report from a sensor that nats.accepted_sensors does not list rejected (logged \
                 once per subject per minute; palisade_reports_rejected_total{{reason=\"sensor_not_accepted\"}} counts all)"
            );
        }
        false
    }
}

/// What one NATS user may do: the subjects it may publish to and subscribe to (everything
/// else is denied by the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Subjects (with wildcards) the user may publish to.
    pub publish: Vec<String>,
    /// Subjects (with wildcards) the user may subscribe to.
    pub subscribe: Vec<String>,
}

/// The permissions of sensor `id`: publish its own report subject and read the stream's info
/// (what `palisade-sensor` asks at start when `create_stream` is on: it never creates the
/// stream with these permissions, so start the blocker first or let the sensors wait for it);
/// receive the JetStream publish acks on the default reply inboxes (`_INBOX.>`).
pub fn sensor_permissions(id: &str) -> Result<Permissions> {
    palisade_wire::validate_sensor_id(id)
        .map_err(|e| Error::Config(format!("`{id}` is not a valid sensor id: {e}")))?;
    Ok(Permissions {
        publish: vec![
            palisade_wire::subject_for(id),
            format!("$JS.API.STREAM.INFO.{}", palisade_wire::STREAM_NAME),
        ],
        subscribe: vec!["_INBOX.>".into()],
    })
}

/// The permissions of the blocker for `stream` and its durable `consumer`: create, read and
/// update the stream; create and read the consumer; pull from it and ack; receive replies on
/// its own inbox prefix (`[nats] inbox_prefix`), which no sensor may subscribe to.
///
/// With `state_bucket` (the `nats` state backend, `[state] bucket`), also what its replicas do
/// on the bucket and with each other: create, read and update the bucket's stream `KV_<bucket>`,
/// read it whole with an ordered consumer and key by key, write its keys `$KV.<bucket>.>`, and
/// forward admin changes to the lease holder on `palisade.blocker.<bucket>.admin` (the holder
/// answers on the requester's inbox, under the same prefix).
///
/// With `falco` (`[falco]` enabled: its subject and sensor id), also take Falcosidekick's
/// events and publish the reports made of them on `palisade.reports.<falco sensor id>`.
pub fn blocker_permissions(
    stream: &str,
    consumer: &str,
    inbox_prefix: &str,
    state_bucket: Option<&str>,
    falco: Option<(&str, &str)>,
) -> Permissions {
    let mut publish = vec![
        format!("$JS.API.STREAM.CREATE.{stream}"),
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.STREAM.UPDATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.{consumer}.>"),
        format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
        format!("$JS.ACK.{stream}.{consumer}.>"),
    ];
    let mut subscribe = vec![format!("{inbox_prefix}.>")];
    if let Some(bucket) = state_bucket {
        let kv = format!("KV_{bucket}");
        publish.extend([
            format!("$JS.API.STREAM.CREATE.{kv}"),
            format!("$JS.API.STREAM.INFO.{kv}"),
            format!("$JS.API.STREAM.UPDATE.{kv}"),
            format!("$JS.API.STREAM.MSG.GET.{kv}"),
            format!("$JS.API.DIRECT.GET.{kv}"),
            format!("$JS.API.DIRECT.GET.{kv}.>"),
            // The ordered consumer that loads the state: its name is generated.
            format!("$JS.API.CONSUMER.CREATE.{kv}"),
            format!("$JS.API.CONSUMER.CREATE.{kv}.>"),
            format!("$JS.API.CONSUMER.INFO.{kv}.*"),
            format!("$JS.API.CONSUMER.DELETE.{kv}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{kv}.*"),
            format!("$KV.{bucket}.>"),
            crate::admin::command_subject(bucket),
            format!("{inbox_prefix}.>"),
        ]);
        subscribe.push(crate::admin::command_subject(bucket));
    }
    if let Some((subject, sensor)) = falco {
        publish.push(palisade_wire::subject_for(sensor));
        subscribe.push(subject.to_owned());
    }
    Permissions { publish, subscribe }
}

/// A freshly minted NATS NKey user.
pub struct Credentials {
    /// Who it is for (`sensor <id>` or `blocker`), for the comments.
    pub who: String,
    /// The user's public key (`U...`): what the server configuration holds.
    pub public_key: String,
    /// The secret seed (`SU...`): what the service holds, and nothing else does.
    seed: String,
    /// What the user may do.
    pub permissions: Permissions,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("who", &self.who)
            .field("public_key", &self.public_key)
            .field("seed", &"<secret>")
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// Begin and end lines of a seed file, as the NATS tools decorate seeds (`.creds` files and
/// `nsc`): `palisade_wire::nats` reads both this and a bare seed line.
const SEED_BEGIN: &str = "-----BEGIN USER NKEY SEED-----";
const SEED_END: &str = "------END USER NKEY SEED------";

impl Credentials {
    fn mint(who: String, permissions: Permissions) -> Result<Credentials> {
        let kp = nkeys::KeyPair::new_user();
        let seed = kp
            .seed()
            .map_err(|e| Error::Config(format!("cannot encode the new NKey seed: {e}")))?;
        Ok(Credentials {
            who,
            public_key: kp.public_key(),
            seed,
            permissions,
        })
    }

    /// The secret seed (`SU...`).
    pub fn seed(&self) -> &str {
        &self.seed
    }

    /// The seed file for the service (`[nats] creds_file` of the sensor or the blocker reads
    /// it): the seed between the NATS tools' decoration lines.
    pub fn seed_file(&self) -> String {
        format!("{SEED_BEGIN}\n{}\n{SEED_END}\n", self.seed)
    }

    /// The user entry for the `users = [ ... ]` list of the `nats-server` `authorization`
    /// block, with its permissions and a comment saying whose it is.
    pub fn server_entry(&self) -> String {
        let list = |subjects: &[String]| {
            subjects
                .iter()
                .map(|s| format!("\"{s}\""))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# palisade {} (palisade-blocker credentials)",
            self.who
        );
        let _ = writeln!(out, "{{");
        let _ = writeln!(out, "  nkey: \"{}\"", self.public_key);
        let _ = writeln!(out, "  permissions: {{");
        let _ = writeln!(
            out,
            "    publish: {{ allow: [{}] }}",
            list(&self.permissions.publish)
        );
        let _ = writeln!(
            out,
            "    subscribe: {{ allow: [{}] }}",
            list(&self.permissions.subscribe)
        );
        let _ = writeln!(out, "  }}");
        let _ = writeln!(out, "}}");
        out
    }
}

/// Mint the NKey user of sensor `id`. Refuses an id that is not a sensor id (one NATS subject
/// token of `[A-Za-z0-9_-]`, at most 64 characters).
pub fn mint_sensor(id: &str) -> Result<Credentials> {
    Credentials::mint(format!("sensor {id}"), sensor_permissions(id)?)
}

/// Mint the NKey user of the blocker (shared by its replicas) for `stream`, `consumer` and
/// `inbox_prefix` (the `[nats]` settings of the blocker that will use it), and `state_bucket`
/// when it keeps its state in NATS (`[state] backend = "nats"`), and `falco` (subject, sensor
/// id) when it takes Falco events.
pub fn mint_blocker(
    stream: &str,
    consumer: &str,
    inbox_prefix: &str,
    state_bucket: Option<&str>,
    falco: Option<(&str, &str)>,
) -> Result<Credentials> {
    let mut names = vec![("nats.stream", stream), ("nats.consumer", consumer)];
    if let Some(bucket) = state_bucket {
        names.push(("state.bucket", bucket));
    }
    for (name, v) in names {
        if v.is_empty()
            || !v
                .bytes()
                .all(|b| b.is_ascii_graphic() && !b".*>".contains(&b))
        {
            return Err(Error::Config(format!(
                "{name} `{v}` cannot be a JetStream name (no spaces, `.`, `*` or `>`)"
            )));
        }
    }
    check_inbox_prefix(inbox_prefix)?;
    if let Some((_, sensor)) = falco {
        palisade_wire::validate_sensor_id(sensor)
            .map_err(|e| Error::Config(format!("falco.sensor_id `{sensor}`: {e}")))?;
    }
    Credentials::mint(
        "blocker".into(),
        blocker_permissions(stream, consumer, inbox_prefix, state_bucket, falco),
    )
}

/// An inbox prefix is a subject without wildcards: dot-separated, non-empty tokens of
/// printable ASCII.
pub fn check_inbox_prefix(prefix: &str) -> Result<()> {
    let ok = !prefix.is_empty()
        && prefix.split('.').all(|t| {
            !t.is_empty() && t != "*" && t != ">" && t.bytes().all(|b| b.is_ascii_graphic())
        });
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "nats.inbox_prefix `{prefix}` must be a subject without wildcards (like \
             `_INBOX_palisade_blocker`)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        let m = |p: &str, t: &str| glob_match(p.as_bytes(), t.as_bytes());
        assert!(m("node-*", "node-1"));
        assert!(m("node-*", "node-"));
        assert!(!m("node-*", "nod"));
        assert!(!m("node-*", "xnode-1"));
        assert!(m("*-prod", "web-3-prod"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(!m("a*b*c", "aXXbYY"));
        assert!(m("node-?", "node-7"));
        assert!(!m("node-?", "node-17"));
        assert!(m("**", ""));
        assert!(m("*a", "aaaa"));
        assert!(!m("exact", "exact2"));
    }

    #[test]
    fn accepted_sensors_by_id_and_pattern() {
        let all = AcceptedSensors::default();
        assert!(all.accepts_all() && all.accepts("anything"));
        let a = AcceptedSensors::from_patterns(&["node-*", "edge_7", "db-?"]).unwrap();
        assert!(!a.accepts_all());
        assert!(a.accepts("node-1") && a.accepts("edge_7") && a.accepts("db-1"));
        assert!(!a.accepts("edge_8") && !a.accepts("db-12") && !a.accepts("Node-1"));
        assert_eq!(a.patterns(), ["node-*", "edge_7", "db-?"]);
        assert!(
            AcceptedSensors::from_patterns(&["*"])
                .unwrap()
                .accepts_all()
        );
    }

    #[test]
    fn bad_patterns_are_named() {
        let empty: [&str; 0] = [];
        assert!(AcceptedSensors::from_patterns(&empty).is_err());
        let err = AcceptedSensors::from_patterns(&["ok", "node.1"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("accepted_sensors[1]") && err.contains("`.`"),
            "{err}"
        );
        assert!(AcceptedSensors::from_patterns(&[""]).is_err());
        assert!(AcceptedSensors::from_patterns(&["a>"]).is_err());
        // Through serde, as the configuration reads it.
        #[derive(Debug, Deserialize)]
        struct T {
            #[allow(dead_code)]
            a: AcceptedSensors,
        }
        let err = toml::from_str::<T>("a = [\"x y\"]")
            .unwrap_err()
            .to_string();
        assert!(err.contains("accepted_sensors[0]"), "{err}");
    }

    #[test]
    fn sensor_credentials_allow_only_their_subject() {
        let c = mint_sensor("node-1").unwrap();
        assert!(c.public_key.starts_with('U'));
        assert!(c.seed().starts_with("SU"));
        let kp = nkeys::KeyPair::from_seed(c.seed()).unwrap();
        assert_eq!(kp.public_key(), c.public_key);
        assert_eq!(c.permissions.publish[0], "palisade.reports.node-1");
        assert!(
            !c.permissions
                .publish
                .iter()
                .any(|s| s.contains('*') || s.contains('>'))
        );
        let entry = c.server_entry();
        assert!(entry.contains(&c.public_key) && !entry.contains(c.seed()));
        assert!(c.seed_file().contains(c.seed()));
        assert!(!format!("{c:?}").contains(c.seed()), "Debug hides the seed");
        // Two mints never share a key.
        assert_ne!(mint_sensor("node-1").unwrap().public_key, c.public_key);
    }

    #[test]
    fn invalid_ids_are_refused() {
        for id in ["", "a.b", "node-*", "x>", "a b", &"n".repeat(65)] {
            assert!(mint_sensor(id).is_err(), "{id:?}");
        }
        assert!(mint_blocker("PALISADE_REPORTS", "a.b", "_INBOX_x", None, None).is_err());
        assert!(mint_blocker("PALISADE_REPORTS", "c", "_INBOX.>", None, None).is_err());
        assert!(mint_blocker("PALISADE_REPORTS", "c", "", None, None).is_err());
        assert!(mint_blocker("PALISADE_REPORTS", "c", "_INBOX_x", Some("a.b"), None).is_err());
        let b = mint_blocker(
            "PALISADE_REPORTS",
            "palisade-blocker",
            "_INBOX_pb",
            None,
            None,
        )
        .unwrap();
        assert!(b.permissions.subscribe == ["_INBOX_pb.>"]);
        assert!(!b.permissions.publish.iter().any(|s| s.contains("KV")));
        let b = mint_blocker(
            "PALISADE_REPORTS",
            "pb",
            "_INBOX_pb",
            Some("palisade-blocker"),
            Some(("falco.>", "falco")),
        )
        .unwrap();
        assert!(
            b.permissions
                .publish
                .contains(&"palisade.reports.falco".to_owned())
        );
        assert!(b.permissions.subscribe.contains(&"falco.>".to_owned()));
        assert!(mint_blocker("S", "c", "_INBOX_x", None, Some(("falco.>", "a.b"))).is_err());
        assert!(
            b.permissions
                .publish
                .contains(&"$KV.palisade-blocker.>".to_owned())
        );
        assert!(
            b.permissions
                .subscribe
                .contains(&"palisade.blocker.palisade-blocker.admin".to_owned())
        );
    }
}
