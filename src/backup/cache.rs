//! Mirror caches (`DIR/cache/<hash>.git`): where each repository's is, rebuilding a missing
//! one from the previous snapshot so that the fetch stays incremental, listing and dropping
//! them (`gitvault cache`, `[cache] keep = false`).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::BackupError;
use crate::crypto::VaultKeys;
use crate::index::SnapshotRow;
use crate::model::RefSet;
use crate::progress::{Progress, Unit};
use crate::vault::Vault;
use crate::vault::repository::{VaultSource, walk_snapshot, write_objects};

/// The mirror cache of the repository named `name`.
pub fn cache_path(vault: &Vault, name: &str) -> PathBuf {
    let digest = blake3::hash(name.as_bytes()).to_hex();
    vault.cache_dir().join(format!("{}.git", &digest[..24]))
}

/// Puts at `cache` (missing, or just created empty) a bare repository with the snapshot
/// `row`'s objects in one pack and its refs as packed-refs: what a mirror cache would hold
/// after that snapshot's fetch. Built in a sibling directory and renamed into place, so a
/// failure leaves no half-written cache. Returns the objects written.
pub(super) fn rebuild(
    vault: &Vault,
    keys: &VaultKeys,
    row: &SnapshotRow,
    cache: &Path,
    (job, progress): (&str, &dyn Progress),
) -> Result<u32, BackupError> {
    progress.phase(job, "rebuild cache: walk", None, Unit::Objects);
    let walker = vault.reader(keys);
    // The ref set chunk is checked against its keyed id as it is read; the objects against
    // their git ids. A wrong ref set would only cost negotiation, never what is stored.
    let refs =
        RefSet::decode(&walker.get(&row.refset)?).map_err(crate::snapshot::SnapshotError::from)?;
    let walked = walk_snapshot(&mut VaultSource::new(vault.index(), &walker), &refs)?;
    drop(walker);
    let located = walked.in_pack_order();
    vault.index().shrink_memory()?;
    let store = vault.reader(keys).sequential();
    let staging = cache.with_extension(format!("rebuild-{}", std::process::id()));
    let io = |e: std::io::Error| BackupError::Cache {
        path: staging.clone(),
        source: e,
    };
    let _ = std::fs::remove_dir_all(&staging);
    let written = (|| -> Result<u32, BackupError> {
        crate::git::write_bare_repository(&staging, &refs)?;
        let source = VaultSource::new(vault.index(), &store);
        Ok(write_objects(&source, &located, &staging, (job, progress))?)
    })();
    let written = match written {
        Ok(written) => written,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    remove(cache).map_err(io)?;
    std::fs::rename(&staging, cache).map_err(io)?;
    Ok(written)
}

/// Removes a cache directory (or whatever stands at its path, without following a symlink).
fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes the mirror cache of one repository after its backup (`[cache] keep = false`).
pub(super) fn drop_after_backup(cache: &Path) {
    if let Err(e) = remove(cache) {
        tracing::warn!(cache = %cache.display(), error = %e, "could not remove the mirror cache");
    }
}

/// One mirror cache on this host.
#[derive(Debug, Clone, Serialize)]
pub struct CacheEntry {
    /// The repository it belongs to, when the index knows a repository of that hash.
    pub repo: Option<String>,
    pub path: String,
    pub bytes: u64,
}

/// Every mirror cache, with its size (symlinks are not followed; they are not ours).
pub fn list(vault: &Vault) -> Result<Vec<CacheEntry>, BackupError> {
    let dir = vault.cache_dir();
    let names: std::collections::HashMap<PathBuf, String> = vault
        .index()
        .repos()?
        .into_iter()
        .map(|r| (cache_path(vault, &r), r))
        .collect();
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => {
            return Err(BackupError::Cache {
                path: dir,
                source: e,
            });
        }
    };
    for entry in entries {
        let entry = entry.map_err(|e| BackupError::Cache {
            path: dir.clone(),
            source: e,
        })?;
        let path = entry.path();
        out.push(CacheEntry {
            repo: names.get(&path).cloned(),
            path: path.display().to_string(),
            bytes: disk_bytes(&path),
        });
    }
    out.sort_by(|a, b| (&a.repo, &a.path).cmp(&(&b.repo, &b.path)));
    Ok(out)
}

fn disk_bytes(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    std::fs::read_dir(path)
        .map(|entries| entries.flatten().map(|e| disk_bytes(&e.path())).sum())
        .unwrap_or(0)
}

/// Removes the mirror caches of `repos` (all of them when `None`; every entry of the cache
/// directory, including ones of repositories the index does not know). Returns what was
/// removed; a repository without a cache is not an error.
pub fn drop_caches(
    vault: &Vault,
    repos: Option<&[String]>,
) -> Result<Vec<CacheEntry>, BackupError> {
    let all = list(vault)?;
    let wanted: Option<Vec<PathBuf>> =
        repos.map(|rs| rs.iter().map(|r| cache_path(vault, r)).collect());
    let mut dropped = Vec::new();
    for entry in all {
        let path = PathBuf::from(&entry.path);
        if wanted.as_ref().is_some_and(|w| !w.contains(&path)) {
            continue;
        }
        remove(&path).map_err(|e| BackupError::Cache { path, source: e })?;
        dropped.push(entry);
    }
    Ok(dropped)
}
