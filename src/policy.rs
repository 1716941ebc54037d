//! Retention policies: which snapshots of one repository `forget` keeps, and why.
//!
//! The semantics are restic's (`restic forget --keep-*`), so that people who know restic's
//! policies get the same answer here: snapshots are taken newest first; `--keep-last N` keeps
//! the N newest; each calendar rule (`hourly`, `daily`, `weekly` (ISO weeks), `monthly`,
//! `yearly`) keeps the newest snapshot of each of the N most recent periods that have one;
//! `--keep-within D` keeps every snapshot newer than the newest snapshot (or now, if that is
//! earlier) minus D (`1y2m3d4h`,
//! calendar arithmetic as restic's Go `AddDate`); a rule whose count is not used up also keeps
//! the oldest snapshot (restic ≥ 0.16: the longest history the counts allow). The rules are
//! united. Periods are computed in UTC. On top of restic: the newest snapshot is always kept.

use chrono::{DateTime, Datelike, Duration, NaiveDate, Timelike, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RetentionError {
    #[error("bad duration `{0}`: use a combination of <n>y, <n>m, <n>d and <n>h, like 1y6m or 14d")]
    BadDuration(String),
    #[error("bad count `{0}`: a number or `unlimited`")]
    BadCount(String),
}

/// How many periods a rule keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Count {
    Limit(u32),
    #[serde(with = "unlimited")]
    Unlimited,
}

mod unlimited {
    use serde::{Deserialize, Deserializer, Serializer};
    pub(crate) fn serialize<S: Serializer>(s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("unlimited")
    }
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<(), D::Error> {
        let text = String::deserialize(d)?;
        if text == "unlimited" {
            Ok(())
        } else {
            Err(serde::de::Error::custom(
                "expected a number or \"unlimited\"",
            ))
        }
    }
}

impl std::str::FromStr for Count {
    type Err = RetentionError;
    fn from_str(s: &str) -> Result<Count, RetentionError> {
        if s == "unlimited" {
            return Ok(Count::Unlimited);
        }
        s.parse()
            .map(Count::Limit)
            .map_err(|_| RetentionError::BadCount(s.to_string()))
    }
}

/// A calendar span: years, months, days, hours (`1y2m3d4h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    pub years: i32,
    pub months: i32,
    pub days: i32,
    pub hours: i32,
}

impl std::str::FromStr for Span {
    type Err = RetentionError;
    fn from_str(s: &str) -> Result<Span, RetentionError> {
        let bad = || RetentionError::BadDuration(s.to_string());
        let mut span = Span::default();
        let mut digits = String::new();
        let mut any = false;
        for c in s.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                continue;
            }
            let n: i32 = digits.parse().map_err(|_| bad())?;
            digits.clear();
            match c {
                'y' => span.years += n,
                'm' => span.months += n,
                'd' => span.days += n,
                'h' => span.hours += n,
                _ => return Err(bad()),
            }
            any = true;
        }
        if !digits.is_empty() || !any {
            return Err(bad());
        }
        Ok(span)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Serialize for Span {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl Span {
    /// `time` minus this span, normalised the way Go's `time.AddDate` does (so 31 March minus
    /// one month is 3 March, as in restic).
    pub fn before(&self, time: DateTime<Utc>) -> DateTime<Utc> {
        let months = time.year() as i64 * 12 + time.month0() as i64
            - self.years as i64 * 12
            - self.months as i64;
        let year = months.div_euclid(12) as i32;
        let month = months.rem_euclid(12) as u32 + 1;
        let first = NaiveDate::from_ymd_opt(year, month, 1).unwrap_or(NaiveDate::MIN);
        let date = first + Duration::days(time.day() as i64 - 1 - self.days as i64);
        let naive = date.and_time(time.time());
        DateTime::<Utc>::from_naive_utc_and_offset(naive, Utc) - Duration::hours(self.hours as i64)
    }
}

/// A retention policy. Empty (no rule) keeps everything: `forget` refuses it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_last: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_hourly: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_daily: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_weekly: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_monthly: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_yearly: Option<Count>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_within: Option<Span>,
}

/// What the policy decided for one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub keep: bool,
    /// The rules that keep it (`last`, `hourly`, `daily`, `weekly`, `monthly`, `yearly`,
    /// `within 2d`, `oldest`, `newest`).
    pub reasons: Vec<String>,
}

#[derive(Clone, Copy)]
enum Rule {
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Rule {
    fn name(self) -> &'static str {
        match self {
            Rule::Last => "last",
            Rule::Hourly => "hourly",
            Rule::Daily => "daily",
            Rule::Weekly => "weekly",
            Rule::Monthly => "monthly",
            Rule::Yearly => "yearly",
        }
    }

    /// The period a snapshot falls in; `Last` gives every snapshot its own.
    fn bucket(self, t: DateTime<Utc>, position: usize) -> i64 {
        let (y, m, d, h) = (
            t.year() as i64,
            t.month() as i64,
            t.day() as i64,
            t.hour() as i64,
        );
        match self {
            Rule::Last => position as i64,
            Rule::Hourly => y * 1_000_000 + m * 10_000 + d * 100 + h,
            Rule::Daily => y * 10_000 + m * 100 + d,
            Rule::Weekly => {
                let w = t.iso_week();
                w.year() as i64 * 100 + w.week() as i64
            }
            Rule::Monthly => y * 100 + m,
            Rule::Yearly => y,
        }
    }
}

impl Policy {
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }

    fn rules(&self) -> Vec<(Rule, Count)> {
        [
            (Rule::Last, self.keep_last),
            (Rule::Hourly, self.keep_hourly),
            (Rule::Daily, self.keep_daily),
            (Rule::Weekly, self.keep_weekly),
            (Rule::Monthly, self.keep_monthly),
            (Rule::Yearly, self.keep_yearly),
        ]
        .into_iter()
        .filter_map(|(r, c)| c.map(|c| (r, c)))
        .filter(|(_, c)| *c != Count::Limit(0))
        .collect()
    }

    /// Decides for each snapshot time (any order) whether it is kept; the answer is in the
    /// input's order.
    pub fn apply(&self, times: &[DateTime<Utc>]) -> Vec<Decision> {
        let mut order: Vec<usize> = (0..times.len()).collect();
        // Newest first; equal times keep their input order, like restic's stable sort.
        order.sort_by(|a, b| times[*b].cmp(&times[*a]));
        let mut decisions = vec![
            Decision {
                keep: false,
                reasons: Vec::new(),
            };
            times.len()
        ];
        let Some(&newest) = order.first() else {
            return decisions;
        };
        let mut rules: Vec<(Rule, Count, Option<i64>)> = self
            .rules()
            .into_iter()
            .map(|(r, c)| (r, c, None))
            .collect();
        // From the newest snapshot, as restic does, but never from the future: a snapshot
        // dated ahead (a wrong clock, a forged date) must not make every other one "old".
        let anchor = times[newest].min(Utc::now());
        let within_from = self.keep_within.map(|s| s.before(anchor));
        let last = order.len() - 1;
        for (position, &i) in order.iter().enumerate() {
            let t = times[i];
            let d = &mut decisions[i];
            if let (Some(from), Some(span)) = (within_from, self.keep_within)
                && t > from
            {
                d.reasons.push(format!("within {span}"));
            }
            for (rule, count, previous) in rules.iter_mut() {
                if *count == Count::Limit(0) {
                    continue;
                }
                let bucket = rule.bucket(t, position);
                let oldest = position == last && Some(bucket) == *previous;
                if Some(bucket) != *previous || oldest {
                    *previous = Some(bucket);
                    if let Count::Limit(n) = count {
                        *n -= 1;
                    }
                    d.reasons.push(if oldest {
                        format!("oldest ({} count not used up)", rule.name())
                    } else {
                        rule.name().to_string()
                    });
                }
            }
            if i == newest && d.reasons.is_empty() {
                d.reasons.push("newest".into());
            }
            d.keep = !d.reasons.is_empty();
        }
        decisions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn spans_parse_and_subtract_like_go() {
        let span: Span = "1y2m3d4h".parse().unwrap();
        assert_eq!(span.to_string(), "1y2m3d4h");
        assert!("".parse::<Span>().is_err());
        assert!("5".parse::<Span>().is_err());
        assert!("3w".parse::<Span>().is_err());
        let one_month: Span = "1m".parse().unwrap();
        // Go: 2016-03-31 AddDate(0,-1,0) = 2016-02-31 = 2016-03-02.
        assert_eq!(
            one_month.before(t("2016-03-31T10:00:00Z")),
            t("2016-03-02T10:00:00Z")
        );
        let days: Span = "20d".parse().unwrap();
        assert_eq!(
            days.before(t("2016-01-10T00:00:00Z")),
            t("2015-12-21T00:00:00Z")
        );
    }

    #[test]
    fn the_newest_is_always_kept() {
        let times = [t("2020-01-01T00:00:00Z"), t("2020-01-02T00:00:00Z")];
        let policy = Policy {
            keep_within: Some("1h".parse().unwrap()),
            ..Policy::default()
        };
        let d = policy.apply(&times);
        assert!(!d[0].keep);
        assert!(d[1].keep);
    }

    #[test]
    fn counts_parse() {
        assert_eq!("7".parse::<Count>(), Ok(Count::Limit(7)));
        assert_eq!("unlimited".parse::<Count>(), Ok(Count::Unlimited));
        assert!("-1".parse::<Count>().is_err());
    }
}
