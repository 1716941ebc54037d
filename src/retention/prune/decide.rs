//! Phase 3, **decide** (under the writer lock): snapshots recorded since the mark are marked
//! too, the prune record is made durable, the packs to condemn are chosen, and one index
//! transaction applies it all.

use std::collections::{BTreeSet, HashSet};

use crate::crypto::{ChunkId, VaultKeys};
use crate::index::{ChunkRow, Index, IndexError, PruneChanges};
use crate::snapshot::{self, Oid, PruneRecord};
use crate::store::{ChunkKind, ChunkReader};
use crate::vault::{Vault, WriteLock};

use super::mark::{Live, WALKED};
use super::regroup::Compacted;
use super::{PruneError, PruneReport, Start, sorted};

/// Marks the snapshots recorded since the start (by backups that ran during phases 1 and 2).
pub(super) fn mark_new_snapshots(
    vault: &Vault,
    reader: &ChunkReader<'_>,
    start: &Start,
    live: &mut Live,
) -> Result<(), PruneError> {
    let seen: HashSet<i64> = start.rows.iter().map(|r| r.row_id).collect();
    for row in vault.index().snapshots(None, None, None)? {
        if !seen.contains(&row.row_id) {
            live.snapshot(vault, reader, &row)?;
        }
    }
    Ok(())
}

/// Writes the prune record and flushes it (durable on the targets) before the index forgets
/// anything: the manifests no snapshot row names, and the object map of live objects no kept
/// snapshot's map lists.
pub(super) fn write_prune_record(
    vault: &Vault,
    keys: &VaultKeys,
    lock: &WriteLock,
    reader: &ChunkReader<'_>,
    live: &mut Live,
    report: &mut PruneReport,
) -> Result<(), PruneError> {
    let index = vault.index();
    let forgotten = forgotten_manifests(index, reader)?;
    let orphans = live.objects.values().filter(|f| **f == WALKED).count() as u64;
    report.tombstones = forgotten.len() as u64;
    report.orphan_objects = orphans;
    let mut store = vault.store(keys, lock);
    let orphan_objects = if orphans == 0 {
        None
    } else {
        let mut map = OrphanMap {
            index,
            live,
            after: Oid([0; 20]),
            buf: vec![snapshot::OBJECT_MAP_VERSION],
            pos: 0,
            done: false,
            error: None,
        };
        let stored = store.put_reader(ChunkKind::ObjectMap, &mut map);
        if let Some(e) = map.error.take() {
            return Err(e.into());
        }
        Some(stored?.0.to_hex())
    };
    let record = PruneRecord {
        format: 1,
        time: chrono::Utc::now(),
        forgotten,
        orphan_objects,
    };
    let bytes = serde_json::to_vec(&record).unwrap_or_default();
    let id = store.put_chunk(ChunkKind::PruneRecord, &bytes)?;
    store.flush()?;
    // This host's own prune explains no pack missing later (it updates its index itself):
    // only another host's newer record may (`Vault::catch_up`).
    index.set_meta(crate::vault::catch_up::SEEN_PRUNE_RECORD, &id.to_hex())?;
    // The object map may have been deduplicated against a chunk the mark found dead (the
    // previous record's identical map): what the new record names must stay.
    if let Some(map) = &record.orphan_objects
        && let Ok(id) = map.parse::<ChunkId>()
    {
        live.chunk(reader, id)?;
    }
    Ok(())
}

/// Manifests present in packs that no snapshot row names. Forgotten manifests may outlive
/// their rows inside packs that stay; earlier records' entries are carried forward because
/// the newest record is the only one recover reads.
fn forgotten_manifests(index: &Index, reader: &ChunkReader<'_>) -> Result<Vec<String>, PruneError> {
    let kept: HashSet<ChunkId> = index
        .snapshots(None, None, None)?
        .iter()
        .map(|r| r.manifest)
        .collect();
    let mut forgotten: BTreeSet<String> = index
        .chunks_of_kind(ChunkKind::Manifest as u8)?
        .into_iter()
        .filter(|id| !kept.contains(id))
        .map(|id| id.to_hex())
        .collect();
    if let Some((_, previous)) = crate::snapshot::newest_prune_record(index, reader)? {
        forgotten.extend(
            previous
                .forgotten
                .into_iter()
                .filter(|m| m.parse::<ChunkId>().is_ok_and(|id| !kept.contains(&id))),
        );
    }
    Ok(forgotten.into_iter().collect())
}

/// The object map of the live objects no kept snapshot's map lists, encoded page by page (in
/// id order, so that an unchanged map deduplicates) as the store pulls it: at 10 M objects the
/// whole map would be half a gigabyte.
struct OrphanMap<'a> {
    index: &'a Index,
    live: &'a Live,
    after: Oid,
    buf: Vec<u8>,
    pos: usize,
    done: bool,
    error: Option<IndexError>,
}

impl std::io::Read for OrphanMap<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            if self.done {
                return Ok(0);
            }
            self.buf.clear();
            self.pos = 0;
            let page = match self.index.git_objects_after(&self.after, 10_000) {
                Ok(page) => page,
                Err(e) => {
                    self.error = Some(e);
                    return Err(std::io::Error::other("reading the index failed"));
                }
            };
            let Some(last) = page.last() else {
                self.done = true;
                continue;
            };
            self.after = last.oid;
            for e in page
                .iter()
                .filter(|e| self.live.objects.get(&e.oid) == Some(&WALKED))
            {
                snapshot::push_object_entry(&mut self.buf, e);
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Whether a chunk row is dead: its pack was there at the start and nothing marks it.
fn is_dead(start: &Start, live: &Live, c: &ChunkRow) -> bool {
    start.judged.contains(&c.pack_id) && !live.has(&c.id)
}

/// Whether a chunk was copied by compaction. The copies' footers must be sorted by id.
fn was_copied(copies: &[Compacted], id: &ChunkId) -> bool {
    copies
        .iter()
        .any(|(p, _)| p.footer.entries.binary_search_by_key(id, |e| e.id).is_ok())
}

/// The packs to condemn: of those emptied or rewritten, each whose chunk rows **now** are all
/// dead or copied; the others are spared (a backup since the mark refers to them).
pub(super) fn condemn(
    index: &Index,
    start: &Start,
    live: &Live,
    candidates: impl Iterator<Item = i64>,
    copies: &mut [Compacted],
    report: &mut PruneReport,
) -> Result<Vec<String>, PruneError> {
    // The copies' footers, sorted by id, answer "was it copied" without a second set of ids
    // (the order of footer entries in memory means nothing to `apply_prune`).
    for (pack, _) in copies.iter_mut() {
        pack.footer.entries.sort_unstable_by_key(|e| e.id);
    }
    let mut condemned = Vec::new();
    let mut spared = 0;
    for id in candidates {
        if start.unvouched.contains(&id) {
            continue;
        }
        if index.all_chunks_of_pack(id, |c| is_dead(start, live, c) || was_copied(copies, &c.id))? {
            if let Some(name) = start.names.get(&id) {
                condemned.push(name.clone());
            }
        } else {
            spared += 1;
        }
    }
    report.packs_spared = spared;
    Ok(condemned)
}

/// The one index transaction: dead rows go, copies are recorded and take over, packs are
/// condemned.
pub(super) fn apply(
    index: &Index,
    start: &Start,
    live: &Live,
    condemned: &[String],
    copies: &[Compacted],
    report: &mut PruneReport,
) -> Result<(), PruneError> {
    let judged_packs = sorted(start.judged.iter().copied());
    let compacted_records: Vec<_> = copies
        .iter()
        .map(|(p, targets)| (p.record(), targets.clone()))
        .collect();
    let counts = index.apply_prune(&PruneChanges {
        condemned,
        judged_packs: &judged_packs,
        chunk_dead: &|c| is_dead(start, live, c),
        object_live: &|o| live.walked(o),
        compacted: &compacted_records,
    })?;
    report.dead_chunks = counts.dead_chunks;
    report.dead_objects = counts.dead_objects;
    report.packs_emptied += counts.unreferenced_packs;
    Ok(())
}
