//! What each IP set held when AWS last told us: the contents and lock token from our last
//! GetIPSet, or the contents we wrote with our last successful UpdateIPSet and its
//! NextLockToken. `status()`, `entries()` and the writer work from it, so an idle reconciler
//! reads AWS only when an entry is older than the refresh interval.
//!
//! Why a stale entry is safe: every UpdateIPSet carries the lock token of the contents it was
//! planned on. If anybody else wrote since, AWS refuses it with WAFOptimisticLockException, the
//! writer forgets the entry and reads again, so a stale cache can only delay seeing a foreign
//! change (until the next refresh or our next write), never write over one.
//!
//! Leaf module: imports nothing from the provider but [`SetState`].

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::plan::SetState;

/// How old a cached entry may be for a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MaxAge {
    /// Younger than the refresh interval (`status()`, `entries()`, a dry run's plan).
    Refresh,
    /// Any age: the writer, whose UpdateIPSet the lock token guards.
    Any,
}

/// Per-set cache shared by the readers and the writer task. The lock is held only for
/// synchronous work, never across a call to AWS.
#[derive(Debug)]
pub(crate) struct Cache {
    refresh: Duration,
    slots: Mutex<Vec<Slot>>,
}

#[derive(Debug)]
struct Slot {
    /// The contents with their lock token, and when AWS confirmed them (the start of our
    /// GetIPSet, or the end of our UpdateIPSet). `None` after a failed write: the outcome is
    /// unknown until the set is read again.
    known: Option<(SetState, Instant)>,
    /// Bumped by every store or forget, so a read that overlapped a write cannot put older
    /// contents back.
    generation: u64,
}

/// A read the cache could not answer: do the GetIPSet, then hand the result to
/// [`Cache::store_read`].
#[derive(Debug)]
#[must_use]
pub(crate) struct Miss {
    index: usize,
    generation: u64,
    started: Instant,
}

impl Cache {
    /// Start from the states read at startup. A zero `refresh` makes every
    /// [`MaxAge::Refresh`] lookup a miss (read every time).
    pub(crate) fn new(states: Vec<SetState>, refresh: Duration) -> Cache {
        let now = Instant::now();
        let slots = states
            .into_iter()
            .map(|s| Slot {
                known: Some((s, now)),
                generation: 0,
            })
            .collect();
        Cache {
            refresh,
            slots: Mutex::new(slots),
        }
    }

    fn slots(&self) -> MutexGuard<'_, Vec<Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `f` of set `index`'s contents if they are known and young enough, or a [`Miss`].
    pub(crate) fn lookup<T>(
        &self,
        index: usize,
        max_age: MaxAge,
        f: impl FnOnce(&SetState) -> T,
    ) -> Result<T, Miss> {
        let slots = self.slots();
        let slot = &slots[index];
        if let Some((state, at)) = &slot.known {
            let young = match max_age {
                MaxAge::Any => true,
                MaxAge::Refresh => !self.refresh.is_zero() && at.elapsed() < self.refresh,
            };
            if young {
                return Ok(f(state));
            }
        }
        Err(Miss {
            index,
            generation: slot.generation,
            started: Instant::now(),
        })
    }

    /// Keep what a GetIPSet returned, unless the slot changed while it was in flight (then
    /// the slot holds something at least as new, or was forgotten for a reason).
    pub(crate) fn store_read(&self, miss: Miss, state: SetState) {
        let mut slots = self.slots();
        let slot = &mut slots[miss.index];
        if slot.generation == miss.generation {
            slot.known = Some((state, miss.started));
            slot.generation += 1;
        }
    }

    /// Keep what our UpdateIPSet wrote (with its NextLockToken): it succeeded on the token of
    /// the previous contents, so nobody wrote in between and this is what the set holds.
    pub(crate) fn store_written(&self, index: usize, state: SetState) {
        let mut slots = self.slots();
        let slot = &mut slots[index];
        slot.known = Some((state, Instant::now()));
        slot.generation += 1;
    }

    /// Drop what we knew of set `index` (a write failed: conflict, or an unknown outcome);
    /// the next lookup reads again.
    pub(crate) fn forget(&self, index: usize) {
        let mut slots = self.slots();
        let slot = &mut slots[index];
        slot.known = None;
        slot.generation += 1;
    }

    /// Entries per set, `None` where unknown.
    pub(crate) fn fills(&self) -> Vec<Option<usize>> {
        self.slots()
            .iter()
            .map(|s| s.known.as_ref().map(|(state, _)| state.len()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(token: &str, addresses: &[&str]) -> SetState {
        let list: Vec<String> = addresses.iter().map(|s| s.to_string()).collect();
        SetState::from_aws(&list, token.to_string(), None)
    }

    fn token(cache: &Cache, max_age: MaxAge) -> Option<String> {
        cache.lookup(0, max_age, |s| s.lock_token.clone()).ok()
    }

    #[tokio::test(start_paused = true)]
    async fn entries_age_out_after_the_refresh_interval() {
        let cache = Cache::new(
            vec![state("t0", &["192.0.2.1/32"])],
            Duration::from_secs(60),
        );
        assert_eq!(token(&cache, MaxAge::Refresh).as_deref(), Some("t0"));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert_eq!(token(&cache, MaxAge::Refresh).as_deref(), Some("t0"));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(token(&cache, MaxAge::Refresh), None, "60 s old: read again");
        // The writer still plans on it: the lock token guards its write.
        assert_eq!(token(&cache, MaxAge::Any).as_deref(), Some("t0"));
        // A read refreshes it; so does our own successful write.
        let Err(miss) = cache.lookup(0, MaxAge::Refresh, |_| ()) else {
            panic!("stale entry answered");
        };
        cache.store_read(miss, state("t1", &[]));
        assert_eq!(token(&cache, MaxAge::Refresh).as_deref(), Some("t1"));
        tokio::time::advance(Duration::from_secs(61)).await;
        cache.store_written(0, state("t2", &[]));
        assert_eq!(token(&cache, MaxAge::Refresh).as_deref(), Some("t2"));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_refresh_reads_every_time() {
        let cache = Cache::new(vec![state("t0", &[])], Duration::ZERO);
        assert_eq!(token(&cache, MaxAge::Refresh), None);
        assert_eq!(token(&cache, MaxAge::Any).as_deref(), Some("t0"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_that_overlapped_a_write_or_a_failure_is_not_kept() {
        let cache = Cache::new(vec![state("t0", &[])], Duration::ZERO);
        // A reader misses and starts a GetIPSet; meanwhile the writer writes.
        let Err(miss) = cache.lookup(0, MaxAge::Refresh, |_| ()) else {
            panic!("zero refresh answered");
        };
        cache.store_written(0, state("t1", &["192.0.2.9/32"]));
        cache.store_read(miss, state("t0", &[]));
        assert_eq!(token(&cache, MaxAge::Any).as_deref(), Some("t1"));
        assert_eq!(cache.fills(), vec![Some(1)]);
        // Likewise after a failed write: the slot stays empty until a read that began later.
        let Err(miss) = cache.lookup(0, MaxAge::Refresh, |_| ()) else {
            panic!("zero refresh answered");
        };
        cache.forget(0);
        cache.store_read(miss, state("t1", &["192.0.2.9/32"]));
        assert_eq!(cache.fills(), vec![None]);
        let Err(miss) = cache.lookup(0, MaxAge::Any, |_| ()) else {
            panic!("forgotten entry answered");
        };
        cache.store_read(miss, state("t3", &[]));
        assert_eq!(token(&cache, MaxAge::Any).as_deref(), Some("t3"));
    }
}
