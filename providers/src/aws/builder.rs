//! Configuring an [`AwsFirewall`], object_store style.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_wafv2::config::retry::RetryConfig;
use tokio::sync::mpsc;
use tracing::{info, instrument};

use crate::{CallObserver, Error, ObserverSlot, Result};

use super::arn::IpSetArn;
use super::cache::Cache;
use super::client::{SetClient, limiters};
use super::retry::Backoff;
use super::{AwsError, AwsFirewall, DEFAULT_REFRESH, IPSET_CAPACITY, Inner, Writer};

/// Environment variable with the IP set ARNs, comma separated.
pub const ENV_IPSET_ARNS: &str = "PALISADE_IPSET_ARNS";
/// Environment variable with an endpoint URL override (an emulator).
pub const ENV_ENDPOINT_URL: &str = "AWS_ENDPOINT_URL";

/// Diffs the writer may hold queued before `apply` callers wait for room.
const QUEUE: usize = 4096;

/// Builder for [`AwsFirewall`].
#[derive(Debug, Clone)]
pub struct AwsFirewallBuilder {
    arns: Vec<String>,
    arn_field: &'static str,
    endpoint_url: Option<String>,
    dry_run: bool,
    write_rate: f64,
    read_rate: f64,
    capacity: usize,
    max_attempts: u32,
    refresh: Duration,
    sdk_config: Option<SdkConfig>,
    observer: Option<Arc<dyn CallObserver>>,
}

impl Default for AwsFirewallBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl AwsFirewallBuilder {
    /// No sets; 1 write/s and 5 reads/s; 10,000 entries per set; reads cached for 60 s;
    /// writes enabled.
    pub fn new() -> Self {
        AwsFirewallBuilder {
            arns: Vec::new(),
            arn_field: "ipset_arns",
            endpoint_url: None,
            dry_run: false,
            write_rate: 1.0,
            read_rate: 5.0,
            capacity: IPSET_CAPACITY,
            max_attempts: 8,
            refresh: DEFAULT_REFRESH,
            sdk_config: None,
            observer: None,
        }
    }

    /// `PALISADE_IPSET_ARNS` (comma separated) and `AWS_ENDPOINT_URL`, when set.
    pub fn from_env() -> Self {
        let mut b = Self::new();
        if let Ok(arns) = std::env::var(ENV_IPSET_ARNS) {
            b.arns = arns
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            b.arn_field = ENV_IPSET_ARNS;
        }
        if let Ok(url) = std::env::var(ENV_ENDPOINT_URL)
            && !url.trim().is_empty()
        {
            b.endpoint_url = Some(url.trim().to_string());
        }
        b
    }

    /// The IP sets to manage, by ARN. Sets of one family fill in this order.
    pub fn with_ipset_arns(mut self, arns: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.arns = arns.into_iter().map(Into::into).collect();
        self.arn_field = "ipset_arns";
        self
    }

    /// Send API calls to this endpoint instead of AWS (moto, LocalStack Pro).
    pub fn with_endpoint_url(mut self, url: Option<String>) -> Self {
        self.endpoint_url = url;
        self
    }

    /// Compute and log diffs, write nothing.
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// UpdateIPSet calls per second for the account and region (AWS: about 1).
    pub fn with_write_rate(mut self, per_second: f64) -> Self {
        self.write_rate = per_second;
        self
    }

    /// GetIPSet calls per second for the account and region (AWS: about 5).
    pub fn with_read_rate(mut self, per_second: f64) -> Self {
        self.read_rate = per_second;
        self
    }

    /// Entries per IP set (AWS: 10,000). Lower it to keep headroom for manual entries.
    pub fn with_set_capacity(mut self, entries: usize) -> Self {
        self.capacity = entries;
        self
    }

    /// Rounds tried before a retriable failure is returned to the callers (default 8).
    pub fn with_max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts;
        self
    }

    /// How long `status()` and `entries()` answer from the cached contents of a set before
    /// they read it again (default 60 s). Our own writes keep the cache current and a lock
    /// conflict makes the writer read again, so this bounds how late a change somebody else
    /// made shows in `entries()` while we write nothing. `Duration::ZERO` reads every time.
    pub fn with_refresh(mut self, refresh: Duration) -> Self {
        self.refresh = refresh;
        self
    }

    /// Use this SDK configuration (credentials, timeouts) instead of aws-config's default
    /// chain. The region always comes from each ARN.
    pub fn with_sdk_config(mut self, config: SdkConfig) -> Self {
        self.sdk_config = Some(config);
        self
    }

    /// Report every GetIPSet and UpdateIPSet to `observer`, each retry included, from the
    /// startup reads on (also settable later: [`Firewall::observe_calls`](crate::Firewall::observe_calls)).
    pub fn with_call_observer(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    fn parse_arns(&self) -> Result<Vec<IpSetArn>, AwsError> {
        if self.arns.is_empty() {
            return Err(AwsError::Config {
                field: "ipset_arns",
                message: format!("no IP set ARN configured (set {ENV_IPSET_ARNS})"),
            });
        }
        let mut seen = HashMap::new();
        let mut out = Vec::with_capacity(self.arns.len());
        for (i, raw) in self.arns.iter().enumerate() {
            let arn: IpSetArn = raw.parse().map_err(|reason| AwsError::Arn {
                field: format!("{}[{i}]", self.arn_field),
                value: raw.clone(),
                reason,
            })?;
            if let Some(j) = seen.insert(arn.arn.clone(), i) {
                return Err(AwsError::Config {
                    field: "ipset_arns",
                    message: format!("{} is listed twice (entries {j} and {i})", arn.arn),
                });
            }
            out.push(arn);
        }
        Ok(out)
    }

    /// Parse the ARNs, look every set up (GetIPSet: it must exist, its family is learned) and
    /// start the writer. Must run inside a Tokio runtime.
    #[instrument(skip(self), fields(sets = self.arns.len(), dry_run = self.dry_run, refresh_ms = self.refresh.as_millis() as u64))]
    pub async fn build(self) -> Result<AwsFirewall> {
        let arns = self.parse_arns()?;
        if self.capacity == 0 {
            return Err(AwsError::Config {
                field: "set_capacity",
                message: "must be at least 1".to_string(),
            }
            .into());
        }
        if self.max_attempts == 0 {
            return Err(AwsError::Config {
                field: "max_attempts",
                message: "must be at least 1".to_string(),
            }
            .into());
        }
        let sdk = match self.sdk_config.clone() {
            Some(c) => c,
            None => aws_config::defaults(BehaviorVersion::latest()).load().await,
        };
        let observer = ObserverSlot::default();
        if let Some(o) = self.observer.clone() {
            observer.set(o);
        }
        let mut clients: HashMap<String, aws_sdk_wafv2::Client> = HashMap::new();
        let mut sets = Vec::with_capacity(arns.len());
        let mut states = Vec::with_capacity(arns.len());
        for arn in arns {
            let region = arn.api_region().to_string();
            let client = clients
                .entry(region.clone())
                .or_insert_with(|| {
                    let mut conf = aws_sdk_wafv2::config::Builder::from(&sdk)
                        .region(Region::new(region.clone()))
                        // The writer retries with its own backoff and keeps diffs meanwhile.
                        .retry_config(RetryConfig::disabled());
                    if let Some(url) = &self.endpoint_url {
                        conf = conf.endpoint_url(url.clone());
                    }
                    aws_sdk_wafv2::Client::from_conf(conf.build())
                })
                .clone();
            let key = format!(
                "{}|{}|{region}",
                self.endpoint_url.as_deref().unwrap_or("aws"),
                arn.account
            );
            let limits = limiters(&key, self.write_rate, self.read_rate)?;
            let (set, state) =
                SetClient::connect(arn, client, limits, self.capacity, observer.clone())
                    .await
                    .map_err(|e| match e {
                        Error::NotFound { message, .. } => Error::Config {
                            provider: super::NAME,
                            message: format!("IP set does not exist: {message}"),
                        },
                        other => other,
                    })?;
            info!(
                arn = %set.arn,
                family = %set.family,
                entries = state.len(),
                "managing IP set"
            );
            sets.push(set);
            states.push(state);
        }
        let sets: Arc<[SetClient]> = sets.into();
        let cache = Arc::new(Cache::new(states, self.refresh));
        let (tx, rx) = mpsc::channel(QUEUE);
        let writer = Writer {
            sets: sets.clone(),
            cache: cache.clone(),
            jobs: rx,
            dry_run: self.dry_run,
            backoff: Backoff::default(),
            max_attempts: self.max_attempts,
            warned: [0; 2],
        };
        let handle = tokio::spawn(writer.run());
        Ok(AwsFirewall {
            inner: Arc::new(Inner {
                sets,
                cache,
                jobs: tx,
                writer: handle,
                dry_run: self.dry_run,
                observer,
            }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_arn_names_the_field() {
        let err = AwsFirewallBuilder::new()
            .with_ipset_arns([
                "arn:aws:wafv2:eu-west-1:123456789012:regional/ipset/a/1",
                "arn:aws:wafv2:eu-west-1:123456789012:regional/webacl/a/1",
            ])
            .build()
            .await
            .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, Error::Config { .. }), "{text}");
        assert!(text.contains("ipset_arns[1]"), "{text}");
        assert!(text.contains("expected `ipset`"), "{text}");
    }

    #[tokio::test]
    async fn no_arns_is_a_config_error() {
        let err = AwsFirewallBuilder::new().build().await.unwrap_err();
        assert!(err.to_string().contains(ENV_IPSET_ARNS), "{err}");
    }

    #[tokio::test]
    async fn duplicate_arns_and_bad_rates_are_refused() {
        let a = "arn:aws:wafv2:eu-west-1:123456789012:regional/ipset/a/1";
        let err = AwsFirewallBuilder::new()
            .with_ipset_arns([a, a])
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        let err = AwsFirewallBuilder::new()
            .with_ipset_arns([a])
            .with_set_capacity(0)
            .build()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("set_capacity"), "{err}");
    }

    #[test]
    fn from_env_field_name() {
        // Without touching the process environment: the field name follows the source.
        let b = AwsFirewallBuilder::new().with_ipset_arns(["x"]);
        let err = b.parse_arns().unwrap_err();
        assert!(err.to_string().starts_with("ipset_arns[0]"), "{err}");
    }
}
