//! Backing up repositories into the vault.
//!
//! One repository (`repo`): one ref advertisement, a negotiated fetch into the mirror cache
//! (skipped when the ref set is the one already in the vault), a walk from the advertised tips
//! to every object the vault lacks, ingest of those objects grouped for compression, its LFS
//! objects (`lfs`) and platform metadata (`metadata`), and the snapshot: object map, ref set
//! and manifest in the packs, then one index transaction (`writer`).
//!
//! A run (`Session`) backs up URL lists and configured sources (`source`) `--jobs` at a time
//! (`schedule`) over one shared `Writer`, and `Session::finish` ends it: the last flush, the
//! index backup and the saved run report.
//!
//! Invariant kept here: an object is in the index's `git_objects` only if everything it reaches
//! is in the vault. Objects are recorded together with the snapshot row, after every pack is
//! durable, so a crash or a failure never leaves a half-ingested closure behind.

pub mod cache;
mod lfs;
mod metadata;
mod repo;
mod schedule;
mod session;
mod shard;
mod source;
mod writer;

use serde::Serialize;

use crate::git::{Credentials, GitError};
use crate::redact::RedactedUrl;

pub use session::{BackupRun, Options, RunOutcome, Session};
pub use shard::{BadShard, Shard};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    #[error(transparent)]
    Vault(#[from] crate::vault::VaultError),
    #[error("LFS: {0}")]
    Lfs(#[from] crate::lfs::LfsError),
    #[error("LFS: {path}: {source}")]
    LfsFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Repository(#[from] crate::vault::repository::RepositoryError),
    #[error("mirror cache {path}: {source}")]
    Cache {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The thread reading the mirror cache ended without an error of its own: it panicked.
    #[error("the thread reading the mirror cache stopped early")]
    ReaderStopped,
    #[error(
        "metadata: rate limited until {until}; run again after that time to resume (the git snapshot was kept)"
    )]
    RateLimited {
        until: chrono::DateTime<chrono::Utc>,
    },
}

impl From<crate::git::objects::ObjectError> for BackupError {
    fn from(e: crate::git::objects::ObjectError) -> Self {
        BackupError::Git(GitError::Object(e))
    }
}

impl BackupError {
    /// The report's reason for a repository this error stopped.
    fn reason(&self) -> Reason {
        match self {
            BackupError::Git(GitError::NotFound(_)) => Reason::NotFound,
            BackupError::Git(_) | BackupError::ReaderStopped | BackupError::Cache { .. } => {
                Reason::Git
            }
            BackupError::RateLimited { .. } => Reason::RateLimited,
            BackupError::Lfs(_) | BackupError::LfsFile { .. } => Reason::Lfs,
            BackupError::Store(_)
            | BackupError::Index(_)
            | BackupError::Snapshot(_)
            | BackupError::Vault(_)
            | BackupError::Repository(_) => Reason::Vault,
        }
    }
}

/// What the user asked for one repository.
pub struct BackupRequest {
    pub url: String,
    pub name: Option<String>,
    pub credentials: Option<Credentials>,
    /// The configured source the repository was listed by, recorded in its snapshots so
    /// that every host applies that source's retention to it.
    pub source: Option<String>,
}

/// The configured sources whose names are in `names`; every configured source when `names`
/// is `None`. The CLI and the daemon's jobs pick what to back up the same way.
pub fn sources_named(
    configured: &[crate::provider::SourceConfig],
    names: Option<&[String]>,
) -> Vec<crate::provider::SourceConfig> {
    match names {
        None => configured.to_vec(),
        Some(names) => configured
            .iter()
            .filter(|s| names.contains(&s.name))
            .cloned()
            .collect(),
    }
}

/// One request per URL, named `name`, each with the credentials the environment gives.
pub fn url_requests<'a>(
    urls: impl IntoIterator<Item = &'a String>,
    name: Option<&str>,
) -> Vec<BackupRequest> {
    let credentials = Credentials::from_environment();
    urls.into_iter()
        .map(|url| BackupRequest {
            url: url.clone(),
            name: name.map(str::to_string),
            credentials: credentials.clone(),
            source: None,
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RepoStatus {
    /// New objects were stored.
    Changed,
    /// The advertised refs equal the last snapshot's: nothing fetched.
    Unchanged,
    /// The git data was backed up but the metadata export failed (previous metadata kept).
    Partial,
    /// Not attempted (the run stopped early, e.g. rate limited), or no wiki exists.
    Skipped,
    Failed,
}

/// Why a repository's line is not a plain success: the report's `reason` beside its
/// human-readable `error`, so that callers and scripts match on a name, not on a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The run stopped (rate limited, or asked to stop) before this repository was tried;
    /// it counts as failed, since nothing of it was backed up.
    NotAttempted,
    /// The same repository was given earlier in this run.
    Repeated,
    /// The repository has no wiki (most do not, although the API says one is enabled).
    NoWiki,
    /// The server has no such repository, or hides it from these credentials.
    NotFound,
    /// The API's rate limit stopped the metadata export; the git snapshot was kept.
    RateLimited,
    /// The metadata export failed; the git snapshot was kept with the previous metadata.
    Metadata,
    /// LFS objects the server could not provide, or LFS storage failed.
    Lfs,
    /// The source's git credentials could not be obtained.
    Credentials,
    /// The listing's clone URL was refused (another origin than the source's).
    Refused,
    /// Reaching or reading the repository failed.
    Git,
    /// Storing failed, or the snapshot's packs could not be made durable.
    Vault,
}

/// One line of the run report.
#[derive(Debug, Clone, Serialize)]
pub struct RepoReport {
    /// The vault name; for a URL that could not be named, its redacted text.
    pub repo: String,
    pub url: RedactedUrl,
    pub status: RepoStatus,
    pub snapshot: Option<String>,
    pub refs: usize,
    pub objects_received: u64,
    pub objects_added: u64,
    /// Bytes uploaded to targets for this repository (all replicas).
    pub bytes_uploaded: u64,
    /// New unique bytes (before compression) this repository added to the vault.
    pub bytes_added: u64,
    pub seconds: f64,
    pub metadata_documents: Option<usize>,
    /// LFS objects downloaded and stored by this run.
    pub lfs_objects_stored: u64,
    /// LFS objects the server could not provide (or provided wrong): `oid: reason`.
    pub lfs_missing: Vec<String>,
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
}

impl RepoReport {
    /// A line for a request before (or without) parsing its URL: named by `--name`, else by
    /// the URL's redacted text, never by the raw URL (it may hold a password).
    fn for_request(request: &BackupRequest, status: RepoStatus) -> RepoReport {
        let url = RedactedUrl::new(&request.url);
        let repo = request
            .name
            .clone()
            .unwrap_or_else(|| url.as_str().to_string());
        RepoReport::new(repo, url, status)
    }

    fn new(repo: String, url: RedactedUrl, status: RepoStatus) -> RepoReport {
        RepoReport {
            repo,
            url,
            status,
            snapshot: None,
            refs: 0,
            objects_received: 0,
            objects_added: 0,
            bytes_uploaded: 0,
            bytes_added: 0,
            seconds: 0.0,
            metadata_documents: None,
            lfs_objects_stored: 0,
            lfs_missing: Vec::new(),
            error: None,
            reason: None,
        }
    }

    /// Sets the line's outcome, its message and the reason beside it.
    fn set(&mut self, status: RepoStatus, reason: Reason, error: String) {
        self.status = status;
        self.reason = Some(reason);
        self.error = Some(error);
    }

    /// The line counts against the run: nothing (or not all) of the repository was backed up.
    pub(crate) fn is_failure(&self) -> bool {
        matches!(self.status, RepoStatus::Failed | RepoStatus::Partial)
            || self.reason == Some(Reason::NotAttempted)
    }

    /// The repository has a snapshot from this run (possibly without all its metadata or LFS
    /// objects).
    pub(crate) fn is_success(&self) -> bool {
        matches!(
            self.status,
            RepoStatus::Changed | RepoStatus::Unchanged | RepoStatus::Partial
        )
    }
}

/// What a run over one configured source did.
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    pub source: String,
    pub listed: usize,
    pub selected: usize,
    pub repositories: Vec<RepoReport>,
    pub api: crate::provider::http::RequestStats,
    /// Items of the listing that were not readable as repositories.
    pub dropped: Vec<String>,
    pub error: Option<String>,
}

/// What a source run tells its caller as it goes (progress display, live report lines).
/// Called from worker threads, one call at a time.
pub enum SourceEvent<'a> {
    /// The repositories the filters kept, before any is backed up.
    Selected(usize),
    /// One repository (or wiki) is done.
    Done(&'a RepoReport),
}

/// The default number of repositories backed up at once: the work is mostly waiting on the
/// network, and storing is serialised anyway.
pub const DEFAULT_JOBS: usize = 4;
