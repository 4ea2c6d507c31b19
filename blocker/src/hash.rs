//! The hasher of the blocker's in-memory caches, in a module of its own that imports nothing
//! from the crate: the engine, the policy windows and the log limiter all use it.

/// Hasher of the dedup keys and of the in-memory caches: foldhash, seeded at random per process
/// (several times cheaper than SipHash on these short keys; the profile of the ingest
/// benchmark had SipHash at ~7% of the engine's time).
pub(crate) type FastHash = foldhash::fast::RandomState;
