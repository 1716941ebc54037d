//! Phase 4, **delete** (under the writer lock and the readers' lock): condemned packs older
//! than the grace period are checked once more, deleted from every target, then forgotten by
//! the index. A pack already gone counts as deleted.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use crate::store::pack_key;
use crate::target::{TargetError, rfc3339};
use crate::vault::Vault;

use super::regroup::Compacted;
use super::{PruneError, PruneReport, Start};

/// Deletes what was condemned long enough ago (this run's too when the grace is zero), and
/// counts the bytes the run freed: deleted packs minus the copies written.
pub(super) fn delete_condemned(
    vault: &Vault,
    start: &Start,
    copies: &[Compacted],
    grace: Duration,
    report: &mut PruneReport,
) -> Result<(), PruneError> {
    let index = vault.index();
    let now = chrono::Utc::now().timestamp_millis();
    let grace = grace.as_millis() as i64;
    let sizes: HashMap<String, u64> = index
        .packs()?
        .into_iter()
        .map(|p| (p.name, p.size))
        .collect();
    let mut freed: i64 = -(copies.iter().map(|(p, _)| p.size as i64).sum::<i64>());
    let readers = vault.readers_exclusive()?;
    // Packs written since the start (compaction copies) are this host's: vouched.
    let unvouched: HashSet<&String> = start
        .unvouched
        .iter()
        .filter_map(|id| start.names.get(id))
        .collect();
    for (name, since) in index.condemned_packs()? {
        if unvouched.contains(&name) {
            report.packs_spared += 1;
            continue;
        }
        if now - since < grace {
            report.packs_waiting += 1;
            continue;
        }
        // The second check: nothing may point into a pack that is deleted.
        if index.chunks_in_pack(&name)? > 0 {
            tracing::warn!(pack = %name, "a condemned pack is referenced again; kept");
            report.packs_spared += 1;
            continue;
        }
        // Checked on every target before deleting anywhere, so that a pending pack stays
        // whole on all of them.
        if let Some(until) = locked_until(vault, &name)? {
            note_locked(report, &until, sizes.get(&name).copied().unwrap_or(0));
            continue;
        }
        match delete_everywhere(vault, &name) {
            Err(PruneError::Delete {
                source: TargetError::Locked { until, .. },
                ..
            }) => {
                let until = until.map_or_else(|| "an unknown date".into(), rfc3339);
                note_locked(report, &until, sizes.get(&name).copied().unwrap_or(0));
                continue;
            }
            other => other?,
        }
        index.drop_pack(&name)?;
        report.packs_deleted += 1;
        freed += sizes.get(&name).copied().unwrap_or(0) as i64;
    }
    drop(readers);
    report.bytes_freed = freed;
    Ok(())
}

/// A condemned pack S3 Object Lock keeps: pending until a later prune.
fn note_locked(report: &mut PruneReport, until: &str, size: u64) {
    report.packs_locked += 1;
    report.bytes_locked += size;
    if report.locked_until.as_deref().is_none_or(|u| until < u) {
        report.locked_until = Some(until.to_string());
    }
}

/// Counts the packs (name, size) Object Lock still keeps as pending; their bytes.
pub(super) fn count_locked<'a>(
    vault: &Vault,
    packs: impl Iterator<Item = (&'a str, u64)>,
    report: &mut PruneReport,
) -> Result<u64, PruneError> {
    if vault.targets().iter().all(|t| t.lock_policy().is_none()) {
        return Ok(0);
    }
    let mut bytes = 0;
    for (name, size) in packs {
        if let Some(until) = locked_until(vault, name)? {
            note_locked(report, &until, size);
            bytes += size;
        }
    }
    Ok(bytes)
}

/// The date Object Lock keeps a pack until on some locked target, if it still does.
fn locked_until(vault: &Vault, name: &str) -> Result<Option<String>, PruneError> {
    let key = [pack_key(name)];
    let now = SystemTime::now();
    let mut latest: Option<SystemTime> = None;
    for target in vault.targets().iter().filter(|t| t.lock_policy().is_some()) {
        let found = target
            .retentions(&key)
            .pop()
            .unwrap_or(Ok(None))
            .map_err(|source| PruneError::Delete {
                pack: name.to_string(),
                target: target.name().to_string(),
                source,
            })?;
        if let Some(until) = found.and_then(|r| r.until).filter(|u| *u > now) {
            latest = Some(latest.map_or(until, |l| l.max(until)));
        }
    }
    Ok(latest.map(rfc3339))
}

/// Deletes one pack from every target; one already gone is fine.
fn delete_everywhere(vault: &Vault, name: &str) -> Result<(), PruneError> {
    for target in vault.targets() {
        match target.delete(&pack_key(name)) {
            Ok(()) => {}
            Err(crate::target::TargetError::NotFound { .. }) => {}
            Err(source) => {
                return Err(PruneError::Delete {
                    pack: name.to_string(),
                    target: target.name().to_string(),
                    source,
                });
            }
        }
        crate::hooks::point("prune-deleting");
    }
    Ok(())
}
