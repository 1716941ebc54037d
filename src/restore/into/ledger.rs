//! What a restore into an account has created so far, kept under the vault directory
//! (`DIR/restore-into/<hash>.json`, one file per source, destination and snapshot) and
//! replaced atomically after every creation. A write that was sent but whose answer never
//! came is recorded as `pending` before it is sent: the next run asks the destination what
//! became of it instead of sending it again.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::provider::create::{CreatedRelease, CreatedRepo};

use super::super::{RestoreError, io_err};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Ledger {
    pub source: String,
    pub target: String,
    pub snapshot: String,
    pub repo: Option<CreatedRepo>,
    /// The repository was made by this restore (not found there already).
    #[serde(default)]
    pub created_repo: bool,
    #[serde(default)]
    pub git_pushed: bool,
    #[serde(default)]
    pub lfs_uploaded: Option<u64>,
    #[serde(default)]
    pub wiki_pushed: bool,
    #[serde(default)]
    pub topics_set: bool,
    /// Label name → the destination's id.
    #[serde(default)]
    pub labels: BTreeMap<String, u64>,
    /// Original milestone number → what the destination names it by.
    #[serde(default)]
    pub milestones: BTreeMap<u64, u64>,
    /// Original issue number → what became of it.
    #[serde(default)]
    pub issues: BTreeMap<u64, IssueDone>,
    /// Original merge request number → what became of it: GitLab numbers merge requests
    /// apart from issues (a GitLab backup, or pull requests opened again on GitLab).
    #[serde(default)]
    pub merge_requests: BTreeMap<u64, IssueDone>,
    /// Tag → the release made for it (with the assets uploaded so far), or `None` when the
    /// destination refused it.
    #[serde(default)]
    pub releases: BTreeMap<String, Option<CreatedRelease>>,
    #[serde(default)]
    pub pending: Option<Pending>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssueDone {
    pub number: u64,
    pub comments: usize,
    pub closed: bool,
    /// Made as a pull request (closed through the pull request endpoint).
    #[serde(default)]
    pub pull: bool,
    /// Its labels and milestone are set (GitHub opens pull requests without them).
    #[serde(default = "yes")]
    pub labelled: bool,
}

fn yes() -> bool {
    true
}

/// A write sent whose outcome is not known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pending {
    Repo,
    Label(String),
    Milestone(u64),
    Issue(u64),
    Comment(u64),
    Close(u64),
    /// The same three for an original merge request number.
    MergeRequest(u64),
    MergeRequestComment(u64),
    MergeRequestClose(u64),
    /// A release, by tag.
    Release(String),
    /// An asset of the release of a tag, by name.
    Asset(String, String),
}

/// Where the ledger of one restore lives: its name is a hash of what identifies the restore,
/// so running the same command again finds it.
pub fn ledger_path(vault_dir: &Path, source: &str, target: &str, snapshot: &str) -> PathBuf {
    let key = format!("{source}\n{target}\n{snapshot}");
    let hash = blake3::hash(key.as_bytes()).to_hex();
    vault_dir
        .join("restore-into")
        .join(format!("{}.json", &hash[..24]))
}

impl Ledger {
    pub fn load(path: &Path) -> Result<Option<Ledger>, RestoreError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| RestoreError::Io {
                    context: format!(
                        "{} is damaged; remove it to start the restore over",
                        path.display()
                    ),
                    source: std::io::Error::other(e),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(format!("reading {}", path.display()))(e)),
        }
    }

    /// Replaces the file atomically: a crash leaves the old ledger or the new, never half.
    pub fn save(&self, path: &Path) -> Result<(), RestoreError> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(io_err(format!("writing {}", path.display())))
    }
}
