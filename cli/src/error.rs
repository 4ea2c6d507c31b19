//! The one error type of the CLI, and the exit code each kind maps to.

/// Everything that can go wrong, by what the user can do about it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bad arguments or configuration (a token file that cannot be read, an https:// URL, ...).
    #[error("{0}")]
    Usage(String),
    /// The address or network is not blocked.
    #[error("{0}")]
    NotFound(String),
    /// The blocker refused the token (401 or 403).
    #[error("the blocker at {url} refused the request ({status}): {message}")]
    Auth {
        url: String,
        status: u16,
        message: String,
    },
    /// No connection, or no answer in time.
    #[error(
        "cannot reach the blocker at {url}: {cause} (is it running? set --url or PALISADE_URL)"
    )]
    Unreachable { url: String, cause: String },
    /// The blocker answered with an error.
    #[error("the blocker answered {status}: {message}")]
    Api { status: u16, message: String },
    /// The blocker's answer is not what this CLI understands (a different version?).
    #[error("unexpected answer from {url}: {source}")]
    Decode {
        url: String,
        #[source]
        source: serde_json::Error,
    },
}

/// Exit codes (documented in docs/cli.md).
pub mod exit {
    /// Success.
    pub const OK: i32 = 0;
    /// Usage or any other error.
    pub const ERROR: i32 = 1;
    /// The address or network is not blocked (`blocks show`, `blocks release`).
    pub const NOT_FOUND: i32 = 2;
    /// The blocker refused the token (HTTP 401 or 403).
    pub const AUTH: i32 = 3;
    /// The blocker could not be reached.
    pub const UNREACHABLE: i32 = 4;
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::NotFound(_) => exit::NOT_FOUND,
            Error::Auth { .. } => exit::AUTH,
            Error::Unreachable { .. } => exit::UNREACHABLE,
            Error::Usage(_) | Error::Api { .. } | Error::Decode { .. } => exit::ERROR,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
