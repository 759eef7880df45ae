//! Retention: which snapshots a policy keeps, and why.
//!
//! The rules follow restic's `forget`, so operators can carry their policies over:
//! - `keep_last n`: the n newest snapshots;
//! - `keep_hourly/daily/weekly/monthly/yearly n`: walking from the newest, the newest snapshot of
//!   each of the last n hours/days/ISO weeks/months/years *that have a snapshot*;
//! - `keep_within d`: every snapshot taken within `d` (e.g. `30d`, `1y6m`, `12h`) of the newest.
//!
//! A snapshot survives if any rule keeps it; each survivor carries the rules that kept it.
//! Periods are calendar periods in UTC, so a policy gives the same answer on every host.

use chrono::{DateTime, Datelike, Months, Utc};
use serde::{Deserialize, Serialize};

/// A retention policy; all-zero keeps nothing (and is refused by `forget` as a mistake).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    pub keep_last: u32,
    #[serde(default)]
    pub keep_hourly: u32,
    #[serde(default)]
    pub keep_daily: u32,
    #[serde(default)]
    pub keep_weekly: u32,
    #[serde(default)]
    pub keep_monthly: u32,
    #[serde(default)]
    pub keep_yearly: u32,
    /// A span such as `30d`, `2w`, `1y6m`, `12h`.
    #[serde(default)]
    pub keep_within: Option<String>,
}

/// A span of calendar time: years and months, then days and hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Span {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

impl Span {
    /// Parses `1y6m2w3d12h` (any subset, in any order; `w` is 7 days).
    pub fn parse(s: &str) -> Result<Span, String> {
        let bad =
            || format!("'{s}' is not a span: use numbers with y, m, w, d, h, such as 30d or 1y6m");
        let mut span = Span::default();
        let mut num = String::new();
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: u32 = num.parse().map_err(|_| bad())?;
            num.clear();
            match c {
                'y' => span.years += n,
                'm' => span.months += n,
                'w' => span.days += 7 * n,
                'd' => span.days += n,
                'h' => span.hours += n,
                _ => return Err(bad()),
            }
        }
        if !num.is_empty() || span == Span::default() {
            return Err(bad());
        }
        Ok(span)
    }

    /// The instant `self` before `t`.
    pub fn before(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let t = t
            .checked_sub_months(Months::new(self.years * 12 + self.months))
            .unwrap_or(DateTime::<Utc>::MIN_UTC);
        t - chrono::Duration::days(self.days as i64) - chrono::Duration::hours(self.hours as i64)
    }
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    /// Checks the policy's spans.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(w) = &self.keep_within {
            Span::parse(w)?;
        }
        Ok(())
    }

    /// For each of `times` (any order), the rules that keep it; empty means it goes.
    pub fn apply(&self, times: &[DateTime<Utc>]) -> Result<Vec<Vec<String>>, String> {
        let mut order: Vec<usize> = (0..times.len()).collect();
        order.sort_by(|a, b| times[*b].cmp(&times[*a]).then(b.cmp(a)));
        let mut reasons = vec![Vec::<String>::new(); times.len()];
        type Bucket = fn(&DateTime<Utc>) -> i64;
        let rules: [(&str, u32, Bucket); 6] = [
            ("last", self.keep_last, |_| i64::MIN), // every snapshot is its own bucket
            ("hourly", self.keep_hourly, |t| {
                t.timestamp().div_euclid(3600)
            }),
            ("daily", self.keep_daily, |t| t.num_days_from_ce() as i64),
            ("weekly", self.keep_weekly, |t| {
                let w = t.iso_week();
                w.year() as i64 * 100 + w.week() as i64
            }),
            ("monthly", self.keep_monthly, |t| {
                t.year() as i64 * 12 + t.month0() as i64
            }),
            ("yearly", self.keep_yearly, |t| t.year() as i64),
        ];
        for (name, n, bucket) in rules {
            let mut left = n;
            let mut last: Option<i64> = None;
            for &i in &order {
                if left == 0 {
                    break;
                }
                let b = bucket(&times[i]);
                if name == "last" || last != Some(b) {
                    reasons[i].push(format!("{name} {}", n - left + 1));
                    left -= 1;
                    last = Some(b);
                }
            }
        }
        if let (Some(w), Some(&newest)) = (&self.keep_within, order.first()) {
            let cutoff = Span::parse(w)?.before(times[newest]);
            for &i in &order {
                if times[i] >= cutoff {
                    reasons[i].push(format!("within {w}"));
                }
            }
        }
        Ok(reasons)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// A synthetic year: one snapshot a day at 03:00 UTC, 2025-01-01 ..= 2025-12-31, plus a few
    /// extra on 2025-12-31 at 09:00, 15:00 and 21:00.
    fn year() -> Vec<DateTime<Utc>> {
        let start = Utc.with_ymd_and_hms(2025, 1, 1, 3, 0, 0).unwrap();
        let mut v: Vec<_> = (0..365)
            .map(|d| start + chrono::Duration::days(d))
            .collect();
        for h in [9, 15, 21] {
            v.push(Utc.with_ymd_and_hms(2025, 12, 31, h, 0, 0).unwrap());
        }
        v
    }

    fn kept(p: &Policy) -> Vec<String> {
        let times = year();
        let r = p.apply(&times).unwrap();
        let mut k: Vec<_> = times
            .iter()
            .zip(r)
            .filter(|(_, r)| !r.is_empty())
            .map(|(t, _)| t.format("%m-%d %H").to_string())
            .collect();
        k.sort();
        k
    }

    fn days(from: &str, to: &str) -> Vec<String> {
        let y =
            |s: &str| chrono::NaiveDate::parse_from_str(&format!("2025-{s}"), "%Y-%m-%d").unwrap();
        let (a, b) = (y(from), y(to));
        a.iter_days()
            .take_while(|d| *d <= b)
            .map(|d| d.format("%m-%d 03").to_string())
            .collect()
    }

    #[test]
    fn keep_last_7_is_the_seven_newest() {
        let k = kept(&Policy {
            keep_last: 7,
            ..Default::default()
        });
        let mut want = days("12-27", "12-31");
        want.extend(["12-31 09", "12-31 15", "12-31 21"].map(String::from));
        want.sort();
        // 7 newest: 12-31 21, 15, 09, 03, 12-30, 12-29, 12-28.
        want.retain(|d| d.as_str() >= "12-28");
        assert_eq!(k, want);
    }

    #[test]
    fn keep_daily_30_is_the_newest_of_each_of_30_days() {
        let k = kept(&Policy {
            keep_daily: 30,
            ..Default::default()
        });
        let mut want = days("12-02", "12-30");
        want.push("12-31 21".into());
        want.sort();
        assert_eq!(k, want);
    }

    #[test]
    fn keep_within_30d_counts_back_from_the_newest() {
        // Newest is 12-31 21:00; the cutoff is 12-01 21:00, so 12-01 03:00 is out.
        let k = kept(&Policy {
            keep_within: Some("30d".into()),
            ..Default::default()
        });
        let mut want = days("12-02", "12-31");
        want.extend(["12-31 09", "12-31 15", "12-31 21"].map(String::from));
        want.sort();
        assert_eq!(k, want);
    }

    #[test]
    fn keep_weekly_monthly_yearly_hourly() {
        // ISO weeks: the newest snapshot of each of the last 4 weeks with snapshots.
        assert_eq!(
            kept(&Policy {
                keep_weekly: 4,
                ..Default::default()
            }),
            ["12-14 03", "12-21 03", "12-28 03", "12-31 21"]
        );
        // Months: the last day of each of the last 3 months.
        assert_eq!(
            kept(&Policy {
                keep_monthly: 3,
                ..Default::default()
            }),
            ["10-31 03", "11-30 03", "12-31 21"]
        );
        // Only one year has snapshots, however many are asked for.
        assert_eq!(
            kept(&Policy {
                keep_yearly: 5,
                ..Default::default()
            }),
            ["12-31 21"]
        );
        // Hours with snapshots, not clock hours: 21, 15, 09, 03 of 12-31, then 03 of 12-30.
        assert_eq!(
            kept(&Policy {
                keep_hourly: 5,
                ..Default::default()
            }),
            ["12-30 03", "12-31 03", "12-31 09", "12-31 15", "12-31 21"]
        );
    }

    #[test]
    fn the_seeds_policy_30_days_and_last_7_is_a_union_with_reasons() {
        let times = year();
        let p = Policy {
            keep_last: 7,
            keep_within: Some("30d".into()),
            ..Default::default()
        };
        let r = p.apply(&times).unwrap();
        let survivors = r.iter().filter(|r| !r.is_empty()).count();
        assert_eq!(survivors, 33); // 30 days' snapshots (12-02..12-31, four on 12-31) = 33 ⊇ last 7
        let newest = times.len() - 1; // 12-31 21:00
        assert_eq!(r[newest], ["last 1", "within 30d"]);
        assert!(r[..days("01-01", "12-01").len()]
            .iter()
            .all(|r| r.is_empty()));
        assert!(Policy::default()
            .apply(&times)
            .unwrap()
            .iter()
            .all(|r| r.is_empty()));
    }

    #[test]
    fn spans_parse_and_subtract_calendar_time() {
        assert_eq!(
            Span::parse("1y6m2w3d12h").unwrap(),
            Span {
                years: 1,
                months: 6,
                days: 17,
                hours: 12
            }
        );
        for bad in ["", "30", "d", "3x", "1.5d"] {
            assert!(Span::parse(bad).is_err(), "{bad}");
        }
        let t = Utc.with_ymd_and_hms(2025, 3, 31, 12, 0, 0).unwrap();
        assert_eq!(
            Span::parse("1m").unwrap().before(t),
            Utc.with_ymd_and_hms(2025, 2, 28, 12, 0, 0).unwrap()
        );
    }
}
