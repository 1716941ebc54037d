//! S3 Object Lock as a target sees it: the policy a target writes with (mode and period), what a
//! stored object carries, and which objects get a lock at all (docs/OBJECT-LOCK.md).
//!
//! A lock makes an object version undeletable until a date, even for the account that wrote it.
//! Everything gitvault writes is locked except the target locks under `locks/`: they are leases,
//! deleted when released, and a locked lease could never be taken back.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// How S3 enforces a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// Nobody can delete the object or shorten its retention, the root account included.
    Compliance,
    /// Accounts granted `s3:BypassGovernanceRetention` can; others cannot.
    Governance,
}

impl LockMode {
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Compliance => "compliance",
            LockMode::Governance => "governance",
        }
    }
}

/// Seconds instead of the configured days: the test suite's knob (no user sets this; a lock of
/// seconds protects nothing).
pub const LOCK_SECONDS_ENV: &str = "GITVAULT_LOCK_SECONDS";

/// What a locked target writes with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockPolicy {
    pub mode: LockMode,
    pub period: Duration,
}

impl LockPolicy {
    /// The policy of `days` in `mode`, or of `GITVAULT_LOCK_SECONDS` seconds when that is set.
    pub fn from_days(days: u32, mode: LockMode) -> LockPolicy {
        let seconds = std::env::var(LOCK_SECONDS_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .filter(|s| *s > 0)
            .unwrap_or(u64::from(days) * 86_400);
        LockPolicy {
            mode,
            period: Duration::from_secs(seconds),
        }
    }

    /// The date an object written (or renewed) at `now` is kept until.
    pub fn retain_until(&self, now: SystemTime) -> SystemTime {
        now + self.period
    }

    /// An object kept until `until` is renewed once less than half the period is left, so that
    /// a run every period/2 or more often never lets a live object's lock lapse.
    pub fn needs_renewal(&self, until: SystemTime, now: SystemTime) -> bool {
        until < now + self.period / 2
    }

    /// What is wrong with a stored object's lock under this policy, if anything. A lock ending
    /// before the policy's period from when the object was written is shorter than policy; an
    /// expired lock matters only on an object that must stay (`live`): a condemned pack's or a
    /// replaced index backup's lock runs out as planned.
    pub fn judge(&self, found: &Retention, live: bool, now: SystemTime) -> Option<LockProblem> {
        let Some(until) = found.until else {
            return Some(LockProblem::Missing);
        };
        if found.mode != Some(self.mode) {
            return Some(LockProblem::WrongMode(found.mode));
        }
        // The date is fixed when an upload starts and the object's time when it ends: a long
        // upload of a big pack must not read as a short lock.
        let slack = (self.period / 100).max(Duration::from_secs(60));
        if let Some(written) = found.written
            && until + slack < written + self.period
        {
            return Some(LockProblem::Shorter(until));
        }
        if live && until <= now {
            return Some(LockProblem::Expired(until));
        }
        None
    }
}

/// Whether an object under this key is written with the target's lock.
pub fn lock_applies(key: &str) -> bool {
    !key.starts_with("locks/")
}

/// The lock a stored object carries, as the server reports it (HeadObject).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Retention {
    pub mode: Option<LockMode>,
    pub until: Option<SystemTime>,
    /// When the object (this version of it) was written.
    pub written: Option<SystemTime>,
}

/// Why a stored object's lock does not meet the policy (`verify --locks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockProblem {
    Missing,
    WrongMode(Option<LockMode>),
    Shorter(SystemTime),
    Expired(SystemTime),
}

impl std::fmt::Display for LockProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockProblem::Missing => write!(f, "no Object Lock retention"),
            LockProblem::WrongMode(Some(m)) => write!(f, "locked in {} mode", m.as_str()),
            LockProblem::WrongMode(None) => write!(f, "a retention date without a mode"),
            LockProblem::Shorter(t) => write!(f, "locked only until {}", rfc3339(*t)),
            LockProblem::Expired(t) => write!(f, "lock expired at {}", rfc3339(*t)),
        }
    }
}

/// A date as users read it in messages and reports.
pub fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_starts_at_half_the_period() {
        let p = LockPolicy {
            mode: LockMode::Compliance,
            period: Duration::from_secs(100),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        assert!(!p.needs_renewal(now + Duration::from_secs(51), now));
        assert!(p.needs_renewal(now + Duration::from_secs(49), now));
    }

    #[test]
    fn judges_locks() {
        let p = LockPolicy {
            mode: LockMode::Compliance,
            period: Duration::from_secs(100),
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let later = Some(now + Duration::from_secs(10));
        let ok = Retention {
            mode: Some(LockMode::Compliance),
            until: later,
            written: Some(now - Duration::from_secs(90)),
        };
        assert_eq!(p.judge(&ok, true, now), None);
        assert_eq!(
            p.judge(&Retention::default(), false, now),
            Some(LockProblem::Missing)
        );
        let gov = Retention {
            mode: Some(LockMode::Governance),
            ..ok
        };
        assert!(matches!(
            p.judge(&gov, true, now),
            Some(LockProblem::WrongMode(_))
        ));
        let short = Retention {
            written: Some(now + Duration::from_secs(80)),
            ..ok
        };
        assert!(matches!(
            p.judge(&short, true, now),
            Some(LockProblem::Shorter(_))
        ));
        let old = Retention {
            until: Some(now),
            written: Some(now - Duration::from_secs(100)),
            ..ok
        };
        assert!(matches!(
            p.judge(&old, true, now),
            Some(LockProblem::Expired(_))
        ));
        assert_eq!(p.judge(&old, false, now), None);
        assert!(!lock_applies("locks/shared-x"));
        assert!(lock_applies("packs/aa/b"));
        assert!(lock_applies("gitvault.json"));
    }
}
