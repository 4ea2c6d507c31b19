//! The two WAFv2 calls the provider makes (GetIPSet, UpdateIPSet), each behind the account's
//! shared rate limiters, and the mapping of SDK failures into [`Error`].

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use aws_sdk_wafv2::Client;
use aws_sdk_wafv2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_wafv2::types::IpAddressVersion;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tracing::{debug, instrument, warn};

use crate::{Error, Family, ObserverSlot};

use super::arn::IpSetArn;
use super::plan::SetState;
use super::retry::classify;
use super::{AwsError, NAME};

/// Token buckets shared by every IP set of one account and region (AWS limits calls per
/// account and region, not per set).
#[derive(Debug)]
pub(crate) struct Limiters {
    pub(crate) write: DefaultDirectRateLimiter,
    pub(crate) read: DefaultDirectRateLimiter,
    rates: (f64, f64),
}

fn quota(per_second: f64, burst: u32) -> Option<Quota> {
    if !(per_second.is_finite() && per_second > 0.0) {
        return None;
    }
    let burst = NonZeroU32::new(burst.max(1))?;
    Quota::with_period(Duration::from_secs_f64(1.0 / per_second)).map(|q| q.allow_burst(burst))
}

/// The process-wide limiters for `key` (endpoint + account + region), created on first use.
/// Several firewalls in one process that name the same account and region share one budget.
pub(crate) fn limiters(key: &str, write: f64, read: f64) -> Result<Arc<Limiters>, AwsError> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<Limiters>>>> = OnceLock::new();
    let mut map = REGISTRY
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if let Some(l) = map.get(key) {
        if l.rates != (write, read) {
            warn!(
                account = key,
                write_rate = l.rates.0,
                read_rate = l.rates.1,
                "another firewall set the rate budget of this account first; sharing it"
            );
        }
        return Ok(l.clone());
    }
    let wq = quota(write, 1).ok_or_else(|| AwsError::Config {
        field: "write_rate",
        message: format!("{write} is not a positive number of calls per second"),
    })?;
    // Reads may burst up to their per-second rate.
    let rq = quota(read, read.floor() as u32).ok_or_else(|| AwsError::Config {
        field: "read_rate",
        message: format!("{read} is not a positive number of calls per second"),
    })?;
    let l = Arc::new(Limiters {
        write: RateLimiter::direct(wq),
        read: RateLimiter::direct(rq),
        rates: (write, read),
    });
    map.insert(key.to_string(), l.clone());
    Ok(l)
}

/// GetIPSet calls sent by every AWS firewall of this process (for the blocker's metrics).
static READS_TOTAL: AtomicU64 = AtomicU64::new(0);

/// GetIPSet calls sent by every AWS firewall of this process, failed ones included.
pub(crate) fn reads_total() -> u64 {
    READS_TOTAL.load(Relaxed)
}

/// One configured IP set and the client that reaches it.
#[derive(Debug)]
pub(crate) struct SetClient {
    pub(crate) arn: IpSetArn,
    pub(crate) family: Family,
    pub(crate) capacity: usize,
    client: Client,
    limiters: Arc<Limiters>,
    /// GetIPSet calls sent for this set, failed ones included.
    reads: AtomicU64,
    /// Told about every GetIPSet and UpdateIPSet, each retry included (shared by every set).
    observer: ObserverSlot,
}

fn sdk_error<E>(op: &'static str, arn: &IpSetArn, err: SdkError<E>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().map(str::to_string);
    let message = format!("{op} {arn}: {}", DisplayErrorContext(&err));
    let source: Option<Box<dyn std::error::Error + Send + Sync>> = match err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => Some(Box::new(err)),
        _ => None,
    };
    classify(code.as_deref(), status).into_error(message, source)
}

impl SetClient {
    /// Look the set up (GetIPSet) and learn its family.
    pub(crate) async fn connect(
        arn: IpSetArn,
        client: Client,
        limiters: Arc<Limiters>,
        capacity: usize,
        observer: ObserverSlot,
    ) -> Result<(SetClient, SetState), Error> {
        let mut set = SetClient {
            arn,
            family: Family::V4,
            capacity,
            client,
            limiters,
            reads: AtomicU64::new(0),
            observer,
        };
        let (state, version) = set.get_with_version().await?;
        set.family = match version {
            IpAddressVersion::Ipv4 => Family::V4,
            IpAddressVersion::Ipv6 => Family::V6,
            other => {
                return Err(AwsError::Config {
                    field: "ipset_arns",
                    message: format!("{}: unknown IPAddressVersion {}", set.arn, other.as_str()),
                }
                .into());
            }
        };
        Ok((set, state))
    }

    /// Current entries and lock token (GetIPSet), after a read token.
    pub(crate) async fn get(&self) -> Result<SetState, Error> {
        Ok(self.get_with_version().await?.0)
    }

    #[instrument(skip(self), fields(arn = %self.arn))]
    async fn get_with_version(&self) -> Result<(SetState, IpAddressVersion), Error> {
        self.limiters.read.until_ready().await;
        self.reads.fetch_add(1, Relaxed);
        READS_TOTAL.fetch_add(1, Relaxed);
        let started = Instant::now();
        let out = self
            .client
            .get_ip_set()
            .name(&self.arn.name)
            .scope(self.arn.scope.to_sdk())
            .id(&self.arn.id)
            .send()
            .await
            .map_err(|e| sdk_error("GetIPSet", &self.arn, e));
        self.observer.record(NAME, "GetIPSet", started, &out);
        let out = out?;
        let (Some(set), Some(token)) = (out.ip_set, out.lock_token) else {
            return Err(Error::Unavailable {
                provider: NAME,
                message: format!("GetIPSet {}: answer without IPSet or LockToken", self.arn),
                source: None,
            });
        };
        let description = set
            .description()
            .filter(|d| !d.is_empty())
            .map(str::to_string);
        let state = SetState::from_aws(set.addresses(), token, description);
        debug!(entries = state.len(), "read IP set");
        Ok((state, set.ip_address_version().clone()))
    }

    /// GetIPSet calls sent for this set so far.
    pub(crate) fn reads(&self) -> u64 {
        self.reads.load(Relaxed)
    }

    /// The rate budget this set shares with the other sets of its account and region.
    pub(crate) fn limiters(&self) -> &Arc<Limiters> {
        &self.limiters
    }

    /// Replace the set's addresses (UpdateIPSet), after a write token unless the caller already
    /// took one (`wait` false). Returns NextLockToken.
    #[instrument(skip(self, base, next), fields(arn = %self.arn, entries = next.len()))]
    pub(crate) async fn update(
        &self,
        base: &SetState,
        next: &SetState,
        wait: bool,
    ) -> Result<String, Error> {
        if wait {
            self.limiters.write.until_ready().await;
        }
        let started = Instant::now();
        let out = self
            .client
            .update_ip_set()
            .name(&self.arn.name)
            .scope(self.arn.scope.to_sdk())
            .id(&self.arn.id)
            .set_description(base.description.clone())
            .set_addresses(Some(next.to_list()))
            .lock_token(&base.lock_token)
            .send()
            .await
            .map_err(|e| sdk_error("UpdateIPSet", &self.arn, e));
        self.observer.record(NAME, "UpdateIPSet", started, &out);
        let out = out?;
        out.next_lock_token.ok_or_else(|| Error::Unavailable {
            provider: NAME,
            message: format!("UpdateIPSet {}: answer without NextLockToken", self.arn),
            source: None,
        })
    }
}
