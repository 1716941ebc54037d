//! S3 Object Lock upkeep over a vault's locked targets (docs/OBJECT-LOCK.md): renewing the locks
//! of what must stay (live packs, `gitvault.json`, key files) before they run out, and
//! `verify --locks`, which reads every object's lock and names those that fall short.
//!
//! The index remembers each live pack copy's lock date, so renewal asks a target only about
//! locks within half a period of running out (and about packs it has not seen yet); condemned
//! packs are never renewed, so their locks run out and a later prune can delete them.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::target::{Target, lock_applies, rfc3339};

use super::{PUBLIC_FILE, Vault, VaultError};

/// What a renewal pass did, over every locked target.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LockUpkeep {
    /// Objects whose lock was read (and renewed where it ran out within half a period).
    pub checked: u64,
    /// Locks that could not be read or renewed; each is logged. The next run tries again.
    pub failed: u64,
    /// The earliest date a live pack's lock runs out after this pass.
    pub earliest_live_until: Option<String>,
}

/// One object whose lock falls short of its target's policy.
#[derive(Debug, Clone, Serialize)]
pub struct LockFinding {
    pub target: String,
    pub key: String,
    pub problem: String,
}

/// `verify --locks`: every object on every locked target, judged.
#[derive(Debug, Default, Clone, Serialize)]
pub struct LockCheck {
    pub objects_checked: u64,
    pub findings: Vec<LockFinding>,
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn earlier(a: Option<SystemTime>, b: SystemTime) -> Option<SystemTime> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

/// The small files every target holds besides packs, locked and kept like live packs.
fn public_files(target: &dyn Target) -> Vec<String> {
    let mut keys = vec![PUBLIC_FILE.to_string()];
    match target.list("keys/") {
        Ok(listed) => keys.extend(listed.into_iter().map(|l| l.key)),
        Err(e) => tracing::warn!(target = target.name(), error = %e, "key files not listed"),
    }
    keys
}

impl Vault {
    /// [`Vault::renew_locks`] when any target has a lock policy.
    pub fn renew_locks_if_any(&self) -> Result<Option<LockUpkeep>, VaultError> {
        if self.targets.iter().any(|t| t.lock_policy().is_some()) {
            self.renew_locks().map(Some)
        } else {
            Ok(None)
        }
    }

    /// Renews the locks of everything that must stay on each locked target.
    pub fn renew_locks(&self) -> Result<LockUpkeep, VaultError> {
        let mut upkeep = LockUpkeep::default();
        let mut earliest: Option<SystemTime> = None;
        let now = SystemTime::now();
        for target in &self.targets {
            let Some(policy) = target.lock_policy() else {
                continue;
            };
            let packs = self.index.live_pack_locks(target.name())?;
            let mut due: Vec<(Option<&str>, String)> = Vec::new();
            for (name, until) in &packs {
                match until.map(from_millis) {
                    Some(u) if !policy.needs_renewal(u, now) => {
                        earliest = earlier(earliest, u);
                    }
                    _ => due.push((Some(name), crate::store::pack_key(name))),
                }
            }
            due.extend(public_files(target.as_ref()).into_iter().map(|k| (None, k)));
            let keys: Vec<String> = due.iter().map(|(_, k)| k.clone()).collect();
            upkeep.checked += keys.len() as u64;
            for ((pack, key), answer) in due.iter().zip(target.renew_locks(&keys)) {
                match answer {
                    Ok(Some(until)) => {
                        if let Some(pack) = pack {
                            self.index
                                .set_pack_lock(pack, target.name(), millis(until))?;
                            earliest = earlier(earliest, until);
                        }
                    }
                    Ok(None) => {
                        tracing::warn!(target = target.name(), %key, "missing: its lock cannot be renewed (run `gitvault sync`)")
                    }
                    Err(e) => {
                        upkeep.failed += 1;
                        tracing::warn!(target = target.name(), %key, error = %e, "lock not renewed");
                    }
                }
            }
        }
        upkeep.earliest_live_until = earliest.map(rfc3339);
        Ok(upkeep)
    }

    /// Reads the lock of every object on every locked target and names those that are
    /// missing, in the wrong mode, shorter than the policy, or (for what must stay) expired.
    pub fn check_locks(&self) -> Result<LockCheck, VaultError> {
        let mut check = LockCheck::default();
        let now = SystemTime::now();
        for target in &self.targets {
            let Some(policy) = target.lock_policy() else {
                continue;
            };
            let live: HashSet<String> = self
                .index
                .live_pack_locks(target.name())?
                .into_iter()
                .map(|(name, _)| crate::store::pack_key(&name))
                .chain(public_files(target.as_ref()))
                .collect();
            let keys: Vec<String> = target
                .list("")?
                .into_iter()
                .map(|l| l.key)
                .filter(|k| lock_applies(k))
                .collect();
            check.objects_checked += keys.len() as u64;
            for (key, answer) in keys.iter().zip(target.retentions(&keys)) {
                let problem = match answer {
                    // Deleted since the listing: nothing to judge.
                    Ok(None) => continue,
                    Ok(Some(found)) => policy
                        .judge(&found, live.contains(key), now)
                        .map(|p| p.to_string()),
                    Err(e) => Some(format!("lock unreadable: {e}")),
                };
                if let Some(problem) = problem {
                    check.findings.push(LockFinding {
                        target: target.name().to_string(),
                        key: key.clone(),
                        problem,
                    });
                }
            }
        }
        Ok(check)
    }

    /// Whether prune may compact: not while a locked target forbids it, since the packs it
    /// replaces stay (and are paid for) until their locks run out.
    pub fn compaction_allowed(&self) -> bool {
        self.config
            .targets
            .iter()
            .all(|t| t.lock_days.is_none() || t.allow_compaction)
    }

    /// The earliest date a live pack's lock on `target` runs out, as far as the index knows,
    /// and how many live pack copies there have no known date yet.
    pub fn live_lock_on(
        &self,
        target: &str,
    ) -> Result<(Option<SystemTime>, u64), crate::index::IndexError> {
        let mut earliest = None;
        let mut unknown = 0;
        for (_, until) in self.index.live_pack_locks(target)? {
            match until {
                Some(u) => earliest = earlier(earliest, from_millis(u)),
                None => unknown += 1,
            }
        }
        Ok((earliest, unknown))
    }

    /// [`Vault::live_lock_on`] over every locked target.
    pub fn earliest_live_lock(&self) -> Result<(Option<String>, u64), VaultError> {
        let mut earliest = None;
        let mut unknown = 0;
        for target in self.targets.iter().filter(|t| t.lock_policy().is_some()) {
            let (first, none) = self.live_lock_on(target.name())?;
            if let Some(first) = first {
                earliest = earlier(earliest, first);
            }
            unknown += none;
        }
        Ok((earliest.map(rfc3339), unknown))
    }
}
