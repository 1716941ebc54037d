//! `gitvault prune`: reclaims what no snapshot needs. docs/PRUNE.md states the protocol and why
//! it cannot lose a kept snapshot, even with backups running and prune killed at any point.
//!
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

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::crypto::{ChunkId, VaultKeys};
use crate::git::objects::{ObjectError, ObjectSource, walk};
use crate::index::{ChunkRow, IndexError, PruneChanges, SnapshotRow};
use crate::provider::MetadataMap;
use crate::snapshot::{self, Manifest, ObjectEntry, ObjectKind, Oid, RefSet};
use crate::store::pack::FinishedPack;
use crate::store::{ChunkKind, ChunkStore, StoreError, pack_key};
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
    #[error("deleting condemned pack {pack} from {target}: {reason}")]
    Delete {
        pack: String,
        target: String,
        reason: String,
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
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            repack_below: 0.5,
            grace: Duration::ZERO,
            lock_wait: Duration::from_secs(3600),
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
    /// Packs rewritten because most of them was dead.
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
    /// Targets the index backup could not be written to; nothing was deleted then.
    pub index_backup_failed: Vec<String>,
}

/// The content of a prune record chunk.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PruneRecord {
    pub format: u32,
    pub time: chrono::DateTime<chrono::Utc>,
    /// Manifests (hex chunk ids) of forgotten snapshots still present in packs.
    pub forgotten: Vec<String>,
    /// Object map (hex chunk id) of live objects no kept snapshot's object map lists.
    pub orphan_objects: Option<String>,
}

/// What the mark found live.
#[derive(Default)]
struct Live {
    chunks: HashSet<ChunkId>,
    objects: HashSet<Oid>,
    /// Objects listed by the kept snapshots' own object maps.
    mapped: HashSet<Oid>,
}

struct MarkSource<'a, 'v> {
    vault: &'a Vault,
    store: &'a ChunkStore<'v>,
    live: &'a Live,
}

#[derive(Debug)]
enum MarkError {
    Object(ObjectError),
    Missing(Oid),
    Store(StoreError),
    Index(IndexError),
}

impl From<ObjectError> for MarkError {
    fn from(e: ObjectError) -> Self {
        MarkError::Object(e)
    }
}

impl std::fmt::Display for MarkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MarkError::Object(e) => write!(f, "{e}"),
            MarkError::Missing(oid) => write!(f, "git object {oid} is not in the vault"),
            MarkError::Store(e) => write!(f, "{e}"),
            MarkError::Index(e) => write!(f, "{e}"),
        }
    }
}

impl ObjectSource for MarkSource<'_, '_> {
    type Error = MarkError;
    fn read(&mut self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), MarkError> {
        let (kind, chunk) = self
            .vault
            .index()
            .git_object(oid)
            .map_err(MarkError::Index)?
            .ok_or(MarkError::Missing(*oid))?;
        let data = self.store.get(&chunk).map_err(MarkError::Store)?;
        Ok((kind, data))
    }
    fn known(&mut self, oid: &Oid) -> Result<bool, MarkError> {
        Ok(self.live.objects.contains(oid))
    }
}

impl Live {
    fn chunk(&mut self, store: &ChunkStore<'_>, id: ChunkId) -> Result<(), StoreError> {
        if self.chunks.insert(id)
            && let Some(parts) = store.list_parts(&id)?
        {
            self.chunks.extend(parts);
        }
        Ok(())
    }

    /// Marks everything one snapshot needs.
    fn snapshot(
        &mut self,
        vault: &Vault,
        store: &ChunkStore<'_>,
        row: &SnapshotRow,
    ) -> Result<(), PruneError> {
        let unreadable = |reason: String| PruneError::Unreadable {
            repo: row.repo.clone(),
            snapshot: row.id.clone(),
            reason,
        };
        self.chunk(store, row.manifest)?;
        let manifest = store
            .get(&row.manifest)
            .map_err(|e| e.to_string())
            .and_then(|b| Manifest::decode(&b).map_err(|e| e.to_string()))
            .map_err(unreadable)?;
        let refset_id = manifest
            .refset_id()
            .map_err(|e| unreadable(e.to_string()))?;
        self.chunk(store, refset_id)?;
        let refs = store
            .get(&refset_id)
            .map_err(|e| e.to_string())
            .and_then(|b| RefSet::decode(&b).map_err(|e| e.to_string()))
            .map_err(unreadable)?;
        for map in &manifest.object_maps {
            let id: ChunkId = map.parse().map_err(unreadable)?;
            self.chunk(store, id)?;
            let entries = store
                .get(&id)
                .map_err(|e| e.to_string())
                .and_then(|b| snapshot::decode_object_map(&b).map_err(|e| e.to_string()))
                .map_err(unreadable)?;
            self.mapped.extend(entries.iter().map(|e| e.oid));
        }
        if let Some(map) = &manifest.lfs {
            let id: ChunkId = map.parse().map_err(unreadable)?;
            self.chunk(store, id)?;
            let entries = store
                .get(&id)
                .map_err(|e| e.to_string())
                .and_then(|b| crate::lfs::decode_map(&b).map_err(|e| e.to_string()))
                .map_err(unreadable)?;
            for e in entries.iter().filter(|e| e.chunk != crate::lfs::MISSING) {
                self.chunk(store, e.chunk)?;
            }
        }
        if let Some(meta) = &manifest.metadata {
            let id: ChunkId = meta.parse().map_err(unreadable)?;
            self.chunk(store, id)?;
            let map: MetadataMap = store
                .get(&id)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
                .map_err(unreadable)?;
            for doc in map.documents.values() {
                let id: ChunkId = doc.parse().map_err(unreadable)?;
                self.chunk(store, id)?;
            }
        }
        let mut tips: Vec<Oid> = refs.refs.values().copied().collect();
        tips.sort();
        tips.dedup();
        let reached = {
            let mut source = MarkSource {
                vault,
                store,
                live: self,
            };
            walk(&mut source, &tips).map_err(|e| unreadable(e.to_string()))?
        };
        for r in reached {
            let (_, chunk) = vault
                .index()
                .git_object(&r.oid)?
                .ok_or_else(|| unreadable(format!("git object {} is not in the vault", r.oid)))?;
            self.objects.insert(r.oid);
            self.chunk(store, chunk)?;
        }
        Ok(())
    }
}

/// Bytes of a pack: (all chunks, live chunks).
#[derive(Default, Clone, Copy)]
struct Occupancy {
    total: u64,
    live: u64,
}

pub fn prune(
    vault: &Vault,
    keys: &VaultKeys,
    options: &PruneOptions,
) -> Result<PruneReport, PruneError> {
    let index = vault.index();
    let mut report = PruneReport {
        dry_run: options.dry_run,
        ..PruneReport::default()
    };
    // The state at the start: what may be judged dead is only what existed now.
    let rows = index.snapshots(None, None, None)?;
    let seen_rows: HashSet<i64> = rows.iter().map(|r| r.row_id).collect();
    let chunks_then: Vec<ChunkRow> = index.all_chunks()?;
    let oids_then = index.all_git_oids()?;
    let packs = index.packs()?;
    report.packs_before = packs.len() as u64;
    report.stored_bytes_before = packs.iter().map(|p| p.size).sum();
    report.snapshots = rows.len() as u64;

    // 1. Mark.
    let reader = vault.reader(keys);
    let mut live = Live::default();
    for row in &rows {
        live.snapshot(vault, &reader, row)?;
    }
    crate::hooks::point("prune-marked");

    let pack_names: HashMap<i64, String> = packs.iter().map(|p| (p.id, p.name.clone())).collect();
    let mut occupancy: HashMap<i64, Occupancy> = HashMap::new();
    for c in &chunks_then {
        let o = occupancy.entry(c.pack_id).or_default();
        o.total += u64::from(c.len);
        if live.chunks.contains(&c.id) || c.kind == ChunkKind::PruneRecord as u8 {
            o.live += u64::from(c.len);
        }
    }
    let emptied: Vec<i64> = occupancy
        .iter()
        .filter(|(_, o)| o.live == 0)
        .map(|(id, _)| *id)
        .collect();
    let sparse: Vec<i64> = occupancy
        .iter()
        .filter(|(_, o)| o.live > 0 && (o.live as f64) < options.repack_below * o.total as f64)
        .map(|(id, _)| *id)
        .collect();
    report.live_chunks = live.chunks.len() as u64;
    report.dead_chunks = chunks_then
        .iter()
        .filter(|c| !live.chunks.contains(&c.id) && c.kind != ChunkKind::PruneRecord as u8)
        .count() as u64;
    report.dead_objects = oids_then
        .iter()
        .filter(|o| !live.objects.contains(o))
        .count() as u64;
    if options.dry_run {
        let size: HashMap<i64, u64> = packs.iter().map(|p| (p.id, p.size)).collect();
        report.packs_emptied = emptied.len() as u64;
        report.packs_compacted = sparse.len() as u64;
        let freed: u64 = emptied
            .iter()
            .map(|id| size.get(id).copied().unwrap_or(0))
            .sum();
        let compacted: u64 = sparse
            .iter()
            .map(|id| {
                let o = occupancy.get(id).copied().unwrap_or_default();
                let s = size.get(id).copied().unwrap_or(0);
                // The dead share of a compacted pack is freed (estimated by raw bytes).
                s - s * o.live / o.total.max(1)
            })
            .sum();
        report.bytes_freed = (freed + compacted) as i64;
        report.stored_bytes_after = report.stored_bytes_before - freed - compacted;
        return Ok(report);
    }

    // 2. Compact, outside the lock: copies of the live chunks of sparse packs.
    let mut copied: HashSet<ChunkId> = HashSet::new();
    let mut compacted: Vec<(FinishedPack, Vec<String>)> = Vec::new();
    if !sparse.is_empty() {
        let mut writer = vault.compaction_store(keys);
        let sparse_set: HashSet<i64> = sparse.iter().copied().collect();
        // In the order they lie in the packs: each frame is decompressed once, and chunks keep
        // the neighbours they were grouped with for compression.
        let to_copy: Vec<&ChunkRow> = chunks_then
            .iter()
            .filter(|c| sparse_set.contains(&c.pack_id) && live.chunks.contains(&c.id))
            .collect();
        for c in to_copy {
            let (loc, data) = reader.read_chunk(&c.id)?;
            writer.put_copy(c.id, loc.kind, &data)?;
            copied.insert(c.id);
        }
        writer.flush()?;
        compacted = writer.take_unindexed();
        report.packs_written = compacted.len() as u64;
    }
    crate::hooks::point("prune-compacted");

    // 3. Decide, under the writer lock.
    let lock = vault.lock_waiting(options.lock_wait)?;
    crate::hooks::point("prune-locked");
    for row in index.snapshots(None, None, None)? {
        if !seen_rows.contains(&row.row_id) {
            live.snapshot(vault, &reader, &row)?;
        }
    }
    let chunks_now = index.all_chunks()?;
    let existed: HashSet<ChunkId> = chunks_then.iter().map(|c| c.id).collect();
    let is_dead = |c: &ChunkRow| {
        existed.contains(&c.id)
            && !live.chunks.contains(&c.id)
            && c.kind != ChunkKind::PruneRecord as u8
    };
    let mut condemned = Vec::new();
    let mut spared = 0;
    let mut by_pack: HashMap<i64, Vec<&ChunkRow>> = HashMap::new();
    for c in &chunks_now {
        by_pack.entry(c.pack_id).or_default().push(c);
    }
    for id in emptied.iter().chain(sparse.iter()) {
        let inside = by_pack.get(id).map(Vec::as_slice).unwrap_or(&[]);
        if inside.iter().all(|c| is_dead(c) || copied.contains(&c.id)) {
            if let Some(name) = pack_names.get(id) {
                condemned.push(name.clone());
            }
        } else {
            spared += 1;
        }
    }
    report.packs_spared = spared;
    report.packs_emptied = emptied.len() as u64;
    report.packs_compacted = sparse.len() as u64;
    let dead_chunks: Vec<ChunkId> = chunks_now
        .iter()
        .filter(|c| is_dead(c))
        .map(|c| c.id)
        .collect();
    let dead_objects: Vec<Oid> = oids_then
        .into_iter()
        .filter(|o| !live.objects.contains(o))
        .collect();
    report.dead_chunks = dead_chunks.len() as u64;
    report.dead_objects = dead_objects.len() as u64;

    // The prune record, durable before the index forgets anything.
    let kept: HashSet<ChunkId> = index
        .snapshots(None, None, None)?
        .iter()
        .map(|r| r.manifest)
        .collect();
    // Forgotten manifests may outlive their rows inside packs that stay; earlier records'
    // entries are carried forward because the newest record is the only one recover reads.
    let mut forgotten: std::collections::BTreeSet<String> = chunks_now
        .iter()
        .filter(|c| c.kind == ChunkKind::Manifest as u8 && !kept.contains(&c.id))
        .map(|c| c.id.to_hex())
        .collect();
    if let Some(previous) = newest_record(vault, &reader)? {
        forgotten.extend(
            previous
                .forgotten
                .into_iter()
                .filter(|m| m.parse::<ChunkId>().is_ok_and(|id| !kept.contains(&id))),
        );
    }
    let forgotten: Vec<String> = forgotten.into_iter().collect();
    let mut orphans: Vec<ObjectEntry> = Vec::new();
    for oid in live.objects.difference(&live.mapped) {
        if let Some((kind, chunk)) = index.git_object(oid)? {
            orphans.push(ObjectEntry {
                oid: *oid,
                kind,
                chunk,
            });
        }
    }
    orphans.sort_by_key(|e| e.oid);
    report.tombstones = forgotten.len() as u64;
    report.orphan_objects = orphans.len() as u64;
    {
        let mut store = vault.store(keys, &lock);
        let orphan_objects = if orphans.is_empty() {
            None
        } else {
            Some(
                store
                    .put(ChunkKind::ObjectMap, &snapshot::encode_object_map(&orphans))?
                    .to_hex(),
            )
        };
        let record = PruneRecord {
            format: 1,
            time: chrono::Utc::now(),
            forgotten,
            orphan_objects,
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        store.put_chunk(ChunkKind::PruneRecord, &bytes)?;
        store.flush()?;
    }
    crate::hooks::point("prune-recorded");
    index.apply_prune(&PruneChanges {
        condemned: &condemned,
        dead_chunks: &dead_chunks,
        dead_objects: &dead_objects,
        compacted: &compacted,
    })?;
    crate::hooks::point("prune-condemned");
    // An index backup that no longer needs the condemned packs, before any is deleted: a
    // recover from it never meets a dangling row.
    let failed = crate::replicas::upload_index_backup(vault, keys, &lock)?;
    if !failed.is_empty() {
        report.index_backup_failed = failed;
        report.packs_waiting = index.condemned_packs()?.len() as u64;
        report.stored_bytes_after = index.packs()?.iter().map(|p| p.size).sum();
        return Ok(report);
    }

    // 4. Delete what was condemned long enough ago (this run's too when the grace is zero).
    let now = chrono::Utc::now().timestamp_millis();
    let grace = options.grace.as_millis() as i64;
    let sizes: HashMap<String, u64> = index
        .packs()?
        .into_iter()
        .map(|p| (p.name, p.size))
        .collect();
    let mut freed: i64 = -(compacted.iter().map(|(p, _)| p.size as i64).sum::<i64>());
    let readers = vault.readers_exclusive()?;
    for (name, since) in index.condemned_packs()? {
        if now - since < grace {
            report.packs_waiting += 1;
            continue;
        }
        // The second check: nothing may point into a pack that is deleted.
        if index.chunks_in_pack(&name)? > 0 {
            tracing::warn!(pack = %name, "a condemned pack is referenced again; kept");
            report.packs_spared += 1;
            continue;
        }
        for target in vault.targets() {
            match target.delete(&pack_key(&name)) {
                Ok(()) => {}
                Err(crate::target::TargetError::NotFound { .. }) => {}
                Err(e) => {
                    return Err(PruneError::Delete {
                        pack: name.clone(),
                        target: target.name().to_string(),
                        reason: e.to_string(),
                    });
                }
            }
            crate::hooks::point("prune-deleting");
        }
        index.drop_pack(&name)?;
        report.packs_deleted += 1;
        freed += sizes.get(&name).copied().unwrap_or(0) as i64;
    }
    drop(readers);
    report.bytes_freed = freed;
    report.stored_bytes_after = index.packs()?.iter().map(|p| p.size).sum();
    drop(lock);
    Ok(report)
}

/// The newest prune record in the vault, if any (recover applies it).
pub fn newest_record(
    vault: &Vault,
    store: &ChunkStore<'_>,
) -> Result<Option<PruneRecord>, PruneError> {
    let mut newest: Option<PruneRecord> = None;
    for c in vault.index().all_chunks()? {
        if c.kind != ChunkKind::PruneRecord as u8 {
            continue;
        }
        let Ok(record) = serde_json::from_slice::<PruneRecord>(&store.get(&c.id)?) else {
            tracing::warn!(chunk = %c.id, "unreadable prune record");
            continue;
        };
        if newest.as_ref().is_none_or(|n| record.time > n.time) {
            newest = Some(record);
        }
    }
    Ok(newest)
}
