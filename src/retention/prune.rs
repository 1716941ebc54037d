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

use serde::Serialize;

use crate::crypto::{ChunkId, VaultKeys};
use crate::git::objects::{GroupKey, ObjectError, ObjectSource, Reached, walk_visit};
use crate::index::{ChunkRow, IndexError, ObjectChunk, PruneChanges, SnapshotRow};
use crate::provider::MetadataMap;
use crate::snapshot::{self, Manifest, ObjectKind, Oid, RefSet};
use crate::store::pack::FinishedPack;
use crate::store::{ChunkKind, ChunkReader, StoreError, pack_key};
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
    Spill(String),
    #[error(
        "this index was built before gitvault authenticated what it reads from targets, and may have been recovered from a forged index backup; prune trusts it only when told: run `gitvault recover` again into a new directory, or `gitvault prune --trust-index` if this index was made by `init` on this host or recovered from a target you trust"
    )]
    IndexNotVouched,
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
}

pub use crate::snapshot::PruneRecord;

/// How many small packs make prune regroup them.
const REGROUP_SMALL_PACKS: usize = 4;

const WALKED: u8 = 1;
const MAPPED: u8 = 2;

/// What the mark found live.
///
/// Memory is what limits prune on large vaults, so chunk liveness is kept as 64-bit prefixes
/// of the (keyed, uniformly distributed) chunk ids. A prefix shared by a live and a dead chunk
/// only keeps the dead one for another run (about n²/2⁶⁵ such pairs: 3·10⁻⁶ at 10 M chunks);
/// it never lets a live chunk be judged dead. Objects need exact ids: the walk stops at an
/// object it has seen, so a false "seen" would leave what lies below unmarked.
#[derive(Default)]
struct Live {
    chunks: HashSet<u64>,
    /// Non-object chunks seen (manifests, maps, documents): exact, so that each is expanded
    /// once.
    others: HashSet<ChunkId>,
    /// WALKED: reached from a kept snapshot's refs; MAPPED: listed by a kept object map.
    objects: HashMap<Oid, u8>,
    /// Packs to be regrouped: the walk records the grouping keys of their objects' chunks.
    regroup: HashSet<i64>,
    keys: HashMap<u64, GroupKey>,
}

fn prefix(id: &ChunkId) -> u64 {
    let mut p = [0u8; 8];
    p.copy_from_slice(&id.0[..8]);
    u64::from_le_bytes(p)
}

struct MarkSource<'a, 'v> {
    vault: &'a Vault,
    store: &'a ChunkReader<'v>,
    live: &'a mut Live,
    /// The object `read` just looked up: the visit that follows needs its chunk too.
    last: Option<(Oid, ObjectChunk)>,
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

impl MarkSource<'_, '_> {
    fn lookup(&self, oid: &Oid) -> Result<ObjectChunk, MarkError> {
        self.vault
            .index()
            .git_object_chunk(oid)
            .map_err(MarkError::Index)?
            .ok_or(MarkError::Missing(*oid))
    }

    fn visit(&mut self, reached: Reached) -> Result<(), MarkError> {
        let object = match self.last.take() {
            Some((oid, object)) if oid == reached.oid => object,
            _ => self.lookup(&reached.oid)?,
        };
        *self.live.objects.entry(reached.oid).or_insert(0) |= WALKED;
        self.live
            .object_chunk(self.store, &object, reached.group_key())
            .map_err(MarkError::Store)
    }
}

impl ObjectSource for MarkSource<'_, '_> {
    type Error = MarkError;
    fn read(&mut self, oid: &Oid) -> Result<(ObjectKind, Vec<u8>), MarkError> {
        let object = self.lookup(oid)?;
        let data = self.store.get(&object.chunk).map_err(MarkError::Store)?;
        self.last = Some((*oid, object));
        Ok((object.kind, data))
    }
    fn known(&mut self, oid: &Oid) -> Result<bool, MarkError> {
        Ok(self
            .live
            .objects
            .get(oid)
            .is_some_and(|flags| flags & WALKED != 0))
    }
}

impl Live {
    fn has(&self, id: &ChunkId) -> bool {
        self.chunks.contains(&prefix(id))
    }

    /// Marks a chunk that is not a git object's, with the parts of a chunk list.
    fn chunk(&mut self, store: &ChunkReader<'_>, id: ChunkId) -> Result<(), StoreError> {
        if self.others.insert(id) {
            self.chunks.insert(prefix(&id));
            if let Some(parts) = store.list_parts(&id)? {
                self.chunks.extend(parts.iter().map(prefix));
            }
        }
        Ok(())
    }

    /// Marks a git object's chunk; each object is visited once.
    fn object_chunk(
        &mut self,
        store: &ChunkReader<'_>,
        object: &ObjectChunk,
        key: GroupKey,
    ) -> Result<(), StoreError> {
        let p = prefix(&object.chunk);
        self.chunks.insert(p);
        let regroup = self.regroup.contains(&object.pack_id);
        if regroup {
            self.keys.insert(p, key);
        }
        // Expanded even when the prefix was there already: that may be another chunk's.
        if object.chunk_kind == ChunkKind::ChunkList as u8
            && let Some(parts) = store.list_parts(&object.chunk)?
        {
            for part in &parts {
                self.chunks.insert(prefix(part));
                self.keys.insert(prefix(part), key);
            }
        }
        Ok(())
    }

    /// Marks everything one snapshot needs.
    fn snapshot(
        &mut self,
        vault: &Vault,
        store: &ChunkReader<'_>,
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
            for e in entries {
                *self.objects.entry(e.oid).or_insert(0) |= MAPPED;
            }
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
        let mut source = MarkSource {
            vault,
            store,
            live: self,
            last: None,
        };
        walk_visit(&mut source, &tips, |source, reached| source.visit(reached))
            .map_err(|e| unreadable(e.to_string()))
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
    let _only_prune = vault.prune_lease()?;
    let index = vault.index();
    match index.meta("origin")?.as_deref() {
        Some(crate::index::ORIGIN_UNKNOWN) | None if !options.trust_index => {
            return Err(PruneError::IndexNotVouched);
        }
        Some(crate::index::ORIGIN_UNKNOWN) | None if !options.dry_run => {
            index.set_meta("origin", crate::index::ORIGIN_VOUCHED)?;
        }
        _ => {}
    }
    let mut report = PruneReport {
        dry_run: options.dry_run,
        ..PruneReport::default()
    };
    // The state at the start: only chunks in packs that exist now may be judged dead (a
    // backup running meanwhile writes new packs; the prune lease keeps other prunes out).
    let rows = index.snapshots(None, None, None)?;
    let seen_rows: HashSet<i64> = rows.iter().map(|r| r.row_id).collect();
    let packs = index.packs()?;
    let judged: HashSet<i64> = packs.iter().map(|p| p.id).collect();
    // Only packs whose contents this vault wrote or authenticated may be condemned: the rows
    // of any other pack came from a footer anyone with the public key could have written.
    let unvouched: HashSet<i64> = packs
        .iter()
        .filter(|p| !p.provenance.vouched())
        .map(|p| p.id)
        .collect();
    report.packs_unvouched = unvouched.len() as u64;
    report.packs_before = packs.len() as u64;
    report.stored_bytes_before = packs.iter().map(|p| p.size).sum();
    report.snapshots = rows.len() as u64;
    // Small packs (daily increments, each compressed on its own) are regrouped with each
    // other once there are a few; waiting for several keeps a quiet vault from being
    // rewritten by every prune.
    let small_below = vault.store_settings().pack_size / 2;
    let small: Vec<i64> = packs
        .iter()
        .filter(|p| p.size < small_below)
        .map(|p| p.id)
        .collect();

    // 1. Mark.
    let reader = vault.reader(keys);
    let mut live = Live::default();
    if small.len() >= REGROUP_SMALL_PACKS {
        live.regroup = small.iter().copied().collect();
    }
    for row in &rows {
        live.snapshot(vault, &reader, row)?;
    }
    crate::hooks::point("prune-marked");

    let pack_names: HashMap<i64, String> = packs.iter().map(|p| (p.id, p.name.clone())).collect();
    let mut occupancy: HashMap<i64, Occupancy> = HashMap::new();
    index.for_each_chunk(|c| {
        if !judged.contains(&c.pack_id) {
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
    let emptied: Vec<i64> = sorted(
        occupancy
            .iter()
            .filter(|(_, o)| o.live == 0)
            .map(|(id, _)| *id),
    );
    let sparse: Vec<i64> = sorted(
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
    let rewrite = sorted(rewrite.into_iter().filter(|id| !unvouched.contains(id)));
    let emptied: Vec<i64> = emptied
        .into_iter()
        .filter(|id| !unvouched.contains(id))
        .collect();
    let rewrite = if rewrite.len() == 1 && sparse.is_empty() {
        Vec::new()
    } else {
        rewrite
    };
    report.packs_emptied = emptied.len() as u64;
    report.packs_compacted = rewrite.len() as u64;
    if options.dry_run {
        report.dead_objects =
            index.count_dead_objects(&|o| live.objects.get(o).is_some_and(|f| f & WALKED != 0))?;
        let size: HashMap<i64, u64> = packs.iter().map(|p| (p.id, p.size)).collect();
        let freed: u64 = emptied
            .iter()
            .map(|id| size.get(id).copied().unwrap_or(0))
            .sum();
        let compacted: u64 = rewrite
            .iter()
            .map(|id| {
                let o = occupancy.get(id).copied().unwrap_or_default();
                let s = size.get(id).copied().unwrap_or(0);
                // The dead share of a rewritten pack is freed (estimated by raw bytes).
                s - s * o.live / o.total.max(1)
            })
            .sum();
        report.bytes_freed = (freed + compacted) as i64;
        report.stored_bytes_after = report.stored_bytes_before - freed - compacted;
        return Ok(report);
    }

    // 2. Compact, outside the lock: the live chunks of the packs to rewrite, regrouped.
    let compacted = if rewrite.is_empty() {
        Vec::new()
    } else {
        regroup(vault, keys, &reader, &live, &rewrite)?
    };
    report.packs_written = compacted.len() as u64;
    live.keys = HashMap::new();
    live.regroup = HashSet::new();
    crate::hooks::point("prune-compacted");

    // 3. Decide, under the writer lock.
    let lock = vault.lock_waiting(options.lock_wait)?;
    crate::hooks::point("prune-locked");
    if !options.dry_run {
        report.garbage_files_removed = collect_garbage(vault);
        collect_unindexed(vault, keys, &mut report)?;
    }
    for row in index.snapshots(None, None, None)? {
        if !seen_rows.contains(&row.row_id) {
            live.snapshot(vault, &reader, &row)?;
        }
    }
    // The prune record, durable before the index forgets anything.
    let kept: HashSet<ChunkId> = index
        .snapshots(None, None, None)?
        .iter()
        .map(|r| r.manifest)
        .collect();
    // Forgotten manifests may outlive their rows inside packs that stay; earlier records'
    // entries are carried forward because the newest record is the only one recover reads.
    let mut forgotten: std::collections::BTreeSet<String> = index
        .chunks_of_kind(ChunkKind::Manifest as u8)?
        .into_iter()
        .filter(|id| !kept.contains(id))
        .map(|id| id.to_hex())
        .collect();
    if let Some((_, previous)) = crate::snapshot::newest_prune_record(vault.index(), &reader)? {
        forgotten.extend(
            previous
                .forgotten
                .into_iter()
                .filter(|m| m.parse::<ChunkId>().is_ok_and(|id| !kept.contains(&id))),
        );
    }
    let forgotten: Vec<String> = forgotten.into_iter().collect();
    let orphans = live.objects.values().filter(|f| **f == WALKED).count() as u64;
    report.tombstones = forgotten.len() as u64;
    report.orphan_objects = orphans;
    {
        let mut store = vault.store(keys, &lock);
        let orphan_objects = if orphans == 0 {
            None
        } else {
            let mut map = OrphanMap {
                index,
                live: &live,
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
        store.put_chunk(ChunkKind::PruneRecord, &bytes)?;
        store.flush()?;
        // The object map may have been deduplicated against a chunk the mark found dead (the
        // previous record's identical map): what the new record names must stay.
        if let Some(map) = &record.orphan_objects
            && let Ok(id) = map.parse::<ChunkId>()
        {
            live.chunk(&reader, id)?;
        }
    }
    // The copies' footers, sorted by id, answer "was it copied" without a second set of ids
    // (the order of footer entries in memory means nothing to `apply_prune`).
    let mut compacted = compacted;
    for (pack, _) in &mut compacted {
        pack.footer.entries.sort_unstable_by_key(|e| e.id);
    }
    let was_copied = |id: &ChunkId| {
        compacted
            .iter()
            .any(|(p, _)| p.footer.entries.binary_search_by_key(id, |e| e.id).is_ok())
    };
    let is_dead = |c: &ChunkRow| judged.contains(&c.pack_id) && !live.has(&c.id);
    let mut condemned = Vec::new();
    let mut spared = 0;
    for id in emptied.iter().chain(rewrite.iter()) {
        if unvouched.contains(id) {
            continue;
        }
        if index.all_chunks_of_pack(*id, |c| is_dead(c) || was_copied(&c.id))? {
            if let Some(name) = pack_names.get(id) {
                condemned.push(name.clone());
            }
        } else {
            spared += 1;
        }
    }
    report.packs_spared = spared;

    crate::hooks::point("prune-recorded");
    let judged_packs = sorted(judged.iter().copied());
    let compacted_records: Vec<_> = compacted
        .iter()
        .map(|(p, targets)| (p.record(), targets.clone()))
        .collect();
    let counts = index.apply_prune(&PruneChanges {
        condemned: &condemned,
        judged_packs: &judged_packs,
        chunk_dead: &is_dead,
        object_live: &|o| live.objects.get(o).is_some_and(|f| f & WALKED != 0),
        compacted: &compacted_records,
    })?;
    report.dead_chunks = counts.dead_chunks;
    report.dead_objects = counts.dead_objects;
    report.packs_emptied += counts.unreferenced_packs;
    crate::hooks::point("prune-condemned");
    // An index backup that no longer needs the condemned packs, before any is deleted: a
    // recover from it never meets a dangling row.
    let failed = crate::vault::index_backup::upload_index_backup(vault, keys, &lock)?;
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
    // Packs written since the start (compaction copies) are this host's: vouched.
    let unvouched_names: HashSet<&String> = unvouched
        .iter()
        .filter_map(|id| pack_names.get(id))
        .collect();
    for (name, since) in index.condemned_packs()? {
        if unvouched_names.contains(&name) {
            report.packs_spared += 1;
            continue;
        }
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

/// The object map of the live objects no kept snapshot's map lists, encoded page by page (in
/// id order, so that an unchanged map deduplicates) as the store pulls it: at 10 M objects the
/// whole map would be half a gigabyte.
struct OrphanMap<'a> {
    index: &'a crate::index::Index,
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

fn sorted(ids: impl IntoIterator<Item = i64>) -> Vec<i64> {
    let mut v: Vec<i64> = ids.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// One live chunk on its way through the spill file (its id is recomputed from its bytes).
struct Spilled {
    key: GroupKey,
    offset: u64,
    len: u32,
    kind: u8,
}

/// Copies the live chunks of `packs` into new packs, regrouped the way DESIGN.md's layout
/// asks: every object by (type, path, time) across all the packs, the rest after them by kind
/// in their old order. The chunks are read in pack order (each frame decompressed once) into a
/// temporary file in the vault's tmp directory, then written out in the new order. The new
/// packs are replicated but not indexed (prune records them under the lock).
fn regroup(
    vault: &Vault,
    keys: &VaultKeys,
    reader: &ChunkReader<'_>,
    live: &Live,
    packs: &[i64],
) -> Result<Vec<(FinishedPack, Vec<String>)>, PruneError> {
    use std::io::Write;
    use std::os::unix::fs::FileExt;
    let spill_err = |e: std::io::Error| PruneError::Spill(e.to_string());
    let dir = vault.tmp_dir();
    std::fs::create_dir_all(&dir).map_err(spill_err)?;
    let file = tempfile::tempfile_in(&dir).map_err(spill_err)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, &file);
    let mut spilled: Vec<Spilled> = Vec::new();
    let mut offset = 0u64;
    for pack in packs {
        for c in vault.index().chunks_of_pack(*pack, |c| live.has(&c.id))? {
            let (loc, data) = reader.read_chunk(&c.id)?;
            out.write_all(&data).map_err(spill_err)?;
            // Without a key from the walk (not a git object, or one in a sparse pack): after
            // the objects, by kind, so that each day's ref set or manifest sits next to the
            // others of its kind.
            spilled.push(Spilled {
                key: live
                    .keys
                    .get(&prefix(&c.id))
                    .copied()
                    .unwrap_or_else(|| GroupKey::after_objects(loc.kind)),
                offset,
                len: data.len() as u32,
                kind: loc.kind,
            });
            offset += data.len() as u64;
        }
    }
    out.flush().map_err(spill_err)?;
    drop(out);
    // The offset breaks ties: equal keys keep their old order.
    spilled.sort_unstable_by_key(|s| (s.key, s.offset));
    let mut writer = vault.compaction_store(keys);
    let mut buf = Vec::new();
    for s in &spilled {
        buf.resize(s.len as usize, 0);
        file.read_exact_at(&mut buf, s.offset).map_err(spill_err)?;
        writer.put_copy(keys.id_key().chunk_id(&buf), s.kind, &buf)?;
    }
    writer.flush()?;
    Ok(writer.take_unindexed())
}

/// Files older than this in the vault's tmp directory or named as partial uploads on a target
/// are garbage of a killed run: younger ones may belong to a run still going (a reader's
/// staging, or a writer on another host).
const GARBAGE_AGE: Duration = Duration::from_secs(24 * 3600);

/// Removes what killed runs left behind (temporary packs, index copies, partial uploads); a
/// failure is logged, never fatal: garbage costs only space.
fn collect_garbage(vault: &Vault) -> u64 {
    let mut removed = 0;
    if let Ok(entries) = std::fs::read_dir(vault.tmp_dir()) {
        for entry in entries.flatten() {
            let stale = entry
                .metadata()
                .ok()
                .filter(|m| m.is_file())
                .and_then(|m| m.modified().ok())
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > GARBAGE_AGE);
            if stale && std::fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
    }
    for target in vault.targets() {
        match target.remove_stale_temporaries(GARBAGE_AGE) {
            Ok(n) => removed += n,
            Err(e) => {
                tracing::warn!(target = target.name(), error = %e, "partial uploads not removed")
            }
        }
    }
    removed
}

/// Deletes the uploads of killed runs: day-old packs on a target that the index does not know.
/// A pack is deleted only if its footer authenticates (this vault wrote it) and no such pack
/// holds a manifest: a manifest is written after every other chunk of its snapshot, so packs
/// without one belong to no snapshot, while a manifest among them is a complete snapshot this
/// host never recorded, which only `recover` should judge.
fn collect_unindexed(
    vault: &Vault,
    keys: &VaultKeys,
    report: &mut PruneReport,
) -> Result<(), PruneError> {
    let known: HashSet<String> = vault.index().packs()?.into_iter().map(|p| p.name).collect();
    let auth = keys.auth_key();
    let mut doomed: Vec<(usize, String)> = Vec::new();
    let mut holds_manifest = false;
    for (ti, target) in vault.targets().iter().enumerate() {
        let Ok(listed) = target.list("packs/") else {
            continue;
        };
        for l in listed {
            let Some(name) = crate::store::pack_name_from_key(&l.key) else {
                continue;
            };
            if known.contains(name) {
                continue;
            }
            let old = target
                .modified(&l.key)
                .ok()
                .flatten()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > GARBAGE_AGE);
            if !old {
                continue;
            }
            let footer = target
                .open(&l.key)
                .map_err(|e| e.to_string())
                .and_then(|input| {
                    crate::store::pack::read_footer(keys.identity(), &auth, input)
                        .map_err(|e| e.to_string())
                });
            match footer {
                Ok((footer, seal)) if seal.is_authenticated() => {
                    holds_manifest |= footer
                        .entries
                        .iter()
                        .any(|e| e.kind == ChunkKind::Manifest as u8);
                    doomed.push((ti, name.to_string()));
                }
                Ok(_) | Err(_) => {
                    tracing::warn!(target = target.name(), pack = %name, "a pack this vault cannot vouch for; left in place");
                    report.unindexed_kept.push(name.to_string());
                }
            }
        }
    }
    if holds_manifest {
        tracing::warn!(
            packs = doomed.len(),
            "packs unknown to this index hold a snapshot; left in place (`gitvault recover` reads them)"
        );
        report
            .unindexed_kept
            .extend(doomed.into_iter().map(|(_, n)| n));
        return Ok(());
    }
    for (ti, name) in doomed {
        let target = &vault.targets()[ti];
        match target.delete(&pack_key(&name)) {
            Ok(()) | Err(crate::target::TargetError::NotFound { .. }) => {
                report.unindexed_deleted += 1
            }
            Err(e) => {
                tracing::warn!(target = target.name(), pack = %name, error = %e, "unindexed pack not deleted")
            }
        }
    }
    Ok(())
}
