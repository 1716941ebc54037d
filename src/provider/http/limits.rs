//! What keeps an overloaded or hostile server from holding us up: rate-limit pauses and stall
//! counts shared by every client of an origin in the process, `Retry-After`, a body reader
//! with a ceiling and a deadline, and jittered backoff between tries.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

/// Rate-limit pauses shared by every client of one origin in this process: a limit hit by
/// one worker holds back the others too (the limit is the account's, not the worker's).
pub(super) static PAUSES: Mutex<BTreeMap<String, Instant>> = Mutex::new(BTreeMap::new());

/// Requests to one origin that failed for good on a timeout, in a row: an API that stopped
/// answering costs `STALLED_AFTER` full rounds of retries, not one per repository.
pub(super) static STALLS: Mutex<BTreeMap<String, u32>> = Mutex::new(BTreeMap::new());

pub(super) const STALLED_AFTER: u32 = 3;

pub(super) fn stalls(origin: &str, update: impl FnOnce(&mut u32)) -> u32 {
    let mut stalls = STALLS.lock().unwrap_or_else(|e| e.into_inner());
    let count = stalls.entry(origin.to_string()).or_insert(0);
    update(count);
    *count
}

pub(super) fn pause_origin(origin: &str, until: Instant) {
    let mut pauses = PAUSES.lock().unwrap_or_else(|e| e.into_inner());
    let entry = pauses.entry(origin.to_string()).or_insert(until);
    *entry = (*entry).max(until);
}

pub(super) fn paused_until(origin: &str) -> Option<Instant> {
    let pauses = PAUSES.lock().unwrap_or_else(|e| e.into_inner());
    pauses.get(origin).copied().filter(|t| *t > Instant::now())
}

/// `Retry-After` as delay-seconds or as an HTTP date.
pub(super) fn retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - Utc::now())
            .to_std()
            .unwrap_or_default(),
    )
}

/// Why a read of a body stopped early (kept apart from I/O errors to name it in the error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cut {
    TooLarge(u64),
    Deadline(u64),
}

/// A body reader with a ceiling and a deadline; every single read is bounded by the client's
/// read timeout already.
pub(super) struct Bounded<R> {
    inner: R,
    read: u64,
    limit: u64,
    deadline: Instant,
    deadline_secs: u64,
    pub(super) cut: Option<Cut>,
}

impl<R> Bounded<R> {
    /// `inner`, cut after `limit` bytes or `deadline_secs` after `started`.
    pub(super) fn new(inner: R, limit: u64, started: Instant, deadline_secs: u64) -> Bounded<R> {
        Bounded {
            inner,
            read: 0,
            limit,
            deadline: started + Duration::from_secs(deadline_secs),
            deadline_secs,
            cut: None,
        }
    }
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if Instant::now() > self.deadline {
            self.cut = Some(Cut::Deadline(self.deadline_secs));
        } else if self.read > self.limit {
            self.cut = Some(Cut::TooLarge(self.limit));
        }
        if let Some(cut) = self.cut {
            return Err(std::io::Error::other(format!("{cut:?}")));
        }
        // One byte past the limit tells "too large" from "exactly at the limit".
        let room = (self.limit + 1 - self.read).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..room])?;
        self.read += n as u64;
        if self.read > self.limit {
            self.cut = Some(Cut::TooLarge(self.limit));
            return Err(std::io::Error::other("too large"));
        }
        Ok(n)
    }
}

/// Exponential backoff with jitter (half to full of 250 ms × 2^attempt, at most 16 s), so
/// that workers retrying together do not come back together.
pub(super) fn backoff(attempt: u32) -> Duration {
    let full = 250u64 * 2u64.pow(attempt.min(6));
    let jitter = getrandom::u64().unwrap_or(0) % (full / 2 + 1);
    Duration::from_millis(full / 2 + jitter)
}
