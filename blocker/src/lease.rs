//! Leadership for the `nats` state backend: one replica holds the lease, in the state bucket,
//! and is the only one that decides, writes the state and writes the firewall.
//!
//! - A standby polls the `lease` key. A lease whose revision has not changed for its lease
//!   time (measured on the standby's own monotonic clock, never by comparing clocks) or that
//!   was released is taken by a compare-and-set on that revision: of several standbys exactly
//!   one wins.
//! - The holder renews it every third of the lease time, as a fenced write (see
//!   [`crate::state::jetstream`]): once another replica took it, the renewal is refused and
//!   the holder steps down. It also steps down on its own, without waiting for a pending
//!   renewal or commit, the moment its lease runs out by its own clock (the lease time less
//!   a margin after the last renewal was sent), which is before any standby can take it.
//! - On a clean shutdown the holder releases it, so a standby takes over at once.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::error::{Error, Result};
use crate::state::jetstream::{KvStore, Lease};

/// How often a standby looks at the lease: a tenth of the lease time, 100 ms to 1 s.
fn poll_every(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
}

/// What a standby has seen of the lease: the revision last read and since when, on this
/// replica's own monotonic clock (clocks of different machines are never compared).
#[derive(Debug, Default)]
struct Expiry {
    seen: Option<(u64, Instant)>,
}

impl Expiry {
    /// May the lease read at `revision` at `now` be taken? When it was released, or when
    /// its revision has not changed for its lease time.
    fn expired(&mut self, lease: &Lease, revision: u64, now: Instant) -> bool {
        if lease.holder.is_empty() {
            return true;
        }
        let lease_time = Duration::from_millis(lease.ttl_ms).max(Duration::from_secs(1));
        match self.seen {
            Some((r, since)) if r == revision => now.saturating_duration_since(since) >= lease_time,
            _ => {
                self.seen = Some((revision, now));
                false
            }
        }
    }
}

/// Stand by until this replica takes the lease (`Ok(true)`) or `shutdown` resolves
/// (`Ok(false)`). NATS errors are logged and retried: a standby outlives an outage.
pub async fn campaign(
    kv: &KvStore,
    replica: &str,
    incarnation: &str,
    ttl: Duration,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Result<bool> {
    let poll = poll_every(ttl);
    let mut watch = Expiry::default();
    let mut logged_holder = String::new();
    // A read that hangs (a just-created bucket whose replicas are not all caught up yet on a
    // cluster) must not hold the standby for the client's whole request timeout.
    let read_limit = (ttl / 2).min(Duration::from_secs(2));
    loop {
        let read = tokio::time::timeout(read_limit, kv.read_lease())
            .await
            .unwrap_or_else(|_| {
                Err(Error::JetStream {
                    what: "read lease",
                    message: format!("no answer within {} ms", read_limit.as_millis()),
                })
            });
        let attempt = match read {
            Ok(None) => Some(kv.acquire(replica, incarnation, ttl, None).await),
            Ok(Some((lease, revision))) => {
                let expired = watch.expired(&lease, revision, Instant::now());
                if !expired && lease.holder != logged_holder {
                    info!(holder = %lease.holder, epoch = lease.epoch, "lease held by another replica; standing by");
                    logged_holder.clone_from(&lease.holder);
                }
                if expired {
                    if !lease.holder.is_empty() {
                        warn!(holder = %lease.holder, epoch = lease.epoch, "lease expired; taking over");
                    }
                    let attempt = kv
                        .acquire(replica, incarnation, ttl, Some((&lease, revision)))
                        .await;
                    // Lost to another replica: its lease starts now. A failed attempt
                    // proves nothing about the lease: keep what was seen and retry at the
                    // next poll instead of waiting another lease time.
                    if attempt.is_ok() {
                        watch = Expiry::default();
                    }
                    Some(attempt)
                } else {
                    None
                }
            }
            Err(err) => {
                warn!(cause = %err, "cannot read the lease; retrying");
                None
            }
        };
        match attempt {
            Some(Ok(true)) => {
                info!(%replica, "lease taken");
                return Ok(true);
            }
            Some(Ok(false)) => info!("another replica took the lease first"),
            Some(Err(err)) => warn!(cause = %err, "cannot take the lease; retrying"),
            None => {}
        }
        tokio::select! {
            _ = shutdown.as_mut() => return Ok(false),
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Keep the lease: renew it every third of the lease time. Returns when it is lost (another
/// replica wrote, or no renewal succeeded in time); the caller stops deciding.
pub async fn keep(kv: &KvStore, ttl: Duration) {
    let every = (ttl / 3).max(Duration::from_millis(300));
    let tick = Duration::from_millis(100).min(every);
    let mut next = Instant::now() + every;
    loop {
        tokio::time::sleep(tick).await;
        // A commit refused by the server fences the store at once: do not wait for the
        // next renewal to notice.
        if kv.is_fenced() {
            warn!("a write was refused: another replica holds the lease");
            return;
        }
        // A renewal (or a commit holding the writer lock) that hangs must not keep this
        // replica claiming a lease that ran out by its own clock: a standby may take it.
        let Some(valid_until) = kv.lease_valid_until().filter(|t| Instant::now() < *t) else {
            warn!("the lease ran out without a renewal");
            return;
        };
        if Instant::now() < next {
            continue;
        }
        let renewed = tokio::select! {
            r = kv.renew() => r,
            () = tokio::time::sleep_until(valid_until.into()) => {
                warn!("the lease ran out while its renewal was pending");
                return;
            }
        };
        match renewed {
            Ok(()) => next = Instant::now() + every,
            Err(err @ (Error::Fenced(_) | Error::NotLeader)) => {
                warn!(cause = %err, "lease lost");
                return;
            }
            Err(err) => {
                warn!(cause = %err, "lease renewal failed; retrying");
                if !kv.holds_lease() {
                    warn!("the lease ran out without a renewal");
                    return;
                }
                next = Instant::now() + tick;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str) -> Lease {
        Lease {
            holder: holder.to_owned(),
            incarnation: "i".to_owned(),
            epoch: 3,
            ttl_ms: 5_000,
            renewed_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn a_lease_expires_a_lease_time_after_its_revision_was_first_seen() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut w = Expiry::default();
        let held = lease("a");
        assert!(!w.expired(&held, 7, t0), "first sight starts the clock");
        assert!(!w.expired(&held, 7, t0 + s(4)));
        // A renewal (a new revision) starts it again.
        assert!(!w.expired(&held, 8, t0 + s(4)));
        assert!(!w.expired(&held, 8, t0 + s(8)));
        assert!(w.expired(&held, 8, t0 + s(9)));
        // Still expired at the next poll when nobody wrote in between: the retry after a
        // failed attempt to take it does not wait another lease time.
        assert!(w.expired(&held, 8, t0 + s(9) + Duration::from_millis(500)));
        // A released lease is free at once.
        assert!(Expiry::default().expired(&lease(""), 9, t0));
        // The holder's lease time counts, at least one second.
        let mut short = lease("a");
        short.ttl_ms = 10;
        let mut w = Expiry::default();
        assert!(!w.expired(&short, 1, t0));
        assert!(!w.expired(&short, 1, t0 + Duration::from_millis(900)));
        assert!(w.expired(&short, 1, t0 + s(1)));
    }

    #[test]
    fn standbys_poll_often_but_not_too_often() {
        assert_eq!(
            poll_every(Duration::from_secs(5)),
            Duration::from_millis(500)
        );
        assert_eq!(poll_every(Duration::from_secs(60)), Duration::from_secs(1));
        assert_eq!(
            poll_every(Duration::from_secs(1)),
            Duration::from_millis(100)
        );
    }
}
