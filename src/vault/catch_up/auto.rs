//! The catch-up read commands do by themselves (`snapshots`, `ls`, `restore`, `verify`,
//! `stats`, `forget`): first one LIST of `packs/` per target, compared with the index, which
//! needs no key; only when it differs does the command take the locks and read footers. A
//! command that cannot catch up (a local backup holds the writer lock, a prune the targets, a
//! target is down) goes on with the local picture: it never fails for that.

use std::collections::HashSet;
use std::time::Duration;

use crate::crypto::VaultKeys;
use crate::progress::Silent;
use crate::vault::target_lock::{LockKind, LockTiming, TargetLockError};
use crate::vault::{Vault, VaultError, WriteLock};

use super::CatchUpReport;

/// How a read command's catch-up went.
#[derive(Debug)]
pub enum AutoCatchUp {
    /// Done, with what changed (packs missing without a prune record among it).
    Done(CatchUpReport),
    /// Another process holds what catch-up needs: this host's writer lock (a local backup) or
    /// the targets' exclusive lock (a prune): the local picture stands.
    Busy(String),
    Failed(VaultError),
}

impl Vault {
    /// Whether the targets' listings of `packs/` differ from the index (a pack it does not
    /// know, or one it knows that no target lists): one LIST per target, no key needed. A
    /// target whose listing fails is passed over (offline use keeps the local picture).
    pub fn targets_changed(&self) -> bool {
        let mut unlisted = Vec::new();
        let listed = self.list_packs(&mut unlisted);
        let known = match self.index().packs() {
            Ok(known) => known,
            // The catch-up itself will say what is wrong with the index.
            Err(_) => return true,
        };
        let names: HashSet<&str> = known.iter().map(|p| p.name.as_str()).collect();
        let new = listed.keys().any(|n| !names.contains(n.as_str()));
        // With a listing missing, absence proves nothing; catch-up would not judge it either.
        let gone = unlisted.is_empty() && known.iter().any(|p| !listed.contains_key(&p.name));
        new || gone
    }

    /// Catches up without waiting: under `lock` when the command holds the writer lock
    /// already, else only if no other process of this host holds it; and under a shared lock
    /// on the targets taken in one attempt.
    pub fn catch_up_now(&self, keys: &VaultKeys, lock: Option<&WriteLock>) -> AutoCatchUp {
        // Held to the end of the catch-up when the command had none.
        let _own = match lock {
            Some(_) => None,
            None => match self.try_writer_lock() {
                Ok(Some(l)) => Some(l),
                Ok(None) => {
                    return AutoCatchUp::Busy(
                        "another gitvault process of this host is writing to the vault".into(),
                    );
                }
                Err(e) => return AutoCatchUp::Failed(e),
            },
        };
        let timing = LockTiming {
            wait: Duration::ZERO,
            ..LockTiming::from_environment()
        };
        let _shared = match self.lock_targets(keys, LockKind::Shared, "catch-up", timing) {
            Ok(l) => l,
            Err(VaultError::TargetLock(e @ TargetLockError::Held { .. })) => {
                return AutoCatchUp::Busy(e.to_string());
            }
            Err(e) => return AutoCatchUp::Failed(e),
        };
        match self.catch_up(keys, &Silent) {
            Ok(report) => AutoCatchUp::Done(report),
            Err(e) => AutoCatchUp::Failed(e),
        }
    }
}
