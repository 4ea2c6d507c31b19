use std::time::Duration;

/// Result with the providers [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every provider failure, classified so the reconciler can retry correctly.
/// `provider` names the backend that failed (`memory`, `aws`, ...).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A concurrent writer changed the object between our read and our write (optimistic
    /// lock). Re-read and re-apply.
    #[error("{provider}: concurrent modification: {message}")]
    Conflict {
        provider: &'static str,
        message: String,
    },
    /// The provider asked us to slow down.
    #[error("{provider}: throttled: {message}")]
    Throttled {
        provider: &'static str,
        message: String,
        /// A hint from the provider, when it gave one.
        retry_after: Option<Duration>,
    },
    /// The change would exceed a hard limit (entries per set, lists per account).
    #[error("{provider}: limit exceeded: {message}")]
    LimitExceeded {
        provider: &'static str,
        message: String,
    },
    /// A configured object does not exist.
    #[error("{provider}: not found: {message}")]
    NotFound {
        provider: &'static str,
        message: String,
    },
    /// The request was malformed (bad CIDR, wrong family). Retrying will not help.
    #[error("{provider}: invalid request: {message}")]
    Invalid {
        provider: &'static str,
        message: String,
    },
    /// Permission denied. Retrying will not help until the operator fixes the policy.
    #[error("{provider}: access denied: {message}")]
    AccessDenied {
        provider: &'static str,
        message: String,
    },
    /// The provider could not be reached or failed internally.
    #[error("{provider}: unavailable: {message}")]
    Unavailable {
        provider: &'static str,
        message: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The backend's configuration is wrong (bad ARN, missing region).
    #[error("{provider}: configuration: {message}")]
    Config {
        provider: &'static str,
        message: String,
    },
}

impl Error {
    /// Will the same call succeed later if we wait (and, for a conflict, re-read)?
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::Conflict { .. } | Error::Throttled { .. } | Error::Unavailable { .. }
        )
    }

    /// Low-cardinality label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Conflict { .. } => "conflict",
            Error::Throttled { .. } => "throttled",
            Error::LimitExceeded { .. } => "limit_exceeded",
            Error::NotFound { .. } => "not_found",
            Error::Invalid { .. } => "invalid",
            Error::AccessDenied { .. } => "access_denied",
            Error::Unavailable { .. } => "unavailable",
            Error::Config { .. } => "config",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_classification() {
        let p = "t";
        let m = || "m".to_string();
        assert!(
            Error::Conflict {
                provider: p,
                message: m()
            }
            .is_retriable()
        );
        assert!(
            Error::Throttled {
                provider: p,
                message: m(),
                retry_after: None
            }
            .is_retriable()
        );
        assert!(
            Error::Unavailable {
                provider: p,
                message: m(),
                source: None
            }
            .is_retriable()
        );
        assert!(
            !Error::LimitExceeded {
                provider: p,
                message: m()
            }
            .is_retriable()
        );
        assert!(
            !Error::NotFound {
                provider: p,
                message: m()
            }
            .is_retriable()
        );
        assert!(
            !Error::Invalid {
                provider: p,
                message: m()
            }
            .is_retriable()
        );
        assert!(
            !Error::AccessDenied {
                provider: p,
                message: m()
            }
            .is_retriable()
        );
        assert!(
            !Error::Config {
                provider: p,
                message: m()
            }
            .is_retriable()
        );
    }
}
