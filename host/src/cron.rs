//! Five-field cron expressions (minute hour day-of-month month day-of-week) in a time zone.
//!
//! Lists, ranges and steps (`1,15`, `1-5`, `*/10`, `8-18/2`), month and weekday names (`jan`,
//! `mon`), 7 for Sunday, and `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`. As in cron,
//! when both day fields are restricted a day matching either one matches. Times are evaluated
//! minute by minute in the zone: a local time skipped by a daylight-saving change never fires,
//! one that happens twice fires twice.

use chrono::{DateTime, Datelike, Duration, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cron {
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_any: bool,
    weekdays_any: bool,
    pub tz: Tz,
    text: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// One field as a bit set over `lo..=hi`; whether it was `*`.
fn field(text: &str, lo: u32, hi: u32, names: &[&str]) -> Result<(u64, bool), String> {
    let value = |s: &str| -> Result<u32, String> {
        let s = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == s) {
            return Ok(i as u32 + if lo == 1 { 1 } else { 0 });
        }
        s.parse::<u32>().map_err(|_| {
            format!(
                "'{s}' is not a number{}",
                if names.is_empty() { "" } else { " or a name" }
            )
        })
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("step '{s}' must be a positive number"))?,
            ),
            None => (part, 1),
        };
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let a = value(range)?;
            (a, if part.contains('/') { hi } else { a })
        };
        // 7 is Sunday too.
        let (a, b) = if hi == 6 && b == 7 && a <= 7 {
            (a, 7)
        } else {
            (a, b)
        };
        if a < lo || b > hi.max(if hi == 6 { 7 } else { hi }) || a > b {
            return Err(format!("'{part}' is outside {lo}-{hi}"));
        }
        let mut v = a;
        while v <= b {
            bits |= 1 << (if hi == 6 { v % 7 } else { v });
            v += step;
        }
    }
    Ok((bits, text == "*"))
}

impl Cron {
    pub fn parse(text: &str, tz: Tz) -> Result<Cron, String> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            t => t,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "cron expression '{text}' needs five fields (minute hour day-of-month month day-of-week), e.g. \"30 2 * * *\""
            ));
        }
        let bad = |what: &str, e: String| format!("cron expression '{text}', {what}: {e}");
        let (minutes, _) = field(f[0], 0, 59, &[]).map_err(|e| bad("minute", e))?;
        let (hours, _) = field(f[1], 0, 23, &[]).map_err(|e| bad("hour", e))?;
        let (days, days_any) = field(f[2], 1, 31, &[]).map_err(|e| bad("day of month", e))?;
        let (months, _) = field(f[3], 1, 12, &MONTHS).map_err(|e| bad("month", e))?;
        let (weekdays, weekdays_any) =
            field(f[4], 0, 6, &DAYS).map_err(|e| bad("day of week", e))?;
        Ok(Cron {
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_any,
            weekdays_any,
            tz,
            text: text.trim().to_string(),
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    fn matches(&self, t: DateTime<Utc>) -> bool {
        let l = t.with_timezone(&self.tz);
        let bit = |set: u64, v: u32| set & (1 << v) != 0;
        let dom = bit(self.days, l.day());
        let dow = bit(self.weekdays, l.weekday().num_days_from_sunday());
        let day = match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => dom,
            (true, false) => dow,
            (false, false) => dom || dow,
        };
        bit(self.minutes, l.minute())
            && bit(self.hours, l.hour())
            && bit(self.months, l.month())
            && day
    }

    /// The first time it fires strictly after `t` (within five years).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = Utc
            .timestamp_opt(t.timestamp() - t.timestamp().rem_euclid(60) + 60, 0)
            .single()?;
        self.scan(start, Duration::minutes(1))
    }

    /// The last time it fired at or before `t` (within five years).
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let start = Utc
            .timestamp_opt(t.timestamp() - t.timestamp().rem_euclid(60), 0)
            .single()?;
        self.scan(start, Duration::minutes(-1))
    }

    fn scan(&self, mut t: DateTime<Utc>, step: Duration) -> Option<DateTime<Utc>> {
        for _ in 0..(5 * 366 * 24 * 60) {
            if self.matches(t) {
                return Some(t);
            }
            // Skip whole hours and days that cannot match (most of the search).
            let l = t.with_timezone(&self.tz);
            if self.hours & (1 << l.hour()) == 0
                && l.minute() == if step > Duration::zero() { 0 } else { 59 }
            {
                t += step * 60;
                continue;
            }
            t += step;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn next_and_last_in_a_time_zone() {
        let c = Cron::parse("30 2 * * *", "Asia/Shanghai".parse().unwrap()).unwrap();
        // 02:30 in Shanghai is 18:30 UTC the day before.
        assert_eq!(
            c.next_after(at("2026-12-01T00:00:00Z")),
            Some(at("2026-12-01T18:30:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-12-01T18:30:00Z")),
            Some(at("2026-12-02T18:30:00Z"))
        );
        assert_eq!(
            c.last_at_or_before(at("2026-12-01T18:30:00Z")),
            Some(at("2026-12-01T18:30:00Z"))
        );
        assert_eq!(
            c.last_at_or_before(at("2026-12-01T18:29:59Z")),
            Some(at("2026-11-30T18:30:00Z"))
        );
    }

    #[test]
    fn fields_lists_ranges_steps_and_names() {
        let utc: Tz = "UTC".parse().unwrap();
        let c = Cron::parse("*/15 8-18/2 * jan,dec mon-fri", utc).unwrap();
        // 2026-12-05 is a Saturday: the next match is Monday the 7th at 08:00.
        assert_eq!(
            c.next_after(at("2026-12-04T18:50:00Z")),
            Some(at("2026-12-07T08:00:00Z"))
        );
        assert_eq!(
            c.next_after(at("2026-12-07T08:00:00Z")),
            Some(at("2026-12-07T08:15:00Z"))
        );
        let sunday = Cron::parse("0 0 * * 7", utc).unwrap();
        assert_eq!(
            sunday.next_after(at("2026-12-01T00:00:00Z")),
            Some(at("2026-12-06T00:00:00Z"))
        );
        assert_eq!(
            Cron::parse("@daily", utc)
                .unwrap()
                .next_after(at("2026-12-01T10:00:00Z")),
            Some(at("2026-12-02T00:00:00Z"))
        );
        // Both day fields restricted: either matches (the 1st, or a Friday).
        let either = Cron::parse("0 0 1 * fri", utc).unwrap();
        assert_eq!(
            either.next_after(at("2026-12-01T00:00:00Z")),
            Some(at("2026-12-04T00:00:00Z"))
        );
        for bad in [
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "* * * 13 *",
            "*/0 * * * *",
            "x * * * *",
            "5-1 * * * *",
        ] {
            assert!(Cron::parse(bad, utc).is_err(), "{bad}");
        }
    }
}
