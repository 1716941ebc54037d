//! Restoring one repository as of a snapshot: the snapshot's ref set, a walk through the vault
//! from its refs to every object they reach, and a bare repository written with exactly those
//! refs and objects. The repository is built in a temporary sibling directory and renamed into
//! place only when complete, so a failure leaves nothing half-written at the destination.

//!
//! The steps live beside this file: `repository` walks the snapshot and writes the bare
//! repository with its LFS objects, `metadata` writes the platform documents, `push` mirrors a
//! restored repository to a remote, `check` proves a restore right (`verify --restore-sample`).

mod check;
pub mod into;
mod metadata;
mod push;
mod repository;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::crypto::VaultKeys;
use crate::git::{self, GitError};
use crate::index::{IndexError, SnapshotRow};
use crate::progress::{self, Progress, Silent, Unit};
use crate::snapshot::{self, Manifest, RefSet};
use crate::store::{ChunkReader, StoreError};
use crate::vault::Vault;

pub use check::check_restored;
pub use metadata::write_metadata;
pub use push::{push_lfs, push_mirror};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("LFS: {0}")]
    Lfs(String),
    #[error("LFS: {0}")]
    LfsFailed(#[source] crate::lfs::LfsError),
    #[error("no snapshot of `{repo}`{when}; `gitvault snapshots` lists what the vault has")]
    NoSnapshot { repo: String, when: String },
    #[error("snapshot id `{prefix}` matches {count} snapshots of `{repo}`; give more digits")]
    Ambiguous {
        repo: String,
        prefix: String,
        count: usize,
    },
    #[error(
        "the snapshot of `{0}` holds no platform metadata (it was not backed up through a provider source)"
    )]
    NoMetadata(String),
    #[error("{0} exists and is not empty; restore into a new or empty directory")]
    NotEmpty(String),
    #[error(transparent)]
    Repository(#[from] crate::vault::repository::RepositoryError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("pushing to the remote failed: {0}")]
    Push(String),
    #[error(
        "the index says snapshot {snapshot} is of `{repo}`, but its manifest disagrees ({reason}); nothing was written. The index is not to be trusted: rebuild it with `gitvault recover`"
    )]
    WrongManifest {
        repo: String,
        snapshot: String,
        reason: String,
    },
    #[error(
        "`{0}` is not a repository name a restore creates (letters, digits, `-`, `_` and `.`, at most 100, not starting with `.` or ending in `.git`)"
    )]
    BadName(String),
    #[error(
        "{0} exists already; restore under another --name, or add --into-existing to push into it"
    )]
    Exists(String),
    #[error(
        "restoring into {target}: {error}. What was created is recorded under the vault: the same command continues where this one stopped"
    )]
    Into {
        target: String,
        error: crate::provider::ProviderError,
    },
    #[error("another restore into {0} is running; wait for it to end")]
    Busy(String),
    #[error(transparent)]
    Provider(#[from] crate::provider::ProviderError),
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
}

impl From<git::objects::ObjectError> for RestoreError {
    fn from(e: git::objects::ObjectError) -> Self {
        RestoreError::Git(GitError::Object(e))
    }
}

/// Which snapshot: by id prefix, as of a date, or the newest.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub snapshot: Option<String>,
    pub at: Option<DateTime<Utc>>,
}

pub fn select_snapshot(
    vault: &Vault,
    repo: &str,
    sel: &Selector,
) -> Result<SnapshotRow, RestoreError> {
    if let Some(prefix) = &sel.snapshot {
        let mut found = vault.index().snapshots_by_prefix(repo, prefix)?;
        return match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(RestoreError::NoSnapshot {
                repo: repo.to_string(),
                when: format!(" with id {prefix}"),
            }),
            count => Err(RestoreError::Ambiguous {
                repo: repo.to_string(),
                prefix: prefix.clone(),
                count,
            }),
        };
    }
    vault
        .index()
        .snapshot_as_of(repo, sel.at)?
        .ok_or_else(|| RestoreError::NoSnapshot {
            repo: repo.to_string(),
            when: sel
                .at
                .map(|t| format!(" at or before {}", t.to_rfc3339()))
                .unwrap_or_default(),
        })
}

/// The manifest and ref set of a snapshot, read from the packs.
pub fn load_snapshot(
    store: &ChunkReader<'_>,
    row: &SnapshotRow,
) -> Result<(Manifest, RefSet), RestoreError> {
    let manifest = Manifest::decode(&store.get(&row.manifest)?)?;
    // The manifest's bytes are checked against its keyed id, but the index row that led here
    // may not be what it was (an index rebuilt from a forged backup, a damaged cache): the
    // manifest must say it is the snapshot that was asked for, before anything is written.
    let mismatch = if manifest.repo != row.repo {
        Some(format!("it belongs to `{}`", manifest.repo))
    } else if manifest.time.timestamp_millis() != row.time.timestamp_millis() {
        Some(format!("it was taken at {}", manifest.time.to_rfc3339()))
    } else if manifest.refset_id()? != row.refset {
        Some("its ref set differs".to_string())
    } else {
        None
    };
    if let Some(reason) = mismatch {
        return Err(RestoreError::WrongManifest {
            repo: row.repo.clone(),
            snapshot: row.id.clone(),
            reason,
        });
    }
    let refs = RefSet::decode(&store.get(&manifest.refset_id()?)?)
        .map_err(snapshot::SnapshotError::from)?;
    Ok((manifest, refs))
}

#[derive(Debug, Clone, Serialize)]
pub struct RestoreReport {
    pub repo: String,
    pub snapshot: String,
    pub time: DateTime<Utc>,
    pub path: String,
    pub refs: usize,
    pub objects: u64,
    /// LFS objects written into `lfs/objects`.
    pub lfs_objects: u64,
    pub pushed_to: Option<String>,
    /// LFS objects uploaded to the push URL's LFS server.
    pub lfs_uploaded: Option<u64>,
    pub metadata_files: Option<usize>,
}

pub(crate) fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RestoreError {
    let context = context.into();
    move |source| RestoreError::Io { context, source }
}

fn check_destination(to: &Path) -> Result<(), RestoreError> {
    match std::fs::read_dir(to) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(RestoreError::NotEmpty(to.display().to_string()));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(_) => Err(RestoreError::NotEmpty(to.display().to_string())),
    }
}

/// Writes the snapshot `row` as a bare repository at `to`.
pub fn restore_snapshot(
    vault: &Vault,
    keys: &VaultKeys,
    row: &SnapshotRow,
    to: &Path,
) -> Result<RestoreReport, RestoreError> {
    restore_snapshot_watched(vault, keys, row, to, &Silent)
}

/// [`restore_snapshot`], telling `progress` of the walk and of the objects written.
pub fn restore_snapshot_watched(
    vault: &Vault,
    keys: &VaultKeys,
    row: &SnapshotRow,
    to: &Path,
    progress: &dyn Progress,
) -> Result<RestoreReport, RestoreError> {
    let _job = progress::Job::new(progress, &row.repo);
    check_destination(to)?;
    let _read = vault.index().read_snapshot()?;
    // The walk goes back and forth between the frames of commits and of trees (cargo: every
    // commit's trees lie in other frames than the commit), so it reads through the default
    // frame cache; the pack is then written in frame order through a reader that keeps one.
    let walker = vault.reader(keys);
    let (manifest, refs) = load_snapshot(&walker, row)?;
    progress.phase(&row.repo, "walk", None, Unit::Objects);
    let walked = repository::walk_snapshot(
        &mut repository::VaultSource::new(vault.index(), &walker),
        &refs,
    )?;
    drop(walker);
    let located = walked.in_pack_order();
    // The walk's lookups filled SQLite's page cache; the writing pass asks for a frame now
    // and then only.
    vault.index().shrink_memory()?;
    let store = vault.reader(keys).sequential();
    let source = repository::VaultSource::new(vault.index(), &store);
    let phase = std::time::Instant::now();
    let staging = staging_dir(to)?;
    let watch = (row.repo.as_str(), progress);
    let result = repository::write(&source, (&refs, &manifest), &located, &staging, watch);
    tracing::info!(seconds = phase.elapsed().as_secs_f64(), "wrote the pack");
    let (objects, lfs_objects) = match result {
        Ok(counts) => counts,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e);
        }
    };
    move_into_place(&staging, to)?;
    Ok(RestoreReport {
        repo: row.repo.clone(),
        snapshot: row.id.clone(),
        time: row.time,
        path: to.display().to_string(),
        refs: refs.refs.len(),
        objects,
        lfs_objects,
        pushed_to: None,
        lfs_uploaded: None,
        metadata_files: None,
    })
}

/// A hidden sibling of `to`, empty, where the repository is built: renamed into place only
/// when complete, so a failure leaves nothing half-written at the destination.
fn staging_dir(to: &Path) -> Result<PathBuf, RestoreError> {
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io_err(format!("creating {}", parent.display())))?;
    let staging: PathBuf = parent.join(format!(
        ".{}.gitvault-restore-{}",
        to.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&staging);
    Ok(staging)
}

/// Renames the finished repository over the (empty or missing) destination.
fn move_into_place(staging: &Path, to: &Path) -> Result<(), RestoreError> {
    if to.exists() {
        std::fs::remove_dir(to).map_err(io_err(format!("replacing the empty {}", to.display())))?;
    }
    std::fs::rename(staging, to).map_err(io_err(format!(
        "moving the restored repository to {}",
        to.display()
    )))
}
