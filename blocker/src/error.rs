//! The one error enum of the blocker library.

use std::path::PathBuf;

/// Everything that can go wrong in the blocker library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML or has unknown or mistyped fields.
    #[error("invalid config file {path}: {source}")]
    ConfigParse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A configuration value is out of range or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The requested firewall provider is not compiled into this build.
    #[error("firewall provider `{0}` is not built into this binary")]
    ProviderNotBuilt(String),
    /// Connecting to NATS failed: the URL list, the credentials or TLS files, or the
    /// connection itself.
    #[error("cannot connect to NATS at {url}: {source}")]
    NatsConnect {
        url: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No NATS server answered within the time a one-off command waits.
    #[error("no connection to NATS at {url} within {} s", waited.as_secs())]
    NatsUnreachable {
        url: String,
        waited: std::time::Duration,
    },
    /// A JetStream management call (stream or consumer) failed.
    #[error("JetStream {what}: {message}")]
    JetStream { what: &'static str, message: String },
    /// The embedded state store failed.
    #[error("state store: {0}")]
    Store(#[from] redb::Error),
    /// A stored record could not be decoded (corruption or an incompatible version).
    #[error("state store record `{key}` is unreadable: {message}")]
    Corrupt { key: String, message: String },
    /// I/O outside the store (state dir, admin listener).
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// This replica does not hold the lease of the `nats` state backend: it may not write.
    #[error("this replica does not hold the lease (another replica decides and writes)")]
    NotLeader,
    /// The lease was lost: another replica took it (the server refused our write), or it was
    /// not renewed in time. Nothing more is written by this lease term.
    #[error("lease lost: {0}")]
    Fenced(String),
    /// Copying the embedded backend's state into the bucket failed.
    #[error("cannot migrate the state: {0}")]
    Migrate(String),
    /// A CIDR was refused (by a guardrail or because it does not parse).
    #[error("refused `{cidr}`: {reason}")]
    Refused { cidr: String, reason: String },
    /// A firewall call failed.
    #[error(transparent)]
    Provider(#[from] palisade_providers::Error),
    /// A blocker started with [`crate::spawn`] returned before its admin listener was up,
    /// without an error of its own.
    #[error("the blocker stopped before it was ready, without an error")]
    Stopped,
    /// A blocker started with [`crate::spawn`] panicked or was cancelled before its admin
    /// listener was up.
    #[error("the blocker's task ended before it was ready")]
    Task(#[source] tokio::task::JoinError),
}

/// Result with the blocker [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Convert any redb error into [`Error::Store`].
pub(crate) fn store<E: Into<redb::Error>>(e: E) -> Error {
    Error::Store(e.into())
}

impl Error {
    /// The store committer task is gone: a change could not be made durable.
    pub(crate) fn committer_stopped() -> Error {
        Error::Io {
            what: "store committer".into(),
            source: std::io::Error::other("the committer stopped"),
        }
    }
}
