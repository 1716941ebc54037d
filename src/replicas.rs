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
    _lock: &WriteLock,
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
        for pack in &packs {
            match listed.get(&pack.name) {
                None => {
                    report.missing.push(pack.name.clone());
                    vault
                        .index()
                        .set_presence(&pack.name, target.name(), false)?;
                    continue;
                }
                Some(size) if *size != pack.size => {
                    report.wrong_size.push(pack.name.clone());
                    vault
                        .index()
                        .set_presence(&pack.name, target.name(), false)?;
                    continue;
                }
                Some(_) => {}
            }
            if full {
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
                    vault
                        .index()
                        .set_presence(&pack.name, target.name(), false)?;
                    continue;
                }
                // Every chunk checked against its id: whoever wrote it held the vault's keys,
                // so prune may judge it (a format 1 pack's footer alone could not say so).
                vault
                    .index()
                    .raise_pack_provenance(&pack.name, Provenance::Verified)?;
            }
            vault
                .index()
                .set_presence(&pack.name, target.name(), true)?;
        }
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
    // Another host's prune must not delete packs while they are being copied.
    let _shared = vault.lock_targets(
        keys,
        LockKind::Shared,
        "sync",
        LockTiming::from_environment(),
    )?;
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
        let holders = |name: &str| vault.index().pack_targets_by_name(name);
        for pack in &packs {
            let recorded = holders(&pack.name)?;
            let healthy_here = listed.get(&pack.name) == Some(&pack.size)
                && recorded.iter().any(|h| h == target.name());
            if healthy_here {
                continue;
            }
            // Sources: other targets that list the pack; recorded holders first.
            let mut sources: Vec<usize> = (0..vault.targets().len())
                .filter(|&si| {
                    si != ti
                        && matches!(&listings[si], Ok(l) if l.get(&pack.name) == Some(&pack.size))
                })
                .collect();
            sources.sort_by_key(|&si| !recorded.iter().any(|h| h == vault.targets()[si].name()));
            let mut copied = false;
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
                match target.put(&pack_key(&pack.name), Body::Bytes(&bytes)) {
                    Ok(()) => {
                        vault
                            .index()
                            .set_presence(&pack.name, target.name(), true)?;
                        report.copied.push(pack.name.clone());
                        report.bytes_copied += bytes.len() as u64;
                        copied = true;
                        break;
                    }
                    Err(e) => {
                        report.error = Some(e.to_string());
                        break;
                    }
                }
            }
            if !copied && report.error.is_none() {
                report.unavailable.push(pack.name.clone());
            }
        }
        reports.push(report);
    }
    vault.publish_public_files()?;
    upload_index_backup(vault, keys, lock)?;
    Ok(reports)
}

pub use crate::vault::index_backup::{index_backup_due, upload_index_backup};
