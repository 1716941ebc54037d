//! A backup run from its start to its report: URL lists and sources backed up over one shared
//! writer, then `finish`, which owns every step a run must end with (the last flush, failing
//! the snapshots it could not make durable, the index backup, the saved run report), so no
//! caller can forget one.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;

use super::repo::backup_repository;
use super::schedule::in_parallel;
use super::source::backup_source;
use super::writer::Writer;
use super::{
    BackupError, BackupRequest, Reason, RepoReport, RepoStatus, SourceEvent, SourceReport,
};
use crate::crypto::VaultKeys;
use crate::git;
use crate::progress::{Progress, Silent};
use crate::provider::SourceConfig;
use crate::vault::index_backup::{index_backup_due, upload_index_backup};
use crate::vault::target_lock::{LockKind, LockTiming, TargetLock};
use crate::vault::{Vault, WriteLock};

/// What the caller wants of a run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Repositories backed up at once (and API requests in flight per source).
    pub jobs: usize,
    /// Accept a source that lists nothing although its previous run listed repositories.
    pub allow_empty: bool,
    /// Back up only the sources' repositories of this shard (URLs given are not sharded).
    pub shard: Option<super::Shard>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            jobs: super::DEFAULT_JOBS,
            allow_empty: false,
            shard: None,
        }
    }
}

/// One backup run. Create it, back up URLs and sources, then `finish` it.
pub struct Session<'v> {
    vault: &'v Vault,
    keys: &'v VaultKeys,
    lock: &'v WriteLock,
    options: Options,
    writer: Mutex<Writer<'v>>,
    repositories: Vec<RepoReport>,
    sources: Vec<SourceReport>,
    /// The shared lock on every target, so that another host's prune waits for this run.
    targets: TargetLock,
    progress: &'v dyn Progress,
    /// Set when the run must end early (the daemon's SIGTERM): repositories not yet started
    /// are not attempted, the running ones finish and `finish` commits them.
    stop: &'v AtomicBool,
}

/// The stop flag of a session nobody stops.
static NEVER_STOP: AtomicBool = AtomicBool::new(false);

/// The report of a run: what `gitvault backup --json` prints and DIR/reports/ keeps.
#[derive(Debug, Serialize)]
pub struct BackupRun {
    /// No repository or source failed.
    pub ok: bool,
    /// The repositories given by URL.
    pub repositories: Vec<RepoReport>,
    pub sources: Vec<SourceReport>,
    /// `(pack, target, error)` for packs a target missed; `gitvault sync` brings it level.
    pub lagging_replicas: Vec<(String, String, String)>,
    /// Targets the index backup did not reach.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub index_backup_missed: Vec<String>,
    /// Why the run's lock on the targets could not be kept alive (a target unreachable for
    /// longer than the lock's lifetime): another host's prune may have run meanwhile, so
    /// `gitvault verify` should follow.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_lock_lost: Option<String>,
}

/// How a run went as a whole (the exit status's classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// Everything was backed up.
    Ok,
    /// Some repositories or sources failed, others were backed up.
    Partial,
    /// Nothing was backed up and something failed.
    Failed,
}

impl<'v> Session<'v> {
    pub fn new(
        vault: &'v Vault,
        keys: &'v VaultKeys,
        lock: &'v WriteLock,
        options: Options,
    ) -> Result<Session<'v>, BackupError> {
        let targets = vault.lock_targets(
            keys,
            LockKind::Shared,
            "backup",
            LockTiming::from_environment(),
        )?;
        // Under the shared lock and before any dedup lookup: packs another host's prune
        // deleted leave the index, so nothing is deduplicated against them.
        vault.catch_up(keys, &Silent)?;
        let mut store = vault.store(keys, lock);
        // Packs missing without a prune record stay in the index; this run's snapshots must
        // not count on them.
        let missing = vault.index().missing_pack_ids()?;
        if !missing.is_empty() {
            tracing::warn!(
                packs = missing.len(),
                "packs are missing from every target: this run stores again what only they held"
            );
        }
        store.avoid_packs(missing);
        Ok(Session {
            vault,
            keys,
            lock,
            options,
            writer: Mutex::new(Writer::new(store)),
            repositories: Vec::new(),
            sources: Vec::new(),
            targets,
            progress: &Silent,
            stop: &NEVER_STOP,
        })
    }

    /// Reports each repository's phases (fetch, walk, store) and steps to `progress`.
    /// Each target's uploads go there too, as a line of their own.
    pub fn with_progress(mut self, progress: &'v dyn Progress) -> Session<'v> {
        self.progress = progress;
        self.writer
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .store
            .watch_uploads(progress);
        self
    }

    /// Stops taking new repositories once `stop` is set: those not started yet are reported
    /// as not attempted, the ones running finish, and `finish` still commits the run.
    pub fn with_stop(mut self, stop: &'v AtomicBool) -> Session<'v> {
        self.stop = stop;
        self
    }

    /// Backs up repositories given by URL, `jobs` at a time; `done` sees each line as it
    /// completes (from worker threads, one at a time), the report keeps them in request order.
    pub fn backup_urls(&mut self, requests: &[BackupRequest], done: &(dyn Fn(&RepoReport) + Sync)) {
        let repeated = repeats(requests);
        let (lines, _) = in_parallel(
            requests,
            self.options.jobs,
            || Some(()),
            |(), i, request| {
                let line = if self.stop.load(Ordering::SeqCst) {
                    let mut line = RepoReport::for_request(request, RepoStatus::Skipped);
                    line.set(RepoStatus::Skipped, Reason::NotAttempted, STOPPED.into());
                    line
                } else if repeated[i] {
                    let mut line = RepoReport::for_request(request, RepoStatus::Skipped);
                    line.set(
                        RepoStatus::Skipped,
                        Reason::Repeated,
                        "the same repository was given earlier in this run".into(),
                    );
                    line
                } else {
                    backup_repository(
                        self.vault,
                        self.keys,
                        &self.writer,
                        request,
                        None,
                        self.progress,
                    )
                };
                done(&line);
                line
            },
        );
        self.repositories.extend(lines);
    }

    /// Backs up every repository (and wiki) of a configured source that its filters keep,
    /// with metadata; `progress` sees the selection and each line as it completes.
    pub fn backup_source(
        &mut self,
        source: &SourceConfig,
        progress: &(dyn Fn(SourceEvent<'_>) + Sync),
    ) -> &SourceReport {
        let expected =
            (!self.options.allow_empty).then(|| previous_listing(self.vault, &source.name));
        let report = backup_source(
            self.vault,
            self.keys,
            &self.writer,
            source,
            &self.options,
            expected,
            (progress, self.progress, self.stop),
        );
        self.sources.push(report);
        &self.sources[self.sources.len() - 1]
    }

    /// Ends the run: records the snapshots still waiting (unchanged repositories' wait for one
    /// last flush), fails those that could not be made durable, uploads the index backup when
    /// due, and keeps the run report in DIR/reports/. An error here is the index backup's.
    pub fn finish(self) -> Result<BackupRun, BackupError> {
        let Session {
            vault,
            keys,
            lock,
            writer,
            repositories,
            sources,
            targets,
            ..
        } = self;
        let mut writer = writer.into_inner().unwrap_or_else(|e| e.into_inner());
        let final_commit = writer.commit_deferred(vault);
        let Writer { store, deferred } = writer;
        let mut run = BackupRun {
            ok: false,
            repositories,
            sources,
            lagging_replicas: store.report().lagging.clone(),
            index_backup_missed: Vec::new(),
            target_lock_lost: targets.lost(),
        };
        drop(store);
        if !deferred.lost.is_empty() {
            run.fail_lost(&deferred.lost, final_commit.err());
        }
        run.ok = run.outcome() == RunOutcome::Ok;
        let changed = run.lines().any(|r| r.status == RepoStatus::Changed);
        if run.lines().any(RepoReport::is_success) && index_backup_due(vault, changed) {
            run.index_backup_missed = upload_index_backup(vault, keys, lock)?;
        }
        if let Err(e) = vault.save_report("backup", &run) {
            tracing::warn!(error = %e, "the run report could not be stored");
        }
        drop(targets);
        Ok(run)
    }
}

/// The message of a line the stop flag kept from starting.
pub(super) const STOPPED: &str = "not attempted: the run was asked to stop";

/// For each request, whether an earlier one names the same repository. Two URLs for one
/// repository (`…/r` and `…/r.git`) would share a mirror cache and race: the repeat is
/// reported, not run.
fn repeats(requests: &[BackupRequest]) -> Vec<bool> {
    let mut seen = HashSet::new();
    requests
        .iter()
        .map(|r| {
            let name = r
                .name
                .clone()
                .or_else(|| git::parse_remote(&r.url).ok().map(|spec| spec.default_name));
            name.is_some_and(|n| !seen.insert(n))
        })
        .collect()
}

impl BackupRun {
    /// Every repository line, given by URL or by a source.
    pub fn lines(&self) -> impl Iterator<Item = &RepoReport> {
        self.repositories
            .iter()
            .chain(self.sources.iter().flat_map(|s| s.repositories.iter()))
    }

    pub fn outcome(&self) -> RunOutcome {
        let failed = self.lines().filter(|r| r.is_failure()).count()
            + self.sources.iter().filter(|s| s.error.is_some()).count();
        if failed == 0 {
            RunOutcome::Ok
        } else if self.lines().any(RepoReport::is_success) {
            RunOutcome::Partial
        } else {
            RunOutcome::Failed
        }
    }

    /// Marks the lines of repositories whose snapshot was lost with a failed flush (the final
    /// one, `error`, or an earlier one) as failed.
    fn fail_lost(&mut self, lost: &[String], error: Option<BackupError>) {
        let reason = match error {
            Some(e) => format!("the snapshot could not be made durable: {e}"),
            None => "the snapshot could not be made durable (a later flush failed)".to_string(),
        };
        let lines = self.repositories.iter_mut().chain(
            self.sources
                .iter_mut()
                .flat_map(|s| s.repositories.iter_mut()),
        );
        for r in lines.filter(|r| lost.contains(&r.repo) && r.status != RepoStatus::Failed) {
            r.set(RepoStatus::Failed, Reason::Vault, reason.clone());
            r.snapshot = None;
        }
    }
}

/// How many repositories `source` listed the last time it listed without an error, as this
/// host's run reports say; with no report of it here (another host ran it, or the reports
/// were cleared), how many repositories the index holds for it.
fn previous_listing(vault: &Vault, source: &str) -> usize {
    if let Some(n) = vault
        .reports("backup")
        .iter()
        .find_map(|p| listed_in(p, source))
    {
        return n;
    }
    vault
        .index()
        .repo_sources()
        .map(|m| m.values().filter(|s| *s == source).count())
        .unwrap_or(0)
}

/// What a saved run report says `source` listed, if it listed without an error. Reports are
/// read as plain JSON: older versions wrote them too.
fn listed_in(report: &Path, source: &str) -> Option<usize> {
    let run: serde_json::Value = serde_json::from_slice(&std::fs::read(report).ok()?).ok()?;
    let listed = run["sources"]
        .as_array()?
        .iter()
        .find(|s| s["source"] == source && s["error"].is_null())?["listed"]
        .as_u64()?;
    usize::try_from(listed).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::RedactedUrl;

    fn line(status: RepoStatus, reason: Option<Reason>) -> RepoReport {
        let mut line = RepoReport::new("r".into(), RedactedUrl::new("file:///r"), status);
        line.reason = reason;
        line
    }

    fn run(lines: Vec<RepoReport>) -> BackupRun {
        BackupRun {
            ok: false,
            repositories: lines,
            sources: Vec::new(),
            lagging_replicas: Vec::new(),
            index_backup_missed: Vec::new(),
            target_lock_lost: None,
        }
    }

    #[test]
    fn a_repository_not_attempted_counts_as_failed_a_missing_wiki_does_not() {
        let ok = line(RepoStatus::Changed, None);
        let no_wiki = line(RepoStatus::Skipped, Some(Reason::NoWiki));
        let stopped = line(RepoStatus::Skipped, Some(Reason::NotAttempted));
        let failed = line(RepoStatus::Failed, Some(Reason::Git));
        assert_eq!(run(vec![ok.clone(), no_wiki]).outcome(), RunOutcome::Ok);
        assert_eq!(
            run(vec![ok, stopped.clone()]).outcome(),
            RunOutcome::Partial
        );
        assert_eq!(run(vec![stopped, failed]).outcome(), RunOutcome::Failed);
    }
}
