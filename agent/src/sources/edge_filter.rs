//! Thins readings at the edge, for stations on metered links.
//!
//! Two rules, both optional:
//! - `min_interval_ms`: a reading arriving sooner than this after the last one kept is
//!   dropped whole;
//! - `deadband`: a metric with a band is kept only when it moved by more than the band since
//!   the value last *reported* (so a slow drift is reported once it adds up), or when it has
//!   not been reported for `heartbeat_s`, so a dashboard can tell a steady sensor from a
//!   dead one. Metrics without a band are always kept.
//!
//! A reading left with no metrics is dropped.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ferry_shared::sensor_line::Metrics;
use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeFilterConfig {
    #[serde(default)]
    pub min_interval_ms: u64,
    /// Metric name to the change (in the metric's unit) that is worth reporting.
    #[serde(default)]
    pub deadband: BTreeMap<String, f64>,
    /// A banded metric is reported at least this often, changed or not.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u64,
}

fn default_heartbeat_s() -> u64 {
    600
}

impl EdgeFilterConfig {
    /// The problem with the config, if any, as (key under the source, message).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if let Some((name, band)) = self
            .deadband
            .iter()
            .find(|(_, band)| !(band.is_finite() && **band >= 0.0))
        {
            return Err((
                "filter.deadband",
                format!("{name} = {band}: a band must be a finite number >= 0"),
            ));
        }
        if self.heartbeat_s == 0 {
            return Err(("filter.heartbeat_s", "must be at least 1".into()));
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct EdgeFilter {
    min_interval: Duration,
    deadband: BTreeMap<String, f64>,
    heartbeat: Duration,
    last_kept: Option<Instant>,
    /// For banded metrics: the value last reported, and when.
    reported: HashMap<String, (f64, Instant)>,
}

impl EdgeFilter {
    pub fn new(cfg: &EdgeFilterConfig) -> Self {
        Self {
            min_interval: Duration::from_millis(cfg.min_interval_ms),
            deadband: cfg.deadband.clone(),
            heartbeat: Duration::from_secs(cfg.heartbeat_s),
            last_kept: None,
            reported: HashMap::new(),
        }
    }

    /// The metrics of this reading worth sending, or `None` to drop the reading.
    pub fn apply(&mut self, mut metrics: Metrics, now: Instant) -> Option<Metrics> {
        if let Some(last) = self.last_kept
            && now.duration_since(last) < self.min_interval
        {
            return None;
        }
        metrics.retain(|name, value| {
            let Some(band) = self.deadband.get(name) else {
                return true;
            };
            match self.reported.get(name) {
                Some((last, at)) => {
                    (*value - last).abs() > *band || now.duration_since(*at) >= self.heartbeat
                }
                None => true,
            }
        });
        if metrics.is_empty() {
            return None;
        }
        self.last_kept = Some(now);
        for (name, value) in &metrics {
            if self.deadband.contains_key(name) {
                self.reported.insert(name.clone(), (*value, now));
            }
        }
        Some(metrics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, f64)]) -> Metrics {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn filter(min_interval_ms: u64, bands: &[(&str, f64)], heartbeat_s: u64) -> EdgeFilter {
        EdgeFilter::new(&EdgeFilterConfig {
            min_interval_ms,
            deadband: bands.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            heartbeat_s,
        })
    }

    #[test]
    fn min_interval_drops_readings_that_come_too_soon() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut f = filter(1000, &[], 600);
        assert!(f.apply(m(&[("t", 1.0)]), t0).is_some());
        assert!(f.apply(m(&[("t", 9.0)]), t0 + ms(999)).is_none());
        assert!(f.apply(m(&[("t", 2.0)]), t0 + ms(1000)).is_some());
        assert!(
            f.apply(m(&[("t", 3.0)]), t0 + ms(1500)).is_none(),
            "measured from the last kept"
        );
    }

    #[test]
    fn deadband_reports_changes_drift_and_heartbeats() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut f = filter(0, &[("t", 0.5)], 60);
        // (seconds, t, h, what is kept)
        let steps: &[(u64, f64, f64, Option<&[&str]>)] = &[
            (0, 20.0, 50.0, Some(&["h", "t"])), // first value of a banded metric
            (1, 20.3, 51.0, Some(&["h"])),      // within the band; h has none
            (2, 20.5, 52.0, Some(&["h"])),      // exactly the band is not more than it
            (3, 20.6, 53.0, Some(&["h", "t"])), // drift added up past the band
            (4, 20.0, 54.0, Some(&["h", "t"])), // and back down
            (63, 20.2, 55.0, Some(&["h"])),     // not yet a heartbeat: 59 s
            (64, 20.2, 56.0, Some(&["h", "t"])), // 60 s since t was last reported
        ];
        for (at, t, h, kept) in steps {
            let got = f.apply(m(&[("t", *t), ("h", *h)]), t0 + s(*at));
            let got_names: Option<Vec<&str>> =
                got.as_ref().map(|g| g.keys().map(String::as_str).collect());
            assert_eq!(got_names.as_deref(), *kept, "at {at} s");
        }
    }

    #[test]
    fn a_reading_with_nothing_new_is_dropped() {
        let t0 = Instant::now();
        let mut f = filter(0, &[("t", 1.0)], 600);
        assert!(f.apply(m(&[("t", 1.0)]), t0).is_some());
        assert!(
            f.apply(m(&[("t", 1.5)]), t0 + Duration::from_secs(1))
                .is_none()
        );
    }

    #[test]
    fn bad_config_is_named() {
        let mut cfg = EdgeFilterConfig {
            min_interval_ms: 0,
            deadband: BTreeMap::new(),
            heartbeat_s: 1,
        };
        assert!(cfg.check().is_ok());
        cfg.deadband.insert("t".into(), -1.0);
        assert_eq!(cfg.check().map_err(|e| e.0), Err("filter.deadband"));
        cfg.deadband.clear();
        cfg.heartbeat_s = 0;
        assert_eq!(cfg.check().map_err(|e| e.0), Err("filter.heartbeat_s"));
    }
}
