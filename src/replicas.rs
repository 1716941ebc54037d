//! Keeping the targets level: `verify` (is every pack the index expects on every target, the
//! right size, and with `--full` the right bytes?) and `sync` (copy what a target lacks, or holds
//! damaged, from a target whose copy checks out), plus encrypted index backups.
//!
//! Checking presence costs one LIST per target, never one request per pack. A full check reads
//! every replica, verifies the pack's name (BLAKE3 of its bytes: possible without the key),
//! decrypts it and rehashes every chunk. A replica found bad is struck from the index's presence
//! records, so that reads avoid it and `sync` replaces it.

use std::collections::HashMap;

use serde::Serialize;

use crate::crypto::VaultKeys;
use crate::index::PackRow;
use crate::progress::{Progress, Silent, Unit};
use crate::store::pack::{Provenance, verify_pack};
use crate::store::{pack_key, pack_name_from_key};
use crate::target::{Body, Target};
use crate::vault::target_lock::{LockKind, LockTiming};
use crate::vault::{Vault, VaultError, WriteLock};

/// What `verify` found on one target.
#[derive(Debug, Default, Serialize)]
pub struct TargetReport {
    pub target: String,
    pub packs_expected: u64,
    pub packs_checked: u64,
    pub missing: Vec<String>,
    pub wrong_size: Vec<String>,
    /// Packs whose bytes failed the full check, with the reason.
    pub corrupt: Vec<(String, String)>,
    /// Packs on the target the index does not know: left by a backup or prune killed after
    /// uploading (or by a writer uploading right now). Garbage, not damage: `ok` ignores them.
    pub unindexed: Vec<String>,
    pub error: Option<String>,
}

impl TargetReport {
    pub fn ok(&self) -> bool {
        self.missing.is_empty()
            && self.wrong_size.is_empty()
            && self.corrupt.is_empty()
            && self.error.is_none()
    }
}

fn listing(target: &dyn Target) -> Result<HashMap<String, u64>, String> {
    let listed = target.list("packs/").map_err(|e| e.to_string())?;
    Ok(listed
        .into_iter()
        .filter_map(|l| pack_name_from_key(&l.key).map(|n| (n.to_string(), l.size)))
        .collect())
}

/// Checks every target. With `full`, also downloads and checks every replica. Bad replicas are
/// removed from the presence records (needs the write lock).
pub fn verify(
    vault: &Vault,
    keys: &VaultKeys,
    full: bool,
    lock: &WriteLock,
) -> Result<Vec<TargetReport>, VaultError> {
    verify_watched(vault, keys, full, lock, &Silent)
}

/// [`verify`], telling `progress` of each target's packs as `--full` reads them.
pub fn verify_watched(
    vault: &Vault,
    keys: &VaultKeys,
    full: bool,
    _lock: &WriteLock,
    progress: &dyn Progress,
) -> Result<Vec<TargetReport>, VaultError> {
    let packs = vault.index().packs()?;
    let mut reports = Vec::new();
    for target in vault.targets() {
        let mut report = TargetReport {
            target: target.name().to_string(),
            packs_expected: packs.len() as u64,
            ..TargetReport::default()
        };
        let listed = match listing(target.as_ref()) {
            Ok(l) => l,
            Err(e) => {
                report.error = Some(e);
                reports.push(report);
                continue;
            }
        };
        let job = format!("target {}", target.name());
        if full {
            // In bytes, since each pack is downloaded and rehashed: the line shows how fast.
            let bytes = packs.iter().map(|p| p.size).sum();
            let phase = format!("verify --full ({} packs)", packs.len());
            progress.phase(&job, &phase, Some(bytes), Unit::Bytes);
        }
        for pack in &packs {
            let present = match listed.get(&pack.name) {
                None => {
                    report.missing.push(pack.name.clone());
                    false
                }
                Some(size) if *size != pack.size => {
                    report.wrong_size.push(pack.name.clone());
                    false
                }
                Some(_) => !full || check_replica(vault, keys, target.as_ref(), pack, &mut report)?,
            };
            vault
                .index()
                .set_presence(&pack.name, target.name(), present)?;
            progress.advance(&job, pack.size);
        }
        progress.done(&job);
        let known: std::collections::HashSet<&str> =
            packs.iter().map(|p| p.name.as_str()).collect();
        report.unindexed = listed
            .keys()
            .filter(|name| !known.contains(name.as_str()))
            .cloned()
            .collect();
        report.unindexed.sort();
        reports.push(report);
    }
    Ok(reports)
}

/// Downloads one replica and checks its name hash, its footer and every chunk; whether it is
/// intact (a corrupt one goes into `report`).
fn check_replica(
    vault: &Vault,
    keys: &VaultKeys,
    target: &dyn Target,
    pack: &PackRow,
    report: &mut TargetReport,
) -> Result<bool, VaultError> {
    let checked = target
        .get(&pack_key(&pack.name))
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            verify_pack(keys.identity(), keys.id_key(), &pack.name, &bytes)
                .map_err(|e| e.to_string())
        });
    report.packs_checked += 1;
    if let Err(reason) = checked {
        report.corrupt.push((pack.name.clone(), reason));
        return Ok(false);
    }
    // Every chunk checked against its id: whoever wrote it held the vault's keys, so prune
    // may judge it (a format 1 pack's footer alone could not say so).
    vault
        .index()
        .raise_pack_provenance(&pack.name, Provenance::Verified)?;
    Ok(true)
}

/// What `sync` did on one target.
#[derive(Debug, Default, Serialize)]
pub struct SyncReport {
    pub target: String,
    pub copied: Vec<String>,
    pub bytes_copied: u64,
    /// Packs no target could provide intact.
    pub unavailable: Vec<String>,
    pub error: Option<String>,
}

/// Copies to every target the packs it lacks (not listed, wrong size, or struck by `verify`),
/// taking each from a target whose copy hashes to its name. Also copies key files and the
/// public parameters, and uploads a fresh index backup.
pub fn sync(
    vault: &Vault,
    keys: &VaultKeys,
    lock: &WriteLock,
) -> Result<Vec<SyncReport>, VaultError> {
    sync_watched(vault, keys, lock, &Silent)
}

/// [`sync`], telling `progress` of each target's packs as they are checked and copied.
pub fn sync_watched(
    vault: &Vault,
    keys: &VaultKeys,
    lock: &WriteLock,
    progress: &dyn Progress,
) -> Result<Vec<SyncReport>, VaultError> {
    // Another host's prune must not delete packs while they are being copied.
    let timing = LockTiming::from_environment();
    let _shared = vault.lock_targets(keys, LockKind::Shared, "sync", timing)?;
    let packs = vault.index().packs()?;
    let listings: Vec<Result<HashMap<String, u64>, String>> = vault
        .targets()
        .iter()
        .map(|t| listing(t.as_ref()))
        .collect();
    let mut reports = Vec::new();
    for (ti, target) in vault.targets().iter().enumerate() {
        let mut report = SyncReport {
            target: target.name().to_string(),
            ..SyncReport::default()
        };
        let listed = match &listings[ti] {
            Ok(l) => l,
            Err(e) => {
                report.error = Some(e.clone());
                reports.push(report);
                continue;
            }
        };
        let job = format!("target {}", target.name());
        // In bytes, so that the line shows how fast copies go; checked packs count at once.
        let bytes = packs.iter().map(|p| p.size).sum();
        let phase = format!("sync ({} packs)", packs.len());
        progress.phase(&job, &phase, Some(bytes), Unit::Bytes);
        for pack in &packs {
            let recorded = vault.index().pack_targets_by_name(&pack.name)?;
            let healthy_here = listed.get(&pack.name) == Some(&pack.size)
                && recorded.iter().any(|h| h == target.name());
            if !healthy_here {
                copy_pack(vault, &listings, ti, pack, &recorded, &mut report)?;
            }
            progress.advance(&job, pack.size);
        }
        progress.done(&job);
        reports.push(report);
    }
    vault.publish_public_files()?;
    upload_index_backup(vault, keys, lock)?;
    Ok(reports)
}

/// Copies `pack` to target `ti` from another target whose copy hashes to its name (recorded
/// holders first).
fn copy_pack(
    vault: &Vault,
    listings: &[Result<HashMap<String, u64>, String>],
    ti: usize,
    pack: &PackRow,
    recorded: &[String],
    report: &mut SyncReport,
) -> Result<(), VaultError> {
    let target = &vault.targets()[ti];
    let mut sources: Vec<usize> = (0..vault.targets().len())
        .filter(|&si| {
            si != ti && matches!(&listings[si], Ok(l) if l.get(&pack.name) == Some(&pack.size))
        })
        .collect();
    sources.sort_by_key(|&si| !recorded.iter().any(|h| h == vault.targets()[si].name()));
    for si in sources {
        let Ok(bytes) = vault.targets()[si].get(&pack_key(&pack.name)) else {
            continue;
        };
        if blake3::hash(&bytes).to_hex().as_str() != pack.name {
            vault
                .index()
                .set_presence(&pack.name, vault.targets()[si].name(), false)?;
            continue;
        }
        return match target.put(&pack_key(&pack.name), Body::Bytes(&bytes)) {
            Ok(()) => {
                vault
                    .index()
                    .set_presence(&pack.name, target.name(), true)?;
                report.copied.push(pack.name.clone());
                report.bytes_copied += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                report.error = Some(e.to_string());
                Ok(())
            }
        };
    }
    if report.error.is_none() {
        report.unavailable.push(pack.name.clone());
    }
    Ok(())
}

pub use crate::vault::index_backup::{index_backup_due, upload_index_backup};
