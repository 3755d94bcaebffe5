//! Threshold alarms, as ThingsBoard's: a rule names a metric, a comparison and a value, and
//! how long the comparison must hold. The rules come from the config; what each rule has
//! seen of each device is kept in the hot store, so a restart forgets nothing.
//!
//! Readings are judged by their own timestamps, in order: one older than the last reading
//! judged for that rule and device (a late resend) changes nothing.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum Op {
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = "==")]
    Eq,
    #[serde(rename = "!=")]
    Ne,
}

impl Op {
    pub fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Self::Gt => left > right,
            Self::Ge => left >= right,
            Self::Lt => left < right,
            Self::Le => left <= right,
            Self::Eq => left == right,
            Self::Ne => left != right,
        }
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Self::Gt => ">",
            Self::Ge => ">=",
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Eq => "==",
            Self::Ne => "!=",
        }
    }
}

/// `[[dashboard.alarms]]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlarmRule {
    /// Unique among the rules; alarms carry it.
    pub name: String,
    pub metric: String,
    pub op: Op,
    pub value: f64,
    /// How long, in seconds of reading time, the comparison must hold before the alarm is
    /// raised; 0 raises it at the first reading that matches.
    #[serde(default)]
    pub for_s: u64,
    /// Only this device; every device when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
}

impl AlarmRule {
    pub fn applies(&self, device: &str, metric: &str) -> bool {
        self.metric == metric && self.device.as_deref().is_none_or(|d| d == device)
    }

    /// `temperature_c > 30 for 60 s`.
    pub fn condition(&self) -> String {
        let mut text = format!("{} {} {}", self.metric, self.op.symbol(), self.value);
        if self.for_s > 0 {
            text.push_str(&format!(" for {} s", self.for_s));
        }
        text
    }
}

/// Where one rule stands for one device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Track {
    /// Since when (reading time) the comparison has held without a break.
    pub since_ms: Option<i64>,
    /// The alarm raised and not yet cleared.
    pub active: bool,
    /// The newest reading judged.
    pub last_ts_ms: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Transition {
    Raise { at_ms: i64, value: f64 },
    Clear { at_ms: i64, value: f64 },
}

impl Track {
    /// Judges one reading; says when the alarm is raised or cleared by it.
    pub fn observe(&mut self, rule: &AlarmRule, ts_ms: i64, value: f64) -> Option<Transition> {
        if self.last_ts_ms.is_some_and(|last| ts_ms <= last) {
            return None;
        }
        self.last_ts_ms = Some(ts_ms);
        if rule.op.holds(value, rule.value) {
            let since = *self.since_ms.get_or_insert(ts_ms);
            let held_ms = ts_ms - since;
            let needed_ms = i64::try_from(rule.for_s.saturating_mul(1000)).unwrap_or(i64::MAX);
            if !self.active && held_ms >= needed_ms {
                self.active = true;
                return Some(Transition::Raise {
                    at_ms: ts_ms,
                    value,
                });
            }
            None
        } else {
            self.since_ms = None;
            if self.active {
                self.active = false;
                return Some(Transition::Clear {
                    at_ms: ts_ms,
                    value,
                });
            }
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(op: Op, value: f64, for_s: u64) -> AlarmRule {
        AlarmRule {
            name: "r".into(),
            metric: "temperature_c".into(),
            op,
            value,
            for_s,
            device: None,
        }
    }

    /// A case: its name, the rule, readings as (second, value), and what each reading must
    /// do: `R` raises, `C` clears, `.` does nothing.
    type Case<'a> = (&'a str, AlarmRule, &'a [(i64, f64)], &'a str);

    #[test]
    fn rules_raise_and_clear_as_the_table_says() {
        use Op::*;
        let table: &[Case] = &[
            (
                "gt at once",
                rule(Gt, 30.0, 0),
                &[(0, 29.0), (1, 31.0), (2, 32.0), (3, 30.0)],
                ".R.C",
            ),
            ("gt is strict", rule(Gt, 30.0, 0), &[(0, 30.0)], "."),
            (
                "ge takes equal",
                rule(Ge, 30.0, 0),
                &[(0, 30.0), (1, 29.9)],
                "RC",
            ),
            (
                "lt",
                rule(Lt, 0.0, 0),
                &[(0, 1.0), (1, -0.5), (2, 0.0)],
                ".RC",
            ),
            ("le", rule(Le, 0.0, 0), &[(0, 0.0), (1, 0.1)], "RC"),
            (
                "eq",
                rule(Eq, 1.0, 0),
                &[(0, 1.0), (1, 1.0), (2, 2.0)],
                "R.C",
            ),
            (
                "ne",
                rule(Ne, 1.0, 0),
                &[(0, 1.0), (1, 2.0), (2, 1.0)],
                ".RC",
            ),
            (
                "held for 10 s",
                rule(Gt, 30.0, 10),
                &[
                    (0, 31.0),
                    (5, 31.0),
                    (9, 31.0),
                    (10, 31.0),
                    (11, 31.0),
                    (12, 20.0),
                ],
                "...R.C",
            ),
            (
                "a break restarts the clock",
                rule(Gt, 30.0, 10),
                &[(0, 31.0), (8, 29.0), (9, 31.0), (18, 31.0), (19, 31.0)],
                "....R",
            ),
            (
                "never held long enough",
                rule(Gt, 30.0, 60),
                &[(0, 31.0), (30, 31.0), (59, 31.0), (60, 10.0)],
                "....",
            ),
            (
                "late and repeated readings are ignored",
                rule(Gt, 30.0, 0),
                &[(5, 31.0), (4, 10.0), (5, 10.0), (6, 10.0)],
                "R..C",
            ),
            (
                "raised again after clearing",
                rule(Lt, 5.0, 0),
                &[(0, 4.0), (1, 6.0), (2, 4.0)],
                "RCR",
            ),
        ];
        for (name, rule, readings, expect) in table {
            let mut track = Track::default();
            let got: String = readings
                .iter()
                .map(|&(s, v)| match track.observe(rule, s * 1000, v) {
                    Some(Transition::Raise { at_ms, value }) => {
                        assert_eq!((at_ms, value), (s * 1000, v), "{name}");
                        'R'
                    }
                    Some(Transition::Clear { .. }) => 'C',
                    None => '.',
                })
                .collect();
            assert_eq!(&got, expect, "{name}");
        }
    }

    #[test]
    fn rules_apply_to_their_metric_and_device() {
        let mut r = rule(Op::Gt, 1.0, 0);
        assert!(r.applies("ws-1", "temperature_c"));
        assert!(!r.applies("ws-1", "humidity_pct"));
        r.device = Some("ws-2".into());
        assert!(!r.applies("ws-1", "temperature_c"));
        assert!(r.applies("ws-2", "temperature_c"));
        assert_eq!(r.condition(), "temperature_c > 1");
        r.for_s = 60;
        assert_eq!(r.condition(), "temperature_c > 1 for 60 s");
    }

    #[test]
    fn ops_parse_from_their_symbols() {
        for (text, op) in [
            (">", Op::Gt),
            (">=", Op::Ge),
            ("<", Op::Lt),
            ("<=", Op::Le),
            ("==", Op::Eq),
            ("!=", Op::Ne),
        ] {
            let parsed: Op = serde_json::from_str(&format!("\"{text}\"")).expect(text);
            assert_eq!(parsed, op);
            assert_eq!(op.symbol(), text);
        }
        assert!(serde_json::from_str::<Op>("\"=>\"").is_err());
    }
}
