//! Firewall providers for Palisade.
//!
//! A [`Firewall`] enforces one logical block list that may span several physical objects
//! (AWS WAF IP sets, Cloudflare lists, Cloud Armor rules, nftables sets). The blocker's
//! reconciler reads what is there ([`Firewall::entries`]), computes the difference to what it
//! decided, and hands only that difference to [`Firewall::apply`]. Capacity is per provider
//! ([`Firewall::status`]); a write may complete asynchronously ([`Applied::Pending`]).
//!
//! Backends:
//! - [`memory::MemoryFirewall`], always built, used by tests and the demo.
//! - `aws` (feature `aws`): AWS WAFv2 IP sets addressed by ARN.
//!
//! Every backend maps its failures into the one [`Error`] enum, so the reconciler can tell a
//! retriable failure (throttled, conflict, unavailable) from a permanent one.
//!
//! Every call a backend makes to its API, each retry included, can be reported to a
//! [`CallObserver`] ([`Firewall::observe_calls`]) with its outcome and latency.

mod cidr;
mod error;
pub mod memory;
mod observe;

#[cfg(feature = "aws")]
pub mod aws;

#[cfg(feature = "conformance")]
pub mod conformance;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
pub use ipnet::IpNet;
use serde::Serialize;

pub use cidr::{Family, normalize, parse_cidr};
pub use error::{Error, Result};
pub use observe::{CallObserver, CallOutcome, ObserverSlot};

/// A change to the block list: CIDRs to add and CIDRs to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Entries to add. Already-present entries are no-ops.
    pub add: BTreeSet<IpNet>,
    /// Entries to remove. Absent entries are no-ops. The caller only ever lists entries it
    /// added itself: a provider never removes anything it was not asked to.
    pub remove: BTreeSet<IpNet>,
}

impl Diff {
    /// Nothing to do?
    pub fn is_empty(&self) -> bool {
        self.add.is_empty() && self.remove.is_empty()
    }

    /// Number of changed entries.
    pub fn len(&self) -> usize {
        self.add.len() + self.remove.len()
    }

    /// Fold a newer diff into this one: a later add cancels an earlier remove and vice versa.
    pub fn merge(&mut self, newer: Diff) {
        for net in newer.add {
            self.remove.remove(&net);
            self.add.insert(net);
        }
        for net in newer.remove {
            self.add.remove(&net);
            self.remove.insert(net);
        }
    }
}

/// Outcome of [`Firewall::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The change is in place (it may still take time to propagate to the edge).
    Done,
    /// The provider accepted the change and completes it asynchronously (Cloudflare bulk
    /// operations). The reconciler re-reads entries later to confirm.
    Pending {
        /// Provider-side operation id, for logs.
        operation: String,
    },
}

/// Fill and capacity of one physical object behind the firewall.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SetStatus {
    /// Provider-specific identifier (an ARN, a list id, ...).
    pub id: String,
    /// Address family the object holds.
    pub family: Family,
    /// Entries currently in it (ours and anyone else's).
    pub entries: usize,
    /// Most entries it can hold.
    pub capacity: usize,
}

/// Sum the capacity left for one family over a status listing.
pub fn free_capacity(status: &[SetStatus], family: Family) -> usize {
    status
        .iter()
        .filter(|s| s.family == family)
        .map(|s| s.capacity.saturating_sub(s.entries))
        .sum()
}

/// A firewall that enforces one logical block list.
///
/// Implementations must be cheap to share (`Arc<dyn Firewall>`) and safe to call from several
/// tasks, though the reconciler calls [`apply`](Firewall::apply) from one task at a time.
#[async_trait]
pub trait Firewall: Send + Sync + Debug + 'static {
    /// Short backend name for logs and metrics (`memory`, `aws`, ...).
    fn name(&self) -> &'static str;

    /// Fill and capacity of every physical object this firewall manages.
    async fn status(&self) -> Result<Vec<SetStatus>>;

    /// Every entry currently enforced, across all managed objects, whoever added it.
    async fn entries(&self) -> Result<BTreeSet<IpNet>>;

    /// Apply a change. Entries are already normalized (see [`normalize`]). An add that does not
    /// fit anywhere fails with [`Error::LimitExceeded`] without applying a partial change to
    /// that family; the caller decides what to evict.
    async fn apply(&self, diff: &Diff) -> Result<Applied>;

    /// Is this a dry run? Then [`apply`](Firewall::apply) checks and logs a diff (and may
    /// still refuse it, e.g. with [`Error::LimitExceeded`]) but writes nothing, so
    /// [`entries`](Firewall::entries) never shows its adds: the caller must not take
    /// ownership of them. `false` unless a backend says otherwise.
    fn is_dry_run(&self) -> bool {
        false
    }

    /// Forget what the backend remembers of the firewall's contents: the next call reads
    /// them afresh. A blocker replica calls it when it takes over from another writer, whose
    /// changes its memory does not know. Nothing to forget by default.
    fn forget_cached(&self) {}

    /// Report every call to the backend's API from now on, each attempt of a retried one
    /// included, to `observer`. Backends without calls to report ignore it.
    fn observe_calls(&self, observer: Arc<dyn CallObserver>) {
        let _ = observer;
    }
}

#[async_trait]
impl<T: Firewall + ?Sized> Firewall for Arc<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn is_dry_run(&self) -> bool {
        (**self).is_dry_run()
    }
    fn forget_cached(&self) {
        (**self).forget_cached()
    }
    fn observe_calls(&self, observer: Arc<dyn CallObserver>) {
        (**self).observe_calls(observer)
    }
    async fn status(&self) -> Result<Vec<SetStatus>> {
        (**self).status().await
    }
    async fn entries(&self) -> Result<BTreeSet<IpNet>> {
        (**self).entries().await
    }
    async fn apply(&self, diff: &Diff) -> Result<Applied> {
        (**self).apply(diff).await
    }
}

#[async_trait]
impl<T: Firewall + ?Sized> Firewall for Box<T> {
    fn name(&self) -> &'static str {
        (**self).name()
    }
    fn is_dry_run(&self) -> bool {
        (**self).is_dry_run()
    }
    fn forget_cached(&self) {
        (**self).forget_cached()
    }
    fn observe_calls(&self, observer: Arc<dyn CallObserver>) {
        (**self).observe_calls(observer)
    }
    async fn status(&self) -> Result<Vec<SetStatus>> {
        (**self).status().await
    }
    async fn entries(&self) -> Result<BTreeSet<IpNet>> {
        (**self).entries().await
    }
    async fn apply(&self, diff: &Diff) -> Result<Applied> {
        (**self).apply(diff).await
    }
}
