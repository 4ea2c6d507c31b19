//! Reporting every call a provider makes to its backend, for metrics.
//!
//! A provider retries some failures on its own (the AWS writer re-reads after a
//! `WAFOptimisticLockException` and backs off after a `ThrottlingException`): its callers see
//! only the last outcome. A [`CallObserver`] sees each attempt, where it happens, with its
//! outcome and latency. The crate stays free of any metrics library: the blocker implements
//! the trait over its Prometheus registry.

use std::fmt::Debug;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How one call to a backend's API ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// It succeeded.
    Ok,
    /// The backend asked us to slow down (AWS `ThrottlingException`).
    Throttled,
    /// Somebody else wrote between our read and our write (AWS `WAFOptimisticLockException`).
    LockConflict,
    /// Any other failure.
    Error,
}

impl CallOutcome {
    /// Every outcome, in a fixed order.
    pub const ALL: [CallOutcome; 4] = [
        CallOutcome::Ok,
        CallOutcome::Throttled,
        CallOutcome::LockConflict,
        CallOutcome::Error,
    ];

    /// The outcome of a call that returned `result`.
    pub fn of<T>(result: &Result<T>) -> CallOutcome {
        match result {
            Ok(_) => CallOutcome::Ok,
            Err(Error::Throttled { .. }) => CallOutcome::Throttled,
            Err(Error::Conflict { .. }) => CallOutcome::LockConflict,
            Err(_) => CallOutcome::Error,
        }
    }

    /// Metric label: `ok`, `throttled`, `lock_conflict` or `error`.
    pub fn label(self) -> &'static str {
        match self {
            CallOutcome::Ok => "ok",
            CallOutcome::Throttled => "throttled",
            CallOutcome::LockConflict => "lock_conflict",
            CallOutcome::Error => "error",
        }
    }
}

/// Told about every call a provider makes to its backend's API, each retry included.
///
/// Called on the provider's task right after the call returns: keep it cheap (count, observe a
/// histogram) and never block.
pub trait CallObserver: Send + Sync + Debug + 'static {
    /// `provider` is [`Firewall::name`](crate::Firewall::name); `operation` names the API call
    /// (`GetIPSet`, `UpdateIPSet`; `status`, `entries`, `apply` for the memory backend).
    /// `elapsed` is the call's own time, not the time spent waiting for a rate-limit token.
    fn call(
        &self,
        provider: &'static str,
        operation: &'static str,
        outcome: CallOutcome,
        elapsed: Duration,
    );
}

/// The observer a provider reports to, set at construction or later
/// ([`Firewall::observe_calls`](crate::Firewall::observe_calls)); none by default. Cloning
/// shares the slot.
#[derive(Debug, Clone, Default)]
pub struct ObserverSlot(Arc<RwLock<Option<Arc<dyn CallObserver>>>>);

impl ObserverSlot {
    /// Report to `observer` from now on (replacing any earlier one).
    pub fn set(&self, observer: Arc<dyn CallObserver>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Some(observer);
    }

    /// Tell the observer, if there is one, how a call that started at `started` ended.
    pub fn record<T>(
        &self,
        provider: &'static str,
        operation: &'static str,
        started: Instant,
        result: &Result<T>,
    ) {
        let guard = self.0.read().unwrap_or_else(|p| p.into_inner());
        if let Some(o) = guard.as_ref() {
            o.call(
                provider,
                operation,
                CallOutcome::of(result),
                started.elapsed(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Debug, Default)]
    struct Seen(Mutex<Vec<(&'static str, &'static str, CallOutcome)>>);

    impl CallObserver for Seen {
        fn call(&self, p: &'static str, op: &'static str, o: CallOutcome, _: Duration) {
            self.0.lock().unwrap().push((p, op, o));
        }
    }

    #[test]
    fn outcomes_follow_the_error_kind() {
        let slot = ObserverSlot::default();
        // Nothing set: nothing to tell, no panic.
        slot.record::<()>("t", "op", Instant::now(), &Ok(()));
        let seen = Arc::new(Seen::default());
        slot.set(seen.clone());
        let t = Instant::now();
        slot.record::<()>("t", "op", t, &Ok(()));
        slot.record::<()>(
            "t",
            "op",
            t,
            &Err(Error::Throttled {
                provider: "t",
                message: "m".into(),
                retry_after: None,
            }),
        );
        slot.record::<()>(
            "t",
            "op",
            t,
            &Err(Error::Conflict {
                provider: "t",
                message: "m".into(),
            }),
        );
        slot.record::<()>(
            "t",
            "op",
            t,
            &Err(Error::Invalid {
                provider: "t",
                message: "m".into(),
            }),
        );
        let got: Vec<&str> = seen.0.lock().unwrap().iter().map(|s| s.2.label()).collect();
        assert_eq!(got, ["ok", "throttled", "lock_conflict", "error"]);
    }
}
