//! When a scheduled job runs: cron expressions (the `cron` crate) with an optional seconds
//! field, read on the wall clock of a time zone (UTC unless configured), and the random delay
//! (jitter) added to each run. Pure: the daemon asks it for times and does the waiting itself.
//!
//! Time zones as cron daemons treat them: a wall-clock time skipped when clocks go forward
//! runs at the same distance after the gap (02:30 becomes 03:30), and one that comes twice
//! when they go back runs once, at its first pass.

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
    #[error(
        "timezone {zone:?} is not a time zone name such as \"Europe/Berlin\" or \"UTC\": {reason}"
    )]
    Zone { zone: String, reason: String },
}

/// A parsed cron expression and the time zone whose wall clock it is read on.
#[derive(Debug, Clone)]
pub struct Timetable {
    schedule: cron::Schedule,
    zone: jiff::tz::TimeZone,
    /// The zone as configured (`None`: UTC by default).
    zone_name: Option<String>,
}

impl Timetable {
    /// Reads `expression`. The crate wants the seconds field first; the common 5-field form
    /// (what crontab and Kubernetes take) is read as running at second 0, with crontab's
    /// day-of-week numbers (0 or 7 Sunday), where the crate counts 1 (Sunday) to 7.
    /// `zone` is an IANA name (`Europe/Berlin`); `None` is UTC.
    pub fn parse(expression: &str, zone_name: Option<&str>) -> Result<Timetable, TimetableError> {
        let zone = match zone_name {
            None => jiff::tz::TimeZone::UTC,
            Some(name) => jiff::tz::TimeZone::get(name).map_err(|e| TimetableError::Zone {
                zone: name.to_string(),
                reason: e.to_string(),
            })?,
        };
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
        Ok(Timetable {
            schedule,
            zone,
            zone_name: zone_name.map(str::to_string),
        })
    }

    /// The time zone as configured; `None` for the default, UTC.
    pub fn zone_name(&self) -> Option<&str> {
        self.zone_name.as_deref()
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // A wall-clock time of the repeated hour maps to its first pass, which may lie before
        // `t`: those are passed over.
        self.schedule
            .after(&self.wall(t))
            .filter_map(|w| self.instant(w))
            .find(|i| *i > t)
    }

    /// The last scheduled time at or before `t`.
    pub fn last_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let just_after = self.wall(t) + chrono::Duration::milliseconds(1);
        self.schedule
            .after(&just_after)
            .rev()
            .filter_map(|w| self.instant(w))
            .find(|i| *i <= t)
    }

    /// `t` on the zone's wall clock, written as a UTC time (what the cron crate reads).
    fn wall(&self, t: DateTime<Utc>) -> DateTime<Utc> {
        let offset = jiff::Timestamp::new(t.timestamp(), 0)
            .map(|ts| self.zone.to_offset(ts).seconds())
            .unwrap_or(0);
        t + chrono::Duration::seconds(offset.into())
    }

    /// The instant a wall-clock time (written as UTC) stands for in the zone: after a gap,
    /// shifted by the gap; in a fold, its first pass.
    fn instant(&self, wall: DateTime<Utc>) -> Option<DateTime<Utc>> {
        use chrono::{Datelike, Timelike};
        let civil = jiff::civil::DateTime::new(
            i16::try_from(wall.year()).ok()?,
            i8::try_from(wall.month()).ok()?,
            i8::try_from(wall.day()).ok()?,
            i8::try_from(wall.hour()).ok()?,
            i8::try_from(wall.minute()).ok()?,
            i8::try_from(wall.second()).ok()?,
            0,
        )
        .ok()?;
        let ts = self.zone.to_ambiguous_timestamp(civil).compatible().ok()?;
        DateTime::from_timestamp(ts.as_second(), 0)
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
        let table = Timetable::parse(cron, None).unwrap_or_else(|e| panic!("{cron}: {e}"));
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
        assert!(Timetable::parse("every night", None).is_err());
        assert!(Timetable::parse("* * *", None).is_err());
        assert!(Timetable::parse("0 0 30 2 *", None).is_err());
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
        let nightly = Timetable::parse("0 2 * * *", None).unwrap();
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
    fn a_time_zone_moves_the_slots_with_its_clock() {
        let berlin = Timetable::parse("30 2 * * *", Some("Europe/Berlin")).unwrap();
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            berlin.next_after(at("2026-12-04T10:00:00Z")),
            Some(at("2026-12-05T01:30:00Z"))
        );
        assert_eq!(
            berlin.next_after(at("2026-07-01T10:00:00Z")),
            Some(at("2026-07-02T00:30:00Z"))
        );
        assert_eq!(
            berlin.last_at_or_before(at("2026-12-04T10:00:00Z")),
            Some(at("2026-12-04T01:30:00Z"))
        );
        // 01:40 UTC is 02:40 in Berlin: today's 02:30 has passed, in UTC terms too.
        assert_eq!(
            berlin.last_at_or_before(at("2026-12-05T01:40:00Z")),
            Some(at("2026-12-05T01:30:00Z"))
        );
        // 2026-03-29: 02:00 becomes 03:00; 02:30 runs at 03:30 local (01:30 UTC).
        assert_eq!(
            berlin.next_after(at("2026-03-28T12:00:00Z")),
            Some(at("2026-03-29T01:30:00Z"))
        );
        // 2026-10-25: 03:00 becomes 02:00; 02:30 comes twice and runs once, at its first pass
        // (00:30 UTC); the next run is the day after.
        assert_eq!(
            berlin.next_after(at("2026-10-24T12:00:00Z")),
            Some(at("2026-10-25T00:30:00Z"))
        );
        assert_eq!(
            berlin.next_after(at("2026-10-25T00:30:00Z")),
            Some(at("2026-10-26T01:30:00Z"))
        );
        assert!(Timetable::parse("30 2 * * *", Some("Mars/Olympus")).is_err());
        assert_eq!(
            Timetable::parse("30 2 * * *", Some("UTC"))
                .unwrap()
                .next_after(at("2026-12-04T10:00:00Z")),
            Some(at("2026-12-05T02:30:00Z"))
        );
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        assert_eq!(jitter(0), Duration::ZERO);
        for _ in 0..100 {
            assert!(jitter(2) <= Duration::from_secs(2));
        }
    }
}
