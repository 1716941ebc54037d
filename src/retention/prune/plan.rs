//! Between mark and compaction: how much of each pack the mark found live, and from that which
//! packs are emptied (nothing live) and which are rewritten (mostly dead, or small ones
//! regrouped together). A dry run stops here with an estimate.

use std::collections::HashMap;

use crate::index::{Index, IndexError};

use super::mark::Live;
use super::{PruneOptions, PruneReport, Start, sorted};

/// Bytes of a pack: (all chunks, live chunks).
#[derive(Default, Clone, Copy)]
struct Occupancy {
    total: u64,
    live: u64,
}

/// What the phases after the mark act on.
pub(super) struct Plan {
    occupancy: HashMap<i64, Occupancy>,
    /// Packs with no live chunk.
    pub(super) emptied: Vec<i64>,
    /// Packs to rewrite, in id order (the order compaction reads them).
    pub(super) rewrite: Vec<i64>,
}

impl Plan {
    /// No compaction on a locked target that does not allow it: the packs it replaces would
    /// stay, locked and paid for, until their locks run out (storage doubles for the period).
    pub(super) fn respect_locks(&mut self, vault: &crate::vault::Vault, report: &mut PruneReport) {
        if !self.rewrite.is_empty() && !vault.compaction_allowed() {
            self.rewrite.clear();
            report.packs_compacted = 0;
            report.compaction_skipped_for_locks = true;
        }
    }
}

/// Measures every judged pack's live share and chooses the packs to empty and to rewrite.
pub(super) fn plan(
    index: &Index,
    start: &Start,
    live: &Live,
    small: &[i64],
    options: &PruneOptions,
    report: &mut PruneReport,
) -> Result<Plan, IndexError> {
    let mut occupancy: HashMap<i64, Occupancy> = HashMap::new();
    index.for_each_chunk(|c| {
        if !start.judged.contains(&c.pack_id) {
            return;
        }
        let o = occupancy.entry(c.pack_id).or_default();
        o.total += u64::from(c.len);
        if live.has(&c.id) {
            o.live += u64::from(c.len);
        } else {
            report.dead_chunks += 1;
        }
    })?;
    report.live_chunks = live.chunks.len() as u64;
    let emptied = sorted(
        occupancy
            .iter()
            .filter(|(_, o)| o.live == 0)
            .map(|(id, _)| *id),
    );
    let sparse = sorted(
        occupancy
            .iter()
            .filter(|(_, o)| o.live > 0 && (o.live as f64) < options.repack_below * o.total as f64)
            .map(|(id, _)| *id),
    );
    let mut rewrite: Vec<i64> = sparse.clone();
    if !live.regroup.is_empty() {
        rewrite.extend(
            small
                .iter()
                .filter(|id| occupancy.get(id).is_some_and(|o| o.live > 0)),
        );
    }
    let rewrite = sorted(
        rewrite
            .into_iter()
            .filter(|id| !start.unvouched.contains(id)),
    );
    let emptied: Vec<i64> = emptied
        .into_iter()
        .filter(|id| !start.unvouched.contains(id))
        .collect();
    // One small pack alone gains nothing from being rewritten.
    let rewrite = if rewrite.len() == 1 && sparse.is_empty() {
        Vec::new()
    } else {
        rewrite
    };
    report.packs_emptied = emptied.len() as u64;
    report.packs_compacted = rewrite.len() as u64;
    Ok(Plan {
        occupancy,
        emptied,
        rewrite,
    })
}

/// A dry run's answer: what deleting the emptied packs and rewriting the others would free.
/// Packs still under Object Lock would be pending, not freed (one lock read each).
pub(super) fn estimate(
    vault: &crate::vault::Vault,
    start: &Start,
    live: &Live,
    plan: &Plan,
    report: &mut PruneReport,
) -> Result<(), super::PruneError> {
    let index = vault.index();
    report.dead_objects = index.count_dead_objects(&|o| live.walked(o))?;
    let size: HashMap<i64, u64> = start.packs.iter().map(|p| (p.id, p.size)).collect();
    let emptied = plan.emptied.iter().filter_map(|id| {
        let name = start.names.get(id)?;
        Some((name.as_str(), size.get(id).copied().unwrap_or(0)))
    });
    let locked = super::delete::count_locked(vault, emptied, report)?;
    let freed: u64 = plan
        .emptied
        .iter()
        .map(|id| size.get(id).copied().unwrap_or(0))
        .sum::<u64>()
        - locked;
    let compacted: u64 = plan
        .rewrite
        .iter()
        .map(|id| {
            let o = plan.occupancy.get(id).copied().unwrap_or_default();
            let s = size.get(id).copied().unwrap_or(0);
            // The dead share of a rewritten pack is freed (estimated by raw bytes).
            s - s * o.live / o.total.max(1)
        })
        .sum();
    report.bytes_freed = (freed + compacted) as i64;
    report.stored_bytes_after = report.stored_bytes_before - freed - compacted;
    Ok(())
}
