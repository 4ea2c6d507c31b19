//! Policy: count reports per client in a sliding window and decide when to block, and for how
//! long.
//!
//! Clients are counted per prefix (`policy.ipv6_prefix_len`, `policy.ipv4_prefix_len`: an IPv6
//! attacker owns its /64 and rotating addresses inside it does not reset its count); the engine
//! passes the prefix as the client. A report of severity `s` and category `c` adds a hit to its
//! client. The client is blocked
//! when, for `s` or any lower severity `t`, the hits of severity `t` or higher within the window
//! reach the threshold for (`c`, `t`) and come from at least `min_distinct_sensors` sensors.
//! Higher severities thus count towards lower thresholds. The counters of clients not yet
//! blocked live in memory (a bounded moka cache). With the embedded state backend a restart
//! forgets reports that had not yet reached a threshold; with the `nats` backend the engine
//! persists every client's counted reports ([`Pending`]) and a replica that takes over
//! restores them ([`Policy::restore`]), so a client is counted as by one blocker across
//! takeovers. Decided blocks are persisted either way (see [`crate::state`]).

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use moka::sync::Cache;
use palisade_wire::Severity;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::config::PolicyConfig;

/// One counted report.
#[derive(Debug, Clone, Copy)]
struct Hit {
    at: Instant,
    severity: Severity,
    sensor: u64,
    /// Hash of the report id (0: unknown); a redelivered report is not counted twice.
    report: u64,
}

/// A client's counted reports as they are persisted: wall-clock times, because the replica
/// that restores them has another monotonic clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingHit {
    pub at: DateTime<Utc>,
    pub severity: Severity,
    /// [`sensor_hash`] of the sensor id.
    pub sensor: u64,
    /// [`sensor_hash`] of the report id (0: unknown).
    pub report: u64,
}

/// Every counted report of a client not (yet) blocked, oldest first.
pub type Pending = Vec<PendingHit>;

#[derive(Debug, Default)]
struct Window {
    hits: VecDeque<Hit>,
}

/// A threshold crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The severity whose threshold was crossed.
    pub severity: Severity,
    /// Reports within the window that counted towards it.
    pub hits: u32,
    /// Distinct sensors those reports came from.
    pub sensors: u32,
}

/// The policy engine.
#[derive(Debug)]
pub struct Policy {
    config: PolicyConfig,
    /// Hits kept per client: enough for the largest threshold.
    max_hits: usize,
    clients: Cache<IpNet, Arc<Mutex<Window>>, crate::hash::FastHash>,
}

/// A stable-per-process 64-bit hash of a sensor id (the engine computes it once per report).
pub fn sensor_hash(sensor: &str) -> u64 {
    let mut h = DefaultHasher::new();
    sensor.hash(&mut h);
    h.finish()
}

impl Policy {
    pub fn new(config: PolicyConfig) -> Policy {
        let max_threshold = std::iter::once(&config.thresholds)
            .chain(config.categories.values())
            .flat_map(|t| Severity::ALL.into_iter().filter_map(|s| t.get(s)))
            .max()
            .unwrap_or(1);
        // Distinct sensors need room as well: keep at least that many hits.
        let max_hits = (max_threshold.max(config.min_distinct_sensors) as usize).clamp(1, 4096);
        let clients = Cache::builder()
            .max_capacity(config.max_tracked_clients)
            .time_to_idle(config.window())
            .build_with_hasher(crate::hash::FastHash::default());
        Policy {
            config,
            max_hits,
            clients,
        }
    }

    pub fn config(&self) -> &PolicyConfig {
        &self.config
    }

    /// Count a report; `Some` when the client crosses a threshold. The client's counters are
    /// dropped then: it is blocked.
    pub fn observe(
        &self,
        client: IpNet,
        category: &str,
        severity: Severity,
        sensor: u64,
        now: Instant,
    ) -> Option<Decision> {
        self.observe_report(client, category, severity, sensor, 0, now)
    }

    /// [`observe`](Policy::observe) for the report whose id hashes to `report`: a report
    /// already counted in the client's window (redelivered after a takeover) is not counted
    /// again.
    pub fn observe_report(
        &self,
        client: IpNet,
        category: &str,
        severity: Severity,
        sensor: u64,
        report: u64,
        now: Instant,
    ) -> Option<Decision> {
        let window = self.config.window();
        // `get` then `insert` rather than `get_with`: callers are serialized (the engine holds
        // its state lock), so the initializer's coordination would be pure cost.
        let entry = match self.clients.get(&client) {
            Some(entry) => entry,
            None => {
                // A client seen for the first time whose single report crosses a threshold
                // (a critical report at the default threshold of 1) is decided without
                // creating counters only to drop them.
                let first = Window {
                    hits: VecDeque::from([Hit {
                        at: now,
                        severity,
                        sensor,
                        report,
                    }]),
                };
                if let Some(d) = self.evaluate(&first, category, severity) {
                    return Some(d);
                }
                let entry = Arc::new(Mutex::new(Window::default()));
                self.clients.insert(client, Arc::clone(&entry));
                entry
            }
        };
        let decided = {
            let mut w = entry.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(front) = w.hits.front() {
                if now.saturating_duration_since(front.at) >= window {
                    w.hits.pop_front();
                } else {
                    break;
                }
            }
            if report != 0 && w.hits.iter().any(|h| h.report == report) {
                return None;
            }
            if w.hits.len() >= self.max_hits {
                // Keep the strongest evidence: drop the oldest lowest-severity hit.
                let weakest = w
                    .hits
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, h)| h.severity)
                    .map(|(i, _)| i);
                if let Some(i) = weakest {
                    w.hits.remove(i);
                }
            }
            w.hits.push_back(Hit {
                at: now,
                severity,
                sensor,
                report,
            });
            self.evaluate(&w, category, severity)
        };
        if decided.is_some() {
            self.clients.invalidate(&client);
        }
        decided
    }

    fn evaluate(&self, w: &Window, category: &str, severity: Severity) -> Option<Decision> {
        // Highest severity first, so the reported severity is the most serious crossed.
        // No allocation on this path: it runs for every report.
        for t in Severity::ALL.into_iter().rev().filter(|t| *t <= severity) {
            let Some(threshold) = self.config.threshold(category, t) else {
                continue;
            };
            let hits = w.hits.iter().filter(|h| h.severity >= t).count();
            if (hits as u64) < u64::from(threshold) {
                continue;
            }
            let sensors = Self::distinct_sensors(w, t);
            if sensors >= u64::from(self.config.min_distinct_sensors) {
                return Some(Decision {
                    severity: t,
                    hits: hits as u32,
                    sensors: sensors.min(u64::from(u32::MAX)) as u32,
                });
            }
        }
        None
    }

    /// How many distinct sensors the hits of severity `t` or higher come from. Runs only once a
    /// threshold's hit count is reached; a single hit needs no allocation.
    fn distinct_sensors(w: &Window, t: Severity) -> u64 {
        let mut it = w.hits.iter().filter(|h| h.severity >= t).map(|h| h.sensor);
        let Some(first) = it.next() else {
            return 0;
        };
        let mut rest: Vec<u64> = it.filter(|s| *s != first).collect();
        if rest.is_empty() {
            return 1;
        }
        rest.sort_unstable();
        rest.dedup();
        1 + rest.len() as u64
    }

    /// TTL of a block that is the client's `offence`-th (1 for the first): the base TTL times
    /// `escalation_factor^(offence-1)`, at most `max_ttl_secs`.
    pub fn ttl(&self, offence: u32) -> Duration {
        let base = self.config.block_ttl_secs as f64;
        let exp = offence.saturating_sub(1).min(64) as i32;
        let secs = base * self.config.escalation_factor.powi(exp);
        let max = self.config.max_ttl_secs as f64;
        Duration::from_secs(if secs.is_finite() && secs < max {
            secs as u64
        } else {
            self.config.max_ttl_secs
        })
    }

    /// The counted reports of `client` (`None`: it has none), with `now` and `wall` the same
    /// moment on both clocks.
    pub fn pending(&self, client: &IpNet, now: Instant, wall: DateTime<Utc>) -> Option<Pending> {
        let entry = self.clients.get(client)?;
        let w = entry.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.config.window();
        let hits: Pending = w
            .hits
            .iter()
            .filter(|h| now.saturating_duration_since(h.at) < window)
            .map(|h| PendingHit {
                at: wall
                    - chrono::Duration::from_std(now.saturating_duration_since(h.at))
                        .unwrap_or_default(),
                severity: h.severity,
                sensor: h.sensor,
                report: h.report,
            })
            .collect();
        (!hits.is_empty()).then_some(hits)
    }

    /// Restore a client's counted reports (a replica that took over); those older than the
    /// window are left out. `false` when none is left.
    pub fn restore(
        &self,
        client: IpNet,
        hits: &[PendingHit],
        now: Instant,
        wall: DateTime<Utc>,
    ) -> bool {
        let window = self.config.window();
        let mut w = Window::default();
        for h in hits.iter().rev().take(self.max_hits).rev() {
            let age = (wall - h.at).to_std().unwrap_or_default();
            if age >= window {
                continue;
            }
            let Some(at) = now.checked_sub(age) else {
                continue;
            };
            w.hits.push_back(Hit {
                at,
                severity: h.severity,
                sensor: h.sensor,
                report: h.report,
            });
        }
        if w.hits.is_empty() {
            return false;
        }
        self.clients.insert(client, Arc::new(Mutex::new(w)));
        true
    }

    /// Clients currently counted, without running cache maintenance (approximate, cheap).
    pub fn tracked_clients_cheap(&self) -> u64 {
        self.clients.entry_count()
    }

    /// Clients currently counted (runs pending cache maintenance first).
    pub fn tracked_clients(&self) -> u64 {
        self.clients.run_pending_tasks();
        self.clients.entry_count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Thresholds;

    fn sev(d: Option<Decision>) -> Option<Severity> {
        d.map(|d| d.severity)
    }

    fn ip(s: &str) -> IpNet {
        IpNet::from(s.parse::<std::net::IpAddr>().unwrap())
    }

    fn policy(f: impl FnOnce(&mut PolicyConfig)) -> Policy {
        let mut c = PolicyConfig::default();
        f(&mut c);
        Policy::new(c)
    }

    #[tokio::test(start_paused = true)]
    async fn counted_reports_survive_a_takeover_and_are_not_counted_twice() {
        let cfg = |c: &mut PolicyConfig| {
            c.window_secs = 60;
            c.thresholds.high = Some(3);
        };
        let old = policy(cfg);
        let c = ip("8.8.8.8");
        let now = Instant::now();
        let wall = Utc::now();
        for r in [1, 2] {
            let d = old.observe_report(c, "sqli", Severity::High, sensor_hash("s1"), r, now);
            assert_eq!(d, None);
        }
        // A redelivered report is not counted again.
        let d = old.observe_report(c, "sqli", Severity::High, sensor_hash("s1"), 2, now);
        assert_eq!(d, None);
        let pending = old.pending(&c, now, wall).unwrap();
        assert_eq!(pending.len(), 2);

        // The next holder, 10 s later on both clocks.
        tokio::time::advance(Duration::from_secs(10)).await;
        let new = policy(cfg);
        assert!(new.restore(
            c,
            &pending,
            Instant::now(),
            wall + chrono::Duration::seconds(10)
        ));
        let again = new.observe_report(
            c,
            "sqli",
            Severity::High,
            sensor_hash("s1"),
            2,
            Instant::now(),
        );
        assert_eq!(
            again, None,
            "a redelivery after the takeover is not counted"
        );
        let third = new.observe_report(
            c,
            "sqli",
            Severity::High,
            sensor_hash("s2"),
            3,
            Instant::now(),
        );
        assert_eq!(sev(third), Some(Severity::High));

        // Reports older than the window are not restored.
        let late = policy(cfg);
        assert!(!late.restore(
            c,
            &pending,
            Instant::now(),
            wall + chrono::Duration::seconds(61)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn critical_blocks_on_one_report() {
        let p = policy(|_| {});
        let d = sev(p.observe(
            ip("8.8.8.8"),
            "rce",
            Severity::Critical,
            sensor_hash("s1"),
            Instant::now(),
        ));
        assert_eq!(d, Some(Severity::Critical));
    }

    #[tokio::test(start_paused = true)]
    async fn high_needs_three_reports_within_the_window() {
        let p = policy(|c| {
            c.window_secs = 60;
            c.thresholds.high = Some(3);
        });
        let c = ip("8.8.8.8");
        assert_eq!(
            sev(p.observe(c, "sqli", Severity::High, sensor_hash("s1"), Instant::now())),
            None
        );
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(
            sev(p.observe(c, "sqli", Severity::High, sensor_hash("s1"), Instant::now())),
            None
        );
        // The first hit leaves the window: still two.
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(
            sev(p.observe(c, "sqli", Severity::High, sensor_hash("s1"), Instant::now())),
            None
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            sev(p.observe(c, "sqli", Severity::High, sensor_hash("s1"), Instant::now())),
            Some(Severity::High)
        );
        // Counters are dropped after a decision.
        assert_eq!(
            sev(p.observe(c, "sqli", Severity::High, sensor_hash("s1"), Instant::now())),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn higher_severities_count_towards_lower_thresholds() {
        let p = policy(|c| {
            c.thresholds = Thresholds {
                low: Some(3),
                medium: None,
                high: None,
                critical: None,
            }
        });
        let c = ip("9.9.9.9");
        let now = Instant::now();
        assert_eq!(
            sev(p.observe(c, "xss", Severity::Low, sensor_hash("s"), now)),
            None
        );
        assert_eq!(
            sev(p.observe(c, "xss", Severity::High, sensor_hash("s"), now)),
            None
        );
        assert_eq!(
            sev(p.observe(c, "xss", Severity::Critical, sensor_hash("s"), now)),
            Some(Severity::Low)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn category_override_and_disabled_severity() {
        let p = policy(|c| {
            c.categories.insert(
                "scanner".into(),
                Thresholds {
                    low: Some(2),
                    medium: None,
                    high: None,
                    critical: None,
                },
            );
            c.thresholds.low = None;
        });
        let c = ip("1.1.1.1");
        let now = Instant::now();
        // Low sqli never blocks (disabled), low scanner blocks on the second.
        for _ in 0..50 {
            assert_eq!(
                sev(p.observe(c, "sqli", Severity::Low, sensor_hash("s"), now)),
                None
            );
        }
        let d = ip("1.0.0.1");
        assert_eq!(
            sev(p.observe(d, "scanner", Severity::Low, sensor_hash("s"), now)),
            None
        );
        assert_eq!(
            sev(p.observe(d, "scanner", Severity::Low, sensor_hash("s"), now)),
            Some(Severity::Low)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn distinct_sensors_are_required() {
        let p = policy(|c| c.min_distinct_sensors = 2);
        let c = ip("8.8.4.4");
        let now = Instant::now();
        // A critical from one sensor is not enough, however often it repeats.
        for _ in 0..10 {
            assert_eq!(
                sev(p.observe(c, "rce", Severity::Critical, sensor_hash("a"), now)),
                None
            );
        }
        assert_eq!(
            sev(p.observe(c, "rce", Severity::Critical, sensor_hash("b"), now)),
            Some(Severity::Critical)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn clients_are_independent() {
        let p = policy(|_| {});
        let now = Instant::now();
        for i in 0..2u8 {
            assert_eq!(
                sev(p.observe(
                    ip(&format!("81.2.69.{i}")),
                    "sqli",
                    Severity::High,
                    sensor_hash("s"),
                    now
                )),
                None
            );
        }
        assert_eq!(p.tracked_clients(), 2);
    }

    #[test]
    fn ttl_escalates_and_is_capped() {
        let p = policy(|c| {
            c.block_ttl_secs = 3600;
            c.escalation_factor = 4.0;
            c.max_ttl_secs = 7 * 24 * 3600;
        });
        assert_eq!(p.ttl(1), Duration::from_secs(3600));
        assert_eq!(p.ttl(2), Duration::from_secs(4 * 3600));
        assert_eq!(p.ttl(3), Duration::from_secs(16 * 3600));
        assert_eq!(p.ttl(4), Duration::from_secs(64 * 3600));
        assert_eq!(p.ttl(5), Duration::from_secs(7 * 24 * 3600));
        assert_eq!(p.ttl(u32::MAX), Duration::from_secs(7 * 24 * 3600));
        assert_eq!(p.ttl(0), Duration::from_secs(3600));
    }
}
