//! Which AWS failures are worth retrying, and how long to wait. Pure functions.

use std::time::Duration;

use crate::Error;

use super::NAME;

/// What a failed AWS call means for the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Class {
    /// Stale lock token: re-read, re-apply, retry soon.
    Conflict,
    /// Slow down: back off exponentially.
    Throttled,
    /// AWS failed internally or could not be reached: back off and retry.
    Unavailable,
    /// The set is full (or another hard limit): evict, do not retry as is.
    LimitExceeded,
    NotFound,
    Invalid,
    AccessDenied,
}

/// Classify an AWS error code (the `__type` / `x-amzn-ErrorType` of the JSON 1.1 protocol) and
/// the HTTP status. `status` is `None` when no response came back (connect failure, timeout).
pub(crate) fn classify(code: Option<&str>, status: Option<u16>) -> Class {
    match code {
        Some("WAFOptimisticLockException") => return Class::Conflict,
        Some(
            "ThrottlingException"
            | "ThrottledException"
            | "TooManyRequestsException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "SlowDown",
        ) => return Class::Throttled,
        Some(
            "WAFInternalErrorException"
            | "WAFUnavailableEntityException"
            | "InternalFailure"
            | "ServiceUnavailable",
        ) => return Class::Unavailable,
        Some("WAFLimitsExceededException") => return Class::LimitExceeded,
        Some("WAFNonexistentItemException") => return Class::NotFound,
        Some(
            "WAFInvalidParameterException"
            | "WAFInvalidOperationException"
            | "ValidationException"
            | "SerializationException",
        ) => return Class::Invalid,
        Some(
            "AccessDeniedException"
            | "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "MissingAuthenticationTokenException"
            | "InvalidClientTokenId",
        ) => return Class::AccessDenied,
        _ => {}
    }
    match status {
        None => Class::Unavailable,
        Some(429) => Class::Throttled,
        Some(401 | 403) => Class::AccessDenied,
        Some(404) => Class::NotFound,
        Some(s) if s >= 500 => Class::Unavailable,
        Some(_) => Class::Invalid,
    }
}

impl Class {
    /// The providers error for this class, tagged `aws`.
    pub(crate) fn into_error(
        self,
        message: String,
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Error {
        let provider = NAME;
        match self {
            Class::Conflict => Error::Conflict { provider, message },
            Class::Throttled => Error::Throttled {
                provider,
                message,
                retry_after: None,
            },
            Class::Unavailable => Error::Unavailable {
                provider,
                message,
                source,
            },
            Class::LimitExceeded => Error::LimitExceeded { provider, message },
            Class::NotFound => Error::NotFound { provider, message },
            Class::Invalid => Error::Invalid { provider, message },
            Class::AccessDenied => Error::AccessDenied { provider, message },
        }
    }
}

/// Exponential backoff with jitter for retriable failures.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// First delay after a throttle or an internal error.
    pub(crate) base: Duration,
    /// Longest delay.
    pub(crate) cap: Duration,
    /// Delay after a lock conflict (re-read and retry soon, a little jitter to de-synchronize
    /// competing writers).
    pub(crate) conflict: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base: Duration::from_millis(250),
            cap: Duration::from_secs(20),
            conflict: Duration::from_millis(50),
        }
    }
}

impl Backoff {
    /// Delay before retry number `attempt` (1 = first retry) after `err`. `unit` in `[0, 1)`
    /// is the jitter draw: the delay is uniformly spread over the upper half of the step.
    pub(crate) fn delay(&self, attempt: u32, err: &Error, unit: f64) -> Duration {
        let unit = unit.clamp(0.0, 1.0);
        let step = match err {
            Error::Conflict { .. } => return self.conflict.mul_f64(0.5 + unit),
            _ => {
                let exp = attempt.saturating_sub(1).min(16);
                self.base.saturating_mul(1u32 << exp).min(self.cap)
            }
        };
        let jittered = step.mul_f64(0.5 + unit / 2.0);
        match err {
            Error::Throttled {
                retry_after: Some(hint),
                ..
            } => jittered.max(*hint),
            _ => jittered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_win_over_status() {
        assert_eq!(
            classify(Some("WAFOptimisticLockException"), Some(400)),
            Class::Conflict
        );
        assert_eq!(
            classify(Some("ThrottlingException"), Some(400)),
            Class::Throttled
        );
        assert_eq!(
            classify(Some("WAFInternalErrorException"), Some(500)),
            Class::Unavailable
        );
        assert_eq!(
            classify(Some("WAFUnavailableEntityException"), Some(400)),
            Class::Unavailable
        );
        assert_eq!(
            classify(Some("WAFLimitsExceededException"), Some(400)),
            Class::LimitExceeded
        );
        assert_eq!(
            classify(Some("WAFNonexistentItemException"), Some(400)),
            Class::NotFound
        );
        assert_eq!(
            classify(Some("WAFInvalidParameterException"), Some(400)),
            Class::Invalid
        );
        assert_eq!(
            classify(Some("AccessDeniedException"), Some(400)),
            Class::AccessDenied
        );
        assert_eq!(
            classify(Some("UnrecognizedClientException"), Some(400)),
            Class::AccessDenied
        );
    }

    #[test]
    fn status_decides_unknown_codes() {
        assert_eq!(classify(None, None), Class::Unavailable);
        assert_eq!(classify(None, Some(500)), Class::Unavailable);
        assert_eq!(classify(Some("Whatever"), Some(503)), Class::Unavailable);
        assert_eq!(classify(None, Some(429)), Class::Throttled);
        assert_eq!(classify(None, Some(403)), Class::AccessDenied);
        assert_eq!(classify(None, Some(404)), Class::NotFound);
        assert_eq!(classify(Some("Whatever"), Some(400)), Class::Invalid);
    }

    #[test]
    fn retriable_classes_map_to_retriable_errors() {
        for (class, retriable) in [
            (Class::Conflict, true),
            (Class::Throttled, true),
            (Class::Unavailable, true),
            (Class::LimitExceeded, false),
            (Class::NotFound, false),
            (Class::Invalid, false),
            (Class::AccessDenied, false),
        ] {
            let e = class.into_error("m".into(), None);
            assert_eq!(e.is_retriable(), retriable, "{class:?}");
            assert!(e.to_string().starts_with("aws: "), "{e}");
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let b = Backoff::default();
        let t = Class::Throttled.into_error("m".into(), None);
        assert_eq!(b.delay(1, &t, 1.0), Duration::from_millis(250));
        assert_eq!(b.delay(1, &t, 0.0), Duration::from_millis(125));
        assert_eq!(b.delay(3, &t, 1.0), Duration::from_millis(1000));
        assert_eq!(b.delay(30, &t, 1.0), Duration::from_secs(20));
        let hinted = Error::Throttled {
            provider: NAME,
            message: "m".into(),
            retry_after: Some(Duration::from_secs(5)),
        };
        assert_eq!(b.delay(1, &hinted, 0.0), Duration::from_secs(5));
        let c = Class::Conflict.into_error("m".into(), None);
        assert!(b.delay(9, &c, 0.99) < Duration::from_millis(100));
    }
}
