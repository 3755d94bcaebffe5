//! What a metric's name says about it: its unit, from the suffix (`temperature_c` is in °C),
//! a label for people, and the order a station's tile shows its metrics in (temperature
//! first, as people look for it first).

use std::cmp::Ordering;

/// Suffix, unit. The longest suffix that matches wins.
const UNITS: &[(&str, &str)] = &[
    ("_c", "°C"),
    ("_f", "°F"),
    ("_k", "K"),
    ("_pct", "%"),
    ("_hpa", "hPa"),
    ("_pa", "Pa"),
    ("_mm", "mm"),
    ("_mmh", "mm/h"),
    ("_ms", "m/s"),
    ("_kmh", "km/h"),
    ("_deg", "°"),
    ("_v", "V"),
    ("_a", "A"),
    ("_w", "W"),
    ("_kwh", "kWh"),
    ("_lux", "lx"),
    ("_ppm", "ppm"),
    ("_db", "dB"),
    ("_s", "s"),
];

/// The entry of [`UNITS`] that `metric` ends with.
fn suffix(metric: &str) -> Option<&'static (&'static str, &'static str)> {
    UNITS
        .iter()
        .filter(|(suffix, _)| metric.len() > suffix.len() && metric.ends_with(suffix))
        .max_by_key(|(suffix, _)| suffix.len())
}

/// The unit of `metric`, from its suffix; `None` when the name gives none.
pub fn unit(metric: &str) -> Option<&'static str> {
    suffix(metric).map(|(_, unit)| *unit)
}

/// The name without its unit suffix, words spaced: `wind_speed_ms` → `wind speed`.
pub fn label(metric: &str) -> String {
    suffix(metric)
        .map_or(metric, |(suffix, _)| &metric[..metric.len() - suffix.len()])
        .replace('_', " ")
}

/// Temperature first, then the rest by name.
pub fn order(a: &str, b: &str) -> Ordering {
    let temperature = |m: &str| !m.starts_with("temperature");
    temperature(a).cmp(&temperature(b)).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_come_from_the_longest_matching_suffix() {
        assert_eq!(unit("temperature_c"), Some("°C"));
        assert_eq!(unit("humidity_pct"), Some("%"));
        assert_eq!(unit("pressure_hpa"), Some("hPa"));
        assert_eq!(unit("rain_mm"), Some("mm"));
        assert_eq!(unit("wind_speed_ms"), Some("m/s"));
        assert_eq!(unit("rain_rate_mmh"), Some("mm/h"));
        assert_eq!(unit("count"), None);
        assert_eq!(unit("_c"), None, "a suffix alone is no name");
        assert_eq!(label("wind_speed_ms"), "wind speed");
        assert_eq!(label("count"), "count");
    }

    #[test]
    fn temperature_comes_first() {
        let mut metrics = vec!["humidity_pct", "pressure_hpa", "temperature_c", "dew_c"];
        metrics.sort_by(|a, b| order(a, b));
        assert_eq!(
            metrics,
            ["temperature_c", "dew_c", "humidity_pct", "pressure_hpa"]
        );
    }
}
