//! An in-memory firewall: the reference backend for tests and the demo.
//!
//! It behaves like a provider with several fixed-capacity sets per family: adds fill the first
//! set of the right family that has room and spill into the next; a change that does not fit
//! fails whole with [`Error::LimitExceeded`]. Tests can add entries "by hand" (as an operator
//! would), including entries the provider cannot parse (they take room but are not listed),
//! inject failures, count calls and run it as a dry run (checks, writes nothing).

use std::collections::{BTreeSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use async_trait::async_trait;
use ipnet::IpNet;

use crate::{
    Applied, CallObserver, Diff, Error, Family, Firewall, ObserverSlot, Result, SetStatus,
};

const NAME: &str = "memory";

/// Default capacity of each set, as for an AWS WAF IP set.
pub const DEFAULT_CAPACITY: usize = 10_000;

#[derive(Debug)]
struct Set {
    id: String,
    family: Family,
    capacity: usize,
    entries: BTreeSet<IpNet>,
    /// Entries the provider cannot parse: they take capacity, are never listed or touched.
    unparsed: Vec<String>,
}

impl Set {
    /// Entries held, parsed or not.
    fn len(&self) -> usize {
        self.entries.len() + self.unparsed.len()
    }
}

/// A failure to inject into the next calls of [`MemoryFirewall::apply`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    Throttled,
    Conflict,
    Unavailable,
}

impl Fault {
    fn to_error(self) -> Error {
        let message = "injected fault".to_string();
        match self {
            Fault::Throttled => Error::Throttled {
                provider: NAME,
                message,
                retry_after: None,
            },
            Fault::Conflict => Error::Conflict {
                provider: NAME,
                message,
            },
            Fault::Unavailable => Error::Unavailable {
                provider: NAME,
                message,
                source: None,
            },
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    sets: Vec<Set>,
    faults: VecDeque<Fault>,
    apply_calls: u64,
    dry_run: bool,
}

/// In-memory [`Firewall`]. Cloning shares the same state.
#[derive(Debug, Clone)]
pub struct MemoryFirewall {
    inner: Arc<Mutex<Inner>>,
    /// Told about every `status`, `entries` and `apply` call (injected faults included).
    observer: ObserverSlot,
}

impl Default for MemoryFirewall {
    /// One IPv4 and one IPv6 set of [`DEFAULT_CAPACITY`] entries each.
    fn default() -> Self {
        MemoryFirewall::builder()
            .with_set("memory-v4", Family::V4, DEFAULT_CAPACITY)
            .with_set("memory-v6", Family::V6, DEFAULT_CAPACITY)
            .build()
    }
}

/// Builder for [`MemoryFirewall`].
#[derive(Debug, Default)]
pub struct MemoryFirewallBuilder {
    sets: Vec<Set>,
    dry_run: bool,
}

impl MemoryFirewallBuilder {
    /// Add a set. Sets of one family fill in the order they were added.
    pub fn with_set(mut self, id: impl Into<String>, family: Family, capacity: usize) -> Self {
        self.sets.push(Set {
            id: id.into(),
            family,
            capacity,
            entries: BTreeSet::new(),
            unparsed: Vec::new(),
        });
        self
    }

    /// A dry run: `apply` checks a diff as usual (and may refuse it) but changes nothing.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    pub fn build(self) -> MemoryFirewall {
        MemoryFirewall {
            inner: Arc::new(Mutex::new(Inner {
                sets: self.sets,
                dry_run: self.dry_run,
                ..Inner::default()
            })),
            observer: ObserverSlot::default(),
        }
    }
}

impl MemoryFirewall {
    /// A firewall with one IPv4 and one IPv6 set of [`DEFAULT_CAPACITY`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Start with no sets.
    pub fn builder() -> MemoryFirewallBuilder {
        MemoryFirewallBuilder::default()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the sets half-updated (apply checks
        // capacity before it mutates), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add an entry as somebody else would (an operator, another tool). Ignores capacity.
    pub fn insert_foreign(&self, net: IpNet) {
        let family = Family::of(&net);
        let mut inner = self.lock();
        if let Some(set) = inner.sets.iter_mut().find(|s| s.family == family) {
            set.entries.insert(net);
        }
    }

    /// Add an entry the provider cannot parse, as somebody else might (AWS keeps such entries
    /// verbatim): it takes room in the first set of `family` and counts in
    /// [`status`](Firewall::status), but [`entries`](Firewall::entries) does not list it.
    /// Ignores capacity.
    pub fn insert_unparsed(&self, family: Family, text: impl Into<String>) {
        let mut inner = self.lock();
        if let Some(set) = inner.sets.iter_mut().find(|s| s.family == family) {
            set.unparsed.push(text.into());
        }
    }

    /// Remove an entry as somebody else would.
    pub fn remove_foreign(&self, net: &IpNet) {
        for set in self.lock().sets.iter_mut() {
            set.entries.remove(net);
        }
    }

    /// Make the next `apply` calls fail, one fault per call, in order.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// How many times `apply` was called (including failed calls).
    pub fn apply_calls(&self) -> u64 {
        self.lock().apply_calls
    }

    /// Current entries of one set, by id.
    pub fn set_entries(&self, id: &str) -> Option<BTreeSet<IpNet>> {
        self.lock()
            .sets
            .iter()
            .find(|s| s.id == id)
            .map(|s| s.entries.clone())
    }

    /// Every entry, synchronously (for tests).
    pub fn snapshot(&self) -> BTreeSet<IpNet> {
        self.lock()
            .sets
            .iter()
            .flat_map(|s| s.entries.iter().copied())
            .collect()
    }
}

#[async_trait]
impl Firewall for MemoryFirewall {
    fn name(&self) -> &'static str {
        NAME
    }

    fn observe_calls(&self, observer: Arc<dyn CallObserver>) {
        self.observer.set(observer);
    }

    async fn status(&self) -> Result<Vec<SetStatus>> {
        let started = Instant::now();
        let out = Ok(self
            .lock()
            .sets
            .iter()
            .map(|s| SetStatus {
                id: s.id.clone(),
                family: s.family,
                entries: s.len(),
                capacity: s.capacity,
            })
            .collect());
        self.observer.record(NAME, "status", started, &out);
        out
    }

    async fn entries(&self) -> Result<BTreeSet<IpNet>> {
        let started = Instant::now();
        let out = Ok(self.snapshot());
        self.observer.record(NAME, "entries", started, &out);
        out
    }

    fn is_dry_run(&self) -> bool {
        self.lock().dry_run
    }

    async fn apply(&self, diff: &Diff) -> Result<Applied> {
        let started = Instant::now();
        let out = self.apply_now(diff);
        self.observer.record(NAME, "apply", started, &out);
        out
    }
}

impl MemoryFirewall {
    fn apply_now(&self, diff: &Diff) -> Result<Applied> {
        let mut inner = self.lock();
        inner.apply_calls += 1;
        if let Some(fault) = inner.faults.pop_front() {
            return Err(fault.to_error());
        }
        for net in diff.add.iter().chain(diff.remove.iter()) {
            if net.prefix_len() == 0 || *net != net.trunc() {
                return Err(Error::Invalid {
                    provider: NAME,
                    message: format!("{net} is not a normalized CIDR"),
                });
            }
        }
        // Check that every family's adds fit before changing anything.
        for family in [Family::V4, Family::V6] {
            let present = |n: &IpNet| inner.sets.iter().any(|s| s.entries.contains(n));
            let new = diff
                .add
                .iter()
                .filter(|n| Family::of(n) == family && !present(n))
                .count();
            let leaving = diff
                .remove
                .iter()
                .filter(|n| Family::of(n) == family && present(n))
                .count();
            let sets: Vec<&Set> = inner.sets.iter().filter(|s| s.family == family).collect();
            if new > 0 && sets.is_empty() {
                return Err(Error::Invalid {
                    provider: NAME,
                    message: format!("no {family} set is configured"),
                });
            }
            let free: usize = sets
                .iter()
                .map(|s| s.capacity.saturating_sub(s.len()))
                .sum::<usize>()
                + leaving;
            if new > free {
                return Err(Error::LimitExceeded {
                    provider: NAME,
                    message: format!("{new} new {family} entries, room for {free}"),
                });
            }
        }
        if inner.dry_run {
            return Ok(Applied::Done);
        }
        for net in &diff.remove {
            for set in inner.sets.iter_mut() {
                set.entries.remove(net);
            }
        }
        for net in &diff.add {
            if inner.sets.iter().any(|s| s.entries.contains(net)) {
                continue;
            }
            let family = Family::of(net);
            if let Some(set) = inner
                .sets
                .iter_mut()
                .find(|s| s.family == family && s.len() < s.capacity)
            {
                set.entries.insert(*net);
            }
        }
        Ok(Applied::Done)
    }
}

#[cfg(test)]
mod tests;
