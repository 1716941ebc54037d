//! Garbage of killed runs, collected under the writer lock at the start of phase 3: temporary
//! files, partial uploads, and day-old packs the index does not know (docs/PRUNE.md, "What
//! prune may judge").

use std::collections::HashSet;
use std::time::Duration;

use crate::crypto::VaultKeys;
use crate::store::{ChunkKind, pack_key};
use crate::vault::Vault;

use super::{PruneError, PruneReport};

/// Files older than this in the vault's tmp directory or named as partial uploads on a target
/// are garbage of a killed run: younger ones may belong to a run still going (a reader's
/// staging, or a writer on another host).
const GARBAGE_AGE: Duration = Duration::from_secs(24 * 3600);

/// Removes what killed runs left behind (temporary packs, index copies, partial uploads); a
/// failure is logged, never fatal: garbage costs only space.
pub(super) fn collect_garbage(vault: &Vault) -> u64 {
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir(vault.tmp_dir()) {
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| m.modified().ok())
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > GARBAGE_AGE);
            if stale && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    for target in vault.targets() {
        match target.remove_stale_temporaries(GARBAGE_AGE) {
            Ok(n) => removed += n,
            Err(e) => {
                tracing::warn!(target = target.name(), error = %e, "partial uploads not removed")
            }
        }
    }
    removed
}

/// Day-old packs on the targets that the index does not know, sorted into those this vault
/// wrote (authenticated footers) and the rest.
#[derive(Default)]
struct Unindexed {
    /// (target index, pack name): authenticated, to be deleted unless one holds a manifest.
    doomed: Vec<(usize, String)>,
    holds_manifest: bool,
}

/// Deletes the uploads of killed runs: day-old packs on a target that the index does not know.
/// A pack is deleted only if its footer authenticates (this vault wrote it) and no such pack
/// holds a manifest: a manifest is written after every other chunk of its snapshot, so packs
/// without one belong to no snapshot, while a manifest among them is a complete snapshot this
/// host never recorded, which only `recover` should judge.
pub(super) fn collect_unindexed(
    vault: &Vault,
    keys: &VaultKeys,
    report: &mut PruneReport,
) -> Result<(), PruneError> {
    let known: HashSet<String> = vault.index().packs()?.into_iter().map(|p| p.name).collect();
    let found = find_unindexed(vault, keys, &known, report);
    if found.holds_manifest {
        tracing::warn!(
            packs = found.doomed.len(),
            "packs unknown to this index hold a snapshot; left in place (`gitvault recover` reads them)"
        );
        report
            .unindexed_kept
            .extend(found.doomed.into_iter().map(|(_, n)| n));
        return Ok(());
    }
    for (ti, name) in found.doomed {
        let target = &vault.targets()[ti];
        match target.delete(&pack_key(&name)) {
            Ok(()) | Err(crate::target::TargetError::NotFound { .. }) => {
                report.unindexed_deleted += 1
            }
            // Under Object Lock until its date: a later prune deletes it.
            Err(e @ crate::target::TargetError::Locked { .. }) => {
                tracing::debug!(target = target.name(), pack = %name, error = %e, "unindexed pack still locked")
            }
            Err(e) => {
                tracing::warn!(target = target.name(), pack = %name, error = %e, "unindexed pack not deleted")
            }
        }
    }
    Ok(())
}

/// Lists every target for day-old unknown packs and reads their footers; those that do not
/// authenticate go to `report.unindexed_kept`.
fn find_unindexed(
    vault: &Vault,
    keys: &VaultKeys,
    known: &HashSet<String>,
    report: &mut PruneReport,
) -> Unindexed {
    let auth = keys.auth_key();
    let mut found = Unindexed::default();
    for (ti, target) in vault.targets().iter().enumerate() {
        let Ok(listed) = target.list("packs/") else {
            continue;
        };
        for l in listed {
            let Some(name) = crate::store::pack_name_from_key(&l.key) else {
                continue;
            };
            if known.contains(name) {
                continue;
            }
            let old = target
                .modified(&l.key)
                .ok()
                .flatten()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > GARBAGE_AGE);
            if !old {
                continue;
            }
            let footer = target.open(&l.key).ok().and_then(|input| {
                crate::store::pack::read_footer(keys.identity(), &auth, input).ok()
            });
            match footer {
                Some((footer, seal)) if seal.is_authenticated() => {
                    found.holds_manifest |= footer
                        .entries
                        .iter()
                        .any(|e| e.kind == ChunkKind::Manifest as u8);
                    found.doomed.push((ti, name.to_string()));
                }
                _ => {
                    tracing::warn!(target = target.name(), pack = %name, "a pack this vault cannot vouch for; left in place");
                    report.unindexed_kept.push(name.to_string());
                }
            }
        }
    }
    found
}
