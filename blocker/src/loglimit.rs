//! Log once per key per interval.
//!
//! A misbehaving publisher can send thousands of bad reports a second; the blocker counts every
//! one (`palisade_reports_rejected_total{reason}`) but logs each kind of problem at most once
//! per sensor (subject) per interval; the counters say how many there were.

use std::hash::BuildHasher;
use std::time::Duration;

use moka::sync::Cache;

use crate::hash::FastHash;

/// Distinct keys remembered at once (bounded memory under a flood of distinct subjects).
const MAX_KEYS: u64 = 10_000;

/// Rate limiter for log lines, keyed by (what, who).
#[derive(Debug)]
pub struct LogLimiter {
    seen: Cache<u64, (), FastHash>,
    hasher: FastHash,
}

impl LogLimiter {
    /// At most one line per key per `interval`.
    pub fn new(interval: Duration) -> LogLimiter {
        LogLimiter {
            seen: Cache::builder()
                .max_capacity(MAX_KEYS)
                .time_to_live(interval)
                .build_with_hasher(FastHash::default()),
            hasher: FastHash::default(),
        }
    }

    /// True when a line about (`what`, `who`) may be logged now; false to stay quiet.
    pub fn allow(&self, what: &str, who: &str) -> bool {
        let key = self.hasher.hash_one((what, who));
        if self.seen.contains_key(&key) {
            return false;
        }
        self.seen.insert(key, ());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_key_per_interval() {
        let l = LogLimiter::new(Duration::from_millis(200));
        assert!(l.allow("bad_json", "palisade.reports.a"));
        assert!(!l.allow("bad_json", "palisade.reports.a"));
        assert!(!l.allow("bad_json", "palisade.reports.a"));
        // Another sensor or another reason is another key.
        assert!(l.allow("bad_json", "palisade.reports.b"));
        assert!(l.allow("too_large", "palisade.reports.a"));
        std::thread::sleep(Duration::from_millis(300));
        assert!(l.allow("bad_json", "palisade.reports.a"));
    }
}
