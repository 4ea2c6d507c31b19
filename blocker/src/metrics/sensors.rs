//! Per-sensor activity for `GET /v1/sensors` and `palisade sensors list`: when each sensor
//! last reported, its rate over about the last minute, and how many of its reports were
//! rejected.
//!
//! Sensors are authenticated publishers, but the map is bounded anyway
//! ([`MAX_TRACKED_SENSORS`]): reports from sensors beyond the bound are counted together in
//! [`SensorTracker::untracked`] rather than growing the map.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;

/// Most sensors tracked one by one.
pub const MAX_TRACKED_SENSORS: usize = 1024;

const MINUTE: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct Stats {
    first_report: DateTime<Utc>,
    last_report: DateTime<Utc>,
    reports: u64,
    rejected: u64,
    /// Start of the current one-minute window.
    window_start: Instant,
    this_minute: u64,
    last_minute: u64,
}

impl Stats {
    fn new(now: DateTime<Utc>, instant: Instant) -> Stats {
        Stats {
            first_report: now,
            last_report: now,
            reports: 0,
            rejected: 0,
            window_start: instant,
            this_minute: 0,
            last_minute: 0,
        }
    }

    /// Move the window forward to `now`.
    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= 2 * MINUTE {
            self.last_minute = 0;
            self.this_minute = 0;
            self.window_start = now;
        } else if elapsed >= MINUTE {
            self.last_minute = self.this_minute;
            self.this_minute = 0;
            self.window_start += MINUTE;
        }
    }

    /// Reports over the last minute: the previous window weighted by how much of it still
    /// lies within the minute, plus the current window.
    fn per_minute(&self, now: Instant) -> f64 {
        let frac = now
            .saturating_duration_since(self.window_start)
            .as_secs_f64()
            / 60.0;
        self.last_minute as f64 * (1.0 - frac.min(1.0)) + self.this_minute as f64
    }
}

/// One sensor's activity, as `GET /v1/sensors` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SensorActivity {
    /// Sensor id (from the subject it publishes on, which its NATS credentials pin).
    pub sensor: String,
    /// First report since the blocker started.
    pub first_report: DateTime<Utc>,
    /// Latest report.
    pub last_report: DateTime<Utc>,
    /// Reports since the blocker started (rejected ones included).
    pub reports: u64,
    /// Reports over about the last minute.
    pub reports_per_min: f64,
    /// Reports rejected by validation (malformed, wrong sensor id, ...).
    pub rejected: u64,
}

/// Per-sensor activity since the blocker started (the lease holder's, with the `nats` backend).
#[derive(Debug, Default)]
pub struct SensorTracker {
    sensors: Mutex<HashMap<String, Stats>>,
    untracked: AtomicU64,
}

impl SensorTracker {
    /// A report from `sensor` (the id its subject names); `rejected` when validation refused it.
    pub fn report(&self, sensor: &str, rejected: bool) {
        self.record([(sensor, 1, u64::from(rejected))]);
    }

    /// A batch's reports: `(sensor, reports, rejected)` each. One lock and one clock read per
    /// batch, off the per-message path.
    pub fn record<'a>(&self, counts: impl IntoIterator<Item = (&'a str, u64, u64)>) {
        let now = Utc::now();
        let instant = Instant::now();
        let mut map = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
        for (sensor, reports, rejected) in counts {
            if !map.contains_key(sensor) {
                if map.len() >= MAX_TRACKED_SENSORS {
                    self.untracked.fetch_add(reports, Relaxed);
                    continue;
                }
                map.insert(sensor.to_owned(), Stats::new(now, instant));
            }
            let Some(stats) = map.get_mut(sensor) else {
                continue;
            };
            stats.roll(instant);
            stats.last_report = now;
            stats.reports += reports;
            stats.this_minute += reports;
            stats.rejected += rejected;
        }
    }

    /// Every tracked sensor, by id.
    pub fn list(&self) -> Vec<SensorActivity> {
        let instant = Instant::now();
        let mut map = self.sensors.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<SensorActivity> = map
            .iter_mut()
            .map(|(id, s)| {
                s.roll(instant);
                SensorActivity {
                    sensor: id.clone(),
                    first_report: s.first_report,
                    last_report: s.last_report,
                    reports: s.reports,
                    reports_per_min: (s.per_minute(instant) * 10.0).round() / 10.0,
                    rejected: s.rejected,
                }
            })
            .collect();
        drop(map);
        out.sort_by(|a, b| a.sensor.cmp(&b.sensor));
        out
    }

    /// Sensors tracked one by one.
    pub fn len(&self) -> usize {
        self.sensors.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// No sensor has reported yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reports from sensors beyond [`MAX_TRACKED_SENSORS`].
    pub fn untracked(&self) -> u64 {
        self.untracked.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reports_and_rejections_per_sensor() {
        let t = SensorTracker::default();
        t.report("a", false);
        t.report("a", true);
        t.report("b", false);
        let l = t.list();
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[0].sensor.as_str(), l[0].reports, l[0].rejected),
            ("a", 2, 1)
        );
        assert_eq!(l[0].reports_per_min, 2.0);
        assert_eq!((l[1].sensor.as_str(), l[1].reports), ("b", 1));
    }

    #[test]
    fn the_map_is_bounded() {
        let t = SensorTracker::default();
        for i in 0..MAX_TRACKED_SENSORS + 5 {
            t.report(&format!("s{i}"), false);
        }
        assert_eq!(t.len(), MAX_TRACKED_SENSORS);
        assert_eq!(t.untracked(), 5);
        // a tracked sensor keeps counting
        t.report("s0", false);
        assert_eq!(t.untracked(), 5);
    }

    #[test]
    fn the_rate_decays_over_two_minutes() {
        let start = Instant::now();
        let mut s = Stats::new(Utc::now(), start);
        s.this_minute = 60;
        assert_eq!(s.per_minute(start), 60.0);
        let later = start + MINUTE + MINUTE / 2;
        s.roll(later);
        assert_eq!(s.per_minute(later), 30.0);
        let much_later = start + 5 * MINUTE;
        s.roll(much_later);
        assert_eq!(s.per_minute(much_later), 0.0);
    }
}
