//! `restore REPO --to-source NAME`: a snapshot recreated in a hosting account (GitHub,
//! Gitea/Forgejo, GitLab or Bitbucket Cloud) instead of on disk. In order: the repository (created, or found when
//! `--into-existing`), every ref (read-only namespaces under `refs/gitvault/`) and the LFS
//! objects, then labels, milestones, and issues in number order with their comments, pull
//! requests as issues, closed states last per issue.
//!
//! Every creation is recorded in a ledger under the vault (`ledger`) right after it succeeds,
//! and announced there before it is sent, so a run stopped anywhere (a rate limit, an error,
//! a kill) continues on the next run without creating anything twice. Nothing here retries a
//! write: `provider::create` sends each once, and what is unknown is asked of the destination.

mod git;
mod ledger;
mod metadata;
mod plan;
mod releases;
mod shapes;

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::crypto::VaultKeys;
use crate::index::SnapshotRow;
use crate::progress::Silent;
use crate::provider::ProviderError;
use crate::provider::SourceConfig;
use crate::provider::create::{Destination, Flavor, RepoSpec, valid_repo_name};
use crate::provider::str_field;
use crate::vault::Vault;

use super::{RestoreError, io_err, load_snapshot, restore_snapshot_watched};
pub use git::pushed_name;
use ledger::{Ledger, Pending, ledger_path};
use plan::{ItemKind, Plan};

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct IntoOptions {
    pub source: SourceConfig,
    /// The account to create the repository under (default: the source's owner).
    pub owner: Option<String>,
    /// The new repository's name (default: the original's).
    pub name: Option<String>,
    pub dry_run: bool,
    pub into_existing: bool,
    pub public: bool,
}

/// What a restore into an account planned and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IntoReport {
    pub repo: String,
    pub snapshot: String,
    pub time: DateTime<Utc>,
    pub source: String,
    pub destination: String,
    pub dry_run: bool,
    /// A ledger of an earlier run of the same restore was found and continued.
    pub resumed: bool,
    /// The destination repository exists and was not made by this restore.
    pub exists: bool,
    pub clone_url: Option<String>,
    pub plan: PlanCounts,
    pub created: Created,
    pub lfs_uploaded: Option<u64>,
    /// What became of the wiki, when the vault holds one: `pushed`, or why not.
    pub wiki: Option<String>,
    /// Why the snapshot's metadata was not recreated (a provider whose documents are not
    /// read: GitHub's, Gitea's, GitLab's and Bitbucket's are); the git data still is.
    pub metadata_skipped: Option<String>,
    /// Tags whose release the destination refused (its tag missing, nothing to make it from).
    pub skipped_releases: Vec<String>,
    /// Every issue got the number it had in the original.
    pub numbers_match: bool,
    /// Every merge request got the number it had in the original (GitLab numbers them
    /// apart from issues; true when there are none).
    pub merge_request_numbers_match: bool,
    pub ledger: String,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct PlanCounts {
    pub branches: usize,
    pub tags: usize,
    /// Refs of read-only namespaces (`refs/pull/*`…), pushed under `refs/gitvault/`.
    pub moved_refs: usize,
    pub other_refs: usize,
    pub labels: usize,
    pub milestones: usize,
    pub issues: usize,
    /// Pull requests whose head and base branches the snapshot holds: opened as pull
    /// requests where the destination takes them (else as issues).
    pub pull_requests: usize,
    pub pull_requests_as_issues: usize,
    pub placeholders: usize,
    pub comments: usize,
    pub releases: usize,
    pub assets: usize,
}

/// What this run created (an earlier run's creations are not counted again).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Created {
    pub repository: bool,
    pub labels: usize,
    pub milestones: usize,
    pub issues: usize,
    pub pull_requests: usize,
    pub comments: usize,
    pub closed: usize,
    pub releases: usize,
    pub assets: usize,
}

/// The last path component of a vault repository name (`host/acme/api` → `api`).
fn short_name(repo: &str) -> &str {
    repo.rsplit('/').next().unwrap_or(repo)
}

/// Restores snapshot `row` into the account of `opts.source`, or with `dry_run` says what
/// that would do.
pub fn restore_into(
    vault: &Vault,
    keys: &VaultKeys,
    row: &SnapshotRow,
    opts: &IntoOptions,
) -> Result<IntoReport, RestoreError> {
    let name = opts
        .name
        .clone()
        .unwrap_or_else(|| short_name(&row.repo).to_string());
    if !valid_repo_name(&name) {
        return Err(RestoreError::BadName(name));
    }
    let dest = Destination::open(&opts.source, opts.owner.as_deref())?;
    let target = format!("{}/{name}", dest.owner());
    let store = vault.reader(keys);
    let (manifest, refs) = load_snapshot(&store, row)?;
    let mut plan = Plan::read(&store, &manifest, &refs)?;
    match dest.flavor() {
        Flavor::GitLab => plan.number_merge_requests_apart("GitLab"),
        Flavor::Bitbucket => {
            plan.number_merge_requests_apart("Bitbucket");
            plan.fields_as_text();
        }
        Flavor::GitHub | Flavor::Gitea => {}
    }
    let path = ledger_path(vault.dir(), &opts.source.name, &target, &row.id);
    let found = Ledger::load(&path)?;
    let mut report = planned(row, opts, &target, &plan, &refs);
    report.resumed = found.is_some();
    report.ledger = path.display().to_string();
    let ledger = found.unwrap_or_else(|| Ledger {
        source: opts.source.name.clone(),
        target: target.clone(),
        snapshot: row.id.clone(),
        ..Ledger::default()
    });
    let mut run = Run {
        dest,
        ledger,
        path,
        name,
        report,
    };
    if opts.dry_run {
        if run.ledger.repo.is_none() {
            let existing = run.dest.find_repo(&run.name).map_err(|e| run.stopped(e))?;
            run.report.exists = existing.is_some();
        }
        return Ok(run.report);
    }
    let _lock = lock(&run.path, &run.ledger.target)?;
    run.resolve_pending(&plan)?;
    run.repository(&plan, opts)?;
    run.git(vault, keys, row, &refs)?;
    run.wiki(vault, keys, row)?;
    run.default_branch(&plan, &refs)?;
    run.topics(&plan)?;
    run.labels(&plan)?;
    run.milestones(&plan)?;
    run.issues(&plan)?;
    run.releases(&plan, &store)?;
    run.report.numbers_match = run.ledger.issues.iter().all(|(n, d)| *n == d.number);
    run.report.merge_request_numbers_match =
        (run.ledger.merge_requests.iter()).all(|(n, d)| d.pull && *n == d.number);
    Ok(run.report)
}

/// The wiki's snapshot of the backup run that took `row`: a run backs up a repository and its
/// wiki side by side (in either order, seconds apart; runs are hours apart), so the wiki
/// snapshot nearest in time, before or after.
fn wiki_snapshot(vault: &Vault, row: &SnapshotRow) -> Result<Option<SnapshotRow>, RestoreError> {
    let wiki = format!("{}.wiki", row.repo);
    let before = vault.index().snapshot_as_of(&wiki, Some(row.time))?;
    let after = vault
        .index()
        .snapshots(Some(&wiki), Some(row.time), None)?
        .into_iter()
        .next();
    let distance = |s: &SnapshotRow| (s.time - row.time).num_milliseconds().abs();
    Ok(match (before, after) {
        (Some(b), Some(a)) => Some(if distance(&a) < distance(&b) { a } else { b }),
        (b, a) => b.or(a),
    })
}

/// One run at a time per ledger: two would both send the next write. An `flock`, which
/// dies with its process, so a killed run leaves nothing to clean up.
fn lock(ledger: &std::path::Path, target: &str) -> Result<std::fs::File, RestoreError> {
    let path = ledger.with_extension("lock");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    }
    let file =
        std::fs::File::create(&path).map_err(io_err(format!("creating {}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(RestoreError::Busy(target.to_string())),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(io_err(format!("locking {}", path.display()))(e))
        }
    }
}

fn planned(
    row: &SnapshotRow,
    opts: &IntoOptions,
    target: &str,
    plan: &Plan,
    refs: &crate::snapshot::RefSet,
) -> IntoReport {
    let (branches, tags, moved_refs, other_refs) = git::ref_counts(refs);
    IntoReport {
        repo: row.repo.clone(),
        snapshot: row.id.clone(),
        time: row.time,
        source: opts.source.name.clone(),
        destination: target.to_string(),
        dry_run: opts.dry_run,
        plan: PlanCounts {
            branches,
            tags,
            moved_refs,
            other_refs,
            labels: plan.labels.len(),
            milestones: plan.milestones.len(),
            issues: plan.count(ItemKind::Issue),
            pull_requests: plan.pulls_with_branches(),
            pull_requests_as_issues: plan.count(ItemKind::Pull) - plan.pulls_with_branches(),
            placeholders: plan.count(ItemKind::Placeholder),
            comments: plan.comments(),
            releases: plan.releases.len(),
            assets: plan
                .releases
                .iter()
                .filter_map(|r| r["assets"].as_array())
                .map(Vec::len)
                .sum(),
        },
        metadata_skipped: plan.unreadable.as_ref().map(|p| {
            format!(
                "the metadata of a {p} backup is not recreated (GitHub, Gitea, GitLab and Bitbucket only)"
            )
        }),
        ..IntoReport::default()
    }
}

/// One restore under way: the destination, the ledger and where it is kept.
struct Run<'i> {
    dest: Destination<'i>,
    ledger: Ledger,
    path: PathBuf,
    name: String,
    report: IntoReport,
}

impl Run<'_> {
    fn stopped(&self, error: ProviderError) -> RestoreError {
        RestoreError::Into {
            target: self.ledger.target.clone(),
            error,
        }
    }

    fn save(&self) -> Result<(), RestoreError> {
        self.ledger.save(&self.path)
    }

    fn repo_name(&self) -> String {
        self.ledger
            .repo
            .as_ref()
            .map(|r| r.full_name.clone())
            .unwrap_or_else(|| self.ledger.target.clone())
    }

    /// One write: announced in the ledger, sent, and on success left for the caller to
    /// record (with [`Run::done`]).
    fn create<T>(
        &mut self,
        pending: Pending,
        write: impl FnOnce(&mut Destination<'_>, &str) -> Result<T, ProviderError>,
    ) -> Result<T, RestoreError> {
        self.ledger.pending = Some(pending);
        self.save()?;
        let repo = self.repo_name();
        write(&mut self.dest, &repo).map_err(|e| self.stopped(e))
    }

    fn done(&mut self) -> Result<(), RestoreError> {
        self.ledger.pending = None;
        self.save()
    }

    /// Creates the repository, or takes the existing one when this restore made it or the
    /// user said `--into-existing`.
    fn repository(&mut self, plan: &Plan, opts: &IntoOptions) -> Result<(), RestoreError> {
        if let Some(repo) = &self.ledger.repo {
            self.report.clone_url = Some(repo.clone_url.clone());
            return Ok(());
        }
        let existing = self
            .dest
            .find_repo(&self.name)
            .map_err(|e| self.stopped(e))?;
        if let Some(repo) = existing {
            if !opts.into_existing {
                return Err(RestoreError::Exists(repo.full_name));
            }
            self.report.exists = true;
            self.report.clone_url = Some(repo.clone_url.clone());
            self.ledger.repo = Some(repo);
            return self.save();
        }
        let spec = RepoSpec {
            name: self.name.clone(),
            description: str_field(&plan.settings, "description").filter(|d| !d.is_empty()),
            private: !opts.public,
            has_wiki: plan.settings.get("has_wiki").and_then(|v| v.as_bool()) == Some(true),
        };
        let repo = self.create(Pending::Repo, |d, _| d.create_repo(&spec))?;
        self.report.clone_url = Some(repo.clone_url.clone());
        self.report.created.repository = true;
        self.ledger.repo = Some(repo);
        self.ledger.created_repo = true;
        self.done()
    }

    /// Writes the snapshot into a work directory beside the ledger, pushes it and its LFS
    /// objects, and removes the work directory.
    fn git(
        &mut self,
        vault: &Vault,
        keys: &VaultKeys,
        row: &SnapshotRow,
        refs: &crate::snapshot::RefSet,
    ) -> Result<(), RestoreError> {
        if self.ledger.git_pushed {
            self.report.lfs_uploaded = self.ledger.lfs_uploaded;
            return Ok(());
        }
        let Some(repo) = self.ledger.repo.clone() else {
            return Ok(());
        };
        let work = self.path.with_extension("git");
        let _ = std::fs::remove_dir_all(&work);
        let result = (|| {
            restore_snapshot_watched(vault, keys, row, &work, &Silent)?;
            git::move_read_only_refs(&work, refs)?;
            let credentials = self.dest.git_credentials();
            git::push_repository(&work, &repo.clone_url, credentials.as_ref())
        })();
        let _ = std::fs::remove_dir_all(&work);
        let uploaded = result?;
        self.ledger.git_pushed = true;
        self.ledger.lfs_uploaded = Some(uploaded);
        self.report.lfs_uploaded = Some(uploaded);
        self.save()
    }

    /// Pushes the wiki as it was while this snapshot was the newest, when the vault holds
    /// one. A failure does not stop the restore: GitHub has no wiki repository until its
    /// first page is made in the web interface, so it is reported for the user to retry.
    fn wiki(
        &mut self,
        vault: &Vault,
        keys: &VaultKeys,
        row: &SnapshotRow,
    ) -> Result<(), RestoreError> {
        let (Some(repo), false) = (self.ledger.repo.clone(), self.ledger.wiki_pushed) else {
            if self.ledger.wiki_pushed {
                self.report.wiki = Some("pushed".into());
            }
            return Ok(());
        };
        let Some(wiki_row) = wiki_snapshot(vault, row)? else {
            return Ok(());
        };
        let work = self.path.with_extension("wiki.git");
        let _ = std::fs::remove_dir_all(&work);
        let url = self.dest.wiki_url(&repo.clone_url);
        let result =
            restore_snapshot_watched(vault, keys, &wiki_row, &work, &Silent).and_then(|_| {
                let credentials = self.dest.git_credentials();
                super::push::push_all_refs(&work, &url, credentials.as_ref())
            });
        let _ = std::fs::remove_dir_all(&work);
        match result {
            Ok(_) => {
                self.ledger.wiki_pushed = true;
                self.report.wiki = Some("pushed".into());
                self.save()
            }
            Err(e) => {
                let why = self.dest.scrub(&e.to_string());
                tracing::warn!(error = %why, "the wiki was not pushed");
                self.report.wiki = Some(format!("not pushed: {why}"));
                Ok(())
            }
        }
    }

    /// The original's topics, set once (the call replaces the list, so a repeat is harmless).
    fn topics(&mut self, plan: &Plan) -> Result<(), RestoreError> {
        let topics: Vec<String> = plan.settings["topics"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        if topics.is_empty() || self.ledger.topics_set {
            return Ok(());
        }
        let repo = self.repo_name();
        self.dest
            .set_topics(&repo, &topics)
            .map_err(|e| self.stopped(e))?;
        self.ledger.topics_set = true;
        self.save()
    }

    /// Points the default branch where the original's was, once the branches exist.
    fn default_branch(
        &mut self,
        plan: &Plan,
        refs: &crate::snapshot::RefSet,
    ) -> Result<(), RestoreError> {
        // A branch the snapshot does not hold would be refused (422) and stop the restore.
        let Some(want) = str_field(&plan.settings, "default_branch")
            .filter(|b| refs.refs.contains_key(&format!("refs/heads/{b}")))
        else {
            return Ok(());
        };
        let Some(repo) = self.ledger.repo.clone() else {
            return Ok(());
        };
        if repo.default_branch.as_deref() == Some(want.as_str()) {
            return Ok(());
        }
        self.dest
            .set_default_branch(&repo.full_name, &want)
            .map_err(|e| self.stopped(e))?;
        if let Some(r) = &mut self.ledger.repo {
            r.default_branch = Some(want);
        }
        self.save()
    }
}
