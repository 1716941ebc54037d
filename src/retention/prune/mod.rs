//! `gitvault prune`: reclaims what no snapshot needs. docs/PRUNE.md states the protocol and why
//! it cannot lose a kept snapshot, even with backups running and prune killed at any point.
//!
//! 0. **Catch up** (writer lock, briefly): other hosts' packs and snapshots join the index,
//!    packs their prunes deleted leave it (`Vault::catch_up`); repeated under the exclusive
//!    target lock before deciding.
//! 1. **Mark** (no lock): everything the snapshots recorded at the start reach — manifests, ref
//!    sets, object maps, metadata maps and documents, and every git object reachable from their
//!    refs (walked through the vault) with its chunk.
//! 2. **Compact** (no lock): live chunks of packs mostly dead are copied into new packs, which
//!    are replicated but not yet indexed.
//! 3. **Decide** (writer lock, waits for a running backup): snapshots recorded since the mark
//!    are marked too; a chunk is dead only if it existed at the start and nothing marks it; a
//!    pack is condemned only if every chunk still pointing into it is dead or was copied. Then
//!    one transaction: dead rows go, copies take over, packs are condemned. A prune record
//!    (forgotten manifests, and the object map of live objects whose adding snapshot is gone)
//!    is written first so that `recover` rebuilds the same index from the packs alone.
//! 4. **Delete**: condemned packs older than the grace period are deleted from every target,
//!    under the readers' lock, after checking again that no chunk points into them.

mod collect;
mod decide;
mod delete;
mod mark;
mod plan;
mod regroup;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::Serialize;

use crate::crypto::VaultKeys;
use crate::index::{Index, IndexError, PackRow, SnapshotRow};
use crate::progress::{self, Progress, Silent, Unit};
use crate::store::StoreError;
use crate::vault::target_lock::{LockKind, LockTiming};
use crate::vault::{Vault, VaultError};

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(
        "snapshot {snapshot} of {repo} cannot be read completely ({reason}); nothing was deleted. Run `gitvault verify --full` and `gitvault sync`"
    )]
    Unreadable {
        repo: String,
        snapshot: String,
        reason: String,
    },
    #[error("prune's temporary file in the vault's tmp directory failed: {0}")]
    Spill(#[source] std::io::Error),
    #[error(
        "this index was built before gitvault authenticated what it reads from targets, and may have been recovered from a forged index backup; prune trusts it only when told: run `gitvault recover` again into a new directory, or `gitvault prune --trust-index` if this index was made by `init` on this host or recovered from a target you trust"
    )]
    IndexNotVouched,
    #[error(
        "{0} packs vanished from the targets while this prune ran: another host pruned meanwhile; nothing was changed, run prune again"
    )]
    PrunedElsewhere(usize),
    #[error("deleting condemned pack {pack} from {target}: {source}")]
    Delete {
        pack: String,
        target: String,
        #[source]
        source: crate::target::TargetError,
    },
}

pub struct PruneOptions {
    pub dry_run: bool,
    /// Packs whose live share of raw bytes is below this are rewritten.
    pub repack_below: f64,
    /// Condemned packs are deleted only once condemned this long ago.
    pub grace: Duration,
    /// How long to wait for a running backup to release the writer lock.
    pub lock_wait: Duration,
    /// Vouch for an index of unknown origin (`prune --trust-index`); remembered.
    pub trust_index: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            repack_below: 0.5,
            grace: Duration::ZERO,
            lock_wait: Duration::from_secs(3600),
            trust_index: false,
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct PruneReport {
    pub dry_run: bool,
    pub snapshots: u64,
    pub live_chunks: u64,
    pub dead_chunks: u64,
    pub dead_objects: u64,
    pub packs_before: u64,
    pub stored_bytes_before: u64,
    /// Packs with no live chunk: deleted (or condemned, waiting for the grace period).
    pub packs_emptied: u64,
    /// Packs rewritten: mostly dead ones, and small ones regrouped together.
    pub packs_compacted: u64,
    pub packs_written: u64,
    pub packs_deleted: u64,
    /// Condemned packs still within the grace period.
    pub packs_waiting: u64,
    /// Bytes a run frees (all targets counted once): deleted packs minus new ones.
    pub bytes_freed: i64,
    pub stored_bytes_after: u64,
    pub tombstones: u64,
    pub orphan_objects: u64,
    /// Packs that marking or new snapshots kept from condemnation.
    pub packs_spared: u64,
    /// Temporary files killed runs left in the vault's tmp directory and on file targets.
    pub garbage_files_removed: u64,
    /// Day-old packs no index row names, written by this vault (authenticated footers) and
    /// holding no manifest: uploads of runs killed before they recorded them. Deleted.
    pub unindexed_deleted: u64,
    /// Day-old packs no index row names that were left: not written by this vault (reported,
    /// never deleted), or holding a manifest (a snapshot `recover` can bring back).
    pub unindexed_kept: Vec<String>,
    /// Packs prune may not judge: their footers could not be authenticated (format 1 packs
    /// read by `recover`) and `verify --full` has not checked them yet. Never deleted.
    pub packs_unvouched: u64,
    /// Targets the index backup could not be written to; nothing was deleted then.
    pub index_backup_failed: Vec<String>,
    /// Condemned packs S3 Object Lock still keeps: pending, deleted by a prune after their
    /// locks run out (docs/OBJECT-LOCK.md).
    pub packs_locked: u64,
    pub bytes_locked: u64,
    /// The earliest date a pending pack's lock runs out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
    /// Compaction was due but a locked target does not allow it (`allow_compaction`).
    pub compaction_skipped_for_locks: bool,
    /// Lock renewal of what the kept snapshots need, on locked targets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locks: Option<crate::vault::LockUpkeep>,
    /// What the catch-up before the mark found of other hosts' writes.
    pub caught_up: crate::vault::CatchUpReport,
}

pub use crate::snapshot::PruneRecord;

/// The name prune's progress goes under.
const JOB: &str = "prune";

/// How many small packs make prune regroup them.
const REGROUP_SMALL_PACKS: usize = 4;

/// The catch-up and the four phases of docs/PRUNE.md, in order; only the catch-up and the third
/// phase hold the writer lock.
pub fn prune(
    vault: &Vault,
    keys: &VaultKeys,
    options: &PruneOptions,
) -> Result<PruneReport, PruneError> {
    prune_watched(vault, keys, options, &Silent)
}

/// [`prune`], telling `progress` which phase it is in.
pub fn prune_watched(
    vault: &Vault,
    keys: &VaultKeys,
    options: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport, PruneError> {
    let _job = progress::Job::new(progress, JOB);
    let _only_prune = vault.prune_lease()?;
    let index = vault.index();
    check_index_vouched(index, options)?;
    // Other hosts' snapshots and packs join the index before the start set is taken: the mark
    // then keeps what every host's snapshots need, not only this host's (docs/PRUNE.md).
    let caught_up = {
        // The catch-up writes the index, so it holds the writer lock like any writer (a
        // running local backup finishes first); the mark that follows needs none.
        let _writer = vault.lock_waiting(options.lock_wait)?;
        vault.catch_up(keys, progress)?
    };
    let start = Start::take(index)?;
    let mut report = start.report(options.dry_run);
    report.caught_up = caught_up;
    let small = start.small_packs(vault.store_settings().pack_size);

    // 1. Mark.
    progress.phase(JOB, "mark: what the snapshots need", None, Unit::Objects);
    let reader = vault.reader(keys);
    let mut live = mark::mark(
        vault,
        &reader,
        &start.rows,
        Start::regroup_candidates(&small),
    )?;
    crate::hooks::point("prune-marked");
    let mut plan = plan::plan(index, &start, &live, &small, options, &mut report)?;
    plan.respect_locks(vault, &mut report);
    if options.dry_run {
        plan::estimate(vault, &start, &live, &plan, &mut report)?;
        return Ok(report);
    }

    // 2. Compact, outside the lock.
    progress.phase(JOB, "compact: rewrite and regroup", None, Unit::Packs);
    let mut copies = regroup::compact(vault, keys, &reader, &mut live, &plan.rewrite)?;
    report.packs_written = copies.len() as u64;
    crate::hooks::point("prune-compacted");

    // 3. Decide, under the writer lock.
    progress.phase(JOB, "decide (waits for running backups)", None, Unit::Packs);
    let lock = vault.lock_waiting(options.lock_wait)?;
    // Other hosts' writers hold shared locks on the targets: prune decides and deletes alone.
    let _targets = vault.lock_targets(
        keys,
        LockKind::Exclusive,
        "prune",
        LockTiming {
            wait: options.lock_wait,
            ..LockTiming::from_environment()
        },
    )?;
    crate::hooks::point("prune-locked");
    // What other hosts committed since the first catch-up is marked below like a local backup
    // that ran meanwhile; a pack gone meanwhile means another host pruned, and this run's
    // start set is stale.
    let late = vault.catch_up(keys, progress)?;
    if !late.packs_vanished.is_empty() {
        return Err(PruneError::PrunedElsewhere(late.packs_vanished.len()));
    }
    report.garbage_files_removed = collect::collect_garbage(vault);
    collect::collect_unindexed(vault, keys, &mut report)?;
    decide::mark_new_snapshots(vault, &reader, &start, &mut live)?;
    decide::write_prune_record(vault, keys, &lock, &reader, &mut live, &mut report)?;
    let candidates = plan.emptied.iter().chain(plan.rewrite.iter()).copied();
    let condemned = decide::condemn(index, &start, &live, candidates, &mut copies, &mut report)?;
    crate::hooks::point("prune-recorded");
    decide::apply(index, &start, &live, &condemned, &copies, &mut report)?;
    crate::hooks::point("prune-condemned");
    // Locks of what the kept snapshots need are renewed; condemned packs are left to expire.
    report.locks = vault.renew_locks_if_any()?;
    // An index backup that no longer needs the condemned packs, before any is deleted: a
    // recover from it never meets a dangling row.
    let failed = crate::vault::index_backup::upload_index_backup(vault, keys, &lock)?;
    if !failed.is_empty() {
        report.index_backup_failed = failed;
        report.packs_waiting = index.condemned_packs()?.len() as u64;
        report.stored_bytes_after = stored_bytes(index)?;
        return Ok(report);
    }

    // 4. Delete.
    progress.phase(JOB, "delete", None, Unit::Packs);
    delete::delete_condemned(vault, &start, &copies, options.grace, &mut report)?;
    report.stored_bytes_after = stored_bytes(index)?;
    drop(lock);
    Ok(report)
}

/// An index of unknown origin is judged only when the user vouches for it; the vouch is
/// remembered (not by a dry run).
fn check_index_vouched(index: &Index, options: &PruneOptions) -> Result<(), PruneError> {
    match index.meta("origin")?.as_deref() {
        Some(crate::index::ORIGIN_UNKNOWN) | None if !options.trust_index => {
            return Err(PruneError::IndexNotVouched);
        }
        Some(crate::index::ORIGIN_UNKNOWN) | None if !options.dry_run => {
            index.set_meta("origin", crate::index::ORIGIN_VOUCHED)?;
        }
        _ => {}
    }
    Ok(())
}

/// The state at the start, the *start set* of docs/PRUNE.md: only chunks in packs that exist
/// now may be judged dead (a backup running meanwhile writes new packs; the prune lease keeps
/// other prunes out).
struct Start {
    rows: Vec<SnapshotRow>,
    packs: Vec<PackRow>,
    judged: HashSet<i64>,
    /// Only packs whose contents this vault wrote or authenticated may be condemned: the rows
    /// of any other pack came from a footer anyone with the public key could have written.
    unvouched: HashSet<i64>,
    names: HashMap<i64, String>,
}

impl Start {
    fn take(index: &Index) -> Result<Start, IndexError> {
        let rows = index.snapshots(None, None, None)?;
        let packs = index.packs()?;
        Ok(Start {
            rows,
            judged: packs.iter().map(|p| p.id).collect(),
            unvouched: packs
                .iter()
                .filter(|p| !p.provenance.vouched())
                .map(|p| p.id)
                .collect(),
            names: packs.iter().map(|p| (p.id, p.name.clone())).collect(),
            packs,
        })
    }

    /// Small packs (daily increments, each compressed on its own) are regrouped with each
    /// other once there are a few; waiting for several keeps a quiet vault from being
    /// rewritten by every prune.
    fn small_packs(&self, pack_size: u64) -> Vec<i64> {
        let small_below = pack_size / 2;
        self.packs
            .iter()
            .filter(|p| p.size < small_below)
            .map(|p| p.id)
            .collect()
    }

    /// The report's view of the start.
    fn report(&self, dry_run: bool) -> PruneReport {
        PruneReport {
            dry_run,
            snapshots: self.rows.len() as u64,
            packs_before: self.packs.len() as u64,
            stored_bytes_before: self.packs.iter().map(|p| p.size).sum(),
            packs_unvouched: self.unvouched.len() as u64,
            ..PruneReport::default()
        }
    }

    /// The packs the mark should record grouping keys for.
    fn regroup_candidates(small: &[i64]) -> HashSet<i64> {
        if small.len() >= REGROUP_SMALL_PACKS {
            small.iter().copied().collect()
        } else {
            HashSet::new()
        }
    }
}

fn stored_bytes(index: &Index) -> Result<u64, IndexError> {
    Ok(index.packs()?.iter().map(|p| p.size).sum())
}

fn sorted(ids: impl IntoIterator<Item = i64>) -> Vec<i64> {
    let mut v: Vec<i64> = ids.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    v
}
