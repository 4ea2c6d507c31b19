//! A small, lock-free memory of header fields already scanned clean.
//!
//! Real traffic repeats its headers: every request of one browser, load balancer or client
//! library carries the same `User-Agent`, `Accept`, `Accept-Language` and `Host`. Detection on
//! one header field is a pure function of its (lowercased) name and raw value, so a field that
//! produced no detection will produce none again: [`CleanHeaders`] remembers such fields by a
//! 64-bit hash and the detector skips them.
//!
//! Exactness: the hash is foldhash seeded at random per process, so a client cannot aim a
//! malicious value at the hash of a remembered clean one; an accidental 64-bit collision among
//! the remembered fields is the only way a field is skipped wrongly. The table is
//! direct-mapped (a newer field replaces an older one in its slot), so memory is fixed.

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Slots in the table (a power of two): 32 KiB.
const SLOTS: usize = 4096;

/// Header fields known to be clean, by hash.
pub(crate) struct CleanHeaders {
    slots: Box<[AtomicU64]>,
    hasher: foldhash::fast::RandomState,
}

impl std::fmt::Debug for CleanHeaders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CleanHeaders")
            .field("slots", &self.slots.len())
            .finish_non_exhaustive()
    }
}

impl Default for CleanHeaders {
    fn default() -> Self {
        CleanHeaders {
            slots: (0..SLOTS).map(|_| AtomicU64::new(0)).collect(),
            hasher: foldhash::fast::RandomState::default(),
        }
    }
}

impl CleanHeaders {
    /// The key of a header field: its lowercased name and raw value. Never 0 (the empty slot).
    pub(crate) fn key(&self, lname: &str, value: &[u8]) -> u64 {
        self.hasher.hash_one((lname, value)).max(1)
    }

    /// Was this field scanned clean before?
    pub(crate) fn contains(&self, key: u64) -> bool {
        self.slots[key as usize % SLOTS].load(Relaxed) == key
    }

    /// Remember a field that produced no detection.
    pub(crate) fn insert(&self, key: u64) {
        self.slots[key as usize % SLOTS].store(key, Relaxed);
    }

    /// Forget every field.
    pub(crate) fn clear(&self) {
        for slot in &self.slots {
            slot.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_by_name_and_value() {
        let c = CleanHeaders::default();
        let k = c.key("user-agent", b"Mozilla/5.0");
        assert!(!c.contains(k));
        c.insert(k);
        assert!(c.contains(k));
        assert!(!c.contains(c.key("user-agent", b"Mozilla/5.1")));
        assert!(!c.contains(c.key("referer", b"Mozilla/5.0")));
        // Name and value are hashed as a pair, not concatenated.
        assert_ne!(c.key("ab", b"c"), c.key("a", b"bc"));
    }

    #[test]
    fn seeded_per_instance() {
        let (a, b) = (CleanHeaders::default(), CleanHeaders::default());
        assert_ne!(a.key("accept", b"*/*"), b.key("accept", b"*/*"));
    }
}
