//! How sensors and the blocker reach NATS: the server list, the authentication and TLS
//! settings both services accept (the same names in both configuration files), and the
//! JetStream stream both create, each checked and turned into async-nats values in one place.
//!
//! Each service keeps these fields in its own `[nats]` table (serde cannot flatten a shared
//! struct into a table that refuses unknown fields) and lends them here: the URL list to
//! [`server_addrs`], the credentials as an [`Auth`], the stream as [`StreamSettings`].

use std::fmt;
use std::path::Path;
use std::time::Duration;

use async_nats::jetstream::stream;
use async_nats::{ConnectOptions, ServerAddr};
use serde::Deserialize;

/// The servers of `nats.url`: one URL or a comma-separated list (`nats://a:4222,
/// nats://b:4222`), whitespace around each element ignored. A bare `host:port` means
/// `nats://host:port`, as the client reads it.
///
/// async-nats reads a string as *one* URL, so a list failed with a parse error that named
/// neither the list nor the element; both services pass the result of this function instead.
/// The error names the bad element by position and text (a password in it is masked).
pub fn server_addrs(urls: &str) -> Result<Vec<ServerAddr>, String> {
    if urls.trim().is_empty() {
        return Err("nats.url is empty: give one server URL or a comma-separated list".into());
    }
    let elements: Vec<&str> = urls.split(',').map(str::trim).collect();
    let n = elements.len();
    elements
        .iter()
        .enumerate()
        .map(|(i, element)| {
            let at = format!("nats.url element {} of {n}", i + 1);
            if element.is_empty() {
                return Err(format!(
                    "{at} is empty (a stray comma in `{}`?)",
                    mask_passwords(urls)
                ));
            }
            element
                .parse::<ServerAddr>()
                .map_err(|e| format!("{at} `{}`: {e}", mask_passwords(element)))
        })
        .collect()
}

/// `nats://user:secret@host` with the secret replaced by `***` (in each element of a
/// comma-separated list), for error messages and logs.
pub fn mask_passwords(text: &str) -> String {
    text.split(',')
        .map(|element| {
            let Some((scheme, rest)) = element.split_once("://") else {
                return element.to_owned();
            };
            match rest.rsplit_once('@') {
                Some((userinfo, host)) => match userinfo.split_once(':') {
                    Some((user, _secret)) => format!("{scheme}://{user}:***@{host}"),
                    None => element.to_owned(),
                },
                None => element.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Authentication and TLS for the NATS connection.
#[derive(Debug, Clone, Copy, Default)]
pub struct Auth<'a> {
    /// User name (with `password`).
    pub user: Option<&'a str>,
    /// Password (with `user`).
    pub password: Option<&'a str>,
    /// Authentication token.
    pub token: Option<&'a str>,
    /// NKey seed (`SU...`).
    pub nkey_seed: Option<&'a str>,
    /// Credentials file: a `.creds` file (JWT + NKey seed), or an NKey seed file (the seed
    /// alone, bare or decorated; for servers with `authorization { users = [{ nkey: ... }] }`).
    pub creds_file: Option<&'a Path>,
    /// PEM file of CA certificates to trust.
    pub tls_ca: Option<&'a Path>,
    /// PEM client certificate for mutual TLS (with `tls_client_key`).
    pub tls_client_cert: Option<&'a Path>,
    /// PEM private key of the client certificate.
    pub tls_client_key: Option<&'a Path>,
    /// Refuse a connection without TLS, whatever the URL scheme.
    pub tls_required: bool,
}

impl Auth<'_> {
    /// Settings that only work in pairs; the message names the `[nats]` fields.
    pub fn check(&self) -> Result<(), String> {
        if self.user.is_some() != self.password.is_some() {
            return Err("nats.user and nats.password go together".into());
        }
        if self.tls_client_cert.is_some() != self.tls_client_key.is_some() {
            return Err("nats.tls_client_cert and nats.tls_client_key go together".into());
        }
        Ok(())
    }

    /// Connect options named `name` (shown by the server), with these credentials. Reading
    /// the `.creds` file is the only thing that can fail here; the error names the file.
    pub async fn connect_options(&self, name: &str) -> std::io::Result<ConnectOptions> {
        install_crypto_provider();
        let mut opts = match self.creds_file {
            Some(path) => credentials_file(path).await?,
            None => ConnectOptions::new(),
        };
        if let (Some(user), Some(password)) = (self.user, self.password) {
            opts = opts.user_and_password(user.to_owned(), password.to_owned());
        }
        if let Some(token) = self.token {
            opts = opts.token(token.to_owned());
        }
        if let Some(seed) = self.nkey_seed {
            opts = opts.nkey(seed.to_owned());
        }
        if let Some(ca) = self.tls_ca {
            opts = opts.add_root_certificates(ca.to_path_buf());
        }
        if let (Some(cert), Some(key)) = (self.tls_client_cert, self.tls_client_key) {
            opts = opts.add_client_certificate(cert.to_path_buf(), key.to_path_buf());
        }
        if self.tls_required {
            opts = opts.require_tls(true);
        }
        Ok(opts.name(name))
    }
}

/// What a credentials file holds.
#[derive(Debug, PartialEq, Eq)]
enum CredsKind<'a> {
    /// A NATS `.creds` file: a user JWT and its NKey seed (operator/JWT mode).
    Jwt,
    /// An NKey seed file: the seed alone, bare or between the NATS tools' decoration lines
    /// (`-----BEGIN USER NKEY SEED-----`), as `palisade-blocker credentials` writes it.
    Seed(&'a str),
}

/// Tell a `.creds` file from an NKey seed file. The error never quotes the content (it is a
/// secret).
fn creds_kind(text: &str) -> Result<CredsKind<'_>, String> {
    if text.contains("BEGIN NATS USER JWT") {
        return Ok(CredsKind::Jwt);
    }
    // Everything but the decoration lines (`---...---`), comments and blank lines.
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("---") && !l.starts_with('#'));
    match (lines.next(), lines.next()) {
        (Some(seed), None) if seed.starts_with("SU") => Ok(CredsKind::Seed(seed)),
        (Some(_), None) => Err(
            "neither a .creds file (user JWT + seed) nor a user NKey seed \
             (`SU...`)"
                .into(),
        ),
        (None, _) => Err("empty: neither a .creds file nor an NKey seed file".into()),
        (Some(_), Some(_)) => Err("an NKey seed file holds one seed, and no user JWT was \
             found for a .creds file"
            .into()),
    }
}

/// Connect options from a credentials file: a `.creds` file (JWT + seed) or an NKey seed
/// file. Errors name the file.
async fn credentials_file(path: &Path) -> std::io::Result<ConnectOptions> {
    let named = |kind: std::io::ErrorKind, e: &dyn std::fmt::Display| {
        std::io::Error::new(kind, format!("credentials file {}: {e}", path.display()))
    };
    let text = std::fs::read_to_string(path).map_err(|e| named(e.kind(), &e))?;
    match creds_kind(&text).map_err(|e| named(std::io::ErrorKind::InvalidData, &e))? {
        CredsKind::Jwt => ConnectOptions::with_credentials(&text)
            .map_err(|e| named(std::io::ErrorKind::InvalidData, &e)),
        CredsKind::Seed(seed) => {
            nkeys::KeyPair::from_seed(seed).map_err(|_| {
                named(
                    std::io::ErrorKind::InvalidData,
                    &"the NKey seed does not decode (damaged or truncated)",
                )
            })?;
            Ok(ConnectOptions::new().nkey(seed.to_owned()))
        }
    }
}

/// What JetStream does when the stream reaches `stream_max_bytes` (`[nats] stream_discard`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Discard {
    /// Delete the oldest reports to make room: publishing never stops, and reports the
    /// blocker has not consumed yet may be lost when it lags that far behind.
    #[default]
    Old,
    /// Refuse new reports: sensors keep them in their buffer and retry, and count what
    /// overflows it (`palisade_sensor_buffer_drops_total`).
    New,
}

impl Discard {
    /// The JetStream policy.
    pub fn policy(self) -> stream::DiscardPolicy {
        match self {
            Discard::Old => stream::DiscardPolicy::Old,
            Discard::New => stream::DiscardPolicy::New,
        }
    }
}

impl fmt::Display for Discard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(discard_name(self.policy()))
    }
}

fn discard_name(d: stream::DiscardPolicy) -> &'static str {
    match d {
        stream::DiscardPolicy::Old => "old",
        stream::DiscardPolicy::New => "new",
    }
}

/// The retention policy named `limits`, `interest` or `workqueue` (`None` for anything else).
pub fn retention_policy(name: &str) -> Option<stream::RetentionPolicy> {
    match name {
        "limits" => Some(stream::RetentionPolicy::Limits),
        "interest" => Some(stream::RetentionPolicy::Interest),
        "workqueue" => Some(stream::RetentionPolicy::WorkQueue),
        _ => None,
    }
}

fn retention_name(r: stream::RetentionPolicy) -> &'static str {
    match r {
        stream::RetentionPolicy::Limits => "limits",
        stream::RetentionPolicy::Interest => "interest",
        stream::RetentionPolicy::WorkQueue => "workqueue",
    }
}

/// Default `[nats] stream_replicas`: one copy, what a single server can hold.
pub const DEFAULT_STREAM_REPLICAS: usize = 1;
/// Default `[nats] stream_max_bytes`: no size limit (only `max_age` bounds the stream).
pub const DEFAULT_STREAM_MAX_BYTES: i64 = -1;
/// Default stream `max_age`: a day of reports.
pub const DEFAULT_STREAM_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// Default stream `duplicate_window`: a re-sent report within two minutes is dropped.
pub const DEFAULT_STREAM_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// Most replicas JetStream keeps of a stream.
pub const MAX_STREAM_REPLICAS: usize = 5;

/// The reports stream as both services create it: the settings the configuration chooses,
/// and those that are fixed (subjects `palisade.reports.>`, file storage, a message size
/// limit of twice the largest report).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Stream name.
    pub name: String,
    /// Retention policy (fixed once the stream exists).
    pub retention: stream::RetentionPolicy,
    /// Oldest report kept.
    pub max_age: Duration,
    /// Window in which a re-sent report with the same `Nats-Msg-Id` is dropped.
    pub duplicate_window: Duration,
    /// Copies of each report on different servers of a cluster (1 to 5).
    pub replicas: usize,
    /// Size limit of the stream in bytes; -1 for none.
    pub max_bytes: i64,
    /// What happens at `max_bytes`.
    pub discard: Discard,
}

impl Default for StreamSettings {
    fn default() -> Self {
        StreamSettings {
            name: crate::STREAM_NAME.to_owned(),
            retention: stream::RetentionPolicy::Limits,
            max_age: DEFAULT_STREAM_MAX_AGE,
            duplicate_window: DEFAULT_STREAM_DUPLICATE_WINDOW,
            replicas: DEFAULT_STREAM_REPLICAS,
            max_bytes: DEFAULT_STREAM_MAX_BYTES,
            discard: Discard::Old,
        }
    }
}

/// A setting of an existing stream that differs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamDrift {
    /// The setting's name as in `[nats]`'s documentation (`max_age`, `replicas`, ...).
    pub setting: &'static str,
    /// The configured value.
    pub configured: String,
    /// The stream's value.
    pub actual: String,
    /// Whether an UpdateStream can change it ([`StreamSettings::updated`] does). NATS refuses
    /// to change the retention of an existing stream.
    pub updatable: bool,
}

impl StreamSettings {
    /// Check the ranges; the message names the `[nats]` fields.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_STREAM_REPLICAS).contains(&self.replicas) {
            return Err(format!(
                "nats.stream_replicas must be 1 to {MAX_STREAM_REPLICAS}, got {}",
                self.replicas
            ));
        }
        let smallest = Self::max_message_size() as i64;
        if self.max_bytes != -1 && self.max_bytes < smallest {
            return Err(format!(
                "nats.stream_max_bytes must be -1 (no limit) or at least {smallest} (one \
                 message), got {}",
                self.max_bytes
            ));
        }
        Ok(())
    }

    /// Largest message the stream stores: twice the largest report, room for headers.
    pub fn max_message_size() -> i32 {
        (crate::MAX_REPORT_BYTES * 2) as i32
    }

    /// The stream configuration to create.
    pub fn config(&self) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: vec![crate::SUBJECT_WILDCARD.to_owned()],
            retention: self.retention,
            max_age: self.max_age,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            max_bytes: self.max_bytes,
            discard: self.discard.policy(),
            storage: stream::StorageType::File,
            max_message_size: Self::max_message_size(),
            ..Default::default()
        }
    }

    /// Whether `actual` captures the report subjects (`palisade.reports.>` or everything).
    pub fn covers_reports(actual: &stream::Config) -> bool {
        actual
            .subjects
            .iter()
            .any(|s| s == crate::SUBJECT_WILDCARD || s == ">")
    }

    /// The configured settings that `actual` does not have, in a fixed order.
    pub fn drift(&self, actual: &stream::Config) -> Vec<StreamDrift> {
        let mut out = Vec::new();
        let mut push = |setting, configured: String, actual: String, updatable| {
            if configured != actual {
                out.push(StreamDrift {
                    setting,
                    configured,
                    actual,
                    updatable,
                });
            }
        };
        push(
            "retention",
            retention_name(self.retention).to_owned(),
            retention_name(actual.retention).to_owned(),
            false,
        );
        push(
            "max_age",
            format!("{:?}", self.max_age),
            format!("{:?}", actual.max_age),
            true,
        );
        push(
            "duplicate_window",
            format!("{:?}", self.duplicate_window),
            format!("{:?}", actual.duplicate_window),
            true,
        );
        // A stream created without a replica count has one.
        push(
            "replicas",
            self.replicas.to_string(),
            actual.num_replicas.max(1).to_string(),
            true,
        );
        // The server stores "no limit" as -1 (0 when a client sent none).
        let max_bytes = if actual.max_bytes <= 0 {
            -1
        } else {
            actual.max_bytes
        };
        push(
            "max_bytes",
            self.max_bytes.to_string(),
            max_bytes.to_string(),
            true,
        );
        push(
            "discard",
            self.discard.to_string(),
            discard_name(actual.discard).to_owned(),
            true,
        );
        out
    }

    /// `actual` with every updatable setting brought to the configuration, for one
    /// UpdateStream; `None` when nothing updatable differs.
    pub fn updated(&self, actual: &stream::Config) -> Option<stream::Config> {
        if !self.drift(actual).iter().any(|d| d.updatable) {
            return None;
        }
        Some(stream::Config {
            max_age: self.max_age,
            duplicate_window: self.duplicate_window,
            num_replicas: self.replicas,
            max_bytes: self.max_bytes,
            discard: self.discard.policy(),
            ..actual.clone()
        })
    }

    /// A hint to add to a failed create or update: replicas above one need a cluster.
    pub fn failure_hint(&self) -> String {
        if self.replicas > 1 {
            format!(
                " (nats.stream_replicas = {} needs a NATS cluster with at least {} \
                 JetStream servers; a single server holds 1)",
                self.replicas, self.replicas
            )
        } else {
            String::new()
        }
    }
}

/// Make rustls's process-wide crypto provider `ring`, the one async-nats is built for.
///
/// rustls picks a default from its crate features only when exactly one provider is compiled in.
/// The blocker also links the AWS SDK, which enables `aws-lc-rs`: with both present, the first
/// TLS handshake to NATS panicked ("Could not automatically determine the process-level
/// CryptoProvider"). Called before every connect; installing twice is a no-op. The AWS SDK
/// configures its own provider explicitly and is unaffected.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_url_or_a_comma_separated_list() {
        let one = server_addrs("nats://127.0.0.1:4222").unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].port(), 4222);
        let list =
            server_addrs(" nats://127.0.0.1:4222 ,\tnats://127.0.0.1:4223,tls://nats-2:4224 ")
                .unwrap();
        let ports: Vec<u16> = list.iter().map(ServerAddr::port).collect();
        assert_eq!(ports, [4222, 4223, 4224]);
        assert!(list[2].tls_required());
        // A bare host:port means nats://, as the client reads it.
        assert_eq!(server_addrs("nats-0:4222").unwrap()[0].scheme(), "nats");
    }

    #[test]
    fn a_bad_element_is_named() {
        let err = server_addrs("nats://a:4222,http://b:4222").unwrap_err();
        assert!(
            err.contains("element 2 of 2") && err.contains("http://b:4222"),
            "{err}"
        );
        let err = server_addrs("nats://a:4222,,nats://c:4222").unwrap_err();
        assert!(
            err.contains("element 2 of 3") && err.contains("empty"),
            "{err}"
        );
        let err = server_addrs("nats://a:4222,nats://b:notaport").unwrap_err();
        assert!(err.contains("element 2 of 2"), "{err}");
        assert!(server_addrs(" ").unwrap_err().contains("empty"));
        assert!(
            server_addrs("nats://a:4222,")
                .unwrap_err()
                .contains("element 2 of 2")
        );
    }

    #[test]
    fn a_password_in_a_bad_url_is_masked() {
        let err = server_addrs("nats://u:hunter2@a:4222,ftp://u:hunter2@b:1").unwrap_err();
        assert!(err.contains("ftp://u:***@b:1"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
        let err = server_addrs("nats://u:hunter2@a:4222,,").unwrap_err();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn stream_config_carries_the_settings() {
        let settings = StreamSettings {
            replicas: 3,
            max_bytes: 1 << 30,
            discard: Discard::New,
            ..StreamSettings::default()
        };
        assert_eq!(settings.check(), Ok(()));
        let c = settings.config();
        assert_eq!(c.name, crate::STREAM_NAME);
        assert_eq!(c.subjects, [crate::SUBJECT_WILDCARD]);
        assert_eq!(c.num_replicas, 3);
        assert_eq!(c.max_bytes, 1 << 30);
        assert_eq!(c.discard, stream::DiscardPolicy::New);
        assert_eq!(c.storage, stream::StorageType::File);
        assert_eq!(c.max_age, DEFAULT_STREAM_MAX_AGE);
        assert!(StreamSettings::covers_reports(&c));
        assert_eq!(settings.drift(&c), vec![]);
        assert_eq!(settings.updated(&c), None);
    }

    #[test]
    fn stream_settings_are_range_checked() {
        let bad = |s: StreamSettings| s.check().unwrap_err();
        for replicas in [0, 6] {
            let err = bad(StreamSettings {
                replicas,
                ..StreamSettings::default()
            });
            assert!(err.contains("nats.stream_replicas"), "{err}");
        }
        for max_bytes in [0, -2, 100] {
            let err = bad(StreamSettings {
                max_bytes,
                ..StreamSettings::default()
            });
            assert!(err.contains("nats.stream_max_bytes"), "{err}");
        }
        assert!(StreamSettings::default().failure_hint().is_empty());
        let three = StreamSettings {
            replicas: 3,
            ..StreamSettings::default()
        };
        assert!(three.failure_hint().contains("cluster"));
    }

    #[test]
    fn drift_names_each_setting_and_what_can_be_updated() {
        let settings = StreamSettings {
            replicas: 3,
            ..StreamSettings::default()
        };
        // As a single server reports a stream an older version created.
        let actual = stream::Config {
            name: crate::STREAM_NAME.to_owned(),
            subjects: vec![crate::SUBJECT_WILDCARD.to_owned()],
            retention: stream::RetentionPolicy::Interest,
            max_age: Duration::from_secs(60),
            duplicate_window: DEFAULT_STREAM_DUPLICATE_WINDOW,
            num_replicas: 0,
            max_bytes: -1,
            discard: stream::DiscardPolicy::New,
            ..Default::default()
        };
        let d = settings.drift(&actual);
        let names: Vec<&str> = d.iter().map(|d| d.setting).collect();
        assert_eq!(names, ["retention", "max_age", "replicas", "discard"]);
        assert_eq!(
            (d[0].configured.as_str(), d[0].actual.as_str()),
            ("limits", "interest")
        );
        assert!(!d[0].updatable);
        assert_eq!(d[1].actual, "60s");
        assert_eq!((d[2].configured.as_str(), d[2].actual.as_str()), ("3", "1"));
        assert_eq!(
            (d[3].configured.as_str(), d[3].actual.as_str()),
            ("old", "new")
        );
        let want = settings.updated(&actual).unwrap();
        assert_eq!(want.num_replicas, 3);
        assert_eq!(want.max_age, DEFAULT_STREAM_MAX_AGE);
        assert_eq!(want.discard, stream::DiscardPolicy::Old);
        // Retention stays: NATS refuses to change it.
        assert_eq!(want.retention, stream::RetentionPolicy::Interest);
        // Only the retention differs: nothing to update.
        let only_retention = stream::Config {
            retention: stream::RetentionPolicy::Interest,
            ..StreamSettings::default().config()
        };
        assert_eq!(StreamSettings::default().updated(&only_retention), None);
        // "No limit" reads the same whether the server says -1 or 0.
        let zero = stream::Config {
            max_bytes: 0,
            ..StreamSettings::default().config()
        };
        assert_eq!(StreamSettings::default().drift(&zero), vec![]);
    }

    #[test]
    fn discard_parses_from_the_config_names() {
        #[derive(Deserialize)]
        struct T {
            d: Discard,
        }
        let t: T = serde_json::from_str(r#"{"d":"new"}"#).unwrap();
        assert_eq!(t.d, Discard::New);
        assert!(serde_json::from_str::<T>(r#"{"d":"oldest"}"#).is_err());
        assert_eq!(Discard::default().to_string(), "old");
        assert_eq!(
            retention_policy("workqueue"),
            Some(stream::RetentionPolicy::WorkQueue)
        );
        assert_eq!(retention_policy("fifo"), None);
    }

    #[test]
    fn pairs_are_checked() {
        assert!(Auth::default().check().is_ok());
        let half = Auth {
            user: Some("u"),
            ..Auth::default()
        };
        assert!(half.check().unwrap_err().contains("nats.password"));
        let cert = Auth {
            tls_client_cert: Some(Path::new("/c.pem")),
            ..Auth::default()
        };
        assert!(cert.check().unwrap_err().contains("tls_client_key"));
    }

    #[test]
    fn seed_files_and_creds_files_are_told_apart() {
        let seed = nkeys::KeyPair::new_user().seed().unwrap();
        assert_eq!(
            creds_kind(&format!("{seed}\n")),
            Ok(CredsKind::Seed(&seed[..]))
        );
        let decorated =
            format!("-----BEGIN USER NKEY SEED-----\n{seed}\n------END USER NKEY SEED------\n");
        assert_eq!(creds_kind(&decorated), Ok(CredsKind::Seed(&seed[..])));
        let creds = format!(
            "-----BEGIN NATS USER JWT-----\neyJ0eXAi\n------END NATS USER JWT------\n\n{decorated}"
        );
        assert_eq!(creds_kind(&creds), Ok(CredsKind::Jwt));
        for bad in ["", "\n\n", "hello", "SUAAA\nSUBBB\n"] {
            let err = creds_kind(bad).unwrap_err();
            assert!(!err.contains("SUAAA"), "the content is never quoted: {err}");
        }
    }

    #[tokio::test]
    async fn a_damaged_seed_file_is_named() {
        let dir = std::env::temp_dir().join(format!("palisade-wire-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.nk");
        std::fs::write(&path, "SUNOTAREALSEED\n").unwrap();
        let auth = Auth {
            creds_file: Some(&path),
            ..Auth::default()
        };
        let err = auth.connect_options("t").await.err().map(|e| e.to_string());
        std::fs::remove_dir_all(&dir).unwrap();
        let err = err.unwrap_or_default();
        assert!(
            err.contains("bad.nk") && err.contains("does not decode"),
            "{err}"
        );
        assert!(!err.contains("SUNOTAREALSEED"), "{err}");
    }

    #[tokio::test]
    async fn a_missing_creds_file_is_named() {
        let auth = Auth {
            creds_file: Some(Path::new("/nonexistent/palisade.creds")),
            ..Auth::default()
        };
        let err = auth.connect_options("t").await.err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("/nonexistent/palisade.creds")),
            "{err:?}"
        );
    }
}
