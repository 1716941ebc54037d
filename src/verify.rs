//! `gitvault verify`: proof that the vault can be restored. Three checks, from cheap to dear:
//!
//! 1. every pack the index expects is on every target, at the right size, and with `full`
//!    decrypts and rehashes (`replicas::verify`, under the writer lock, since it corrects the
//!    presence records that reads and `sync` rely on);
//! 2. every LFS object each snapshot names is in the vault;
//! 3. `restore_sample` snapshots picked at random are restored into the vault's tmp directory
//!    and checked with `git fsck --full` and against their ref sets.
//!
//! This module composes restore and the replica check, so it sits one layer above them
//! (tests/layers.rs). The target check stays in `replicas` beside `sync`: both speak the same
//! presence records and share the target listing, while this module only reads its report.

use std::path::PathBuf;

use serde::Serialize;

use crate::crypto::VaultKeys;
use crate::index::{IndexError, SnapshotRow};
use crate::progress::{Progress, Silent, Unit};
use crate::replicas::{self, TargetReport};
use crate::restore;
use crate::vault::{Vault, VaultError, WriteLock};

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("creating verify's scratch directory {path}: {source}")]
    Scratch {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the caller asks to be checked.
#[derive(Debug, Clone, Copy, Default)]
pub struct VerifyOptions {
    /// Download every replica, check its name, decrypt it and rehash every chunk.
    pub full: bool,
    /// How many snapshots, picked at random, to restore and check.
    pub restore_sample: usize,
    /// Read the Object Lock of every object on locked targets (`--locks`).
    pub locks: bool,
}

/// The answer, as `gitvault verify --json` prints it.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub targets: Vec<TargetReport>,
    pub restored: Vec<SampleResult>,
    /// `"<repo> <snapshot id>: LFS object <oid>"`, one line per object missing from the vault.
    pub lfs_missing: Vec<String>,
    /// Lock renewal on locked targets (every verify does it: docs/OBJECT-LOCK.md).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_renewal: Option<crate::vault::LockUpkeep>,
    /// `--locks`: objects whose lock is missing, in the wrong mode, shorter than the policy or
    /// expired while still needed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locks: Option<crate::vault::LockCheck>,
}

/// One restored sample.
#[derive(Debug, Serialize)]
pub struct SampleResult {
    pub repo: String,
    pub snapshot: String,
    pub ok: bool,
    /// Why the restore or its checks failed; empty when `ok`.
    pub problems: Vec<String>,
}

/// Runs the checks. The writer lock is given up once the targets are checked: the LFS check
/// and the sample restores only read, and backups should not wait for them.
pub fn run(
    vault: &Vault,
    keys: &VaultKeys,
    lock: WriteLock,
    options: &VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    run_watched(vault, keys, lock, options, &Silent)
}

/// [`run`], telling `progress` of the packs `--full` reads and of the sample restores.
pub fn run_watched(
    vault: &Vault,
    keys: &VaultKeys,
    lock: WriteLock,
    options: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport, VerifyError> {
    let targets = replicas::verify_watched(vault, keys, options.full, &lock, progress)?;
    // Under the writer lock, so that a prune cannot condemn what is being renewed meanwhile.
    let lock_renewal = vault.renew_locks_if_any()?;
    drop(lock);
    let locks = if options.locks {
        Some(vault.check_locks()?)
    } else {
        None
    };
    let all = vault.index().snapshots(None, None, None)?;
    let lfs_missing = lfs_missing(vault, keys, &all);
    let restored = restore_samples(vault, keys, &all, options.restore_sample, progress)?;
    let ok = restored.iter().all(|r| r.ok)
        && targets.iter().all(|t| t.ok())
        && lfs_missing.is_empty()
        && lock_renewal.as_ref().is_none_or(|r| r.failed == 0)
        && locks.as_ref().is_none_or(|l| l.findings.is_empty());
    let report = VerifyReport {
        ok,
        targets,
        restored,
        lfs_missing,
        lock_renewal,
        locks,
    };
    // `gitvault status` shows the last verify's result.
    if let Err(e) = vault.save_report("verify", &report) {
        tracing::warn!(error = %e, "the verify report could not be stored");
    }
    Ok(report)
}

/// Every LFS object each snapshot names must be in the vault. A snapshot whose manifest
/// cannot be read is left to the sample restores and the target check to report.
fn lfs_missing(vault: &Vault, keys: &VaultKeys, all: &[SnapshotRow]) -> Vec<String> {
    let store = vault.reader(keys);
    let mut missing = Vec::new();
    for row in all {
        if let Ok((manifest, _)) = restore::load_snapshot(&store, row) {
            for m in crate::lfs::missing_objects(vault.index(), &store, manifest.lfs.as_deref()) {
                missing.push(format!("{} {}: LFS object {m}", row.repo, row.id));
            }
        }
    }
    missing
}

/// Restores `count` snapshots picked at random (each at most once) into a scratch directory
/// and checks them.
fn restore_samples(
    vault: &Vault,
    keys: &VaultKeys,
    all: &[SnapshotRow],
    count: usize,
    progress: &dyn Progress,
) -> Result<Vec<SampleResult>, VerifyError> {
    let picks = pick(all.len(), count);
    let scratch = scratch_dir(vault)?;
    let mut results = Vec::new();
    let total = picks.len() as u64;
    for (n, i) in picks.into_iter().enumerate() {
        let row = &all[i];
        let path = scratch.join(format!("sample-{n}"));
        let job = format!("sample {}/{total}", n + 1);
        progress.phase(
            &job,
            &format!("restore {} and fsck", row.repo),
            None,
            Unit::Objects,
        );
        let problems = restore_and_check(vault, keys, row, &path);
        progress.done(&job);
        // The sample was only a check: the vault's tmp directory must not fill up with them.
        let _ = std::fs::remove_dir_all(&path);
        results.push(SampleResult {
            repo: row.repo.clone(),
            snapshot: row.id.clone(),
            ok: problems.is_empty(),
            problems,
        });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(results)
}

/// The problems found restoring `row` to `path` and checking the result.
fn restore_and_check(
    vault: &Vault,
    keys: &VaultKeys,
    row: &SnapshotRow,
    path: &std::path::Path,
) -> Vec<String> {
    if let Err(e) = restore::restore_snapshot(vault, keys, row, path) {
        return vec![e.to_string()];
    }
    let store = vault.reader(keys);
    match restore::load_snapshot(&store, row) {
        Ok((_, refs)) => restore::check_restored(path, &refs),
        Err(e) => vec![e.to_string()],
    }
}

/// `count` distinct indices below `len`, at random.
fn pick(len: usize, count: usize) -> Vec<usize> {
    let mut picks = Vec::new();
    let mut pool: Vec<usize> = (0..len).collect();
    while picks.len() < count && !pool.is_empty() {
        let mut r = [0u8; 8];
        // Without randomness the sample is the same every time: a predictable sample still
        // proves those snapshots restore, which is better than no check.
        let _ = getrandom::fill(&mut r);
        let i = (u64::from_le_bytes(r) % pool.len() as u64) as usize;
        picks.push(pool.swap_remove(i));
    }
    picks
}

fn scratch_dir(vault: &Vault) -> Result<PathBuf, VerifyError> {
    let dir = vault
        .tmp_dir()
        .join(format!("verify-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|source| VerifyError::Scratch {
        path: dir.display().to_string(),
        source,
    })?;
    Ok(dir)
}
