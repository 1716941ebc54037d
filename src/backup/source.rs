//! A configured source: list its repositories, keep those its filters select and whose clone
//! URLs are on its git origin, and back each up (with its wiki and metadata) `jobs` at a
//! time. Each worker has its own API client, so at most `jobs` requests are in flight against
//! the provider. One repository's failure does not stop the others; a rate limit stops the
//! source cleanly and says when to resume (repositories done keep their snapshots).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use age::secrecy::SecretString;

use super::repo::backup_repository;
use super::schedule::in_parallel;
use super::writer::Writer;
use super::{BackupRequest, Reason, RepoReport, RepoStatus, SourceEvent, SourceReport};
use crate::crypto::VaultKeys;
use crate::git::{self, Credentials};
use crate::progress::Progress;
use crate::provider::http::{HttpCache, RequestStats};
use crate::provider::{GitOrigin, Listing, Provider, ProviderError, RepoInfo, SourceConfig};
use crate::redact::RedactedUrl;
use crate::vault::Vault;

#[derive(Debug, thiserror::Error)]
enum SourceError {
    #[error(transparent)]
    Provider(#[from] ProviderError),
    // A token that lost its scopes lists nothing and looks like an emptied account.
    #[error(
        "the API listed no repositories where the previous run listed {before} (a token \
         that lost its access looks like this); pass --allow-empty if the account is \
         really empty"
    )]
    EmptyListing { before: usize },
    #[error("no worker could reach the API")]
    NoWorker,
}

/// The caller's view of a source run as it goes (selection, each finished line).
type Events<'a> = &'a (dyn Fn(SourceEvent<'_>) + Sync);

/// Backs up every repository (and wiki) of `source` that its filters keep, with metadata.
/// `expected`: how many repositories the previous run listed, when an empty listing should
/// fail the source; once `stop` is set no further repository is started.
pub(super) fn backup_source(
    vault: &Vault,
    keys: &VaultKeys,
    writer: &Mutex<Writer<'_>>,
    source: &SourceConfig,
    options: &super::Options,
    expected: Option<usize>,
    (progress, watch, stop): (Events<'_>, &dyn Progress, &AtomicBool),
) -> SourceReport {
    let mut report = SourceReport {
        source: source.name.clone(),
        listed: 0,
        selected: 0,
        repositories: Vec::new(),
        api: Default::default(),
        dropped: Vec::new(),
        error: None,
    };
    let token = match source.token() {
        Ok(t) => t,
        Err(e) => {
            report.error = Some(e.to_string());
            return report;
        }
    };
    let run = SourceRun {
        vault,
        keys,
        writer,
        source,
        token,
        shard: options.shard,
        progress,
        watch,
        stop,
    };
    if let Err(e) = run.run(options.jobs, expected, &mut report) {
        report.error = Some(run.scrub(e.to_string()));
    }
    report
}

/// One unit of work of a source run.
struct Job<'r> {
    repo: &'r RepoInfo,
    /// `Some(name)` for the repository's wiki, stored as `name`.
    wiki: Option<String>,
}

impl Job<'_> {
    fn url(&self) -> &str {
        match &self.wiki {
            Some(_) => self.repo.wiki_url.as_deref().unwrap_or_default(),
            None => &self.repo.clone_url,
        }
    }

    /// A line for this job before it reached the backup.
    fn line(&self, status: RepoStatus, reason: Reason, error: String) -> RepoReport {
        let name = self
            .wiki
            .clone()
            .unwrap_or_else(|| self.repo.full_name.clone());
        let mut line = RepoReport::new(name, RedactedUrl::new(self.url()), status);
        line.set(status, reason, error);
        line
    }
}

/// What every step of a source run works with.
struct SourceRun<'a, 'v> {
    vault: &'a Vault,
    keys: &'a VaultKeys,
    writer: &'a Mutex<Writer<'v>>,
    source: &'a SourceConfig,
    token: Option<SecretString>,
    shard: Option<super::Shard>,
    progress: &'a (dyn Fn(SourceEvent<'_>) + Sync),
    /// Phases and steps of each repository as it goes.
    watch: &'a dyn Progress,
    /// The session's stop flag: once set, no further repository is started.
    stop: &'a AtomicBool,
}

impl SourceRun<'_, '_> {
    /// Removes the source's token from a message of a lower layer.
    fn scrub(&self, text: String) -> String {
        match &self.token {
            Some(t) => Credentials {
                username: String::new(),
                secret: t.clone(),
            }
            .scrub(&text),
            None => text,
        }
    }

    fn open(&self) -> Result<Box<dyn Provider + '_>, ProviderError> {
        crate::provider::open_provider(self.source, Some(self.vault.index() as &dyn HttpCache))
    }

    fn run(
        &self,
        jobs: usize,
        expected: Option<usize>,
        report: &mut SourceReport,
    ) -> Result<(), SourceError> {
        let mut provider = self.open()?;
        let listed = list(provider.as_mut(), expected, report);
        if listed.is_err() {
            report.api = provider.stats();
        }
        let repos = listed?;
        let filter = self.source.filter()?;
        let git_origin = self.source.git_origin()?;
        let (selected, refused) = crate::provider::screen_listing(
            repos
                .into_iter()
                .filter(|r| filter.keeps(r))
                .filter(|r| self.shard.is_none_or(|s| s.keeps(&r.full_name)))
                .collect(),
            &git_origin,
        );
        report.selected = selected.len() + refused.len();
        (self.progress)(SourceEvent::Selected(report.selected));
        let work = work_list(&selected);
        let (lines, api) = self.back_up(&work, jobs, provider, &git_origin);
        let done = lines.len();
        report.repositories = lines;
        report.api = api;
        for (repo, reason) in refused {
            let job = Job {
                repo: &repo,
                wiki: None,
            };
            let line = job.line(RepoStatus::Failed, Reason::Refused, reason);
            (self.progress)(SourceEvent::Done(&line));
            report.repositories.push(line);
        }
        if done < work.len() {
            return Err(SourceError::NoWorker);
        }
        Ok(())
    }

    /// Runs the jobs; returns their lines in order and the API requests of all workers.
    fn back_up<'p>(
        &'p self,
        work: &[Job<'_>],
        jobs: usize,
        provider: Box<dyn Provider + 'p>,
        git_origin: &GitOrigin,
    ) -> (Vec<RepoReport>, RequestStats) {
        // Set by a rate limit: the rest of the source is not attempted, and says why.
        let stopped: Mutex<Option<String>> = Mutex::new(None);
        let first = Mutex::new(Some(provider));
        let start = || {
            let taken = first.lock().unwrap_or_else(|e| e.into_inner()).take();
            match taken.map(Ok).unwrap_or_else(|| self.open()) {
                Ok(p) => Some(p),
                Err(e) => {
                    // Without a client this worker takes no work; the others go on.
                    tracing::warn!(error = %self.scrub(e.to_string()), "a worker could not start");
                    None
                }
            }
        };
        let (lines, providers) = in_parallel(work, jobs, start, |provider, _, job| {
            let halt = stopped.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let line = match halt {
                Some(why) => job.line(
                    RepoStatus::Skipped,
                    Reason::NotAttempted,
                    format!("not attempted: {why}"),
                ),
                None if self.stop.load(Ordering::SeqCst) => job.line(
                    RepoStatus::Skipped,
                    Reason::NotAttempted,
                    super::session::STOPPED.into(),
                ),
                None => self.attempt(provider.as_mut(), git_origin, job, &stopped),
            };
            (self.progress)(SourceEvent::Done(&line));
            line
        });
        let mut api = RequestStats::default();
        for stats in providers.iter().map(|p| p.stats()) {
            api.requests += stats.requests;
            api.not_modified += stats.not_modified;
            api.retries += stats.retries;
            // Workers wait out one pause side by side: the longest wait is the source's.
            api.rate_limit_seconds = api.rate_limit_seconds.max(stats.rate_limit_seconds);
        }
        (lines, api)
    }

    /// Backs up one job; a rate limit on a repository stops the source.
    fn attempt(
        &self,
        provider: &mut dyn Provider,
        git_origin: &GitOrigin,
        job: &Job<'_>,
        stopped: &Mutex<Option<String>>,
    ) -> RepoReport {
        let mut line = backup_job(
            self.vault,
            self.keys,
            self.writer,
            provider,
            (git_origin, &self.source.name),
            job,
            self.watch,
        );
        line.error = line.error.map(|e| self.scrub(e));
        if job.wiki.is_none() && line.reason == Some(Reason::RateLimited) {
            *stopped.lock().unwrap_or_else(|e| e.into_inner()) = line.error.clone();
        }
        if line.snapshot.is_some()
            && let Err(e) = self
                .vault
                .index()
                .set_repo_source(&line.repo, &self.source.name)
        {
            tracing::warn!(error = %e, "could not record the repository's source");
        }
        line
    }
}

/// The listing's repositories; an empty one fails when `expected` says the previous run
/// listed some.
fn list(
    provider: &mut dyn Provider,
    expected: Option<usize>,
    report: &mut SourceReport,
) -> Result<Vec<RepoInfo>, SourceError> {
    let Listing { repos, dropped } = provider.list_repositories()?;
    report.listed = repos.len();
    report.dropped = dropped;
    if repos.is_empty()
        && let Some(before) = expected.filter(|n| *n > 0)
    {
        return Err(SourceError::EmptyListing { before });
    }
    Ok(repos)
}

/// Every selected repository, each followed by its wiki when the API says it has one.
fn work_list(selected: &[RepoInfo]) -> Vec<Job<'_>> {
    let mut work = Vec::new();
    for repo in selected {
        work.push(Job { repo, wiki: None });
        if repo.wiki_url.is_some()
            && let Ok(spec) = git::parse_remote(&repo.clone_url)
        {
            work.push(Job {
                repo,
                wiki: Some(format!("{}.wiki", spec.default_name)),
            });
        }
    }
    work
}

/// Backs up one repository of a source, or its wiki.
fn backup_job(
    vault: &Vault,
    keys: &VaultKeys,
    writer: &Mutex<Writer<'_>>,
    provider: &mut dyn Provider,
    (git_origin, source_name): (&GitOrigin, &str),
    job: &Job<'_>,
    watch: &dyn Progress,
) -> RepoReport {
    let url = job.url();
    // Invariant 9: the source's git credentials go only to its git origin.
    let credentials = match provider.git_credentials() {
        Ok(c) => c.filter(|_| git_origin.trusts(url)),
        Err(e) => {
            let reason = match e {
                ProviderError::RateLimited { .. } => Reason::RateLimited,
                _ => Reason::Credentials,
            };
            return job.line(RepoStatus::Failed, reason, format!("credentials: {e}"));
        }
    };
    let request = BackupRequest {
        url: url.to_string(),
        name: job.wiki.clone(),
        credentials,
        source: Some(source_name.to_string()),
    };
    if job.wiki.is_none() {
        return backup_repository(
            vault,
            keys,
            writer,
            &request,
            Some((provider, job.repo)),
            watch,
        );
    }
    let mut line = backup_repository(vault, keys, writer, &request, None, watch);
    if line.status == RepoStatus::Failed && line.reason == Some(Reason::NotFound) {
        // has_wiki is on by default: most repositories have no wiki repository.
        line.set(
            RepoStatus::Skipped,
            Reason::NoWiki,
            "no wiki repository".into(),
        );
    }
    line
}
