//! Threshold alarms, as ThingsBoard's: a rule names a metric, a comparison and a value, and
//! how long the comparison must hold. The rules come from the config; what each rule has
//! seen of each device is kept in the hot store, so a restart forgets nothing.
//!
//! Readings are judged by their own timestamps, in order: one older than the last reading
//! judged for that rule and device (a late resend) changes nothing.

use serde::{Deserialize, Serialize};

use super::readings::Fresh;
use super::{HotStore, rfc3339};
use crate::config::AlarmRule;
use crate::db::{DbError, Row, Tx};

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

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alarm {
    pub id: i64,
    pub rule: String,
    pub device: String,
    pub metric: String,
    pub condition: String,
    pub raised_at: String,
    pub raised_value: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleared_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cleared_value: Option<f64>,
}

/// Runs every rule that applies over each series' fresh points.
pub(super) fn judge_all(
    tx: &mut Tx<'_>,
    rules: &[AlarmRule],
    fresh: &Fresh,
    rev: i64,
) -> Result<(), DbError> {
    for ((device, metric), points) in fresh {
        for rule in rules.iter().filter(|r| r.applies(device, metric)) {
            judge(tx, rule, device, points, rev)?;
        }
    }
    Ok(())
}

/// Runs a rule over a series' new points, from where it stood, and keeps where it stands.
fn judge(
    tx: &mut Tx<'_>,
    rule: &AlarmRule,
    device: &str,
    points: &[(i64, f64)],
    rev: i64,
) -> Result<(), DbError> {
    let stored = tx.query(
        "SELECT since_ms, active_id, last_ts_ms FROM alarm_state WHERE rule = $1 AND device = $2",
        &[rule.name.as_str().into(), device.into()],
    )?;
    let mut active_id = stored.first().and_then(|r| r[1].int());
    let mut track = Track {
        since_ms: stored.first().and_then(|r| r[0].int()),
        active: active_id.is_some(),
        last_ts_ms: stored.first().and_then(|r| r[2].int()),
    };
    for &(ts, value) in points {
        match track.observe(rule, ts, value) {
            Some(Transition::Raise { at_ms, value }) => {
                let id = tx
                    .query(
                        "INSERT INTO alarms (rule, device, metric, condition, raised_ms,
                                             raised_value, rev)
                         VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                        &[
                            rule.name.as_str().into(),
                            device.into(),
                            rule.metric.as_str().into(),
                            rule.condition().into(),
                            at_ms.into(),
                            value.into(),
                            rev.into(),
                        ],
                    )?
                    .first()
                    .and_then(|r| r[0].int());
                active_id = id;
            }
            Some(Transition::Clear { at_ms, value }) => {
                if let Some(id) = active_id.take() {
                    tx.exec(
                        "UPDATE alarms SET cleared_ms = $1, cleared_value = $2, rev = $3
                         WHERE id = $4",
                        &[at_ms.into(), value.into(), rev.into(), id.into()],
                    )?;
                }
            }
            None => {}
        }
    }
    let Some(last_ts) = track.last_ts_ms else {
        return Ok(());
    };
    tx.exec(
        "INSERT INTO alarm_state (rule, device, since_ms, active_id, last_ts_ms)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (rule, device) DO UPDATE SET
           since_ms = excluded.since_ms, active_id = excluded.active_id,
           last_ts_ms = excluded.last_ts_ms",
        &[
            rule.name.as_str().into(),
            device.into(),
            track.since_ms.into(),
            active_id.into(),
            last_ts.into(),
        ],
    )?;
    Ok(())
}

impl HotStore {
    /// Alarms not cleared, newest first.
    pub fn active_alarms(&mut self) -> Result<Vec<Alarm>, DbError> {
        let rows = self
            .db
            .query(&alarm_sql("WHERE cleared_ms IS NULL ORDER BY id DESC"), &[])?;
        Ok(rows.iter().map(alarm_row).collect())
    }

    /// The `limit` alarms cleared last, newest first.
    pub fn cleared_alarms(&mut self, limit: usize) -> Result<Vec<Alarm>, DbError> {
        let rows = self.db.query(
            &alarm_sql("WHERE cleared_ms IS NOT NULL ORDER BY id DESC LIMIT $1"),
            &[(limit as i64).into()],
        )?;
        Ok(rows.iter().map(alarm_row).collect())
    }
}

pub(super) fn alarm_sql(tail: &str) -> String {
    format!(
        "SELECT id, rule, device, metric, condition, raised_ms, raised_value, cleared_ms,
                cleared_value FROM alarms {tail}"
    )
}

pub(super) fn alarm_row(r: &Row) -> Alarm {
    Alarm {
        id: r[0].int().unwrap_or_default(),
        rule: r[1].text().unwrap_or_default().to_owned(),
        device: r[2].text().unwrap_or_default().to_owned(),
        metric: r[3].text().unwrap_or_default().to_owned(),
        condition: r[4].text().unwrap_or_default().to_owned(),
        raised_at: rfc3339(r[5].int().unwrap_or_default()),
        raised_value: r[6].real().unwrap_or(f64::NAN),
        cleared_at: r[7].int().map(rfc3339),
        cleared_value: r[8].real(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Op;

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
