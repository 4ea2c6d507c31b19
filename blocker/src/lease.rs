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
use crate::state::jetstream::KvStore;

/// How often a standby looks at the lease: a tenth of the lease time, 100 ms to 1 s.
fn poll_every(ttl: Duration) -> Duration {
    (ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1))
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
    // The revision last seen, and since when (this replica's clock).
    let mut seen: Option<(u64, Instant)> = None;
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
                let lease_time = Duration::from_millis(lease.ttl_ms).max(Duration::from_secs(1));
                let expired = lease.holder.is_empty()
                    || match seen {
                        Some((r, since)) if r == revision => since.elapsed() >= lease_time,
                        _ => {
                            seen = Some((revision, Instant::now()));
                            false
                        }
                    };
                if !expired && lease.holder != logged_holder {
                    info!(holder = %lease.holder, epoch = lease.epoch, "lease held by another replica; standing by");
                    logged_holder.clone_from(&lease.holder);
                }
                if expired {
                    if !lease.holder.is_empty() {
                        warn!(holder = %lease.holder, epoch = lease.epoch, "lease expired; taking over");
                    }
                    seen = None;
                    Some(
                        kv.acquire(replica, incarnation, ttl, Some((&lease, revision)))
                            .await,
                    )
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
