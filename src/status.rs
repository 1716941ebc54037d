//! `gitvault status` (issue 18): one answer to "is everything backed up?". Per repository the
//! newest snapshot and its age, and what its last run said when that was not a success; per
//! target the packs it lacks by the index; the last backup run and the last verify. Read from
//! the index and the saved run reports only: no key and no network needed.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::index::IndexError;
use crate::vault::Vault;

#[derive(Debug, Serialize)]
pub struct Status {
    /// Nothing is older than the maximum age, no repository's last run failed, the last
    /// verify passed (or none ran), every target holds every pack, and no live pack's Object
    /// Lock is about to run out.
    pub ok: bool,
    pub repositories: Vec<RepositoryStatus>,
    pub targets: Vec<TargetStatus>,
    pub last_backup: Option<RunSummary>,
    pub last_verify: Option<RunSummary>,
}

#[derive(Debug, Serialize)]
pub struct RepositoryStatus {
    pub repo: String,
    /// The configured source it was backed up from, if any.
    pub source: Option<String>,
    /// None for a repository whose runs all failed: it has no snapshot at all.
    pub last_snapshot: Option<DateTime<Utc>>,
    pub age_seconds: Option<i64>,
    /// Older than `--max-age`.
    pub stale: bool,
    /// The newest run report's line for it, when that line was not a success.
    pub last_problem: Option<Problem>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub at: String,
    pub status: String,
    pub reason: Option<String>,
    pub error: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TargetStatus {
    pub target: String,
    /// Packs the index knows that this target does not hold (`gitvault sync` copies them).
    pub packs_missing: u64,
    /// S3 Object Lock: when the first live pack's lock here runs out, as last read or renewed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lock_expires: Option<String>,
    /// That date is within a quarter of the lock period: renewals (prune, verify) have not run
    /// or failed, and the past is about to become deletable.
    pub lock_expiring: bool,
}

#[derive(Debug, Serialize)]
pub struct RunSummary {
    /// The report's file name time (UTC, `20261204T201500.123Z`).
    pub at: String,
    pub ok: bool,
}

/// The time in a report's name: `backup-20261204T201500.123Z.json` → `20261204T201500.123Z`.
fn report_time(path: &Path) -> String {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.split_once('-'))
        .map(|(_, t)| t.to_string())
        .unwrap_or_default()
}

fn read_json(path: &Path) -> Option<serde_json::Value> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

fn summary(vault: &Vault, kind: &str) -> Option<RunSummary> {
    let path = vault.reports(kind).into_iter().next()?;
    let doc = read_json(&path)?;
    Some(RunSummary {
        at: report_time(&path),
        ok: doc["ok"].as_bool().unwrap_or(false),
    })
}

/// Each repository's line in the newest backup report that mentions it, when it was not a
/// success (changed or unchanged).
fn last_problems(vault: &Vault) -> BTreeMap<String, Problem> {
    let mut seen = HashSet::new();
    let mut problems = BTreeMap::new();
    for path in vault.reports("backup") {
        let Some(doc) = read_json(&path) else {
            continue;
        };
        let lines = doc["repositories"].as_array().into_iter().flatten().chain(
            doc["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|s| s["repositories"].as_array().into_iter().flatten()),
        );
        for line in lines {
            let (Some(repo), Some(status)) = (line["repo"].as_str(), line["status"].as_str())
            else {
                continue;
            };
            if !seen.insert(repo.to_string()) {
                continue;
            }
            if !matches!(status, "changed" | "unchanged") {
                problems.insert(
                    repo.to_string(),
                    Problem {
                        at: report_time(&path),
                        status: status.to_string(),
                        reason: line["reason"].as_str().map(String::from),
                        error: line["error"].as_str().map(String::from),
                    },
                );
            }
        }
    }
    problems
}

/// Everything `gitvault status` shows; `max_age` (`26h`, `2d`) marks older snapshots stale.
pub fn collect(
    vault: &Vault,
    max_age: Option<crate::policy::Span>,
    now: DateTime<Utc>,
) -> Result<Status, IndexError> {
    let cutoff = max_age.map(|span| span.before(now));
    let index = vault.index();
    let sources = index.repo_sources()?;
    let mut problems = last_problems(vault);
    let mut repositories: Vec<RepositoryStatus> = index
        .newest_snapshot_times()?
        .into_iter()
        .map(|(repo, ms)| {
            let last = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default();
            let age = now - last;
            RepositoryStatus {
                source: sources.get(&repo).cloned(),
                last_snapshot: Some(last),
                age_seconds: Some(age.num_seconds()),
                stale: cutoff.is_some_and(|c| last < c),
                last_problem: problems.remove(&repo),
                repo,
            }
        })
        .collect();
    // Repositories that failed before they ever had a snapshot.
    repositories.extend(
        problems
            .into_iter()
            .map(|(repo, problem)| RepositoryStatus {
                source: sources.get(&repo).cloned(),
                last_snapshot: None,
                age_seconds: None,
                stale: true,
                last_problem: Some(problem),
                repo,
            }),
    );
    let packs = index.packs()?.len() as u64;
    let targets = vault
        .targets()
        .iter()
        .map(|t| {
            let held = index.packs_on_target(t.name())?.len() as u64;
            let (lock_expires, lock_expiring) = match t.lock_policy() {
                Some(policy) => {
                    let first = vault.live_lock_on(t.name())?.0;
                    let soon = std::time::SystemTime::from(now) + policy.period / 4;
                    (first, first.is_some_and(|f| f < soon))
                }
                None => (None, false),
            };
            Ok(TargetStatus {
                target: t.name().to_string(),
                packs_missing: packs.saturating_sub(held),
                lock_expires: lock_expires.map(crate::target::rfc3339),
                lock_expiring,
            })
        })
        .collect::<Result<Vec<_>, IndexError>>()?;
    let last_backup = summary(vault, "backup");
    let last_verify = summary(vault, "verify");
    let ok = repositories
        .iter()
        .all(|r| !r.stale && r.last_problem.is_none())
        && targets
            .iter()
            .all(|t| t.packs_missing == 0 && !t.lock_expiring)
        && last_verify.as_ref().is_none_or(|v| v.ok);
    Ok(Status {
        ok,
        repositories,
        targets,
        last_backup,
        last_verify,
    })
}
