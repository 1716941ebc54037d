//! When a scheduled job runs: cron expressions (the `cron` crate) read in UTC, with an
//! optional seconds field, and the random delay (jitter) added to each run. Pure: the daemon
//! asks it for times and does the waiting itself.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};

#[derive(Debug, thiserror::Error)]
pub enum TimetableError {
    #[error(
        "schedule {expression:?} is not a cron expression (5 fields from the minute, or 6-7 \
         from the second): {reason}"
    )]
    Invalid { expression: String, reason: String },
}

/// A parsed cron expression.
#[derive(Debug, Clone)]
pub struct Timetable {
    schedule: cron::Schedule,
}

impl Timetable {
    /// Reads `expression`. The crate wants the seconds field first; the common 5-field form
    /// (what crontab and Kubernetes take) is read as running at second 0, with crontab's
    /// day-of-week numbers (0 or 7 Sunday), where the crate counts 1 (Sunday) to 7.
    pub fn parse(expression: &str) -> Result<Timetable, TimetableError> {
        let parts: Vec<&str> = expression.split_whitespace().collect();
        let fields = parts.len();
        let full = if fields == 5 {
            format!("0 {} {}", parts[..4].join(" "), crontab_weekdays(parts[4]))
        } else {
            expression.to_string()
        };
        let invalid = |reason: String| TimetableError::Invalid {
            expression: expression.to_string(),
            reason,
        };
        if !(5..=7).contains(&fields) {
            return Err(invalid(format!("{fields} fields")));
        }
        // The crate's message draws a caret under the fault on lines of its own: keep the
        // last, which says what is wrong, for a one-line error.
        let schedule = cron::Schedule::from_str(&full).map_err(|e| {
            let text = e.to_string();
            invalid(text.lines().last().unwrap_or_default().trim().to_string())
        })?;
        // An expression naming a date that never comes (30 February) would leave the job idle
        // forever without a word.
        if schedule.after(&Utc::now()).next().is_none() {
            return Err(invalid("it never runs".into()));
        }
        Ok(Timetable { schedule })
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&t).next()
    }

    /// The last scheduled time at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let just_after = t + chrono::Duration::milliseconds(1);
        self.schedule.after(&just_after).next_back()
    }

    /// A run last done at `last` (`None`: never) missed a scheduled time before `now`: the
    /// daemon was down then. One catch-up run covers all the missed times.
    pub fn missed(&self, last: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        match (last, self.last_at_or_before(now)) {
            (Some(last), Some(slot)) => last < slot,
            _ => false,
        }
    }
}

/// A crontab day-of-week field in the crate's numbering: each number one up (0-6 become
/// 1-7), crontab's second Sunday 7 becomes 1, and a range ending on it (`5-7`) is split
/// (`6-7,1`). Names and steps stay as they are.
fn crontab_weekdays(field: &str) -> String {
    let day = |n: &str| match n.parse::<u8>() {
        Ok(7) => "1".to_string(),
        Ok(d) => (d + 1).to_string(),
        Err(_) => n.to_string(),
    };
    field
        .split(',')
        .map(|item| {
            let (base, step) = match item.split_once('/') {
                Some((base, step)) => (base, format!("/{step}")),
                None => (item, String::new()),
            };
            match base.split_once('-') {
                Some((from, "7")) if from.parse::<u8>().is_ok() => {
                    format!("{}-7{step},1", day(from))
                }
                Some((from, to)) => format!("{}-{}{step}", day(from), day(to)),
                None => format!("{}{step}", day(base)),
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// A random delay of up to `seconds` (whole milliseconds), from the system's random source;
/// none when it cannot be read, since a run on time is better than no run.
pub fn jitter(seconds: u64) -> Duration {
    if seconds == 0 {
        return Duration::ZERO;
    }
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        return Duration::ZERO;
    }
    let millis = seconds.saturating_mul(1000);
    Duration::from_millis(u64::from_le_bytes(bytes) % (millis + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    /// When `cron` runs next after the time `after`.
    fn next(cron: &str, after: &str) -> Option<DateTime<Utc>> {
        let table = Timetable::parse(cron).unwrap_or_else(|e| panic!("{cron}: {e}"));
        table.next_after(at(after))
    }

    #[test]
    fn five_fields_run_at_second_zero_and_seconds_are_allowed() {
        assert_eq!(
            next("30 2 * * *", "2026-12-04T10:00:00Z"),
            Some(at("2026-12-05T02:30:00Z"))
        );
        assert_eq!(
            next("* * * * * *", "2026-12-04T10:00:00Z"),
            Some(at("2026-12-04T10:00:01Z"))
        );
        assert!(Timetable::parse("every night").is_err());
        assert!(Timetable::parse("* * *").is_err());
        assert!(Timetable::parse("0 0 30 2 *").is_err());
    }

    #[test]
    fn crontab_weekdays_count_from_sunday_zero() {
        assert_eq!(crontab_weekdays("*"), "*");
        assert_eq!(crontab_weekdays("0"), "1");
        assert_eq!(crontab_weekdays("7"), "1");
        assert_eq!(crontab_weekdays("1-5"), "2-6");
        assert_eq!(crontab_weekdays("5-7"), "6-7,1");
        assert_eq!(crontab_weekdays("MON-FRI"), "MON-FRI");
        assert_eq!(crontab_weekdays("0,3"), "1,4");
        // 2026-12-06 is a Sunday.
        assert_eq!(
            next("0 4 * * 0", "2026-12-04T10:00:00Z"),
            Some(at("2026-12-06T04:00:00Z"))
        );
        assert_eq!(
            next("0 4 * * 1-5", "2026-12-05T10:00:00Z"),
            Some(at("2026-12-07T04:00:00Z"))
        );
    }

    #[test]
    fn a_missed_slot_is_caught_up_once() {
        let nightly = Timetable::parse("0 2 * * *").unwrap();
        let now = at("2026-12-04T10:00:00Z");
        assert_eq!(
            nightly.last_at_or_before(now),
            Some(at("2026-12-04T02:00:00Z"))
        );
        // Down over three nights: one catch-up, as for one.
        assert!(nightly.missed(Some(at("2026-12-01T02:00:05Z")), now));
        assert!(!nightly.missed(Some(at("2026-12-04T02:00:05Z")), now));
        // A vault never run by the daemon waits for its first slot.
        assert!(!nightly.missed(None, now));
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        assert_eq!(jitter(0), Duration::ZERO);
        for _ in 0..100 {
            assert!(jitter(2) <= Duration::from_secs(2));
        }
    }
}
