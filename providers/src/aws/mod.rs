//! AWS WAFv2 IP sets, addressed by ARN (feature `aws`).
//!
//! - Configuration names the sets by ARN ([`AwsFirewallBuilder::with_ipset_arns`]); each set's
//!   family (IPV4/IPV6) is read from AWS when the firewall is built. The provider never creates
//!   or deletes sets.
//! - Every [`apply`](Firewall::apply) queues its diff for one writer task and waits for it. The
//!   writer merges everything queued into one UpdateIPSet per changed set per write slot, so
//!   thousands of new blocks in a second cost a handful of calls.
//! - UpdateIPSet replaces the whole list: the writer applies the diffs to the list it read (or
//!   last wrote, chaining NextLockToken), so entries somebody else added are written back
//!   unchanged. On WAFOptimisticLockException it re-reads and re-applies; on throttling and
//!   internal errors it backs off exponentially with jitter, keeping the queued diffs and merging
//!   newer ones.
//! - Calls go through token buckets shared per account and region (defaults: 1 write/s,
//!   5 reads/s), as AWS limits them.
//! - Reads are cached: per set, the contents and lock token of our last GetIPSet or of our own
//!   last successful UpdateIPSet. [`status`](Firewall::status) and
//!   [`entries`](Firewall::entries) answer from it and read again (GetIPSet) only once it is
//!   older than the refresh interval ([`AwsFirewallBuilder::with_refresh`], default 60 s; 0
//!   reads every time), so a reconciler that runs every second costs one read per set per
//!   minute while nothing changes. The writer plans on the cache whatever its age: the lock
//!   token makes an UpdateIPSet planned on stale contents fail with
//!   WAFOptimisticLockException, and it then reads again. A foreign change therefore shows in
//!   `entries()` at the next refresh or at our next write, whichever comes first, and is never
//!   written over.
//! - Sets of one family fill in configuration order, 10,000 entries each; a diff whose adds do
//!   not fit fails whole with [`Error::LimitExceeded`]. Fill is logged as it passes 80% and 95%,
//!   per family.
//! - Every GetIPSet and UpdateIPSet, each attempt of a retried round included, is reported with
//!   its outcome (ok, throttled, lock conflict, error) and latency to the
//!   [`CallObserver`] given to [`AwsFirewallBuilder::with_call_observer`] or
//!   [`Firewall::observe_calls`].
//! - A dry run ([`Firewall::is_dry_run`]) plans every round on contents no older than the
//!   refresh interval (nothing it does keeps the cache current: it writes nothing), logs what
//!   it would write and never calls UpdateIPSet.

mod arn;
mod builder;
mod cache;
mod client;
mod plan;
mod retry;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use ipnet::IpNet;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tracing::{error, info, instrument, warn};

pub use builder::AwsFirewallBuilder;

use crate::{
    Applied, CallObserver, Diff, Error, Family, Firewall, ObserverSlot, Result, SetStatus,
    normalize,
};

use arn::ArnError;
use cache::{Cache, MaxAge};
use client::{Limiters, SetClient};
use plan::{PlanSet, SetState, plan};
use retry::Backoff;

/// Check an IP set ARN the way the provider parses it at startup, without any AWS call; the
/// error says what is wrong (for configuration validation before the provider is built).
pub fn check_ipset_arn(arn: &str) -> std::result::Result<(), String> {
    arn.parse::<arn::IpSetArn>()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

const NAME: &str = "aws";

/// Most entries one WAFv2 IP set holds.
pub const IPSET_CAPACITY: usize = 10_000;

/// How long `status()` and `entries()` answer from the cache before they read a set again.
pub const DEFAULT_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// GetIPSet calls sent by every AWS firewall in this process so far, failed ones included
/// (AWS allows about 5 per second per account and region). [`AwsFirewall::reads`] counts one
/// firewall's.
pub fn reads_total() -> u64 {
    client::reads_total()
}

/// Configuration and build failures of the AWS backend, mapped into [`Error::Config`].
#[derive(Debug, thiserror::Error)]
pub(crate) enum AwsError {
    #[error("{field}: {message}")]
    Config {
        field: &'static str,
        message: String,
    },
    #[error("{field}: `{value}` is not a WAFv2 IP set ARN: {reason}")]
    Arn {
        field: String,
        value: String,
        reason: ArnError,
    },
}

impl From<AwsError> for Error {
    fn from(e: AwsError) -> Error {
        Error::Config {
            provider: NAME,
            message: e.to_string(),
        }
    }
}

/// A copy of `e` for each waiter of a failed round (the source chain becomes text).
fn replicate(e: &Error) -> Error {
    let provider = NAME;
    match e {
        Error::Conflict { message, .. } => Error::Conflict {
            provider,
            message: message.clone(),
        },
        Error::Throttled {
            message,
            retry_after,
            ..
        } => Error::Throttled {
            provider,
            message: message.clone(),
            retry_after: *retry_after,
        },
        Error::LimitExceeded { message, .. } => Error::LimitExceeded {
            provider,
            message: message.clone(),
        },
        Error::NotFound { message, .. } => Error::NotFound {
            provider,
            message: message.clone(),
        },
        Error::Invalid { message, .. } => Error::Invalid {
            provider,
            message: message.clone(),
        },
        Error::AccessDenied { message, .. } => Error::AccessDenied {
            provider,
            message: message.clone(),
        },
        Error::Config { message, .. } => Error::Config {
            provider,
            message: message.clone(),
        },
        Error::Unavailable {
            message, source, ..
        } => Error::Unavailable {
            provider,
            message: match source {
                Some(s) => format!("{message}: {s}"),
                None => message.clone(),
            },
            source: None,
        },
    }
}

/// 0 below 80% full, 1 from 80%, 2 from 95%.
fn fill_level(entries: usize, capacity: usize) -> u8 {
    // Integer math: 80% of 30,000 is exactly 24,000.
    if entries * 100 >= capacity * 95 {
        2
    } else if entries * 100 >= capacity * 80 {
        1
    } else {
        0
    }
}

/// Entries and capacity of `family` over `(family, capacity, entries if known)` per set, or
/// `None` if a set of that family has no known fill. Other families do not matter.
fn family_fill(
    sets: impl IntoIterator<Item = (Family, usize, Option<usize>)>,
    family: Family,
) -> Option<(usize, usize)> {
    sets.into_iter()
        .filter(|(f, _, _)| *f == family)
        .try_fold((0, 0), |(entries, capacity), (_, cap, len)| {
            Some((entries + len?, capacity + cap))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn family_fill_is_per_family() {
        let v4 = |len| (Family::V4, 10_000, len);
        let v6 = |len| (Family::V6, 10_000, len);
        // An IPv6 set with unknown fill does not hide the IPv4 fill (and vice versa).
        let sets = [v4(Some(9_000)), v6(None), v4(Some(8_500))];
        assert_eq!(family_fill(sets, Family::V4), Some((17_500, 20_000)));
        assert_eq!(family_fill(sets, Family::V6), None);
        let sets = [v4(None), v6(Some(9_600))];
        assert_eq!(family_fill(sets, Family::V4), None);
        assert_eq!(family_fill(sets, Family::V6), Some((9_600, 10_000)));
        assert_eq!(fill_level(9_600, 10_000), 2);
        // One unknown set of a family makes that family's total unknown.
        let sets = [v4(Some(9_000)), v4(None)];
        assert_eq!(family_fill(sets, Family::V4), None);
        // No set of a family: nothing to warn about.
        assert_eq!(family_fill([v4(Some(1))], Family::V6), Some((0, 0)));
    }

    #[test]
    fn fill_levels() {
        assert_eq!(fill_level(0, 10_000), 0);
        assert_eq!(fill_level(7_999, 10_000), 0);
        assert_eq!(fill_level(8_000, 10_000), 1);
        assert_eq!(fill_level(28_499, 30_000), 1);
        assert_eq!(fill_level(28_500, 30_000), 2);
        assert_eq!(fill_level(30_000, 30_000), 2);
    }

    #[test]
    fn replicated_errors_keep_kind_and_text() {
        let e = retry::Class::Throttled.into_error("UpdateIPSet x: slow down".into(), None);
        let r = replicate(&e);
        assert_eq!(r.kind(), "throttled");
        assert_eq!(r.to_string(), e.to_string());
        let e = retry::Class::Unavailable.into_error(
            "GetIPSet x".into(),
            Some(Box::new(std::io::Error::other("connection refused"))),
        );
        let r = replicate(&e);
        assert!(r.is_retriable());
        assert!(
            r.to_string().ends_with("GetIPSet x: connection refused"),
            "{r}"
        );
    }
}

struct Job {
    diff: Diff,
    done: oneshot::Sender<Result<Applied>>,
}

#[derive(Debug)]
struct Inner {
    sets: Arc<[SetClient]>,
    /// What each set holds, shared with the writer.
    cache: Arc<Cache>,
    jobs: mpsc::Sender<Job>,
    writer: JoinHandle<()>,
    dry_run: bool,
    /// Shared with every set's client.
    observer: ObserverSlot,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Like a process exit: what was not written yet is the caller's to re-apply.
        self.writer.abort();
    }
}

/// A [`Firewall`] over AWS WAFv2 IP sets. Cloning shares the sets, the writer and the budget.
#[derive(Debug, Clone)]
pub struct AwsFirewall {
    inner: Arc<Inner>,
}

impl AwsFirewall {
    /// Start configuring one.
    pub fn builder() -> AwsFirewallBuilder {
        AwsFirewallBuilder::new()
    }

    /// GetIPSet calls this firewall has sent, failed ones included (the startup reads too).
    pub fn reads(&self) -> u64 {
        self.inner.sets.iter().map(SetClient::reads).sum()
    }

    fn check(&self, diff: &Diff) -> Result<()> {
        for net in diff.add.iter().chain(&diff.remove) {
            let normal = normalize(*net).map_err(|e| Error::Invalid {
                provider: NAME,
                message: e.to_string(),
            })?;
            if normal != *net {
                return Err(Error::Invalid {
                    provider: NAME,
                    message: format!("{net} is not normalized (use {normal})"),
                });
            }
        }
        for family in [Family::V4, Family::V6] {
            let wanted = diff.add.iter().any(|n| Family::of(n) == family);
            if wanted && !self.inner.sets.iter().any(|s| s.family == family) {
                return Err(Error::Invalid {
                    provider: NAME,
                    message: format!("no {family} IP set is configured"),
                });
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Firewall for AwsFirewall {
    fn name(&self) -> &'static str {
        NAME
    }

    /// Every GetIPSet and UpdateIPSet from now on, each retry of the writer included.
    fn observe_calls(&self, observer: Arc<dyn CallObserver>) {
        self.inner.observer.set(observer);
    }

    /// Drop every cached set: the next read or write starts from a GetIPSet.
    fn forget_cached(&self) {
        for i in 0..self.inner.sets.len() {
            self.inner.cache.forget(i);
        }
    }

    /// From the cache; a set whose cached contents are older than the refresh interval is
    /// read again.
    #[instrument(skip(self))]
    async fn status(&self) -> Result<Vec<SetStatus>> {
        let mut out = Vec::with_capacity(self.inner.sets.len());
        for (i, set) in self.inner.sets.iter().enumerate() {
            let entries = read_set(
                &self.inner.sets,
                &self.inner.cache,
                i,
                MaxAge::Refresh,
                SetState::len,
            )
            .await?;
            out.push(SetStatus {
                id: set.arn.arn.clone(),
                family: set.family,
                entries,
                capacity: set.capacity,
            });
        }
        Ok(out)
    }

    /// From the cache, like [`status`](Firewall::status): an entry somebody else added shows
    /// up at the next refresh or after our next write, whichever comes first.
    #[instrument(skip(self))]
    async fn entries(&self) -> Result<BTreeSet<IpNet>> {
        let mut out = BTreeSet::new();
        for (i, set) in self.inner.sets.iter().enumerate() {
            let (nets, unparsed) = read_set(
                &self.inner.sets,
                &self.inner.cache,
                i,
                MaxAge::Refresh,
                |state: &SetState| {
                    let nets: Vec<IpNet> = state.addresses.keys().copied().collect();
                    (nets, state.unparsed.len())
                },
            )
            .await?;
            if unparsed > 0 {
                warn!(
                    arn = %set.arn,
                    unparsed,
                    "IP set holds entries that are not CIDRs; left as they are"
                );
            }
            out.extend(nets);
        }
        Ok(out)
    }

    /// A dry run computes and logs each diff (and still refuses one that does not fit) but
    /// never calls UpdateIPSet.
    fn is_dry_run(&self) -> bool {
        self.inner.dry_run
    }

    #[instrument(skip(self, diff), fields(add = diff.add.len(), remove = diff.remove.len()))]
    async fn apply(&self, diff: &Diff) -> Result<Applied> {
        self.check(diff)?;
        if diff.is_empty() {
            return Ok(Applied::Done);
        }
        let (done, result) = oneshot::channel();
        let stopped = || Error::Unavailable {
            provider: NAME,
            message: "the IP set writer stopped".to_string(),
            source: None,
        };
        self.inner
            .jobs
            .send(Job {
                diff: diff.clone(),
                done,
            })
            .await
            .map_err(|_| stopped())?;
        result.await.map_err(|_| stopped())?
    }
}

/// `f` of what set `i` holds: from the cache if it is young enough for `max_age`, else from a
/// GetIPSet, which refreshes the cache.
async fn read_set<T>(
    sets: &[SetClient],
    cache: &Cache,
    i: usize,
    max_age: MaxAge,
    f: impl Fn(&SetState) -> T,
) -> Result<T> {
    let miss = match cache.lookup(i, max_age, &f) {
        Ok(out) => return Ok(out),
        Err(miss) => miss,
    };
    let state = sets[i].get().await?;
    let out = f(&state);
    cache.store_read(miss, state);
    Ok(out)
}

/// The single task that writes: merges queued diffs, one UpdateIPSet per changed set per round.
struct Writer {
    sets: Arc<[SetClient]>,
    /// What each set held after our last read or write, with the lock token to chain; shared
    /// with `status()` and `entries()`.
    cache: Arc<Cache>,
    jobs: mpsc::Receiver<Job>,
    dry_run: bool,
    backoff: Backoff,
    max_attempts: u32,
    /// Fill level last warned about per family: 0 (below 80%), 1 (80%), 2 (95%).
    warned: [u8; 2],
}

impl Writer {
    async fn run(mut self) {
        let mut pending: Vec<Job> = Vec::new();
        let mut attempt = 0u32;
        loop {
            if pending.is_empty() {
                match self.jobs.recv().await {
                    Some(job) => pending.push(job),
                    None => return,
                }
            }
            while let Ok(job) = self.jobs.try_recv() {
                pending.push(job);
            }
            let Err(err) = self.round(&mut pending).await else {
                attempt = 0;
                continue;
            };
            attempt += 1;
            if !err.is_retriable() || attempt >= self.max_attempts {
                error!(
                    cause = %err,
                    attempts = attempt,
                    waiting = pending.len(),
                    "IP set update failed; returning the error to the callers"
                );
                for job in pending.drain(..) {
                    let _ = job.done.send(Err(replicate(&err)));
                }
                attempt = 0;
                continue;
            }
            let delay = self.backoff.delay(attempt, &err, fastrand::f64());
            warn!(
                cause = %err,
                kind = err.kind(),
                attempt,
                delay_ms = delay.as_millis() as u64,
                waiting = pending.len(),
                "IP set update will be retried"
            );
            tokio::time::sleep(delay).await;
        }
    }

    /// Read what is not cached, plan, write every changed set. On success every pending job is
    /// answered; on failure the accepted jobs stay pending for the next round.
    async fn round(&mut self, pending: &mut Vec<Job>) -> Result<()> {
        // A write token taken before the final plan, so that everything queued while we
        // waited for it joins this write.
        let mut held: Option<Arc<Limiters>> = None;
        // A dry run writes nothing, so nothing keeps the cache current: it plans on contents
        // no older than the refresh interval. A write plans on whatever we know; the lock
        // token turns stale contents into a conflict, and the next round reads again.
        let max_age = if self.dry_run {
            MaxAge::Refresh
        } else {
            MaxAge::Any
        };
        let (touched, plan_sets, planned) = loop {
            let touched: Vec<usize> = (0..self.sets.len())
                .filter(|&i| {
                    pending.iter().any(|j| {
                        j.diff
                            .add
                            .iter()
                            .chain(&j.diff.remove)
                            .any(|n| Family::of(n) == self.sets[i].family)
                    })
                })
                .collect();
            let mut plan_sets = Vec::with_capacity(touched.len());
            for &i in &touched {
                let state = read_set(&self.sets, &self.cache, i, max_age, SetState::clone).await?;
                plan_sets.push(PlanSet {
                    family: self.sets[i].family,
                    capacity: self.sets[i].capacity,
                    state,
                });
            }
            let diffs: Vec<&Diff> = pending.iter().map(|j| &j.diff).collect();
            let planned = plan(&plan_sets, &diffs);
            if self.dry_run || held.is_some() {
                break (touched, plan_sets, planned);
            }
            let Some(first) = planned.changed.iter().position(Option::is_some) else {
                break (touched, plan_sets, planned);
            };
            let limiters = self.sets[touched[first]].limiters().clone();
            limiters.write.until_ready().await;
            held = Some(limiters);
            let queued = pending.len();
            while let Ok(job) = self.jobs.try_recv() {
                pending.push(job);
            }
            if pending.len() == queued {
                break (touched, plan_sets, planned);
            }
        };
        let mut accepted = Vec::with_capacity(pending.len());
        for (job, outcome) in pending.drain(..).zip(planned.outcomes) {
            match outcome {
                Ok(()) => accepted.push(job),
                Err(e) => {
                    warn!(cause = %e, "diff refused: the IP sets are full");
                    let _ = job.done.send(Err(e));
                }
            }
        }
        *pending = accepted;
        for (k, next) in planned.changed.into_iter().enumerate() {
            let Some(mut next) = next else { continue };
            let i = touched[k];
            let set = &self.sets[i];
            let (added, removed) = planned.counts[k];
            if self.dry_run {
                info!(
                    arn = %set.arn,
                    added,
                    removed,
                    entries = next.len(),
                    "dry run: would update the IP set"
                );
                continue;
            }
            let base = &plan_sets[k].state;
            // The token taken before planning pays for the first write on its account.
            let paid = held
                .as_ref()
                .is_some_and(|l| Arc::ptr_eq(l, set.limiters()));
            if paid {
                held = None;
            }
            match set.update(base, &next, !paid).await {
                Ok(token) => {
                    next.lock_token = token;
                    info!(
                        arn = %set.arn,
                        added,
                        removed,
                        entries = next.len(),
                        "updated the IP set"
                    );
                    self.cache.store_written(i, next);
                }
                Err(e) => {
                    // A conflict (somebody else wrote) or an unknown outcome: the next round,
                    // and the next status() or entries(), read this set again.
                    self.cache.forget(i);
                    return Err(e);
                }
            }
        }
        for job in pending.drain(..) {
            let _ = job.done.send(Ok(Applied::Done));
        }
        self.check_fill();
        Ok(())
    }

    /// Warn as a family's fill passes 80% and 95%. Each family on its own: one whose fill is
    /// unknown (a set not cached after a failed write) is skipped until it is read again.
    fn check_fill(&mut self) {
        let fills = self.cache.fills();
        for (slot, family) in [Family::V4, Family::V6].into_iter().enumerate() {
            let sets = self
                .sets
                .iter()
                .zip(&fills)
                .map(|(set, len)| (set.family, set.capacity, *len));
            let Some((entries, capacity)) = family_fill(sets, family) else {
                continue;
            };
            if capacity == 0 {
                continue;
            }
            let fill = entries as f64 / capacity as f64;
            let level = fill_level(entries, capacity);
            if level > self.warned[slot] {
                warn!(
                    family = %family,
                    entries,
                    capacity,
                    percent = (fill * 100.0).round() as u64,
                    "IP sets are filling up; add another IP set or shorten block TTLs"
                );
            }
            self.warned[slot] = level;
        }
    }
}
