//! `gitvault forget`: applies retention policies per repository and deletes the snapshot rows
//! they do not keep. Nothing leaves the packs here: `prune` reclaims space later, and until it
//! runs a forgotten snapshot's data is still in the vault (a `recover` before the next prune
//! brings such snapshots back, which loses nothing).

use serde::Serialize;

use super::{Decision, Policy};
use crate::index::{IndexError, SnapshotRow};
use crate::vault::{Vault, WriteLock};

#[derive(Debug, thiserror::Error)]
pub enum ForgetError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("bad --repo pattern `{0}`: {1}")]
    BadPattern(String, String),
}

/// Where a repository's policy came from.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PolicyOrigin {
    CommandLine,
    Source(String),
    Config,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotDecision {
    #[serde(flatten)]
    pub snapshot: SnapshotRow,
    pub keep: bool,
    pub reasons: Vec<String>,
}

/// What forget does (or would do) to one repository.
#[derive(Debug, Clone, Serialize)]
pub struct RepoPlan {
    pub repo: String,
    /// None: no policy applies and every snapshot is kept.
    pub policy: Option<PolicyOrigin>,
    pub snapshots: Vec<SnapshotDecision>,
}

impl RepoPlan {
    pub fn removed(&self) -> impl Iterator<Item = &SnapshotDecision> {
        self.snapshots.iter().filter(|s| !s.keep)
    }
}

/// Decides per repository, without changing anything. `policy` from the command line wins;
/// otherwise the policy of the source the repository was backed up through, then the
/// config's default; repositories with none keep everything.
pub fn plan(
    vault: &Vault,
    policy: Option<&Policy>,
    repo_patterns: &[String],
) -> Result<Vec<RepoPlan>, ForgetError> {
    let mut builder = globset::GlobSetBuilder::new();
    for p in repo_patterns {
        builder.add(
            globset::Glob::new(p).map_err(|e| ForgetError::BadPattern(p.clone(), e.to_string()))?,
        );
    }
    let patterns = builder
        .build()
        .map_err(|e| ForgetError::BadPattern(repo_patterns.join(" "), e.to_string()))?;
    let sources = vault.index().repo_sources()?;
    let config = vault.config();
    let mut plans = Vec::new();
    for repo in vault.index().repos()? {
        if !repo_patterns.is_empty() && !patterns.is_match(&repo) {
            continue;
        }
        let rows = vault.index().snapshots(Some(&repo), None, None)?;
        if rows.is_empty() {
            continue;
        }
        let from_source = sources.get(&repo).and_then(|name| {
            config
                .sources
                .iter()
                .find(|s| &s.name == name)
                .and_then(|s| s.retention.clone().map(|p| (p, name.clone())))
        });
        let chosen = match (policy, from_source, &config.retention) {
            (Some(p), _, _) => Some((p.clone(), PolicyOrigin::CommandLine)),
            (None, Some((p, name)), _) => Some((p, PolicyOrigin::Source(name))),
            (None, None, Some(p)) => Some((p.clone(), PolicyOrigin::Config)),
            _ => None,
        };
        let (decisions, origin) = match chosen.filter(|(p, _)| !p.is_empty()) {
            Some((p, origin)) => {
                let times: Vec<_> = rows.iter().map(|r| r.time).collect();
                (p.apply(&times), Some(origin))
            }
            None => (
                vec![
                    Decision {
                        keep: true,
                        reasons: vec!["no policy".into()],
                    };
                    rows.len()
                ],
                None,
            ),
        };
        plans.push(RepoPlan {
            repo,
            policy: origin,
            snapshots: rows
                .into_iter()
                .zip(decisions)
                .map(|(snapshot, d)| SnapshotDecision {
                    snapshot,
                    keep: d.keep,
                    reasons: d.reasons,
                })
                .collect(),
        });
    }
    Ok(plans)
}

/// Deletes the rows the plans do not keep; returns how many.
pub fn apply(vault: &Vault, _lock: &WriteLock, plans: &[RepoPlan]) -> Result<usize, ForgetError> {
    let manifests: Vec<_> = plans
        .iter()
        .flat_map(|p| p.removed().map(|s| s.snapshot.manifest))
        .collect();
    Ok(vault.index().delete_snapshots(&manifests)?)
}
